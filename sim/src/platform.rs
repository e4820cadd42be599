//! The simulated platform under the core's driver: sockets are entries in maps, and every
//! send becomes an effect the world carries out on its network after the driver returns.
//!
//! Upstreams are placed as the `udplb` binary places them: with `upstream_mode = "pool"` (the
//! default) the core's own [`udplb_core::pool`] decides which simulated pool socket (a local
//! port, kept for the whole run) carries a new flow, so flows to different backends share
//! ports, each backend has its lane and its quarantine, exactly as in the shell; a datagram
//! arriving on a pool port belongs to the flow bound at (port, source address), as the
//! shell's event loop looks it up. With `"per_flow"` each flow has a port of its own.
//!
//! The scenario's `[platform]` section makes the simulated kernel fail what the real one can
//! fail: opening a socket, and sends (an error, EMSGSIZE, a full send buffer), each with its
//! probability, drawn from a ChaCha stream of the platform's own (seeded from the run's seed
//! and the instance), so adding faults does not shift the network's draws. A send that
//! fails is reported to the core as the shell reports it: `UpstreamError::SendFailed` for a
//! datagram to a backend, `Input::ReturnFailed` for one to a client.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use udplb_core::balancer::Output;
use udplb_core::config::UpstreamMode;
use udplb_core::driver::{OpenError, Platform};
use udplb_core::health::{ProbeKind, ProbeRequest};
use udplb_core::pool::{Acquire, Pool};
use udplb_core::{BackendId, Balancer, FlowId, Instant, ListenerId, ProbeId};

use crate::scenario::PlatformSpec;

/// Balancer instance `instance`'s address for its upstream sockets (10.0.0.254, .252, …).
pub fn upstream_ip(instance: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 254 - 2 * instance as u8))
}

/// Balancer instance `instance`'s address for UDP probes (10.0.0.253, .251, …).
pub fn probe_ip(instance: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 253 - 2 * instance as u8))
}

/// Balancer instance `instance`'s IPv6 address for its upstream sockets to IPv6 backends
/// (fd00::fe, fd00::fc, …) and for UDP probes of them (fd00::fd, …), as the shell's sockets of
/// each family have their own source address.
pub fn upstream_ip6(instance: usize) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfe - 2 * instance as u16))
}

pub fn probe_ip6(instance: usize) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0xfd - 2 * instance as u16))
}

/// Why a send failed at once, when the `[platform]` faults made it fail (a send bigger than a
/// learned path MTU fails too, but that is the network's doing, not a drawn fault).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SendFault {
    /// An error from the kernel (the shell reports any; on a pool socket it retries once, so
    /// this is one that fails twice).
    Failed,
    /// EMSGSIZE.
    TooLong,
    /// EAGAIN or ENOBUFS: the socket's send buffer is full. The shell gives up on the rest
    /// of that socket's queue too, so every later send on the socket in the same driver call
    /// fails the same way.
    BufferFull,
}

/// Something the driver asked the world to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// A datagram from one of the balancer's sockets.
    Send { from: SocketAddr, to: SocketAddr, payload: Vec<u8> },
    /// A datagram from a listener's socket, with `from` as its source (the address its client
    /// sent to, as the shell's IP_PKTINFO sets it on a wildcard listener).
    SendFromListener { listener: ListenerId, from: SocketAddr, to: SocketAddr, payload: Vec<u8> },
    /// A TCP connect probe.
    TcpProbe { probe: ProbeId, address: SocketAddr },
    /// An upstream was opened for a new flow to `backend`.
    Opened { flow: FlowId, backend: BackendId },
    /// Opening a socket for an upstream failed (a drawn fault): the pool then falls back on a
    /// quarantined socket if it has one, else the open fails.
    SocketOpenFailed,
    /// A send on `flow`'s upstream failed at once (the kernel's EMSGSIZE for a datagram
    /// bigger than a learned path MTU, or a drawn `fault`): the world reports it to the core
    /// as `UpstreamError::SendFailed` once the driver returns, as the shell reports its
    /// failed sends after a batch.
    SendFailed { flow: FlowId, fault: Option<SendFault> },
    /// A send to a client from `listener` failed at once (a drawn fault): the world reports
    /// it as `Input::ReturnFailed`, as the shell does.
    ReturnFailed { listener: ListenerId, bytes: usize, fault: SendFault },
    /// An output worth recording (events, opens, closes).
    Notify(Output),
}

