//! Group "async sync": what awaiting a primitive costs against blocking on
//! it (issue 16). Each row is a round trip with an echoing child process;
//! "multiproc" awaits its side under a tokio current-thread runtime, the
//! peer makes the same calls blocking. The difference is the async
//! waiter thread's wake-up plus the runtime's.

use super::{Config, Contender, Table};

const ROUND_TRIPS: u64 = 500;

pub(super) const QUEUE_ASYNC_METRIC: &str = "Queue round trip, get_async vs get";
pub(super) const EVENT_ASYNC_METRIC: &str = "Event set → wake, round trip, wait_async vs wait";

/// Child of the queue row: answers every item with itself on `back`; 0
/// ends it.
fn queue_echo((there, back): (multiproc::Queue<u64>, multiproc::Queue<u64>)) {
    while let Ok(v) = there.get() {
        if v == 0 {
            return;
        }
        if back.put(&v).is_err() {
            return;
        }
    }
}

/// Child of the event row: waits for `ping`, clears it, sets `pong`;
/// `stop` set ends it.
fn event_echo((ping, pong, stop): (multiproc::Event, multiproc::Event, multiproc::Event)) {
    loop {
        if ping.wait().is_err() {
            return;
        }
        ping.clear();
        if stop.is_set() {
            return;
        }
        pong.set();
    }
}

struct QueueEcho {
    there: multiproc::Queue<u64>,
    back: multiproc::Queue<u64>,
    child: Option<multiproc::Process>,
    rt: tokio::runtime::Runtime,
}

impl QueueEcho {
    fn start() -> Result<QueueEcho, String> {
        let there = multiproc::Queue::new().map_err(|e| e.to_string())?;
        let back = multiproc::Queue::new().map_err(|e| e.to_string())?;
        let child = multiproc::Process::spawn(queue_echo, (there.clone(), back.clone()))
            .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(QueueEcho {
            there,
            back,
            child: Some(child),
            rt,
        })
    }

    fn round_trips(&mut self, n: u64, awaited: bool) -> Result<(), String> {
        let (there, back) = (&self.there, &self.back);
        let check = |i: u64, got: u64| {
            if got == i {
                Ok(())
            } else {
                Err(format!("round trip {i}: got {got} back"))
            }
        };
        if awaited {
            self.rt.block_on(async {
                for i in 1..=n {
                    there.put_async(&i).await.map_err(|e| e.to_string())?;
                    check(i, back.get_async().await.map_err(|e| e.to_string())?)?;
                }
                Ok(())
            })
        } else {
            for i in 1..=n {
                there.put(&i).map_err(|e| e.to_string())?;
                check(i, back.get().map_err(|e| e.to_string())?)?;
            }
            Ok(())
        }
    }
}

impl Drop for QueueEcho {
    fn drop(&mut self) {
        let _ = self.there.put(&0);
        if let Some(child) = self.child.take() {
            let _ = child.join();
        }
    }
}

struct EventEcho {
    ping: multiproc::Event,
    pong: multiproc::Event,
    stop: multiproc::Event,
    child: Option<multiproc::Process>,
    rt: tokio::runtime::Runtime,
}

impl EventEcho {
    fn start() -> Result<EventEcho, String> {
        let ev = || multiproc::Event::new().map_err(|e| e.to_string());
        let (ping, pong, stop) = (ev()?, ev()?, ev()?);
        let child =
            multiproc::Process::spawn(event_echo, (ping.clone(), pong.clone(), stop.clone()))
                .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(EventEcho {
            ping,
            pong,
            stop,
            child: Some(child),
            rt,
        })
    }

    fn round_trips(&mut self, n: u64, awaited: bool) -> Result<(), String> {
        let (ping, pong) = (&self.ping, &self.pong);
        if awaited {
            self.rt.block_on(async {
                for _ in 0..n {
                    ping.set();
                    pong.wait_async().await.map_err(|e| e.to_string())?;
                    pong.clear();
                }
                Ok(())
            })
        } else {
            for _ in 0..n {
                ping.set();
                pong.wait().map_err(|e| e.to_string())?;
                pong.clear();
            }
            Ok(())
        }
    }
}

impl Drop for EventEcho {
    fn drop(&mut self) {
        self.stop.set();
        self.ping.set();
        if let Some(child) = self.child.take() {
            let _ = child.join();
        }
    }
}

fn contender<E: 'static>(
    name: &str,
    start: fn() -> Result<E, String>,
    run: fn(&mut E, u64, bool) -> Result<(), String>,
    awaited: bool,
) -> Contender {
    match start() {
        Ok(mut echo) => Contender::try_timed(name, move || run(&mut echo, ROUND_TRIPS, awaited)),
        Err(e) => Contender::unavailable(name, format!("starting the echo child: {e}")),
    }
    .per_iteration(ROUND_TRIPS)
}

/// The group's rows: each async call against the same call blocking.
pub(super) fn async_sync(table: &mut Table, cfg: &Config) {
    let q = |awaited| {
        let name = if awaited {
            "multiproc async"
        } else {
            "multiproc blocking"
        };
        contender(name, QueueEcho::start, QueueEcho::round_trips, awaited)
    };
    table.side_by_side(
        QUEUE_ASYNC_METRIC,
        "round trip",
        cfg,
        cfg.iters_pipe,
        move || q(true),
        vec![q(false)],
    );
    let e = |awaited| {
        let name = if awaited {
            "multiproc async"
        } else {
            "multiproc blocking"
        };
        contender(name, EventEcho::start, EventEcho::round_trips, awaited)
    };
    table.side_by_side(
        EVENT_ASYNC_METRIC,
        "round trip",
        cfg,
        cfg.iters_pipe,
        move || e(true),
        vec![e(false)],
    );
}
