//! Sticky percentage split: the stable bucket hash and the bucket allocation.
//!
//! `bucket = XXH3-64(key, seed = XXH3-64(salt, seed 0)) mod 10_000`. XXH3 is specified
//! byte-for-byte and has no per-process randomness, so every gateway, on every machine and
//! release, puts a key in the same bucket; `golden_buckets` pins it.
//!
//! An [`Allocation`] gives each upstream a set of bucket ranges. Changing the weights
//! rebalances from the previous allocation: an upstream that shrinks gives up buckets from
//! its edge nearest the growing side and an upstream that grows takes only those freed
//! buckets, so a change moves exactly the users whose buckets changed hands.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Buckets in the split space; one is 0.01 %.
pub const BUCKETS: u32 = crate::config::BUCKETS;

/// The hash seed derived from a route salt.
pub fn salt_seed(salt: &str) -> u64 {
    xxh3_64(salt.as_bytes())
}

/// The bucket of a sticky key under a route's seed.
#[inline]
pub fn bucket(seed: u64, key: &[u8]) -> u16 {
    (xxh3_64_with_seed(key, seed) % u64::from(BUCKETS)) as u16
}

/// A run of buckets `[start, end)` owned by one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First bucket.
    pub start: u16,
    /// One past the last bucket.
    pub end: u16,
    /// Upstream name.
    pub upstream: String,
}

/// Which upstream owns each bucket, as sorted non-overlapping spans covering all buckets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Spans sorted by start.
    pub spans: Vec<Span>,
}

impl Allocation {
    /// A fresh allocation: non-fallback upstreams from bucket 0 upwards in the given order,
    /// the fallback at the top, so a new service grows into the fallback's low edge.
    pub fn initial(weights: &[(String, u32)], fallback: &str) -> Allocation {
        let empty = Allocation {
            spans: vec![Span {
                start: 0,
                end: BUCKETS as u16,
                upstream: fallback.to_string(),
            }],
        };
        empty.rebalance(weights, fallback)
    }

    /// Buckets owned by `upstream`.
    pub fn share(&self, upstream: &str) -> u32 {
        self.spans
            .iter()
            .filter(|s| s.upstream == upstream)
            .map(|s| u32::from(s.end - s.start))
            .sum()
    }

    /// Every upstream with a non-zero share and its buckets, sorted by name.
    pub fn shares(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = Vec::new();
        for s in &self.spans {
            match out.iter_mut().find(|(n, _)| *n == s.upstream) {
                Some((_, b)) => *b += u32::from(s.end - s.start),
                None => out.push((s.upstream.clone(), u32::from(s.end - s.start))),
            }
        }
        out.sort();
        out
    }

    /// The owner of a bucket.
    pub fn owner(&self, bucket: u16) -> &str {
        let i = self.spans.partition_point(|s| s.end <= bucket);
        &self.spans[i.min(self.spans.len() - 1)].upstream
    }

    /// The allocation for new weights, moving only the buckets that must change hands.
    /// Weights must sum to [`BUCKETS`]; upstreams not named get nothing.
    pub fn rebalance(&self, weights: &[(String, u32)], fallback: &str) -> Allocation {
        let want = |name: &str| {
            weights
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b)
        };
        // Owner of each bucket; None = free.
        let mut owner: Vec<Option<&str>> = vec![None; BUCKETS as usize];
        for s in &self.spans {
            for slot in &mut owner[s.start as usize..s.end as usize] {
                *slot = Some(s.upstream.as_str());
            }
        }
        // Shrink: the fallback gives up its lowest buckets, everyone else their highest, so
        // the buckets freed sit next to where services grow.
        let mut names: Vec<&str> = self.spans.iter().map(|s| s.upstream.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let have = self.share(name);
            let keep = want(name);
            if have <= keep {
                continue;
            }
            let mut excess = have - keep;
            let positions: Box<dyn Iterator<Item = usize>> = if name == fallback {
                Box::new(0..BUCKETS as usize)
            } else {
                Box::new((0..BUCKETS as usize).rev())
            };
            for i in positions {
                if excess == 0 {
                    break;
                }
                if owner[i] == Some(name) {
                    owner[i] = None;
                    excess -= 1;
                }
            }
        }
        // Grow: services (in the order given) take the lowest free buckets, the fallback
        // the highest, matching the shrink order above.
        let mut growers: Vec<&(String, u32)> =
            weights.iter().filter(|(n, _)| n != fallback).collect();
        growers.extend(weights.iter().filter(|(n, _)| n == fallback));
        for (name, keep) in growers {
            let have = owner.iter().filter(|o| **o == Some(name.as_str())).count() as u32;
            let mut missing = keep.saturating_sub(have);
            let positions: Box<dyn Iterator<Item = usize>> = if name == fallback {
                Box::new((0..BUCKETS as usize).rev())
            } else {
                Box::new(0..BUCKETS as usize)
            };
            for i in positions {
                if missing == 0 {
                    break;
                }
                if owner[i].is_none() {
                    owner[i] = Some(name.as_str());
                    missing -= 1;
                }
            }
        }
        // Any bucket still free (weights that do not sum to BUCKETS) goes to the fallback.
        let mut spans: Vec<Span> = Vec::new();
        for (i, o) in owner.iter().enumerate() {
            let name = o.unwrap_or(fallback);
            match spans.last_mut() {
                Some(last) if last.upstream == name => last.end = i as u16 + 1,
                _ => spans.push(Span {
                    start: i as u16,
                    end: i as u16 + 1,
                    upstream: name.to_string(),
                }),
            }
        }
        Allocation { spans }
    }

    /// The allocation with everything sent to `upstream`.
    pub fn all_to(upstream: &str) -> Allocation {
        Allocation {
            spans: vec![Span {
                start: 0,
                end: BUCKETS as u16,
                upstream: upstream.to_string(),
            }],
        }
    }

    /// The spans for the request path as (end, target slot), sorted, neighbours of one
    /// target merged; `index` maps an upstream name to its slot in the route's target list.
    /// A few bytes per route, where a dense bucket table would take 10 KB.
    pub fn lookup(&self, index: impl Fn(&str) -> u8) -> Lookup {
        let mut ends: Vec<(u16, u8)> = Vec::with_capacity(self.spans.len());
        for s in &self.spans {
            let idx = index(&s.upstream);
            match ends.last_mut() {
                Some(last) if last.1 == idx => last.0 = s.end,
                _ => ends.push((s.end, idx)),
            }
        }
        Lookup(ends.into_boxed_slice())
    }
}

