//! JUnit XML reports for CI systems (`udplb-sim run PATH --junit FILE`).
//!
//! One `<testsuite>` per run (named after the PATH given), one `<testcase>` per scenario file:
//! its name is the scenario's name and its class name the file's path. Each failed expectation
//! and each broken invariant is a `<failure>` (the expectation as its message; what was got,
//! and the command that reproduces the run, as its text); a file that cannot be loaded is an
//! `<error>`. The trace goes in the test case's `<system-out>`.
//!
//! The file is deterministic: `time` attributes are the simulated seconds a scenario lasts,
//! never wall-clock time, and there is no timestamp or host name, so the same run writes the
//! same bytes. `sim/tests/data/junit.xsd` is the schema the output is checked against.

use std::fmt::Write as _;
use std::path::Path;

use crate::RunReport;

/// One scenario file's outcome, as a test case.
pub enum Case<'a> {
    /// The scenario ran; `reproduce` is the command line that runs it again the same way.
    Ran { report: &'a RunReport, reproduce: String },
    /// The file could not be read or is not a valid scenario.
    Invalid { file: &'a Path, error: String },
}

impl Case<'_> {
    fn failed(&self) -> bool {
        matches!(self, Case::Ran { report, .. } if !report.passed())
    }

    fn invalid(&self) -> bool {
        matches!(self, Case::Invalid { .. })
    }

    /// Simulated seconds, in milliseconds (zero for a file that did not run).
    fn millis(&self) -> u128 {
        match self {
            Case::Ran { report, .. } => report.timeline.duration.as_millis(),
            Case::Invalid { .. } => 0,
        }
    }
}

/// The command line that runs `file` again with `seed` (and the configuration file `config`,
/// when the run used one).
pub fn reproduce_command(file: &Path, seed: u64, config: Option<&Path>) -> String {
    let config = config.map(|c| format!(" --config {}", c.display())).unwrap_or_default();
    format!("cargo run --release -p udplb-sim -- run {}{config} --seed {seed}", file.display())
}

/// The whole report: one suite named `suite` holding `cases`.
pub fn render(suite: &str, cases: &[Case<'_>]) -> String {
    let tests = cases.len();
    let failures = cases.iter().filter(|c| c.failed()).count();
    let errors = cases.iter().filter(|c| c.invalid()).count();
    let time = seconds(cases.iter().map(Case::millis).sum());
    let counts = format!("tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\"");
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(xml, "<testsuites name=\"udplb-sim\" {counts} time=\"{time}\">");
    let _ = writeln!(
        xml,
        "  <testsuite name=\"{}\" {counts} skipped=\"0\" time=\"{time}\">",
        escape_attribute(suite)
    );
    for case in cases {
        test_case(&mut xml, case);
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn test_case(xml: &mut String, case: &Case<'_>) {
    match case {
        Case::Ran { report, reproduce } => {
            let _ = writeln!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{}\">",
                escape_attribute(&report.name),
                escape_attribute(&report.file.display().to_string()),
                seconds(case.millis())
            );
            for verdict in report.verdicts.iter().filter(|v| !v.passed) {
                let message = format!("expected {}", verdict.what);
                let text =
                    format!("expected {}\ngot {}\nreproduce: {reproduce}", verdict.what, verdict.detail);
                failure(xml, "expectation", &message, &text);
            }
            for violation in &report.violations {
                let message = format!("invariant: {violation}");
                let text = format!("invariant broken: {violation}\nreproduce: {reproduce}");
                failure(xml, "invariant", &message, &text);
            }
            let _ = writeln!(
                xml,
                "      <system-out>seed {}\n{}</system-out>",
                report.seed,
                escape_text(&report.trace)
            );
        }
        Case::Invalid { file, error } => {
            let path = escape_attribute(&file.display().to_string());
            let _ = writeln!(xml, "    <testcase name=\"{path}\" classname=\"{path}\" time=\"0.000\">");
            let message = error.lines().next().unwrap_or_default();
            let _ = writeln!(
                xml,
                "      <error message=\"{}\" type=\"invalid scenario\">{}</error>",
                escape_attribute(message),
                escape_text(error)
            );
        }
    }
    xml.push_str("    </testcase>\n");
}

fn failure(xml: &mut String, kind: &str, message: &str, text: &str) {
    let _ = writeln!(
        xml,
        "      <failure message=\"{}\" type=\"{kind}\">{}</failure>",
        escape_attribute(message),
        escape_text(text)
    );
}

/// Milliseconds as seconds with three decimals.
fn seconds(millis: u128) -> String {
    format!("{}.{:03}", millis / 1000, millis % 1000)
}

/// Text for an element's content: markup characters as entities, and the characters XML 1.0
/// forbids (most control characters, U+FFFE and U+FFFF) written as `\u{..}`, visibly.
pub fn escape_text(text: &str) -> String {
    escape(text, false)
}

/// Text for an attribute value in double quotes: as [`escape_text`], and quotes, tabs and
/// line breaks as character references (a parser turns literal ones into spaces).
pub fn escape_attribute(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            // Kept as a reference everywhere: a parser turns a literal CR into a line feed.
            '\r' => out.push_str("&#13;"),
            '\n' | '\t' => out.push(c),
            c if !allowed(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// XML 1.0's `Char` production (a Rust `char` is never a surrogate).
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_quotes_and_control_characters_are_escaped() {
        let text = "a < b && c > d \"q\" 'a' \u{0}\u{7}\u{1b}[0m\u{b}\u{c}\u{fffe}\u{ffff} ok\u{fffd}é🙂";
        let escaped = escape_text(text);
        assert_eq!(
            escaped,
            "a &lt; b &amp;&amp; c &gt; d \"q\" 'a' \\u{0}\\u{7}\\u{1b}[0m\\u{b}\\u{c}\\u{fffe}\\u{ffff} ok\u{fffd}é🙂"
        );
        assert_eq!(escape_attribute("\"x\"\t'y'\r\nz&"), "&quot;x&quot;&#9;&apos;y&apos;&#13;&#10;z&amp;");
        assert_eq!(escape_text("line 1\nline\t2\r\n"), "line 1\nline\t2&#13;\n");
        // Nothing XML 1.0 forbids survives, whatever the input.
        let every: String = (0u32..0x3_0000).filter_map(char::from_u32).collect();
        for escaped in [escape_text(&every), escape_attribute(&every)] {
            assert!(escaped.chars().all(allowed));
            assert!(!escaped.contains(['<', '>']));
            // Every `&` starts one of the references the escaper writes.
            let references = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#9;", "&#10;", "&#13;"];
            for (at, _) in escaped.match_indices('&') {
                assert!(references.iter().any(|r| escaped[at..].starts_with(r)), "{}", &escaped[at..at + 8]);
            }
        }
        assert!(!escape_attribute(&every).contains(['"', '\n', '\t', '\r']));
    }

    #[test]
    fn seconds_have_three_decimals() {
        assert_eq!(seconds(0), "0.000");
        assert_eq!(seconds(1_500), "1.500");
        assert_eq!(seconds(12_034), "12.034");
    }
}
