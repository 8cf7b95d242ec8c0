//! The wakers of the futures and streams waiting on one result
//! ([`Wakers`]), and the [`Alarm`] that wakes a stream at its deadline.
//!
//! Wakers are fired by whichever thread settles the result: the pump, a
//! thread blocked in a call that drives, the callback thread (results
//! with callbacks), or the thread that terminates the pool. No runtime is
//! involved (docs/ARCHITECTURE.md, Pool, "Async: futures and streams").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keys of registered wakers, unique in the process.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// The wakers waiting for one result to change, each under the key of
/// the future or stream that registered it (so that a future polled again
/// replaces its waker, and one dropped removes it: nothing piles up).
#[derive(Default)]
pub(crate) struct Wakers {
    list: Mutex<Vec<(u64, Waker)>>,
}

impl Wakers {
    /// Registers (or refreshes) the waker of the waiter whose key is in
    /// `key` (a new key is made on its first call). The caller checks its
    /// condition again afterwards: a change made before this call woke
    /// nobody.
    pub(crate) fn register(&self, key: &mut Option<u64>, waker: &Waker) {
        let k = *key.get_or_insert_with(|| NEXT_KEY.fetch_add(1, Ordering::Relaxed));
        let mut list = lock(&self.list);
        match list.iter_mut().find(|(at, _)| *at == k) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
            }
            None => list.push((k, waker.clone())),
        }
    }

    /// Forgets the waker registered under `key` (a waiter dropped or done).
    pub(crate) fn remove(&self, key: &mut Option<u64>) {
        if let Some(k) = key.take() {
            lock(&self.list).retain(|(at, _)| *at != k);
        }
    }

    /// Wakes every registered waker, once: a woken waiter that still has
    /// to wait registers again when polled. Called after the state they
    /// wait on changed (its lock released), so a waiter that registers
    /// later sees the change when it checks again.
    pub(crate) fn wake_all(&self) {
        let list = std::mem::take(&mut *lock(&self.list));
        for (_, w) in list {
            w.wake();
        }
    }
}

/// Wakes a waker at a deadline, from a thread of its own that ends at the
/// deadline or when the alarm is dropped (a stream with a timeout and no
/// runtime timer to lean on).
pub(crate) struct Alarm {
    shared: Arc<(Mutex<AlarmState>, Condvar)>,
}

struct AlarmState {
    waker: Option<Waker>,
    stopped: bool,
}

impl Alarm {
    /// Starts the thread; `None` if it cannot be started (the caller then
    /// looks at the deadline whenever it is polled, and the pool's own
    /// progress still wakes it).
    pub(crate) fn start(deadline: Instant, waker: &Waker) -> Option<Alarm> {
        let shared = Arc::new((
            Mutex::new(AlarmState {
                waker: Some(waker.clone()),
                stopped: false,
            }),
            Condvar::new(),
        ));
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("multiproc-alarm".into())
            .spawn(move || {
                let (m, cv) = &*theirs;
                let mut st = lock(m);
                loop {
                    if st.stopped {
                        return;
                    }
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    st = match cv.wait_timeout(st, left) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                let w = st.waker.take();
                drop(st);
                if let Some(w) = w {
                    w.wake();
                }
            })
            .ok()?;
        Some(Alarm { shared })
    }

    /// The waker to wake at the deadline (the stream was polled again).
    pub(crate) fn set(&self, waker: &Waker) {
        let mut st = lock(&self.shared.0);
        match &mut st.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        lock(&self.shared.0).stopped = true;
        self.shared.1.notify_all();
    }
}
