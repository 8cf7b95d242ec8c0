//! Unit, corruption, property and stress tests of the ring over heap
//! regions. The ring is private, so its property tests live here rather
//! than in `tests/`.
//!
//! Over 900 lines on purpose: one file of sections (basics, corruption,
//! properties, stress), each a flat list of tests sharing the helpers
//! below; splitting them would scatter those helpers without making any
//! one test easier to read.

use super::*;
use crate::region::HeapRegion;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::Instant;

fn ring(cap: usize, mode: Mode) -> (Ring, Producer, Consumer) {
    let r = Ring::with_heap(cap, mode).unwrap();
    let p = r.producer().unwrap();
    let c = r.consumer().unwrap();
    (r, p, c)
}

fn soon() -> Option<Instant> {
    Some(Instant::now() + Duration::from_millis(30))
}

/// Deterministic payload bytes for frame `seq` of length `len`.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq.wrapping_mul(31).wrapping_add(i as u64 * 7)) as u8)
        .collect()
}

#[test]
fn ring_push_pop_kinds_and_empty_frames() {
    let (r, mut p, mut c) = ring(256, Mode::Spsc);
    assert_eq!(r.max_payload(), 112);
    assert!(c.try_pop().unwrap().is_none());
    assert!(p.try_push(0, b"").unwrap());
    assert!(p.try_push(MAX_KIND, b"hello").unwrap());
    assert!(p.try_push(9, &[7u8; 112]).unwrap());
    assert_eq!(c.try_pop().unwrap(), Some((0, vec![])));
    assert_eq!(c.try_pop().unwrap(), Some((MAX_KIND, b"hello".to_vec())));
    assert_eq!(c.try_pop().unwrap(), Some((9, vec![7u8; 112])));
    assert!(c.try_pop().unwrap().is_none());
    assert_eq!(r.used_bytes(), 0);
}

