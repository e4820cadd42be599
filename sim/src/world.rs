//! The discrete-event loop: one or more balancer instances (each a process of one or more
//! workers, each worker the core's driver on simulated sockets), the clients and backends, and
//! the timeline, driven through virtual time.
//!
//! Workers are modelled as the shell runs them (`process.workers`): every worker has its own
//! listener sockets in one SO_REUSEPORT group, and a worker is picked for each client datagram
//! as the shell's steering program picks it (the listener's affinity key, hashed: one client,
//! one worker), or by the kernel's own 4-tuple hash with `[platform] reuseport = "kernel"`;
//! each worker has its own flow table and upstream sockets (from
//! its instance's address, ports the kernel hands it alone). With several workers the first is
//! the leader: it alone probes and decides health, and its backend states reach the followers,
//! whose passive signals reach it, as messages handled after the current event (as the shell's
//! channels are read on the next turn of the receiving loop). Budgets are split between
//! workers by `udplb_core::config::worker_config`, as the shell splits them.
//!
//! Virtual time jumps from event to event; events are ordered by (time, sequence number). An
//! event is a packet arriving, a host sending, a client's next request, a timeline action, an
//! instance's timer or a TCP probe's answer. Handling one calls a driver or a host; what a
//! driver asks for afterwards (sends, probes, notices) is carried out here: packets go to the
//! network (`network.rs`), which says when they arrive; notices and new flows go to the record
//! (`record.rs`); the standing invariants (`invariants.rs`) are checked as the run goes and at
//! its end. The network's random stream is seeded by the scenario's seed, so a seed is a
//! complete description of a run. There is no wall clock anywhere.

use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use udplb_core::balancer::Output;
use udplb_core::config::Affinity as AffinityMode;
use udplb_core::driver::Driver;
use udplb_core::health::ProbeFailure;
use udplb_core::{
    AdminCommand, BackendCommand, Balancer, ClientDatagram, Config, DATAGRAM_HEADROOM, Input, Instant, Keys,
    ListenerId, ProbeId, ProbeResult, Role, UpstreamError,
};

use crate::hosts::{BackendHost, BackendReaction, BackendState, ClientHost};
use crate::invariants::{self, Affinity};
use crate::network::{Icmp, Network, Packet, Transit};
use crate::platform::{Arrival, Effect, SendFault, SimPlatform};
use crate::record::Record;
use crate::scenario::{Action, ClientModel, Scenario};
use crate::trace::Trace;

#[derive(Clone, Debug)]
enum Event {
    /// A packet (held in `World::in_flight`) arrives.
    Deliver(PacketId),
    /// A host puts a packet (held in `World::in_flight`) on the network (a backend answering
    /// after its delay).
    Send(PacketId),
    ClientSends(usize),
    Timeline(usize),
    /// Worker `n`'s timer (`n` indexes `World::drivers`).
    BalancerTimer(usize),
    /// A TCP probe's SYN leaves its worker (boxed, as the rarer events are, so that every
    /// entry of the queue stays small).
    TcpSyn(Box<TcpSyn>),
    /// A TCP probe's answer (or a SYN's retransmissions given up) reaches worker `worker`.
    TcpProbeAnswer(Box<(usize, ProbeId, ProbeResult)>),
    /// A message between the workers of one instance: an input for worker `.0`.
    Relay(Box<(usize, Input)>),
}

/// A TCP probe's SYN (attempt `attempt`, from 0) from worker `worker` to `backend`.
#[derive(Clone, Debug)]
struct TcpSyn {
    worker: usize,
    probe: ProbeId,
    backend: usize,
    attempt: u32,
}

/// A packet in `World::in_flight`.
#[derive(Copy, Clone, Debug)]
struct PacketId(u32);

/// The packets events carry, kept out of the event queue so that its entries stay small
/// (the queue moves them on every push and pop); freed slots are reused.
#[derive(Debug, Default)]
struct InFlight {
    packets: Vec<Packet>,
    free: Vec<u32>,
}

impl InFlight {
    fn put(&mut self, packet: Packet) -> PacketId {
        match self.free.pop() {
            Some(slot) => {
                self.packets[slot as usize] = packet;
                PacketId(slot)
            }
            None => {
                self.packets.push(packet);
                PacketId((self.packets.len() - 1) as u32)
            }
        }
    }

    fn take(&mut self, id: PacketId) -> Packet {
        self.free.push(id.0);
        std::mem::replace(&mut self.packets[id.0 as usize], Packet::EMPTY)
    }
}

/// An event at its time; the queue pops the earliest, and of equal times the one scheduled
/// first (a binary heap ordered by (time, sequence), reversed).
#[derive(Debug)]
struct Scheduled {
    at: Instant,
    sequence: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.sequence) == (other.at, other.sequence)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

/// One balancer instance: a process with its workers.
#[derive(Debug)]
pub struct Instance {
    /// Its workers are `drivers[first..first + workers]`; the first is the leader (or the
    /// whole balancer, with one worker).
    pub first: usize,
    pub workers: usize,
    /// Its configuration as the file gives it (before the split between workers).
    pub lb: Config,
    /// SIGTERM received: every listener of every worker drains.
    pub stopping: bool,
    /// Exited after SIGTERM, once no flow was left: its sockets are closed.
    pub stopped: bool,
    /// When its configuration last changed (start or reload).
    pub configured: Instant,
    /// The kernel's per-boot secret in its reuseport hash.
    secret: u64,
}

impl Instance {
    fn worker_range(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.workers
    }
}

/// How long the kernel waits before sending a TCP SYN again (Linux's initial RTO), doubling
/// after each; it gives up after this many attempts (the probe's own timeout usually comes
/// first).
const SYN_RTO: std::time::Duration = std::time::Duration::from_secs(1);
const SYN_ATTEMPTS: u32 = 4;

/// Bound on events per run: a runaway scenario stops instead of spinning.
const MAX_EVENTS: u64 = 50_000_000;
/// Full invariant checks every this many events (and at the end).
const CHECK_EVERY: u64 = 512;

// The queue moves its entries on every push and pop: they stay two words of key and two of
// event.
const _: () = assert!(std::mem::size_of::<Scheduled>() <= 32);

