//! The gateway's own metrics, served on `/metrics` after the shared ones.
//!
//! A second prometheus-client registry (the shared [`Metrics`] stays
//! untouched): `rtmanager_api_auth_disabled` (1 in the transitional mode
//! without tokens), `rtmanager_api_tokens` (tokens accepted now),
//! `rtmanager_api_token_reload_failures_total` and
//! `rtmanager_http_requests_total{method,route,status}` (route = the route
//! template, so game ids never become label values).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared::telemetry::Metrics;

use crate::auth::Auth;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone)]
pub struct GatewayMetrics {
    registry: Arc<Registry>,
    pub requests: Family<RequestLabels, Counter>,
}

impl GatewayMetrics {
    pub fn new(auth: &Auth) -> Self {
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
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
        }
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
