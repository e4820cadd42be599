//! The production platform under the core's driver: real sockets registered with one
//! `mio::Poll`.
//!
//! Listener sockets (SO_REUSEPORT, a large receive buffer) receive client datagrams in batches
//! and send replies in batches. Upstreams are either shared pool sockets (the default, see
//! [`udplb_core::pool`]: unconnected, `IP_RECVERR` so that an ICMP error names the backend it is
//! about) or one connected socket per flow (`upstream_mode = "per_flow"`, whose
//! `ECONNREFUSED` is the kernel's report of an ICMP port unreachable). Sends to pool sockets
//! and listeners are queued during a batch and go out with `sendmmsg` when the event loop
//! calls [`MioPlatform::flush`]; what fails, there or on a per-flow socket, is reported back
//! to the core afterwards as an ordinary input (`take_failures`). Probes are non-blocking TCP
//! connects and connected UDP sockets.
//!
//! Sockets are all this platform owns: every output the driver notifies goes on to
//! [`crate::notices`], which counts, queues for watchers, keeps for the other workers and logs.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};
use udplb_core::Config;
use udplb_core::balancer::Output;
use udplb_core::config::UpstreamMode;
use udplb_core::driver::{OpenError, Platform};
use udplb_core::health::{ProbeKind, ProbeRequest};
use udplb_core::pool::{Acquire, FastMap, Pool};
use udplb_core::{BackendId, Balancer, FlowId, Input, Instant, ListenerId, ProbeId, UpstreamError};

use udplb_core::snapshot::PlatformState;

use crate::batch::{self, SendQueue};
use crate::handover::{Adopted, WorkerSockets};
use crate::notices::Notices;

/// Bytes a listener's kernel receive queue may hold: the default (about 208 KB) overflows at
/// tens of thousands of datagrams per second in bursts.
const LISTENER_RECEIVE_BUFFER: usize = 8 << 20;
/// Bytes a pool socket's receive queue may hold: it carries the replies of many flows.
const POOL_RECEIVE_BUFFER: usize = 4 << 20;
/// Bytes a listener's or pool socket's send buffer may hold: a batch of many flows' datagrams
/// goes out through it at once.
const SEND_BUFFER: usize = 4 << 20;

/// What a token names.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Source {
    Listener(ListenerId),
    /// A flow's own connected socket (`upstream_mode = "per_flow"`).
    Upstream(FlowId),
    /// A shared pool socket, by index.
    PoolSocket(u32),
    TcpProbe(ProbeId),
    UdpProbe(ProbeId),
    ControlListener,
    /// A control connection (the control server knows it by its token).
    Control,
    MetricsListener,
    /// A metrics connection (the metrics server knows it by its token).
    Metrics,
    /// The worker's wake-up (messages from the process's health monitor, or to it).
    Waker,
    /// A fallback handover's relay between the old and the new process (`crate::relay`).
    Relay,
}

pub(crate) struct Probe {
    token: Token,
    deadline: Instant,
    pub(crate) socket: ProbeSocket,
}

