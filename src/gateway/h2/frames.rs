//! HTTP/2 frames as a byte stream carries them (RFC 9113 §4): a 9-byte head and a payload,
//! split wherever the reads and writes happened to cut them.

/// The client connection preface (RFC 9113 §3.4).
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub(super) mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

/// `END_STREAM` on DATA and HEADERS, `ACK` on SETTINGS and PING.
pub(super) const END_STREAM_OR_ACK: u8 = 0x1;
/// `END_HEADERS` on HEADERS, PUSH_PROMISE and CONTINUATION.
pub(super) const END_HEADERS: u8 = 0x4;

/// A frame's head.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Head {
    /// Payload length.
    pub len: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (0 for the connection).
    pub stream: u32,
}

impl Head {
    fn parse(b: &[u8; 9]) -> Head {
        Head {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// Appends the head's 9 bytes to `out`.
    pub fn put(&self, out: &mut impl Extend<u8>) {
        let len = self.len.to_be_bytes();
        let stream = self.stream.to_be_bytes();
        let kind_flags = [self.kind, self.flags];
        out.extend(len[1..].iter().chain(&kind_flags).chain(&stream).copied());
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Appends a whole frame with `payload` to `out`.
pub(super) fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    Head {
        len,
        kind,
        flags,
        stream,
    }
    .put(out);
    out.extend_from_slice(payload);
}

/// One piece of a frame, in stream order.
#[derive(Debug, PartialEq)]
pub(super) enum Piece<'a> {
    /// A frame's head, once all 9 bytes have come.
    Head(Head),
    /// Some of the current frame's payload.
    Payload(&'a [u8]),
    /// The current frame has ended.
    End,
}

/// Cuts a byte stream into frame pieces, whatever the sizes of the chunks it comes in.
#[derive(Default)]
pub(super) struct Splitter {
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame not yet seen.
    left: usize,
    /// A head has been seen and its frame has not ended.
    inside: bool,
}

impl Splitter {
    /// Whether the bytes seen so far end exactly where a frame ends.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && !self.inside
    }

    /// Feeds `bytes`, calling `f` with each piece.
    pub fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(Piece<'_>)) {
        while !bytes.is_empty() {
            if !self.inside {
                let n = (9 - self.have).min(bytes.len());
                self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have < 9 {
                    return;
                }
                self.have = 0;
                let head = Head::parse(&self.head);
                self.left = head.len as usize;
                self.inside = true;
                f(Piece::Head(head));
            }
            let n = self.left.min(bytes.len());
            if n > 0 {
                f(Piece::Payload(&bytes[..n]));
                self.left -= n;
                bytes = &bytes[n..];
            }
            if self.left == 0 {
                self.inside = false;
                f(Piece::End);
            }
        }
    }
}

/// Collects the frames `Splitter` cuts, with the payloads of the frames whose content matters
/// here (SETTINGS and WINDOW_UPDATE, a few bytes each) gathered whole.
#[derive(Default)]
pub(super) struct Frames {
    split: Splitter,
    head: Option<Head>,
    payload: Vec<u8>,
}

/// Longest payload gathered; a longer SETTINGS frame than any real peer sends is cut.
const GATHERED: usize = 1024;

impl Frames {
    /// Whether the bytes seen so far end exactly where a frame ends.
    pub fn at_boundary(&self) -> bool {
        self.split.at_boundary()
    }

    /// Feeds `bytes`, calling `f` with the head and gathered payload of each frame that ends
    /// in them (the payload is empty for frames whose content is not gathered).
    pub fn feed(&mut self, bytes: &[u8], mut f: impl FnMut(Head, &[u8])) {
        let (head, payload) = (&mut self.head, &mut self.payload);
        self.split.feed(bytes, |piece| match piece {
            Piece::Head(h) => {
                *head = Some(h);
                payload.clear();
            }
            Piece::Payload(p) => {
                if matches!(head, Some(h) if gathered(h.kind)) {
                    let room = GATHERED.saturating_sub(payload.len());
                    payload.extend_from_slice(&p[..p.len().min(room)]);
                }
            }
            Piece::End => {
                if let Some(h) = head.take() {
                    f(h, payload);
                }
            }
        });
    }
}

fn gathered(kind: u8) -> bool {
    kind == kind::SETTINGS || kind == kind::WINDOW_UPDATE
}

/// The settings in a SETTINGS payload, as (identifier, value) pairs.
pub(super) fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|c| {
        (
            u16::from_be_bytes([c[0], c[1]]),
            u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        )
    })
}

/// The increment of a WINDOW_UPDATE payload.
pub(super) fn increment(payload: &[u8]) -> Option<u32> {
    let b: [u8; 4] = payload.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        frame(&mut out, kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]);
        frame(&mut out, kind::HEADERS, 0x5, 1, b"\x82\x87");
        frame(&mut out, kind::SETTINGS, END_STREAM_OR_ACK, 0, b"");
        frame(&mut out, kind::WINDOW_UPDATE, 0, 0, &[0x80, 0, 1, 0]);
        frame(&mut out, kind::DATA, 1, 3, &[7; 40]);
        out
    }

    fn frames_of(bytes: &[u8], chunk: usize) -> Vec<(Head, Vec<u8>)> {
        let mut frames = Frames::default();
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            frames.feed(c, |h, p| got.push((h, p.to_vec())));
        }
        assert!(frames.at_boundary());
        got
    }

    /// Frames come out whole and in order however the bytes were cut, even one at a time.
    #[test]
    fn frames_survive_any_cut() {
        let bytes = sample();
        let whole = frames_of(&bytes, bytes.len());
        assert_eq!(whole.len(), 5);
        for chunk in [1, 2, 5, 9, 10, 17] {
            assert_eq!(frames_of(&bytes, chunk), whole, "chunks of {chunk}");
        }
        let (h, p) = &whole[0];
        assert_eq!((h.kind, h.len, h.stream), (kind::SETTINGS, 6, 0));
        assert_eq!(settings(p).collect::<Vec<_>>(), vec![(1, 4096)]);
        assert_eq!(whole[1].0.stream, 1);
        assert!(whole[1].0.has(END_HEADERS) && whole[1].0.has(END_STREAM_OR_ACK));
        assert!(whole[1].1.is_empty(), "a HEADERS payload is not gathered");
        assert!(whole[2].0.has(END_STREAM_OR_ACK));
        // The reserved bit of a WINDOW_UPDATE is ignored.
        assert_eq!(increment(&whole[3].1), Some(256));
        assert_eq!((whole[4].0.len, whole[4].0.stream), (40, 3));
    }

    /// Mid-head and mid-payload are not frame boundaries.
    #[test]
    fn a_cut_frame_is_not_a_boundary() {
        let bytes = sample();
        let mut f = Frames::default();
        f.feed(&bytes[..4], |_, _| {});
        assert!(!f.at_boundary());
        f.feed(&bytes[4..12], |_, _| {});
        assert!(!f.at_boundary());
        f.feed(&bytes[12..15], |_, _| {});
        assert!(f.at_boundary());
        assert_eq!(increment(&[0, 0]), None);
    }

    /// An oversized SETTINGS payload is gathered only up to its cap.
    #[test]
    fn gathered_payloads_are_capped() {
        let mut out = Vec::new();
        frame(&mut out, kind::SETTINGS, 0, 0, &vec![0; 6000]);
        let got = frames_of(&out, 700);
        assert_eq!(got[0].0.len, 6000);
        assert_eq!(got[0].1.len(), GATHERED);
    }
}
