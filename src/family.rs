//! Column type families shared by the config (cast transforms) and the store (what a
//! database column holds): a leaf, importing nothing of the crate.

/// Column type families, for cast transforms and compatibility checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeFamily {
    /// Whole numbers.
    Integer,
    /// Fractional numbers (float, decimal).
    Real,
    /// Strings.
    Text,
    /// Booleans.
    Boolean,
    /// Dates and times.
    Time,
    /// JSON documents.
    Json,
    /// Bytes.
    Blob,
}

impl TypeFamily {
    /// Parses a family name (`integer`, `real`, `text`, `boolean`, `time`, `json`, `blob`).
    pub fn parse(text: &str) -> Result<TypeFamily, String> {
        Ok(match text {
            "integer" => TypeFamily::Integer,
            "real" => TypeFamily::Real,
            "text" => TypeFamily::Text,
            "boolean" => TypeFamily::Boolean,
            "time" => TypeFamily::Time,
            "json" => TypeFamily::Json,
            "blob" => TypeFamily::Blob,
            other => {
                return Err(format!(
                    "unknown type {other:?}; use integer, real, text, boolean, time, json or blob"
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::TypeFamily;

    #[test]
    fn every_family_name_parses_and_others_are_refused_with_the_list() {
        for (name, f) in [
            ("integer", TypeFamily::Integer),
            ("real", TypeFamily::Real),
            ("text", TypeFamily::Text),
            ("boolean", TypeFamily::Boolean),
            ("time", TypeFamily::Time),
            ("json", TypeFamily::Json),
            ("blob", TypeFamily::Blob),
        ] {
            assert_eq!(TypeFamily::parse(name), Ok(f));
        }
        let err = TypeFamily::parse("decimal").unwrap_err();
        assert!(
            err.contains("\"decimal\"") && err.contains("integer, real"),
            "{err}"
        );
    }
}
