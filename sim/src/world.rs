//! The discrete-event loop: one or more balancer instances (each the core's driver on
//! simulated sockets), the clients and backends, and the timeline, driven through virtual time.
//!
//! Virtual time jumps from event to event; events are ordered by (time, sequence number). An
//! event is a packet arriving, a host sending, a client's next request, a timeline action, an
//! instance's timer or a TCP probe's answer. Handling one calls a driver or a host; what a
//! driver asks for afterwards (sends, probes, notices) is carried out here: packets go to the
//! network (`network.rs`), which says when they arrive; notices and new flows go to the record
//! (`record.rs`); the standing invariants (`invariants.rs`) are checked as the run goes and at
//! its end. The network's random stream is seeded by the scenario's seed, so a seed is a
//! complete description of a run. There is no wall clock anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use udplb_core::driver::Driver;
use udplb_core::health::ProbeFailure;
use udplb_core::{
    AdminCommand, BackendCommand, Balancer, DATAGRAM_HEADROOM, Input, Instant, Keys, ProbeId, ProbeResult,
    UpstreamError,
};

use crate::hosts::{BackendHost, BackendReaction, BackendState, ClientHost};
use crate::invariants::{self, Affinity};
use crate::network::{Icmp, Network, Packet, Transit};
use crate::platform::{Arrival, Effect, SendFault, SimPlatform};
use crate::record::Record;
use crate::scenario::{Action, Scenario};
use crate::trace::Trace;

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

/// Bound on events per run: a runaway scenario stops instead of spinning.
const MAX_EVENTS: u64 = 50_000_000;
/// Full invariant checks every this many events (and at the end).
const CHECK_EVERY: u64 = 512;

pub struct World {
    pub scenario: Scenario,
    now: Instant,
    queue: BTreeMap<(Instant, u64), Event>,
    sequence: u64,
    network: Network,
    /// One driver per balancer instance (one, unless `[ecmp]` asks for more).
    pub drivers: Vec<Driver<SimPlatform>>,
    pub backends: Vec<BackendHost>,
    pub clients: Vec<ClientHost>,
    pub trace: Trace,
    pub record: Record,
    balancer_timers: Vec<Option<Instant>>,
    events_run: u64,
    affinity: Affinity,
}

