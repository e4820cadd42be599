//! `datagram_path`: an arbitrary configuration and an arbitrary sequence of every input the
//! composed core takes, with the core's promises checked after every step.
//!
//! The driver plays a shell that follows the calling convention (it confirms or refuses every
//! staged open before the next input, drains outputs after every call and keeps time monotone)
//! but is otherwise careless: it fails upstream opens, sends datagrams to listeners that never
//! existed, reports errors for flows that ended long ago, answers probes nobody sent, and
//! reloads to configurations that may be refused. The core must
//! take all of it without panicking, keep its invariants and keep its books balanced.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};

use super::config_spec::{ConfigSpec, PROBE_REPLIES};
use crate::balancer::Output;
use crate::health::ProbeFailure;
use crate::outcome::DropReason;
use crate::proxy_v2::{Header, MAX_PROXY_HEADER_LEN, TlvKind, TlvOptions, write_proxy_header};
use crate::{
    AdminCommand, BackendCommand, BackendId, BackendVerdict, Balancer, ClientDatagram, ClientVerdict,
    DATAGRAM_HEADROOM, FlowId, Incoming, Input, Instant, Keys, ListenerId, ProbeId, ProbeResult,
    UpstreamError, flow,
};

/// Steps per run: long enough for flows to open, retire, time out and be reloaded away,
/// short enough that one run costs well under a millisecond.
const MAX_STEPS: usize = 256;
/// Largest datagram payload sent in either direction. Listeners' `max_datagram_size` is
/// drawn below this (see `config_spec`), so oversized datagrams are reachable.
const MAX_PAYLOAD_BYTES: usize = 2048;
/// Flow and probe ids the driver remembers (the most recent ones), to name in later steps.
const REMEMBERED_IDS: usize = 64;
/// Backend ids are process-wide and never reused, so reloads push them up; this range
/// covers the ones a run creates plus a few that never exist.
const BACKEND_IDS: u8 = 24;

/// One input to the core. Fields are small so that the input is spent on sequences rather
/// than on values; variants are drawn with the weights in `Step::arbitrary`.
#[derive(Debug)]
enum Step {
    /// Time passes and the timer fires.
    Advance {
        millis: u16,
    },
    /// Time passes without a timer call: the next input arrives after a deadline.
    Sleep {
        millis: u16,
    },
    /// The timer fires at the deadline the core asked for.
    NextDeadline,
    Client(ClientStep),
    Backend {
        flow: IdPick,
        size: u16,
        fill: u8,
        truncated: u8,
    },
    UpstreamError {
        flow: IdPick,
        error: ErrorPick,
    },
    /// The next upstream open fails (the pick is unused: kept so committed inputs decode).
    OpenFailed {
        _pick: IdPick,
    },
    ReturnFailed {
        listener: u8,
        bytes: u16,
    },
    ProbeResult {
        probe: IdPick,
        result: ResultPick,
    },
    ProbeReply {
        probe: IdPick,
        reply: u8,
    },
    Admin {
        command: u8,
        listener: u8,
        flow: IdPick,
    },
    BackendCommand {
        backend: u8,
        command: u8,
        weight: u8,
    },
    Reload(Box<ConfigSpec>),
}

impl<'a> Arbitrary<'a> for Step {
    /// Datagrams are most of what a load balancer sees, and only they create flows for the
    /// other inputs to act on, so they get 13 draws in 32; time 6; each other kind 1 or 2.
    fn arbitrary(input: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match input.int_in_range(0..=31u8)? {
            0..=7 => Step::Client(input.arbitrary()?),
            8..=12 => Step::Backend {
                flow: input.arbitrary()?,
                size: input.arbitrary()?,
                fill: input.arbitrary()?,
                truncated: input.arbitrary()?,
            },
            13..=15 => Step::Advance { millis: input.arbitrary()? },
            16 => Step::Sleep { millis: input.arbitrary()? },
            17 | 18 => Step::NextDeadline,
            19 => Step::UpstreamError { flow: input.arbitrary()?, error: input.arbitrary()? },
            20 => Step::OpenFailed { _pick: input.arbitrary()? },
            21 => Step::ReturnFailed { listener: input.arbitrary()?, bytes: input.arbitrary()? },
            22 | 23 => Step::ProbeResult { probe: input.arbitrary()?, result: input.arbitrary()? },
            24 | 25 => Step::ProbeReply { probe: input.arbitrary()?, reply: input.arbitrary()? },
            26 | 27 => Step::Admin {
                command: input.arbitrary()?,
                listener: input.arbitrary()?,
                flow: input.arbitrary()?,
            },
            28 | 29 => Step::BackendCommand {
                backend: input.arbitrary()?,
                command: input.arbitrary()?,
                weight: input.arbitrary()?,
            },
            _ => Step::Reload(input.arbitrary()?),
        })
    }
}

