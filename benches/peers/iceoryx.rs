//! iceoryx2 (publish-subscribe over shared memory) as a peer of the pipe
//! and queue rows (issue 15): the best-known shared-memory IPC, between
//! the parent and a child process started like the other IPC peers'
//! (`multiproc::Process`), with the same payload (one `u64`).
//!
//! Its fastest honest equivalent of a ping-pong is two publish-subscribe
//! services (one each way) on its single-threaded `ipc::Service`, both
//! sides polling `receive()`, as iceoryx2's own latency benchmark does.
//! Its queue is one publish-subscribe service whose publisher waits
//! (`RetryUntilDelivered`) when the subscriber's buffer is full, so no
//! item is lost, as with a `Queue`.
//!
//! iceoryx2 keeps files under a root folder and segments in `/dev/shm`.
//! Each contender uses its own root (`/tmp/multiproc-bench-iox2-<tag>/`)
//! and file prefix (`mpb<tag>_`), removed when the contender ends; those
//! of a bench killed earlier (its pid gone) are swept when the next one
//! starts. Linux only, and only with `--features iceoryx2-peer` (its build
//! needs libclang, so `cargo test` must not pull it in); otherwise the
//! rows read `n/a`.

use super::Contender;

/// The peer's name in the table.
pub(crate) const NAME: &str = "iceoryx2 0.10 publish-subscribe";

/// The pipe row's peer: `n` round trips of one `u64` an iteration.
pub(crate) fn pipe_peer(n: u64) -> Contender {
    imp::pipe_peer(n).per_iteration(2 * n)
}

/// The queue row's peer: `m` `u64` from the child an iteration.
pub(crate) fn queue_peer(m: u64) -> Contender {
    imp::queue_peer(m).per_iteration(m)
}

#[cfg(not(all(target_os = "linux", feature = "iceoryx2-peer")))]
mod imp {
    use super::{Contender, NAME};

    pub(super) fn pipe_peer(_n: u64) -> Contender {
        Contender::unavailable(
            NAME,
            "run with --features iceoryx2-peer (Linux) for this peer".into(),
        )
    }

    pub(super) fn queue_peer(_m: u64) -> Contender {
        Contender::unavailable(
            NAME,
            "run with --features iceoryx2-peer (Linux) for this peer".into(),
        )
    }
}

#[cfg(all(target_os = "linux", feature = "iceoryx2-peer"))]
mod imp {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    use iceoryx2::port::publisher::Publisher;
    use iceoryx2::port::subscriber::Subscriber;
    use iceoryx2::prelude::*;

    use super::{Contender, NAME};

    /// Sent by the child once its ports exist.
    const READY: u64 = u64::MAX - 1;
    /// Ends the child.
    const STOP: u64 = u64::MAX;
    /// Items the queue's subscriber buffers before the publisher waits.
    const QUEUE_BUFFER: usize = 4096;
    /// Longest wait for any one message.
    const PATIENCE: Duration = Duration::from_secs(10);

    type Pub = Publisher<ipc::Service, u64, ()>;
    type Sub = Subscriber<ipc::Service, u64, ()>;

    const ROOT_PREFIX: &str = "/tmp/multiproc-bench-iox2-";
    const SHM_PREFIX: &str = "mpb";

