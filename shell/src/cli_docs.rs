//! The man page (`udplb man`, hidden) and shell completion scripts (`udplb completions
//! SHELL`), both generated from the command line definition ([`Cli`]), so that neither can
//! say something the binary does not do. Part of the binary, not of the library: the
//! definition lives in `main.rs`. The Debian package (`packaging/build-deb`) installs what
//! these print.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::Cli;
use udplb::ctl;

/// Prints the completion script for `shell` on stdout.
pub fn print_completions(shell: Shell) -> ExitCode {
    print(&completions(shell))
}

/// Prints the man page, in roff, on stdout.
pub fn print_man_page() -> ExitCode {
    match man_page() {
        Ok(page) => print(&page),
        Err(error) => {
            eprintln!("udplb man: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("udplb: writing to stdout: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The completion script for `shell`.
fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "udplb", &mut script);
    script
}

/// The command line definition as the man page shows it: no `help` subcommands, and no
/// `-h` in each command's section (the top level's OPTIONS says it once).
fn documented_command() -> clap::Command {
    fn without_help(command: clap::Command) -> clap::Command {
        command.disable_help_flag(true).disable_help_subcommand(true).mut_subcommands(without_help)
    }
    let mut command = Cli::command().disable_help_subcommand(true).mut_subcommands(without_help);
    command.build();
    command
}

const ENVIRONMENT: &[(&str, &str)] = &[
    ("UDPLB_LOG", "The log level of udplb run: error, warn, info (the default), debug or trace."),
    (
        "NO_COLOR",
        "Any non-empty value turns colour off in log lines, which are coloured only when standard error \
         is a terminal.",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd for a Type=notify service: udplb reports there when it is ready, reloading and \
         stopping.",
    ),
];

const FILES: &[(&str, &str)] = &[
    ("/etc/udplb/udplb.toml", "The configuration file the packaged systemd unit, udplb.service, runs."),
    (ctl::DEFAULT_SOCKET, "Where udplb ctl looks for the control socket when given neither --socket nor -c."),
    (
        "/usr/share/doc/udplb/examples/",
        "The Debian package's example configurations: DNS, syslog, QUIC, a minimal one.",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    ("SIGHUP", "Reload the configuration file; an invalid file changes nothing."),
    (
        "SIGTERM, SIGINT",
        "Drain: listeners take no new flows, existing flows end by their own rules or at the listener's \
         drain_timeout, then udplb exits 0.",
    ),
];

/// udplb(1): NAME, SYNOPSIS and OPTIONS as clap_mangen renders them, a description, then one
/// entry per command (its usage, what it does, its arguments), then what the command line
/// cannot say: environment, files, signals, exit status.
fn man_page() -> std::io::Result<Vec<u8>> {
    let command = documented_command();
    let man = Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    Roff::new()
        .control("SH", ["DESCRIPTION"])
        .text([
            bold("udplb"),
            roman(
                " forwards datagrams from its listeners to healthy backends, keeps each client on its \
                 backend for the life of its flow, and carries the replies back. Everything it does is \
                 set in one TOML configuration file: ",
            ),
            bold("udplb check"),
            roman(" validates one, "),
            bold("udplb run"),
            roman(" runs it, and "),
            bold("udplb ctl"),
            roman(" asks the running process about its state or changes it."),
        ])
        .to_writer(&mut page)?;
    man.render_options_section(&mut page)?;

    Roff::new().control("SH", ["COMMANDS"]).to_writer(&mut page)?;
    for sub in visible_subcommands(&command) {
        command_entries(sub, &mut page)?;
    }

    let mut roff = Roff::new();
    for (heading, items) in [("ENVIRONMENT", ENVIRONMENT), ("FILES", FILES), ("SIGNALS", SIGNALS)] {
        roff.control("SH", [heading]);
        for (term, text) in items {
            roff.control("TP", []).text([bold(*term)]).text([roman(*text)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]).text([roman(
        "0 on success; 1 for an invalid configuration, a command the running udplb refused, or a \
         control socket that cannot be reached; 2 for a command line that does not parse.",
    )]);
    roff.control("SH", ["SEE ALSO"]).text([
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), and /usr/share/doc/udplb/ for the configuration reference and the operations guide."),
    ]);
    roff.to_writer(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(preamble_once(page))
}

/// Every piece roff renders starts with the same two-line preamble (how to print an
/// apostrophe); the page needs it once, at the top.
fn preamble_once(page: Vec<u8>) -> Vec<u8> {
    let page = String::from_utf8_lossy(&page);
    let preamble: String = page.split_inclusive('\n').take(2).collect();
    let body = page[preamble.len()..].replace(&preamble, "");
    format!("{preamble}{body}").into_bytes()
}

fn visible_subcommands(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|sub| !sub.is_hide_set())
}

/// One entry for `command` (its usage line, what it does, its arguments), then its
/// subcommands' entries.
fn command_entries(command: &clap::Command, page: &mut Vec<u8>) -> std::io::Result<()> {
    let usage = command.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim();
    let mut roff = Roff::new();
    roff.control("SS", [usage]);
    if let Some(about) = command.get_long_about().or_else(|| command.get_about()) {
        for paragraph in about.to_string().split("\n\n") {
            roff.control("PP", []).text([roman(paragraph.replace('\n', " "))]);
        }
    }
    roff.to_writer(page)?;
    // clap_mangen's OPTIONS section without its heading: the arguments sit under the entry.
    let mut options = Vec::new();
    Man::new(command.clone()).render_options_section(&mut options)?;
    for line in String::from_utf8_lossy(&options).lines().filter(|line| !line.starts_with(".SH")) {
        writeln!(page, "{line}")?;
    }
    for sub in visible_subcommands(command) {
        command_entries(sub, page)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> String {
        String::from_utf8(man_page().expect("render the man page")).expect("UTF-8")
    }

    /// Each entry's command, without its arguments: `udplb ctl backend pause` for the entry
    /// `.SS "udplb ctl backend <CLUSTER> <ID> pause"`.
    fn entries(page: &str) -> Vec<String> {
        let headings = page.lines().filter_map(|line| line.strip_prefix(".SS "));
        let words = |heading: &str| {
            let heading = heading.trim_matches('"').to_owned();
            let words = heading.split(' ').filter(|word| !word.starts_with(['<', '[', '-']));
            words.collect::<Vec<_>>().join(" ")
        };
        headings.map(words).collect()
    }

    #[test]
    fn the_man_page_has_an_entry_for_every_command() {
        let page = page();
        let entries = entries(&page);
        fn walk(command: &clap::Command, entries: &[String]) {
            for sub in visible_subcommands(command) {
                let name = sub.get_bin_name().expect("built");
                assert!(entries.iter().any(|entry| entry == name), "no entry for `{name}` in {entries:?}");
                walk(sub, entries);
            }
        }
        walk(&documented_command(), &entries);
        for name in ["udplb run", "udplb check", "udplb ctl", "udplb ctl show backends", "udplb completions"]
        {
            assert!(entries.iter().any(|entry| entry == name), "no entry for `{name}` in {entries:?}");
        }
        assert!(!entries.iter().any(|entry| entry.contains("man")), "the hidden `man` is documented");
        assert!(!entries.iter().any(|entry| entry.contains("help")), "clap's `help` is documented");
    }

    #[test]
    fn the_man_page_names_its_arguments_and_version() {
        let page = page();
        assert!(page.lines().any(|line| line.starts_with(".TH udplb 1 ")), "{page}");
        assert_eq!(page.matches(".ds Aq").count(), 2, "the preamble is not once at the top:\n{page}");
        for text in
            ["\\-\\-config", "\\-\\-deny\\-warnings", "\\-\\-share\\-listeners", "\\-\\-socket", "UDPLB_LOG"]
        {
            assert!(page.contains(text), "{text} missing");
        }
        // The package version: a test build adds "(test-only features: …)", escaped in roff.
        assert!(page.contains(&format!("v{}", env!("CARGO_PKG_VERSION"))), "no version section");
    }

    #[test]
    fn completions_name_every_command() {
        let bash = String::from_utf8(completions(Shell::Bash)).expect("UTF-8");
        for word in ["udplb", "run", "check", "ctl", "show", "backends", "--config", "completions"] {
            assert!(bash.contains(word), "bash completions lack {word}");
        }
        for shell in [Shell::Zsh, Shell::Fish] {
            let script = String::from_utf8(completions(shell)).expect("UTF-8");
            assert!(script.contains("ctl"), "{shell} completions lack ctl");
        }
    }
}
