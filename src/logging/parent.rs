//! The parent's side: one log ring per child that forwards, drained by one
//! thread (`multiproc-log`) that re-emits each record into this process's
//! `tracing` dispatcher, tagged `worker_pid` and `worker_name`.
//!
//! * The thread polls: it drains every ring, then sleeps 1 ms, doubling
//!   up to [`LIVENESS_PERIOD`] while nothing comes (a ring has no way to
//!   wake one reader for many rings, and a doorbell would cost the worker
//!   a fence per record). It sleeps without a timeout when no child
//!   forwards.
//! * A child's end ([`ChildLog::exited`], from the first look that saw it
//!   exit) wakes it: it drains that ring to the end (a dead child writes
//!   no more, so everything it logged is there), reports what the child
//!   dropped, and forgets the ring. [`ChildLog::flush`] waits for that,
//!   bounded, so `join` returns after the child's last records.
//! * A record is re-emitted at a callsite made for its (level, target,
//!   name, module, file, line, field names), leaked once and registered
//!   with `tracing`: filters by target and level, and `register_callsite`
//!   caching, work as for the parent's own events. A child's callsites
//!   are finite (its binary is this one), but a peer's bytes are not
//!   trusted: past [`MAX_SITES`] callsites or [`MAX_SITE_BYTES`] of names,
//!   records go to one fallback callsite per level (target
//!   `multiproc::worker`, the original target in `worker_target`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::field::{display, DisplayValue, Field, Value};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Metadata};
use tracing_core::callsite::Callsite;
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;
use tracing_core::subscriber::Interest;

