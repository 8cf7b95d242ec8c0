//! Who can get in (issue 6): row 10 of the fault matrix (an impostor at
//! the handshake), owner-only modes, and the randomness in names. Each
//! scenario runs under a watchdog.

#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::time::{Duration, Instant};

use multiproc::{ErrorKind, ExitStatus, Process, SharedMemory, SharedValue};

multiproc::test_support!();

mod common;
#[allow(unused_imports)]
use common::{rendezvous, watchdog, Gate};

const LIMIT: Duration = Duration::from_secs(60);

/// Sets the flag: proof that task code ran.
fn mark(ran: SharedValue<u32>) {
    ran.set(1);
}

/// The handshake rendezvous named in a child's marker, read from its
/// initial environment and opened as any process of the same user can.
#[cfg(target_os = "linux")]
fn rendezvous_of(pid: u32) -> SharedMemory {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(m) = env
            .split(|&b| b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("MULTIPROC_WORKER="))
        {
            assert!(m.starts_with("v2:"), "{m}");
            return SharedMemory::open(m.splitn(4, ':').nth(3).unwrap()).unwrap();
        }
        // Between fork and exec the environment is the parent's.
        assert!(Instant::now() < deadline, "no marker in the child's env");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Mirrors of the child's first message (src/bootstrap.rs `Hello`):
/// ipc-channel encodes it with postcard, field by field.
#[cfg(target_os = "linux")]
mod wire {
    use ipc_channel::ipc::IpcSender;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub(crate) enum Hello {
        Worker {
            token: [u8; 32],
            pid: u32,
            reply: IpcSender<()>,
        },
        Abort,
    }

    /// The same shape, with a channel index that no attached channel has.
    #[derive(Serialize, Deserialize)]
    pub(crate) enum BadHello {
        Worker {
            token: [u8; 32],
            pid: u32,
            reply: u64,
        },
    }
}

/// Says hello to `server` with a wrong token, as `pid`; returns the reply
/// channel's receiving end, which must never get anything.
#[cfg(target_os = "linux")]
fn wrong_token_hello(server: String, pid: u32) -> ipc_channel::ipc::IpcReceiver<()> {
    use ipc_channel::ipc::{self, IpcSender};
    let (reply, config) = ipc::channel::<()>().unwrap();
    IpcSender::<wire::Hello>::connect(server)
        .unwrap()
        .send(wire::Hello::Worker {
            token: [0; 32],
            pid,
            reply,
        })
        .unwrap();
    config
}

/// The parent dropped the impostor's reply sender without sending on it.
#[cfg(target_os = "linux")]
fn assert_got_nothing(config: &ipc_channel::ipc::IpcReceiver<()>) {
    let got = config.try_recv_timeout(Duration::from_secs(20));
    assert!(
        matches!(
            got,
            Err(ipc_channel::TryRecvError::IpcError(
                ipc_channel::IpcError::Disconnected
            ))
        ),
        "the impostor's reply channel: {got:?}"
    );
}

/// Row 10: an impostor that reads the marker and the rendezvous, connects
/// to the handshake server before the (held back) child and presents a
/// wrong token is refused and gets nothing; the parent publishes a new
/// server at once, and the real child connects there and runs its task.
#[cfg(target_os = "linux")]
#[test]
fn row10_an_impostor_with_a_wrong_token_is_refused_and_the_real_child_still_runs() {
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let gate = Gate::new("row10-wrong-token");
        let (var, path) = gate.env();
        let p = Process::builder()
            .env(var, path)
            .spawn(mark, ran.clone())
            .unwrap();
        let rv = rendezvous_of(p.pid());
        let (generation, server) = rendezvous::newest(&rv);
        assert_eq!(generation, 1);
        let config = wrong_token_hello(server, p.pid());
        // Refused, and the next server published, while the child waits.
        rendezvous::wait_for(&rv, 2, Duration::from_secs(20));
        assert_got_nothing(&config);
        assert_eq!(ran.get(), 0);
        gate.open();
        p.join().unwrap();
        assert_eq!(ran.get(), 1, "the real child's task did not run");
    });
}

