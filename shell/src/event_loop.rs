//! The mio event loop: the production platform (`mio_platform.rs`) under the core's driver
//! (`udplb_core::driver`).
//!
//! The clock is read once per batch and handed to the driver with every input. The poll
//! timeout comes from the core after every call (`Driver::next_deadline`). Listener
//! and upstream sockets are read in batches (`recvmmsg`); the driver decides about each
//! datagram of a batch, and what it sends is queued and flushed once per batch (`sendmmsg`).
//! SIGHUP (or `udplb ctl reload`) reloads the configuration file; SIGTERM and SIGINT drain
//! and then exit. The control socket ([`crate::control`]) and the metrics endpoint
//! ([`crate::metrics`]) are served in the same loop, between datagrams, by `commands.rs`.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use udplb_core::balancer::Output;
use udplb_core::driver::Driver;
use udplb_core::health::ProbeFailure;
use udplb_core::{
    AdminCommand, Balancer, Config, DATAGRAM_HEADROOM, FlowId, Input, Keys, ListenerId, ProbeId, ProbeResult,
    Role, UpstreamError,
};

use crate::batch::RecvBatch;
use crate::control::server::ControlServer;
use crate::metrics::http::MetricsServer;
pub(crate) use crate::mio_platform::Source;
use crate::mio_platform::{MioPlatform, Probe, ProbeSocket};
use crate::notices::Notices;
use crate::workers::{Follower, LeaderLink, ToFollower, ToLeader, WorkerView};

/// Largest UDP payload plus one, so a datagram that fills it is known to be truncated.
const RECEIVE_CAPACITY: usize = 65_536;
/// Batches read from one socket per readiness event before serving the others.
const BATCHES_PER_EVENT: usize = 8;
/// Longest sleep while a control or metrics connection waits on a deadline of its own.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);
/// Rounds of reporting failures per turn (each may cause a re-send, which may fail).
const DEFERRED_ROUNDS: usize = 4;

/// How often a follower publishes its counters for the leader's metrics.
const VIEW_INTERVAL: Duration = Duration::from_millis(200);

const SIGNALS: Token = Token(0);

/// The running balancer: the driver on mio, the configuration file it reloads.
pub struct EventLoop {
    poll: Poll,
    pub(crate) driver: Driver<MioPlatform>,
    /// The leader's (or only worker's): followers leave signals to it.
    signals: Option<Signals>,
    /// Wakes this loop when another worker sent it something.
    waker: Arc<Waker>,
    /// The leader's followers (none with one worker).
    pub(crate) followers: Vec<Follower>,
    /// The leader's messages from its followers.
    inbox: Option<(Sender<ToLeader>, Receiver<ToLeader>)>,
    /// A follower's link to the leader.
    leader: Option<LeaderLink>,
    /// When a follower last published its view.
    last_view: std::time::Instant,
    /// Sockets left with datagrams unread after their share of reading: mio's readiness is
    /// edge-triggered, so they are read again once every ready socket has had its share (and
    /// the loop does not sleep while any is left), rather than when their next datagram
    /// happens to arrive.
    backlog: Vec<Source>,
    pub(crate) config_path: PathBuf,
    /// The configuration running now (the core does not expose every setting: a cluster's
    /// algorithm, a listener's affinity), as the file gave it.
    pub(crate) config: Config,
    /// The flow cap derived from the descriptor limit and port range, used whenever the
    /// file sets none: at start and on every reload.
    pub(crate) default_max_flows: u32,
    pub(crate) control: Option<ControlServer>,
    pub(crate) metrics: Option<MetricsServer>,
    /// Set by SIGTERM/SIGINT: listeners are draining, and the loop ends when no flow is left.
    stopping: bool,
    /// Client datagrams land here, each with headroom for a PROXY header.
    client_batch: RecvBatch,
    /// Backend replies and probe replies land here.
    backend_batch: RecvBatch,
}

impl EventLoop {
    /// Binds every listener, the control socket and the metrics endpoint (when configured),
    /// and starts the core. `config` is the file as read (`max_flows` may be unset: the core
    /// then runs with `default_max_flows`, now and after every reload).
    pub fn new(
        config_path: &Path,
        config: Config,
        core: Balancer,
        default_max_flows: u32,
    ) -> anyhow::Result<EventLoop> {
        EventLoop::build(config_path, config, core, default_max_flows, std::time::Instant::now(), true)
    }

