//! What can be wrong with a configuration text, and where: a typed kind, the field path and
//! a line and column.
//!
//! [`ConfigErrors::render`] is the operator-facing form (`udplb check` prints it): one line
//! per error, ``<file>:<line>:<column>: field `<path>`: <message>``, which editors and CI logs
//! turn into links.

use std::fmt;

use super::ValidationError;

/// A 1-based line and column in the configuration text.
///
/// Columns count characters (Unicode scalar values), not bytes, so they match what an
/// editor shows on a line with non-ASCII text. Locations order by line, then column.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// The first character of the text.
    pub const START: Location = Location { line: 1, column: 1 };

    /// The location of byte `offset` in `text`. An offset past the end is moved to the end,
    /// and one inside a multi-byte character to that character's start, so every offset has
    /// a location.
    pub fn from_offset(text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times; offset 0
        // is always a boundary.
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Location { line: before.matches('\n').count() + 1, column: before[line_start..].chars().count() + 1 }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One step of a [`FieldPath`]: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSegment {
    /// A key in a table (a field name, or a listener or cluster name).
    Key(String),
    /// An index in an array (a backend's position in `backends`, from 0).
    Index(usize),
}

/// Where a value sits in the document: keys and array indexes from the root.
///
/// It displays in TOML's own dotted-key syntax with array indexes, such as
/// `clusters.dns.backends[1].address`. Names may contain `.`, so a key that is not a bare
/// TOML key is quoted as TOML quotes it (`listeners."dns.v2".address`): every displayed
/// path names exactly one place, and can be pasted back into the file. The root (a
/// document-level error) displays as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(Vec<PathSegment>);

impl FieldPath {
    /// The document itself.
    pub fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    /// This path followed by the table key `key`.
    pub fn key(mut self, key: impl Into<String>) -> FieldPath {
        self.0.push(PathSegment::Key(key.into()));
        self
    }

    /// This path followed by the array index `index`.
    pub fn index(mut self, index: usize) -> FieldPath {
        self.0.push(PathSegment::Index(index));
        self
    }

    /// The steps from the root, in order.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// Whether this is the document itself (no steps).
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last key on the path, if the path ends in one.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(PathSegment::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl FromIterator<PathSegment> for FieldPath {
    fn from_iter<I: IntoIterator<Item = PathSegment>>(segments: I) -> FieldPath {
        FieldPath(segments.into_iter().collect())
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    write_key(f, key)?;
                }
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Writes `key` bare when TOML allows it (`A-Z a-z 0-9 _ -`, non-empty), else as a TOML
/// basic string.
fn write_key(f: &mut fmt::Formatter<'_>, key: &str) -> fmt::Result {
    let bare = !key.is_empty()
        && key.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        return f.write_str(key);
    }
    f.write_str("\"")?;
    for character in key.chars() {
        match character {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            control if control.is_control() => write!(f, "\\u{:04X}", u32::from(control))?,
            other => write!(f, "{other}")?,
        }
    }
    f.write_str("\"")
}

/// What is wrong. Each kind's message stands on its own; [`ConfigError`] adds where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The text is not valid TOML (the message is the TOML parser's). Its path is empty.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// A key that the schema does not have, often a typo.
    #[error("unknown field `{field}`; {}", ExpectedNames { names: expected, quote: '`' })]
    UnknownField {
        /// The key as written.
        field: String,
        /// The keys this table accepts.
        expected: Vec<String>,
    },
    /// A string that is not one of the accepted choices (`mode = "always"`).
    #[error("unknown value {variant:?}; {}", ExpectedNames { names: expected, quote: '"' })]
    UnknownVariant {
        /// The value as written.
        variant: String,
        /// The accepted values.
        expected: Vec<String>,
    },
    /// A required key is absent. The error's path ends with the missing key; its location is
    /// the table that should hold it.
    #[error("missing required field `{field}`")]
    MissingField {
        /// The missing key.
        field: String,
    },
    /// A value of the wrong type, or one that does not parse (a duration, an address, a
    /// number out of range for its type).
    #[error("{0}")]
    InvalidValue(String),
    /// The text parses, but [`Config::validate`](super::Config::validate) rejects it.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Formats the names a table or a choice accepts: "expected `a`", "expected `a` or `b`",
/// "expected one of `a`, `b`, `c`".
struct ExpectedNames<'a> {
    names: &'a [String],
    quote: char,
}

impl fmt::Display for ExpectedNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = self.quote;
        match self.names {
            [] => f.write_str("nothing is accepted here"),
            [only] => write!(f, "expected {quote}{only}{quote}"),
            [first, second] => {
                write!(f, "expected {quote}{first}{quote} or {quote}{second}{quote}")
            }
            names => {
                f.write_str("expected one of ")?;
                for (position, name) in names.iter().enumerate() {
                    if position > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{quote}{name}{quote}")?;
                }
                Ok(())
            }
        }
    }
}

