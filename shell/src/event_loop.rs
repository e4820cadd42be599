//! The mio event loop: the production platform (`mio_platform.rs`) under the core's driver
//! (`udplb_core::driver`), and the turn every worker runs.
//!
//! The clock is read once per batch and handed to the driver with every input. The poll
//! timeout comes from the core after every call (`Driver::next_deadline`). Listener
//! and upstream sockets are read in batches (`recvmmsg`); the driver decides about each
//! datagram of a batch, and what it sends is queued and flushed once per batch (`sendmmsg`),
//! and what failed meanwhile is reported to the core (`settle`). Probe sockets are read as
//! they answer, and the core's timer runs once per turn.
//!
//! A worker's role adds to the turn: the leader (the main thread's worker, alone or with
//! followers) handles signals, starts its followers, relays backend states to them, checks
//! that they are alive and stops them (`leader.rs`); a follower applies what its leader sends
//! and publishes its counters (`follower.rs`). The control socket ([`crate::control`]) and the
//! metrics endpoint ([`crate::metrics`]), which only the leader binds, are served in the
//! same turn, between datagrams.

mod follower;
mod handover;
mod leader;

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Waker};
use udplb_core::driver::Driver;
use udplb_core::health::ProbeFailure;
use udplb_core::{
    AdminCommand, Balancer, ClientDatagram, Config, DATAGRAM_HEADROOM, FlowId, Input, ListenerId, ProbeId,
    ProbeResult, Role, UpstreamError,
};

use crate::batch::RecvBatch;
use crate::control::server::ControlServer;
use crate::metrics::http::MetricsServer;
use crate::mio_platform::{MioPlatform, Probe, ProbeSocket, Source};
use crate::notices::Notices;
use crate::workers::{FlowQueries, WorkerView};
use follower::FollowerDuties;
use leader::LeaderDuties;
pub use leader::Takeover;

pub use crate::handover::Adopted;

/// Largest UDP payload plus one, so a datagram that fills it is known to be truncated.
const RECEIVE_CAPACITY: usize = 65_536;
/// Batches read from one socket per readiness event before serving the others.
const BATCHES_PER_EVENT: usize = 8;
/// Longest sleep while a control or metrics connection waits on a deadline of its own.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Rounds of reporting failures per turn (each may cause a re-send, which may fail).
const DEFERRED_ROUNDS: usize = 4;

/// The running balancer: the driver on mio, the configuration file it reloads.
pub struct EventLoop {
    poll: Poll,
    pub(crate) driver: Driver<MioPlatform>,
    /// Wakes this loop when another worker sent it something.
    waker: Arc<Waker>,
    /// What this worker does besides the datapath, by role.
    duties: Duties,
    /// Sockets left with datagrams unread after their share of reading: mio's readiness is
    /// edge-triggered, so they are read again once every ready socket has had its share (and
    /// the loop does not sleep while any is left), rather than when their next datagram
    /// happens to arrive.
    backlog: Vec<Source>,
    pub(crate) config_path: PathBuf,
    /// The configuration running now (the core does not expose every setting: a cluster's
    /// algorithm, a listener's affinity), as the file gave it.
    pub(crate) config: Config,
    /// The configuration this worker's core runs: `config` with the worker's share of the
    /// budgets (`worker_config`), as of the last reload the core applied. Snapshots are taken
    /// under it.
    pub(crate) running: Config,
    /// The text `config` was read from (a handover passes it on: the new process restores
    /// the snapshots under the configuration they were taken with).
    pub(crate) config_text: String,
    /// A new process asked for a handover on this control connection (its pid, its
    /// protocol): carried out at the end of the turn.
    pub(crate) handover_request: Option<(mio::Token, u32, u32)>,
    /// This worker handed everything over to a new process: the loop ends now.
    handed_over: bool,
    /// A fallback handover's relay, on either side (`crate::relay`).
    relay: Option<handover::Relay>,
    /// A new process holds the followers it spawns here until the old process has let go of
    /// the sockets ([`EventLoop::hold_workers`]).
    gate: Option<Arc<handover::Gate>>,
    /// The `[process]` settings the process started with: those a reload cannot change hold
    /// until the next start (see [`udplb_core::config::ProcessConfig::restart_only_changes`]).
    pub(crate) started: udplb_core::config::ProcessConfig,
    /// How reloads went, for metrics.
    pub(crate) reloads: crate::counters::ReloadCounters,
    /// The flow cap derived from the descriptor limit and port range, used whenever the
    /// file sets none: at start and on every reload.
    pub(crate) default_max_flows: u32,
    /// The leader's control socket, when configured (followers have none).
    pub(crate) control: Option<ControlServer>,
    /// The leader's metrics endpoint, when configured (followers have none).
    pub(crate) metrics: Option<MetricsServer>,
    /// Set by a stop: listeners are draining, and the loop ends when no flow is left.
    stopping: bool,
    /// When a stop gives up waiting: flows still alive then are closed (`process.stop_timeout`).
    stop_deadline: Option<std::time::Instant>,
    /// The leader's questions about flows waiting for its followers' answers.
    pub(crate) queries: FlowQueries,
    /// Client datagrams land here, each with headroom for a PROXY header.
    client_batch: RecvBatch,
    /// Backend replies and probe replies land here.
    backend_batch: RecvBatch,
}

