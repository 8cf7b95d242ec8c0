//! Cross-process synchronisation: `Lock`, `RLock`, `Semaphore`,
//! `BoundedSemaphore`, `Event`, `Condition`, `Barrier`.
//!
//! Each primitive is a small `#[repr(C)]` block of atomics at the start of
//! its own shared-memory segment. Waiting spins briefly and then sleeps on a
//! futex word of the block (`sys::futex_wait`), in slices of at most
//! [`TICK`]: between slices a waiter checks that the processes it depends on
//! are alive, so a dead peer becomes an error, never a hang.
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
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::participants::Participants;
use crate::segment::{in_place, InPlace, Segment, SegmentHandle, Typed};
use crate::sys;

/// Longest single sleep of a waiter between liveness checks.
const TICK: Duration = Duration::from_millis(25);
/// Spins before sleeping: a parked peer costs tens of µs to wake here.
const SPINS: u32 = 200;

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
        self.segment().check_intact()?;
        let block = self.block();
        let h = block.header();
        // SYNC: Acquire pairs with the Release store of `broken` below (by
        // whichever waiter found the dead participant).
        if h.broken.load(Ordering::Acquire) != 0 {
            let or_timeout = if B::KIND == Kind::Barrier {
                ", or a wait on it timed out"
            } else {
                ""
            };
            return Err(Error::new(
                ErrorKind::PeerDied,
                format!(
                    "this {:?} is broken: a process sharing it died{or_timeout}",
                    B::KIND
                ),
            ));
        }
        if let Some(p) = h.participants.dead() {
            // SYNC: Release pairs with the Acquire load above in other
            // waiters.
            h.broken.store(1, Ordering::Release);
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

    fn handle(&self) -> SegmentHandle {
        self.segment().handle()
    }
}

impl<B: Block> Drop for Shared<B> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.block().header().participants.unregister(i);
        }
    }
}

/// Sleeps on `word` while it holds `expected`, for at most one tick and not
/// past `deadline`. `Err(Timeout)` once the deadline has passed, with
/// `timed_out` (the user's call and what did not happen in time) as its
/// message.
fn sleep_on(
    word: &AtomicU32,
    expected: u32,
    deadline: Option<Instant>,
    timed_out: &str,
) -> Result<()> {
    let mut slice = TICK;
    if let Some(d) = deadline {
        let now = Instant::now();
        if now >= d {
            return Err(Error::timeout(timed_out));
        }
        slice = slice.min(d - now);
    }
    sys::futex_wait(word, expected, slice);
    Ok(())
}

/// The deadline of a `_timeout` call; `None` (no deadline) when `timeout`
/// is too large to represent, which is what such a timeout means.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

macro_rules! shared_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.shared.handle().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let handle = SegmentHandle::deserialize(d)?;
                let shared = Shared::open(&handle).map_err(serde::de::Error::custom)?;
                Ok($ty { shared })
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }
    };
}

// ------------------------------------------------------------------ mutex core

in_place! {
    /// The lock word: 0 = free, else the owner's pid, plus `WAITERS` if someone
    /// may be sleeping on it.
    struct MutexWord {
        word: AtomicU32,
    }
}

enum Acquired {
    Clean,
    /// Taken over from a dead owner.
    OwnerDied(u32),
}

impl MutexWord {
    fn try_lock(&self) -> bool {
        let me = pid();
        // SYNC: Acquire pairs with the Release swap in `unlock`.
        self.word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, or fails at `deadline` with `timed_out` as the
    /// message.
    fn lock(
        &self,
        deadline: Option<Instant>,
        timed_out: &str,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Acquired> {
        let me = pid();
        if me & WAITERS != 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "pid too large for a lock word",
            ));
        }
        let mut spins = 0;
        let mut contended = 0;
        let mut last_check = Instant::now();
        loop {
            // SYNC: Relaxed: a snapshot to decide what to try; every transition
            // is a CAS carrying its own ordering.
            let cur = self.word.load(Ordering::Relaxed);
            if cur & !WAITERS == 0 {
                // SYNC: Acquire pairs with the Release swap in `unlock`.
                if self
                    .word
                    .compare_exchange(
                        cur,
                        me | contended | (cur & WAITERS),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let owner = cur & !WAITERS;
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                if !sys::process_alive(owner) {
                    // Whoever swaps the dead owner out first takes the lock.
                    // SYNC: Acquire as in the clean path (the dead owner's
                    // writes are as visible as they will ever be).
                    if self
                        .word
                        .compare_exchange(
                            cur,
                            me | (cur & WAITERS),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return Ok(Acquired::OwnerDied(owner));
                    }
                    continue;
                }
                check()?;
            }
            if cur & WAITERS == 0
                && self
                    .word
                    // SYNC: Relaxed: setting the waiters bit publishes nothing; the
                    // futex re-checks the word in the kernel.
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            contended = WAITERS;
            sleep_on(&self.word, cur | WAITERS, deadline, timed_out)?;
        }
    }