pub(crate) enum ProbeSocket {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

pub(crate) struct Listener {
    pub(crate) socket: UdpSocket,
    token: Token,
    address: SocketAddr,
    /// Bound to a wildcard address (`0.0.0.0`, `[::]`): it reads each datagram's destination
    /// (`IP_PKTINFO`) and sends each reply from the address its client used.
    wildcard: bool,
    /// Replies waiting for the next flush.
    queue: SendQueue<()>,
}

/// A flow's own connected socket.
pub(crate) struct FlowSocket {
    pub(crate) socket: UdpSocket,
    token: Token,
    /// Its backend, for per-backend traffic counters.
    pub(crate) backend: BackendId,
}

/// A shared pool socket.
pub(crate) struct PoolSocket {
    pub(crate) socket: UdpSocket,
    /// Datagrams to backends waiting for the next flush, tagged with their flow.
    queue: SendQueue<FlowId>,
}

/// Sockets, for the driver.
pub struct MioPlatform {
    registry: Registry,
    origin: std::time::Instant,
    /// The process's workers: each listener's SO_REUSEPORT group has one socket per worker,
    /// steered by the affinity key (`udplb_core::steer`) when there are several.
    workers: u32,
    /// Whether a new listener's address must be free of other processes' sockets (the
    /// leader's check, unless `--share-listeners`).
    exclusive: bool,
    pub(crate) listeners: BTreeMap<ListenerId, Listener>,
    mode: UpstreamMode,
    pub(crate) flow_sockets: FastMap<FlowId, FlowSocket>,
    pub(crate) pool: Pool<FlowId>,
    pub(crate) pool_sockets: Vec<PoolSocket>,
    /// Queues with something to flush.
    dirty_pool: Vec<u32>,
    dirty_listeners: Vec<ListenerId>,
    pub(crate) probes: BTreeMap<ProbeId, Probe>,
    sources: BTreeMap<Token, Source>,
    next_token: usize,
    /// What failed after the call that caused it (a queued send, a refusal reported on a
    /// later send, an ICMP error), as inputs for the core.
    failures: Vec<Input>,
    /// Where every output of the core goes (`notify`), with the worker's own counters, to
    /// which sends and receives add their traffic.
    pub(crate) notices: Notices,
}

impl std::fmt::Debug for MioPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MioPlatform")
            .field("listeners", &self.listeners.len())
            .field("mode", &self.mode)
            .field("flow_sockets", &self.flow_sockets.len())
            .field("pool_flows", &self.pool.len())
            .field("pool_sockets", &self.pool_sockets.len())
            .field("probes", &self.probes.len())
            .finish()
    }
}

impl MioPlatform {
    pub(crate) fn new(
        registry: Registry,
        origin: std::time::Instant,
        workers: u32,
        mode: UpstreamMode,
        notices: Notices,
    ) -> MioPlatform {
        MioPlatform {
            registry,
            origin,
            workers,
            exclusive: false,
            listeners: BTreeMap::new(),
            mode,
            flow_sockets: FastMap::default(),
            pool: Pool::default(),
            pool_sockets: Vec::new(),
            dirty_pool: Vec::new(),
            dirty_listeners: Vec::new(),
            probes: BTreeMap::new(),
            sources: BTreeMap::new(),
            next_token: 0,
            failures: Vec::new(),
            notices,
        }
    }

    /// Whether listeners bound from now on must find their address free of other processes'
    /// sockets (see [`MioPlatform::sync_listeners`]).
    pub(crate) fn set_exclusive(&mut self, exclusive: bool) {
        self.exclusive = exclusive;
    }

    /// When this platform's clock started (workers of one process share it).
    pub(crate) fn origin(&self) -> std::time::Instant {
        self.origin
    }

