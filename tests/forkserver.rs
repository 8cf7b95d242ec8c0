//! Start method `forkserver`: a child forked from the fork server behaves
//! as a spawned one (result, panic, exit code, signals), and the failures
//! around the server (it dies, a child dies, the parent dies) end cleanly.
//!
//! Scenarios that kill the fork server or the parent run inside a spawned
//! "middle" process with a fork server of its own, so other tests of this
//! binary, which share this process's server, are not disturbed.

multiproc::test_support!();

#[cfg(not(target_os = "linux"))]
#[test]
fn the_fork_server_is_refused_where_it_is_unavailable() {
    use multiproc::{ErrorKind, Process, StartMethod};
    fn one(_: ()) -> u32 {
        1
    }
    assert!(!StartMethod::ForkServer.is_available());
    let err = Process::builder()
        .start_method(StartMethod::ForkServer)
        .spawn(one, ())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let err = multiproc::set_start_method(StartMethod::ForkServer, true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}

#[cfg(target_os = "linux")]
mod common;

#[cfg(target_os = "linux")]
mod linux {
    use std::time::Duration;

    use multiproc::{ErrorKind, ExitStatus, Pool, Process, ProcessBuilder, StartMethod};

    use super::common::{nap_counted, wait_for, wait_running, watchdog};

    const LIMIT: Duration = Duration::from_secs(120);

    fn forked() -> ProcessBuilder {
        Process::builder().start_method(StartMethod::ForkServer)
    }

    fn square(x: u64) -> u64 {
        x * x
    }

    fn nap(ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    fn panics(msg: String) -> u32 {
        panic!("{msg}")
    }

    fn exit_with(code: i32) {
        std::process::exit(code)
    }

    fn my_pid_and_parent(_: ()) -> (u32, u32, Option<String>) {
        (
            std::process::id(),
            std::os::unix::process::parent_id(),
            std::env::var("FORKSERVER_TEST_VAR").ok(),
        )
    }

    /// `true` once `pid` has exited (gone or a zombie).
    fn is_dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
                .unwrap_or(true),
        }
    }

    /// The live-or-zombie children of `parent`, from `/proc`.
    fn children_of(parent: u32) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ppid: u32 = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == parent).then_some(pid)
            })
            .collect()
    }

    /// The pid of this process's fork server (its child started with the
    /// server marker), if one runs.
    fn fork_server_of(parent: u32) -> Option<u32> {
        children_of(parent).into_iter().find(|&pid| {
            let marked = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&b| b == 0)
                    .any(|v| v.starts_with(b"MULTIPROC_FORKSERVER="))
            });
            marked && !is_dead(pid)
        })
    }

    #[test]
    fn a_forked_child_returns_its_typed_result_as_our_own_child() {
        watchdog(LIMIT, || {
            let p = forked()
                .env("FORKSERVER_TEST_VAR", "seen")
                .spawn(my_pid_and_parent, ())
                .unwrap();
            let pid = p.pid();
            let (child, parent, var) = p.join().unwrap();
            assert_eq!(child, pid);
            assert_eq!(
                parent,
                std::process::id(),
                "the child's parent is us, not the server"
            );
            assert_eq!(var.as_deref(), Some("seen"));
            let p = forked().spawn(square, 12).unwrap();
            assert_eq!(p.join().unwrap(), 144);
        });
    }

    fn sum_bytes(v: Vec<u8>) -> (usize, u64) {
        (v.len(), v.iter().map(|&b| u64::from(b)).sum())
    }

    #[test]
    fn a_forked_child_gets_arguments_larger_than_a_channel_fragment() {
        watchdog(LIMIT, || {
            // 8 MiB: its `Config` cannot sit in the channel's buffer, so
            // the parent sends it while the child reads.
            let big: Vec<u8> = (0..8usize << 20).map(|i| (i % 251) as u8).collect();
            let want = (big.len(), big.iter().map(|&b| u64::from(b)).sum());
            let p = forked().spawn(sum_bytes, big).unwrap();
            assert_eq!(p.join().unwrap(), want);
            // And small ones still go at once, on the same server.
            assert_eq!(forked().spawn(square, 5).unwrap().join().unwrap(), 25);
        });
    }

    fn environment(_: ()) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.sort();
        env
    }

    #[test]
    fn a_forked_child_gets_a_spawned_childs_environment() {
        watchdog(LIMIT, || {
            // The server started with this program's environment; each
            // child gets the environment of now, with the builder's changes:
            // one added, one changed, one removed, as a spawn gives them.
            let changed = |b: ProcessBuilder| {
                b.env("FORKSERVER_TEST_ADDED", "added")
                    .env("PATH", "/forkserver/test/path")
                    .env_remove("HOME")
            };
            let warm_server = forked().spawn(square, 2).unwrap();
            assert_eq!(warm_server.join().unwrap(), 4);
            let forked_env = changed(forked()).spawn(environment, ()).unwrap();
            let forked_env = forked_env.join().unwrap();
            let spawned_env = changed(Process::builder().start_method(StartMethod::Spawn))
                .spawn(environment, ())
                .unwrap()
                .join()
                .unwrap();
            let get = |env: &[(String, String)], key: &str| {
                env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
            };
            assert_eq!(
                get(&forked_env, "FORKSERVER_TEST_ADDED").as_deref(),
                Some("added")
            );
            assert_eq!(
                get(&forked_env, "PATH").as_deref(),
                Some("/forkserver/test/path")
            );
            assert_eq!(get(&forked_env, "HOME"), None);
            assert_eq!(forked_env, spawned_env);
            // No change: the request carries no environment and the child
            // keeps the server's, which must be ours all the same.
            let plain = |method| {
                Process::builder()
                    .start_method(method)
                    .spawn(environment, ())
                    .unwrap()
                    .join()
                    .unwrap()
            };
            assert_eq!(plain(StartMethod::ForkServer), plain(StartMethod::Spawn));
        });
    }

    #[test]
    fn a_forked_childs_panic_and_exit_code_are_reported() {
        watchdog(LIMIT, || {
            let err = forked()
                .spawn(panics, "boom in a fork".to_string())
                .unwrap()
                .join()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
            assert_eq!(err.panic_info().unwrap().message(), "boom in a fork");
            let p = forked().spawn(exit_with, 7).unwrap();
            let err = p.join().unwrap_err();
            assert!(err.is_process_died(), "{err}");
            assert_eq!(err.exit_status(), Some(ExitStatus::Code(7)));
        });
    }

    #[test]
    fn kill_and_terminate_reach_a_forked_child() {
        watchdog(LIMIT, || {
            let mut p = forked().spawn(nap, 60_000).unwrap();
            assert!(p.is_alive());
            p.kill().unwrap();
            assert!(p.join_timeout(LIMIT).unwrap_err().is_process_died());
            assert_eq!(p.exit_code(), Some(ExitStatus::Signal(libc::SIGKILL)));
            let p = forked().spawn(nap, 60_000).unwrap();
            p.terminate().unwrap();
            let err = p.join().unwrap_err();
            assert_eq!(err.exit_status(), Some(ExitStatus::Signal(libc::SIGTERM)));
        });
    }

    #[test]
    #[allow(unsafe_code)]
    fn a_forked_child_killed_from_outside_shows_its_signal() {
        watchdog(LIMIT, || {
            let running = multiproc::SharedValue::new(0u32).unwrap();
            let p = forked()
                .spawn(nap_counted, (60_000, running.clone()))
                .unwrap();
            // Killed before its handshake it would be a start failure.
            wait_running(&running, 1);
            // SAFETY: `kill` has no memory preconditions; the pid is our
            // un-reaped child.
            assert_eq!(unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) }, 0);
            let err = p.join().unwrap_err();
            assert!(err.is_process_died(), "{err}");
            assert_eq!(err.exit_status(), Some(ExitStatus::Signal(libc::SIGKILL)));
        });
    }

    /// Descriptor kinds a child holds while it runs: `socket`, `pipe`,
    /// `anon_inode:…` or the path, sorted.
    fn fd_kinds(_: ()) -> Vec<String> {
        let mut kinds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| {
                let t = t.to_string_lossy().into_owned();
                match t.split_once(':') {
                    Some((kind, _)) if !t.starts_with('/') => kind.to_string(),
                    // A nameless segment: `/dev/shm/#<inode> (deleted)`.
                    _ => t
                        .split_once('#')
                        .map_or(t.clone(), |(dir, _)| dir.to_string()),
                }
            })
            // `read_dir` itself holds one while it lists.
            .filter(|t| !t.starts_with("/proc/"))
            .collect();
        kinds.sort();
        kinds
    }

    #[test]
    fn a_forked_child_holds_a_spawned_ones_descriptors_but_the_handshakes() {
        watchdog(LIMIT, || {
            let spawned = Process::builder()
                .start_method(StartMethod::Spawn)
                .spawn(fd_kinds, ())
                .unwrap()
                .join()
                .unwrap();
            let forked = forked().spawn(fd_kinds, ()).unwrap().join().unwrap();
            // A spawned child also holds what its handshake needed: the
            // rendezvous page and the reply channel it sent in its hello.
            // A forked one had neither; everything else is the same.
            let mut expected = spawned.clone();
            for handshake_only in ["/dev/shm/", "socket"] {
                let at = expected.iter().position(|k| k == handshake_only);
                expected.remove(at.unwrap_or_else(|| panic!("spawned {spawned:?}")));
            }
            assert_eq!(forked, expected, "forked {forked:?}, spawned {spawned:?}");
        });
    }

    fn pid_of_worker(_: u64) -> u32 {
        std::process::id()
    }

    fn die_on_three(x: u64) -> u64 {
        if x == 3 {
            std::process::abort();
        }
        x
    }

    #[test]
    fn a_pool_forks_its_workers_and_replacements() {
        watchdog(LIMIT, || {
            let pool = Pool::builder()
                .processes(2)
                .chunksize(1)
                .start_method(StartMethod::ForkServer)
                .max_tasks_per_child(1)
                .build()
                .unwrap();
            let pids = pool.map(pid_of_worker, 0..12).unwrap();
            let mut distinct = pids.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 12, "one worker per task: {pids:?}");
            assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
        });
    }

    #[test]
    fn a_pool_worker_that_dies_is_reported_and_replaced_by_a_fork() {
        watchdog(LIMIT, || {
            let pool = Pool::builder()
                .processes(2)
                .chunksize(1)
                .start_method(StartMethod::ForkServer)
                .build()
                .unwrap();
            let err = pool.map(die_on_three, 0..8).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
            assert_eq!(
                err.exit_status().and_then(|s| s.signal()),
                Some(libc::SIGABRT)
            );
            assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
        });
    }

    /// A middle process: starts forked children, kills its own fork server,
    /// and checks that a child survives that and the next start works.
    fn server_killed(_: ()) -> (u64, u64, bool, bool) {
        let before = forked().spawn(square, 3).unwrap().join().unwrap();
        let running = forked().spawn(nap, 300).unwrap();
        let server = fork_server_of(std::process::id()).expect("a fork server runs");
        // SAFETY: `kill` has no memory preconditions; the pid is our child.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(server as i32, libc::SIGKILL) };
        assert_eq!(rc, 0);
        let gone = wait_for(Duration::from_secs(30), || is_dead(server), |&d| d).is_ok();
        let after = forked().spawn(square, 4).unwrap().join().unwrap();
        let survived = running.join().is_ok();
        (before, after, gone, survived)
    }

    /// Runs `middle` (a `server_killed`) in a spawned process and checks
    /// what it saw.
    fn check_server_killed<F>(middle: F)
    where
        F: Fn(()) -> (u64, u64, bool, bool) + Send + Copy + 'static,
    {
        watchdog(LIMIT, move || {
            let p = Process::builder()
                .start_method(StartMethod::Spawn)
                .spawn(middle, ())
                .unwrap();
            let (before, after, gone, survived) = p.join().unwrap();
            assert_eq!((before, after), (9, 16));
            assert!(gone, "the fork server did not die of SIGKILL");
            assert!(survived, "a running child died with the fork server");
        });
    }

    /// The fork server's fault injection (`src/bootstrap/forkserver.rs`,
    /// `serve`): a server started with it dies right after its first
    /// `clone`, before its reply.
    const DIE_AFTER_CLONE: &str = "MULTIPROC_TEST_FORKSERVER_DIE_AFTER_CLONE";

    fn append_pid(path: String) -> u32 {
        use std::io::Write;
        let me = std::process::id();
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(log, "{me}").unwrap();
        me
    }

    /// A middle process whose first fork server dies between its `clone`
    /// and its reply (the middle was started with `DIE_AFTER_CLONE`): one
    /// start, which the parent retries on a new server. Returns the lines
    /// the task logged, the pid the start reported, and the exit codes of
    /// the middle's other children (the abandoned one), reaped here.
    fn retried_after_clone(dir: String) -> (Vec<String>, u32, Vec<i32>) {
        let log = format!("{dir}/runs");
        let p = forked().spawn(append_pid, log.clone()).unwrap();
        let ran = p.pid();
        assert_eq!(p.join().unwrap(), ran);
        let me = std::process::id();
        let abandoned = wait_for(
            Duration::from_secs(30),
            || {
                let server = fork_server_of(me);
                let mut kids = children_of(me);
                kids.retain(|&pid| Some(pid) != server);
                kids
            },
            |kids| !kids.is_empty(),
        )
        .unwrap_or_default();
        let codes = abandoned
            .into_iter()
            .map(|pid| {
                let mut status = 0;
                // SAFETY: `waitpid` writes the status into a valid local;
                // the pid is our own child, which nothing else reaps.
                #[allow(unsafe_code)]
                let rc = unsafe { libc::waitpid(pid as i32, &mut status, 0) };
                assert_eq!(rc, pid as i32);
                if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -libc::WTERMSIG(status)
                }
            })
            .collect();
        let runs = std::fs::read_to_string(&log).unwrap_or_default();
        (runs.lines().map(str::to_string).collect(), ran, codes)
    }

    #[test]
    fn a_start_retried_after_the_server_died_past_its_clone_runs_its_task_once() {
        watchdog(LIMIT, || {
            let dir = std::env::temp_dir()
                .join(format!("multiproc-forkserver-retry-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let fired = dir.join("fault-fired");
            let p = Process::builder()
                .start_method(StartMethod::Spawn)
                .env(DIE_AFTER_CLONE, &fired)
                .spawn(retried_after_clone, dir.to_string_lossy().into_owned())
                .unwrap();
            let got = p.join();
            let fault_fired = fired.exists();
            let _ = std::fs::remove_dir_all(&dir);
            let (runs, ran, abandoned) = got.unwrap();
            assert!(
                fault_fired,
                "the server did not die after its clone: nothing was tested"
            );
            // Once, in the child the start reported; the child the dead
            // server made never ran it (it got no `Control::Run`) and
            // exited before any task code.
            assert_eq!(runs, [ran.to_string()]);
            assert_eq!(abandoned, [121]);
        });
    }

    #[test]
    fn a_killed_fork_server_is_replaced_at_the_next_start() {
        check_server_killed(server_killed);
    }

    /// As [`server_killed`], in a program that gave `SIGPIPE` back its
    /// default action (many command-line tools do): the send to the dead
    /// server must be an error the start recovers from, not a signal that
    /// ends the program.
    fn server_killed_with_default_sigpipe(_: ()) -> (u64, u64, bool, bool) {
        // SAFETY: `signal` with `SIG_DFL` has no memory preconditions.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL)
        };
        server_killed(())
    }

    #[test]
    fn a_dead_fork_server_is_no_sigpipe_for_a_program_that_restored_it() {
        check_server_killed(server_killed_with_default_sigpipe);
    }

    /// A middle process: forks two children, writes their pids and its fork
    /// server's to `path`, and waits to be killed.
    fn middle(path: String) {
        let kids: Vec<_> = (0..2)
            .map(|_| forked().spawn(nap, 60_000).unwrap())
            .collect();
        let server = fork_server_of(std::process::id()).expect("a fork server runs");
        let mut pids: Vec<String> = kids.iter().map(|k| k.pid().to_string()).collect();
        pids.push(server.to_string());
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, pids.join(",")).unwrap();
        std::fs::rename(tmp, path).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn the_server_and_its_children_die_with_a_sigkilled_parent() {
        watchdog(LIMIT, || {
            let path =
                std::env::temp_dir().join(format!("multiproc-fs-orphans-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let p = Process::builder()
                .start_method(StartMethod::Spawn)
                .spawn(middle, path.to_string_lossy().into_owned())
                .unwrap();
            let read = wait_for(
                Duration::from_secs(60),
                || std::fs::read_to_string(&path).ok(),
                Option::is_some,
            );
            let pids: Vec<u32> = read
                .expect("the middle process never reported")
                .unwrap()
                .split(',')
                .map(|p| p.parse().unwrap())
                .collect();
            std::fs::remove_file(&path).unwrap();
            assert_eq!(pids.len(), 3);
            assert!(pids.iter().all(|&pid| !is_dead(pid)));
            p.kill().unwrap();
            let alive = || pids.iter().copied().filter(|&pid| !is_dead(pid)).collect();
            let left: Result<Vec<u32>, _> = wait_for(Duration::from_secs(20), alive, Vec::is_empty);
            assert!(left.is_ok(), "{left:?} outlived their SIGKILLed parent");
            assert!(p.join().unwrap_err().is_process_died());
        });
    }
}
