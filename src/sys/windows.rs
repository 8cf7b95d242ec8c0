//! Windows: spawn into a kill-on-close job, terminate/kill with exit codes
//! that say so, process liveness, image bounds, owner-only security for
//! named objects. Shared memory is `shm_windows.rs`; blocking waits on
//! shared words are `wait_windows.rs`.
#![allow(unsafe_code)]

use std::io;
use std::process::{Child, Command};

use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::ProcessStatus::{K32GetModuleInformation, MODULEINFO};
use windows_sys::Win32::System::Threading::GetCurrentProcess;

use crate::exit_status::ExitStatus;

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

/// Starts `cmd` and puts it into this process's kill-on-close job.
///
/// std's `CreateProcessW` passes on every *inheritable* handle; the
/// crate's own handles (job, sections, semaphores, ipc-channel's pipes) are
/// all made non-inheritable, so a child gets only its stdio and learns
/// everything else by name in the handshake.
///
/// The job is created on the first spawn and never closed: when this
/// process ends, however it ends, Windows closes the handle and kills every
/// process in the job — our children, and theirs (a grandchild is in its
/// parent's nested job, which is inside ours). The child is assigned before
/// `spawn` returns, so before its handshake can complete: no task code runs
/// outside the job. Where a job cannot be made or assigned (an old Windows
/// that forbids nested jobs, a sandbox), the worker's EOF watch on its
/// control channel still makes it exit when we die.
///
/// `ERROR_INTERNAL_ERROR` from `CreateProcessW` is tried again, up to
/// [`SPAWN_TRIES`] times: it means the new process died before it finished
/// starting (Wine returns it when the child's loader fails, which it does
/// about once in a thousand starts under load), so none of its code ran,
/// and the same command can simply start again.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::System::JobObjects::AssignProcessToJobObject;

    let mut tries = 1;
    let child = loop {
        match cmd.spawn() {
            Err(e) if is_stillborn(&e) && tries < SPAWN_TRIES => {
                std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(tries)));
                tries += 1;
            }
            other => break other?,
        }
    };
    if let Some(job) = kill_on_close_job() {
        // SAFETY: `job` is the job handle this process keeps open for its
        // whole life; the child's handle is valid while we hold `child`.
        // A failure leaves the child outside the job (EOF watch only).
        unsafe { AssignProcessToJobObject(job as _, child.as_raw_handle() as _) };
    }
    Ok(child)
}

/// Starts of one child before its spawn error is final (see [`spawn`]).
const SPAWN_TRIES: u32 = 3;

/// `CreateProcessW` failed because the new process died while starting
/// (`ERROR_INTERNAL_ERROR`), before any of its own code ran.
fn is_stillborn(e: &io::Error) -> bool {
    e.raw_os_error() == Some(windows_sys::Win32::Foundation::ERROR_INTERNAL_ERROR as i32)
}

/// This process's job with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`, as a raw
/// handle value (`None` if it cannot be made).
fn kill_on_close_job() -> Option<usize> {
    use std::sync::OnceLock;
    use windows_sys::Win32::System::JobObjects::{
        CreateJobObjectW, JobObjectExtendedLimitInformation, SetInformationJobObject,
        JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    };

    static JOB: OnceLock<Option<usize>> = OnceLock::new();
    *JOB.get_or_init(|| {
        // SAFETY: no name, default security (not inheritable): no
        // preconditions; null means failure.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return None;
        }
        // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION (plain
        // integers) is valid: no limits.
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `job` is valid; `info` is the structure the class names,
        // with its size.
        let ok = unsafe {
            SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            // SAFETY: `job` is ours and closed once.
            unsafe { windows_sys::Win32::Foundation::CloseHandle(job) };
            return None;
        }
        Some(job as usize)
    })
}

/// The exit code `terminate` / `kill` give a child: `TERMINATED_BY` plus
/// the number of the Unix signal they stand for. Python uses `0x10000`
/// alone (and reports `-SIGTERM`); the signal in the low bits keeps kill and
/// terminate apart. A program that itself exits with one of these codes is
/// reported as killed, as it would be by Python.
const TERMINATED_BY: u32 = 0x1_0000;
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;
const SIGINT: u32 = 2;

/// Windows has no polite stop: `TerminateProcess`, like Python's
/// `terminate()` there; the exit code says it was a terminate.
pub(crate) fn terminate(child: &mut super::Child) -> io::Result<()> {
    terminate_with(child, TERMINATED_BY | SIGTERM)
}

