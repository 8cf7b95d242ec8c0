//! How a task names its function across processes.
//!
//! A task is a non-capturing `fn` item or closure: a zero-sized type whose
//! behaviour is entirely in its type. For each `(F, A, R)` the compiler
//! places a `'static` descriptor, [`Entry`], in the binary; the parent sends
//! its offset from an anchor function. Parent and child are the same
//! binary, so the same offset names the same descriptor in the child.
//!
//! The child never trusts an offset it was sent. Before it touches the
//! address it checks ([`TaskRef::resolve`]):
//!
//! 1. the tag: a SipHash-2-4 MAC of `(offset, fingerprint)` under a 128-bit
//!    key from the handshake token, compared in constant time. Only the
//!    parent knows the key, and it only tags offsets it took from a genuine
//!    descriptor ([`TaskRef::of`]), so a valid tag proves the offset names
//!    one. (An earlier design probed the address for a magic number; the
//!    fuzzer showed that reading memory at an unverified address is
//!    undefined behaviour even inside the image, so nothing is read before
//!    the tag checks out.)
//! 2. the address lies inside this executable's image and is aligned, a
//!    cheap guard against a parent/child binary mismatch;
//! 3. the descriptor's type fingerprint (a hash of the type names of `F`,
//!    `A` and `R`) equals the one the parent sent.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys;

/// The 128-bit key that tags task references (half of the handshake token).
pub(crate) type TaskKey = [u64; 2];

/// Runs the task on postcard-encoded arguments, returns the encoded result.
pub(crate) type RunFn = fn(&[u8]) -> Result<Vec<u8>, postcard::Error>;

/// The signature of a descriptor's trampoline. Every kind is a plain `fn`
/// pointer, so every `Entry<Run>` has the same layout; `KIND` tells them
/// apart at run time, before the trampoline is read.
pub(crate) trait RunKind: Copy + 'static {
    /// Distinct for every implementing type.
    const KIND: u64;
}

impl RunKind for RunFn {
    const KIND: u64 = 1;
}

/// The descriptor a task's wire form points at: one per `(kind, F, A, R)`.
#[repr(C)]
pub(crate) struct Entry<Run> {
    describe: fn() -> &'static str,
    kind: u64,
    run: Run,
}

/// The part every `Entry<Run>` shares (`repr(C)` prefix).
#[repr(C)]
struct EntryPrefix {
    describe: fn() -> &'static str,
    kind: u64,
}

impl<Run: RunKind> Entry<Run> {
    /// A descriptor for `run`; `describe` names the types it was made for
    /// (use [`type_name_of`] over a tuple that includes `Run`).
    pub(crate) const fn new(describe: fn() -> &'static str, run: Run) -> Entry<Run> {
        Entry {
            describe,
            kind: Run::KIND,
            run,
        }
    }
}

/// `std::any::type_name::<T>()` as a `fn` pointer for [`Entry::new`].
pub(crate) fn type_name_of<T: ?Sized>() -> &'static str {
    std::any::type_name::<T>()
}

/// The compile-time check that `F` can be a task: every path that names a
/// task (`TaskRef::of`, [`conjure`]) evaluates [`TaskType::CHECK`], so a
/// wrong `F` gets this one message, once.
///
/// Only a zero-sized `F` can be sent: its behaviour is all in its type, so
/// the child can rebuild the value from the type alone. A closure that
/// captures carries its captures as data, and a `fn` pointer carries an
/// address; neither has a name another process could look up (Python's
/// `pickle` refuses lambdas and local functions for the same reason).
///
/// Why this fires at `cargo build` and not at `cargo check`: stable Rust
/// has no bound that says "zero-sized", and no trait that tells a `fn`
/// item or capture-less closure from a `fn` pointer or a capturing closure
/// (all of them implement `Fn`, `Copy` and `'static` alike; negative
/// impls, auto traits and `generic_const_exprs`, which could express it,
/// are unstable). So the size is checked by a const that is evaluated when
/// the generic code is instantiated, which happens at code generation and
/// never under `cargo check`. The error's "evaluation of" note names the
/// user's closure (with its file and line) or `fn` pointer type.
pub(crate) struct TaskType<F>(PhantomData<F>);

