//! Checking and reading the audit log: the first record that was altered, removed or moved
//! breaks the chain and is named; the head (last sequence number and hash) can be kept
//! elsewhere as an anchor, which also catches records cut from the end.

use std::collections::HashMap;

use crate::control::audit::{GENESIS, chain_hash};
use crate::control::{AuditRecord, ControlError, ControlStore};

use super::ValidateError;

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Records read.
    pub records: u64,
    /// The last record's sequence number and hash.
    pub head: Option<(i64, String)>,
    /// The first break, described; `None` when the chain is intact.
    pub broken: Option<Break>,
}

/// The first place the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Break {
    /// The record's contents do not match its hash, or its hash was rewritten.
    Altered {
        /// Sequence number of the altered record.
        seq: i64,
    },
    /// Records are missing before this one.
    Removed {
        /// First missing sequence number.
        from: i64,
        /// Last missing sequence number.
        to: i64,
    },
    /// The record at `seq` was written at position `belongs`.
    Reordered {
        /// Where it is now.
        seq: i64,
        /// Where it was appended.
        belongs: i64,
    },
    /// The anchor given does not match the log.
    Anchor {
        /// The anchor's sequence number.
        seq: i64,
        /// What the log holds there (`None`: nothing).
        found: Option<String>,
    },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Altered { seq } => write!(
                f,
                "record {seq} was altered: its hash does not match its contents or the next record's link"
            ),
            Break::Removed { from, to } if from == to => write!(f, "record {from} was removed"),
            Break::Removed { from, to } => write!(f, "records {from} to {to} were removed"),
            Break::Reordered { seq, belongs } => {
                write!(
                    f,
                    "records were reordered: the record at {seq} was appended as record {belongs}"
                )
            }
            Break::Anchor {
                seq,
                found: Some(h),
            } => write!(
                f,
                "record {seq} now has hash {h}, not the anchor's: the log was rewritten"
            ),
            Break::Anchor { seq, found: None } => write!(
                f,
                "record {seq} of the anchor is gone: records were removed from the end"
            ),
        }
    }
}

/// Every record, oldest first.
pub async fn records(control: &ControlStore) -> Result<Vec<AuditRecord>, ValidateError> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map_or(0, |r: &AuditRecord| r.seq);
        let page = control.audit(after, 10_000).await?;
        let done = page.len() < 10_000;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Checks the whole chain, and that record `anchor.0` still has hash `anchor.1`.
