//! `/metrics`, `/healthz` and `/readyz`.
//!
//! Anything may connect to this port; requests other than these three GETs
//! get a 404 or 405 from the router, and malformed HTTP is rejected by the
//! server before it reaches any handler. Connections are served within
//! [`ServeLimits`] (timeouts, a cap, a bounded request head), the same as
//! the profile page's, and what those refuse is counted here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use hearth_ui::{ServeLimits, ServerStats};

use super::metrics::AgentMetrics;

pub fn router(metrics: Arc<AgentMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics)
}

async fn metrics_handler(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
}

async fn healthz(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    if m.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "sampling thread stalled\n")
    }
}

async fn readyz(State(m): State<Arc<AgentMetrics>>) -> impl IntoResponse {
    if m.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not sampling yet\n")
    }
}

pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<AgentMetrics>) {
    let stats = Arc::new(ServerStats::default());
    metrics.add_http_server("metrics", stats.clone());
    hearth_ui::serve_limited(
        listener,
        router(metrics),
        ServeLimits::default(),
        stats,
        "metrics",
    )
    .await;
}