    fn build(
        config_path: &Path,
        config: Config,
        core: Balancer,
        default_max_flows: u32,
        origin: std::time::Instant,
        services: bool,
    ) -> anyhow::Result<EventLoop> {
        let poll = Poll::new()?;
        let signals = if services {
            let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        // With several workers, every one has others to tell.
        let notices = Notices::new(core.role() != Role::Whole);
        let platform =
            MioPlatform::new(poll.registry().try_clone()?, origin, config.process.upstream_mode, notices);
        let mut driver = Driver::new(core, platform);
        let waker_token = driver.platform_mut().token(Source::Waker);
        let waker = Arc::new(Waker::new(poll.registry(), waker_token)?);
        let (core, platform) = driver.parts_mut();
        platform.sync_listeners(core)?;
        let control = match &config.process.control_socket {
            Some(_) if !services => None,
            Some(path) => {
                let token = driver.platform_mut().token(Source::ControlListener);
                let server = ControlServer::bind(path, poll.registry(), token)?;
                tracing::info!(path = %path.display(), "control socket ready");
                Some(server)
            }
            None => None,
        };
        let metrics = match config.process.metrics_addr {
            Some(_) if !services => None,
            Some(address) => {
                let token = driver.platform_mut().token(Source::MetricsListener);
                let server = MetricsServer::bind(address, poll.registry(), token)?;
                tracing::info!(%address, "metrics at /metrics");
                Some(server)
            }
            None => None,
        };
        Ok(EventLoop {
            poll,
            driver,
            signals,
            waker,
            followers: Vec::new(),
            inbox: None,
            leader: None,
            last_view: origin,
            backlog: Vec::new(),
            config_path: config_path.to_owned(),
            config,
            default_max_flows,
            control,
            metrics,
            stopping: false,
            client_batch: RecvBatch::new(DATAGRAM_HEADROOM, RECEIVE_CAPACITY),
            backend_batch: RecvBatch::new(0, RECEIVE_CAPACITY),
        })
    }

    /// Starts worker `index` (≥ 1) as a follower of this loop, which must run a
    /// [`Role::Leader`] core: binds its listeners (SO_REUSEPORT) now, so that a failure stops
    /// the start, then runs it on its own thread. `effective` is the configuration with the
    /// worker's share of the flow cap.
    pub fn spawn_follower(&mut self, index: u32, effective: &Config, keys: Keys) -> anyhow::Result<()> {
        let core = Balancer::with_role(effective, keys, Role::Follower)
            .map_err(|errors| anyhow::anyhow!("invalid configuration: {errors:?}"))?;
        let origin = self.driver.platform().origin();
        let mut follower = EventLoop::build(
            &self.config_path,
            self.config.clone(),
            core,
            self.default_max_flows,
            origin,
            false,
        )?;
        let (to_leader, _) = self.inbox.get_or_insert_with(std::sync::mpsc::channel);
        let (sender, inbox) = std::sync::mpsc::channel();
        // Counted as a worker from the start, with no counters until it first publishes.
        let view = Arc::new(Mutex::new(WorkerView { workers: 1, ..WorkerView::default() }));
        follower.leader = Some(LeaderLink {
            inbox,
            sender: to_leader.clone(),
            leader_waker: self.waker.clone(),
            view: view.clone(),
            index,
        });
        let waker = follower.waker.clone();
        let leader_waker = self.waker.clone();
        let thread = std::thread::Builder::new().name(format!("udplb-worker-{index}")).spawn(move || {
            // Wakes the leader once this thread is all but done (its sockets closed), however
            // it ends, panics included: the leader may be waiting for the last worker to drain,
            // or must learn that one died.
            struct WakeOnExit(Arc<Waker>);
            impl Drop for WakeOnExit {
                fn drop(&mut self) {
                    let _ = self.0.wake();
                }
            }
            let _wake = WakeOnExit(leader_waker);
            if let Err(error) = follower.run() {
                tracing::error!(worker = index, "worker stopped: {error:#}");
            }
            drop(follower);
        })?;
        self.followers.push(Follower { sender, waker, view, thread: Some(thread) });
        Ok(())
    }

    /// Serves until a stop signal has drained every flow. Returns normally on a clean stop.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        if self.leader.is_none() {
            crate::system::sd_notify("READY=1");
        }
        loop {
            let mut timeout = self.driver.next_deadline().map(|deadline| {
                let now = self.driver.platform().now();
                Duration::from_nanos(deadline.as_nanos().saturating_sub(now.as_nanos()))
            });
            if self.needs_housekeeping() {
                timeout = Some(timeout.map_or(HOUSEKEEPING_INTERVAL, |t| t.min(HOUSEKEEPING_INTERVAL)));
            }
            // A follower publishes its counters even when idle; a stopping leader checks on its
            // followers until the last has drained.
            if self.leader.is_some() || (self.stopping && !self.followers.is_empty()) {
                timeout = Some(timeout.map_or(VIEW_INTERVAL, |t| t.min(VIEW_INTERVAL)));
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
                if event.token() == SIGNALS {
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
                    None => {}
                }
                self.settle();
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
            self.driver.platform_mut().expire_probes(now);
            self.publish_events();
            self.sweep_connections();
            self.relay();
            if !self.stopping
                && let Some(index) = self.followers.iter().position(Follower::finished)
            {
                // A worker that ends on its own has failed (a panic, a socket error): its
                // clients are being moved to the others' sockets. Stop, loudly, and let the
                // service manager restart the process whole.
                anyhow::bail!("worker {} stopped unexpectedly; exiting", index + 1);
            }
            if self.stopping
                && self.driver.core().flows().stats().flows.active == 0
                && self.followers.iter().all(Follower::finished)
            {
                for follower in &mut self.followers {
                    if let Some(thread) = follower.thread.take() {
                        let _ = thread.join();
                    }
                }
                match &self.leader {
                    Some(link) => tracing::info!(worker = link.index, "drained; worker done"),
                    None => tracing::info!("drained; exiting"),
                }
                return Ok(());
            }
        }
    }

