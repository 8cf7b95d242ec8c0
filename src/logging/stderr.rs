//! [`log_to_stderr`]: a plain subscriber that prints one line per event
//! on stderr, in Python's format, for programs that have none of their own.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Prints every event at or above `level` on stderr, one line each, if
/// this program has no `tracing` subscriber yet; returns whether it
/// installed one. Call it before starting processes: workers forward their
/// records only to a parent that had a subscriber when they started.
///
/// A line reads `[LEVEL/process] target: message field=value …`, where
/// *process* is the name of the process the event comes from
/// (`MainProcess`, `Process-1`, `PoolWorker-2`): a worker's records are
/// delivered to this process and printed here, with the worker's name
/// (and its pid in `worker_pid`). This crate's own events (target
/// [`LOG_TARGET`](crate::LOG_TARGET)) say when processes start and end.
///
/// For anything more (filters per target, JSON, files, spans), install a
/// subscriber of your own instead, e.g. `tracing_subscriber::fmt::init()`:
/// workers' records reach it the same way.
///
/// Python counterpart: `multiprocessing.log_to_stderr(level)`, which adds
/// a stderr handler with the format `[%(levelname)s/%(processName)s]
/// %(message)s` to the module's logger. Here it covers workers' records
/// too (Python's does not: each child logs to its own stderr).
///
/// ```
/// fn work(n: u32) -> u32 {
///     tracing::info!(n, "working");
///     n * 2
/// }
///
/// fn main() {
///     multiproc::init();
///     multiproc::log_to_stderr(tracing::Level::INFO);
///     // stderr: [INFO/Process-1] rust_out: working n=21 worker_pid=…
///     let p = multiproc::Process::spawn(work, 21).unwrap();
///     assert_eq!(p.join().unwrap(), 42);
/// }
/// ```
pub fn log_to_stderr(level: impl Into<LevelFilter>) -> bool {
    tracing::subscriber::set_global_default(Stderr {
        max: level.into(),
        next_span: AtomicU64::new(1),
    })
    .is_ok()
}

struct Stderr {
    max: LevelFilter,
    next_span: AtomicU64,
}

impl Subscriber for Stderr {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // SYNC: Relaxed: only uniqueness matters.
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        let process = match line.worker.take() {
            Some(name) => name,
            None => crate::current_process().name().to_string(),
        };
        let text = format!(
            "[{}/{}] {}: {}{}\n",
            meta.level(),
            process,
            meta.target(),
            line.message,
            line.rest
        );
        // One write per line, so that lines of several threads do not mix.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's fields as one line's parts.
#[derive(Default)]
struct Line {
    message: String,
    rest: String,
    /// `worker_name`, which names the process in the prefix.
    worker: Option<String>,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "worker_name" {
            self.worker = Some(value.to_string());
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}
