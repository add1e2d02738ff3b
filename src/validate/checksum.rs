//! Segment checksums with bisection, computed inside the databases. The first key's range is
//! cut into segments; each side returns, per segment, its row count and the sum of its rows'
//! 60-bit hashes (an MD5 of each compared value's text, the same number on SQLite, PostgreSQL
//! and MariaDB). Equal segments are done without a row leaving the database. A differing
//! segment is cut again while it is large and most of its neighbours agree; the rest are read
//! as key-ordered streams of (key, row hash) and merged, and only the keys whose hashes
//! differ are read in full and compared value by value, under the canonical rules.
//!
//! Equal hashes mean the same text of every compared value on both sides, hence the same
//! canonical values; different hashes only send a key on to the full comparison, so a
//! representation that differs but means the same (`1.50` and `1.5`) is never reported.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::store::Store;

use super::ValidateError;
use super::plan::{KeyPart, Plan, key_part};

/// Segments of the first cut.
const FIRST_CUT: i64 = 1024;
/// Segments a large differing segment is cut into.
const RECUT: i64 = 64;
/// A differing segment with more rows than this is cut again (unless most rows differ).
const RECUT_ABOVE: u64 = 4096;
/// Keys and hashes per page of the streaming stage.
const HASH_PAGE: usize = 20_000;

/// A segment's row count and hash sum on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sum {
    rows: u64,
    hash: u128,
}

/// What the checksum stage hands to the value-by-value comparison.
#[derive(Debug, Default)]
pub struct Narrowed {
    /// Rows on each side.
    pub rows: [u64; 2],
    /// Keys whose rows may differ, sorted.
    pub keys: Vec<Vec<KeyPart>>,
    /// Keys whose row hashes were compared one by one.
    pub streamed: u64,
}

/// Why the checksum stage could not decide, so a full key-ordered pass must.
#[derive(Debug, PartialEq, Eq)]
pub enum Fallback {
    /// A side holds keys that are not integers in the 64-bit range, or keys too far apart
    /// for 64-bit arithmetic.
    Keys,
    /// Too many rows differ for reading them by key to pay (the report comes from the full
    /// streaming merge instead).
    Dense,
}

fn int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Narrows an entity's comparison to the keys that may differ; `Err(Fallback)` when it
/// cannot. `lanes` are connection pairs (left, right): the key range is split among them and
/// checksummed on all at once, so both databases use every core they have.
pub async fn narrow(
    plan: &Arc<Plan>,
    mut lanes: Vec<[Store; 2]>,
    progress: Option<&AtomicU64>,
) -> Result<Result<Narrowed, Fallback>, ValidateError> {
    for lane in &mut lanes {
        for (i, s) in lane.iter_mut().enumerate() {
            if s.kind() == "postgres" {
                // The planner cannot know how few segments there are and would sort a
                // million rows to group them; hashing them into groups needs no sort.
                s.statements()
                    .control("SET enable_sort = off")
                    .await
                    .map_err(plan.failed(i))?;
            }
        }
    }
    let Some(first) = lanes.first_mut() else {
        return Ok(Err(Fallback::Keys));
    };
    let [l, r] = first;
    let Some(whole) = bounds(plan, [l, r], None).await? else {
        return Ok(Err(Fallback::Keys));
    };
    let Some((lo, hi)) = whole else {
        return Ok(Ok(Narrowed::default()));
    };
    // A key minus the smallest must fit in 64 bits in every database's arithmetic.
    if i128::from(hi) - i128::from(lo) > i128::from(i64::MAX) {
        return Ok(Err(Fallback::Keys));
    }
    // The range in equal spans, one per lane.
    let n = lanes.len() as i128;
    let span = i128::from(hi) - i128::from(lo) + 1;
    let parts: Vec<(i64, i64)> = (0..n)
        .map(|k| {
            let a = i128::from(lo) + span * k / n;
            let b = i128::from(lo) + span * (k + 1) / n - 1;
            (a as i64, b as i64)
        })
        .filter(|(a, b)| a <= b)
        .collect();
    let cut = (FIRST_CUT / n as i64).max(1);
    let results = futures_util::future::join_all(
        lanes
            .iter_mut()
            .zip(parts)
            .map(|([l, r], range)| bisect(plan, [l, r], range, cut, progress)),
    )
    .await;
    let mut rows = [0u64; 2];
    let mut stream: Vec<(i64, i64)> = Vec::new();
    for r in results {
        match r? {
            Ok((n, s)) => {
                rows[0] += n[0];
                rows[1] += n[1];
                stream.extend(s);
            }
            Err(f) => return Ok(Err(f)),
        }
    }
    let [l, r] = lanes.swap_remove(0);
    if stream.is_empty() {
        return Ok(Ok(Narrowed {
            rows,
            ..Narrowed::default()
        }));
    }
    // Adjacent ranges are read as one.
    stream.sort_unstable();
    let mut ranges: Vec<(i64, i64)> = Vec::with_capacity(stream.len());
    for (a, b) in stream {
        match ranges.last_mut() {
            Some(last) if i128::from(last.1) + 1 == i128::from(a) => last.1 = b,
            _ => ranges.push((a, b)),
        }
    }
    let streamed_rows = rows[0].max(rows[1]);
    let mut lc = HashCursor::open(plan.clone(), 0, l, ranges.clone());
    let mut rc = HashCursor::open(plan.clone(), 1, r, ranges);
    let mut keys = Vec::new();
    let mut streamed = 0u64;
    let (mut a, mut b) = (lc.next().await?, rc.next().await?);
    loop {
        // A quarter of the rows differing: the full merge is cheaper than reading by key.
        if keys.len() as u64 * 4 > streamed_rows.max(4096) {
            return Ok(Err(Fallback::Dense));
        }
        match (a.take(), b.take()) {
            (None, None) => break,
            (Some(x), None) => {
                keys.push(x.0);
                a = lc.next().await?;
            }
            (None, Some(y)) => {
                keys.push(y.0);
                b = rc.next().await?;
            }
            (Some(x), Some(y)) => match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => {
                    keys.push(x.0);
                    b = Some(y);
                    a = lc.next().await?;
                }
                std::cmp::Ordering::Greater => {
                    keys.push(y.0);
                    a = Some(x);
                    b = rc.next().await?;
                }
                std::cmp::Ordering::Equal => {
                    if x.1 != y.1 {
                        keys.push(x.0);
                    }
                    streamed += 1;
                    if let Some(p) = progress {
                        p.fetch_add(1, Ordering::Relaxed);
                    }
                    a = lc.next().await?;
                    b = rc.next().await?;
                }
            },
        }
    }
    Ok(Ok(Narrowed {
        rows,
        keys,
        streamed,
    }))
}

