//! Service boundary analyzer: from a database's schema and evidence of how the application
//! uses it (transactions, requests, foreign keys declared or inferred) to proposed services,
//! what the split would cut, the cycles between services and an extraction order.
//!
//! The pipeline: [`schema`] (+ [`infer`]) → [`resolve`] evidence → weighted table [`graph`] →
//! [`constraints`] fold tables that must stay together → [`partition`] by [`louvain`] →
//! [`services`], [`cut`], [`order`] → [`report::Report`], rendered by [`render`], with a
//! config draft for the first step from [`emit`].

pub mod command;
pub mod constraints;
pub mod cut;
pub mod cycles;
pub mod emit;
pub mod evidence;
pub mod graph;
pub mod infer;
pub mod live;
pub mod logs;
pub mod louvain;
pub mod order;
pub mod partition;
pub mod render;
pub mod report;
pub mod resolve;
pub mod schema;
pub mod services;
pub mod sql;
pub mod synthetic;

use std::path::Path;

pub use evidence::{Kind, Observation};
pub use graph::Weights;
pub use partition::Count;
pub use report::Report;
pub use schema::Schema;

use crate::store::{Store, StoreError};

/// What can stop an analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// The database could not be read.
    #[error("database {url}: {source}")]
    Database {
        /// The URL (as given).
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// An evidence file or log could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of evidence is malformed.
    #[error("{file}: line {line}: {why}")]
    Evidence {
        /// The file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// An option is unusable.
    #[error("{0}")]
    Option(String),
}

/// How to analyze.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many services.
    pub count: Count,
    /// Tables that must share a service.
    pub keep_together: Vec<Vec<String>>,
    /// Tables written together in at least this share of their transactions stay together
    /// (above 1 turns the rule off).
    pub together: f64,
    /// Seed of the node order (same input and seed, same output).
    pub seed: u64,
    /// Evidence weights.
    pub weights: Weights,
    /// Infer undeclared foreign keys from names and types.
    pub infer: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            count: Count::Auto,
            keep_together: Vec::new(),
            together: 0.5,
            seed: 1,
            weights: Weights::default(),
            infer: true,
        }
    }
}

/// What an analysis reads: a schema and observations, with where they came from.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// The schema (declared references only; inference happens in [`analyze`]).
    pub schema: Schema,
    /// Transactions and requests.
    pub observations: Vec<Observation>,
    /// Where the evidence came from.
    pub sources: Vec<String>,
    /// Warnings from reading it.
    pub warnings: Vec<String>,
}

impl Input {
    /// The schema of the database at `url`.
    pub async fn from_database(url: &str) -> Result<Input, AnalyzeError> {
        let bad = |source| AnalyzeError::Database {
            url: url.to_string(),
            source,
        };
        let mut store = Store::connect(url).await.map_err(bad)?;
        let catalog = store.catalog().await.map_err(bad)?;
        Ok(Input {
            schema: Schema::from_catalog(&catalog),
            sources: vec![format!("schema of {} ({})", redact(url), store.kind())],
            ..Input::default()
        })
    }

    /// Adds a file of evidence: `jsonl` lines, a `pg` log or a `mysql` general log.
    pub fn read(&mut self, path: &Path, format: LogFormat) -> Result<(), AnalyzeError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| AnalyzeError::Read {
            path: shown.clone(),
            source,
        })?;
        // Line by line: a log of any size is read in constant memory.
        let lines = lossy_lines(std::io::BufReader::with_capacity(1 << 20, file));
        let (observations, what) = match format {
            LogFormat::Evidence => (evidence::read_jsonl(lines, &shown)?, "observations"),
            LogFormat::Postgres | LogFormat::Mysql => {
                let parsed = if format == LogFormat::Postgres {
                    logs::read_pg(lines, &shown)?
                } else {
                    logs::read_mysql(lines, &shown)?
                };
                if parsed.skipped_total > 0 {
                    self.warnings.push(format!(
                        "{shown}: {} lines were not log lines and were skipped (first at lines {})",
                        parsed.skipped_total,
                        parsed
                            .skipped
                            .iter()
                            .map(|l| l.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                (parsed.transactions, "transactions")
            }
        };
        self.sources
            .push(format!("{shown}: {} {what}", observations.len()));
        self.observations.extend(observations);
        Ok(())
    }
}

/// The lines of a reader without their line ends; bytes that are not UTF-8 become U+FFFD.
fn lossy_lines(mut reader: impl std::io::BufRead) -> impl Iterator<Item = std::io::Result<String>> {
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some(Ok(String::from_utf8_lossy(&buf).into_owned()))
            }
            Err(e) => Some(Err(e)),
        }
    })
}

