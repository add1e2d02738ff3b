//! Thread-per-core data plane: one current-thread runtime per I/O thread, each with its own
//! `SO_REUSEPORT` listener and its own upstream pool, so a request is accepted, forwarded and
//! answered on one thread without cross-thread wake-ups. The route table stays shared.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use super::forward::Gateway;
use super::server::{ServerSettings, serve};

/// A listener on `addr`. The first of a process binds before it turns `SO_REUSEPORT` on, so
/// a port that another process holds (with or without that option) is refused with
/// "address in use" instead of being shared; the later ones join the first one's group.
fn reuseport_listener(addr: SocketAddr, first: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    if first {
        socket.bind(addr)?;
        socket.set_reuseport(true)?;
    } else {
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
    }
    socket.listen(4096)?.into_std()
}

/// Binds `threads` listeners on one address (a port of 0 is resolved by the first); returns
/// the bound address and the listeners. A port another process already listens on is
/// refused. Must run inside a runtime.
pub fn bind(
    addr: SocketAddr,
    threads: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = reuseport_listener(addr, true)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..threads.max(1) {
        all.push(reuseport_listener(bound, false)?);
    }
    Ok((bound, all))
}

/// Serves every listener on its own thread until `shutdown`; the returned task resolves to
/// whether every thread drained in time.
pub fn spawn(
    listeners: Vec<std::net::TcpListener>,
    make_gateway: Arc<dyn Fn() -> Gateway + Send + Sync>,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<bool>> {
    let threads = listeners.len().max(1);
    let mut done = Vec::with_capacity(threads);
    for (i, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut settings = settings.clone();
        settings.max_connections = settings.max_connections.div_ceil(threads);
        let (make_gateway, shutdown) = (make_gateway.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("strangler-io-{i}"))
            .spawn(move || {
                let drained = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        match TcpListener::from_std(listener) {
                            Ok(l) => serve(l, Arc::new(make_gateway()), settings, shutdown).await,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot register listener");
                                false
                            }
                        }
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start an I/O thread");
                        false
                    }
                };
                let _ = tx.send(drained);
            })?;
        done.push(rx);
    }
    Ok(tokio::spawn(async move {
        let mut all = true;
        for rx in done {
            all &= rx.await.unwrap_or(false);
        }
        all
    }))
}