pub struct World {
    pub scenario: Scenario,
    now: Instant,
    /// Pending events, earliest first (ties in the order they were scheduled).
    queue: BinaryHeap<Scheduled>,
    /// The packets of pending `Deliver` and `Send` events.
    in_flight: InFlight,
    /// A buffer for a client datagram handed to a driver (with the core's headroom), reused.
    client_buffer: Vec<u8>,
    /// Every listener address of every worker (kept current across reloads).
    vips: Vec<SocketAddr>,
    /// The balancer instances' own addresses (upstream sockets and probes).
    lb_ips: Vec<IpAddr>,
    /// The hosts by address (fixed for a run; the first host listed wins a shared one).
    index: HostIndex,
    sequence: u64,
    network: Network,
    /// One driver per worker of every balancer instance, instance after instance (one, unless
    /// `[ecmp]` or `process.workers` ask for more).
    pub drivers: Vec<Driver<SimPlatform>>,
    /// The balancer instances, and which drivers are each one's workers.
    pub instances: Vec<Instance>,
    /// Per driver: its instance.
    instance_of: Vec<usize>,
    pub backends: Vec<BackendHost>,
    pub clients: Vec<ClientHost>,
    pub trace: Trace,
    pub record: Record,
    balancer_timers: Vec<Option<Instant>>,
    events_run: u64,
    affinity: Affinity,
    /// The hosts' own random draws (a backend's varying delay), apart from the network's so
    /// that a scenario without them draws what it always did.
    hosts_rng: ChaCha8Rng,
    /// Trace every flow's opening and closing and every probe (`--trace-flows`).
    pub detailed: bool,
    /// Every PROXY v2 UNIQUE_ID a flow got so far, every worker of every instance (kept only
    /// when some cluster sends UNIQUE_ID): no two flows may share one.
    unique_ids: Option<hashbrown::HashSet<[u8; 16]>>,
}

/// The clients and backends by address, built once per run (addresses never change): lookups
/// only, never iterated.
#[derive(Debug, Default)]
struct HostIndex {
    backend_at: hashbrown::HashMap<SocketAddr, usize>,
    backend_ip: hashbrown::HashMap<IpAddr, usize>,
    client_ip: hashbrown::HashMap<IpAddr, usize>,
}

impl HostIndex {
    fn new(scenario: &Scenario) -> HostIndex {
        let mut index = HostIndex::default();
        for (i, backend) in scenario.backends.iter().enumerate() {
            index.backend_at.entry(backend.address).or_insert(i);
            index.backend_ip.entry(backend.address.ip()).or_insert(i);
        }
        for (i, client) in scenario.clients.iter().enumerate() {
            index.client_ip.entry(client.address).or_insert(i);
        }
        index
    }
}

/// The layout of a run's workers: per instance, its worker count.
fn layout(scenario: &Scenario) -> Vec<usize> {
    (0..scenario.ecmp.count()).map(|i| scenario.lb_of(i).process.workers().max(1) as usize).collect()
}

impl World {
    pub fn new(scenario: Scenario, seed: u64) -> World {
        let mut drivers = Vec::new();
        let mut instances = Vec::new();
        let mut instance_of = Vec::new();
        for (instance, workers) in layout(&scenario).into_iter().enumerate() {
            let first = drivers.len();
            for worker in 0..workers {
                let core = World::balancer(&scenario, seed, first + worker);
                let mode = scenario.lb_of(instance).process.upstream_mode;
                let platform = SimPlatform::new(instance, worker, workers, mode, &scenario.platform, seed);
                drivers.push(Driver::new(core, platform));
                instance_of.push(instance);
            }
            let secret = Keys::from_seed(seed ^ 0x7265_7573_6570_6f72 ^ instance as u64).selection[0..8]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            instances.push(Instance {
                first,
                workers,
                lb: scenario.lb_of(instance).clone(),
                stopping: false,
                stopped: false,
                configured: Instant::ZERO,
                secret,
            });
        }
        let workers = drivers.len();
        let index = HostIndex::new(&scenario);
        let mut world = World {
            instances,
            instance_of,
            hosts_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x686f_7374_735f_726e),
            detailed: false,
            network: Network::new(scenario.network.clone(), seed),
            backends: scenario.backends.iter().cloned().map(BackendHost::new).collect(),
            clients: scenario.clients.iter().cloned().map(|spec| ClientHost::seeded(spec, seed)).collect(),
            scenario,
            now: Instant::ZERO,
            queue: BinaryHeap::new(),
            in_flight: InFlight::default(),
            client_buffer: Vec::new(),
            vips: Vec::new(),
            lb_ips: drivers
                .iter()
                .flat_map(|d| {
                    let p = d.platform();
                    [p.upstream_ip, p.probe_ip, p.upstream_ip6, p.probe_ip6]
                })
                .collect(),
            index,
            sequence: 0,
            drivers,
            trace: Trace::default(),
            record: Record::default(),
            balancer_timers: vec![None; workers],
            events_run: 0,
            affinity: Affinity::default(),
            unique_ids: None,
        };
        world.vips = vips(&world.drivers, &world.clients);
        let sends_unique_ids = (0..world.instances.len())
            .any(|i| world.instances[i].lb.clusters.values().any(|c| c.proxy_protocol.unique_id));
        world.unique_ids = sends_unique_ids.then(hashbrown::HashSet::new);
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

    /// The core of `drivers[index]` as a run with `seed` starts it: instances share the
    /// selection key (so consistent hashing agrees) and each has its own flow-table key, as
    /// separate processes would; the workers of one instance share its keys, each runs its
    /// share of the budgets, the first leads. A recorded run replays into a fresh one of these.
    pub fn balancer(scenario: &Scenario, seed: u64, index: usize) -> Balancer {
        let mut first = 0;
        for (instance, workers) in layout(scenario).into_iter().enumerate() {
            if index < first + workers {
                let table = Keys::from_seed(seed ^ ((instance as u64 + 1) << 32)).table;
                // Each worker of each instance its own UNIQUE_ID prefix, as the shell draws one
                // per worker of each process.
                let unique = Keys::from_seed(seed ^ ((index as u64 + 1) << 40)).unique;
                let keys = Keys { table, unique, ..Keys::from_seed(seed) };
                let lb = scenario.lb_of(instance);
                if workers == 1 {
                    return Balancer::new(lb, keys).expect("the scenario's [lb] was validated");
                }
                let config = udplb_core::config::worker_config(lb, workers as u32, lb.process.max_flows());
                let role = if index == first { Role::Leader } else { Role::Follower };
                return Balancer::with_role(&config, keys, role).expect("the scenario's [lb] was validated");
            }
            first += workers;
        }
        panic!("no worker {index} in this scenario");
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.sequence += 1;
        self.queue.push(Scheduled { at, sequence: self.sequence, event });
    }

