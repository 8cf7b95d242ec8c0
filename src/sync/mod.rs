//! Cross-process synchronisation: `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition`, `Barrier`.
//!
//! Each primitive is a small `#[repr(C)]` block of atomics at the start of
//! its own shared-memory segment. Waiting spins briefly and then sleeps on a
//! futex word of the block, through the crate's one waiter
//! ([`crate::wait::Wait`]): between slices of at most its liveness period a
//! waiter checks that the processes it depends on are alive, so a dead peer
//! becomes an error, never a hang.
//!
//! Why not `raw_sync`: its Unix timed waits fail with `EINVAL`, its mutexes
//! are not robust (a dead holder deadlocks everyone on Unix and makes it
//! panic on Windows), and its primitives are not `Send`. These are built on
//! atomics and a futex instead, and robustness comes from two records kept
//! in the block:
//!
//! * a lock word holds the owner's **pid** (plus a waiters bit), so a waiter
//!   can always tell who holds the lock and whether that process still lives
//!   (`OwnerDied`);
//! * a table of **participants**: every process holding a handle registers
//!   its pid, and removes it when its last handle drops. A participant that
//!   vanishes without deregistering died abnormally; the primitive is then
//!   *broken* and every waiter gets `PeerDied` (like Python's
//!   `BrokenBarrierError`, for all of them).
//!
//! Everything read from the block is an integer another process may have
//! written: it is only ever compared, never used as an index or a length,
//! so a corrupt block gives wrong answers or errors, never UB.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::participants::Participants;
use crate::segment::{in_place, InPlace, Segment, SegmentHandle, Typed};
use crate::sys;
use crate::wait::deadline_after;
use crate::wait::Wait;

/// Spins before sleeping: a parked peer costs tens of µs to wake here.
const SPINS: u32 = 200;

/// How long a wait for another party's step (an `Event`'s set, a
/// `Condition`'s notify, the end of a `Barrier`'s round) looks for it
/// before it checks its peers and sleeps: a peer that is running takes a
/// microsecond; the check (a `/proc` read for every participant) 5-10 µs,
/// a futex sleep and wake 20-30 µs on a 2-core VM. The first poll of an
/// async wait retries as long (`async_wait::FIRST_POLL_SPIN`).
const WAIT_SPIN: std::time::Duration = std::time::Duration::from_micros(20);

/// Spins for up to [`WAIT_SPIN`], never past `wait`'s deadline, until
/// `ready()`; `true` if it became ready.
fn spin_first(wait: &Wait, ready: impl FnMut() -> bool) -> bool {
    let budget = wait.spin_budget(WAIT_SPIN);
    !budget.is_zero() && crate::wait::spin_for(budget, ready)
}

const MAGIC: u32 = 0x4d50_5359; // "MPSY"
const WAITERS: u32 = 1 << 31;

#[repr(u32)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Lock = 1,
    RLock = 2,
    Semaphore = 3,
    Event = 4,
    Condition = 5,
    Barrier = 6,
}

in_place! {
    /// Common start of every block.
    struct Header {
        magic: AtomicU32,
        kind: AtomicU32,
        /// Non-zero once a participant died: every wait fails with `PeerDied`.
        broken: AtomicU32,
        _pad: AtomicU32,
        participants: Participants,
    }
}

/// What each primitive's block provides to the shared machinery.
trait Block: InPlace + Sized {
    const KIND: Kind;
    fn header(&self) -> &Header;
    /// Wakes every sleeper on every futex word of the block.
    fn wake_all(&self);
}

fn pid() -> u32 {
    std::process::id()
}

/// A small per-thread id (unique within this process), for `RLock`.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // SYNC: Relaxed: only uniqueness matters, no data is published.
    thread_local!(static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    TOKEN.with(|t| *t)
}

/// One process's handle on a block: the segment, and its participant slot.
struct Shared<B: Block> {
    block: Typed<B>,
    slot: Option<usize>,
}

