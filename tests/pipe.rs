//! `pipe()` and `Connection` across processes, `wait`, and a model test.

use std::time::Duration;

use multiproc::{pipe, Connection, ErrorKind, Event, Process, Queue};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

multiproc::test_support!();

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Msg {
    Ping(u64),
    Text(String),
    Blob(Vec<u8>),
    Stop,
}

fn echo(conn: Connection) {
    loop {
        match conn.recv::<Msg>().unwrap() {
            Msg::Stop => return,
            m => conn.send(&m).unwrap(),
        }
    }
}

#[test]
fn ping_pong_with_a_child() {
    let (here, there) = pipe(true).unwrap();
    let p = Process::spawn(echo, there).unwrap();
    for i in 0..2_000 {
        here.send(&Msg::Ping(i)).unwrap();
        assert_eq!(here.recv::<Msg>().unwrap(), Msg::Ping(i));
    }
    let blob = Msg::Blob((0..300_000u32).map(|i| i as u8).collect());
    here.send(&blob).unwrap();
    assert_eq!(here.recv::<Msg>().unwrap(), blob);
    here.send(&Msg::Stop).unwrap();
    p.join().unwrap();
}

#[test]
fn one_way_pipe_ends_only_do_their_job() {
    fn sender(tx: Connection) {
        for i in 0..100u32 {
            tx.send_bytes(&i.to_le_bytes()).unwrap();
        }
    }
    let (rx, tx) = pipe(false).unwrap();
    assert_eq!(
        rx.send_bytes(b"x").unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(tx.recv_bytes().unwrap_err().kind(), ErrorKind::InvalidState);
    let p = Process::spawn(sender, tx).unwrap();
    let mut buf = Vec::new();
    for i in 0..100u32 {
        assert_eq!(rx.recv_bytes_into(&mut buf).unwrap(), 4);
        assert_eq!(buf, i.to_le_bytes());
    }
    p.join().unwrap();
}

#[test]
fn recv_from_a_dead_sender_is_an_error_not_a_hang() {
    fn die(conn: Connection) {
        conn.send(&Msg::Text("last words".into())).unwrap();
        std::process::abort();
    }
    let (here, there) = pipe(true).unwrap();
    let p = Process::spawn(die, there).unwrap();
    // What was sent before the death still arrives…
    assert_eq!(
        here.recv_timeout::<Msg>(Duration::from_secs(30)).unwrap(),
        Msg::Text("last words".into())
    );
    // …then the death is reported.
    let err = here
        .recv_timeout::<Msg>(Duration::from_secs(30))
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::PeerDied | ErrorKind::Disconnected),
        "{err}"
    );
    // It says so in the pipe's terms (the child's end is dropped as it
    // dies, or it dies first).
    let text = err.to_string();
    assert!(
        text.contains("Connection::recv_timeout: the process at the other end of the pipe died")
            || text.contains("Connection::recv_timeout: the other end of the pipe was dropped"),
        "{text}"
    );
    assert!(p.join().is_err());
}

#[test]
fn errors_name_the_connection_call() {
    let (rx, tx) = pipe(false).unwrap();
    let err = rx.recv_timeout::<u8>(Duration::from_millis(5)).unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(
        err.to_string(),
        "timed out (Connection::recv_timeout: nothing arrived on the pipe)"
    );
    let err = rx.send(&1u8).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(
        err.to_string()
            .contains("Connection::send: this end of a one-way pipe cannot send"),
        "{err}"
    );
    tx.send(&1u8).unwrap();
    let err = rx.recv_bytes().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(
        err.to_string()
            .contains("Connection::recv_bytes: expected bytes, got a value"),
        "{err}"
    );
}

#[test]
fn a_value_received_as_bytes_is_a_protocol_error() {
    let (a, b) = pipe(true).unwrap();
    a.send(&1u32).unwrap();
    assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::Protocol);
    a.send_bytes(b"raw").unwrap();
    assert_eq!(b.recv::<u32>().unwrap_err().kind(), ErrorKind::Protocol);
}