/// Row 10: a hello that does not decode (here a channel index with no
/// channel attached, on which ipc-channel's decoder panics) is refused;
/// nothing panics through, and the real child still runs its task.
#[cfg(target_os = "linux")]
#[test]
fn row10_an_impostor_with_a_malformed_hello_is_refused_and_the_real_child_still_runs() {
    use ipc_channel::ipc::IpcSender;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let gate = Gate::new("row10-malformed");
        let (var, path) = gate.env();
        let p = Process::builder()
            .env(var, path)
            .spawn(mark, ran.clone())
            .unwrap();
        let rv = rendezvous_of(p.pid());
        let (_, server) = rendezvous::newest(&rv);
        let impostor = IpcSender::<wire::BadHello>::connect(server).unwrap();
        impostor
            .send(wire::BadHello::Worker {
                token: [0; 32],
                pid: p.pid(),
                reply: 7,
            })
            .unwrap();
        rendezvous::wait_for(&rv, 2, Duration::from_secs(20));
        assert_eq!(ran.get(), 0);
        gate.open();
        p.join().unwrap();
        assert_eq!(ran.get(), 1, "the real child's task did not run");
    });
}

/// Row 10: an impostor that connects first and then says nothing, keeping
/// the connection open for the whole test, holds that server's thread in
/// `recv`. The child notes in the rendezvous that it tried that server;
/// when it stays silent the parent publishes another, and the child runs.
#[cfg(target_os = "linux")]
#[test]
fn row10_a_silent_impostor_does_not_stop_the_real_child() {
    use ipc_channel::ipc::IpcSender;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let gate = Gate::new("row10-silent");
        let (var, path) = gate.env();
        let p = Process::builder()
            .env(var, path)
            .spawn(mark, ran.clone())
            .unwrap();
        let rv = rendezvous_of(p.pid());
        let (_, server) = rendezvous::newest(&rv);
        let silent = IpcSender::<wire::Hello>::connect(server).unwrap();
        gate.open();
        p.join().unwrap();
        assert_eq!(ran.get(), 1, "the real child's task did not run");
        assert!(rendezvous::published(&rv) >= 2);
        drop(silent);
    });
}

/// Row 10: an impostor that presents a wrong token to every server the
/// parent publishes, as soon as it appears, exhausts the generations: the
/// start fails closed with `Handshake` (naming the refusals, so not the
/// start timeout, an hour here); the child, held back, is killed before
/// any task code runs, and the impostor got nothing anywhere. Nothing
/// hangs.
#[cfg(target_os = "linux")]
#[test]
fn row10_an_impostor_refused_at_every_generation_fails_the_start_closed() {
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let gate = Gate::new("row10-every-generation");
        let (var, path) = gate.env();
        let p = Process::builder()
            .env(var, path)
            .start_timeout(Duration::from_secs(3600))
            .spawn(mark, ran.clone())
            .unwrap();
        let rv = rendezvous_of(p.pid());
        let mut replies = Vec::new();
        for n in 1..=16 {
            rendezvous::wait_for(&rv, n, Duration::from_secs(20));
            replies.push(wrong_token_hello(rendezvous::server(&rv, n), p.pid()));
        }
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        let text = err.to_string();
        assert!(text.contains("refused 16 connections"), "{text}");
        assert!(text.contains("wrong token"), "{text}");
        assert_eq!(err.exit_status(), Some(ExitStatus::Signal(9)), "{err}");
        assert_eq!(rendezvous::published(&rv), 16);
        for config in &replies {
            assert_got_nothing(config);
        }
        assert_eq!(ran.get(), 0, "task code ran");
    });
}