impl World {
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let instances = scenario.ecmp.instances;
        let drivers = (0..instances)
            .map(|instance| {
                let mode = scenario.lb.process.upstream_mode;
                let platform = SimPlatform::new(instance, mode, &scenario.platform, seed);
                Driver::new(World::balancer(&scenario, seed, instance), platform)
            })
            .collect();
        let mut world = World {
            network: Network::new(scenario.network.clone(), seed),
            backends: scenario.backends.iter().cloned().map(BackendHost::new).collect(),
            clients: scenario.clients.iter().cloned().map(ClientHost::new).collect(),
            scenario,
            now: Instant::ZERO,
            queue: BTreeMap::new(),
            sequence: 0,
            drivers,
            trace: Trace::default(),
            record: Record::default(),
            balancer_timers: vec![None; instances],
            events_run: 0,
            affinity: Affinity::default(),
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
                invariants::check_instances(self.now, &self.drivers, &mut self.record);
            }
        }
        if self.events_run >= MAX_EVENTS {
            self.record.violation(format!("stopped after {MAX_EVENTS} events"));
        }
        self.now = end;
        self.for_each_instance(|driver, now| {
            let _ = driver.handle(now, Input::Timeout);
        });
        invariants::check_instances(self.now, &self.drivers, &mut self.record);
        invariants::check_liveness(
            &self.scenario,
            &self.network,
            &self.backends,
            &self.drivers,
            &mut self.record,
        );
        invariants::check_proxy_headers(&self.backends, &mut self.record);
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
        let fail_open_before = invariants::fail_open_flows(&self.drivers[instance]);
        self.drivers[instance].platform_mut().begin(self.now);
        let result = call(&mut self.drivers[instance], self.now);
        let effects = std::mem::take(&mut self.drivers[instance].platform_mut().effects);
        let fail_open_now = invariants::fail_open_flows(&self.drivers[instance]);
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

    /// The first instance: every instance has the same configuration, so names and addresses
    /// can be looked up on it.
    fn first(&self) -> &Driver<SimPlatform> {
        &self.drivers[0]
    }

    fn carry_out(&mut self, instance: usize, effect: Effect, failed_open: bool) {
        match effect {
            Effect::Send { from, to, payload } => self.send(Packet::datagram(from, to, payload)),
            Effect::SendFromListener { listener, to, payload } => {
                if let Some((_, vip)) = self.drivers[instance].core().flows().listener(listener) {
                    self.send(Packet::datagram(vip, to, payload));
                }
            }
            Effect::TcpProbe { probe, address } => self.tcp_probe(instance, probe, address),
            Effect::SendFailed { flow, fault } => {
                let counts = &mut self.record.platform;
                match fault {
                    Some(SendFault::Failed) => counts.upstream_send_failed += 1,
                    Some(SendFault::TooLong) => counts.upstream_too_long += 1,
                    Some(SendFault::BufferFull) => counts.upstream_buffer_full += 1,
                    None => {}
                }
                let _ = self.with_driver(instance, |driver, now| {
                    driver.handle(now, Input::UpstreamError { flow, error: UpstreamError::SendFailed })
                });
            }
            Effect::ReturnFailed { listener, bytes, fault } => {
                let counts = &mut self.record.platform;
                match fault {
                    SendFault::Failed => counts.client_send_failed += 1,
                    SendFault::TooLong => counts.client_too_long += 1,
                    SendFault::BufferFull => counts.client_buffer_full += 1,
                }
                let _ = self.with_driver(instance, |driver, now| {
                    driver.handle(now, Input::ReturnFailed { listener, bytes })
                });
            }
            Effect::SocketOpenFailed => self.record.platform.open_failed += 1,
            Effect::Opened { flow, backend } => {
                // A new flow's upstream opened: the flow is booked once the driver returns.
                let core = self.drivers[instance].core();
                invariants::check_new_flow(self.now, core, backend, failed_open, &mut self.record);
                self.record.flow_opened(self.now, instance, core, flow, backend);
            }
            Effect::Notify(output) => {
                let core = self.drivers[instance].core();
                self.record.notice(&mut self.trace, self.now, instance, core, &output);
            }
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

    /// Puts a packet on the network, which tells when (and whether) it arrives.
    fn send(&mut self, packet: Packet) {
        let (from, to) = (self.host_of(packet.from), self.host_of(packet.to));
        match self.network.transit(self.now, &packet, from.as_deref(), to.as_deref()) {
            Transit::Lost => self.record.lost += 1,
            Transit::TooBig { mtu } => {
                self.record.lost += 1;
                self.send(Packet::fragmentation_needed(&packet, mtu));
            }
            Transit::Arrives(arrivals) => {
                for at in arrivals {
                    self.schedule(at, Event::Deliver(packet.clone()));
                }
            }
        }
    }

    fn deliver(&mut self, packet: Packet) {
        self.record.delivered += 1;
        if let Some(icmp) = packet.icmp {
            self.deliver_icmp(packet, icmp);
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
                let instance = self.network.spread(packet.from, self.drivers.len());
                let mut buffer = vec![0u8; DATAGRAM_HEADROOM + packet.payload.len()];
                buffer[DATAGRAM_HEADROOM..].copy_from_slice(&packet.payload);
                let from = packet.from;
                let verdict = self.with_driver(instance, |driver, now| {
                    driver.client_datagram(now, listener, from, &mut buffer, DATAGRAM_HEADROOM, false)
                });
                if let udplb_core::ClientVerdict::Forward { flow, .. } = verdict {
                    let driver = &self.drivers[instance];
                    let core = driver.core();
                    // Its flow's backend: from the core while the flow lives, from the
                    // upstream it was just sent on when the flow ended with it.
                    let sent = driver.platform().last_upstream_send.filter(|(sent_on, _)| *sent_on == flow);
                    let backend = core.flows().flow(flow).map(|f| f.backend).or(sent.map(|(_, id)| id));
                    match backend {
                        Some(backend) => self.record.forwarded(self.now, core, backend),
                        None => {
                            self.record.violation(format!("{}: forwarded on {flow} to no backend", self.now))
                        }
                    }
                    if let Err(violation) =
                        self.affinity.check(self.now, instance, core, listener, from, flow)
                    {
                        self.record.violation(violation);
                    }
                }
            }
        } else if let Some(instance) = instance_with(to.ip(), false) {
            // As the shell's event loop reads a shared upstream socket: a datagram belongs to
            // the flow bound at (socket, source address); from an address with no flow on that
            // socket (a late reply to a flow that ended, a reply from another port, a
            // stranger) it is counted and handed to the core as a stray.
            match self.drivers[instance].platform().arrival(to.port(), packet.from) {
                Arrival::Flow(flow) => {
                    self.with_driver(instance, |driver, now| {
                        driver.backend_datagram(now, flow, &packet.payload, false)
                    });
                }
                Arrival::Stray => {
                    self.record.platform.stray_datagrams += 1;
                    let stray = Input::StrayReply { from: packet.from, bytes: packet.payload.len() };
                    let _ = self.with_driver(instance, |driver, now| driver.handle(now, stray));
                }
                Arrival::Filtered => {}
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
            self.check_reply_owner(index, &packet.payload);
            if self.clients[index].listens_on(to.port()) {
                self.clients[index].receive(&packet.payload);
            } else {
                self.clients[index].stale_replies += 1;
            }
        }
    }

    /// A reply carries its request's tag (`client#n`): one that reaches another client was
    /// returned on the wrong flow (a late reply taken for a newer flow's on a shared upstream
    /// port, say), which no client may ever see.
    fn check_reply_owner(&mut self, index: usize, payload: &[u8]) {
        let Some(end) = payload.iter().position(|b| *b == b'#') else { return };
        let owner = &payload[..end];
        let receiver = &self.clients[index].spec.name;
        if owner != receiver.as_bytes() && self.clients.iter().any(|c| c.spec.name.as_bytes() == owner) {
            let owner = String::from_utf8_lossy(owner);
            self.record.violation(format!("{}: {receiver} received a reply meant for {owner}", self.now));
        }
    }

    /// An ICMP error reached the sender of the datagram it is about: a port unreachable is
    /// the core's to hear (a refusal of its flow, or a failed UDP probe); a fragmentation
    /// needed is the sending host's kernel's, which keeps the path MTU and tells the core
    /// nothing (the shell ignores that error too).
    fn deliver_icmp(&mut self, packet: Packet, icmp: Icmp) {
        let sender = packet.to;
        if let Icmp::FragmentationNeeded { mtu } = icmp {
            let expires = self.now + self.network.pmtu_expires();
            for driver in &mut self.drivers {
                let platform = driver.platform_mut();
                if sender.ip() == platform.upstream_ip || sender.ip() == platform.probe_ip {
                    platform.learn_path_mtu(packet.from.ip(), mtu, expires);
                }
            }
            return;
        }
        for instance in 0..self.drivers.len() {
            let platform = self.drivers[instance].platform();
            if sender.ip() == platform.upstream_ip {
                // The error names the datagram's destination: the flow bound at (socket,
                // destination) hears it, as the shell reads a pool socket's error queue.
                if let Arrival::Flow(flow) = platform.arrival(sender.port(), packet.from) {
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

    fn backend_receives(&mut self, index: usize, packet: Packet) {
        let flows = self.first().core().flows();
        let vips: Vec<SocketAddr> =
            flows.listener_ids().filter_map(|l| flows.listener(l).map(|(_, a)| a)).collect();
        let client_ips: BTreeSet<IpAddr> = self.clients.iter().map(|c| c.spec.address).collect();
        let is_client =
            |ip: IpAddr| client_ips.contains(&ip) || matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198);
        let reaction = self.backends[index].receive(packet.from, &packet.payload, &vips, is_client);
        let address = self.backends[index].reply_source();
        match reaction {
            BackendReaction::Reply { payloads, delay } => {
                for payload in payloads {
                    let packet = Packet::datagram(address, packet.from, payload);
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

    /// A closed port answers with ICMP port unreachable, within the host's ICMP rate limits.
    fn send_icmp(&mut self, index: usize, refused: Packet) {
        if self.network.icmp_allowed(self.now, &self.backends[index].spec.name, refused.from.ip()) {
            self.send(Packet::port_unreachable(&refused));
        }
    }

    fn tcp_probe(&mut self, instance: usize, probe: ProbeId, address: SocketAddr) {
        let Some(backend) = self.backends.iter().find(|b| b.spec.address.ip() == address.ip()) else {
            return;
        };
        let path_open = self.network.connects("lb", &backend.spec.name);
        let answer = if path_open { backend.tcp_answer() } else { None };
        let result = match answer {
            Some(true) => ProbeResult::Pass,
            Some(false) => ProbeResult::Fail(ProbeFailure::Refused),
            // Silence: the core's own timer turns it into a Timeout failure.
            None => return,
        };
        let at = self.now + self.network.round_trip();
        self.schedule(at, Event::TcpProbeAnswer { instance, probe, result });
    }

    fn client_sends(&mut self, index: usize) {
        let Some((from, payload)) = self.clients[index].next_request() else { return };
        let listener = self.clients[index].spec.listener.clone();
        let vip = self.scenario.lb.listeners.get(listener.as_str()).map(|l| l.address);
        if let Some(vip) = vip {
            self.send(Packet::datagram(from, vip, payload));
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
            Action::Restore { backend } => match self.backends.iter_mut().find(|b| b.spec.name == backend) {
                Some(host) => host.restore(),
                None => self.record.violation(format!("timeline names unknown backend {backend:?}")),
            },
            Action::RefuseUdp { backend } => set_state(self, &backend, BackendState::RefusingUdp),
            Action::DropUdp { backend } => set_state(self, &backend, BackendState::DroppingUdp),
            Action::ReplyFrom { backend, port } => {
                match self.backends.iter_mut().find(|b| b.spec.name == backend) {
                    Some(host) => host.reply_port = Some(port),
                    None => self.record.violation(format!("timeline names unknown backend {backend:?}")),
                }
            }
            Action::Blackhole { backend } => set_state(self, &backend, BackendState::Blackholed),
            Action::Partition { from, to, one_way } => self.network.partition(&from, &to, one_way),
            Action::Heal => self.network.heal(),
            Action::Network(network) => self.network.set_conditions(network),
            Action::DrainListener { listener } => {
                let id = self.first().core().flows().listener_id(&listener);
                match id {
                    Some(id) => self.for_each_instance(|driver, now| {
                        let _ = driver.handle(now, Input::Admin(AdminCommand::DrainListener(id)));
                    }),
                    None => self.record.violation(format!("no listener {listener:?}")),
                }
            }
            Action::Rehash => self.network.rehash(),
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
}

fn describe(action: &Action) -> String {
    match action {
        Action::Kill { backend } => format!("kill {backend}"),
        Action::Restore { backend } => format!("restore {backend}"),
        Action::RefuseUdp { backend } => format!("refuse udp on {backend}"),
        Action::DropUdp { backend } => format!("drop udp to {backend}"),
        Action::ReplyFrom { backend, port } => format!("{backend} answers from port {port}"),
        Action::Blackhole { backend } => format!("blackhole {backend}"),
        Action::Partition { from, to, one_way } => {
            format!("partition {from} {} {to}", if *one_way { "->" } else { "<->" })
        }
        Action::Heal => "heal".into(),
        Action::Network(n) => {
            let mut line = format!("network loss {} latency {:?}", n.loss, n.latency);
            for link in &n.links {
                line.push_str(&format!(", {} link loss {}", link.host, link.loss));
                match link.direction {
                    crate::scenario::LinkDirection::Both => {}
                    crate::scenario::LinkDirection::In => line.push_str(" in"),
                    crate::scenario::LinkDirection::Out => line.push_str(" out"),
                }
                if let Some(mtu) = link.mtu {
                    line.push_str(&format!(" mtu {mtu}"));
                }
            }
            line
        }
        Action::DrainListener { listener } => format!("drain listener {listener}"),
        Action::Backend { backend, command } => format!("{command} backend {backend}"),
        Action::Reload { .. } => "reload".into(),
        Action::Rehash => "ecmp rehash".into(),
        Action::Rebind { client } => format!("NAT rebinds {client}"),
    }
}