    fn unlock(&self) {
        // SYNC: Release pairs with the Acquire CAS in `lock`/`try_lock`.
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            sys::futex_wake(&self.word, 1);
        }
    }

    fn owner(&self) -> u32 {
        // SYNC: Relaxed: an observation (`is_locked`, RLock's ownership
        // test, which only the owner thread itself can make true).
        self.word.load(Ordering::Relaxed) & !WAITERS
    }
}

fn owner_died(what: &str, owner: u32) -> Error {
    Error::new(
        ErrorKind::OwnerDied,
        format!("{what}: holder {owner} died; the lock was released, the data it guarded may be inconsistent"),
    )
    .with_pid(owner)
}

// ------------------------------------------------------------------------ Lock

in_place! {
    struct LockBlock {
        header: Header,
        mutex: MutexWord,
    }
}

impl Block for LockBlock {
    const KIND: Kind = Kind::Lock;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.mutex.word, u32::MAX);
    }
}

/// A lock shared between processes.
///
/// Python counterpart: `multiprocessing.Lock()`; `with lock:` is
/// `let _guard = lock.lock()?;`, `acquire(timeout=t)` is
/// [`lock_timeout`](Lock::lock_timeout), `acquire(False)` is
/// [`try_lock`](Lock::try_lock).
///
/// Robust: if the process holding the lock dies, the next `lock()` in
/// another process (within about 50 ms) returns [`ErrorKind::OwnerDied`] and
/// the lock is free again; lock once more to continue, after repairing
/// whatever the dead holder was changing.
///
/// ```
/// use multiproc::{Lock, Process, SharedValue};
///
/// fn add(( lock, total): (Lock, SharedValue<u64>)) {
///     for _ in 0..1000 {
///         let _g = lock.lock().unwrap();
///         total.set(total.get() + 1);
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let lock = Lock::new().unwrap();
///     let total = SharedValue::new(0u64).unwrap();
///     let ps: Vec<_> = (0..2)
///         .map(|_| Process::spawn(add, (lock.clone(), total.clone())).unwrap())
///         .collect();
///     for p in ps { p.join().unwrap(); }
///     assert_eq!(total.get(), 2000);
/// }
/// ```
#[derive(Clone)]
pub struct Lock {
    shared: Arc<Shared<LockBlock>>,
}
shared_serde!(Lock);

/// Holds a [`Lock`]; unlocks on drop.
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// let guard = lock.lock().unwrap();
/// assert!(lock.try_lock().is_none());
/// drop(guard);
/// assert!(lock.try_lock().is_some());
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.shared.block().mutex.unlock();
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] or [`ErrorKind::Io`] if the shared memory
    /// cannot be created.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// # drop(lock);
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Waits for the lock (Python's `acquire()`).
    ///
    /// # Errors
    /// [`ErrorKind::OwnerDied`]: the holder died holding it (the lock is
    /// free again; call `lock` again).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let _guard = lock.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_until(None)
    }

    /// Waits at most `timeout` (Python's `acquire(timeout=t)`).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`lock`](Lock::lock).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new().unwrap();
    /// let _held = lock.lock().unwrap();
    /// assert!(lock.lock_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_until(deadline_after(timeout))
    }

    /// Takes the lock only if it is free (Python's `acquire(block=False)`).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// assert!(lock.try_lock().is_some());
    /// ```
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        self.shared
            .block()
            .mutex
            .try_lock()
            .then_some(LockGuard { lock: self })
    }

    fn lock_until(&self, deadline: Option<Instant>) -> Result<LockGuard<'_>> {
        let mutex = &self.shared.block().mutex;
        let timed_out = "Lock::lock_timeout: another process held the lock until the deadline";
        match mutex.lock(deadline, timed_out, &|| {
            self.shared.segment().check_intact()
        })? {
            // Taken in memory a peer shrank away (before or during `lock`;
            // the fault replaced it with zeros): a lock word nobody else
            // sees excludes nobody.
            Acquired::Clean if self.shared.segment().lost() => {
                mutex.unlock();
                Err(self.shared.segment().lost_error())
            }
            Acquired::Clean => Ok(LockGuard { lock: self }),
            Acquired::OwnerDied(owner) => {
                mutex.unlock();
                Err(owner_died("Lock", owner))
            }
        }
    }

    /// `true` while some thread of some process holds the lock.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// ```
    pub fn is_locked(&self) -> bool {
        self.shared.block().mutex.owner() != 0
    }
}