/// No Ctrl-C for one process of a console group here: Python's
/// `interrupt()` leaves Windows undefined; this is `terminate`, with the
/// exit code of an interrupt (`-SIGINT` in Python's terms).
pub(crate) fn interrupt(child: &mut super::Child) -> io::Result<()> {
    terminate_with(child, TERMINATED_BY | SIGINT)
}

/// `TerminateProcess` with the exit code that says "killed".
pub(crate) fn kill(child: &mut super::Child) -> io::Result<()> {
    terminate_with(child, TERMINATED_BY | SIGKILL)
}

fn terminate_with(child: &mut super::Child, code: u32) -> io::Result<()> {
    use std::os::windows::io::AsRawHandle;
    use windows_sys::Win32::System::Threading::TerminateProcess;

    // Every child here was started by `Command` (no fork server).
    let Some(child) = child.as_spawned() else {
        return Ok(());
    };

    // An ended child is left alone (std's `kill` does the same).
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    // SAFETY: the handle is valid while we hold `child` (not yet reaped).
    if unsafe { TerminateProcess(child.as_raw_handle() as _, code) } != 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // It may have ended between the check and the call (access denied).
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    Err(err)
}

/// Our view of how a process ended.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match status.code() {
        Some(c) if c as u32 == TERMINATED_BY | SIGTERM => ExitStatus::Signal(SIGTERM as i32),
        Some(c) if c as u32 == TERMINATED_BY | SIGINT => ExitStatus::Signal(SIGINT as i32),
        Some(c) if c as u32 == TERMINATED_BY | SIGKILL => ExitStatus::Signal(SIGKILL as i32),
        Some(c) => ExitStatus::Code(c),
        None => ExitStatus::Code(-1),
    }
}

/// Unix only: ipc-channel's Windows back-end inherits no sockets.
pub(crate) fn close_stray_ipc_sockets() {}

/// Windows: the parent's kill-on-close job (see [`spawn`]) kills the worker
/// with it; the worker's EOF watch on its control channel is the fallback.
pub(crate) fn die_with_parent(_parent_pid: u32) -> io::Result<bool> {
    Ok(true)
}

/// There is no fork server on Windows: nothing to prepare.
pub(crate) fn prepare_fork() -> io::Result<()> {
    Ok(())
}

/// Windows' one-shot servers are named pipes, which need no directory and
/// vanish with their process: nothing to prepare or sweep.
pub(crate) fn prepare_handshake() -> io::Result<()> {
    Ok(())
}

/// Windows' one-shot servers are named pipes with ipc-channel's default
/// security: nothing to restrict here (the token guards the handshake).
pub(crate) fn restrict_handshake_server(_name: &str) -> io::Result<()> {
    Ok(())
}

