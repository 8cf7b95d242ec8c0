//! `Managed<T>`: a user object that lives in the manager's server, and
//! the named functions (a constructor, methods) that run there.
//!
//! A constructor and a method are named as tasks are (`src/task.rs`): a
//! zero-sized `fn` item or non-capturing closure, sent as a MAC-tagged
//! [`TaskRef`] to a descriptor compiled into this binary. Two descriptor
//! kinds: [`NewFn`] decodes the arguments, runs the constructor and boxes
//! the object; [`CallFn`] downcasts the object, decodes the arguments,
//! runs the method and encodes its result. The server (`store.rs`) holds
//! the object as `Box<dyn Any>` and never learns its type otherwise.

use std::any::Any;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::op;
use super::Handle;
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::task::{conjure, type_name_of, Entry, RunKind, TaskKey, TaskRef, TaskType};

/// A constructor's trampoline: encoded arguments in, the object and its
/// type's name out.
pub(crate) type NewFn = fn(&[u8]) -> Result<(Box<dyn Any>, &'static str)>;

/// A method's trampoline: the object (and the name of the type it was
/// built as), encoded arguments in, the encoded result out.
pub(crate) type CallFn = fn(&mut dyn Any, &str, &[u8]) -> Result<Vec<u8>>;

impl RunKind for NewFn {
    const KIND: u64 = 4;
}

impl RunKind for CallFn {
    const KIND: u64 = 5;
}

mod sealed {
    pub trait Sealed<T, Sig> {}
}

/// A function that can be a method of a [`Managed<T>`](Managed): a `fn`
/// item or non-capturing closure taking `&mut T` or `&T`, and then at
/// most one argument (several go in a tuple).
///
/// `Sig` tells the four shapes apart, and the compiler infers it: a
/// method is `fn(&mut self) -> R`, `fn(&mut self, A) -> R`,
/// `fn(&self) -> R` or `fn(&self, A) -> R`. Sealed: it cannot be
/// implemented outside this crate.
///
/// ```
/// use multiproc::Method;
///
/// struct Counter(u64);
/// impl Counter {
///     fn incr(&mut self) -> u64 { self.0 += 1; self.0 }
///     fn add(&mut self, n: u64) { self.0 += n }
///     fn value(&self) -> u64 { self.0 }
/// }
///
/// fn is_method<T, Sig, M: Method<T, Sig>>(_: M) {}
/// is_method(Counter::incr);
/// is_method(Counter::add);
/// is_method(Counter::value);
/// ```
pub trait Method<T, Sig>: sealed::Sealed<T, Sig> {
    /// What the method takes after the object (`()` for none).
    type Args;
    /// What it returns.
    type Output;
    #[doc(hidden)]
    fn invoke(&self, object: &mut T, args: Self::Args) -> Self::Output;
}

impl<T, R, F: Fn(&mut T) -> R> sealed::Sealed<T, fn(&mut T) -> R> for F {}
impl<T, R, F: Fn(&mut T) -> R> Method<T, fn(&mut T) -> R> for F {
    type Args = ();
    type Output = R;
    fn invoke(&self, object: &mut T, (): ()) -> R {
        self(object)
    }
}

impl<T, A, R, F: Fn(&mut T, A) -> R> sealed::Sealed<T, fn(&mut T, A) -> R> for F {}
impl<T, A, R, F: Fn(&mut T, A) -> R> Method<T, fn(&mut T, A) -> R> for F {
    type Args = A;
    type Output = R;
    fn invoke(&self, object: &mut T, args: A) -> R {
        self(object, args)
    }
}

impl<T, R, F: Fn(&T) -> R> sealed::Sealed<T, fn(&T) -> R> for F {}
impl<T, R, F: Fn(&T) -> R> Method<T, fn(&T) -> R> for F {
    type Args = ();
    type Output = R;
    fn invoke(&self, object: &mut T, (): ()) -> R {
        self(object)
    }
}

impl<T, A, R, F: Fn(&T, A) -> R> sealed::Sealed<T, fn(&T, A) -> R> for F {}
impl<T, A, R, F: Fn(&T, A) -> R> Method<T, fn(&T, A) -> R> for F {
    type Args = A;
    type Output = R;
    fn invoke(&self, object: &mut T, args: A) -> R {
        self(object, args)
    }
}

struct NewDesc<F, A, T>(PhantomData<F>, PhantomData<fn(A) -> T>);

impl<F, A, T> NewDesc<F, A, T>
where
    F: Fn(A) -> T + 'static,
    A: DeserializeOwned + 'static,
    T: 'static,
{
    const ENTRY: &'static Entry<NewFn> =
        &Entry::new(type_name_of::<(NewFn, F, A, T)>, new::<F, A, T>);
}

fn new<F, A, T>(args: &[u8]) -> Result<(Box<dyn Any>, &'static str)>
where
    F: Fn(A) -> T + 'static,
    A: DeserializeOwned,
    T: 'static,
{
    let args: A = codec::decode_serde(args)?;
    // The client held a value of this exact type: that is how this
    // monomorphisation came to exist (and a valid tag proves it did).
    let f: F = conjure();
    let object = crate::panic::catch_panic(|| f(args)).map_err(Error::panicked)?;
    Ok((Box::new(object), std::any::type_name::<T>()))
}

struct CallDesc<F, T, Sig>(PhantomData<F>, PhantomData<fn() -> T>, PhantomData<Sig>);

impl<F, T, Sig> CallDesc<F, T, Sig>
where
    F: Method<T, Sig> + 'static,
    F::Args: DeserializeOwned,
    F::Output: Serialize,
    T: 'static,
    Sig: 'static,
{
    const ENTRY: &'static Entry<CallFn> =
        &Entry::new(type_name_of::<(CallFn, F, T, Sig)>, call::<F, T, Sig>);
}

fn call<F, T, Sig>(object: &mut dyn Any, held: &str, args: &[u8]) -> Result<Vec<u8>>
where
    F: Method<T, Sig> + 'static,
    F::Args: DeserializeOwned,
    F::Output: Serialize,
    T: 'static,
{
    let Some(object) = object.downcast_mut::<T>() else {
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!(
                "the object is a `{held}`, the method one of `{}`",
                std::any::type_name::<T>()
            ),
        ));
    };
    let args: F::Args = codec::decode_serde(args)?;
    let f: F = conjure();
    // The object stays as the method left it, as in Python: a method that
    // panics halfway has changed what it changed.
    let out = crate::panic::catch_panic(|| f.invoke(object, args)).map_err(Error::panicked)?;
    postcard::to_stdvec(&out).map_err(|e| Error::codec("the method's result", e))
}

