//! Client and backend hosts: small state machines that turn datagrams into datagrams.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use udplb_core::proxy_v2::{Command, Header};

use crate::quic::{QuicAnswer, QuicClient, QuicServer};
use crate::scenario::{BackendChange, BackendModel, BackendSpec, ClientModel, ClientSpec, ProxyExpectation};

/// What a backend's UDP port does right now.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// Answers.
    Up,
    /// Process dead: UDP and TCP ports closed (ICMP port unreachable, TCP RST).
    Killed,
    /// UDP port closed, companion TCP port still open.
    RefusingUdp,
    /// A firewall drops its UDP datagrams silently; companion TCP port still open.
    DroppingUdp,
    /// A firewall drops everything silently.
    Blackholed,
}

/// A backend host.
#[derive(Debug)]
pub struct BackendHost {
    pub spec: BackendSpec,
    pub state: BackendState,
    /// The UDP port it answers from right now (`None`: the one the datagram came to).
    pub reply_port: Option<u16>,
    /// Datagrams received on its UDP port (probes included).
    pub received: u64,
    /// Upstream ports that already delivered a PROXY header (for `first` mode checks).
    proxied_ports: BTreeMap<u16, u64>,
    /// Broken PROXY expectations, described.
    pub proxy_violations: Vec<String>,
    /// Its QUIC server, if its spec gives one (`server_id` and `cid_config`).
    pub quic: Option<QuicServer>,
    /// Packets its QUIC server received for connections it does not have.
    pub unknown_connections: u64,
    /// The last such packet (after any PROXY header), for the world to see whose it was.
    pub unknown_packet: Option<Vec<u8>>,
}

/// What a backend does with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendReaction {
    /// Answer with these payloads after `delay`.
    Reply { payloads: Vec<Vec<u8>>, delay: Duration },
    /// Nothing comes back.
    Nothing,
    /// The port is closed: ICMP port unreachable goes back.
    PortUnreachable,
    /// A firewall swallowed it.
    Dropped,
}

impl BackendHost {
    pub fn new(spec: BackendSpec) -> Self {
        // Checked when the scenario loaded.
        let quic = match (&spec.server_id, &spec.cid_config) {
            (Some(server_id), Some(config)) => QuicServer::new(server_id, config).ok(),
            _ => None,
        };
        BackendHost {
            quic,
            unknown_connections: 0,
            unknown_packet: None,
            reply_port: spec.reply_port,
            spec,
            state: BackendState::Up,
            received: 0,
            proxied_ports: BTreeMap::new(),
            proxy_violations: Vec::new(),
        }
    }

    /// Whether a TCP connect to its companion port gets through and what it meets:
    /// `Some(true)` accepted, `Some(false)` refused (RST), `None` no answer at all.
    pub fn tcp_answer(&self) -> Option<bool> {
        match self.state {
            BackendState::Blackholed => None,
            BackendState::Killed => Some(false),
            BackendState::Up | BackendState::RefusingUdp | BackendState::DroppingUdp => {
                Some(self.spec.tcp_open)
            }
        }
    }