    /// Messages from the other workers: passive failures for the leader; backend states,
    /// reloads, commands and the stop for a follower.
    fn read_messages(&mut self) {
        let now = self.driver.platform().now();
        if let Some((_, inbox)) = &self.inbox {
            let messages: Vec<ToLeader> = inbox.try_iter().collect();
            for ToLeader::Input(input) in messages {
                let _ = self.driver.handle(now, input);
            }
        }
        let Some(link) = &self.leader else { return };
        let messages: Vec<ToFollower> = link.inbox.try_iter().collect();
        for message in messages {
            match message {
                ToFollower::Input(input) => {
                    let _ = self.driver.handle(now, input);
                }
                ToFollower::Reload(config) => {
                    if let Err(errors) = self.driver.reload(now, &config) {
                        // Cannot happen: the leader validated the same file.
                        tracing::error!(?errors, "worker could not apply the leader's configuration");
                    }
                    let (core, platform) = self.driver.parts_mut();
                    if let Err(error) = platform.sync_listeners(core) {
                        tracing::error!("a new listener could not be opened: {error:#}");
                    }
                }
                ToFollower::Stop => self.stop(),
            }
        }
    }

    /// Passes on what the other workers must know: the leader's backend states to every
    /// follower; a follower's passive failures to the leader, and its view now and then.
    fn relay(&mut self) {
        let relayed = self.driver.platform_mut().notices.take_relayed();
        for output in relayed {
            match output {
                Output::BackendState { backend, state } => {
                    for follower in &self.followers {
                        follower.send(ToFollower::Input(Input::BackendState { backend, state }));
                    }
                }
                Output::Flow(udplb_core::Output::PassiveFailure { backend, failure }) => {
                    if let Some(link) = &self.leader {
                        link.send(ToLeader::Input(Input::PassiveFailure { backend, failure }));
                    }
                }
                _ => {}
            }
        }
        let Some(link) = &self.leader else { return };
        if self.last_view.elapsed() < VIEW_INTERVAL && !self.stopping {
            return;
        }
        self.last_view = std::time::Instant::now();
        let view = self.view();
        if let Ok(mut shared) = link.view.lock() {
            *shared = view;
        }
    }

    /// SIGTERM: drain every listener (and every follower's); the loop ends when no flow is left.
    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for follower in &self.followers {
            follower.send(ToFollower::Stop);
        }
        let listeners: Vec<ListenerId> = self.driver.core().flows().listener_ids().collect();
        let now = self.driver.platform().now();
        for listener in listeners {
            let _ = self.driver.handle(now, Input::Admin(AdminCommand::DrainListener(listener)));
        }
    }

    fn handle_signals(&mut self) -> anyhow::Result<()> {
        let Some(signals) = &mut self.signals else { return Ok(()) };
        let pending: Vec<i32> = signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => {
                    // The outcome is logged by `reload`; there is no one else to tell.
                    let _ = self.reload();
                }
                SIGTERM | SIGINT if !self.stopping => {
                    crate::system::sd_notify("STOPPING=1");
                    tracing::info!("stop requested: draining listeners");
                    self.stop();
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_listener(&mut self, listener: ListenerId) {
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
                // The batch and the driver are separate fields: no copy per datagram.
                let slot = self.client_batch.slot_mut(i);
                self.driver.client_datagram(now, listener, client, slot, headroom, received.truncated);
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