    /// The current time on the core's clock: read once per batch by the event loop.
    pub(crate) fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

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
        self.listeners
            .iter()
            .filter_map(|(id, listener)| {
                Some((*id, crate::system::socket_drops(listener.socket.as_raw_fd())?))
            })
            .collect()
    }

    /// Opens the listeners the core has and the platform lacks, closes the others.
    /// `config` is the one `core` runs (for what only sockets use: `freebind`).
    pub(crate) fn sync_listeners(&mut self, core: &Balancer, config: &Config) -> anyhow::Result<()> {
        // A socket handed over must be the listener the core knows by that id.
        for (id, listener) in &self.listeners {
            if let Some((name, address)) = core.flows().listener(*id)
                && address != listener.address
            {
                anyhow::bail!(
                    "the socket handed over for listener {name} is bound to {}, not {address}",
                    listener.address
                );
            }
        }
        let wanted: BTreeMap<ListenerId, SocketAddr> = core
            .flows()
            .listener_ids()
            .filter_map(|id| core.flows().listener(id).map(|(_, a)| (id, a)))
            .collect();
        let freebind = |id: ListenerId| {
            let name = core.flows().listener(id).map(|(name, _)| name);
            name.and_then(|name| config.listeners.get(name)).is_some_and(|l| l.freebind)
        };
        let stale: Vec<ListenerId> =
            self.listeners.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
        // Addresses this process serves already: a listener replaced on one of them (a reload
        // that changed its affinity) finds the other workers' sockets still there, which are
        // no other process's.
        let served_here: Vec<SocketAddr> = self.listeners.values().map(|l| l.address).collect();
        for id in stale {
            if let Some(mut listener) = self.listeners.remove(&id) {
                let _ = self.registry.deregister(&mut listener.socket);
                self.sources.remove(&listener.token);
                tracing::info!(address = %listener.address, "listener closed");
            }
        }
        for (id, address) in wanted {
            // Several workers: steered by the affinity key, by port unless keyed by address.
            let by_port = udplb_core::steer::by_port(core.flows().listener_affinity(id).unwrap_or_default());
            // A listener keeps its affinity for life: a reload that changes it replaces the
            // listener (a new id), whose new sockets attach the new program to the group.
            if self.listeners.contains_key(&id) {
                continue;
            }
            if self.exclusive && !served_here.contains(&address) && served_elsewhere(address) {
                let name = core.flows().listener(id).map_or("?", |(name, _)| name);
                anyhow::bail!(
                    "cannot listen on {address} (listener {name}): another process already serves \
                     that address (another udplb?), and sharing it would split new clients \
                     between the two. Stop the other process first, or start this one with \
                     `udplb run --share-listeners` to share the address on purpose"
                );
            }
            let mut socket = bind_listener(address, freebind(id)).map_err(|error| {
                let hint = if error.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                    " (no interface has that address yet: set `freebind = true` on the listener to \
                     bind it before the address is up)"
                } else {
                    ""
                };
                anyhow::anyhow!("cannot listen on {address}: {error}{hint}")
            })?;
            if self.workers > 1 {
                attach_steering(&socket, by_port, self.workers)
                    .map_err(|error| anyhow::anyhow!("cannot steer {address}: {error}"))?;
            }
            let token = self.token(Source::Listener(id));
            self.registry.register(&mut socket, token, Interest::READABLE)?;
            let queue = SendQueue::default();
            let wildcard = address.ip().is_unspecified();
            self.listeners.insert(id, Listener { socket, token, address, wildcard, queue });
            tracing::info!(%address, "listening");
        }
        Ok(())
    }

    /// Copies of every socket this worker has, and the state that says what each is, for a
    /// handover (`crate::handover`): listeners by id, pool sockets in index order, per-flow
    /// and probe sockets in the state's order.
    pub(crate) fn hand_over(&self) -> std::io::Result<(Vec<u8>, WorkerSockets)> {
        fn copy(socket: &impl AsFd) -> std::io::Result<OwnedFd> {
            socket.as_fd().try_clone_to_owned()
        }
        let mut sockets = WorkerSockets::default();
        for (id, listener) in &self.listeners {
            sockets.listeners.push((*id, copy(&listener.socket)?));
        }
        for pool_socket in &self.pool_sockets {
            sockets.pool.push(copy(&pool_socket.socket)?);
        }
        let mut flows: Vec<(&FlowId, &FlowSocket)> = self.flow_sockets.iter().collect();
        flows.sort_by_key(|(flow, _)| **flow);
        let mut flow_list = Vec::with_capacity(flows.len());
        for (flow, socket) in flows {
            flow_list.push((*flow, socket.backend));
            sockets.flows.push(copy(&socket.socket)?);
        }
        let mut probe_list = Vec::with_capacity(self.probes.len());
        for (id, probe) in &self.probes {
            let (fd, tcp) = match &probe.socket {
                ProbeSocket::Tcp(stream) => (copy(stream)?, true),
                ProbeSocket::Udp(socket) => (copy(socket)?, false),
            };
            probe_list.push((*id, probe.deadline, tcp));
            sockets.probes.push(fd);
        }
        Ok((PlatformState::encode_parts(&self.pool, &flow_list, &probe_list), sockets))
    }

    /// Takes over the sockets a previous process's worker handed over, with their state: its
    /// listeners (so that [`MioPlatform::sync_listeners`] keeps them rather than bind new
    /// ones), its pool and per-flow sockets with the pool's bookkeeping, its probes in flight.
    pub(crate) fn adopt(&mut self, adopted: Adopted) -> anyhow::Result<()> {
        let Adopted { platform, sockets, relay: _ } = adopted;
        for (id, fd) in sockets.listeners {
            let socket = StdUdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            let address = socket.local_addr()?;
            let mut socket = UdpSocket::from_std(socket);
            let token = self.token(Source::Listener(id));
            self.registry.register(&mut socket, token, Interest::READABLE)?;
            let wildcard = address.ip().is_unspecified();
            self.listeners
                .insert(id, Listener { socket, token, address, wildcard, queue: SendQueue::default() });
            tracing::info!(%address, "listening (taken over)");
        }
        anyhow::ensure!(
            sockets.pool.len() == platform.pool.sockets() as usize,
            "{} pool sockets handed over for a pool of {}",
            sockets.pool.len(),
            platform.pool.sockets()
        );
        for fd in sockets.pool {
            let socket = StdUdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            let mut socket = UdpSocket::from_std(socket);
            let index = self.pool_sockets.len() as u32;
            let token = self.token(Source::PoolSocket(index));
            self.registry.register(&mut socket, token, Interest::READABLE)?;
            self.pool_sockets.push(PoolSocket { socket, queue: SendQueue::default() });
        }
        self.pool = platform.pool;
        anyhow::ensure!(
            sockets.flows.len() == platform.flow_sockets.len(),
            "{} flow sockets handed over for {} flows",
            sockets.flows.len(),
            platform.flow_sockets.len()
        );
        for ((flow, backend), fd) in platform.flow_sockets.into_iter().zip(sockets.flows) {
            let socket = StdUdpSocket::from(fd);
            socket.set_nonblocking(true)?;
            let mut socket = UdpSocket::from_std(socket);
            let token = self.token(Source::Upstream(flow));
            self.registry.register(&mut socket, token, Interest::READABLE)?;
            self.flow_sockets.insert(flow, FlowSocket { socket, token, backend });
        }
        anyhow::ensure!(
            sockets.probes.len() == platform.probes.len(),
            "{} probe sockets handed over for {} probes",
            sockets.probes.len(),
            platform.probes.len()
        );
        for ((probe, deadline, tcp), fd) in platform.probes.into_iter().zip(sockets.probes) {
            let (mut socket, token) = if tcp {
                let stream = std::net::TcpStream::from(fd);
                stream.set_nonblocking(true)?;
                (ProbeSocket::Tcp(TcpStream::from_std(stream)), self.token(Source::TcpProbe(probe)))
            } else {
                let socket = StdUdpSocket::from(fd);
                socket.set_nonblocking(true)?;
                (ProbeSocket::Udp(UdpSocket::from_std(socket)), self.token(Source::UdpProbe(probe)))
            };
            match &mut socket {
                ProbeSocket::Tcp(stream) => self.registry.register(stream, token, Interest::WRITABLE)?,
                ProbeSocket::Udp(udp) => self.registry.register(udp, token, Interest::READABLE)?,
            }
            self.probes.insert(probe, Probe { token, deadline, socket });
        }
        Ok(())
    }

    /// Stops reading the listener sockets (a fallback handover: the new process reads them
    /// now); replies still leave from them.
    pub(crate) fn stop_reading_listeners(&mut self) {
        for listener in self.listeners.values_mut() {
            let _ = self.registry.deregister(&mut listener.socket);
            self.sources.remove(&listener.token);
        }
    }

    /// Registers a relay socket (`crate::relay`).
    pub(crate) fn register_relay(&mut self, socket: &mut mio::net::UnixDatagram) -> std::io::Result<Token> {
        let token = self.token(Source::Relay);
        self.registry.register(socket, token, Interest::READABLE)?;
        Ok(token)
    }

    /// Drops probe sockets past their deadline: the core has already timed them out.
    pub(crate) fn expire_probes(&mut self, now: Instant) {
        if self.probes.is_empty() {
            return;
        }
        let expired: Vec<ProbeId> =
            self.probes.iter().filter(|(_, probe)| probe.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            self.drop_probe(id);
        }
    }

    pub(crate) fn drop_probe(&mut self, id: ProbeId) {
        if let Some(mut probe) = self.probes.remove(&id) {
            match &mut probe.socket {
                ProbeSocket::Tcp(stream) => drop(self.registry.deregister(stream)),
                ProbeSocket::Udp(socket) => drop(self.registry.deregister(socket)),
            }
            self.sources.remove(&probe.token);
        }
    }

    /// Sends everything queued during the last batch (one `sendmmsg` per socket and up to
    /// [`batch::BATCH`] datagrams); failures wait in [`MioPlatform::take_failures`].
    pub(crate) fn flush(&mut self) {
        // The dirty lists are taken and handed back empty, keeping their allocations: this
        // runs after every batch.
        let mut dirty_pool = std::mem::take(&mut self.dirty_pool);
        for index in dirty_pool.drain(..) {
            let Some(pool_socket) = self.pool_sockets.get_mut(index as usize) else { continue };
            let fd = pool_socket.socket.as_raw_fd();
            let pool = &self.pool;
            let failures = &mut self.failures;
            let counters = &mut self.notices.counters;
            // With `IP_RECVERR` every ICMP error the socket receives (port or host
            // unreachable, fragmentation needed, administratively prohibited, ...) is also left
            // pending, and the next send fails once with it whatever its destination: that
            // datagram was not sent, so any error is worth one more attempt (the error itself
            // is in the error queue, read on the readiness it raises).
            pool_socket.queue.flush(
                fd,
                |_| true,
                |failure| {
                    tracing::debug!(error = %failure.error, "send to a backend failed");
                    if let Some(binding) = pool.binding(failure.tag) {
                        failures.push(Input::UpstreamError {
                            flow: binding.flow,
                            error: UpstreamError::SendFailed,
                        });
                        // Counted when queued; it did not go out after all.
                        counters.not_sent_to_backend(binding.backend, failure.length);
                    }
                },
            );
        }
        self.dirty_pool = dirty_pool;
        let mut dirty_listeners = std::mem::take(&mut self.dirty_listeners);
        for id in dirty_listeners.drain(..) {
            let Some(listener) = self.listeners.get_mut(&id) else { continue };
            let fd = listener.socket.as_raw_fd();
            let failures = &mut self.failures;
            listener.queue.flush(
                fd,
                |_| false,
                |failure| {
                    tracing::debug!(error = %failure.error, "send to a client failed");
                    failures.push(Input::ReturnFailed { listener: id, bytes: failure.length });
                },
            );
        }
        self.dirty_listeners = dirty_listeners;
    }

    /// Sockets that carry flows to backends now: pool sockets (never closed) and per-flow
    /// sockets.
    pub(crate) fn upstream_sockets(&self) -> u64 {
        u64::from(self.pool.sockets()) + self.flow_sockets.len() as u64
    }

    /// What went wrong since the last call, as inputs for the core.
    pub(crate) fn take_failures(&mut self) -> Vec<Input> {
        std::mem::take(&mut self.failures)
    }

    /// Reads a pool socket's ICMP errors (each names the backend address it is about) and
    /// queues them for the core as errors of the flows they concern.
    pub(crate) fn read_pool_errors(&mut self, index: u32) {
        let Some(pool_socket) = self.pool_sockets.get(index as usize) else { return };
        let fd = pool_socket.socket.as_raw_fd();
        while let Some(error) = batch::recv_error(fd) {
            let Some(binding) = self.pool.occupant(index, error.destination) else { continue };
            let kind = match error.errno {
                libc::ECONNREFUSED => UpstreamError::Refused,
                libc::EHOSTUNREACH | libc::ENETUNREACH => UpstreamError::Unreachable,
                _ => continue,
            };
            self.failures.push(Input::UpstreamError { flow: binding.flow, error: kind });
        }
    }

    fn open_pool_socket(&mut self, address: SocketAddr) -> std::io::Result<u32> {
        let mut socket = unconnected_udp(address)?;
        let index = self.pool_sockets.len() as u32;
        let token = self.token(Source::PoolSocket(index));
        if let Err(error) = self.registry.register(&mut socket, token, Interest::READABLE) {
            self.forget(token);
            return Err(error);
        }
        self.pool_sockets.push(PoolSocket { socket, queue: SendQueue::default() });
        Ok(index)
    }

    fn open_pooled(
        &mut self,
        now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        // An IPv4-mapped IPv6 backend is an IPv4 one for the pool (its IPv6 sockets are
        // IPv6-only); replies then come from the IPv4 address, which is what the lane holds.
        let address = SocketAddr::new(address.ip().to_canonical(), address.port());
        let socket = match self.pool.acquire(address, now) {
            Acquire::Socket(socket) => socket,
            Acquire::Grow => match self.open_pool_socket(address) {
                Ok(opened) => {
                    let index = self.pool.add_socket(address);
                    debug_assert_eq!(index, opened, "the pool and the socket list grow together");
                    index
                }
                Err(error) => match self.pool.acquire_quarantined(address) {
                    Some(socket) => socket,
                    None => return Err(OpenError(error.to_string())),
                },
            },
        };
        self.pool.bind(flow, socket, address, backend);
        Ok(())
    }

    fn open_flow_socket(
        &mut self,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        let mut socket = connected_udp(address).map_err(|e| OpenError(e.to_string()))?;
        let token = self.token(Source::Upstream(flow));
        if let Err(error) = self.registry.register(&mut socket, token, Interest::READABLE) {
            self.forget(token);
            return Err(OpenError(error.to_string()));
        }
        self.flow_sockets.insert(flow, FlowSocket { socket, token, backend });
        Ok(())
    }
}

