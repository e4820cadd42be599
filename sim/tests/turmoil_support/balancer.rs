//! The balancer host on turmoil: the core's own driver, on turmoil sockets.
//!
//! One task owns the driver. Every socket has a small reader task that turns what arrives into
//! an [`Input`] on one channel, so the driver sees one input at a time, in arrival order, and
//! its timer is a sleep until [`Driver::next_deadline`]. After each driver call the work the
//! platform buffered is carried out on turmoil's sockets, in order.
//!
//! Turmoil has no ICMP, so the harness stands in for it ([`IcmpStandIn`]): a datagram that
//! reaches a closed backend port earns a refusal, which the balancer sees as the socket error
//! a real kernel would report (`UpstreamError::Refused` on an upstream, `ProbeFailure::Refused`
//! on a UDP probe). TCP needs no stand-in: turmoil refuses a connect to a port nobody listens
//! on, and the probe reports that as `Refused`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, spawn_local};
use tokio::time::{sleep_until, timeout_at};
use turmoil::net::{TcpStream, UdpSocket};
use udplb_core::balancer::Output;
use udplb_core::driver::Driver;
use udplb_core::health::{HealthEvent, ProbeFailure, ProbeKind, ProbeRequest};
use udplb_core::{
    AdminCommand, BackendCommand, BackendId, DATAGRAM_HEADROOM, FlowId, Input as CoreInput, Instant,
    ListenerId, ProbeId, ProbeResult, UpstreamError,
};
use udplb_sim::scenario::Action;

use super::icmp::{IcmpStandIn, Refused};
use super::platform::{SocketWork, TurmoilPlatform};
use super::{Record, any_address};

/// Largest datagram a socket reads.
const DATAGRAM_MAX: usize = 65_535;
/// Core checks (`check_invariants`, one socket per live flow) every this many inputs.
const CHECK_EVERY: u64 = 512;
/// Loop turns allowed without simulated time moving: more means the loop spins.
const SPINS_MAX: u32 = 100_000;

/// What the balancer host and the test share.
pub struct Shared {
    pub driver: RefCell<Driver<TurmoilPlatform>>,
    pub record: RefCell<Record>,
    /// Backend UDP ports (by address) that are closed: their host answers with ICMP.
    pub closed: RefCell<BTreeSet<SocketAddr>>,
    /// Operator actions from the timeline, taken by the balancer host when it starts.
    pub operator: RefCell<Option<UnboundedReceiver<Action>>>,
}

/// Something that arrived for the balancer.
#[derive(Debug)]
enum Input {
    Client { listener: ListenerId, from: SocketAddr, datagram: Vec<u8> },
    Backend { upstream: FlowId, datagram: Vec<u8> },
    ProbeReply { probe: ProbeId, reply: Vec<u8> },
    ProbeResult { probe: ProbeId, result: ProbeResult },
}

/// An open upstream socket and the task reading it.
struct UpstreamSocket {
    socket: Rc<UdpSocket>,
    backend: SocketAddr,
    reader: JoinHandle<()>,
}

struct BalancerHost {
    shared: Rc<Shared>,
    sender: UnboundedSender<Input>,
    listeners: BTreeMap<ListenerId, Rc<UdpSocket>>,
    upstreams: BTreeMap<FlowId, UpstreamSocket>,
    icmp: IcmpStandIn,
    /// Fail-open decisions so far, to tell a fail-open flow from a bug.
    fail_open_flows: u64,
    calls: u64,
}

/// The balancer host's software. It runs until turmoil stops stepping the simulation.
pub async fn run(shared: Rc<Shared>, icmp: IcmpStandIn) -> turmoil::Result {
    let operator = shared.operator.borrow_mut().take().ok_or("the balancer host started twice")?;
    let (sender, inputs) = unbounded_channel();
    let mut host = BalancerHost {
        shared,
        sender,
        listeners: BTreeMap::new(),
        upstreams: BTreeMap::new(),
        icmp,
        fail_open_flows: 0,
        calls: 0,
    };
    host.bind_listeners().await?;
    host.serve(inputs, operator).await
}

