//! `SharedValue`, `SharedArray`, `SharedMemory` across real processes.

use std::ops::Range;

use multiproc::{ErrorKind, Process, SharedArray, SharedMemory, SharedValue};

multiproc::test_support!();

fn fill((arr, range): (SharedArray<u64>, Range<usize>)) {
    for i in range {
        arr.set(i, (i as u64) * 3 + 1);
    }
}

fn count((counter, n): (SharedValue<u64>, u32)) {
    for _ in 0..n {
        counter.fetch_add(1);
    }
}

#[test]
fn two_children_fill_halves_of_an_array() {
    let arr = SharedArray::<u64>::new(1000).unwrap();
    let a = Process::spawn(fill, (arr.clone(), 0..500)).unwrap();
    let b = Process::spawn(fill, (arr.clone(), 500..1000)).unwrap();
    a.join().unwrap();
    b.join().unwrap();
    let expected: Vec<u64> = (0..1000).map(|i| i * 3 + 1).collect();
    assert_eq!(arr.to_vec(), expected);
}

#[test]
fn fetch_add_from_four_processes_loses_nothing() {
    let counter = SharedValue::new(0u64).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| Process::spawn(count, (counter.clone(), 10_000)).unwrap())
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(counter.get(), 40_000);
}

#[test]
fn parent_and_child_see_each_others_writes() {
    fn child(v: SharedValue<[f64; 3]>) -> [f64; 3] {
        let seen = v.get();
        v.set([seen[2], seen[1], seen[0]]);
        seen
    }
    let v = SharedValue::new([1.0, 2.0, 3.0]).unwrap();
    let seen = Process::spawn(child, v.clone()).unwrap().join().unwrap();
    assert_eq!(seen, [1.0, 2.0, 3.0]);
    assert_eq!(v.get(), [3.0, 2.0, 1.0]);
}

#[test]
fn bytes_written_by_a_child_are_read_by_the_parent() {
    fn by_handle(shm: SharedMemory) -> usize {
        shm.write_at(0, b"by handle");
        shm.len()
    }
    fn by_name(name: String) {
        let shm = SharedMemory::open(&name).unwrap();
        shm.write_at(100, b"by name");
    }
    let shm = SharedMemory::create(4096).unwrap();
    let len = Process::spawn(by_handle, shm.clone()).unwrap().join();
    assert_eq!(len.unwrap(), 4096);
    Process::spawn(by_name, shm.name()).unwrap().join().unwrap();
    let bytes = shm.to_vec();
    assert_eq!(&bytes[..9], b"by handle");
    assert_eq!(&bytes[100..107], b"by name");
    assert!(bytes[107..].iter().all(|&b| b == 0));
}

#[test]
fn a_child_can_pass_the_array_on_to_its_own_child() {
    fn relay(arr: SharedArray<u64>) {
        // The grandchild opens the segment through this process.
        Process::spawn(fill, (arr.clone(), 0..arr.len()))
            .unwrap()
            .join()
            .unwrap();
    }
    let arr = SharedArray::<u64>::new(64).unwrap();
    Process::spawn(relay, arr.clone()).unwrap().join().unwrap();
    assert_eq!(arr.get(63), Some(63 * 3 + 1));
}

