//! A small driver for tests: owns a flow manager and a virtual clock, drains outputs after
//! every call (as the shell must), and checks every invariant after every step.

#![allow(dead_code)]

pub mod balancer;

use std::net::SocketAddr;
use std::time::Duration;

use udplb_core::{
    AdminCommand, BackendId, BackendVerdict, ClientDatagram, ClientVerdict, Config, DATAGRAM_HEADROOM,
    FlowId, FlowManager, Incoming, Instant, Keys, ListenerId, Output,
};

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

pub fn config(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(config) => config,
        Err(errors) => panic!("test config rejected: {errors:?}"),
    }
}

/// One DNS-like listener `dns` on 10.0.0.1:53 in front of cluster `pool` with backends b1..bN,
/// plus whatever extra cluster settings `cluster_extra` adds.
pub fn one_listener(backends: usize, cluster_extra: &str, listener_extra: &str) -> Config {
    let mut text = format!(
        "[listeners.dns]\naddress = \"10.0.0.1:53\"\ncluster = \"pool\"\n{listener_extra}\n\n[clusters.pool]\n{cluster_extra}\nbackends = [\n"
    );
    for i in 1..=backends {
        text.push_str(&format!("  {{ id = \"b{i}\", address = \"10.1.0.{i}:5300\" }},\n"));
    }
    text.push_str("]\n");
    config(&text)
}

pub struct Harness {
    pub core: FlowManager,
    pub now: Instant,
    pub outputs: Vec<Output>,
    /// The bytes of the last forwarded datagram, PROXY header included.
    pub last_sent: Vec<u8>,
    /// Upstreams opened for staged flows, in order: (flow, backend, address).
    pub opened: Vec<(FlowId, BackendId, SocketAddr)>,
    /// Staged opens fail (as a shell out of sockets would) while set.
    pub fail_opens: bool,
    /// The destination the next client datagrams name (`ClientDatagram::local`).
    pub local: Option<std::net::IpAddr>,
}

impl Harness {
    pub fn new(config: &Config) -> Harness {
        Harness::with_seed(config, 7)
    }

    pub fn with_seed(config: &Config, seed: u64) -> Harness {
        let core = FlowManager::new(config, Keys::from_seed(seed)).expect("valid config");
        Harness {
            core,
            now: Instant::ZERO,
            outputs: Vec::new(),
            last_sent: Vec::new(),
            opened: Vec::new(),
            fail_opens: false,
            local: None,
        }
    }

    pub fn listener(&self, name: &str) -> ListenerId {
        self.core.listener_id(name).expect("listener exists")
    }

    /// Opens (or fails to open) a staged flow's upstream and confirms it, as the driver does.
    fn open(&mut self, incoming: Incoming, datagram: &[u8]) -> ClientVerdict {
        if self.fail_opens {
            self.core.refuse(self.now, incoming);
            return ClientVerdict::Drop(udplb_core::DropReason::UpstreamOpenFailed);
        }
        self.opened.push((incoming.flow(), incoming.backend(), incoming.address()));
        self.core.accept(self.now, incoming, datagram)
    }

    /// Drains outputs (confirming re-sends' staged flows) and checks every invariant.
    pub fn after_call(&mut self) {
        while let Some(output) = self.core.poll_output() {
            if let Output::Resend { incoming, datagram } = &output {
                let verdict = self.open(incoming.clone(), datagram);
                if let ClientVerdict::Forward { .. } = verdict {
                    self.last_sent = datagram.clone();
                }
            }
            self.outputs.push(output);
        }
        if let Err(violation) = self.core.check_invariants() {
            panic!("{violation}");
        }
    }

    /// Sends a client datagram on listener `dns`.
    pub fn client(&mut self, client: &str, payload: &[u8]) -> ClientVerdict {
        let listener = self.listener("dns");
        self.client_on(listener, client, payload, false)
    }

    pub fn client_on(
        &mut self,
        listener: ListenerId,
        client: &str,
        payload: &[u8],
        truncated: bool,
    ) -> ClientVerdict {
        let mut buffer = vec![0u8; DATAGRAM_HEADROOM + payload.len()];
        buffer[DATAGRAM_HEADROOM..].copy_from_slice(payload);
        let verdict = self.core.handle_client_datagram(
            self.now,
            ClientDatagram {
                listener,
                client: addr(client),
                local: self.local,
                buffer: &mut buffer,
                headroom: DATAGRAM_HEADROOM,
                truncated,
            },
        );
        let verdict = match verdict {
            ClientVerdict::Open(incoming) => {
                let start = incoming.datagram_start(DATAGRAM_HEADROOM);
                self.open(incoming, &buffer[start..])
            }
            verdict => verdict,
        };
        if let ClientVerdict::Forward { prefix_len, skip, .. } = verdict {
            self.last_sent = buffer[DATAGRAM_HEADROOM + skip - prefix_len..].to_vec();
        }
        self.after_call();
        verdict
    }

    /// Sends a client datagram and expects it forwarded; returns its flow.
    pub fn forward(&mut self, client: &str, payload: &[u8]) -> FlowId {
        match self.client(client, payload) {
            ClientVerdict::Forward { flow, .. } => flow,
            other => panic!("expected Forward, got {other:?}"),
        }
    }

    pub fn backend(&mut self, flow: FlowId, payload: &[u8]) -> BackendVerdict {
        let verdict = self.core.handle_backend_datagram(self.now, flow, payload, false);
        self.after_call();
        verdict
    }

    pub fn admin(&mut self, command: AdminCommand) {
        self.core.handle_admin(self.now, command).expect("admin command accepted");
        self.after_call();
    }

    /// Moves the clock to `at` and handles timeouts there.
    pub fn advance_to(&mut self, at: Instant) {
        assert!(at >= self.now);
        self.now = at;
        self.core.handle_timeout(self.now);
        self.after_call();
    }

    pub fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    /// Runs timeouts exactly when the core asks, until `until`, as a well-behaved shell does.
    pub fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            match self.core.poll_timeout() {
                Some(at) if at <= until => self.advance_to(at.max(self.now)),
                _ => break,
            }
        }
        self.advance_to(until.max(self.now));
    }

    /// Tells the flow manager what a health monitor would: `eligible` backends are Up, the
    /// others Down (admin Enabled either way).
    pub fn set_eligible(&mut self, backend: udplb_core::BackendId, eligible: bool) {
        let health = if eligible { udplb_core::Health::Up } else { udplb_core::Health::Down };
        let admin = udplb_core::AdminState::Enabled;
        self.core.handle_backend_state(
            self.now,
            backend,
            udplb_core::BackendState { eligible, health, admin },
        );
        self.after_call();
    }

    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The close reasons reported since the last `take_outputs`, in order.
    pub fn closes(&self) -> Vec<(FlowId, udplb_core::CloseReason)> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::CloseUpstream { flow, reason, .. } => Some((*flow, *reason)),
                _ => None,
            })
            .collect()
    }
}
