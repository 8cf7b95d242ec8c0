//! Who can get in (issue 6): row 10 of the fault matrix (an impostor at
//! the handshake), owner-only modes, and the randomness in names. Each
//! scenario runs under a watchdog.

#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Process, SharedValue};

multiproc::test_support!();

mod common;
#[allow(unused_imports)]
use common::watchdog;

const LIMIT: Duration = Duration::from_secs(60);

/// Sets the flag: proof that task code ran.
fn mark(ran: SharedValue<u32>) {
    ran.set(1);
}

/// The handshake server named in a child's marker, read from its initial
/// environment (what a same-user impostor can do).
#[cfg(target_os = "linux")]
fn server_of(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if let Some(m) = env
            .split(|&b| b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("MULTIPROC_WORKER="))
        {
            return m.splitn(4, ':').nth(3).unwrap().to_string();
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

/// Row 10, LIMITATION: an impostor that connects to a child's handshake
/// server before the child is rejected and learns nothing, but the start
/// of that child fails (fail closed) instead of waiting for the real
/// child: ipc-channel's one-shot server accepts exactly one connection.
/// An impostor must be the same user (the server lives in a 0700
/// directory; the marker is readable only through /proc by that user), who
/// could ptrace the child anyway.
#[cfg(target_os = "linux")]
#[test]
fn row10_an_impostor_with_a_wrong_token_is_rejected_and_the_start_fails_closed() {
    use ipc_channel::ipc::{self, IpcSender};
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let p = Process::builder()
            .env("MULTIPROC_TEST_SLEEP_AT_LOAD", "1000")
            .spawn(mark, ran.clone())
            .unwrap();
        let server = server_of(p.pid());
        let (reply, config) = ipc::channel::<()>().unwrap();
        let impostor = IpcSender::<wire::Hello>::connect(server).unwrap();
        impostor
            .send(wire::Hello::Worker {
                token: [0; 32],
                pid: p.pid(),
                reply,
            })
            .unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert!(err.to_string().contains("wrong token"), "{err}");
        // The impostor got nothing: its reply channel closed unused.
        assert!(config.try_recv_timeout(Duration::from_secs(5)).is_err());
        assert_eq!(ran.get(), 0, "task code ran");
    });
}

/// Row 10: a hello that does not decode (here a channel index with no
/// channel attached, on which ipc-channel's decoder panics) is rejected
/// as a handshake error naming it; nothing panics through and the child
/// runs nothing.
#[cfg(target_os = "linux")]
#[test]
fn row10_an_impostor_with_a_malformed_hello_is_rejected() {
    use ipc_channel::ipc::IpcSender;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let p = Process::builder()
            .env("MULTIPROC_TEST_SLEEP_AT_LOAD", "1000")
            .spawn(mark, ran.clone())
            .unwrap();
        let server = server_of(p.pid());
        let impostor = IpcSender::<wire::BadHello>::connect(server).unwrap();
        impostor
            .send(wire::BadHello::Worker {
                token: [0; 32],
                pid: p.pid(),
                reply: 7,
            })
            .unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert!(err.to_string().contains("malformed"), "{err}");
        assert_eq!(ran.get(), 0, "task code ran");
    });
}

/// The handshake server lives in a directory only its user can enter.
#[cfg(target_os = "linux")]
#[test]
fn the_handshake_socket_is_in_an_owner_only_directory() {
    use std::os::unix::fs::MetadataExt;
    watchdog(LIMIT, || {
        let ran = SharedValue::new(0u32).unwrap();
        let p = Process::builder()
            .env("MULTIPROC_TEST_SLEEP_AT_LOAD", "300")
            .spawn(mark, ran.clone())
            .unwrap();
        let server = server_of(p.pid());
        let dir = std::path::Path::new(&server)
            .parent()
            .unwrap()
            .to_path_buf();
        let meta = std::fs::metadata(&dir).unwrap();
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
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if !target.to_string_lossy().starts_with("/dev/shm/") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(fd.path()) else {
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
