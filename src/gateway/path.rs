//! Request paths made canonical before routing, so that a route cannot be bypassed by
//! spelling a path another way: percent-encoded unreserved characters are decoded, dot
//! segments removed (RFC 3986 §5.2.4), runs of `/` collapsed to one. The upstream receives
//! the canonical path. A path that would still reveal a dot segment once an encoded `/` or
//! `\` in it is decoded (`/public/..%2Fapi`) is refused: an upstream that decodes those
//! before resolving dots would see a different path than the one we matched.

use std::borrow::Cow;

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Decoding an encoded separator would make a dot segment appear.
    HiddenDotSegment,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::BadEscape => "the path holds a % that is not followed by two hex digits",
            PathError::HiddenDotSegment => "the path hides a dot segment behind an encoded / or \\",
        })
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` may need work: the one scan most requests pay.
fn needs_work(path: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in path {
        if b == b'%' || b == b'\\' || (prev == b'/' && (b == b'/' || b == b'.')) {
            return true;
        }
        prev = b;
    }
    false
}

/// Decodes `%XX` of unreserved characters and upper-cases the hex of the others.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = h * 16 + l;
            if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(bytes[i + 1].to_ascii_uppercase() as char);
                out.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b'%' {
                i += 1;
            }
            out.push_str(&path[start..i]);
        }
    }
    Ok(out)
}

/// Removes dot segments and empty segments; keeps a trailing `/`.
fn resolve(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = path.ends_with('/');
    for seg in path.split('/') {
        match seg {
            "" => {}
            "." => trailing = true,
            ".." => {
                segs.pop();
                trailing = true;
            }
            s => {
                segs.push(s);
                trailing = false;
            }
        }
    }
    trailing |= path.ends_with('/');
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// Whether fully decoding `%2F`, `%5C` and `\` in `path` would show a `.` or `..` segment.
fn hides_dot_segment(path: &str) -> bool {
    let unescaped = path
        .replace("%2F", "/")
        .replace("%5C", "/")
        .replace('\\', "/");
    unescaped.split('/').any(|s| s == "." || s == "..")
}

/// The canonical form of an origin-form path (no query), or why it is refused.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !needs_work(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let resolved = resolve(&decoded);
    if hides_dot_segment(&resolved) {
        return Err(PathError::HiddenDotSegment);
    }
    Ok(if resolved == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(resolved)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/api/users/7", "/a.b/c-d_e~f", "/x/"] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_and_slash_runs() {
        let cases = [
            ("/public/../api/users/7", "/api/users/7"),
            ("/public/./x", "/public/x"),
            ("//api//users", "/api/users"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/../../etc", "/etc"),
            ("/..", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/c", "/a/..b/c"),
        ];
        for (p, want) in cases {
            assert_eq!(normalize(p).unwrap(), want, "{p}");
        }
    }

    #[test]
    fn unreserved_escapes_decoded_others_kept_upper_cased() {
        assert_eq!(normalize("/%61pi/%7Eme").unwrap(), "/api/~me");
        assert_eq!(normalize("/public/%2e%2e/api").unwrap(), "/api");
        assert_eq!(normalize("/a%20b/%c3%a9").unwrap(), "/a%20b/%C3%A9");
        assert_eq!(normalize("/files/a%2fb").unwrap(), "/files/a%2Fb");
    }

    #[test]
    fn refused() {
        assert_eq!(normalize("/a%2"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(
            normalize("/public/..%2Fapi/users"),
            Err(PathError::HiddenDotSegment)
        );
        assert_eq!(
            normalize("/public/..%5capi"),
            Err(PathError::HiddenDotSegment)
        );
        assert_eq!(
            normalize("/public/..\\api"),
            Err(PathError::HiddenDotSegment)
        );
        assert!(!PathError::BadEscape.to_string().is_empty());
    }
}