impl<F> TaskType<F> {
    pub(crate) const CHECK: () = assert!(
        std::mem::size_of::<F>() == 0,
        "this multiproc task is a closure that captures variables, or a `fn` pointer; \
         another process cannot rebuild either. Pass the `fn` item itself \
         (`pool.map(square, items)` with `fn square(x: u64) -> u64`, not a \
         `let f: fn(u64) -> u64` variable) or a closure that captures nothing, and \
         send the data as the argument instead of capturing it, e.g. a tuple: \
         `pool.map(|(x, k): (u64, u64)| x * k, (0..10).map(|x| (x, k)))`. \
         The `TaskType::<...>` in the note below is the offending task's type \
         (a closure's shows the file and line it was written at)."
    );
}

/// The value of a zero-sized `fn` item or non-capturing closure type.
///
/// Only call this for a type `F` of which the caller (or, across processes,
/// the parent that made the descriptor this code runs under) held a value:
/// then `F` is inhabited, and being zero-sized it has no bytes that could
/// be invalid. Fails to compile for a type with a size ([`TaskType`]).
pub(crate) fn conjure<F>() -> F {
    #[allow(clippy::let_unit_value)]
    let () = TaskType::<F>::CHECK;
    // SAFETY: `F` is zero-sized (checked at compile time above), so there
    // are no bytes to be invalid, and per this function's contract `F` is
    // the type of a fn item or capture-less closure whose value the program
    // held: such a value carries no state and no invariant.
    unsafe { std::mem::zeroed() }
}

/// The anchor all descriptor offsets are relative to. Its address differs
/// between runs (ASLR) but its distance to every descriptor does not.
#[inline(never)]
fn anchor() {}

/// Wire form of "which function to run": an offset, a type fingerprint and
/// the parent's tag over both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskRef {
    offset: i64,
    fingerprint: u64,
    tag: u64,
}

/// Why a received [`TaskRef`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    BadTag,
    OutsideImage,
    Misaligned,
    WrongType,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::BadTag => "task reference not signed by the parent",
            Invalid::OutsideImage => "task descriptor lies outside this executable",
            Invalid::Misaligned => "task descriptor is misaligned",
            Invalid::WrongType => "task type fingerprint does not match (different binary?)",
        })
    }
}

struct Descriptor<F, A, R>(PhantomData<F>, PhantomData<fn(A) -> R>);

impl<F, A, R> Descriptor<F, A, R>
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    const ENTRY: &'static Entry<RunFn> = &Entry::new(describe::<F, A, R>, run::<F, A, R>);
}

fn describe<F, A, R>() -> &'static str {
    std::any::type_name::<(RunFn, F, A, R)>()
}

fn fingerprint(s: &str) -> u64 {
    // FNV-1a: stable across processes of the same binary, unlike
    // `DefaultHasher`'s random keys.
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn run<F, A, R>(args: &[u8]) -> Result<Vec<u8>, postcard::Error>
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    crate::error::clear_custom_reason();
    let args: A = postcard::from_bytes(args)?;
    // The parent held a value of this exact type: that is how this
    // monomorphisation came to exist.
    let f: F = conjure();
    postcard::to_stdvec(&f(args))
}

