//! SIGTERM / SIGINT (signal-hook) as a cancellation token.

use futures_util::StreamExt;
use signal_hook::consts::{SIGINT, SIGTERM};
use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGTERM or SIGINT.
pub fn on_signals() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT])?;
    let cancel = token.clone();
    tokio::spawn(async move {
        if let Some(signal) = signals.next().await {
            tracing::info!(signal, "shutdown requested");
            cancel.cancel();
        }
    });
    Ok(token)
}

/// A spawned helper task that dies with its owner: dropping the guard (the
/// owner returned, or was itself cancelled) aborts the task, so no keepalive
/// or relay outlives the work it serves.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
