//! Entry point of the `ring_ops` fuzz target: operations against a
//! `VecDeque` model, interleaved with a peer's arbitrary writes to frame
//! words and header positions. Until the first corruption the ring must
//! match the model exactly; after it, every call must still return (a value
//! or an error) without panicking, and no frame may exceed the maximum.

use super::*;
use std::collections::VecDeque;
use std::time::Instant;

/// A frame as the model holds it: kind and payload.
type Frame = (u8, Vec<u8>);

struct Model {
    cap: u64,
    head: u64,
    tail: u64,
    /// `None` = padding of that many bytes.
    items: VecDeque<(u64, Option<Frame>)>,
}

impl Model {
    fn room(&self, len: usize) -> (bool, u64) {
        let size = frame_size(len) as u64;
        let off = self.tail % self.cap;
        let pad = if off + size > self.cap {
            self.cap - off
        } else {
            0
        };
        (self.tail - self.head + pad + size + 8 <= self.cap, pad)
    }

    fn add(&mut self, pad: u64, frame: Option<Frame>) {
        if pad > 0 {
            self.tail += pad;
            self.items.push_back((pad, None));
        }
        if let Some(f) = frame {
            let size = frame_size(f.1.len()) as u64;
            self.tail += size;
            self.items.push_back((size, Some(f)));
        }
    }

    fn pop(&mut self) -> Option<Frame> {
        loop {
            let (n, item) = self.items.pop_front()?;
            self.head += n;
            if item.is_some() {
                return item;
            }
        }
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn word(&mut self) -> Option<u64> {
        let mut w = [0u8; 8];
        for b in &mut w {
            *b = self.byte()?;
        }
        Some(u64::from_le_bytes(w))
    }
}

/// Runs one fuzz input. Panics only on a real bug (a model mismatch before
/// any corruption, or a frame over the maximum).
pub(crate) fn run(data: &[u8]) {
    let mut inp = Input(data);
    let Some(first) = inp.byte() else { return };
    let cap = [64usize, 128, 256, 1024][(first & 3) as usize];
    let mode = if first & 4 == 0 {
        Mode::Spsc
    } else {
        Mode::Mpmc
    };
    let r = Ring::with_heap(cap, mode).expect("valid capacity");
    let (mut p, mut c) = (
        r.producer().expect("producer"),
        r.consumer().expect("consumer"),
    );
    let max = r.max_payload();
    let mut m = Model {
        cap: cap as u64,
        head: 0,
        tail: 0,
        items: VecDeque::new(),
    };
    let mut corrupted = false;
    let mut seq = 0u8;
    while let Some(op) = inp.byte() {
        seq = seq.wrapping_add(1);
        let len_of = |b: u8| (b as usize * (max + 2)) / 255;
        match op % 8 {
            0 => {
                let (Some(l), Some(kind)) = (inp.byte(), inp.byte()) else {
                    return;
                };
                let len = len_of(l);
                let data = vec![seq; len];
                let got = p.try_push(kind % (MAX_KIND + 1), &data);
                if !corrupted {
                    if len > max {
                        assert!(got.is_err());
                    } else {
                        let (fits, pad) = m.room(len);
                        assert_eq!(got.expect("push"), fits);
                        if fits {
                            m.add(pad, Some((kind % (MAX_KIND + 1), data)));
                        }
                    }
                }
            }
            1 => {
                let got = c.try_pop();
                if let Ok(Some((_, v))) = &got {
                    assert!(v.len() <= max);
                }
                if !corrupted {
                    assert_eq!(got.expect("pop"), m.pop());
                }
            }
            2 => {
                let (Some(l), Some(commit)) = (inp.byte(), inp.byte()) else {
                    return;
                };
                let len = len_of(l);
                let (fits, pad) = m.room(len);
                match p.try_reserve(len) {
                    Ok(Some(mut res)) => {
                        assert!(res.buf().len() == len);
                        if !corrupted {
                            assert!(fits && len <= max);
                        }
                        if commit & 1 == 0 {
                            let n = (commit as usize / 2).min(len);
                            res.buf()[..n].fill(seq);
                            let ok = res.commit(9, n).is_ok();
                            if !corrupted {
                                assert!(ok);
                                m.add(pad, Some((9, vec![seq; n])));
                            }
                        } else if !corrupted {
                            m.add(pad, None);
                        }
                    }
                    Ok(None) => assert!(corrupted || !fits),
                    Err(_) => assert!(corrupted || len > max),
                }
            }
            3 => {
                let got = c.try_peek().map(|f| {
                    f.map(|f| {
                        assert!(f.bytes().len() <= max);
                        (f.kind(), f.bytes().to_vec())
                    })
                });
                if !corrupted {
                    assert_eq!(got.expect("peek"), m.pop());
                }
            }
            4 => {
                let (Some(l), Some(n)) = (inp.byte(), inp.byte()) else {
                    return;
                };
                // A batch of up to 8 frames of one length, written until
                // the ring is full.
                let (len, n) = (len_of(l), usize::from(n % 8) + 1);
                let got = p.batch(Some(Instant::now()), |b| {
                    let mut written = 0u8;
                    for _ in 0..n {
                        let fill = seq.wrapping_add(written);
                        match b.try_write(9, len, |buf| {
                            buf.fill(fill);
                            Ok(len)
                        }) {
                            Ok(true) => written += 1,
                            Ok(false) => break,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(written)
                });
                if !corrupted {
                    let written = got.expect("batch: the side is free");
                    if len > max {
                        assert!(written.is_err());
                    } else {
                        let mut want = 0u8;
                        for _ in 0..n {
                            let (fits, pad) = m.room(len);
                            if !fits {
                                break;
                            }
                            m.add(pad, Some((9, vec![seq.wrapping_add(want); len])));
                            want += 1;
                        }
                        assert_eq!(written.expect("batch write"), want);
                    }
                }
            }
            5 => {
                let Some(k) = inp.byte() else { return };
                let k = usize::from(k % 6);
                let mut got = Vec::new();
                let taken = c.take_each(k, Some(Instant::now()), |kind, bytes| {
                    assert!(bytes.len() <= max);
                    got.push((kind, bytes.to_vec()));
                    Ok(())
                });
                if !corrupted {
                    let want: Vec<Frame> = (0..k).map_while(|_| m.pop()).collect();
                    match taken {
                        Ok(n) => {
                            assert!(k == 0 || n > 0);
                            assert_eq!(n, got.len());
                            assert_eq!(got, want);
                        }
                        Err(e) => {
                            assert!(e.is_timeout() && k > 0 && want.is_empty(), "{e}");
                        }
                    }
                }
            }
            6 => {
                let (Some(at), Some(w)) = (inp.byte(), inp.word()) else {
                    return;
                };
                let off = (at as usize * 8) % cap;
                r.mem.word(off).store(w, Ordering::SeqCst);
                corrupted = true;
            }
            _ => {
                let (Some(which), Some(w)) = (inp.byte(), inp.word()) else {
                    return;
                };
                let h = r.header();
                // Never the lock words: a lock "held" by a live pid blocks
                // by design (until the holder dies); that is not a bug.
                match which % 3 {
                    0 => h.prod.0.pos.store(w, Ordering::SeqCst),
                    1 => h.cons.0.pos.store(w, Ordering::SeqCst),
                    _ => h.state.0.store(w as u32, Ordering::SeqCst),
                }
                corrupted = true;
            }
        }
    }
}
