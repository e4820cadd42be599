//! The `udplb-sim` command as CI systems use it: exit codes (0 passed, 1 failed, 2 usage or
//! invalid input), the JUnit report of `run --junit` (validated against
//! `sim/tests/data/junit.xsd` with xmllint, read back by a small XML reader here and counted,
//! byte-identical from one run to the next), and `run --config` with a user's own
//! configuration file (`docs/scenarios.md`, "Writing scenarios for your deployment").

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use udplb_sim::scenario::Scenario;

const BINARY: &str = env!("CARGO_BIN_EXE_udplb-sim");

/// A small scenario that passes; `{name}` and `{expect}` are filled in.
const SCENARIO: &str = r#"name = "{name}"
duration = "3s"

[lb.listeners.game]
address = "10.0.0.1:7777"
cluster = "servers"

[lb.clusters.servers]
backends = [{ id = "s1", address = "10.1.0.1:7777" }]

[[backend]]
name = "s1"
address = "10.1.0.1:7777"

[[client]]
name = "player"
address = "192.0.2.10"
listener = "game"
kind = "request_response"
interval = "100ms"
count = 20

[[expect]]
kind = "answered"
at_least = 0.9
{expect}"#;

/// Two expectations no run of [`SCENARIO`] meets.
const IMPOSSIBLE: &str = r#"
[[expect]]
kind = "flows_created"
at_most = 0

[[expect]]
kind = "new_flows_at_least"
backend = "s1"
count = 1000000
"#;

/// A name with every character XML treats specially, and a control character (BEL), which
/// XML 1.0 forbids: the report writes it as `\u{7}`, visibly.
const TRICKY_NAME: &str = r#"tricky <&> \"quoted\" 'apos' \u0007bell"#;
const TRICKY_NAME_READ: &str = "tricky <&> \"quoted\" 'apos' \\u{7}bell";

fn scenario(name: &str, expect: &str) -> String {
    SCENARIO.replace("{name}", name).replace("{expect}", expect)
}

/// A fresh directory for one test.
fn work_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("command_line").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A directory with a passing scenario, a failing one (with a tricky name) and an invalid one.
fn mixed_suite(test: &str) -> PathBuf {
    let dir = work_dir(test);
    let suite = dir.join("suite");
    std::fs::create_dir(&suite).unwrap();
    write(&suite, "a_passes.toml", &scenario("passes", ""));
    write(&suite, "b_fails.toml", &scenario(TRICKY_NAME, IMPOSSIBLE));
    write(
        &suite,
        "c_invalid.toml",
        &scenario(
            "invalid",
            "[[expect]]\nkind = \"health\"\nbackend = \"s9\"\nstate = \"up\"\nby = \"1s\"\n",
        ),
    );
    suite
}

fn udplb_sim(args: &[&str]) -> Output {
    udplb_sim_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").as_path(), args)
}

