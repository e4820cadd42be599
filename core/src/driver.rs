//! The driver: the one piece of code that turns the core's verdicts and outputs into socket
//! actions, generic over a small [`Platform`] trait. The `udplb` binary runs it on mio
//! sockets, the simulator on simulated ones; both depend on this module and nothing else of
//! each other, so what the simulator runs is the production path by construction.
//!
//! Every entry point takes `now` from its caller (the mio loop reads the clock once per batch;
//! the simulator passes its virtual time). Each one calls the core, acts on the verdict, then
//! drains the core's outputs in order:
//!
//! - a new flow is staged ([`ClientVerdict::Open`]): the driver opens its upstream, then
//!   confirms ([`Balancer::accept`], which returns the `Forward` to act on) or reports the
//!   failure ([`Balancer::refuse`]) — a flow is booked only once its upstream exists;
//! - a forward is sent on its flow's upstream; a flow that ends with it (`closes`) is closed
//!   by the `CloseUpstream` output drained right after;
//! - a re-send after a refusal ([`flow::Output::Resend`]) is staged the same way.
//!
//! Platforms report what fails later (a send, a batched send, an ICMP error) as an ordinary
//! [`Input`] through [`Driver::handle`]; none of their methods returns something to settle,
//! except the open, which is the staged flow's confirmation.

use std::net::SocketAddr;

mod journal;

pub use journal::{Journal, Observed, Recorded, replay};

use crate::balancer::{Balancer, Input, Output, Reload};
use crate::config::{Config, ValidationError};
use crate::flow::{self, AdminError, BackendVerdict, ClientDatagram, ClientVerdict, Incoming};
use crate::health::ProbeRequest;
use crate::id::{BackendId, FlowId, ListenerId};
use crate::outcome::DropReason;
use crate::time::Instant;

/// Why a platform could not open an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenError(pub String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "could not open an upstream: {}", self.0)
    }
}

impl std::error::Error for OpenError {}

/// What the driver needs from the world: sockets and probes. Time comes from the caller.
pub trait Platform {
    /// Opens an upstream for `flow` towards `backend` at `address`; datagrams the backend
    /// sends back on it are handed to [`Driver::backend_datagram`] with `flow`.
    fn open_upstream(
        &mut self,
        now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError>;
    /// Closes `flow`'s upstream (the flow ended, or its open was not confirmed).
    fn close_upstream(&mut self, now: Instant, flow: FlowId);
    /// Sends a datagram to the backend on `flow`'s upstream. A failure, now or later, comes
    /// back as [`Input::UpstreamError`].
    fn send_upstream(&mut self, flow: FlowId, datagram: &[u8]);
    /// Sends a datagram to `client` from `listener`'s socket, with `local` as its source
    /// address (on a wildcard listener, the address the client sent to; on any other, the
    /// listener's own). A failure comes back as [`Input::ReturnFailed`].
    fn send_to_client(
        &mut self,
        listener: ListenerId,
        local: SocketAddr,
        client: SocketAddr,
        datagram: &[u8],
    );
    /// Starts a probe; its outcome comes back as [`Input::ProbeResult`] or
    /// [`Input::ProbeReply`] (or never: the core times it out).
    fn start_probe(&mut self, now: Instant, probe: &ProbeRequest);
    /// Something worth logging or counting (flow events, health events, listener states),
    /// with the core to name things by.
    fn notify(&mut self, core: &Balancer, output: &Output);
}

/// The core plus the platform it acts through.
#[derive(Debug)]
pub struct Driver<P> {
    core: Balancer,
    platform: P,
    /// Set by [`Driver::record`]: every input and every observed output, for replay.
    journal: Option<Journal>,
}

impl<P: Platform> Driver<P> {
    pub fn new(core: Balancer, platform: P) -> Self {
        Driver { core, platform, journal: None }
    }

    pub fn core(&self) -> &Balancer {
        &self.core
    }

    pub fn platform(&self) -> &P {
        &self.platform
    }

    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// The core to read and the platform to change, at once (the platform's own bookkeeping
    /// after a reload: which listeners to open or close).
    pub fn parts_mut(&mut self) -> (&Balancer, &mut P) {
        (&self.core, &mut self.platform)
    }

