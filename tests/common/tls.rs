//! TLS for the tests: a client connection offering an ALPN protocol, and a gateway with a
//! fresh self-signed certificate.

use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::{client, config_file, gateway_section, get};

/// A TLS connection to `addr` trusting `cert`, offering `alpn`.
pub async fn tls_to(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector(cert, &[alpn])
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// An upstream answering every request 200 `monolith`.
pub async fn monolith() -> wiremock::MockServer {
    monolith_after(Vec::new()).await
}

/// An upstream answering with `first` where they match, and 200 `monolith` otherwise.
pub async fn monolith_after(first: Vec<wiremock::Mock>) -> wiremock::MockServer {
    let mono = wiremock::MockServer::start().await;
    for m in first {
        m.mount(&mono).await;
    }
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("monolith"))
        .mount(&mono)
        .await;
    mono
}

pub fn connector(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// A TLS gateway in front of `upstream` with `extra` configuration (its first lines are in
/// `[gateway.tls]`) and `route` extra route settings, and its certificate.
pub async fn tls_gateway(
    extra: &str,
    route: &str,
    upstream: &str,
) -> (
    strangler::app::Running,
    CertificateDer<'static>,
    tempfile::TempDir,
) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = key.cert.der().clone();
    let cfg = format!(
        "{}[gateway.tls]\ncert = \"{{dir}}/cert.pem\"\nkey = \"{{dir}}/key.pem\"\n{extra}[upstreams.monolith]\nurl = \"{upstream}\"\n[[routes]]\nname = \"r\"\nsplit = {{ monolith = 100 }}\n{route}",
        gateway_section(),
    );
    let (dir, path) = config_file(&cfg);
    std::fs::write(dir.path().join("cert.pem"), key.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
    let running = strangler::app::start(strangler::config::Config::load(&path).unwrap())
        .await
        .unwrap();
    (running, cert_der, dir)
}

pub async fn get_metrics(running: &strangler::app::Running) -> String {
    let text = get(
        &client(),
        &format!("http://{}/metrics", running.admin_addr),
        &[],
    )
    .await
    .body;
    String::from_utf8_lossy(&text).into_owned()
}

/// The `strangler_gateway_connections_parked` gauge (shared by the tests of this binary,
/// which run at once).
pub async fn parked(running: &strangler::app::Running) -> f64 {
    get_metrics(running)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("strangler_gateway_connections_parked "))
        .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
}