#[derive(Arbitrary, Debug)]
struct ClientStep {
    listener: u8,
    client: u8,
    /// The address the datagram was sent to, as the shell reads it (IP_PKTINFO).
    local: u8,
    size: u16,
    fill: u8,
    truncated: u8,
    headroom: u8,
}

/// Which flow or probe a step names: one the core handed out (possibly ended since), a live
/// one (for probes, the same as `Remembered`), or a made-up one.
#[derive(Arbitrary, Debug)]
enum IdPick {
    Newest,
    Live(u8),
    Remembered(u8),
    MadeUp { slot: u8, serial: u16 },
}

#[derive(Arbitrary, Debug)]
enum ErrorPick {
    Refused,
    Unreachable,
    SendFailed,
}

#[derive(Arbitrary, Debug)]
enum ResultPick {
    Pass,
    Refused,
    Timeout,
    Mismatch,
    Error,
}

/// Runs the configuration and steps that `data` describes; panics when the core breaks a
/// promise: a panic of its own, an invariant violation, unbalanced books (for every listener
/// and direction, received = passed + Σ drops), a deadline not after `now` once
/// `handle_timeout(now)` returned, a verdict that contradicts the core's own state, or a
/// refused reload that changed something.
pub fn datagram_path(data: &[u8]) {
    run(data);
}

/// The body of [`datagram_path`]; returns how many steps the input held (0 when it ended
/// before or within the configuration, or the configuration was refused).
fn run(data: &[u8]) -> usize {
    let mut input = Unstructured::new(data);
    let (Ok(seed), Ok(spec)) = (input.arbitrary::<u64>(), ConfigSpec::arbitrary(&mut input)) else {
        return 0;
    };
    let config = spec.to_config();
    let keys = Keys::from_seed(seed);
    if config.validate().is_err() {
        assert!(Balancer::new(&config, keys).is_err(), "an invalid configuration was accepted");
        return 0;
    }
    let core = Balancer::new(&config, keys).expect("a validated configuration builds");
    let mut run =
        Run { core, now: Instant::ZERO, flows: Vec::new(), probes: Vec::new(), fail_next_open: false };
    run.check(false);
    let mut steps = 0;
    while steps < MAX_STEPS && !input.is_empty() {
        let Ok(step) = Step::arbitrary(&mut input) else { break };
        run.step(step);
        steps += 1;
    }
    steps
}

struct Run {
    core: Balancer,
    now: Instant,
    /// Flow ids seen in verdicts and outputs, newest last.
    flows: Vec<FlowId>,
    /// Probe ids the core asked for, newest last.
    probes: Vec<ProbeId>,
    /// The next staged open is refused.
    fail_next_open: bool,
}