#[derive(Clone, Debug)]
pub struct Upstream {
    pub flow: FlowId,
    pub port: u16,
    pub backend: SocketAddr,
    /// The backend's id in the core.
    pub id: BackendId,
}

/// Where a datagram (or an ICMP error about one) that arrived on an upstream port goes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The flow bound at (port, source).
    Flow(FlowId),
    /// A socket is there but no flow from that source: the core hears it as a stray.
    Stray,
    /// No socket would see it: no socket on that port, or a per-flow socket connected to
    /// another address (the kernel filters it).
    Filtered,
}

/// A socket whose send buffer is full for the rest of a driver call.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FullSocket {
    Upstream(u16),
    Listener(ListenerId),
}

/// The drawn faults of one platform: their probabilities and their own random stream.
#[derive(Debug)]
struct Faults {
    spec: PlatformSpec,
    rng: ChaCha8Rng,
}

impl Faults {
    fn fraction(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether an open fails (nothing drawn when it never does).
    fn open_fails(&mut self) -> bool {
        self.spec.open_fail > 0.0 && self.fraction() < self.spec.open_fail
    }

    /// What happens to one send, given the probabilities of (error, EMSGSIZE, full buffer).
    fn send(&mut self, (failed, too_long, full): (f64, f64, f64)) -> Option<SendFault> {
        if failed + too_long + full <= 0.0 {
            return None;
        }
        let draw = self.fraction();
        if draw < failed {
            Some(SendFault::Failed)
        } else if draw < failed + too_long {
            Some(SendFault::TooLong)
        } else if draw < failed + too_long + full {
            Some(SendFault::BufferFull)
        } else {
            None
        }
    }
}

/// Simulated sockets of one balancer instance.
#[derive(Debug)]
pub struct SimPlatform {
    pub upstream_ip: IpAddr,
    pub probe_ip: IpAddr,
    /// The same for IPv6 backends.
    pub upstream_ip6: IpAddr,
    pub probe_ip6: IpAddr,
    mode: UpstreamMode,
    /// Every flow's upstream (its port: its pool socket's, or its own).
    pub upstreams: BTreeMap<FlowId, Upstream>,
    /// Per-flow mode: the flow on each port.
    upstream_by_port: BTreeMap<u16, FlowId>,
    /// Pool mode: which flow each pool socket carries to which backend (the core's pool).
    pool: Pool<FlowId>,
    /// Pool sockets' ports, by the pool's socket index, and back.
    pool_ports: Vec<u16>,
    pool_socket_by_port: BTreeMap<u16, u32>,
    next_port: u16,
    /// UDP probes waiting for a reply, by local port, with the time they may be forgotten.
    pub probes_by_port: BTreeMap<u16, (ProbeId, Instant)>,
    next_probe_port: u16,
    pub effects: Vec<Effect>,
    /// The flow and backend of the last datagram sent upstream: a flow that ended with its
    /// datagram (`closes`) has no upstream left once the driver returns, and this still says
    /// where the datagram went.
    pub last_upstream_send: Option<(FlowId, BackendId)>,
    /// Path MTUs learned from ICMP "fragmentation needed", by destination IP: the MTU and when
    /// the entry expires. A datagram bigger than a live entry's MTU is not sent: the send fails.
    pub path_mtus: BTreeMap<IpAddr, (usize, Instant)>,
    /// The time of the driver call in progress (set by [`SimPlatform::begin`]): what a path
    /// MTU entry's expiry is compared with.
    pub now: Instant,
    /// Which of its instance's workers this is, of how many: the workers of one process share
    /// its addresses, and the kernel gives each socket a port of its own, so each worker takes
    /// the ports `FIRST_PORT + worker + k * workers`.
    pub worker: usize,
    pub workers: usize,
    faults: Option<Faults>,
    /// Sockets found full during the current driver call.
    full: BTreeSet<FullSocket>,
}

/// Ephemeral ports, as Linux hands them out by default.
const FIRST_PORT: u16 = 32_768;
const LAST_PORT: u16 = 60_999;

/// Mixed into the run's seed for the platform faults' stream (apart from the network's).
const FAULT_STREAM: u64 = 0x504c_4154_464f_524d;

impl SimPlatform {
    /// The sockets of worker `worker` of `workers` of balancer instance `instance`,
    /// upstreams in `mode`, with the faults of `faults` drawn from a stream of their own seeded
    /// by `seed` (none drawn when every probability is zero).
    pub fn new(
        instance: usize,
        worker: usize,
        workers: usize,
        mode: UpstreamMode,
        faults: &PlatformSpec,
        seed: u64,
    ) -> Self {
        let stream = (instance as u64) << 48 | (worker as u64) << 40;
        let faults = (!faults.is_empty()).then(|| Faults {
            spec: faults.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed ^ FAULT_STREAM ^ stream),
        });
        SimPlatform {
            upstream_ip: upstream_ip(instance),
            probe_ip: probe_ip(instance),
            upstream_ip6: upstream_ip6(instance),
            probe_ip6: probe_ip6(instance),
            mode,
            upstreams: BTreeMap::new(),
            upstream_by_port: BTreeMap::new(),
            pool: Pool::default(),
            pool_ports: Vec::new(),
            pool_socket_by_port: BTreeMap::new(),
            next_port: 0,
            probes_by_port: BTreeMap::new(),
            next_probe_port: 0,
            effects: Vec::new(),
            last_upstream_send: None,
            path_mtus: BTreeMap::new(),
            now: Instant::ZERO,
            worker,
            workers: workers.max(1),
            faults,
            full: BTreeSet::new(),
        }
    }

