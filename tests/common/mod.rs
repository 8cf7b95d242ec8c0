//! Shared by the integration tests that include it (`mod common;`).
#![allow(dead_code)]

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

// Test hook, run when the binary loads: a child started with
// `MULTIPROC_TEST_EXIT_AT_LOAD=n` exits with `n` before it can handshake;
// with `MULTIPROC_TEST_SLEEP_AT_LOAD=ms` it stalls that long first; with
// `MULTIPROC_TEST_WAIT_AT_LOAD=path` it stalls until the test opens that
// [`Gate`] (a minute at most).
multiproc::__load_time_constructor!(LOAD_HOOK, {
    if let Some(code) = std::env::var_os("MULTIPROC_TEST_EXIT_AT_LOAD") {
        std::process::exit(code.to_string_lossy().parse().unwrap_or(99));
    }
    if let Some(ms) = std::env::var_os("MULTIPROC_TEST_SLEEP_AT_LOAD") {
        let ms = ms.to_string_lossy().parse().unwrap_or(0);
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(gate) = std::env::var_os(Gate::VAR) {
        let gate = std::path::Path::new(&gate);
        let _ = wait_for(Duration::from_secs(60), || gate.exists(), |&open| open);
    }
});

/// Holds a child back before its handshake until the test has done what
/// it must do first (play an impostor, look at the handshake server): the
/// child is spawned with [`Gate::env`] and waits at load until
/// [`open`](Gate::open). Unlike a sleep, no load makes the child early.
pub(crate) struct Gate {
    path: std::path::PathBuf,
}

impl Gate {
    const VAR: &'static str = "MULTIPROC_TEST_WAIT_AT_LOAD";

    /// A closed gate, named after `test` (unique per test and process).
    pub(crate) fn new(test: &str) -> Gate {
        let path =
            std::env::temp_dir().join(format!("multiproc-gate-{test}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Gate { path }
    }

    /// The environment variable that makes a child wait for this gate.
    pub(crate) fn env(&self) -> (&'static str, &std::path::Path) {
        (Self::VAR, &self.path)
    }

    /// Lets the child go on.
    pub(crate) fn open(&self) {
        std::fs::write(&self.path, b"").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts this test binary as a worker by hand, the way the crate re-executes
/// it (the libtest arguments that select `test_support!`'s entry), with
/// `marker` as its `MULTIPROC_WORKER`; stdout and stderr are captured.
pub(crate) fn start_worker_by_hand(marker: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "multiproc_worker_entry",
            "--exact",
            "--include-ignored",
            "--nocapture",
        ])
        .env("MULTIPROC_WORKER", marker)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `scenario` on its own thread; the test fails if it has not finished
/// within `limit` (a hang is a failure, never a stuck CI job). Not a speed
/// check: the limits are far above what the scenarios need.
pub(crate) fn watchdog<T: Send + 'static>(
    limit: Duration,
    scenario: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fault-scenario".into())
        .spawn(move || {
            let out = scenario();
            let _ = tx.send(());
            out
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: the scenario did not finish within {limit:?} (it hangs)")
        }
    }
}

/// A mirror of the handshake rendezvous (src/bootstrap.rs): the shared
/// memory whose handle a worker's marker carries, where the parent
/// publishes its handshake servers ("generations"). Tests read it as an
/// impostor of the same user can, or write it to play a parent.
pub(crate) mod rendezvous {
    use multiproc::SharedMemory;

    /// Data bytes of the segment.
    pub(crate) const LEN: usize = 4032;
    /// u32 LE: generations published.
    pub(crate) const PUBLISHED_AT: usize = 0;
    /// The first of 16 slots of 248 bytes: u32 LE name length, then the name.
    pub(crate) const SLOTS_AT: usize = 64;
    pub(crate) const SLOT_LEN: usize = 248;

    /// Publishes generation `n` (from 1) as `name`, as the parent does.
    pub(crate) fn publish(shm: &SharedMemory, n: u32, name: &str) {
        let slot = SLOTS_AT + (n as usize - 1) * SLOT_LEN;
        shm.write_at(slot + 4, name.as_bytes());
        shm.write_at(slot, &(name.len() as u32).to_le_bytes());
        shm.write_at(PUBLISHED_AT, &n.to_le_bytes());
    }

    /// How many generations are published.
    pub(crate) fn published(shm: &SharedMemory) -> u32 {
        let mut word = [0u8; 4];
        shm.read_at(PUBLISHED_AT, &mut word);
        u32::from_le_bytes(word)
    }

    /// Generation `n`'s server name.
    pub(crate) fn server(shm: &SharedMemory, n: u32) -> String {
        let slot = SLOTS_AT + (n as usize - 1) * SLOT_LEN;
        let mut word = [0u8; 4];
        shm.read_at(slot, &mut word);
        let mut name = vec![0u8; u32::from_le_bytes(word) as usize];
        shm.read_at(slot + 4, &mut name);
        String::from_utf8(name).unwrap()
    }

    /// The newest generation and its server name.
    pub(crate) fn newest(shm: &SharedMemory) -> (u32, String) {
        let n = published(shm);
        assert!((1..=16).contains(&n), "{n} generations published");
        (n, server(shm, n))
    }

    /// Waits until at least `n` generations are published (panics after
    /// `limit`).
    pub(crate) fn wait_for(shm: &SharedMemory, n: u32, limit: std::time::Duration) {
        let seen = super::wait_for(limit, || published(shm), |&have| have >= n);
        assert!(
            seen.is_ok(),
            "generation {n} not published within {limit:?} (have {seen:?})"
        );
    }

    /// The name of a rendezvous that no longer exists (it was dropped).
    pub(crate) fn gone() -> String {
        SharedMemory::create(LEN).unwrap().name()
    }

    /// A worker's marker: `v2:<parent pid>:<token hex>:<rendezvous name>`.
    pub(crate) fn marker(ppid: u32, token: &[u8; 32], rendezvous: &str) -> String {
        let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
        format!("v2:{ppid}:{hex}:{rendezvous}")
    }
}

/// This process's open descriptors of shared-memory files, as
/// `(/proc/self/fd/N, target)`: every link in `/proc/self/fd` that points
/// into `/dev/shm` (the crate's segments are files there, named or not).
#[cfg(target_os = "linux")]
pub(crate) fn shm_fds() -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            target
                .to_string_lossy()
                .starts_with("/dev/shm/")
                .then(|| (fd.path(), target))
        })
        .collect()
}