/// A listener's socket: in the SO_REUSEPORT group of `address`, with large buffers; on a
/// wildcard address, telling each datagram's destination; with `freebind`, bound even before
/// the host has the address.
fn bind_listener(address: SocketAddr, freebind: bool) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if address.ip().is_unspecified() {
        batch::enable_pktinfo(socket.as_raw_fd(), address.is_ipv6())?;
    }
    if freebind {
        match address {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
        }
    }
    // Best effort: the kernel caps it at net.core.rmem_max unless we may exceed it.
    let _ = socket.set_recv_buffer_size(LISTENER_RECEIVE_BUFFER);
    let _ = socket.set_send_buffer_size(SEND_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(socket)))
}

/// Whether another socket already holds `address` (or its port on a wildcard address): a
/// socket bound without SO_REUSEADDR and SO_REUSEPORT cannot share it, so its bind fails with
/// EADDRINUSE exactly when someone is there — with SO_REUSEPORT our own bind would succeed and
/// silently join that process's group. Any other failure is left to the real bind to report.
fn served_elsewhere(address: SocketAddr) -> bool {
    let Ok(probe) = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP)) else {
        return false;
    };
    matches!(probe.bind(&address.into()), Err(error) if error.kind() == ErrorKind::AddrInUse)
}

/// Attaches the steering program (`udplb_core::steer::program`) to the SO_REUSEPORT group
/// of `socket`, for `workers` sockets keyed by address (and port when `by_port`): the kernel
/// then wakes the socket the program names for each datagram, so one client always reaches
/// the same worker. Attaching again (every worker does, and a reload may) replaces it.
fn attach_steering(socket: &UdpSocket, by_port: bool, workers: u32) -> std::io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = udplb_core::steer::program(by_port, workers)
        .into_iter()
        .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
        .collect();
    let program = libc::sock_fprog {
        len: u16::try_from(filter.len()).expect("a short program"),
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `program` points at `filter`, alive for the call; the kernel copies both.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&program as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if status == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn wildcard(address: SocketAddr) -> SocketAddr {
    if address.is_ipv4() { "0.0.0.0:0".parse().expect("literal") } else { "[::]:0".parse().expect("literal") }
}

pub(crate) fn connected_udp(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.bind(&wildcard(address).into())?;
    socket.connect(&address.into())?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(socket)))
}

