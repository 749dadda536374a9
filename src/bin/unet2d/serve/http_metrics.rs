//! The HTTP layer's own metrics: requests by route and status, and their latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use candle_unet2d::service::{metric_header, Histogram, SECONDS_BUCKETS};

pub struct HttpMetrics {
    /// `(route, status)` → count; the routes are a fixed set, so the map stays small.
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self { requests: Mutex::new(BTreeMap::new()), latency: Mutex::new(BTreeMap::new()) }
    }
}

impl HttpMetrics {
    pub fn observe(&self, route: &'static str, status: &str, elapsed: Duration) {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner).entry((route, status.to_owned())).or_default() +=
            1;
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route)
            .or_insert_with(|| Histogram::new(SECONDS_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self, out: &mut String) {
        metric_header(
            out,
            "unet2d_http_requests_total",
            "counter",
            "HTTP requests by route and status (client_closed: the client went away first).",
        );
        for ((route, status), n) in self.requests.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let _ = writeln!(out, "unet2d_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        metric_header(out, "unet2d_http_request_seconds", "histogram", "HTTP request latency by route.");
        for (route, histogram) in self.latency.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            histogram.render(out, "unet2d_http_request_seconds", &format!("route=\"{route}\""));
        }
    }
}
