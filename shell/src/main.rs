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
    let start = Start { path, text, config, default_max_flows, share_listeners, nofile };
    if takeover {
        return take_over(start, fresh);
    }
    if let Some((stored, names)) = handover::from_listen_fds()? {
        // systemd kept the previous process's sockets and state in its descriptor store. A
        // failure to adopt them fails the start (the store keeps them for the next one).
        let (mut event_loop, restored) = match stored {
            handover::Stored::Partial(handover) => {
                tracing::warn!(
                    event = %"handover_failed",
                    "systemd's descriptor store holds udplb's sockets but not its state: starting with an \
                     empty flow table on the stored listeners"
                );
                (fall_back(&start, handover, None)?, false)
            }
            handover::Stored::Complete(handover) => match restore_cores(&handover) {
                Ok(restored) => match adopt(&start, handover, restored, false) {
                    Ok(event_loop) => (event_loop, true),
                    Err(error) => {
                        // The next start begins afresh rather than fail the same way.
                        handover::clear_fd_store(names);
                        handover::wait_for_clearing();
                        return Err(error);
                    }
                },
                Err(error) => {
                    tracing::error!(
                        event = %"handover_failed",
                        "cannot restore what the previous process stored: starting with an empty flow \
                         table on its listeners; its flows are lost: {error:#}"
                    );
                    (fall_back(&start, handover, None)?, false)
                }
            },
        };
        handover::clear_fd_store(names);
        if restored {
            event_loop.settle_takeover(&start.text, start.default_max_flows);
        }
        return event_loop.run();
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
    let mut event_loop = EventLoop::new(
        path,
        (config, text),
        (core, effective.clone()),
        default_max_flows,
        share_listeners,
        None,
    )?;
    for index in 1..workers {
        let keys = Keys { unique: system::unique_prefix(process_id, index), ..keys.clone() };
        event_loop.spawn_follower(index, &effective, keys)?;
    }
    event_loop.run()
}

/// `udplb run --takeover`: asks the udplb behind the configuration's control socket for its
/// sockets and flows, serves them, and tells it so (it then exits). When this build cannot
/// restore its flows, it falls back to taking only the listeners and relaying the old
/// process's flows to it until they end ([`udplb::relay`]). On any other failure the old
/// process is told, and serves on.
fn take_over(start: Start<'_>, fresh: bool) -> anyhow::Result<()> {
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
    let fail = |stream: &mut std::os::unix::net::UnixStream, error: anyhow::Error| {
        let _ = stream.write_all(format!("failed: {error:#}\n").as_bytes());
        error.context(format!("process {pid} keeps serving"))
    };
    let workers = start.config.process.workers();
    if handover.header.workers.len() as u32 != workers {
        let error = anyhow::anyhow!(
            "the running udplb has {} workers and {} asks for {workers}: each worker's sockets and \
             flows go to the worker of the same number, so change process.workers with a plain restart",
            handover.header.workers.len(),
            start.path.display()
        );
        return Err(fail(&mut stream, error));
    }
    let restored = if fresh {
        Err(anyhow::anyhow!("--fresh asks for an empty flow table"))
    } else {
        restore_cores(&handover)
    };
    let mut event_loop = match restored {
        Ok(restored) => match adopt(&start, handover, restored, true) {
            Ok(event_loop) => event_loop,
            Err(error) => return Err(fail(&mut stream, error)),
        },
        Err(why) => {
            tracing::warn!(
                event = %"handover_fallback",
                old_pid = pid,
                "cannot restore the running udplb's flows ({why:#}): taking its listeners only and \
                 relaying its flows to it until they end"
            );
            match fall_back(&start, handover, Some(&stream)) {
                Ok(event_loop) => event_loop,
                Err(error) => return Err(fail(&mut stream, error)),
            }
        }
    };
    if !event_loop.relaying() {
        stream.write_all(format!("{}\n", handover::RESUMED).as_bytes())?;
    }
    // The workers read nothing until the old process has let go of the sockets; if it does
    // not say so (it gave up waiting and serves on), this process ends without a read.
    let mut answer = [0u8; 64];
    let read = std::io::Read::read(&mut stream, &mut answer).unwrap_or(0);
    if String::from_utf8_lossy(&answer[..read]).trim() != handover::LET_GO {
        event_loop.release_workers(false);
        anyhow::bail!("process {pid} did not let go of its sockets (it serves on); this one ends");
    }
    event_loop.release_workers(true);
    if !event_loop.relaying() {
        tracing::info!(event = %"took_over", old_pid = pid, "took over the running udplb's sockets and flows");
        event_loop.settle_takeover(&start.text, start.default_max_flows);
    }
    event_loop.run()
}

