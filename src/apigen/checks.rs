//! Simple check constraints read as JSON Schema keywords, so the document promises only what
//! the database accepts: `col > 0`, `col BETWEEN 1 AND 9`, `col IN ('a', 'b')`,
//! `col = ANY (ARRAY['a', 'b'])`, `length(col) <= 50`, `col <> ''`, joined by AND. Anything
//! else is left to the database, which refuses a breaking row with a 422.

use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(String),
    Op(String),
    Open,
    Close,
    Comma,
    LBracket,
    RBracket,
}

fn tokens(s: &str) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            // A PostgreSQL cast: skip the type name (words, modifiers, array brackets).
            i += 2;
            while i < c.len() && c[i].is_whitespace() {
                i += 1;
            }
            loop {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '"') {
                    i += 1;
                }
                if i < c.len() && c[i] == '(' {
                    while i < c.len() && c[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                }
                if i + 1 < c.len() && c[i] == '[' && c[i + 1] == ']' {
                    i += 2;
                }
                let mut j = i;
                while j < c.len() && c[j] == ' ' {
                    j += 1;
                }
                let next_word: String = c[j..]
                    .iter()
                    .take_while(|x| x.is_alphanumeric() || **x == '_')
                    .collect();
                if start == i
                    || !matches!(
                        next_word.to_ascii_lowercase().as_str(),
                        "varying" | "precision" | "without" | "with" | "time" | "zone"
                    )
                {
                    break;
                }
                i = j;
            }
        } else if ch == '\'' {
            let mut v = String::new();
            i += 1;
            loop {
                match c.get(i) {
                    None => return None,
                    Some('\'') if c.get(i + 1) == Some(&'\'') => {
                        v.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(x) => {
                        v.push(*x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if ch == '"' || ch == '`' {
            let end = c[i + 1..].iter().position(|x| *x == ch)? + i + 1;
            out.push(Tok::Ident(c[i + 1..end].iter().collect()));
            i = end + 1;
        } else if ch.is_ascii_digit()
            || (ch == '-' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(c[start..i].iter().collect()));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            i += 1;
            out.push(match ch {
                '(' => Tok::Open,
                ')' => Tok::Close,
                ',' => Tok::Comma,
                '[' => Tok::LBracket,
                ']' => Tok::RBracket,
                '>' | '<' | '=' | '!' => {
                    let mut op = ch.to_string();
                    if matches!(c.get(i), Some('=') | Some('>')) && ch != '=' {
                        op.push(c[i]);
                        i += 1;
                    }
                    Tok::Op(op)
                }
                _ => return None,
            });
        }
    }
    Some(out)
}

fn kw(t: &Tok, word: &str) -> bool {
    matches!(t, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
}

/// Drops parentheses around a single column or number, and around the whole condition.
fn simplify(mut t: Vec<Tok>) -> Vec<Tok> {
    let mut i = 0;
    while i + 2 < t.len() {
        if t[i] == Tok::Open
            && t[i + 2] == Tok::Close
            && matches!(t[i + 1], Tok::Ident(_) | Tok::Num(_) | Tok::Str(_))
            && !(i > 0 && matches!(t[i - 1], Tok::Ident(_)))
        {
            t.remove(i + 2);
            t.remove(i);
            i = i.saturating_sub(1);
        } else {
            i += 1;
        }
    }
    loop {
        if t.first() != Some(&Tok::Open) || t.last() != Some(&Tok::Close) {
            return t;
        }
        let mut depth = 0;
        let wraps = t.iter().enumerate().all(|(i, x)| {
            match x {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                _ => {}
            }
            depth > 0 || i == t.len() - 1
        });
        if !wraps {
            return t;
        }
        t = t[1..t.len() - 1].to_vec();
    }
}

/// Splits on AND at depth zero (not the AND of BETWEEN).
fn conjuncts(t: &[Tok]) -> Vec<Vec<Tok>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0;
    let mut between = false;
    for x in t {
        match x {
            Tok::Open => depth += 1,
            Tok::Close => depth -= 1,
            _ => {}
        }
        if depth == 0 && kw(x, "between") {
            between = true;
        }
        if depth == 0 && kw(x, "and") {
            if between {
                between = false;
            } else {
                out.push(Vec::new());
                continue;
            }
        }
        if let Some(v) = out.last_mut() {
            v.push(x.clone());
        }
    }
    out.into_iter().map(simplify).collect()
}

fn number(s: &str) -> Option<Value> {
    s.parse::<Value>().ok().filter(Value::is_number)
}

fn flip(op: &str) -> &str {
    match op {
        ">" => "<",
        "<" => ">",
        ">=" => "<=",
        "<=" => ">=",
        o => o,
    }
}

/// One condition's keywords for one column, if it has a form we read.
fn one(t: &[Tok]) -> Option<(String, Map<String, Value>)> {
    let mut m = Map::new();
    let bound = |m: &mut Map<String, Value>, op: &str, n: Value| -> Option<()> {
        let key = match op {
            ">" => "exclusiveMinimum",
            ">=" => "minimum",
            "<" => "exclusiveMaximum",
            "<=" => "maximum",
            _ => return None,
        };
        m.insert(key.into(), n);
        Some(())
    };
    match t {
        [Tok::Ident(c), Tok::Op(op), Tok::Num(n)] => {
            bound(&mut m, op, number(n)?)?;
            Some((c.clone(), m))
        }
        [Tok::Num(n), Tok::Op(op), Tok::Ident(c)] => {
            bound(&mut m, flip(op), number(n)?)?;
            Some((c.clone(), m))
        }
        [Tok::Ident(c), Tok::Op(op), Tok::Str(s)] if (op == "<>" || op == "!=") && s.is_empty() => {
            m.insert("minLength".into(), json!(1));
            Some((c.clone(), m))
        }
        [Tok::Ident(c), b, Tok::Num(lo), a, Tok::Num(hi)] if kw(b, "between") && kw(a, "and") => {
            m.insert("minimum".into(), number(lo)?);
            m.insert("maximum".into(), number(hi)?);
            Some((c.clone(), m))
        }
        [
            Tok::Ident(f),
            Tok::Open,
            Tok::Ident(c),
            Tok::Close,
            Tok::Op(op),
            Tok::Num(n),
        ] if ["length", "char_length", "character_length"]
            .iter()
            .any(|w| f.eq_ignore_ascii_case(w)) =>
        {
            let n: i64 = n.parse().ok()?;
            let (key, v) = match op.as_str() {
                "<=" => ("maxLength", n),
                "<" => ("maxLength", n - 1),
                ">=" => ("minLength", n),
                ">" => ("minLength", n + 1),
                _ => return None,
            };
            m.insert(key.into(), json!(v.max(0)));
            Some((c.clone(), m))
        }
        [Tok::Ident(c), i, Tok::Open, rest @ .., Tok::Close] if kw(i, "in") => {
            m.insert("enum".into(), Value::Array(list(rest)?));
            Some((c.clone(), m))
        }
        [Tok::Ident(c), Tok::Op(eq), any, rest @ ..] if eq == "=" && kw(any, "any") => {
            // PostgreSQL prints `= ANY ((ARRAY[...])::text[])`: the parentheses carry nothing.
            let inner: Vec<Tok> = rest
                .iter()
                .filter(|t| !matches!(t, Tok::Open | Tok::Close))
                .cloned()
                .collect();
            match inner.as_slice() {
                [arr, Tok::LBracket, items @ .., Tok::RBracket] if kw(arr, "array") => {
                    m.insert("enum".into(), Value::Array(list(items)?));
                    Some((c.clone(), m))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn list(t: &[Tok]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for (i, x) in t.iter().enumerate() {
        match (i % 2, x) {
            (0, Tok::Str(s)) => out.push(Value::String(s.clone())),
            (0, Tok::Num(n)) => out.push(number(n)?),
            (1, Tok::Comma) => {}
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The JSON Schema keywords the simple parts of `checks` give each column.
pub fn keywords(checks: &[String]) -> Vec<(String, Map<String, Value>)> {
    let mut out: Vec<(String, Map<String, Value>)> = Vec::new();
    for check in checks {
        let Some(t) = tokens(check) else { continue };
        for part in conjuncts(&simplify(t)) {
            if let Some((col, m)) = one(&part) {
                match out.iter_mut().find(|(c, _)| *c == col) {
                    Some((_, existing)) => existing.extend(m),
                    None => out.push((col, m)),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw_of(check: &str) -> Vec<(String, Value)> {
        keywords(&[check.to_string()])
            .into_iter()
            .map(|(c, m)| (c, Value::Object(m)))
            .collect()
    }

    #[test]
    fn reads_the_simple_forms_of_each_database() {
        assert_eq!(
            kw_of("(qty > 0)"),
            vec![("qty".into(), json!({"exclusiveMinimum": 0}))]
        );
        assert_eq!(
            kw_of("((price >= (0)::numeric))"),
            vec![("price".into(), json!({"minimum": 0}))]
        );
        assert_eq!(
            kw_of("`stars` between 1 and 5"),
            vec![("stars".into(), json!({"minimum": 1, "maximum": 5}))]
        );
        assert_eq!(
            kw_of(
                "((status)::text = ANY ((ARRAY['new'::character varying, 'paid'::character varying])::text[]))"
            ),
            vec![("status".into(), json!({"enum": ["new", "paid"]}))]
        );
        assert_eq!(
            kw_of("(status IN ('new', 'it''s'))"),
            vec![("status".into(), json!({"enum": ["new", "it's"]}))]
        );
        assert_eq!(
            kw_of("((char_length(name) <= 50) AND (name <> ''::text))"),
            vec![("name".into(), json!({"maxLength": 50, "minLength": 1}))]
        );
        assert_eq!(
            kw_of("(0 < qty)"),
            vec![("qty".into(), json!({"exclusiveMinimum": 0}))]
        );
        assert!(kw_of("(a > b)").is_empty());
        assert!(kw_of("(lower(x) = x)").is_empty());
    }
}
