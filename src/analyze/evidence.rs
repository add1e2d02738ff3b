//! Evidence of which tables belong together: transactions and requests, each a set of tables
//! touched (and the subset written), weighted by how often it was seen. Read from the JSON
//! lines evidence format, database logs ([`super::logs`]) or live from `serve`.

use serde::Deserialize;

use super::AnalyzeError;

/// What an observation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A database transaction: cutting it makes it a distributed transaction.
    Transaction,
    /// A request to an endpoint: cutting it makes the endpoint call two services.
    Request,
}

/// One transaction or request, seen `count` times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Observation {
    /// Transaction or request.
    pub kind: Kind,
    /// Tables touched, as named by the source, sorted and without repeats.
    pub tables: Vec<String>,
    /// The tables written among them, sorted.
    pub writes: Vec<String>,
    /// Endpoint or transaction name, when the source gives one.
    pub name: Option<String>,
    /// How many times it was seen.
    pub count: u64,
}

impl Observation {
    /// An observation with sorted, de-duplicated table lists (written tables are touched).
    pub fn new(
        kind: Kind,
        tables: impl IntoIterator<Item = String>,
        writes: impl IntoIterator<Item = String>,
        name: Option<String>,
        count: u64,
    ) -> Observation {
        let mut writes: Vec<String> = writes.into_iter().collect();
        writes.sort();
        writes.dedup();
        let mut tables: Vec<String> = tables.into_iter().chain(writes.iter().cloned()).collect();
        tables.sort();
        tables.dedup();
        Observation {
            kind,
            tables,
            writes,
            name,
            count,
        }
    }
}

/// Adds up observations that are the same apart from their count.
pub fn aggregate(observations: impl IntoIterator<Item = Observation>) -> Vec<Observation> {
    let mut sum: ahash::AHashMap<Observation, u64> = Default::default();
    for mut o in observations {
        let n = std::mem::take(&mut o.count);
        *sum.entry(o).or_default() += n;
    }
    let mut out: Vec<Observation> = sum
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(mut o, n)| {
            o.count = n;
            o
        })
        .collect();
    out.sort_unstable();
    out
}

/// One line of the evidence file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    tables: Vec<String>,
    #[serde(default)]
    writes: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    kind: Option<String>,
}

/// HTTP methods that mark a name as an endpoint (`POST /orders`).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Parses the JSON lines evidence format: one transaction or request per line,
/// `{"tables": [...], "writes": [...], "name": "POST /orders", "count": 1, "kind": "request"}`,
/// only `tables` required. Without `kind`, a line whose name starts with an HTTP method is a
/// request and any other a transaction. Blank lines and lines starting with `#` are skipped.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Observation>, AnalyzeError> {
    read_jsonl(text.lines().map(|l| Ok(l.to_owned())), source)
}

/// Like [`parse_jsonl`], line by line from a reader of any size.
pub fn read_jsonl(
    lines: impl Iterator<Item = std::io::Result<String>>,
    source: &str,
) -> Result<Vec<Observation>, AnalyzeError> {
    let mut out = Vec::new();
    for (n, raw) in super::logs::lines_of(lines, source).enumerate() {
        let raw = raw?;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| AnalyzeError::Evidence {
            file: source.to_string(),
            line: n + 1,
            why,
        };
        let l: Line = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if l.tables.is_empty() {
            return Err(bad("\"tables\" is empty".into()));
        }
        if let Some(w) = l.writes.iter().find(|w| !l.tables.contains(w)) {
            return Err(bad(format!("written table {w:?} is not in \"tables\"")));
        }
        if l.tables.iter().any(|t| t.trim().is_empty()) {
            return Err(bad("a table name is empty".into()));
        }
        let kind = match l.kind.as_deref() {
            Some("transaction") => Kind::Transaction,
            Some("request") => Kind::Request,
            Some(other) => {
                return Err(bad(format!(
                    "kind {other:?}: use \"transaction\" or \"request\""
                )));
            }
            None => {
                let first = l.name.as_deref().and_then(|n| n.split_whitespace().next());
                if first.is_some_and(|m| METHODS.contains(&m)) {
                    Kind::Request
                } else {
                    Kind::Transaction
                }
            }
        };
        let count = l.count.unwrap_or(1);
        out.push(Observation::new(kind, l.tables, l.writes, l.name, count));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_defaults_and_kinds() {
        let text = "# comment\n\n\
            {\"tables\": [\"orders\", \"order_items\"], \"writes\": [\"orders\"], \"name\": \"POST /orders\", \"count\": 3}\n\
            {\"tables\": [\"b\", \"a\", \"a\"]}\n\
            {\"tables\": [\"x\"], \"name\": \"GET /x\", \"kind\": \"transaction\"}\n";
        let o = parse_jsonl(text, "ev.jsonl").unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].kind, Kind::Request);
        assert_eq!(o[0].tables, ["order_items", "orders"]);
        assert_eq!(o[0].count, 3);
        assert_eq!(o[1].kind, Kind::Transaction);
        assert_eq!(o[1].tables, ["a", "b"]);
        assert_eq!(o[1].count, 1);
        assert_eq!(o[2].kind, Kind::Transaction);
        let sum = aggregate(o.iter().cloned().chain(o.iter().cloned()));
        assert_eq!(sum.len(), 3);
        assert_eq!(sum.iter().map(|o| o.count).sum::<u64>(), 10);
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        for (text, want) in [
            ("{\"tables\": []}", "line 1: \"tables\" is empty"),
            (
                "\n{\"tables\": [\"a\"], \"writes\": [\"b\"]}",
                "line 2: written table \"b\"",
            ),
            ("{\"tables\": \"a\"}", "line 1: invalid type"),
            ("{\"tabels\": [\"a\"]}", "line 1: unknown field `tabels`"),
            (
                "{\"tables\": [\"a\"], \"kind\": \"rpc\"}",
                "line 1: kind \"rpc\"",
            ),
            ("{\"tables\": [\" \"]}", "line 1: a table name is empty"),
            ("not json", "line 1: expected"),
        ] {
            let e = parse_jsonl(text, "ev.jsonl").unwrap_err().to_string();
            assert!(e.starts_with("ev.jsonl"), "{e}");
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }
}