impl Run {
    fn step(&mut self, step: Step) {
        let mut timer_fired = false;
        match step {
            Step::Advance { millis } => {
                self.now = self.now + time_step(millis);
                let _ = self.core.handle(self.now, Input::Timeout);
                timer_fired = true;
            }
            Step::Sleep { millis } => self.now = self.now + time_step(millis),
            Step::NextDeadline => {
                if let Some(deadline) = self.core.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                let _ = self.core.handle(self.now, Input::Timeout);
                timer_fired = true;
            }
            Step::Client(client) => self.client_datagram(&client),
            Step::Backend { flow, size, fill, truncated } => {
                let flow = self.flow(&flow);
                self.backend_datagram(flow, usize::from(size), fill, truncated % 16 == 15);
            }
            Step::UpstreamError { flow, error } => {
                let error = match error {
                    ErrorPick::Refused => UpstreamError::Refused,
                    ErrorPick::Unreachable => UpstreamError::Unreachable,
                    ErrorPick::SendFailed => UpstreamError::SendFailed,
                };
                let flow = self.flow(&flow);
                let _ = self.core.handle(self.now, Input::UpstreamError { flow, error });
            }
            Step::OpenFailed { .. } => self.fail_next_open = true,
            Step::ReturnFailed { listener, bytes } => {
                let listener = self.listener(listener);
                let _ =
                    self.core.handle(self.now, Input::ReturnFailed { listener, bytes: usize::from(bytes) });
            }
            Step::ProbeResult { probe, result } => {
                let result = match result {
                    ResultPick::Pass => ProbeResult::Pass,
                    ResultPick::Refused => ProbeResult::Fail(ProbeFailure::Refused),
                    ResultPick::Timeout => ProbeResult::Fail(ProbeFailure::Timeout),
                    ResultPick::Mismatch => ProbeResult::Fail(ProbeFailure::Mismatch),
                    ResultPick::Error => ProbeResult::Fail(ProbeFailure::Error),
                };
                let probe = self.probe(&probe);
                let _ = self.core.handle(self.now, Input::ProbeResult { probe, result });
            }
            Step::ProbeReply { probe, reply } => {
                let reply: &[u8] = PROBE_REPLIES.get(usize::from(reply % 5)).copied().unwrap_or(b"nope");
                let (probe, reply) = (self.probe(&probe), reply.to_vec());
                let _ = self.core.handle(self.now, Input::ProbeReply { probe, reply });
            }
            Step::Admin { command, listener, flow } => {
                let command = match command % 4 {
                    0 => AdminCommand::DrainListener(self.listener(listener)),
                    1 => AdminCommand::ResumeListener(self.listener(listener)),
                    2 => AdminCommand::CloseFlow(self.flow(&flow)),
                    _ => AdminCommand::CloseAll,
                };
                // Refusals (unknown listener or flow, not draining) are answers, not failures.
                let _ = self.core.handle(self.now, Input::Admin(command));
            }
            Step::BackendCommand { backend, command, weight } => {
                let command = match command % 6 {
                    0 => BackendCommand::Pause,
                    1 => BackendCommand::Resume,
                    2 => BackendCommand::Enable,
                    3 => BackendCommand::Disable,
                    4 => BackendCommand::Drain,
                    // 255 is over `MAX_WEIGHT`, which the core must refuse.
                    _ => BackendCommand::Weight(if weight == 255 { 70_000 } else { u32::from(weight % 8) }),
                };
                let backend = self.backend(backend);
                let _ = self.core.handle(self.now, Input::Backend { backend, command });
            }
            Step::Reload(spec) => self.reload(&spec),
        }
        self.check(timer_fired);
    }

