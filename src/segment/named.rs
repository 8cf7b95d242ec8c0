//! Named segments: shared-memory objects under a name the caller chose
//! (Python's `SharedMemory(name=…)`), which unrelated programs open by
//! that name.
//!
//! Unlike [`Segment`](super::Segment) they have **no header**: the object's
//! bytes are the block, from offset 0, and its size is the object's size,
//! as in Python. So a block made by Python (or any program using
//! `shm_open` / a named section) opens here, and one made here opens
//! there. What the header guards against for the crate's own segments (a
//! handle from a peer that leads to the wrong memory) does not arise: the
//! caller names the object, and whatever is under that name is the block.
//! What stays guarded: the mapping is exactly the object's size when it was
//! opened, and a peer that shrinks it later cannot crash us (Linux:
//! `sys/sigbus.rs`; the other platforms cannot shrink it).
//!
//! The name outlives every process unless removed: by `unlink`
//! (`NamedSegment::unlink`), or, for a tracked create, by this process's
//! tracker when this process ends (`sys/shm_tracker.rs`).

use crate::error::{Error, ErrorKind, Result};
use crate::sys::shm::{self, Map};

use super::Data;

/// One process's mapping of a named shared-memory object.
pub(crate) struct NamedSegment {
    map: Map,
    /// The caller's name without its leading `/`.
    name: String,
}

impl std::fmt::Debug for NamedSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedSegment")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

/// `name` checked and without its `/`, or `InvalidArgument`.
fn checked(name: &str) -> Result<&str> {
    crate::sys::shm_user_name(name).map_err(|m| Error::new(ErrorKind::InvalidArgument, m))
}

impl NamedSegment {
    /// Creates the object `name` (`O_EXCL`: `AlreadyExists` when taken) of
    /// `len > 0` zero bytes, mode 0600. With `track`, this process's
    /// tracker removes the name when the process ends, however it ends.
    pub(crate) fn create(name: &str, len: usize, track: bool) -> Result<NamedSegment> {
        let name = checked(name)?;
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("named shared memory {name:?} of size 0 (the size must be positive)"),
            ));
        }
        if len > isize::MAX as usize {
            return Err(Error::new(
                ErrorKind::NoSpace,
                format!("{len} bytes is too large"),
            ));
        }
        let map = Map::create_named(name, len).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                std::io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
                _ if shm::is_no_space(&e) => ErrorKind::NoSpace,
                _ => ErrorKind::Io,
            };
            Error::new(kind, format!("create named shared memory {name:?}")).with_source(e)
        })?;
        let seg = NamedSegment {
            map,
            name: name.to_owned(),
        };
        if track {
            if let Err(e) = shm::track(name) {
                // Untracked it could outlive us: remove it and say why.
                let _ = seg.map.remove_name(name);
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "start the shared-memory tracker for {name:?} (create it with \
                         track(false) and unlink it yourself to do without one)"
                    ),
                )
                .with_source(e));
            }
        }
        Ok(seg)
    }

    /// Maps the object `name`, whoever made it: all of its current size.
    pub(crate) fn open(name: &str) -> Result<NamedSegment> {
        let name = checked(name)?;
        let map = Map::open_named(name).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
                std::io::ErrorKind::InvalidData => ErrorKind::InvalidState,
                _ => ErrorKind::Io,
            };
            Error::new(kind, format!("open named shared memory {name:?}")).with_source(e)
        })?;
        Ok(NamedSegment {
            map,
            name: name.to_owned(),
        })
    }

    /// The name, without a leading `/`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Bytes, as mapped: the size asked for when this process created it,
    /// the object's size when it opened it (page-rounded on macOS and
    /// Windows, as Python reports it there).
    pub(crate) fn len(&self) -> usize {
        self.map.map_len()
    }

    /// The bytes, for the race-free copies and the atomic view.
    pub(crate) fn data(&self) -> Data<'_> {
        Data::of(&self.map, 0, self.map.map_len())
    }

    /// Whether a peer shrank the object under this mapping (Linux; see
    /// [`Segment::lost`](super::Segment::lost)).
    pub(crate) fn lost(&self) -> bool {
        self.map.lost()
    }

    /// Removes the name (if it still names this object, where the OS can
    /// tell) and this process's tracking of it. Mappings stay valid.
    /// Windows: nothing to remove (the name goes with the last handle).
    pub(crate) fn unlink(&self) {
        let _ = self.map.remove_name(&self.name);
        shm::untrack(&self.name);
    }
}
