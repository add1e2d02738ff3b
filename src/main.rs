//! The `strangler` command line: parse, load config, call the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strangler",
    version,
    about = "Move a monolith to services without downtime or lost writes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and exit; entity mappings are also checked against the
    /// databases when they answer.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Fail when a database does not answer, instead of saying it was not checked.
        #[arg(long, conflicts_with = "offline")]
        connect: bool,
        /// Check the file only; connect to no database.
        #[arg(long)]
        offline: bool,
    },
    /// Run a self-contained demonstration on the embedded SQLite default.
    Demo,
    /// Generate the OpenAPI 3.1 document of a service's tables, or serve generated APIs.
    #[command(args_conflicts_with_subcommands = true)]
    Apigen {
        #[command(subcommand)]
        action: Option<ApigenAction>,
        /// The database to read the schema from (sqlite://, postgres://, mysql://).
        #[arg(long)]
        database: Option<String>,
        /// Tables to serve, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        tables: Vec<String>,
        /// Serve every table.
        #[arg(long)]
        all: bool,
        /// The service's name.
        #[arg(long)]
        service: Option<String>,
        /// Write the document here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Propose services from a database's schema and evidence of how it is used.
    Analyze {
        /// The database to read the schema from (sqlite://, postgres://, mysql://).
        #[arg(long)]
        database: String,
        /// Evidence in JSON lines: {"tables": [...], "writes": [...], "name": ..., "count": N}.
        #[arg(long)]
        evidence: Vec<PathBuf>,
        /// A PostgreSQL server log written with log_statement = 'all'.
        #[arg(long)]
        pg_log: Vec<PathBuf>,
        /// A MySQL/MariaDB general query log.
        #[arg(long)]
        mysql_log: Vec<PathBuf>,
        /// How many services: auto (by modularity) or a number.
        #[arg(long, default_value = "auto", value_parser = strangler::analyze::command::parse_count)]
        services: strangler::analyze::Count,
        /// Tables that must share a service, comma-separated (repeatable).
        #[arg(long)]
        keep_together: Vec<String>,
        /// Tables written together in at least this share of their transactions stay together.
        #[arg(long, default_value_t = 0.5)]
        together: f64,
        /// Seed of the clustering order (same input and seed, same report).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Do not infer undeclared foreign keys from column names.
        #[arg(long)]
        no_infer: bool,
        /// Report format: json, markdown or dot.
        #[arg(long, default_value = "json", value_parser = strangler::analyze::command::Format::parse)]
        format: strangler::analyze::command::Format,
        /// Write the report here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a config draft for the first extraction step here.
        #[arg(long)]
        emit_config: Option<PathBuf>,
    },
    /// Compare both sides of each entity; exit 0 when consistent, 1 when not, 2 on error.
    Validate {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this entity.
        #[arg(long)]
        entity: Option<String>,
        /// Write the authority's rows to the other side where they differ, then re-check.
        #[arg(long)]
        repair: bool,
        /// With --repair: print the plan and write nothing.
        #[arg(long, requires = "repair")]
        dry_run: bool,
        /// Report format: json or text (default: text on a terminal, json otherwise).
        #[arg(long, value_parser = ["json", "text"])]
        format: Option<String>,
        /// Examples kept per kind of discrepancy.
        #[arg(long, default_value_t = 10)]
        examples: usize,
        /// Seed of a sampled run (same seed, same keys).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// The tamper-evident audit log in the control database.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// The sync engine on its own: install or remove capture, or run it.
    Sync {
        #[command(subcommand)]
        action: SyncAction,
    },
}

#[derive(Subcommand)]
enum ApigenAction {
    /// Serve the config's [services.NAME] alone, without the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Check the chain: exit 0 when intact, 1 naming the first record altered, removed or
    /// reordered, 2 on error.
    Verify {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// A head printed by an earlier verify (SEQ:HASH): that record must still be there.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// List records, oldest first.
    Show {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this entity's records.
        #[arg(long)]
        entity: Option<String>,
        /// Only records of this kind (backfill, validation, discrepancy, repair).
        #[arg(long)]
        kind: Option<String>,
        /// Records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum SyncAction {
    /// Create changelog tables and capture triggers on every side (idempotent).
    Install {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Remove every trace of capture from every side.
    Uninstall {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy the authority's existing rows that the other side lacks, through the sync
    /// engine's apply path (resumable; progress on a terminal, a JSON summary otherwise).
    Backfill {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this entity (default: every one).
        #[arg(long)]
        entity: Option<String>,
        /// Rows per chunk.
        #[arg(long, default_value_t = strangler::validate::backfill::CHUNK)]
        chunk: usize,
        /// Return once the copy is written, without waiting for the sync engine to apply the
        /// changes made on the authority meanwhile.
        #[arg(long)]
        no_wait: bool,
    },
    /// Run the sync engine until SIGTERM or SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Serve GET /healthz, /metrics, /admin/sync and /admin/conflicts on this address.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
}

fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo prints its own story; logs would only interleave with it.
    init_logging(if matches!(cli.command, Command::Demo) {
        "warn"
    } else {
        "info"
    });
    match cli.command {
        Command::Check {
            config,
            connect,
            offline,
        } => {
            let cfg = strangler::config::Config::load(&config)?;
            let broker = cfg
                .sync
                .broker
                .as_ref()
                .map(|b| {
                    format!(
                        ", broker {} stream {:?} as worker {:?}",
                        b.url, b.stream, b.worker
                    )
                })
                .unwrap_or_default();
            // This binary registers no custom conflict rules: a `custom:NAME` policy needs a
            // program that embeds the library and registers it.
            strangler::sync::rules_known(&cfg.sync, &Default::default())
                .with_context(|| format!("{}: entity policies", config.display()))?;
            let databases = if cfg.sync.entities.is_empty() {
                String::new()
            } else if offline {
                "; mappings not checked against the databases (--offline)".to_string()
            } else {
                match strangler::sync::SyncEngine::check_databases(&cfg.sync)
                    .await
                    .with_context(|| format!("{}: entity mappings", config.display()))?
                {
                    Ok(warnings) => {
                        for w in warnings {
                            eprintln!("warning: {w}");
                        }
                        "; mappings checked against the databases".to_string()
                    }
                    Err(why) if connect => {
                        anyhow::bail!("{}: databases not reachable: {why}", config.display())
                    }
                    Err(why) => format!(
                        "; mappings NOT checked against the databases ({why}); --connect makes that an error"
                    ),
                }
            };
            println!(
                "{}: ok ({} upstreams, {} routes, {} sides, {} entities{broker}){databases}",
                config.display(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                cfg.sync.sides.len(),
                cfg.sync.entities.len()
            );
            Ok(())
        }
        Command::Serve { config } => serve(config).await,
        Command::Demo => strangler::demo::run().await.context("demo failed"),
        Command::Sync { action } => sync(action).await,
        Command::Validate {
            config,
            entity,
            repair,
            dry_run,
            format,
            examples,
            seed,
        } => {
            let opts = strangler::validate::command::Options {
                entity,
                repair,
                dry_run,
                examples,
                seed,
                ..Default::default()
            };
            exit(validate(config, opts, format).await)
        }
        Command::Audit { action } => exit(audit(action).await),
        Command::Apigen {
            action,
            database,
            tables,
            all,
            service,
            out,
        } => apigen(action, database, tables, all, service, out).await,
        Command::Analyze {
            database,
            evidence,
            pg_log,
            mysql_log,
            services,
            keep_together,
            together,
            seed,
            no_infer,
            format,
            out,
            emit_config,
        } => {
            let cmd = strangler::analyze::command::Command {
                database,
                evidence,
                pg_logs: pg_log,
                mysql_logs: mysql_log,
                options: strangler::analyze::Options {
                    count: services,
                    keep_together: strangler::analyze::command::groups(&keep_together),
                    together,
                    seed,
                    infer: !no_infer,
                    ..Default::default()
                },
                format,
                out,
                emit_config,
            };
            let said = strangler::analyze::command::run(&cmd).await?;
            print!("{said}");
            Ok(())
        }
    }
}

async fn apigen(
    action: Option<ApigenAction>,
    database: Option<String>,
    tables: Vec<String>,
    all: bool,
    service: Option<String>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(ApigenAction::Serve { config }) = action {
        let cfg = strangler::config::Config::load(&config)?;
        if cfg.services.is_empty() {
            anyhow::bail!("{}: no [services.NAME] to serve", config.display());
        }
        strangler::metrics::install();
        let shutdown = tokio_util::sync::CancellationToken::new();
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers before the services say they listen: a stop sent on that word drains.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let running =
            strangler::apigen::command::serve_own(&cfg.services, None, &cfg.sync, &shutdown)
                .await
                .with_context(|| config.display().to_string())?;
        for (name, addr, _) in &running {
            println!("service {name} listening on http://{addr}");
        }
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        shutdown.cancel();
        for (_, _, task) in running {
            let _ = task.await;
        }
        return Ok(());
    }
    let Some(database) = database else {
        anyhow::bail!("apigen: --database URL is required (or use `apigen serve --config F`)");
    };
    if tables.is_empty() && !all {
        anyhow::bail!("apigen: give --tables a,b,c or --all");
    }
    let Some(service) = service else {
        anyhow::bail!("apigen: --service NAME is required");
    };
    let g = strangler::apigen::command::Generate {
        database,
        tables,
        service,
        out,
    };
    print!("{}", strangler::apigen::command::generate(&g).await?);
    Ok(())
}

/// Ends the process with `code` (0 clean, 1 found something, 2 failed).
fn exit(code: i32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

async fn validate(
    config: PathBuf,
    opts: strangler::validate::command::Options,
    format: Option<String>,
) -> i32 {
    use std::io::IsTerminal;
    let mut opts = opts;
    // A progress line on a terminal: the entity, rows compared, rate and time left.
    let ticker = std::io::stderr().is_terminal().then(|| {
        let p = std::sync::Arc::new(strangler::validate::command::RunProgress::default());
        opts.progress = Some(p.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let start = std::time::Instant::now();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let (rows, total) = (p.rows.load(Relaxed), p.total.load(Relaxed));
                let rate = rows as f64 / start.elapsed().as_secs_f64().max(0.001);
                let entity = p.entity.lock().map(|e| e.clone()).unwrap_or_default();
                eprint!(
                    "\r{entity}: {rows} of {total} rows ({:.0} %), {rate:.0} rows/s, ETA {:.0}s   ",
                    100.0 * rows as f64 / total.max(1) as f64,
                    total.saturating_sub(rows) as f64 / rate.max(1.0)
                );
            }
        })
    });
    let run = async {
        let cfg = strangler::config::Config::load(&config)?;
        let control = strangler::control::ControlStore::open(&cfg.gateway.control)
            .await
            .with_context(|| format!("control database {}", cfg.gateway.control))?;
        let report = strangler::validate::command::run(&cfg.sync, Some(&control), &opts).await?;
        anyhow::Ok(report)
    };
    let outcome = run.await;
    if let Some(t) = ticker {
        t.abort();
        eprintln!();
    }
    match outcome {
        Ok(report) => {
            let json = format.as_deref() == Some("json")
                || (format.is_none() && !std::io::stdout().is_terminal());
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", report.text());
            }
            i32::from(!report.consistent)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn backfill(config: PathBuf, entity: Option<String>, chunk: usize, wait: bool) -> i32 {
    use std::io::IsTerminal;
    use strangler::validate::backfill;
    let tty = std::io::stderr().is_terminal();
    let run = async {
        let cfg = strangler::config::Config::load(&config)?;
        let control = strangler::control::ControlStore::open(&cfg.gateway.control)
            .await
            .with_context(|| format!("control database {}", cfg.gateway.control))?;
        let mut reports = Vec::new();
        for e in strangler::validate::command::entities(&cfg.sync, entity.as_deref())? {
            let r = backfill::backfill(&cfg.sync, e, chunk, |r| {
                if tty {
                    let p = &r.progress;
                    let secs = (r.duration_ms as f64 / 1000.0).max(0.001);
                    let rate = p.read as f64 / secs;
                    let left = r.total.saturating_sub(p.read) as f64 / rate.max(1.0);
                    eprint!(
                        "\r{}: {} of {} rows read ({:.0} %), {} copied, {:.0} rows/s, ETA {:.0}s   ",
                        r.entity,
                        p.read,
                        r.total,
                        100.0 * p.read as f64 / r.total.max(1) as f64,
                        p.copied,
                        rate,
                        left
                    );
                }
            })
            .await?;
            if tty {
                eprintln!();
            }
            control
                .append_audit(vec![backfill::audit_entry(&r)])
                .await?;
            if wait {
                if tty {
                    eprintln!(
                        "{}: waiting for the sync engine to apply the changes made meanwhile",
                        r.entity
                    );
                }
                backfill::drained(&cfg.sync, e, std::time::Duration::from_secs(60)).await?;
            }
            reports.push(r);
        }
        anyhow::Ok(reports)
    };
    match run.await {
        Ok(reports) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "entities": reports }))
                    .unwrap_or_default()
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn audit(action: AuditAction) -> i32 {
    use strangler::validate::audit;
    let run = async {
        let (config, anchor) = match &action {
            AuditAction::Verify { config, anchor } => (config, anchor.clone()),
            AuditAction::Show { config, .. } => (config, None),
        };
        let cfg = strangler::config::Config::load(config)?;
        let control = strangler::control::ControlStore::open(&cfg.gateway.control)
            .await
            .with_context(|| format!("control database {}", cfg.gateway.control))?;
        match action {
            AuditAction::Verify { .. } => {
                let anchor = match anchor.as_deref() {
                    None => None,
                    Some(a) => {
                        let (seq, hash) = a
                            .split_once(':')
                            .and_then(|(s, h)| Some((s.parse::<i64>().ok()?, h.to_string())))
                            .context("--anchor: expected SEQ:HASH as verify prints it")?;
                        Some((seq, hash))
                    }
                };
                let records = audit::records(&control).await?;
                let v = audit::verify(&records, anchor.as_ref().map(|(s, h)| (*s, h.as_str())));
                let head = v
                    .head
                    .as_ref()
                    .map_or("empty".to_string(), |(s, h)| format!("{s}:{h}"));
                match &v.broken {
                    None => {
                        println!("audit log intact: {} records, head {head}", v.records);
                        Ok(0)
                    }
                    Some(b) => {
                        println!("audit log BROKEN: {b} ({} records read)", v.records);
                        Ok(1)
                    }
                }
            }
            AuditAction::Show {
                entity,
                kind,
                after,
                limit,
                ..
            } => {
                let filter = audit::Filter {
                    entity,
                    kind,
                    after,
                    limit,
                };
                for r in audit::show(&control, &filter).await? {
                    println!("{}", serde_json::to_string(&r)?);
                }
                Ok(0)
            }
        }
    };
    match run.await {
        Ok(code) => code,
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("error: {e:#}");
            2
        }
    }
}

async fn sync(action: SyncAction) -> anyhow::Result<()> {
    use strangler::sync::SyncEngine;
    match action {
        SyncAction::Install { config } => {
            let cfg = strangler::config::Config::load(&config)?;
            SyncEngine::install(&cfg.sync).await?;
            println!("capture installed for {} entities", cfg.sync.entities.len());
        }
        SyncAction::Uninstall { config } => {
            let cfg = strangler::config::Config::load(&config)?;
            SyncEngine::uninstall(&cfg.sync).await?;
            println!("capture removed");
        }
        SyncAction::Backfill {
            config,
            entity,
            chunk,
            no_wait,
        } => {
            let code = backfill(config, entity, chunk.max(1), !no_wait).await;
            return exit(code);
        }
        SyncAction::Run {
            config,
            admin_listen,
        } => {
            use tokio::signal::unix::{SignalKind, signal};
            let cfg = strangler::config::Config::load(&config)?;
            let token = tokio_util::sync::CancellationToken::new();
            let engine = strangler::app::sync_engine(&cfg).await?;
            let validation = strangler::validate::continuous::Validations::new(&cfg.sync);
            // Handlers before the admin API says it listens: a stop sent on that word drains.
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let admin = match admin_listen {
                Some(addr) => {
                    let (bound, task) = strangler::app::sync_admin(
                        &cfg,
                        addr,
                        &engine,
                        validation.clone(),
                        token.clone(),
                    )
                    .await?;
                    tracing::info!(admin = %bound, "sync admin API listening");
                    Some(task)
                }
                None => None,
            };
            let stop = token.clone();
            tokio::spawn(async move {
                tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                stop.cancel();
            });
            tracing::info!(
                entities = cfg.sync.entities.len(),
                broker = cfg
                    .sync
                    .broker
                    .as_ref()
                    .map(|b| b.url.as_str())
                    .unwrap_or("none"),
                "strangler sync engine running"
            );
            let side: Vec<_> = strangler::app::side_engines(&cfg, &engine, &validation)
                .await?
                .into_iter()
                .map(|e| tokio::spawn(e.run(token.clone())))
                .collect();
            engine.run(token).await;
            for task in side {
                let _ = task.await;
            }
            if let Some(task) = admin {
                let _ = task.await;
            }
        }
    }
    Ok(())
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let cfg = strangler::config::Config::load(&path)?;
    // Handlers first: the gateway says it is listening once started, and a SIGHUP sent on
    // that word must reload, not end the process by the signal's default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = strangler::app::start(cfg).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match running.reload().await {
                Ok(v) => tracing::info!(version = v, "SIGHUP: config reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload rejected"),
            },
        }
    }
    tracing::info!("draining");
    let drained = running.shutdown().await;
    if !drained {
        tracing::warn!("drain grace period ended with requests still in flight");
    }
    Ok(())
}