// ----------------------------------------------------------------------- RLock

in_place! {
    struct RLockBlock {
        header: Header,
        mutex: MutexWord,
        _pad: AtomicU32,
        /// `thread_token()` of the owning thread (meaningful with the pid in
        /// the lock word), 0 when free.
        owner_thread: AtomicU64,
        count: AtomicU32,
    }
}

impl Block for RLockBlock {
    const KIND: Kind = Kind::RLock;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.mutex.word, u32::MAX);
    }
}

/// A re-entrant lock: the thread holding it may take it again.
///
/// Python counterpart: `multiprocessing.RLock()`. Robust like [`Lock`].
///
/// ```
/// let lock = multiproc::RLock::new().unwrap();
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // same thread: fine
/// drop(inner);
/// drop(outer);
/// ```
#[derive(Clone)]
pub struct RLock {
    shared: Arc<Shared<RLockBlock>>,
}
shared_serde!(RLock);

/// Holds an [`RLock`] once; the lock is released when the last guard of the
/// owning thread drops.
///
/// ```
/// let lock = multiproc::RLock::new().unwrap();
/// let _g = lock.lock().unwrap();
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    // Not Send: the release must happen on the owning thread.
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let b = self.lock.shared.block();
        // SYNC: Relaxed: `count`/`owner_thread` are touched only by the owner
        // thread while it holds the mutex; `unlock`'s Release publishes.
        if b.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            b.owner_thread.store(0, Ordering::Relaxed);
            b.mutex.unlock();
        }
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RLockGuard")
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// # drop(lock);
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Takes the lock, or takes it again if this thread holds it.
    ///
    /// # Errors
    /// As [`Lock::lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let _a = lock.lock().unwrap();
    /// let _b = lock.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<RLockGuard<'_>> {
        self.lock_until(None)
    }

    /// As [`lock`](RLock::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`Lock::lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let _g = lock.lock_timeout(std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.lock_until(deadline_after(timeout))
    }

    /// Takes the lock if it is free or this thread already holds it
    /// (Python's `acquire(block=False)`); `None` if another thread or
    /// process holds it.
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let a = lock.try_lock().unwrap();
    /// let b = lock.try_lock().unwrap(); // re-entered
    /// # drop((b, a));
    /// ```
    pub fn try_lock(&self) -> Option<RLockGuard<'_>> {
        let b = self.shared.block();
        let me = thread_token();
        if self.reenter(me) {
            return Some(self.guard());
        }
        if !b.mutex.try_lock() {
            return None;
        }
        if self.shared.segment().lost() {
            b.mutex.unlock();
            return None;
        }
        self.took(me);
        Some(self.guard())
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Counts one more hold if this thread (`me`) holds the lock already.
    fn reenter(&self, me: u64) -> bool {
        let b = self.shared.block();
        // Only the owning thread can have stored its own token with our pid
        // in the word, so this check cannot race with another owner.
        // SYNC: Relaxed: owner-thread-only fields (see `RLockGuard::drop`).
        if b.mutex.owner() == pid() && b.owner_thread.load(Ordering::Relaxed) == me {
            b.count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records this thread as the owner of the word it just took.
    fn took(&self, me: u64) {
        let b = self.shared.block();
        // SYNC: Relaxed: owner-thread-only fields (see `RLockGuard::drop`).
        b.owner_thread.store(me, Ordering::Relaxed);
        b.count.store(1, Ordering::Relaxed);
    }

    /// `true` while some thread of some process holds the lock (Python's
    /// `locked()`, 3.14).
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// assert!(!lock.is_locked());
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// ```
    pub fn is_locked(&self) -> bool {
        self.shared.block().mutex.owner() != 0
    }

    fn lock_until(&self, deadline: Option<Instant>) -> Result<RLockGuard<'_>> {
        let b = self.shared.block();
        let me = thread_token();
        if self.reenter(me) {
            return Ok(self.guard());
        }
        let timed_out = "RLock::lock_timeout: another process held the lock until the deadline";
        match b.mutex.lock(deadline, timed_out, &|| {
            self.shared.segment().check_intact()
        })? {
            // As in `Lock::lock_until`.
            Acquired::Clean if self.shared.segment().lost() => {
                b.mutex.unlock();
                Err(self.shared.segment().lost_error())
            }
            Acquired::Clean => {
                self.took(me);
                Ok(self.guard())
            }
            Acquired::OwnerDied(owner) => {
                b.owner_thread.store(0, Ordering::Relaxed);
                b.count.store(0, Ordering::Relaxed);
                b.mutex.unlock();
                Err(owner_died("RLock", owner))
            }
        }
    }
}

