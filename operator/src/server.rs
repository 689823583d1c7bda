//! The operator's HTTP endpoints: `/metrics`, `/healthz` (the process runs) and `/readyz` (the
//! watches have listed everything once: before that the operator would act on empty caches).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::reconcile::caches::Caches;

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    /// One set of caches per controller (one per watched namespace in namespaced mode).
    caches: Vec<Caches>,
    /// False on a standby replica (leader election): it watches nothing yet.
    leading: Arc<AtomicBool>,
}

pub fn router(metrics: Arc<Metrics>, caches: Vec<Caches>, leading: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .with_state(ServerState { metrics, caches, leading })
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.encode(),
    )
}

async fn ready_handler(State(state): State<ServerState>) -> impl IntoResponse {
    if !state.leading.load(Ordering::Acquire) {
        // A standby must count as ready, or a rolling update would wait for it forever.
        (StatusCode::OK, "standby\n")
    } else if state.caches.iter().all(Caches::is_ready) {
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
    leading: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(metrics, caches, leading)).with_graceful_shutdown(shutdown).await
}
