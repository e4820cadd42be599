//! The mio event loop: the production platform under the shared driver.
//!
//! Every socket is non-blocking and registered with one `mio::Poll`; the poll timeout comes
//! from the core after every call (`Driver::next_deadline`). Listener sockets receive client
//! datagrams (SO_REUSEPORT, a large receive buffer); each flow has a connected upstream socket,
//! whose ECONNREFUSED (the kernel's report of an ICMP port unreachable) becomes the core's
//! upstream-error input; probes are non-blocking TCP connects and connected UDP sockets.
//! SIGHUP (or `udplb ctl reload`) reloads the configuration file; SIGTERM and SIGINT drain
//! and then exit. The control socket ([`crate::control`]) and the metrics endpoint
//! ([`crate::metrics`]) are served in the same loop, between datagrams, by `commands.rs`.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use socket2::{Domain, Protocol, Socket, Type};
use udplb_core::balancer::Output;
use udplb_core::health::{HealthEvent, ProbeFailure, ProbeKind, ProbeRequest};
use udplb_core::{
    AdminCommand, BackendId, Balancer, Config, DATAGRAM_HEADROOM, FlowId, Instant, ListenerId, ProbeId,
    ProbeResult, UpstreamError, UpstreamId,
};

use crate::control::ControlServer;
use crate::driver::{Driver, OpenError, Platform, SendError};
use crate::metrics::ShellCounters;
use crate::metrics::http::MetricsServer;

/// Bytes a listener's kernel receive queue may hold: the default (about 208 KB) overflows at
/// tens of thousands of datagrams per second in bursts.
const LISTENER_RECEIVE_BUFFER: usize = 8 << 20;
/// Largest UDP payload plus one, so a datagram that fills it is known to be truncated.
const RECEIVE_CAPACITY: usize = 65_536;
/// Datagrams read from one socket per readiness event before serving the others.
const READS_PER_EVENT: usize = 256;

/// Events waiting for `watch`ers between two turns of the loop; more are counted as lost.
const MAX_QUEUED_WATCH_EVENTS: usize = 4096;
/// Longest sleep while a control or metrics connection waits on a deadline of its own.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

const SIGNALS: Token = Token(0);

/// What a token names.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Source {
    Listener(ListenerId),
    Upstream(UpstreamId),
    TcpProbe(ProbeId),
    UdpProbe(ProbeId),
    ControlListener,
    /// A control connection (the control server knows it by its token).
    Control,
    MetricsListener,
    /// A metrics connection (the metrics server knows it by its token).
    Metrics,
}

struct Probe {
    token: Token,
    deadline: Instant,
    socket: ProbeSocket,
}

enum ProbeSocket {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

struct Upstream {
    socket: UdpSocket,
    flow: FlowId,
    token: Token,
    /// Its backend, for per-backend traffic counters (learnt from the `OpenUpstream` output
    /// right after the open, since the platform's open call is not told).
    backend: Option<BackendId>,
}

/// Sockets and the clock, for the driver.
pub struct MioPlatform {
    registry: Registry,
    origin: std::time::Instant,
    listeners: BTreeMap<ListenerId, (UdpSocket, Token, SocketAddr)>,
    upstreams: BTreeMap<UpstreamId, Upstream>,
    probes: BTreeMap<ProbeId, Probe>,
    sources: BTreeMap<Token, Source>,
    next_token: usize,
    /// Refusals seen while sending, reported to the core after the call that sent.
    deferred_refusals: Vec<FlowId>,
    /// Counts the core does not keep (per-backend traffic, transitions by code).
    pub(crate) counters: ShellCounters,
    /// Set while a control connection watches: events are then queued for it.
    pub(crate) watching: bool,
    pub(crate) watch_queue: Vec<Output>,
    /// Events not queued since the last turn because the queue was full.
    pub(crate) watch_lost: u64,
}

impl std::fmt::Debug for MioPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioPlatform")
            .field("listeners", &self.listeners.len())
            .field("upstreams", &self.upstreams.len())
            .field("probes", &self.probes.len())
            .finish()
    }
}

impl MioPlatform {
    pub(crate) fn token(&mut self, source: Source) -> Token {
        // Tokens are never reused within a run: a stale event can only name a closed source.
        self.next_token += 1;
        let token = Token(self.next_token);
        self.sources.insert(token, source);
        token
    }

    /// Forgets a token whose socket is closed.
    pub(crate) fn forget(&mut self, token: Token) {
        self.sources.remove(&token);
    }

