//! The bounded queue of waiting requests and the batching rule: a batch starts with the oldest
//! request (so none waits forever) and takes, in arrival order, the images of every waiting request
//! with the same [`BatchKey`] until it holds `max_batch` images. A request larger than the room left
//! is split: the rest of its images stay at the head of the queue for the next batch.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::error::{ServiceError, ServiceResult};
use super::job::Job;

/// Part of a request in a batch: its images `range`.
pub(crate) struct Part {
    pub job: Arc<Job>,
    pub range: Range<usize>,
}

struct Entry {
    job: Arc<Job>,
    /// The first image not yet in a batch.
    next: usize,
}

pub(crate) struct QueueState {
    entries: VecDeque<Entry>,
    /// False once shutdown began: no new requests.
    pub accepting: bool,
    /// When running and waiting work is given up during a shutdown.
    pub drain_deadline: Option<Instant>,
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

impl Queue {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(QueueState { entries: VecDeque::new(), accepting: true, drain_deadline: None }),
            changed: Condvar::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// Queues `job` unless the queue holds `max_queue` requests (after dropping the withdrawn and
    /// timed-out ones) or the service is stopping.
    pub fn push(&self, job: Arc<Job>, max_queue: usize, retry_after: Duration) -> ServiceResult<()> {
        let mut state = self.lock();
        if !state.accepting {
            return Err(ServiceError::ShuttingDown);
        }
        state.purge(Instant::now());
        if state.entries.len() >= max_queue {
            return Err(ServiceError::QueueFull { max_queue, retry_after });
        }
        state.entries.push_back(Entry { job, next: 0 });
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Waits for work and returns the next batch; `None` when the service is stopping and nothing is
    /// left to run. `batch_wait`: how long a batch that is not full waits for more requests.
    pub fn next_batch(&self, max_batch: usize, batch_wait: Duration) -> Option<Vec<Part>> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            state.purge(now);
            if let Some(deadline) = state.drain_deadline {
                if now >= deadline {
                    state.fail_all(ServiceError::ShuttingDown);
                    return None;
                }
            }
            match state.entries.front() {
                None if !state.accepting => return None,
                None => state = self.wait(state, None),
                Some(oldest) => {
                    let start_by = oldest.job.submitted + batch_wait;
                    if !state.accepting || now >= start_by || state.waiting_images(&oldest.job) >= max_batch {
                        return Some(state.take(max_batch));
                    }
                    state = self.wait(state, Some(start_by - now));
                }
            }
        }
    }

    fn wait<'a>(&self, state: MutexGuard<'a, QueueState>, timeout: Option<Duration>) -> MutexGuard<'a, QueueState> {
        // Also wake now and then to time out requests that wait in the queue.
        let timeout = timeout.unwrap_or(Duration::from_millis(250)).min(Duration::from_millis(250));
        self.changed.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0
    }
}

impl QueueState {
    /// Requests waiting (a request split over batches counts until its last image starts).
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// Drops the requests nobody waits for, and finishes those past their deadline.
    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|e| {
            e.job.finish_if_expired(now);
            e.job.slot.is_wanted()
        });
    }

    /// Fails every waiting request with `error`.
    pub fn fail_all(&mut self, error: ServiceError) {
        for entry in self.entries.drain(..) {
            entry.job.slot.finish(Err(error.clone()));
        }
    }

    /// Images waiting that could share a batch with `job`.
    fn waiting_images(&self, job: &Job) -> usize {
        self.entries.iter().filter(|e| e.job.key == job.key).map(|e| e.job.num_images - e.next).sum()
    }

    /// The batch of the oldest request: see the module's doc.
    fn take(&mut self, max_batch: usize) -> Vec<Part> {
        let mut parts = Vec::new();
        let Some(key) = self.entries.front().map(|e| e.job.key.clone()) else {
            return parts;
        };
        let mut room = max_batch.max(1);
        for entry in self.entries.iter_mut().filter(|e| e.job.key == key) {
            if room == 0 {
                break;
            }
            let n = (entry.job.num_images - entry.next).min(room);
            parts.push(Part { job: entry.job.clone(), range: entry.next..entry.next + n });
            entry.next += n;
            room -= n;
        }
        self.entries.retain(|e| e.next < e.job.num_images);
        parts
    }
}
