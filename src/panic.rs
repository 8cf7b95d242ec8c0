//! Catching a panic as a [`PanicInfo`] (message, location, backtrace):
//! the child around its task, a pool worker around each item, the parent
//! around user code it calls.

use std::panic::AssertUnwindSafe;

use crate::bootstrap::worker_name;
use crate::error::PanicInfo;

thread_local! {
    /// What the panic hook saw last on this thread.
    static LAST_PANIC: std::cell::RefCell<Option<PanicInfo>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`; a panic becomes its [`PanicInfo`] (message, location and, if
/// `RUST_BACKTRACE` asks, backtrace). The panic is still printed on stderr,
/// as Python prints a child's traceback. Cheap when nothing panics: the
/// hook is installed once per process.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> std::result::Result<R, PanicInfo> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let location = info.location().map(|l| l.to_string());
            let bt = std::backtrace::Backtrace::capture();
            let backtrace =
                (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| bt.to_string());
            let _ = LAST_PANIC.try_with(|last| {
                *last.borrow_mut() = Some(PanicInfo::new(message, location, backtrace));
            });
            // std's line names only the thread ("thread 'main' panicked"),
            // which reads as if the parent crashed; name the process first,
            // as Python does ("Process Process-1:" above the traceback).
            if let Some(name) = worker_name() {
                eprintln!("Process {name} (pid {}):", std::process::id());
            }
            previous(info);
        }));
    });
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        LAST_PANIC
            .try_with(|last| last.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| PanicInfo::new("unknown panic".into(), None, None))
    })
}
