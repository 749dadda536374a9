//! The routes: `POST /v1/images`, `GET /healthz`, `GET /metrics`, JSON errors for everything else,
//! and the middleware that logs and counts every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_unet2d::service::{BatchingService, ServiceError};
use serde_json::json;

use super::api;
use super::encode::{encode, Format};
use super::errors::ApiError;
use super::http_metrics::HttpMetrics;

/// What the handlers share.
pub struct App {
    pub service: BatchingService,
    pub metrics: HttpMetrics,
    /// The service's request timeout; the handler waits this long plus a margin at most, in case
    /// a single denoising step outlasts the deadline.
    pub request_timeout: Option<Duration>,
    /// Largest request body in bytes.
    pub max_body: usize,
    next_request: AtomicU64,
}

impl App {
    pub fn new(service: BatchingService, request_timeout: Option<Duration>, max_body: usize) -> Self {
        Self { service, metrics: HttpMetrics::default(), request_timeout, max_body, next_request: AtomicU64::new(1) }
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/images", post(images).fallback(method_not_allowed))
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

async fn images(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is larger than this server's --max-body of {} bytes; send a smaller request",
                app.max_body
            ),
        )
    };
    // A body announced as too large is refused before any of it is read (or uploaded).
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > app.max_body as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, app.max_body).await.map_err(|e| {
        // `to_bytes` reports the limit as an error whose source is a `LengthLimitError`.
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", format!("cannot read the body: {e}"))
    })?;
    let api::Parsed { request, format } = api::parse(&body)?;
    let channels = app.service.model_info().channels;
    if format == Format::Png && channels != 1 && channels != 3 {
        return Err(ApiError::field(
            "format",
            format!("png needs a 1- or 3-channel model; this one has {channels}: use \"npy\""),
        ));
    }
    let ticket = app.service.submit(request)?;
    let id = ticket.id();
    tracing::debug!(request = id, "queued");
    // The ticket lives in this future: if the client goes away, hyper drops the future, the ticket
    // with it, and the service stops working for it.
    let outcome = match app.request_timeout {
        Some(t) => match tokio::time::timeout(t + Duration::from_secs(5), ticket).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ServiceError::TimedOut { after: t }),
        },
        None => ticket.await,
    };
    let images = outcome?;
    // Encoding is CPU work: off the async threads.
    let body = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, String> {
        let (h, w, c) = images.first().map(|i| (i.height, i.width, i.channels)).unwrap_or_default();
        let items = images
            .iter()
            .map(|image| {
                Ok(json!({
                    "index": image.index,
                    "seed": image.seed,
                    "class_label": image.class_label,
                    "data": encode(image, format)?,
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(json!({ "format": format.name(), "height": h, "width": w, "channels": c, "images": items }))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("encoding failed: {e}")))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding_failed", e))?;
    Ok(Json(body).into_response())
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let info = app.service.model_info();
    let stopping = app.service.is_shutting_down();
    let status = if stopping { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({
        "status": if stopping { "shutting_down" } else { "ok" },
        "queue_depth": app.service.queue_depth(),
        "model": {
            "channels": info.channels,
            "height": info.height,
            "width": info.width,
            "classes": info.classes,
            "scheduler": info.scheduler,
            "pipeline": info.pipeline,
        },
        "max_batch": app.service.options().max_batch,
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut text = app.service.render_metrics();
    app.metrics.render(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; the routes are POST /v1/images, GET /healthz, GET /metrics",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn method_not_allowed(request: Request) -> ApiError {
    let allowed = if request.uri().path() == "/v1/images" { "POST" } else { "GET" };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} {} is not served; use {allowed}", request.method(), request.uri().path()),
    )
}

/// Logs and counts every request; a request whose client went away before the answer is logged
/// and counted as `client_closed` when hyper drops its future.
async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let id = app.next_request.fetch_add(1, Ordering::Relaxed);
    let method = request.method().clone();
    // A fixed set of route labels, so that made-up paths cannot grow the metrics.
    let route = match request.extensions().get::<MatchedPath>().map(MatchedPath::as_str) {
        Some("/v1/images") => "/v1/images",
        Some("/healthz") => "/healthz",
        Some("/metrics") => "/metrics",
        _ => "other",
    };
    let mut guard = InFlight { app: app.clone(), id, route, started: Instant::now(), answered: false };
    let response = next.run(request).await;
    guard.answered = true;
    let status = response.status();
    let elapsed = guard.started.elapsed();
    app.metrics.observe(route, status.as_str(), elapsed);
    // Back-pressure (503) is the server working as meant; other 5xx are worth a look.
    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(request = id, %method, route, status = status.as_u16(), ms = elapsed.as_millis() as u64, "answered");
    } else {
        tracing::info!(request = id, %method, route, status = status.as_u16(), ms = elapsed.as_millis() as u64, "answered");
    }
    response
}

struct InFlight {
    app: Arc<App>,
    id: u64,
    route: &'static str,
    started: Instant,
    answered: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.answered {
            let elapsed = self.started.elapsed();
            self.app.metrics.observe(self.route, "client_closed", elapsed);
            tracing::info!(
                request = self.id,
                route = self.route,
                ms = elapsed.as_millis() as u64,
                "client went away; its work is cancelled"
            );
        }
    }
}