use super::record::{
    filter_code, layout, level_of, segment_len, Counters, Record, Val, KIND_RECORD, MAX_FIELDS,
};
use crate::error::{ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::ring::Consumer;
use crate::segment::{Segment, SegmentHandle, Typed};
use crate::wait::LIVENESS_PERIOD;

/// How long `join` waits for the log thread to deliver a child's last
/// records (it takes microseconds unless the subscriber is slow).
const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Frames taken from one ring per pass while its child runs, so that one
/// chatty child does not hold up the others.
const BUDGET: usize = 4096;
/// Frames taken from the ring of a child that exited: everything (a dead
/// child writes no more); the bound only stops a child that is, against
/// all expectation, still writing.
const FINAL_BUDGET: usize = 1 << 16;
const MIN_NAP: Duration = Duration::from_millis(1);
/// Callsites made for workers' records, and bytes of names they hold.
const MAX_SITES: usize = 4096;
const MAX_SITE_BYTES: usize = 4 << 20;
/// Field slots of a re-emitted event: the record's, a note that some were
/// dropped, and the two tags.
const SLOTS: usize = 32;
const _: () = assert!(MAX_FIELDS + 3 <= SLOTS);

/// Forwarding offered to a child in its `Config`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Offer(pub(super) Option<Link>);

/// Where a child writes its records, and the most verbose level the
/// parent's subscriber can want (a [`filter_code`]).
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Link {
    pub(super) segment: SegmentHandle,
    pub(super) max_level: u8,
}

/// A start's forwarding, made before the child exists.
pub(crate) struct Pending(Option<Prepared>);

struct Prepared {
    handle: SegmentHandle,
    max_level: u8,
    consumer: Consumer,
    counters: Typed<Counters>,
}

/// A forwarding ring for the next child, if this process has a subscriber
/// that wants anything (else nothing is made, and the child installs
/// nothing: forwarding into no subscriber would be wasted work).
///
/// The level is read now: a subscriber installed, or made more verbose,
/// after a child started does not change what that child sends.
pub(crate) fn prepare() -> Result<Pending> {
    let max = LevelFilter::current();
    if max == LevelFilter::OFF {
        return Ok(Pending(None));
    }
    let segment = Arc::new(Segment::create(segment_len())?);
    let (counters, ring) = layout(&segment, true)?;
    Ok(Pending(Some(Prepared {
        handle: segment.handle(),
        max_level: filter_code(max),
        consumer: ring.consumer()?,
        counters,
    })))
}

impl Pending {
    /// What the child is told (its `Config`).
    pub(crate) fn offer(&self) -> Offer {
        Offer(self.0.as_ref().map(|p| Link {
            segment: p.handle.clone(),
            max_level: p.max_level,
        }))
    }

    /// Hands the ring of child `pid`, called `name`, to the log thread.
    pub(crate) fn register(self, pid: u32, name: &str) -> ChildLog {
        let Some(p) = self.0 else {
            return ChildLog(None);
        };
        let tap = Arc::new(Tap {
            pid,
            name: name.to_string(),
            exited: AtomicBool::new(false),
            exit: Mutex::new(None),
            done: AtomicBool::new(false),
            counters: p.counters,
            state: Mutex::new(TapState {
                consumer: p.consumer,
                buf: Vec::new(),
                reported: 0,
                broken: false,
            }),
        });
        let hub = hub();
        if !hub.running {
            return ChildLog(None);
        }
        hub.lock().push(Arc::clone(&tap));
        hub.wake.notify_all();
        ChildLog(Some(tap))
    }
}

/// The parent's hold on one child's forwarding; it ends the forwarding
/// when dropped (with the child's `Process`, after the child was reaped).
pub(crate) struct ChildLog(Option<Arc<Tap>>);

impl ChildLog {
    /// Child `pid`, called `name`, has exited with `status` (after a
    /// terminate or kill if `by_user`). With a ring, the log thread drains
    /// it to the end, then says how the child ended (so that line comes
    /// after the child's own); without one, that is said now.
    pub(crate) fn exited(&self, pid: u32, name: &str, status: ExitStatus, by_user: bool) {
        match &self.0 {
            Some(tap) => {
                *tap.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some((status, by_user));
                self.finish();
            }
            None => super::report_exit(pid, name, status, by_user),
        }
    }

    /// Lets the log thread drain the ring to the end and forget it.
    fn finish(&self) {
        if let Some(tap) = &self.0 {
            // SYNC: Release pairs with the Acquire load in `run`; the
            // child's records themselves are ordered by the ring.
            tap.exited.store(true, Ordering::Release);
            let hub = hub();
            // Taken and dropped so that the thread, which checks the flag
            // under this lock before it sleeps, cannot miss the wake-up.
            drop(hub.lock());
            hub.wake.notify_all();
        }
    }

    /// Waits (at most [`FLUSH_LIMIT`]) until the log thread has delivered
    /// every record of this child, which must have exited.
    pub(crate) fn flush(&self) {
        let Some(tap) = &self.0 else {
            return;
        };
        self.finish();
        let hub = hub();
        let deadline = Instant::now() + FLUSH_LIMIT;
        let mut list = hub.lock();
        // SYNC: Acquire pairs with the Release store in `run`.
        while !tap.done.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            list = hub
                .done
                .wait_timeout(list, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for ChildLog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One child's ring, as the log thread sees it.
struct Tap {
    pid: u32,
    name: String,
    exited: AtomicBool,
    /// How the child ended, said once its ring is drained.
    exit: Mutex<Option<(ExitStatus, bool)>>,
    /// Set by the log thread once it drained the ring of an exited child.
    done: AtomicBool,
    counters: Typed<Counters>,
    state: Mutex<TapState>,
}

struct TapState {
    consumer: Consumer,
    buf: Vec<u8>,
    /// Drops already reported.
    reported: u64,
    /// The ring failed (a corrupt frame): nothing more is read from it.
    broken: bool,
}

impl Tap {
    /// Re-emits up to `budget` records; returns how many frames it took.
    fn drain(&self, sites: &mut Sites, budget: usize) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let TapState {
            consumer,
            buf,
            reported,
            broken,
        } = &mut *st;
        let mut taken = 0;
        while !*broken && taken < budget {
            match consumer.try_peek() {
                Ok(Some(frame)) => {
                    let kind = frame.kind();
                    frame.take_into(buf);
                    taken += 1;
                    match postcard::from_bytes::<Record<'_>>(buf) {
                        Ok(rec) if kind == KIND_RECORD => sites.emit(&rec, self.pid, &self.name),
                        _ => {
                            *broken = true;
                            self.bad("a frame that is not a log record");
                        }
                    }
                }
                Ok(None) => break,
                // The child closed its end and everything is read.
                Err(e) if e.kind() == ErrorKind::Disconnected => break,
                Err(e) => {
                    *broken = true;
                    self.bad(&e.to_string());
                }
            }
        }
        // SYNC: Acquire pairs with nothing in particular: the worker's
        // Relaxed count is a number, read again after its exit.
        let dropped = self.counters.get().dropped.load(Ordering::Acquire);
        if dropped > *reported {
            lifecycle!(
                warn,
                worker_pid = self.pid,
                worker_name = %self.name,
                dropped = dropped - *reported,
                dropped_total = dropped,
                "log records dropped: the worker logged faster than this process's subscriber took them"
            );
            *reported = dropped;
        }
        taken
    }

    fn bad(&self, why: &str) {
        lifecycle!(
            warn,
            worker_pid = self.pid,
            worker_name = %self.name,
            "a worker's log ring is corrupt, its records are no longer read: {why}"
        );
    }
}

/// The log thread's shared state.
struct Hub {
    taps: Mutex<Vec<Arc<Tap>>>,
    /// Wakes the thread: a new ring, a child that exited.
    wake: Condvar,
    /// Wakes `flush`: a child's ring was drained to the end.
    done: Condvar,
    /// The thread could be started.
    running: bool,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Tap>>> {
        self.taps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let hub = HUB.get_or_init(|| Hub {
        taps: Mutex::new(Vec::new()),
        wake: Condvar::new(),
        done: Condvar::new(),
        running: std::thread::Builder::new()
            .name("multiproc-log".into())
            .spawn(|| {
                STARTED.wait();
                run(hub());
            })
            .is_ok(),
    });
    let _ = STARTED.set(());
    hub
}

/// The log thread.
fn run(hub: &'static Hub) {
    let mut sites = Sites::default();
    let mut nap = MIN_NAP;
    loop {
        let taps = {
            let mut list = hub.lock();
            while list.is_empty() {
                list = hub.wake.wait(list).unwrap_or_else(|p| p.into_inner());
            }
            list.clone()
        };
        let mut took = 0;
        let mut finished = Vec::new();
        for tap in &taps {
            // SYNC: Acquire pairs with the Release store in `exited`. Read
            // before the drain: the drain then sees all the child wrote.
            if tap.exited.load(Ordering::Acquire) {
                took += tap.drain(&mut sites, FINAL_BUDGET);
                let exit = tap.exit.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some((status, by_user)) = exit {
                    super::report_exit(tap.pid, &tap.name, status, by_user);
                }
                finished.push(Arc::clone(tap));
            } else {
                took += tap.drain(&mut sites, BUDGET);
            }
        }
        let mut list = hub.lock();
        if !finished.is_empty() {
            list.retain(|t| !finished.iter().any(|f| Arc::ptr_eq(t, f)));
            for tap in &finished {
                // SYNC: Release pairs with the Acquire load in `flush`.
                tap.done.store(true, Ordering::Release);
            }
            hub.done.notify_all();
        }
        // SYNC: Acquire, as above.
        if took > 0 || list.iter().any(|t| t.exited.load(Ordering::Acquire)) {
            nap = MIN_NAP;
            continue;
        }
        if !list.is_empty() {
            drop(
                hub.wake
                    .wait_timeout(list, nap)
                    .unwrap_or_else(|p| p.into_inner()),
            );
            nap = (nap * 2).min(LIVENESS_PERIOD);
        }
    }
}

// ------------------------------------------------------------- callsites

/// A callsite made at run time for records of one shape.
struct Site {
    meta: OnceLock<Metadata<'static>>,
    /// What the dispatchers said in `register_callsite` (0 never,
    /// 1 sometimes, 2 always).
    interest: AtomicU8,
    /// The record carries its own `worker_pid` (it was forwarded by a
    /// worker from its own child): it keeps the innermost tags.
    tagged: bool,
}

impl Callsite for Site {
    fn set_interest(&self, interest: Interest) {
        let v = if interest.is_never() {
            0
        } else if interest.is_always() {
            2
        } else {
            1
        };
        // SYNC: Relaxed: a cache of the dispatchers' answer; `Event::
        // dispatch` asks `enabled` again anyway.
        self.interest.store(v, Ordering::Relaxed);
    }

    fn metadata(&self) -> &Metadata<'_> {
        self.meta
            .get()
            .expect("a site's metadata is set before it is shared")
    }
}

/// A callsite's identity: everything its metadata holds.
struct Shape<'a> {
    level: Level,
    target: &'a str,
    name: &'a str,
    module: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    fields: &'a [(Cow<'a, str>, Val<'a>)],
}

impl Shape<'_> {
    fn hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.level.as_str(),
            self.target,
            self.name,
            self.module,
            self.file,
            self.line,
        )
            .hash(&mut h);
        for (k, _) in self.fields {
            k.hash(&mut h);
        }
        h.finish()
    }

    fn matches(&self, site: &Site) -> bool {
        let m = site.metadata();
        let names = m
            .fields()
            .iter()
            .take(m.fields().len() - if site.tagged { 0 } else { 2 });
        *m.level() == self.level
            && m.target() == self.target
            && m.name() == self.name
            && m.module_path() == self.module
            && m.file() == self.file
            && m.line() == self.line
            && names.map(|f| f.name()).eq(unique_names(self.fields))
    }
}

