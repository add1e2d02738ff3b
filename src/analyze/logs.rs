//! Transactions recovered from database server logs: a PostgreSQL log written with
//! `log_statement = 'all'` and a MySQL/MariaDB general log. Statements are grouped into
//! transactions per session (`BEGIN`/`START TRANSACTION` … `COMMIT`, autocommit otherwise);
//! rolled-back and unfinished transactions are left out.
//!
//! PostgreSQL lines are grouped by the process id in the line prefix (`[%p]`, Debian's default
//! prefix has it); without one, by the first number after the timestamp (`%x`), where a
//! transaction's first write, logged before its id was assigned, shows `0` and counts alone.

use std::collections::HashMap;

use super::AnalyzeError;
use super::evidence::{Kind, Observation};
use super::sql;

/// What a log held: its transactions and the line numbers it could not read.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Committed transactions that touched at least one table.
    pub transactions: Vec<Observation>,
    /// Lines that were not log lines (first few only), for the report's warnings.
    pub skipped: Vec<usize>,
    /// How many lines were skipped in all.
    pub skipped_total: usize,
}

impl Parsed {
    fn skip(&mut self, line: usize) {
        self.skipped_total += 1;
        if self.skipped.len() < 5 {
            self.skipped.push(line);
        }
    }
}

/// An open transaction.
#[derive(Default)]
struct Open {
    explicit: bool,
    read: Vec<String>,
    written: Vec<String>,
}

/// Per-session transaction state.
#[derive(Default)]
struct Sessions {
    open: HashMap<String, Open>,
    manual: HashMap<String, bool>,
    done: Vec<Observation>,
}

impl Sessions {
    fn statement(&mut self, session: &str, text: &str) {
        for one in sql::split(text) {
            self.one(session, one);
        }
    }

    fn one(&mut self, session: &str, text: &str) {
        let words: Vec<String> = text
            .split(|c: char| c.is_whitespace() || c == ';' || c == '=')
            .filter(|w| !w.is_empty())
            .take(3)
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["BEGIN", ..] | ["START", "TRANSACTION", ..] => {
                self.commit(session);
                self.open.entry(session.to_string()).or_default().explicit = true;
            }
            ["COMMIT", "PREPARED", ..] | ["ROLLBACK", "PREPARED", ..] => {}
            ["COMMIT", ..] | ["END", ..] => self.commit(session),
            ["ROLLBACK", "TO", ..] => {}
            ["ROLLBACK", ..] | ["ABORT", ..] => {
                self.open.remove(session);
            }
            ["SET", "AUTOCOMMIT", v, ..] => {
                let manual = *v == "0" || *v == "OFF";
                if !manual {
                    self.commit(session);
                }
                self.manual.insert(session.to_string(), manual);
            }
            _ => {
                let Some((read, written)) = sql::tables(text) else {
                    return;
                };
                let tx = self.open.entry(session.to_string()).or_default();
                tx.read.extend(read);
                tx.written.extend(written);
                let manual = self.manual.get(session).copied().unwrap_or(false);
                if !tx.explicit && !manual {
                    self.commit(session);
                }
            }
        }
    }

    fn commit(&mut self, session: &str) {
        if let Some(tx) = self.open.remove(session)
            && (!tx.read.is_empty() || !tx.written.is_empty())
        {
            self.done.push(Observation::new(
                Kind::Transaction,
                tx.read,
                tx.written,
                None,
                1,
            ));
        }
    }

    /// The session ended: what it had open was rolled back.
    fn quit(&mut self, session: &str) {
        self.open.remove(session);
        self.manual.remove(session);
    }
}

/// Lines with read errors turned into the analyzer's, naming the file.
pub(super) fn lines_of<'a>(
    lines: impl Iterator<Item = std::io::Result<String>> + 'a,
    source: &'a str,
) -> impl Iterator<Item = Result<String, AnalyzeError>> + 'a {
    lines.map(move |l| {
        l.map_err(|e| AnalyzeError::Read {
            path: source.to_string(),
            source: e,
        })
    })
}

