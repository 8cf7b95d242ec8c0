//! The wire form of one forwarded record: what a worker writes into its
//! log ring (one postcard frame per record) and the parent decodes.
//!
//! Everything a subscriber can ask of an event crosses: level, target,
//! the callsite's name, module, file and line, and each field under its
//! own name with its value's kind (an integer stays an integer, so a JSON
//! subscriber in the parent writes what it would have in the child).
//! Values recorded through `Debug` or `Display` cross as their text.
//! Strings are borrowed on both sides: the child encodes from its
//! `'static` metadata, the parent decodes in place from the frame.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::level_filters::LevelFilter;
use tracing::Level;

use crate::error::{Error, ErrorKind, Result};
use crate::ring::{self, Mode, Ring};
use crate::segment::{in_place, Segment, SegmentRegion, Typed};

/// Frame kind of a record in a log ring.
pub(super) const KIND_RECORD: u8 = 1;

/// Data bytes of a worker's log ring: about 1500 records of ~150 bytes
/// buffered while the parent's log thread is busy or asleep (it polls at
/// most [`LIVENESS_PERIOD`](crate::wait::LIVENESS_PERIOD) apart).
pub(super) const RING_BYTES: usize = 256 << 10;

in_place! {
    /// The first line of a log segment, in front of the ring.
    pub(super) struct Counters {
        /// Records the worker could not write because the ring was full
        /// (the parent reports them; only the worker writes this).
        pub(super) dropped: AtomicU64,
        _rest: [AtomicU64; 7],
    }
}

const COUNTERS_LEN: usize = 64;
const _: () = assert!(std::mem::size_of::<Counters>() == COUNTERS_LEN);

/// Bytes of a log segment: the counters, then the ring.
pub(super) fn segment_len() -> usize {
    COUNTERS_LEN + ring::region_size(RING_BYTES)
}

/// The counters and the ring of a log segment: laid out there (`create`)
/// or attached to (the child, from a handle it was sent).
pub(super) fn layout(segment: &Arc<Segment>, create: bool) -> Result<(Typed<Counters>, Ring)> {
    let too_small = || Error::new(ErrorKind::Protocol, "log segment too small");
    let counters = Typed::new(Arc::clone(segment))?;
    let size = segment
        .len()
        .checked_sub(COUNTERS_LEN)
        .filter(|n| *n >= ring::region_size(ring::MIN_CAPACITY))
        .ok_or_else(too_small)?;
    let region = Arc::new(SegmentRegion::new(segment, COUNTERS_LEN, size).ok_or_else(too_small)?);
    let ring = if create {
        Ring::create(region, RING_BYTES, Mode::Spsc)?
    } else {
        Ring::attach(region)?
    };
    if ring.mode() != Mode::Spsc {
        return Err(Error::new(ErrorKind::Protocol, "not a log ring"));
    }
    Ok((counters, ring))
}

/// At most this many fields of an event cross (the parent's callsites
/// hold them in fixed arrays); more are dropped, noted in one field.
pub(super) const MAX_FIELDS: usize = 28;

/// One event or `log` record.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record<'a> {
    /// [`level_code`].
    pub(super) level: u8,
    #[serde(borrow)]
    pub(super) target: Cow<'a, str>,
    /// The callsite's name (`tracing`: "event src/main.rs:12").
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) module: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) file: Option<Cow<'a, str>>,
    pub(super) line: Option<u32>,
    #[serde(borrow)]
    pub(super) fields: Vec<(Cow<'a, str>, Val<'a>)>,
}

/// A field's value, by the kind the child's visitor saw.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Val<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    /// Recorded as a string (`record_str`).
    Str(#[serde(borrow)] Cow<'a, str>),
    /// Recorded through `Debug`/`Display` (the message, `%x`, `?x`, errors):
    /// its text, shown again without quotes.
    Text(#[serde(borrow)] Cow<'a, str>),
}

/// `tracing`'s levels as `log` numbers them: 1 = ERROR … 5 = TRACE.
pub(super) fn level_code(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The level of a code; `None` for a code no correct peer writes.
pub(super) fn level_of(code: u8) -> Option<Level> {
    Some(match code {
        1 => Level::ERROR,
        2 => Level::WARN,
        3 => Level::INFO,
        4 => Level::DEBUG,
        5 => Level::TRACE,
        _ => return None,
    })
}

/// A level filter as a code: 0 = OFF, else as [`level_code`].
pub(super) fn filter_code(filter: LevelFilter) -> u8 {
    filter.into_level().map_or(0, level_code)
}

/// The filter of a code; anything out of range is read as TRACE (the
/// parent filters again when it re-emits).
pub(super) fn filter_of(code: u8) -> LevelFilter {
    match code {
        0 => LevelFilter::OFF,
        c => level_of(c).map_or(LevelFilter::TRACE, LevelFilter::from_level),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_postcard() {
        let rec = Record {
            level: level_code(Level::WARN),
            target: "app::db".into(),
            name: "event src/db.rs:7".into(),
            module: Some("app::db".into()),
            file: Some("src/db.rs".into()),
            line: Some(7),
            fields: vec![
                ("message".into(), Val::Text("slow query".into())),
                ("ms".into(), Val::U64(250)),
                ("ok".into(), Val::Bool(false)),
                ("who".into(), Val::Str("alice".into())),
            ],
        };
        let bytes = postcard::to_stdvec(&rec).unwrap();
        let back: Record<'_> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{rec:?}"));
        assert!(matches!(back.target, Cow::Borrowed(_)));
    }

    #[test]
    fn levels_and_filters_have_stable_codes() {
        for level in [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ] {
            assert_eq!(level_of(level_code(level)), Some(level));
            let f = LevelFilter::from_level(level);
            assert_eq!(filter_of(filter_code(f)), f);
        }
        assert_eq!(filter_of(filter_code(LevelFilter::OFF)), LevelFilter::OFF);
        assert_eq!(level_of(0), None);
        assert_eq!(level_of(200), None);
    }
}
