//! Every kind of bad config gives its own precise error naming file, place and field.

mod common;

use std::path::Path;

use strangler::config::Config;

const UPSTREAMS: &str = "[upstreams.monolith]\nurl = \"http://127.0.0.1:3000\"\n[upstreams.users]\nurl = \"http://127.0.0.1:3001\"\n";

fn error_of(text: &str) -> String {
    match Config::parse(Path::new("config/demo.toml"), text) {
        Ok(_) => panic!("config should have been refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn route(body: &str) -> String {
    format!("{UPSTREAMS}[[routes]]\nname = \"users\"\n{body}\n")
}

#[test]
fn split_not_summing_to_100() {
    assert_eq!(
        error_of(&route(
            "split = { monolith = 100, users = 10 }\nfallback = \"monolith\""
        )),
        "config/demo.toml: route \"users\": split sums to 110, must be 100"
    );
    assert_eq!(
        error_of(&route(
            "split = { monolith = 50, users = 49.99 }\nfallback = \"monolith\""
        )),
        "config/demo.toml: route \"users\": split sums to 99.99, must be 100"
    );
}

#[test]
fn unknown_upstream() {
    assert_eq!(
        error_of(&route(
            "split = { monolith = 90, nope = 10 }\nfallback = \"monolith\""
        )),
        "config/demo.toml: route \"users\": split: unknown upstream \"nope\""
    );
    assert_eq!(
        error_of(&route("split = { monolith = 100 }\nfallback = \"ghost\"")),
        "config/demo.toml: route \"users\": fallback: unknown upstream \"ghost\""
    );
}

#[test]
fn bad_durations_name_their_field() {
    let e = error_of(
        "[upstreams.monolith]\nurl = \"http://127.0.0.1:3000\"\nhealth = { path = \"/h\", interval = \"1 parsec\" }\n",
    );
    assert!(e.starts_with("config/demo.toml: upstream \"monolith\": health.interval: invalid duration \"1 parsec\""), "{e}");
    let e = error_of(&route(
        "split = { monolith = 90, users = 10 }\nfallback = \"monolith\"\nrollout = { target = \"users\", steps = [50, 100], hold = \"soon\" }",
    ));
    assert!(
        e.starts_with("config/demo.toml: route \"users\": rollout.hold: invalid duration \"soon\""),
        "{e}"
    );
    let e = error_of("[gateway]\ndrain_grace = \"0s\"\n");
    assert_eq!(
        e,
        "config/demo.toml: gateway: drain_grace: must be greater than zero"
    );
}

#[test]
fn duplicate_route_names() {
    let text = format!(
        "{UPSTREAMS}[[routes]]\nname = \"users\"\nsplit = {{ monolith = 100 }}\n[[routes]]\nname = \"users\"\nsplit = {{ users = 100 }}\n"
    );
    assert_eq!(
        error_of(&text),
        "config/demo.toml: route \"users\": name: duplicate route name"
    );
}

#[test]
fn unknown_keys_and_bad_toml_point_at_the_line() {
    let e = error_of(&route("split = { monolith = 100 }\nsplitt = 3"));
    assert!(
        e.starts_with("config/demo.toml: line 8, column 1: unknown field `splitt`"),
        "{e}"
    );
    let e = error_of("[gateway\n");
    assert!(e.starts_with("config/demo.toml: line 1, column "), "{e}");
}

#[test]
fn other_invalid_values() {
    for (body, expected) in [
        (
            "split = { monolith = 90, users = 10 }",
            "fallback: required when the split names several upstreams",
        ),
        (
            "split = { monolith = 99.995, users = 0.005 }\nfallback = \"monolith\"",
            "split.monolith: 99.995 is finer than the 0.01 % granularity",
        ),
        (
            "split = { monolith = 100 }\npath_prefix = \"api\"",
            "path_prefix: \"api\" must start with /",
        ),
        (
            "split = { monolith = 100 }\nmethods = [\"G T\"]",
            "methods: \"G T\" is not an HTTP method",
        ),
        (
            "split = { monolith = 100 }\nsticky = { cookie = \"a\", header = \"b\" }",
            "sticky: set exactly one of cookie, header, jwt_claim, client_ip",
        ),
        (
            "split = { monolith = 100 }\npins = [{ value = \"x\", upstream = \"users\" }]",
            "pins[0]: set exactly one of header or cookie",
        ),
        (
            "split = { monolith = 90, users = 10 }\nfallback = \"monolith\"\nrollout = { target = \"users\", steps = [50, 25, 100] }",
            "rollout.steps: must be positive and strictly ascending",
        ),
        (
            "split = { monolith = 90, users = 10 }\nfallback = \"monolith\"\nrollout = { target = \"users\", steps = [50] }",
            "rollout.steps: must end at 100",
        ),
        (
            "split = { monolith = 90, users = 10 }\nfallback = \"monolith\"\nrollout = { target = \"monolith\", steps = [100] }",
            "rollout.target: must differ from the route's fallback",
        ),
    ] {
        assert_eq!(
            error_of(&route(body)),
            format!("config/demo.toml: route \"users\": {expected}")
        );
    }
    assert_eq!(
        error_of("[upstreams.x]\nurl = \"https://a.example\"\n"),
        "config/demo.toml: upstream \"x\": url: \"https://a.example\" must start with http://"
    );
    assert_eq!(
        error_of("[gateway]\nlisten = \"localhost\"\n"),
        "config/demo.toml: gateway: listen: \"localhost\" is not an IP:port address"
    );
    assert_eq!(
        error_of("[gateway.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nhttp2_header_table = 100000\n"),
        "config/demo.toml: gateway: tls.http2_header_table: must be at most 65536 bytes"
    );
}

#[test]
fn admin_off_loopback_requires_a_token() {
    assert_eq!(
        error_of("[gateway]\nadmin_listen = \"0.0.0.0:9090\"\n"),
        "config/demo.toml: gateway: admin_listen: 0.0.0.0:9090 is not a loopback address, so admin_token must be set"
    );
    assert!(
        Config::parse(
            Path::new("x.toml"),
            &format!(
                "[gateway]\nadmin_listen = \"0.0.0.0:9090\"\nadmin_token = \"s3cret\"\n{}",
                route("split = { monolith = 100 }")
            )
        )
        .is_ok()
    );
}

#[test]
fn check_command_reports_the_error_and_fails() {
    let (_dir, path) = common::config_file(&route(
        "split = { monolith = 100, users = 10 }\nfallback = \"monolith\"",
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: route \"users\": split sums to 110, must be 100",
            path.display()
        )),
        "{stderr}"
    );
    let ok = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config")).unwrap();
    for entry in ok {
        let p = entry.unwrap().path();
        // The file alone: the example databases need not exist here.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
            .args(["check", "--offline", "--config"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shipped example {} must be valid: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const SIDES: &str = "[sides.monolith]\ndatabase = \"sqlite://m.db\"\n[sides.users]\ndatabase = \"postgres://postgres@127.0.0.1/users\"\n";

fn entity(body: &str) -> String {
    format!(
        "{SIDES}[[entities]]\nname = \"users\"\nmonolith = {{ table = \"users\", key = [\"id\"] }}\nusers = {{ table = \"accounts\", key = [\"user_id\"] }}\n{body}\n"
    )
}

#[test]
fn sync_sections_name_the_entity_side_and_field() {
    let cols = "columns = { id = \"user_id\", email = \"email\" }";
    let cases = [
        (
            entity(&format!("{cols}\nconflict = \"newest\"")),
            "entity \"users\": conflict: unknown policy \"newest\"",
        ),
        (
            entity(&format!("{cols}\nconflict = \"counter\"")),
            "entity \"users\": conflict: counter is a column policy; set it in column_conflict",
        ),
        (
            entity("columns = { id = \"user_id\", email = \"user_id\" }"),
            "entity \"users\": columns: \"users\" column \"user_id\" is mapped twice",
        ),
        (
            entity("columns = { email = \"email\" }"),
            "entity \"users\": monolith: key column \"id\" must be in columns",
        ),
        (
            entity(&format!(
                "{cols}\ntransforms = [{{ column = \"nope\", op = \"lower\" }}]"
            )),
            "entity \"users\": transforms[0]: column \"nope\" is not a left column in columns",
        ),
        (
            entity(&format!(
                "{cols}\ntransforms = [{{ column = \"email\", op = \"shout\" }}]"
            )),
            "entity \"users\": transforms[0]: op: unknown \"shout\"",
        ),
        (
            entity(&format!(
                "{cols}\ncolumn_conflict = {{ email = \"field_merge\" }}"
            )),
            "entity \"users\": column_conflict.email: field_merge is a row policy",
        ),
        (
            entity(&format!("{cols}\nlag_tolerance = \"soon\"")),
            "entity \"users\": lag_tolerance: invalid duration",
        ),
        (
            entity(&format!(
                "{cols}\nbilling = {{ table = \"b\", key = [\"id\"] }}"
            )),
            "entity \"users\": billing: not a side",
        ),
        (
            format!("{SIDES}[sync]\nbatch = 0\n"),
            "sync: batch: must be at least 1",
        ),
        (
            format!(
                "{}[[entities]]\nname = \"again\"\nmonolith = {{ table = \"users\", key = [\"id\"] }}\nusers = {{ table = \"other\", key = [\"id\"] }}\ncolumns = {{ id = \"id\" }}\n",
                entity(cols)
            ),
            "entity \"again\": monolith: table \"users\" is already synced by entity \"users\"",
        ),
        (
            format!("{}[sync.broker]\nurl = \"http://x\"\n", entity(cols)),
            "sync.broker: url: \"http://x\" must start with nats://",
        ),
        (
            format!(
                "{}[sync.broker]\nurl = \"nats://x\"\nsubject = \"a.b\"\n",
                entity(cols)
            ),
            "sync.broker: subject: \"a.b\" may hold only letters, digits",
        ),
        (
            format!(
                "{}[sync.broker]\nurl = \"nats://x\"\nlease = \"0s\"\n",
                entity(cols)
            ),
            "sync.broker: lease: must be greater than zero",
        ),
        (
            format!(
                "{}[sync.broker]\nurl = \"nats://x\"\nqueue = 1\n",
                entity(cols)
            ),
            "unknown field `queue`, expected one of `url`",
        ),
        (
            format!(
                "{}group = \"g.1\"\n[sync.broker]\nurl = \"nats://x\"\n",
                entity(cols)
            ),
            "entity \"users\": group: \"g.1\" may hold only letters",
        ),
        (
            format!(
                "{}group = \"g\"\n[sides.billing]\ndatabase = \"sqlite://b.db\"\n[[entities]]\nname = \"bills\"\nmonolith = {{ table = \"bills\", key = [\"id\"] }}\nbilling = {{ table = \"bills\", key = [\"id\"] }}\ncolumns = {{ id = \"id\" }}\ngroup = \"g\"\n[sync.broker]\nurl = \"nats://x\"\n",
                entity(cols)
            ),
            "entity \"bills\": group: \"g\" already joins sides \"monolith\" and \"users\"",
        ),
        (
            "[sides.monolith]\ndatabase = \"oracle://x\"\n".to_string(),
            "side \"monolith\": database: \"oracle://x\" must start with sqlite://",
        ),
        (
            format!(
                "{}{UPSTREAMS}[[routes]]\nname = \"r\"\nsplit = {{ monolith = 100 }}\nfallback = \"monolith\"\nentity = \"user\"\n",
                entity(cols)
            ),
            "route \"r\": entity: \"user\" is not an [[entities]] name",
        ),
    ];
    for (text, want) in cases {
        let err = error_of(&text);
        assert!(
            err.starts_with("config/demo.toml: ") && err.contains(want),
            "{err:?} should contain {want:?}"
        );
    }
    // The example is accepted as written.
    let ok = entity(
        "columns = { id = \"user_id\", email = \"email\", name = \"full_name\" }\nauthority = \"monolith\"\nconflict = \"last_write_wins\"\nlag_tolerance = \"2s\"",
    );
    Config::parse(Path::new("config/demo.toml"), &ok).expect("the issue's entity shape");
}

#[test]
fn a_file_with_nothing_to_route_or_sync_is_refused() {
    for text in ["", "[gateway]\nlisten = \"127.0.0.1:8080\"\n", UPSTREAMS] {
        let err = error_of(text);
        assert!(
            err.contains("has no [[routes]], no [[entities]] and no [services]"),
            "{err}"
        );
    }
}

#[test]
fn more_routes_than_the_limit_are_refused_by_count() {
    let mut text = UPSTREAMS.to_string();
    for i in 0..=strangler::config::MAX_ROUTES {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/p{i}\"\nsplit = {{ monolith = 100 }}\n"
        ));
    }
    let err = error_of(&text);
    assert!(
        err.contains("the file has 10001 [[routes]]; at most 10000 are supported"),
        "{err}"
    );
}

/// Runs `strangler check` on `text` (with `{dir}` set); returns success, stdout and stderr.
fn check_cli(dir: &Path, text: &str, extra: &[&str]) -> (bool, String, String) {
    let path = dir.join("strangler.toml");
    std::fs::write(&path, text.replace("{dir}", &dir.display().to_string())).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strangler"))
        .args(["check", "--config"])
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_compares_mappings_with_the_databases_when_they_answer() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[sides.monolith]\ndatabase = \"sqlite://{dir}/m.db\"\n[sides.users]\ndatabase = \"sqlite://{dir}/u.db\"\n[[entities]]\nname = \"users\"\nmonolith = { table = \"users\", key = [\"id\"] }\nusers = { table = \"accounts\", key = [\"user_id\"] }\ncolumns = { id = \"user_id\", email = \"email\" }\n";
    // No database files: said plainly, and an error with --connect. Nothing is created.
    let (ok, out, _) = check_cli(dir.path(), text, &[]);
    assert!(ok && out.contains("mappings NOT checked"), "{out}");
    assert!(!dir.path().join("m.db").exists());
    let (ok, _, err) = check_cli(dir.path(), text, &["--connect"]);
    assert!(!ok && err.contains("databases not reachable"), "{err}");
    // The databases answer, but the service's table does not exist.
    let m = rusqlite::Connection::open(dir.path().join("m.db")).unwrap();
    m.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT);")
        .unwrap();
    let u = rusqlite::Connection::open(dir.path().join("u.db")).unwrap();
    u.execute_batch("CREATE TABLE other (x INTEGER);").unwrap();
    let (ok, _, err) = check_cli(dir.path(), text, &[]);
    assert!(!ok, "a missing table must fail check");
    assert!(
        err.contains("entity \"users\"")
            && err.contains("accounts")
            && err.contains("does not exist"),
        "{err}"
    );
    // Everything fits.
    u.execute_batch("CREATE TABLE accounts (user_id INTEGER PRIMARY KEY, email TEXT);")
        .unwrap();
    let (ok, out, err) = check_cli(dir.path(), text, &["--connect"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("mappings checked against the databases"),
        "{out}"
    );
}

#[test]
fn service_sections_are_checked_and_errors_name_the_service() {
    let base = "[services.orders]\ndatabase = \"sqlite://o.db\"\nall = true\nlisten = \"127.0.0.1:8081\"\n";
    let cfg =
        Config::parse(Path::new("config/demo.toml"), base).expect("a service alone is enough");
    assert_eq!(cfg.services[0].name, "orders");
    assert_eq!(cfg.services[0].max_limit, 1000);
    let mounted = Config::parse(
        Path::new("config/demo.toml"),
        &format!("{base}mount = \"/api/orders\"\n"),
    )
    .expect("a mounted service");
    let route = mounted.route("apigen.orders").expect("its route");
    assert_eq!(route.path_prefix, "/api/orders");
    assert_eq!(
        mounted
            .upstream("apigen.orders")
            .expect("its upstream")
            .authority
            .as_str(),
        "127.0.0.1:8081"
    );
    for (text, want) in [
        (
            base.replace("sqlite://o.db", "oracle://x"),
            "service \"orders\": database: \"oracle://x\"",
        ),
        (
            base.replace("all = true", "all = true\ntables = [\"a\"]"),
            "tables or all = true, not both",
        ),
        (base.replace("all = true\n", ""), "tables: missing"),
        (base.replace("all = true", "tables = []"), "tables: empty"),
        (
            base.replace("listen = \"127.0.0.1:8081\"\n", ""),
            "listen: missing",
        ),
        (
            base.replace("127.0.0.1:8081", "nowhere"),
            "listen: \"nowhere\"",
        ),
        (format!("{base}max_limit = 0\n"), "max_limit: 0"),
        (format!("{base}pool = 0\n"), "pool: 0"),
        (format!("{base}colour = 1\n"), "colour"),
        (format!("{base}mount = \"api/\"\n"), "mount: \"api/\""),
        (
            format!("{}mount = \"/api\"\n", base.replace("8081", "0")),
            "needs a fixed port",
        ),
    ] {
        let err = error_of(&text);
        assert!(err.contains(want), "{err:?} should contain {want:?}");
    }
}