    /// From now on, keep a [`Journal`] of every input and output (see [`replay`]).
    pub fn record(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// The journal kept since [`Driver::record`], if any.
    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// When the loop must call [`Driver::handle`] with [`Input::Timeout`] next (re-read after
    /// every call).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// A client datagram (see [`ClientDatagram`]: its payload in `buffer[headroom..]`, with
    /// `headroom` free bytes in front for a PROXY header). Returns the final verdict: a
    /// `Forward` that was sent, or a `Drop` (never `Open`: the driver resolves it).
    pub fn client_datagram(&mut self, now: Instant, datagram: ClientDatagram<'_>) -> ClientVerdict {
        let ClientDatagram { listener, client, local, buffer, headroom, truncated } = datagram;
        if let Some(journal) = &mut self.journal {
            let payload = buffer.get(headroom..).unwrap_or_default().to_vec();
            journal.input(
                now,
                Recorded::ClientDatagram { listener, client, local, payload, headroom, truncated },
            );
        }
        let datagram = ClientDatagram { listener, client, local, buffer: &mut *buffer, headroom, truncated };
        let mut verdict = self.core.handle_client_datagram(now, datagram);
        if let ClientVerdict::Open(incoming) = verdict {
            let start = incoming.datagram_start(headroom);
            verdict = self.open(now, incoming, &buffer[start..]);
        }
        if let ClientVerdict::Forward { flow, prefix_len, skip, .. } = verdict {
            self.platform.send_upstream(flow, &buffer[headroom + skip - prefix_len..]);
        }
        self.observe(|| Observed::Client(verdict.clone()));
        self.drain(now);
        verdict
    }

    /// A datagram from a backend arrived on `flow`'s upstream.
    pub fn backend_datagram(
        &mut self,
        now: Instant,
        flow: FlowId,
        payload: &[u8],
        truncated: bool,
    ) -> BackendVerdict {
        if let Some(journal) = &mut self.journal {
            journal.input(now, Recorded::BackendDatagram { flow, payload: payload.to_vec(), truncated });
        }
        let verdict = self.core.handle_backend_datagram(now, flow, payload, truncated);
        if let BackendVerdict::Return { listener, client, local } = verdict {
            self.platform.send_to_client(listener, local, client, payload);
        }
        self.observe(|| Observed::Backend(verdict));
        self.drain(now);
        verdict
    }

    /// Every other input (see [`Input`]).
    pub fn handle(&mut self, now: Instant, input: Input) -> Result<(), AdminError> {
        if let Some(journal) = &mut self.journal {
            journal.input(now, Recorded::Input(input.clone()));
        }
        let result = self.core.handle(now, input);
        self.observe(|| Observed::Handled(result));
        self.drain(now);
        result
    }

    /// Restart with handover (`crate::snapshot`): the core is replaced by one restored from
    /// its own snapshot under `config` (the one it runs), as a new process would take over;
    /// the platform (its sockets) stays. Refused, with nothing changed, if the snapshot is.
    pub fn hand_over(&mut self, config: &Config) -> Result<(), crate::snapshot::SnapshotError> {
        let snapshot = self.core.snapshot(config)?;
        self.core = Balancer::restore(config, &snapshot)?;
        Ok(())
    }

    /// A new configuration; an invalid one changes nothing.
    pub fn reload(&mut self, now: Instant, config: &Config) -> Result<Reload, Vec<ValidationError>> {
        if let Some(journal) = &mut self.journal {
            journal.input(now, Recorded::Reload(Box::new(config.clone())));
        }
        let result = self.core.apply_config(now, config);
        self.observe(|| Observed::Reloaded(result.clone()));
        self.drain(now);
        result
    }

    /// Opens a staged flow's upstream and confirms it; `datagram` is what will be sent.
    fn open(&mut self, now: Instant, incoming: Incoming, datagram: &[u8]) -> ClientVerdict {
        let flow = incoming.flow();
        let opened = self.platform.open_upstream(now, flow, incoming.backend(), incoming.address());
        if let Some(journal) = &mut self.journal {
            journal.opened(opened.is_ok());
        }
        if opened.is_err() {
            self.core.refuse(now, incoming);
            return ClientVerdict::Drop(DropReason::UpstreamOpenFailed);
        }
        let verdict = self.core.accept(now, incoming, datagram);
        if !matches!(verdict, ClientVerdict::Forward { .. }) {
            self.platform.close_upstream(now, flow);
        }
        verdict
    }

    /// Acts on every pending output, in order.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            self.observe(|| Observed::Output(output.clone()));
            match &output {
                Output::Flow(flow::Output::CloseUpstream { flow, .. }) => {
                    self.platform.close_upstream(now, *flow)
                }
                Output::Probe(request) => self.platform.start_probe(now, request),
                _ => {}
            }
            self.platform.notify(&self.core, &output);
            if let Output::Flow(flow::Output::Resend { incoming, datagram }) = output {
                let verdict = self.open(now, incoming, &datagram);
                if let ClientVerdict::Forward { flow, .. } = verdict {
                    self.platform.send_upstream(flow, &datagram);
                }
                self.observe(|| Observed::Client(verdict));
            }
        }
    }

    fn observe(&mut self, observed: impl FnOnce() -> Observed) {
        if let Some(journal) = &mut self.journal {
            journal.observed.push(observed());
        }
    }
}
