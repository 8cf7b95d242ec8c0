//! The course's question Q6: "Write a python program to create 4 processes,
//! each process should print a different number using the multiprocessing
//! module in python."
//!
//! Python:
//! ```python
//! def print_number(number):
//!     print("Process", number, "prints", number)
//!
//! if __name__ == "__main__":
//!     processes = []
//!     for i in range(4):
//!         process = multiprocessing.Process(target=print_number, args=(i,))
//!         processes.append(process)
//!         process.start()
//!     for process in processes:
//!         process.join()
//!     print("Main process completed")
//! ```
//! The four lines come in whatever order the processes run.

fn print_number(number: u32) {
    println!("Process {number} prints {number}");
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let processes = (0..4)
        .map(|i| multiproc::Process::spawn(print_number, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for process in processes {
        process.join()?;
    }
    println!("Main process completed");
    Ok(())
}
