//! A fault-injecting TCP proxy of the tests' own: added latency, dropped connections, and a
//! cut link that swallows traffic (a partition, not a refusal) until it is restored.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    latency: Duration,
    cut: bool,
    generation: u64,
}

/// A proxy in front of one server.
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    state: watch::Sender<State>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
) {
    let born = state.borrow().generation;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = state.changed() => {
                if state.borrow().generation != born { return; }
                continue;
            }
        };
        loop {
            let s = *state.borrow();
            if s.generation != born {
                return;
            }
            if !s.cut {
                if !s.latency.is_zero() {
                    tokio::time::sleep(s.latency).await;
                }
                break;
            }
            // Partitioned: hold the bytes until the link heals or the connection is dropped.
            if state.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl FaultProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: &str) -> FaultProxy {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(State {
            latency: Duration::ZERO,
            cut: false,
            generation: 0,
        });
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::join!(pump(ir, ow, rx.clone()), pump(or, iw, rx));
                });
            }
        });
        FaultProxy { addr, state: tx }
    }

    /// Adds `latency` before every forwarded chunk.
    pub fn latency(&self, latency: Duration) {
        self.state.send_modify(|s| s.latency = latency);
    }

    /// Closes every open connection (new ones are accepted).
    pub fn drop_connections(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// Cuts (`true`) or heals the link; healing also closes the connections caught in the cut.
    pub fn cut(&self, cut: bool) {
        self.state.send_modify(|s| {
            s.cut = cut;
            if !cut {
                s.generation += 1;
            }
        });
    }

    /// `url` with its `host:port` replaced by the proxy's address.
    pub fn route(&self, url: &str) -> String {
        let host_port = url
            .split('@')
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap();
        url.replace(host_port, &self.addr.to_string())
    }

    /// `host:port` of a URL.
    pub fn target_of(url: &str) -> String {
        url.split('@')
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_string()
    }
}
