//! Timed receives from an ipc-channel receiver, the same on every
//! platform.

use std::sync::mpsc;
use std::time::Duration;

use ipc_channel::ipc::IpcReceiver;
use serde::{Deserialize, Serialize};

use crate::sys;

/// An ipc-channel receiver waited on with timeouts: the child's `Config`
/// (in short slices) and a child's `Outcome` (`Process::join_timeout`).
///
/// Where a timed receive may lose a message
/// ([`sys::IPC_TIMED_RECV_IN_SLICES`] is `false`: Windows), the first
/// timed wait moves the receiver to a thread blocked in one `recv`, which
/// forwards what arrives; untimed waits and Unix use the channel itself.
/// If nothing ever arrives and the channel never disconnects, that thread
/// stays blocked until the process exits.
pub(crate) enum Inbox<T> {
    Direct(IpcReceiver<T>),
    Forwarded(mpsc::Receiver<std::result::Result<T, String>>),
    /// Moving between the two (never seen outside `forward`).
    Moving,
}

impl<T> Inbox<T>
where
    T: for<'de> Deserialize<'de> + Serialize + Send + 'static,
{
    pub(crate) fn new(rx: IpcReceiver<T>) -> Inbox<T> {
        Inbox::Direct(rx)
    }

    /// Waits for the message; `Err` once the sender is gone (or the
    /// channel broke), with why.
    pub(crate) fn recv(&mut self) -> std::result::Result<T, String> {
        match self {
            Inbox::Direct(rx) => rx.recv().map_err(|e| format!("{e:?}")),
            Inbox::Forwarded(rx) => rx
                .recv()
                .unwrap_or_else(|_| Err("the forwarding thread ended".to_string())),
            Inbox::Moving => Err("no receiver".to_string()),
        }
    }

    /// The message if it arrives within `timeout`.
    pub(crate) fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<Option<T>, String> {
        if !sys::IPC_TIMED_RECV_IN_SLICES {
            self.forward()?;
        }
        match self {
            Inbox::Direct(rx) => match rx.try_recv_timeout(timeout) {
                Ok(msg) => Ok(Some(msg)),
                Err(ipc_channel::TryRecvError::Empty) => Ok(None),
                Err(e) => Err(format!("{e:?}")),
            },
            Inbox::Forwarded(rx) => match rx.recv_timeout(timeout) {
                Ok(got) => got.map(Some),
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err("the forwarding thread ended".to_string())
                }
            },
            Inbox::Moving => Err("no receiver".to_string()),
        }
    }

    /// Hands a direct receiver to a thread blocked in `recv`.
    fn forward(&mut self) -> std::result::Result<(), String> {
        let Inbox::Direct(_) = self else {
            return Ok(());
        };
        let Inbox::Direct(rx) = std::mem::replace(self, Inbox::Moving) else {
            return Ok(());
        };
        let (tx, forwarded) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("multiproc-inbox".into())
            .spawn(move || {
                let _ = tx.send(rx.recv().map_err(|e| format!("{e:?}")));
            });
        match spawned {
            Ok(_) => {
                *self = Inbox::Forwarded(forwarded);
                Ok(())
            }
            Err(e) => Err(format!("inbox thread: {e}")),
        }
    }
}
