//! The rendezvous: one shared page where the parent publishes the names
//! of its handshake servers ("generations") and the child reads the
//! newest. Anything of the same user can write it, so every read is
//! checked.

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::sys;

//
// The rendezvous segment (`RENDEZVOUS_LEN` data bytes, one page with the
// segment header), little-endian words:
//
//   offset 0    u32  generations published (parent; stored after the slot)
//   offset 4    u32  the newest generation the child tried (child; a hint)
//   offset 64   MAX_GENERATIONS write-once slots of SLOT_LEN bytes:
//               u32 name length, then the server name (UTF-8, zero padded)

/// The most handshake servers ("generations") one start publishes. When
/// the newest of them is refused and this many exist, the start fails.
pub(crate) const MAX_GENERATIONS: usize = 16;
/// Offset of the published-generations word.
pub(super) const PUBLISHED_AT: usize = 0;
/// Offset of the word where the child notes the newest generation it tried.
pub(super) const TRIED_AT: usize = 4;
/// Offset of the first slot.
pub(super) const SLOTS_AT: usize = 64;
/// Bytes of one slot: a 4-byte length and the name.
pub(super) const SLOT_LEN: usize = 248;
/// The longest server name a slot holds (a Unix socket path is < 108
/// bytes, a Windows pipe name 36).
pub(super) const SLOT_NAME_MAX: usize = SLOT_LEN - 4;
/// Data bytes of a rendezvous segment.
pub(crate) const RENDEZVOUS_LEN: usize = SLOTS_AT + MAX_GENERATIONS * SLOT_LEN;
const _: () = assert!(RENDEZVOUS_LEN + crate::segment::HEADER_LEN == 4096);

/// How long the newest generation may stay silent after the child said it
/// tried it, before the parent publishes another: doubled for each
/// generation published that way.
pub(super) const SILENCE_FIRST: Duration = Duration::from_millis(100);
/// How often the watch thread looks at starts in flight.
pub(super) const WATCH_TICK: Duration = Duration::from_millis(10);
/// How often a child waiting for its `Config` looks for a new generation.
pub(super) const CHILD_SLICE: Duration = Duration::from_millis(5);

/// The newest generation in a copy of a rendezvous segment's data: its
/// number (from 1) and its server's name.
///
/// The bytes come from shared memory that any process of the same user
/// can write, so everything is checked: the size, the count (1 to
/// [`MAX_GENERATIONS`]), the name's length (1 to `SLOT_NAME_MAX`), UTF-8,
/// no control character, and a name `ipc-channel` can connect to without
/// panicking ([`sys::handshake_server_name_ok`]). Never panics.
pub(crate) fn parse_generation(rendezvous: &[u8]) -> std::result::Result<(u32, &str), String> {
    if rendezvous.len() != RENDEZVOUS_LEN {
        return Err(format!(
            "the handshake rendezvous has {} bytes, not {RENDEZVOUS_LEN}",
            rendezvous.len()
        ));
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&rendezvous[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let count = word(PUBLISHED_AT);
    let n = usize::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_GENERATIONS).contains(n))
        .ok_or_else(|| format!("the handshake rendezvous claims {count} generations"))?;
    let slot = slot_at(n);
    let len = usize::try_from(word(slot)).unwrap_or(usize::MAX);
    if len == 0 || len > SLOT_NAME_MAX {
        return Err(format!("generation {count} has a name of {len} bytes"));
    }
    let name = std::str::from_utf8(&rendezvous[slot + 4..slot + 4 + len])
        .map_err(|_| format!("generation {count}'s name is not UTF-8"))?;
    if name.chars().any(char::is_control) || !sys::handshake_server_name_ok(name) {
        return Err(format!(
            "generation {count}'s name is not a handshake server"
        ));
    }
    Ok((count, name))
}

/// Offset of generation `number`'s slot (`number` in 1..=MAX_GENERATIONS).
pub(super) fn slot_at(number: usize) -> usize {
    SLOTS_AT + (number - 1) * SLOT_LEN
}

/// Writes generation `number`'s slot, then publishes it (Release: a child
/// that sees the count sees the slot). Slots are written once, before the
/// count covers them, so a reader never sees a name change under it. The
/// child reads each word with the same offset and length as written here
/// (the whole slot, the count), so both sides make the same atomic pieces.
pub(super) fn publish_slot(rendezvous: &Segment, number: usize, name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    if !(1..=MAX_GENERATIONS).contains(&number) || bytes.is_empty() || bytes.len() > SLOT_NAME_MAX {
        return Err(Error::new(
            ErrorKind::Handshake,
            format!(
                "cannot publish handshake server {number} ({} bytes)",
                bytes.len()
            ),
        ));
    }
    let mut slot = [0u8; SLOT_LEN];
    slot[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    slot[4..4 + bytes.len()].copy_from_slice(bytes);
    rendezvous.store(slot_at(number), &slot);
    rendezvous.store(PUBLISHED_AT, &(number as u32).to_le_bytes());
    Ok(())
}

/// Copies the count and the slot it names (if it names one) into
/// `snapshot` (`RENDEZVOUS_LEN` bytes), and decodes the newest generation
/// from it.
pub(super) fn read_newest<'a>(
    rendezvous: &Segment,
    snapshot: &'a mut [u8],
) -> std::result::Result<(u32, &'a str), String> {
    rendezvous.load(PUBLISHED_AT, &mut snapshot[PUBLISHED_AT..PUBLISHED_AT + 4]);
    let count = u32::from_le_bytes([snapshot[0], snapshot[1], snapshot[2], snapshot[3]]);
    if let Some(n) = usize::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_GENERATIONS).contains(n))
    {
        let at = slot_at(n);
        rendezvous.load(at, &mut snapshot[at..at + SLOT_LEN]);
    }
    parse_generation(snapshot)
}

/// Runs [`parse_generation`] on `bytes` as they are (nearly always the
/// wrong size) and laid into a rendezvous-sized buffer: the first 4 bytes
/// as the count, the rest at the start of the slot that count names, so
/// that the fuzzer reaches the slot checks.
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_generation_for_fuzzing(bytes: &[u8]) -> bool {
    let _ = parse_generation(bytes);
    let mut buf = vec![0u8; RENDEZVOUS_LEN];
    let (count, rest) = bytes.split_at(bytes.len().min(4));
    buf[..count.len()].copy_from_slice(count);
    let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let at = slot_at(n.clamp(1, MAX_GENERATIONS));
    let take = rest.len().min(SLOT_LEN);
    buf[at..at + take].copy_from_slice(&rest[..take]);
    match parse_generation(&buf) {
        Ok((generation, name)) => {
            assert!((1..=MAX_GENERATIONS as u32).contains(&generation));
            assert!(!name.is_empty() && name.len() <= SLOT_NAME_MAX);
            true
        }
        Err(_) => false,
    }
}
