//! Logging (feature `tracing`): workers' `tracing` events and `log`
//! records reach the parent's subscriber tagged with the worker's pid and
//! name, and the crate's own lifecycle events (target `multiproc`) say
//! what happened to its processes.
//!
//! One collecting subscriber is the global default of this test binary;
//! tests run in parallel, so each looks only at the events of its own
//! children (by `worker_pid` / `pid`). Delivery is asynchronous: every
//! check waits, up to a deadline, for what it expects.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use multiproc::{Pool, Process};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

multiproc::test_support!();

mod common;
use common::{wait_for, watchdog};

/// Limit for each scenario (it could hang if a failure went unnoticed).
const LIMIT: Duration = Duration::from_secs(120);
/// How long a check waits for events delivered in the background.
const DELIVERY: Duration = Duration::from_secs(60);

/// One event as the collector saw it.
#[derive(Clone, Debug)]
struct Seen {
    level: Level,
    target: String,
    fields: HashMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn message(&self) -> &str {
        self.field("message").unwrap_or("")
    }

    /// Forwarded from worker `pid`.
    fn forwarded_by(&self, pid: u32) -> bool {
        self.field("worker_pid") == Some(pid.to_string().as_str())
    }

    /// A lifecycle event about process `pid`.
    fn about(&self, pid: u32) -> bool {
        self.target == "multiproc" && self.field("pid") == Some(pid.to_string().as_str())
    }
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

struct Collector {
    next_span: AtomicU64,
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(HashMap::new());
        event.record(&mut fields);
        let meta = event.metadata();
        SEEN.lock().unwrap().push(Seen {
            level: *meta.level(),
            target: meta.target().to_string(),
            fields: fields.0,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// Installs the collector (once per binary) before a test starts anything:
/// children forward only to a parent that has a subscriber.
fn collect() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing::subscriber::set_global_default(Collector {
            next_span: AtomicU64::new(1),
        })
        .expect("the collector is this binary's only subscriber");
    });
}

/// The events seen so far that `keep` selects.
fn seen(keep: impl Fn(&Seen) -> bool) -> Vec<Seen> {
    SEEN.lock()
        .unwrap()
        .iter()
        .filter(|e| keep(e))
        .cloned()
        .collect()
}

/// Waits until the events `keep` selects satisfy `done`; panics with them
/// (and `what`) at the deadline.
fn wait_events(
    what: &str,
    keep: impl Fn(&Seen) -> bool,
    done: impl Fn(&[Seen]) -> bool,
) -> Vec<Seen> {
    wait_for(DELIVERY, || seen(&keep), |v| done(v)).unwrap_or_else(|v| {
        let shown: Vec<_> = v.iter().take(20).collect();
        panic!(
            "{what}: not delivered within {DELIVERY:?}; {} matching events, first: {shown:#?}",
            v.len()
        )
    })
}

// ---------------------------------------------------------------- children

fn say_hello(n: u64) -> u32 {
    tracing::info!(target: "child_app", answer = n, who = "child", "hello from the child");
    tracing::debug!(target: "child_app", "a detail");
    std::process::id()
}

fn log_facade(n: u64) {
    log::warn!(target: "legacy", "a log record {n}");
}

fn pool_item(x: u64) -> u64 {
    tracing::info!(item = x, "pool item");
    x * 10
}

fn burst(n: u64) -> u64 {
    for i in 0..n {
        tracing::info!(i, "burst");
    }
    n
}

fn last_words(n: u64) {
    for i in 0..n {
        tracing::warn!(i, "last words");
    }
}

fn last_words_then_exit(n: u64) {
    last_words(n);
    // No return, no result: what was logged must still arrive.
    std::process::exit(3);
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[cfg(unix)]
fn my_pid(_: u64) -> u32 {
    std::process::id()
}

// ------------------------------------------------------------------- tests

#[test]
fn a_child_process_event_arrives_with_the_child_pid_and_name() {
    collect();
    watchdog(LIMIT, || {
        let p = Process::builder()
            .name("logger-1")
            .spawn(say_hello, 42)
            .unwrap();
        let pid = p.pid();
        assert_eq!(p.join().unwrap(), pid);
        let events = wait_events(
            "the child's two events",
            |e| e.forwarded_by(pid),
            |v| v.len() >= 2,
        );
        let hello = events
            .iter()
            .find(|e| e.message() == "hello from the child")
            .expect("the info event");
        assert_eq!(hello.level, Level::INFO);
        assert_eq!(hello.target, "child_app");
        assert_eq!(hello.field("worker_name"), Some("logger-1"));
        assert_eq!(hello.field("answer"), Some("42"));
        assert_eq!(hello.field("who"), Some("child"));
        let detail = events
            .iter()
            .find(|e| e.message() == "a detail")
            .expect("the debug event");
        assert_eq!(detail.level, Level::DEBUG);
        // The parent's own view of the child's life.
        wait_events(
            "the child's start and exit",
            |e| e.about(pid),
            |v| {
                v.iter().any(|e| e.message() == "process started")
                    && v.iter().any(|e| e.message() == "process exited")
            },
        );
    });
}

#[test]
fn a_child_log_record_arrives_like_an_event() {
    collect();
    watchdog(LIMIT, || {
        let p = Process::spawn(log_facade, 7).unwrap();
        let pid = p.pid();
        let name = p.name().to_string();
        p.join().unwrap();
        let events = wait_events("the log record", |e| e.forwarded_by(pid), |v| !v.is_empty());
        assert_eq!(events[0].level, Level::WARN);
        assert_eq!(events[0].target, "legacy");
        assert_eq!(events[0].message(), "a log record 7");
        assert_eq!(events[0].field("worker_name"), Some(name.as_str()));
    });
}

#[test]
fn pool_worker_events_arrive_tagged_with_the_worker() {
    collect();
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let pids = pool.pids();
        let out: Vec<u64> = pool.map(pool_item, 0..8).unwrap();
        assert_eq!(out, (0..8).map(|x| x * 10).collect::<Vec<_>>());
        let events = wait_events(
            "one event per item",
            |e| e.message() == "pool item" && pids.iter().any(|p| e.forwarded_by(*p)),
            |v| v.len() >= 8,
        );
        let mut items: Vec<u64> = events
            .iter()
            .map(|e| e.field("item").unwrap().parse().unwrap())
            .collect();
        items.sort_unstable();
        assert_eq!(items, (0..8).collect::<Vec<_>>());
        for e in &events {
            let name = e.field("worker_name").unwrap();
            assert!(name.starts_with("PoolWorker-"), "{e:?}");
        }
        pool.close();
        pool.join().unwrap();
    });
}

