//! The driver: the one piece of code that turns the core's verdicts and outputs into socket
//! actions. It is generic over a small [`Platform`] trait, so the same code runs on mio in the
//! `udplb` binary and on simulated sockets in `udplb-sim`: what the simulator tests is the
//! production path.
//!
//! The platform's event loop calls the `on_*` methods as things happen (a datagram on a
//! listener, a datagram on an upstream, an ICMP error, a probe outcome, a timer); each one calls
//! the core, drains its outputs in order (opening an upstream before the verdict's datagram is
//! sent on it), acts on the verdict, and returns. The loop then sleeps until
//! [`Driver::next_deadline`].

use std::collections::BTreeSet;
use std::net::SocketAddr;

use udplb_core::balancer::Output;
use udplb_core::config::ValidationError;
use udplb_core::health::ProbeRequest;
use udplb_core::{
    AdminCommand, AdminError, BackendCommand, BackendId, BackendVerdict, Balancer, ClientDatagram,
    ClientVerdict, Config, FlowId, Instant, ListenerId, ProbeId, ProbeResult, Reload, UpstreamError,
    UpstreamId,
};

/// Why a platform could not open an upstream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not open an upstream: {0}")]
pub struct OpenError(pub String);

/// Why a platform could not send a datagram.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("could not send: {0}")]
pub struct SendError(pub String);

/// What the driver needs from the world: sockets, probes and a clock.
pub trait Platform {
    /// The current time on the core's clock.
    fn now(&self) -> Instant;
    /// Opens a connected upstream towards `address`; datagrams the backend sends back on it are
    /// handed to [`Driver::on_backend_datagram`] with `flow`.
    fn open_upstream(
        &mut self,
        upstream: UpstreamId,
        flow: FlowId,
        listener: ListenerId,
        address: SocketAddr,
    ) -> Result<(), OpenError>;
    /// Closes an upstream (its flow ended).
    fn close_upstream(&mut self, upstream: UpstreamId);
    /// Sends a datagram to the backend on `upstream`.
    fn send_upstream(&mut self, upstream: UpstreamId, datagram: &[u8]) -> Result<(), SendError>;
    /// Sends a datagram to `client` from `listener`'s socket.
    fn send_to_client(
        &mut self,
        listener: ListenerId,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), SendError>;
    /// Starts a probe; its outcome comes back through [`Driver::on_probe_result`] or
    /// [`Driver::on_probe_reply`] (or never: the core times it out).
    fn start_probe(&mut self, probe: &ProbeRequest);
    /// Something worth logging or counting (flow events, health events, listener states).
    fn notify(&mut self, output: &Output);
}

/// The core plus the platform it acts through.
#[derive(Debug)]
pub struct Driver<P> {
    core: Balancer,
    platform: P,
    /// Upstreams whose open failed during the current call: the verdict's datagram is not sent.
    failed_opens: BTreeSet<UpstreamId>,
    /// The upstream a client datagram's verdict sends on: the core may open *and* close it in
    /// the same call (`requests = 1` with no reply owed), and it must close after the send.
    hold_close: Option<UpstreamId>,
    /// Set when the held upstream's close came during the call.
    close_held: bool,
}

