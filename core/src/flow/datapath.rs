//! The two datagram inputs. Each returns its own verdict; neither allocates on an
//! established flow, and neither touches the deadline index unless a flow opens or closes.

use super::entry::Flow;
use super::{BackendVerdict, ClientDatagram, ClientVerdict, DrainState, FlowManager, Output};
use crate::config::ProxyProtocolMode;
use crate::id::{FlowId, ListenerId, UpstreamId};
use crate::outcome::{CloseReason, DropReason};
use crate::proxy_v2::{self, TlvOptions};
use crate::select::SelectionRequest;
use crate::time::Instant;
use crate::timer::TimerHandle;

impl FlowManager {
    /// A datagram from a client on a listener: forward it (possibly opening a flow) or drop it.
    ///
    /// Admission order for a datagram that would start a flow: `Truncated`, `Invalid`,
    /// `Draining`, `Shed`, `ProxyHeaderTooLarge`, `NoHealthyBackend`; nothing is allocated
    /// before all pass. A datagram of an established flow is forwarded on that flow.
    pub fn handle_client_datagram(&mut self, now: Instant, datagram: ClientDatagram<'_>) -> ClientVerdict {
        let now = self.observe(now);
        let verdict = self.admit_client_datagram(now, datagram);
        self.debug_check();
        verdict
    }

    fn admit_client_datagram(&mut self, now: Instant, datagram: ClientDatagram<'_>) -> ClientVerdict {
        let ClientDatagram { listener: listener_id, client, buffer, headroom, truncated } = datagram;
        let Some(listener) = self.listeners.get(listener_id.0 as usize) else {
            self.stats.unattributed.receive(buffer.len().saturating_sub(headroom));
            return self.drop_unattributed(DropReason::UnknownListener);
        };
        let payload_len = buffer.len().saturating_sub(headroom);
        let counters = &mut self.stats.listeners[listener_id.0 as usize].client;
        counters.receive(payload_len);
        if headroom > buffer.len() {
            counters.drop_for(DropReason::InsufficientHeadroom);
            return ClientVerdict::Drop(DropReason::InsufficientHeadroom);
        }
        if truncated || payload_len > listener.max_datagram_size {
            counters.drop_for(DropReason::Truncated);
            return ClientVerdict::Drop(DropReason::Truncated);
        }
        if payload_len == 0 {
            counters.drop_for(DropReason::Invalid);
            return ClientVerdict::Drop(DropReason::Invalid);
        }
        let (vip, affinity, cluster_id) = (listener.address, listener.affinity, listener.cluster);
        let draining = matches!(listener.drain, DrainState::Draining { .. });
        let listener_max_flows = u64::from(listener.max_flows);
        let proxy = self.clusters[cluster_id.0 as usize].proxy_protocol;
        let hash = self.table.hash(vip, client, affinity);

        if let Some(slot) = self.table.find(hash, listener_id, client, affinity) {
            let serial = self.table.get(slot).serial;
            let prefix_len = if proxy.mode == ProxyProtocolMode::Every {
                match self.write_proxy_header(listener_id, client, serial, buffer, headroom) {
                    Ok(len) => len,
                    Err(reason) => return self.drop_client(listener_id, reason),
                }
            } else {
                0
            };
            self.forward_on_flow(now, slot, client, payload_len);
            return ClientVerdict::Forward {
                flow: FlowId { slot, serial },
                upstream: UpstreamId(serial),
                prefix_len,
            };
        }

        // A new flow: every check before anything is allocated.
        if draining {
            return self.drop_client(listener_id, DropReason::Draining);
        }
        let listener_flows = self.stats.listeners[listener_id.0 as usize].flows.active;
        if self.table.len() >= self.max_flows as usize || listener_flows >= listener_max_flows {
            return self.drop_client(listener_id, DropReason::Shed);
        }
        let serial = self.next_serial;
        let prefix_len = if proxy.mode == ProxyProtocolMode::Off {
            0
        } else {
            match self.write_proxy_header(listener_id, client, serial, buffer, headroom) {
                Ok(len) => len,
                Err(reason) => return self.drop_client(listener_id, reason),
            }
        };
        let affinity_hash = self.selection_hasher.flow_hash(vip, client, affinity);
        let cluster = &mut self.clusters[cluster_id.0 as usize];
        let request = SelectionRequest { affinity_hash, exclude: &[], fail_open: false };
        let Some(selection) = cluster.selector.select(&cluster.candidates, request) else {
            return self.drop_client(listener_id, DropReason::NoHealthyBackend);
        };

        self.next_serial += 1;
        let flow = Flow {
            serial,
            hash,
            listener: listener_id,
            backend: selection.backend,
            client,
            created: now,
            last_client: now,
            last_backend: now,
            awaiting_since: Instant::MAX,
            // Armed by `forward_on_flow` below, before this call returns.
            timer: TimerHandle::DISARMED,
            requests: 0,
            responses: 0,
            first_datagram_bytes: payload_len as u32,
            retired: false,
        };
        let slot = self.table.insert(flow);
        let listener_stats = &mut self.stats.listeners[listener_id.0 as usize].flows;
        listener_stats.created += 1;
        listener_stats.active += 1;
        self.stats.flows.created += 1;
        self.stats.flows.active += 1;
        let id = FlowId { slot, serial };
        self.opened_this_turn = Some(id);
        self.outputs.push_back(Output::OpenUpstream {
            upstream: UpstreamId(serial),
            flow: id,
            listener: listener_id,
            backend: selection.backend,
            address: self.backends[selection.backend.0 as usize].address,
        });
        self.forward_on_flow(now, slot, client, payload_len);
        ClientVerdict::Forward { flow: id, upstream: UpstreamId(serial), prefix_len }
    }

