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
//! A syntax error is reported alone (a text that does not parse has nothing more to read).
//! Serde stops at the first schema error, so stage 2 is repeated: the offending key is taken
//! out of the document (a table that misses a required key goes as a whole) and the rest is
//! read again, until it reads cleanly or an error cannot be stepped over (a required key that
//! is itself wrong, a list whose element is). Every schema error found that way is reported,
//! located in the original text. Stage 3 runs only on a text whose schema is clean (on a
//! document with keys taken out it would report what the taking out caused), and reports
//! every violation.
//!
//! Serde's own wording ("invalid type: string \"1\", expected u32") is rewritten in an
//! operator's words ("expected a whole number from 0 to 4294967295, found the text \"1\"").

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::locate::SpannedDocument;
use super::{Config, ConfigError, ConfigErrorKind, ConfigErrors, FieldPath, Location, PathSegment};

/// Schema errors reported from one text at most: past this, the rest is noise.
const MAX_SCHEMA_ERRORS: usize = 20;

impl Config {
    /// Parses a TOML configuration and validates it.
    ///
    /// On failure, every error has a typed [`ConfigErrorKind`], a field path and a line and
    /// column, sorted by location. A syntax error is reported alone; schema errors (unknown
    /// keys, wrong types, missing keys) are reported together, as many as can be found
    /// around one another; validation errors are reported all together once the schema is
    /// clean. Never panics, whatever the text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let config = deserialize_reporting_all(text).map_err(ConfigErrors)?;
        if let Err(errors) = config.validate() {
            return Err(locate_validation_errors(text, errors));
        }
        Ok(config)
    }
}

/// Stages 1 and 2, reporting every schema error that can be found (see the module's
/// documentation), sorted by location.
fn deserialize_reporting_all(text: &str) -> Result<Config, Vec<ConfigError>> {
    let first = match deserialize(text) {
        Ok(config) => return Ok(config),
        Err(error) => error,
    };
    let mut errors = vec![first];
    let (Some(mut document), false) =
        (text.parse::<DocumentMut>().ok(), matches!(errors[0].kind, ConfigErrorKind::Syntax(_)))
    else {
        return Err(errors);
    };
    let original = SpannedDocument::parse(text);
    let mut removed: Vec<FieldPath> = Vec::new();
    while errors.len() < MAX_SCHEMA_ERRORS {
        let last = errors.last().expect("at least one error");
        let Some(target) = step_over(last) else { break };
        if !remove(document.as_item_mut(), target.segments()) {
            break;
        }
        removed.push(target);
        let Err(mut next) = deserialize(&document.to_string()) else { break };
        // A key taken out that was required is missing now: that is not the file's error,
        // and nothing past it can be read.
        let caused_here =
            matches!(next.kind, ConfigErrorKind::MissingField { .. }) && removed.contains(&next.path);
        let seen = errors.iter().any(|e| e.path == next.path && e.kind == next.kind);
        if caused_here || seen || matches!(next.kind, ConfigErrorKind::Syntax(_)) {
            break;
        }
        next.location = original.locate(&next.path);
        errors.push(next);
    }
    errors.sort_by_key(|error| error.location);
    Err(errors)
}

/// What to take out of the document to read past `error`: the key it names (the whole list,
/// when it names an element of one); for a missing key, the table that lacks it. `None` when
/// there is nothing that could go (the document itself).
fn step_over(error: &ConfigError) -> Option<FieldPath> {
    let mut segments = error.path.segments().to_vec();
    if matches!(error.kind, ConfigErrorKind::MissingField { .. }) {
        segments.pop();
    }
    while let Some(PathSegment::Index(_)) = segments.last() {
        segments.pop();
    }
    (!segments.is_empty()).then(|| segments.into_iter().collect())
}