// ------------------------------------------------------------------ Semaphore

in_place! {
    struct SemaphoreBlock {
        header: Header,
        value: AtomicU32,
        /// The value `release` may not exceed, if `bounded` is non-zero.
        bound: AtomicU32,
        bounded: AtomicU32,
    }
}

impl Block for SemaphoreBlock {
    const KIND: Kind = Kind::Semaphore;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.value, u32::MAX);
    }
}

/// A counter of permits shared between processes.
///
/// Python counterpart: `multiprocessing.Semaphore(n)`; for
/// `BoundedSemaphore(n)` see [`BoundedSemaphore`].
///
/// Robust: if a process sharing the semaphore dies abruptly (it may have
/// held permits that are now lost), the semaphore is broken and every
/// waiter gets [`ErrorKind::PeerDied`].
///
/// ```
/// let sem = multiproc::Semaphore::new(2).unwrap();
/// sem.acquire().unwrap();
/// sem.acquire().unwrap();
/// assert!(!sem.try_acquire().unwrap());
/// sem.release().unwrap();
/// assert_eq!(sem.value(), 1);
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shared: Arc<Shared<SemaphoreBlock>>,
}
shared_serde!(Semaphore);

/// A semaphore whose `release` fails past its initial value: a release
/// without a matching acquire is caught as the bug it is.
///
/// Python counterpart: `multiprocessing.BoundedSemaphore(n)`. Its own type
/// (not a flavour of [`Semaphore`]), so that `BoundedSemaphore::new(n)`,
/// what a Python user writes, is bounded.
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
/// assert!(sem.release().is_err()); // would exceed 1
/// sem.acquire().unwrap();
/// sem.release().unwrap();
/// assert_eq!(sem.value(), 1);
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A semaphore with `value` permits, which `release` may not exceed.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(2).unwrap();
    /// assert_eq!(sem.value(), 2);
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore::with_bound(value, Some(value))?,
        })
    }

    /// Takes a permit, waiting for one if needed.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// As [`acquire`](BoundedSemaphore::acquire), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Semaphore::acquire_timeout`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(0).unwrap();
    /// let e = sem.acquire_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes a permit if one is free: `Ok(true)`; `Ok(false)` otherwise.
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(0).unwrap();
    /// assert!(!sem.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.inner.try_acquire()
    }

    /// Returns a permit.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if it would exceed the initial value
    /// (Python's `ValueError: Semaphore released too many times`).
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// sem.release().unwrap();
    /// assert!(sem.release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The number of free permits now (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(4).unwrap().value(), 4);
    /// ```
    pub fn value(&self) -> u32 {
        self.inner.value()
    }
}

impl Serialize for BoundedSemaphore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let inner = Semaphore::deserialize(d)?;
        // SYNC: Relaxed: `bounded` never changes after `create` (published
        // by its Release store of `magic`, which `open` acquired).
        if inner.shared.block().bounded.load(Ordering::Relaxed) == 0 {
            return Err(serde::de::Error::custom(
                "the handle names a Semaphore, not a BoundedSemaphore",
            ));
        }
        Ok(BoundedSemaphore { inner })
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSemaphore").finish_non_exhaustive()
    }
}