/// Checksums `range` in `parts` segments and cuts differing ones again: the rows settled or
/// to stream on each side, and the ranges to stream.
async fn bisect(
    plan: &Plan,
    [l, r]: [&mut Store; 2],
    range: (i64, i64),
    parts: i64,
    progress: Option<&AtomicU64>,
) -> Result<Result<([u64; 2], Vec<(i64, i64)>), Fallback>, ValidateError> {
    let mut rows = [0u64; 2];
    let mut queue = vec![(range.0, range.1, parts, false)];
    let mut stream: Vec<(i64, i64)> = Vec::new();
    while let Some((a, b, parts, narrow)) = queue.pop() {
        // A range cut again is first narrowed to the keys it holds, so that a few far-off
        // keys do not leave every row in one segment.
        let (a, b) = if narrow {
            match bounds(plan, [&mut *l, &mut *r], Some((a, b))).await? {
                Some(Some(tight)) => tight,
                Some(None) => continue,
                None => return Ok(Err(Fallback::Keys)),
            }
        } else {
            (a, b)
        };
        let span = i128::from(b) - i128::from(a) + 1;
        let width = ((span + i128::from(parts) - 1) / i128::from(parts)).max(1);
        let Ok(width) = i64::try_from(width) else {
            return Ok(Err(Fallback::Keys));
        };
        let q = [
            plan.segments_sql(0, a, b, width),
            plan.segments_sql(1, a, b, width),
        ];
        let (ls, rs) = tokio::join!(
            l.statements().rows(&q[0], &[]),
            r.statements().rows(&q[1], &[])
        );
        let (Some(ls), Some(rs)) = (
            sums(&ls.map_err(plan.failed(0))?),
            sums(&rs.map_err(plan.failed(1))?),
        ) else {
            return Ok(Err(Fallback::Keys));
        };
        let sums = [ls, rs];
        let mut groups: Vec<i64> = sums[0].keys().chain(sums[1].keys()).copied().collect();
        groups.sort_unstable();
        groups.dedup();
        let mut differing = Vec::new();
        let (mut all, mut differ) = (0u64, 0u64);
        for g in groups {
            let (x, y) = (
                sums[0].get(&g).copied().unwrap_or_default(),
                sums[1].get(&g).copied().unwrap_or_default(),
            );
            all += x.rows.max(y.rows);
            let seg_lo = i128::from(a) + i128::from(g) * i128::from(width);
            let seg = (
                seg_lo as i64,
                (seg_lo + i128::from(width) - 1).min(i128::from(b)) as i64,
            );
            if x == y {
                rows[0] += x.rows;
                rows[1] += y.rows;
                if let Some(p) = progress {
                    p.fetch_add(x.rows, Ordering::Relaxed);
                }
            } else {
                differ += x.rows.max(y.rows);
                differing.push((seg, x, y));
            }
        }
        // Where most rows of many segments differ, cutting again reads them again for
        // nothing: stream them.
        let dense = differing.len() >= 16 && differ * 2 > all;
        for (seg, x, y) in differing {
            if !dense && x.rows.max(y.rows) > RECUT_ABOVE && seg.1 > seg.0 {
                queue.push((seg.0, seg.1, RECUT, true));
            } else {
                rows[0] += x.rows;
                rows[1] += y.rows;
                stream.push(seg);
            }
        }
    }
    Ok(Ok((rows, stream)))
}

