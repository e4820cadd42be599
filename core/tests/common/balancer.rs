//! Drives a `Balancer` as a shell would: drains outputs after every call, answers probes by
//! a per-backend policy, runs timeouts when asked, checks invariants at every step.

use std::collections::BTreeMap;

use udplb_core::balancer::Output;
use udplb_core::health::{HealthEvent, ProbeFailure, ProbeRequest};
use udplb_core::{
    BackendId, Balancer, ClientDatagram, ClientVerdict, Config, DATAGRAM_HEADROOM, FlowId, Input, Instant,
    Keys, ProbeResult,
};

use super::addr;

/// How a simulated backend answers probes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Pass,
    Refuse,
    Silent,
}

pub struct BalancerHarness {
    pub core: Balancer,
    pub now: Instant,
    pub outputs: Vec<Output>,
    pub answers: BTreeMap<BackendId, Answer>,
    /// Probes started and not answered yet (silent backends).
    pending: Vec<ProbeRequest>,
}

impl BalancerHarness {
    pub fn new(config: &Config) -> Self {
        let core = Balancer::new(config, Keys::from_seed(11)).expect("valid config");
        BalancerHarness {
            core,
            now: Instant::ZERO,
            outputs: Vec::new(),
            answers: BTreeMap::new(),
            pending: Vec::new(),
        }
    }

    pub fn backend(&self, cluster: &str, id: &str) -> BackendId {
        self.core.flows().backend_id(cluster, id).expect("backend exists")
    }

    fn drain(&mut self) {
        while let Some(output) = self.core.poll_output() {
            if let Output::Probe(request) = &output {
                self.pending.push(request.clone());
            }
            if let Output::Flow(udplb_core::Output::Resend { incoming, datagram }) = &output {
                let _ = self.core.accept(self.now, incoming.clone(), datagram);
            }
            self.outputs.push(output);
        }
        if let Err(violation) = self.core.check_invariants() {
            panic!("{violation}");
        }
    }

    /// Answers every pending probe whose backend is not silent.
    fn answer_probes(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for request in pending {
            match self.answers.get(&request.backend).copied().unwrap_or(Answer::Pass) {
                Answer::Pass => {
                    self.handle(Input::ProbeResult { probe: request.probe, result: ProbeResult::Pass })
                }
                Answer::Refuse => self.handle(Input::ProbeResult {
                    probe: request.probe,
                    result: ProbeResult::Fail(ProbeFailure::Refused),
                }),
                Answer::Silent => continue,
            }
            self.drain();
        }
    }

    /// Runs the core until `until`, waking at every deadline it asks for.
    pub fn run_until(&mut self, until: Instant) {
        self.drain();
        self.answer_probes();
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = at.max(self.now);
                    self.handle(Input::Timeout);
                    self.drain();
                    self.answer_probes();
                }
                _ => break,
            }
        }
        self.now = until.max(self.now);
        self.handle(Input::Timeout);
        self.drain();
    }

    pub fn client(&mut self, client: &str, payload: &[u8]) -> ClientVerdict {
        let listener = self.core.flows().listener_id("dns").expect("listener dns");
        let mut buffer = vec![0u8; DATAGRAM_HEADROOM + payload.len()];
        buffer[DATAGRAM_HEADROOM..].copy_from_slice(payload);
        let verdict = self.core.handle_client_datagram(
            self.now,
            ClientDatagram {
                listener,
                client: addr(client),
                local: None,
                buffer: &mut buffer,
                headroom: DATAGRAM_HEADROOM,
                truncated: false,
            },
        );
        let verdict = match verdict {
            ClientVerdict::Open(incoming) => {
                let start = DATAGRAM_HEADROOM - incoming.prefix_len();
                self.core.accept(self.now, incoming, &buffer[start..])
            }
            verdict => verdict,
        };
        self.drain();
        verdict
    }

    /// Any other input; an operator command's refusal panics.
    pub fn handle(&mut self, input: Input) {
        self.core.handle(self.now, input).expect("input accepted");
    }

    /// The backend a new flow from `client` went to.
    pub fn new_flow_backend(&mut self, client: &str) -> Option<BackendId> {
        match self.client(client, b"q") {
            ClientVerdict::Forward { flow, .. } => self.core.flows().flow(flow).map(|f| f.backend),
            _ => None,
        }
    }

    pub fn flow_of(&self, verdict: ClientVerdict) -> FlowId {
        match verdict {
            ClientVerdict::Forward { flow, .. } => flow,
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    pub fn health_events(&self) -> Vec<HealthEvent> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Health(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }
}
