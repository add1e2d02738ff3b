//! `strangler analyze`: read the schema and the evidence, analyze, write the report (JSON,
//! Markdown or DOT, rendered to SVG beside it when Graphviz is installed) and, if asked, the
//! config draft for the first extraction step.

use std::path::PathBuf;

use super::{AnalyzeError, Count, Input, LogFormat, Options, Report, analyze, emit, render};

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The fixed JSON shape.
    Json,
    /// For people.
    Markdown,
    /// Graphviz.
    Dot,
}

impl Format {
    /// Parses `json`, `markdown` (or `md`) or `dot`.
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            "dot" => Ok(Format::Dot),
            other => Err(format!(
                "unknown format {other:?}; use json, markdown or dot"
            )),
        }
    }
}

/// Parses `auto` or a positive count.
pub fn parse_count(s: &str) -> Result<Count, String> {
    if s == "auto" {
        return Ok(Count::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Count::Exactly(n)),
        _ => Err(format!("{s:?}: use auto or a whole number of at least 1")),
    }
}

/// `--keep-together a,b` arguments as groups of table names.
pub fn groups(raw: &[String]) -> Vec<Vec<String>> {
    raw.iter()
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// Everything `strangler analyze` was asked.
#[derive(Debug, Clone)]
pub struct Command {
    /// Database URL.
    pub database: String,
    /// Files in the JSON lines evidence format.
    pub evidence: Vec<PathBuf>,
    /// PostgreSQL logs.
    pub pg_logs: Vec<PathBuf>,
    /// MySQL/MariaDB general logs.
    pub mysql_logs: Vec<PathBuf>,
    /// Analysis options.
    pub options: Options,
    /// Report format.
    pub format: Format,
    /// Where to write the report (standard output when absent).
    pub out: Option<PathBuf>,
    /// Where to write the first step's config draft.
    pub emit_config: Option<PathBuf>,
}

/// Reads the database and the evidence into an analysis input.
pub async fn gather(cmd: &Command) -> Result<Input, AnalyzeError> {
    let mut input = Input::from_database(&cmd.database).await?;
    for (files, format) in [
        (&cmd.evidence, LogFormat::Evidence),
        (&cmd.pg_logs, LogFormat::Postgres),
        (&cmd.mysql_logs, LogFormat::Mysql),
    ] {
        for f in files {
            input.read(f, format)?;
        }
    }
    Ok(input)
}

/// The report in the asked format.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Markdown => render::markdown(report),
        Format::Dot => render::dot(report, &report.references),
    }
}

/// Runs the command; returns what to print on standard output.
pub async fn run(cmd: &Command) -> Result<String, AnalyzeError> {
    let input = gather(cmd).await?;
    let report = analyze(input, &cmd.options)?;
    let text = render(&report, cmd.format);
    let write = |path: &PathBuf, text: &str| {
        std::fs::write(path, text).map_err(|source| AnalyzeError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    if let Some(path) = &cmd.emit_config {
        match emit::first_step(&report, &cmd.database) {
            Some(config) => write(path, &config)?,
            None => {
                return Err(AnalyzeError::Option(format!(
                    "--emit-config {}: the database has no tables, so there is no first step",
                    path.display()
                )));
            }
        }
    }
    let Some(out) = &cmd.out else {
        return Ok(text);
    };
    write(out, &text)?;
    let mut said = format!(
        "{}: {} services from {} tables\n",
        out.display(),
        report.services.len(),
        report.evidence.tables
    );
    if cmd.format == Format::Dot {
        let svg = out.with_extension("svg");
        match std::process::Command::new("dot")
            .arg("-Tsvg")
            .arg(out)
            .arg("-o")
            .arg(&svg)
            .status()
        {
            Ok(s) if s.success() => {
                said.push_str(&format!("{}: rendered by Graphviz\n", svg.display()))
            }
            Ok(s) => said.push_str(&format!("Graphviz dot failed ({s}); no SVG written\n")),
            Err(_) => said.push_str("Graphviz dot is not installed; no SVG written\n"),
        }
    }
    Ok(said)
}
