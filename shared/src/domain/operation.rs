//! The operation log vocabulary: what was done, who asked, how it ended.

use chrono::{DateTime, Utc};

use super::{ErrorCode, GameId};

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $wire),+ }
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == raw)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// `operation_log.op_kind`, matching the SQL CHECK set.
    OpKind {
        Start => "start",
        Stop => "stop",
        Restart => "restart",
        Patch => "patch",
        CleanupContainer => "cleanup_container",
        ReconcileAdopt => "reconcile_adopt",
        ReconcileDispose => "reconcile_dispose",
        ReconcileObserveExit => "reconcile_observe_exit",
    }
}

wire_enum! {
    /// `operation_log.op_source`: how the request entered rtmanager.
    OpSource {
        LobbyStream => "lobby_stream",
        GmRest => "gm_rest",
        AdminRest => "admin_rest",
        AutoTtl => "auto_ttl",
        AutoReconcile => "auto_reconcile",
    }
}

wire_enum! {
    /// `success` or `failure`, in the operation log and in job results.
    Outcome {
        Success => "success",
        Failure => "failure",
    }
}

/// One append-only `operation_log` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationEntry {
    pub game_id: GameId,
    pub op_kind: OpKind,
    pub op_source: OpSource,
    /// Stream entry id, REST request id, or a correlation id.
    pub source_ref: String,
    pub image_ref: String,
    pub container_id: String,
    pub outcome: Outcome,
    pub error_code: Option<ErrorCode>,
    pub error_message: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_are_pinned() {
        let kinds: Vec<_> = OpKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "start",
                "stop",
                "restart",
                "patch",
                "cleanup_container",
                "reconcile_adopt",
                "reconcile_dispose",
                "reconcile_observe_exit"
            ]
        );
        let sources: Vec<_> = OpSource::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            sources,
            [
                "lobby_stream",
                "gm_rest",
                "admin_rest",
                "auto_ttl",
                "auto_reconcile"
            ]
        );
        assert_eq!(Outcome::parse("failure"), Some(Outcome::Failure));
    }
}