/// Fails when a non-empty log held no line of the expected kind.
fn none_read(parsed: &Parsed, source: &str, lines: usize, what: &str) -> Result<(), AnalyzeError> {
    if parsed.skipped_total == lines && lines > 0 {
        return Err(AnalyzeError::Evidence {
            file: source.to_string(),
            line: parsed.skipped.first().copied().unwrap_or(1),
            why: format!("not a {what} line (and no other line is either)"),
        });
    }
    Ok(())
}

/// Severity markers of PostgreSQL log lines.
const SEVERITIES: [&str; 14] = [
    "LOG:",
    "ERROR:",
    "DETAIL:",
    "HINT:",
    "STATEMENT:",
    "WARNING:",
    "FATAL:",
    "PANIC:",
    "NOTICE:",
    "CONTEXT:",
    "INFO:",
    "QUERY:",
    "LOCATION:",
    "DEBUG",
];

/// Transactions in a PostgreSQL server log written with `log_statement = 'all'`.
pub fn parse_pg(text: &str, source: &str) -> Result<Parsed, AnalyzeError> {
    read_pg(text.lines().map(|l| Ok(l.to_owned())), source)
}

/// Like [`parse_pg`], line by line from a reader of any size.
pub fn read_pg(
    lines_in: impl Iterator<Item = std::io::Result<String>>,
    source: &str,
) -> Result<Parsed, AnalyzeError> {
    let mut parsed = Parsed::default();
    let mut sessions = Sessions::default();
    // The statement being read: (session, text); continuation lines start with a tab.
    let mut current: Option<(String, String)> = None;
    let mut lines = 0;
    for (n, line) in lines_of(lines_in, source).enumerate() {
        let line = line?;
        let line = line.as_str();
        if line.trim().is_empty() {
            continue;
        }
        lines += 1;
        if let Some(rest) = line.strip_prefix('\t') {
            match &mut current {
                Some((_, stmt)) => {
                    stmt.push('\n');
                    stmt.push_str(rest);
                }
                None => parsed.skip(n + 1),
            }
            continue;
        }
        if let Some((session, stmt)) = current.take() {
            sessions.statement(&session, &stmt);
        }
        let Some((at, sev)) = SEVERITIES
            .iter()
            .filter_map(|s| line.find(&format!(" {s}")).map(|i| (i, *s)))
            .min()
        else {
            parsed.skip(n + 1);
            continue;
        };
        let prefix = &line[..at];
        let message = line[at + 1 + sev.len()..].trim_start();
        if sev != "LOG:" {
            continue;
        }
        let statement = if let Some(i) = message.find("statement: ") {
            &message[i + "statement: ".len()..]
        } else if let Some(rest) = message.strip_prefix("execute ") {
            match rest.split_once(": ") {
                Some((_, s)) => s,
                None => continue,
            }
        } else {
            if message.starts_with("disconnection:") {
                sessions.quit(&pg_session(prefix, n));
            }
            continue;
        };
        current = Some((pg_session(prefix, n), statement.to_string()));
    }
    if let Some((session, stmt)) = current.take() {
        sessions.statement(&session, &stmt);
    }
    none_read(&parsed, source, lines, "PostgreSQL log")?;
    parsed.transactions = sessions.done;
    Ok(parsed)
}

/// The session a PostgreSQL line prefix names: `[pid]`, else the first number after the
/// timestamp (`%x`; `0` means no transaction id yet: the statement on line `n` counts alone).
fn pg_session(prefix: &str, n: usize) -> String {
    if let Some(open) = prefix.find('[')
        && let Some(len) = prefix[open + 1..].find(']')
    {
        let inside = &prefix[open + 1..open + 1 + len];
        if !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit()) {
            return format!("p{inside}");
        }
    }
    // Skip a leading `YYYY-MM-DD HH:MM:SS[.fff] ZONE` timestamp.
    let mut words = prefix.split_whitespace().peekable();
    if words
        .peek()
        .is_some_and(|w| w.len() == 10 && w.as_bytes()[4] == b'-')
    {
        words.next();
        words.next();
        if words.peek().is_some_and(|w| {
            w.chars()
                .all(|c| c.is_ascii_alphabetic() || c == '+' || c == '-')
        }) {
            words.next();
        }
    }
    match words.find(|w| w.bytes().all(|b| b.is_ascii_digit())) {
        Some("0") | None => format!("line{n}"),
        Some(x) => format!("x{x}"),
    }
}

