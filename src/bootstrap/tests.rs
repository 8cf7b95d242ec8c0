//! Unit tests of the handshake: markers, the rendezvous, generations.

use super::child::*;

use super::parent::*;
use super::rendezvous::*;
use super::*;
use crate::segment::Segment;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ipc_channel::ipc;

#[test]
fn marker_round_trips() {
    let token = [7u8; 32];
    let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
    let m = format!("v2:42:{}:{}", hex(&token), seg.handle());
    assert_eq!(parse_marker(&m).unwrap(), (42, token, seg.handle()));
}

#[test]
fn bad_markers_are_refused() {
    let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
    let h = seg.handle().to_string();
    let zeros = "0".repeat(64);
    for m in [
        "",
        "1",
        &format!("v1:1:{zeros}:{h}"),
        &format!("v3:1:{zeros}:{h}"),
        &format!("v2:x:{zeros}:{h}"),
        "v2:1:zz:srv",
        &format!("v2:1:{zeros}:"),
        &format!("v2:1:{zeros}:/tmp/.tmpabcdef/socket"),
        &format!("v2:1:{zeros}:{h}:x"),
        &format!("v2:1:{}:{h}", "é".repeat(32)),
    ] {
        assert!(parse_marker(m).is_err(), "{m:?} accepted");
    }
}

#[test]
fn token_comparison() {
    let a = [1u8; 32];
    let mut b = a;
    assert!(tokens_equal(&a, &b));
    b[31] ^= 1;
    assert!(!tokens_equal(&a, &b));
}

/// A server name every platform's check accepts.
fn a_server_name(i: u8) -> String {
    format!("67e55044-10b1-426f-9247-bb680e5fe0{i:02x}")
}

fn snapshot(seg: &Segment) -> Vec<u8> {
    let mut bytes = vec![0u8; RENDEZVOUS_LEN];
    seg.load(0, &mut bytes);
    bytes
}

#[test]
fn published_generations_read_back_newest_first() {
    let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
    let mut buf = vec![0u8; RENDEZVOUS_LEN];
    assert!(read_newest(&seg, &mut buf).is_err(), "nothing published");
    for n in 1..=MAX_GENERATIONS {
        let name = a_server_name(n as u8);
        publish_slot(&seg, n, &name).unwrap();
        let bytes = snapshot(&seg);
        assert_eq!(parse_generation(&bytes).unwrap(), (n as u32, name.as_str()));
        assert_eq!(
            read_newest(&seg, &mut buf).unwrap(),
            (n as u32, name.as_str())
        );
    }
    assert!(publish_slot(&seg, MAX_GENERATIONS + 1, "x").is_err());
    assert!(publish_slot(&seg, 1, &"x".repeat(SLOT_NAME_MAX + 1)).is_err());
    assert!(publish_slot(&seg, 1, "").is_err());
}

#[test]
fn garbage_in_the_rendezvous_is_refused() {
    let good = {
        let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
        publish_slot(&seg, 1, &a_server_name(1)).unwrap();
        snapshot(&seg)
    };
    assert!(parse_generation(&good).is_ok());
    let with = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases = [
        good[..RENDEZVOUS_LEN - 1].to_vec(),
        [good.clone(), vec![0]].concat(),
        with(PUBLISHED_AT, &0u32.to_le_bytes()),
        with(PUBLISHED_AT, &(MAX_GENERATIONS as u32 + 1).to_le_bytes()),
        with(PUBLISHED_AT, &u32::MAX.to_le_bytes()),
        // Generation 2 announced but its slot is empty.
        with(PUBLISHED_AT, &2u32.to_le_bytes()),
        with(SLOTS_AT, &0u32.to_le_bytes()),
        with(SLOTS_AT, &(SLOT_NAME_MAX as u32 + 1).to_le_bytes()),
        with(SLOTS_AT, &u32::MAX.to_le_bytes()),
        with(SLOTS_AT + 4, &[0xff]),
        with(SLOTS_AT + 4, &[0]),
        with(SLOTS_AT + 4, b"\n"),
    ];
    for (i, bad) in cases.iter().enumerate() {
        assert!(parse_generation(bad).is_err(), "case {i} accepted");
    }
}