    fn client_datagram(&mut self, step: &ClientStep) {
        let listener = self.listener(step.listener);
        let client = client_address(step.client);
        let local = local_address(step.local);
        // Sometimes the sender is an upstream balancer relaying for another client: the
        // payload starts with a PROXY v2 header naming it (trusted ingress, `accept_proxy`).
        let relayed_for = (step.truncated & 0x40 != 0).then(|| client_address(step.client.wrapping_add(37)));
        let header = relayed_for.map(|named| {
            let unspecified: IpAddr =
                if named.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            let mut header = vec![0; MAX_PROXY_HEADER_LEN];
            let len = write_proxy_header(
                &mut header,
                named,
                SocketAddr::new(unspecified, 0),
                TlvOptions::default(),
            )
            .expect("a header fits its maximum length");
            header.truncate(len);
            header
        });
        let header_len = header.as_ref().map_or(0, Vec::len);
        let size = header_len + usize::from(step.size) % (MAX_PAYLOAD_BYTES + 1);
        // Mostly the headroom the shell reserves; rarely less, or more than the buffer.
        let (allocated, headroom) = match step.headroom {
            248..=254 => (usize::from(step.headroom - 248) * 9, usize::from(step.headroom - 248) * 9),
            255 => (DATAGRAM_HEADROOM, DATAGRAM_HEADROOM + size + 1),
            _ => (DATAGRAM_HEADROOM, DATAGRAM_HEADROOM),
        };
        let mut buffer = vec![0; allocated + size];
        buffer[allocated..].fill(step.fill);
        if let Some(header) = &header {
            buffer[allocated..allocated + header_len].copy_from_slice(header);
        }
        let verdict = self.core.handle_client_datagram(
            self.now,
            ClientDatagram {
                listener,
                client,
                local,
                buffer: &mut buffer,
                headroom,
                truncated: step.truncated % 16 == 15,
            },
        );
        let verdict = match verdict {
            ClientVerdict::Open(incoming) => {
                let prefix_len = incoming.prefix_len();
                assert!(
                    prefix_len <= headroom + incoming.skip(),
                    "a {prefix_len}-byte prefix does not fit {headroom} bytes"
                );
                let start = incoming.datagram_start(headroom);
                self.confirm(incoming, &buffer[start..])
            }
            verdict => verdict,
        };
        let ClientVerdict::Forward { flow, prefix_len, skip, closes } = verdict else { return };
        self.remember_flow(flow);
        assert_eq!(closes, self.core.flows().flow(flow).is_none(), "{flow}: `closes` is wrong");
        assert!(
            prefix_len <= headroom + skip,
            "a {prefix_len}-byte prefix does not fit {headroom} bytes of headroom"
        );
        // A trusted upstream's header is left out, and the client is the one it names;
        // anywhere else the header is payload like any other.
        let identity = match (skip, relayed_for) {
            (0, _) => client,
            (skip, Some(named)) => {
                assert_eq!(skip, header_len, "skipped {skip} bytes of a {header_len}-byte header");
                named
            }
            (skip, None) => panic!("{skip} bytes skipped of a datagram without a header"),
        };
        if skip == 0
            && let Some(header) = &header
        {
            assert!(buffer[headroom..headroom + header_len] == header[..], "the relayed header was modified");
        }
        assert!(
            buffer[headroom + header_len..].iter().all(|&byte| byte == step.fill),
            "the payload was modified"
        );
        if let Some(info) = self.core.flows().flow(flow) {
            assert_eq!(info.client.ip().to_canonical(), identity.ip().to_canonical(), "{flow}'s client");
        }
        let (_, address) = self.core.flows().listener(listener).expect("forwarded on a listener that exists");
        // A wildcard listener's flows are at the address the client used, when it is known.
        let vip = match local {
            Some(ip) if address.ip().is_unspecified() => SocketAddr::new(ip, address.port()),
            _ => address,
        };
        if let Some(info) = self.core.flows().flow(flow) {
            assert_eq!(info.local, vip, "{flow} is not at the address its client used");
        }
        if prefix_len > 0 {
            assert_proxy_header(&buffer[headroom + skip - prefix_len..], prefix_len, identity, vip, flow);
        }
    }

    /// Confirms a staged flow (or refuses it, if the step before said so), checking what the
    /// core promises about it.
    fn confirm(&mut self, incoming: Incoming, datagram: &[u8]) -> ClientVerdict {
        let flow = incoming.flow();
        let known = self.core.flows().backend(incoming.backend()).map(|(_, address)| address);
        assert_eq!(known, Some(incoming.address()), "an upstream opened towards the wrong address");
        assert!(self.core.flows().flow(flow).is_none(), "{flow} was booked before its upstream opened");
        if std::mem::take(&mut self.fail_next_open) {
            self.core.refuse(self.now, incoming);
            assert!(self.core.flows().flow(flow).is_none(), "{flow} exists though its open failed");
            return ClientVerdict::Drop(DropReason::UpstreamOpenFailed);
        }
        let verdict = self.core.accept(self.now, incoming, datagram);
        match verdict {
            ClientVerdict::Forward { flow: accepted, .. } => {
                assert_eq!(accepted, flow, "accepted under another id")
            }
            _ => panic!("a current incoming was not accepted: {verdict:?}"),
        }
        verdict
    }

    fn backend_datagram(&mut self, flow: FlowId, size: usize, fill: u8, truncated: bool) {
        let before = self.core.flows().flow(flow);
        let payload = vec![fill; size % (MAX_PAYLOAD_BYTES + 1)];
        match self.core.handle_backend_datagram(self.now, flow, &payload, truncated) {
            BackendVerdict::Return { listener, client, local } => {
                let before = before.expect("a datagram was returned on a flow that does not exist");
                // To the client, or to the trusted upstream it came through.
                assert_eq!(
                    (listener, client, local),
                    (before.listener, before.via.unwrap_or(before.client), before.local),
                    "returned to the wrong place, or from the wrong address"
                );
            }
            BackendVerdict::Drop(DropReason::UnknownFlow) => {
                assert!(before.is_none(), "a live flow was called unknown");
            }
            BackendVerdict::Drop(_) => {
                assert!(before.is_some(), "an unknown flow's datagram got a flow's verdict")
            }
        }
    }

