//! Waiting as a `Future`: the crate's async waiter service.
//!
//! Every `*_async` call (`Queue::get_async`, `Lock::lock_async`,
//! `Process::join_async`, …) is a `poll_fn` over the call's own
//! non-blocking attempt (`try_get`, `try_lock`, …). When the attempt says
//! "not now", the future registers its `Waker` with the [`Entry`] of the
//! shared word it would have parked on (its [`Key`]). One crate thread per
//! entry, started by the first registration and shared by every future
//! waiting on that word, does what the blocking call does between its
//! attempts: it parks on the word with the same bookkeeping (a ring's
//! sleeper count, a lock's waiters bit), at most one liveness period at a
//! time, and asks the same liveness question once a period. When the word
//! says the attempt may now succeed ([`Source::ready`]) or the liveness
//! question fails, it wakes every registered future; each retries its own
//! attempt. The thread never takes anything itself (it only looks), so a
//! dropped future loses nothing: an item or a permit is only ever taken by
//! the poll that returns it. A thread whose entry has had no waiter for
//! [`LINGER`] ends.
//!
//! Why threads and not an OS readiness source: the waits are on futex
//! words in shared memory (named semaphores on Windows, a polled word on
//! macOS), none of which a reactor (epoll, kqueue, IOCP) can watch, and the
//! crate depends on no runtime. A process's exit is the exception: its
//! thread waits on the child's pidfd (Linux), which is the OS's readiness
//! source for it. See docs/ARCHITECTURE.md, "Async waits".

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::wait::LIVENESS_PERIOD;

/// How long a waiter thread outlives its last waiter (a future that is
/// woken, re-polled and registers again finds it still there).
const LINGER: Duration = Duration::from_millis(200);

/// What a waiter thread watches: one shared word and the question the
/// blocking call asks about it.
pub(crate) trait Source: Send + Sync + 'static {
    /// `true` when a retry of the attempt may succeed (or fail with the
    /// call's own error). Only looks: never takes anything.
    fn ready(&self) -> bool;
    /// One sleep as the blocking call sleeps (the same bookkeeping, so the
    /// other side's wake reaches it), at most `slice`; may return early.
    fn park(&self, slice: Duration);
    /// The blocking call's liveness question (a dead peer, a dead holder,
    /// a broken block): `false` wakes every waiter, whose retry then runs
    /// the blocking call's own check and returns its error.
    fn healthy(&self) -> bool;
    /// `true` for a source whose waiters must be woken once a liveness
    /// period whatever happens (a process join: its start timeout is kept
    /// by the waiter's state machine, not by a word).
    fn periodic(&self) -> bool {
        false
    }
}

/// Which word a future waits on: its address in this process's mapping
/// (kept mapped by the entry's source while the entry exists, so no other
/// word can take the address meanwhile) and a discriminator for waits on
/// one word that ask different questions (a barrier's generation, a
/// producer's frame length).
pub(crate) type Key = (usize, u64);

struct Entry {
    source: Arc<dyn Source>,
    state: Mutex<Waiters>,
    arrived: Condvar,
    /// Set by the thread when the last liveness question failed: the
    /// futures then run the blocking call's check at their next poll.
    unhealthy: AtomicBool,
}

#[derive(Default)]
struct Waiters {
    wakers: HashMap<u64, Waker>,
    thread: bool,
}

static ENTRIES: LazyLock<Mutex<HashMap<Key, Arc<Entry>>>> = LazyLock::new(Default::default);

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One future's place in an entry; dropping it withdraws its waker.
pub(crate) struct Registration {
    entry: Arc<Entry>,
    key: Key,
    id: u64,
}

impl Registration {
    fn new(key: Key, source: impl FnOnce() -> Arc<dyn Source>) -> Registration {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let entry = Arc::clone(locked(&ENTRIES).entry(key).or_insert_with(|| {
            Arc::new(Entry {
                source: source(),
                state: Mutex::new(Waiters::default()),
                arrived: Condvar::new(),
                unhealthy: AtomicBool::new(false),
            })
        }));
        Registration {
            entry,
            key,
            // SYNC: Relaxed: only uniqueness matters.
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `true` when the thread's last liveness question failed.
    fn unhealthy(&self) -> bool {
        // SYNC: Relaxed: a hint; the blocking check it triggers decides.
        self.entry.unhealthy.load(Ordering::Relaxed)
    }

    /// Registers (or refreshes) the waker; starts the entry's thread if it
    /// has none.
    fn wait_with(&self, waker: &Waker) -> Result<()> {
        let mut st = locked(&self.entry.state);
        match st.wakers.get_mut(&self.id) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                st.wakers.insert(self.id, waker.clone());
            }
        }
        if st.thread {
            self.entry.arrived.notify_one();
            return Ok(());
        }
        let entry = Arc::clone(&self.entry);
        let key = self.key;
        std::thread::Builder::new()
            .name("multiproc-async".into())
            .spawn(move || serve(entry, key))
            .map_err(|e| Error::io("starting the async waiter thread", e))?;
        st.thread = true;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        locked(&self.entry.state).wakers.remove(&self.id);
    }
}

