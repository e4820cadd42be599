//! How `udplb run` starts: afresh, by taking over from a running udplb (`--takeover`,
//! [`crate::handover`]), or from what systemd's descriptor store kept of the previous
//! process. `main.rs` reads the file and picks one.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use udplb_core::{Balancer, Config, Keys, Role};

use crate::event_loop::{EventLoop, Takeover};
use crate::handover::{self, Adopted};
use crate::system;
use crate::workers::worker_config;

/// A start under systemd with a descriptor store that kept the previous process's sockets and
/// state: an event loop restored from them (or, when the state cannot be restored, one with
/// an empty flow table on the stored listeners), the store emptied. `None` when the store
/// gave this start nothing of udplb's. A failure to adopt what it gave fails the start (the
/// store is emptied first, so that the next start begins afresh).
pub fn from_fd_store(start: &Start<'_>) -> anyhow::Result<Option<EventLoop>> {
    let Some((stored, names)) = handover::from_listen_fds()? else { return Ok(None) };
    let (mut event_loop, restored) = match stored {
        handover::Stored::Partial(handover) => {
            tracing::warn!(
                event = %"handover_failed",
                "systemd's descriptor store holds udplb's sockets but not its state: starting with an \
                 empty flow table on the stored listeners"
            );
            (fall_back(start, handover, None)?, false)
        }
        handover::Stored::Complete(handover) => match restore_cores(&handover) {
            Ok(restored) => match adopt(start, handover, restored, false) {
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
                (fall_back(start, handover, None)?, false)
            }
        },
    };
    handover::clear_fd_store(names);
    if restored {
        event_loop.settle_takeover(&start.text, start.default_max_flows);
    }
    Ok(Some(event_loop))
}

/// What `udplb run` starts from.
pub struct Start<'a> {
    pub path: &'a Path,
    /// The configuration file, as read, and what it says.
    pub text: String,
    pub config: Config,
    /// The flow cap this machine's limits back (where the file sets none).
    pub default_max_flows: u32,
    /// `--share-listeners`.
    pub share_listeners: bool,
    /// The descriptor limit, as raised.
    pub nofile: u64,
}

/// A start with nothing to take over: empty flow tables, listeners bound afresh.
pub fn afresh(start: Start<'_>) -> anyhow::Result<()> {
    let Start { path, text, config, default_max_flows, share_listeners, nofile } = start;
    let workers = config.process.workers();
    let max_flows = config.process.max_flows.unwrap_or(default_max_flows);
    // Budgets are per process: each worker gets its share.
    let effective = worker_config(&config, workers, default_max_flows);
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
/// process's flows to it until they end ([`crate::relay`]). On any other failure the old
/// process is told, and serves on.
pub fn take_over(start: Start<'_>, fresh: bool) -> anyhow::Result<()> {
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
    let effective = worker_config(&config, header.workers.len() as u32, header.default_max_flows);
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
    let effective = worker_config(&start.config, workers, start.default_max_flows);
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
                let (old_end, new_end) = crate::relay::socket_pair()?;
                old_ends.push(old_end);
                Some((new_end, crate::relay::NewSide { flows, proxied, to_old, from_old, dropped: 0 }))
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
