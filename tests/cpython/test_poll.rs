//! CPython's `_TestPoll`.

use super::*;

#[test]
fn test_empty_string() {
    let (a, b) = pipe(true).unwrap();
    assert!(!a.poll(Duration::ZERO).unwrap());
    b.send_bytes(b"").unwrap();
    assert!(a.poll(Duration::ZERO).unwrap());
    assert!(a.poll(Duration::ZERO).unwrap());
}

const STRINGS: [&[u8]; 8] = [b"hello", b"", b"a", b"b", b"", b"bye", b"", b"lop"];

fn child_strings(conn: Connection) {
    for s in STRINGS {
        sleep(Duration::from_millis(50)); // CPython: 0.1 s
        conn.send_bytes(s).unwrap();
    }
}

#[test]
fn test_strings() {
    let (a, b) = pipe(true).unwrap();
    let p = Process::spawn(child_strings, b).unwrap();
    for s in STRINGS {
        assert!(a.poll(LONG).unwrap());
        assert_eq!(a.recv_bytes().unwrap(), s);
    }
    p.join().unwrap();
}

fn child_dont_merge(b: Connection) {
    b.send_bytes(b"a").unwrap();
    b.send_bytes(b"b").unwrap();
    b.send_bytes(b"cd").unwrap();
}

#[test]
fn test_dont_merge() {
    let (a, b) = pipe(true).unwrap();
    assert!(!a.poll(Duration::ZERO).unwrap());
    assert!(!a.poll(TIMEOUT1).unwrap());
    let p = Process::spawn(child_dont_merge, b).unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"a");
    assert!(a.poll(Duration::from_secs(1)).unwrap());
    assert!(a.poll(Duration::from_secs(1)).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"b");
    assert!(a.poll(Duration::from_secs(1)).unwrap());
    assert!(a.poll(Duration::from_secs(1)).unwrap());
    assert!(a.poll(Duration::ZERO).unwrap());
    assert_eq!(a.recv_bytes().unwrap(), b"cd");
    p.join().unwrap();
}

/// Polling in the child must not take the message (or a part of it) away
/// from the parent, which reads the same end afterwards.
fn child_boundaries(r: Connection) {
    let _ = r.poll(Duration::from_secs(5));
}

#[test]
fn test_boundaries() {
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(child_boundaries, r.clone()).unwrap();
    sleep(Duration::from_millis(500)); // CPython: 2 s
    let l: [&[u8]; 2] = [b"first", b"second"];
    for obj in l {
        w.send_bytes(obj).unwrap();
    }
    w.close();
    p.join().unwrap();
    assert!(l.contains(&r.recv_bytes().unwrap().as_slice()));
}
