//! Header rewriting between client and upstream: hop-by-hop removal, `X-Forwarded-*`, `Via`.

use std::net::{IpAddr, SocketAddr};

use http::header::{CONNECTION, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A client connection's address, with its IP already written as a header value (formatting
/// an address per request is a measurable share of a proxied request's cost).
#[derive(Clone)]
pub struct Peer {
    /// The client's socket address.
    pub addr: SocketAddr,
    ip_header: HeaderValue,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { addr, ip_header }
    }

    /// The client's IP address.
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

/// Our `Via` entry.
pub const VIA_VALUE: &str = "1.1 strangler";

/// The fixed RFC 9110 hop-by-hop set (and the proxy headers treated alike).
static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("proxy-authenticate"),
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Lengths of the names in the set first: most names are ruled out without comparing.
    matches!(name.as_str().len(), 2 | 7 | 10 | 16..=19) && HOP_BY_HOP.contains(name)
}

/// Removes hop-by-hop headers: the fixed RFC 9110 set and any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass of cheap name comparisons spares nine hashed
    // removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual tokens name no header: spare them the parse and the list.
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for name in &HOP_BY_HOP[1..] {
        headers.remove(name);
    }
}

fn append_via(headers: &mut HeaderMap) {
    let value = match headers.get(VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {VIA_VALUE}")).ok(),
        None => Some(HeaderValue::from_static(VIA_VALUE)),
    };
    if let Some(v) = value {
        headers.insert(VIA, v);
    }
}

/// Rewrites a client request's headers for the upstream.
pub fn to_upstream(
    headers: &mut HeaderMap,
    client: &Peer,
    tls: bool,
    original_host: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers);
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", client.addr.ip())).ok(),
        None => Some(client.ip_header.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if let Some(host) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    append_via(headers);
}

/// Rewrites an upstream response's headers for the client.
pub fn to_client(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    append_via(headers);
}

/// The host a request addresses, without port: the URI authority (HTTP/2) or `Host`.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(h) = uri.host() {
        return Some(h);
    }
    let host = headers.get(HOST)?.to_str().ok()?;
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next();
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(h),
        _ => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_tokens_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Secret,close"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        let host = HeaderValue::from_static("shop.example");
        let peer = Peer::new("10.0.0.9:5000".parse().unwrap());
        to_upstream(&mut h, &peer, true, Some(&host));
        assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example");
        assert_eq!(h[VIA], VIA_VALUE);
    }

    #[test]
    fn host_without_port() {
        let uri: http::Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("Api.Example:8080"));
        assert_eq!(request_host(&uri, &h), Some("Api.Example"));
        h.insert(HOST, HeaderValue::from_static("[::1]:80"));
        assert_eq!(request_host(&uri, &h), Some("::1"));
        let abs: http::Uri = "http://h2.example/x".parse().unwrap();
        assert_eq!(request_host(&abs, &HeaderMap::new()), Some("h2.example"));
    }
}
