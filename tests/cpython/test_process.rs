//! CPython's `_TestProcess`.

use super::*;

#[test]
fn test_current() {
    // authkey, daemon, ident, exitcode of the current process: no such
    // attributes here; name and pid are.
    let current = multiproc::current_process();
    assert_eq!(current.name(), "MainProcess");
    assert_eq!(current.pid(), std::process::id());
    assert!(multiproc::parent_process().is_none());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Arg {
    Int(i64),
    Str(String),
    List(Vec<i64>),
    Tuple((i64,)),
}

fn put_arg((q, arg): (Queue<Arg>, Arg)) {
    q.put(&arg).unwrap();
}

#[test]
fn test_args_argument() {
    // Python's list-or-tuple `args` is one Rust tuple; what matters is
    // that each kind of argument arrives intact.
    for arg in [
        Arg::Int(1),
        Arg::Str("str".into()),
        Arg::List(vec![1]),
        Arg::Tuple((1,)),
    ] {
        let q = Queue::new().unwrap();
        let p = Process::spawn(put_arg, (q.clone(), arg.clone())).unwrap();
        assert_eq!(q.get_timeout(LONG).unwrap(), arg);
        p.join().unwrap();
    }
}

fn send_parent(w: Connection) {
    let parent = multiproc::parent_process().unwrap();
    w.send(&(parent.pid(), parent.name().to_string())).unwrap();
}

#[test]
fn test_parent_process_attributes() {
    assert!(multiproc::parent_process().is_none());
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(send_parent, w).unwrap();
    p.join().unwrap();
    let (pid, name): (u32, String) = r.recv_timeout(LONG).unwrap();
    assert_eq!(pid, multiproc::current_process().pid());
    assert_eq!(pid, std::process::id());
    assert_eq!(name, multiproc::current_process().name());
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Report {
    Args(i64, i64),
    Kwargs(Vec<(String, f64)>),
    Name(String),
    Pid(u32),
}

fn report((q, go, a, b, kwargs): (Queue<Report>, Event, i64, i64, Vec<(String, f64)>)) {
    // Python's `Queue(1)` keeps the child alive until the parent reads;
    // here the child waits for `go` instead.
    go.wait_timeout(LONG).unwrap();
    let me = multiproc::current_process();
    q.put(&Report::Args(a, b)).unwrap();
    q.put(&Report::Kwargs(kwargs)).unwrap();
    q.put(&Report::Name(me.name().to_string())).unwrap();
    q.put(&Report::Pid(me.pid())).unwrap();
}

#[test]
fn test_process() {
    let q = Queue::new().unwrap();
    let go = Event::new().unwrap();
    let kwargs = vec![("hello".to_string(), 23.0), ("bye".to_string(), 2.54)];
    // No unstarted `Process` exists here: the checks before `start()`
    // have no counterpart.
    let mut p = Process::builder()
        .name("SomeProcess")
        .spawn(report, (q.clone(), go.clone(), 1, 2, kwargs.clone()))
        .unwrap();
    assert_eq!(p.exit_code(), None);
    assert!(p.is_alive());
    assert!(is_active(p.pid()));
    go.set();
    assert_eq!(q.get_timeout(LONG).unwrap(), Report::Args(1, 2));
    assert_eq!(q.get_timeout(LONG).unwrap(), Report::Kwargs(kwargs));
    assert_eq!(
        q.get_timeout(LONG).unwrap(),
        Report::Name(p.name().to_string())
    );
    assert_eq!(q.get_timeout(LONG).unwrap(), Report::Pid(p.pid()));
    p.join_timeout(LONG).unwrap();
    assert_eq!(p.exit_code(), Some(ExitStatus::Code(0)));
    assert!(!p.is_alive());
    assert!(!is_active(p.pid()));
}

#[cfg(target_os = "linux")]
fn main_thread_native_id(_: ()) -> i64 {
    // SAFETY: gettid has no preconditions.
    #[allow(unsafe_code)]
    let tid = unsafe { libc::gettid() };
    i64::from(tid)
}

#[cfg(target_os = "linux")]
#[test]
fn test_process_mainthread_native_id() {
    // SAFETY: as above. (The test thread's id, not the main thread's:
    // both are this process's, and differ from any child's.)
    #[allow(unsafe_code)]
    let mine = i64::from(unsafe { libc::gettid() });
    let child = Process::spawn(main_thread_native_id, ())
        .unwrap()
        .join()
        .unwrap();
    assert_ne!(mine, child);
}

#[cfg(unix)] // its tests are Unix-only
fn sleep_some_event(event: Event) {
    event.set();
    sleep(Duration::from_secs(100));
}

/// CPython's `_kill_process(meth, target)`: returns how `join` failed and
/// the exit status.
#[cfg(unix)] // its tests are Unix-only
fn kill_process_target<F: Fn(Event) + 'static>(
    meth: fn(&Process<()>) -> multiproc::Result<()>,
    target: F,
) -> (multiproc::Error, ExitStatus) {
    let event = Event::new().unwrap();
    let mut p = Process::spawn(target, event.clone()).unwrap();
    assert!(p.is_alive());
    assert!(is_active(p.pid()));
    assert_eq!(p.exit_code(), None);

    // join(0): returns at once, still running.
    let err = p.join_timeout(Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(p.is_alive());

    event.wait_timeout(LONG).unwrap();
    meth(&p).unwrap();

    let err = p.join_timeout(LONG).unwrap_err();
    assert!(!p.is_alive());
    assert!(!is_active(p.pid()));
    (err, p.exit_code().unwrap())
}

/// CPython's `_kill_process(meth)`: the child is killed by the signal
/// (`join` reports that it died); returns the exit status.
#[cfg(unix)] // its tests are Unix-only
fn kill_process(meth: fn(&Process<()>) -> multiproc::Result<()>) -> ExitStatus {
    let (err, status) = kill_process_target(meth, sleep_some_event);
    assert!(err.is_process_died(), "{err}");
    status
}

#[cfg(unix)]
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Sets this process's `SIGINT` disposition.
#[cfg(unix)]
#[allow(unsafe_code)]
fn set_sigint(handler: libc::sighandler_t) {
    // SAFETY: `handler` is SIG_DFL or `on_sigint`, which only stores to an
    // atomic (async-signal-safe).
    let previous = unsafe { libc::signal(libc::SIGINT, handler) };
    assert_ne!(previous, libc::SIG_ERR);
}

/// CPython's `_sleep_some_event` in a Python child, whose runtime turns
/// `SIGINT` into `KeyboardInterrupt`: a handler notes the signal and the
/// sleep ends in an uncaught panic (Python: an uncaught exception, exit
/// code 1).
#[cfg(unix)]
fn sleep_some_event_int_handler(event: Event) {
    set_sigint(on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
    event.set();
    for _ in 0..10_000 {
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            panic!("KeyboardInterrupt");
        }
        sleep(Duration::from_millis(10));
    }
}

/// CPython's `_sleep_no_int_handler`.
#[cfg(unix)]
fn sleep_no_int_handler(event: Event) {
    set_sigint(libc::SIG_DFL);
    sleep_some_event(event);
}

#[cfg(unix)]
#[test]
fn test_interrupt() {
    let (err, status) = kill_process_target(|p| p.interrupt(), sleep_some_event_int_handler);
    // Exit code 1 for an uncaught exception (KeyboardInterrupt here).
    assert!(err.is_panic(), "{err}");
    assert!(
        err.panic_info()
            .unwrap()
            .to_string()
            .contains("KeyboardInterrupt"),
        "{err}"
    );
    assert_eq!(status.to_python(), 1);
}

#[cfg(unix)]
#[test]
fn test_interrupt_no_handler() {
    let (err, status) = kill_process_target(|p| p.interrupt(), sleep_no_int_handler);
    assert!(err.is_process_died(), "{err}");
    assert_eq!(status.to_python(), -libc::SIGINT);
}

#[cfg(unix)]
#[test]
fn test_terminate() {
    let status = kill_process(|p| p.terminate());
    assert_eq!(status.to_python(), -libc::SIGTERM);
}

#[cfg(unix)]
#[test]
fn test_kill() {
    let status = kill_process(|p| p.kill());
    assert_eq!(status.to_python(), -libc::SIGKILL);
}

#[test]
fn test_cpu_count() {
    assert!(multiproc::cpu_count() >= 1);
}

fn wait_event(event: Event) {
    event.wait_timeout(LONG).unwrap();
}

#[test]
fn test_active_children() {
    let event = Event::new().unwrap();
    let p = Process::spawn(wait_event, event.clone()).unwrap();
    let pid = p.pid();
    assert!(is_active(pid));
    event.set();
    p.join().unwrap();
    assert!(!is_active(pid));
}

/// As Python: every process of the tree writes its id into one pipe end
/// that the whole tree shares.
fn recursion((w, id): (Connection, Vec<u32>)) {
    w.send(&id).unwrap();
    if id.len() < 2 {
        for i in 0..2 {
            let mut child = id.clone();
            child.push(i);
            Process::spawn(recursion, (w.clone(), child))
                .unwrap()
                .join()
                .unwrap();
        }
    }
}

#[test]
fn test_recursion() {
    let (rconn, wconn) = pipe(false).unwrap();
    recursion((wconn, vec![]));
    // `wconn` is gone everywhere now: read until EOF.
    let mut result = Vec::new();
    while rconn.poll(Duration::ZERO).unwrap_or(false) {
        result.push(rconn.recv::<Vec<u32>>().unwrap());
    }
    assert!(rconn
        .recv_timeout::<Vec<u32>>(LONG)
        .unwrap_err()
        .is_disconnected());
    let expected: Vec<Vec<u32>> = vec![
        vec![],
        vec![0],
        vec![0, 0],
        vec![0, 1],
        vec![1],
        vec![1, 0],
        vec![1, 1],
    ];
    assert_eq!(result, expected);
}

#[test]
fn test_sentinel() {
    // `p.sentinel` is the process itself: it is `Waitable`.
    let event = Event::new().unwrap();
    let mut p = Process::spawn(wait_event, event.clone()).unwrap();
    assert!(multiproc::wait(&[&p], Some(Duration::ZERO)).is_empty());
    event.set();
    p.join_timeout(LONG).unwrap();
    assert_eq!(multiproc::wait(&[&p], Some(Duration::from_secs(1))), [0]);
}

#[cfg(unix)] // its tests are Unix-only
fn sleep_ms(ms: u64) {
    sleep(Duration::from_millis(ms));
}

#[cfg(unix)]
#[test]
fn test_many_processes() {
    const N: usize = 5; // CPython's N under `spawn`.
    let procs: Vec<_> = (0..N)
        .map(|_| Process::spawn(sleep_ms, 10).unwrap())
        .collect();
    for mut p in procs {
        p.join_timeout(LONG).unwrap();
        assert_eq!(p.exit_code(), Some(ExitStatus::Code(0)));
    }

    let procs: Vec<_> = (0..N)
        .map(|_| Process::spawn(sleep_ms, 100_000).unwrap())
        .collect();
    sleep(Duration::from_millis(1)); // let the children start...
    for p in &procs {
        p.terminate().unwrap();
    }
    for mut p in procs {
        assert!(p.join_timeout(LONG).is_err());
        assert_eq!(
            p.exit_code().map(ExitStatus::to_python),
            Some(-libc::SIGTERM),
            "pid {}",
            p.pid()
        );
    }
}

#[cfg(target_os = "linux")]
fn fd_count((evt, q): (Event, Queue<usize>)) {
    let n = std::fs::read_dir("/proc/self/fd").unwrap().count();
    q.put(&n).unwrap();
    evt.wait_timeout(LONG).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn test_child_fd_inflation() {
    // The number of fds in a child does not grow with the number of
    // running children.
    const N: usize = 5;
    let evt = Event::new().unwrap();
    let q = Queue::new().unwrap();
    let procs: Vec<_> = (0..N)
        .map(|_| Process::spawn(fd_count, (evt.clone(), q.clone())).unwrap())
        .collect();
    let counts: Vec<usize> = (0..N).map(|_| q.get_timeout(LONG).unwrap()).collect();
    evt.set();
    for p in procs {
        p.join().unwrap();
    }
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
}

/// Points `fd` (1 or 2) at a pipe whose reader is gone: every write to
/// it fails (Python: the child sets `sys.stdout` to a closed stream or
/// `None`). What is checked: the child's own ending (the crate's exit
/// path) does not trip over it.
#[cfg(unix)]
#[allow(unsafe_code)]
fn break_stream(fd: i32) {
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    // SAFETY: closes the read end, which this function owns.
    unsafe { libc::close(ends[0]) };
    // SAFETY: `ends[1]` is open; dup2 replaces `fd` with a copy of it.
    assert_eq!(unsafe { libc::dup2(ends[1], fd) }, fd);
    // SAFETY: closes the write end's original, which this function owns.
    unsafe { libc::close(ends[1]) };
}

#[cfg(unix)]
fn set_with_broken_stream((evt, fd): (Event, i32)) {
    break_stream(fd);
    evt.set();
}

#[cfg(unix)]
#[test]
fn test_error_on_stdio_flush_2() {
    for fd in [1, 2] {
        let evt = Event::new().unwrap();
        let mut p = Process::spawn(set_with_broken_stream, (evt.clone(), fd)).unwrap();
        p.join_timeout(LONG).unwrap();
        assert!(evt.is_set());
        assert_eq!(p.exit_code(), Some(ExitStatus::Code(0)), "fd {fd}");
    }
}
