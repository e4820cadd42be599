//! The shell driver's [`Platform`] on turmoil: a buffer between the driver's synchronous calls
//! and turmoil's asynchronous sockets.
//!
//! The driver calls the platform in the middle of a core call, where nothing may await. So the
//! platform only writes down what the core asked for, in order ([`SocketWork`]), and keeps the
//! one piece of state the driver needs at once: which upstreams are open and for which flow.
//! The balancer host carries the work out on real turmoil sockets as soon as the driver call
//! returns, in the same order, so an upstream is always bound before its first datagram is
//! sent.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use udplb::driver::{OpenError, Platform, SendError};
use udplb_core::balancer::Output;
use udplb_core::health::ProbeRequest;
use udplb_core::{FlowId, Instant, ListenerId, UpstreamId};

/// Socket work the core asked for during one driver call.
#[derive(Debug)]
pub enum SocketWork {
    /// Bind an upstream socket and connect it to `backend`.
    Open { upstream: UpstreamId, backend: SocketAddr },
    /// Close an upstream socket.
    Close { upstream: UpstreamId },
    /// Send a datagram on an upstream socket.
    SendUpstream { upstream: UpstreamId, datagram: Vec<u8> },
    /// Send a datagram to a client from a listener's socket.
    SendToClient { listener: ListenerId, client: SocketAddr, datagram: Vec<u8> },
    /// Start a health probe.
    Probe(ProbeRequest),
}

/// The turmoil platform under the driver.
#[derive(Debug, Default)]
pub struct TurmoilPlatform {
    /// Turmoil's simulated time, set by the balancer host before every driver call.
    pub now: Instant,
    /// Upstreams open as the core sees them (from the moment it asked), with their flows.
    pub upstreams: BTreeMap<UpstreamId, FlowId>,
    /// Work waiting to be carried out, oldest first.
    pub work: Vec<SocketWork>,
    /// Outputs to record (names are resolved afterwards, with the core at hand).
    pub notices: Vec<Output>,
}

impl Platform for TurmoilPlatform {
    fn now(&self) -> Instant {
        self.now
    }

    fn open_upstream(
        &mut self,
        upstream: UpstreamId,
        flow: FlowId,
        _listener: ListenerId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        // Binding cannot fail for want of ports here: the scenarios open far fewer upstreams
        // than turmoil's ephemeral range holds, and the balancer host reports a failed bind as
        // a broken run rather than hiding it.
        self.upstreams.insert(upstream, flow);
        self.work.push(SocketWork::Open { upstream, backend: address });
        Ok(())
    }

    fn close_upstream(&mut self, upstream: UpstreamId) {
        if self.upstreams.remove(&upstream).is_some() {
            self.work.push(SocketWork::Close { upstream });
        }
    }

    fn send_upstream(&mut self, upstream: UpstreamId, datagram: &[u8]) -> Result<(), SendError> {
        if !self.upstreams.contains_key(&upstream) {
            return Err(SendError("no such upstream".into()));
        }
        self.work.push(SocketWork::SendUpstream { upstream, datagram: datagram.to_vec() });
        Ok(())
    }

    fn send_to_client(
        &mut self,
        listener: ListenerId,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), SendError> {
        self.work.push(SocketWork::SendToClient { listener, client, datagram: datagram.to_vec() });
        Ok(())
    }

    fn start_probe(&mut self, probe: &ProbeRequest) {
        self.work.push(SocketWork::Probe(probe.clone()));
    }

    fn notify(&mut self, output: &Output) {
        self.notices.push(output.clone());
    }
}
