//! The tables a SQL statement reads and writes, from its tokens: enough of SQL to follow
//! `FROM`, `JOIN`, `INTO`, `UPDATE`, `DELETE FROM` and `TRUNCATE`, quoted names, schema
//! prefixes, comments, string literals and common table expressions.

/// Tables a data statement touches: `(read, written)`; `None` for anything else
/// (transaction control, DDL, `SET`).
pub fn tables(statement: &str) -> Option<(Vec<String>, Vec<String>)> {
    let tokens = tokenize(statement);
    let first = match tokens.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return None,
    };
    if ![
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE", "MERGE", "TRUNCATE", "COPY",
    ]
    .contains(&first.as_str())
    {
        return None;
    }
    let mut read = Vec::new();
    let mut written = Vec::new();
    let mut ctes = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let upper = match &tokens[i] {
            Token::Word(w) => w.to_ascii_uppercase(),
            _ => {
                i += 1;
                continue;
            }
        };
        // `WITH name AS (` and `, name AS (` declare names that are not tables.
        if matches!(tokens.get(i + 1), Some(Token::Word(w)) if w.eq_ignore_ascii_case("AS"))
            && matches!(tokens.get(i + 2), Some(Token::Open))
            && i > 0
            && matches!(&tokens[i - 1], Token::Comma | Token::Word(_))
            && (matches!(&tokens[i - 1], Token::Comma)
                || matches!(&tokens[i - 1], Token::Word(w) if w.eq_ignore_ascii_case("WITH") || w.eq_ignore_ascii_case("RECURSIVE")))
        {
            ctes.push(name_at(&tokens, i).map(|(n, _)| n).unwrap_or_default());
            i += 1;
            continue;
        }
        let target = match upper.as_str() {
            "INTO" | "UPDATE" | "TRUNCATE" => Some(true),
            "FROM" => Some(
                i > 0
                    && matches!(&tokens[i - 1], Token::Word(w) if w.eq_ignore_ascii_case("DELETE")),
            ),
            "JOIN" | "USING" if first == "MERGE" || upper == "JOIN" => Some(false),
            "COPY" if i == 0 => Some(true),
            _ => None,
        };
        let Some(write) = target else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        loop {
            // Skip modifiers: `UPDATE ONLY t`, `TRUNCATE TABLE t`, `FROM LATERAL (...)`.
            while matches!(tokens.get(j), Some(Token::Word(w)) if ["ONLY", "TABLE", "LOW_PRIORITY", "IGNORE", "QUICK"].contains(&w.to_ascii_uppercase().as_str()))
            {
                j += 1;
            }
            let Some((name, next)) = name_at(&tokens, j) else {
                break;
            };
            if write {
                written.push(name);
            } else {
                read.push(name);
            }
            j = next;
            // An alias: `FROM orders o` or `FROM orders AS o`.
            if matches!(tokens.get(j), Some(Token::Word(w)) if w.eq_ignore_ascii_case("AS")) {
                j += 1;
            }
            if matches!(tokens.get(j), Some(Token::Word(w)) if !is_clause(w)) {
                j += 1;
            }
            // `FROM a, b` lists several tables (not in writes: `INSERT INTO t (a, b)`).
            if !write && matches!(tokens.get(j), Some(Token::Comma)) {
                j += 1;
                continue;
            }
            break;
        }
        i = j.max(i + 1);
    }
    read.retain(|t| !ctes.contains(t));
    written.retain(|t| !ctes.contains(t));
    Some((read, written))
}

/// The statements of a multi-statement text (`BEGIN; INSERT …; COMMIT`), split at
/// semicolons outside string literals, quoted names, comments and dollar quotes.
pub fn split(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && q == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                // A dollar quote `$tag$ … $tag$` (PostgreSQL function bodies).
                if let Some(len) = b[i + 1..].iter().position(|&c| c == b'$') {
                    let tag = &b[i..i + len + 2];
                    if tag[1..tag.len() - 1]
                        .iter()
                        .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    {
                        let body = i + tag.len();
                        if let Some(end) = b[body..].windows(tag.len()).position(|w| w == tag) {
                            i = body + end + tag.len() - 1;
                        }
                    }
                }
            }
            b';' => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(text[start.min(text.len())..].trim());
    out.into_iter()
        .map(uncomment)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The statement without its leading comments.
fn uncomment(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return s.trim_end();
        }
    }
}

