//! Text → [`Config`]: TOML syntax, then the schema (types, unknown and missing fields), then
//! [`Config::validate`], each error with its field path and line and column.
//!
//! Three stages, because each knows a different part of "where":
//!
//! 1. The `toml` parser reports syntax errors with a byte span and no field.
//! 2. Serde deserializes through `serde_path_to_error`, which records the path of the field
//!    being read when an error occurs; `toml` attaches the span of the offending key or value.
//! 3. Validation sees only typed values, so its errors carry a path, which is then looked up
//!    in the text with `toml_edit` (which keeps spans) for a location.
//!
//! Stages 1 and 2 stop at the first error (a document that does not parse has no typed form
//! to continue with); stage 3 reports every violation.

use super::locate::SpannedDocument;
use super::{Config, ConfigError, ConfigErrorKind, ConfigErrors, FieldPath, Location, PathSegment};

impl Config {
    /// Parses a TOML configuration and validates it.
    ///
    /// On failure, every error has a typed [`ConfigErrorKind`], a field path and a line and
    /// column, sorted by location. A syntax or schema error is reported alone (the text has
    /// no typed form to check further); validation errors are reported all together.
    /// Never panics, whatever the text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let config = deserialize(text).map_err(|error| ConfigErrors(vec![error]))?;
        if let Err(errors) = config.validate() {
            return Err(locate_validation_errors(text, errors));
        }
        Ok(config)
    }
}

/// Stages 1 and 2: TOML syntax and the schema, without validation.
pub(crate) fn deserialize(text: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| syntax_error(text, &error))?;
    serde_path_to_error::deserialize(deserializer).map_err(|error| schema_error(text, error))
}

fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let location = error.span().map_or(Location::START, |span| Location::from_offset(text, span.start));
    let mut message = error.message().to_owned();
    // The parser says only "duplicate key"; its span covers the key, so name it.
    if message == "duplicate key" {
        if let Some(key) = error.span().and_then(|span| text.get(span)) {
            message = format!("duplicate key `{key}`");
        }
    }
    ConfigError { kind: ConfigErrorKind::Syntax(message), path: FieldPath::root(), location }
}

fn schema_error(text: &str, error: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let mut path: FieldPath = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(PathSegment::Index(*index)),
            serde_path_to_error::Segment::Map { key } => Some(PathSegment::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => Some(PathSegment::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let inner = error.into_inner();
    let kind = classify(inner.message(), &path);
    // A missing field's path names the field itself; the span (the table that lacks it)
    // stays as `toml` gave it.
    if let ConfigErrorKind::MissingField { field } = &kind {
        path = path.key(field.clone());
    }
    let location = match inner.span() {
        Some(span) => Location::from_offset(text, span.start),
        None => SpannedDocument::parse(text).locate(&path),
    };
    ConfigError { kind, path, location }
}

/// Turns serde's message into a typed kind.
///
/// Serde builds these messages itself (`serde::de::Error::unknown_field` and friends, whose
/// wording has not changed since serde 1.0) before `toml` sees them, so the message is the
/// only place the structure survives. A message that does not match keeps its text as
/// [`ConfigErrorKind::InvalidValue`]: nothing is lost, only less typed.
fn classify(message: &str, path: &FieldPath) -> ConfigErrorKind {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        // The path ends with the unknown key itself; the message is the fallback.
        let field = path.last_key().map(str::to_owned).or_else(|| first_backticked(rest));
        if let Some(field) = field {
            return ConfigErrorKind::UnknownField { field, expected: expected_names(message) };
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some(variant) = first_backticked(rest) {
            return ConfigErrorKind::UnknownVariant { variant, expected: expected_names(message) };
        }
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(field) = first_backticked(rest) {
            return ConfigErrorKind::MissingField { field };
        }
    }
    ConfigErrorKind::InvalidValue(message.to_owned())
}

/// The text up to the next backtick, from just after an opening one.
fn first_backticked(rest: &str) -> Option<String> {
    rest.split_once('`').map(|(name, _)| name.to_owned())
}

/// The backticked names after ", expected" in serde's "unknown field `x`, expected one of
/// `a`, `b`" (or "expected `a` or `b`"; "there are no fields" gives none).
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    // Backticks alternate open, close: the names are the odd-numbered pieces.
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Stage 3: gives each validation error its path's location, sorted by location. The sort is
/// stable and `validate` is deterministic, so errors at one place keep a fixed order.
fn locate_validation_errors(text: &str, errors: Vec<super::ValidationError>) -> ConfigErrors {
    let document = SpannedDocument::parse(text);
    let mut located: Vec<ConfigError> = errors
        .into_iter()
        .map(|error| {
            let path = error.path();
            let location = document.locate(&path);
            ConfigError { kind: ConfigErrorKind::Invalid(error), path, location }
        })
        .collect();
    located.sort_by_key(|error| error.location);
    ConfigErrors(located)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reads_serde_messages() {
        let path = FieldPath::root().key("listeners").key("dns").key("adress");
        assert_eq!(
            classify("unknown field `adress`, expected one of `address`, `cluster`", &path),
            ConfigErrorKind::UnknownField {
                field: "adress".into(),
                expected: vec!["address".into(), "cluster".into()],
            }
        );
        assert_eq!(
            classify("unknown field `x`, expected `front` or `back`", &FieldPath::root()),
            ConfigErrorKind::UnknownField {
                field: "x".into(),
                expected: vec!["front".into(), "back".into()],
            }
        );
        assert_eq!(
            classify("unknown field `x`, there are no fields", &FieldPath::root()),
            ConfigErrorKind::UnknownField { field: "x".into(), expected: vec![] }
        );
        assert_eq!(
            classify("unknown variant `always`, expected one of `off`, `first`", &path),
            ConfigErrorKind::UnknownVariant {
                variant: "always".into(),
                expected: vec!["off".into(), "first".into()],
            }
        );
        assert_eq!(
            classify("missing field `address`", &path),
            ConfigErrorKind::MissingField { field: "address".into() }
        );
        assert_eq!(
            classify("invalid type: string \"3\", expected u32", &path),
            ConfigErrorKind::InvalidValue("invalid type: string \"3\", expected u32".into())
        );
        // Truncated messages fall back to the text rather than failing.
        assert_eq!(
            classify("missing field `", &path),
            ConfigErrorKind::InvalidValue("missing field `".into())
        );
    }
}
