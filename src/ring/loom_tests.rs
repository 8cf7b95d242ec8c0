//! loom model of the ring's atomics (frame words, terminators, padding,
//! head publication), with payload bytes stored as Relaxed atomic words so
//! a missing Release/Acquire shows up as a wrong payload.
//!
//! RUSTFLAGS="--cfg multiproc_loom" cargo test --release --lib ring::loom_tests

use super::memory::model::ModelMem;
use super::*;
use loom::thread;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(17) ^ i as u8)
        .collect()
}

/// The frame lengths of the Spsc models: over a 64-byte ring (max payload
/// 16) they force a full ring, padding and wrap-around.
const LENS: [usize; 4] = [16, 0, 8, 16];

/// One producer thread sending frame `i` of [`LENS`] with `push` (which
/// returns `false` while the ring is full), one consumer checking that
/// every frame arrives intact and in order.
fn check_spsc_frames(
    preemption_bound: usize,
    push: fn(&mut Producer<ModelMem>, usize, &[u8]) -> bool,
    after: fn(&mut Producer<ModelMem>, usize),
) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemption_bound);
    b.check(move || {
        let r = Ring::in_model(64, Mode::Spsc).unwrap();
        let mut p = r.producer().unwrap();
        let mut c = r.consumer().unwrap();
        let t = thread::spawn(move || {
            for (i, &len) in LENS.iter().enumerate() {
                while !push(&mut p, i, &payload(i as u64, len)) {
                    thread::yield_now();
                }
                after(&mut p, i);
            }
        });
        for (i, &len) in LENS.iter().enumerate() {
            let (k, v) = loop {
                match c.try_pop().unwrap() {
                    Some(f) => break f,
                    None => thread::yield_now(),
                }
            };
            assert_eq!(k, i as u8);
            assert_eq!(v, payload(i as u64, len));
        }
        t.join().unwrap();
    });
}

/// One producer, one consumer, frames pushed one by one.
#[test]
fn loom_spsc_frames_arrive_intact_and_in_order() {
    check_spsc_frames(
        4,
        |p, i, bytes| p.try_push(i as u8, bytes).unwrap(),
        |_, _| {},
    );
}

/// A batch's groups: the first frame of a group keeps its word back and
/// publishes the frames after it with that one store. The consumer must
/// see every frame intact and in order (padding and a full ring
/// included), never a frame of a group before its held word.
#[test]
fn loom_held_groups_arrive_intact_and_in_order() {
    check_spsc_frames(
        3,
        |p, i, bytes| {
            let pushed = p.try_push_held_for_model(i as u8, bytes).unwrap();
            if !pushed {
                // Full: the consumer can only free what it can see.
                p.publish_held_for_model();
            }
            pushed
        },
        // Groups of two frames.
        |p, i| {
            if i % 2 == 1 {
                p.publish_held_for_model();
            }
        },
    );
}

/// Two producers share an Mpmc ring through its lock; a consumer takes
/// both frames afterwards. (A consumer spinning concurrently as well makes
/// the model too large for loom's branch limit.)
#[test]
fn loom_mpmc_lock_serialises_producers() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let r = Ring::in_model(64, Mode::Mpmc).unwrap();
        let ts: Vec<_> = (0..2u8)
            .map(|id| {
                let mut p = r.producer().unwrap();
                thread::spawn(move || {
                    assert!(p.try_push(id, &payload(id as u64, 8)).unwrap());
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        let mut c = r.consumer().unwrap();
        let mut seen = [false; 2];
        for _ in 0..2 {
            let (k, v) = c.try_pop().unwrap().expect("both frames committed");
            assert_eq!(v, payload(k as u64, 8));
            assert!(!seen[k as usize]);
            seen[k as usize] = true;
        }
        assert!(c.try_pop().unwrap().is_none());
    });
}

/// Frames committed before the producer closes are all delivered before
/// the consumer sees `Disconnected` (close's Release vs. the consumer's
/// Acquire of the state word).
#[test]
fn loom_close_after_frames_drains_then_disconnects() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(|| {
        let r = Ring::in_model(64, Mode::Spsc).unwrap();
        let mut p = r.producer().unwrap();
        let mut c = r.consumer().unwrap();
        let t = thread::spawn(move || {
            assert!(p.try_push(1, &payload(1, 8)).unwrap());
            assert!(p.try_push(2, &payload(2, 0)).unwrap());
            drop(p); // closes
        });
        let mut got = Vec::new();
        loop {
            match c.try_pop() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => thread::yield_now(),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Disconnected);
                    break;
                }
            }
        }
        assert_eq!(got, vec![(1, payload(1, 8)), (2, payload(2, 0))]);
        t.join().unwrap();
    });
}