/// `true` for what `ipc-channel` names its Windows one-shot servers: a
/// hyphenated UUID (8-4-4-4-12 hex digits). Its `connect` unwraps the UUID
/// parse, so anything else would panic in the worker instead of failing.
pub(crate) fn handshake_server_name_ok(name: &str) -> bool {
    let groups: Vec<&str> = name.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The job object is not a signal the worker can rely on (it may be
/// missing): workers also watch their control channel.
pub(crate) const PARENT_DEATH_SIGNAL: bool = false;

/// `ipc-channel`'s `try_recv_timeout` on Windows cancels its overlapped
/// read when it times out (and starts another next time); under Wine a
/// message that arrives around such a cancel was seen lost (about 1 start
/// in 100 with 5 ms slices). Callers that wait in slices use one blocking
/// `recv` on a thread instead.
pub(crate) const IPC_TIMED_RECV_IN_SLICES: bool = false;

/// Blocks until process `pid` (our un-reaped child, so the pid is not
/// reused: we hold its handle) exits or `timeout` passes; the caller then
/// reaps it with `try_wait`. Spurious early returns are fine.
pub(crate) fn wait_for_exit(pid: u32, timeout: std::time::Duration) {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };

    // SAFETY: no memory preconditions; null means failure.
    let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
    if h.is_null() {
        std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
        return;
    }
    let ms = timeout.as_millis().clamp(1, u128::from(u32::MAX - 1)) as u32;
    // SAFETY: `h` is the process handle opened above.
    unsafe { WaitForSingleObject(h, ms) };
    // SAFETY: `h` is ours and closed once.
    unsafe { CloseHandle(h) };
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

/// Security attributes that give only this process's user access (a DACL
/// with one ACE for the token's user SID, `D:P(A;;GA;;;<sid>)`), for named
/// objects other users must not open. `None` if the descriptor cannot be
/// built; callers then fail rather than create an object anyone may open.
pub(crate) fn owner_only() -> Option<windows_sys::Win32::Security::SECURITY_ATTRIBUTES> {
    use std::sync::OnceLock;
    use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;

    static DESCRIPTOR: OnceLock<Option<usize>> = OnceLock::new();
    let sd = (*DESCRIPTOR.get_or_init(owner_only_descriptor))?;
    Some(SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd as *mut std::ffi::c_void,
        bInheritHandle: 0,
    })
}

/// Builds the descriptor once; it lives as long as the process.
fn owner_only_descriptor() -> Option<usize> {
    use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
    use windows_sys::Win32::Security::Authorization::{
        ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
        SDDL_REVISION_1,
    };
    use windows_sys::Win32::Security::{GetTokenInformation, TokenUser, TOKEN_QUERY, TOKEN_USER};
    use windows_sys::Win32::System::Threading::OpenProcessToken;

    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: no preconditions; a pseudo-handle that needs no close.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: `process` is valid; `token` is a valid out slot.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    // TOKEN_USER plus the SID it points to; a SID is at most 68 bytes.
    let mut buf = [0u64; 32];
    let mut needed = 0u32;
    // SAFETY: `buf` is writable for its whole size, which is passed, and is
    // 8-aligned as TOKEN_USER requires; `token` is valid.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenUser,
            buf.as_mut_ptr().cast(),
            std::mem::size_of_val(&buf) as u32,
            &mut needed,
        )
    };
    // SAFETY: `token` is ours and closed once.
    unsafe { CloseHandle(token) };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success `buf` starts with a TOKEN_USER whose SID pointer
    // points into `buf`, which outlives its use below.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    let mut sid_text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` is valid (above); the out pointer is a valid slot.
    if unsafe { ConvertSidToStringSidW(sid, &mut sid_text) } == 0 {
        return None;
    }
    let len = (0..)
        .take_while(|&i| {
            // SAFETY: on success `sid_text` is a NUL-terminated UTF-16
            // string that we own until the LocalFree below; we stop at the NUL.
            unsafe { *sid_text.wrapping_add(i) != 0 }
        })
        .count();
    // SAFETY: see above; `len` units before the NUL are initialised.
    let sid_string = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(sid_text, len) });
    // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc; freed once.
    unsafe { LocalFree(sid_text.cast()) };
    let sddl = wide(&format!("D:P(A;;GA;;;{sid_string})"));
    let mut sd: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: `sddl` is NUL-terminated UTF-16; `sd` is a valid out slot. The
    // descriptor is never freed: it is used for the process's life.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            sddl.as_ptr(),
            SDDL_REVISION_1,
            &mut sd,
            std::ptr::null_mut(),
        )
    };
    (ok != 0 && !sd.is_null()).then_some(sd as usize)
}

/// `s` as a NUL-terminated UTF-16 string.
pub(crate) fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// Huge pages need a privilege on Windows: nothing to ask (see the Unix
/// backend).
pub(crate) fn advise_huge_pages(_addr: *mut u8, _len: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_child_that_died_starting_is_started_again() {
        assert!(is_stillborn(&io::Error::from_raw_os_error(1359)));
        // Not found, access denied, bad exe format: final at once.
        for code in [2, 5, 193] {
            assert!(!is_stillborn(&io::Error::from_raw_os_error(code)));
        }
        assert!(!is_stillborn(&io::Error::other("not an OS error")));
    }

    #[test]
    fn handshake_names_must_be_uuids() {
        assert!(handshake_server_name_ok(
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        ));
        for bad in [
            "",
            "/nonexistent/socket",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "67e55044-10b1-426f-9247-bb680e5fe0c8-",
            "67e55044x10b1-426f-9247-bb680e5fe0c8",
            "g7e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert!(!handshake_server_name_ok(bad), "{bad}");
        }
    }

    #[test]
    fn owner_only_descriptor_builds() {
        assert!(owner_only().is_some());
    }
}
