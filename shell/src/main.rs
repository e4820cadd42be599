//! `udplb`: run the balancer, check a configuration file, or talk to a running balancer.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};
use std::io::Write;
use tracing_subscriber::util::SubscriberInitExt;
use udplb::ctl::CtlCommand;

use anyhow::Context;
use udplb::event_loop::{Adopted, EventLoop, Takeover};
use udplb::{ctl, handover, system};
use udplb_core::config::LogFormat;
use udplb_core::{Balancer, Config, Keys, Role};

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
        Command::Run { config, share_listeners, takeover } => match run(&config, share_listeners, takeover) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("udplb: {error:#}");
                ExitCode::FAILURE
            }
        },
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

fn run(path: &Path, share_listeners: bool, takeover: bool) -> anyhow::Result<()> {
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
    let start = Start { path, text, config, default_max_flows, share_listeners, nofile };
    if takeover {
        return take_over(start);
    }
    if let Some((handover, names)) = handover::from_listen_fds()? {
        // systemd kept the previous process's sockets and state in its descriptor store.
        match restore(&start, handover) {
            Ok(mut event_loop) => {
                handover::clear_fd_store(&names);
                event_loop.settle_takeover(&start.text, start.default_max_flows);
                return event_loop.run();
            }
            Err(error) => tracing::error!(
                event = %"handover_failed",
                "cannot restore what the previous process stored; starting afresh, its flows are lost: {error:#}"
            ),
        }
        handover::clear_fd_store(&names);
    }
    start_afresh(start)
}

/// What `udplb run` starts from.
struct Start<'a> {
    path: &'a Path,
    /// The configuration file, as read, and what it says.
    text: String,
    config: Config,
    default_max_flows: u32,
    share_listeners: bool,
    nofile: u64,
}

fn start_afresh(start: Start<'_>) -> anyhow::Result<()> {
    let Start { path, text, config, default_max_flows, share_listeners, nofile } = start;
    let workers = config.process.workers();
    let max_flows = config.process.max_flows.unwrap_or(default_max_flows);
    // Budgets are per process: each worker gets its share.
    let effective = udplb::worker_config(&config, workers, default_max_flows);
    tracing::info!(
        file = %path.display(),
        max_flows,
        workers,
        upstream_mode = %config.process.upstream_mode.as_str(),
        nofile,
        "starting"
    );
    let process_id = system::random_process_id();
    let keys = Keys {
        selection: config.process.selection_key_bytes(),
        table: system::random_table_key(),
        unique: system::unique_prefix(process_id, 0),
    };
    let role = if workers > 1 { Role::Leader } else { Role::Whole };
    let core = Balancer::with_role(&effective, keys.clone(), role).map_err(|errors| {
        anyhow::anyhow!("invalid configuration: {}", udplb_core::config::render_errors(&errors))
    })?;
    let mut event_loop =
        EventLoop::new(path, (config, text), core, default_max_flows, share_listeners, None)?;
    for index in 1..workers {
        let keys = Keys { unique: system::unique_prefix(process_id, index), ..keys.clone() };
        event_loop.spawn_follower(index, &effective, keys)?;
    }
    event_loop.run()
}

/// `udplb run --takeover`: asks the udplb behind the configuration's control socket for its
/// sockets and flows, serves them, and tells it so (it then exits). On any failure the old
/// process is told, and serves on.
fn take_over(start: Start<'_>) -> anyhow::Result<()> {
    let Some(socket) = start.config.process.control_socket.clone() else {
        anyhow::bail!(
            "--takeover finds the running udplb through its control socket, and {} sets no \
             process.control_socket",
            start.path.display()
        );
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|error| anyhow::anyhow!("--takeover: no udplb answers on {} ({error})", socket.display()))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let handover = handover::receive(&mut stream)?;
    let pid = handover.header.pid;
    let mut event_loop = match restore(&start, handover) {
        Ok(event_loop) => event_loop,
        Err(error) => {
            let _ = stream.write_all(format!("failed: {error:#}\n").as_bytes());
            return Err(error.context(format!("process {pid} keeps serving")));
        }
    };
    stream.write_all(format!("{}\n", handover::RESUMED).as_bytes())?;
    tracing::info!(event = %"took_over", old_pid = pid, "took over the running udplb's sockets and flows");
    event_loop.settle_takeover(&start.text, start.default_max_flows);
    event_loop.run()
}

/// An event loop (and its followers) restored from a handover: every worker's core from its
/// snapshot, under the configuration the old process ran, with the old process's sockets.
fn restore(start: &Start<'_>, handover: handover::Handover) -> anyhow::Result<EventLoop> {
    let header = handover.header.clone();
    let workers = start.config.process.workers();
    anyhow::ensure!(
        header.workers.len() as u32 == workers,
        "the running udplb has {} workers and {} asks for {workers}: each worker's sockets and \
         flows go to the worker of the same number, so change process.workers with a plain restart",
        header.workers.len(),
        start.path.display()
    );
    anyhow::ensure!(
        header.snapshot_version == udplb_core::snapshot::VERSION,
        "the running udplb ({}) writes snapshot format {}, this build reads {}",
        header.version,
        header.snapshot_version,
        udplb_core::snapshot::VERSION
    );
    let old = Config::from_toml_str(&header.config_text).map_err(|errors| {
        anyhow::anyhow!(
            "the running udplb's configuration is not valid for this build:\n{}",
            errors.render("(the running configuration)")
        )
    })?;
    let effective = udplb::worker_config(&old, workers, header.default_max_flows);
    let origin = handover::origin_from_monotonic(header.origin_monotonic_nanos)?;
    let mut restored = Vec::new();
    for (index, state) in handover.workers.into_iter().enumerate() {
        let core = Balancer::restore(&effective, &state.snapshot)
            .map_err(|error| anyhow::anyhow!("worker {index}'s snapshot: {error}"))?;
        let platform = udplb_core::snapshot::PlatformState::decode(&state.platform)
            .map_err(|error| anyhow::anyhow!("worker {index}'s sockets: {error}"))?;
        restored.push((core, Adopted { platform, sockets: state.sockets }));
    }
    let mut restored = restored.into_iter();
    let (core, adopted) = restored.next().context("the handover has no worker")?;
    let takeover = Takeover { origin, adopted, control: handover.control, metrics: handover.metrics };
    let mut event_loop = EventLoop::new(
        start.path,
        (old, header.config_text.clone()),
        core,
        header.default_max_flows,
        start.share_listeners,
        Some(takeover),
    )?;
    for (index, (core, adopted)) in restored.enumerate() {
        event_loop.spawn_follower_adopting(index as u32 + 1, core, adopted)?;
    }
    tracing::info!(
        file = %start.path.display(),
        old_pid = header.pid,
        old_version = %header.version,
        workers,
        "restored the previous process's flows"
    );
    Ok(event_loop)
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
