//! The header fields of a peer's last head, as names and the places of their values: a peer
//! sends the same names in the same order on every message of a connection, and comparing
//! bytes costs far less than parsing a name again.

use http::HeaderName;

/// The names of a head's fields, in order, and where each value sits in the head.
#[derive(Default)]
pub struct Fields {
    /// Each name with the bytes it was sent as; kept from one head to the next.
    names: Vec<(Box<[u8]>, HeaderName)>,
    /// Start and length of each value of the current head.
    values: Vec<(u32, u32)>,
}

impl Fields {
    /// Starts a new head.
    pub fn clear(&mut self) {
        self.values.clear();
    }

    /// Records field `i` of the current head, sent as `raw` with its value at `at` for `len`
    /// bytes: its name, or `None` when `raw` is not a valid name. `i` counts up from 0.
    pub fn push(&mut self, i: usize, raw: &[u8], at: usize, len: usize) -> Option<&HeaderName> {
        let same = matches!(self.names.get(i), Some((sent, _)) if **sent == *raw);
        if !same {
            let name = HeaderName::from_bytes(raw).ok()?;
            self.names.truncate(i);
            self.names.push((raw.into(), name));
        }
        self.values.push((at as u32, len as u32));
        Some(&self.names[i].1)
    }

    /// The current head's fields: each name and the range of its value.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, std::ops::Range<usize>)> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|((_, name), &(at, len))| (name, at as usize..(at + len) as usize))
    }

    /// How many fields the current head has.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the current head has no fields.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many names are kept from earlier heads.
    #[cfg(test)]
    pub fn names_kept(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_while_the_bytes_match() {
        let mut f = Fields::default();
        assert_eq!(f.push(0, b"Host", 6, 1).unwrap(), "host");
        assert_eq!(f.push(1, b"X-A", 20, 2).unwrap(), "x-a");
        assert_eq!(f.len(), 2);
        f.clear();
        assert!(f.is_empty());
        // Same first name; a new second name replaces the old one and what followed it.
        assert_eq!(f.push(0, b"Host", 6, 1).unwrap(), "host");
        assert_eq!(f.push(1, b"x-b", 9, 3).unwrap(), "x-b");
        assert_eq!(f.names_kept(), 2);
        let got: Vec<_> = f.iter().map(|(n, r)| (n.as_str().to_string(), r)).collect();
        assert_eq!(got, [("host".into(), 6..7), ("x-b".into(), 9..12)]);
        // Differently cased bytes are parsed again, to the same name.
        f.clear();
        assert_eq!(f.push(0, b"HOST", 0, 0).unwrap(), "host");
        assert!(f.push(1, b"bad name", 0, 0).is_none());
    }
}
