//! What every handler can reach.

use std::sync::Arc;

use shared::bootstrap::Infra;
use shared::config::Config;
use shared::lifecycle::LifecycleService;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub infra: Infra,
    pub lifecycle: LifecycleService,
}