impl Semaphore {
    /// A semaphore with `value` permits.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(3).unwrap();
    /// assert_eq!(sem.value(), 3);
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Self::with_bound(value, None)
    }

    fn with_bound(value: u32, bound: Option<u32>) -> Result<Semaphore> {
        Ok(Semaphore {
            shared: Shared::create(|b: &SemaphoreBlock| {
                // SYNC: Relaxed, published by the Release store of `magic` in
                // `Shared::create`.
                b.value.store(value, Ordering::Relaxed);
                b.bound.store(bound.unwrap_or(u32::MAX), Ordering::Relaxed);
                b.bounded
                    .store(u32::from(bound.is_some()), Ordering::Relaxed);
            })?,
        })
    }

    /// Takes a permit, waiting for one if needed.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if a process sharing it died.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(None)
    }

    /// As [`acquire`](Semaphore::acquire), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`acquire`](Semaphore::acquire).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// let e = sem.acquire_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_until(deadline_after(timeout))
    }

    /// Takes a permit if one is free: `Ok(true)`; `Ok(false)` otherwise.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if the semaphore is broken.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// assert!(!sem.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        let b = self.shared.block();
        // SYNC: Acquire pairs with the Release store of `broken` in
        // `check_peers`.
        if b.header.broken.load(Ordering::Acquire) != 0 {
            return self.shared.check_peers().map(|()| false);
        }
        Ok(Self::take(&b.value))
    }

    fn take(value: &AtomicU32) -> bool {
        // SYNC: Relaxed snapshot; the CAS below carries the Acquire.
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            // SYNC: Acquire pairs with the Release fetch_add in `release`.
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<()> {
        let b = self.shared.block();
        let mut spins = 0;
        let mut last_check = Instant::now();
        self.shared.check_peers()?;
        loop {
            if Self::take(&b.value) {
                return Ok(());
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.shared.check_peers()?;
            }
            sleep_on(
                &b.value,
                0,
                deadline,
                "Semaphore::acquire_timeout: no permit came free in time",
            )?;
        }
    }

    /// Returns a permit.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if a bounded semaphore would exceed its
    /// initial value (Python's `ValueError`).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// sem.release().unwrap();
    /// assert_eq!(sem.value(), 1);
    /// ```
    pub fn release(&self) -> Result<()> {
        let b = self.shared.block();
        // SYNC: Relaxed: `bound`/`bounded` never change after `create`
        // (published by its Release store of `magic`).
        let bound = if b.bounded.load(Ordering::Relaxed) != 0 {
            b.bound.load(Ordering::Relaxed)
        } else {
            u32::MAX
        };
        // SYNC: Relaxed snapshot; the CAS below carries the Release.
        let mut v = b.value.load(Ordering::Relaxed);
        loop {
            if v >= bound {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "semaphore released too many times",
                ));
            }
            // SYNC: Release pairs with the Acquire CAS in `take`.
            match b
                .value
                .compare_exchange_weak(v, v + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        sys::futex_wake(&b.value, 1);
        Ok(())
    }

    /// The number of free permits now (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiproc::Semaphore::new(4).unwrap().value(), 4);
    /// ```
    pub fn value(&self) -> u32 {
        // SYNC: Relaxed: a momentary reading, like Python's get_value().
        self.shared.block().value.load(Ordering::Relaxed)
    }
}

// ----------------------------------------------------------------------- Event

in_place! {
    struct EventBlock {
        header: Header,
        flag: AtomicU32,
    }
}

impl Block for EventBlock {
    const KIND: Kind = Kind::Event;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.flag, u32::MAX);
    }
}

/// A flag that processes can wait for.
///
/// Python counterpart: `multiprocessing.Event()`: `set`, `clear`,
/// `is_set`, `wait`, `wait(timeout)` (here
/// [`wait_timeout`](Event::wait_timeout)).
///
/// Robust: if a process sharing the event dies abruptly, waiters get
/// [`ErrorKind::PeerDied`] instead of waiting for a `set` that may never
/// come.
///
/// ```
/// use multiproc::{Event, Process};
///
/// fn starter(go: Event) { go.set(); }
///
/// fn main() {
///     multiproc::init();
///     let go = Event::new().unwrap();
///     let p = Process::spawn(starter, go.clone()).unwrap();
///     go.wait().unwrap();
///     assert!(go.is_set());
///     p.join().unwrap();
/// }
/// ```
#[derive(Clone)]
pub struct Event {
    shared: Arc<Shared<EventBlock>>,
}
shared_serde!(Event);

impl Event {
    /// A new, unset event.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// assert!(!multiproc::Event::new().unwrap().is_set());
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    pub fn set(&self) {
        let b = self.shared.block();
        // SYNC: Release pairs with the Acquire load in `is_set`/`wait`.
        b.flag.store(1, Ordering::Release);
        sys::futex_wake(&b.flag, u32::MAX);
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        // SYNC: Relaxed: clearing publishes nothing; waiters re-check.
        self.shared.block().flag.store(0, Ordering::Relaxed);
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// assert!(!multiproc::Event::new().unwrap().is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `set`.
        self.shared.block().flag.load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if a process sharing the event died.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// e.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None)
    }

    /// Waits at most `timeout` for the flag.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Event::wait).
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// assert!(e.wait_timeout(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        let b = self.shared.block();
        let mut last_check = Instant::now();
        self.shared.check_peers()?;
        loop {
            if self.is_set() {
                return Ok(());
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.shared.check_peers()?;
            }
            sleep_on(
                &b.flag,
                0,
                deadline,
                "Event::wait_timeout: the event was not set in time",
            )?;
        }
    }
}

// ------------------------------------------------------------------- Condition

in_place! {
    struct ConditionBlock {
        header: Header,
        mutex: MutexWord,
        /// Hands out arrival numbers: `notify` chooses the oldest waiters.
        arrivals: AtomicU32,
        _pad: AtomicU32,
        /// One slot per waiting process (thread), as Python keeps one lock
        /// per waiter: `notify(n)` marks exactly n slots.
        waiters: [WaiterSlot; WAITER_SLOTS],
    }
}