#[test]
fn poll_and_wait_over_connections_and_processes() {
    /// Sends `Ping(n)` once `go` is set (at once if it is already).
    fn when_set((conn, go, n): (Connection, Event, u64)) {
        go.wait_timeout(Duration::from_secs(60)).unwrap();
        conn.send(&Msg::Ping(n)).unwrap();
    }
    let (a, a_child) = pipe(true).unwrap();
    let (b, b_child) = pipe(true).unwrap();
    assert!(!a.poll(Duration::ZERO).unwrap());
    // `a`'s child sends only when told: however the two are scheduled,
    // `b` is ready first.
    let (a_go, b_go) = (Event::new().unwrap(), Event::new().unwrap());
    b_go.set();
    let pa = Process::spawn(when_set, (a_child, a_go.clone(), 400)).unwrap();
    let pb = Process::spawn(when_set, (b_child, b_go, 10)).unwrap();
    let ready = multiproc::wait(&[&a, &b], Some(Duration::from_secs(30)));
    assert_eq!(ready, vec![1]);
    assert!(b.poll(Duration::ZERO).unwrap());
    assert_eq!(b.recv::<Msg>().unwrap(), Msg::Ping(10));
    // A process is ready once it has ended.
    let ready = multiproc::wait(&[&pb], Some(Duration::from_secs(30)));
    assert_eq!(ready, vec![0]);
    assert!(!a.poll(Duration::ZERO).unwrap());
    a_go.set();
    assert!(a.poll(Duration::from_secs(30)).unwrap());
    assert_eq!(a.recv::<Msg>().unwrap(), Msg::Ping(400));
    // Nothing ready (the other end is alive and silent): wait returns
    // empty after its timeout. (`a`'s child has exited by now, which makes
    // `a` ready: its next recv reports the disconnection.)
    let (c, _d) = pipe(true).unwrap();
    assert!(multiproc::wait(&[&c], Some(Duration::from_millis(10))).is_empty());
    pa.join().unwrap();
    pb.join().unwrap();
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        any::<u64>().prop_map(Msg::Ping),
        ".{0,64}".prop_map(Msg::Text),
        prop::collection::vec(any::<u8>(), 0..5_000).prop_map(Msg::Blob),
    ]
}

/// The pipe against the simplest model there is: what goes in comes out,
/// in order, unchanged — here through a real child process that echoes.
#[test]
fn echo_through_a_child_matches_the_model() {
    let (here, there) = pipe(true).unwrap();
    let child = Process::spawn(echo, there).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
    runner
        .run(&prop::collection::vec(msg(), 1..40), |msgs| {
            // Send a burst, then read it back: exercises a full ring too.
            for m in &msgs {
                here.send(m).unwrap();
            }
            for m in &msgs {
                prop_assert_eq!(&here.recv::<Msg>().unwrap(), m);
            }
            Ok(())
        })
        .unwrap();
    here.send(&Msg::Stop).unwrap();
    child.join().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// In-process: interleaved sends and receives match a FIFO model.
    #[test]
    fn pipe_matches_a_fifo_model(ops in prop::collection::vec(prop::option::of(msg()), 1..100)) {
        let (a, b) = pipe(true).unwrap();
        let mut model = std::collections::VecDeque::new();
        for op in ops {
            match op {
                Some(m) => {
                    a.send(&m).unwrap();
                    model.push_back(m);
                }
                None => match model.pop_front() {
                    Some(m) => prop_assert_eq!(b.recv::<Msg>().unwrap(), m),
                    None => prop_assert!(!b.poll(Duration::ZERO).unwrap()),
                },
            }
        }
    }
}

fn send_then_return((conn, n): (Connection, u32)) {
    for i in 0..n {
        conn.send(&i).unwrap();
    }
}

#[test]
fn closing_the_parents_copy_of_a_childs_end_is_pythons_idiom_and_eof_follows() {
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(send_then_return, (w.clone(), 3)).unwrap();
    // As Python's `w.close()` after `p.start()`: this copy was never used
    // here, so the child's sends are untouched.
    w.close();
    assert!(w.closed());
    assert_eq!(w.send(&9u32).unwrap_err().kind(), ErrorKind::InvalidState);
    let got: Vec<u32> = (0..3).map(|_| r.recv::<u32>().unwrap()).collect();
    assert_eq!(got, vec![0, 1, 2]);
    // The child has returned and dropped its end: EOF, not a hang.
    let eof = r.recv_timeout::<u32>(Duration::from_secs(60)).unwrap_err();
    assert!(eof.is_disconnected(), "{eof}");
    p.join().unwrap();
}

#[test]
fn close_after_sending_gives_the_receiver_what_was_sent_then_eof() {
    let (a, b) = pipe(true).unwrap();
    a.send(&1u8).unwrap();
    a.close();
    a.close(); // twice is fine
    assert_eq!(b.recv::<u8>().unwrap(), 1);
    let eof = b.recv_timeout::<u8>(Duration::from_secs(10)).unwrap_err();
    assert!(eof.is_disconnected(), "{eof}");
    assert_eq!(a.recv::<u8>().unwrap_err().kind(), ErrorKind::InvalidState);
}