    /// Books one forwarded client datagram on an established (or just created) flow: the
    /// counters, the wait for a reply, retirement at `requests`. Re-arms the flow's timer only
    /// if it was just created; otherwise the armed entry stays (it is never late, see
    /// `Teardown::arm_time`).
    fn forward_on_flow(&mut self, now: Instant, slot: u32, client: std::net::SocketAddr, payload_len: usize) {
        let flow = self.table.get_mut(slot);
        let listener = flow.listener;
        let cluster = self.listeners[listener.0 as usize].cluster;
        let teardown = &self.clusters[cluster.0 as usize].teardown;
        let is_new = flow.requests == 0;
        flow.client = client;
        flow.last_client = now;
        flow.requests = flow.requests.saturating_add(1);
        if !flow.is_awaiting() && teardown.owes_replies(flow) != Some(false) {
            flow.awaiting_since = now;
        }
        let retires = teardown.requests_reached(flow);
        let owes_nothing = teardown.owes_replies(flow) == Some(false);
        self.stats.listeners[listener.0 as usize].client.pass(payload_len);
        if retires {
            flow.retired = true;
            self.table.unindex(slot);
            self.stats.listeners[listener.0 as usize].flows.retired += 1;
            self.stats.flows.retired += 1;
            if owes_nothing {
                // `responses = 0`: no reply will come, so the flow is done once it has sent.
                self.close_flow(slot, CloseReason::RequestsReached);
                return;
            }
        }
        if is_new {
            self.rearm_flow(now, slot);
        }
    }

    /// Writes the PROXY v2 header for this client into the end of the headroom.
    fn write_proxy_header(
        &self,
        listener: ListenerId,
        client: std::net::SocketAddr,
        serial: u64,
        buffer: &mut [u8],
        headroom: usize,
    ) -> Result<usize, DropReason> {
        let listener = &self.listeners[listener.0 as usize];
        let config = self.clusters[listener.cluster.0 as usize].proxy_protocol;
        let tlvs = TlvOptions { crc32c: config.crc32c, unique_id: config.unique_id.then_some(serial) };
        let header_len = proxy_v2::proxy_header_len(client, listener.address, tlvs);
        let payload_len = buffer.len() - headroom;
        if payload_len + header_len > listener.max_datagram_size {
            return Err(DropReason::ProxyHeaderTooLarge);
        }
        if header_len > headroom {
            return Err(DropReason::InsufficientHeadroom);
        }
        let start = headroom - header_len;
        proxy_v2::write_proxy_header(&mut buffer[start..headroom], client, listener.address, tlvs)
            .map_err(|_| DropReason::InsufficientHeadroom)
    }

    /// A datagram from a backend on `flow`'s upstream: return it to the flow's client.
    pub fn handle_backend_datagram(
        &mut self,
        now: Instant,
        flow: FlowId,
        payload: &[u8],
        truncated: bool,
    ) -> BackendVerdict {
        let now = self.observe(now);
        let verdict = self.return_backend_datagram(now, flow, payload.len(), truncated);
        self.debug_check();
        verdict
    }

    fn return_backend_datagram(
        &mut self,
        now: Instant,
        id: FlowId,
        payload_len: usize,
        truncated: bool,
    ) -> BackendVerdict {
        let Some(slot) = self.table.resolve(id) else {
            self.stats.unattributed.receive(payload_len);
            self.stats.unattributed.drop_for(DropReason::UnknownFlow);
            return BackendVerdict::Drop(DropReason::UnknownFlow);
        };
        let listener_id = self.table.get(slot).listener;
        let listener = &self.listeners[listener_id.0 as usize];
        let counters = &mut self.stats.listeners[listener_id.0 as usize].backend;
        counters.receive(payload_len);
        if truncated || payload_len > listener.max_datagram_size {
            counters.drop_for(DropReason::Truncated);
            return BackendVerdict::Drop(DropReason::Truncated);
        }
        counters.pass(payload_len);
        let teardown = &self.clusters[listener.cluster.0 as usize].teardown;
        let flow = self.table.get_mut(slot);
        flow.last_backend = now;
        flow.responses = flow.responses.saturating_add(1);
        flow.awaiting_since = if teardown.owes_replies(flow) == Some(true) { now } else { Instant::MAX };
        let client = flow.client;
        if teardown.responses_reached(flow) {
            self.close_flow(slot, CloseReason::ResponsesReached);
        }
        BackendVerdict::Return { listener: listener_id, client }
    }

    fn drop_client(&mut self, listener: ListenerId, reason: DropReason) -> ClientVerdict {
        self.stats.listeners[listener.0 as usize].client.drop_for(reason);
        ClientVerdict::Drop(reason)
    }

    fn drop_unattributed(&mut self, reason: DropReason) -> ClientVerdict {
        self.stats.unattributed.drop_for(reason);
        ClientVerdict::Drop(reason)
    }
}