proptest::proptest! {
    #[test]
    fn parse_generation_never_panics(
        count in proptest::prelude::any::<u32>(),
        len in proptest::prelude::any::<u32>(),
        name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..SLOT_LEN),
        small_count in 0u32..=(MAX_GENERATIONS as u32 + 1),
        small_len in 0u32..=(SLOT_NAME_MAX as u32 + 1),
    ) {
        for (count, len) in [(count, len), (small_count, small_len), (small_count, len)] {
            let mut bytes = vec![0u8; RENDEZVOUS_LEN];
            bytes[..4].copy_from_slice(&count.to_le_bytes());
            let n = (count as usize).clamp(1, MAX_GENERATIONS);
            let slot = slot_at(n);
            bytes[slot..slot + 4].copy_from_slice(&len.to_le_bytes());
            let room = (SLOT_LEN - 4).min(name.len());
            bytes[slot + 4..slot + 4 + room].copy_from_slice(&name[..room]);
            if let Ok((g, server)) = parse_generation(&bytes) {
                proptest::prop_assert_eq!(g, count);
                proptest::prop_assert_eq!(server.len(), len as usize);
            }
        }
    }
}

/// A start of a "child" that is this very process (so that its hello's
/// pid is right), with generation 1 published as `launch` does.
fn start_here(token: Token) -> Handshake {
    let rendezvous = Segment::create(RENDEZVOUS_LEN).unwrap();
    let (server, name) = new_server().unwrap();
    publish_slot(&rendezvous, 1, &name).unwrap();
    fn double(x: u32) -> u32 {
        2 * x
    }
    let payload = Payload {
        name: "unit".into(),
        parent_name: MAIN_PROCESS.into(),
        task: TaskRef::of(&double, task_key(&token)),
        args: vec![21],
        log: crate::logging::prepare().unwrap().offer(),
    };
    begin(
        token,
        std::process::id(),
        payload,
        rendezvous,
        server,
        name,
        Instant::now(),
    )
    .unwrap()
}

/// The rendezvous, opened by its handle as a child does.
fn rendezvous_of(handshake: &Handshake) -> Segment {
    let handle = handshake.start.lock().rendezvous.as_ref().unwrap().handle();
    Segment::open(&handle).unwrap()
}

/// The child's side, on a thread: waits for its `Config` until `limit`.
fn child_side(
    rendezvous: Segment,
    token: Token,
    limit: Duration,
) -> std::thread::JoinHandle<std::result::Result<String, String>> {
    std::thread::spawn(move || {
        let (reply, config_rx) = ipc::channel::<Config>().unwrap();
        let deadline = Instant::now() + limit;
        await_config(&rendezvous, &token, &reply, config_rx, deadline).map(|c| c.name)
    })
}

fn newest(handshake: &Handshake) -> (usize, String) {
    let st = handshake.start.lock();
    (
        st.generations.len(),
        st.generations.last().unwrap().name.clone(),
    )
}

fn impostor_hello(server: &str, token: Token) -> IpcReceiver<Config> {
    let (reply, rx) = ipc::channel::<Config>().unwrap();
    IpcSender::<Hello>::connect(server.to_string())
        .unwrap()
        .send(Hello::Worker {
            token,
            pid: std::process::id(),
            reply,
        })
        .unwrap();
    rx
}

