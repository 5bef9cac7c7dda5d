//! The Docker labels and environment rtmanager puts on every engine container.
//! Frozen by the Go service: Game Master and operators' tooling select on them.

pub const LABEL_OWNER: &str = "com.galaxy.owner";
pub const LABEL_OWNER_VALUE: &str = "rtmanager";
pub const LABEL_KIND: &str = "com.galaxy.kind";
pub const LABEL_KIND_VALUE: &str = "game-engine";
pub const LABEL_GAME_ID: &str = "com.galaxy.game_id";
pub const LABEL_ENGINE_IMAGE_REF: &str = "com.galaxy.engine_image_ref";
pub const LABEL_STARTED_AT_MS: &str = "com.galaxy.started_at_ms";
/// v1 engines also read the state path from this variable.
pub const BACK_COMPAT_STATE_ENV: &str = "STORAGE_PATH";