    /// A datagram from `from` arrived on its UDP port. `sends_to` says, for an IP a PROXY
    /// header names as the source, where that client sends (the VIPs the header may name as
    /// the destination), and `None` for an IP that is no client's.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        sends_to: impl Fn(IpAddr) -> Option<Vec<SocketAddr>>,
    ) -> BackendReaction {
        match self.state {
            BackendState::Blackholed | BackendState::DroppingUdp => return BackendReaction::Dropped,
            BackendState::Killed | BackendState::RefusingUdp => return BackendReaction::PortUnreachable,
            BackendState::Up => {}
        }
        self.received += 1;
        let body = match self.spec.expect_proxy {
            Some(mode) => match self.check_proxy(from, payload, mode, sends_to) {
                Some(body) => body,
                None => return BackendReaction::Nothing,
            },
            None => payload.to_vec(),
        };
        let payloads = match self.spec.model {
            BackendModel::Echo | BackendModel::Dns => vec![body],
            BackendModel::TwoReplies => vec![body.clone(), body],
            BackendModel::Amplifier => vec![body.repeat(10)],
            BackendModel::Silent => return BackendReaction::Nothing,
            BackendModel::Quic => match self.quic.as_mut().map(|server| server.answer(&body)) {
                Some(QuicAnswer::Reply(reply)) => vec![reply],
                Some(QuicAnswer::UnknownConnection) => {
                    self.unknown_connections += 1;
                    self.unknown_packet = Some(body);
                    return BackendReaction::Nothing;
                }
                Some(QuicAnswer::NotQuic) | None => return BackendReaction::Nothing,
            },
        };
        BackendReaction::Reply { payloads, delay: self.spec.delay }
    }

    /// Decodes and checks the PROXY header a datagram should (or should not) carry; returns
    /// the payload after it, or `None` if the datagram is unusable.
    fn check_proxy(
        &mut self,
        from: SocketAddr,
        payload: &[u8],
        mode: ProxyExpectation,
        sends_to: impl Fn(IpAddr) -> Option<Vec<SocketAddr>>,
    ) -> Option<Vec<u8>> {
        let seen_before = self.proxied_ports.get(&from.port()).copied().unwrap_or(0);
        let parsed = Header::parse(payload);
        match parsed {
            Ok((header, length)) => {
                let body = payload[length..].to_vec();
                if header.command == Command::Local {
                    // Health probes: a LOCAL header, accepted, nothing to check.
                    return Some(body);
                }
                match header.proxied_endpoints() {
                    Some((source, destination)) => {
                        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
                        match sends_to(source.ip().to_canonical()) {
                            None => self.violation(format!("header names {source}, which is not a client")),
                            Some(vips)
                                if !vips.iter().any(|vip| canonical(*vip) == canonical(destination)) =>
                            {
                                let vips: Vec<String> = vips.iter().map(ToString::to_string).collect();
                                self.violation(format!(
                                    "header names destination {destination}, but client {source} sends \
                                     to {}",
                                    vips.join(" or ")
                                ));
                            }
                            Some(_) => {}
                        }
                    }
                    None => self.violation("PROXY header without addresses".into()),
                }
                if mode == ProxyExpectation::First && seen_before > 0 {
                    self.violation(format!("a second header on the flow from port {}", from.port()));
                }
                self.proxied_ports.insert(from.port(), seen_before + 1);
                Some(body)
            }
            Err(error) => {
                let needs_header = mode == ProxyExpectation::Every || seen_before == 0;
                if needs_header {
                    self.violation(format!("datagram from {from} without a valid header: {error}"));
                    return None;
                }
                Some(payload.to_vec())
            }
        }
    }

    /// The address its answers come from: its own, or another port of its IP, or another IP.
    pub fn reply_source(&self) -> SocketAddr {
        let address = self.spec.address;
        let ip = self.spec.reply_address.unwrap_or(address.ip());
        SocketAddr::new(ip, self.reply_port.unwrap_or(address.port()))
    }

    /// Whether it answers from anywhere but the address it is sent to.
    pub fn answers_elsewhere(&self) -> bool {
        self.reply_source() != self.spec.address
    }

    /// `set_backend`: from now on it answers as changed (and `restore` returns to this).
    pub fn change(&mut self, change: &BackendChange) {
        let spec = &mut self.spec;
        if let Some(model) = change.model {
            spec.model = model;
        }
        if let Some(delay) = change.delay {
            spec.delay = delay.0;
        }
        if let Some(jitter) = change.delay_jitter {
            spec.delay_jitter = jitter.0;
        }
        if let Some(late) = change.late_copy {
            spec.late_copy = (!late.0.is_zero()).then_some(late);
        }
        if let Some(port) = change.reply_port {
            spec.reply_port = Some(port);
            self.reply_port = Some(port);
        }
        if let Some(address) = change.reply_address {
            spec.reply_address = Some(address);
        }
        if let Some(open) = change.tcp_open {
            spec.tcp_open = open;
        }
        if let Some(config) = &change.cid_config {
            spec.cid_config = Some(config.clone());
            // Checked when the scenario loaded.
            if let Some(server) = &mut self.quic {
                let _ = server.set_config(config);
            }
        }
    }

    /// `restore`: it answers again, as its spec says.
    pub fn restore(&mut self) {
        self.state = BackendState::Up;
        self.reply_port = self.spec.reply_port;
    }

    fn violation(&mut self, what: String) {
        // Bounded: the first few say enough.
        if self.proxy_violations.len() < 10 {
            self.proxy_violations.push(format!("{}: {what}", self.spec.name));
        }
    }
}

