//! What the two ends of an HTTP/2 connection have agreed, kept from the frames that cross the
//! wire: the client's settings, both connection flow-control windows, the streams still open,
//! and the acknowledgements still owed. It says when the connection's state lives only in
//! these few numbers, so that hyper's connection can be dropped and a new one resumed from
//! them (`resume`).

use super::frames::{END_HEADERS, END_STREAM_OR_ACK, Head, increment, kind, settings};

/// The connection flow-control window every HTTP/2 connection starts with (RFC 9113 §6.9.2).
pub(super) const INITIAL_WINDOW: i64 = 65_535;

/// The connection receive window we keep for each client (hyper's default, set explicitly
/// because a resumed connection's window is restored to it).
pub(super) const CONN_WINDOW: u32 = 1024 * 1024;

/// What a parked connection keeps: all a new hyper connection needs to carry on.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// The client's settings, in the order first sent, each with its latest value.
    pub(super) settings: Vec<(u16, u32)>,
    /// How many DATA bytes the client lets us send on the connection.
    pub(super) send_window: i64,
    /// How many DATA bytes the client may still send us on the connection.
    pub(super) recv_window: i64,
    /// The highest stream the client has opened (named by a GOAWAY sent while parked).
    pub(super) last_stream: u32,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory {
            settings: Vec::new(),
            send_window: INITIAL_WINDOW,
            recv_window: INITIAL_WINDOW,
            last_stream: 0,
        }
    }
}

/// A stream that has not yet ended on both sides.
struct Open {
    id: u32,
    /// We have sent END_STREAM.
    ours_ended: bool,
    /// The client has sent END_STREAM.
    theirs_ended: bool,
}

/// The connection's agreed state, updated by each frame that crosses the wire.
#[derive(Default)]
pub(super) struct Ledger {
    /// What survives parking.
    pub memory: Memory,
    open: Vec<Open>,
    /// Our SETTINGS frames the client has not acknowledged.
    ours_unacked: u32,
    /// The client's SETTINGS frames we have not acknowledged.
    theirs_unacked: u32,
    /// The client's PINGs we have not answered.
    pings_owed: u32,
    /// Our PINGs the client has not answered.
    pings_out: u32,
    /// A header block each way that has begun and not ended.
    block_in: bool,
    block_out: bool,
    /// GOAWAY sent or received, or a frame that makes no sense: never parked.
    closing: bool,
}

impl Ledger {
    /// A ledger resumed from what a parked connection kept.
    pub fn resumed(memory: Memory) -> Ledger {
        Ledger {
            memory,
            ..Ledger::default()
        }
    }

    /// Whether everything the two ends share is in `memory`: no stream open, no header
    /// block, settings and pings answered both ways, and windows a new connection can be
    /// brought to exactly.
    pub fn settled(&self) -> bool {
        let m = &self.memory;
        !self.closing
            && self.open.is_empty()
            && !self.block_in
            && !self.block_out
            && self.ours_unacked == 0
            && self.theirs_unacked == 0
            && self.pings_owed == 0
            && self.pings_out == 0
            // A new connection starts from the initial send window and can only be told
            // of more; what the client granted beyond it is replayed as an update.
            && m.send_window >= INITIAL_WINDOW
            && (0..=i64::from(CONN_WINDOW)).contains(&m.recv_window)
    }

    fn stream(&mut self, id: u32) -> Option<&mut Open> {
        self.open.iter_mut().find(|s| s.id == id)
    }

    fn end(&mut self, id: u32, ours: bool) {
        if let Some(s) = self.stream(id) {
            if ours {
                s.ours_ended = true;
            } else {
                s.theirs_ended = true;
            }
        }
        self.open.retain(|s| !(s.ours_ended && s.theirs_ended));
    }

