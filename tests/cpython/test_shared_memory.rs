//! CPython's `_TestSharedMemory`.

use super::*;

fn attach_then_write((name, data): (String, Vec<u8>)) {
    let shm = SharedMemory::open(&name).unwrap();
    shm.write_at(0, &data);
}

fn write_into((shm, data): (SharedMemory, Vec<u8>)) {
    shm.write_at(0, &data);
}

/// Python: `ValueError`.
#[test]
fn test_shared_memory_name_with_embedded_null() {
    let sms = SharedMemory::create(512).unwrap();
    let err = SharedMemory::open(&format!("{}\0a", sms.name())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

/// A name for one test: `mp` first (`.ci/run` looks for those), unique
/// per process and call.
fn name_tsmb(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mp-cpy-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The `name=` lines of `test_shared_memory_basics`: create with a name,
/// attach by it (with or without the leading `/`), `FileExistsError`,
/// `FileNotFoundError`, unlink. (A second unlink raises
/// `FileNotFoundError` in Python; here it does nothing.)
#[test]
fn test_shared_memory_basics_named() {
    let name = name_tsmb("basics");
    let sms = SharedMemory::builder()
        .name(&name)
        .size(512)
        .create()
        .unwrap();
    assert_eq!(sms.name(), name);
    assert!(sms.len() >= 512);
    sms.write_at(0, &[42]);

    let also = SharedMemory::open(&name).unwrap();
    let mut b = [0u8];
    also.read_at(0, &mut b);
    assert_eq!(b, [42]);
    let slashed = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(slashed.name(), name);

    let exists = SharedMemory::builder()
        .name(&name)
        .size(512)
        .create()
        .unwrap_err();
    assert_eq!(exists.kind(), ErrorKind::AlreadyExists, "{exists}");

    sms.unlink();
    if cfg!(unix) {
        let gone = SharedMemory::open(&name).unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
    }
    sms.unlink();
}

/// Python 3.13's `track=`: the creator's tracker removes a tracked name
/// when the creator ends; an untracked one stays for the caller to unlink.
/// (CPython checks this through a Python subprocess; here the creator is
/// a child.) Windows: moot, the names go with the last handle.
#[cfg(unix)]
#[test]
fn test_shared_memory_tracking() {
    fn create_tracked_and_untracked((tracked, untracked): (String, String)) {
        for (name, track) in [(tracked, true), (untracked, false)] {
            SharedMemory::builder()
                .name(name)
                .size(64)
                .track(track)
                .create()
                .unwrap();
        }
    }

    let (tracked, untracked) = (name_tsmb("tracked"), name_tsmb("untracked"));
    Process::spawn(
        create_tracked_and_untracked,
        (tracked.clone(), untracked.clone()),
    )
    .unwrap()
    .join()
    .unwrap();
    let gone = common::wait_for(
        LONG,
        || SharedMemory::open(&tracked).map(|_| ()),
        |r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound),
    );
    assert!(gone.is_ok(), "{tracked} outlived its creator: {gone:?}");
    let kept = SharedMemory::open(&untracked).unwrap();
    kept.unlink();
}

fn attach_and_leave(name: String) {
    SharedMemory::open(&name).unwrap().write_at(0, b"was here");
}

/// Opening never tracks: a process that attached and ended does not take
/// the creator's name with it (the bug that `track=False` works around in
/// Python before 3.13).
#[test]
fn test_shared_memory_untracking() {
    let name = name_tsmb("attach");
    let sms = SharedMemory::builder()
        .name(&name)
        .size(64)
        .create()
        .unwrap();
    Process::spawn(attach_and_leave, name.clone())
        .unwrap()
        .join()
        .unwrap();
    let again = SharedMemory::open(&name).unwrap();
    assert_eq!(&again.to_vec()[..8], b"was here");
    sms.unlink();
}

/// The parts with a counterpart: names are generated here (the `name=`
/// lines are [`test_shared_memory_basics_named`]), sizes are `usize`.
#[test]
fn test_shared_memory_basics() {
    let sms = SharedMemory::create(512).unwrap();
    assert!(sms.len() >= 512);
    let repr = format!("{sms:?}");
    assert!(repr.contains(&sms.name()), "{repr}");
    assert!(repr.contains("512"), "{repr}");

    sms.write_at(0, &[42]);
    let mut b = [0u8];
    sms.read_at(0, &mut b);
    assert_eq!(b, [42]);

    // Attach to the existing segment.
    let also = SharedMemory::open(&sms.name()).unwrap();
    also.read_at(0, &mut b);
    assert_eq!(b, [42]);
    assert_eq!(also.len(), sms.len());
    drop(also);

    // A name nobody made.
    assert!(SharedMemory::open("test01_notthere").is_err());
}

/// "Pickling" is serde: the handle travels, the memory is the same.
#[test]
fn test_shared_memory_pickle_unpickle() {
    let sms = SharedMemory::create(512).unwrap();
    sms.write_at(0, b"pickle");
    let bytes = postcard::to_stdvec(&sms).unwrap();
    let sms2: SharedMemory = postcard::from_bytes(&bytes).unwrap();
    let read6 = |s: &SharedMemory| {
        let mut b = [0u8; 6];
        s.read_at(0, &mut b);
        b
    };
    assert_eq!(&read6(&sms), b"pickle");
    assert_eq!(&read6(&sms2), b"pickle");
    sms.write_at(0, b"newval");
    assert_eq!(&read6(&sms2), b"newval");
    sms2.write_at(0, b"oldval");
    assert_eq!(&read6(&sms), b"oldval");
}

/// The `sms.name == sms2.name` check of CPython's
/// `test_shared_memory_pickle_unpickle`, on its own.
#[test]
fn test_shared_memory_pickle_unpickle_same_name() {
    let sms = SharedMemory::create(512).unwrap();
    let bytes = postcard::to_stdvec(&sms).unwrap();
    let sms2: SharedMemory = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(sms.name(), sms2.name());
}

#[test]
fn test_shared_memory_pickle_unpickle_dead_object() {
    let sms = SharedMemory::create(512).unwrap();
    sms.write_at(0, b"pickle");
    let bytes = postcard::to_stdvec(&sms).unwrap();
    // The original goes: the serialised one cannot attach.
    sms.unlink();
    drop(sms);
    assert!(postcard::from_bytes::<SharedMemory>(&bytes).is_err());
}

#[test]
fn test_shared_memory_across_processes() {
    let sms = SharedMemory::create(512).unwrap();
    // By name.
    Process::spawn(attach_then_write, (sms.name(), b"howdy".to_vec()))
        .unwrap()
        .join()
        .unwrap();
    let mut b = [0u8; 5];
    sms.read_at(0, &mut b);
    assert_eq!(&b, b"howdy");
    // The object itself.
    Process::spawn(write_into, (sms.clone(), b"HELLO".to_vec()))
        .unwrap()
        .join()
        .unwrap();
    sms.read_at(0, &mut b);
    assert_eq!(&b, b"HELLO");
}

fn create_and_sleep(w: Connection) {
    let sm = SharedMemory::create(10).unwrap();
    w.send(&sm.name()).unwrap();
    sleep(Duration::from_secs(100));
}

/// A segment whose only holder is terminated is gone, not leaked.
#[test]
fn test_shared_memory_cleaned_after_process_termination() {
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(create_and_sleep, w).unwrap();
    let name: String = r.recv_timeout(LONG).unwrap();
    p.terminate().unwrap();
    assert!(p.join().is_err());
    let gone = common::wait_for(LONG, || SharedMemory::open(&name).is_err(), |&gone| gone);
    assert!(
        gone.is_ok(),
        "segment {name} outlived its terminated creator"
    );
}