/// Words that end a table reference rather than alias it.
fn is_clause(word: &str) -> bool {
    [
        "WHERE",
        "SET",
        "VALUES",
        "SELECT",
        "JOIN",
        "INNER",
        "LEFT",
        "RIGHT",
        "FULL",
        "CROSS",
        "NATURAL",
        "ON",
        "USING",
        "GROUP",
        "ORDER",
        "LIMIT",
        "OFFSET",
        "HAVING",
        "UNION",
        "EXCEPT",
        "INTERSECT",
        "RETURNING",
        "FOR",
        "WINDOW",
        "DEFAULT",
        "OUTPUT",
        "FROM",
        "AS",
        "LATERAL",
        "WITH",
        "ON",
        "PARTITION",
        "FETCH",
        "STRAIGHT_JOIN",
    ]
    .iter()
    .any(|k| word.eq_ignore_ascii_case(k))
}

/// A possibly schema-qualified name starting at `i`, and the index after it.
fn name_at(tokens: &[Token], i: usize) -> Option<(String, usize)> {
    let mut parts = Vec::new();
    let mut j = i;
    loop {
        match tokens.get(j) {
            Some(Token::Word(w)) if parts.is_empty() && is_clause(w) => return None,
            Some(Token::Word(w)) => parts.push(w.to_ascii_lowercase()),
            Some(Token::Quoted(q)) => parts.push(q.clone()),
            _ => break,
        }
        j += 1;
        if matches!(tokens.get(j), Some(Token::Dot)) {
            j += 1;
        } else {
            break;
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some((parts.join("."), j))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Comma,
    Dot,
    Open,
    Other,
}

fn tokenize(s: &str) -> Vec<Token> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if b.get(i + 1) == Some(&'-') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '#' => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            '\'' => {
                i += 1;
                while i < b.len() {
                    if b[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == '\'' {
                        if b.get(i + 1) == Some(&'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Other);
            }
            '"' | '`' => {
                let close = c;
                let mut q = String::new();
                i += 1;
                while i < b.len() {
                    if b[i] == close {
                        if b.get(i + 1) == Some(&close) {
                            q.push(close);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    q.push(b[i]);
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted(q));
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '.' => {
                out.push(Token::Dot);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                    i += 1;
                }
                out.push(Token::Word(b[start..i].iter().collect()));
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tables;

    fn t(s: &str) -> (Vec<&'static str>, Vec<&'static str>) {
        let (r, w) = tables(s).unwrap();
        (
            r.into_iter().map(|x| &*x.leak()).collect(),
            w.into_iter().map(|x| &*x.leak()).collect(),
        )
    }

    #[test]
    fn multi_statement_texts_split_outside_quotes_and_comments() {
        use super::split;
        assert_eq!(
            split("BEGIN; INSERT INTO a VALUES ('x;y', \"q;\"); -- c;\nCOMMIT;"),
            ["BEGIN", "INSERT INTO a VALUES ('x;y', \"q;\")", "COMMIT"]
        );
        assert_eq!(
            split("DO $f$ BEGIN x; END $f$; SELECT 1"),
            ["DO $f$ BEGIN x; END $f$", "SELECT 1"]
        );
        assert_eq!(split("/* a; */ SELECT 'it\\'s;'"), ["SELECT 'it\\'s;'"]);
        assert_eq!(split("-- only a comment"), Vec::<&str>::new());
        assert!(split(" ; ").is_empty());
    }

    #[test]
    fn reads_and_writes_of_common_statements() {
        assert_eq!(
            t("INSERT INTO orders (id, a) VALUES (1, 'x')"),
            (vec![], vec!["orders"])
        );
        assert_eq!(
            t(
                "insert into shop.\"Order Items\" select * from orders o join users u on u.id = o.user_id"
            ),
            (vec!["orders", "users"], vec!["shop.Order Items"])
        );
        assert_eq!(
            t("UPDATE ONLY stock SET n = n - 1 WHERE id = 3"),
            (vec![], vec!["stock"])
        );
        assert_eq!(
            t("DELETE FROM `cart` WHERE user_id IN (SELECT id FROM users)"),
            (vec!["users"], vec!["cart"])
        );
        assert_eq!(
            t("SELECT * FROM a, b AS bb, public.c WHERE a.x = 'FROM d' -- FROM e\n"),
            (vec!["a", "b", "public.c"], vec![])
        );
        assert_eq!(
            t(
                "WITH recent AS (SELECT * FROM orders), x AS (SELECT 1) SELECT * FROM recent JOIN x ON true /* JOIN f */"
            ),
            (vec!["orders"], vec![])
        );
        assert_eq!(t("TRUNCATE TABLE logs"), (vec![], vec!["logs"]));
        assert_eq!(t("SELECT 1"), (vec![], vec![]));
        assert_eq!(
            t("select * from t where s = 'it''s FROM z'"),
            (vec!["t"], vec![])
        );
        assert!(tables("BEGIN").is_none());
        assert!(tables("CREATE TABLE x (id int)").is_none());
        assert!(tables("").is_none());
    }
}
