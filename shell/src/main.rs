//! `udplb`: run the balancer, check a configuration file, or talk to a running balancer.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};
use tracing_subscriber::util::SubscriberInitExt;
use udplb::ctl::CtlCommand;
use udplb::{ctl, start, system};
use udplb_core::Config;
use udplb_core::config::LogFormat;

mod cli_docs;

#[derive(Parser)]
#[command(name = "udplb", version = VERSION.as_str(), about = "A UDP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer with a configuration file.
    Run {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Bind listener addresses that another process already serves (by default udplb
        /// refuses to start, since the kernel would split new clients between the two).
        #[arg(long)]
        share_listeners: bool,
        /// Take over from the udplb running with this configuration's control socket: its
        /// listener, upstream and probe sockets and its flows pass to this process, which
        /// serves them on; the old process then exits. Nothing is dropped or re-hashed
        /// (docs/operations.md, "Upgrading without losing flows").
        #[arg(long)]
        takeover: bool,
        /// With --takeover: start with an empty flow table and take only the listeners; the
        /// old process keeps serving its flows (relayed to it) until they end, at most its
        /// process.stop_timeout. This is also what --takeover does by itself when this build
        /// cannot read the old process's state.
        #[arg(long, requires = "takeover")]
        fresh: bool,
    },
    /// Check a configuration file: exit 0 if valid; otherwise print every error with file,
    /// line, column and field, and exit 1. Risky settings are printed as warnings.
    Check {
        /// The configuration file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Treat warnings as errors: exit 1 if there is any.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Talk to a running udplb over its control socket: show state, change backends,
    /// reload, watch events. Prints tables for people; `--json` prints the server's JSON.
    Ctl {
        /// The control socket (default: /run/udplb/control.sock).
        #[arg(long, conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Read the socket's path from this configuration file's `process.control_socket`.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print the server's JSON lines instead of tables.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for the answer before giving up with an explanation.
        #[arg(long, default_value_t = ctl::ANSWER_TIMEOUT.as_secs_f64())]
        timeout: f64,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Print a shell completion script on stdout.
    ///
    /// For instance `udplb completions bash > ~/.local/share/bash-completion/completions/udplb`;
    /// the Debian package installs the scripts for bash, zsh and fish.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) on stdout; the Debian package installs it as udplb(1).
    #[command(hide = true)]
    Man,
}

/// What `udplb --version` prints after the name.
static VERSION: LazyLock<String> = LazyLock::new(|| version_text(udplb_core::TEST_FEATURES));

/// The package version, followed by the test-only features the core was built with, if any:
/// none in a build that ships; `cargo test --workspace` builds one with some
/// (`docs/testing.md`, "Test-only features and the binary the shell's tests run").
fn version_text(test_features: &[&str]) -> String {
    let version = env!("CARGO_PKG_VERSION");
    if test_features.is_empty() {
        version.to_owned()
    } else {
        format!("{version} (test-only features: {})", test_features.join(", "))
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Completions { shell } => cli_docs::print_completions(shell),
        Command::Man => cli_docs::print_man_page(),
        Command::Check { config, deny_warnings } => match load(&config) {
            Ok(loaded) => {
                let file = config.display().to_string();
                let warnings = warnings(&loaded, system::raise_nofile_limit());
                if !warnings.is_empty() {
                    let text = std::fs::read_to_string(&config).unwrap_or_default();
                    eprintln!("{}", udplb_core::config::render_warnings(&text, &file, &warnings));
                }
                let backends: usize = loaded.clusters.values().map(|c| c.backends.len()).sum();
                let noted = match warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_owned(),
                    n => format!(", {n} warnings"),
                };
                if deny_warnings && !warnings.is_empty() {
                    eprintln!("{file}: valid{noted}, and --deny-warnings makes warnings errors");
                    return ExitCode::FAILURE;
                }
                println!(
                    "{file}: ok ({} listeners, {} clusters, {backends} backends){noted}",
                    loaded.listeners.len(),
                    loaded.clusters.len()
                );
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl { socket, config, json, timeout, command } => {
            let Ok(timeout) = std::time::Duration::try_from_secs_f64(timeout)
                .map(|t| t.max(std::time::Duration::from_millis(1)))
            else {
                eprintln!("udplb ctl: --timeout {timeout} is not a number of seconds");
                return command.failure_code();
            };
            let socket = match (socket, config) {
                (Some(socket), _) => socket,
                (None, Some(config)) => match ctl::socket_from_config(&config) {
                    Ok(socket) => socket,
                    Err(error) => {
                        eprintln!("udplb ctl: {error:#}");
                        return command.failure_code();
                    }
                },
                (None, None) => PathBuf::from(ctl::DEFAULT_SOCKET),
            };
            ctl::run(&socket, json, timeout, &command)
        }
        Command::Run { config, share_listeners, takeover, fresh } => {
            match run(&config, share_listeners, takeover, fresh) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("udplb: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The configuration's warnings ([`Config::warnings`]) and those that depend on this machine:
/// a `max_flows` the descriptor limit (`nofile`, as raised) and port range cannot back, more
/// workers than CPUs.
fn warnings(config: &Config, nofile: u64) -> Vec<udplb_core::config::ConfigWarning> {
    use udplb_core::config::{ConfigWarning, FieldPath};
    let mut warnings = config.warnings();
    let process = FieldPath::root().key("process");
    let backed = system::default_max_flows(nofile, config);
    if let Some(max_flows) = config.process.max_flows
        && max_flows > backed
    {
        warnings.push(ConfigWarning::new(
            process.clone().key("max_flows"),
            format!(
                "{max_flows} flows need more upstream sockets than this machine allows: {nofile} file \
                 descriptors (RLIMIT_NOFILE) and {} ephemeral ports back about {backed}; new flows past that \
                 are dropped as upstream_open_failed. Raise LimitNOFILE or net.ipv4.ip_local_port_range, or \
                 lower max_flows (this counts the limits `udplb check` itself runs with)",
                system::ephemeral_ports()
            ),
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if config.process.workers() > cpus {
        warnings.push(ConfigWarning::new(
            process.key("workers"),
            format!(
                "{} workers on {cpus} CPUs: they take turns on the same cores, which adds latency and no \
                 throughput. Use at most {cpus}",
                config.process.workers()
            ),
        ));
    }
    warnings
}

/// Reads and validates a configuration file; the error is the rendered list of problems.
fn load(path: &Path) -> Result<Config, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| format!("{file}: {error}"))?;
    Config::from_toml_str(&text).map_err(|errors| errors.render(&file))
}

fn run(path: &Path, share_listeners: bool, takeover: bool, fresh: bool) -> anyhow::Result<()> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| anyhow::anyhow!("{file}: {error}"))?;
    let config = Config::from_toml_str(&text)
        .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{}", errors.render(&file)))?;
    init_logging(config.process.log_format);
    let nofile = system::raise_nofile_limit();
    let default_max_flows = system::default_max_flows(nofile, &config);
    let warnings = warnings(&config, nofile);
    for line in udplb_core::config::render_warnings(&text, &file, &warnings).lines() {
        tracing::warn!(event = %"config_warning", warning = %line, "risky setting");
    }
    if !udplb_core::TEST_FEATURES.is_empty() {
        let features = udplb_core::TEST_FEATURES.join(",");
        tracing::warn!(%features, "built with test-only features: not a build to ship");
    }
    let start = start::Start { path, text, config, default_max_flows, share_listeners, nofile };
    if takeover {
        return start::take_over(start, fresh);
    }
    if let Some(mut event_loop) = start::from_fd_store(&start)? {
        return event_loop.run();
    }
    start::afresh(start)
}

/// Logs go to stderr (journald picks them up under systemd); `UDPLB_LOG` sets the level
/// (`error`, `warn`, `info` (default), `debug`, `trace`). `udplb::log_events` says what the
/// lines carry.
fn init_logging(format: LogFormat) {
    let level = std::env::var("UDPLB_LOG")
        .ok()
        .and_then(|text| text.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    udplb::log_events::subscriber(format, level, colour, std::io::stderr).init();
}

/// Whether human log lines carry ANSI colour codes: only when stderr is a terminal and
/// `NO_COLOR` is unset or empty (the usual convention: any non-empty value turns colour off).
/// A file, a pipe or journald gets plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{use_colour, version_text};

    #[test]
    fn the_version_names_test_only_features() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(version_text(&[]), version);
        assert_eq!(
            version_text(&["mutants", "fuzzing"]),
            format!("{version} (test-only features: mutants, fuzzing)")
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let set = Some(OsStr::new("1"));
        assert!(use_colour(true, None), "a terminal, NO_COLOR unset");
        assert!(!use_colour(true, set), "a terminal, NO_COLOR set");
        assert!(!use_colour(false, None), "not a terminal (a file, a pipe, journald), NO_COLOR unset");
        assert!(!use_colour(false, set), "not a terminal, NO_COLOR set");
        // An empty NO_COLOR counts as unset, as the convention says.
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(false, Some(OsStr::new(""))));
    }
}