/// The wire name of constructor `init`, tagged with `key`. Fails to
/// compile if `F` captures anything.
pub(super) fn constructor_name<F, A, T>(_init: &F, key: TaskKey) -> TaskRef
where
    F: Fn(A) -> T + 'static,
    A: DeserializeOwned + 'static,
    T: 'static,
{
    #[allow(clippy::let_unit_value)]
    let () = TaskType::<F>::CHECK;
    TaskRef::of_entry(NewDesc::<F, A, T>::ENTRY, key)
}

/// The wire name of `method` of `T`, tagged with `key`. Fails to compile
/// if `M` captures anything.
pub(super) fn method_name<M, T, Sig>(_method: &M, key: TaskKey) -> TaskRef
where
    M: Method<T, Sig> + 'static,
    M::Args: DeserializeOwned,
    M::Output: Serialize,
    T: 'static,
    Sig: 'static,
{
    #[allow(clippy::let_unit_value)]
    let () = TaskType::<M>::CHECK;
    TaskRef::of_entry(CallDesc::<M, T, Sig>::ENTRY, key)
}

/// A `T` held by a [`Manager`](crate::Manager): the object lives in the
/// manager's server process, and every method runs there (Python's
/// `BaseManager.register('Counter', Counter)`, then `m.Counter(5)` and
/// its proxy). Made by [`Manager::object`](crate::Manager::object).
///
/// [`call`](Managed::call) names a method (`Counter::incr`), sends its
/// arguments and returns its result: one round trip, and atomic with
/// respect to every other call on the manager, since the server runs one
/// request at a time. `T` itself never leaves the server, so it needs no
/// serde; the arguments and results do.
///
/// A cheap handle, as [`Dict`](crate::Dict) is: clone it, pass it to
/// children (`Serialize + Deserialize`), use it from any thread, keep it
/// in a dict.
///
/// As in Python, user code runs in the server: a method that never
/// returns stalls the whole manager (every proxy of it, in every
/// process), and one that panics has its panic returned to the caller
/// (kind [`Panicked`](ErrorKind::Panicked), with the message and
/// location) while the server goes on serving; the object stays as the
/// method left it. A method must not use a proxy of the manager it runs
/// in (the server would wait for itself); such a call is refused.
///
/// # Errors
/// Every call: as [`Dict`](crate::Dict)'s, and
/// [`Panicked`](ErrorKind::Panicked) if the method panicked,
/// [`Codec`](ErrorKind::Codec) if its arguments or result do not
/// (de)serialise, [`InvalidState`](ErrorKind::InvalidState) if the object
/// is not a `T` (a proxy read as the wrong type),
/// [`Protocol`](ErrorKind::Protocol) if the server refused the function's
/// name (not one of this binary).
///
/// ```
/// use multiproc::{Managed, Manager, Process};
///
/// struct Counter { n: u64 }
///
/// impl Counter {
///     fn new(start: u64) -> Counter { Counter { n: start } }
///     fn incr(&mut self) { self.n += 1 }
///     fn value(&self) -> u64 { self.n }
/// }
///
/// fn work(c: Managed<Counter>) {
///     for _ in 0..100 {
///         c.call(Counter::incr, ()).unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::new().unwrap();
///     let c = manager.object(Counter::new, 5).unwrap();
///     let workers: Vec<_> = (0..2).map(|_| Process::spawn(work, c.clone()).unwrap()).collect();
///     for w in workers { w.join().unwrap(); }
///     assert_eq!(c.call(Counter::value, ()).unwrap(), 205);
/// }
/// ```
pub struct Managed<T> {
    handle: Handle,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Managed<T> {
    fn clone(&self) -> Self {
        Managed::from_handle(self.handle.clone())
    }
}

impl<T> std::fmt::Debug for Managed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed")
            .field("type", &std::any::type_name::<T>())
            .field("id", &self.handle.id)
            .finish()
    }
}