/// A record's field names, each once, in order.
fn unique_names<'a>(fields: &'a [(Cow<'a, str>, Val<'a>)]) -> impl Iterator<Item = &'a str> {
    let mut seen = Vec::<&str>::new();
    fields.iter().filter_map(move |(k, _)| {
        if seen.contains(&k.as_ref()) {
            None
        } else {
            seen.push(k);
            Some(k.as_ref())
        }
    })
}

/// The log thread's callsites.
#[derive(Default)]
struct Sites {
    by_hash: HashMap<u64, Vec<&'static Site>>,
    strings: HashSet<&'static str>,
    count: usize,
    bytes: usize,
    fallback: [Option<&'static Site>; 5],
}

impl Sites {
    /// Re-emits `rec` of worker `pid` called `name`.
    fn emit(&mut self, rec: &Record<'_>, pid: u32, name: &str) {
        let Some(level) = level_of(rec.level) else {
            return;
        };
        if level > LevelFilter::current() {
            return;
        }
        let shape = Shape {
            level,
            target: &rec.target,
            name: &rec.name,
            module: rec.module.as_deref(),
            file: rec.file.as_deref(),
            line: rec.line,
            fields: &rec.fields,
        };
        match self.site(&shape) {
            Some(site) => dispatch(site, &rec.fields, pid, name),
            None => {
                let site = self.fallback(level);
                let fields = fallback_fields(rec);
                dispatch(site, &fields, pid, name);
            }
        }
    }

