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

// ------------------------------------------------------- named blocks

/// A name no other test (or other run, or checkout) uses. `mp` first, so
/// `.ci/run`'s leftovers check would see one left behind.
fn unique_name(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "mp-test-{what}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `cond` until it holds or `secs` pass; `true` if it held.
#[cfg(any(target_os = "linux", windows))]
fn within(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether the name has a file in /dev/shm (Linux) — what `.ci/run` and
/// a user's `ls /dev/shm` see.
#[cfg(target_os = "linux")]
fn in_dev_shm(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// The environment variable that makes [`named_helper_program`] act.
const HELPER_ROLE: &str = "MULTIPROC_TEST_SHM_ROLE";

/// Not a test: the body of the programs that the tests below start with
/// `std::process::Command`, unrelated to the test process (no `multiproc`
/// parent, no handshake). Does nothing unless [`HELPER_ROLE`] is set to
/// `<role>:<name>`.
#[test]
#[ignore = "helper program for the named shared-memory tests"]
fn named_helper_program() {
    let Ok(role) = std::env::var(HELPER_ROLE) else {
        return;
    };
    let (role, name) = role.split_once(':').unwrap();
    match role {
        // Create (tracked or not), say so in the block, then wait to be killed.
        "hold" | "hold-untracked" => {
            let shm = SharedMemory::builder()
                .name(name)
                .size(4096)
                .track(role == "hold")
                .create()
                .unwrap();
            shm.write_at(0, b"ready");
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
        // Open by name only, check, answer.
        "open" => {
            let shm = SharedMemory::open(name).unwrap();
            let mut got = [0u8; 11];
            shm.read_at(0, &mut got);
            assert_eq!(&got, b"from parent");
            shm.write_at(100, b"from stranger");
        }
        other => panic!("unknown role {other}"),
    }
}

fn start_helper(role: &str, name: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "named_helper_program",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(HELPER_ROLE, format!("{role}:{name}"))
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the helper's block says "ready".
#[cfg(any(target_os = "linux", windows))]
fn wait_ready(name: &str) {
    let ready = within(60, || {
        SharedMemory::open(name).is_ok_and(|shm| {
            let mut b = [0u8; 5];
            shm.read_at(0, &mut b);
            &b == b"ready"
        })
    });
    assert!(ready, "the helper never made {name}");
}

#[test]
fn a_named_block_opens_by_name_in_a_child_and_in_an_unrelated_process() {
    fn child(name: String) -> Vec<u8> {
        let shm = SharedMemory::open(&name).unwrap();
        shm.write_at(50, b"from child");
        shm.to_vec()[..11].to_vec()
    }
    fn by_handle(shm: SharedMemory) -> String {
        shm.name()
    }
    let name = unique_name("open");
    let shm = SharedMemory::builder()
        .name(&name)
        .size(4096)
        .create()
        .unwrap();
    assert_eq!(shm.name(), name);
    assert_eq!(shm.len(), 4096);
    shm.write_at(0, b"from parent");

    let p = Process::spawn(child, name.clone()).unwrap();
    assert_eq!(p.join().unwrap(), b"from parent");
    let mut b = [0u8; 10];
    shm.read_at(50, &mut b);
    assert_eq!(&b, b"from child");
    // Passed as an argument, it travels as its name.
    let p = Process::spawn(by_handle, shm.clone()).unwrap();
    assert_eq!(p.join().unwrap(), name);

    let status = start_helper("open", &name).wait().unwrap();
    assert!(status.success(), "the unrelated process failed: {status}");
    let mut b = [0u8; 13];
    shm.read_at(100, &mut b);
    assert_eq!(&b, b"from stranger");

    // A leading slash names the same object.
    let again = SharedMemory::open(&format!("/{name}")).unwrap();
    assert_eq!(again.name(), name);
    assert_eq!(again.len(), 4096);
    shm.unlink();
}

#[test]
fn a_taken_name_is_already_exists_and_a_missing_one_not_found() {
    let name = unique_name("dup");
    let first = SharedMemory::builder()
        .name(&name)
        .size(64)
        .create()
        .unwrap();
    first.write_at(0, b"first");
    for dup in [name.clone(), format!("/{name}")] {
        let err = SharedMemory::builder()
            .name(dup)
            .size(128)
            .create()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    }
    // The first is untouched.
    let mut b = [0u8; 5];
    SharedMemory::open(&name).unwrap().read_at(0, &mut b);
    assert_eq!(&b, b"first");
    first.unlink();

    let err = SharedMemory::open(&unique_name("missing")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[test]
fn invalid_names_and_sizes_are_refused() {
    let too_long = "m".repeat(if cfg!(target_vendor = "apple") {
        31
    } else {
        256
    });
    let generated = SharedMemory::create(8).unwrap().name();
    for bad in [
        "",
        "/",
        "//x",
        "a/b",
        "a\0b",
        ".",
        "..",
        too_long.as_str(),
        generated.as_str(),
    ] {
        let err = SharedMemory::builder()
            .name(bad)
            .size(64)
            .create()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
        assert!(
            err.to_string().contains("invalid shared-memory name"),
            "{err}"
        );
    }
    for bad in ["", "a/b", "a\0b", too_long.as_str()] {
        let err = SharedMemory::open(bad).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
    }
    let err = SharedMemory::builder()
        .name(unique_name("zero"))
        .create()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

#[test]
fn unlink_removes_the_name_and_keeps_the_mappings() {
    let name = unique_name("unlink");
    let shm = SharedMemory::builder()
        .name(&name)
        .size(64)
        .create()
        .unwrap();
    let other = SharedMemory::open(&name).unwrap();
    #[cfg(target_os = "linux")]
    assert!(in_dev_shm(&name));
    other.unlink(); // any process (or handle) may unlink, as in Python
    #[cfg(target_os = "linux")]
    assert!(
        within(10, || !in_dev_shm(&name)),
        "{name} still in /dev/shm"
    );
    #[cfg(unix)]
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    shm.write_at(0, b"still");
    let mut b = [0u8; 5];
    other.read_at(0, &mut b);
    assert_eq!(&b, b"still");
    // Again: nothing left to do, no error.
    shm.unlink();
    // The name is free again (Windows: only once no process maps it).
    #[cfg(unix)]
    SharedMemory::builder()
        .name(&name)
        .size(8)
        .create()
        .unwrap()
        .unlink();
}

// Windows: the same with `TerminateProcess`, and no tracker (the section
// goes with its last handle).
#[cfg(any(target_os = "linux", windows))]
#[test]
fn kill_9_of_a_program_with_a_tracked_name_leaves_nothing_in_dev_shm() {
    let name = unique_name("kill9");
    let mut helper = start_helper("hold", &name);
    wait_ready(&name);
    helper.kill().unwrap(); // SIGKILL
    helper.wait().unwrap();
    #[cfg(target_os = "linux")]
    assert!(
        within(30, || !in_dev_shm(&name)),
        "{name} outlived its SIGKILLed creator"
    );
    assert!(
        within(30, || SharedMemory::open(&name)
            .is_err_and(|e| e.kind() == ErrorKind::NotFound)),
        "{name} still opens after its creator was killed"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn kill_9_of_a_program_with_an_untracked_name_leaves_it_for_the_caller() {
    let name = unique_name("untracked");
    let mut helper = start_helper("hold-untracked", &name);
    wait_ready(&name);
    helper.kill().unwrap();
    helper.wait().unwrap();
    // Nobody removes it: it stays (checked for a while, as a tracker
    // would have needed at most a moment).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(in_dev_shm(&name));
    let shm = SharedMemory::open(&name).unwrap();
    let mut b = [0u8; 5];
    shm.read_at(0, &mut b);
    assert_eq!(&b, b"ready");
    shm.unlink();
    assert!(within(10, || !in_dev_shm(&name)));
}

#[cfg(target_os = "linux")]
#[test]
fn a_tracked_name_made_by_a_child_goes_when_the_child_ends() {
    fn make(name: String) {
        let shm = SharedMemory::builder()
            .name(&name)
            .size(64)
            .create()
            .unwrap();
        shm.write_at(0, b"child's");
    }
    fn make_untracked(name: String) {
        let shm = SharedMemory::builder()
            .name(&name)
            .size(64)
            .track(false)
            .create()
            .unwrap();
        shm.write_at(0, b"child's");
    }
    let tracked = unique_name("child");
    Process::spawn(make, tracked.clone())
        .unwrap()
        .join()
        .unwrap();
    assert!(
        within(30, || !in_dev_shm(&tracked)),
        "{tracked} outlived the child that made it"
    );
    let untracked = unique_name("child-untracked");
    Process::spawn(make_untracked, untracked.clone())
        .unwrap()
        .join()
        .unwrap();
    let shm = SharedMemory::open(&untracked).unwrap();
    assert_eq!(&shm.to_vec()[..7], b"child's");
    shm.unlink();
}

/// Python's `SharedMemory(name=…)` and ours are the same object, both
/// ways. Runs only where `python3` is (the point of the test is interop,
/// which needs Python).
#[cfg(target_os = "linux")]
#[test]
fn python_and_rust_open_each_others_named_blocks() {
    let python = |script: &str| {
        std::process::Command::new("python3")
            .args(["-c", script])
            .output()
    };
    match python("import multiprocessing.shared_memory") {
        Ok(out) if out.status.success() => {}
        _ => {
            println!("SKIPPED python interop: no python3 with multiprocessing.shared_memory");
            return;
        }
    }
    // Python creates; Rust opens, reads and unlinks. Python's tracker
    // would remove the name when the script ends: unregister it there.
    let from_py = unique_name("py");
    let out = python(&format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         m = shared_memory.SharedMemory(name='{from_py}', create=True, size=100)\n\
         m.buf[:9] = b'from py!!'\n\
         resource_tracker.unregister(m._name, 'shared_memory')\n\
         m.close()\n"
    ))
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shm = SharedMemory::open(&from_py).unwrap();
    assert_eq!(shm.len(), 100);
    assert_eq!(&shm.to_vec()[..9], b"from py!!");
    shm.unlink();
    assert!(!in_dev_shm(&from_py));

    // Rust creates; Python opens by name and writes back.
    let from_rust = unique_name("rs");
    let shm = SharedMemory::builder()
        .name(&from_rust)
        .size(100)
        .create()
        .unwrap();
    shm.write_at(0, b"from rust");
    let out = python(&format!(
        "from multiprocessing import shared_memory, resource_tracker\n\
         m = shared_memory.SharedMemory(name='{from_rust}')\n\
         resource_tracker.unregister(m._name, 'shared_memory')\n\
         assert bytes(m.buf[:9]) == b'from rust', bytes(m.buf[:9])\n\
         m.buf[10:17] = b'py here'\n\
         m.close()\n"
    ))
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(&shm.to_vec()[10..17], b"py here");
    shm.unlink();
}
