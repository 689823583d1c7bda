//! The operator's HTTP endpoints: `/metrics`, `/healthz` (the process runs) and `/readyz` (the
//! watches have listed everything once: before that the operator would act on empty caches).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::reconcile::observe::Caches;

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    /// One set of caches per controller (one per watched namespace in namespaced mode).
    caches: Vec<Caches>,
}

pub fn router(metrics: Arc<Metrics>, caches: Vec<Caches>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(ServerState { metrics, caches })
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<ServerState>) -> impl IntoResponse {
    if state.caches.iter().all(Caches::is_ready) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not synced yet\n")
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    caches: Vec<Caches>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, caches)).with_graceful_shutdown(shutdown).await
}