    /// The callsite for `shape`, made if new; `None` past the limits.
    fn site(&mut self, shape: &Shape<'_>) -> Option<&'static Site> {
        let hash = shape.hash();
        if let Some(site) = self
            .by_hash
            .get(&hash)
            .and_then(|v| v.iter().find(|s| shape.matches(s)))
        {
            return Some(site);
        }
        let names: Vec<&str> = unique_names(shape.fields).collect();
        let new_bytes: usize = [shape.target, shape.name]
            .into_iter()
            .chain(shape.module)
            .chain(shape.file)
            .chain(names.iter().copied())
            .filter(|s| !self.strings.contains(s))
            .map(str::len)
            .sum();
        if self.count >= MAX_SITES || self.bytes + new_bytes > MAX_SITE_BYTES {
            return None;
        }
        self.count += 1;
        self.bytes += new_bytes;
        let tagged = names.contains(&"worker_pid");
        let mut all: Vec<&'static str> = names.iter().map(|n| self.intern(n)).collect();
        if !tagged {
            all.extend(["worker_pid", "worker_name"]);
        }
        let site = make_site(
            shape.level,
            self.intern(shape.target),
            self.intern(shape.name),
            shape.module.map(|m| self.intern(m)),
            shape.file.map(|f| self.intern(f)),
            shape.line,
            Box::leak(all.into_boxed_slice()),
            tagged,
        );
        self.by_hash.entry(hash).or_default().push(site);
        Some(site)
    }

    fn intern(&mut self, s: &str) -> &'static str {
        if let Some(s) = self.strings.get(s) {
            return s;
        }
        let s: &'static str = Box::leak(s.to_string().into_boxed_str());
        self.strings.insert(s);
        s
    }

    /// The callsite of records past the limits, one per level.
    fn fallback(&mut self, level: Level) -> &'static Site {
        let i = usize::from(super::record::level_code(level) - 1);
        self.fallback[i].get_or_insert_with(|| {
            make_site(
                level,
                "multiproc::worker",
                "forwarded record",
                None,
                None,
                None,
                &["message", "worker_target", "worker_pid", "worker_name"],
                false,
            )
        })
    }
}

/// A record as the fallback callsite's two own fields: its message with
/// the other fields appended as text, and its target.
fn fallback_fields<'a>(rec: &'a Record<'a>) -> Vec<(Cow<'a, str>, Val<'a>)> {
    let mut text = String::new();
    for (k, v) in &rec.fields {
        let value = match v {
            Val::Bool(b) => b.to_string(),
            Val::I64(n) => n.to_string(),
            Val::U64(n) => n.to_string(),
            Val::I128(n) => n.to_string(),
            Val::U128(n) => n.to_string(),
            Val::F64(n) => n.to_string(),
            Val::Str(s) => format!("{s:?}"),
            Val::Text(s) => s.to_string(),
        };
        if !text.is_empty() {
            text.push(' ');
        }
        if k != "message" {
            text.push_str(k);
            text.push('=');
        }
        text.push_str(&value);
    }
    vec![
        (Cow::Borrowed("message"), Val::Text(Cow::Owned(text))),
        (
            Cow::Borrowed("worker_target"),
            Val::Str(Cow::Borrowed(&rec.target)),
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn make_site(
    level: Level,
    target: &'static str,
    name: &'static str,
    module: Option<&'static str>,
    file: Option<&'static str>,
    line: Option<u32>,
    names: &'static [&'static str],
    tagged: bool,
) -> &'static Site {
    let site: &'static Site = Box::leak(Box::new(Site {
        meta: OnceLock::new(),
        interest: AtomicU8::new(1),
        tagged,
    }));
    let fields = FieldSet::new(names, tracing_core::identify_callsite!(site));
    let _ = site.meta.set(Metadata::new(
        name,
        target,
        level,
        file,
        line,
        module,
        fields,
        Kind::EVENT,
    ));
    tracing_core::callsite::register(site);
    site
}

