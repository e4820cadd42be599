//! The harness's stand-in for ICMP, which turmoil does not have.
//!
//! On a real network, a datagram that reaches a UDP port nobody listens on (the backend's
//! process died, or its UDP service did) makes the backend's kernel send back an ICMP port
//! unreachable, within its rate limit; the sending socket then reports a refusal. Here the
//! balancer host tells the stand-in about each datagram it sends to a backend; one latency
//! later the stand-in looks at whether that port is closed (the timeline's kills, UDP refusals
//! and restores), and if so the refusal reaches the balancer one latency after that. The two
//! steps matter: a datagram sent just before a kill is refused, one sent just before a restore
//! is not. A blackholed backend's port is not closed: a firewall sends nothing back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use udplb_core::{FlowId, Instant, ProbeId};

/// What a refusal is about: the socket that sent the refused datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    Upstream { upstream: FlowId },
    Probe { probe: ProbeId },
}

#[derive(Copy, Clone, Debug)]
enum Step {
    /// The datagram reaches `destination`; if that port is closed, its host's kernel answers.
    Arrives { destination: SocketAddr, about: Refused },
    /// The ICMP port unreachable reaches the balancer.
    Returns { about: Refused },
}

#[derive(Debug)]
pub struct IcmpStandIn {
    /// One-way latency, each way.
    one_way: Duration,
    /// ICMP errors a backend host sends per second at most, as kernels rate-limit them.
    per_second: u32,
    steps: BTreeMap<(Instant, u64), Step>,
    sequence: u64,
    /// ICMP errors sent per backend host in the current second: (second, count).
    sent: BTreeMap<IpAddr, (u64, u32)>,
    /// ICMP errors synthesized over the run.
    pub synthesized: u64,
}

impl IcmpStandIn {
    pub fn new(one_way: Duration, per_second: u32) -> Self {
        IcmpStandIn {
            one_way,
            per_second,
            steps: BTreeMap::new(),
            sequence: 0,
            sent: BTreeMap::new(),
            synthesized: 0,
        }
    }

    /// A datagram about `about` left the balancer for `destination` at `now`.
    pub fn sent(&mut self, now: Instant, destination: SocketAddr, about: Refused) {
        self.schedule(now + self.one_way, Step::Arrives { destination, about });
    }

    /// When the next step is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.steps.first_key_value().map(|((at, _), _)| *at)
    }

    /// The next refusal that has reached the balancer by `now`, if any; `closed` holds the
    /// backends' closed UDP ports.
    pub fn poll(&mut self, now: Instant, closed: &BTreeSet<SocketAddr>) -> Option<Refused> {
        // Each turn removes a step and adds at most one later one (a Returns never adds), so
        // the loop ends.
        while let Some(entry) = self.steps.first_entry() {
            let (at, _) = *entry.key();
            if at > now {
                return None;
            }
            match entry.remove() {
                Step::Arrives { destination, about } => {
                    if closed.contains(&destination) && self.allowed(at, destination.ip()) {
                        self.synthesized += 1;
                        self.schedule(at + self.one_way, Step::Returns { about });
                    }
                }
                Step::Returns { about } => return Some(about),
            }
        }
        None
    }

    fn schedule(&mut self, at: Instant, step: Step) {
        self.sequence += 1;
        self.steps.insert((at, self.sequence), step);
    }

    /// The kernel's ICMP rate limit, per host and second.
    fn allowed(&mut self, at: Instant, host: IpAddr) -> bool {
        let second = at.as_nanos() / 1_000_000_000;
        let entry = self.sent.entry(host).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        if entry.1 >= self.per_second {
            return false;
        }
        entry.1 += 1;
        true
    }
}
