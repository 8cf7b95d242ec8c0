//! CPython's `_TestConnection`.

use super::*;

type Seq = (i32, f64, Option<i32>);

/// CPython's `_echo` echoes raw bytes (pickles included); a value and
/// bytes are different messages here, so the echo follows the test's
/// script: a value, four byte strings, a value, then byte strings
/// until the empty one.
fn echo(conn: Connection) {
    let seq: Seq = conn.recv().unwrap();
    conn.send(&seq).unwrap();
    for _ in 0..4 {
        conn.send_bytes(&conn.recv_bytes().unwrap()).unwrap();
    }
    let none: Option<i32> = conn.recv().unwrap();
    conn.send(&none).unwrap();
    echo_bytes(conn);
}

fn echo_bytes(conn: Connection) {
    loop {
        let msg = conn.recv_bytes().unwrap();
        if msg.is_empty() {
            return;
        }
        conn.send_bytes(&msg).unwrap();
    }
}

fn ints_as_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|i| i.to_ne_bytes()).collect()
}

#[test]
fn test_connection() {
    let (conn, child_conn) = pipe(true).unwrap();
    let p = Process::spawn(echo, child_conn.clone()).unwrap();

    let seq: Seq = (1, 2.25, None);
    let msg = b"hello world".to_vec();
    let longmsg = msg.repeat(10);
    let arr = ints_as_bytes(&[0, 1, 2, 3]);

    conn.send(&seq).unwrap();
    assert_eq!(conn.recv_timeout::<Seq>(LONG).unwrap(), seq);

    conn.send_bytes(&msg).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), msg);

    // recv_bytes_into(buffer): an `array('i', [0]*10)` is 40 bytes.
    let mut buffer = [0u8; 40];
    let mut expected = arr.clone();
    expected.resize(40, 0);
    conn.send_bytes(&arr).unwrap();
    assert_eq!(conn.recv_bytes_into_at(&mut buffer, 0).unwrap(), arr.len());
    assert_eq!(buffer.to_vec(), expected);

    // recv_bytes_into(buffer, 3 * itemsize)
    let mut buffer = [0u8; 40];
    let mut expected = vec![0u8; 3 * 4];
    expected.extend_from_slice(&arr);
    expected.resize(40, 0);
    conn.send_bytes(&arr).unwrap();
    assert_eq!(
        conn.recv_bytes_into_at(&mut buffer, 3 * 4).unwrap(),
        arr.len()
    );
    assert_eq!(buffer.to_vec(), expected);

    // BufferTooShort. Python hands the message back in the exception
    // (`e.args == (longmsg,)`); here it stays in the pipe for the next
    // receive.
    let mut buffer = [b' '; 40];
    conn.send_bytes(&longmsg).unwrap();
    let err = conn.recv_bytes_into_at(&mut buffer, 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BufferTooShort, "{err}");
    assert_eq!(conn.recv_bytes().unwrap(), longmsg);

    assert!(!conn.poll(Duration::ZERO).unwrap()); // poll(), poll(-1)
    let (ready, elapsed) = timed(|| conn.poll(TIMEOUT_200).unwrap());
    assert!(!ready);
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");

    conn.send(&None::<i32>).unwrap();
    assert!(conn.poll(LONG).unwrap());
    assert_eq!(conn.recv::<Option<i32>>().unwrap(), None);

    conn.send_bytes(b"").unwrap(); // tell the child to quit
    child_conn.close();
    // EOFError: the other end is gone.
    let err = conn.recv_timeout::<Seq>(LONG).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Disconnected | ErrorKind::PeerDied),
        "{err}"
    );
    let err = conn.recv_bytes().unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Disconnected | ErrorKind::PeerDied),
        "{err}"
    );
    p.join().unwrap();
}

/// The 16 MiB message of CPython's `test_connection`, on its own.
#[test]
fn test_connection_really_big_msg() {
    let (conn, child_conn) = pipe(true).unwrap();
    let p = Process::spawn(echo_bytes, child_conn).unwrap();
    let really_big_msg = vec![b'X'; 1024 * 1024 * 16]; // 16 MiB
    conn.send_bytes(&really_big_msg).unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), really_big_msg);
    conn.send_bytes(b"").unwrap();
    p.join().unwrap();
}

#[test]
fn test_duplex_false() {
    let (reader, writer) = pipe(false).unwrap();
    writer.send(&1i32).unwrap();
    assert_eq!(reader.recv::<i32>().unwrap(), 1);
    // OSError in Python.
    assert_eq!(
        reader.send(&2i32).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(
        writer.recv::<i32>().unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(
        writer.poll(Duration::ZERO).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
}

/// The parent closes its copy of the child's end right after the start,
/// before the child may have opened it.
#[test]
fn test_spawn_close() {
    let (conn, child_conn) = pipe(true).unwrap();
    let p = Process::spawn(echo_bytes, child_conn.clone()).unwrap();
    child_conn.close(); // this might complete before child initializes
    conn.send_bytes(b"hello").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hello");
    conn.send_bytes(b"").unwrap();
    conn.close();
    p.join().unwrap();
}

/// `send_bytes(buf, offset, size)` is a slice here; the out-of-range
/// offsets Python refuses are out-of-range slices (a panic).
#[test]
fn test_sendbytes() {
    let msg = b"abcdefghijklmnopqrstuvwxyz";
    let (a, b) = pipe(true).unwrap();
    a.send_bytes(msg).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), msg);
    a.send_bytes(&msg[5..]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[5..]);
    a.send_bytes(&msg[7..7 + 8]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), &msg[7..15]);
    a.send_bytes(&msg[26..]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
    a.send_bytes(&msg[26..26]).unwrap();
    assert_eq!(b.recv_bytes().unwrap(), b"");
}

/// `with a, b:` closes both ends on the way out (here: `close()` at the
/// end of the block; dropping would too).
#[test]
fn test_context() {
    let (a, b) = pipe(true).unwrap();
    {
        a.send(&1729i32).unwrap();
        assert_eq!(b.recv::<i32>().unwrap(), 1729);
        assert!(!a.closed());
        assert!(!b.closed());
        a.close();
        b.close();
    }
    assert!(a.closed());
    assert!(b.closed());
    // OSError in Python.
    let err = a.recv::<i32>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let err = b.recv::<i32>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}