    pub(crate) fn source(&self, token: Token) -> Option<Source> {
        self.sources.get(&token).copied()
    }

    /// The kernel's drop count of every listener socket (see [`crate::system::socket_drops`]).
    pub(crate) fn kernel_drops(&self) -> Vec<(ListenerId, u64)> {
        use std::os::fd::AsRawFd;
        self.listeners
            .iter()
            .filter_map(|(id, (socket, _, _))| Some((*id, crate::system::socket_drops(socket.as_raw_fd())?)))
            .collect()
    }

    /// Opens the listeners the core has and the platform lacks, closes the others.
    pub(crate) fn sync_listeners(&mut self, core: &Balancer) -> anyhow::Result<()> {
        let wanted: BTreeMap<ListenerId, SocketAddr> = core
            .flows()
            .listener_ids()
            .filter_map(|id| core.flows().listener(id).map(|(_, a)| (id, a)))
            .collect();
        let stale: Vec<ListenerId> =
            self.listeners.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
        for id in stale {
            if let Some((mut socket, token, address)) = self.listeners.remove(&id) {
                let _ = self.registry.deregister(&mut socket);
                self.sources.remove(&token);
                tracing::info!(%address, "listener closed");
            }
        }
        for (id, address) in wanted {
            if self.listeners.contains_key(&id) {
                continue;
            }
            let mut socket = bind_listener(address)
                .map_err(|error| anyhow::anyhow!("cannot listen on {address}: {error}"))?;
            let token = self.token(Source::Listener(id));
            self.registry.register(&mut socket, token, Interest::READABLE)?;
            self.listeners.insert(id, (socket, token, address));
            tracing::info!(%address, "listening");
        }
        Ok(())
    }

    /// Drops probe sockets past their deadline: the core has already timed them out.
    fn expire_probes(&mut self) {
        let now = self.now();
        let expired: Vec<ProbeId> =
            self.probes.iter().filter(|(_, probe)| probe.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.drop_probe(id);
        }
    }

    fn drop_probe(&mut self, id: ProbeId) {
        if let Some(mut probe) = self.probes.remove(&id) {
            match &mut probe.socket {
                ProbeSocket::Tcp(stream) => drop(self.registry.deregister(stream)),
                ProbeSocket::Udp(socket) => drop(self.registry.deregister(socket)),
            }
            self.sources.remove(&probe.token);
        }
    }
}

fn bind_listener(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Best effort: the kernel caps it at net.core.rmem_max unless we may exceed it.
    let _ = socket.set_recv_buffer_size(LISTENER_RECEIVE_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(socket)))
}

fn connected_udp(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    let any: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    socket.bind(&any.into())?;
    socket.connect(&address.into())?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(socket)))
}