impl<P: Platform> Driver<P> {
    pub fn new(core: Balancer, platform: P) -> Self {
        Driver { core, platform, failed_opens: BTreeSet::new(), hold_close: None, close_held: false }
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

    /// When the loop must call [`Driver::on_timeout`] next (re-read after every call).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    /// A client datagram in `buffer[headroom..]` (with `headroom` free bytes in front for a
    /// PROXY header) arrived on `listener` from `client`.
    pub fn on_client_datagram(
        &mut self,
        listener: ListenerId,
        client: SocketAddr,
        buffer: &mut [u8],
        headroom: usize,
        truncated: bool,
    ) -> ClientVerdict {
        let now = self.platform.now();
        let datagram = ClientDatagram { listener, client, buffer: &mut *buffer, headroom, truncated };
        let verdict = self.core.handle_client_datagram(now, datagram);
        if let ClientVerdict::Forward { upstream, .. } = verdict {
            self.hold_close = Some(upstream);
        }
        self.drain(now);
        if let ClientVerdict::Forward { flow, upstream, prefix_len } = verdict
            && !self.failed_opens.contains(&upstream)
            && self.platform.send_upstream(upstream, &buffer[headroom - prefix_len..]).is_err()
        {
            self.core.handle_upstream_error(now, flow, UpstreamError::SendFailed);
            self.drain(now);
        }
        self.hold_close = None;
        if std::mem::take(&mut self.close_held)
            && let ClientVerdict::Forward { upstream, .. } = verdict
        {
            self.platform.close_upstream(upstream);
        }
        self.failed_opens.clear();
        verdict
    }

    /// A datagram from a backend arrived on `flow`'s upstream.
    pub fn on_backend_datagram(&mut self, flow: FlowId, payload: &[u8], truncated: bool) -> BackendVerdict {
        let now = self.platform.now();
        let verdict = self.core.handle_backend_datagram(now, flow, payload, truncated);
        self.drain(now);
        if let BackendVerdict::Return { listener, client } = verdict
            && self.platform.send_to_client(listener, client, payload).is_err()
        {
            self.core.handle_return_failed(now, listener, payload.len());
            self.drain(now);
        }
        verdict
    }

    /// An error on `flow`'s upstream (ICMP port or host unreachable).
    pub fn on_upstream_error(&mut self, flow: FlowId, error: UpstreamError) {
        let now = self.platform.now();
        self.core.handle_upstream_error(now, flow, error);
        self.drain(now);
    }

    /// A reply the platform had accepted for `listener` could not be sent after all (a
    /// batched send failed).
    pub fn on_return_failed(&mut self, listener: ListenerId, bytes: usize) {
        let now = self.platform.now();
        self.core.handle_return_failed(now, listener, bytes);
        self.drain(now);
    }

    /// A follower: the leader's new state for a backend.
    pub fn on_backend_state(
        &mut self,
        backend: BackendId,
        eligible: bool,
        health: udplb_core::Health,
        admin: udplb_core::health::AdminState,
    ) {
        let now = self.platform.now();
        self.core.handle_backend_state(now, backend, eligible, health, admin);
        self.drain(now);
    }

    /// The leader: a passive failure a follower's datapath saw.
    pub fn on_passive_failure(&mut self, backend: BackendId, failure: udplb_core::PassiveFailure) {
        let now = self.platform.now();
        self.core.handle_passive_failure(now, backend, failure);
        self.drain(now);
    }

    /// The outcome of a TCP probe, or a UDP probe's failure.
    pub fn on_probe_result(&mut self, probe: ProbeId, result: ProbeResult) {
        let now = self.platform.now();
        self.core.handle_probe_result(now, probe, result);
        self.drain(now);
    }

    /// A UDP probe's reply.
    pub fn on_probe_reply(&mut self, probe: ProbeId, reply: &[u8]) {
        let now = self.platform.now();
        self.core.handle_probe_reply(now, probe, reply);
        self.drain(now);
    }

    /// The timer fired (possibly early: harmless).
    pub fn on_timeout(&mut self) {
        let now = self.platform.now();
        self.core.handle_timeout(now);
        self.drain(now);
    }

    /// A listener or flow command.
    pub fn on_admin(&mut self, command: AdminCommand) -> Result<(), AdminError> {
        let now = self.platform.now();
        let result = self.core.handle_admin(now, command);
        self.drain(now);
        result
    }

    /// A backend command.
    pub fn on_backend_command(
        &mut self,
        backend: BackendId,
        command: BackendCommand,
    ) -> Result<(), AdminError> {
        let now = self.platform.now();
        let result = self.core.handle_backend_command(now, backend, command);
        self.drain(now);
        result
    }

    /// A new configuration; an invalid one changes nothing.
    pub fn on_reload(&mut self, config: &Config) -> Result<Reload, Vec<ValidationError>> {
        let now = self.platform.now();
        let result = self.core.apply_config(now, config);
        self.drain(now);
        result
    }

    /// Acts on every pending output, in order.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.core.poll_output() {
            match &output {
                Output::Flow(udplb_core::Output::OpenUpstream {
                    upstream, flow, listener, address, ..
                }) => self.open_upstream(now, *upstream, *flow, *listener, *address),
                Output::Flow(udplb_core::Output::CloseUpstream { upstream, .. }) => {
                    self.close_upstream(*upstream)
                }
                Output::Flow(udplb_core::Output::Resend { upstream, flow, datagram }) => {
                    self.resend(now, *upstream, *flow, datagram);
                }
                Output::Probe(request) => self.platform.start_probe(request),
                _ => {}
            }
            self.platform.notify(&output);
        }
    }

    fn open_upstream(
        &mut self,
        now: Instant,
        upstream: UpstreamId,
        flow: FlowId,
        listener: ListenerId,
        address: SocketAddr,
    ) {
        if self.platform.open_upstream(upstream, flow, listener, address).is_err() {
            // Reported at once, before any other input, so the core un-counts the datagram
            // that opened the flow; the verdict's send is skipped.
            self.failed_opens.insert(upstream);
            self.core.handle_upstream_open_failed(now, flow);
        }
    }

    fn close_upstream(&mut self, upstream: UpstreamId) {
        // An upstream whose open failed was never opened.
        if self.failed_opens.contains(&upstream) {
            return;
        }
        if self.hold_close == Some(upstream) {
            // Closed once the verdict's datagram is sent on it.
            self.close_held = true;
            return;
        }
        self.platform.close_upstream(upstream);
    }

    fn resend(&mut self, now: Instant, upstream: UpstreamId, flow: FlowId, datagram: &[u8]) {
        if self.platform.send_upstream(upstream, datagram).is_err() {
            self.core.handle_upstream_error(now, flow, UpstreamError::SendFailed);
        }
    }
}