impl<B: Block> Shared<B> {
    /// Creates the segment and lets `init` set the block's fields (the
    /// header is filled in here).
    fn create(init: impl FnOnce(&B)) -> Result<Arc<Self>> {
        let segment = Segment::create(std::mem::size_of::<B>())?;
        let shared = Self::attach(segment)?;
        let block = shared.block();
        init(block);
        let h = block.header();
        // SYNC: Relaxed, published by the Release store of `magic` below.
        h.kind.store(B::KIND as u32, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire load of `magic` in `check`
        // (a peer opening the block sees every field initialised).
        h.magic.store(MAGIC, Ordering::Release);
        let mut shared = shared;
        shared.slot = shared.register();
        Ok(Arc::new(shared))
    }

    fn open(handle: &SegmentHandle) -> Result<Arc<Self>> {
        let mut shared = Self::attach(Segment::open(handle)?)?;
        let h = shared.block().header();
        // SYNC: Acquire pairs with the Release store of `magic` in `create`.
        if h.magic.load(Ordering::Acquire) != MAGIC
            || h.kind.load(Ordering::Relaxed) != B::KIND as u32
        {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("segment does not hold a {:?}", B::KIND),
            ));
        }
        shared.slot = shared.register();
        Ok(Arc::new(shared))
    }

    fn attach(segment: Segment) -> Result<Self> {
        Ok(Shared {
            block: Typed::new(Arc::new(segment))?,
            slot: None,
        })
    }

    fn block(&self) -> &B {
        self.block.get()
    }

    fn segment(&self) -> &Segment {
        self.block.segment()
    }

    /// Takes a participant slot for this process (None if all are taken:
    /// this process is then not watched, which is documented).
    fn register(&self) -> Option<usize> {
        self.block().header().participants.register()
    }

    /// `Err(PeerDied)` if the block is broken or a participant died (which
    /// then breaks it and wakes everyone).
    fn check_peers(&self) -> Result<()> {
        check_peers(&self.block)
    }

    /// The cheap half of [`check_peers`](Self::check_peers): `Err` if the
    /// segment is lost or the block already broken, without looking at
    /// the participants (a `/proc` read each).
    fn check_broken(&self) -> Result<()> {
        check_broken(&self.block)
    }

    fn handle(&self) -> SegmentHandle {
        self.segment().handle()
    }
}

/// [`Shared::check_peers`], from a view of the block that holds no
/// participant slot (an async waiter thread's: it must not keep this
/// process registered after its handles are gone).
fn check_peers<B: Block>(typed: &Typed<B>) -> Result<()> {
    check_broken(typed)?;
    let block = typed.get();
    let h = block.header();
    if let Some(p) = h.participants.dead() {
        // SYNC: Release pairs with the Acquire load above in other
        // waiters.
        h.broken.store(BROKEN_PEER_DIED, Ordering::Release);
        block.wake_all();
        return Err(Error::new(
            ErrorKind::PeerDied,
            format!(
                "process {p} sharing this {:?} died abruptly, so the wait could \
                 never complete",
                B::KIND
            ),
        )
        .with_pid(p));
    }
    Ok(())
}

/// [`Shared::check_broken`], from any view of the block.
fn check_broken<B: Block>(typed: &Typed<B>) -> Result<()> {
    typed.segment().check_intact()?;
    // SYNC: Acquire pairs with the Release stores of `broken` (in
    // `check_peers`, by whichever waiter found the dead participant; a
    // barrier's abort or timed-out wait).
    let why = typed.get().header().broken.load(Ordering::Acquire);
    if why != 0 {
        return Err(broken_error(B::KIND, why));
    }
    Ok(())
}

/// Why a block is broken: the values of its header's `broken` word.
const BROKEN_PEER_DIED: u32 = 1;
const BROKEN_ABORTED: u32 = 2;
const BROKEN_TIMED_OUT: u32 = 3;
const BROKEN_CANCELLED: u32 = 4;

