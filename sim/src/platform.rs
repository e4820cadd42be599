//! The simulated platform under the core's driver: sockets are entries in maps, and every
//! send becomes an effect the world carries out on its network after the driver returns.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use udplb_core::balancer::Output;
use udplb_core::driver::{OpenError, Platform};
use udplb_core::health::{ProbeKind, ProbeRequest};
use udplb_core::{BackendId, Balancer, FlowId, Instant, ListenerId, ProbeId};

/// Balancer instance `instance`'s address for its upstream sockets (10.0.0.254, .252, …).
pub fn upstream_ip(instance: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 254 - 2 * instance as u8))
}

/// Balancer instance `instance`'s address for UDP probes (10.0.0.253, .251, …).
pub fn probe_ip(instance: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 253 - 2 * instance as u8))
}

/// Something the driver asked the world to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// A datagram from one of the balancer's sockets.
    Send { from: SocketAddr, to: SocketAddr, payload: Vec<u8> },
    /// A datagram from a listener's socket (the world knows the listener's address).
    SendFromListener { listener: ListenerId, to: SocketAddr, payload: Vec<u8> },
    /// A TCP connect probe.
    TcpProbe { probe: ProbeId, address: SocketAddr },
    /// An upstream was opened for a new flow to `backend`.
    Opened { flow: FlowId, backend: BackendId },
    /// A send on `flow`'s upstream failed at once (the kernel's EMSGSIZE): the world reports
    /// it to the core as `UpstreamError::SendFailed` once the driver returns, as the shell
    /// reports its failed sends after a batch.
    SendFailed { flow: FlowId },
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

/// Simulated sockets of one balancer instance.
#[derive(Debug)]
pub struct SimPlatform {
    pub upstream_ip: IpAddr,
    pub probe_ip: IpAddr,
    pub upstreams: BTreeMap<FlowId, Upstream>,
    pub upstream_by_port: BTreeMap<u16, FlowId>,
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
    /// The time of the driver call in progress (the world sets it before each call): what a
    /// path MTU entry's expiry is compared with.
    pub now: Instant,
    /// Which of its instance's workers this is, of how many: the workers of one process share
    /// its addresses, and the kernel gives each socket a port of its own, so each worker takes
    /// the ports `FIRST_PORT + worker + k * workers`.
    pub worker: usize,
    pub workers: usize,
}

/// Ephemeral ports, as Linux hands them out by default.
const FIRST_PORT: u16 = 32_768;
const LAST_PORT: u16 = 60_999;

impl SimPlatform {
    /// The sockets of balancer instance `instance` (its only worker).
    pub fn new(instance: usize) -> Self {
        SimPlatform::worker(instance, 0, 1)
    }

    /// The sockets of worker `worker` of `workers` of balancer instance `instance`.
    pub fn worker(instance: usize, worker: usize, workers: usize) -> Self {
        SimPlatform {
            upstream_ip: upstream_ip(instance),
            probe_ip: probe_ip(instance),
            upstreams: BTreeMap::new(),
            upstream_by_port: BTreeMap::new(),
            next_port: 0,
            probes_by_port: BTreeMap::new(),
            next_probe_port: 0,
            effects: Vec::new(),
            last_upstream_send: None,
            path_mtus: BTreeMap::new(),
            now: Instant::ZERO,
            worker,
            workers: workers.max(1),
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
}

impl Platform for SimPlatform {
    fn open_upstream(
        &mut self,
        _now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        let used = &self.upstream_by_port;
        let (worker, workers) = (self.worker, self.workers);
        let owned = |p: u16| usize::from(p.wrapping_sub(FIRST_PORT)) % workers == worker;
        let port = Self::allocate(&mut self.next_port, |p| used.contains_key(&p) || !owned(p))
            .ok_or_else(|| OpenError("ephemeral ports exhausted".into()))?;
        self.upstream_by_port.insert(port, flow);
        self.upstreams.insert(flow, Upstream { flow, port, backend: address, id: backend });
        self.effects.push(Effect::Opened { flow, backend });
        Ok(())
    }

    fn close_upstream(&mut self, _now: Instant, flow: FlowId) {
        if let Some(closed) = self.upstreams.remove(&flow) {
            self.upstream_by_port.remove(&closed.port);
        }
    }

    fn send_upstream(&mut self, flow: FlowId, datagram: &[u8]) {
        // The simulated kernel fails a send on an open upstream only when the datagram is
        // bigger than a path MTU it learned.
        if let Some(socket) = self.upstreams.get(&flow) {
            self.last_upstream_send = Some((flow, socket.id));
            if !self.fits_path_mtu(socket.backend.ip(), datagram.len()) {
                self.effects.push(Effect::SendFailed { flow });
                return;
            }
            let from = SocketAddr::new(self.upstream_ip, socket.port);
            self.effects.push(Effect::Send { from, to: socket.backend, payload: datagram.to_vec() });
        }
    }

    fn send_to_client(&mut self, listener: ListenerId, client: SocketAddr, datagram: &[u8]) {
        self.effects.push(Effect::SendFromListener { listener, to: client, payload: datagram.to_vec() });
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
                let from = SocketAddr::new(self.probe_ip, port);
                self.effects.push(Effect::Send { from, to: *address, payload: datagram.clone() });
            }
        }
    }

    fn notify(&mut self, _core: &Balancer, output: &Output) {
        self.effects.push(Effect::Notify(output.clone()));
    }
}