/// What restoring a handover's workers gives: the old configuration (and its text), each
/// worker's core and platform state, and the old clock's origin.
struct Restored {
    config: Config,
    /// What each worker's core runs: `config` with a worker's share.
    effective: Config,
    cores: Vec<(Balancer, udplb_core::snapshot::PlatformState)>,
    origin: std::time::Instant,
}

/// Every worker's core from its snapshot, under the configuration the old process ran;
/// nothing is taken from the handover yet (a failure leaves it whole for a fallback).
fn restore_cores(handover: &handover::Handover) -> anyhow::Result<Restored> {
    let header = &handover.header;
    anyhow::ensure!(
        header.snapshot_version == udplb_core::snapshot::VERSION,
        "the running udplb ({}) writes snapshot format {}, this build reads {}",
        header.version,
        header.snapshot_version,
        udplb_core::snapshot::VERSION
    );
    let config = Config::from_toml_str(&header.config_text).map_err(|errors| {
        anyhow::anyhow!(
            "the running udplb's configuration is not valid for this build:\n{}",
            errors.render("(the running configuration)")
        )
    })?;
    let effective = udplb::worker_config(&config, header.workers.len() as u32, header.default_max_flows);
    let origin = handover::origin_from_monotonic(header.origin_monotonic_nanos)?;
    let mut cores = Vec::new();
    for (index, state) in handover.workers.iter().enumerate() {
        let core = Balancer::restore(&effective, &state.snapshot)
            .map_err(|error| anyhow::anyhow!("worker {index}'s snapshot: {error}"))?;
        let platform = udplb_core::snapshot::PlatformState::decode(&state.platform)
            .map_err(|error| anyhow::anyhow!("worker {index}'s sockets: {error}"))?;
        cores.push((core, platform));
    }
    Ok(Restored { config, effective, cores, origin })
}

/// An event loop (and its followers) on the restored cores and the old process's sockets.
fn adopt(
    start: &Start<'_>,
    handover: handover::Handover,
    restored: Restored,
    hold: bool,
) -> anyhow::Result<EventLoop> {
    let header = handover.header;
    let mut workers =
        restored.cores.into_iter().zip(handover.workers).map(|((core, platform), state)| {
            (core, Adopted { platform, sockets: state.sockets, relay: None })
        });
    let (core, adopted) = workers.next().context("the handover has no worker")?;
    let takeover =
        Takeover { origin: restored.origin, adopted, control: handover.control, metrics: handover.metrics };
    let mut event_loop = EventLoop::new(
        start.path,
        (restored.config, header.config_text.clone()),
        (core, restored.effective),
        header.default_max_flows,
        start.share_listeners,
        Some(takeover),
    )?;
    if hold {
        event_loop.hold_workers();
    }
    for (index, (core, adopted)) in workers.enumerate() {
        event_loop.spawn_follower_adopting(index as u32 + 1, core, adopted)?;
    }
    tracing::info!(
        file = %start.path.display(),
        old_pid = header.pid,
        old_version = %header.version,
        workers = header.workers.len(),
        "restored the previous process's flows"
    );
    Ok(event_loop)
}