fn wait_for_generation(handshake: &Handshake, n: usize) {
    let until = Instant::now() + Duration::from_secs(10);
    while newest(handshake).0 < n {
        assert!(Instant::now() < until, "generation {n} never came");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_refused_peer_makes_a_new_generation_and_the_child_gets_its_config() {
    let token = random_token().unwrap();
    let handshake = start_here(token);
    let (_, first) = newest(&handshake);
    let nothing = impostor_hello(&first, [0; 32]);
    wait_for_generation(&handshake, 2);
    // The impostor gets nothing. On Unix its channel also reports that
    // the parent dropped the reply sender; under Wine a sender that
    // travelled through this same process was not seen to disconnect
    // (`Empty` after 5 s), so there the check is that nothing arrives.
    let got = nothing.try_recv_timeout(Duration::from_secs(5));
    let dropped = matches!(
        got,
        Err(ipc_channel::TryRecvError::IpcError(
            ipc_channel::IpcError::Disconnected
        ))
    );
    let nothing_came = matches!(got, Err(ipc_channel::TryRecvError::Empty));
    assert!(
        dropped || (cfg!(windows) && nothing_came),
        "{:?}",
        got.map(|c| c.name)
    );
    let child = child_side(rendezvous_of(&handshake), token, Duration::from_secs(10));
    assert_eq!(child.join().unwrap().unwrap(), "unit");
    let link = handshake.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(link.is_ok());
    let st = handshake.start.lock();
    assert!(matches!(st.claim, Claim::Claimed(2)));
    assert_eq!(st.refused, 1);
    assert!(st.rendezvous.is_none(), "kept after the claim");
}

#[test]
fn a_silent_peer_is_outlasted_by_a_new_generation() {
    let token = random_token().unwrap();
    let handshake = start_here(token);
    let (_, first) = newest(&handshake);
    // Connects first and says nothing: generation 1's thread waits in
    // `recv` for as long as this connection stays open.
    let silent = IpcSender::<Hello>::connect(first).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let child = child_side(rendezvous_of(&handshake), token, Duration::from_secs(10));
    assert_eq!(child.join().unwrap().unwrap(), "unit");
    assert!(handshake
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .is_ok());
    {
        let st = handshake.start.lock();
        assert!(matches!(st.claim, Claim::Claimed(n) if n >= 2));
        assert!(st.silences >= 1);
        assert!(!st.generations[0].done, "generation 1 is still held");
    }
    // Once the silent peer closes, generation 1's thread ends.
    drop(silent);
    let until = Instant::now() + Duration::from_secs(10);
    while !handshake.start.lock().generations[0].done {
        assert!(Instant::now() < until, "generation 1 never ended");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_second_valid_hello_is_dropped_without_a_word() {
    let token = random_token().unwrap();
    let handshake = start_here(token);
    let (first_reply, first) = ipc::channel::<Config>().unwrap();
    let (second_reply, second) = ipc::channel::<Config>().unwrap();
    let (_conn_tx, conn) = ipc::channel::<Hello>().unwrap();
    let (_conn2_tx, conn2) = ipc::channel::<Hello>().unwrap();
    // Generation 1 is still waiting in `accept`; claim as 2 and 3 would.
    {
        let mut st = handshake.start.lock();
        for i in 0..2 {
            st.generations.push(Generation {
                name: format!("unused-{i}"),
                done: false,
                woken: true,
            });
        }
    }
    handshake.start.claim(2, conn, first_reply);
    handshake.start.claim(3, conn2, second_reply);
    assert_eq!(
        first.try_recv_timeout(Duration::from_secs(5)).unwrap().name,
        "unit"
    );
    assert!(matches!(
        second.try_recv_timeout(Duration::from_secs(5)),
        Err(ipc_channel::TryRecvError::IpcError(
            ipc_channel::IpcError::Disconnected
        ))
    ));
    assert!(handshake
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .is_ok());
    assert!(matches!(handshake.start.lock().claim, Claim::Claimed(2)));
}

#[test]
fn refusing_every_generation_fails_the_start() {
    let token = random_token().unwrap();
    let handshake = start_here(token);
    let rendezvous = rendezvous_of(&handshake);
    let mut replies = Vec::new();
    for n in 1..=MAX_GENERATIONS {
        wait_for_generation(&handshake, n);
        let (at, name) = newest(&handshake);
        assert_eq!(at, n);
        replies.push(impostor_hello(&name, [0xee; 32]));
    }
    let err = handshake
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .err()
        .expect("the start succeeded");
    assert_eq!(err.kind(), ErrorKind::Handshake);
    let text = err.to_string();
    assert!(text.contains("refused 16 connections"), "{text}");
    assert!(text.contains("wrong token"), "{text}");
    assert_eq!(newest(&handshake).0, MAX_GENERATIONS);
    // And now nobody can claim it: the child gets nothing.
    let child = child_side(rendezvous, token, Duration::from_millis(300));
    assert!(child.join().unwrap().is_err());
    for r in replies {
        assert!(r.try_recv_timeout(Duration::from_secs(1)).is_err());
    }
}

#[test]
fn a_closed_start_sends_nothing_and_wakes_its_servers() {
    let token = random_token().unwrap();
    let mut handshake = start_here(token);
    let closed = handshake.close();
    assert_eq!(closed.claimed, None);
    let until = Instant::now() + Duration::from_secs(10);
    while !handshake.start.lock().generations[0].done {
        assert!(Instant::now() < until, "generation 1 was not woken");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(handshake.start.lock().rendezvous.is_none());
    assert!(matches!(
        handshake.recv_timeout(Duration::from_millis(50)),
        Err(mpsc::RecvTimeoutError::Timeout)
    ));
}