fn udplb_sim_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY).args(args).current_dir(dir).output().expect("udplb-sim runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("udplb-sim exited (no signal)")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// --- exit codes ---------------------------------------------------------------------------

#[test]
fn exit_code_0_when_every_scenario_passes() {
    let dir = work_dir("exit_0");
    let file = write(&dir, "passes.toml", &scenario("passes", ""));
    let output = udplb_sim(&["run", file.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("1 scenarios, 0 failed"), "{}", stdout(&output));
    // --help too.
    let help = udplb_sim(&["--help"]);
    assert_eq!(code(&help), 0);
    assert!(stdout(&help).contains("exit status"), "{}", stdout(&help));
}

#[test]
fn exit_code_1_when_a_scenario_fails() {
    let dir = work_dir("exit_1");
    write(&dir, "passes.toml", &scenario("passes", ""));
    write(&dir, "fails.toml", &scenario("fails", IMPOSSIBLE));
    let output = udplb_sim(&["run", dir.to_str().unwrap()]);
    assert_eq!(code(&output), 1, "{}{}", stdout(&output), stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("2 scenarios, 1 failed"), "{out}");
    assert!(out.contains("expected flows created <= 0"), "{out}");
}

#[test]
fn exit_code_2_for_usage_errors_and_unusable_files() {
    let dir = work_dir("exit_2");
    let invalid = write(&dir, "invalid.toml", &scenario("invalid", "[[expect]]\nkind = \"nonsense\"\n"));
    let missing = dir.join("missing.toml");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let cases: [&[&str]; 7] = [
        &[],
        &["frobnicate", "scenarios/"],
        &["run"],
        &["run", "scenarios/", "--colour", "red"],
        &["run", missing.to_str().unwrap()],
        &["run", empty.to_str().unwrap()],
        &["run", invalid.to_str().unwrap()],
    ];
    for args in cases {
        let output = udplb_sim(args);
        assert_eq!(code(&output), 2, "udplb-sim {args:?}: {}{}", stdout(&output), stderr(&output));
    }
    // A configuration file that does not exist is an unusable file as well.
    let output = udplb_sim(&["run", "--config", missing.to_str().unwrap(), "scenarios/dns_responses_1.toml"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(stderr(&output).contains("missing.toml: cannot read"), "{}", stderr(&output));
}

#[test]
fn an_invalid_scenario_among_valid_ones_exits_2_after_running_the_others() {
    let suite = mixed_suite("invalid_among_valid");
    let output = udplb_sim(&["run", suite.to_str().unwrap()]);
    assert_eq!(code(&output), 2, "{}{}", stdout(&output), stderr(&output));
    let out = stdout(&output);
    // Every file was tried: the passing one passed, the failing one failed, the invalid one
    // is listed as such and its error is on stderr at its line.
    assert!(out.contains("passes ") && out.contains(" ok"), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(out.contains("INVALID"), "{out}");
    assert!(out.contains("3 scenarios, 1 failed, 1 invalid"), "{out}");
    assert!(stderr(&output).contains("c_invalid.toml:28:11: no backend `s9` in [lb]"), "{}", stderr(&output));
}

// --- JUnit ----------------------------------------------------------------------------------

/// Runs the mixed suite with `--junit` and returns the report.
fn junit_report(test: &str) -> (PathBuf, String) {
    let suite = mixed_suite(test);
    let dir = suite.parent().unwrap().to_owned();
    // Relative paths, as a CI job would give them.
    let output = udplb_sim_in(&dir, &["run", "suite", "--junit", "report.xml"]);
    assert_eq!(code(&output), 2, "{}{}", stdout(&output), stderr(&output));
    let path = dir.join("report.xml");
    let xml = std::fs::read_to_string(&path).expect("the report was written");
    (path, xml)
}

#[test]
fn the_junit_report_is_valid_against_the_schema() {
    let (path, _) = junit_report("junit_schema");
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit.xsd");
    let Some(valid) = xmllint(&schema, &path) else { return };
    assert!(valid.status.success(), "{}{}", stdout(&valid), stderr(&valid));
    // The schema is no rubber stamp: a test case without a name, a failure after the output,
    // or a count that is not a number are refused.
    let report = std::fs::read_to_string(&path).unwrap();
    let breakages = [
        report.replacen("<testcase name=\"passes\"", "<testcase", 1),
        report.replacen("tests=\"3\"", "tests=\"three\"", 1),
        report.replacen("<system-out>", "<system-out/><failure/><system-out>", 1),
    ];
    for (index, broken) in breakages.iter().enumerate() {
        assert_ne!(&report, broken, "breakage {index} changed nothing");
        let file = write(path.parent().unwrap(), &format!("broken-{index}.xml"), broken);
        let verdict = xmllint(&schema, &file).unwrap();
        assert!(!verdict.status.success(), "breakage {index} validated:\n{broken}");
    }
}

/// `xmllint --schema`, or `None` (with a notice) when xmllint is not installed outside CI.
/// Under `CI=true` a missing xmllint fails the test: `ci/test-tools` installs it.
fn xmllint(schema: &Path, file: &Path) -> Option<Output> {
    let run = Command::new("xmllint").arg("--noout").arg("--schema").arg(schema).arg(file).output();
    match run {
        Ok(output) => Some(output),
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("xmllint cannot run under CI=true ({error}): `bash ci/test-tools` installs it")
        }
        Err(error) => {
            eprintln!(
                "NOTICE: JUnit schema validation skipped: xmllint cannot run ({error}); \
                 `bash ci/test-tools` installs it (Debian: libxml2-utils)"
            );
            None
        }
    }
}

#[test]
fn the_junit_report_counts_and_describes_every_scenario() {
    let (_, xml) = junit_report("junit_structure");
    let root = parse_xml(&xml);
    assert_eq!(root.name, "testsuites");
    fn counts(e: &Element) -> (&str, &str, &str) {
        (e.attr("tests"), e.attr("failures"), e.attr("errors"))
    }
    assert_eq!(counts(&root), ("3", "1", "1"));
    assert_eq!(root.children.len(), 1);
    let suite = &root.children[0];
    assert_eq!((suite.name.as_str(), suite.attr("name")), ("testsuite", "suite"));
    assert_eq!(counts(suite), ("3", "1", "1"));
    // Virtual time: three scenarios of 3 s, the invalid one never ran.
    assert_eq!((root.attr("time"), suite.attr("time")), ("6.000", "6.000"));

    let cases: Vec<&Element> = suite.children.iter().filter(|c| c.name == "testcase").collect();
    assert_eq!(cases.len(), 3);
    let names: Vec<(&str, &str)> = cases.iter().map(|c| (c.attr("name"), c.attr("classname"))).collect();
    assert_eq!(
        names,
        [
            ("passes", "suite/a_passes.toml"),
            (TRICKY_NAME_READ, "suite/b_fails.toml"),
            ("suite/c_invalid.toml", "suite/c_invalid.toml"),
        ]
    );

    // Passed: its trace, nothing else.
    let kinds = |c: &Element| c.children.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    assert_eq!(kinds(cases[0]), ["system-out"]);
    assert!(cases[0].child("system-out").text.contains("start: passes"));
    assert_eq!(cases[0].attr("time"), "3.000");

    // Failed: one failure per expectation that failed, each with what was got and how to
    // reproduce it; the tricky name comes back intact from the trace too.
    assert_eq!(kinds(cases[1]), ["failure", "failure", "system-out"]);
    let failures: Vec<&Element> = cases[1].children.iter().filter(|e| e.name == "failure").collect();
    assert_eq!(failures[0].attr("message"), "expected flows created <= 0");
    assert_eq!(failures[1].attr("type"), "expectation");
    assert_eq!(failures[1].attr("message"), "expected at least 1000000 new flows to s1");
    for failure in &failures {
        assert!(failure.text.contains("\ngot "), "{}", failure.text);
        assert!(
            failure
                .text
                .contains("reproduce: cargo run --release -p udplb-sim -- run suite/b_fails.toml --seed 1"),
            "{}",
            failure.text
        );
    }
    let trace = &cases[1].child("system-out").text;
    assert!(trace.starts_with("seed 1\n"), "{trace}");
    // The bell (forbidden in XML 1.0) is written visibly; the rest is the name as it is.
    assert!(trace.contains("start: tricky <&> \"quoted\" 'apos' \\u{7}bell"), "{trace}");

    // Invalid: an error with the loader's message.
    assert_eq!(kinds(cases[2]), ["error"]);
    let error = cases[2].child("error");
    assert!(error.attr("message").contains("c_invalid.toml:28:11: no backend `s9` in [lb]"), "{error:?}");
    assert_eq!(error.text, error.attr("message"));
}

#[test]
fn the_junit_report_is_the_same_bytes_every_run() {
    let (_, first) = junit_report("junit_bytes_1");
    let (_, second) = junit_report("junit_bytes_2");
    assert_eq!(first, second);
}

/// An element as the reader below sees it: its attributes (references decoded) and children,
/// and its text (all of it, concatenated).
#[derive(Debug)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attr(&self, name: &str) -> &str {
        let found = self.attributes.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("<{}> has no {name}", self.name))
    }

    fn child(&self, name: &str) -> &Element {
        self.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("<{}> has no <{name}>", self.name))
    }
}