    /// A tag no other contender of any running bench has: pid and serial.
    fn new_tag() -> String {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        format!(
            "{}x{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// iceoryx2's configuration for `tag`: its own root and prefix.
    fn config(tag: &str) -> Result<Config, String> {
        let mut c = Config::default();
        c.global.prefix = FileName::try_from(format!("{SHM_PREFIX}{tag}_").as_str())
            .map_err(|e| format!("prefix: {e:?}"))?;
        let root = Path::try_from(format!("{ROOT_PREFIX}{tag}/").as_str())
            .map_err(|e| format!("root path: {e:?}"))?;
        c.global.set_root_path(&root);
        Ok(c)
    }

    fn node(tag: &str) -> Result<Node<ipc::Service>, String> {
        set_log_level(LogLevel::Error);
        NodeBuilder::new()
            .config(&config(tag)?)
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .map_err(|e| format!("iceoryx2 node: {e:?}"))
    }

    fn service_name(what: &str) -> Result<ServiceName, String> {
        ServiceName::new(&format!("multiproc-bench/{what}")).map_err(|e| format!("{e:?}"))
    }

    type Factory =
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, u64, ()>;

    /// Creates (`create`) or opens the `u64` service `what`.
    fn service(
        node: &Node<ipc::Service>,
        what: &str,
        buffer: usize,
        create: bool,
    ) -> Result<Factory, String> {
        let b = node
            .service_builder(&service_name(what)?)
            .publish_subscribe::<u64>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .enable_safe_overflow(false)
            .subscriber_max_buffer_size(buffer);
        if create {
            b.create()
                .map_err(|e| format!("iceoryx2 service {what}: {e:?}"))
        } else {
            b.open()
                .map_err(|e| format!("iceoryx2 service {what}: {e:?}"))
        }
    }

    fn publisher(f: &Factory) -> Result<Pub, String> {
        f.publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| format!("iceoryx2 publisher: {e:?}"))
    }

    fn subscriber(f: &Factory) -> Result<Sub, String> {
        f.subscriber_builder()
            .create()
            .map_err(|e| format!("iceoryx2 subscriber: {e:?}"))
    }

    fn send(p: &Pub, v: u64) -> Result<(), String> {
        p.send_copy(v)
            .map(drop)
            .map_err(|e| format!("iceoryx2 send: {e:?}"))
    }

    /// The next value, polling; an error after [`PATIENCE`].
    fn recv_spin(s: &Sub) -> Result<u64, String> {
        let mut spins = 0u32;
        let mut t0 = None;
        loop {
            if let Some(sample) = s
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                return Ok(*sample);
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                let t0 = *t0.get_or_insert_with(Instant::now);
                if t0.elapsed() > PATIENCE {
                    return Err("iceoryx2: no message within 10 s".into());
                }
            }
        }
    }

    /// The next value in the child: polls for 50 µs, then checks every
    /// millisecond, so an idle child costs nothing while other rows run.
    fn recv_idle(s: &Sub) -> Result<u64, String> {
        let mut idle = Instant::now();
        loop {
            if let Some(sample) = s
                .receive()
                .map_err(|e| format!("iceoryx2 receive: {e:?}"))?
            {
                return Ok(*sample);
            }
            std::hint::spin_loop();
            if idle.elapsed() > Duration::from_micros(50) {
                std::thread::sleep(Duration::from_millis(1));
                idle = Instant::now();
            }
        }
    }

    /// Child of the pipe row: echoes every `u64` on `ping` back on `pong`.
    pub(crate) fn iox_echo(tag: String) -> Result<(), String> {
        let node = node(&tag)?;
        let ping = service(&node, "ping", 2, false)?;
        let pong = service(&node, "pong", 2, false)?;
        let rx = subscriber(&ping)?;
        let tx = publisher(&pong)?;
        send(&tx, READY)?;
        loop {
            match recv_idle(&rx)? {
                STOP => return Ok(()),
                v => send(&tx, v)?,
            }
        }
    }

    /// Child of the queue row: for each count on `cmd`, publishes that many
    /// `u64` (0, 1, ...) on `items`; `STOP` ends it.
    pub(crate) fn iox_produce(tag: String) -> Result<(), String> {
        let node = node(&tag)?;
        let items = service(&node, "items", QUEUE_BUFFER, false)?;
        let cmd = service(&node, "cmd", 2, false)?;
        let rx = subscriber(&cmd)?;
        let tx = publisher(&items)?;
        send(&tx, READY)?;
        loop {
            match recv_idle(&rx)? {
                STOP => return Ok(()),
                n => {
                    for i in 0..n {
                        send(&tx, i)?;
                    }
                }
            }
        }
    }

    /// The parent's side: its node, ports and child. Dropping it stops
    /// the child and removes what iceoryx2 made for this tag.
    struct Peer {
        tag: String,
        tx: Option<Pub>,
        rx: Option<Sub>,
        services: Vec<Factory>,
        node: Option<Node<ipc::Service>>,
        child: Option<multiproc::Process<Result<(), String>>>,
    }

