//! Counters and histograms of the service, and their Prometheus text exposition (format 0.0.4), so
//! that an embedding server can publish them as they are and add its own.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// A cumulative histogram with fixed upper bounds, as Prometheus' `histogram` type.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    inner: Mutex<HistogramData>,
}

#[derive(Debug, Clone, Default)]
struct HistogramData {
    /// Observations ≤ each bound (not cumulative; summed when rendered).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending); `+Inf` is implied.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            inner: Mutex::new(HistogramData { counts: vec![0; bounds.len()], ..Default::default() }),
        }
    }

    pub fn observe(&self, value: f64) {
        let mut data = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            data.counts[i] += 1;
        }
        data.sum += value;
        data.count += 1;
    }

    /// `(upper bound, cumulative count)` per bucket, then the total count and sum.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let data = self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut running = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&data.counts)
            .map(|(&b, &c)| {
                running += c;
                (b, running)
            })
            .collect();
        (buckets, data.count, data.sum)
    }

    /// Appends the histogram's `_bucket`, `_sum` and `_count` lines; `labels` is `""` or
    /// `key="value",…` (without braces).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let (buckets, count, sum) = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, c) in buckets {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Appends a metric's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Latency buckets in seconds, from 10 ms to 5 minutes.
pub const SECONDS_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Size buckets: images or requests per batch.
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// What the service counts.
#[derive(Debug)]
pub struct ServiceMetrics {
    pub requests_accepted: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub images_generated: AtomicU64,
    /// Images computed for requests that were gone by the end of their batch.
    pub images_discarded: AtomicU64,
    pub batches: AtomicU64,
    /// Batches stopped early: every request in them gone, or the shutdown's bound reached.
    pub batches_cancelled: AtomicU64,
    pub batches_failed: AtomicU64,
    /// Batches running now (0 or 1).
    pub batches_running: AtomicU64,
    pub batch_images: Histogram,
    pub batch_requests: Histogram,
    pub batch_seconds: Histogram,
    /// From submission to the start of the request's (first) batch.
    pub queue_seconds: Histogram,
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            requests_accepted: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            images_generated: AtomicU64::new(0),
            images_discarded: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_cancelled: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            batches_running: AtomicU64::new(0),
            batch_images: Histogram::new(SIZE_BUCKETS),
            batch_requests: Histogram::new(SIZE_BUCKETS),
            batch_seconds: Histogram::new(SECONDS_BUCKETS),
            queue_seconds: Histogram::new(SECONDS_BUCKETS),
        }
    }
}

impl ServiceMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text of every metric, with the queue depth given.
    pub fn render(&self, queue_depth: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        header(&mut out, "unet2d_queue_depth", "gauge", "Requests waiting for a batch.");
        let _ = writeln!(out, "unet2d_queue_depth {queue_depth}");
        header(&mut out, "unet2d_batches_running", "gauge", "Sampling runs in progress.");
        let _ = writeln!(out, "unet2d_batches_running {}", self.batches_running.load(Ordering::Relaxed));
        counter(&mut out, "unet2d_requests_accepted_total", "Requests queued.", &self.requests_accepted);
        counter(
            &mut out,
            "unet2d_requests_rejected_total",
            "Requests refused when submitted (invalid, too large, queue full, shutting down).",
            &self.requests_rejected,
        );
        counter(&mut out, "unet2d_images_generated_total", "Images generated and delivered.", &self.images_generated);
        counter(
            &mut out,
            "unet2d_images_discarded_total",
            "Images computed for requests gone by the end of their batch.",
            &self.images_discarded,
        );
        counter(&mut out, "unet2d_batches_total", "Sampling runs finished, cancelled or failed.", &self.batches);
        counter(
            &mut out,
            "unet2d_batches_cancelled_total",
            "Sampling runs stopped early (all their requests gone, or shutdown).",
            &self.batches_cancelled,
        );
        counter(&mut out, "unet2d_batches_failed_total", "Sampling runs that failed.", &self.batches_failed);
        header(&mut out, "unet2d_batch_images", "histogram", "Images per sampling run.");
        self.batch_images.render(&mut out, "unet2d_batch_images", "");
        header(&mut out, "unet2d_batch_requests", "histogram", "Requests per sampling run.");
        self.batch_requests.render(&mut out, "unet2d_batch_requests", "");
        header(&mut out, "unet2d_batch_seconds", "histogram", "Duration of a sampling run.");
        self.batch_seconds.render(&mut out, "unet2d_batch_seconds", "");
        header(
            &mut out,
            "unet2d_queue_seconds",
            "histogram",
            "Time from submission to the start of a request's batch.",
        );
        self.queue_seconds.render(&mut out, "unet2d_queue_seconds", "");
        out
    }
}
