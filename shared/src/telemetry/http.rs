//! The process endpoints on `RTMANAGER_METRICS_ADDR`: `GET /metrics`,
//! `GET /healthz`, `GET /readyz` (the gateway serves the same answers on its
//! API port, through [`Endpoints`]).
//!
//! - `/healthz`: 200 `{"status":"ok"}` while every main loop goes round
//!   (`crate::liveness`); 503 `{"status":"stalled","stalled":[{"loop",
//!   "silent_for_ms","limit_ms"}]}` once one has not for its limit. It reads
//!   no dependency, so it answers at once, and stays 200 while one is away.
//! - `/readyz`: the readiness checks (`crate::readiness`), 200 or 503 with
//!   the failed ones named; bounded by the checks' timeout.
//! - `/metrics`: OpenMetrics text, after a readiness evaluation and the
//!   main loop's last tick, so those gauges are as fresh as the scrape.
//!
//! The listener keeps serving until the process exits: `/healthz` must
//! stay up through a shutdown's drain, and `/readyz` says `shutting_down`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response};
use tokio::net::TcpListener;

use super::Metrics;
use crate::liveness::{Liveness, LivenessStatus};
use crate::readiness::Readiness;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the endpoints answer from: one process's metrics, loops and checks.
#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Metrics,
    pub liveness: Liveness,
    pub readiness: Readiness,
}

impl Endpoints {
    /// `/healthz`: status and JSON body.
    pub fn healthz(&self) -> (u16, serde_json::Value) {
        match self.liveness.status() {
            LivenessStatus::Live => (200, serde_json::json!({"status": "ok"})),
            LivenessStatus::Stalled(stalls) => {
                let stalled: Vec<serde_json::Value> = stalls
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "loop": s.name,
                            "silent_for_ms": s.silent_for.as_millis() as u64,
                            "limit_ms": s.limit.as_millis() as u64,
                        })
                    })
                    .collect();
                tracing::warn!(?stalls, "main loop stalled: /healthz fails");
                (
                    503,
                    serde_json::json!({"status": "stalled", "stalled": stalled}),
                )
            }
        }
    }

    /// `/readyz`: status and JSON body.
    pub async fn readyz(&self) -> (u16, serde_json::Value) {
        let report = self.readiness.evaluate().await;
        (if report.is_ready() { 200 } else { 503 }, report.body())
    }

    /// Refreshes the gauges that are computed, not counted: readiness and
    /// the main loop's last tick.
    pub async fn refresh(&self) {
        self.readiness.evaluate().await;
        if let Some(at) = self.liveness.last_tick_unix() {
            self.metrics.main_loop_last_tick.set(at);
        }
    }

    /// `/metrics`: the OpenMetrics text, after [`Self::refresh`].
    pub async fn metrics_text(&self) -> String {
        self.refresh().await;
        self.metrics.encode()
    }
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` on `listener` for the
/// rest of the process.
pub async fn serve_metrics(listener: TcpListener, endpoints: Endpoints) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener accept failed");
                continue;
            }
        };
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let endpoints = endpoints.clone();
                async move { Ok::<_, hyper::http::Error>(answer(&endpoints, req.uri().path()).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn answer(endpoints: &Endpoints, path: &str) -> Response<Full<Bytes>> {
    let json = |(status, body): (u16, serde_json::Value)| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
    };
    let response = match path {
        "/metrics" => Response::builder()
            .header("content-type", OPENMETRICS)
            .body(Full::new(Bytes::from(endpoints.metrics_text().await))),
        "/healthz" => json(endpoints.healthz()),
        "/readyz" => json(endpoints.readyz().await),
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"not found"))),
    };
    response.expect("static response parts")
}