    /// A driver call starts at `now` (the world calls this before each one): send buffers
    /// found full by the previous call have drained.
    pub fn begin(&mut self, now: Instant) {
        self.now = now;
        self.full.clear();
    }

    /// Whether `ip` is one of its upstream sockets' addresses (either family).
    pub fn is_upstream_ip(&self, ip: IpAddr) -> bool {
        ip == self.upstream_ip || ip == self.upstream_ip6
    }

    /// Whether `ip` is one of its probes' addresses (either family).
    pub fn is_probe_ip(&self, ip: IpAddr) -> bool {
        ip == self.probe_ip || ip == self.probe_ip6
    }

    /// The address a datagram to `to` leaves from: the upstream (or, with `probe`, the probe)
    /// address of `to`'s family (an IPv4-mapped address is IPv4).
    pub fn source_for(&self, to: SocketAddr, probe: bool) -> IpAddr {
        match (to.ip().to_canonical().is_ipv6(), probe) {
            (false, false) => self.upstream_ip,
            (false, true) => self.probe_ip,
            (true, false) => self.upstream_ip6,
            (true, true) => self.probe_ip6,
        }
    }

    /// Its kernel stops failing: no platform fault is drawn from now on.
    pub fn heal(&mut self) {
        self.faults = None;
    }

    /// Whether one of its upstream sockets (a pool socket or a flow's own) has `port`.
    pub fn has_upstream_port(&self, port: u16) -> bool {
        self.upstream_by_port.contains_key(&port) || self.pool_socket_by_port.contains_key(&port)
    }

    /// Pool sockets opened so far (never closed during a run).
    pub fn pool_sockets(&self) -> usize {
        self.pool_ports.len()
    }

    /// Where a datagram from `source` arriving on upstream port `port` goes: on a pool
    /// socket, to the flow bound at (socket, source), as the shell's event loop looks it up.
    pub fn arrival(&self, port: u16, source: SocketAddr) -> Arrival {
        let source = canonical(source);
        match self.mode {
            UpstreamMode::Pool => match self.pool_socket_by_port.get(&port) {
                Some(socket) => match self.pool.occupant(*socket, source) {
                    Some(binding) => Arrival::Flow(binding.flow),
                    None => Arrival::Stray,
                },
                None => Arrival::Filtered,
            },
            // A connected socket hears its own peer only.
            UpstreamMode::PerFlow => {
                match self.upstream_by_port.get(&port).and_then(|f| self.upstreams.get(f)) {
                    Some(upstream) if upstream.backend == source => Arrival::Flow(upstream.flow),
                    _ => Arrival::Filtered,
                }
            }
        }
    }

    /// An ICMP "fragmentation needed" about a datagram to `destination` arrived: datagrams to
    /// it bigger than `mtu` fail to send until `expires`.
    pub fn learn_path_mtu(&mut self, destination: IpAddr, mtu: usize, expires: Instant) {
        self.path_mtus.insert(destination, (mtu, expires));
    }

    /// Whether a datagram of `payload` bytes to `destination` fits the path MTU this host knows
    /// (as Linux refuses, with EMSGSIZE, a datagram bigger than a cached path MTU).
    fn fits_path_mtu(&self, destination: IpAddr, payload: usize) -> bool {
        match self.path_mtus.get(&destination) {
            Some((mtu, expires)) if *expires > self.now => payload + crate::scenario::IP_UDP_HEADERS <= *mtu,
            _ => true,
        }
    }