/// Waiters one `Condition` can hold at once.
const WAITER_SLOTS: usize = 256;
const SLOT_FREE: u32 = 0;
const SLOT_TAKEN: u32 = 1;
const SLOT_WAITING: u32 = 2;
const SLOT_NOTIFIED: u32 = 3;

in_place! {
    /// A waiter's place: its state (a futex word it sleeps on) and its
    /// arrival number.
    struct WaiterSlot {
        state: AtomicU32,
        arrival: AtomicU32,
    }
}

impl Block for ConditionBlock {
    const KIND: Kind = Kind::Condition;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.mutex.word, u32::MAX);
        // SYNC: Relaxed: a waiter that starts waiting after this look
        // checks `broken` itself within a TICK.
        for slot in self
            .waiters
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == SLOT_WAITING)
        {
            sys::futex_wake(&slot.state, u32::MAX);
        }
    }
}

/// A condition variable with its own lock, shared between processes.
///
/// Python counterpart: `multiprocessing.Condition()`: `with cond:` is
/// `let mut g = cond.lock()?;`, `cond.wait()` is `cond.wait(&mut g)?`,
/// `notify(n)`, `notify_all()`.
///
/// Robust: the lock is robust like [`Lock`]; a process sharing the
/// condition that dies abruptly breaks it ([`ErrorKind::PeerDied`]).
///
/// ```
/// use multiproc::{Condition, Process, SharedValue};
///
/// fn producer((cond, ready): (Condition, SharedValue<u32>)) {
///     let _g = cond.lock().unwrap();
///     ready.set(1);
///     cond.notify_all();
/// }
///
/// fn main() {
///     multiproc::init();
///     let cond = Condition::new().unwrap();
///     let ready = SharedValue::new(0u32).unwrap();
///     let mut g = cond.lock().unwrap();
///     let p = Process::spawn(producer, (cond.clone(), ready.clone())).unwrap();
///     while ready.get() == 0 {
///         cond.wait(&mut g).unwrap();
///     }
///     drop(g);
///     p.join().unwrap();
/// }
/// ```
#[derive(Clone)]
pub struct Condition {
    shared: Arc<Shared<ConditionBlock>>,
}
shared_serde!(Condition);

/// Holds a [`Condition`]'s lock.
///
/// ```
/// let c = multiproc::Condition::new().unwrap();
/// let _g: multiproc::ConditionGuard<'_> = c.lock().unwrap();
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.shared.block().mutex.unlock();
    }
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConditionGuard")
    }
}

