//! The report for people (Markdown) and as a picture (Graphviz DOT).

use std::fmt::Write as _;

use super::report::Report;

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.metrics;
    let _ = writeln!(
        o,
        "# Proposed services\n\n{} services from {} tables ({} foreign keys declared, {} inferred; \
         {} transactions, {} requests).\n\nModularity {:.3} · cohesion {:.3} · coupling {:.3} · \
         transactions inside one service {:.1} %\n",
        r.services.len(),
        r.evidence.tables,
        r.evidence.declared_fks,
        r.inferred_fks,
        r.evidence.transactions,
        r.evidence.requests,
        m.modularity,
        m.cohesion,
        m.coupling,
        m.tx_local_share * 100.0
    );
    for (i, s) in r.services.iter().enumerate() {
        let _ = writeln!(
            o,
            "## {}. {}\n\nTables: {}\n",
            i + 1,
            s.name,
            code(&s.tables)
        );
        for w in &s.why {
            let _ = writeln!(o, "- {w}");
        }
        o.push('\n');
    }
    let _ = writeln!(o, "## What the split cuts\n");
    let _ = writeln!(
        o,
        "### Foreign keys across services ({})\n",
        r.cut.foreign_keys.len()
    );
    if !r.cut.foreign_keys.is_empty() {
        let _ = writeln!(o, "| from | to | services | |\n|---|---|---|---|");
        for k in &r.cut.foreign_keys {
            let _ = writeln!(
                o,
                "| `{}.{}` | `{}.{}` | {} → {} | {} |",
                k.from,
                k.columns.join(","),
                k.to,
                k.references.join(","),
                k.services[0],
                k.services[1],
                if k.inferred {
                    format!("inferred ({:.2})", k.confidence)
                } else {
                    "declared".into()
                }
            );
        }
        o.push('\n');
    }
    for (title, list) in [
        (
            "Transactions that would become distributed",
            &r.cut.transactions,
        ),
        (
            "Endpoints that would call several services",
            &r.cut.endpoints,
        ),
    ] {
        let _ = writeln!(o, "### {title} ({})\n", list.len());
        for g in list {
            let _ = writeln!(
                o,
                "- {}{} × {}: {}",
                g.name
                    .as_deref()
                    .map(|n| format!("`{n}` "))
                    .unwrap_or_default(),
                g.count,
                g.services.join(" + "),
                code(&g.tables)
            );
        }
        if !list.is_empty() {
            o.push('\n');
        }
    }
    let _ = writeln!(o, "## Cycles between services ({})\n", r.cycles.len());
    for c in &r.cycles {
        let _ = writeln!(o, "- {}", c.services.join(" ⇄ "));
        for b in &c.breaks {
            let _ = writeln!(
                o,
                "  - break {} → {} ({}): {}",
                b.from,
                b.to,
                b.foreign_keys.join("; "),
                b.suggestion
            );
        }
    }
    let _ = writeln!(o, "\n## Extraction order\n");
    for s in &r.order {
        let _ = writeln!(
            o,
            "{}. **{}** — depended on by {}; depends on {}; sync {}{}",
            s.step,
            s.service,
            list(&s.depended_on_by),
            list(&s.depends_on),
            if s.entities.is_empty() {
                "nothing".to_string()
            } else {
                code(
                    &s.entities
                        .iter()
                        .map(|e| e.table.clone())
                        .collect::<Vec<_>>(),
                )
            },
            if s.without_key.is_empty() {
                String::new()
            } else {
                format!(" (no key, cannot sync yet: {})", code(&s.without_key))
            }
        );
    }
    if !r.unknown_tables.is_empty() {
        let _ = writeln!(o, "\n## Tables in the evidence but not in the schema\n");
        for (t, n) in &r.unknown_tables {
            let _ = writeln!(o, "- `{t}` ({n})");
        }
    }
    let _ = writeln!(o, "\n## Evidence\n");
    for s in &r.evidence.sources {
        let _ = writeln!(o, "- {s}");
    }
    for w in &r.warnings {
        let _ = writeln!(o, "- warning: {w}");
    }
    o
}

fn code(items: &[String]) -> String {
    items
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// A DOT string literal.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The report as a Graphviz digraph: a cluster per service, foreign keys as edges (cut ones
/// red, inferred ones dashed).
pub fn dot(r: &Report, references: &[(String, String, bool)]) -> String {
    let mut o =
        String::from("digraph services {\n  rankdir=LR;\n  node [shape=box, fontsize=10];\n");
    let mut service_of = std::collections::HashMap::new();
    for (i, s) in r.services.iter().enumerate() {
        let _ = writeln!(
            o,
            "  subgraph cluster_{i} {{\n    label={};\n    style=rounded;",
            q(&s.name)
        );
        for t in &s.tables {
            service_of.insert(t.as_str(), i);
            let _ = writeln!(o, "    {};", q(t));
        }
        o.push_str("  }\n");
    }
    for (from, to, inferred) in references {
        let cut = service_of.get(from.as_str()) != service_of.get(to.as_str());
        let mut style = Vec::new();
        if cut {
            style.push("color=red");
        }
        if *inferred {
            style.push("style=dashed");
        }
        let _ = writeln!(o, "  {} -> {} [{}];", q(from), q(to), style.join(", "));
    }
    o.push_str("}\n");
    o
}