#[test]
fn ring_oversize_frame_and_reserved_kind_are_errors_not_hangs() {
    let (r, mut p, _c) = ring(128, Mode::Spsc);
    let e = p
        .push(1, &vec![0u8; r.max_payload() + 1], None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert!(p.try_reserve(r.max_payload() + 1).is_err());
    assert_eq!(
        p.try_push(KIND_PAD, b"x").unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    // The ring is still usable.
    assert!(p.try_push(1, b"ok").unwrap());
}

#[test]
fn ring_full_then_wraps_with_padding() {
    let (_r, mut p, mut c) = ring(128, Mode::Spsc);
    // 40-byte frames (32 payload): 3 fit (120 + terminator 8 = 128).
    for i in 0..3 {
        assert!(p.try_push(1, &payload(i, 32)).unwrap(), "frame {i}");
    }
    assert!(
        !p.try_push(1, &payload(3, 32)).unwrap(),
        "ring should be full"
    );
    assert!(!p.try_push(1, b"").unwrap());
    for i in 0..3 {
        assert_eq!(c.try_pop().unwrap(), Some((1, payload(i, 32))));
    }
    // Many laps of varied sizes: offsets cycle through every alignment, so
    // padding frames appear.
    let len_of = |i: u64| (i as usize * 8) % 49;
    let (mut next_in, mut next_out) = (0u64, 0u64);
    for _ in 0..500 {
        while p.try_push(1, &payload(next_in, len_of(next_in))).unwrap() {
            next_in += 1;
        }
        let (_, got) = c.try_pop().unwrap().expect("ring full but no frame");
        assert_eq!(got, payload(next_out, len_of(next_out)));
        next_out += 1;
    }
    while let Some((_, got)) = c.try_pop().unwrap() {
        assert_eq!(got, payload(next_out, len_of(next_out)));
        next_out += 1;
    }
    assert_eq!(next_out, next_in);
}

#[test]
fn ring_max_frame_fits_in_an_empty_ring_at_any_offset() {
    let cap = 256;
    for shift in 0..cap / 8 {
        let (r, mut p, mut c) = ring(cap, Mode::Spsc);
        for _ in 0..shift {
            assert!(p.try_push(1, b"").unwrap());
            c.try_pop().unwrap().unwrap();
        }
        let big = payload(shift as u64, r.max_payload());
        assert!(p.try_push(2, &big).unwrap(), "offset {}", shift * 8);
        assert_eq!(c.try_pop().unwrap(), Some((2, big)));
    }
}

#[test]
fn ring_reserve_commit_shorter_and_abandon() {
    let (_r, mut p, mut c) = ring(256, Mode::Spsc);
    let mut res = p.try_reserve(50).unwrap().unwrap();
    assert_eq!(res.buf().len(), 50);
    res.buf()[..3].copy_from_slice(b"abc");
    res.commit(4, 3).unwrap();
    // Abandoned: nothing published.
    {
        let mut res = p.try_reserve(20).unwrap().unwrap();
        res.buf().fill(0xEE);
    }
    assert!(p.try_push(5, b"after").unwrap());
    assert_eq!(c.try_pop().unwrap(), Some((4, b"abc".to_vec())));
    assert_eq!(c.try_pop().unwrap(), Some((5, b"after".to_vec())));
    // Committing more than reserved is refused.
    let res = p.try_reserve(8).unwrap().unwrap();
    assert_eq!(
        res.commit(1, 9).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert!(c.try_pop().unwrap().is_none());
}

#[test]
fn ring_peek_in_place_then_release() {
    let (_r, mut p, mut c) = ring(128, Mode::Spsc);
    p.push(3, b"in place", None).unwrap();
    {
        let f = c.try_peek().unwrap().unwrap();
        assert_eq!((f.kind(), f.bytes()), (3, &b"in place"[..]));
    }
    assert!(c.try_peek().unwrap().is_none());
}

#[test]
fn ring_close_producer_drains_then_disconnects() {
    let (_r, mut p, mut c) = ring(128, Mode::Spsc);
    p.push(1, b"last", None).unwrap();
    drop(p);
    assert_eq!(c.pop(None).unwrap(), (1, b"last".to_vec()));
    assert_eq!(c.try_pop().unwrap_err().kind(), ErrorKind::Disconnected);
    assert_eq!(c.pop(None).unwrap_err().kind(), ErrorKind::Disconnected);
}

#[test]
fn ring_close_consumer_disconnects_producer_and_wakes_it() {
    let (_r, mut p, c) = ring(64, Mode::Spsc);
    while p.try_push(1, &[0; 16]).unwrap() {}
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        drop(c);
    });
    let e = p.push(1, &[0; 16], None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Disconnected);
    t.join().unwrap();
}

#[test]
fn ring_spsc_sides_are_claimed_once() {
    let (r, _p, _c) = ring(64, Mode::Spsc);
    assert_eq!(r.producer().err().unwrap().kind(), ErrorKind::InvalidState);
    assert_eq!(r.consumer().err().unwrap().kind(), ErrorKind::InvalidState);
}

#[test]
fn ring_timeouts() {
    let (_r, mut p, mut c) = ring(64, Mode::Spsc);
    assert_eq!(c.pop(soon()).unwrap_err().kind(), ErrorKind::Timeout);
    assert!(c.peek(soon()).is_err());
    while p.try_push(1, &[1; 16]).unwrap() {}
    assert_eq!(
        p.push(1, &[1; 16], soon()).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    assert_eq!(
        p.reserve(16, soon()).err().unwrap().kind(),
        ErrorKind::Timeout
    );
    // Zero spin goes straight to parking.
    c.set_spin(Duration::ZERO);
    c.pop(None).unwrap();
}

#[test]
fn ring_dead_peer_becomes_peer_died_not_a_hang() {
    let (_r, mut p, mut c) = ring(64, Mode::Spsc);
    p.push(1, b"still here", None).unwrap();
    c.set_peer_check(Arc::new(|| false));
    // Frames already committed are still delivered.
    assert_eq!(c.pop(None).unwrap().1, b"still here");
    // With no deadline, only the peer check can end this wait.
    assert_eq!(c.pop(None).unwrap_err().kind(), ErrorKind::PeerDied);
    while p.try_push(1, &[1; 16]).unwrap() {}
    p.set_peer_check(Arc::new(|| false));
    assert_eq!(
        p.push(1, &[1; 16], None).unwrap_err().kind(),
        ErrorKind::PeerDied
    );
}

#[cfg(unix)]
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[cfg(unix)]
#[test]
fn ring_spsc_recorded_pid_of_a_dead_peer_is_peer_died() {
    let (r, _p, mut c) = ring(64, Mode::Spsc);
    r.header().prod.0.pid.store(dead_pid(), Ordering::SeqCst);
    assert_eq!(c.pop(None).unwrap_err().kind(), ErrorKind::PeerDied);
}

/// A bounded wait whose deadline passes before its first liveness
/// question (here in a spin longer than the wait; on a loaded machine, a
/// preemption) still asks it: a dead peer is `PeerDied`, not `Timeout`.
/// An async wait's checked retry is such a wait (1 ms); before this it
/// met only timeouts on a busy host, and the future never ended. The
/// waits last `SPUN` so that a preemption before a wait begins (which
/// would end it at its entry, untouched by this rule) is far shorter.
const SPUN: Duration = Duration::from_millis(300);

#[test]
fn a_deadline_that_passes_in_the_spin_still_reports_a_dead_peer() {
    let (_r, mut p, mut c) = ring(64, Mode::Spsc);
    c.set_spin(Duration::from_secs(5));
    c.set_peer_check(Arc::new(|| false));
    let deadline = Some(Instant::now() + SPUN);
    assert_eq!(c.pop(deadline).unwrap_err().kind(), ErrorKind::PeerDied);
    // And a live peer still times out.
    c.set_peer_check(Arc::new(|| true));
    let deadline = Some(Instant::now() + SPUN);
    assert!(c.pop(deadline).unwrap_err().is_timeout());
    while p.try_push(1, &[1; 16]).unwrap() {}
    p.set_spin(Duration::from_secs(5));
    p.set_peer_check(Arc::new(|| false));
    let deadline = Some(Instant::now() + SPUN);
    assert_eq!(
        p.push(1, &[1; 16], deadline).unwrap_err().kind(),
        ErrorKind::PeerDied
    );
}

/// The same for the Mpmc side lock: a holder found dead only once the
/// deadline has passed is still reported (and the ring poisoned).
#[cfg(unix)]
#[test]
fn a_deadline_that_passes_in_the_lock_spin_still_reports_a_dead_holder() {
    let r = Ring::with_heap(128, Mode::Mpmc).unwrap();
    let mut p = r.producer().unwrap();
    p.set_spin(Duration::from_secs(5));
    let pid = dead_pid();
    r.header().prod.0.lock.store(pid, Ordering::SeqCst);
    let deadline = Some(Instant::now() + SPUN);
    let e = p.batch(deadline, |_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerDied, "{e}");
    assert_eq!(e.pid(), Some(pid));
}

#[cfg(unix)]
#[test]
fn ring_mpmc_lock_held_by_a_dead_process_is_peer_died() {
    let r = Ring::with_heap(128, Mode::Mpmc).unwrap();
    let mut p = r.producer().unwrap();
    let pid = dead_pid();
    r.header().prod.0.lock.store(pid, Ordering::SeqCst);
    let e = p.try_push(1, b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerDied);
    assert_eq!(e.pid(), Some(pid));
    // And the ring is poisoned for everyone.
    let mut c = r.consumer().unwrap();
    assert_eq!(c.try_pop().unwrap_err().kind(), ErrorKind::Protocol);
}

#[test]
fn ring_parked_consumer_is_woken_by_a_push() {
    let (_r, mut p, mut c) = ring(1024, Mode::Spsc);
    c.set_spin(Duration::ZERO);
    let t = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..50 {
            got.push(
                c.pop(Some(Instant::now() + Duration::from_secs(20)))
                    .unwrap()
                    .1,
            );
        }
        got
    });
    for i in 0..50u64 {
        thread::sleep(Duration::from_micros(300));
        p.push(1, &i.to_le_bytes(), None).unwrap();
    }
    let got = t.join().unwrap();
    assert_eq!(
        got,
        (0..50u64)
            .map(|i| i.to_le_bytes().to_vec())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Attach and corruption by a peer
// ---------------------------------------------------------------------------

fn region(cap: usize) -> Arc<dyn Region> {
    Arc::new(HeapRegion::new(region_size(cap)))
}

#[test]
fn ring_attach_reads_and_validates_the_header() {
    let reg = region(256);
    let a = Ring::create(reg.clone(), 256, Mode::Spsc).unwrap();
    let b = Ring::attach(reg.clone()).unwrap();
    assert_eq!((b.capacity(), b.mode()), (256, Mode::Spsc));
    let mut p = a.producer().unwrap();
    let mut c = b.consumer().unwrap();
    p.push(1, b"across views", None).unwrap();
    assert_eq!(c.pop(None).unwrap().1, b"across views");

    let meta = &a.header().meta.0;
    // A capacity larger than the mapping, not a power of two, or huge.
    for bad in [512u64, 100, u64::MAX, 0] {
        meta.capacity.store(bad, Ordering::SeqCst);
        assert_eq!(
            Ring::attach(reg.clone()).err().unwrap().kind(),
            ErrorKind::Protocol
        );
    }
    meta.capacity.store(256, Ordering::SeqCst);
    meta.mode.store(7, Ordering::SeqCst);
    assert_eq!(
        Ring::attach(reg.clone()).err().unwrap().kind(),
        ErrorKind::Protocol
    );
    meta.mode.store(1, Ordering::SeqCst);
    meta.version.store(2, Ordering::SeqCst);
    assert_eq!(
        Ring::attach(reg.clone()).err().unwrap().kind(),
        ErrorKind::Protocol
    );
    meta.magic.store(0, Ordering::SeqCst);
    assert_eq!(
        Ring::attach(reg.clone()).err().unwrap().kind(),
        ErrorKind::Protocol
    );
    // Too small a region for even the header.
    assert!(Ring::attach(Arc::new(HeapRegion::new(100))).is_err());
    assert!(Ring::create(Arc::new(HeapRegion::new(100)), 64, Mode::Spsc).is_err());
}

/// The capacity is copied at attach: changing it afterwards has no effect.
#[test]
fn ring_capacity_is_never_reread_after_attach() {
    let reg = region(128);
    let a = Ring::create(reg.clone(), 128, Mode::Spsc).unwrap();
    let b = Ring::attach(reg).unwrap();
    a.header().meta.0.capacity.store(1 << 40, Ordering::SeqCst);
    let (mut p, mut c) = (a.producer().unwrap(), b.consumer().unwrap());
    for i in 0..100u64 {
        p.push(1, &payload(i, 40), None).unwrap();
        assert_eq!(c.pop(None).unwrap().1, payload(i, 40));
    }
}

fn expect_protocol<T: std::fmt::Debug>(r: Result<T>) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Protocol, "{e}"),
        Ok(v) => panic!("expected a protocol error, got {v:?}"),
    }
}

