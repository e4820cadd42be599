//! The mio event loop: the production platform under the shared driver.
//!
//! Every socket is non-blocking and registered with one `mio::Poll`; the poll timeout comes
//! from the core after every call (`Driver::next_deadline`). Listener sockets receive client
//! datagrams (SO_REUSEPORT, a large receive buffer); each flow has a connected upstream socket,
//! whose ECONNREFUSED (the kernel's report of an ICMP port unreachable) becomes the core's
//! upstream-error input; probes are non-blocking TCP connects and connected UDP sockets.
//! SIGHUP reloads the configuration file; SIGTERM and SIGINT drain and then exit.

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
use udplb_core::health::{ProbeFailure, ProbeKind, ProbeRequest};
use udplb_core::{
    AdminCommand, Balancer, Config, DATAGRAM_HEADROOM, FlowId, Instant, ListenerId, ProbeId, ProbeResult,
    UpstreamError, UpstreamId,
};

use crate::driver::{Driver, OpenError, Platform, SendError};

/// Bytes a listener's kernel receive queue may hold: the default (about 208 KB) overflows at
/// tens of thousands of datagrams per second in bursts.
const LISTENER_RECEIVE_BUFFER: usize = 8 << 20;
/// Largest UDP payload plus one, so a datagram that fills it is known to be truncated.
const RECEIVE_CAPACITY: usize = 65_536;
/// Datagrams read from one socket per readiness event before serving the others.
const READS_PER_EVENT: usize = 256;

const SIGNALS: Token = Token(0);

#[derive(Copy, Clone, Debug)]
enum Source {
    Listener(ListenerId),
    Upstream(UpstreamId),
    TcpProbe(ProbeId),
    UdpProbe(ProbeId),
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
    fn token(&mut self, source: Source) -> Token {
        // Tokens are never reused within a run: a stale event can only name a closed source.
        self.next_token += 1;
        let token = Token(self.next_token);
        self.sources.insert(token, source);
        token
    }

    /// Opens the listeners the core has and the platform lacks, closes the others.
    fn sync_listeners(&mut self, core: &Balancer) -> anyhow::Result<()> {
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
        self.upstreams.insert(upstream, Upstream { socket, flow, token });
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
            Ok(_) => Ok(()),
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
    driver: Driver<MioPlatform>,
    signals: Signals,
    config_path: PathBuf,
    /// Set by SIGTERM/SIGINT: listeners are draining, and the loop ends when no flow is left.
    stopping: bool,
    buffer: Vec<u8>,
}

impl EventLoop {
    /// Binds every listener and starts the core.
    pub fn new(config_path: &Path, core: Balancer) -> anyhow::Result<EventLoop> {
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
        };
        let mut driver = Driver::new(core, platform);
        let (core, platform) = driver.parts_mut();
        platform.sync_listeners(core)?;
        Ok(EventLoop {
            poll,
            driver,
            signals,
            config_path: config_path.to_owned(),
            stopping: false,
            buffer: vec![0u8; DATAGRAM_HEADROOM + RECEIVE_CAPACITY],
        })
    }

    /// Serves until a stop signal has drained every flow. Returns normally on a clean stop.
    pub fn run(&mut self) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        crate::system::sd_notify("READY=1");
        loop {
            let timeout = self.driver.next_deadline().map(|deadline| {
                let now = self.driver.platform().now();
                Duration::from_nanos(deadline.as_nanos().saturating_sub(now.as_nanos()))
            });
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
                let source = self.driver.platform().sources.get(&event.token()).copied();
                match source {
                    Some(Source::Listener(listener)) => self.read_listener(listener),
                    Some(Source::Upstream(upstream)) => self.read_upstream(upstream),
                    Some(Source::TcpProbe(probe)) => self.finish_tcp_probe(probe),
                    Some(Source::UdpProbe(probe)) => self.read_udp_probe(probe),
                    None => {}
                }
                self.report_deferred_refusals();
            }
            // Always: a wake-up before the deadline is harmless, and one after it is due.
            self.driver.on_timeout();
            self.report_deferred_refusals();
            self.driver.platform_mut().expire_probes();
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
                SIGHUP => self.reload(),
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

    /// Re-reads the configuration file. An invalid file keeps the running configuration.
    fn reload(&mut self) {
        crate::system::sd_notify("RELOADING=1");
        let file = self.config_path.display().to_string();
        let config = std::fs::read_to_string(&self.config_path)
            .map_err(|error| format!("{file}: {error}"))
            .and_then(|text| Config::from_toml_str(&text).map_err(|errors| errors.render(&file)));
        match config {
            Ok(config) => match self.driver.on_reload(&config) {
                Ok(reload) => {
                    let (core, platform) = self.driver.parts_mut();
                    if let Err(error) = platform.sync_listeners(core) {
                        tracing::error!(%error, "reload: a new listener could not be opened");
                    }
                    tracing::info!(?reload, "configuration reloaded");
                }
                Err(errors) => tracing::error!(?errors, "reload rejected; keeping the running configuration"),
            },
            Err(message) => tracing::error!("reload rejected; keeping the running configuration:\n{message}"),
        }
        crate::system::sd_notify("READY=1");
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
            let (received, flow) = {
                let Some(socket) = self.driver.platform().upstreams.get(&upstream) else { return };
                (socket.socket.recv(&mut self.buffer[..RECEIVE_CAPACITY]), socket.flow)
            };
            match received {
                Ok(length) => {
                    let truncated = length >= RECEIVE_CAPACITY;
                    let payload = self.buffer[..length].to_vec();
                    self.driver.on_backend_datagram(flow, &payload, truncated);
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
                let reply = self.buffer[..length].to_vec();
                self.driver.platform_mut().drop_probe(probe);
                self.driver.on_probe_reply(probe, &reply);
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
