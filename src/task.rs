//! How a task names its function across processes.
//!
//! A task is a non-capturing `fn` item or closure: a zero-sized type whose
//! behaviour is entirely in its type. For each `(F, A, R)` the parent takes
//! the address of a `'static` descriptor, [`Entry`], that lives in the
//! binary's read-only data, and sends its offset from an anchor function.
//! Parent and child are the same binary, so the same offset names the same
//! descriptor in the child.
//!
//! The child never jumps to an address it was sent. Before it calls anything
//! it checks ([`TaskRef::resolve`]):
//!
//! 1. the descriptor lies entirely inside this executable's own image
//!    (`sys::same_image`), and is aligned;
//! 2. it starts with a 128-bit magic number;
//! 3. both function pointers in it point into the image;
//! 4. the descriptor's type fingerprint (a hash of the type names of
//!    `F`, `A` and `R`) equals the one the parent sent.
//!
//! Only then is the trampoline called. The channel the `TaskRef` arrives on
//! is itself authenticated by the handshake's 256-bit token.
#![allow(unsafe_code)]

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys;

/// 128 random bits that start every [`Entry`].
const MAGIC: [u64; 2] = [0x6d70_7263_5f74_6173, 0xb3c1_9e27_d04a_58f1];

/// Runs the task on postcard-encoded arguments, returns the encoded result.
type RunFn = fn(&[u8]) -> Result<Vec<u8>, postcard::Error>;

/// The per-`(F, A, R)` descriptor a task's wire form points at.
#[repr(C)]
struct Entry {
    magic: [u64; 2],
    run: RunFn,
    describe: fn() -> &'static str,
}

/// The anchor all descriptor offsets are relative to. Its address differs
/// between runs (ASLR) but its distance to every descriptor does not.
#[inline(never)]
fn anchor() {}

/// Wire form of "which function to run": an offset and a type fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskRef {
    offset: i64,
    fingerprint: u64,
}

/// Why a received [`TaskRef`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalid {
    OutsideImage,
    Misaligned,
    BadMagic,
    BadFunction,
    WrongType,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invalid::OutsideImage => "task descriptor lies outside this executable",
            Invalid::Misaligned => "task descriptor is misaligned",
            Invalid::BadMagic => "no task descriptor at that offset",
            Invalid::BadFunction => "task descriptor points outside this executable",
            Invalid::WrongType => "task type fingerprint does not match",
        })
    }
}

struct Descriptor<F, A, R>(PhantomData<(fn(A) -> R, F)>);

impl<F, A, R> Descriptor<F, A, R>
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned,
    R: Serialize,
{
    const IS_ZST: () = assert!(
        std::mem::size_of::<F>() == 0,
        "multiproc tasks must be non-capturing: pass a fn item or a closure that captures nothing \
         (send the data as the task's argument instead)"
    );

    const ENTRY: &'static Entry = &Entry {
        magic: MAGIC,
        run: run::<F, A, R>,
        describe: describe::<F, A, R>,
    };
}

fn describe<F, A, R>() -> &'static str {
    std::any::type_name::<(F, A, R)>()
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
    #[allow(clippy::let_unit_value)]
    let () = Descriptor::<F, A, R>::IS_ZST;
    let args: A = postcard::from_bytes(args)?;
    // SAFETY: `F` is zero-sized (checked at compile time just above), so it
    // has no bytes that could be invalid; it is a fn item or a closure that
    // captures nothing, whose value carries no state and no invariant. The
    // parent held a value of this exact type (that is how this
    // monomorphisation came to exist), so the type is inhabited.
    let f: F = unsafe { std::mem::MaybeUninit::<F>::uninit().assume_init() };
    postcard::to_stdvec(&f(args))
}

