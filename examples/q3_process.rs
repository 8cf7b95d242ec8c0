//! The course's question Q3: "Write a python code to create a process using
//! the multiprocessing module."
//!
//! Python:
//! ```python
//! def process_function():
//!     print("This is a child process")
//!
//! if __name__ == "__main__":
//!     process = multiprocessing.Process(target=process_function)
//!     process.start()
//!     process.join()
//!     print("Main process completed")
//! ```

fn process_function(_: ()) {
    println!("This is a child process");
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // `if __name__ == "__main__":`
    let process = multiproc::Process::spawn(process_function, ())?; // start()
    process.join()?;
    println!("Main process completed");
    Ok(())
}