#[test]
fn atomics_of_an_array_are_shared() {
    fn bump((arr, i): (SharedArray<i32>, usize)) {
        for _ in 0..1000 {
            arr.as_atomic()[i].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let arr = SharedArray::<i32>::new(3).unwrap();
    let ps: Vec<_> = (0..3)
        .flat_map(|i| [i, i])
        .map(|i| Process::spawn(bump, (arr.clone(), i)).unwrap())
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    assert_eq!(arr.to_vec(), [-2000, -2000, -2000]);
}

#[test]
fn names_with_a_wrong_tag_or_size_are_refused() {
    let shm = SharedMemory::create(64).unwrap();
    let name = shm.name();
    let (rest, tag) = name.rsplit_once('_').unwrap();
    let (loc, len) = rest.rsplit_once('_').unwrap();
    assert_eq!(len, "40");

    let flipped = if tag.ends_with('0') { '1' } else { '0' };
    let wrong_tag = format!("{loc}_{len}_{}{flipped}", &tag[..tag.len() - 1]);
    let wrong_size = format!("{loc}_80_{tag}");
    for bad in [wrong_tag, wrong_size] {
        let err = SharedMemory::open(&bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{bad}: {err}");
    }
    for garbage in ["", "psm_1234", "1_2_3", &name[1..], &format!("{name}_")] {
        assert!(SharedMemory::open(garbage).is_err(), "{garbage}");
    }
    // A child handed a bad name gets an error too, not a crash.
    fn try_open(name: String) -> bool {
        SharedMemory::open(&name).is_err_and(|e| e.kind() == ErrorKind::Protocol)
    }
    let bad = format!("{loc}_80_{tag}");
    assert!(Process::spawn(try_open, bad).unwrap().join().unwrap());
    drop(shm);
}

#[test]
fn a_name_stops_working_when_its_holder_drops_the_memory() {
    let shm = SharedMemory::create(16).unwrap();
    let name = shm.name();
    drop(shm);
    let err = SharedMemory::open(&name).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Io | ErrorKind::Protocol),
        "{err}"
    );
}

/// Names in /dev/shm that look like ours (`mp` + 26 base32 digits).
#[cfg(target_os = "linux")]
fn our_dev_shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.len() == 28
                        && n.starts_with("mp")
                        && n[2..]
                            .bytes()
                            .all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Windows: files in `%TEMP%` (and `shared_memory-rs\`, where the
/// `shared_memory` crate would put its backing files) that name ours.
#[cfg(windows)]
fn our_dev_shm_entries() -> Vec<String> {
    let temp = std::env::temp_dir();
    [temp.clone(), temp.join("shared_memory-rs")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("mp"))
        .collect()
}

// Windows: the same, with `TerminateProcess` and `%TEMP%` (sections there
// are backed by the paging file, so no file may ever appear).
#[cfg(any(target_os = "linux", windows))]
#[test]
fn nothing_is_left_in_dev_shm_after_a_sigkill() {
    use std::time::{Duration, Instant};

    fn hold(report: SharedMemory) {
        let mine = SharedMemory::create(1 << 20).unwrap();
        mine.write_at(0, b"child data");
        let name = mine.name();
        report.write_at(1, name.as_bytes());
        // Length last: the parent polls it (Release here, Acquire there).
        report.write_at(0, &[name.len() as u8]);
        std::thread::sleep(Duration::from_secs(60));
    }
    let before = our_dev_shm_entries();
    let report = SharedMemory::create(256).unwrap();
    let child = Process::spawn(hold, report.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = loop {
        let mut len = [0u8];
        report.read_at(0, &mut len);
        if len[0] != 0 {
            let mut name = vec![0; len[0] as usize];
            report.read_at(1, &mut name);
            break String::from_utf8(name).unwrap();
        }
        assert!(Instant::now() < deadline, "the child never reported");
        std::thread::sleep(Duration::from_millis(5));
    };
    // While the child lives its segment can be opened, yet has no name.
    {
        let theirs = SharedMemory::open(&name).unwrap();
        let mut b = [0u8; 10];
        theirs.read_at(0, &mut b);
        assert_eq!(&b, b"child data");
    }
    assert_eq!(our_dev_shm_entries(), before);

    child.kill().unwrap();
    assert!(child.join().unwrap_err().is_process_died());
    assert_eq!(our_dev_shm_entries(), before);
    // And the memory is gone with its last holder.
    assert!(SharedMemory::open(&name).is_err());
}

#[test]
fn an_array_passed_as_a_temporary_still_reaches_the_child() {
    // The parent keeps the arguments alive until the child has ended, so
    // the child can open memory that nothing else in the parent holds.
    fn sum(arr: SharedArray<u64>) -> u64 {
        arr.to_vec().iter().sum()
    }
    let p = Process::spawn(sum, SharedArray::from_slice(&[1, 2, 3, 4]).unwrap()).unwrap();
    assert_eq!(p.join().unwrap(), 10);
}

#[test]
fn a_value_with_its_own_lock_travels_with_the_lock() {
    fn add(v: SharedValue<u64>) {
        for _ in 0..2_000 {
            let _g = v.get_lock().expect("lock travelled").lock().unwrap();
            v.set(v.get() + 1);
        }
    }
    let v = SharedValue::with_lock(0u64).unwrap();
    let ps: Vec<_> = (0..3)
        .map(|_| Process::spawn(add, v.clone()).unwrap())
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    assert_eq!(v.get(), 6_000);
    let raw = SharedArray::<u8>::new(2).unwrap();
    assert!(
        Process::spawn(|a: SharedArray<u8>| a.get_lock().is_none(), raw.clone())
            .unwrap()
            .join()
            .unwrap()
    );
}
