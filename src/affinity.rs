//! How many CPUs this process may really use.

/// The number of CPUs this process can run on.
///
/// Unlike Python's `os.cpu_count()` (every CPU of the machine), this counts
/// only what the process may use: its CPU affinity mask and, on Linux, a
/// cgroup CPU quota (containers, `systemd` slices). It is what
/// `os.process_cpu_count()` (Python 3.13) answers, and what a pool should
/// size itself by. Never less than 1.
///
/// Python counterpart: `multiprocessing.cpu_count()`.
///
/// ```
/// let n = multiproc::cpu_count();
/// assert!(n >= 1);
/// ```
pub fn cpu_count() -> usize {
    // std reads sched_getaffinity and cgroup v1/v2 quotas on Linux, the
    // process affinity mask on Windows, and sysctl on macOS.
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
