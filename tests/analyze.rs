//! The boundary analyzer on synthetic monoliths with planted services: it recovers the
//! planted split, deterministically, with and without declared foreign keys.

use strangler::analyze::synthetic::{Plan, adjusted_rand_index, generate};
use strangler::analyze::{Options, analyze};

fn recovered(plan: Plan) -> f64 {
    recovered_with(plan, &Options::default())
}

fn recovered_with(plan: Plan, options: &Options) -> f64 {
    let planted = generate(&plan);
    let names: Vec<String> = planted
        .input
        .schema
        .tables
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let report = analyze(planted.input, options).unwrap();
    let mut found = vec![usize::MAX; names.len()];
    for (s, svc) in report.services.iter().enumerate() {
        for t in &svc.tables {
            found[names.iter().position(|n| n == t).unwrap()] = s;
        }
    }
    adjusted_rand_index(&planted.groups, &found)
}

#[test]
fn planted_services_are_recovered_on_100_table_monoliths() {
    for seed in 1..=5 {
        for undeclared in [0.0, 0.3] {
            let plan = Plan {
                tables: 100,
                group: 10,
                noise: 0.05,
                undeclared,
                transactions: 5_000,
                seed,
            };
            let ari = recovered(plan);
            println!("seed {seed} undeclared {undeclared}: ARI {ari:.3}");
            assert!(
                ari >= 0.9,
                "seed {seed}, undeclared {undeclared}: ARI {ari}"
            );
        }
    }
}

/// Without transactions the evidence is the foreign keys alone (a tree per group plus 30 %
/// extra links and 5 % across groups).
#[test]
fn foreign_keys_alone_recover_the_split_and_inference_finds_the_undeclared_ones() {
    for seed in 1..=5 {
        for undeclared in [0.0, 0.3] {
            let plan = Plan {
                tables: 100,
                group: 10,
                noise: 0.05,
                undeclared,
                transactions: 0,
                seed,
            };
            let ari = recovered(plan);
            let blind = recovered_with(
                plan,
                &Options {
                    infer: false,
                    ..Options::default()
                },
            );
            println!(
                "schema only, seed {seed} undeclared {undeclared}: ARI {ari:.3} (without inference {blind:.3})"
            );
            // A tree of foreign keys is a weak community: the schema alone gets close, and
            // without inference the undeclared keys' groups fall apart.
            assert!(
                ari >= 0.8,
                "seed {seed}, undeclared {undeclared}: ARI {ari}"
            );
            if undeclared > 0.0 {
                assert!(
                    ari > blind + 0.15,
                    "inference should matter: {ari} vs {blind}"
                );
            }
        }
    }
}

#[test]
fn noisy_transactions_across_groups_do_not_merge_services() {
    for seed in 1..=3 {
        let plan = Plan {
            tables: 100,
            group: 10,
            noise: 0.15,
            undeclared: 0.3,
            transactions: 20_000,
            seed,
        };
        let ari = recovered(plan);
        println!("noise 0.15 seed {seed}: ARI {ari:.3}");
        assert!(ari >= 0.9, "seed {seed}: ARI {ari}");
    }
}

use strangler::analyze::schema::{Schema, Table};
use strangler::analyze::{Count, Input, Kind, LogFormat, Observation, Report};
use strangler::family::TypeFamily;

fn table(name: &str, columns: &[&str], key: bool) -> Table {
    Table {
        name: name.into(),
        columns: columns
            .iter()
            .map(|c| (c.to_string(), TypeFamily::Integer))
            .collect(),
        key: if key { vec!["id".into()] } else { vec![] },
        unique: if key { vec![vec!["id".into()]] } else { vec![] },
    }
}

fn input(schema: Schema, observations: Vec<Observation>) -> Input {
    Input {
        schema,
        observations,
        ..Input::default()
    }
}

fn tx(tables: &[&str], count: u64) -> Observation {
    Observation::new(
        Kind::Transaction,
        tables.iter().map(|t| t.to_string()),
        tables.iter().map(|t| t.to_string()),
        None,
        count,
    )
}

fn service_of<'a>(r: &'a Report, t: &str) -> &'a str {
    &r.services
        .iter()
        .find(|s| s.tables.iter().any(|x| x == t))
        .unwrap()
        .name
}

/// Two groups whose foreign keys point both ways: a cycle between the proposed services.
fn cyclic() -> Schema {
    let mut s = Schema::new(vec![
        table("customers", &["id"], true),
        table("addresses", &["id", "customer_id"], true),
        table("contacts", &["id", "customer_id"], true),
        table("orders", &["id", "customer_id", "order_id"], true),
        table("order_lines", &["id", "order_id"], true),
        table("order_notes", &["id", "order_id"], true),
        table("last_orders", &["id", "order_id"], true),
    ]);
    for (from, col, to) in [
        ("addresses", "customer_id", "customers"),
        ("contacts", "customer_id", "customers"),
        ("orders", "customer_id", "customers"),
        ("order_lines", "order_id", "orders"),
        ("order_notes", "order_id", "orders"),
        ("last_orders", "order_id", "orders"),
    ] {
        assert!(s.declare(from, &[col], to, &["id"]));
    }
    s
}