    /// Accounts for a frame the client sent (`payload` gathered for SETTINGS and
    /// WINDOW_UPDATE).
    pub fn received(&mut self, h: Head, payload: &[u8]) {
        let ended = h.has(END_STREAM_OR_ACK);
        match h.kind {
            kind::DATA => {
                self.memory.recv_window -= i64::from(h.len);
                if ended {
                    self.end(h.stream, false);
                }
            }
            kind::HEADERS => {
                self.block_in = !h.has(END_HEADERS);
                if self.stream(h.stream).is_none() {
                    self.memory.last_stream = self.memory.last_stream.max(h.stream);
                    self.open.push(Open {
                        id: h.stream,
                        ours_ended: false,
                        theirs_ended: false,
                    });
                }
                if ended {
                    self.end(h.stream, false);
                }
            }
            kind::CONTINUATION => self.block_in = !h.has(END_HEADERS),
            kind::RST_STREAM => self.open.retain(|s| s.id != h.stream),
            kind::SETTINGS if ended => self.ours_unacked = self.ours_unacked.saturating_sub(1),
            kind::SETTINGS => {
                self.theirs_unacked += 1;
                if h.len as usize != payload.len() || !h.len.is_multiple_of(6) {
                    self.closing = true;
                }
                for (id, value) in settings(payload) {
                    let kept = &mut self.memory.settings;
                    match kept.iter_mut().find(|(k, _)| *k == id) {
                        Some(slot) => slot.1 = value,
                        None => kept.push((id, value)),
                    }
                }
            }
            kind::PING if ended => self.pings_out = self.pings_out.saturating_sub(1),
            kind::PING => self.pings_owed += 1,
            kind::WINDOW_UPDATE if h.stream == 0 => match increment(payload) {
                Some(n) => self.memory.send_window += i64::from(n),
                None => self.closing = true,
            },
            kind::GOAWAY | kind::PUSH_PROMISE => self.closing = true,
            // PRIORITY, stream WINDOW_UPDATEs and unknown types leave nothing behind.
            _ => {}
        }
    }

    /// Accounts for a frame we sent.
    pub fn sent(&mut self, h: Head, payload: &[u8]) {
        let ended = h.has(END_STREAM_OR_ACK);
        match h.kind {
            kind::DATA => {
                self.memory.send_window -= i64::from(h.len);
                if ended {
                    self.end(h.stream, true);
                }
            }
            kind::HEADERS => {
                self.block_out = !h.has(END_HEADERS);
                if ended {
                    self.end(h.stream, true);
                }
            }
            kind::CONTINUATION => self.block_out = !h.has(END_HEADERS),
            kind::RST_STREAM => self.open.retain(|s| s.id != h.stream),
            kind::SETTINGS if ended => self.theirs_unacked = self.theirs_unacked.saturating_sub(1),
            kind::SETTINGS => self.ours_unacked += 1,
            kind::PING if ended => self.pings_owed = self.pings_owed.saturating_sub(1),
            kind::PING => self.pings_out += 1,
            kind::WINDOW_UPDATE if h.stream == 0 => match increment(payload) {
                Some(n) => self.memory.recv_window += i64::from(n),
                None => self.closing = true,
            },
            kind::GOAWAY | kind::PUSH_PROMISE => self.closing = true,
            _ => {}
        }
    }