    impl Peer {
        /// Creates the services `to_child` (buffer 2) and `from_child`
        /// (`buffer`), starts `child`, and waits for its `READY`.
        fn start<F>(
            to_child: &str,
            from_child: &str,
            buffer: usize,
            child: F,
        ) -> Result<Peer, String>
        where
            F: Fn(String) -> Result<(), String> + 'static,
        {
            sweep_stale();
            let tag = new_tag();
            let mut peer = Peer {
                tag: tag.clone(),
                tx: None,
                rx: None,
                services: Vec::new(),
                node: None,
                child: None,
            };
            let node = peer.node.insert(node(&tag)?);
            let out = service(node, to_child, 2, true)?;
            let back = service(node, from_child, buffer, true)?;
            peer.tx = Some(publisher(&out)?);
            peer.rx = Some(subscriber(&back)?);
            peer.services = vec![out, back];
            peer.child = Some(
                multiproc::Process::spawn(child, tag)
                    .map_err(|e| format!("starting the iceoryx2 child: {e}"))?,
            );
            match recv_spin(peer.rx())? {
                READY => Ok(peer),
                v => Err(format!("iceoryx2 child greeted with {v}")),
            }
        }

        fn tx(&self) -> &Pub {
            self.tx
                .as_ref()
                .expect("publisher lives as long as the peer")
        }

        fn rx(&self) -> &Sub {
            self.rx
                .as_ref()
                .expect("subscriber lives as long as the peer")
        }

        /// One round trip of `v`, checked.
        fn round_trip(&self, v: u64) -> Result<(), String> {
            send(self.tx(), v)?;
            match recv_spin(self.rx())? {
                got if got == v => Ok(()),
                got => Err(format!("sent {v}, got back {got}")),
            }
        }

        /// Asks for `m` items and takes them, checking their order.
        fn items(&self, m: u64) -> Result<(), String> {
            send(self.tx(), m)?;
            for i in 0..m {
                let v = recv_spin(self.rx())?;
                if v != i {
                    return Err(format!("item {i}: got {v}"));
                }
            }
            Ok(())
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let stopped = self.tx.as_ref().map(|tx| send(tx, STOP));
            if let Some(child) = self.child.take() {
                match (stopped, child.join()) {
                    (Some(Ok(())), Ok(Ok(()))) => {}
                    (stopped, joined) => {
                        eprintln!("iceoryx2 child: stop {stopped:?}, join {joined:?}");
                    }
                }
            }
            // Ports, then services, then the node: iceoryx2 removes a
            // service's files when its last port and factory go.
            self.tx = None;
            self.rx = None;
            self.services.clear();
            self.node = None;
            remove_tag(&self.tag);
        }
    }

    /// Removes the root folder and `/dev/shm` files of `tag`.
    fn remove_tag(tag: &str) {
        let _ = std::fs::remove_dir_all(format!("{ROOT_PREFIX}{tag}"));
        let prefix = format!("{SHM_PREFIX}{tag}_");
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Removes what benches killed before their clean-up left: tags whose
    /// pid is no longer running.
    fn sweep_stale() {
        let dead = |tag: &str| {
            tag.split_once('x')
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        };
        let mut tags = Vec::new();
        let root_name = ROOT_PREFIX.rsplit('/').next().unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir("/tmp") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(tag) = name.strip_prefix(root_name) {
                    tags.push(tag.to_string());
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some((tag, _)) = name
                    .strip_prefix(SHM_PREFIX)
                    .and_then(|rest| rest.split_once('_'))
                {
                    tags.push(tag.to_string());
                }
            }
        }
        tags.sort();
        tags.dedup();
        for tag in tags.iter().filter(|t| dead(t)) {
            remove_tag(tag);
        }
    }

    pub(super) fn pipe_peer(n: u64) -> Contender {
        match Peer::start("ping", "pong", 2, iox_echo) {
            Ok(peer) => Contender {
                name: NAME.to_string(),
                ops: 1,
                run: Box::new(move || {
                    // One untimed round trip wakes the child.
                    peer.round_trip(0)?;
                    let t0 = Instant::now();
                    for i in 1..=n {
                        peer.round_trip(i)?;
                    }
                    Ok(t0.elapsed())
                }),
            },
            Err(e) => Contender::unavailable(NAME, e),
        }
    }

    pub(super) fn queue_peer(m: u64) -> Contender {
        match Peer::start("cmd", "items", QUEUE_BUFFER, iox_produce) {
            Ok(peer) => Contender::try_timed(NAME, move || peer.items(m)),
            Err(e) => Contender::unavailable(NAME, e),
        }
    }
}