/// The kind of an evidence file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines, one transaction or request per line.
    Evidence,
    /// A PostgreSQL server log with `log_statement = 'all'`.
    Postgres,
    /// A MySQL/MariaDB general query log.
    Mysql,
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Runs the analysis.
pub fn analyze(input: Input, options: &Options) -> Result<Report, AnalyzeError> {
    let Input {
        mut schema,
        observations,
        sources,
        mut warnings,
    } = input;
    let n = schema.tables.len();
    if let Count::Exactly(k) = options.count {
        if k == 0 {
            return Err(AnalyzeError::Option(
                "--services: must be at least 1".into(),
            ));
        }
        if k > n {
            return Err(AnalyzeError::Option(format!(
                "--services {k}: the schema has only {n} tables"
            )));
        }
    }
    if options.together.is_nan() || options.together <= 0.0 {
        return Err(AnalyzeError::Option(
            "--together: must be a share above 0 (above 1 turns the rule off)".into(),
        ));
    }
    let declared_fks = schema.references.len();
    let inferred_fks = if options.infer {
        infer::infer(&mut schema)
    } else {
        0
    };
    let (seen, unknown_tables) = resolve::resolve(&schema, observations);
    let graph = graph::build(n, &schema.references, &seen, &options.weights);
    let (mut groups, held) =
        constraints::hold(&schema, &seen, &options.keep_together, options.together)?;
    let (fold, group_count) = groups.labels();
    if let Count::Exactly(k) = options.count
        && group_count < k
    {
        warnings.push(format!(
            "asked for {k} services but tables that must stay together leave only {group_count} groups"
        ));
    }
    let labels = partition::partition(&graph, &fold, group_count, options.count, options.seed);
    let (services, label) = services::name_services(&schema, &graph, &labels, &seen, &held);
    let cut = cut::cut(&schema, &services, &label, &seen);
    let metrics = cut::metrics(&graph, &label, services.len(), &seen);
    let edges = order::dependencies(&schema, &label);
    let cycles = order::cycles(&schema, &graph, &services, &label, &edges);
    let order = order::extraction(&schema, &services, &label, &edges, &seen);
    let references = schema
        .references
        .iter()
        .map(|r| {
            (
                schema.tables[r.from].name.clone(),
                schema.tables[r.to].name.clone(),
                r.inferred.is_some(),
            )
        })
        .collect();
    let count = |k: Kind| seen.iter().filter(|s| s.kind == k).map(|s| s.count).sum();
    Ok(Report {
        evidence: report::Summary {
            tables: n,
            declared_fks,
            transactions: count(Kind::Transaction),
            requests: count(Kind::Request),
            sources,
        },
        services,
        cut,
        cycles,
        metrics,
        inferred_fks,
        unknown_tables,
        order,
        warnings,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_line_by_line_whatever_their_line_ends() {
        let lines: Vec<String> = lossy_lines(&b"a\r\nb\n\xffc"[..])
            .map(|l| l.unwrap())
            .collect();
        assert_eq!(lines, ["a", "b", "\u{fffd}c"]);
        let dir = tempfile::tempdir().unwrap();
        let e = Input::default()
            .read(dir.path(), LogFormat::Evidence)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&dir.path().display().to_string()), "{e}");
    }

    #[test]
    fn passwords_are_not_shown_and_bad_options_are_named() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(redact("mysql://root@h/db"), "mysql://root@h/db");
        let input = || Input {
            schema: Schema::new(vec![]),
            ..Input::default()
        };
        let o = |count| Options {
            count,
            ..Options::default()
        };
        let e = analyze(input(), &o(Count::Exactly(0))).unwrap_err();
        assert!(e.to_string().contains("at least 1"));
        let e = analyze(input(), &o(Count::Exactly(2))).unwrap_err();
        assert!(e.to_string().contains("only 0 tables"), "{e}");
        let r = analyze(input(), &Options::default()).unwrap();
        assert!(r.services.is_empty());
        assert_eq!(r.metrics.tx_local_share, 1.0);
        let e = analyze(
            input(),
            &Options {
                together: f64::NAN,
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--together"));
        let e = analyze(
            input(),
            &Options {
                keep_together: vec![vec!["a".into(), "b".into()]],
                ..Options::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("no table \"a\""), "{e}");
    }
}
