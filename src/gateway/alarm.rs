//! The drain signal and a connection's timer as its serving loop sees them: each is polled
//! once, so it keeps the task's waker, and after that a wake-up only reads a flag instead of
//! polling them again (the drain signal's poll takes a lock shared by every connection).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A connection loop's drain signal and timer.
pub(super) struct Alarms<'a, 'b> {
    shutdown: &'b CancellationToken,
    cancelled: Pin<&'a mut WaitForCancellationFuture<'b>>,
    timer: Pin<&'a mut Sleep>,
    cancel_armed: bool,
    timer_armed: bool,
}

impl<'a, 'b> Alarms<'a, 'b> {
    /// Watches `shutdown` (through its pinned `cancelled` future) and `timer`.
    pub(super) fn new(
        shutdown: &'b CancellationToken,
        cancelled: Pin<&'a mut WaitForCancellationFuture<'b>>,
        timer: Pin<&'a mut Sleep>,
    ) -> Alarms<'a, 'b> {
        Alarms {
            shutdown,
            cancelled,
            timer,
            cancel_armed: false,
            timer_armed: false,
        }
    }

    /// Whether the gateway is draining; the task is woken when it starts to.
    pub(super) fn draining(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cancel_armed {
            return self.shutdown.is_cancelled();
        }
        self.cancel_armed = true;
        self.cancelled.as_mut().poll(cx).is_ready()
    }

    /// Whether the timer has fired; the task is woken when it does.
    pub(super) fn rung(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer_armed {
            return self.timer.is_elapsed();
        }
        self.timer_armed = true;
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// When the timer is set to fire.
    pub(super) fn deadline(&self) -> Instant {
        self.timer.deadline()
    }

    /// Sets the timer to fire at `at`.
    pub(super) fn reset(&mut self, at: Instant) {
        self.timer.as_mut().reset(at);
        self.timer_armed = false;
    }
}
