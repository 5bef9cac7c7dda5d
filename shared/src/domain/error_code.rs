//! The stable error codes every outcome carries across a process boundary.
//!
//! Wire strings are written by hand so that renaming a variant can never change
//! the wire. `tests::wire_list_is_pinned` pins the full list.

use std::fmt;

/// Every business outcome that is not a plain success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Idempotent replay, reported with `outcome=success`.
    ReplayNoOp,
    InvalidRequest,
    ImageRefNotSemver,
    StartConfigInvalid,
    NotFound,
    Conflict,
    SemverPatchOnly,
    ImagePullFailed,
    ContainerStartFailed,
    Internal,
    ServiceUnavailable,
    DockerUnavailable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        Self::ReplayNoOp,
        Self::InvalidRequest,
        Self::ImageRefNotSemver,
        Self::StartConfigInvalid,
        Self::NotFound,
        Self::Conflict,
        Self::SemverPatchOnly,
        Self::ImagePullFailed,
        Self::ContainerStartFailed,
        Self::Internal,
        Self::ServiceUnavailable,
        Self::DockerUnavailable,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ReplayNoOp => "replay_no_op",
            Self::InvalidRequest => "invalid_request",
            Self::ImageRefNotSemver => "image_ref_not_semver",
            Self::StartConfigInvalid => "start_config_invalid",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::SemverPatchOnly => "semver_patch_only",
            Self::ImagePullFailed => "image_pull_failed",
            Self::ContainerStartFailed => "container_start_failed",
            Self::Internal => "internal_error",
            Self::ServiceUnavailable => "service_unavailable",
            Self::DockerUnavailable => "docker_unavailable",
        }
    }

    /// The HTTP status the internal REST API answers with.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::ReplayNoOp => 200,
            Self::InvalidRequest => 400,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::ImageRefNotSemver | Self::SemverPatchOnly | Self::StartConfigInvalid => 422,
            Self::ImagePullFailed | Self::ContainerStartFailed => 502,
            Self::Internal => 500,
            Self::ServiceUnavailable | Self::DockerUnavailable => 503,
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_list_is_pinned() {
        let wire: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            wire,
            [
                "replay_no_op",
                "invalid_request",
                "image_ref_not_semver",
                "start_config_invalid",
                "not_found",
                "conflict",
                "semver_patch_only",
                "image_pull_failed",
                "container_start_failed",
                "internal_error",
                "service_unavailable",
                "docker_unavailable",
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }
}
