//! loom model of the ring's atomics (frame words, terminators, padding,
//! head publication), with payload bytes stored as Relaxed atomic words so
//! a missing Release/Acquire shows up as a wrong payload.
//!
//! RUSTFLAGS="--cfg multiproc_loom" cargo test --release --lib ring::loom_tests

use super::*;
use loom::thread;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as u8).wrapping_mul(17) ^ i as u8)
        .collect()
}

/// One producer, one consumer, a 64-byte ring (max payload 16): four frames
/// of 16, 0, 8 and 16 bytes force a full ring, padding and wrap-around.
#[test]
fn loom_spsc_frames_arrive_intact_and_in_order() {
    let lens = [16usize, 0, 8, 16];
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(4);
    b.check(move || {
        let r = Ring::in_model(64, Mode::Spsc).unwrap();
        let mut p = r.producer().unwrap();
        let mut c = r.consumer().unwrap();
        let t = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                while !p.try_push(i as u8, &payload(i as u64, len)).unwrap() {
                    thread::yield_now();
                }
            }
        });
        for (i, &len) in lens.iter().enumerate() {
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

/// A batch's groups: the first frame of a group keeps its word back and
/// publishes the frames after it with that one store. The consumer must
/// see every frame intact and in order (padding and a full ring
/// included), never a frame of a group before its held word.
#[test]
fn loom_held_groups_arrive_intact_and_in_order() {
    let lens = [16usize, 0, 8, 16];
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let r = Ring::in_model(64, Mode::Spsc).unwrap();
        let mut p = r.producer().unwrap();
        let mut c = r.consumer().unwrap();
        let t = thread::spawn(move || {
            for (i, &len) in lens.iter().enumerate() {
                while !p
                    .try_push_held_for_model(i as u8, &payload(i as u64, len))
                    .unwrap()
                {
                    // Full: the consumer can only free what it can see.
                    p.publish_held_for_model();
                    thread::yield_now();
                }
                // Groups of two frames.
                if i % 2 == 1 {
                    p.publish_held_for_model();
                }
            }
        });
        for (i, &len) in lens.iter().enumerate() {
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