/// Transactions in a MySQL or MariaDB general query log (`general_log = ON`, file output).
pub fn parse_mysql(text: &str, source: &str) -> Result<Parsed, AnalyzeError> {
    read_mysql(text.lines().map(|l| Ok(l.to_owned())), source)
}

/// Like [`parse_mysql`], line by line from a reader of any size.
pub fn read_mysql(
    lines_in: impl Iterator<Item = std::io::Result<String>>,
    source: &str,
) -> Result<Parsed, AnalyzeError> {
    let mut parsed = Parsed::default();
    let mut sessions = Sessions::default();
    let mut current: Option<(String, String)> = None;
    let mut lines = 0;
    for (n, line) in lines_of(lines_in, source).enumerate() {
        let line = line?;
        let line = line.as_str();
        if line.trim().is_empty() {
            continue;
        }
        let header = line.starts_with('/')
            || line.starts_with("Tcp port:")
            || line.starts_with("Time ")
            || line.starts_with("Time\t");
        if header {
            continue;
        }
        lines += 1;
        match mysql_entry(line) {
            Some((id, command, argument)) => {
                if let Some((session, stmt)) = current.take() {
                    sessions.statement(&session, &stmt);
                }
                match command {
                    "Query" | "Execute" => current = Some((id.to_string(), argument.to_string())),
                    "Quit" => sessions.quit(id),
                    _ => {}
                }
            }
            None => match &mut current {
                Some((_, stmt)) => {
                    stmt.push('\n');
                    stmt.push_str(line);
                }
                None => parsed.skip(n + 1),
            },
        }
    }
    if let Some((session, stmt)) = current.take() {
        sessions.statement(&session, &stmt);
    }
    // The header lines alone are not a log's content.
    none_read(&parsed, source, lines, "MySQL general log")?;
    parsed.transactions = sessions.done;
    Ok(parsed)
}

/// Commands a general log records.
const COMMANDS: [&str; 14] = [
    "Query",
    "Execute",
    "Prepare",
    "Close",
    "Connect",
    "Quit",
    "Init",
    "Reset",
    "Fetch",
    "Field",
    "Statistics",
    "Ping",
    "Change",
    "Refresh",
];

