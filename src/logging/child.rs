//! The worker's side: a `tracing` subscriber and a `log` logger that
//! write each record into the log ring the parent offered, and never wait.
//!
//! A record is encoded on the calling thread (into a thread-local buffer)
//! and pushed with one `try_push`: if the ring is full (the parent's log
//! thread is behind), the record is counted in the segment's `dropped`
//! word instead and the caller goes on. Nothing is buffered in the
//! worker, so nothing needs flushing: a record is in shared memory when
//! the call that emitted it returns, and survives the worker's `exit`,
//! a panic, a crash or a kill.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_core::subscriber::Interest;

use super::parent::Offer;
use super::record::{
    filter_of, layout, level_code, Counters, Record, Val, KIND_RECORD, MAX_FIELDS,
};
use crate::ring::Producer;
use crate::segment::{Segment, Typed};

/// The worker's end of its log ring, shared by the subscriber and the
/// logger.
struct Sink {
    out: Mutex<Producer>,
    counters: Typed<Counters>,
    max_payload: usize,
}

thread_local! {
    /// Encoding buffer, reused by each thread's records.
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Sink {
    /// Encodes `rec` and writes it if the ring has room; else counts it.
    fn send(&self, rec: &Record<'_>) {
        // A `Debug` impl that logs while its own record is encoded finds
        // the buffer taken (and a thread being torn down finds none): a
        // fresh one then.
        let sent = BUF.try_with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => self.encode_and_push(rec, &mut buf),
            Err(_) => self.encode_and_push(rec, &mut Vec::new()),
        });
        if sent.is_err() {
            self.encode_and_push(rec, &mut Vec::new());
        }
    }

    fn encode_and_push(&self, rec: &Record<'_>, buf: &mut Vec<u8>) {
        buf.clear();
        let mut encoded = postcard::to_io(rec, &mut *buf).is_ok() && buf.len() <= self.max_payload;
        if !encoded {
            buf.clear();
            encoded = postcard::to_io(&truncated(rec, self.max_payload / 2), &mut *buf).is_ok()
                && buf.len() <= self.max_payload;
        }
        let pushed = encoded && {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            // The parent polls the ring; it never parks on it, so there is
            // nobody to wake.
            matches!(out.try_push_quiet(KIND_RECORD, buf), Ok(true))
        };
        if !pushed {
            // SYNC: Relaxed: a count only this process writes; the parent
            // reads it after draining, and its final read comes after the
            // worker's exit.
            self.counters.get().dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A record too large for one frame: its message cut to `keep` bytes, its
/// other fields left out.
fn truncated<'a>(rec: &'a Record<'_>, keep: usize) -> Record<'a> {
    let message = rec
        .fields
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, v)| match v {
            Val::Str(s) | Val::Text(s) => s.as_ref(),
            _ => "",
        })
        .unwrap_or("");
    let mut end = message.len().min(keep);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Record {
        level: rec.level,
        target: Cow::Borrowed(&rec.target),
        name: Cow::Borrowed(&rec.name),
        module: rec.module.as_deref().map(Cow::Borrowed),
        file: rec.file.as_deref().map(Cow::Borrowed),
        line: rec.line,
        fields: vec![(
            Cow::Borrowed("message"),
            Val::Text(Cow::Owned(format!(
                "{}… (record of over {} bytes truncated)",
                &message[..end],
                keep
            ))),
        )],
    }
}

/// Installs the forwarding `tracing` subscriber and `log` logger offered
/// by the parent, each only if the program has not set its own (its own
/// stays: see README, "Logging"). Called by the worker before its task.
pub(crate) fn install(offer: Offer) {
    let Some(link) = offer.0 else {
        return;
    };
    let max = filter_of(link.max_level);
    let sink = match Segment::open(&link.segment)
        .map(Arc::new)
        .and_then(|segment| layout(&segment, false))
        .and_then(|(counters, ring)| Ok((counters, ring.producer()?, ring.max_payload())))
    {
        Ok((counters, out, max_payload)) => Arc::new(Sink {
            out: Mutex::new(out),
            counters,
            max_payload,
        }),
        Err(e) => {
            eprintln!(
                "multiproc: worker {}: log forwarding off: {e}",
                std::process::id()
            );
            return;
        }
    };
    let _ = tracing::subscriber::set_global_default(Forwarder {
        sink: Arc::clone(&sink),
        max,
        next_span: AtomicU64::new(1),
    });
    if log::set_boxed_logger(Box::new(LogForwarder { sink, max })).is_ok() {
        log::set_max_level(log_filter(max));
    }
}

/// The worker's global `tracing` subscriber: events at or above the
/// parent's level go to the ring. Spans are not forwarded (they are
/// disabled, so `span!` costs nothing here).
struct Forwarder {
    sink: Arc<Sink>,
    max: LevelFilter,
    next_span: AtomicU64,
}

impl Subscriber for Forwarder {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called for a disabled span; an id all the same.
        // SYNC: Relaxed: only uniqueness matters.
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.sink.send(&Record {
            level: level_code(*meta.level()),
            target: Cow::Borrowed(meta.target()),
            name: Cow::Borrowed(meta.name()),
            module: meta.module_path().map(Cow::Borrowed),
            file: meta.file().map(Cow::Borrowed),
            line: meta.line(),
            fields: fields.0,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Collects an event's fields as [`Val`]s, at most [`MAX_FIELDS`].
struct Fields(Vec<(Cow<'static, str>, Val<'static>)>);

impl Fields {
    fn push(&mut self, field: &Field, value: Val<'static>) {
        if self.0.len() < MAX_FIELDS {
            self.0.push((Cow::Borrowed(field.name()), value));
        } else if self.0.len() == MAX_FIELDS {
            self.0.push((
                Cow::Borrowed("multiproc.fields_dropped"),
                Val::Str(Cow::Borrowed("an event of more fields than forwarded")),
            ));
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Val::F64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Val::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Val::U64(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, Val::I128(value));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, Val::U128(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Val::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Val::Str(Cow::Owned(value.to_string())));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Val::Text(Cow::Owned(value.to_string())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, Val::Text(Cow::Owned(format!("{value:?}"))));
    }
}

/// The worker's `log` logger: records of crates that use the `log` facade
/// cross like `tracing` events, their message as the `message` field.
struct LogForwarder {
    sink: Arc<Sink>,
    max: LevelFilter,
}

impl log::Log for LogForwarder {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        tracing_level(meta.level()) <= self.max
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = match record.args().as_str() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(record.args().to_string()),
        };
        self.sink.send(&Record {
            level: level_code(tracing_level(record.level())),
            target: Cow::Borrowed(record.target()),
            name: Cow::Borrowed("log record"),
            module: record.module_path().map(Cow::Borrowed),
            file: record.file().map(Cow::Borrowed),
            line: record.line(),
            fields: vec![(Cow::Borrowed("message"), Val::Text(message))],
        });
    }

    fn flush(&self) {}
}

fn tracing_level(level: log::Level) -> Level {
    match level {
        log::Level::Error => Level::ERROR,
        log::Level::Warn => Level::WARN,
        log::Level::Info => Level::INFO,
        log::Level::Debug => Level::DEBUG,
        log::Level::Trace => Level::TRACE,
    }
}

fn log_filter(max: LevelFilter) -> log::LevelFilter {
    match max.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(_) => log::LevelFilter::Trace,
    }
}