/// The error every wait on a block broken for `why` returns.
fn broken_error(kind: Kind, why: u32) -> Error {
    match why {
        BROKEN_ABORTED => Error::new(
            ErrorKind::Broken,
            format!("this {kind:?} is broken: it was aborted (reset() mends it)"),
        ),
        BROKEN_TIMED_OUT => Error::new(
            ErrorKind::Broken,
            format!("this {kind:?} is broken: a wait on it timed out (reset() mends it)"),
        ),
        BROKEN_CANCELLED => Error::new(
            ErrorKind::Broken,
            format!(
                "this {kind:?} is broken: a party's wait_async was dropped before the \
                 round completed (reset() mends it)"
            ),
        ),
        // BROKEN_PEER_DIED, or any other value a peer wrote.
        _ => Error::new(
            ErrorKind::PeerDied,
            format!("this {kind:?} is broken: a process sharing it died"),
        ),
    }
}

impl<B: Block> Drop for Shared<B> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.block().header().participants.unregister(i);
        }
    }
}

/// Declares one primitive: its block (the common [`Header`], then the
/// given fields), the block's [`Block`] impl (`wake_all` as given: wake
/// every futex word a waiter of the block may sleep on), and the public
/// handle (`Clone`; serialised as its segment's handle, so it can be part
/// of a child's argument; `Debug`).
macro_rules! primitive {
    (
        $(#[$meta:meta])*
        pub struct $name:ident over $block:ident as $kind:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
        }
        wake_all: |$b:ident| $wake:expr
    ) => {
        in_place! {
            struct $block {
                header: Header,
                $( $(#[$fmeta])* $field : $ty ),*
            }
        }

        impl Block for $block {
            const KIND: Kind = Kind::$kind;
            fn header(&self) -> &Header {
                &self.header
            }
            fn wake_all(&self) {
                let $b = self;
                $wake
            }
        }

        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name {
            shared: Arc<Shared<$block>>,
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.shared.handle().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let handle = SegmentHandle::deserialize(d)?;
                let shared = Shared::open(&handle).map_err(crate::error::de_custom)?;
                Ok($name { shared })
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    };
}

/// What an async waiter thread watches for a primitive: one word of its
/// block, ready once it no longer holds `idle` (the value a blocked call
/// sleeps on), and the block's participants for liveness.
struct WordSource<B: Block> {
    /// A view without a participant slot (see [`check_peers`]).
    block: Typed<B>,
    word: fn(&B) -> &AtomicU32,
    idle: u32,
}

impl<B: Block + Send + Sync + 'static> crate::async_wait::Source for WordSource<B> {
    fn ready(&self) -> bool {
        // SYNC: Acquire pairs with the Release store that changed the word
        // (a hint: the future's own attempt decides).
        (self.word)(self.block.get()).load(Ordering::Acquire) != self.idle
    }

    fn park(&self, slice: std::time::Duration) {
        sys::futex_wait((self.word)(self.block.get()), self.idle, slice);
    }

    fn healthy(&self) -> bool {
        check_peers(&self.block).is_ok()
    }
}

impl<B: Block + Send + Sync + 'static> Shared<B> {
    /// The async wait of a call that would sleep on `word` while it holds
    /// `idle`; see [`crate::async_wait::wait_for`].
    fn wait_async<T>(
        &self,
        word: fn(&B) -> &AtomicU32,
        idle: u32,
        attempt: impl FnMut(bool) -> Result<Option<T>>,
    ) -> impl std::future::Future<Output = Result<T>> {
        let block = self.block.clone();
        let key = crate::async_wait::key_of(word(self.block()), u64::from(idle));
        crate::async_wait::wait_for(
            key,
            move || Arc::new(WordSource { block, word, idle }),
            attempt,
        )
    }
}

mod barrier;
mod condition;
mod event;
mod lock;
mod mutex;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
use mutex::{owner_died, Acquired, MutexWord};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore};