#[test]
fn recv_bytes_into_at_keeps_a_message_that_does_not_fit() {
    let (a, b) = pipe(true).unwrap();
    b.send_bytes(&[7u8; 10]).unwrap();
    b.send_bytes(b"xy").unwrap();
    let mut buf = [0u8; 12];
    let e = a.recv_bytes_into_at(&mut buf, 4).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BufferTooShort, "{e}");
    assert_eq!(buf, [0u8; 12], "nothing written");
    // Nothing lost: the same message comes next, in order.
    assert_eq!(a.recv_bytes_into_at(&mut buf, 2).unwrap(), 10);
    assert_eq!(&buf[2..], &[7u8; 10]);
    assert_eq!(
        a.recv_bytes_into_at(&mut buf, 12).unwrap_err().kind(),
        ErrorKind::BufferTooShort
    );
    assert_eq!(
        a.recv_bytes_into_at(&mut buf, 13).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(a.recv_bytes().unwrap(), b"xy");
}

#[test]
fn wait_covers_queues() {
    fn put_later((q, go): (Queue<u8>, Event)) {
        go.wait().unwrap();
        q.put(&5).unwrap();
    }
    let q = Queue::<u8>::new().unwrap();
    let (c, _d) = pipe(true).unwrap();
    let go = Event::new().unwrap();
    let p = Process::spawn(put_later, (q.clone(), go.clone())).unwrap();
    assert!(multiproc::wait(&[&c, &q], Some(Duration::from_millis(20))).is_empty());
    go.set();
    let ready = multiproc::wait(&[&c, &q], Some(Duration::from_secs(60)));
    assert_eq!(ready, vec![1]);
    assert_eq!(q.get().unwrap(), 5);
    p.join().unwrap();
}

fn echo_bytes(conn: Connection) {
    while let Ok(b) = conn.recv_bytes() {
        conn.send_bytes(&b).unwrap();
    }
}

#[test]
fn messages_of_any_size_cross_a_pipe_both_ways() {
    // 16 MiB (CPython's test_connection) and a value of 32 MiB: far over
    // the ring's 256 KiB, streamed in pieces while the other side reads.
    let (a, b) = pipe(true).unwrap();
    let p = Process::spawn(echo_bytes, b).unwrap();
    let big: Vec<u8> = (0..16usize << 20)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    a.send_bytes(&big).unwrap();
    assert!(a.recv_bytes().unwrap() == big, "16 MiB back, byte for byte");
    // Small messages around a long one keep their order.
    a.send_bytes(b"small").unwrap();
    a.send_bytes(&big[..3 << 20]).unwrap();
    a.send_bytes(b"tail").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"small");
    assert!(a.recv_bytes().unwrap() == big[..3 << 20]);
    assert_eq!(a.recv_bytes().unwrap(), b"tail");
    drop(a);
    p.join().unwrap();

    let (a, b) = pipe(true).unwrap();
    let values: Vec<u64> = (0..4u64 << 20).collect();
    let sent = values.clone();
    let p = Process::spawn(
        |(b, v): (Connection, Vec<u64>)| b.send(&v).unwrap(),
        (b, sent),
    )
    .unwrap();
    assert!(a.recv::<Vec<u64>>().unwrap() == values);
    p.join().unwrap();
}

#[test]
fn a_long_message_that_does_not_fit_recv_bytes_into_at_stays_for_recv_bytes() {
    let (a, b) = pipe(true).unwrap();
    let long = vec![5u8; 3 << 20];
    let sent = long.clone();
    let t = std::thread::spawn(move || b.send_bytes(&sent).unwrap());
    let mut small = vec![0u8; 1 << 20];
    let e = a.recv_bytes_into_at(&mut small, 0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BufferTooShort, "{e}");
    assert!(a.poll(Duration::ZERO).unwrap(), "still there");
    let mut fits = vec![0u8; 4 << 20];
    assert_eq!(a.recv_bytes_into_at(&mut fits, 1).unwrap(), 3 << 20);
    assert!(fits[1..1 + (3 << 20)] == long[..]);
    t.join().unwrap();
}

/// Sends `n` tagged messages, each long enough to show interleaving.
fn send_tagged((conn, tag, n): (Connection, u32, u32)) {
    for i in 0..n {
        conn.send(&(tag, i, vec![tag as u8; 300])).unwrap();
    }
}