/// A worker's role, with what it needs for it.
enum Duties {
    /// The main thread's worker, alone or with followers (`leader.rs`).
    Leader(LeaderDuties),
    /// Any other worker (`follower.rs`).
    Follower(FollowerDuties),
}

impl EventLoop {
    /// A worker's loop with its listeners bound and no control socket or metrics endpoint
    /// yet. `origin` is when the process's clock started (workers of one process share it).
    #[allow(clippy::too_many_arguments)]
    fn build(
        poll: Poll,
        config_path: &Path,
        (config, config_text): (Config, String),
        (core, running): (Balancer, Config),
        default_max_flows: u32,
        origin: std::time::Instant,
        duties: Duties,
        adopted: Option<Adopted>,
    ) -> anyhow::Result<EventLoop> {
        // With several workers, every one has others to tell.
        let notices = Notices::new(core.role() != Role::Whole);
        let workers = config.process.workers();
        let platform = MioPlatform::new(
            poll.registry().try_clone()?,
            origin,
            workers,
            config.process.upstream_mode,
            notices,
        );
        let mut driver = Driver::new(core, platform);
        // The leader (or the only worker) binds each listener first and checks that no other
        // process serves its address; followers join the group it made.
        let exclusive = matches!(&duties, Duties::Leader(leader) if !leader.share_listeners);
        driver.platform_mut().set_exclusive(exclusive);
        let waker_token = driver.platform_mut().token(Source::Waker);
        let waker = Arc::new(Waker::new(poll.registry(), waker_token)?);
        let mut relay = None;
        if let Some(mut adopted) = adopted {
            if let Some((fd, side)) = adopted.relay.take() {
                relay = Some(handover::Relay::new_side(driver.platform_mut(), fd, side)?);
            }
            driver.platform_mut().adopt(adopted)?;
        }
        let (core, platform) = driver.parts_mut();
        platform.sync_listeners(core, &config)?;
        Ok(EventLoop {
            poll,
            driver,
            waker,
            duties,
            backlog: Vec::new(),
            config_path: config_path.to_owned(),
            started: config.process.clone(),
            reloads: Default::default(),
            config,
            running,
            config_text,
            handover_request: None,
            handed_over: false,
            relay,
            gate: None,
            default_max_flows,
            control: None,
            metrics: None,
            stopping: false,
            stop_deadline: None,
            queries: FlowQueries::default(),
            client_batch: RecvBatch::new(DATAGRAM_HEADROOM, RECEIVE_CAPACITY),
            backend_batch: RecvBatch::new(0, RECEIVE_CAPACITY),
        })
    }