/// Both sides' smallest and largest first key (within `range`): `None` when a key is not a
/// 64-bit integer, `Some(None)` when there are no rows.
async fn bounds(
    plan: &Plan,
    [l, r]: [&mut Store; 2],
    range: Option<(i64, i64)>,
) -> Result<Option<Option<(i64, i64)>>, ValidateError> {
    let q = [plan.bounds_sql(0, range), plan.bounds_sql(1, range)];
    let (lb, rb) = tokio::join!(
        l.statements().rows(&q[0], &[]),
        r.statements().rows(&q[1], &[])
    );
    let mut lo = i128::MAX;
    let mut hi = i128::MIN;
    for (i, b) in [lb, rb].into_iter().enumerate() {
        let b = b.map_err(|source| ValidateError::Database {
            entity: plan.entity.name.clone(),
            side: plan.sides[i].side.clone(),
            source,
        })?;
        let row = b.first().map(Vec::as_slice).unwrap_or_default();
        if row.get(2).and_then(int).unwrap_or(0) > 0 {
            return Ok(None);
        }
        match (row.first(), row.get(1)) {
            (Some(Value::Null) | None, _) => continue,
            (Some(a), Some(b)) => match (int(a), int(b)) {
                (Some(a), Some(b)) => {
                    lo = lo.min(a);
                    hi = hi.max(b);
                }
                _ => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
    if lo > hi {
        return Ok(Some(None));
    }
    Ok(match (i64::try_from(lo), i64::try_from(hi)) {
        (Ok(lo), Ok(hi)) => Some(Some((lo, hi))),
        _ => None,
    })
}

/// A segment query's rows by segment.
fn sums(rows: &[Vec<Value>]) -> Option<BTreeMap<i64, Sum>> {
    // A row that does not read as integers (a segment number a database computed in floating
    // point) must not vanish: the caller falls back to the full merge.
    rows.iter()
        .map(|r| {
            let g = i64::try_from(int(r.first()?)?).ok()?;
            let n = u64::try_from(int(r.get(1)?)?).ok()?;
            let hash = match r.get(2)? {
                Value::String(s) => s.trim().parse().ok()?,
                Value::Number(n) => n.to_string().parse().ok()?,
                _ => return None,
            };
            Some((g, Sum { rows: n, hash }))
        })
        .collect()
}

type Keyed = (Vec<KeyPart>, String);

/// One side's keys and row hashes over the ranges, in key order.
struct HashCursor {
    rx: mpsc::Receiver<Result<Vec<Keyed>, ValidateError>>,
    buf: std::collections::VecDeque<Keyed>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HashCursor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HashCursor {
    fn open(plan: Arc<Plan>, i: usize, mut store: Store, ranges: Vec<(i64, i64)>) -> HashCursor {
        let (tx, rx) = mpsc::channel(2);
        let task = tokio::spawn(async move {
            let fail = |source| ValidateError::Database {
                entity: plan.entity.name.clone(),
                side: plan.sides[i].side.clone(),
                source,
            };
            let n = plan.key_kinds.len();
            for range in ranges {
                let mut after: Option<Vec<KeyPart>> = None;
                loop {
                    let (sql, params) = plan.hash_page_sql(i, range, after.as_deref(), HASH_PAGE);
                    let page = match store.statements().rows(&sql, &params).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            let _ = tx.send(Err(fail(e))).await;
                            return;
                        }
                    };
                    let full = page.len() >= HASH_PAGE;
                    let items: Vec<Keyed> = page
                        .into_iter()
                        .map(|row| {
                            let key = row[..n]
                                .iter()
                                .zip(&plan.key_kinds)
                                .map(|(v, k)| key_part(v, *k))
                                .collect();
                            let hash = match &row[n] {
                                Value::String(s) => s.clone(),
                                v => v.to_string(),
                            };
                            (key, hash)
                        })
                        .collect();
                    after = items.last().map(|(k, _)| k.clone());
                    if tx.send(Ok(items)).await.is_err() {
                        return;
                    }
                    if !full {
                        break;
                    }
                }
            }
        });
        HashCursor {
            rx,
            buf: Default::default(),
            task,
        }
    }

    async fn next(&mut self) -> Result<Option<Keyed>, ValidateError> {
        while self.buf.is_empty() {
            match self.rx.recv().await {
                Some(page) => self.buf.extend(page?),
                None => return Ok(None),
            }
        }
        Ok(self.buf.pop_front())
    }
}