    /// Runs until the scenario's duration, then checks the end-state invariants.
    pub fn run(&mut self) {
        self.advance_to(Instant::ZERO + self.scenario.duration);
        let running: Vec<&Driver<SimPlatform>> =
            (0..self.drivers.len()).filter(|w| !self.stopped(*w)).map(|w| &self.drivers[w]).collect();
        invariants::check_liveness(&self.scenario, &self.network, &self.backends, &running, &mut self.record);
        invariants::check_proxy_headers(&self.backends, &mut self.record);
    }

    /// Runs every event up to `end`, wakes every instance at `end` and checks the core's
    /// invariants there (a sweep's liveness phase calls it again past the scenario's end).
    pub fn advance_to(&mut self, end: Instant) {
        while let Some(next) = self.queue.peek() {
            let at = next.at;
            if at > end || self.events_run >= MAX_EVENTS {
                break;
            }
            let Some(Scheduled { event, .. }) = self.queue.pop() else { break };
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
        self.for_each_worker(None, |driver, now| {
            let _ = driver.handle(now, Input::Timeout);
        });
        invariants::check_instances(self.now, &self.drivers, &mut self.record);
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Every fault healed at once, for a sweep's liveness phase: partitions removed, the
    /// network's loss, duplication, reordering and ICMP loss set to zero and its per-link
    /// faults cleared (latency, jitter and MTU stay: they are properties, not faults), the
    /// balancer's `[platform]` faults ended, every backend host answering again as its
    /// `[[backend]]` says, and timeline actions still
    /// pending (after the end) dropped.
    pub fn heal_everything(&mut self) {
        self.queue.retain(|scheduled| !matches!(scheduled.event, Event::Timeline(_)));
        self.network.heal();
        let mut spec = self.network.spec().clone();
        spec.loss = 0.0;
        spec.duplicate = 0.0;
        spec.reorder = 0.0;
        spec.icmp_loss = 0.0;
        spec.links.clear();
        self.network.set_conditions(spec);
        for backend in &mut self.backends {
            backend.restore();
        }
        for driver in &mut self.drivers {
            driver.platform_mut().heal();
        }
        self.trace.line(self.now, "liveness: every fault healed".into());
    }

    /// Client `index` sends `count` more requests, one every `interval` from `at` (whatever it
    /// still had to send is sent on this schedule too); returns the number its first new
    /// request will carry.
    pub fn send_more(&mut self, index: usize, at: Instant, count: u32, interval: std::time::Duration) -> u32 {
        self.queue.retain(|scheduled| !matches!(scheduled.event, Event::ClientSends(i) if i == index));
        let client = &mut self.clients[index];
        let first = client.sent;
        match &mut client.spec.model {
            crate::scenario::ClientModel::RequestResponse { count: total, interval: every, .. }
            | crate::scenario::ClientModel::Flood { count: total, interval: every, .. }
            | crate::scenario::ClientModel::Quic { count: total, interval: every, .. } => {
                *total = first + count;
                *every = interval;
            }
        }
        self.schedule(at, Event::ClientSends(index));
        first
    }

    /// Events handled so far.
    pub fn events_run(&self) -> u64 {
        self.events_run
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(packet) => {
                let packet = self.in_flight.take(packet);
                self.deliver(packet)
            }
            Event::Send(packet) => {
                let packet = self.in_flight.take(packet);
                self.send(packet)
            }
            Event::ClientSends(index) => self.client_sends(index),
            Event::Timeline(index) => {
                self.timeline(index);
                // A reload may have added or removed listeners.
                self.vips = vips(&self.drivers, &self.clients);
            }
            Event::BalancerTimer(worker) => {
                self.balancer_timers[worker] = None;
                if !self.stopped(worker) {
                    let _ = self.with_driver(worker, |driver, now| driver.handle(now, Input::Timeout));
                }
            }
            Event::TcpSyn(syn) => self.tcp_syn(syn.worker, syn.probe, syn.backend, syn.attempt),
            Event::TcpProbeAnswer(answer) => {
                let (worker, probe, result) = *answer;
                if self.detailed {
                    self.trace.line(self.now, format!("probe {probe:?} on worker {worker}: {result:?}"));
                }
                if !self.stopped(worker) {
                    let _ = self.with_driver(worker, |driver, now| {
                        driver.handle(now, Input::ProbeResult { probe, result })
                    });
                }
            }
            Event::Relay(relay) => {
                let (worker, input) = *relay;
                if !self.stopped(worker) {
                    let _ = self.with_driver(worker, |driver, now| driver.handle(now, input));
                }
            }
        }
        self.check_stopping();
    }

    /// Whether worker `worker`'s process has exited.
    fn stopped(&self, worker: usize) -> bool {
        self.instances[self.instance_of[worker]].stopped
    }

    /// An instance told to stop exits once none of its workers has a flow left, as the shell
    /// does: its sockets close and its timers stop.
    fn check_stopping(&mut self) {
        for index in 0..self.instances.len() {
            let instance = &self.instances[index];
            if !instance.stopping || instance.stopped {
                continue;
            }
            let drained =
                instance.worker_range().all(|w| self.drivers[w].core().flows().stats().flows.active == 0);
            if drained {
                self.instances[index].stopped = true;
                self.trace.line(self.now, format!("instance {index}: drained, exited"));
                self.record.exits.push((self.now, index));
            }
        }
    }

    /// Schedules a wake-up at each worker's next deadline (an earlier pending one stays: an
    /// early wake-up is harmless, and exercising it is part of the test).
    fn rearm_balancer_timers(&mut self) {
        for worker in 0..self.drivers.len() {
            if let Some(deadline) = self.drivers[worker].next_deadline()
                && self.balancer_timers[worker].is_none_or(|armed| deadline < armed)
                && !self.stopped(worker)
            {
                let at = deadline.max(self.now);
                self.balancer_timers[worker] = Some(at);
                self.schedule(at, Event::BalancerTimer(worker));
            }
        }
    }

    /// Calls one worker's driver at the current time, then carries out what it asked for.
    fn with_driver<T>(
        &mut self,
        worker: usize,
        call: impl FnOnce(&mut Driver<SimPlatform>, Instant) -> T,
    ) -> T {
        let fail_open_before = invariants::fail_open_flows(&self.drivers[worker]);
        self.drivers[worker].platform_mut().begin(self.now);
        let result = call(&mut self.drivers[worker], self.now);
        let mut effects = std::mem::take(&mut self.drivers[worker].platform_mut().effects);
        let fail_open_now = invariants::fail_open_flows(&self.drivers[worker]);
        for effect in effects.drain(..) {
            self.carry_out(worker, effect, fail_open_now > fail_open_before);
        }
        // The emptied buffer goes back, so that the next call does not grow a new one.
        let platform = self.drivers[worker].platform_mut();
        if platform.effects.is_empty() {
            platform.effects = effects;
        }
        result
    }

    /// An operator action applied to every worker of every running instance (or of
    /// `instance` only).
    fn for_each_worker(
        &mut self,
        instance: Option<usize>,
        mut call: impl FnMut(&mut Driver<SimPlatform>, Instant),
    ) {
        for worker in 0..self.drivers.len() {
            let of = self.instance_of[worker];
            if instance.is_none_or(|i| i == of) && !self.instances[of].stopped {
                self.with_driver(worker, &mut call);
            }
        }
    }

    fn carry_out(&mut self, worker: usize, effect: Effect, failed_open: bool) {
        match effect {
            Effect::Send { from, to, payload } => self.send(Packet::datagram(from, to, payload)),
            Effect::SendFromListener { listener, from, to, payload } => {
                if self.drivers[worker].core().flows().listener(listener).is_some() {
                    self.send(Packet::datagram(from, to, payload));
                }
            }
            Effect::TcpProbe { probe, address } => {
                if self.detailed {
                    self.trace.line(self.now, format!("probe {probe:?} on worker {worker}: tcp {address}"));
                }
                if let Some(backend) = self.backends.iter().position(|b| b.spec.address.ip() == address.ip())
                {
                    self.tcp_syn(worker, probe, backend, 0);
                }
            }
            Effect::SendFailed { flow, fault } => {
                let counts = &mut self.record.platform;
                match fault {
                    Some(SendFault::Failed) => counts.upstream_send_failed += 1,
                    Some(SendFault::TooLong) => counts.upstream_too_long += 1,
                    Some(SendFault::BufferFull) => counts.upstream_buffer_full += 1,
                    None => {}
                }
                let _ = self.with_driver(worker, |driver, now| {
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
                let _ = self.with_driver(worker, |driver, now| {
                    driver.handle(now, Input::ReturnFailed { listener, bytes })
                });
            }
            Effect::SocketOpenFailed => self.record.platform.open_failed += 1,
            Effect::Opened { flow, backend } => {
                // A new flow's upstream opened: the flow is booked once the driver returns.
                let instance = self.instance_of[worker];
                let core = self.drivers[worker].core();
                invariants::check_new_flow(self.now, core, flow, backend, failed_open, &mut self.record);
                if let Some(seen) = &mut self.unique_ids
                    && !seen.insert(core.flows().unique_id(flow.serial()))
                {
                    let message = format!("{}: {flow}'s UNIQUE_ID is another flow's too", self.now);
                    self.record.violation(message);
                }
                let by_address =
                    core.flows().flow(flow).and_then(|f| core.flows().listener(f.listener)).is_some_and(
                        |(name, _)| {
                            let listener = self.instances[instance].lb.listeners.get(name);
                            listener.is_some_and(|l| l.affinity == AffinityMode::ClientAddress)
                        },
                    );
                self.record.flow_opened(self.now, instance, core, flow, backend, by_address);
                if self.detailed
                    && let Some(info) = core.flows().flow(flow)
                {
                    let name = core.flows().backend(backend).map_or("?", |(n, _)| n);
                    let line = format!(
                        "flow {flow} opened on instance {instance} worker {}: {} -> {name}",
                        worker - self.instances[instance].first,
                        info.client
                    );
                    self.trace.line(self.now, line);
                }
                self.check_shared_affinity(worker, flow);
            }
            Effect::Notify(output) => {
                self.relay(worker, &output);
                if self.detailed
                    && let Output::Flow(udplb_core::Output::CloseUpstream { flow, reason }) = &output
                {
                    self.trace.line(self.now, format!("flow {flow} on worker {worker} closed: {reason}"));
                }
                // The trace and event counts follow the first instance's leader.
                let core = self.drivers[worker].core();
                self.record.notice(&mut self.trace, self.now, worker == 0, core, &output);
            }
        }
    }

    /// Affinity across workers and instances: with `affinity = "client_address"`, every
    /// socket of one client host shares one backend. A new flow of such a client on one worker
    /// may not go to another backend than a live flow of the same client host on another
    /// worker of the same instance — or, when its cluster hashes consistently (`hrw`,
    /// `maglev`), of another instance — unless health, an operator or a reload moved it: the
    /// older flow's backend is no longer eligible, or a reload came after it opened.
    fn check_shared_affinity(&mut self, worker: usize, flow: udplb_core::FlowId) {
        let core = self.drivers[worker].core();
        let Some(info) = core.flows().flow(flow) else { return };
        let Some((listener, _)) = core.flows().listener(info.listener) else { return };
        let instance = self.instance_of[worker];
        let config = &self.instances[instance].lb;
        let Some(listener_config) = config.listeners.get(listener) else { return };
        if listener_config.affinity != AffinityMode::ClientAddress {
            return;
        }
        let consistent = config.clusters.get(&listener_config.cluster).is_some_and(|c| {
            matches!(c.algorithm, udplb_core::config::Algorithm::Hrw | udplb_core::config::Algorithm::Maglev)
        });
        let backend = core.flows().backend(info.backend).map_or("?", |(n, _)| n).to_owned();
        for other in 0..self.drivers.len() {
            let other_instance = self.instance_of[other];
            let comparable = other_instance == instance || consistent;
            if other == worker || !comparable || self.stopped(other) {
                continue;
            }
            let since = self.instances[other_instance].configured.max(self.instances[instance].configured);
            let core = self.drivers[other].core();
            let Some(other_listener) = core.flows().listener_id(listener) else { continue };
            let held = core.flows().flows().find(|f| {
                f.listener == other_listener
                    && f.client.ip() == info.client.ip()
                    && !f.retired
                    && f.created >= since
                    && core.monitor().is_eligible(f.backend)
            });
            if let Some(held) = held {
                let other_backend = core.flows().backend(held.backend).map_or("?", |(n, _)| n);
                if other_backend != backend {
                    let message = format!(
                        "{}: affinity: client host {} is on {other_backend} ({}) and {backend} ({}) at once",
                        self.now,
                        info.client.ip(),
                        self.worker_name(other),
                        self.worker_name(worker)
                    );
                    self.record.violation(message);
                    return;
                }
            }
        }
    }

    /// A worker as a reader knows it: "instance 1 worker 0".
    fn worker_name(&self, worker: usize) -> String {
        let instance = self.instance_of[worker];
        format!("instance {instance} worker {}", worker - self.instances[instance].first)
    }

    /// With several workers: what one worker's output tells the others, as the shell passes it
    /// on — a backend's state from the leader to every follower, a follower's passive signals
    /// to the leader — delivered after the current event.
    fn relay(&mut self, worker: usize, output: &Output) {
        let instance = &self.instances[self.instance_of[worker]];
        if instance.workers == 1 {
            return;
        }
        let leader = instance.first;
        let followers = instance.first + 1..instance.first + instance.workers;
        let now = self.now;
        match output {
            Output::BackendState { backend, state } if worker == leader => {
                for follower in followers {
                    let input = Input::BackendState { backend: *backend, state: *state };
                    self.schedule(now, Event::Relay(Box::new((follower, input))));
                }
            }
            Output::Flow(udplb_core::Output::PassiveFailure { backend, failure }) if worker != leader => {
                let input = Input::PassiveFailure { backend: *backend, failure: *failure };
                self.schedule(now, Event::Relay(Box::new((leader, input))));
            }
            Output::Flow(udplb_core::Output::PassiveSuccess { backend, answered }) if worker != leader => {
                let input = Input::PassiveSuccess { backend: *backend, answered: *answered };
                self.schedule(now, Event::Relay(Box::new((leader, input))));
            }
            _ => {}
        }
    }

    fn is_vip(&self, address: SocketAddr) -> bool {
        self.vips.contains(&address)
    }

    /// The listener of worker `worker` that gets datagrams sent to `address`: the one bound
    /// to it, or else one on a wildcard address of its port (`0.0.0.0` for IPv4, `[::]` for
    /// both families, as a dual-stack socket), as the kernel picks.
    fn listener_at(&self, worker: usize, address: SocketAddr) -> Option<ListenerId> {
        listener_for(self.drivers[worker].core(), address)
    }

    /// The worker of `instance` whose socket in the SO_REUSEPORT group of `to` gets a
    /// datagram from `from`: as the shell's steering program picks (the listener's affinity
    /// key, [`udplb_core::steer`]), or with `[platform] reuseport = "kernel"` as the kernel's
    /// own hash does (the 4-tuple with the instance's per-boot secret). Socket index `i` is
    /// worker `i` (in the shell, the order the workers bound their sockets: any fixed order
    /// serves a client alike).
    fn reuseport_pick(&self, instance: usize, from: SocketAddr, to: SocketAddr) -> usize {
        let instance = &self.instances[instance];
        if instance.workers == 1 {
            return instance.first;
        }
        if self.scenario.platform.reuseport == crate::scenario::Reuseport::Steered {
            let flows = self.drivers[instance.first].core().flows();
            let listener = listener_for(self.drivers[instance.first].core(), to);
            let by_port = udplb_core::steer::by_port(
                listener.and_then(|l| flows.listener_affinity(l)).unwrap_or_default(),
            );
            let index = udplb_core::steer::worker_of(from, by_port, instance.workers as u32);
            return instance.first + index as usize;
        }
        let fold = |address: SocketAddr| {
            let ip = match address.ip().to_canonical() {
                IpAddr::V4(v4) => u64::from(u32::from(v4)),
                IpAddr::V6(v6) => (u128::from(v6) as u64) ^ ((u128::from(v6) >> 64) as u64),
            };
            ip.wrapping_mul(0x1_0000).wrapping_add(u64::from(address.port()))
        };
        let mut z = fold(from) ^ fold(to).rotate_left(29) ^ instance.secret;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        instance.first + ((z ^ (z >> 31)) % instance.workers as u64) as usize
    }

    /// Puts a packet on the network, which tells when (and whether) it arrives.
    fn send(&mut self, packet: Packet) {
        let host_of = |address: SocketAddr| {
            let ip = address.ip();
            if self.lb_ips.contains(&ip) || self.vips.contains(&address) {
                return Some("lb");
            }
            if let Some(backend) = self.index.backend_ip.get(&ip) {
                return Some(self.backends[*backend].spec.name.as_str());
            }
            self.index.client_ip.get(&ip).map(|c| self.clients[*c].spec.name.as_str())
        };
        // The hosts' names, borrowed: no allocation per packet.
        let (from, to) = (host_of(packet.from), host_of(packet.to));
        let transit = self.network.transit(self.now, &packet, from, to);
        match transit {
            Transit::Lost => self.record.lost += 1,
            Transit::TooBig { mtu } => {
                self.record.lost += 1;
                self.send(Packet::fragmentation_needed(&packet, mtu));
            }
            Transit::Arrives(first, second) => {
                if let Some(at) = second {
                    let copy = self.in_flight.put(packet.clone());
                    self.schedule(at, Event::Deliver(copy));
                }
                let packet = self.in_flight.put(packet);
                self.schedule(first, Event::Deliver(packet));
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
        // The instance whose upstream (or probe) address `ip` is, and among its workers the
        // one whose socket has `port`.
        let owner = |ip: IpAddr, port: u16, probe: bool| {
            let instance = self.instances.iter().position(|i| {
                let platform = self.drivers[i.first].platform();
                if probe { platform.is_probe_ip(ip) } else { platform.is_upstream_ip(ip) }
            })?;
            let workers = self.instances[instance].worker_range();
            let worker = workers.clone().find(|w| {
                let platform = self.drivers[*w].platform();
                if probe {
                    platform.probes_by_port.contains_key(&port)
                } else {
                    platform.has_upstream_port(port)
                }
            });
            Some((instance, worker.unwrap_or(workers.start)))
        };
        if self.is_vip(to) {
            let instance = self.network.spread(packet.from, self.instances.len());
            if self.instances[instance].stopped {
                // The process has exited: nothing listens there any more.
                self.record.unserved += 1;
                return;
            }
            let worker = self.reuseport_pick(instance, packet.from, to);
            let Some(listener) = self.listener_at(worker, to) else { return };
            // As the shell reads it with IP_PKTINFO: the address the datagram was sent to.
            let local = Some(to.ip());
            let mut buffer = std::mem::take(&mut self.client_buffer);
            buffer.clear();
            buffer.resize(DATAGRAM_HEADROOM, 0);
            buffer.extend_from_slice(&packet.payload);
            let from = packet.from;
            let verdict = self.with_driver(worker, |driver, now| {
                let datagram = ClientDatagram {
                    listener,
                    client: from,
                    local,
                    buffer: &mut buffer,
                    headroom: DATAGRAM_HEADROOM,
                    truncated: false,
                };
                driver.client_datagram(now, datagram)
            });
            self.client_buffer = buffer;
            if let udplb_core::ClientVerdict::Forward { flow, .. } = verdict {
                let driver = &self.drivers[worker];
                let core = driver.core();
                // Its flow's backend: from the core while the flow lives, from the
                // upstream it was just sent on when the flow ended with it.
                let sent = driver.platform().last_upstream_send.filter(|(sent_on, _)| *sent_on == flow);
                let backend = core.flows().flow(flow).map(|f| f.backend).or(sent.map(|(_, id)| id));
                match backend {
                    Some(backend) => self.record.forwarded(self.now, core, backend, from),
                    None => self.record.violation(format!("{}: forwarded on {flow} to no backend", self.now)),
                }
                if let Err(violation) = self.affinity.check(self.now, worker, core, listener, from, flow) {
                    self.record.violation(violation);
                }
            }
        } else if let Some((instance, worker)) = owner(to.ip(), to.port(), false) {
            if self.instances[instance].stopped {
                return;
            }
            // As the shell's event loop reads a shared upstream socket: a datagram belongs to
            // the flow bound at (socket, source address); from an address with no flow on that
            // socket (a late reply to a flow that ended, a reply from another port, a
            // stranger) it is counted and handed to the core as a stray.
            match self.drivers[worker].platform().arrival(to.port(), packet.from) {
                Arrival::Flow(flow) => {
                    let backend = self.drivers[worker].core().flows().flow(flow).map(|f| f.backend);
                    let verdict = self.with_driver(worker, |driver, now| {
                        driver.backend_datagram(now, flow, &packet.payload, false)
                    });
                    if let (udplb_core::BackendVerdict::Return { client, .. }, Some(backend)) =
                        (verdict, backend)
                    {
                        let core = self.drivers[worker].core();
                        self.record.returned(self.now, core, backend, client);
                    }
                }
                Arrival::Stray => {
                    self.record.platform.stray_datagrams += 1;
                    let stray = Input::StrayReply { from: packet.from, bytes: packet.payload.len() };
                    let _ = self.with_driver(worker, |driver, now| driver.handle(now, stray));
                }
                Arrival::Filtered => {}
            }
        } else if let Some((instance, worker)) = owner(to.ip(), to.port(), true) {
            if self.instances[instance].stopped {
                return;
            }
            if let Some((probe, _)) = self.drivers[worker].platform_mut().probes_by_port.remove(&to.port()) {
                let reply = packet.payload.clone();
                if self.detailed {
                    self.trace.line(self.now, format!("probe {probe:?} on worker {worker}: udp reply"));
                }
                let _ = self.with_driver(worker, |driver, now| {
                    driver.handle(now, Input::ProbeReply { probe, reply })
                });
            }
        } else if let Some(index) = self.index.backend_at.get(&to).copied() {
            self.backend_receives(index, packet);
        } else if let Some(index) = self.index.client_ip.get(&to.ip()).copied() {
            self.check_reply_owner(index, &packet.payload);
            if !self.check_reply_source(index, packet.from) {
                return;
            }
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
        let payload = self.clients[index].tag_of(payload);
        let Some(end) = payload.iter().position(|b| *b == b'#') else { return };
        let owner = &payload[..end];
        let receiver = &self.clients[index].spec.name;
        if owner != receiver.as_bytes() && self.clients.iter().any(|c| c.spec.name.as_bytes() == owner) {
            let owner = String::from_utf8_lossy(owner);
            self.record.violation(format!("{}: {receiver} received a reply meant for {owner}", self.now));
        }
    }

    /// A reply must come from where its client sent: a client with a connected socket (a
    /// stub resolver, a QUIC stack) never sees one from another address, and a balancer that
    /// sends one (a wildcard listener replying from an address the kernel picked) fails it.
    /// Returns whether the client takes it.
    fn check_reply_source(&mut self, index: usize, from: SocketAddr) -> bool {
        let Some(target) = self.client_target(index) else { return true };
        if from == target {
            return true;
        }
        let client = &self.clients[index].spec.name;
        self.record.violation(format!(
            "{}: {client} got a reply from {from}, not from {target} where it sent: a client with a \
             connected socket drops it",
            self.now
        ));
        false
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
                if platform.is_upstream_ip(sender.ip()) || platform.is_probe_ip(sender.ip()) {
                    platform.learn_path_mtu(packet.from.ip(), mtu, expires);
                }
            }
            return;
        }
        for worker in 0..self.drivers.len() {
            if self.stopped(worker) {
                continue;
            }
            let platform = self.drivers[worker].platform();
            if platform.is_upstream_ip(sender.ip()) {
                // The error names the datagram's destination: the flow bound at (socket,
                // destination) hears it, as the shell reads a pool socket's error queue.
                if let Arrival::Flow(flow) = platform.arrival(sender.port(), packet.from) {
                    let _ = self.with_driver(worker, |driver, now| {
                        driver.handle(now, Input::UpstreamError { flow, error: UpstreamError::Refused })
                    });
                }
            } else if platform.is_probe_ip(sender.ip())
                && let Some((probe, _)) =
                    self.drivers[worker].platform_mut().probes_by_port.remove(&sender.port())
            {
                let refused = ProbeResult::Fail(ProbeFailure::Refused);
                let _ = self.with_driver(worker, |driver, now| {
                    driver.handle(now, Input::ProbeResult { probe, result: refused })
                });
            }
        }
    }

    fn backend_receives(&mut self, index: usize, packet: Packet) {
        // What a PROXY v2 header may name, gathered only for a backend that checks headers:
        // each client's IP with where it sends; spoofed sources (198.18.0.0/15) with where
        // the floods that spoof them send.
        let checks = self.backends[index].spec.expect_proxy.is_some();
        let mut targets: Vec<(IpAddr, SocketAddr)> = Vec::new();
        if checks {
            for (client, host) in self.clients.iter().enumerate() {
                let Some(target) = self.client_target(client) else { continue };
                targets.push((host.spec.address, target));
                // A relaying upstream's client is named in the balancer's header too.
                if let ClientModel::RequestResponse { proxy_for: Some(client), .. } = host.spec.model {
                    targets.push((client.ip(), target));
                }
                if matches!(host.spec.model, ClientModel::Flood { one_host: false, .. }) {
                    targets.push((IpAddr::from([198, 18, 0, 0]), target));
                }
            }
        }
        let sends_to = |ip: IpAddr| {
            let spoofed = matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198);
            let key = if spoofed { IpAddr::from([198, 18, 0, 0]) } else { ip };
            let found: Vec<SocketAddr> = targets.iter().filter(|(i, _)| *i == key).map(|(_, t)| *t).collect();
            (!found.is_empty()).then_some(found)
        };
        let reaction = self.backends[index].receive(packet.from, &packet.payload, sends_to);
        if let Some(unknown) = self.backends[index].unknown_packet.take() {
            let issuer = crate::quic::issuer(self.backends.iter().map(|b| b.quic.as_ref()), &unknown);
            self.record.quic_unknown.push((self.now, index, issuer));
        }
        let address = self.backends[index].reply_source();
        match reaction {
            BackendReaction::Reply { payloads, delay } => {
                let spec = &self.backends[index].spec;
                let (jitter, late_copy) = (spec.delay_jitter, spec.late_copy);
                for payload in payloads {
                    // A draw only for a backend whose delay varies.
                    let delay = delay + uniform(&mut self.hosts_rng, jitter);
                    let packet = Packet::datagram(address, packet.from, payload);
                    if let Some(late) = late_copy {
                        let copy = self.in_flight.put(packet.clone());
                        self.schedule(self.now + delay + late.0, Event::Send(copy));
                    }
                    if delay.is_zero() {
                        self.send(packet);
                    } else {
                        let at = self.now + delay;
                        let packet = self.in_flight.put(packet);
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

    /// A TCP connect probe's SYN (attempt `attempt`) from worker `worker` to backend host
    /// `backend`, through the network both ways: the SYN and the answer (SYN-ACK or RST) are
    /// each partitioned, lost, delayed like any packet between the two hosts. A SYN or SYN-ACK
    /// lost is sent again by the kernel after its retransmission timeout (1 s, doubling); a RST
    /// lost is not, and the probe times out. Silence (a blackholed host) is left to the core's
    /// own timer, which turns it into a Timeout failure.
    fn tcp_syn(&mut self, worker: usize, probe: ProbeId, backend: usize, attempt: u32) {
        if self.stopped(worker) || attempt >= SYN_ATTEMPTS {
            return;
        }
        let host = &self.backends[backend];
        let probe_from =
            SocketAddr::new(self.drivers[worker].platform().source_for(host.spec.address, true), 0);
        let (name, address) = (host.spec.name.clone(), host.spec.address);
        let retransmit = self.now + SYN_RTO * 2u32.pow(attempt);
        let syn = Packet { tcp: true, ..Packet::datagram(probe_from, address, Vec::new()) };
        let arrived = match self.network.transit(self.now, &syn, Some("lb"), Some(&name)) {
            Transit::Arrives(first, _) => Some(first),
            Transit::Lost | Transit::TooBig { .. } => None,
        };
        let Some(arrived) = arrived else {
            self.schedule(
                retransmit,
                Event::TcpSyn(Box::new(TcpSyn { worker, probe, backend, attempt: attempt + 1 })),
            );
            return;
        };
        let result = match self.backends[backend].tcp_answer() {
            Some(true) => ProbeResult::Pass,
            Some(false) => ProbeResult::Fail(ProbeFailure::Refused),
            None => return,
        };
        // The answer leaves the backend when the SYN arrives.
        let answer = Packet { tcp: true, ..Packet::datagram(address, probe_from, Vec::new()) };
        match self.network.transit(arrived, &answer, Some(&name), Some("lb")) {
            Transit::Arrives(at, _) => {
                self.schedule(at, Event::TcpProbeAnswer(Box::new((worker, probe, result))));
            }
            Transit::Lost | Transit::TooBig { .. } => {
                if result == ProbeResult::Pass {
                    self.schedule(
                        retransmit,
                        Event::TcpSyn(Box::new(TcpSyn { worker, probe, backend, attempt: attempt + 1 })),
                    );
                }
            }
        }
    }

    fn client_sends(&mut self, index: usize) {
        let Some((from, payload)) = self.clients[index].next_request() else { return };
        if let Some(vip) = self.client_target(index) {
            self.send(Packet::datagram(from, vip, payload));
        }
        if self.clients[index].sent < self.clients[index].count() {
            let at = self.now + self.clients[index].interval();
            self.schedule(at, Event::ClientSends(index));
        }
    }

    /// Where client `index` sends: its listener's address, or on a wildcard listener the
    /// address it names (`to`).
    fn client_target(&self, index: usize) -> Option<SocketAddr> {
        let spec = &self.clients[index].spec;
        let address = self.instances[0].lb.listeners.get(spec.listener.as_str())?.address;
        Some(spec.to.map_or(address, |to| SocketAddr::new(to, address.port())))
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
                self.listener_command(&listener, AdminCommand::DrainListener)
            }
            Action::ResumeListener { listener } => {
                self.listener_command(&listener, AdminCommand::ResumeListener)
            }
            Action::Sigterm { instance } => {
                for index in 0..self.instances.len() {
                    if instance.is_none_or(|i| i == index) && !self.instances[index].stopping {
                        self.instances[index].stopping = true;
                        // As the shell's `stop`: every worker drains every listener.
                        self.for_each_worker(Some(index), |driver, now| {
                            let listeners: Vec<ListenerId> = driver.core().flows().listener_ids().collect();
                            for listener in listeners {
                                let _ =
                                    driver.handle(now, Input::Admin(AdminCommand::DrainListener(listener)));
                            }
                        });
                    }
                }
            }
            Action::Handover { instance } => {
                for index in 0..self.instances.len() {
                    let running = &self.instances[index];
                    if instance.is_some_and(|i| i != index) || running.stopped {
                        continue;
                    }
                    let workers = running.workers;
                    let config = if workers == 1 {
                        running.lb.clone()
                    } else {
                        udplb_core::config::worker_config(
                            &running.lb,
                            workers as u32,
                            running.lb.process.max_flows(),
                        )
                    };
                    for worker in running.worker_range() {
                        if let Err(error) = self.drivers[worker].hand_over(&config) {
                            self.trace.line(self.now, format!("handover refused: {error}"));
                        }
                    }
                }
            }
            Action::SetBackend(change) => {
                match self.backends.iter_mut().find(|b| b.spec.name == change.backend) {
                    Some(host) => host.change(&change),
                    None => {
                        self.record.violation(format!("timeline names unknown backend {:?}", change.backend))
                    }
                }
            }
            Action::Rehash => self.network.rehash(),
            Action::Rebind { client } => match self.clients.iter_mut().find(|c| c.spec.name == client) {
                Some(host) => host.rebind(),
                None => self.record.violation(format!("timeline names unknown client {client:?}")),
            },
            Action::Backend { backend, command } => self.backend_command(&backend, command.0),
            Action::Reload { lb, instance, rejected: expected } => {
                self.reload(index, &lb, instance, expected)
            }
        }
    }

    /// An operator command on a backend, on every running instance, by the backend's name in
    /// each (instances may number their backends differently). As the shell does, a command
    /// goes to the leader, whose new state reaches the followers; a weight is every worker's
    /// to set.
    fn backend_command(&mut self, name: &str, command: BackendCommand) {
        let mut found = false;
        for worker in 0..self.drivers.len() {
            let instance = &self.instances[self.instance_of[worker]];
            let is_leader = worker == instance.first;
            if instance.stopped || !(is_leader || matches!(command, BackendCommand::Weight(_))) {
                continue;
            }
            let flows = self.drivers[worker].core().flows();
            let Some(id) = flows.backend_ids().find(|b| flows.backend(*b).map(|(n, _)| n) == Some(name))
            else {
                continue;
            };
            found = true;
            let refused = self.with_driver(worker, |driver, now| {
                driver.handle(now, Input::Backend { backend: id, command })
            });
            if let Err(error) = refused {
                self.record.violation(format!("backend command refused: {error}"));
            }
        }
        if !found {
            self.record.violation(format!("no backend {name:?}"));
        }
    }

    /// A listener command on every worker of every running instance, by the listener's name.
    fn listener_command(&mut self, name: &str, command: fn(ListenerId) -> AdminCommand) {
        let mut found = false;
        for worker in 0..self.drivers.len() {
            if self.stopped(worker) {
                continue;
            }
            let Some(id) = self.drivers[worker].core().flows().listener_id(name) else { continue };
            found = true;
            let _ = self.with_driver(worker, |driver, now| driver.handle(now, Input::Admin(command(id))));
        }
        if !found {
            self.record.violation(format!("no listener {name:?}"));
        }
    }

    /// Timeline entry `index` reloads every running instance (or `instance`) with `lb`, each
    /// worker with its share of the budgets. `expected`: the reload must be refused, with a
    /// message containing that text, and the running configuration kept.
    fn reload(&mut self, index: usize, lb: &Config, instance: Option<usize>, expected: Option<String>) {
        let mut refusals = Vec::new();
        let mut accepted = 0;
        for target in 0..self.instances.len() {
            let running = &self.instances[target];
            if instance.is_some_and(|i| i != target) || running.stopped {
                continue;
            }
            let workers = running.workers;
            let config = if workers == 1 {
                lb.clone()
            } else {
                udplb_core::config::worker_config(lb, workers as u32, lb.process.max_flows())
            };
            for worker in running.worker_range() {
                let before = self.drivers[worker].core().flows().stats().flows.clone();
                match self.with_driver(worker, |driver, now| driver.reload(now, &config)) {
                    Ok(_) => accepted += 1,
                    Err(errors) => {
                        let after = &self.drivers[worker].core().flows().stats().flows;
                        if *after != before {
                            self.record
                                .violation(format!("{}: a refused reload changed the flows", self.now));
                        }
                        refusals.push(udplb_core::config::render_errors(&errors));
                    }
                }
            }
            if accepted > 0 {
                self.instances[target].lb = lb.clone();
                self.instances[target].configured = self.now;
            }
        }
        match expected {
            Some(expected) => {
                let outcome = if accepted > 0 { None } else { refusals.first().cloned() };
                self.trace
                    .line(self.now, format!("reload refused: {}", outcome.as_deref().unwrap_or("ACCEPTED")));
                self.record.refused_reloads.push((index, expected, outcome));
            }
            None => {
                if let Some(errors) = refusals.first() {
                    self.record.violation(format!("reload rejected: {errors}"));
                }
            }
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
        Action::Reload { instance: None, rejected: None, .. } => "reload".into(),
        Action::Reload { instance, rejected, .. } => {
            let mut line = "reload".to_owned();
            if let Some(instance) = instance {
                line.push_str(&format!(" instance {instance}"));
            }
            if rejected.is_some() {
                line.push_str(" (to be refused)");
            }
            line
        }
        Action::Sigterm { instance: None } => "SIGTERM".into(),
        Action::Handover { instance: None } => "restart with handover".into(),
        Action::Handover { instance: Some(instance) } => format!("restart instance {instance} with handover"),
        Action::Sigterm { instance: Some(instance) } => format!("SIGTERM to instance {instance}"),
        Action::ResumeListener { listener } => format!("resume listener {listener}"),
        Action::SetBackend(change) => format!("{} changes how it answers", change.backend),
        Action::Rehash => "ecmp rehash".into(),
        Action::Rebind { client } => format!("NAT rebinds {client}"),
    }
}

/// A uniform draw in `0..=up_to`; no draw at all for zero.
fn uniform(rng: &mut ChaCha8Rng, up_to: std::time::Duration) -> std::time::Duration {
    let nanos = u64::try_from(up_to.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_nanos(rng.next_u64() % (nanos.saturating_add(1)))
    }
}

/// The listener of `core` that gets datagrams sent to `address` (see `World::listener_at`).
fn listener_for(core: &Balancer, address: SocketAddr) -> Option<ListenerId> {
    let flows = core.flows();
    let at = |l: &ListenerId| flows.listener(*l).map(|(_, a)| a);
    flows.listener_ids().find(|l| at(l) == Some(address)).or_else(|| {
        flows.listener_ids().find(|l| {
            at(l).is_some_and(|a| {
                a.port() == address.port()
                    && a.ip().is_unspecified()
                    && (a.is_ipv6() || address.ip().to_canonical().is_ipv4())
            })
        })
    })
}

/// Every worker's listener addresses, and the addresses clients of wildcard listeners send
/// to (each a VIP of its own).
fn vips(drivers: &[Driver<SimPlatform>], clients: &[ClientHost]) -> Vec<SocketAddr> {
    let listeners: Vec<(String, SocketAddr)> = drivers
        .iter()
        .flat_map(|driver| {
            let flows = driver.core().flows();
            flows.listener_ids().filter_map(move |l| flows.listener(l).map(|(n, a)| (n.to_owned(), a)))
        })
        .collect();
    let targets = clients.iter().filter_map(|client| {
        let to = client.spec.to?;
        let (_, address) = listeners.iter().find(|(name, _)| name == client.spec.listener.as_str())?;
        Some(SocketAddr::new(to, address.port()))
    });
    let mut vips: Vec<SocketAddr> = listeners.iter().map(|(_, a)| *a).chain(targets).collect();
    vips.sort();
    vips.dedup();
    vips
}