    /// Serves until a stop has drained every flow (every worker's, for the leader). Returns
    /// normally on a clean stop.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        if let Duties::Leader(_) = self.duties {
            crate::system::sd_notify("READY=1");
        }
        if let Some(control) = &mut self.control {
            // Serving now: a socket file taken over is this process's to remove.
            control.claim_file();
        }
        loop {
            let mut timeout = self.driver.next_deadline().map(|deadline| {
                let now = self.driver.platform().now();
                Duration::from_nanos(deadline.as_nanos().saturating_sub(now.as_nanos()))
            });
            if self.needs_housekeeping() {
                timeout = Some(timeout.map_or(HOUSEKEEPING_INTERVAL, |t| t.min(HOUSEKEEPING_INTERVAL)));
            }
            if let Some(interval) = self.role_interval() {
                timeout = Some(timeout.map_or(interval, |t| t.min(interval)));
            }
            if let Some(deadline) = self.stop_deadline {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if !self.backlog.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
            for event in events.iter() {
                if self.handed_over {
                    // The sockets are another process's now: not one more read.
                    break;
                }
                if event.token() == leader::SIGNALS {
                    self.handle_signals()?;
                    continue;
                }
                let source = self.driver.platform().source(event.token());
                match source {
                    Some(Source::Listener(listener)) => self.read_listener(listener),
                    Some(Source::Upstream(upstream)) => self.read_upstream(upstream),
                    Some(Source::PoolSocket(index)) => self.read_pool_socket(index, event.is_error()),
                    Some(Source::TcpProbe(probe)) => self.finish_tcp_probe(probe),
                    Some(Source::UdpProbe(probe)) => self.read_udp_probe(probe),
                    Some(Source::ControlListener) => self.accept_control(),
                    Some(Source::Control) => self.serve_control(event.token()),
                    Some(Source::MetricsListener) => self.accept_metrics(),
                    Some(Source::Metrics) => self.serve_metrics(event.token()),
                    Some(Source::Waker) => self.read_messages(),
                    Some(Source::Relay) => self.read_relay(),
                    None => {}
                }
                self.settle();
            }
            if self.handed_over {
                // Not one more input: the new process's state starts from the snapshot.
                return Ok(());
            }
            for source in std::mem::take(&mut self.backlog) {
                match source {
                    Source::Listener(listener) => self.read_listener(listener),
                    Source::Upstream(upstream) => self.read_upstream(upstream),
                    Source::PoolSocket(index) => self.read_pool_socket(index, false),
                    _ => {}
                }
                self.settle();
            }
            // Always: a wake-up before the deadline is harmless, and one after it is due.
            let now = self.driver.platform().now();
            let _ = self.driver.handle(now, Input::Timeout);
            self.settle();
            self.enforce_stop_deadline();
            self.driver.platform_mut().expire_probes(now);
            self.publish_events();
            self.sweep_connections();
            let done = match self.duties {
                Duties::Leader(_) => self.end_leader_turn()?,
                Duties::Follower(_) => self.end_follower_turn(),
            };
            if done {
                return Ok(());
            }
        }
    }

    /// How long the worker's role lets the loop sleep at most, whatever the core has due.
    fn role_interval(&self) -> Option<Duration> {
        match self.duties {
            Duties::Leader(_) => self.leader_interval(),
            Duties::Follower(_) => Some(follower::VIEW_INTERVAL),
        }
    }

    /// Messages from the other workers: passive failures for the leader; backend states,
    /// reloads, commands and the stop for a follower.
    fn read_messages(&mut self) {
        match self.duties {
            Duties::Leader(_) => self.read_followers_messages(),
            Duties::Follower(_) => self.read_leader_messages(),
        }
    }

    /// Drains every listener of this worker; the loop ends when no flow is left.
    fn drain(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        self.stop_deadline = Some(std::time::Instant::now() + self.config.process.stop_timeout());
        let listeners: Vec<ListenerId> = self.driver.core().flows().listener_ids().collect();
        let now = self.driver.platform().now();
        for listener in listeners {
            let _ = self.driver.handle(now, Input::Admin(AdminCommand::DrainListener(listener)));
        }
    }

    /// Past the stop's deadline, closes whatever flows are left (`Shutdown`), so the process
    /// exits on its own before a service manager kills it.
    fn enforce_stop_deadline(&mut self) {
        let Some(deadline) = self.stop_deadline else { return };
        if std::time::Instant::now() < deadline {
            return;
        }
        self.stop_deadline = None;
        let left = self.driver.core().flows().stats().flows.active;
        if left > 0 {
            tracing::warn!(
                event = %"stop_timeout_reached",
                flows = left,
                stop_timeout = ?self.config.process.stop_timeout(),
                "stop_timeout reached: closing the flows left"
            );
            let now = self.driver.platform().now();
            let _ = self.driver.handle(now, Input::Admin(AdminCommand::CloseAll));
            self.settle();
        }
    }

    /// Whether this worker has been stopped and has no flow left.
    fn drained(&self) -> bool {
        self.stopping && self.driver.core().flows().stats().flows.active == 0
    }

    /// Closes finished or timed-out control and metrics connections and forgets their tokens.
    fn sweep_connections(&mut self) {
        let mut closed = Vec::new();
        if let Some(control) = &mut self.control {
            control.sweep();
            closed.extend(control.take_closed());
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.sweep();
            closed.extend(metrics.take_closed());
        }
        for token in closed {
            self.driver.platform_mut().forget(token);
        }
    }

    /// Whether a connection has a deadline of its own, so the loop must wake up for it even
    /// when the core has nothing due.
    fn needs_housekeeping(&self) -> bool {
        self.control.as_ref().is_some_and(|c| c.has_closing())
            || self.metrics.as_ref().is_some_and(|m| m.has_connections())
    }

    fn read_listener(&mut self, listener: ListenerId) {
        if self.relay.as_ref().is_some_and(handover::Relay::is_old_side) {
            // A fallback handover: the new process reads the listeners now.
            return;
        }
        for _ in 0..BATCHES_PER_EVENT {
            let received = {
                let Some(socket) = self.driver.platform().listeners.get(&listener) else { return };
                self.client_batch.recv(socket.socket.as_raw_fd())
            };
            let count = match received {
                Ok(count) => count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::warn!(%error, "listener receive failed");
                    return;
                }
            };
            let headroom = self.client_batch.headroom();
            let now = self.driver.platform().now();
            for i in 0..count {
                let received = self.client_batch.received()[i];
                let Some(client) = received.source else { continue };
                if let Some(relay) = &mut self.relay
                    && relay.relays(
                        listener,
                        client,
                        received.local,
                        (self.client_batch.datagram(i), received.truncated),
                    )
                {
                    continue;
                }
                // The batch and the driver are separate fields: no copy per datagram.
                let slot = self.client_batch.slot_mut(i);
                let datagram = ClientDatagram {
                    listener,
                    client,
                    local: received.local,
                    buffer: slot,
                    headroom,
                    truncated: received.truncated,
                };
                self.driver.client_datagram(now, datagram);
            }
            self.settle();
            if count < crate::batch::BATCH {
                return;
            }
        }
        self.backlog.push(Source::Listener(listener));
    }

    /// Replies on a flow's own connected socket.
    fn read_upstream(&mut self, flow: FlowId) {
        for _ in 0..BATCHES_PER_EVENT {
            let (received, backend) = {
                let Some(socket) = self.driver.platform().flow_sockets.get(&flow) else { return };
                (self.backend_batch.recv(socket.socket.as_raw_fd()), socket.backend)
            };
            let now = self.driver.platform().now();
            let count = match received {
                Ok(count) => count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    // ECONNREFUSED is the kernel's report of an ICMP port unreachable.
                    let kind = match error.raw_os_error() {
                        Some(libc::ECONNREFUSED) => UpstreamError::Refused,
                        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => UpstreamError::Unreachable,
                        _ => return,
                    };
                    let _ = self.driver.handle(now, Input::UpstreamError { flow, error: kind });
                    return;
                }
            };
            for i in 0..count {
                let length = self.backend_batch.received()[i].length;
                self.driver.platform_mut().notices.counters.received_from_backend(backend, length);
                let truncated = self.backend_batch.received()[i].truncated;
                self.driver.backend_datagram(now, flow, self.backend_batch.datagram(i), truncated);
            }
            self.settle();
            if count < crate::batch::BATCH {
                return;
            }
        }
        self.backlog.push(Source::Upstream(flow));
    }

    /// Replies (and ICMP errors) on a shared pool socket: each is told apart by the backend
    /// address it came from.
    fn read_pool_socket(&mut self, index: u32, error_raised: bool) {
        // An ICMP error arriving during a `recvmmsg` cuts its batch short: after one, read
        // until the socket says it is empty rather than trusting a short batch.
        let mut until_empty = error_raised;
        if error_raised {
            self.driver.platform_mut().read_pool_errors(index);
        }
        let mut errors = 0;
        for _ in 0..BATCHES_PER_EVENT {
            let received = {
                let Some(pool_socket) = self.driver.platform().pool_sockets.get(index as usize) else {
                    return;
                };
                self.backend_batch.recv(pool_socket.socket.as_raw_fd())
            };
            let count = match received {
                Ok(count) => count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    // The socket's pending ICMP error; the error queue says which backend.
                    self.driver.platform_mut().read_pool_errors(index);
                    until_empty = true;
                    errors += 1;
                    if errors > 2 {
                        // Not a pending ICMP error, which a read clears: do not spin on it.
                        tracing::warn!(%error, "upstream receive failed");
                        return;
                    }
                    continue;
                }
            };
            let now = self.driver.platform().now();
            for i in 0..count {
                let received = self.backend_batch.received()[i];
                let Some(source) = received.source else { continue };
                let platform = self.driver.platform_mut();
                // A datagram from an address with no flow on this socket (a late reply to a
                // flow that ended, or a stranger) is not anyone's.
                let Some(binding) = platform.pool.occupant(index, source).copied() else {
                    platform.notices.counters.stray_upstream_datagrams += 1;
                    // The core tells a backend answering from another port (its fault, and a
                    // lost reply) from a late reply or a stranger.
                    let stray = Input::StrayReply { from: source, bytes: received.length };
                    let _ = self.driver.handle(now, stray);
                    continue;
                };
                platform.notices.counters.received_from_backend(binding.backend, received.length);
                self.driver.backend_datagram(
                    now,
                    binding.flow,
                    self.backend_batch.datagram(i),
                    received.truncated,
                );
            }
            self.settle();
            if count < crate::batch::BATCH && !until_empty {
                return;
            }
        }
        self.backlog.push(Source::PoolSocket(index));
    }

    fn finish_tcp_probe(&mut self, probe: ProbeId) {
        let result = {
            let Some(Probe { socket: ProbeSocket::Tcp(stream), .. }) =
                self.driver.platform().probes.get(&probe)
            else {
                return;
            };
            match stream.take_error() {
                Ok(Some(error)) if error.kind() == ErrorKind::ConnectionRefused => {
                    Some(ProbeResult::Fail(ProbeFailure::Refused))
                }
                Ok(Some(_)) | Err(_) => Some(ProbeResult::Fail(ProbeFailure::Error)),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => Some(ProbeResult::Pass),
                    // Not connected yet: wait for the next readiness (or the core's timeout).
                    Err(error) if error.kind() == ErrorKind::NotConnected => None,
                    Err(_) => Some(ProbeResult::Fail(ProbeFailure::Error)),
                },
            }
        };
        if let Some(result) = result {
            self.driver.platform_mut().drop_probe(probe);
            let now = self.driver.platform().now();
            let _ = self.driver.handle(now, Input::ProbeResult { probe, result });
        }
    }

    fn read_udp_probe(&mut self, probe: ProbeId) {
        let received = {
            let Some(Probe { socket: ProbeSocket::Udp(socket), .. }) =
                self.driver.platform().probes.get(&probe)
            else {
                return;
            };
            self.backend_batch.recv(socket.as_raw_fd())
        };
        match received {
            Ok(_) => {
                self.driver.platform_mut().drop_probe(probe);
                let now = self.driver.platform().now();
                let reply = self.backend_batch.datagram(0).to_vec();
                let _ = self.driver.handle(now, Input::ProbeReply { probe, reply });
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(error) => {
                let failure = if error.kind() == ErrorKind::ConnectionRefused {
                    ProbeFailure::Refused
                } else {
                    ProbeFailure::Error
                };
                self.driver.platform_mut().drop_probe(probe);
                let now = self.driver.platform().now();
                let _ =
                    self.driver.handle(now, Input::ProbeResult { probe, result: ProbeResult::Fail(failure) });
            }
        }
    }

    /// This worker's datapath counters.
    pub(crate) fn view(&self) -> WorkerView {
        let platform = self.driver.platform();
        WorkerView::of(
            self.driver.core(),
            &platform.notices.counters,
            platform.kernel_drops(),
            platform.upstream_sockets(),
        )
    }

    /// Sends what the last calls queued, then reports to the core what failed meanwhile
    /// (which may queue re-sends: a refused request retried on another backend).
    fn settle(&mut self) {
        for _ in 0..DEFERRED_ROUNDS {
            self.driver.platform_mut().flush();
            let failures = self.driver.platform_mut().take_failures();
            if failures.is_empty() {
                return;
            }
            let now = self.driver.platform().now();
            for input in failures {
                let _ = self.driver.handle(now, input);
            }
        }
    }
}
