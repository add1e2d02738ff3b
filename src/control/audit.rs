//! The audit log's records and their chain: each record carries the SHA-256 of the record
//! before it, and its own hash covers its sequence number, time, kind, entity, body and that
//! link, so a changed byte, a removed record or two swapped records break the chain.

/// The link of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// When it was appended, Unix ms.
    pub at_ms: i64,
    /// What happened: `backfill`, `validation`, `discrepancy`, `repair`.
    pub kind: String,
    /// The entity it concerns.
    pub entity: String,
    /// The details, as JSON text.
    pub body: String,
    /// The previous record's hash ([`GENESIS`] for the first).
    pub prev: String,
    /// This record's hash.
    pub hash: String,
}

/// The hash a record with these fields must carry, as lowercase hex.
pub fn chain_hash(
    seq: i64,
    at_ms: i64,
    kind: &str,
    entity: &str,
    body: &str,
    prev: &str,
) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        seq.to_string().as_str(),
        &at_ms.to_string(),
        kind,
        entity,
        prev,
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.update(&(body.len() as u64).to_be_bytes());
    ctx.update(body.as_bytes());
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl AuditRecord {
    /// The next record after `prev` (`None`: the first).
    pub fn next(
        prev: Option<(i64, &str)>,
        at_ms: i64,
        kind: &str,
        entity: &str,
        body: String,
    ) -> AuditRecord {
        let (seq, link) = match prev {
            Some((s, h)) => (s + 1, h.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let hash = chain_hash(seq, at_ms, kind, entity, &body, &link);
        AuditRecord {
            seq,
            at_ms,
            kind: kind.into(),
            entity: entity.into(),
            body,
            prev: link,
            hash,
        }
    }

    /// Whether the stored hash is the hash of the stored fields.
    pub fn intact(&self) -> bool {
        chain_hash(
            self.seq,
            self.at_ms,
            &self.kind,
            &self.entity,
            &self.body,
            &self.prev,
        ) == self.hash
    }
}

/// One record to append.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// What happened.
    pub kind: String,
    /// The entity.
    pub entity: String,
    /// Details, as JSON text.
    pub body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_is_in_the_hash() {
        let a = AuditRecord::next(None, 5, "validation", "users", "{}".into());
        assert!(a.intact());
        assert_eq!(a.prev, GENESIS);
        let b = AuditRecord::next(
            Some((a.seq, &a.hash)),
            6,
            "repair",
            "users",
            "{\"n\":1}".into(),
        );
        assert_eq!((b.seq, b.prev.as_str()), (2, a.hash.as_str()));
        for change in [
            |r: &mut AuditRecord| r.seq += 1,
            |r: &mut AuditRecord| r.at_ms += 1,
            |r: &mut AuditRecord| r.kind.push('x'),
            |r: &mut AuditRecord| r.entity.push('x'),
            |r: &mut AuditRecord| r.body.push(' '),
            |r: &mut AuditRecord| r.prev = GENESIS.into(),
        ] {
            let mut c = b.clone();
            change(&mut c);
            assert!(!c.intact());
        }
        // Field boundaries are part of the hash: moving a character across them changes it.
        assert_ne!(
            chain_hash(1, 1, "ab", "c", "", GENESIS),
            chain_hash(1, 1, "a", "bc", "", GENESIS)
        );
    }
}
