//! The container engine's vocabularies, decoded once at the Docker adapter:
//! a container's state and the action of a container event.
//!
//! Both keep what they do not know as `Other(raw)` and give it back verbatim,
//! because `inspect_unhealthy.details.state` carries the engine's own string
//! on the wire.

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this version does not interpret, kept as the engine sent it.
            Other(String),
        }

        impl $name {
            pub fn parse(raw: &str) -> Self {
                match raw {
                    $($wire => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(raw) => raw,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

open_enum! {
    /// Docker's `State.Status` (inspect) or `State` (list).
    ContainerState {
        Created => "created",
        Running => "running",
        Paused => "paused",
        Restarting => "restarting",
        Removing => "removing",
        Exited => "exited",
        Dead => "dead",
    }
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        *self == Self::Running
    }

    /// Stopped for good: exited, or dead after a failed removal.
    pub fn is_exited(&self) -> bool {
        matches!(self, Self::Exited | Self::Dead)
    }

    /// On its way out: `docker rm` is under way or failed half-way.
    pub fn is_being_removed(&self) -> bool {
        matches!(self, Self::Removing | Self::Dead)
    }
}

impl Default for ContainerState {
    /// An engine that reports no state at all.
    fn default() -> Self {
        Self::Other(String::new())
    }
}

open_enum! {
    /// The action of a container event (`docker events`).
    EventAction {
        Start => "start",
        Die => "die",
        Oom => "oom",
        Destroy => "destroy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_decode_and_unknown_ones_round_trip_verbatim() {
        assert_eq!(ContainerState::parse("running"), ContainerState::Running);
        assert_eq!(ContainerState::parse("exited").as_str(), "exited");
        let odd = ContainerState::parse("Frozen-ish");
        assert_eq!(odd, ContainerState::Other("Frozen-ish".into()));
        assert_eq!(odd.as_str(), "Frozen-ish");
        assert_eq!(EventAction::parse("die"), EventAction::Die);
        assert_eq!(
            EventAction::parse("exec_start: sh").as_str(),
            "exec_start: sh"
        );
        assert!(ContainerState::Dead.is_exited() && ContainerState::Dead.is_being_removed());
    }
}

/// A stop or removal rtmanager makes itself, recorded *before* it acts, so
/// the health sources do not report it as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentKind {
    Stop,
    Removal,
}

impl IntentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Removal => "removal",
        }
    }
}