    /// Applies another configuration: accepted exactly when it validates, and a refusal
    /// changes nothing (no output, same counters).
    fn reload(&mut self, spec: &ConfigSpec) {
        let config = spec.to_config();
        let valid = config.validate().is_ok();
        let stats = self.core.flows().stats().clone();
        let result = self.core.apply_config(self.now, &config);
        assert_eq!(result.is_ok(), valid, "reload result {result:?} disagrees with validate()");
        if result.is_err() {
            assert_eq!(self.core.poll_output(), None, "a refused reload produced output");
            assert_eq!(self.core.flows().stats(), &stats, "a refused reload changed the counters");
        }
    }

    /// Drains the outputs (as the shell must after every call), then checks every promise.
    fn check(&mut self, timer_fired: bool) {
        let mut closed = Vec::new();
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Flow(flow::Output::Resend { incoming, datagram }) => {
                    if let ClientVerdict::Forward { flow, .. } = self.confirm(incoming, &datagram) {
                        self.remember_flow(flow);
                    }
                }
                Output::Flow(flow::Output::CloseUpstream { flow, .. }) => closed.push(flow),
                Output::Flow(flow::Output::PassiveFailure { .. }) => {
                    panic!("a passive failure leaked out of the balancer (it is the monitor's input)")
                }
                Output::Probe(request) => {
                    assert!(request.deadline > self.now, "a probe started with its deadline already past");
                    remember(&mut self.probes, request.probe);
                }
                Output::Flow(_)
                | Output::Health(_)
                | Output::Frontend { .. }
                | Output::BackendState { .. } => {}
            }
        }
        for flow in closed {
            assert!(
                self.core.flows().flow(flow).is_none(),
                "{flow} is still alive after its upstream closed"
            );
        }
        if let Err(violation) = self.core.check_invariants() {
            panic!("invariant violated at {}: {violation}", self.now);
        }
        let stats = self.core.flows().stats();
        for (index, listener) in stats.listeners.iter().enumerate() {
            assert!(listener.client.is_conserved(), "listener#{index} client books: {:?}", listener.client);
            assert!(
                listener.backend.is_conserved(),
                "listener#{index} backend books: {:?}",
                listener.backend
            );
        }
        assert!(stats.unattributed.is_conserved(), "unattributed books: {:?}", stats.unattributed);
        if timer_fired && let Some(deadline) = self.core.poll_timeout() {
            assert!(deadline > self.now, "deadline {deadline} is not after handle_timeout({})", self.now);
        }
    }

    /// A listener id: mostly a live one (reloads remove listeners and number new ones, so
    /// after a few reloads most numbered ids are removed ones); one pick in eight, any
    /// numbered id; one in sixteen, an id never numbered.
    fn listener(&self, pick: u8) -> ListenerId {
        let numbered = self.core.flows().stats().listeners.len();
        let index = match pick {
            240.. => numbered + usize::from(pick % 4),
            208..=239 => usize::from(pick) % numbered.max(1),
            _ => {
                let live = self.core.flows().listener_ids().count();
                match self.core.flows().listener_ids().nth(usize::from(pick) % live.max(1)) {
                    Some(listener) => return listener,
                    None => numbered,
                }
            }
        };
        ListenerId(index as u32)
    }

    /// A backend id: mostly a live one; one pick in eight, any id in a small range (removed
    /// ones and ones never numbered included).
    fn backend(&self, pick: u8) -> BackendId {
        let live = self.core.flows().backend_ids().count();
        match self.core.flows().backend_ids().nth(usize::from(pick) % live.max(1)) {
            Some(backend) if pick < 224 => backend,
            _ => BackendId(u32::from(pick % BACKEND_IDS)),
        }
    }

    fn flow(&self, pick: &IdPick) -> FlowId {
        match *pick {
            IdPick::MadeUp { slot, serial } => {
                FlowId { slot: u32::from(slot % 8), serial: u64::from(serial) }
            }
            IdPick::Live(nth) => {
                let live = self.core.flows().flows().count();
                let flow = self.core.flows().flows().nth(usize::from(nth) % live.max(1));
                flow.map_or(FlowId { slot: 0, serial: 0 }, |flow| flow.flow)
            }
            _ => pick_remembered(&self.flows, pick).unwrap_or(FlowId { slot: 0, serial: 0 }),
        }
    }

    fn probe(&self, pick: &IdPick) -> ProbeId {
        match *pick {
            IdPick::MadeUp { serial, .. } => ProbeId(u64::from(serial)),
            _ => pick_remembered(&self.probes, pick).unwrap_or(ProbeId(0)),
        }
    }

    fn remember_flow(&mut self, flow: FlowId) {
        if self.flows.last() != Some(&flow) {
            remember(&mut self.flows, flow);
        }
    }
}

