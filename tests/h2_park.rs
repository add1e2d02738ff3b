//! HTTP/2 parking frame by frame, with a client that writes its own frames: what a parked
//! and resumed connection says to the client (nothing it has heard before), what keeps a
//! connection from being parked, and what happens to a parked one the client closes. One
//! test in its own binary, so the parked-connection gauge counts only its connections.

mod common;

use std::time::Duration;

use common::tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<tokio::net::TcpStream>;

/// A frame as sent or received: type, flags, stream and payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const WINDOW_UPDATE: u8 = 8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// GET https://localhost/ on `stream`: HPACK static entries and a literal authority.
fn get(stream: u32) -> Vec<u8> {
    frame(HEADERS, 0x5, stream, b"\x82\x87\x84\x41\x09localhost")
}

/// Reads frames until one matches `last`, acknowledging the server's SETTINGS; returns all.
async fn read_until(tls: &mut Tls, last: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head))
            .await
            .expect("a frame within 5 s")
            .expect("the connection stays open");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        tls.read_exact(&mut payload).await.unwrap();
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
            payload,
        };
        if f.kind == SETTINGS && f.flags & 1 == 0 {
            tls.write_all(&frame(SETTINGS, 1, 0, b"")).await.unwrap();
        }
        let done = last(&f);
        frames.push(f);
        if done {
            return frames;
        }
    }
}

fn ends(stream: u32) -> impl Fn(&Frame) -> bool {
    move |f| f.stream == stream && (f.kind == DATA || f.kind == HEADERS) && f.flags & 1 != 0
}

/// A connection that opens with the preface, `extra` frames and one GET, read to its end,
/// with the frames read.
async fn opened(
    addr: std::net::SocketAddr,
    cert: &rustls_pki_types::CertificateDer<'static>,
    extra: &[u8],
) -> (Tls, Vec<Frame>) {
    let mut tls = tls_to(addr, cert, b"h2").await;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]));
    hello.extend(extra);
    hello.extend(get(1));
    tls.write_all(&hello).await.unwrap();
    let frames = read_until(&mut tls, ends(1)).await;
    assert!(frames.iter().any(|f| f.kind == SETTINGS && f.flags == 0));
    // The ACK of our SETTINGS may come after the response; it is read with the next exchange.
    (tls, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_http2_connections_frame_by_frame() {
    let mono = monolith().await;
    let (running, cert, _dir) =
        tls_gateway("[gateway.timeouts]\npark = \"50ms\"\n", "", &mono.uri()).await;
    let settle = || tokio::time::sleep(Duration::from_millis(300));

    // A client that grants a large connection window is parked once quiet.
    let grant = frame(WINDOW_UPDATE, 0, 0, &1_000_000u32.to_be_bytes());
    let (mut a, heard) = opened(running.addr, &cert, &grant).await;
    let table_size_0 = |f: &Frame| f.payload.chunks(6).any(|s| s == [0, 1, 0, 0, 0, 0]);
    assert!(
        heard.iter().any(|f| f.kind == SETTINGS && table_size_0(f)),
        "a request decoding table of 0 bytes is advertised"
    );
    settle().await;
    assert_eq!(
        parked(&running).await,
        1.0,
        "the quiet connection is parked"
    );

    // A PING resumes it: the answer is all the client hears, no second SETTINGS or window
    // update, and it is parked again.
    a.write_all(&frame(PING, 0, 0, b"12345678")).await.unwrap();
    let heard = read_until(&mut a, |f| f.kind == PING).await;
    let kinds: Vec<(u8, u8)> = heard.iter().map(|f| (f.kind, f.flags)).collect();
    assert!(
        kinds == vec![(SETTINGS, 1), (PING, 1)] || kinds == vec![(PING, 1)],
        "only the ACK of the client's settings (if not yet read) and the PING's: {kinds:?}"
    );
    assert_eq!(heard.last().unwrap().payload, b"12345678");
    settle().await;
    assert_eq!(parked(&running).await, 1.0, "parked again after the ping");

    // A client whose send window has fallen below the initial 65,535 (it never sent a
    // WINDOW_UPDATE) cannot be resumed exactly, so it is served but never parked.
    let (mut b, _) = opened(running.addr, &cert, b"").await;
    settle().await;
    assert_eq!(
        parked(&running).await,
        1.0,
        "the second connection is not parked"
    );
    b.write_all(&get(3)).await.unwrap();
    read_until(&mut b, ends(3)).await;

    // The parked connection serves its next requests on new stream ids, with no frame the
    // client has heard before. Late frames on streams the parked connection had closed (a
    // window update as the client's application reads a body, a reset) are ignored, as on a
    // connection never parked, instead of being taken for frames on streams never opened.
    for stream in [3, 5, 7] {
        let mut late = frame(WINDOW_UPDATE, 0, stream - 2, &4096u32.to_be_bytes());
        late.extend(frame(RST_STREAM, 0, stream - 2, &8u32.to_be_bytes()));
        late.extend(get(stream));
        a.write_all(&late).await.unwrap();
        let heard = read_until(&mut a, ends(stream)).await;
        assert!(
            heard
                .iter()
                .all(|f| f.stream == stream && (f.kind == HEADERS || f.kind == DATA)),
            "stream {stream}: {heard:?}"
        );
        let body: Vec<u8> = heard
            .iter()
            .filter(|f| f.kind == DATA)
            .flat_map(|f| f.payload.clone())
            .collect();
        assert_eq!(body, b"monolith");
        settle().await;
        assert_eq!(parked(&running).await, 1.0, "parked after stream {stream}");
    }

    // A parked connection the client closes is let go.
    drop(a);
    settle().await;
    assert_eq!(
        parked(&running).await,
        0.0,
        "the closed connection is no longer parked"
    );
    assert_eq!(mono.received_requests().await.unwrap().len(), 6);

    // The drain sends the unparked connection GOAWAY; its client never answers the ping
    // that follows, yet the drain does not wait out its 30 s grace for it.
    let began = std::time::Instant::now();
    running.shutdown().await;
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
    let rest = read_until(&mut b, |f| f.kind == 7).await;
    assert_eq!(rest.last().unwrap().kind, 7, "GOAWAY");

    // With a request decoding table configured, requests may refer to earlier ones, which a
    // new connection could not decode: connections are served, never parked.
    let (running, cert, _dir) = tls_gateway(
        "http2_header_table = 4096\n[gateway.timeouts]\npark = \"50ms\"\n",
        "",
        &mono.uri(),
    )
    .await;
    let (mut c, heard) = opened(running.addr, &cert, &grant).await;
    assert!(
        heard
            .iter()
            .any(|f| f.kind == SETTINGS && f.payload.chunks(6).any(|s| s == [0, 1, 0, 0, 0x10, 0]))
    );
    settle().await;
    assert_eq!(
        parked(&running).await,
        0.0,
        "not parked with a request table"
    );
    c.write_all(&get(3)).await.unwrap();
    read_until(&mut c, ends(3)).await;
    drop(c);
    running.shutdown().await;
}
