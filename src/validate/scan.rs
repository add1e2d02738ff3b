//! Reading one side in key order: a task per side reads key-ordered pages (keyset paging, so
//! each page is an index range scan), maps and hashes the rows, and hands them over through a
//! bounded channel, so both sides are read and hashed at once with bounded memory.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::Store;

use super::ValidateError;
use super::plan::{Item, KeyPart, Plan};

/// What a scan reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// Every row, from the first key on.
    All,
    /// Only these keys (sorted, distinct).
    Keys(Vec<Vec<KeyPart>>),
}

/// Keeps a key in a sample: the same keys on both sides for one seed.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Keys whose hash falls below this are kept.
    pub below: u64,
    /// Seed of the run.
    pub seed: u64,
}

impl Sample {
    /// A sample of `share` (0..=1) of the keys.
    pub fn new(share: f64, seed: u64) -> Sample {
        Sample {
            below: (share.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            seed,
        }
    }

    fn keeps(&self, key: &[KeyPart]) -> bool {
        let mut text = String::new();
        for p in key {
            match p {
                KeyPart::Int(i) => text.push_str(&i.to_string()),
                KeyPart::Text(t) => text.push_str(t),
            }
            text.push('\u{1f}');
        }
        xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), self.seed) <= self.below
    }
}

/// Rows of one side in key order.
pub struct Cursor {
    rx: mpsc::Receiver<Result<Vec<Item>, ValidateError>>,
    buf: VecDeque<Item>,
    task: JoinHandle<()>,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keys per statement when reading by key.
const KEYS_PER_READ: usize = 500;

impl Cursor {
    /// Starts reading side `i` (0 left, 1 right) of the plan.
    pub fn open(
        plan: Arc<Plan>,
        i: usize,
        mut store: Store,
        source: Source,
        sample: Option<Sample>,
        page: usize,
    ) -> Cursor {
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(async move {
            let r = produce(&plan, i, &mut store, source, sample, page, &tx).await;
            if let Err(e) = r {
                let _ = tx.send(Err(e)).await;
            }
        });
        Cursor {
            rx,
            buf: VecDeque::new(),
            task,
        }
    }

    /// The next row, without taking it.
    pub async fn peek(&mut self) -> Result<Option<&Item>, ValidateError> {
        while self.buf.is_empty() {
            match self.rx.recv().await {
                Some(page) => self.buf.extend(page?),
                None => return Ok(None),
            }
        }
        Ok(self.buf.front())
    }

    /// Takes the next row.
    pub async fn next(&mut self) -> Result<Option<Item>, ValidateError> {
        self.peek().await?;
        Ok(self.buf.pop_front())
    }
}

async fn produce(
    plan: &Plan,
    i: usize,
    store: &mut Store,
    source: Source,
    sample: Option<Sample>,
    page: usize,
    tx: &mpsc::Sender<Result<Vec<Item>, ValidateError>>,
) -> Result<(), ValidateError> {
    let side = &plan.sides[i];
    let fail = |source| ValidateError::Database {
        entity: plan.entity.name.clone(),
        side: side.side.clone(),
        source,
    };
    let read = async |store: &mut Store, (sql, params): (String, Vec<crate::store::Param>)| {
        let rows = store.statements().rows(&sql, &params).await.map_err(fail)?;
        Ok::<_, ValidateError>(
            rows.into_iter()
                .map(|r| plan.item(i, r))
                .collect::<Vec<Item>>(),
        )
    };
    let keep = |mut items: Vec<Item>| {
        if let Some(s) = sample {
            items.retain(|it| s.keeps(&it.key));
        }
        items
    };
    match source {
        Source::All => {
            let mut after: Option<Vec<KeyPart>> = None;
            loop {
                let mut items =
                    read(store, plan.page_sql(i, after.as_deref(), page, false)).await?;
                let full = items.len() >= page;
                let Some(last) = items.last().map(|it| it.key.clone()) else {
                    break;
                };
                if full && !side.unique {
                    // Rows sharing the last key may continue past the page: read them all.
                    items.retain(|it| it.key != last);
                    items.extend(
                        read(store, plan.keys_sql(i, std::slice::from_ref(&last), false)).await?,
                    );
                }
                if tx.send(Ok(keep(items))).await.is_err() || !full {
                    break;
                }
                after = Some(last);
            }
        }
        Source::Keys(keys) => {
            for chunk in keys.chunks(KEYS_PER_READ) {
                let items = read(store, plan.keys_sql(i, chunk, false)).await?;
                if tx.send(Ok(keep(items))).await.is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}