/// A pool socket for backends of `address`'s family: bound to an ephemeral port, not
/// connected, with ICMP errors queued.
fn unconnected_udp(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(POOL_RECEIVE_BUFFER);
    let _ = socket.set_send_buffer_size(SEND_BUFFER);
    socket.bind(&wildcard(address).into())?;
    batch::enable_recverr(socket.as_raw_fd(), address.is_ipv6())?;
    Ok(UdpSocket::from_std(StdUdpSocket::from(socket)))
}

impl Platform for MioPlatform {
    fn open_upstream(
        &mut self,
        now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        let opened = match self.mode {
            UpstreamMode::Pool => self.open_pooled(now, flow, backend, address),
            UpstreamMode::PerFlow => self.open_flow_socket(flow, backend, address),
        };
        // The flow's names are logged by the core's events; an open is a debug-level line.
        match &opened {
            Ok(()) => tracing::debug!(event = %"flow_opened", flow = flow.serial(), %address, "flow opened"),
            Err(error) => {
                tracing::debug!(event = %"flow_not_opened", flow = flow.serial(), %address, %error, "flow not opened")
            }
        }
        opened
    }

    fn close_upstream(&mut self, now: Instant, flow: FlowId) {
        if let Some(mut closed) = self.flow_sockets.remove(&flow) {
            let _ = self.registry.deregister(&mut closed.socket);
            self.sources.remove(&closed.token);
            return;
        }
        self.pool.release(flow, now);
    }

