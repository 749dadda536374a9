//! A request's handle: a one-shot slot the worker fills and the client waits on, blocking
//! ([`Ticket::wait`], [`Ticket::wait_timeout`]) or as a `Future` (any async runtime: the waker is
//! std's). Dropping a ticket withdraws the request: the worker skips it if it has not started, and
//! stops the batch it is in once no request of the batch is still wanted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::error::{ServiceError, ServiceResult};
use super::request::GeneratedImage;

/// What a request ends with.
pub type Outcome = ServiceResult<Vec<GeneratedImage>>;

/// The state a ticket and the worker share.
#[derive(Default)]
pub(crate) struct Slot {
    inner: Mutex<SlotInner>,
    ready: Condvar,
    /// The ticket was dropped.
    abandoned: AtomicBool,
    /// An outcome was set (readable without the lock, from the step callback).
    finished: AtomicBool,
}

#[derive(Default)]
struct SlotInner {
    outcome: Option<Outcome>,
    /// Set once the outcome has been handed to the client.
    taken: bool,
    waker: Option<Waker>,
}

impl Slot {
    /// Sets the outcome unless one was set already (a timed-out request keeps its timeout even if its
    /// batch later finishes); returns whether this call set it.
    pub(crate) fn finish(&self, outcome: Outcome) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if self.finished.load(Ordering::SeqCst) {
            return false;
        }
        inner.outcome = Some(outcome);
        self.finished.store(true, Ordering::SeqCst);
        let waker = inner.waker.take();
        drop(inner);
        self.ready.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Whether an outcome was set.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }

    /// Whether the client dropped its ticket.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Whether anyone still wants this request's images.
    pub(crate) fn is_wanted(&self) -> bool {
        !self.is_finished() && !self.is_abandoned()
    }
}

/// The client's side of a submitted request.
pub struct Ticket {
    slot: Arc<Slot>,
    id: u64,
}

impl Ticket {
    pub(crate) fn new(slot: Arc<Slot>, id: u64) -> Self {
        Self { slot, id }
    }

    /// The request's number in the service (from 1), for logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Blocks until the request is done.
    pub fn wait(self) -> Outcome {
        let mut inner = self.slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = take(&mut inner) {
                return outcome;
            }
            inner = self.slot.ready.wait(inner).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the request is done or `timeout` passes (`None` then; the request goes on).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut inner = self.slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = take(&mut inner) {
                return Some(outcome);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            inner = self.slot.ready.wait_timeout(inner, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

fn take(inner: &mut SlotInner) -> Option<Outcome> {
    if inner.taken {
        // Polled again after completion: a misuse; answer instead of hanging.
        return Some(Err(ServiceError::Failed("the ticket's outcome was already taken".into())));
    }
    let outcome = inner.outcome.take()?;
    inner.taken = true;
    Some(outcome)
}

impl Future for Ticket {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut inner = self.slot.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match take(&mut inner) {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slot.abandoned.store(true, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("id", &self.id).field("finished", &self.slot.is_finished()).finish()
    }
}
