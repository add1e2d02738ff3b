//! Reading a sticky key or a pin value out of a request: cookie, header, JWT claim or
//! client address.

use std::borrow::Cow;
use std::net::IpAddr;

use base64::Engine as _;
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

use crate::config::StickyConfig;

/// The value of cookie `name`, looking through every `Cookie` header.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
}

/// A claim of the bearer JWT, as text. The signature is not checked: the claim only picks a
/// bucket, it grants nothing.
pub fn jwt_claim(headers: &HeaderMap, claim: &str) -> Option<String> {
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match value.get(claim)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What a request offers as its sticky key.
#[derive(Debug, PartialEq)]
pub enum StickyKey<'a> {
    /// A key to hash (borrowed from the request where possible).
    Key(Cow<'a, str>),
    /// The configured cookie is missing: the gateway issues this value and uses it.
    Issue(String),
    /// No key source: draw a random bucket.
    Random,
}

/// Extracts the sticky key of a request for a route's sticky setting.
pub fn extract<'a>(sticky: &StickyConfig, headers: &'a HeaderMap, client: IpAddr) -> StickyKey<'a> {
    let found: Option<Cow<'a, str>> = match sticky {
        StickyConfig::None => return StickyKey::Random,
        StickyConfig::Cookie(name) => match cookie(headers, name) {
            Some(v) => Some(Cow::Borrowed(v)),
            None => return StickyKey::Issue(new_session_id()),
        },
        StickyConfig::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(Cow::Borrowed),
        StickyConfig::JwtClaim(claim) => jwt_claim(headers, claim).map(Cow::Owned),
        StickyConfig::ClientIp => Some(Cow::Owned(client.to_string())),
    };
    found.map_or(StickyKey::Random, StickyKey::Key)
}

/// A fresh random 128-bit session id in hex.
pub fn new_session_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_found_among_many() {
        let h = headers(&[("cookie", "a=1; sid=xyz ; b=2"), ("cookie", "c=3")]);
        assert_eq!(cookie(&h, "sid"), Some("xyz"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "zz"), None);
    }

    #[test]
    fn jwt_claim_is_read_without_verification() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"user-7","n":5}"#);
        let h = headers(&[("authorization", &format!("Bearer xx.{payload}.sig"))]);
        assert_eq!(jwt_claim(&h, "sub").as_deref(), Some("user-7"));
        assert_eq!(jwt_claim(&h, "n").as_deref(), Some("5"));
        assert_eq!(jwt_claim(&h, "missing"), None);
        assert_eq!(
            jwt_claim(&headers(&[("authorization", "Bearer garbage")]), "sub"),
            None
        );
    }

    #[test]
    fn sources() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let h = headers(&[("x-user-id", "42")]);
        let hdr = StickyConfig::Header(http::HeaderName::from_static("x-user-id"));
        assert_eq!(extract(&hdr, &h, ip), StickyKey::Key(Cow::Borrowed("42")));
        assert_eq!(extract(&hdr, &HeaderMap::new(), ip), StickyKey::Random);
        assert_eq!(
            extract(&StickyConfig::ClientIp, &h, ip),
            StickyKey::Key(Cow::Owned("10.1.2.3".into()))
        );
        assert_eq!(extract(&StickyConfig::None, &h, ip), StickyKey::Random);
        match extract(&StickyConfig::Cookie("sid".into()), &h, ip) {
            StickyKey::Issue(id) => assert_eq!(id.len(), 32),
            other => panic!("expected a new cookie, got {other:?}"),
        }
    }
}