/// SipHash-2-4 (Aumasson & Bernstein): a keyed PRF, used here as a MAC
/// over short messages.
fn siphash24(key: TaskKey, data: &[u8]) -> u64 {
    let [k0, k1] = key;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let compress = |m: u64, v: &mut [u64; 4]| {
        v[3] ^= m;
        round(v);
        round(v);
        v[0] ^= m;
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        compress(u64::from_le_bytes(w), &mut v);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    last[7] = data.len() as u8;
    compress(u64::from_le_bytes(last), &mut v);
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn tag(key: TaskKey, offset: i64, fingerprint: u64) -> u64 {
    let mut msg = [0u8; 16];
    msg[..8].copy_from_slice(&offset.to_le_bytes());
    msg[8..].copy_from_slice(&fingerprint.to_le_bytes());
    siphash24(key, &msg)
}

impl TaskRef {
    /// The wire name of `f`, tagged with `key`. Fails to compile if `F`
    /// captures anything.
    pub(crate) fn of<F, A, R>(_f: &F, key: TaskKey) -> TaskRef
    where
        F: Fn(A) -> R + 'static,
        A: DeserializeOwned,
        R: Serialize,
    {
        #[allow(clippy::let_unit_value)]
        let () = TaskType::<F>::CHECK;
        TaskRef::of_entry(Descriptor::<F, A, R>::ENTRY, key)
    }

    /// The wire name of any descriptor, tagged with `key`.
    pub(crate) fn of_entry<Run: RunKind>(entry: &'static Entry<Run>, key: TaskKey) -> TaskRef {
        let addr = entry as *const Entry<Run> as usize;
        // A pool tags the same descriptor with the same key on every call:
        // remember the last one (per thread: no lock).
        thread_local! {
            static LAST: std::cell::Cell<Option<(usize, TaskKey, TaskRef)>> =
                const { std::cell::Cell::new(None) };
        }
        if let Ok(Some((a, k, t))) = LAST.try_with(std::cell::Cell::get) {
            if a == addr && k == key {
                return t;
            }
        }
        let t = Self::tag_entry(entry, addr, key);
        let _ = LAST.try_with(|last| last.set(Some((addr, key, t))));
        t
    }

    fn tag_entry<Run: RunKind>(entry: &'static Entry<Run>, addr: usize, key: TaskKey) -> TaskRef {
        let offset = (addr as i64).wrapping_sub(anchor as *const () as usize as i64);
        // Hashing the type name costs ~100 ns; a pool tags a reference per
        // call, so remember it per descriptor (per thread: no lock).
        thread_local! {
            static FINGERPRINTS: std::cell::RefCell<Vec<(usize, u64)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let fingerprint = FINGERPRINTS
            .try_with(|cache| {
                let mut cache = cache.borrow_mut();
                if let Some(&(_, f)) = cache.iter().find(|(a, _)| *a == addr) {
                    return f;
                }
                let f = fingerprint((entry.describe)());
                if cache.len() >= 64 {
                    cache.remove(0);
                }
                cache.push((addr, f));
                f
            })
            .unwrap_or_else(|_| fingerprint((entry.describe)()));
        TaskRef {
            offset,
            fingerprint,
            tag: tag(key, offset, fingerprint),
        }
    }

    /// The three words of the wire form (for fixed-layout frames).
    pub(crate) fn to_words(self) -> [u64; 3] {
        [self.offset as u64, self.fingerprint, self.tag]
    }

    /// The inverse of [`to_words`](TaskRef::to_words); any words are
    /// accepted here, [`resolve_as`](TaskRef::resolve_as) checks them.
    pub(crate) fn from_words(w: [u64; 3]) -> TaskRef {
        TaskRef {
            offset: w[0] as i64,
            fingerprint: w[1],
            tag: w[2],
        }
    }

    /// Checks the reference and returns the trampoline of a process task.
    pub(crate) fn resolve(self, key: TaskKey) -> Result<RunFn, Invalid> {
        self.resolve_as::<RunFn>(key)
    }

    /// Checks the reference and returns the descriptor's trampoline, which
    /// must be of kind `Run`.
    pub(crate) fn resolve_as<Run: RunKind>(self, key: TaskKey) -> Result<Run, Invalid> {
        let expected = tag(key, self.offset, self.fingerprint);
        // Constant time, so a peer learns nothing from how fast it fails.
        if (expected ^ self.tag) != 0 {
            return Err(Invalid::BadTag);
        }
        let anchor_addr = anchor as *const () as usize;
        let addr = (anchor_addr as i64).wrapping_add(self.offset) as usize;
        let last = addr
            .checked_add(std::mem::size_of::<Entry<Run>>() - 1)
            .ok_or(Invalid::OutsideImage)?;
        if !sys::same_image(anchor_addr, addr) || !sys::same_image(anchor_addr, last) {
            return Err(Invalid::OutsideImage);
        }
        if !addr.is_multiple_of(std::mem::align_of::<Entry<Run>>()) {
            return Err(Invalid::Misaligned);
        }
        // SAFETY: the tag proves our parent, the same executable, computed
        // this offset in `TaskRef::of_entry` from a `&'static Entry<K>` for
        // some kind K; so `addr` is that descriptor's address here too,
        // valid, aligned and immutable for the life of the program. Every
        // `Entry<K>` starts with the `repr(C)` fields of `EntryPrefix`.
        let prefix: &'static EntryPrefix = unsafe { &*(addr as *const EntryPrefix) };
        if prefix.kind != Run::KIND || fingerprint((prefix.describe)()) != self.fingerprint {
            return Err(Invalid::WrongType);
        }
        // SAFETY: as above, and the kind check proves K = Run (every kind
        // has its own `KIND`), so the whole descriptor is an `Entry<Run>`.
        let entry: &'static Entry<Run> = unsafe { &*(addr as *const Entry<Run>) };
        Ok(entry.run)
    }
}

/// Resolved task references of one kind, by their (already verified) wire
/// words: a receiver that runs the same functions again and again (a pool
/// worker, the manager's server) checks each reference once.
pub(crate) struct Resolved<Run> {
    map: std::collections::HashMap<[u64; 3], Run>,
    /// The last one used: a pool call sends the same reference many times.
    last: Option<([u64; 3], Run)>,
    key: TaskKey,
}

impl<Run: RunKind> Resolved<Run> {
    /// An empty cache for references tagged with `key`.
    pub(crate) fn new(key: TaskKey) -> Resolved<Run> {
        Resolved {
            map: std::collections::HashMap::new(),
            last: None,
            key,
        }
    }

    /// `t`'s trampoline, checked by [`TaskRef::resolve_as`] the first time.
    pub(crate) fn get(&mut self, t: TaskRef) -> Result<Run, Invalid> {
        let words = t.to_words();
        if let Some((w, run)) = self.last {
            if w == words {
                return Ok(run);
            }
        }
        if let Some(run) = self.map.get(&words) {
            self.last = Some((words, *run));
            return Ok(*run);
        }
        let run = t.resolve_as::<Run>(self.key)?;
        // Bounded: a peer sending many distinct (valid) references cannot
        // grow it without end.
        if self.map.len() < 1024 {
            self.map.insert(words, run);
        }
        self.last = Some((words, run));
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: TaskKey = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // From the SipHash paper, appendix A: key 00..0f, message 00..0e.
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(key, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn resolves_and_runs_a_genuine_task() {
        let t = TaskRef::of(&square, KEY);
        let run = t.resolve(KEY).unwrap();
        let out = run(&postcard::to_stdvec(&7u64).unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 49);
    }

    #[test]
    fn closures_get_distinct_descriptors() {
        let a = TaskRef::of(&|x: u32| x + 1, KEY);
        let b = TaskRef::of(&|x: u32| x + 2, KEY);
        assert_ne!(a, b);
        let out = b.resolve(KEY).unwrap()(&postcard::to_stdvec(&1u32).unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&out).unwrap(), 3);
    }

    #[test]
    fn a_reference_tagged_with_another_key_is_refused() {
        let t = TaskRef::of(&square, [1, 2]);
        assert_eq!(t.resolve(KEY).unwrap_err(), Invalid::BadTag);
    }

    #[test]
    fn any_change_to_offset_or_fingerprint_is_refused() {
        let t = TaskRef::of(&square, KEY);
        for delta in [1_i64, 8, 64, -64, 4096, i64::MAX] {
            let moved = TaskRef {
                offset: t.offset.wrapping_add(delta),
                ..t
            };
            assert_eq!(moved.resolve(KEY).unwrap_err(), Invalid::BadTag);
        }
        let retyped = TaskRef {
            fingerprint: t.fingerprint ^ 1,
            ..t
        };
        assert_eq!(retyped.resolve(KEY).unwrap_err(), Invalid::BadTag);
    }

    #[test]
    fn a_validly_tagged_offset_outside_the_image_is_refused() {
        for offset in [i64::MAX, i64::MIN, 1 << 46, -(1 << 46)] {
            let t = TaskRef {
                offset,
                fingerprint: 0,
                tag: tag(KEY, offset, 0),
            };
            assert_eq!(t.resolve(KEY).unwrap_err(), Invalid::OutsideImage);
        }
    }

    #[test]
    fn fuzz_regression_offset_into_other_data_is_never_read() {
        // fuzz/task_ref found this input when the design still probed the
        // address for a magic number (an out-of-bounds read under ASan).
        let input = [0xff, 0xff, 0x7b, 0xc8, 0xc8, 0x5b];
        if let Ok(t) = postcard::from_bytes::<TaskRef>(&input) {
            assert_eq!(t.resolve(KEY).unwrap_err(), Invalid::BadTag);
        }
        let t: TaskRef = postcard::from_bytes(&[0xff, 0xff, 0x7b, 0xc8, 0xc8, 0x5b, 0, 0]).unwrap();
        assert_eq!(t.resolve(KEY).unwrap_err(), Invalid::BadTag);
    }

    #[test]
    fn bad_arguments_are_a_decode_error_not_a_panic() {
        let run = TaskRef::of(&|s: String| s.len(), KEY).resolve(KEY).unwrap();
        assert!(run(&[0xff, 0xff, 0xff]).is_err());
    }
}
