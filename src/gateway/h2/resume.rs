//! Resuming a parked HTTP/2 connection with a new hyper connection. The new connection is
//! told, as if by the client, what the client told the old one: the preface, the client's
//! settings, an acknowledgement of our settings (the same as before, and already
//! acknowledged), and the connection send window the client granted. What the new connection
//! says in return that the client has already heard is taken out of its first writes: its
//! SETTINGS, its acknowledgement of the replayed ones, and its connection WINDOW_UPDATE, which
//! is replaced by one that brings the client's send window to exactly what the new connection
//! believes it to be.
//!
//! Header compression needs nothing replayed. We advertise a decoding table of 0 bytes, so the
//! client's requests never refer to an earlier entry. Our encoder starts afresh with only its
//! own entries, which are the newest in the client's decoding table and so are found at the
//! same indexes there (RFC 7541 §2.3.3); older entries are evicted before any of them.

use bytes::{Bytes, BytesMut};

use super::frames::{END_STREAM_OR_ACK, PREFACE, Piece, Splitter, frame, increment, kind};
use super::ledger::{INITIAL_WINDOW, Memory};

/// What a new hyper connection reads before the client's next bytes.
pub(super) fn greeting(m: &Memory) -> Bytes {
    let mut out = PREFACE.to_vec();
    let settings: Vec<u8> = m
        .settings
        .iter()
        .flat_map(|(id, value)| id.to_be_bytes().into_iter().chain(value.to_be_bytes()))
        .collect();
    frame(&mut out, kind::SETTINGS, 0, 0, &settings);
    frame(&mut out, kind::SETTINGS, END_STREAM_OR_ACK, 0, &[]);
    let more = m.send_window - INITIAL_WINDOW;
    if more > 0 {
        frame(
            &mut out,
            kind::WINDOW_UPDATE,
            0,
            0,
            &(more as u32).to_be_bytes(),
        );
    }
    out.into()
}

/// Takes the frames the client has already heard out of a resumed connection's writes.
pub(super) struct Filter {
    split: Splitter,
    /// The new connection's SETTINGS are still to come.
    settings: bool,
    /// Its acknowledgement of the replayed settings is still to come.
    ack: bool,
    /// Its connection WINDOW_UPDATE is still to come.
    window: bool,
    /// The current frame is taken out.
    dropping: bool,
    /// The payload of the WINDOW_UPDATE being replaced, once it is.
    update: Option<Vec<u8>>,
    /// How many DATA bytes the client may send us on the connection.
    recv_window: i64,
}

impl Filter {
    /// A filter for a connection resumed with the client's receive window at `recv_window`.
    pub fn new(recv_window: i64) -> Filter {
        Filter {
            split: Splitter::default(),
            settings: true,
            ack: true,
            window: true,
            dropping: false,
            update: None,
            recv_window,
        }
    }

    /// Appends what of `bytes` the client is to see to `out`.
    pub fn pass(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let Filter {
            split,
            settings,
            ack,
            window,
            dropping,
            update,
            recv_window,
        } = self;
        split.feed(bytes, |piece| match piece {
            Piece::Head(h) => {
                let is_ack = h.has(END_STREAM_OR_ACK);
                *dropping = if h.kind == kind::SETTINGS && !is_ack && *settings {
                    *settings = false;
                    true
                } else if h.kind == kind::SETTINGS && is_ack && *ack {
                    *ack = false;
                    true
                } else if h.kind == kind::WINDOW_UPDATE && h.stream == 0 && *window {
                    *window = false;
                    *update = Some(Vec::with_capacity(4));
                    true
                } else {
                    false
                };
                if !*dropping {
                    h.put(out);
                }
            }
            Piece::Payload(p) => match (update.as_mut(), *dropping) {
                (Some(u), _) => u.extend_from_slice(p),
                (None, false) => out.extend_from_slice(p),
                (None, true) => {}
            },
            Piece::End => {
                // The new connection believes the client may send the initial window plus
                // its increment; the client is told whatever it lacks of that.
                if let Some(n) = update.take().as_deref().and_then(increment) {
                    let grant = INITIAL_WINDOW + i64::from(n) - *recv_window;
                    if grant > 0 {
                        let inc = (grant as u32).to_be_bytes();
                        frame(out, kind::WINDOW_UPDATE, 0, 0, &inc);
                    }
                }
            }
        });
    }

    /// Whether the new connection has yet to write its connection WINDOW_UPDATE. Until it
    /// has, it believes the client may send only the initial window, so the client's bytes
    /// are held back: a client resuming with a large upload would otherwise overrun it.
    pub fn holding(&self) -> bool {
        self.window
    }

    /// Whether every frame to take out has been, so that writes can flow untouched.
    pub fn done(&self) -> bool {
        !self.settings && !self.ack && !self.window && self.split.at_boundary()
    }
}

/// Takes out of the client's bytes to a resumed connection the frames that connection would
/// take for a protocol error: WINDOW_UPDATE and RST_STREAM frames on streams the parked
/// connection had closed, which to the new connection are streams never opened. A
/// connection never parked ignores them (RFC 9113 §5.1, closed streams), and so do we.
pub(super) struct Forget {
    split: Splitter,
    /// The highest stream the parked connection had seen.
    upto: u32,
    /// The current frame is taken out.
    dropping: bool,
}

impl Forget {
    /// Forgets late frames on streams up to `upto`.
    pub fn new(upto: u32) -> Forget {
        Forget {
            split: Splitter::default(),
            upto,
            dropping: false,
        }
    }

