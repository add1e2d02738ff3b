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