#[test]
fn a_planted_cycle_is_found_and_a_break_proposed() {
    // last_orders (with customers by its writes) points at orders; orders points at customers.
    let evidence = vec![
        tx(&["customers", "addresses"], 50),
        tx(&["customers", "contacts"], 50),
        tx(&["customers", "last_orders"], 80),
        tx(&["orders", "order_lines"], 80),
        tx(&["orders", "order_notes"], 50),
    ];
    let r = analyze(
        input(cyclic(), evidence),
        &Options {
            together: 2.0,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(service_of(&r, "last_orders"), service_of(&r, "customers"));
    assert_ne!(service_of(&r, "orders"), service_of(&r, "customers"));
    assert_eq!(r.cycles.len(), 1, "{:#?}", r.cycles);
    let c = &r.cycles[0];
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.breaks.len(), 1);
    let b = &c.breaks[0];
    assert!(
        b.foreign_keys == ["last_orders.order_id -> orders.id"]
            || b.foreign_keys == ["orders.customer_id -> customers.id"],
        "{b:?}"
    );
    assert!(!b.suggestion.is_empty());
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["cycles"][0]["break"][0]["suggestion"].is_string());
}

#[test]
fn exact_counts_keep_together_groups_and_determinism() {
    let plan = Plan {
        tables: 60,
        group: 10,
        noise: 0.05,
        undeclared: 0.2,
        transactions: 2_000,
        seed: 9,
    };
    for n in [1, 2, 6, 9, 60] {
        let r = analyze(
            generate(&plan).input,
            &Options {
                count: Count::Exactly(n),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(r.services.len(), n);
    }
    let keep = Options {
        keep_together: vec![vec!["s000_t00".into(), "s005_t09".into()]],
        ..Options::default()
    };
    let a = analyze(generate(&plan).input, &keep).unwrap();
    assert_eq!(service_of(&a, "s000_t00"), service_of(&a, "s005_t09"));
    let b = analyze(generate(&plan).input, &keep).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap(),
        "two runs, identical JSON"
    );
}

#[test]
fn degenerate_schemas_get_sound_answers() {
    // Empty.
    let r = analyze(input(Schema::new(vec![]), vec![]), &Options::default()).unwrap();
    assert!(r.services.is_empty() && r.order.is_empty() && r.cycles.is_empty());
    // One table, referencing itself, without evidence.
    let mut s = Schema::new(vec![table("nodes", &["id", "parent_id"], true)]);
    assert!(s.declare("nodes", &["parent_id"], "nodes", &["id"]));
    let r = analyze(input(s, vec![tx(&["nodes"], 3)]), &Options::default()).unwrap();
    assert_eq!(r.services.len(), 1);
    assert!(r.cut.foreign_keys.is_empty() && r.cycles.is_empty());
    // Tables without keys: proposed, listed as not syncable, never inferred as targets.
    let s = Schema::new(vec![
        table("log_a", &["x", "log_b_id"], false),
        table("log_b", &["id"], false),
    ]);
    let r = analyze(
        input(s, vec![tx(&["log_a", "log_b"], 5)]),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(r.inferred_fks, 0);
    let keyless: Vec<&String> = r.order.iter().flat_map(|s| &s.without_key).collect();
    assert_eq!(keyless.len(), 2);
    assert!(r.order.iter().all(|s| s.entities.is_empty()));
    // Everything references everything.
    let names: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let mut s = Schema::new(names.iter().map(|n| table(n, &["id"], true)).collect());
    for a in &names {
        for b in &names {
            if a != b {
                s.declare(a, &["id"], b, &["id"]);
            }
        }
    }
    for n in [Count::Auto, Count::Exactly(3)] {
        let r = analyze(
            input(s.clone(), vec![]),
            &Options {
                count: n,
                ..Options::default()
            },
        )
        .unwrap();
        assert!(!r.services.is_empty());
        for c in &r.cycles {
            assert!(!c.breaks.is_empty());
        }
        if n == Count::Exactly(3) {
            assert_eq!(r.services.len(), 3);
            assert_eq!(r.cycles.len(), 1, "all three depend on each other");
        }
    }
}

#[test]
fn unreadable_and_malformed_evidence_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut i = Input::default();
    let missing = dir.path().join("nope.log");
    let e = i
        .read(&missing, LogFormat::Postgres)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.log") && e.contains("No such file"), "{e}");
    let bad = dir.path().join("ev.jsonl");
    std::fs::write(
        &bad,
        "{\"tables\": [\"a\"]}\n{\"tables\": [\"a\"], \"count\": -1}\n",
    )
    .unwrap();
    let e = i.read(&bad, LogFormat::Evidence).unwrap_err().to_string();
    assert!(e.contains("ev.jsonl: line 2:"), "{e}");
    let binary = dir.path().join("bin.log");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00, b'\n', 0x80]).unwrap();
    let e = i.read(&binary, LogFormat::Mysql).unwrap_err().to_string();
    assert!(
        e.contains("bin.log: line 1: not a MySQL general log line"),
        "{e}"
    );
    // A log with some stray lines is read, and the stray lines become a warning.
    let mixed = dir.path().join("pg.log");
    std::fs::write(
        &mixed,
        "2026-12-04 10:00:00.001 UTC [1] u@d LOG:  statement: INSERT INTO a VALUES (1)\nstray\n",
    )
    .unwrap();
    i.read(&mixed, LogFormat::Postgres).unwrap();
    assert_eq!(i.observations.len(), 1);
    assert!(
        i.warnings[0].contains("1 lines were not log lines"),
        "{:?}",
        i.warnings
    );
}

/// Modularity's resolution limit merges small groups in large graphs; the refinement step
/// splits them again.
#[test]
fn a_1000_table_monolith_keeps_its_100_small_services_apart() {
    let plan = Plan {
        tables: 1_000,
        group: 10,
        noise: 0.05,
        undeclared: 0.3,
        transactions: 20_000,
        seed: 5,
    };
    let ari = recovered(plan);
    println!("1000 tables: ARI {ari:.3}");
    assert!(ari >= 0.9, "ARI {ari}");
}
