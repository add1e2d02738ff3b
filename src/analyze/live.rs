//! The analyzer inside `serve`: an engine that hears the write tap and adds each routed write
//! to the live evidence (a request to `METHOD entity` touching the entity's monolith table),
//! and the evidence store that `GET /admin/analysis` analyzes together with the sync engine's
//! captured transactions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ahash::AHashMap;
use tokio_util::sync::CancellationToken;

use super::evidence::{Kind, Observation};
use crate::engine::{Engine, EngineError, TapListener};

/// Most distinct observations kept; further shapes are counted as dropped.
const MAX_SHAPES: usize = 50_000;

/// Observations gathered while the gateway runs, added up.
#[derive(Debug, Default)]
pub struct LiveEvidence {
    inner: Mutex<Gathered>,
}

#[derive(Debug, Default)]
struct Gathered {
    counts: AHashMap<Observation, u64>,
    dropped: u64,
}

impl LiveEvidence {
    /// Counts one observation (its own count is ignored: each call is one).
    pub fn record(&self, mut o: Observation) {
        o.count = 0;
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.counts.len() >= MAX_SHAPES && !g.counts.contains_key(&o) {
            g.dropped += 1;
            return;
        }
        *g.counts.entry(o).or_default() += 1;
    }

    /// Everything gathered so far, sorted, and how many observations found no room.
    pub fn snapshot(&self) -> (Vec<Observation>, u64) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Observation> = g
            .counts
            .iter()
            .map(|(o, n)| Observation {
                count: *n,
                ..o.clone()
            })
            .collect();
        out.sort();
        (out, g.dropped)
    }
}

/// The analyzer's engine: records routed writes; the analysis itself runs on request.
pub struct AnalyzerEngine {
    evidence: Arc<LiveEvidence>,
    /// Entity → its table on the analyzed (monolith) side.
    tables: Arc<HashMap<String, String>>,
}

impl AnalyzerEngine {
    /// An engine recording into `evidence`, knowing each entity's table on the analyzed side.
    pub fn new(evidence: Arc<LiveEvidence>, tables: HashMap<String, String>) -> AnalyzerEngine {
        AnalyzerEngine {
            evidence,
            tables: Arc::new(tables),
        }
    }
}

#[async_trait::async_trait]
impl Engine for AnalyzerEngine {
    fn name(&self) -> &'static str {
        "analyzer"
    }

    fn tap(&self) -> Option<TapListener> {
        let (evidence, tables) = (self.evidence.clone(), self.tables.clone());
        Some(Arc::new(move |ev| {
            if let Some(table) = tables.get(&*ev.entity) {
                evidence.record(Observation::new(
                    Kind::Request,
                    [table.clone()],
                    [table.clone()],
                    Some(format!("{} {}", ev.method, ev.entity)),
                    1,
                ));
            }
        }))
    }

    async fn run(self: Box<Self>, shutdown: CancellationToken) -> Result<(), EngineError> {
        shutdown.cancelled().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routed_writes_become_request_evidence() {
        let evidence = Arc::new(LiveEvidence::default());
        let engine = AnalyzerEngine::new(
            evidence.clone(),
            [("users".to_string(), "users".to_string())].into(),
        );
        let listen = engine.tap().unwrap();
        for (entity, method) in [
            ("users", http::Method::POST),
            ("users", http::Method::POST),
            ("other", http::Method::PUT),
        ] {
            listen(&crate::tap::WriteEvent {
                entity: entity.into(),
                key: None,
                side: "monolith".into(),
                method,
                at_ms: 0,
            });
        }
        let (seen, dropped) = evidence.snapshot();
        assert_eq!(dropped, 0);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].count, 2);
        assert_eq!(seen[0].name.as_deref(), Some("POST users"));
        let token = CancellationToken::new();
        token.cancel();
        Box::new(engine).run(token).await.unwrap();
    }
}