/// Mostly up to about two seconds, the scale of the generated timeouts and intervals, so
/// that flows and probes live across several steps; one step in sixteen, up to about 17
/// minutes, past every deadline.
fn time_step(millis: u16) -> Duration {
    let millis = if millis >= 0xF000 { u64::from(millis) * 16 } else { u64::from(millis % 2_048) };
    Duration::from_millis(millis)
}

fn pick_remembered<T: Copy>(ids: &[T], pick: &IdPick) -> Option<T> {
    match *pick {
        IdPick::Newest => ids.last().copied(),
        IdPick::Live(nth) | IdPick::Remembered(nth) => ids.get(usize::from(nth) % ids.len().max(1)).copied(),
        IdPick::MadeUp { .. } => None,
    }
}

/// Keeps the most recent `REMEMBERED_IDS` ids, so memory stays bounded however long a run.
fn remember<T>(ids: &mut Vec<T>, id: T) {
    if ids.len() == REMEMBERED_IDS {
        ids.remove(0);
    }
    ids.push(id);
}

/// Clients: four IPv4 hosts, two IPv6 hosts, the first IPv4 host again as an IPv4-mapped
/// IPv6 address (a dual-stack socket's view), and the broadcast address; eight ports each.
fn client_address(pick: u8) -> SocketAddr {
    let host = pick % 8;
    let ip = match host {
        0..=3 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, host + 1)),
        4 | 5 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, u16::from(host))),
        6 => IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        _ => IpAddr::V4(Ipv4Addr::BROADCAST),
    };
    SocketAddr::new(ip, 1000 + u16::from(pick >> 5))
}

/// Where a client's datagram was sent, as the shell would say: unknown (a listener bound to
/// one address, or a platform that did not read it), a listener's own address, or other
/// addresses of the host in both families.
fn local_address(pick: u8) -> Option<IpAddr> {
    match pick % 8 {
        0..=2 => None,
        3 => Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        4 => Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))),
        5 => Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))),
        6 => Some(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99))),
        _ => Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 9).to_ipv6_mapped())),
    }
}

/// The prefix the core wrote in front of a forwarded payload is one PPv2 header that names
/// the client and the VIP (canonicalised, as the encoder sends IPv4-mapped addresses as
/// IPv4) and, with UNIQUE_ID, 16 bytes ending with the flow's serial.
fn assert_proxy_header(bytes: &[u8], prefix_len: usize, client: SocketAddr, vip: SocketAddr, flow: FlowId) {
    let (header, consumed) = Header::parse(bytes).expect("the prefix is a valid PROXY v2 header");
    assert_eq!(consumed, prefix_len, "the header is not the whole prefix");
    let canonical = |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
    let (source, destination) = header.proxied_endpoints().expect("a PROXY header with addresses");
    assert_eq!((canonical(source), canonical(destination)), (canonical(client), canonical(vip)));
    if let Some(unique_id) = header.tlv(TlvKind::UniqueId) {
        assert_eq!(unique_id.len(), 16, "UNIQUE_ID is the worker's prefix and the serial");
        assert_eq!(
            unique_id[8..],
            flow.serial().to_be_bytes(),
            "UNIQUE_ID does not end with the flow's serial"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::MAX_STEPS;

    /// `ci/fuzz` runs this target with `-max_len=512` (`docs/fuzzing.md`, "Speed of
    /// `datagram_path`"). That is long enough only if an input of 512 bytes can still hold a
    /// whole run, `MAX_STEPS` steps, after its configuration: the committed corpus keeps one
    /// that does (found by a run at that limit), so the fuzzer starts from a full history and
    /// this test fails if the step encoding ever grows past what 512 bytes can hold.
    #[test]
    fn an_input_of_max_len_holds_a_whole_run() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/datagram_path");
        let mut longest = 0;
        for entry in std::fs::read_dir(&corpus).expect("the committed corpus") {
            let data = std::fs::read(entry.expect("an entry").path()).expect("an input");
            longest = longest.max(super::run(&data[..data.len().min(512)]));
        }
        assert_eq!(longest, MAX_STEPS, "no committed input holds a whole run in 512 bytes");
    }
}