pub fn verify(records: &[AuditRecord], anchor: Option<(i64, &str)>) -> Verdict {
    let by_hash: HashMap<&str, i64> = records.iter().map(|r| (r.hash.as_str(), r.seq)).collect();
    let head = records.last().map(|r| (r.seq, r.hash.clone()));
    let verdict = |broken| Verdict {
        records: records.len() as u64,
        head: head.clone(),
        broken,
    };
    let mut expect_prev = GENESIS;
    for (expect_seq, r) in (1..).zip(records) {
        if r.seq != expect_seq {
            return verdict(Some(if r.seq > expect_seq {
                Break::Removed {
                    from: expect_seq,
                    to: r.seq - 1,
                }
            } else {
                Break::Altered { seq: r.seq }
            }));
        }
        if !r.intact() {
            // A record moved to another position is intact at the one it was appended at
            // (its sequence number is in its hash): look for that position.
            let last = records
                .last()
                .map_or(0, |l| l.seq)
                .max(records.len() as i64);
            let belongs = (1..=last).find(|&s| {
                s != r.seq && chain_hash(s, r.at_ms, &r.kind, &r.entity, &r.body, &r.prev) == r.hash
            });
            return verdict(Some(match belongs {
                Some(b) => Break::Reordered {
                    seq: r.seq,
                    belongs: b,
                },
                None => Break::Altered { seq: r.seq },
            }));
        }
        if r.prev != expect_prev {
            // Intact, but linked to another record: this one moved, or the one before it
            // was rewritten with a fresh hash.
            return verdict(Some(match by_hash.get(r.prev.as_str()) {
                Some(p) if p + 1 != r.seq => Break::Reordered {
                    seq: r.seq,
                    belongs: p + 1,
                },
                _ => Break::Altered { seq: r.seq - 1 },
            }));
        }
        expect_prev = &r.hash;
    }
    if let Some((seq, hash)) = anchor {
        let found = records
            .iter()
            .find(|r| r.seq == seq)
            .map(|r| r.hash.clone());
        if found.as_deref() != Some(hash) {
            return verdict(Some(Break::Anchor { seq, found }));
        }
    }
    verdict(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: usize) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|r| (r.seq, r.hash.as_str()));
            let rec = AuditRecord::next(
                prev,
                1000 + i as i64,
                "validation",
                "users",
                format!("{{\"n\":{i}}}"),
            );
            out.push(rec);
        }
        out
    }

    #[test]
    fn an_intact_chain_and_each_way_to_break_it() {
        let good = log(6);
        let v = verify(&good, None);
        assert_eq!((v.records, v.broken.clone()), (6, None));
        assert_eq!(v.head.as_ref().map(|h| h.0), Some(6));
        assert_eq!(verify(&[], None).broken, None);
        assert_eq!(verify(&good, Some((6, good[5].hash.as_str()))).broken, None);

        let mut altered = good.clone();
        altered[2].body = "{\"n\":9}".into();
        assert_eq!(
            verify(&altered, None).broken,
            Some(Break::Altered { seq: 3 })
        );

        // Rewritten with a recomputed hash: the next record's link gives it away.
        let mut rehashed = good.clone();
        rehashed[2].body = "{\"n\":9}".into();
        let r = &rehashed[2];
        rehashed[2].hash = chain_hash(r.seq, r.at_ms, &r.kind, &r.entity, &r.body, &r.prev);
        assert_eq!(
            verify(&rehashed, None).broken,
            Some(Break::Altered { seq: 3 })
        );

        let mut removed = good.clone();
        removed.remove(3);
        assert_eq!(
            verify(&removed, None).broken,
            Some(Break::Removed { from: 4, to: 4 })
        );

        // Two records swapped, each keeping its sequence number's slot.
        let mut swapped = good.clone();
        let (a, b) = (swapped[1].clone(), swapped[3].clone());
        swapped[1] = AuditRecord { seq: 2, ..b };
        swapped[3] = AuditRecord { seq: 4, ..a };
        assert_eq!(
            verify(&swapped, None).broken,
            Some(Break::Reordered { seq: 2, belongs: 4 })
        );

        let mut cut = good.clone();
        cut.pop();
        assert_eq!(verify(&cut, None).broken, None);
        assert_eq!(
            verify(&cut, Some((6, good[5].hash.as_str()))).broken,
            Some(Break::Anchor {
                seq: 6,
                found: None
            })
        );
        let text = Break::Removed { from: 4, to: 5 }.to_string();
        assert_eq!(text, "records 4 to 5 were removed");
    }
}

/// Which audit records to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this entity's.
    pub entity: Option<String>,
    /// Only this kind (`backfill`, `validation`, `discrepancy`, `repair`).
    pub kind: Option<String>,
    /// Only records after this sequence number.
    pub after: i64,
    /// At most this many.
    pub limit: usize,
}

/// The records the filter selects, oldest first.
pub async fn show(control: &ControlStore, f: &Filter) -> Result<Vec<AuditRecord>, ControlError> {
    let mut out = Vec::new();
    let mut from = f.after;
    while out.len() < f.limit {
        let page = control.audit(from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq;
        out.extend(
            page.into_iter()
                .filter(|r| {
                    f.entity.as_ref().is_none_or(|e| *e == r.entity)
                        && f.kind.as_ref().is_none_or(|k| *k == r.kind)
                })
                .take(f.limit - out.len()),
        );
    }
    Ok(out)
}
