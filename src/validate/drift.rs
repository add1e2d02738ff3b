//! Drift between mapped columns: declared types on the two sides that can hold different
//! values (another family, date-time precision, decimal scale, exactness or text length),
//! reported once per column.

use crate::family::TypeFamily;

use super::canon::time_precision;

/// A mapped column whose types can lose or alter values between the sides.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Drift {
    /// Left column.
    pub column: String,
    /// Left declared type.
    pub left: String,
    /// Right declared type.
    pub right: String,
    /// What differs: `family`, `precision`, `scale`, `exactness` or `length`.
    pub why: String,
}

/// Why two mapped column types can hold different values; `None` when they cannot.
pub(super) fn drifts(
    kinds: [&str; 2],
    ld: &str,
    lf: TypeFamily,
    rd: &str,
    rf: TypeFamily,
    cast: bool,
) -> Option<&'static str> {
    use TypeFamily::*;
    let (ll, rl) = (ld.to_ascii_lowercase(), rd.to_ascii_lowercase());
    let args = |d: &str| -> Vec<u32> {
        d.find('(')
            .and_then(|a| d[a + 1..].find(')').map(|b| &d[a + 1..a + 1 + b]))
            .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    if lf != rf && !cast && !matches!((lf, rf), (Integer, Boolean) | (Boolean, Integer)) {
        return Some("family");
    }
    match lf {
        Time if time_precision(kinds[0], ld) != time_precision(kinds[1], rd)
            && time_precision(kinds[0], ld).is_some()
            && time_precision(kinds[1], rd).is_some() =>
        {
            Some("precision")
        }
        Real => {
            let exact = |d: &str| d.contains("numeric") || d.contains("decimal");
            if exact(&ll) != exact(&rl) {
                Some("exactness")
            } else if exact(&ll)
                && !args(&ll).is_empty()
                && !args(&rl).is_empty()
                && args(&ll) != args(&rl)
            {
                Some("scale")
            } else {
                None
            }
        }
        Text => {
            let (a, b) = (args(&ll), args(&rl));
            (!a.is_empty() && !b.is_empty() && a != b).then_some("length")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_what_can_change_a_value() {
        use TypeFamily::*;
        let k = ["postgres", "mysql"];
        assert_eq!(
            drifts(
                k,
                "timestamp without time zone",
                Time,
                "datetime",
                Time,
                false
            ),
            Some("precision")
        );
        assert_eq!(
            drifts(
                k,
                "timestamp(0) without time zone",
                Time,
                "datetime",
                Time,
                false
            ),
            None
        );
        assert_eq!(
            drifts(k, "numeric(10,2)", Real, "decimal(10,4)", Real, false),
            Some("scale")
        );
        assert_eq!(
            drifts(k, "numeric(10,2)", Real, "decimal(10,2)", Real, false),
            None
        );
        assert_eq!(
            drifts(k, "double precision", Real, "decimal(10,2)", Real, false),
            Some("exactness")
        );
        assert_eq!(
            drifts(
                k,
                "character varying(200)",
                Text,
                "varchar(100)",
                Text,
                false
            ),
            Some("length")
        );
        assert_eq!(drifts(k, "text", Text, "varchar(100)", Text, false), None);
        assert_eq!(
            drifts(k, "integer", Integer, "double", Real, false),
            Some("family")
        );
        assert_eq!(
            drifts(k, "integer", Integer, "tinyint(1)", Boolean, false),
            None
        );
        assert_eq!(drifts(k, "text", Text, "int", Integer, true), None);
    }
}