/// Reads the XML the simulator writes: a declaration, then elements, attributes in double
/// quotes, text and the five entities and character references; no comments, CDATA or DTD.
/// Panics on anything else, on a character XML 1.0 forbids, and on a tag left unclosed.
fn parse_xml(xml: &str) -> Element {
    let rest = xml.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("an XML declaration");
    for c in rest.chars() {
        let allowed =
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..);
        assert!(allowed, "character {c:?} is not allowed in XML 1.0");
    }
    let mut at = 0;
    let root = element(rest, &mut at);
    assert!(rest[at..].trim().is_empty(), "text after the root: {:?}", &rest[at..]);
    root
}

fn element(xml: &str, at: &mut usize) -> Element {
    skip_space(xml, at);
    assert!(xml[*at..].starts_with('<'), "expected a tag at {:?}", &xml[*at..]);
    *at += 1;
    let name = word(xml, at);
    let mut element = Element { name, attributes: Vec::new(), children: Vec::new(), text: String::new() };
    loop {
        skip_space(xml, at);
        if xml[*at..].starts_with("/>") {
            *at += 2;
            return element;
        }
        if xml[*at..].starts_with('>') {
            *at += 1;
            break;
        }
        let key = word(xml, at);
        assert!(xml[*at..].starts_with("=\""), "attribute {key} without a quoted value");
        *at += 2;
        let end = *at + xml[*at..].find('"').expect("a closing quote");
        let raw = &xml[*at..end];
        assert!(!raw.contains('<'), "`<` in attribute {key}");
        element.attributes.push((key, decode(raw)));
        *at = end + 1;
    }
    loop {
        let next = *at + xml[*at..].find('<').expect("a closing tag");
        element.text.push_str(&decode(&xml[*at..next]));
        *at = next;
        if xml[*at..].starts_with("</") {
            *at += 2;
            let closing = word(xml, at);
            assert_eq!(closing, element.name, "mismatched closing tag");
            assert!(xml[*at..].starts_with('>'));
            *at += 1;
            return element;
        }
        element.children.push(self::element(xml, at));
    }
}

