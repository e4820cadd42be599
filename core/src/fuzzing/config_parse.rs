//! `config_parse`: arbitrary text through the configuration parser.

use crate::config::{Config, ConfigErrorKind, Location};

/// Texts longer than this are cut: the parser's cost grows with the text, and nothing a
/// longer text could reach is out of reach of a shorter one.
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// Parses `data` (lossily decoded as UTF-8) with [`Config::from_toml_str`].
///
/// Promises checked: the parser never panics; a rejection has at least one error, and every
/// error has a typed kind, a field (unless it is a syntax error), a location inside the text
/// and a message that renders on one line; an accepted configuration passes
/// [`Config::validate`] (the parser validates) and survives a trip through `Serialize` and
/// back; and parsing the same text again gives the same answer (nothing depends on hashing
/// or on a previous call).
pub fn config_parse(data: &[u8]) {
    let data = data.get(..MAX_TEXT_BYTES).unwrap_or(data);
    // Lossy decoding keeps every input meaningful; invalid UTF-8 is the shell's concern (it
    // reads the file), not the parser's.
    let text = String::from_utf8_lossy(data);
    let result = Config::from_toml_str(&text);
    match &result {
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()), "an accepted configuration fails validation");
            let text = toml::to_string(config).expect("a configuration always serializes");
            assert_eq!(&Config::from_toml_str(&text), &result, "serialized configuration differs:\n{text}");
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a rejection without an error");
            let end = Location::from_offset(&text, text.len());
            for error in errors.iter() {
                let Location { line, column } = error.location;
                assert!(line >= 1 && column >= 1, "{error:?}: locations are 1-based");
                assert!(error.location <= end, "{error:?}: location past the end of the text ({end})");
                // Syntax errors are about the document; every other kind names a field.
                if !matches!(error.kind, ConfigErrorKind::Syntax(_)) {
                    assert!(!error.path.is_root(), "{error:?}: a schema or validation error without a field");
                }
                assert!(!error.kind.to_string().is_empty(), "{error:?}: an empty message");
                if let ConfigErrorKind::Invalid(validation) = &error.kind {
                    assert_eq!(error.path, validation.path(), "{error:?}: the path is not the rule's");
                }
            }
            // `udplb check` prints one line per error, which editors and CI logs link.
            let rendered = errors.render("fuzz.toml");
            assert_eq!(
                rendered.lines().count(),
                errors.len(),
                "an error renders over several lines:\n{rendered}"
            );
        }
    }
    assert_eq!(Config::from_toml_str(&text), result, "parsing the same text twice disagrees");
}