/// `[timestamp] id Command argument` → (id, command, argument).
fn mysql_entry(line: &str) -> Option<(&str, &str, &str)> {
    let mut rest = line.trim_start();
    // MariaDB `YYMMDD HH:MM:SS`, MySQL `2026-12-04T10:00:00.123456Z`.
    let first = rest.split_whitespace().next()?;
    if first.len() == 6 && first.bytes().all(|b| b.is_ascii_digit()) {
        rest = rest[first.len()..].trim_start();
        let time = rest.split_whitespace().next()?;
        if !time.contains(':') {
            return None;
        }
        rest = rest[time.len()..].trim_start();
    } else if first.contains('T')
        && first.ends_with('Z')
        && first.as_bytes().first()?.is_ascii_digit()
    {
        rest = rest[first.len()..].trim_start();
    }
    let id = rest.split_whitespace().next()?;
    if !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest = rest[id.len()..].trim_start();
    let command = rest.split_whitespace().next()?;
    if !COMMANDS.contains(&command) {
        return None;
    }
    let argument = rest[command.len()..].trim_start_matches([' ', '\t']);
    Some((id, command, argument))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(p: &Parsed) -> Vec<String> {
        p.transactions
            .iter()
            .map(|o| format!("{}|{}", o.tables.join(","), o.writes.join(",")))
            .collect()
    }

    #[test]
    fn postgres_transactions_group_by_process_and_drop_rollbacks() {
        let log = "\
2026-12-04 10:00:00.001 UTC [11] postgres@test LOG:  statement: BEGIN
2026-12-04 10:00:00.002 UTC [12] postgres@test LOG:  statement: SELECT * FROM users WHERE id = 1
2026-12-04 10:00:00.003 UTC [11] postgres@test LOG:  execute <unnamed>: INSERT INTO orders (id) VALUES ($1)
2026-12-04 10:00:00.003 UTC [11] postgres@test DETAIL:  parameters: $1 = '1'
2026-12-04 10:00:00.004 UTC [11] postgres@test LOG:  statement: INSERT INTO order_items
\tSELECT 1, id FROM products
2026-12-04 10:00:00.005 UTC [12] postgres@test LOG:  statement: BEGIN
2026-12-04 10:00:00.006 UTC [12] postgres@test LOG:  statement: UPDATE stock SET n = 0
2026-12-04 10:00:00.007 UTC [12] postgres@test LOG:  statement: ROLLBACK
2026-12-04 10:00:00.008 UTC [11] postgres@test LOG:  statement: COMMIT
2026-12-04 10:00:00.009 UTC [13] postgres@test LOG:  statement: BEGIN
2026-12-04 10:00:00.010 UTC [13] postgres@test LOG:  statement: UPDATE stock SET n = 0
2026-12-04 10:00:00.011 UTC [13] postgres@test LOG:  disconnection: session time: 0:00:00.010
garbage line
2026-12-04 10:00:00.012 UTC [11] postgres@test LOG:  checkpoint starting: time
";
        let p = parse_pg(log, "pg.log").unwrap();
        assert_eq!(
            sets(&p),
            ["users|", "order_items,orders,products|order_items,orders"]
        );
        assert_eq!(p.skipped, [14]);
    }

    #[test]
    fn postgres_transaction_ids_group_when_there_is_no_process_id() {
        let log = "\
2026-12-04 10:00:00.001 UTC 0 LOG:  statement: INSERT INTO a VALUES (1)
2026-12-04 10:00:00.002 UTC 77 LOG:  statement: INSERT INTO b VALUES (1)
2026-12-04 10:00:00.003 UTC 77 LOG:  statement: INSERT INTO c VALUES (1)
";
        let p = parse_pg(log, "pg.log").unwrap();
        // Without BEGIN each statement is its own transaction (autocommit).
        assert_eq!(sets(&p), ["a|a", "b|b", "c|c"]);
        assert_eq!(pg_session("2026-12-04 10:00:00.002 UTC 77", 2), "x77");
    }

    #[test]
    fn a_file_that_is_no_log_at_all_is_refused_with_its_line() {
        let e = parse_pg("hello\nworld\n", "x.log").unwrap_err().to_string();
        assert!(
            e.contains("x.log: line 1: not a PostgreSQL log line"),
            "{e}"
        );
        let e = parse_mysql("hello\nworld\n", "x.log")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.log: line 1: not a MySQL general log line"),
            "{e}"
        );
        assert!(parse_pg("", "x").unwrap().transactions.is_empty());
    }

    #[test]
    fn mysql_general_log_sessions_autocommit_and_continuations() {
        let log = "\
/usr/sbin/mariadbd, Version: 10.11.6-MariaDB-log (Debian 12). started with:
Tcp port: 3306  Unix socket: /run/mysqld/mysqld.sock
Time\t\t    Id Command\tArgument
241204 10:00:00\t    5 Connect\troot@localhost on test using TCP/IP
\t\t    5 Query\tSTART TRANSACTION
\t\t    6 Query\tSELECT * FROM users
\t\t    5 Prepare\tINSERT INTO orders VALUES (?)
\t\t    5 Execute\tINSERT INTO orders VALUES (1)
\t\t    5 Query\tUPDATE stock
SET n = n - 1
WHERE id = 2
\t\t    5 Query\tCOMMIT
\t\t    6 Query\tSET autocommit=0
\t\t    6 Query\tINSERT INTO a VALUES (1)
\t\t    6 Query\tINSERT INTO b VALUES (1)
\t\t    6 Query\tCOMMIT
\t\t    7 Query\tBEGIN
\t\t    7 Query\tINSERT INTO lost VALUES (1)
\t\t    7 Quit\t
2026-12-04T10:00:00.123456Z\t    8 Query\tDELETE FROM carts
";
        let p = parse_mysql(log, "my.log").unwrap();
        assert_eq!(
            sets(&p),
            [
                "users|",
                "orders,stock|orders,stock",
                "a,b|a,b",
                "carts|carts"
            ]
        );
        assert!(p.skipped.is_empty());
    }
}
