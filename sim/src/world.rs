//! The discrete-event world: one balancer (running the core's driver on simulated sockets),
//! clients, backends, and the network between them.
//!
//! Virtual time jumps from event to event; events are ordered by (time, sequence number), and
//! every random draw comes from one ChaCha stream seeded by the scenario's seed, so a seed is
//! a complete description of a run. There is no wall clock anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use udplb_core::balancer::Output;
use udplb_core::driver::Driver;
use udplb_core::health::{HealthEvent, ProbeFailure};
use udplb_core::names::EventName;
use udplb_core::{
    AdminCommand, BackendCommand, BackendId, Balancer, CloseReason, DATAGRAM_HEADROOM, DropReason, FlowId,
    Health, Input, Instant, Keys, ProbeId, ProbeResult, UpstreamError,
};

use crate::hosts::{BackendHost, BackendReaction, BackendState, ClientHost};
use crate::platform::{Effect, SimPlatform};
use crate::scenario::{Action, NetworkSpec, Scenario};
use crate::trace::Trace;

/// A datagram (or an ICMP error about one) in flight.
#[derive(Clone, Debug)]
struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
    /// An ICMP port unreachable about a datagram `to` sent earlier from `to`'s address; the
    /// packet goes back to that sender.
    icmp: bool,
}

#[derive(Clone, Debug)]
enum Event {
    Deliver(Packet),
    /// A host puts a packet on the network (a backend answering after its delay).
    Send(Packet),
    ClientSends(usize),
    Timeline(usize),
    /// Balancer instance `n`'s timer.
    BalancerTimer(usize),
    TcpProbeAnswer {
        instance: usize,
        probe: ProbeId,
        result: ProbeResult,
    },
}

/// What the run saw, for expectations and the trace.
#[derive(Debug, Default)]
pub struct Record {
    /// Health transitions: (time, backend name, new state).
    pub health: Vec<(Instant, String, Health)>,
    /// New flows: (time, backend name).
    pub new_flows: Vec<(Instant, String)>,
    /// Events, by their stable names, and how often they happened.
    pub events: BTreeMap<EventName, u64>,
    /// Broken invariants, described (bounded).
    pub violations: Vec<String>,
    pub delivered: u64,
    pub lost: u64,
    /// Where each new flow went: (instance, client address, backend name).
    pub placements: Vec<(usize, SocketAddr, String)>,
}

impl Record {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(what);
        }
    }
}

/// Bound on events per run: a runaway scenario stops instead of spinning.
const MAX_EVENTS: u64 = 50_000_000;
/// Full invariant checks every this many events (and at the end).
const CHECK_EVERY: u64 = 512;

pub struct World {
    pub scenario: Scenario,
    now: Instant,
    queue: BTreeMap<(Instant, u64), Event>,
    sequence: u64,
    rng: ChaCha8Rng,
    network: NetworkSpec,
    /// Cut links: (from host, to host).
    partitions: BTreeSet<(String, String)>,
    /// ICMP errors sent per host in the current second: (second, count).
    icmp_sent: BTreeMap<String, (u64, u32)>,
    /// One driver per balancer instance (one, unless `[ecmp]` asks for more).
    pub drivers: Vec<Driver<SimPlatform>>,
    /// The spreader's current hash salt (changed by `rehash`).
    ecmp_salt: u64,
    pub backends: Vec<BackendHost>,
    pub clients: Vec<ClientHost>,
    pub trace: Trace,
    pub record: Record,
    balancer_timers: Vec<Option<Instant>>,
    events_run: u64,
    /// Per instance, listener and client address: the last flow its datagrams rode.
    affinity: BTreeMap<(usize, udplb_core::ListenerId, SocketAddr), udplb_core::FlowId>,
}

