//! QUIC-LB routing of new flows, for a cluster with a `quic_lb` table.
//!
//! A QUIC server that knows the cluster's QUIC-LB configurations encodes its server ID in
//! every connection ID it issues; a client sends that ID as the destination connection ID of
//! its packets. When a datagram starts a flow (a new 4-tuple: a new client, or a client whose
//! NAT rebound its port), its destination connection ID is decoded: if it names a backend of
//! the cluster that is not Down, the flow goes to that backend, whatever the cluster's
//! algorithm would have picked, so the connection reaches the server that holds it. Anything
//! else — a client's first packets (their connection ID is the client's own, random), a
//! config ID the cluster does not know, an ID too short for its configuration, a server ID no
//! backend has, a backend that is Down — is *unroutable*, and the flow is placed by the
//! cluster's algorithm on its 4-tuple, as the draft requires. Either way the flow table then
//! remembers the 4-tuple: later datagrams of an established flow follow their flow, not their
//! connection ID, and are never decoded.
//!
//! A backend routed to by its server ID takes the flow even when an operator has disabled,
//! paused or drained it, or set its weight to 0: those stop *new* connections, which arrive
//! unroutable; a routable ID belongs to a connection that already lives on that server, and
//! sending it elsewhere would break it.

use crate::config::ClusterConfig;
use crate::health::Health;
use crate::id::BackendId;
use crate::outcome::QuicRoute;
use crate::quic_lb::{QuicLbConfigs, Route, ServerId, Unroutable};

/// A cluster's QUIC-LB state: its configurations and which backend has which server ID.
#[derive(Debug)]
pub(super) struct QuicRouting {
    configs: QuicLbConfigs,
    /// By server ID, for a binary search.
    servers: Vec<(ServerId, BackendId)>,
}

impl QuicRouting {
    /// The routing a cluster's configuration asks for; `backend_of` gives the id of the
    /// backend with that configured id. `None` without a `quic_lb` table (or, which
    /// validation rules out, one the codec rejects).
    pub(super) fn from_config(
        config: &ClusterConfig,
        backend_of: impl Fn(&str) -> Option<BackendId>,
    ) -> Option<QuicRouting> {
        let configs = config.quic_lb.as_ref()?.to_codec().ok()?;
        let mut servers: Vec<(ServerId, BackendId)> = config
            .backends
            .iter()
            .filter_map(|member| {
                let octets = crate::config::decode_hex(member.server_id.as_deref()?).ok()?;
                Some((ServerId::new(&octets).ok()?, backend_of(&member.id)?))
            })
            .collect();
        servers.sort_unstable();
        Some(QuicRouting { configs, servers })
    }

    /// Where a datagram that starts a flow goes: `Some(backend)` with [`QuicRoute::Routed`],
    /// or `None` and why it is unroutable. `health` gives a backend's health.
    pub(super) fn route(
        &self,
        datagram: &[u8],
        health: impl Fn(BackendId) -> Health,
    ) -> (Option<BackendId>, QuicRoute) {
        let server = match self.configs.route(datagram) {
            Route::Server(server) => server,
            Route::Unroutable(Unroutable::NotQuic) => return (None, QuicRoute::NotQuic),
            Route::Unroutable(Unroutable::UnknownConfig(_)) => return (None, QuicRoute::UnknownConfig),
            Route::Unroutable(Unroutable::TooShort) => return (None, QuicRoute::TooShort),
        };
        let Ok(found) = self.servers.binary_search_by(|(id, _)| id.cmp(&server)) else {
            return (None, QuicRoute::UnknownServer);
        };
        let backend = self.servers[found].1;
        if health(backend) == Health::Down {
            return (None, QuicRoute::ServerDown);
        }
        (Some(backend), QuicRoute::Routed)
    }
}
