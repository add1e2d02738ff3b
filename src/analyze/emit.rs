//! A configuration draft for the first extraction step: the service's tables as
//! `[[entities]]` kept in sync with the monolith, and `[[routes]]` that start with all traffic
//! on the monolith, ready for a rollout. `strangler check` accepts it as written.

use std::fmt::Write as _;

use super::report::Report;
use super::schema::short;

/// A TOML basic string (JSON's escapes are TOML's).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A name usable as a side, upstream or entity name: letters, digits, `_` and `-`.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "service".into() } else { t }
}

/// The draft for the report's first step, or `None` when there is no service.
pub fn first_step(report: &Report, database: &str) -> Option<String> {
    let step = report.order.first()?;
    let svc = token(&step.service);
    let side = if svc == "monolith" {
        "service".to_string()
    } else {
        svc.clone()
    };
    let mut out = String::new();
    let tables: Vec<&str> = step.entities.iter().map(|e| e.table.as_str()).collect();
    let _ = writeln!(
        out,
        "# Step 1 of the extraction proposed by `strangler analyze`: move service {} ({} tables)\n\
         # out of the monolith. A draft: the addresses are placeholders, and the service's database\n\
         # must hold the same tables before `strangler sync install` (an empty one can be filled by\n\
         # the backfill). Routes start with all traffic on the monolith; raise the split or add a\n\
         # rollout when the entities are in sync.",
        step.service,
        tables.len() + step.without_key.len()
    );
    if !step.depends_on.is_empty() {
        let _ = writeln!(
            out,
            "# It still reads from {} through foreign keys: see the report's cut.",
            step.depends_on.join(", ")
        );
    }
    for t in &step.without_key {
        let _ = writeln!(
            out,
            "# {t} has no primary or unique key: give it one before it can be synced."
        );
    }
    let _ = writeln!(
        out,
        "\n[gateway]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"127.0.0.1:9090\"\n\
         control = \"sqlite://strangler-control.db\"\n\n\
         [upstreams.monolith]\nurl = \"http://127.0.0.1:3000\"\n\n\
         [upstreams.{side}]\nurl = \"http://127.0.0.1:3001\"\n\n\
         [sides.monolith]\ndatabase = {}\n\n[sides.{side}]\ndatabase = {}",
        q(database),
        q(&format!("sqlite://{side}.db"))
    );
    let mut names = Vec::new();
    for e in &step.entities {
        let table = if let Some(rest) = e.table.strip_prefix("public.") {
            rest
        } else {
            &e.table
        };
        let mut name = token(short(&e.table));
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name.clone());
        let key = e.key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
        let columns = e
            .columns
            .iter()
            .map(|c| format!("{} = {}", q(c), q(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "\n[[entities]]\nname = {}\nmonolith = {{ table = {}, key = [{key}] }}\n\
             {side} = {{ table = {}, key = [{key}] }}\ncolumns = {{ {columns} }}\n\
             authority = \"monolith\"\nconflict = \"last_write_wins\"\nlag_tolerance = \"2s\"",
            q(&name),
            q(table),
            q(short(&e.table)),
        );
    }
    // Routes bind the entity of the table the service is named after, else the first.
    let bound = step
        .entities
        .iter()
        .position(|e| short(&e.table) == step.service)
        .or(if names.is_empty() { None } else { Some(0) })
        .map(|i| names[i].clone());
    let guessed = step.paths.is_empty();
    let paths = if guessed {
        vec![format!("/{}", step.service)]
    } else {
        step.paths.clone()
    };
    for (i, p) in paths.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n[[routes]]{}\nname = {}\npath_prefix = {}\nsplit = {{ monolith = 100, {side} = 0 }}\n\
             fallback = \"monolith\"{}",
            if guessed {
                "  # path guessed from the service's name: no request evidence"
            } else {
                ""
            },
            q(&format!("{svc}-{}", i + 1)),
            q(p),
            bound
                .as_ref()
                .map(|n| format!("\nentity = {}", q(n)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "\n[[routes]]\nname = \"everything-else\"\npath_prefix = \"/\"\nsplit = {{ monolith = 100 }}"
    );
    Some(out)
}
