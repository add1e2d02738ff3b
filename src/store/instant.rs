//! Date-times with a zone offset written into columns that hold none. PostgreSQL's
//! `timestamp` would drop the offset silently and MariaDB's `DATETIME`/`TIMESTAMP` refuse it;
//! Strangler's convention is that a zone-less date-time is UTC, so an instant is written as
//! its UTC time, to the digit of the fraction it came with.

use time::{Date, Duration, Month, PrimitiveDateTime, Time};

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction](Z|±HH[:MM[:SS]])` as the UTC
/// `YYYY-MM-DD HH:MM:SS[.fraction]`; `None` when the text carries no offset or is not such a
/// date-time (it is then written as it is, and the database judges it).
pub fn utc_naive(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let date = Date::from_calendar_date(
        num(0..4)?,
        Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?,
        u8::try_from(num(8..10)?).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == 20 {
            return None;
        }
    }
    let fraction = &text[19..i];
    let zone = text[i..].trim_start();
    let offset = match zone.as_bytes().first()? {
        b'Z' | b'z' if zone.len() == 1 => 0,
        sign @ (b'+' | b'-') => {
            let parts: Vec<&str> = zone[1..].split(':').collect();
            let parts: Vec<&str> = match parts.as_slice() {
                [hhmm] if hhmm.len() == 4 => vec![&hhmm[..2], &hhmm[2..]],
                _ => parts,
            };
            if parts.is_empty()
                || parts.len() > 3
                || parts
                    .iter()
                    .any(|p| p.len() != 2 || !p.bytes().all(|c| c.is_ascii_digit()))
            {
                return None;
            }
            let mut secs = 0i64;
            for (p, unit) in parts.iter().zip([3600, 60, 1]) {
                secs += p.parse::<i64>().ok()? * unit;
            }
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let utc = PrimitiveDateTime::new(date, time).checked_sub(Duration::seconds(offset))?;
    if !(0..=9999).contains(&utc.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    ))
}

#[cfg(test)]
mod tests {
    use super::utc_naive;

    #[test]
    fn offsets_become_utc_with_the_fraction_kept() {
        let t = |s: &str| utc_naive(s);
        assert_eq!(
            t("2026-12-03T13:00:00.123456+05:30").as_deref(),
            Some("2026-12-03 07:30:00.123456")
        );
        assert_eq!(
            t("2026-12-31 23:59:59.5-01:00").as_deref(),
            Some("2027-01-01 00:59:59.5")
        );
        assert_eq!(
            t("2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-01 00:00:00")
        );
        assert_eq!(
            t("2024-03-01T00:30:00+0100").as_deref(),
            Some("2024-02-29 23:30:00")
        );
        assert_eq!(
            t("1900-01-01 00:00:00+00:19:32").as_deref(),
            Some("1899-12-31 23:40:28")
        );
        assert_eq!(
            t("2026-12-03 13:00:00.000001+14").as_deref(),
            Some("2026-12-02 23:00:00.000001")
        );
    }

    #[test]
    fn text_without_an_offset_or_not_a_date_time_is_left_alone() {
        for s in [
            "2026-12-03 13:00:00.123456",
            "2026-12-03T13:00:00",
            "2026-12-03",
            "13:00:00+05:30",
            "2026-13-03 13:00:00+00:00",
            "2026-12-03 13:00:00.+00:00",
            "2026-12-03 13:00:00+5:30",
            "2026-12-03 13:00:00+05:30:00:00",
            "2026-12-03 13:00:00 UTC",
            "0000-01-01 00:00:00+01:00",
            "hello world, not a time at all",
        ] {
            assert_eq!(utc_naive(s), None, "{s}");
        }
    }
}