fn skip_space(xml: &str, at: &mut usize) {
    while xml[*at..].starts_with([' ', '\n', '\t', '\r']) {
        *at += 1;
    }
}

fn word(xml: &str, at: &mut usize) -> String {
    let length = xml[*at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_')).unwrap();
    assert!(length > 0, "expected a name at {:?}", &xml[*at..]);
    let word = xml[*at..*at + length].to_owned();
    *at += length;
    word
}

/// Decodes entities and character references; `>` alone is allowed, `&` alone is not.
fn decode(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some(start) = rest.find('&') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find(';').expect("a reference ends with `;`");
        let reference = &rest[start + 1..end];
        let decoded = match reference {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let number =
                    reference.strip_prefix('#').unwrap_or_else(|| panic!("unknown entity &{reference};"));
                let value = match number.strip_prefix('x') {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => number.parse(),
                };
                char::from_u32(value.unwrap()).unwrap()
            }
        };
        out.push(decoded);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_xml_reader_refuses_what_is_not_xml() {
    // So that the structural test above cannot pass on a broken report.
    let cases = [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a><b></a></b>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>x & y</a>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>\u{7}</a>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a b=\"<\"/>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>",
    ];
    for case in cases {
        assert!(std::panic::catch_unwind(|| parse_xml(case)).is_err(), "accepted {case:?}");
    }
    let fine =
        parse_xml("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a k=\"&quot;&#10;&lt;\">x &amp; y<b/></a>\n");
    assert_eq!((fine.attr("k"), fine.text.as_str(), fine.children.len()), ("\"\n<", "x & y", 1));
}

// --- a user's own configuration -------------------------------------------------------------

const EXAMPLE_CONFIG: &str = "examples/quic.toml";
const EXAMPLE_SCENARIO: &str = "examples/scenarios/quic_backend_dies.toml";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_worked_example_passes_against_its_configuration() {
    let output = udplb_sim(&["run", "--config", EXAMPLE_CONFIG, EXAMPLE_SCENARIO]);
    assert_eq!(code(&output), 0, "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("quic-backend-dies"), "{}", stdout(&output));
    // The same through the library: the configuration is the file's, unchanged.
    let root = repository();
    let scenario =
        Scenario::load_with_config(&root.join(EXAMPLE_SCENARIO), &root.join(EXAMPLE_CONFIG)).unwrap();
    let text = std::fs::read_to_string(root.join(EXAMPLE_CONFIG)).unwrap();
    assert_eq!(scenario.lb, udplb_core::Config::from_toml_str(&text).unwrap());
    let report = udplb_sim::run(&scenario, &root.join(EXAMPLE_SCENARIO), None);
    assert!(report.passed(), "{:?} {:?}", report.verdicts, report.violations);
    assert_eq!(report.verdicts.len(), 7);
    // Without the configuration it is not a scenario: it has no [lb].
    let alone = Scenario::load(&root.join(EXAMPLE_SCENARIO)).unwrap_err().to_string();
    assert!(alone.ends_with("quic_backend_dies.toml: no [lb]: a scenario without one runs against a configuration file (`udplb-sim run --config FILE SCENARIO`)"), "{alone}");
}

/// The worked example with `from` replaced by `to` (which must be there), written to a fresh
/// file; returns the error of loading it with the example configuration.
fn example_error(test: &str, from: &str, to: &str) -> String {
    let root = repository();
    let text = std::fs::read_to_string(root.join(EXAMPLE_SCENARIO)).unwrap();
    assert!(text.contains(from), "the example has no {from:?}");
    let file = write(&work_dir(test), "scenario.toml", &text.replacen(from, to, 1));
    let error = Scenario::load_with_config(&file, &root.join(EXAMPLE_CONFIG)).unwrap_err().to_string();
    error.replace(&format!("{}/", file.parent().unwrap().display()), "")
}

fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(repository().join(file)).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in {file}")) + 1
}

#[test]
fn a_name_the_configuration_lacks_is_an_error_at_its_line_naming_the_configuration() {
    let line = line_of(EXAMPLE_SCENARIO, "backend = \"h3-c\"");
    let error = example_error("user_config_backend", "backend = \"h3-c\"", "backend = \"h3-d\"");
    let config = repository().join(EXAMPLE_CONFIG).display().to_string();
    assert_eq!(
        error,
        format!(
            "scenario.toml:{line}:11: no backend `h3-d` in {config}; there are: `h3-a`, `h3-b`, `h3-c`, `h3-remote`"
        )
    );
    let line = line_of(EXAMPLE_SCENARIO, "listener = \"quic\"");
    let error = example_error("user_config_listener", "listener = \"quic\"", "listener = \"dns\"");
    assert_eq!(error, format!("scenario.toml:{line}:12: no listener `dns` in {config}; there are: `quic`"));
    // Through the command line, with the paths as given.
    let dir = work_dir("user_config_cli");
    let text = std::fs::read_to_string(repository().join(EXAMPLE_SCENARIO)).unwrap();
    write(&dir, "scenario.toml", &text.replacen("backend = \"h3-c\"", "backend = \"h3-d\"", 1));
    let config = repository().join(EXAMPLE_CONFIG);
    let output = udplb_sim_in(&dir, &["run", "scenario.toml", "--config", config.to_str().unwrap()]);
    assert_eq!(code(&output), 2);
    let line = line_of(EXAMPLE_SCENARIO, "backend = \"h3-c\"");
    let expected = format!("scenario.toml:{line}:11: no backend `h3-d` in {}", config.display());
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

#[test]
fn a_backend_host_away_from_the_configured_address_is_an_error_with_both_addresses() {
    let config = repository().join(EXAMPLE_CONFIG).display().to_string();
    // A host named as a backend, elsewhere.
    let line = line_of(EXAMPLE_SCENARIO, "address = \"10.0.3.12:443\"");
    let error =
        example_error("user_config_moved", "address = \"10.0.3.12:443\"", "address = \"10.0.3.99:443\"");
    assert_eq!(
        error,
        format!(
            "scenario.toml:{line}:11: [[backend]] `h3-b` is at 10.0.3.99:443, but {config} puts backend \
             `h3-b` at 10.0.3.12:443: a host named as a backend must be at that backend's address"
        )
    );
    // A backend of the configuration with no host at its address (its host renamed and moved):
    // the error points at the backend in the configuration file.
    let line = line_of(EXAMPLE_CONFIG, "address = \"10.1.3.11:443\"");
    let error = example_error(
        "user_config_no_host",
        "name = \"h3-remote\"\naddress = \"10.1.3.11:443\"",
        "name = \"spare\"\naddress = \"10.1.3.12:443\"",
    );
    assert_eq!(
        error,
        format!(
            "{config}:{line}:11: backend `h3-remote` is at 10.1.3.11:443, and scenario.toml has no \
             [[backend]] host at that address"
        )
    );
}

#[test]
fn the_scenarios_own_lb_is_replaced_and_a_broken_configuration_is_reported_at_its_line() {
    let dir = work_dir("user_config_replaced");
    // A scenario with an [lb] of its own, whose listener the clients do not use: loaded alone
    // it is refused, loaded with the configuration it runs on the configuration's.
    let root = repository();
    let text = std::fs::read_to_string(root.join(EXAMPLE_SCENARIO)).unwrap();
    let own_lb = "[lb.listeners.other]\naddress = \"10.0.0.1:53\"\ncluster = \"c\"\n\n[lb.clusters.c]\n\
                  backends = [{ id = \"x\", address = \"10.9.9.9:53\" }]\n";
    let file = write(&dir, "scenario.toml", &format!("{text}\n{own_lb}"));
    assert!(Scenario::load(&file).unwrap_err().to_string().contains("no listener `quic` in [lb]"));
    let scenario = Scenario::load_with_config(&file, &root.join(EXAMPLE_CONFIG)).unwrap();
    assert_eq!(scenario.lb.listeners.keys().collect::<Vec<_>>(), ["quic"]);
    // A configuration the balancer itself would refuse is refused here, at its line.
    let config_text = std::fs::read_to_string(root.join(EXAMPLE_CONFIG)).unwrap();
    let broken = write(&dir, "broken.toml", &config_text.replacen("rise = 3", "rise = 0", 1));
    let error = Scenario::load_with_config(&file, &broken).unwrap_err().to_string();
    let line = line_of(EXAMPLE_CONFIG, "rise = 3");
    assert!(error.starts_with(&format!("{}:{line}:", broken.display())), "{error}");
    assert!(error.contains("rise"), "{error}");
}