/// A field of the padding callsite: fills the unused slots of a value set
/// (a value set's entries of another callsite are skipped).
fn pad() -> &'static Field {
    static PAD: OnceLock<Field> = OnceLock::new();
    PAD.get_or_init(|| {
        let site: &'static Site = Box::leak(Box::new(Site {
            meta: OnceLock::new(),
            interest: AtomicU8::new(0),
            tagged: true,
        }));
        let fields = FieldSet::new(&["pad"], tracing_core::identify_callsite!(site));
        let _ = site.meta.set(Metadata::new(
            "pad",
            "multiproc::pad",
            Level::TRACE,
            None,
            None,
            None,
            fields,
            Kind::EVENT,
        ));
        site.metadata()
            .fields()
            .field("pad")
            .expect("the pad site has its field")
    })
}

/// A value as `tracing` records it.
enum Held<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Str(&'a str),
    Text(DisplayValue<&'a str>),
}

impl<'a> Held<'a> {
    fn of(v: &'a Val<'a>) -> Held<'a> {
        match v {
            Val::Bool(b) => Held::Bool(*b),
            Val::I64(n) => Held::I64(*n),
            Val::U64(n) => Held::U64(*n),
            Val::I128(n) => Held::I128(*n),
            Val::U128(n) => Held::U128(*n),
            Val::F64(n) => Held::F64(*n),
            Val::Str(s) => Held::Str(s),
            Val::Text(s) => Held::Text(display(s)),
        }
    }

    fn value(&self) -> &dyn Value {
        match self {
            Held::Bool(v) => v,
            Held::I64(v) => v,
            Held::U64(v) => v,
            Held::I128(v) => v,
            Held::U128(v) => v,
            Held::F64(v) => v,
            Held::Str(v) => v,
            Held::Text(v) => v,
        }
    }
}

/// Emits `fields`, tagged with `pid` and `name` unless they carry tags of
/// their own, at `site`.
fn dispatch(site: &'static Site, fields: &[(Cow<'_, str>, Val<'_>)], pid: u32, name: &str) {
    // SYNC: Relaxed, see `set_interest`.
    if site.interest.load(Ordering::Relaxed) == 0 {
        return;
    }
    let meta = site.metadata();
    let set = meta.fields();
    let pid = u64::from(pid);
    let mut held: Vec<(Field, Held<'_>)> = Vec::with_capacity(fields.len() + 2);
    for (k, v) in fields {
        if let Some(f) = set.field(k.as_ref()) {
            if !held.iter().any(|(h, _)| *h == f) {
                held.push((f, Held::of(v)));
            }
        }
    }
    if !site.tagged {
        if let (Some(p), Some(n)) = (set.field("worker_pid"), set.field("worker_name")) {
            held.push((p, Held::U64(pid)));
            held.push((n, Held::Str(name)));
        }
    }
    let pad = pad();
    let mut slots: [(&Field, Option<&dyn Value>); SLOTS] = [(pad, None); SLOTS];
    for (slot, (f, v)) in slots.iter_mut().zip(&held) {
        *slot = (f, Some(v.value()));
    }
    Event::dispatch(meta, &set.value_set(&slots));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_made_for_a_process_without_a_subscriber() {
        // This unit-test binary installs no subscriber.
        if LevelFilter::current() == LevelFilter::OFF {
            let pending = prepare().unwrap();
            assert!(pending.0.is_none());
            assert!(pending.offer().0.is_none());
        }
    }

    #[test]
    fn a_record_past_the_limits_keeps_its_message_fields_and_target() {
        let rec = Record {
            level: 3,
            target: "app".into(),
            name: "event".into(),
            module: None,
            file: None,
            line: None,
            fields: vec![
                ("message".into(), Val::Text("done".into())),
                ("n".into(), Val::U64(3)),
                ("who".into(), Val::Str("bob".into())),
            ],
        };
        let fields = fallback_fields(&rec);
        assert_eq!(
            format!("{fields:?}"),
            r#"[("message", Text("done n=3 who=\"bob\"")), ("worker_target", Str("app"))]"#
        );
    }
}
