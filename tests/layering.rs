//! Imports run one way, down (DESIGN.md, "Layout"): each top-level module of `src/` may use
//! only the modules listed for it here. Adding an import that runs the wrong way — the store
//! reaching into the config, control state into routing, an engine or the admin API into the
//! gateway — fails this test, naming the file and the line.

use std::collections::BTreeMap;
use std::path::Path;

/// Module → the crate modules it may use. `app`, `demo` and `main` compose everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("family", &[]),
    ("metrics", &[]),
    ("conn", &[]),
    ("tap", &["metrics"]),
    ("engine", &["tap"]),
    ("analyze", &["engine", "family", "store", "tap"]),
    (
        "apigen",
        &["config", "conn", "family", "metrics", "store", "tap"],
    ),
    ("config", &["family"]),
    ("store", &["family"]),
    ("control", &[]),
    ("routing", &["config", "control", "metrics"]),
    ("gateway", &["config", "conn", "metrics", "routing", "tap"]),
    (
        "sync",
        &[
            "config", "control", "engine", "family", "metrics", "store", "tap",
        ],
    ),
    (
        "validate",
        &[
            "config", "control", "engine", "family", "metrics", "store", "sync",
        ],
    ),
    (
        "admin",
        &[
            "analyze", "apigen", "config", "conn", "control", "metrics", "routing", "store",
            "sync", "tap", "validate",
        ],
    ),
];

/// Module names after any of `prefixes` in a line of Rust, outside comments.
fn after(line: &str, prefixes: &[&str]) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    for prefix in prefixes {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let after = &rest[i + prefix.len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != "super" {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

/// `crate::NAME` paths in a line of Rust, outside comments.
fn uses(line: &str) -> Vec<String> {
    after(line, &["crate::"])
}

/// `crate::sync::NAME` paths in a line, and `super::NAME` ones in a file directly in `sync/`.
fn sync_uses(line: &str, top_level: bool) -> Vec<String> {
    if top_level {
        after(line, &["crate::sync::", "super::"])
    } else {
        after(line, &["crate::sync::"])
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Checks every file below `src/DIR` against `table` (first path component → what it may
/// use, as `scan` finds it in a line; `skip`: components not checked). Fails naming each
/// file and line whose import runs the wrong way.
fn check(
    dir: &str,
    table: &[(&str, &[&str])],
    skip: &[&str],
    scan: impl Fn(&str, bool) -> Vec<String>,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let allowed: BTreeMap<&str, &[&str]> = table.iter().copied().collect();
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for path in all {
        let rel = path.strip_prefix(&root).unwrap();
        let module = rel
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if skip.contains(&module.as_str()) {
            continue;
        }
        let Some(may) = allowed.get(module.as_str()) else {
            unknown.push(module);
            continue;
        };
        let top_level = rel.iter().count() == 1;
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for used in scan(line, top_level) {
                if used != module && !may.contains(&used.as_str()) {
                    wrong.push(format!(
                        "src/{dir}{}{}:{}: {module} uses {used}",
                        if dir.is_empty() { "" } else { "/" },
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules with no entry in the table (add one, with the modules they may use): {unknown:?}"
    );
    assert!(
        wrong.is_empty(),
        "imports that run the wrong way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn imports_run_one_way_down() {
    check("", ALLOWED, &["app", "demo", "main", "lib"], |line, _| {
        uses(line)
    });
}

#[test]
fn sync_pieces_import_down() {
    check("sync", SYNC_ALLOWED, &["mod"], sync_uses);
}

#[test]
fn the_scan_sees_paths_and_skips_comments() {
    assert_eq!(uses("use crate::store::{Row, Write};"), ["store"]);
    assert_eq!(
        uses("let x = crate::gateway::server::drive(a, crate::conn::b);"),
        ["gateway", "conn"]
    );
    assert!(uses("// crate::gateway is not used here").is_empty());
}

/// Inside `sync/`: piece → the sync pieces it may use. The engine starts links or the
/// broker; the broker drives links; a link never reaches back into either.
const SYNC_ALLOWED: &[(&str, &[&str])] = &[
    ("mapping", &[]),
    ("touched", &[]),
    ("status", &["touched"]),
    ("error", &["mapping"]),
    ("conflict", &["error", "mapping"]),
    ("shared", &["conflict", "error", "status"]),
    (
        "link",
        &["conflict", "error", "mapping", "shared", "status"],
    ),
    (
        "broker",
        &["conflict", "error", "link", "mapping", "shared", "status"],
    ),
    (
        "engine",
        &[
            "broker", "conflict", "error", "link", "mapping", "shared", "status",
        ],
    ),
];

#[test]
fn the_sync_scan_reads_super_only_at_the_top() {
    assert_eq!(
        sync_uses("use super::broker::run; use crate::sync::link::Link;", true),
        ["link", "broker"]
    );
    assert_eq!(sync_uses("use super::*;", false), Vec::<String>::new());
}