impl Condition {
    /// A new condition with its own (non-re-entrant) lock.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// # drop(c);
    /// ```
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Takes the condition's lock.
    ///
    /// # Errors
    /// As [`Lock::lock`], plus [`ErrorKind::PeerDied`].
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// let _g = c.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<ConditionGuard<'_>> {
        self.relock(None)
    }

    fn relock(&self, deadline: Option<Instant>) -> Result<ConditionGuard<'_>> {
        let b = self.shared.block();
        match b
            .mutex
            .lock(deadline, "Condition::lock", &|| self.shared.check_peers())?
        {
            Acquired::Clean => Ok(ConditionGuard { cond: self }),
            Acquired::OwnerDied(owner) => {
                b.mutex.unlock();
                Err(owner_died("Condition", owner))
            }
        }
    }

    /// Releases the lock, waits for a notification, retakes the lock.
    /// Like every condition variable it may wake spuriously: wait in a loop
    /// that re-checks your predicate.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`], [`ErrorKind::OwnerDied`] (while retaking
    /// the lock; `guard` is then no longer holding it — drop it).
    ///
    /// ```no_run
    /// let c = multiproc::Condition::new().unwrap();
    /// let mut g = c.lock().unwrap();
    /// c.wait(&mut g).unwrap(); // until another process calls notify
    /// ```
    pub fn wait(&self, guard: &mut ConditionGuard<'_>) -> Result<()> {
        self.wait_until(guard, None)
    }

    /// As [`wait`](Condition::wait), at most `timeout`. The lock is held
    /// again when this returns, also on timeout.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Condition::wait).
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// let mut g = c.lock().unwrap();
    /// let e = c.wait_timeout(&mut g, std::time::Duration::from_millis(5)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn wait_timeout(&self, guard: &mut ConditionGuard<'_>, timeout: Duration) -> Result<()> {
        self.wait_until(guard, deadline_after(timeout))
    }

    fn wait_until(&self, guard: &mut ConditionGuard<'_>, deadline: Option<Instant>) -> Result<()> {
        debug_assert!(std::ptr::eq(guard.cond, self), "guard of another Condition");
        let b = self.shared.block();
        // The slot is taken and marked waiting before the lock is let go,
        // so a notify that follows the caller's check of its predicate
        // sees this waiter.
        let slot = Self::arrive(b)?;
        b.mutex.unlock();
        let mut last_check = Instant::now();
        let outcome = loop {
            // SYNC: Acquire pairs with the Release CAS in `notify`.
            if slot.state.load(Ordering::Acquire) == SLOT_NOTIFIED {
                break Ok(());
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                if let Err(e) = self.shared.check_peers() {
                    break Err(e);
                }
            }
            let timed_out = "Condition::wait_timeout: no notify came in time";
            if let Err(e) = sleep_on(&slot.state, SLOT_WAITING, deadline, timed_out) {
                break Err(e);
            }
        };
        // Leaving un-notified: withdraw, unless a notify chose this slot
        // in the meantime (then this waiter was notified after all).
        // SYNC: AcqRel pairs with the CAS in `notify`.
        let withdrawn = slot
            .state
            .compare_exchange(
                SLOT_WAITING,
                SLOT_TAKEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        let outcome = if withdrawn { outcome } else { Ok(()) };
        // SYNC: Release pairs with the Acquire CAS in `arrive`.
        slot.state.store(SLOT_FREE, Ordering::Release);
        // Retake the lock whatever happened, so the guard stays truthful.
        match b.mutex.lock(None, "Condition::wait", &|| Ok(()))? {
            Acquired::Clean => outcome,
            Acquired::OwnerDied(owner) => Err(owner_died("Condition", owner)),
        }
    }

    /// Takes a free waiter slot and marks it waiting, with the next
    /// arrival number.
    fn arrive(b: &ConditionBlock) -> Result<&WaiterSlot> {
        let slot = b
            .waiters
            .iter()
            .find(|s| {
                // SYNC: Acquire pairs with the Release store that freed it.
                s.state
                    .compare_exchange(SLOT_FREE, SLOT_TAKEN, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidState,
                    format!(
                        "Condition::wait: {WAITER_SLOTS} waiters already wait on this condition"
                    ),
                )
            })?;
        // SYNC: Relaxed: only the order of arrivals matters; the Release
        // store of the state below publishes it to `notify`.
        let n = b.arrivals.fetch_add(1, Ordering::Relaxed);
        slot.arrival.store(n, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire loads in `notify`.
        slot.state.store(SLOT_WAITING, Ordering::Release);
        Ok(slot)
    }

    /// Wakes up to `n` of the processes waiting now, the longest-waiting
    /// first (Python's `notify(n)`): exactly `min(n, waiting)` of them
    /// return from [`wait`](Condition::wait).
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.notify(1);
    /// ```
    pub fn notify(&self, n: u32) {
        let b = self.shared.block();
        let mut left = n;
        while left > 0 {
            // SYNC: Relaxed: a reference point for arrival ages only.
            let now = b.arrivals.load(Ordering::Relaxed);
            // The oldest waiting slot (arrival numbers wrap: compare ages).
            let oldest = b
                .waiters
                .iter()
                // SYNC: Acquire pairs with the Release store in `arrive`.
                .filter(|s| s.state.load(Ordering::Acquire) == SLOT_WAITING)
                .max_by_key(|s| now.wrapping_sub(s.arrival.load(Ordering::Relaxed)));
            let Some(slot) = oldest else {
                return;
            };
            // SYNC: AcqRel pairs with the waiter's Acquire load and its
            // withdrawing CAS: exactly one of the two wins the slot.
            if slot
                .state
                .compare_exchange(
                    SLOT_WAITING,
                    SLOT_NOTIFIED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                sys::futex_wake(&slot.state, 1);
                left -= 1;
            }
        }
    }

    /// Wakes one waiter.
    ///
    /// ```
    /// multiproc::Condition::new().unwrap().notify_one();
    /// ```
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// multiproc::Condition::new().unwrap().notify_all();
    /// ```
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

// --------------------------------------------------------------------- Barrier

in_place! {
    struct BarrierBlock {
        header: Header,
        parties: AtomicU32,
        arrived: AtomicU32,
        generation: AtomicU32,
    }
}

impl Block for BarrierBlock {
    const KIND: Kind = Kind::Barrier;
    fn header(&self) -> &Header {
        &self.header
    }
    fn wake_all(&self) {
        sys::futex_wake(&self.generation, u32::MAX);
    }
}

/// Makes `parties` processes (or threads) wait until all have arrived.
///
/// Python counterpart: `multiprocessing.Barrier(parties)`. As in Python,
/// `wait` returns each party a different index from 0 to `parties - 1`, so
/// `if b.wait()? == 0 { … }` picks exactly one party to act after the
/// barrier. The numbering is Python's too: the first party to arrive gets
/// 0 and the last `parties - 1`.
///
/// Robust: if a process sharing the barrier dies abruptly, or a waiter times
/// out, the barrier is broken and every waiter gets an error
/// ([`ErrorKind::PeerDied`] / [`ErrorKind::Timeout`]), like Python's
/// `BrokenBarrierError`.
///
/// ```
/// use multiproc::{Barrier, Process};
///
/// fn party(b: Barrier) -> u32 { b.wait().unwrap() }
///
/// fn main() {
///     multiproc::init();
///     let b = Barrier::new(3).unwrap();
///     let ps: Vec<_> = (0..2).map(|_| Process::spawn(party, b.clone()).unwrap()).collect();
///     let mine = b.wait().unwrap();
///     let mut all: Vec<u32> = ps.into_iter().map(|p| p.join().unwrap()).collect();
///     all.push(mine);
///     all.sort();
///     assert_eq!(all, vec![0, 1, 2]);
/// }
/// ```
#[derive(Clone)]
pub struct Barrier {
    shared: Arc<Shared<BarrierBlock>>,
}
shared_serde!(Barrier);

impl Barrier {
    /// A barrier for `parties` participants (at least 1).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] for 0 parties; otherwise as
    /// [`Lock::new`].
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a barrier needs at least one party",
            ));
        }
        Ok(Barrier {
            shared: Shared::create(|b: &BarrierBlock| b.parties.store(parties, Ordering::Relaxed))?,
        })
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4).unwrap().parties(), 4);
    /// ```
    pub fn parties(&self) -> u32 {
        // SYNC: Relaxed: set once, before the Release store of `magic`.
        self.shared.block().parties.load(Ordering::Relaxed)
    }

    /// How many parties wait at the barrier now (Python's `n_waiting`).
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(3).unwrap().n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> u32 {
        // SYNC: Relaxed: a momentary reading, like Python's.
        self.shared.block().arrived.load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken: a wait timed out or a process
    /// sharing it died (Python's `broken`). Every wait then fails.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// assert!(!b.broken());
    /// let _ = b.wait_timeout(std::time::Duration::from_millis(1));
    /// assert!(b.broken());
    /// ```
    pub fn broken(&self) -> bool {
        // SYNC: Acquire pairs with the Release stores of `broken`.
        self.shared.block().header.broken.load(Ordering::Acquire) != 0
    }

    /// Waits for all parties; returns this party's index in the order of
    /// arrival (0 for the first, `parties - 1` for the last, as Python).
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if the barrier is broken.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// b.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(None)
    }

    /// As [`wait`](Barrier::wait), at most `timeout`; a timeout breaks the
    /// barrier for everyone.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Barrier::wait).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// assert!(b.wait_timeout(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32> {
        let b = self.shared.block();
        self.shared.check_peers()?;
        // SYNC: Relaxed: as in `parties()`.
        let parties = b.parties.load(Ordering::Relaxed).max(1);
        // SYNC: Acquire pairs with the Release fetch_add of `generation` by
        // the last arrival of the previous round.
        let generation = b.generation.load(Ordering::Acquire);
        // SYNC: AcqRel: each arrival sees the earlier arrivals' writes, and
        // the last one publishes all of them through `generation`.
        let arrived = b.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived >= parties {
            // SYNC: Relaxed, published by the Release fetch_add of `generation`.
            b.arrived.store(0, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire loads of waiters below.
            b.generation.fetch_add(1, Ordering::Release);
            sys::futex_wake(&b.generation, u32::MAX);
            return Ok(parties - 1);
        }
        // Python's numbering: arrivals count up from 0.
        let index = arrived - 1;
        let mut last_check = Instant::now();
        loop {
            // SYNC: Acquire pairs with the Release fetch_add above.
            if b.generation.load(Ordering::Acquire) != generation {
                return Ok(index);
            }
            if last_check.elapsed() >= TICK {
                last_check = Instant::now();
                self.shared.check_peers()?;
            }
            let timed_out = "Barrier::wait_timeout: not every party arrived in time; \
                             the barrier is now broken for all of them";
            if let Err(e) = sleep_on(&b.generation, generation, deadline, timed_out) {
                // Python: a timed-out wait breaks the barrier for all.
                b.header.broken.store(1, Ordering::Release);
                b.wake_all();
                return Err(e);
            }
            if b.header.broken.load(Ordering::Acquire) != 0 {
                return Err(Error::new(
                    ErrorKind::PeerDied,
                    "this Barrier is broken: another party's wait timed out, or a \
                     process sharing it died",
                ));
            }
        }
    }
}