fn wake_all(entry: &Entry) {
    let wakers = std::mem::take(&mut locked(&entry.state).wakers);
    for (_, w) in wakers {
        w.wake();
    }
}

/// The waiter thread of one entry.
fn serve(entry: Arc<Entry>, key: Key) {
    let mut next_check = Instant::now();
    loop {
        let st = locked(&entry.state);
        if st.wakers.is_empty() {
            let (st, _) = entry
                .arrived
                .wait_timeout_while(st, LINGER, |s| s.wakers.is_empty())
                .unwrap_or_else(|p| p.into_inner());
            if st.wakers.is_empty() {
                drop(st);
                // Lock order: the table, then the entry (as `new` and
                // `wait_with`, which never hold both).
                let mut entries = locked(&ENTRIES);
                let mut st = locked(&entry.state);
                if st.wakers.is_empty() {
                    st.thread = false;
                    if entries.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                        entries.remove(&key);
                    }
                    return;
                }
            }
            continue;
        }
        drop(st);
        let now = Instant::now();
        if now >= next_check {
            next_check = now + LIVENESS_PERIOD;
            let healthy = entry.source.healthy();
            // SYNC: Relaxed: a hint read by the futures (see `unhealthy`).
            entry.unhealthy.store(!healthy, Ordering::Relaxed);
            if !healthy || entry.source.periodic() {
                wake_all(&entry);
                continue;
            }
        }
        if entry.source.ready() {
            wake_all(&entry);
            continue;
        }
        let slice = next_check.saturating_duration_since(now);
        entry.source.park(slice.max(Duration::from_micros(100)));
    }
}

/// The future of one `*_async` call.
///
/// `attempt(checked)` is the call's non-blocking attempt: `Ok(Some)` ends
/// the wait, `Ok(None)` is "not now", `Err` ends it with that error. With
/// `checked` set (the waiter thread's liveness question failed) it runs
/// the blocking call's own liveness check instead, so a dead peer gives
/// exactly the blocking call's error. `source` builds the entry's source
/// the first time any future waits on `key`.
pub(crate) fn wait_for<T, A, S>(
    key: Key,
    source: S,
    mut attempt: A,
) -> impl Future<Output = Result<T>>
where
    A: FnMut(bool) -> Result<Option<T>>,
    S: FnOnce() -> Arc<dyn Source>,
{
    let mut source = Some(source);
    let mut reg: Option<Registration> = None;
    let mut first = true;
    std::future::poll_fn(move |cx| {
        let checked = reg.as_ref().is_some_and(Registration::unhealthy);
        match attempt(checked) {
            Ok(Some(v)) => return Poll::Ready(Ok(v)),
            Err(e) => return Poll::Ready(Err(e)),
            Ok(None) => {}
        }
        if std::mem::take(&mut first) {
            // The first poll retries for a moment, as the blocking call
            // spins before it parks: an answer already on its way (a peer
            // replying) then costs no wake of the waiter thread and of the
            // executor's thread, which cost far more than the wait.
            let mut got = None;
            crate::wait::spin_for(FIRST_POLL_SPIN, || match attempt(false) {
                Ok(None) => false,
                other => {
                    got = Some(other);
                    true
                }
            });
            match got {
                Some(Ok(Some(v))) => return Poll::Ready(Ok(v)),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        let r = match (&reg, source.take()) {
            (Some(r), _) => r,
            (None, Some(make)) => reg.insert(Registration::new(key, make)),
            // `source` is only taken together with `reg` being set.
            (None, None) => {
                return Poll::Ready(Err(Error::new(
                    crate::error::ErrorKind::InvalidState,
                    "async wait polled without its source",
                )))
            }
        };
        match r.wait_with(cx.waker()) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    })
}

/// How long the first poll of an async wait retries its attempt before it
/// registers (as the pool's futures drive for their first poll): a round
/// trip to a peer that is running takes about a microsecond, a wake of the
/// waiter thread and then of the executor's thread ten or more.
const FIRST_POLL_SPIN: Duration = Duration::from_micros(20);

/// The blocking call's liveness check, bounded: a `*_timeout` call this
/// long runs its first liveness check at once and returns its error (or
/// its value, or a timeout that just means "not now").
pub(crate) const CHECK_SLICE: Duration = Duration::from_millis(1);

/// `Ok(None)` for a timeout: what a checked attempt's timed call answers
/// when the peer turned out fine.
pub(crate) fn not_now<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_timeout() => Ok(None),
        Err(e) => Err(e),
    }
}

/// A key for a word in shared memory.
pub(crate) fn key_of<W>(word: &W, discriminator: u64) -> Key {
    (word as *const W as usize, discriminator)
}
