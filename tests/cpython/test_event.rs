//! CPython's `_TestEvent`.

use super::*;

fn set_later(event: Event) {
    sleep(TIMEOUT1);
    event.set();
}

#[test]
fn test_event() {
    let event = Event::new().unwrap();
    assert!(!event.is_set());
    assert!(event.wait_timeout(Duration::ZERO).unwrap_err().is_timeout());
    let (res, elapsed) = timed(|| event.wait_timeout(TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");

    event.set();
    assert!(event.is_set());
    event.wait().unwrap();
    event.wait_timeout(TIMEOUT1).unwrap();

    event.clear();
    assert!(!event.is_set());

    let p = Process::spawn(set_later, event.clone()).unwrap();
    event.wait_timeout(LONG).unwrap(); // wait()
    p.join().unwrap();
}