/// One error: what is wrong, at which field, and where in the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// What is wrong.
    pub kind: ConfigErrorKind,
    /// The field, or the root for a syntax error.
    pub path: FieldPath,
    /// The offending key or value; for a key that is absent, the table that should hold it.
    pub location: Location,
}

/// The part of a rendered error after the location: "field `<path>`: <message>", or just
/// the message for a document-level error, which has no field.
struct FieldAndMessage<'a>(&'a ConfigError);

impl fmt::Display for FieldAndMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        if error.path.is_root() {
            write!(f, "{}", error.kind)
        } else {
            write!(f, "field `{}`: {}", error.path, error.kind)
        }
    }
}

/// `line 7, column 11: field `listeners.dns.address`: <message>`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, FieldAndMessage(self))
    }
}

// The message already includes the kind's own message, so there is no separate `source()`:
// error reporters would otherwise print it twice.
impl std::error::Error for ConfigError {}

/// Every error found in one configuration text, sorted by location. Never empty when
/// returned by [`Config::from_toml_str`](super::Config::from_toml_str).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One line per error, ``<file>:<line>:<column>: field `<path>`: <message>``, joined by
    /// newlines, without a trailing newline. `file` is printed as given.
    pub fn render(&self, file: &str) -> String {
        self.0
            .iter()
            .map(|error| {
                let Location { line, column } = error.location;
                format!("{file}:{line}:{column}: {}", FieldAndMessage(error))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One error per line, each as [`ConfigError`] displays.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, error) in self.0.iter().enumerate() {
            if position > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_characters_from_one() {
        let text = "a = 1\nb = \"é\" x\n";
        assert_eq!(Location::from_offset(text, 0), Location::START);
        assert_eq!(Location::from_offset(text, 4), Location { line: 1, column: 5 });
        assert_eq!(Location::from_offset(text, 6), Location { line: 2, column: 1 });
        // "é" is two bytes but one column: the `x` after it is at byte 15, column 9.
        assert_eq!(Location::from_offset(text, 15), Location { line: 2, column: 9 });
    }

    #[test]
    fn location_of_an_offset_past_the_end_or_inside_a_character_is_clamped() {
        let text = "é\n";
        assert_eq!(Location::from_offset(text, 1), Location::START);
        assert_eq!(Location::from_offset(text, 99), Location { line: 2, column: 1 });
        assert_eq!(Location::from_offset("", 5), Location::START);
    }

    #[test]
    fn path_quotes_keys_that_are_not_bare() {
        let path = FieldPath::root().key("listeners").key("dns.v2").key("address");
        assert_eq!(path.to_string(), "listeners.\"dns.v2\".address");
        let path = FieldPath::root().key("clusters").key("").key("backends").index(1);
        assert_eq!(path.to_string(), "clusters.\"\".backends[1]");
        let path = FieldPath::root().key("a\"b\\c\u{1}");
        assert_eq!(path.to_string(), "\"a\\\"b\\\\c\\u0001\"");
        assert_eq!(FieldPath::root().to_string(), "");
    }

    #[test]
    fn expected_names_read_as_a_sentence() {
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        let kind = |expected| ConfigErrorKind::UnknownField { field: "x".into(), expected };
        assert_eq!(kind(names(&[])).to_string(), "unknown field `x`; nothing is accepted here");
        assert_eq!(kind(names(&["a"])).to_string(), "unknown field `x`; expected `a`");
        assert_eq!(kind(names(&["a", "b"])).to_string(), "unknown field `x`; expected `a` or `b`");
        assert_eq!(
            kind(names(&["a", "b", "c"])).to_string(),
            "unknown field `x`; expected one of `a`, `b`, `c`"
        );
    }
}
