//! Calendar dates, times of day and date-times as the API writes them: RFC 3339 parsing
//! checked against the calendar, the UTC text each database takes an instant as, and a stored
//! value written back as RFC 3339.

use super::types::Db;

/// A calendar date `YYYY-MM-DD` as a regular expression: month lengths and leap years
/// included, year 0 left out (no calendar PostgreSQL keeps has it).
pub const CALENDAR_DATE: &str = "(?!0000)(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)";

fn two(s: &str) -> Option<u8> {
    (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `YYYY-MM-DD`, checked against the calendar.
pub fn parse_date(s: &str) -> Option<time::Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !s[..4].bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let year: i32 = s[..4].parse().ok().filter(|y| *y > 0)?;
    let month = time::Month::try_from(two(&s[5..7])?).ok()?;
    time::Date::from_calendar_date(year, month, two(&s[8..10])?).ok()
}

/// `HH:MM:SS[.f{1,6}]`.
pub fn parse_time(s: &str) -> Option<time::Time> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let b = hms.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let micros = if s.contains('.') {
        if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{frac:0<6}").parse().ok()?
    } else {
        0
    };
    time::Time::from_hms_micro(two(&hms[..2])?, two(&hms[3..5])?, two(&hms[6..8])?, micros).ok()
}

/// `date` `T` `time` with an optional offset (`Z`, `±HH:MM`), RFC 3339 style; a space may
/// stand for the `T`.
pub fn parse_datetime(s: &str) -> Option<(time::Date, time::Time, Option<time::UtcOffset>)> {
    if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(11) {
        return None;
    }
    let date = parse_date(&s[..10])?;
    if !matches!(&s[10..11], "T" | "t" | " ") {
        return None;
    }
    let rest = &s[11..];
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, Some(time::UtcOffset::UTC))
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign: i8 = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':')?;
        let (h, m) = (two(h)? as i8, two(m)? as i8);
        if h > 23 || m > 59 {
            return None;
        }
        (
            c,
            Some(time::UtcOffset::from_hms(sign * h, sign * m, 0).ok()?),
        )
    } else {
        (rest, None)
    };
    Some((date, parse_time(clock)?, offset))
}

/// The UTC text of a date-time with an offset, as the database takes an instant.
pub fn utc_text(date: time::Date, clock: time::Time, off: time::UtcOffset, db: Db) -> String {
    let utc = time::PrimitiveDateTime::new(date, clock)
        .assume_offset(off)
        .to_offset(time::UtcOffset::UTC);
    let (d, t) = (utc.date(), utc.time());
    let base = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        d.year(),
        u8::from(d.month()),
        d.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
    match db {
        Db::Postgres => format!("{base}+00:00"),
        Db::Mysql => base,
        Db::Sqlite => format!("{}Z", base.replacen(' ', "T", 1)),
    }
}

/// A stored date-time as RFC 3339 text: `T` between date and time, fraction trimmed, and for
/// an instant the offset as `Z` (the sessions run in UTC).
pub fn datetime_out(s: &str, zone: bool) -> String {
    let Some((date, clock, off)) = parse_datetime(s.trim()).or_else(|| {
        // PostgreSQL writes a whole-hour offset as `+00`.
        let t = s.trim();
        let (head, tail) = t.split_at(t.len().saturating_sub(3));
        if (tail.starts_with('+') || tail.starts_with('-')) && two(&tail[1..]).is_some() {
            parse_datetime(&format!("{head}{tail}:00"))
        } else {
            None
        }
    }) else {
        return s.to_string();
    };
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        clock.hour(),
        clock.minute(),
        clock.second()
    );
    if clock.microsecond() > 0 {
        let frac = format!("{:06}", clock.microsecond());
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    if zone {
        let instant = time::PrimitiveDateTime::new(date, clock)
            .assume_offset(off.unwrap_or(time::UtcOffset::UTC))
            .to_offset(time::UtcOffset::UTC);
        if off.is_some_and(|o| !o.is_utc()) {
            return datetime_out(
                &format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                    instant.year(),
                    u8::from(instant.month()),
                    instant.day(),
                    instant.hour(),
                    instant.minute(),
                    instant.second(),
                    instant.microsecond()
                ),
                true,
            );
        }
        out.push('Z');
    }
    out
}