/// Turmoil's simulated time as the core's clock.
fn core_now() -> Instant {
    let elapsed = turmoil::sim_elapsed().expect("called inside the simulation");
    Instant::from_nanos(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// Sleeps until the core's `deadline` (forever when there is none).
async fn sleep_until_core(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => {
            let wait = deadline.saturating_duration_since(core_now());
            sleep_until(tokio::time::Instant::now() + wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Reads `socket` until it closes, handing each datagram to the balancer as `wrap` makes it.
async fn read_into(
    socket: Rc<UdpSocket>,
    sender: UnboundedSender<Input>,
    wrap: impl Fn(Vec<u8>, SocketAddr) -> Input,
) {
    let mut buffer = vec![0u8; DATAGRAM_MAX];
    while let Ok((length, from)) = socket.recv_from(&mut buffer).await {
        if sender.send(wrap(buffer[..length].to_vec(), from)).is_err() {
            return;
        }
    }
}

impl BalancerHost {
    async fn bind_listeners(&mut self) -> turmoil::Result {
        let listeners: Vec<(ListenerId, SocketAddr)> = {
            let driver = self.shared.driver.borrow();
            let flows = driver.core().flows();
            flows
                .listener_ids()
                .filter_map(|id| flows.listener(id).map(|(_, address)| (id, address)))
                .collect()
        };
        for (listener, address) in listeners {
            let socket = Rc::new(UdpSocket::bind(any_address(address.port())).await?);
            let wrap = move |datagram, from| Input::Client { listener, from, datagram };
            spawn_local(read_into(socket.clone(), self.sender.clone(), wrap));
            self.listeners.insert(listener, socket);
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        mut inputs: UnboundedReceiver<Input>,
        mut operator: UnboundedReceiver<Action>,
    ) -> turmoil::Result {
        let mut last_turn = Instant::MAX;
        let mut spins = 0u32;
        // Bounded by simulated time: turmoil stops stepping the host at the scenario's end.
        loop {
            let now = core_now();
            spins = if now == last_turn { spins + 1 } else { 0 };
            last_turn = now;
            if spins > SPINS_MAX {
                return Err(format!("the balancer loop spins at {now}").into());
            }
            self.fire_due(now).await?;
            let wake = {
                let deadline = self.shared.driver.borrow().next_deadline();
                let refusal = self.icmp.next_due();
                deadline.into_iter().chain(refusal).min()
            };
            tokio::select! {
                // Biased, so that the order of handling never depends on tokio's random
                // branch choice: the run is a function of the seed.
                biased;
                action = operator.recv() => {
                    if let Some(action) = action {
                        self.operator_action(action);
                        self.flush().await?;
                    }
                }
                input = inputs.recv() => {
                    let input = input.ok_or("every input sender is gone")?;
                    self.handle(input);
                    self.flush().await?;
                }
                () = sleep_until_core(wake) => {}
            }
        }
    }

    /// Delivers the refusals that are due and, if its deadline has come, fires the driver's timer.
    async fn fire_due(&mut self, now: Instant) -> turmoil::Result {
        loop {
            let refused = {
                let closed = self.shared.closed.borrow();
                self.icmp.poll(now, &closed)
            };
            match refused {
                Some(Refused::Upstream { upstream }) => {
                    // The socket may have closed meanwhile; then the error has nowhere to go.
                    let open = self.shared.driver.borrow().platform().upstreams.contains(&upstream);
                    if open {
                        let input =
                            CoreInput::UpstreamError { flow: upstream, error: UpstreamError::Refused };
                        let _ = self.call(|driver, now| driver.handle(now, input));
                    }
                }
                Some(Refused::Probe { probe }) => {
                    // A probe the monitor no longer waits for ignores it, as the driver allows.
                    let result = ProbeResult::Fail(ProbeFailure::Refused);
                    let _ =
                        self.call(|driver, now| driver.handle(now, CoreInput::ProbeResult { probe, result }));
                }
                None => break,
            }
        }
        self.shared.record.borrow_mut().icmp_synthesized = self.icmp.synthesized;
        let due = self.shared.driver.borrow().next_deadline().is_some_and(|deadline| deadline <= now);
        if due {
            let _ = self.call(|driver, now| driver.handle(now, CoreInput::Timeout));
        }
        self.flush().await
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Client { listener, from, datagram } => {
                let mut buffer = vec![0u8; DATAGRAM_HEADROOM + datagram.len()];
                buffer[DATAGRAM_HEADROOM..].copy_from_slice(&datagram);
                self.call(|driver, now| {
                    let datagram = udplb_core::ClientDatagram {
                        listener,
                        client: from,
                        local: None,
                        buffer: &mut buffer,
                        headroom: DATAGRAM_HEADROOM,
                        truncated: false,
                    };
                    driver.client_datagram(now, datagram);
                });
            }
            Input::Backend { upstream, datagram } => {
                // A datagram read just before its upstream closed finds no flow: dropped, as
                // a closed socket would.
                let open = self.shared.driver.borrow().platform().upstreams.contains(&upstream);
                if open {
                    self.call(|driver, now| {
                        driver.backend_datagram(now, upstream, &datagram, false);
                    });
                }
            }
            Input::ProbeReply { probe, reply } => {
                let _ = self.call(|driver, now| driver.handle(now, CoreInput::ProbeReply { probe, reply }));
            }
            Input::ProbeResult { probe, result } => {
                let _ = self.call(|driver, now| driver.handle(now, CoreInput::ProbeResult { probe, result }));
            }
        }
    }

    fn operator_action(&mut self, action: Action) {
        match action {
            Action::DrainListener { listener } => {
                let id = self.shared.driver.borrow().core().flows().listener_id(&listener);
                match id {
                    Some(id) => {
                        if let Err(error) = self.call(|driver, now| {
                            driver.handle(now, CoreInput::Admin(AdminCommand::DrainListener(id)))
                        }) {
                            self.violation(format!("drain of {listener} refused: {error}"));
                        }
                    }
                    None => self.violation(format!("no listener {listener:?}")),
                }
            }
            Action::Backend { backend, command } => self.backend_command(&backend, command.0),
            other => self.violation(format!("the balancer cannot carry out `{}`", other.name())),
        }
    }

    fn backend_command(&mut self, name: &str, command: BackendCommand) {
        let id = {
            let driver = self.shared.driver.borrow();
            let flows = driver.core().flows();
            flows.backend_ids().find(|b| flows.backend(*b).map(|(n, _)| n) == Some(name))
        };
        match id {
            Some(id) => {
                let input = CoreInput::Backend { backend: id, command };
                if let Err(error) = self.call(|driver, now| driver.handle(now, input)) {
                    self.violation(format!("backend command refused: {error}"));
                }
            }
            None => self.violation(format!("no backend {name:?}")),
        }
    }

    /// Calls the driver at turmoil's current time and records what the core reported.
    fn call<T>(&mut self, call: impl FnOnce(&mut Driver<TurmoilPlatform>, Instant) -> T) -> T {
        let now = core_now();
        let mut driver = self.shared.driver.borrow_mut();
        let result = call(&mut driver, now);
        let opened = std::mem::take(&mut driver.platform_mut().opened);
        let notices = std::mem::take(&mut driver.platform_mut().notices);
        let fail_open_flows = fail_open_total(&driver);
        let failed_open = fail_open_flows > self.fail_open_flows;
        self.fail_open_flows = fail_open_flows;
        let mut record = self.shared.record.borrow_mut();
        for backend in opened {
            record_opened(&mut record, &driver, now, backend, failed_open);
        }
        for notice in &notices {
            record_notice(&mut record, &driver, now, notice);
        }
        self.calls += 1;
        if self.calls % CHECK_EVERY == 0 {
            if let Err(violation) = driver.core().check_invariants() {
                record.violation(format!("{now}: {violation}"));
            }
            let live_flows = driver.core().flows().stats().flows.active;
            let open = driver.platform().upstreams.len() as u64;
            if live_flows != open {
                record.violation(format!("{now}: {live_flows} live flows but {open} upstreams"));
            }
        }
        result
    }

    /// Carries out the socket work of the last driver calls, in order.
    async fn flush(&mut self) -> turmoil::Result {
        let work = std::mem::take(&mut self.shared.driver.borrow_mut().platform_mut().work);
        for item in work {
            match item {
                SocketWork::Open { upstream, backend } => {
                    let socket = UdpSocket::bind(any_address(0)).await?;
                    // Connected, as the shell's upstreams are: only the backend's replies get in.
                    socket.connect(backend).await?;
                    let socket = Rc::new(socket);
                    let wrap = move |datagram, _from| Input::Backend { upstream, datagram };
                    let reader = spawn_local(read_into(socket.clone(), self.sender.clone(), wrap));
                    self.upstreams.insert(upstream, UpstreamSocket { socket, backend, reader });
                }
                SocketWork::Close { upstream } => {
                    if let Some(closed) = self.upstreams.remove(&upstream) {
                        closed.reader.abort();
                    }
                }
                SocketWork::SendUpstream { upstream, datagram } => {
                    let Some(open) = self.upstreams.get(&upstream) else {
                        self.violation(format!("send on upstream {upstream:?}, which has no socket"));
                        continue;
                    };
                    let backend = open.backend;
                    open.socket.send_to(&datagram, backend).await?;
                    self.icmp.sent(core_now(), backend, Refused::Upstream { upstream });
                }
                SocketWork::SendToClient { listener, client, datagram } => {
                    if let Some(socket) = self.listeners.get(&listener) {
                        socket.send_to(&datagram, client).await?;
                    }
                }
                SocketWork::Probe(request) => self.start_probe(request).await?,
            }
        }
        let open = self.upstreams.len();
        let believed = self.shared.driver.borrow().platform().upstreams.len();
        if open != believed {
            self.violation(format!("{open} upstream sockets but {believed} open upstreams"));
        }
        Ok(())
    }

    async fn start_probe(&mut self, request: ProbeRequest) -> turmoil::Result {
        let ProbeRequest { probe, deadline, kind, .. } = request;
        // Past its deadline the monitor has given up on the probe; its task stops then.
        let give_up = tokio::time::Instant::now() + deadline.saturating_duration_since(core_now());
        let sender = self.sender.clone();
        match kind {
            ProbeKind::Tcp { address } => {
                spawn_local(async move {
                    let result = match timeout_at(give_up, TcpStream::connect(address)).await {
                        Ok(Ok(_stream)) => ProbeResult::Pass,
                        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                            ProbeResult::Fail(ProbeFailure::Refused)
                        }
                        Ok(Err(_)) => ProbeResult::Fail(ProbeFailure::Error),
                        // Silence: the monitor's own timer turns it into a Timeout failure.
                        Err(_) => return,
                    };
                    let _ = sender.send(Input::ProbeResult { probe, result });
                });
            }
            ProbeKind::Udp { address, datagram } => {
                let socket = UdpSocket::bind(any_address(0)).await?;
                socket.send_to(&datagram, address).await?;
                self.icmp.sent(core_now(), address, Refused::Probe { probe });
                spawn_local(async move {
                    let mut buffer = vec![0u8; DATAGRAM_MAX];
                    if let Ok(Ok((length, _))) = timeout_at(give_up, socket.recv_from(&mut buffer)).await {
                        let _ = sender.send(Input::ProbeReply { probe, reply: buffer[..length].to_vec() });
                    }
                });
            }
        }
        Ok(())
    }

    fn violation(&mut self, what: String) {
        self.shared.record.borrow_mut().violation(what);
    }
}

fn fail_open_total(driver: &Driver<TurmoilPlatform>) -> u64 {
    driver.core().flows().stats().listeners.iter().map(|l| l.fail_open_flows).sum()
}

/// Records a new flow the way the simulator does (sim/src/record.rs, sim/src/invariants.rs).
fn record_opened(
    record: &mut Record,
    driver: &Driver<TurmoilPlatform>,
    now: Instant,
    backend: BackendId,
    failed_open: bool,
) {
    let core = driver.core();
    let name = core.flows().backend(backend).map_or("?", |(name, _)| name).to_owned();
    if !core.monitor().is_eligible(backend) && !failed_open {
        record.violation(format!("{now}: new flow to ineligible backend {name}"));
    }
    record.new_flows.push((now, name));
}

/// Records an output the way the simulator does (sim/src/record.rs, sim/src/invariants.rs), so that both runs are judged on the
/// same facts: health transitions and named events (new flows: `record_opened`).
fn record_notice(record: &mut Record, driver: &Driver<TurmoilPlatform>, now: Instant, output: &Output) {
    let core = driver.core();
    let backend_name = |backend| core.flows().backend(backend).map_or("?", |(name, _)| name).to_owned();
    if let Output::Health(HealthEvent::Transition { backend, to, .. }) = output {
        record.health.push((now, backend_name(*backend), *to));
    }
    if let Some(event) = output.event_name() {
        record.count(event);
    }
}