impl TaskRef {
    /// The wire name of `f`. Fails to compile if `F` captures anything.
    pub(crate) fn of<F, A, R>(_f: &F) -> TaskRef
    where
        F: Fn(A) -> R + 'static,
        A: DeserializeOwned,
        R: Serialize,
    {
        #[allow(clippy::let_unit_value)]
        let () = Descriptor::<F, A, R>::IS_ZST;
        let entry = Descriptor::<F, A, R>::ENTRY as *const Entry as usize;
        TaskRef {
            offset: (entry as i64).wrapping_sub(anchor as *const () as usize as i64),
            fingerprint: fingerprint(describe::<F, A, R>()),
        }
    }

    /// Checks the descriptor this names and returns its trampoline.
    pub(crate) fn resolve(self) -> Result<RunFn, Invalid> {
        let anchor_addr = anchor as *const () as usize;
        let addr = (anchor_addr as i64).wrapping_add(self.offset) as usize;
        let size = std::mem::size_of::<Entry>();
        let end = addr.checked_add(size).ok_or(Invalid::OutsideImage)?;
        if !sys::same_image(anchor_addr, addr) || !sys::same_image(anchor_addr, end - 1) {
            return Err(Invalid::OutsideImage);
        }
        if addr % std::mem::align_of::<Entry>() != 0 {
            return Err(Invalid::Misaligned);
        }
        let ptr = addr as *const Entry;
        // SAFETY: `[addr, addr + size)` lies inside this executable's mapped
        // image (checked above) and is aligned for `Entry`, so reading the
        // two magic words is a read of mapped, initialised memory. Plain
        // integers have no invalid values.
        let magic = unsafe { std::ptr::addr_of!((*ptr).magic).read() };
        if magic != MAGIC {
            return Err(Invalid::BadMagic);
        }
        // SAFETY: as above, and the magic shows this is one of the `Entry`
        // values `Descriptor::ENTRY` placed in the binary's read-only data,
        // so its function-pointer fields were written by the compiler.
        let (run, describe) = unsafe { ((*ptr).run, (*ptr).describe) };
        if !sys::same_image(anchor_addr, run as usize)
            || !sys::same_image(anchor_addr, describe as usize)
        {
            return Err(Invalid::BadFunction);
        }
        if fingerprint(describe()) != self.fingerprint {
            return Err(Invalid::WrongType);
        }
        Ok(run)
    }

    #[cfg(test)]
    fn with_offset(self, offset: i64) -> TaskRef {
        TaskRef { offset, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    #[test]
    fn resolves_and_runs_a_genuine_task() {
        let t = TaskRef::of(&square);
        let run = t.resolve().unwrap();
        let out = run(&postcard::to_stdvec(&7u64).unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&out).unwrap(), 49);
    }

    #[test]
    fn closures_get_distinct_descriptors() {
        let a = TaskRef::of(&|x: u32| x + 1);
        let b = TaskRef::of(&|x: u32| x + 2);
        assert_ne!(a, b);
        let out = b.resolve().unwrap()(&postcard::to_stdvec(&1u32).unwrap()).unwrap();
        assert_eq!(postcard::from_bytes::<u32>(&out).unwrap(), 3);
    }

    #[test]
    fn rejects_offsets_that_do_not_name_a_descriptor() {
        let t = TaskRef::of(&square);
        for delta in [1_i64, 8, 64, -64, 4096, -4096] {
            let bad = t.with_offset(t.offset.wrapping_add(delta));
            assert!(bad.resolve().is_err(), "delta {delta} accepted");
        }
        for off in [i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            assert_eq!(
                t.with_offset(off).resolve().unwrap_err(),
                Invalid::OutsideImage
            );
        }
    }

    #[test]
    fn rejects_a_wrong_fingerprint() {
        let t = TaskRef::of(&square);
        let bad = TaskRef {
            fingerprint: t.fingerprint ^ 1,
            ..t
        };
        assert_eq!(bad.resolve().unwrap_err(), Invalid::WrongType);
    }

    #[test]
    fn bad_arguments_are_a_decode_error_not_a_panic() {
        let run = TaskRef::of(&|s: String| s.len()).resolve().unwrap();
        assert!(run(&[0xff, 0xff, 0xff]).is_err());
    }
}
