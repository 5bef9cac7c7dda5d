//! What every handler can reach.

use std::sync::Arc;

use crate::settings::RestGatewayConfig;
use shared::bootstrap::Infra;
use shared::operations::Operations;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::metrics::GatewayMetrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<RestGatewayConfig>,
    pub infra: Infra,
    pub operations: Operations,
    pub auth: Auth,
    pub metrics: GatewayMetrics,
    /// Cancelled when the gateway shuts down (long responses, e.g. followed
    /// logs, should end on it).
    pub shutdown: CancellationToken,
    /// Lifecycle operations run as tracked tasks: a client that disconnects
    /// or times out never cuts an operation in half, and shutdown waits for
    /// them (up to `RTMANAGER_SHUTDOWN_TIMEOUT`).
    pub tasks: TaskTracker,
}