impl World {
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let instances = scenario.ecmp.instances;
        let drivers = (0..instances)
            .map(|instance| {
                Driver::new(World::balancer(&scenario, seed, instance), SimPlatform::new(instance))
            })
            .collect();
        let mut world = World {
            network: scenario.network.clone(),
            backends: scenario.backends.iter().cloned().map(BackendHost::new).collect(),
            clients: scenario.clients.iter().cloned().map(ClientHost::new).collect(),
            scenario,
            now: Instant::ZERO,
            queue: BTreeMap::new(),
            sequence: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            partitions: BTreeSet::new(),
            icmp_sent: BTreeMap::new(),
            drivers,
            ecmp_salt: 0,
            trace: Trace::default(),
            record: Record::default(),
            balancer_timers: vec![None; instances],
            events_run: 0,
            affinity: BTreeMap::new(),
        };
        for index in 0..world.clients.len() {
            let at = Instant::ZERO + world.clients[index].start();
            world.schedule(at, Event::ClientSends(index));
        }
        for index in 0..world.scenario.timeline.len() {
            let at = Instant::ZERO + world.scenario.timeline[index].at;
            world.schedule(at, Event::Timeline(index));
        }
        world.trace.line(Instant::ZERO, format!("start: {}", world.scenario.name));
        world.rearm_balancer_timers();
        world
    }

    /// Balancer instance `instance`'s core as a run with `seed` starts it: instances share the
    /// selection key (so consistent hashing agrees) and each has its own flow-table key, as
    /// separate processes would. A recorded run replays into a fresh one of these.
    pub fn balancer(scenario: &Scenario, seed: u64, instance: usize) -> Balancer {
        let table = Keys::from_seed(seed ^ ((instance as u64 + 1) << 32)).table;
        let keys = Keys { table, ..Keys::from_seed(seed) };
        Balancer::new(&scenario.lb, keys).expect("the scenario's [lb] was validated")
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.sequence += 1;
        self.queue.insert((at, self.sequence), event);
    }

    /// Runs until the scenario's duration, then checks the end-state invariants.
    pub fn run(&mut self) {
        let end = Instant::ZERO + self.scenario.duration;
        while let Some(entry) = self.queue.first_entry() {
            let (at, _) = *entry.key();
            if at > end || self.events_run >= MAX_EVENTS {
                break;
            }
            let event = entry.remove();
            self.now = at;
            self.events_run += 1;
            self.handle(event);
            self.rearm_balancer_timers();
            if self.events_run % CHECK_EVERY == 0 {
                self.check_invariants();
            }
        }
        if self.events_run >= MAX_EVENTS {
            self.record.violation(format!("stopped after {MAX_EVENTS} events"));
        }
        self.now = end;
        self.for_each_instance(|driver, now| {
            let _ = driver.handle(now, Input::Timeout);
        });
        self.check_invariants();
        self.check_liveness();
        for backend in &self.backends {
            for violation in &backend.proxy_violations {
                self.record.violations.push(format!("PROXY v2: {violation}"));
            }
        }
    }

    /// Events handled so far.
    pub fn events_run(&self) -> u64 {
        self.events_run
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(packet) => self.deliver(packet),
            Event::Send(packet) => self.send(packet),
            Event::ClientSends(index) => self.client_sends(index),
            Event::Timeline(index) => self.timeline(index),
            Event::BalancerTimer(instance) => {
                self.balancer_timers[instance] = None;
                let _ = self.with_driver(instance, |driver, now| driver.handle(now, Input::Timeout));
            }
            Event::TcpProbeAnswer { instance, probe, result } => {
                let _ = self.with_driver(instance, |driver, now| {
                    driver.handle(now, Input::ProbeResult { probe, result })
                });
            }
        }
    }

    /// Schedules a wake-up at each instance's next deadline (an earlier pending one stays: an
    /// early wake-up is harmless, and exercising it is part of the test).
    fn rearm_balancer_timers(&mut self) {
        for instance in 0..self.drivers.len() {
            if let Some(deadline) = self.drivers[instance].next_deadline()
                && self.balancer_timers[instance].is_none_or(|armed| deadline < armed)
            {
                let at = deadline.max(self.now);
                self.balancer_timers[instance] = Some(at);
                self.schedule(at, Event::BalancerTimer(instance));
            }
        }
    }

    /// Calls one instance's driver at the current time, then carries out what it asked for.
    fn with_driver<T>(
        &mut self,
        instance: usize,
        call: impl FnOnce(&mut Driver<SimPlatform>, Instant) -> T,
    ) -> T {
        let fail_open_before = self.fail_open_total(instance);
        let result = call(&mut self.drivers[instance], self.now);
        let effects = std::mem::take(&mut self.drivers[instance].platform_mut().effects);
        let fail_open_now = self.fail_open_total(instance);
        for effect in effects {
            self.carry_out(instance, effect, fail_open_now > fail_open_before);
        }
        result
    }

    /// An operator action or a reload, applied to every instance.
    fn for_each_instance(&mut self, mut call: impl FnMut(&mut Driver<SimPlatform>, Instant)) {
        for instance in 0..self.drivers.len() {
            self.with_driver(instance, &mut call);
        }
    }

    fn fail_open_total(&self, instance: usize) -> u64 {
        self.drivers[instance].core().flows().stats().listeners.iter().map(|l| l.fail_open_flows).sum()
    }

    /// The first instance: every instance has the same configuration, so names and addresses
    /// can be looked up on it.
    fn first(&self) -> &Driver<SimPlatform> {
        &self.drivers[0]
    }

    fn carry_out(&mut self, instance: usize, effect: Effect, failed_open: bool) {
        match effect {
            Effect::Send { from, to, payload } => self.send(Packet { from, to, payload, icmp: false }),
            Effect::SendFromListener { listener, to, payload } => {
                if let Some((_, vip)) = self.drivers[instance].core().flows().listener(listener) {
                    self.send(Packet { from: vip, to, payload, icmp: false });
                }
            }
            Effect::TcpProbe { probe, address } => self.tcp_probe(instance, probe, address),
            Effect::Opened { flow, backend } => self.flow_opened(instance, flow, backend, failed_open),
            Effect::Notify(output) => self.notice(instance, output),
        }
    }

    /// A new flow's upstream opened: the flow is booked once the driver returns.
    fn flow_opened(&mut self, instance: usize, flow: FlowId, backend: BackendId, failed_open: bool) {
        let core = self.drivers[instance].core();
        let name = core.flows().backend(backend).map_or("?", |(name, _)| name).to_owned();
        // No new flow to an ineligible backend, outside fail-open.
        if !core.monitor().is_eligible(backend) && !failed_open {
            self.record.violation(format!("{}: new flow to ineligible backend {name}", self.now));
        }
        if let Some(client) = core.flows().flow(flow).map(|f| f.client) {
            self.record.placements.push((instance, client, name.clone()));
        }
        self.record.new_flows.push((self.now, name));
    }

    fn notice(&mut self, instance: usize, output: Output) {
        let core = self.drivers[instance].core();
        // With several instances, each reports its own view; the trace names the first one's.
        let traced = instance == 0;
        match &output {
            _ if !traced => {}
            Output::Health(HealthEvent::Transition { backend, from, to, code, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                self.trace.line(self.now, format!("health: {name} {from} -> {to} ({code})"));
                self.record.health.push((self.now, name, *to));
            }
            Output::Health(HealthEvent::ClusterAllDown { cluster, .. }) => {
                let name = core.flows().cluster_name(*cluster).unwrap_or("?").to_owned();
                self.trace.line(self.now, format!("cluster {name}: all down"));
            }
            Output::Health(HealthEvent::ClusterRecovered { cluster, .. }) => {
                let name = core.flows().cluster_name(*cluster).unwrap_or("?").to_owned();
                self.trace.line(self.now, format!("cluster {name}: recovered"));
            }
            Output::Health(HealthEvent::AdminChanged { backend, from, to, .. }) => {
                let name = core.flows().backend(*backend).map_or("?", |(name, _)| name).to_owned();
                self.trace.line(self.now, format!("admin: {name} {from} -> {to}"));
            }
            Output::Flow(udplb_core::Output::Event(event)) => {
                let flows = core.flows();
                let listener = |id| flows.listener(id).map_or("?", |(name, _)| name);
                let subject = match event {
                    udplb_core::Event::ListenerDraining { listener: id, flows_remaining } => {
                        format!("{}, {flows_remaining} flows remaining", listener(*id))
                    }
                    udplb_core::Event::ListenerDrained { listener: id }
                    | udplb_core::Event::ListenerResumed { listener: id } => listener(*id).to_owned(),
                    udplb_core::Event::BackendDrained { backend } => {
                        flows.backend(*backend).map_or("?", |(name, _)| name).to_owned()
                    }
                };
                self.trace.line(self.now, format!("flow event: {} {subject}", event.name()));
            }
            Output::Frontend { listener, state } => {
                let name = core.flows().listener(*listener).map_or("?", |(name, _)| name).to_owned();
                self.trace.line(self.now, format!("listener {name}: {state}"));
            }
            _ => {}
        }
        // Every event the trace follows is counted by its stable name.
        if traced && let Some(event) = output.event_name() {
            *self.record.events.entry(event).or_default() += 1;
        }
    }

    /// The host an address belongs to, by name ("lb" for the balancer).
    fn host_of(&self, address: SocketAddr) -> Option<String> {
        let ip = address.ip();
        let balancer =
            self.drivers.iter().any(|d| d.platform().upstream_ip == ip || d.platform().probe_ip == ip);
        if balancer || self.is_vip(address) {
            return Some("lb".into());
        }
        if let Some(backend) = self.backends.iter().find(|b| b.spec.address.ip() == ip) {
            return Some(backend.spec.name.clone());
        }
        self.clients.iter().find(|c| c.spec.address == ip).map(|c| c.spec.name.clone())
    }

    fn is_vip(&self, address: SocketAddr) -> bool {
        let flows = self.first().core().flows();
        flows.listener_ids().any(|l| flows.listener(l).map(|(_, a)| a) == Some(address))
    }

    /// Puts a packet on the network: partitions, MTU, loss, latency, jitter, reordering,
    /// duplication.
    fn send(&mut self, packet: Packet) {
        let (from_host, to_host) = (self.host_of(packet.from), self.host_of(packet.to));
        if let (Some(a), Some(b)) = (&from_host, &to_host)
            && self.partitions.contains(&(a.clone(), b.clone()))
        {
            self.record.lost += 1;
            return;
        }
        if packet.payload.len() > self.network.mtu {
            self.record.lost += 1;
            return;
        }
        let loss =
            if packet.icmp { self.network.loss.max(self.network.icmp_loss) } else { self.network.loss };
        if self.chance(loss) {
            self.record.lost += 1;
            return;
        }
        let copies = if self.chance(self.network.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut delay = self.network.latency + self.uniform(self.network.jitter);
            if self.chance(self.network.reorder) {
                delay += self.network.reorder_delay;
            }
            let at = self.now + delay;
            self.schedule(at, Event::Deliver(packet.clone()));
        }
    }

    fn chance(&mut self, probability: f64) -> bool {
        // 53 random bits as a fraction in [0, 1): the same on every machine.
        probability > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    fn uniform(&mut self, up_to: Duration) -> Duration {
        let nanos = u64::try_from(up_to.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(self.rng.next_u64() % (nanos + 1)) }
    }

    fn deliver(&mut self, packet: Packet) {
        self.record.delivered += 1;
        if packet.icmp {
            self.deliver_icmp(packet);
            return;
        }
        let to = packet.to;
        let instance_with = |ip: IpAddr, probe: bool| {
            self.drivers.iter().position(|d| {
                if probe { d.platform().probe_ip == ip } else { d.platform().upstream_ip == ip }
            })
        };
        if self.is_vip(to) {
            let flows = self.first().core().flows();
            let listener = flows.listener_ids().find(|l| flows.listener(*l).map(|(_, a)| a) == Some(to));
            if let Some(listener) = listener {
                let instance = self.spread(packet.from);
                let mut buffer = vec![0u8; DATAGRAM_HEADROOM + packet.payload.len()];
                buffer[DATAGRAM_HEADROOM..].copy_from_slice(&packet.payload);
                let from = packet.from;
                let verdict = self.with_driver(instance, |driver, now| {
                    driver.client_datagram(now, listener, from, &mut buffer, DATAGRAM_HEADROOM, false)
                });
                if let udplb_core::ClientVerdict::Forward { flow, .. } = verdict {
                    self.check_affinity(instance, listener, from, flow);
                }
            }
        } else if let Some(instance) = instance_with(to.ip(), false) {
            let platform = self.drivers[instance].platform();
            if let Some(flow) = platform.upstream_by_port.get(&to.port()).copied() {
                self.with_driver(instance, |driver, now| {
                    driver.backend_datagram(now, flow, &packet.payload, false)
                });
            }
        } else if let Some(instance) = instance_with(to.ip(), true) {
            if let Some((probe, _)) = self.drivers[instance].platform_mut().probes_by_port.remove(&to.port())
            {
                let reply = packet.payload.clone();
                let _ = self.with_driver(instance, |driver, now| {
                    driver.handle(now, Input::ProbeReply { probe, reply })
                });
            }
        } else if let Some(index) = self.backends.iter().position(|b| b.spec.address == to) {
            self.backend_receives(index, packet);
        } else if let Some(index) = self.clients.iter().position(|c| c.spec.address == to.ip()) {
            if self.clients[index].listens_on(to.port()) {
                self.clients[index].receive(&packet.payload);
            } else {
                self.clients[index].stale_replies += 1;
            }
        }
    }

    /// An ICMP port unreachable reached the sender of the refused datagram.
    fn deliver_icmp(&mut self, packet: Packet) {
        let sender = packet.to;
        for instance in 0..self.drivers.len() {
            let platform = self.drivers[instance].platform();
            if sender.ip() == platform.upstream_ip {
                if let Some(flow) = platform.upstream_by_port.get(&sender.port()).copied() {
                    let _ = self.with_driver(instance, |driver, now| {
                        driver.handle(now, Input::UpstreamError { flow, error: UpstreamError::Refused })
                    });
                }
            } else if sender.ip() == platform.probe_ip
                && let Some((probe, _)) =
                    self.drivers[instance].platform_mut().probes_by_port.remove(&sender.port())
            {
                let refused = ProbeResult::Fail(ProbeFailure::Refused);
                let _ = self.with_driver(instance, |driver, now| {
                    driver.handle(now, Input::ProbeResult { probe, result: refused })
                });
            }
        }
    }

    /// Affinity, seen from outside: a client's datagrams stay on one flow (and so one backend)
    /// while that flow takes datagrams. Moving to another flow is only allowed once the previous
    /// one has ended or retired (`requests` reached).
    fn check_affinity(
        &mut self,
        instance: usize,
        listener: udplb_core::ListenerId,
        client: SocketAddr,
        flow: udplb_core::FlowId,
    ) {
        let key = (instance, listener, client);
        if let Some(previous) = self.affinity.insert(key, flow)
            && previous != flow
            && let Some(info) = self.drivers[instance].core().flows().flow(previous)
            && !info.retired
        {
            let text = format!("{}: {client} moved from {previous} (still open) to {flow}", self.now);
            self.record.violation(text);
        }
    }

    /// The ECMP spreader: which instance a client address lands on.
    fn spread(&self, client: SocketAddr) -> usize {
        let instances = self.drivers.len() as u64;
        if instances == 1 {
            return 0;
        }
        // SplitMix64 over the address and the salt: fixed, so the same on every machine.
        let ip = match client.ip().to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) as u64) ^ ((u128::from(v6) >> 64) as u64),
        };
        let mut z = ip.wrapping_mul(0x1_0000).wrapping_add(u64::from(client.port()))
            ^ self.ecmp_salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % instances) as usize
    }

    fn backend_receives(&mut self, index: usize, packet: Packet) {
        let flows = self.first().core().flows();
        let vips: Vec<SocketAddr> =
            flows.listener_ids().filter_map(|l| flows.listener(l).map(|(_, a)| a)).collect();
        let client_ips: BTreeSet<IpAddr> = self.clients.iter().map(|c| c.spec.address).collect();
        let is_client =
            |ip: IpAddr| client_ips.contains(&ip) || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198);
        let reaction = self.backends[index].receive(packet.from, &packet.payload, &vips, is_client);
        let address = self.backends[index].spec.address;
        match reaction {
            BackendReaction::Reply { payloads, delay } => {
                for payload in payloads {
                    let packet = Packet { from: address, to: packet.from, payload, icmp: false };
                    if delay.is_zero() {
                        self.send(packet);
                    } else {
                        let at = self.now + delay;
                        self.schedule(at, Event::Send(packet));
                    }
                }
            }
            BackendReaction::PortUnreachable => self.send_icmp(index, packet),
            BackendReaction::Nothing | BackendReaction::Dropped => {}
        }
    }

    /// A closed port answers with ICMP port unreachable, within the host's ICMP rate limit.
    fn send_icmp(&mut self, index: usize, refused: Packet) {
        let host = self.backends[index].spec.name.clone();
        let second = self.now.as_nanos() / 1_000_000_000;
        let limit = self.network.icmp_per_second;
        let entry = self.icmp_sent.entry(host).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        if entry.1 >= limit {
            return;
        }
        entry.1 += 1;
        let to = refused.from;
        self.send(Packet { from: refused.to, to, payload: Vec::new(), icmp: true });
    }

    fn tcp_probe(&mut self, instance: usize, probe: ProbeId, address: SocketAddr) {
        let Some(backend) = self.backends.iter().find(|b| b.spec.address.ip() == address.ip()) else {
            return;
        };
        let name = backend.spec.name.clone();
        let path_open = !self.partitions.contains(&("lb".to_owned(), name.clone()))
            && !self.partitions.contains(&(name, "lb".to_owned()));
        let answer = if path_open { backend.tcp_answer() } else { None };
        let result = match answer {
            Some(true) => ProbeResult::Pass,
            Some(false) => ProbeResult::Fail(ProbeFailure::Refused),
            // Silence: the core's own timer turns it into a Timeout failure.
            None => return,
        };
        let at = self.now + self.network.latency * 2;
        self.schedule(at, Event::TcpProbeAnswer { instance, probe, result });
    }

    fn client_sends(&mut self, index: usize) {
        let Some((from, payload)) = self.clients[index].next_request() else { return };
        let listener = self.clients[index].spec.listener.clone();
        let vip = self.scenario.lb.listeners.get(listener.as_str()).map(|l| l.address);
        if let Some(vip) = vip {
            self.send(Packet { from, to: vip, payload, icmp: false });
        }
        if self.clients[index].sent < self.clients[index].count() {
            let at = self.now + self.clients[index].interval();
            self.schedule(at, Event::ClientSends(index));
        }
    }

    fn timeline(&mut self, index: usize) {
        let action = self.scenario.timeline[index].action.clone();
        self.trace.line(self.now, format!("timeline: {}", describe(&action)));
        let set_state = |world: &mut World, name: &str, state: BackendState| match world
            .backends
            .iter_mut()
            .find(|b| b.spec.name == name)
        {
            Some(backend) => backend.state = state,
            None => world.record.violation(format!("timeline names unknown backend {name:?}")),
        };
        match action {
            Action::Kill { backend } => set_state(self, &backend, BackendState::Killed),
            Action::Restore { backend } => set_state(self, &backend, BackendState::Up),
            Action::RefuseUdp { backend } => set_state(self, &backend, BackendState::RefusingUdp),
            Action::Blackhole { backend } => set_state(self, &backend, BackendState::Blackholed),
            Action::Partition { from, to, one_way } => {
                self.partitions.insert((from.to_string(), to.to_string()));
                if !one_way {
                    self.partitions.insert((to.to_string(), from.to_string()));
                }
            }
            Action::Heal => self.partitions.clear(),
            Action::Network(network) => self.network = network,
            Action::DrainListener { listener } => {
                let id = self.first().core().flows().listener_id(&listener);
                match id {
                    Some(id) => self.for_each_instance(|driver, now| {
                        let _ = driver.handle(now, Input::Admin(AdminCommand::DrainListener(id)));
                    }),
                    None => self.record.violation(format!("no listener {listener:?}")),
                }
            }
            Action::Rehash => self.ecmp_salt += 1,
            Action::Rebind { client } => match self.clients.iter_mut().find(|c| c.spec.name == client) {
                Some(host) => host.rebind(),
                None => self.record.violation(format!("timeline names unknown client {client:?}")),
            },
            Action::Backend { backend, command } => self.backend_command(&backend, command.0),
            Action::Reload { lb } => {
                let mut rejected = None;
                self.for_each_instance(|driver, now| {
                    if let Err(errors) = driver.reload(now, &lb) {
                        rejected = Some(errors);
                    }
                });
                if let Some(errors) = rejected {
                    self.record.violation(format!("reload rejected: {errors:?}"));
                }
            }
        }
    }

    fn backend_command(&mut self, name: &str, command: BackendCommand) {
        let flows = self.first().core().flows();
        let id = flows.backend_ids().find(|b| flows.backend(*b).map(|(n, _)| n) == Some(name));
        match id {
            Some(id) => {
                let mut refused = None;
                self.for_each_instance(|driver, now| {
                    if let Err(error) = driver.handle(now, Input::Backend { backend: id, command }) {
                        refused = Some(error);
                    }
                });
                if let Some(error) = refused {
                    self.record.violation(format!("backend command refused: {error}"));
                }
            }
            None => self.record.violation(format!("no backend {name:?}")),
        }
    }

    /// The core's own invariants, plus what only the world can see: every upstream the core
    /// believes open is open here, and none more.
    fn check_invariants(&mut self) {
        for instance in 0..self.drivers.len() {
            let driver = &self.drivers[instance];
            if let Err(violation) = driver.core().check_invariants() {
                let text = format!("{} instance {instance}: {violation}", self.now);
                self.record.violation(text);
            }
            let live_flows = driver.core().flows().stats().flows.active;
            let open_upstreams = driver.platform().upstreams.len() as u64;
            if live_flows != open_upstreams {
                let text = format!(
                    "{} instance {instance}: {live_flows} live flows, {open_upstreams} open upstreams",
                    self.now
                );
                self.record.violation(text);
            }
        }
    }

    /// Liveness after the last heal: if the run ends with every fault removed (backends
    /// answering, no partition, no loss) and long enough after the last timeline action for
    /// the slowest recovery the health scheduler allows, every backend the checks can see is
    /// Up on every instance.
    fn check_liveness(&mut self) {
        let fault_free = self.partitions.is_empty()
            && self.network.loss == 0.0
            && self.backends.iter().all(|b| b.state == BackendState::Up);
        let last_action = self.scenario.timeline.iter().map(|t| t.at).max().unwrap_or_default();
        let settle = self
            .scenario
            .lb
            .clusters
            .values()
            .map(|c| udplb_core::health::worst_case_recovery(&c.health, Health::Down))
            .max()
            .unwrap_or_default();
        let end = self.scenario.duration;
        if !fault_free || settle == Duration::MAX || last_action + settle + Duration::from_secs(1) > end {
            return;
        }
        for instance in 0..self.drivers.len() {
            let core = self.drivers[instance].core();
            for backend in core.monitor().backend_ids() {
                let status = core.monitor().backend(backend);
                let down = status.as_ref().is_some_and(|s| s.health == Health::Down);
                let enabled = status.as_ref().is_some_and(|s| s.admin == udplb_core::AdminState::Enabled);
                if down && enabled {
                    let name = core.flows().backend(backend).map_or("?", |(n, _)| n).to_owned();
                    self.record.violation(format!(
                        "liveness: {name} still Down at the end, after every fault healed"
                    ));
                }
            }
        }
    }

    /// Client datagrams dropped for `reason`, over every instance.
    pub fn client_drops(&self, reason: DropReason) -> u64 {
        self.drivers.iter().map(|d| d.core().flows().stats().client_drops(reason)).sum()
    }

    /// Datagrams dropped for `reason` in either direction, over every instance.
    pub fn drops(&self, reason: DropReason) -> u64 {
        let stats = self.drivers.iter().map(|d| d.core().flows().stats());
        stats.map(|s| s.client_drops(reason) + s.backend_drops(reason)).sum()
    }

    /// Flows closed for `reason`, over every instance.
    pub fn closed_for(&self, reason: CloseReason) -> u64 {
        self.drivers.iter().map(|d| d.core().flows().stats().flows.closed_for(reason)).sum()
    }

    /// Flows created and flows still alive, over every instance.
    pub fn flow_totals(&self) -> (u64, u64) {
        let flows = self.drivers.iter().map(|d| &d.core().flows().stats().flows);
        flows.fold((0, 0), |(created, active), f| (created + f.created, active + f.active))
    }

    /// Requests re-sent after a refusal, over every instance.
    pub fn resent(&self) -> u64 {
        self.drivers.iter().map(|d| d.core().flows().stats().retries.resent).sum()
    }

    /// Requests sent and answered over every client.
    pub fn answered(&self) -> (u64, u64) {
        self.clients.iter().fold((0, 0), |(sent, answered), c| {
            (sent + u64::from(c.requests()), answered + u64::from(c.answered))
        })
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Kill { backend } => format!("kill {backend}"),
        Action::Restore { backend } => format!("restore {backend}"),
        Action::RefuseUdp { backend } => format!("refuse udp on {backend}"),
        Action::Blackhole { backend } => format!("blackhole {backend}"),
        Action::Partition { from, to, one_way } => {
            format!("partition {from} {} {to}", if *one_way { "->" } else { "<->" })
        }
        Action::Heal => "heal".into(),
        Action::Network(n) => format!("network loss {} latency {:?}", n.loss, n.latency),
        Action::DrainListener { listener } => format!("drain listener {listener}"),
        Action::Backend { backend, command } => format!("{command} backend {backend}"),
        Action::Reload { .. } => "reload".into(),
        Action::Rehash => "ecmp rehash".into(),
        Action::Rebind { client } => format!("NAT rebinds {client}"),
    }
}
