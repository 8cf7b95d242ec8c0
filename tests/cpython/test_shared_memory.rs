//! CPython's `_TestSharedMemory`.

use super::*;

fn attach_then_write((name, data): (String, Vec<u8>)) {
    let shm = SharedMemory::open(&name).unwrap();
    shm.write_at(0, &data);
}

fn write_into((shm, data): (SharedMemory, Vec<u8>)) {
    shm.write_at(0, &data);
}

#[test]
fn test_shared_memory_name_with_embedded_null() {
    let sms = SharedMemory::create(512).unwrap();
    let err = SharedMemory::open(&format!("{}\0a", sms.name())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

/// The parts with a counterpart: names are made by the crate (no
/// `name=`, so no "already exists"), sizes are `usize`.
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
