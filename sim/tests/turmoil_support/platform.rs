//! The core driver's [`Platform`] on turmoil: a buffer between the driver's synchronous calls
//! and turmoil's asynchronous sockets.
//!
//! The driver calls the platform in the middle of a core call, where nothing may await. So the
//! platform only writes down what the core asked for, in order ([`SocketWork`]), and keeps the
//! one piece of state the driver needs at once: which upstreams are open and for which flow.
//! The balancer host carries the work out on real turmoil sockets as soon as the driver call
//! returns, in the same order, so an upstream is always bound before its first datagram is
//! sent.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use udplb_core::balancer::Output;
use udplb_core::driver::{OpenError, Platform};
use udplb_core::health::ProbeRequest;
use udplb_core::{BackendId, Balancer, FlowId, Instant, ListenerId};

/// Socket work the core asked for during one driver call.
#[derive(Debug)]
pub enum SocketWork {
    /// Bind an upstream socket and connect it to `backend`.
    Open { upstream: FlowId, backend: SocketAddr },
    /// Close an upstream socket.
    Close { upstream: FlowId },
    /// Send a datagram on an upstream socket.
    SendUpstream { upstream: FlowId, datagram: Vec<u8> },
    /// Send a datagram to a client from a listener's socket.
    SendToClient { listener: ListenerId, client: SocketAddr, datagram: Vec<u8> },
    /// Start a health probe.
    Probe(ProbeRequest),
}

/// The turmoil platform under the driver.
#[derive(Debug, Default)]
pub struct TurmoilPlatform {
    /// Upstreams open as the core sees them (from the moment it asked), by flow.
    pub upstreams: BTreeSet<FlowId>,
    /// Backends of the flows opened during the last driver call, in order.
    pub opened: Vec<BackendId>,
    /// Work waiting to be carried out, oldest first.
    pub work: Vec<SocketWork>,
    /// Outputs to record (names are resolved afterwards, with the core at hand).
    pub notices: Vec<Output>,
}

impl Platform for TurmoilPlatform {
    fn open_upstream(
        &mut self,
        _now: Instant,
        flow: FlowId,
        backend: BackendId,
        address: SocketAddr,
    ) -> Result<(), OpenError> {
        // Binding cannot fail for want of ports here: the scenarios open far fewer upstreams
        // than turmoil's ephemeral range holds, and the balancer host reports a failed bind as
        // a broken run rather than hiding it.
        self.upstreams.insert(flow);
        self.opened.push(backend);
        self.work.push(SocketWork::Open { upstream: flow, backend: address });
        Ok(())
    }

    fn close_upstream(&mut self, _now: Instant, flow: FlowId) {
        if self.upstreams.remove(&flow) {
            self.work.push(SocketWork::Close { upstream: flow });
        }
    }

    fn send_upstream(&mut self, flow: FlowId, datagram: &[u8]) {
        // The core sends only on upstreams it opened and has not closed.
        if self.upstreams.contains(&flow) {
            self.work.push(SocketWork::SendUpstream { upstream: flow, datagram: datagram.to_vec() });
        }
    }

    fn send_to_client(
        &mut self,
        listener: ListenerId,
        _local: SocketAddr,
        client: SocketAddr,
        datagram: &[u8],
    ) {
        self.work.push(SocketWork::SendToClient { listener, client, datagram: datagram.to_vec() });
    }

    fn start_probe(&mut self, _now: Instant, probe: &ProbeRequest) {
        self.work.push(SocketWork::Probe(probe.clone()));
    }

    fn notify(&mut self, _core: &Balancer, output: &Output) {
        self.notices.push(output.clone());
    }
}