#[test]
fn ring_corrupt_frame_words_are_protocol_errors() {
    let cap = 128;
    let seal_at = |pos: u64| seal(pos) << 40;
    let cases: Vec<(&str, u64)> = vec![
        ("bad seal", pack(4, 1, 8)),
        ("len over max", seal_at(0) | 1000),
        ("len u32::MAX", seal_at(0) | 0xFFFF_FFFF),
        ("padding at offset 0", pack(cap - 8, KIND_PAD, 0)),
        ("random", 0xDEAD_BEEF_0BAD_F00D),
    ];
    for (what, word) in cases {
        let (r, mut p, mut c) = ring(cap, Mode::Spsc);
        r.mem.word(0).store(word, Ordering::SeqCst);
        expect_protocol(c.try_pop());
        // Poisoned for both sides from now on.
        expect_protocol(c.try_pop());
        expect_protocol(p.try_push(1, b"x"));
        let _ = what;
    }
    // A frame that would run past the end of the data area.
    let (r, mut p, mut c) = ring(cap, Mode::Spsc);
    for _ in 0..12 {
        p.try_push(1, b"").unwrap();
        c.try_pop().unwrap().unwrap();
    }
    // Consumer now at offset 96; a frame of 40 payload bytes would end at 144.
    r.mem.word(96).store(pack(40, 1, 96), Ordering::SeqCst);
    expect_protocol(c.try_pop());
    // Padding with a wrong length.
    let (r, mut p, mut c) = ring(cap, Mode::Spsc);
    for _ in 0..12 {
        p.try_push(1, b"").unwrap();
        c.try_pop().unwrap().unwrap();
    }
    r.mem
        .word(96)
        .store(pack(8, KIND_PAD, 96), Ordering::SeqCst);
    expect_protocol(c.try_peek().map(|f| f.map(|f| f.kind())));
}

#[test]
fn ring_corrupt_positions_are_protocol_errors() {
    let cap = 128u64;
    for bad_head in [4u64, 1 << 60, u64::MAX - 7, 64] {
        let (r, mut p, _c) = ring(cap as usize, Mode::Spsc);
        // Fill so the producer must read the head.
        while p.try_push(1, &[0; 16]).unwrap() {}
        r.header().cons.0.pos.store(bad_head, Ordering::SeqCst);
        let res = p.try_push(1, &[0; 16]);
        if bad_head == 64 {
            // 64 is a plausible head (frames were 24 bytes: 0,24,48,72..):
            // accepted as a position; the ring stays memory-safe.
            let _ = res;
        } else {
            expect_protocol(res);
        }
    }
    // A head that goes backwards.
    let (r, mut p, mut c) = ring(cap as usize, Mode::Spsc);
    while p.try_push(1, &[0; 16]).unwrap() {}
    c.try_pop().unwrap().unwrap();
    c.try_pop().unwrap().unwrap();
    assert!(p.try_push(1, &[0; 16]).unwrap());
    r.header().cons.0.pos.store(0, Ordering::SeqCst);
    while p.try_push(1, &[0; 16]).unwrap_or(false) {}
    expect_protocol(p.try_push(1, &[0; 16]));

    // Mpmc reads positions from the header under its locks.
    for (tail, head) in [(3u64, 0u64), (1 << 20, 0), (0, 1 << 20), (8, 12)] {
        let r = Ring::with_heap(cap as usize, Mode::Mpmc).unwrap();
        let (mut p, mut c) = (r.producer().unwrap(), r.consumer().unwrap());
        r.header().prod.0.pos.store(tail, Ordering::SeqCst);
        r.header().cons.0.pos.store(head, Ordering::SeqCst);
        let a = p.try_push(1, b"x");
        let b = c.try_pop();
        assert!(
            a.is_err() || b.is_err(),
            "tail {tail} head {head}: {a:?} {b:?}"
        );
    }
}

