//! Domain types: validated values and vocabularies. No I/O here.

pub mod container;
pub mod cron_pass;
pub mod error_code;
pub mod game_id;
pub mod health;
pub mod image_ref;
pub mod intent;
pub mod jobs;
pub mod labels;
pub mod limits;
pub mod observation;
pub mod operation;
pub mod outbox;
pub mod runtime;

pub use container::{ContainerState, EventAction, IntentKind};
pub use cron_pass::{CronJob, CronPass, LastCronPass};
pub use error_code::ErrorCode;
pub use game_id::{GameId, GameIdError};
pub use health::{EventType, HealthDetails, HealthEvent, HealthSource, SnapshotStatus};
pub use image_ref::{ImageRef, ImageRefError};
pub use intent::{AdminIntent, NotificationType};
pub use jobs::{JobResult, MalformedJob, StartJob, StopJob, StopReason};
pub use limits::{CpuQuota, MemoryLimit, PidsLimit, ResourceLimits};
pub use observation::{Observation, ObservationMemory};
pub use operation::{OpKind, OpSource, OperationEntry, Outcome};
pub use outbox::{OutboxMessage, SourcedEvent};
pub use runtime::{RuntimeRecord, RuntimeStatus};