/// Bucket → target slot on the request path.
#[derive(Debug)]
pub struct Lookup(Box<[(u16, u8)]>);

impl Lookup {
    /// The target slot owning bucket `b`.
    #[inline]
    pub fn get(&self, b: u16) -> u8 {
        match &*self.0 {
            [(_, only)] => *only,
            spans => {
                let i = spans.partition_point(|(end, _)| *end <= b);
                spans.get(i).or(spans.last()).map_or(0, |s| s.1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs.iter().map(|(n, b)| (n.to_string(), *b)).collect()
    }

    #[test]
    fn golden_buckets() {
        // These values are part of the product: changing them re-shuffles every user.
        let seed = salt_seed("users");
        assert_eq!(seed, xxh3_64(b"users"));
        let got: Vec<u16> = ["alice", "bob", "carol", ""]
            .iter()
            .map(|k| bucket(seed, k.as_bytes()))
            .collect();
        let again: Vec<u16> = ["alice", "bob", "carol", ""]
            .iter()
            .map(|k| bucket(seed, k.as_bytes()))
            .collect();
        assert_eq!(got, again);
        assert_eq!(got, GOLDEN.to_vec());
    }

    // Cross-checked with the Python `xxhash` package:
    // xxh3_64_intdigest(key, seed=xxh3_64_intdigest(b"users")) % 10000.
    const GOLDEN: [u16; 4] = [7904, 3288, 510, 1075];

    #[test]
    fn initial_puts_services_low_and_fallback_high() {
        let a = Allocation::initial(&w(&[("monolith", 9000), ("users", 1000)]), "monolith");
        assert_eq!(a.spans.len(), 2);
        assert_eq!(
            a.spans[0],
            Span {
                start: 0,
                end: 1000,
                upstream: "users".into()
            }
        );
        assert_eq!(a.owner(999), "users");
        assert_eq!(a.owner(1000), "monolith");
        assert_eq!(a.share("monolith"), 9000);
    }

    #[test]
    fn raising_a_share_moves_only_new_buckets() {
        let a = Allocation::initial(&w(&[("monolith", 9000), ("users", 1000)]), "monolith");
        let b = a.rebalance(&w(&[("monolith", 8000), ("users", 2000)]), "monolith");
        for i in 0..BUCKETS as u16 {
            if a.owner(i) == "users" {
                assert_eq!(b.owner(i), "users", "bucket {i} left users");
            }
        }
        assert_eq!(b.share("users"), 2000);
        assert_eq!(b.spans.len(), 2, "stays contiguous: {:?}", b.spans);
        let c = b.rebalance(&w(&[("monolith", 9000), ("users", 1000)]), "monolith");
        assert_eq!(c, a, "lowering returns exactly the same buckets");
    }

    #[test]
    fn three_way_changes_do_not_move_other_services() {
        let weights = w(&[("a", 1000), ("b", 1000), ("m", 8000)]);
        let x = Allocation::initial(&weights, "m");
        let y = x.rebalance(&w(&[("a", 2000), ("b", 1000), ("m", 7000)]), "m");
        for i in 0..BUCKETS as u16 {
            if x.owner(i) == "b" {
                assert_eq!(y.owner(i), "b");
            }
            if x.owner(i) == "a" {
                assert_eq!(y.owner(i), "a");
            }
        }
        assert_eq!(y.shares(), w(&[("a", 2000), ("b", 1000), ("m", 7000)]));
    }

    #[test]
    fn all_to_and_lookup() {
        let a = Allocation::all_to("m");
        assert_eq!(a.shares(), w(&[("m", BUCKETS)]));
        let table = Allocation::initial(&w(&[("m", 5000), ("s", 5000)]), "m")
            .lookup(|n| u8::from(n == "s"));
        let t: Vec<u8> = (0..BUCKETS as u16).map(|b| table.get(b)).collect();
        assert_eq!(t[0], 1);
        assert_eq!(t[9999], 0);
        assert_eq!(t.iter().filter(|x| **x == 1).count(), 5000);
        // Fragmented allocations look up like the spans say, bucket by bucket.
        let x = Allocation::initial(&w(&[("a", 1000), ("b", 1000), ("m", 8000)]), "m")
            .rebalance(&w(&[("a", 3000), ("b", 500), ("m", 6500)]), "m")
            .rebalance(&w(&[("a", 100), ("b", 4000), ("m", 5900)]), "m");
        let slot = |n: &str| match n {
            "a" => 0,
            "b" => 1,
            _ => 2,
        };
        let lookup = x.lookup(slot);
        for b in 0..BUCKETS as u16 {
            assert_eq!(lookup.get(b), slot(x.owner(b)), "bucket {b}");
        }
        assert_eq!(Allocation::all_to("m").lookup(slot).get(9999), 2);
    }
}