    /// A free port after `next` in the ephemeral range, skipping used ones.
    fn allocate(next: &mut u16, used: impl Fn(u16) -> bool) -> Option<u16> {
        for _ in FIRST_PORT..=LAST_PORT {
            let port = if *next < FIRST_PORT || *next > LAST_PORT { FIRST_PORT } else { *next };
            *next = port.wrapping_add(1);
            if !used(port) {
                return Some(port);
            }
        }
        None
    }

    /// Opens a socket on a new ephemeral port: what can fail (a drawn fault, or no port left).
    fn open_socket(&mut self) -> Result<u16, OpenError> {
        if self.faults.as_mut().is_some_and(Faults::open_fails) {
            self.effects.push(Effect::SocketOpenFailed);
            return Err(OpenError("socket: too many open files (a drawn fault)".into()));
        }
        let (by_port, pool) = (&self.upstream_by_port, &self.pool_socket_by_port);
        let (worker, workers) = (self.worker, self.workers);
        let owned = |p: u16| usize::from(p.wrapping_sub(FIRST_PORT)) % workers == worker;
        Self::allocate(&mut self.next_port, |p| {
            by_port.contains_key(&p) || pool.contains_key(&p) || !owned(p)
        })
        .ok_or_else(|| OpenError("ephemeral ports exhausted".into()))
    }

