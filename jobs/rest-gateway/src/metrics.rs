//! The gateway's own metrics, served on `/metrics` after the shared ones.
//!
//! A second prometheus-client registry (the shared [`Metrics`] stays
//! untouched): `rtmanager_api_auth_disabled` (1 in the transitional mode
//! without tokens), `rtmanager_api_tokens` (tokens accepted now),
//! `rtmanager_api_token_reload_failures_total`, `rtmanager_api_tls_disabled`
//! (1 when the API serves plain HTTP), `rtmanager_api_tls_reload_failures_total`,
//! `rtmanager_http_requests_total{method,route,status}` (route = the route
//! template, so game ids never become label values),
//! `rtmanager_discovery_targets` (targets in the last answer of the
//! discovery route for running games), and the last pass of each cron job,
//! read from `cron_passes` at each scrape: `rtmanager_cron_last_pass_timestamp_seconds{job}`,
//! `rtmanager_cron_last_success_timestamp_seconds{job}`,
//! `rtmanager_cron_last_pass_duration_seconds{job}` and
//! `rtmanager_cron_last_pass_failed{job}` (a job that never recorded a pass
//! has no series; PostgreSQL away keeps the last values read).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared::bootstrap::Infra;
use shared::domain::{LastCronPass, Outcome};
use shared::telemetry::{FloatGauge, Metrics};

use crate::auth::Auth;
use crate::tls::ApiTls;

/// Bound on the scrape's read of `cron_passes`.
const CRON_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// A cron job (`inspect-cron`, `cleanup-cron`, `sync-file-sd`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: String,
}

#[derive(Clone)]
pub struct GatewayMetrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
    pub discovery_targets: Gauge,
    cron_last_pass: Family<JobLabels, FloatGauge>,
    cron_last_success: Family<JobLabels, FloatGauge>,
    cron_last_duration: Family<JobLabels, FloatGauge>,
    cron_last_failed: Family<JobLabels, Gauge>,
}

impl GatewayMetrics {
    /// `tls` is the API's (`None`: plain HTTP).
    pub fn new(auth: &Auth, tls: Option<&ApiTls>) -> Self {
        let mut registry = Registry::with_prefix("rtmanager");
        let (disabled, tokens, reload_failures) = auth.gauges();
        registry.register(
            "api_auth_disabled",
            "1 when RTMANAGER_API_AUTH=disabled: internal routes accept requests without a bearer token (transitional)",
            disabled.clone(),
        );
        registry.register("api_tokens", "Bearer tokens accepted now", tokens.clone());
        registry.register(
            "api_token_reload_failures",
            "Token file reloads (SIGHUP) refused; the previous tokens stayed in force",
            reload_failures.clone(),
        );
        let tls_disabled = Gauge::<i64>::default();
        tls_disabled.set(i64::from(tls.is_none()));
        registry.register(
            "api_tls_disabled",
            "1 when the API serves plain HTTP (RTMANAGER_INTERNAL_HTTP_TLS_CERT_FILE and _KEY_FILE unset)",
            tls_disabled,
        );
        registry.register(
            "api_tls_reload_failures",
            "TLS certificate reloads (SIGHUP) refused; the previous certificate stayed in force",
            tls.map_or_else(Counter::default, |tls| tls.reload_failures().clone()),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let discovery_targets = Gauge::default();
        registry.register(
            "discovery_targets",
            "Targets in the last discovery answer for running games",
            discovery_targets.clone(),
        );
        let m = Self {
            registry: Arc::new(Registry::default()),
            requests,
            discovery_targets,
            cron_last_pass: Family::default(),
            cron_last_success: Family::default(),
            cron_last_duration: Family::default(),
            cron_last_failed: Family::default(),
        };
        registry.register(
            "cron_last_pass_timestamp_seconds",
            "When the newest recorded pass of each cron job finished (cron_passes)",
            m.cron_last_pass.clone(),
        );
        registry.register(
            "cron_last_success_timestamp_seconds",
            "When the newest successful pass of each cron job finished (cron_passes)",
            m.cron_last_success.clone(),
        );
        registry.register(
            "cron_last_pass_duration_seconds",
            "How long the newest recorded pass of each cron job took (cron_passes)",
            m.cron_last_duration.clone(),
        );
        registry.register(
            "cron_last_pass_failed",
            "1 when the newest recorded pass of each cron job failed (cron_passes)",
            m.cron_last_failed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Sets the cron gauges from the newest passes.
    pub fn set_cron_passes(&self, passes: &[LastCronPass]) {
        let seconds = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;
        for pass in passes {
            let labels = JobLabels {
                job: pass.job.as_str().to_owned(),
            };
            self.cron_last_pass
                .get_or_create(&labels)
                .set(seconds(pass.finished_at));
            let took = (pass.finished_at - pass.started_at)
                .to_std()
                .unwrap_or_default();
            self.cron_last_duration
                .get_or_create(&labels)
                .set(took.as_secs_f64());
            self.cron_last_failed
                .get_or_create(&labels)
                .set(i64::from(pass.outcome == Outcome::Failure));
            if let Some(at) = pass.last_success_at {
                self.cron_last_success
                    .get_or_create(&labels)
                    .set(seconds(at));
            }
        }
    }

    /// A scrape: the computed gauges refreshed (readiness, the main loop,
    /// the cron passes), then the shared metrics followed by the gateway's.
    pub async fn scrape(&self, infra: &Infra) -> String {
        infra.endpoints().refresh().await;
        match tokio::time::timeout(CRON_READ_TIMEOUT, infra.db.last_cron_passes()).await {
            Ok(Ok(passes)) => self.set_cron_passes(&passes),
            Ok(Err(e)) => tracing::warn!(error = %e, "reading cron_passes for /metrics failed"),
            Err(_) => tracing::warn!("reading cron_passes for /metrics timed out"),
        }
        self.encode(&infra.metrics)
    }

    /// The shared metrics followed by the gateway's, as one OpenMetrics text.
    pub fn encode(&self, shared: &Metrics) -> String {
        let mut out = shared.encode();
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