impl Platform for MioPlatform {
    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn open_upstream(
        &mut self,
        upstream: UpstreamId,
        flow: FlowId,
        _listener: ListenerId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        let mut socket = connected_udp(address).map_err(|e| OpenError(e.to_string()))?;
        let token = self.token(Source::Upstream(upstream));
        self.registry
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| OpenError(e.to_string()))?;
        self.upstreams.insert(upstream, Upstream { socket, flow, token, backend: None });
        Ok(())
    }

    fn close_upstream(&mut self, upstream: UpstreamId) {
        if let Some(mut closed) = self.upstreams.remove(&upstream) {
            let _ = self.registry.deregister(&mut closed.socket);
            self.sources.remove(&closed.token);
        }
    }

    fn send_upstream(&mut self, upstream: UpstreamId, datagram: &[u8]) -> Result<(), SendError> {
        let socket = self.upstreams.get(&upstream).ok_or_else(|| SendError("no such upstream".into()))?;
        match socket.socket.send(datagram) {
            Ok(sent) => {
                if let Some(backend) = socket.backend {
                    self.counters.sent_to_backend(backend, sent);
                }
                Ok(())
            }
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                // An earlier datagram drew an ICMP port unreachable; this one was not sent.
                self.deferred_refusals.push(socket.flow);
                Err(SendError(error.to_string()))
            }
            Err(error) => Err(SendError(error.to_string())),
        }
    }

    fn send_to_client(
        &mut self,
        listener: ListenerId,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), SendError> {
        let (socket, _, _) =
            self.listeners.get(&listener).ok_or_else(|| SendError("no such listener".into()))?;
        socket.send_to(datagram, client).map(|_| ()).map_err(|e| SendError(e.to_string()))
    }

    fn start_probe(&mut self, probe: &ProbeRequest) {
        let started = match &probe.kind {
            ProbeKind::Tcp { address } => TcpStream::connect(*address).map(ProbeSocket::Tcp),
            ProbeKind::Udp { address, datagram } => connected_udp(*address).and_then(|socket| {
                socket.send(datagram)?;
                Ok(ProbeSocket::Udp(socket))
            }),
        };
        // A probe that cannot even start is left to the core's timer: it fails as a timeout.
        let Ok(mut socket) = started else { return };
        let token = match socket {
            ProbeSocket::Tcp(_) => self.token(Source::TcpProbe(probe.probe)),
            ProbeSocket::Udp(_) => self.token(Source::UdpProbe(probe.probe)),
        };
        let registered = match &mut socket {
            ProbeSocket::Tcp(stream) => self.registry.register(stream, token, Interest::WRITABLE),
            ProbeSocket::Udp(udp) => self.registry.register(udp, token, Interest::READABLE),
        };
        if registered.is_ok() {
            self.probes.insert(probe.probe, Probe { token, deadline: probe.deadline, socket });
        }
    }

    fn notify(&mut self, output: &Output) {
        match output {
            Output::Flow(udplb_core::Output::OpenUpstream { upstream, backend, .. }) => {
                if let Some(opened) = self.upstreams.get_mut(upstream) {
                    opened.backend = Some(*backend);
                }
            }
            Output::Health(HealthEvent::Transition { backend, to, code, .. }) => {
                self.counters.transition(*backend, *to, *code);
            }
            _ => {}
        }
        if self.watching && crate::status::is_watch_event(output) {
            if self.watch_queue.len() < MAX_QUEUED_WATCH_EVENTS {
                self.watch_queue.push(output.clone());
            } else {
                self.watch_lost += 1;
                self.counters.watch_events_lost += 1;
            }
        }
        match output {
            Output::Health(event) => tracing::info!(?event, "health"),
            Output::Frontend { listener, state } => tracing::info!(%listener, ?state, "listener state"),
            Output::Flow(udplb_core::Output::Event(event)) => tracing::info!(?event, "flow event"),
            Output::Flow(udplb_core::Output::CloseUpstream { flow, reason, .. }) => {
                tracing::debug!(%flow, %reason, "flow closed")
            }
            Output::Flow(udplb_core::Output::OpenUpstream { flow, address, .. }) => {
                tracing::debug!(%flow, %address, "flow opened")
            }
            _ => {}
        }
    }
}