    /// A pool socket for a new flow, as the shell's `open_pooled` finds one: the pool's
    /// choice; when it asks to grow and no socket can be opened, the socket released longest
    /// ago for that backend, quarantine or not; else the open fails.
    fn open_pooled(
        &mut self,
        now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<u16, OpenError> {
        let socket = match self.pool.acquire(address, now) {
            Acquire::Socket(socket) => socket,
            Acquire::Grow => match self.open_socket() {
                Ok(port) => {
                    let index = self.pool.add_socket(address);
                    debug_assert_eq!(
                        index as usize,
                        self.pool_ports.len(),
                        "the pool and its ports grow together"
                    );
                    self.pool_ports.push(port);
                    self.pool_socket_by_port.insert(port, index);
                    index
                }
                Err(error) => match self.pool.acquire_quarantined(address) {
                    Some(socket) => socket,
                    None => return Err(error),
                },
            },
        };
        self.pool.bind(flow, socket, address, backend);
        Ok(self.pool_ports[socket as usize])
    }

    /// Whether a send on `socket` fails, and how: a socket found full earlier in this call
    /// stays full; otherwise a fault is drawn with the direction's probabilities.
    fn send_fault(
        &mut self,
        socket: FullSocket,
        odds: fn(&PlatformSpec) -> (f64, f64, f64),
    ) -> Option<SendFault> {
        if self.full.contains(&socket) {
            return Some(SendFault::BufferFull);
        }
        let faults = self.faults.as_mut()?;
        let odds = odds(&faults.spec);
        let fault = faults.send(odds);
        if fault == Some(SendFault::BufferFull) {
            self.full.insert(socket);
        }
        fault
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one, as the shell's pool files backends.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

impl Platform for SimPlatform {
    fn open_upstream(
        &mut self,
        now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        let address = canonical(address);
        let port = match self.mode {
            UpstreamMode::Pool => self.open_pooled(now, flow, backend, address)?,
            UpstreamMode::PerFlow => {
                let port = self.open_socket()?;
                self.upstream_by_port.insert(port, flow);
                port
            }
        };
        self.upstreams.insert(flow, Upstream { flow, port, backend: address, id: backend });
        self.effects.push(Effect::Opened { flow, backend });
        Ok(())
    }

    fn close_upstream(&mut self, now: Instant, flow: FlowId) {
        if let Some(closed) = self.upstreams.remove(&flow) {
            match self.mode {
                UpstreamMode::Pool => drop(self.pool.release(flow, now)),
                UpstreamMode::PerFlow => drop(self.upstream_by_port.remove(&closed.port)),
            }
        }
    }

    fn send_upstream(&mut self, flow: FlowId, datagram: &[u8]) {
        let Some(socket) = self.upstreams.get(&flow) else { return };
        let (id, backend, port) = (socket.id, socket.backend, socket.port);
        self.last_upstream_send = Some((flow, id));
        // A datagram bigger than a path MTU the kernel learned fails with EMSGSIZE.
        if !self.fits_path_mtu(backend.ip(), datagram.len()) {
            self.effects.push(Effect::SendFailed { flow, fault: None });
            return;
        }
        let odds = |spec: &PlatformSpec| {
            (spec.upstream_send_fail, spec.upstream_too_long, spec.upstream_buffer_full)
        };
        if let Some(fault) = self.send_fault(FullSocket::Upstream(port), odds) {
            self.effects.push(Effect::SendFailed { flow, fault: Some(fault) });
            return;
        }
        let from = SocketAddr::new(self.source_for(backend, false), port);
        self.effects.push(Effect::Send { from, to: backend, payload: datagram.to_vec() });
    }

    fn send_to_client(
        &mut self,
        listener: ListenerId,
        local: SocketAddr,
        client: SocketAddr,
        datagram: &[u8],
    ) {
        let odds =
            |spec: &PlatformSpec| (spec.client_send_fail, spec.client_too_long, spec.client_buffer_full);
        if let Some(fault) = self.send_fault(FullSocket::Listener(listener), odds) {
            self.effects.push(Effect::ReturnFailed { listener, bytes: datagram.len(), fault });
            return;
        }
        let payload = datagram.to_vec();
        self.effects.push(Effect::SendFromListener { listener, from: local, to: client, payload });
    }

    fn start_probe(&mut self, now: Instant, probe: &ProbeRequest) {
        match &probe.kind {
            ProbeKind::Tcp { address } => {
                self.effects.push(Effect::TcpProbe { probe: probe.probe, address: *address });
            }
            ProbeKind::Udp { address, datagram } => {
                self.probes_by_port.retain(|_, (_, forget_at)| *forget_at > now);
                let used = &self.probes_by_port;
                let (worker, workers) = (self.worker, self.workers);
                let owned = |p: u16| usize::from(p.wrapping_sub(FIRST_PORT)) % workers == worker;
                let Some(port) =
                    Self::allocate(&mut self.next_probe_port, |p| used.contains_key(&p) || !owned(p))
                else {
                    return;
                };
                self.probes_by_port.insert(port, (probe.probe, probe.deadline));
                let from = SocketAddr::new(self.source_for(*address, true), port);
                self.effects.push(Effect::Send { from, to: *address, payload: datagram.clone() });
            }
        }
    }

    fn notify(&mut self, _core: &Balancer, output: &Output) {
        self.effects.push(Effect::Notify(output.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use udplb_core::pool::QUARANTINE_NANOS;

    fn flow(serial: u64) -> FlowId {
        FlowId::for_tests(serial as u32, serial)
    }

    fn backend(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 1, i], 53))
    }

    fn open(platform: &mut SimPlatform, now: Instant, serial: u64, b: u8) -> Result<u16, OpenError> {
        platform.open_upstream(now, flow(serial), BackendId(u32::from(b)), backend(b))?;
        Ok(platform.upstreams[&flow(serial)].port)
    }

    fn pool() -> SimPlatform {
        SimPlatform::new(0, 0, 1, UpstreamMode::Pool, &PlatformSpec::default(), 1)
    }

    /// The simulator's ports are the pool's decisions: flows to different backends share a
    /// port, two to one backend do not, and a port released by a flow to a backend serves
    /// that backend again only after the quarantine (a reply in between is a stray).
    #[test]
    fn ports_follow_the_pools_decisions() {
        let mut platform = pool();
        let t0 = Instant::ZERO;
        let a = open(&mut platform, t0, 1, 1).unwrap();
        let b = open(&mut platform, t0, 2, 2).unwrap();
        assert_eq!(a, b, "flows to different backends share a port");
        let c = open(&mut platform, t0, 3, 1).unwrap();
        assert_ne!(a, c, "two live flows to one backend never share a port");
        assert_eq!(platform.pool_sockets(), 2);
        assert_eq!(platform.arrival(a, backend(1)), Arrival::Flow(flow(1)));
        assert_eq!(platform.arrival(a, backend(2)), Arrival::Flow(flow(2)));
        assert_eq!(platform.arrival(c, backend(1)), Arrival::Flow(flow(3)));
        assert_eq!(platform.arrival(c, backend(2)), Arrival::Stray);
        assert_eq!(platform.arrival(1, backend(1)), Arrival::Filtered);

        // Flow 1 ends: its port waits out the quarantine before serving backend 1 again.
        platform.close_upstream(t0, flow(1));
        assert_eq!(platform.arrival(a, backend(1)), Arrival::Stray, "a late reply to flow 1 is a stray");
        let within = Instant::from_nanos(QUARANTINE_NANOS - 1);
        let d = open(&mut platform, within, 4, 1).unwrap();
        assert!(d != a && d != c, "within the quarantine a new port: {d}");
        platform.close_upstream(within, flow(4));
        let after = Instant::from_nanos(QUARANTINE_NANOS);
        assert_eq!(open(&mut platform, after, 5, 1).unwrap(), a, "after it, the port released longest ago");
        assert_eq!(platform.pool_sockets(), 3);
    }

    #[test]
    fn per_flow_mode_gives_every_flow_its_own_port() {
        let mut platform = SimPlatform::new(0, 0, 1, UpstreamMode::PerFlow, &PlatformSpec::default(), 1);
        let a = open(&mut platform, Instant::ZERO, 1, 1).unwrap();
        let b = open(&mut platform, Instant::ZERO, 2, 2).unwrap();
        assert_ne!(a, b);
        assert_eq!(platform.arrival(a, backend(1)), Arrival::Flow(flow(1)));
        assert_eq!(platform.arrival(a, backend(2)), Arrival::Filtered);
    }

    /// A failed socket open falls back on a quarantined socket, as the shell's does; with none,
    /// the open fails.
    #[test]
    fn a_failed_socket_open_takes_a_quarantined_socket_or_fails_the_open() {
        let always = PlatformSpec { open_fail: 1.0, ..PlatformSpec::default() };
        let mut platform = SimPlatform::new(0, 0, 1, UpstreamMode::Pool, &always, 1);
        assert!(open(&mut platform, Instant::ZERO, 1, 1).is_err());
        assert!(matches!(platform.effects.as_slice(), [Effect::SocketOpenFailed]));
        // Give it one socket, then fail every further open.
        platform.faults = None;
        let port = open(&mut platform, Instant::ZERO, 2, 1).unwrap();
        platform.close_upstream(Instant::ZERO, flow(2));
        platform.faults = Some(Faults { spec: always, rng: ChaCha8Rng::seed_from_u64(1) });
        assert_eq!(open(&mut platform, Instant::ZERO, 3, 1).unwrap(), port, "the quarantined socket");
        assert!(open(&mut platform, Instant::ZERO, 4, 1).is_err(), "nothing left");
    }

    fn fault_effects(spec: &PlatformSpec, seed: u64) -> Vec<String> {
        let mut platform = SimPlatform::new(0, 0, 1, UpstreamMode::Pool, spec, seed);
        let mut seen = Vec::new();
        for serial in 0..200 {
            let now = Instant::from_nanos(serial * 1_000_000);
            platform.begin(now);
            if open(&mut platform, now, serial, (serial % 4) as u8).is_ok() {
                platform.send_upstream(flow(serial), b"query");
                platform.send_to_client(ListenerId(0), backend(1), backend(9), b"answer");
                platform.send_to_client(ListenerId(0), backend(1), backend(9), b"answer");
            }
            seen.extend(platform.effects.drain(..).filter_map(|e| match e {
                Effect::SocketOpenFailed => Some("open".to_owned()),
                Effect::SendFailed { fault, .. } => Some(format!("up {fault:?}")),
                Effect::ReturnFailed { fault, .. } => Some(format!("client {fault:?}")),
                _ => None,
            }));
        }
        seen
    }

    #[test]
    fn faults_are_drawn_by_the_seed_and_absent_without_platform() {
        let spec = PlatformSpec {
            open_fail: 0.1,
            upstream_send_fail: 0.1,
            upstream_too_long: 0.1,
            upstream_buffer_full: 0.1,
            client_send_fail: 0.1,
            client_too_long: 0.1,
            client_buffer_full: 0.1,
            reuseport: Default::default(),
        };
        let one = fault_effects(&spec, 7);
        assert_eq!(one, fault_effects(&spec, 7), "same seed, same faults");
        assert_ne!(one, fault_effects(&spec, 8), "another seed, other faults");
        for kind in ["open", "up Some(Failed)", "up Some(TooLong)", "up Some(BufferFull)", "client Failed"] {
            assert!(one.iter().any(|e| e == kind), "{kind} never drawn: {one:?}");
        }
        // A full listener buffer fails the rest of the call's sends on it too.
        assert!(one.windows(2).any(|w| w == ["client BufferFull", "client BufferFull"]), "{one:?}");
        assert!(fault_effects(&PlatformSpec::default(), 7).is_empty());
    }
}
