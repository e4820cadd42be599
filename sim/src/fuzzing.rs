//! Fuzz target bodies of the simulator (feature `fuzzing`), in the pattern of
//! `udplb_core::fuzzing`: one function per target taking the fuzzer's bytes, panicking exactly
//! when a promise is broken. `fuzz/fuzz_targets/scenario_parse.rs` is a one-line wrapper, and
//! `tests/fuzz_corpus.rs` replays the committed corpus (`fuzz/corpus/scenario_parse/`) and
//! every crash reproducer (`fuzz/regressions/scenario_parse/`) in a plain `cargo test`.
//!
//! The body lives here rather than in the fuzz target so that the replay runs on stable
//! without cargo-fuzz, as the core's do; it needs nothing private, so the feature only keeps
//! it out of the crate's ordinary surface.

use crate::scenario::Scenario;

/// Texts longer than this are cut, as `config_parse` cuts them: the parser's cost grows with
/// the text, and the committed scenarios are all shorter.
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// A target body: the fuzzer's bytes in, a panic out when a promise is broken.
pub type Target = fn(&[u8]);

/// Every target of this crate, by the name of its directory under `fuzz/corpus/` and of its
/// cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[("scenario_parse", scenario_parse)];

/// Parses `data` (lossily decoded as UTF-8) with [`Scenario::parse`].
///
/// Promises checked: the parser never panics; every rejection is a non-empty message whose
/// every line starts with its place, `LINE:COLUMN: ` (1-based, inside the text) or, where the
/// place is unknown (a rule between fields, a configuration validation error), a single space
/// (the form `Scenario::load` puts the file's path in front of), and says something after it;
/// several lines appear only where several validation errors are reported, one per line; and
/// parsing the same text twice gives the same answer.
pub fn scenario_parse(data: &[u8]) {
    let data = data.get(..MAX_TEXT_BYTES).unwrap_or(data);
    // Lossy decoding keeps every input meaningful; invalid UTF-8 is `Scenario::load`'s concern.
    let text = String::from_utf8_lossy(data);
    let result = Scenario::parse(&text);
    if let Err(error) = &result {
        let message = error.to_string();
        assert!(!message.is_empty(), "a rejection without a message");
        let lines = text.split('\n').count();
        for line in message.split('\n') {
            check_error_line(line, lines, &text);
        }
    }
    let again = Scenario::parse(&text);
    assert_eq!(format!("{result:?}"), format!("{again:?}"), "parsing the same text twice disagrees");
}

/// One line of a rejection: `LINE:COLUMN: message` with the place inside the text, or
/// ` message`.
fn check_error_line(line: &str, lines: usize, text: &str) {
    let message = if let Some(unlocated) = line.strip_prefix(' ') {
        unlocated
    } else {
        let mut parts = line.splitn(3, ':');
        let (Some(row), Some(column), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("an error line without a place: {line:?}");
        };
        let (Ok(row), Ok(column)) = (row.parse::<usize>(), column.parse::<usize>()) else {
            panic!("an error line without a place: {line:?}");
        };
        assert!(row >= 1 && column >= 1, "places are 1-based: {line:?}");
        assert!(row <= lines, "{line:?}: line {row} is past the end of the text ({lines} lines)");
        let width = text.split('\n').nth(row - 1).map_or(0, |l| l.chars().count());
        assert!(column <= width + 1, "{line:?}: column {column} is past the end of its line ({width})");
        rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space after the place: {line:?}"))
    };
    assert!(!message.trim().is_empty(), "an error line without a message: {line:?}");
}