// ------------------------------------------------ background effects

/// How often [`wait_for`] and [`settled`] look.
const POLL: Duration = Duration::from_millis(10);

/// How long [`settled`]'s probe must stay unchanged. Far longer than a
/// runnable thread waits for a core on a loaded machine (tens of ms), so a
/// release still in flight shows up as a change within it.
const QUIET: Duration = Duration::from_millis(300);

/// Polls `probe` until `done` holds for what it returns, for at most
/// `limit`: `Ok(value)` as soon as it holds, `Err(last value seen)` if it
/// never did. For what the crate or the kernel finishes in the background
/// (a reaper thread dropping a child's handles, a killed process being torn
/// down): on a loaded machine it comes late, so look until it has happened,
/// not once. The caller asserts on the value, saying what it waited for.
pub(crate) fn wait_for<T>(
    limit: Duration,
    mut probe: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> Result<T, T> {
    let until = Instant::now() + limit;
    loop {
        let value = probe();
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() >= until {
            return Err(value);
        }
        std::thread::sleep(POLL);
    }
}

/// A baseline taken when nothing is in flight: polls `probe` until it has
/// returned the same value for [`QUIET`] (whatever was being released has
/// been), and returns that value. Panics if it keeps changing for `limit`.
pub(crate) fn settled<T: PartialEq + std::fmt::Debug>(
    limit: Duration,
    mut probe: impl FnMut() -> T,
) -> T {
    let until = Instant::now() + limit;
    let mut last = probe();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(POLL);
        let now = probe();
        if now != last {
            assert!(
                Instant::now() < until,
                "still changing after {limit:?}: {last:?} -> {now:?}"
            );
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return last;
        }
    }
}

/// What this process holds of what the crate releases, some of it in the
/// background: descriptors, shared-memory files (fds into /dev/shm and
/// mappings of them; the crate's segments are files there, named or not),
/// and child processes (running or unreaped).
#[cfg(target_os = "linux")]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Held {
    pub(crate) fds: usize,
    pub(crate) shm_fds: usize,
    pub(crate) shm_maps: usize,
    pub(crate) children: Vec<u32>,
}

#[cfg(target_os = "linux")]
impl Held {
    /// Shared memory only: (fds, mappings).
    pub(crate) fn shm(&self) -> (usize, usize) {
        (self.shm_fds, self.shm_maps)
    }
}

/// This process's [`Held`] now.
#[cfg(target_os = "linux")]
pub(crate) fn held() -> Held {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children.sort_unstable();
    Held {
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        shm_fds: shm_fds().len(),
        shm_maps: maps.lines().filter(|l| l.contains(" /dev/shm/")).count(),
        children,
    }
}

/// A baseline of [`Held`] taken when nothing is in flight: no count, and
/// no thread (the crate's handshake and reaper threads release what they
/// hold and end), has changed for [`QUIET`].
#[cfg(target_os = "linux")]
pub(crate) fn settled_held(limit: Duration) -> Held {
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    settled(limit, || (held(), threads())).0
}

// ------------------------------------------- tasks that say where they are

/// Naps `ms` after counting itself in `running`: a test acts once its
/// tasks really run, not after a sleep that a loaded machine outlasts.
pub(crate) fn nap_counted((ms, running): (u64, multiproc::SharedValue<u32>)) -> u64 {
    running.fetch_add(1);
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits (bounded) until `n` tasks have counted themselves in `running`.
pub(crate) fn wait_running(running: &multiproc::SharedValue<u32>, n: u32) {
    let seen = wait_for(Duration::from_secs(30), || running.get(), |&r| r >= n);
    assert!(seen.is_ok(), "{seen:?} of {n} tasks started");
}

/// Returns `value` once `go` is set: a task that cannot finish before the
/// test says so, however slow or fast the machine.
pub(crate) fn when_set((go, value): (multiproc::Event, u64)) -> u64 {
    go.wait_timeout(Duration::from_secs(60)).unwrap();
    value
}

fn short_nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Runs short tasks until every worker of `pool` has answered one, so
/// that an assertion bound to a deadline after it does not also count a
/// worker's start-up (hundreds of milliseconds under Wine or load).
pub(crate) fn warm(pool: &multiproc::Pool) {
    let limit = Instant::now() + Duration::from_secs(60);
    let cold = || {
        let workers = pool.insights();
        workers.len() < pool.processes() || workers.iter().any(|w| w.tasks == 0)
    };
    while cold() {
        assert!(Instant::now() < limit, "a pool worker never answered");
        let naps = vec![5u64; 2 * pool.processes()];
        pool.with_chunksize(1).map(short_nap, naps).unwrap();
    }
}
