//! docker-events' own metrics: what the daemon sent, whether this instance
//! holds the daemon, and how its subscriptions and catch-ups go.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::domain::EventAction;
use shared::telemetry::{buckets, histogram, FloatGauge, MetricGroup};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

#[derive(Clone)]
pub struct ListenerMetrics {
    /// `rtmanager_docker_events_total{action}`: every event read, handled
    /// or not.
    pub events: Family<ActionLabels, Counter>,
    /// 1 while this instance holds the daemon's lease.
    pub lease_held: Gauge,
    /// Resubscriptions after the stream broke (the daemon or Redis away).
    pub reconnects: Counter,
    /// Now minus the time of the last handled event (the cursor); 0 while
    /// standing by.
    pub cursor_age: FloatGauge,
    pub catch_up_duration: Histogram,
    /// Records whose container a catch-up inspected.
    pub catch_up_containers: Counter,
}

impl ListenerMetrics {
    /// Counts one event under its action; Docker's `exec_start: sh` style
    /// actions count under the word before the colon, so the label stays
    /// within Docker's vocabulary.
    pub fn saw(&self, action: &EventAction) {
        let action = action.as_str();
        let action = action.split(':').next().unwrap_or(action).trim();
        self.events
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
    }
}

impl MetricGroup for ListenerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            events: Family::default(),
            lease_held: Gauge::default(),
            reconnects: Counter::default(),
            cursor_age: FloatGauge::default(),
            catch_up_duration: histogram(buckets::WORK),
            catch_up_containers: Counter::default(),
        };
        registry.register(
            "docker_events",
            "Container events read from the daemon, by action",
            m.events.clone(),
        );
        registry.register(
            "docker_events_lease_held",
            "1 while this instance holds the daemon's lease and follows it",
            m.lease_held.clone(),
        );
        registry.register(
            "docker_events_reconnects",
            "Resubscriptions to the daemon's events after the stream broke",
            m.reconnects.clone(),
        );
        registry.register(
            "docker_events_cursor_age_seconds",
            "Now minus the daemon time of the last handled event; 0 while standing by",
            m.cursor_age.clone(),
        );
        registry.register(
            "docker_events_catchup_duration_seconds",
            "Catch-ups by inspection after each (re)subscription",
            m.catch_up_duration.clone(),
        );
        registry.register(
            "docker_events_catchup_containers",
            "Running records whose container a catch-up inspected",
            m.catch_up_containers.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_with_arguments_count_under_their_verb() {
        let m = ListenerMetrics::register(&mut Registry::default());
        m.saw(&EventAction::Die);
        m.saw(&EventAction::parse("exec_start: sh -c true"));
        m.saw(&EventAction::parse("health_status: healthy"));
        let mut text = String::new();
        let mut registry = Registry::default();
        registry.register("e", "", m.events.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for action in ["die", "exec_start", "health_status"] {
            assert!(text.contains(&format!("action=\"{action}\"}} 1")), "{text}");
        }
    }
}