/// The fallback: fresh cores from this process's own file, the old process's listener
/// sockets (matched by address: this file must serve every address the old process does),
/// and a relay per worker to the old process, which is sent its ends.
fn fall_back(
    start: &Start<'_>,
    handover: handover::Handover,
    stream: Option<&std::os::unix::net::UnixStream>,
) -> anyhow::Result<EventLoop> {
    use std::collections::BTreeMap;
    use std::os::fd::AsRawFd;
    let workers = start.config.process.workers();
    let effective = udplb::worker_config(&start.config, workers, start.default_max_flows);
    let process_id = system::random_process_id();
    let keys = Keys {
        selection: start.config.process.selection_key_bytes(),
        table: system::random_table_key(),
        unique: system::unique_prefix(process_id, 0),
    };
    let mut cores = Vec::new();
    for index in 0..workers {
        let role = match (index, workers) {
            (_, 1) => Role::Whole,
            (0, _) => Role::Leader,
            _ => Role::Follower,
        };
        let keys = Keys { unique: system::unique_prefix(process_id, index), ..keys.clone() };
        cores.push(Balancer::with_role(&effective, keys, role).map_err(|errors| {
            anyhow::anyhow!("invalid configuration: {}", udplb_core::config::render_errors(&errors))
        })?);
    }
    let flows = cores[0].flows();
    let ours: BTreeMap<std::net::SocketAddr, udplb_core::ListenerId> =
        flows.listener_ids().filter_map(|id| flows.listener(id).map(|(_, address)| (address, id))).collect();
    let mut old_ends = Vec::new();
    let mut adopted = Vec::new();
    let mut relayed = 0;
    for state in handover.workers {
        let mut sockets = handover::WorkerSockets::default();
        let (mut to_old, mut from_old) = (BTreeMap::new(), BTreeMap::new());
        for (old, fd) in state.sockets.listeners {
            let address = socket2::SockRef::from(&fd)
                .local_addr()?
                .as_socket()
                .context("a listener socket without an address")?;
            let Some(&id) = ours.get(&address) else {
                if stream.is_none() {
                    // Nobody is left to serve it: the socket closes, and its clients with it.
                    tracing::warn!(%address, "a stored listener socket this configuration has no listener for: closed");
                    continue;
                }
                anyhow::bail!(
                    "{} has no listener on {address}, which the running udplb serves: its clients \
                     would be left without a reader",
                    start.path.display()
                );
            };
            to_old.insert(id, old.0);
            from_old.insert(old.0, id);
            sockets.listeners.push((id, fd));
        }
        let ours_of = |keys: &[(u32, std::net::SocketAddr)]| -> std::collections::HashSet<_> {
            keys.iter().filter_map(|(old, source)| Some((*from_old.get(old)?, *source))).collect()
        };
        let (flows, proxied) = (ours_of(&state.flows), ours_of(&state.proxied));
        relayed += flows.len() + proxied.len();
        // A relay only to a process still there to serve its flows.
        let relay = match stream {
            Some(_) => {
                let (old_end, new_end) = udplb::relay::socket_pair()?;
                old_ends.push(old_end);
                Some((new_end, udplb::relay::NewSide { flows, proxied, to_old, from_old, dropped: 0 }))
            }
            None => None,
        };
        let platform = udplb_core::snapshot::PlatformState::default();
        adopted.push(Adopted { platform, sockets, relay });
    }
    // A store that kept fewer workers' sockets: the others bind their own.
    while adopted.len() < cores.len() {
        let sockets = handover::WorkerSockets::default();
        adopted.push(Adopted { platform: Default::default(), sockets, relay: None });
    }
    let mut workers_iter = cores.into_iter().zip(adopted);
    let (core, adopted) = workers_iter.next().context("the handover has no worker")?;
    let origin = std::time::Instant::now();
    let takeover = Takeover { origin, adopted, control: handover.control, metrics: handover.metrics };
    let mut event_loop = EventLoop::new(
        start.path,
        (start.config.clone(), start.text.clone()),
        (core, effective),
        start.default_max_flows,
        start.share_listeners,
        Some(takeover),
    )?;
    if stream.is_some() {
        event_loop.hold_workers();
    }
    for (index, (core, adopted)) in workers_iter.enumerate() {
        event_loop.spawn_follower_adopting(index as u32 + 1, core, adopted)?;
    }
    let Some(stream) = stream else { return Ok(event_loop) };
    let fds: Vec<std::os::fd::RawFd> = old_ends.iter().map(|fd| fd.as_raw_fd()).collect();
    handover::send_with_fds(stream.as_raw_fd(), format!("{}\n", handover::FALLBACK).as_bytes(), &fds)?;
    tracing::info!(
        event = %"took_over_listeners",
        old_pid = handover.header.pid,
        relayed_flows = relayed,
        "took over the running udplb's listeners; its flows are relayed to it until they end"
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
