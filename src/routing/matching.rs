//! Path matching: segment-boundary prefixes and the index that finds the longest matching
//! prefix in O(path depth), independent of the number of routes.

use ahash::AHashMap;

use super::table::Route;

/// Whether `path` is under `prefix` on a segment boundary (`prefix` normalized: no
/// trailing slash except the root).
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// A path prefix without its trailing slashes (the root stays `/`).
pub fn normalize_prefix(prefix: &str) -> &str {
    let t = prefix.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// The prefixes of `path` that end on a segment boundary, longest first, ending with `/`.
pub(super) fn boundaries(path: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(normalize_prefix(path));
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.rfind('/') {
            _ if current == "/" => None,
            Some(0) => Some("/"),
            Some(i) => Some(&current[..i]),
            None => None,
        };
        Some(current)
    })
}

/// Routes sharing one path prefix: host-specific ones and the rest.
#[derive(Debug, Default)]
pub(super) struct PrefixRoutes {
    /// Routes with a host condition.
    pub(super) with_host: Vec<usize>,
    /// Routes without one.
    pub(super) any_host: Vec<usize>,
}

/// Routes grouped by their exact (normalized) path prefix.
pub(super) fn index(routes: &[Route]) -> AHashMap<String, PrefixRoutes> {
    let mut by_prefix: AHashMap<String, PrefixRoutes> = AHashMap::new();
    for (i, r) in routes.iter().enumerate() {
        let entry = by_prefix.entry(r.path_prefix.clone()).or_default();
        if r.host.is_some() {
            entry.with_host.push(i);
        } else {
            entry.any_host.push(i);
        }
    }
    // Within one prefix the more specific route wins: header conditions, then method
    // conditions, then config order.
    for entry in by_prefix.values_mut() {
        for list in [&mut entry.with_host, &mut entry.any_host] {
            list.sort_by_key(|i| {
                (
                    routes[*i].headers.is_empty(),
                    routes[*i].methods.is_empty(),
                    *i,
                )
            });
        }
    }
    by_prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_on_segment_boundary() {
        assert!(prefix_matches("/api/users", "/api/users"));
        assert!(prefix_matches("/api/users", "/api/users/7"));
        assert!(!prefix_matches("/api/users", "/api/usersx"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(prefix_matches("/", "/anything"));
        let b: Vec<&str> = boundaries("/api/users/7/").collect();
        assert_eq!(b, ["/api/users/7", "/api/users", "/api", "/"]);
        assert_eq!(boundaries("/").collect::<Vec<_>>(), ["/"]);
        assert_eq!(normalize_prefix("/api/"), "/api");
    }
}