/// A client host.
#[derive(Debug)]
pub struct ClientHost {
    pub spec: ClientSpec,
    /// Requests sent so far.
    pub sent: u32,
    /// Replies still expected, by request number.
    pub pending: BTreeMap<u32, u32>,
    /// Requests that got all their replies.
    pub answered: u32,
    /// Added to a single-socket client's port: a NAT rebinding moves it (`rebind`).
    pub port_shift: u16,
    /// Replies that reached a port the client no longer uses (the NAT drops them).
    pub stale_replies: u32,
    /// A `quic` client's connection.
    pub quic: Option<QuicClient>,
}

impl ClientHost {
    pub fn new(spec: ClientSpec) -> Self {
        ClientHost::seeded(spec, 0)
    }

    /// A client in a run with `seed` (a `quic` client draws its connection IDs from it).
    pub fn seeded(spec: ClientSpec, seed: u64) -> Self {
        let quic = matches!(spec.model, ClientModel::Quic { .. }).then(|| QuicClient::new(&spec.name, seed));
        ClientHost {
            spec,
            sent: 0,
            pending: BTreeMap::new(),
            answered: 0,
            port_shift: 0,
            stale_replies: 0,
            quic,
        }
    }

    pub fn start(&self) -> Duration {
        match self.spec.model {
            ClientModel::RequestResponse { start, .. }
            | ClientModel::Flood { start, .. }
            | ClientModel::Quic { start, .. } => start,
        }
    }

    pub fn interval(&self) -> Duration {
        match self.spec.model {
            ClientModel::RequestResponse { interval, .. }
            | ClientModel::Flood { interval, .. }
            | ClientModel::Quic { interval, .. } => interval,
        }
    }

    pub fn count(&self) -> u32 {
        match self.spec.model {
            ClientModel::RequestResponse { count, .. }
            | ClientModel::Flood { count, .. }
            | ClientModel::Quic { count, .. } => count,
        }
    }

    /// The next datagram: its source and payload. `None` when the client is done.
    pub fn next_request(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        if self.sent >= self.count() {
            return None;
        }
        let number = self.sent;
        self.sent += 1;
        match self.spec.model {
            ClientModel::RequestResponse { replies, new_port_per_request, port, size, proxy_for, .. } => {
                let port = if new_port_per_request {
                    port.wrapping_add((number % 20_000) as u16)
                } else {
                    port.wrapping_add(self.port_shift)
                };
                let mut payload = tag(&self.spec.name, number, size);
                self.pending.insert(number, replies);
                if let Some(client) = proxy_for {
                    // The header's destination is not read by udplb; the client's own family.
                    let unspecified: IpAddr =
                        if client.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
                    let mut header = vec![0u8; udplb_core::proxy_v2::MAX_PROXY_HEADER_LEN];
                    let len = udplb_core::proxy_v2::write_proxy_header(
                        &mut header,
                        client,
                        SocketAddr::new(unspecified, 0),
                        udplb_core::proxy_v2::TlvOptions::default(),
                    )
                    .expect("a header fits its maximum length");
                    header.truncate(len);
                    header.extend_from_slice(&payload);
                    payload = header;
                }
                Some((SocketAddr::new(self.spec.address, port), payload))
            }
            ClientModel::Flood { sources, keep_ports, one_host, .. } => {
                let index = number % sources.max(1);
                let from = match one_host {
                    // One host, its `sources` ports, each sending in turn.
                    true => SocketAddr::new(self.spec.address, 1024 + (index % 60_000) as u16),
                    // Spoofed: each datagram from another address of 198.18.0.0/15, from a new
                    // port each time unless the sources keep theirs.
                    false => {
                        let ip = IpAddr::from([
                            198,
                            18 + (index >> 16) as u8 % 2,
                            (index >> 8) as u8,
                            index as u8,
                        ]);
                        let port = if keep_ports { 1024 } else { 1024 + (number % 50_000) as u16 };
                        SocketAddr::new(ip, port)
                    }
                };
                Some((from, b"flood".to_vec()))
            }
            ClientModel::Quic { port, size, .. } => {
                let body = tag(&self.spec.name, number, size);
                self.pending.insert(number, 1);
                let payload = match &self.quic {
                    Some(quic) => quic.packet(&body),
                    None => body,
                };
                Some((SocketAddr::new(self.spec.address, port.wrapping_add(self.port_shift)), payload))
            }
        }
    }