    /// Appends what of `bytes` the new connection is to read to `out`.
    pub fn pass(&mut self, bytes: &[u8], out: &mut BytesMut) {
        let Forget {
            split,
            upto,
            dropping,
        } = self;
        split.feed(bytes, |piece| match piece {
            Piece::Head(h) => {
                *dropping = matches!(h.kind, kind::WINDOW_UPDATE | kind::RST_STREAM)
                    && h.stream != 0
                    && h.stream <= *upto;
                if !*dropping {
                    h.put(out);
                }
            }
            Piece::Payload(p) if !*dropping => out.extend_from_slice(p),
            _ => {}
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::frames::{Frames, Head, settings};
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<(Head, Vec<u8>)> {
        let mut f = Frames::default();
        let mut got = Vec::new();
        f.feed(bytes, |h, p| got.push((h, p.to_vec())));
        got
    }

    /// The greeting replays the client's settings and the send window it granted.
    #[test]
    fn the_greeting_replays_the_client() {
        let m = Memory {
            settings: vec![(1, 0), (4, 1 << 20)],
            send_window: INITIAL_WINDOW + 500,
            recv_window: 1000,
            last_stream: 9,
        };
        let g = greeting(&m);
        assert!(g.starts_with(PREFACE));
        let got = frames(&g[PREFACE.len()..]);
        assert_eq!(got.len(), 3);
        assert_eq!(
            settings(&got[0].1).collect::<Vec<_>>(),
            vec![(1, 0), (4, 1 << 20)]
        );
        assert!(got[1].0.kind == kind::SETTINGS && got[1].0.has(END_STREAM_OR_ACK));
        assert_eq!(increment(&got[2].1), Some(500));
        // No update when the client granted nothing beyond the initial window.
        let plain = greeting(&Memory::default());
        assert_eq!(frames(&plain[PREFACE.len()..]).len(), 2);
    }

    /// Window updates and resets on streams up to the parked connection's last are taken
    /// out of what the client sends; everything else passes, however cut.
    #[test]
    fn late_frames_on_closed_streams_are_forgotten() {
        let mut sent = Vec::new();
        frame(&mut sent, kind::WINDOW_UPDATE, 0, 5, &100u32.to_be_bytes());
        frame(&mut sent, kind::HEADERS, 0x5, 9, b"\x82");
        frame(&mut sent, kind::RST_STREAM, 0, 7, &8u32.to_be_bytes());
        frame(&mut sent, kind::WINDOW_UPDATE, 0, 0, &100u32.to_be_bytes());
        frame(&mut sent, kind::WINDOW_UPDATE, 0, 9, &100u32.to_be_bytes());
        frame(&mut sent, kind::DATA, 1, 9, b"body");
        for chunk in [1, 3, 9, 10, sent.len()] {
            let mut f = Forget::new(7);
            let mut out = BytesMut::new();
            for c in sent.chunks(chunk) {
                f.pass(c, &mut out);
            }
            let got: Vec<(u8, u32)> = frames(&out)
                .iter()
                .map(|(h, _)| (h.kind, h.stream))
                .collect();
            assert_eq!(
                got,
                vec![
                    (kind::HEADERS, 9),
                    (kind::WINDOW_UPDATE, 0),
                    (kind::WINDOW_UPDATE, 9),
                    (kind::DATA, 9)
                ],
                "chunks of {chunk}"
            );
            assert!(out.ends_with(b"body"));
        }
    }

    /// The first SETTINGS, ACK and connection WINDOW_UPDATE are taken out, the update
    /// replaced by what the client lacks; everything else passes untouched, however cut.
    #[test]
    fn what_the_client_has_heard_is_taken_out() {
        let mut written = Vec::new();
        frame(&mut written, kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0]);
        frame(
            &mut written,
            kind::WINDOW_UPDATE,
            0,
            0,
            &983_041u32.to_be_bytes(),
        );
        frame(&mut written, kind::SETTINGS, 1, 0, &[]);
        frame(&mut written, kind::HEADERS, 0x4, 11, b"\x88");
        frame(&mut written, kind::DATA, 1, 11, b"hello");
        frame(&mut written, kind::SETTINGS, 1, 0, &[]);
        frame(
            &mut written,
            kind::WINDOW_UPDATE,
            0,
            0,
            &77u32.to_be_bytes(),
        );
        for chunk in [1, 4, 13, written.len()] {
            let mut f = Filter::new(1_048_576 - 300);
            let mut out = Vec::new();
            for c in written.chunks(chunk) {
                f.pass(c, &mut out);
            }
            assert!(f.done());
            let got = frames(&out);
            let kinds: Vec<u8> = got.iter().map(|(h, _)| h.kind).collect();
            assert_eq!(
                kinds,
                vec![
                    kind::WINDOW_UPDATE,
                    kind::HEADERS,
                    kind::DATA,
                    kind::SETTINGS,
                    kind::WINDOW_UPDATE
                ],
                "chunks of {chunk}"
            );
            assert_eq!(increment(&got[0].1), Some(300));
            assert_eq!(increment(&got[4].1), Some(77), "later updates pass");
            assert!(out.ends_with(&77u32.to_be_bytes()));
            assert!(out.windows(5).any(|w| w == b"hello"));
        }
        // A client whose window is already whole is told nothing.
        let mut f = Filter::new(1_048_576);
        let mut out = Vec::new();
        f.pass(&written[..9 + 6 + 9 + 4], &mut out);
        assert!(out.is_empty());
        assert!(!f.done(), "the ACK is still to come");
    }
}
