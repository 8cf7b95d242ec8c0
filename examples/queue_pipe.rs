//! Producer and consumer processes over a `Queue`, and a `Pipe` conversation.
//!
//! Python:
//! ```python
//! def producer(q):
//!     for i in range(5):
//!         q.put(f"job {i}")
//!     q.put(None)
//!
//! def consumer(q, conn):
//!     done = 0
//!     while (job := q.get()) is not None:
//!         done += 1
//!     conn.send(done)
//!
//! if __name__ == "__main__":
//!     q = multiprocessing.Queue()
//!     parent, child = multiprocessing.Pipe()
//!     p = multiprocessing.Process(target=producer, args=(q,))
//!     c = multiprocessing.Process(target=consumer, args=(q, child))
//!     p.start(); c.start()
//!     print("consumer handled", parent.recv(), "jobs")
//!     p.join(); c.join()
//! ```

use multiproc::{pipe, Connection, Process, Queue};

fn producer(q: Queue<Option<String>>) {
    for i in 0..5 {
        q.put(&Some(format!("job {i}"))).unwrap();
    }
    q.put(&None).unwrap();
}

fn consumer((q, conn): (Queue<Option<String>>, Connection)) {
    let mut done = 0u32;
    while let Some(job) = q.get().unwrap() {
        println!("consumer got {job}");
        done += 1;
    }
    conn.send(&done).unwrap();
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let q = Queue::new()?;
    let (parent, child) = pipe(true)?;
    let p = Process::spawn(producer, q.clone())?;
    let c = Process::spawn(consumer, (q.clone(), child))?;
    let handled: u32 = parent.recv()?;
    println!("consumer handled {handled} jobs");
    p.join()?;
    c.join()?;
    Ok(())
}