#[test]
fn a_killed_process_reports_the_kill_and_its_end() {
    collect();
    watchdog(LIMIT, || {
        let p = Process::spawn(nap, 60_000).unwrap();
        let pid = p.pid();
        p.kill().unwrap();
        assert!(p.join().unwrap_err().is_process_died());
        wait_events(
            "the kill and the end",
            |e| e.about(pid),
            |v| {
                v.iter().any(|e| e.message() == "killing process")
                    && v.iter()
                        .any(|e| e.message() == "process ended after terminate/kill")
            },
        );
    });
}

#[cfg(unix)]
#[test]
fn a_sigkilled_pool_worker_is_reported_dead_and_replaced() {
    collect();
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let victim = pool.apply(my_pid, 0).unwrap();
        // SAFETY: a plain syscall on a pid this test's pool owns.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(victim as i32, libc::SIGKILL) };
        assert_eq!(rc, 0);
        // Calls fail while the death is found, then reach the replacement.
        let replacement = wait_for(
            DELIVERY,
            || pool.apply(my_pid, 0),
            |r| matches!(r, Ok(pid) if *pid != victim),
        )
        .expect("a call reaches the replacement worker")
        .unwrap();
        let events = wait_events(
            "the death and the replacement",
            |e| e.target == "multiproc" && (e.about(victim) || e.about(replacement)),
            |v| {
                v.iter().any(|e| e.message() == "pool worker died")
                    && v.iter().any(|e| e.message() == "pool worker replaced")
            },
        );
        let died = events
            .iter()
            .find(|e| e.message() == "pool worker died")
            .unwrap();
        assert_eq!(died.level, Level::WARN);
        assert_eq!(died.field("pid"), Some(victim.to_string().as_str()));
        assert!(
            died.field("status").unwrap().contains("signal 9"),
            "{died:?}"
        );
        let replaced = events
            .iter()
            .find(|e| e.message() == "pool worker replaced")
            .unwrap();
        assert_eq!(
            replaced.field("pid"),
            Some(replacement.to_string().as_str())
        );
        assert_eq!(replaced.field("reason"), Some("crash"));
    });
}

#[test]
fn a_burst_of_events_never_blocks_the_child_and_every_record_is_accounted_for() {
    collect();
    const N: u64 = 100_000;
    watchdog(LIMIT, || {
        let p = Process::spawn(burst, N).unwrap();
        let pid = p.pid();
        // The child returns whatever the parent's pace: records that do
        // not fit are counted, never waited for.
        assert_eq!(p.join().unwrap(), N);
        let accounted = |v: &[Seen]| -> (u64, u64) {
            let delivered = v.iter().filter(|e| e.message() == "burst").count() as u64;
            let dropped = v
                .iter()
                .filter_map(|e| e.field("dropped"))
                .map(|d| d.parse::<u64>().unwrap())
                .sum::<u64>();
            (delivered, dropped)
        };
        let events = wait_events(
            "delivered + dropped = sent",
            |e| e.forwarded_by(pid),
            |v| {
                let (delivered, dropped) = accounted(v);
                delivered + dropped == N
            },
        );
        let (delivered, dropped) = accounted(&events);
        assert!(delivered > 0, "nothing delivered, {dropped} dropped");
        eprintln!("burst: {delivered} delivered, {dropped} dropped");
        // Delivered in order: a ring per child, one reader.
        let order: Vec<u64> = events
            .iter()
            .filter(|e| e.message() == "burst")
            .map(|e| e.field("i").unwrap().parse().unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    });
}

#[test]
fn events_right_before_exit_are_delivered() {
    collect();
    const N: u64 = 50;
    watchdog(LIMIT, || {
        // Returning: the last record is written just before the result.
        let p = Process::spawn(last_words, N).unwrap();
        let pid = p.pid();
        p.join().unwrap();
        wait_events(
            "every record of a child that returned",
            |e| e.forwarded_by(pid) && e.message() == "last words",
            |v| v.len() as u64 == N,
        );
        // `exit()` right after logging: no result, no flush, still there.
        let p = Process::spawn(last_words_then_exit, N).unwrap();
        let pid = p.pid();
        let err = p.join().unwrap_err();
        assert!(err.is_process_died(), "{err}");
        wait_events(
            "every record of a child that called exit()",
            |e| e.forwarded_by(pid) && e.message() == "last words",
            |v| v.len() as u64 == N,
        );
    });
}
