//! Admin notification intents on `notification:intents`
//! (contracts/notification-intents.asyncapi.yaml). The envelope belongs to the
//! Notification service; the one here is ours and documented as such.

use serde_json::json;

use super::operation::wire_enum;
use super::{ErrorCode, GameId};

wire_enum! {
    /// The three admin-email intents a failed start can raise.
    NotificationType {
        ImagePullFailed => "runtime.image_pull_failed",
        ContainerStartFailed => "runtime.container_start_failed",
        StartConfigInvalid => "runtime.start_config_invalid",
    }
}

impl NotificationType {
    /// The intent a start failure raises, if any.
    pub fn for_start_failure(code: ErrorCode) -> Option<Self> {
        match code {
            ErrorCode::ImagePullFailed => Some(Self::ImagePullFailed),
            ErrorCode::ContainerStartFailed => Some(Self::ContainerStartFailed),
            ErrorCode::StartConfigInvalid => Some(Self::StartConfigInvalid),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminIntent {
    pub notification_type: NotificationType,
    pub game_id: GameId,
    pub image_ref: String,
    pub error_code: ErrorCode,
    pub error_message: String,
    pub attempted_at_ms: i64,
}

impl AdminIntent {
    /// `{type}.{game_id}.{attempted_at_ms}`, as the Go service built it: the same
    /// failure observed twice is one notification.
    pub fn idempotency_key(&self) -> String {
        format!(
            "{}.{}.{}",
            self.notification_type, self.game_id, self.attempted_at_ms
        )
    }

    pub fn stream_fields(&self) -> Vec<(String, String)> {
        let payload = json!({
            "game_id": self.game_id.as_str(),
            "image_ref": self.image_ref,
            "error_code": self.error_code.as_str(),
            "error_message": self.error_message,
            "attempted_at_ms": self.attempted_at_ms,
        });
        vec![
            (
                "notification_type".into(),
                self.notification_type.as_str().into(),
            ),
            ("producer".into(), "runtime_manager".into()),
            ("audience_kind".into(), "admin_email".into()),
            ("channel".into(), "email".into()),
            ("idempotency_key".into(), self.idempotency_key()),
            ("occurred_at_ms".into(), self.attempted_at_ms.to_string()),
            ("payload".into(), payload.to_string()),
        ]
    }
}