/// Random header and data words, written by a "peer" between operations:
/// every call returns (Ok or an error), nothing panics, and frames handed
/// out are never longer than the maximum.
#[test]
fn ring_random_corruption_never_panics() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for mode in [Mode::Spsc, Mode::Mpmc] {
        for _ in 0..300 {
            let (r, mut p, mut c) = ring(256, mode);
            for _ in 0..40 {
                match rnd() % 6 {
                    0 => {
                        let len = (rnd() % 120) as usize;
                        let _ = p.try_push(1, &vec![0xAB; len]);
                    }
                    1 => {
                        if let Ok(Some((_, v))) = c.try_pop() {
                            assert!(v.len() <= r.max_payload());
                        }
                    }
                    2 => {
                        let off = (rnd() % 32) as usize * 8;
                        r.mem.word(off).store(rnd(), Ordering::SeqCst);
                    }
                    3 => {
                        let h = r.header();
                        let v = rnd() % 1024;
                        if rnd() % 2 == 0 {
                            h.cons.0.pos.store(v, Ordering::SeqCst);
                        } else {
                            h.prod.0.pos.store(v, Ordering::SeqCst);
                        }
                    }
                    4 => {
                        if let Ok(Some(mut res)) = p.try_reserve((rnd() % 100) as usize) {
                            res.buf().fill(1);
                            let n = res.buf().len();
                            let _ = res.commit(2, n);
                        }
                    }
                    _ => {
                        if let Ok(Some(f)) = c.try_peek() {
                            assert!(f.bytes().len() <= r.max_payload());
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Model-based property test
// ---------------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize, u8),
        Pop,
        /// Reserve `len`, then commit `commit` bytes (None: abandon).
        Reserve(usize, Option<usize>),
        Peek,
    }

    /// What the ring should hold, at byte level: padding and frames.
    #[derive(Debug)]
    enum Item {
        Pad(u64),
        Frame(u8, Vec<u8>),
    }

    struct Model {
        cap: u64,
        head: u64,
        tail: u64,
        items: VecDeque<Item>,
    }

    impl Model {
        /// Mirrors the ring's rule: a frame goes in if padding + frame +
        /// terminator fit in the free space.
        fn push(&mut self, kind: u8, data: Vec<u8>) -> bool {
            let size = frame_size(data.len()) as u64;
            let off = self.tail % self.cap;
            let pad = if off + size > self.cap {
                self.cap - off
            } else {
                0
            };
            if self.tail - self.head + pad + size + 8 > self.cap {
                return false;
            }
            self.pad(pad);
            self.tail += size;
            self.items.push_back(Item::Frame(kind, data));
            true
        }

        fn pad(&mut self, pad: u64) {
            if pad > 0 {
                self.tail += pad;
                self.items.push_back(Item::Pad(pad));
            }
        }

        fn pop(&mut self) -> Option<(u8, Vec<u8>)> {
            loop {
                match self.items.pop_front()? {
                    Item::Pad(n) => self.head += n,
                    Item::Frame(k, d) => {
                        self.head += frame_size(d.len()) as u64;
                        return Some((k, d));
                    }
                }
            }
        }
    }

    fn op(max: usize) -> impl Strategy<Value = Op> {
        let len = prop_oneof![
            Just(0usize),
            0..=16usize,
            0..=max,
            Just(max),
            (max.saturating_sub(8))..=max,
            Just(max + 1),
        ];
        prop_oneof![
            4 => (len.clone(), 0u8..=MAX_KIND).prop_map(|(l, k)| Op::Push(l, k)),
            4 => Just(Op::Pop),
            2 => (len, proptest::option::of(0usize..=1000))
                .prop_map(|(l, c)| Op::Reserve(l, c.map(|c| c % (l + 1)))),
            1 => Just(Op::Peek),
        ]
    }

    fn scenario() -> impl Strategy<Value = (usize, Mode, Vec<Op>)> {
        (0usize..4, prop_oneof![Just(Mode::Spsc), Just(Mode::Mpmc)]).prop_flat_map(|(c, mode)| {
            let cap = [64usize, 128, 256, 1024][c];
            let max = max_payload(cap);
            (
                Just(cap),
                Just(mode),
                proptest::collection::vec(op(max), 1..300),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn ring_matches_a_vecdeque_model((cap, mode, ops) in scenario()) {
            let (r, mut p, mut c) = ring(cap, mode);
            let max = r.max_payload();
            let mut m = Model { cap: cap as u64, head: 0, tail: 0, items: VecDeque::new() };
            let mut seq = 0u64;
            for op in ops {
                seq += 1;
                match op {
                    Op::Push(len, kind) => {
                        let data = payload(seq, len);
                        let got = p.try_push(kind, &data);
                        if len > max {
                            prop_assert_eq!(got.unwrap_err().kind(), ErrorKind::Codec);
                        } else {
                            let want = m.push(kind, data);
                            prop_assert_eq!(got.unwrap(), want);
                        }
                    }
                    Op::Pop => {
                        let got = c.try_pop().unwrap();
                        prop_assert_eq!(got, m.pop());
                    }
                    Op::Peek => {
                        let got = c.try_peek().unwrap().map(|f| (f.kind(), f.bytes().to_vec()));
                        prop_assert_eq!(got, m.pop());
                    }
                    Op::Reserve(len, commit) => {
                        let res = p.try_reserve(len);
                        if len > max {
                            prop_assert!(res.is_err());
                            continue;
                        }
                        // The model decides on the reserved length; a
                        // successful reservation lays any padding down.
                        let size = frame_size(len) as u64;
                        let off = m.tail % m.cap;
                        let pad = if off + size > m.cap { m.cap - off } else { 0 };
                        let fits = m.tail - m.head + pad + size + 8 <= m.cap;
                        match res.unwrap() {
                            None => prop_assert!(!fits),
                            Some(mut res) => {
                                prop_assert!(fits);
                                m.pad(pad);
                                prop_assert_eq!(res.buf().len(), len);
                                match commit {
                                    Some(n) => {
                                        let data = payload(seq, n);
                                        res.buf()[..n].copy_from_slice(&data);
                                        res.commit(7, n).unwrap();
                                        m.tail += frame_size(n) as u64;
                                        m.items.push_back(Item::Frame(7, data));
                                    }
                                    None => drop(res),
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(r.used_bytes() as u64, m.tail - m.head);
            }
            // Drain: everything the model holds comes out, in order.
            while let Some(want) = m.pop() {
                prop_assert_eq!(c.try_pop().unwrap(), Some(want));
            }
            prop_assert!(c.try_pop().unwrap().is_none());
        }
    }
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

#[test]
fn ring_spsc_two_threads_order_and_contents() {
    const N: u64 = 200_000;
    let (_r, mut p, mut c) = ring(4096, Mode::Spsc);
    let prod = thread::spawn(move || {
        for i in 0..N {
            let len = (i % 61) as usize;
            if i % 3 == 0 {
                let mut res = p.reserve(len, None).unwrap();
                res.buf().copy_from_slice(&payload(i, len));
                res.commit((i % 200) as u8, len).unwrap();
            } else {
                p.push((i % 200) as u8, &payload(i, len), None).unwrap();
            }
        }
    });
    let mut buf = Vec::new();
    for i in 0..N {
        let len = (i % 61) as usize;
        if i % 2 == 0 {
            let f = c.peek(None).unwrap();
            assert_eq!(f.kind(), (i % 200) as u8);
            assert_eq!(f.bytes(), &payload(i, len)[..], "frame {i}");
        } else {
            let kind = loop {
                if let Some(k) = c.try_pop_into(&mut buf).unwrap() {
                    break k;
                }
                c.wait_readable(&mut Wait::new(None)).unwrap();
            };
            assert_eq!(kind, (i % 200) as u8);
            assert_eq!(buf, payload(i, len), "frame {i}");
        }
    }
    prod.join().unwrap();
    assert_eq!(c.pop(None).unwrap_err().kind(), ErrorKind::Disconnected);
}

#[test]
fn ring_mpmc_threads_deliver_each_frame_once_in_producer_order() {
    const PRODUCERS: u64 = 3;
    const CONSUMERS: usize = 2;
    const PER: u64 = 20_000;
    let r = Ring::with_heap(1024, Mode::Mpmc).unwrap();
    let mut handles = Vec::new();
    for id in 0..PRODUCERS {
        let mut p = r.producer().unwrap();
        p.set_spin(Duration::from_micros(5));
        handles.push(thread::spawn(move || {
            for i in 0..PER {
                let mut msg = id.to_le_bytes().to_vec();
                msg.extend_from_slice(&i.to_le_bytes());
                msg.extend_from_slice(&payload(i, (i % 13) as usize));
                p.push(1, &msg, None).unwrap();
            }
            Vec::new()
        }));
    }
    let total = PRODUCERS * PER;
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..CONSUMERS {
        let mut c = r.consumer().unwrap();
        c.set_spin(Duration::from_micros(5));
        let taken = taken.clone();
        handles.push(thread::spawn(move || {
            let mut last = vec![None::<u64>; PRODUCERS as usize];
            let mut seen = Vec::new();
            loop {
                if taken.load(Ordering::SeqCst) >= total {
                    return seen;
                }
                let Some((_, m)) = c.try_pop().unwrap() else {
                    std::hint::spin_loop();
                    thread::yield_now();
                    continue;
                };
                taken.fetch_add(1, Ordering::SeqCst);
                let id = u64::from_le_bytes(m[..8].try_into().unwrap());
                let i = u64::from_le_bytes(m[8..16].try_into().unwrap());
                assert_eq!(&m[16..], &payload(i, (i % 13) as usize)[..]);
                let l = &mut last[id as usize];
                assert!(l.is_none_or(|l| l < i), "producer {id}: {i} after {l:?}");
                *l = Some(i);
                seen.push((id, i));
            }
        }));
    }
    let mut all: Vec<(u64, u64)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    let want: Vec<(u64, u64)> = (0..PRODUCERS)
        .flat_map(|id| (0..PER).map(move |i| (id, i)))
        .collect();
    assert_eq!(all, want);
}

// ---------------------------------------------------------------------------
// Micro-benchmark (not a test): cargo test --release --lib ring::tests::bench -- --ignored --nocapture
// ---------------------------------------------------------------------------

#[test]
#[ignore = "micro-benchmark; run by hand in release mode"]
fn bench_ring_ping_pong_and_throughput() {
    const ROUNDS: u64 = 200_000;
    // Floor on this machine, measured in the same run: two bare atomics on
    // separate cache lines (one line moves per hop).
    {
        #[repr(align(64))]
        struct L(std::sync::atomic::AtomicU64);
        let a = Arc::new((L(AtomicU64::new(0)), L(AtomicU64::new(0))));
        let b = a.clone();
        let echo = thread::spawn(move || {
            for i in 1..=ROUNDS {
                while b.0 .0.load(Ordering::Acquire) != i {
                    std::hint::spin_loop();
                }
                b.1 .0.store(i, Ordering::Release);
            }
        });
        let t0 = Instant::now();
        for i in 1..=ROUNDS {
            a.0 .0.store(i, Ordering::Release);
            while a.1 .0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
        }
        let el = t0.elapsed();
        echo.join().unwrap();
        println!(
            "ping-pong floor (bare atomics): {:.0} ns one-way",
            el.as_nanos() as f64 / ROUNDS as f64 / 2.0
        );
    }
    // Ping-pong: two rings, 8-byte frames, busy spinning with try_* calls
    // (notifying: a SeqCst fence per call) or the *_quiet calls (no fence).
    for attempt in 0..4 {
        let quiet = attempt % 2 == 1;
        let (_a, mut p1, mut c1) = ring(4096, Mode::Spsc);
        let (_b, mut p2, mut c2) = ring(4096, Mode::Spsc);
        let echo = thread::spawn(move || {
            let mut buf = Vec::with_capacity(8);
            for _ in 0..ROUNDS {
                while (if quiet {
                    c1.try_pop_into_quiet(&mut buf)
                } else {
                    c1.try_pop_into(&mut buf)
                })
                .unwrap()
                .is_none()
                {
                    std::hint::spin_loop();
                }
                while !(if quiet {
                    p2.try_push_quiet(1, &buf)
                } else {
                    p2.try_push(1, &buf)
                })
                .unwrap()
                {}
            }
        });
        let mut buf = Vec::with_capacity(8);
        let t0 = Instant::now();
        for i in 0..ROUNDS {
            let b = i.to_le_bytes();
            while !(if quiet {
                p1.try_push_quiet(1, &b)
            } else {
                p1.try_push(1, &b)
            })
            .unwrap()
            {}
            while (if quiet {
                c2.try_pop_into_quiet(&mut buf)
            } else {
                c2.try_pop_into(&mut buf)
            })
            .unwrap()
            .is_none()
            {
                std::hint::spin_loop();
            }
        }
        let el = t0.elapsed();
        echo.join().unwrap();
        println!(
            "ping-pong{} #{attempt}: {:.0} ns one-way ({:.0} ns round trip)",
            if quiet { " quiet" } else { "" },
            el.as_nanos() as f64 / ROUNDS as f64 / 2.0,
            el.as_nanos() as f64 / ROUNDS as f64
        );
    }
    // Throughput of 8-byte frames, one producer thread, one consumer.
    const N: u64 = 20_000_000;
    for (name, quiet, backoff) in [
        ("try_push/try_pop", false, 1),
        ("*_quiet + notify per 64", true, 1),
        (
            "try_push/try_pop, consumer backs off 32 pauses when empty",
            false,
            32,
        ),
        ("*_quiet, consumer backs off 32 pauses when empty", true, 32),
    ] {
        for attempt in 0..2 {
            let (_r, mut p, mut c) = ring(1 << 16, Mode::Spsc);
            let t0 = Instant::now();
            let cons = thread::spawn(move || {
                let mut buf = Vec::with_capacity(8);
                let mut sum = 0u64;
                let mut n = 0u64;
                while n < N {
                    let got = if quiet {
                        c.try_pop_into_quiet(&mut buf).unwrap()
                    } else {
                        c.try_pop_into(&mut buf).unwrap()
                    };
                    if got.is_some() {
                        sum = sum.wrapping_add(u64::from_le_bytes(buf[..8].try_into().unwrap()));
                        n += 1;
                        if quiet && n.is_multiple_of(64) {
                            c.notify();
                        }
                    } else {
                        // Empty: let the producer fill the line before we
                        // pull it again (else the line moves once per frame).
                        for _ in 0..backoff {
                            std::hint::spin_loop();
                        }
                    }
                }
                sum
            });
            for i in 0..N {
                let bytes = i.to_le_bytes();
                loop {
                    let ok = if quiet {
                        p.try_push_quiet(1, &bytes).unwrap()
                    } else {
                        p.try_push(1, &bytes).unwrap()
                    };
                    if ok {
                        break;
                    }
                    std::hint::spin_loop();
                }
                if quiet && i.is_multiple_of(64) {
                    p.notify();
                }
            }
            let sum = cons.join().unwrap();
            let el = t0.elapsed();
            assert_eq!(sum, N * (N - 1) / 2);
            println!(
                "throughput {name} #{attempt}: {:.1} M msgs/s",
                N as f64 / el.as_secs_f64() / 1e6
            );
        }
    }
}

#[test]
#[ignore = "micro-benchmark; run by hand in release mode"]
fn bench_ring_one_thread() {
    // Instruction cost: push + pop of an 8-byte frame on one thread.
    {
        let (_r, mut p, mut c) = ring(4096, Mode::Spsc);
        let mut buf = Vec::with_capacity(8);
        let n = 5_000_000u64;
        let t0 = Instant::now();
        for i in 0..n {
            p.try_push_quiet(1, &i.to_le_bytes()).unwrap();
            c.try_pop_into_quiet(&mut buf).unwrap().unwrap();
        }
        println!(
            "one thread, quiet push + pop: {:.1} ns per frame",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
        let t0 = Instant::now();
        for i in 0..n {
            p.try_push(1, &i.to_le_bytes()).unwrap();
            c.try_pop_into(&mut buf).unwrap().unwrap();
        }
        println!(
            "one thread, notifying push + pop: {:.1} ns per frame",
            t0.elapsed().as_nanos() as f64 / n as f64
        );
    }
}

#[test]
fn bogus_state_bits_do_not_turn_a_bounded_wait_into_a_spin() {
    // A peer sets state bits that do not concern the waiting side (or no
    // side at all). The waits must still time out at their deadline (they
    // used to spin forever: the watchdog turns that into a failure).
    let (done, waited) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for bits in [CONSUMER_CLOSED, 0x100, CONSUMER_CLOSED | 0x100] {
            let (r, _p, mut c) = ring(256, Mode::Mpmc);
            r.header().state.0.store(bits, Ordering::SeqCst);
            let e = c.pop(soon()).unwrap_err();
            assert!(e.is_timeout(), "{bits:#x}: {e}");
            let e = c.take_each(4, soon(), |_, _| Ok(())).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{bits:#x}: {e}");
        }
        for bits in [0x100, PRODUCER_CLOSED, PRODUCER_CLOSED | 0x100] {
            let (r, mut p, _c) = ring(256, Mode::Mpmc);
            while p.try_push(1, &[0u8; 40]).unwrap() {}
            r.header().state.0.store(bits, Ordering::SeqCst);
            let e = p.push(1, &[0u8; 40], soon()).unwrap_err();
            // The sending side closed by another handle (a queue's
            // shutdown) ends a producer's wait at once; other bits do not.
            if bits & PRODUCER_CLOSED != 0 {
                assert!(e.is_disconnected(), "{bits:#x}: {e}");
            } else {
                assert!(e.is_timeout(), "{bits:#x}: {e}");
            }
        }
        let _ = done.send(());
    });
    match waited.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("a bounded wait never returned")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("a check failed (see the panic above)")
        }
    }
}

#[test]
fn batches_write_and_take_several_frames_under_one_hold() {
    let (_r, mut p, mut c) = ring(256, Mode::Mpmc);
    let written = p
        .batch(None, |b| {
            let mut n = 0;
            while b.try_write(3, 8, |buf| {
                buf.fill(n);
                Ok(8)
            })? {
                n += 1;
            }
            Ok::<u8, Error>(n)
        })
        .unwrap()
        .unwrap();
    // 256 bytes of ring, 16 a frame (8 word + 8 payload), 8 for the
    // terminator: 15 frames fit.
    assert_eq!(written, 15);
    let mut got = Vec::new();
    assert_eq!(
        c.take_each(10, None, |k, b| {
            got.push((k, b.to_vec()));
            Ok(())
        })
        .unwrap(),
        10
    );
    assert_eq!(got, (0..10u8).map(|n| (3, vec![n; 8])).collect::<Vec<_>>());
    // A failing read after others leaves its frame for the next call.
    let mut seen = 0;
    assert_eq!(
        c.take_each(10, None, |_, _| {
            seen += 1;
            if seen == 3 {
                Err(Error::new(ErrorKind::Codec, "bad"))
            } else {
                Ok(())
            }
        })
        .unwrap(),
        2
    );
    assert_eq!(c.try_pop().unwrap(), Some((3, vec![12u8; 8])));
    // A failing read of the first frame consumes it and is the error.
    let e = c
        .take_each(10, None, |_, _| Err(Error::new(ErrorKind::Codec, "bad")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert_eq!(c.try_pop().unwrap(), Some((3, vec![14u8; 8])));
    assert!(c.try_pop().unwrap().is_none());
}

#[test]
fn a_frame_taken_in_parts_stays_first_with_its_cursor_until_its_last_part() {
    // Two consumers of one Mpmc ring, as two processes would be: a frame
    // of four "items" after an 8-byte cursor, then a frame of one.
    let (r, mut p, mut c) = ring(1024, Mode::Mpmc);
    let mut c2 = r.consumer().unwrap();
    let mut batch = vec![0u8; 8];
    batch.extend_from_slice(&[10, 11, 12, 13]);
    p.try_push(5, &batch).unwrap();
    p.try_push(6, &[99]).unwrap();
    // Reads the cursor, takes up to `budget` of the four items.
    fn reader(got: &mut Vec<u8>) -> impl FnMut(u8, &[u8], usize) -> Result<Took> + '_ {
        move |kind, bytes, budget| {
            if kind == 6 {
                got.push(bytes[0]);
                return Ok(Took::All(1));
            }
            let cursor = u64::from_ne_bytes(bytes[..8].try_into().unwrap()) as usize;
            let n = (4 - cursor).min(budget);
            got.extend_from_slice(&bytes[8 + cursor..8 + cursor + n]);
            Ok(if cursor + n == 4 {
                Took::All(n)
            } else {
                Took::Part {
                    n,
                    cursor: (cursor + n) as u64,
                }
            })
        }
    }
    let mut got = Vec::new();
    // One item: the frame stays, the call ends there.
    assert_eq!(c.take_items(1, None, reader(&mut got)).unwrap(), 1);
    assert_eq!(got, [10]);
    // The other consumer takes up where the first left off, and a part
    // ends its call even with budget left for the frame behind.
    got.clear();
    assert_eq!(c2.take_items(2, None, reader(&mut got)).unwrap(), 2);
    assert_eq!(got, [11, 12]);
    // The last part releases the frame; the next frame follows in the
    // same call.
    got.clear();
    assert_eq!(c.take_items(10, None, reader(&mut got)).unwrap(), 2);
    assert_eq!(got, [13, 99]);
    assert!(c2.try_pop().unwrap().is_none());
    assert_eq!(r.used_bytes(), 0);
}

/// A batch writer of one 8-byte frame, every byte `v`.
fn fill8(v: u8) -> impl FnOnce(&mut [u8]) -> Result<usize> {
    move |buf| {
        buf[..8].fill(v);
        Ok(8)
    }
}

/// A batch publishes its frames a group at a time: the consumer sees none
/// of a group until its last frame is written (or the batch ends), then
/// all of them, in order.
#[test]
fn a_batch_publishes_its_frames_a_group_at_a_time() {
    let (_r, mut p, mut c) = ring(1 << 16, Mode::Spsc);
    // 16 bytes a frame: its word and 8 payload bytes.
    let per_group = (super::producer::GROUP_BYTES / 16) as usize;
    let frame = |n: usize| (3u8, vec![n as u8; 8]);
    p.batch(None, |b| {
        for n in 0..per_group - 1 {
            assert!(b.try_write(3, 8, fill8(n as u8)).unwrap());
        }
        assert_eq!(
            c.try_pop().unwrap(),
            None,
            "a group is seen before it is whole"
        );
        let last = per_group - 1;
        assert!(b.try_write(3, 8, fill8(last as u8)).unwrap());
        for n in 0..per_group {
            assert_eq!(c.try_pop().unwrap(), Some(frame(n)));
        }
        // The next frame begins a group the batch's end publishes.
        assert!(b.try_write(3, 8, fill8(7)).unwrap());
        assert_eq!(c.try_pop().unwrap(), None);
    })
    .unwrap();
    assert_eq!(c.try_pop().unwrap(), Some(frame(7)));
    assert_eq!(c.try_pop().unwrap(), None);
}

/// A batch whose filler panics still delivers the frames it committed
/// (and leaves the side, so the next batch can write).
#[test]
fn a_batch_that_panics_delivers_what_it_wrote() {
    let (_r, mut p, mut c) = ring(1 << 12, Mode::Mpmc);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.batch(None, |b| {
            for n in 1..=2u8 {
                assert!(b.try_write(3, 8, fill8(n)).unwrap());
            }
            panic!("the filler fails");
        })
    }));
    assert!(unwound.is_err());
    assert_eq!(c.try_pop().unwrap(), Some((3, vec![1; 8])));
    assert_eq!(c.try_pop().unwrap(), Some((3, vec![2; 8])));
    assert_eq!(c.try_pop().unwrap(), None);
    assert!(p.try_push(4, b"after").unwrap());
    assert_eq!(c.try_pop().unwrap(), Some((4, b"after".to_vec())));
}

// ---------------------------------------------------------------------------
// Long messages: pieces of KIND_MORE, then the message's own kind
// ---------------------------------------------------------------------------

/// A deadline no passing test reaches: a failure (a producer thread that
/// panicked) ends the consumer's wait instead of hanging the run.
fn minute() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(60))
}

#[test]
fn a_long_message_streams_through_a_small_ring_and_comes_out_whole() {
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let (r, mut p, mut c) = ring(256, mode);
        let long = payload(7, 10 * r.max_payload() + 13);
        let sent = long.clone();
        // 10× the largest frame through a ring that holds 2: the producer
        // streams while the consumer reads.
        let t = thread::spawn(move || {
            p.push(3, b"before", None).unwrap();
            p.push_long(9, &sent, None).unwrap();
            p.push(4, b"after", None).unwrap();
        });
        let f = c.peek(minute()).unwrap();
        assert_eq!((f.kind(), f.bytes()), (3, &b"before"[..]));
        drop(f);
        let f = c.peek(minute()).unwrap();
        assert_eq!(f.kind(), 9, "{mode:?}: the last piece's kind");
        assert!(
            f.bytes() == long.as_slice(),
            "{mode:?}: the bytes, in order"
        );
        drop(f);
        let f = c.peek(minute()).unwrap();
        assert_eq!((f.kind(), f.bytes()), (4, &b"after"[..]));
        drop(f);
        t.join().unwrap();
        assert_eq!(r.used_bytes(), 0);
    }
}

#[test]
fn take_each_gives_a_long_message_alone_and_whole() {
    let (r, mut p, mut c) = ring(256, Mode::Mpmc);
    let long = payload(3, 3 * r.max_payload());
    let sent = long.clone();
    let t = thread::spawn(move || {
        p.push(1, b"a", None).unwrap();
        p.push_long(2, &sent, None).unwrap();
        p.push(1, b"b", None).unwrap();
    });
    let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
    while got.len() < 3 {
        c.take_each(8, minute(), |k, b| {
            got.push((k, b.to_vec()));
            Ok(())
        })
        .unwrap();
    }
    t.join().unwrap();
    assert_eq!(got[0], (1, b"a".to_vec()));
    assert_eq!(got[1].0, 2);
    assert!(got[1].1 == long);
    assert_eq!(got[2], (1, b"b".to_vec()));
}

#[test]
fn a_kept_long_message_is_read_again_first() {
    let (r, mut p, mut c) = ring(256, Mode::Spsc);
    let long = payload(5, 2 * r.max_payload() + 1);
    let sent = long.clone();
    let t = thread::spawn(move || {
        p.push_long(6, &sent, None).unwrap();
        p.push(1, b"next", None).unwrap();
    });
    let f = c.peek(minute()).unwrap();
    assert_eq!(f.bytes().len(), long.len());
    f.keep();
    assert!(c.poll(Some(Instant::now())).unwrap(), "ready: the kept one");
    let f = c.try_peek().unwrap().expect("the kept message");
    assert_eq!(f.kind(), 6);
    assert!(f.bytes() == long.as_slice());
    drop(f);
    let f = c.peek(minute()).unwrap();
    assert_eq!(f.bytes(), b"next");
    drop(f);
    t.join().unwrap();
}

#[test]
fn a_long_message_cut_off_by_its_producer_poisons_the_ring() {
    let (r, mut p, mut c) = ring(256, Mode::Spsc);
    // The first piece of a long message, by hand, then the producer goes.
    assert!(p.try_push_raw_kind_for_test(KIND_MORE, &[1u8; 16]).unwrap());
    drop(p);
    let e = c.peek(minute()).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(e.to_string().contains("cut off"), "{e}");
    let again = c.peek(soon()).map(|_| ()).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Protocol, "poisoned: {again}");
    let _ = r;
}

#[test]
fn a_long_push_that_times_out_before_its_first_piece_leaves_nothing() {
    let (r, mut p, mut c) = ring(256, Mode::Spsc);
    while p.try_push(1, &[0u8; 40]).unwrap() {}
    let e = p
        .push_long(2, &payload(1, 4 * r.max_payload()), soon())
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // Not poisoned, and only the small frames are there.
    let mut n = 0;
    while let Some((k, _)) = c.try_pop().unwrap() {
        assert_eq!(k, 1);
        n += 1;
    }
    assert!(n > 0);
    assert!(p.try_push(1, b"ok").unwrap());
}

#[test]
fn a_long_push_that_times_out_midway_is_dropped_by_the_consumer() {
    for mode in [Mode::Spsc, Mode::Mpmc] {
        let (r, mut p, mut c) = ring(256, mode);
        // Nobody reads: the first pieces go in, the rest never fit.
        let e = p
            .push_long(2, &payload(9, 4 * r.max_payload()), soon())
            .unwrap_err();
        assert!(e.is_timeout(), "{mode:?}: {e}");
        assert!(r.used_bytes() > 0, "{mode:?}: pieces went in");
        // The reader never sees the half message: it drops the pieces and
        // finds nothing else; the ring is not poisoned and is empty again.
        let e = c.peek(soon()).map(|_| ()).unwrap_err();
        assert!(e.is_timeout(), "{mode:?}: {e}");
        assert_eq!(r.used_bytes(), 0, "{mode:?}");
        p.push(3, b"next", minute()).unwrap();
        let f = c.peek(minute()).unwrap();
        assert_eq!((f.kind(), f.bytes()), (3, &b"next"[..]), "{mode:?}");
        drop(f);
        // The same through try_peek and take_each.
        let e = p
            .push_long(2, &payload(9, 4 * r.max_payload()), soon())
            .unwrap_err();
        assert!(e.is_timeout());
        assert!(
            c.try_peek().unwrap().is_none(),
            "{mode:?}: only a dropped message"
        );
        p.push(4, b"z", minute()).unwrap();
        let mut got = Vec::new();
        c.take_each(4, minute(), |k, b| {
            got.push((k, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![(4, b"z".to_vec())], "{mode:?}");
    }
}