impl<T> Serialize for Managed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Managed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Managed::from_handle(Handle::deserialize(d)?))
    }
}

impl<T> Managed<T> {
    fn from_handle(handle: Handle) -> Self {
        Managed {
            handle,
            _type: PhantomData,
        }
    }
}

impl<T: 'static> Managed<T> {
    /// Builds the object in the server: `init(args)` runs there (the
    /// body of [`Manager::object`](crate::Manager::object)).
    pub(super) fn create<F, A>(handle: Handle, init: F, args: A) -> Result<Self>
    where
        F: Fn(A) -> T + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        let task = constructor_name(&init, handle.link.key());
        let id = handle.call(
            "Manager::object",
            op::NEW_OBJECT,
            |w| {
                w.task(task).value(&args)?;
                Ok(())
            },
            |r| r.u64(),
        )?;
        Ok(Managed::from_handle(Handle { id, ..handle }))
    }

    /// Runs `method` on the object in the server, with `args` after the
    /// object, and returns its result (Python: `proxy.method(args)`).
    /// `method` is a `fn` item or non-capturing closure of one of the
    /// shapes of [`Method`]: `Counter::incr` for `fn incr(&mut self)`,
    /// `Counter::add` for `fn add(&mut self, n: u64)` with `args` `5`.
    /// Several arguments go in a tuple; none is `()`.
    ///
    /// # Errors
    /// As every call of [`Managed`](crate::Managed#errors).
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// #[derive(Default)]
    /// struct Scores(HashMap<String, u32>);
    ///
    /// impl Scores {
    ///     fn add(&mut self, (who, points): (String, u32)) -> u32 {
    ///         let s = self.0.entry(who).or_default();
    ///         *s += points;
    ///         *s
    ///     }
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let scores = m.object(|(): ()| Scores::default(), ()).unwrap();
    ///     scores.call(Scores::add, ("ann".to_string(), 3)).unwrap();
    ///     assert_eq!(scores.call(Scores::add, ("ann".to_string(), 4)).unwrap(), 7);
    /// }
    /// ```
    pub fn call<M, Sig>(&self, method: M, args: M::Args) -> Result<M::Output>
    where
        M: Method<T, Sig> + 'static,
        M::Args: Serialize + DeserializeOwned,
        M::Output: Serialize + DeserializeOwned,
        Sig: 'static,
    {
        let task = method_name(&method, self.handle.link.key());
        self.handle.call(
            "Managed::call",
            op::O_CALL,
            |w| {
                w.task(task).value(&args)?;
                Ok(())
            },
            |r| r.value(),
        )
    }
}
