//! Windows.
#![allow(unsafe_code)]

use std::io;
use std::process::{Child, Command};

use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::ProcessStatus::{K32GetModuleInformation, MODULEINFO};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::process::ExitStatus;

/// `true` when `addr` lies inside this executable's image, as `anchor`
/// (code of this crate, linked into the executable) does.
pub(crate) fn same_image(anchor: usize, addr: usize) -> bool {
    // SAFETY: a null name asks for the handle of the executable itself; the
    // call has no other preconditions.
    let module = unsafe { GetModuleHandleW(std::ptr::null()) };
    if module.is_null() {
        return false;
    }
    let mut info = MODULEINFO {
        lpBaseOfDll: std::ptr::null_mut(),
        SizeOfImage: 0,
        EntryPoint: std::ptr::null_mut(),
    };
    // SAFETY: no preconditions; returns a pseudo-handle that needs no close.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: `info` is a valid, writable MODULEINFO and its size is passed;
    // `process` is the always-valid pseudo-handle of this process.
    let ok = unsafe {
        K32GetModuleInformation(
            process,
            module,
            &mut info,
            std::mem::size_of::<MODULEINFO>() as u32,
        )
    };
    if ok == 0 {
        return false;
    }
    let base = info.lpBaseOfDll as usize;
    let end = base.saturating_add(info.SizeOfImage as usize);
    (base..end).contains(&anchor) && (base..end).contains(&addr)
}

/// Starts `cmd`.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Windows has no polite stop: `TerminateProcess`, like Python's
/// `terminate()` there.
pub(crate) fn terminate(child: &mut Child) -> io::Result<()> {
    child.kill()
}

/// Our view of how a process ended.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    ExitStatus::Code(status.code().unwrap_or(-1))
}

/// Windows: the worker's EOF watch on its control channel makes it exit
/// when the parent dies (a kill-on-close job object comes with the Windows
/// port).
pub(crate) fn die_with_parent(_parent_pid: u32) -> io::Result<()> {
    Ok(())
}

/// Windows' one-shot servers are named pipes, which vanish with their
/// process: nothing to sweep.
pub(crate) fn sweep_stale_handshake_dirs(_tmp: &std::path::Path, _min_age: std::time::Duration) {}

/// Windows has no parent-death signal: workers watch their control channel.
pub(crate) const PARENT_DEATH_SIGNAL: bool = false;

/// Sleeps briefly; the caller re-checks the child with `try_wait`.
pub(crate) fn wait_for_exit(_pid: u32, timeout: std::time::Duration) {
    std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
}

/// `true` while process `pid` runs.
pub(crate) fn process_alive(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
    };
    // SAFETY: OpenProcess has no memory preconditions; null means failure.
    let h = unsafe {
        OpenProcess(
            PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
            0,
            pid,
        )
    };
    if h.is_null() {
        return false;
    }
    // SAFETY: `h` is a valid process handle opened above.
    let alive = unsafe { WaitForSingleObject(h, 0) } == WAIT_TIMEOUT;
    // SAFETY: `h` is owned here and closed once.
    unsafe { CloseHandle(h) };
    alive
}