    fn send_upstream(&mut self, flow: FlowId, datagram: &[u8]) {
        if let Some(binding) = self.pool.binding(flow) {
            let pool_socket = &mut self.pool_sockets[binding.socket as usize];
            if pool_socket.queue.is_empty() {
                self.dirty_pool.push(binding.socket);
            }
            pool_socket.queue.push(binding.address, datagram, flow);
            self.notices.counters.sent_to_backend(binding.backend, datagram.len());
            return;
        }
        let Some(socket) = self.flow_sockets.get(&flow) else {
            self.failures.push(Input::UpstreamError { flow, error: UpstreamError::SendFailed });
            return;
        };
        match socket.socket.send(datagram) {
            Ok(sent) => self.notices.counters.sent_to_backend(socket.backend, sent),
            Err(error) => {
                tracing::debug!(%error, "send to a backend failed");
                self.failures.push(Input::UpstreamError { flow, error: UpstreamError::SendFailed });
                if error.kind() == ErrorKind::ConnectionRefused {
                    // An earlier datagram drew an ICMP port unreachable; this one was not sent.
                    self.failures.push(Input::UpstreamError { flow, error: UpstreamError::Refused });
                }
            }
        }
    }

    fn send_to_client(
        &mut self,
        listener: ListenerId,
        local: SocketAddr,
        client: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(queued) = self.listeners.get_mut(&listener) else {
            self.failures.push(Input::ReturnFailed { listener, bytes: datagram.len() });
            return;
        };
        if queued.queue.is_empty() {
            self.dirty_listeners.push(listener);
        }
        // A socket bound to one address sends from it; a wildcard one from where the client
        // sent (the kernel would pick by route, and a connected client drops the reply).
        let source = (queued.wildcard && !local.ip().is_unspecified()).then_some(local.ip());
        queued.queue.push_from(source, client, datagram, ());
    }

    fn start_probe(&mut self, _now: Instant, probe: &ProbeRequest) {
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
        } else {
            self.forget(token);
        }
    }

    fn notify(&mut self, core: &Balancer, output: &Output) {
        self.notices.notify(core, output);
    }
}