    /// A NAT rebinding: the client's single socket now appears from another port.
    pub fn rebind(&mut self) {
        self.port_shift = self.port_shift.wrapping_add(1_000);
    }

    /// Whether a datagram to `port` reaches this client: a single-socket client only listens on
    /// its current (NAT-mapped) port.
    pub fn listens_on(&self, port: u16) -> bool {
        match self.spec.model {
            ClientModel::RequestResponse { new_port_per_request: false, port: base, .. }
            | ClientModel::Quic { port: base, .. } => port == base.wrapping_add(self.port_shift),
            _ => true,
        }
    }

    /// What a reply carries after any header: a `quic` client's packets have one, whichever
    /// connection they are sent to.
    pub fn tag_of<'a>(&self, payload: &'a [u8]) -> &'a [u8] {
        match &self.quic {
            Some(_) => crate::quic::after_client_header(payload).unwrap_or_default(),
            None => payload,
        }
    }

    /// A reply arrived; matches it to its request by the request's tag (an empty reply, to
    /// the oldest request still owed one). A `quic` client reads its header first: one from
    /// another connection is ignored.
    pub fn receive(&mut self, payload: &[u8]) {
        let payload = match &mut self.quic {
            Some(quic) => match quic.receive(payload) {
                Some(body) => body,
                None => return,
            },
            None => payload,
        };
        if payload.is_empty() {
            if let Some(mut entry) = self.pending.first_entry() {
                *entry.get_mut() = entry.get().saturating_sub(1);
                if *entry.get() == 0 {
                    entry.remove();
                    self.answered += 1;
                }
            }
            return;
        }
        // `NAME#N` then padding dots: compared as bytes, without building the prefix.
        let name = self.spec.name.as_bytes();
        let tagged = payload.len() > name.len() && payload.starts_with(name) && payload[name.len()] == b'#';
        let digits = if tagged { &payload[name.len() + 1..] } else { &[][..] };
        let end = digits.iter().position(|b| *b == b'.').unwrap_or(digits.len());
        let number = std::str::from_utf8(&digits[..end]).ok().and_then(|n| n.parse::<u32>().ok());
        // Every padding byte a dot (folded without a branch per byte, so that it vectorizes).
        let padded = digits[end..].iter().fold(true, |all, b| all & (*b == b'.'));
        let Some(number) = number.filter(|_| tagged && padded) else {
            return;
        };
        if let Some(remaining) = self.pending.get_mut(&number) {
            *remaining = remaining.saturating_sub(1);
            if *remaining == 0 {
                self.pending.remove(&number);
                self.answered += 1;
            }
        }
    }

    /// Requests this client expects answers to (floods expect none).
    pub fn requests(&self) -> u32 {
        match self.spec.model {
            ClientModel::RequestResponse { .. } | ClientModel::Quic { .. } => self.sent,
            ClientModel::Flood { .. } => 0,
        }
    }
}

/// A request's tag: `NAME#N`, padded with dots to `size` (written without `format!`); empty
/// for `size = 0`.
fn tag(name: &str, number: u32, size: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    if size > 0 {
        let mut digits = [0u8; 10];
        let mut start = digits.len();
        let mut rest = number;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let name = name.as_bytes();
        payload.reserve(size.max(name.len() + 11));
        payload.extend_from_slice(name);
        payload.push(b'#');
        payload.extend_from_slice(&digits[start..]);
        if payload.len() < size {
            payload.resize(size, b'.');
        }
    }
    payload
}