/// The running balancer: the driver on mio, the configuration file it reloads.
pub struct EventLoop {
    poll: Poll,
    pub(crate) driver: Driver<MioPlatform>,
    signals: Signals,
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
    buffer: Vec<u8>,
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
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let platform = MioPlatform {
            registry: poll.registry().try_clone()?,
            origin: std::time::Instant::now(),
            listeners: BTreeMap::new(),
            upstreams: BTreeMap::new(),
            probes: BTreeMap::new(),
            sources: BTreeMap::new(),
            next_token: 0,
            deferred_refusals: Vec::new(),
            counters: ShellCounters::default(),
            watching: false,
            watch_queue: Vec::new(),
            watch_lost: 0,
        };
        let mut driver = Driver::new(core, platform);
        let (core, platform) = driver.parts_mut();
        platform.sync_listeners(core)?;
        let control = match &config.process.control_socket {
            Some(path) => {
                let token = driver.platform_mut().token(Source::ControlListener);
                let server = ControlServer::bind(path, poll.registry(), token)?;
                tracing::info!(path = %path.display(), "control socket ready");
                Some(server)
            }
            None => None,
        };
        let metrics = match config.process.metrics_addr {
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
            config_path: config_path.to_owned(),
            config,
            default_max_flows,
            control,
            metrics,
            stopping: false,
            buffer: vec![0u8; DATAGRAM_HEADROOM + RECEIVE_CAPACITY],
        })
    }

    /// Serves until a stop signal has drained every flow. Returns normally on a clean stop.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        crate::system::sd_notify("READY=1");
        loop {
            let mut timeout = self.driver.next_deadline().map(|deadline| {
                let now = self.driver.platform().now();
                Duration::from_nanos(deadline.as_nanos().saturating_sub(now.as_nanos()))
            });
            if self.needs_housekeeping() {
                timeout = Some(timeout.map_or(HOUSEKEEPING_INTERVAL, |t| t.min(HOUSEKEEPING_INTERVAL)));
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
                    Some(Source::TcpProbe(probe)) => self.finish_tcp_probe(probe),
                    Some(Source::UdpProbe(probe)) => self.read_udp_probe(probe),
                    Some(Source::ControlListener) => self.accept_control(),
                    Some(Source::Control) => self.serve_control(event.token()),
                    Some(Source::MetricsListener) => self.accept_metrics(),
                    Some(Source::Metrics) => self.serve_metrics(event.token()),
                    None => {}
                }
                self.report_deferred_refusals();
            }
            // Always: a wake-up before the deadline is harmless, and one after it is due.
            self.driver.on_timeout();
            self.report_deferred_refusals();
            self.driver.platform_mut().expire_probes();
            self.publish_events();
            self.sweep_connections();
            if self.stopping && self.driver.core().flows().stats().flows.active == 0 {
                tracing::info!("drained; exiting");
                return Ok(());
            }
        }
    }

    fn handle_signals(&mut self) -> anyhow::Result<()> {
        let pending: Vec<i32> = self.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => {
                    // The outcome is logged by `reload`; there is no one else to tell.
                    let _ = self.reload();
                }
                SIGTERM | SIGINT if !self.stopping => {
                    crate::system::sd_notify("STOPPING=1");
                    tracing::info!("stop requested: draining listeners");
                    self.stopping = true;
                    let listeners: Vec<ListenerId> = self.driver.core().flows().listener_ids().collect();
                    for listener in listeners {
                        let _ = self.driver.on_admin(AdminCommand::DrainListener(listener));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn read_listener(&mut self, listener: ListenerId) {
        for _ in 0..READS_PER_EVENT {
            let received = {
                let Some((socket, _, _)) = self.driver.platform().listeners.get(&listener) else { return };
                socket.recv_from(&mut self.buffer[DATAGRAM_HEADROOM..])
            };
            match received {
                Ok((length, client)) => {
                    let truncated = length >= RECEIVE_CAPACITY;
                    let end = DATAGRAM_HEADROOM + length;
                    self.driver.on_client_datagram(
                        listener,
                        client,
                        &mut self.buffer[..end],
                        DATAGRAM_HEADROOM,
                        truncated,
                    );
                    self.report_deferred_refusals();
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::warn!(%error, "listener receive failed");
                    return;
                }
            }
        }
    }

    fn read_upstream(&mut self, upstream: UpstreamId) {
        for _ in 0..READS_PER_EVENT {
            let (received, flow, backend) = {
                let Some(socket) = self.driver.platform().upstreams.get(&upstream) else { return };
                (socket.socket.recv(&mut self.buffer[..RECEIVE_CAPACITY]), socket.flow, socket.backend)
            };
            match received {
                Ok(length) => {
                    if let Some(backend) = backend {
                        self.driver.platform_mut().counters.received_from_backend(backend, length);
                    }
                    let truncated = length >= RECEIVE_CAPACITY;
                    // The buffer and the driver are separate fields: no copy per datagram.
                    self.driver.on_backend_datagram(flow, &self.buffer[..length], truncated);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                    // The kernel's report of an ICMP port unreachable for this socket.
                    self.driver.on_upstream_error(flow, UpstreamError::Refused);
                    return;
                }
                Err(error) => {
                    let unreachable =
                        matches!(error.raw_os_error(), Some(libc::EHOSTUNREACH | libc::ENETUNREACH));
                    if unreachable {
                        self.driver.on_upstream_error(flow, UpstreamError::Unreachable);
                    }
                    return;
                }
            }
        }
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
            self.driver.on_probe_result(probe, result);
        }
    }

    fn read_udp_probe(&mut self, probe: ProbeId) {
        let received = {
            let Some(Probe { socket: ProbeSocket::Udp(socket), .. }) =
                self.driver.platform().probes.get(&probe)
            else {
                return;
            };
            socket.recv(&mut self.buffer[..RECEIVE_CAPACITY])
        };
        match received {
            Ok(length) => {
                self.driver.platform_mut().drop_probe(probe);
                self.driver.on_probe_reply(probe, &self.buffer[..length]);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(error) => {
                let failure = if error.kind() == ErrorKind::ConnectionRefused {
                    ProbeFailure::Refused
                } else {
                    ProbeFailure::Error
                };
                self.driver.platform_mut().drop_probe(probe);
                self.driver.on_probe_result(probe, ProbeResult::Fail(failure));
            }
        }
    }

    fn report_deferred_refusals(&mut self) {
        let refused = std::mem::take(&mut self.driver.platform_mut().deferred_refusals);
        for flow in refused {
            self.driver.on_upstream_error(flow, UpstreamError::Refused);
        }
    }
}