/// A silent impostor holds a server's thread, but not the parent: a child
/// that never connects is still killed at its start timeout, and `join`
/// returns at once (the held thread ends when the impostor closes).
#[cfg(target_os = "linux")]
#[test]
fn row10_a_silent_impostor_cannot_hang_a_start_that_times_out() {
    use ipc_channel::ipc::IpcSender;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let start_timeout = Duration::from_secs(1);
        let p = Process::builder()
            .env("MULTIPROC_TEST_SLEEP_AT_LOAD", "60000")
            .start_timeout(start_timeout)
            .spawn(mark, ran.clone())
            .unwrap();
        let rv = rendezvous_of(p.pid());
        let (_, server) = rendezvous::newest(&rv);
        let silent = IpcSender::<wire::Hello>::connect(server).unwrap();
        // Were `join` held by the impostor's thread, it would not return
        // before `silent` is dropped below: a hang, caught by the watchdog.
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert!(
            err.to_string().contains("did not complete its handshake"),
            "{err}"
        );
        assert_eq!(ran.get(), 0, "task code ran");
        drop(silent);
    });
}

/// The handshake server lives in a directory only its user can enter.
#[cfg(target_os = "linux")]
#[test]
fn the_handshake_socket_is_in_an_owner_only_directory() {
    use std::os::unix::fs::MetadataExt;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let gate = Gate::new("owner-only-dir");
        let (var, path) = gate.env();
        let p = Process::builder()
            .env(var, path)
            .spawn(mark, ran.clone())
            .unwrap();
        let (_, server) = rendezvous::newest(&rendezvous_of(p.pid()));
        let dir = std::path::Path::new(&server)
            .parent()
            .unwrap()
            .to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
        gate.open();
        p.join().unwrap();
        assert_eq!(ran.get(), 1);
        assert_eq!(meta.mode() & 0o7777, 0o700, "{dir:?}");
        // SAFETY: getuid has no preconditions.
        #[allow(unsafe_code)]
        let uid = unsafe { libc::getuid() };
        assert_eq!(meta.uid(), uid);
    });
}

/// Every segment this process holds is a 0600 file of ours, whatever the
/// umask: shared memory, arrays, locks, queues, pipes.
#[cfg(target_os = "linux")]
#[test]
fn segments_and_named_objects_are_owner_only() {
    use std::os::unix::fs::MetadataExt;
    watchdog(LIMIT, || {
        // SAFETY: umask has no memory preconditions. 0 would let a careless
        // create widen the mode; the crate sets it explicitly.
        #[allow(unsafe_code)]
        let old = unsafe { libc::umask(0) };
        let objects = (
            multiproc::SharedMemory::create(4096).unwrap(),
            multiproc::SharedArray::<u64>::new(10).unwrap(),
            multiproc::Lock::new().unwrap(),
            multiproc::Queue::<u8>::new().unwrap(),
            multiproc::pipe(true).unwrap(),
            multiproc::Event::new().unwrap(),
        );
        // SAFETY: as above; restores the previous mask.
        #[allow(unsafe_code)]
        unsafe {
            libc::umask(old)
        };
        // SAFETY: getuid has no preconditions.
        #[allow(unsafe_code)]
        let uid = unsafe { libc::getuid() };
        let mut seen = 0;
        for (fd, target) in common::shm_fds() {
            let Ok(meta) = std::fs::metadata(&fd) else {
                continue;
            };
            assert_eq!(meta.mode() & 0o7777, 0o600, "{target:?}");
            assert_eq!(meta.uid(), uid, "{target:?}");
            seen += 1;
        }
        assert!(seen >= 6, "only {seen} segments found");
        drop(objects);
    });
}

/// A segment's name carries its 128-bit random tag (on every platform;
/// Windows and macOS names add 130 random bits of their own): 32 hex
/// digits, never repeated.
#[test]
fn names_carry_128_random_bits() {
    watchdog(LIMIT, || {
        let mut tags = std::collections::HashSet::new();
        for _ in 0..64 {
            let m = multiproc::SharedMemory::create(64).unwrap();
            let name = m.name();
            let tag = name.rsplit('_').next().unwrap().to_string();
            assert_eq!(tag.len(), 32, "{name}");
            assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
            assert!(tags.insert(tag), "tag repeated: {name}");
        }
    });
}