/// Takes the key at `path` (which ends with a key) out of the document; whether it was there.
fn remove(item: &mut Item, path: &[PathSegment]) -> bool {
    match (item, path) {
        (Item::Table(table), [PathSegment::Key(_), ..]) => remove_in_table(table, path),
        (Item::Value(Value::InlineTable(table)), [PathSegment::Key(_), ..]) => remove_in_table(table, path),
        (Item::ArrayOfTables(array), [PathSegment::Index(index), rest @ ..]) => {
            array.get_mut(*index).is_some_and(|table| remove_in_table(table, rest))
        }
        (Item::Value(Value::Array(array)), [PathSegment::Index(index), rest @ ..]) => {
            match array.get_mut(*index) {
                Some(Value::InlineTable(table)) => remove_in_table(table, rest),
                _ => false,
            }
        }
        _ => false,
    }
}

fn remove_in_table(table: &mut dyn TableLike, path: &[PathSegment]) -> bool {
    match path {
        [PathSegment::Key(key)] => table.remove(key).is_some(),
        [PathSegment::Key(key), rest @ ..] => table.get_mut(key).is_some_and(|item| remove(item, rest)),
        _ => false,
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
    ConfigErrorKind::InvalidValue(in_operators_words(message))
}

/// Rewrites serde's "invalid type: string \"1\", expected u32" (and "invalid value: …") as
/// "expected a whole number from 0 to 4294967295, found the text \"1\"". Any other message
/// is kept as it is.
fn in_operators_words(message: &str) -> String {
    let rest = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "));
    let Some((found, expected)) = rest.and_then(|rest| rest.split_once(", expected ")) else {
        return message.to_owned();
    };
    format!("expected {}, found {}", expected_in_words(expected), found_in_words(found))
}

/// Serde's `Unexpected` as an operator would say it.
fn found_in_words(found: &str) -> String {
    let backticked = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('`'))
            .and_then(|rest| rest.strip_suffix('`'))
    };
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the text {text}");
    }
    if let Some(number) = backticked("integer ") {
        return format!("the whole number {number}");
    }
    if let Some(number) = backticked("floating point ") {
        return format!("the number {number}");
    }
    if let Some(value) = backticked("boolean ") {
        return value.to_owned();
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

/// Serde's "expected" (a Rust type name, or a deserializer's own `expecting` text, which is
/// already in words) as an operator would say it.
fn expected_in_words(expected: &str) -> String {
    let whole = |max: &str| format!("a whole number from 0 to {max}");
    match expected {
        "u8" => whole("255"),
        "u16" => whole("65535"),
        "u32" => whole("4294967295"),
        "u64" | "usize" => whole("18446744073709551615"),
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a string" => "text in quotes".to_owned(),
        "a sequence" => "a list".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other if other.starts_with("a sequence") => "a list".to_owned(),
        other => other.to_owned(),
    }
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
            ConfigErrorKind::InvalidValue(
                "expected a whole number from 0 to 4294967295, found the text \"3\"".into()
            )
        );
        assert_eq!(
            classify("invalid value: integer `-1`, expected u32", &path),
            ConfigErrorKind::InvalidValue(
                "expected a whole number from 0 to 4294967295, found the whole number -1".into()
            )
        );
        assert_eq!(
            classify("invalid type: boolean `true`, expected a string", &path),
            ConfigErrorKind::InvalidValue("expected text in quotes, found true".into())
        );
        assert_eq!(
            classify("invalid type: sequence, expected struct ListenerConfig", &path),
            ConfigErrorKind::InvalidValue("expected a table, found a list".into())
        );
        // A deserializer's own words stay.
        assert_eq!(
            classify("invalid type: integer `30`, expected a duration such as \"30s\"", &path),
            ConfigErrorKind::InvalidValue(
                "expected a duration such as \"30s\", found the whole number 30".into()
            )
        );
        // Truncated messages fall back to the text rather than failing.
        assert_eq!(
            classify("missing field `", &path),
            ConfigErrorKind::InvalidValue("missing field `".into())
        );
    }
}
