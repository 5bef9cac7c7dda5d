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
