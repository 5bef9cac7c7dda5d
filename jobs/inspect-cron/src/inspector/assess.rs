//! The pure part of an inspect: is this observation unhealthy, and was it
//! already published? No I/O here: the pass reads the memory of earlier
//! passes (`inspect_observations`) once, and [`assess`] decides per container.

use shared::domain::{Observation, ObservationMemory as Memory};
use shared::ports::ContainerInfo;

/// The `inspect_unhealthy` details of one inspect.
pub(super) fn observation_of(info: &ContainerInfo) -> Observation {
    Observation {
        state: info.state.clone(),
        health: info.health.clone(),
        restart_count: info.restart_count,
    }
}

/// What to do about one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Unhealthy and not yet published: publish it.
    Publish,
    /// Unhealthy, and exactly this observation was already published.
    AlreadyPublished,
    /// Healthy after a published failure: forget it, so the next one counts.
    Recovered,
    Healthy,
}

/// Unhealthy means: not `running`, HEALTHCHECK `unhealthy`, or RestartCount
/// above the one last accounted for (0 for a container never seen: a
/// container starts at 0, so a restart before the first pass is reported).
pub fn assess(observation: &Observation, memory: Option<&Memory>) -> Verdict {
    let baseline = memory.map_or(0, |m| m.restart_count);
    let unhealthy = !observation.state.is_running()
        || observation.health == "unhealthy"
        || observation.restart_count > baseline;
    match (unhealthy, memory.and_then(|m| m.published.as_ref())) {
        (true, Some(published)) if published == observation => Verdict::AlreadyPublished,
        (true, _) => Verdict::Publish,
        (false, Some(_)) => Verdict::Recovered,
        (false, None) => Verdict::Healthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(state: &str, health: &str, restart_count: i64) -> Observation {
        Observation {
            state: shared::domain::ContainerState::parse(state),
            health: health.into(),
            restart_count,
        }
    }

    #[test]
    fn an_unhealthy_observation_is_published_once_until_it_changes() {
        let unhealthy = obs("running", "unhealthy", 0);
        assert_eq!(assess(&unhealthy, None), Verdict::Publish);
        let memory = Memory {
            restart_count: 0,
            published: Some(unhealthy.clone()),
        };
        assert_eq!(assess(&unhealthy, Some(&memory)), Verdict::AlreadyPublished);
        assert_eq!(
            assess(&obs("exited", "unhealthy", 0), Some(&memory)),
            Verdict::Publish
        );
        assert_eq!(
            assess(&obs("running", "healthy", 0), Some(&memory)),
            Verdict::Recovered
        );
        assert_eq!(
            assess(&obs("running", "healthy", 0), None),
            Verdict::Healthy
        );
        assert_eq!(assess(&obs("running", "", 0), None), Verdict::Healthy);
        assert_eq!(
            assess(&obs("running", "starting", 0), None),
            Verdict::Healthy
        );
    }

    #[test]
    fn restart_count_growth_counts_from_the_last_accounted_value() {
        // Never seen: a container starts at 0, so 1 is a restart.
        assert_eq!(assess(&obs("running", "", 1), None), Verdict::Publish);
        let memory = Memory {
            restart_count: 1,
            published: Some(obs("running", "", 1)),
        };
        // Still 1 on the next pass: recovered, not re-reported.
        assert_eq!(
            assess(&obs("running", "", 1), Some(&memory)),
            Verdict::Recovered
        );
        let forgotten = Memory {
            restart_count: 1,
            published: None,
        };
        assert_eq!(
            assess(&obs("running", "", 1), Some(&forgotten)),
            Verdict::Healthy
        );
        assert_eq!(
            assess(&obs("running", "", 2), Some(&forgotten)),
            Verdict::Publish
        );
    }
}