    /// Marks the connection as ending: it is never parked.
    pub fn close(&mut self) {
        self.closing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(kind: u8, flags: u8, stream: u32, len: u32) -> Head {
        Head {
            len,
            kind,
            flags,
            stream,
        }
    }

    /// A connection that has exchanged settings both ways, as after a handshake.
    fn greeted() -> Ledger {
        let mut l = Ledger::default();
        l.sent(head(kind::SETTINGS, 0, 0, 6), &[0, 1, 0, 0, 0, 0]);
        l.sent(
            head(kind::WINDOW_UPDATE, 0, 0, 4),
            &(983_041u32).to_be_bytes(),
        );
        assert!(!l.settled(), "our SETTINGS are unacknowledged");
        l.received(
            head(kind::SETTINGS, 0, 0, 12),
            &[0, 4, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0],
        );
        assert!(!l.settled(), "the client's SETTINGS are unacknowledged");
        l.sent(head(kind::SETTINGS, 1, 0, 0), &[]);
        l.received(head(kind::SETTINGS, 1, 0, 0), &[]);
        l.received(
            head(kind::WINDOW_UPDATE, 0, 0, 4),
            &(1_000_000u32).to_be_bytes(),
        );
        assert!(l.settled());
        l
    }

    /// An exchange keeps the connection unsettled until both sides have ended its stream,
    /// and flow control is counted both ways.
    #[test]
    fn an_exchange_is_open_until_both_ends_end_it() {
        let mut l = greeted();
        l.received(head(kind::HEADERS, 0x4, 1, 20), &[]);
        l.received(head(kind::DATA, 0x1, 1, 100), &[]);
        assert!(!l.settled());
        l.sent(head(kind::HEADERS, 0x4, 1, 30), &[]);
        l.sent(head(kind::DATA, 0, 1, 5000), &[]);
        assert!(!l.settled());
        l.sent(head(kind::DATA, 0x1, 1, 0), &[]);
        assert!(l.settled());
        assert_eq!(l.memory.recv_window, 1_048_576 - 100);
        assert_eq!(l.memory.send_window, 65_535 + 1_000_000 - 5000);
        assert_eq!(l.memory.last_stream, 1);
        // A bodiless request whose response carries END_STREAM on its head.
        l.received(head(kind::HEADERS, 0x5, 3, 20), &[]);
        assert!(!l.settled());
        l.sent(head(kind::HEADERS, 0x5, 3, 20), &[]);
        assert!(l.settled());
        // A reset ends a stream either way.
        l.received(head(kind::HEADERS, 0x4, 5, 20), &[]);
        l.sent(head(kind::RST_STREAM, 0, 5, 4), &[]);
        l.received(head(kind::HEADERS, 0x4, 7, 20), &[]);
        l.received(head(kind::RST_STREAM, 0, 7, 4), &[]);
        assert!(l.settled());
        assert_eq!(l.memory.last_stream, 7);
    }

    /// Settings are kept with their latest values, in the order first sent.
    #[test]
    fn the_clients_settings_are_kept() {
        let mut l = greeted();
        l.received(head(kind::SETTINGS, 0, 0, 6), &[0, 4, 0, 0, 0x40, 0]);
        l.sent(head(kind::SETTINGS, 1, 0, 0), &[]);
        assert_eq!(l.memory.settings, vec![(4, 16384), (2, 0)]);
        assert!(l.settled());
    }

    /// Header blocks, pings, a GOAWAY and a send window below the initial one each prevent
    /// parking.
    #[test]
    fn what_keeps_a_connection_unsettled() {
        let mut l = greeted();
        l.received(head(kind::HEADERS, 0x1, 9, 20), &[]);
        l.received(head(kind::CONTINUATION, 0, 9, 20), &[]);
        assert!(!l.settled());
        l.received(head(kind::CONTINUATION, 0x4, 9, 20), &[]);
        l.sent(head(kind::HEADERS, 0, 9, 20), &[]);
        l.sent(head(kind::CONTINUATION, 0x4, 9, 20), &[]);
        l.sent(head(kind::DATA, 0x1, 9, 0), &[]);
        assert!(l.settled());

        l.received(head(kind::PING, 0, 0, 8), &[]);
        assert!(!l.settled());
        l.sent(head(kind::PING, 1, 0, 8), &[]);
        assert!(l.settled());
        l.sent(head(kind::PING, 0, 0, 8), &[]);
        assert!(!l.settled());
        l.received(head(kind::PING, 1, 0, 8), &[]);
        assert!(l.settled());

        l.sent(head(kind::DATA, 0, 11, 1_000_001), &[]);
        assert!(!l.settled(), "send window below the initial one");
        l.received(
            head(kind::WINDOW_UPDATE, 0, 0, 4),
            &(1_000_000u32).to_be_bytes(),
        );
        assert!(l.settled());
        l.received(head(kind::WINDOW_UPDATE, 0, 0, 2), &[0, 1]);
        assert!(!l.settled(), "a malformed update");

        let mut l = greeted();
        l.received(head(kind::GOAWAY, 0, 0, 8), &[]);
        assert!(!l.settled());
        let mut l = greeted();
        l.close();
        assert!(!l.settled());
        let mut l = greeted();
        l.received(head(kind::SETTINGS, 0, 0, 5), &[0, 1, 0, 0, 0]);
        assert!(!l.settled(), "a malformed SETTINGS frame");
    }
}