#[test]
fn several_children_write_one_end_and_eof_follows_the_last() {
    // Python's pattern: every child gets the writing end, the parent
    // keeps nothing of it and reads until EOF.
    let (r, w) = pipe(false).unwrap();
    let children: Vec<_> = (0..4)
        .map(|tag| Process::spawn(send_tagged, (w.clone(), tag, 200)).unwrap())
        .collect();
    drop(w);
    let mut next = [0u32; 4];
    loop {
        match r.recv_timeout::<(u32, u32, Vec<u8>)>(Duration::from_secs(60)) {
            Ok((tag, i, body)) => {
                // Whole messages, each child's in its order.
                assert_eq!(i, next[tag as usize], "child {tag}");
                assert_eq!(body, vec![tag as u8; 300]);
                next[tag as usize] += 1;
            }
            Err(e) => {
                assert!(e.is_disconnected(), "{e}");
                break;
            }
        }
    }
    assert_eq!(next, [200; 4]);
    for p in children {
        p.join().unwrap();
    }
}

fn recv_one((conn, out): (Connection, Queue<u32>)) {
    let n: u32 = conn.recv().unwrap();
    out.put(&n).unwrap();
}

#[test]
fn several_processes_read_one_end_each_message_once() {
    let (r, w) = pipe(false).unwrap();
    let out = Queue::new().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| Process::spawn(recv_one, (r.clone(), out.clone())).unwrap())
        .collect();
    // The parent reads from the same end too.
    for n in 0..4u32 {
        w.send(&n).unwrap();
    }
    let mine: u32 = r.recv_timeout(Duration::from_secs(60)).unwrap();
    let mut got: Vec<u32> = (0..3)
        .map(|_| out.get_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    got.push(mine);
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
    for p in children {
        p.join().unwrap();
    }
}

fn poll_only(conn: Connection) -> bool {
    conn.poll(Duration::from_secs(5)).unwrap()
}

#[test]
fn a_child_that_polls_an_end_leaves_the_message_for_the_parent() {
    // CPython's _TestPoll.test_boundaries, with the parent's copy kept.
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(poll_only, r.clone()).unwrap();
    w.send_bytes(b"first").unwrap();
    w.send_bytes(b"second").unwrap();
    w.close();
    assert!(p.join().unwrap());
    assert_eq!(r.recv_bytes().unwrap(), b"first");
    assert_eq!(r.recv_bytes().unwrap(), b"second");
    assert!(r.recv_bytes().unwrap_err().is_disconnected());
}

fn send_then_abort(conn: Connection) {
    conn.send(&1u32).unwrap();
    std::process::abort();
}

#[test]
fn a_writer_killed_beside_others_breaks_nothing_until_the_end() {
    let (r, w) = pipe(false).unwrap();
    let dead = Process::spawn(send_then_abort, w.clone()).unwrap();
    assert!(dead.join().is_err());
    assert_eq!(r.recv_timeout::<u32>(Duration::from_secs(60)).unwrap(), 1);
    // The parent still holds the writing end: the pipe works on.
    w.send(&2u32).unwrap();
    assert_eq!(r.recv_timeout::<u32>(Duration::from_secs(60)).unwrap(), 2);
    assert!(r
        .recv_timeout::<u32>(Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    // The last live holder leaves; one died holding the end, so the
    // reader is told a peer died rather than a clean EOF.
    drop(w);
    let err = r.recv_timeout::<u32>(Duration::from_secs(60)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
}

#[test]
fn a_writer_kept_by_the_parent_holds_the_pipe_open() {
    // A clone kept here counts, as a descriptor kept open does in Python:
    // the child's end of work is not EOF while the parent could send.
    let (r, w) = pipe(false).unwrap();
    let p = Process::spawn(send_then_return, (w.clone(), 2)).unwrap();
    p.join().unwrap();
    assert_eq!(r.recv::<u32>().unwrap(), 0);
    assert_eq!(r.recv::<u32>().unwrap(), 1);
    assert!(r
        .recv_timeout::<u32>(Duration::from_millis(200))
        .unwrap_err()
        .is_timeout());
    w.close();
    assert!(r
        .recv_timeout::<u32>(Duration::from_secs(60))
        .unwrap_err()
        .is_disconnected());
}

fn send_through((conn, n): (Connection, u32)) -> u32 {
    conn.send(&n).unwrap();
    n
}

#[test]
fn pool_workers_write_results_into_one_end() {
    let pool = multiproc::Pool::new(2).unwrap();
    let (r, w) = pipe(false).unwrap();
    let tasks: Vec<_> = (0..20u32)
        .map(|n| pool.apply_async(send_through, (w.clone(), n)).unwrap())
        .collect();
    for t in tasks {
        t.get().unwrap();
    }
    let mut got: Vec<u32> = (0..20)
        .map(|_| r.recv_timeout(Duration::from_secs(60)).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    drop(pool);
    drop(w);
    assert!(r
        .recv_timeout::<u32>(Duration::from_secs(60))
        .unwrap_err()
        .is_disconnected());
}
