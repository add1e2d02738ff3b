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

/// Whether `name` is in the fixed hop-by-hop set.
#[inline]
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
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

/// The fields the gateway sets on a request for its upstream. `Host`, `X-Forwarded-For` and
/// `Via` replace the client's fields of those names; `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are only added when the client sent none. They are written after the
/// client's own fields, without touching the request's header map.
#[derive(Default)]
pub struct Added {
    host: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    proto: Option<HeaderValue>,
    forwarded_host: Option<HeaderValue>,
    via: Option<HeaderValue>,
}

impl Added {
    /// Whether the client's field `name` is replaced (and so not forwarded as sent).
    pub fn replaces(name: &HeaderName) -> bool {
        name == HOST || name == VIA || name == X_FORWARDED_FOR
    }

    /// The fields, in the order they are written.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        [
            (&HOST, &self.host),
            (&X_FORWARDED_FOR, &self.forwarded_for),
            (&X_FORWARDED_PROTO, &self.proto),
            (&X_FORWARDED_HOST, &self.forwarded_host),
            (&VIA, &self.via),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v.as_ref()?)))
    }
}

/// Appends `, entry` to the values of `name` joined with commas; `None` if there are none.
fn joined(headers: &HeaderMap, name: &HeaderName, entry: &str) -> Option<HeaderValue> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut all = String::new();
    for v in values {
        all.push_str(&String::from_utf8_lossy(v.as_bytes()));
        all.push_str(", ");
    }
    all.push_str(entry);
    HeaderValue::from_str(&all).ok()
}

/// Rewrites a client request's headers for the upstream: hop-by-hop fields go, and the
/// fields to add are returned. `host` is the upstream's `Host`; `original_host` the one the
/// client addressed.
pub fn to_upstream(
    headers: &mut HeaderMap,
    client: &Peer,
    tls: bool,
    host: HeaderValue,
    original_host: Option<&HeaderValue>,
) -> Added {
    strip_hop_by_hop(headers);
    // One pass over the client's fields finds the four the gateway adds to.
    let (mut xff, mut via, mut proto, mut fhost) = (false, false, false, false);
    for name in headers.keys() {
        xff |= name == X_FORWARDED_FOR;
        via |= name == VIA;
        proto |= name == X_FORWARDED_PROTO;
        fhost |= name == X_FORWARDED_HOST;
    }
    Added {
        host: Some(host),
        forwarded_for: match xff {
            true => joined(headers, &X_FORWARDED_FOR, &client.addr.ip().to_string()),
            false => Some(client.ip_header.clone()),
        },
        proto: (!proto).then(|| HeaderValue::from_static(if tls { "https" } else { "http" })),
        forwarded_host: original_host.filter(|_| !fhost).cloned(),
        via: match via {
            true => joined(headers, &VIA, VIA_VALUE),
            false => Some(HeaderValue::from_static(VIA_VALUE)),
        },
    }
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
    // A byte search: `rsplit_once(':')` goes through the generic pattern machinery.
    match host.bytes().rposition(|b| b == b':') {
        Some(at) if host.as_bytes()[at + 1..].iter().all(u8::is_ascii_digit) => Some(&host[..at]),
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
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        h.insert(VIA, HeaderValue::from_static("1.0 edge"));
        let host = HeaderValue::from_static("shop.example");
        let peer = Peer::new("10.0.0.9:5000".parse().unwrap());
        let added = to_upstream(&mut h, &peer, true, host.clone(), Some(&host));
        let got: Vec<(&str, &str)> = added
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("host", "shop.example"),
                ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "shop.example"),
                ("via", "1.0 edge, 1.1 strangler"),
            ]
        );
        assert!(Added::replaces(&HOST) && Added::replaces(&VIA));
        assert!(Added::replaces(&X_FORWARDED_FOR) && !Added::replaces(&X_FORWARDED_PROTO));
        // A client's own X-Forwarded-Proto and -Host are kept, not added to.
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("edge.example"));
        let added = to_upstream(&mut h, &peer, true, host.clone(), Some(&host));
        assert!(
            added
                .iter()
                .all(|(n, _)| n != X_FORWARDED_PROTO && n != X_FORWARDED_HOST)
        );
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
