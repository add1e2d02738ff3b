//! The write tap: small events about successful writes, handed from the gateway to the
//! engines through a bounded channel. Sending never waits; a full channel drops the event
//! and counts it. Events are hints, never the source of truth.

use std::sync::Arc;

use http::Method;
use metrics::Counter;
use tokio::sync::mpsc;

use crate::metrics as m;

/// A successful write seen by the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteEvent {
    /// Entity bound to the route.
    pub entity: Arc<str>,
    /// Entity key: the first path segment after the route prefix, when there is one.
    pub key: Option<String>,
    /// Upstream (side) that took the write.
    pub side: String,
    /// HTTP method of the write.
    pub method: Method,
    /// When the response came back, Unix ms.
    pub at_ms: u64,
}

/// The sending half, cheap to clone.
#[derive(Clone)]
pub struct Tap {
    tx: mpsc::Sender<WriteEvent>,
    sent: Counter,
    dropped: Counter,
}

/// A tap and its receiver with room for `capacity` events.
pub fn channel(capacity: usize) -> (Tap, mpsc::Receiver<WriteEvent>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let tap = Tap {
        tx,
        sent: metrics::counter!(m::TAP_SENT),
        dropped: metrics::counter!(m::TAP_DROPPED),
    };
    (tap, rx)
}

impl Tap {
    /// Offers an event without waiting; returns false when it was dropped.
    pub fn offer(&self, event: WriteEvent) -> bool {
        match self.tx.try_send(event) {
            Ok(()) => {
                self.sent.increment(1);
                true
            }
            Err(_) => {
                self.dropped.increment(1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> WriteEvent {
        WriteEvent {
            entity: "users".into(),
            key: Some(n.to_string()),
            side: "m".into(),
            method: Method::POST,
            at_ms: n,
        }
    }

    #[tokio::test]
    async fn full_channel_drops_without_waiting() {
        let (tap, mut rx) = channel(2);
        assert!(tap.offer(ev(1)));
        assert!(tap.offer(ev(2)));
        assert!(
            !tap.offer(ev(3)),
            "third event must be dropped, not awaited"
        );
        assert_eq!(rx.recv().await, Some(ev(1)));
        assert!(tap.offer(ev(4)));
    }
}
