//! The two datagram inputs. Each returns its own verdict; neither allocates on an
//! established flow, and neither touches the deadline index unless a flow opens or closes.

use std::net::{IpAddr, SocketAddr};

use super::entry::Flow;
use super::{BackendVerdict, ClientDatagram, ClientVerdict, DrainState, FlowManager, Incoming};
use crate::config::{ProxyProtocolConfig, ProxyProtocolMode};
use crate::id::{FlowId, ListenerId};
use crate::outcome::{CloseReason, DropReason};
use crate::proxy_v2::{self, TlvOptions};
use crate::select::SelectionRequest;
use crate::time::Instant;
use crate::timer::TimerHandle;

impl FlowManager {
    /// A datagram from a client on a listener: forward it on its flow, stage a new flow for it
    /// ([`ClientVerdict::Open`]), or drop it.
    ///
    /// Admission order for a datagram that would start a flow: `Truncated`, `Invalid`,
    /// `Draining`, `Shed`, `ProxyHeaderTooLarge`, `NoHealthyBackend`; nothing is allocated
    /// before all pass, and nothing is booked until [`FlowManager::accept`]. A datagram of an
    /// established flow is forwarded on that flow.
    pub fn handle_client_datagram(&mut self, now: Instant, datagram: ClientDatagram<'_>) -> ClientVerdict {
        let now = self.observe(now);
        let verdict = self.admit_client_datagram(now, datagram);
        self.debug_check();
        verdict
    }

    /// A datagram of `client` arrived on `listener`, and is about to be handled: if the client's
    /// live flow owes it a reply the back deadline would write off now (its cluster counts
    /// replies, the backend's reply time is known, and the fewest replies owed through the wait
    /// include an overdue one), the reply
    /// is written off at once, which retires the flow, so that the datagram starts a new flow,
    /// selected afresh. Returns whether it did. A lost reply then pins a client to its backend
    /// until the client's next datagram, not for `idle_timeout.back`: otherwise a lossy backend
    /// keeps every client it lost a reply of for a whole second of that client's traffic, and
    /// gains traffic for losing it. The balancer calls this, and routes the write-off's passive
    /// failures to the health monitor, before it hands the datagram over, so the new flow's
    /// selection already knows them.
    pub fn write_off_overdue(
        &mut self,
        now: Instant,
        listener: ListenerId,
        local: Option<IpAddr>,
        client: SocketAddr,
    ) -> bool {
        let now = self.observe(now);
        let Some(state) = self.listeners.get(listener.0 as usize).filter(|l| !l.removed) else {
            return false;
        };
        let vip = state.vip(local);
        let hash = self.table.hash(vip, client, state.affinity);
        let Some(slot) = self.table.find(hash, listener, vip, client, state.affinity) else { return false };
        let flow = self.table.get(slot);
        let teardown = self.teardown_of(flow);
        if flow.retired || teardown.responses.is_none() {
            return false;
        }
        // Only against a known reply time: before the backend has answered anything, a
        // request in flight is not yet overdue here (a client that pipelines its first
        // queries would otherwise be charged for all of them); the back deadline judges it.
        let Some(fastest) = self.backends[flow.backend.0 as usize].reply_time.fastest() else {
            return false;
        };
        if teardown.due_at_deadline(flow, now, Some(fastest)).0 == 0 {
            return false;
        }
        self.write_off(now, slot);
        self.debug_check();
        true
    }

    fn admit_client_datagram(&mut self, now: Instant, datagram: ClientDatagram<'_>) -> ClientVerdict {
        let ClientDatagram { listener: listener_id, client, local, buffer, headroom, truncated } = datagram;
        let Some(listener) = self.listeners.get(listener_id.0 as usize).filter(|l| !l.removed) else {
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
        if payload_len == 0 && listener.drops_empty {
            counters.drop_for(DropReason::Empty);
            return ClientVerdict::Drop(DropReason::Empty);
        }
        // Trusted ingress: the client a trusted upstream's header names, and the header's
        // length, left out of what is forwarded.
        let (client, via, skip) = match &listener.accept_proxy {
            None => (client, None, 0),
            Some(accept) => match ingress(accept, client, &buffer[headroom..]) {
                Ok(found) => found,
                Err(reason) => {
                    counters.drop_for(reason);
                    return ClientVerdict::Drop(reason);
                }
            },
        };
        let headroom = headroom + skip;
        let (vip, affinity, cluster_id) = (listener.vip(local), listener.affinity, listener.cluster);
        let draining = matches!(listener.drain, DrainState::Draining { .. });
        let listener_max_flows = u64::from(listener.max_flows);
        let proxy = self.clusters[cluster_id.0 as usize].proxy_protocol;
        let hash = self.table.hash(vip, client, affinity);

        let mut found = self.table.find(hash, listener_id, vip, client, affinity);
        let mut reselected = false;
        if let Some(slot) = found
            && self.reselects(slot)
        {
            let backend = self.table.get(slot).backend;
            self.stats.backends[backend.0 as usize].flows_reselected += 1;
            self.close_flow(slot, CloseReason::Reselected);
            found = None;
            reselected = true;
        }
        if let Some(slot) = found {
            let flow = self.table.get(slot);
            let serial = flow.serial;
            // The flow's own cluster (its backend's), which a reload may have made differ
            // from the listener's.
            let proxy =
                self.clusters[self.backends[flow.backend.0 as usize].cluster.0 as usize].proxy_protocol;
            let prefix_len = if proxy.mode == ProxyProtocolMode::Every {
                match self.write_proxy_header(listener_id, vip, proxy, client, serial, buffer, headroom) {
                    Ok(len) => len,
                    Err(reason) => return self.drop_client(listener_id, reason),
                }
            } else {
                0
            };
            let closes = self.forward_on_flow(now, slot, client, via, &buffer[headroom..], true);
            return ClientVerdict::Forward { flow: FlowId { slot, serial }, prefix_len, skip, closes };
        }

        // A new flow: every check before anything is allocated.
        if draining {
            return self.drop_client(listener_id, DropReason::Draining);
        }
        let listener_flows = self.stats.listeners[listener_id.0 as usize].flows.active;
        if let Some(sources) = &mut self.listeners[listener_id.0 as usize].sources {
            let admitted = sources.admit(now, client.ip());
            let stats = &mut self.stats.listeners[listener_id.0 as usize];
            sources.publish(stats);
            if let Err(reason) = admitted {
                return self.drop_client(listener_id, reason);
            }
        }
        if self.table.len() >= self.max_flows as usize || listener_flows >= listener_max_flows {
            return self.drop_client(listener_id, DropReason::Shed);
        }
        let serial = self.next_serial;
        let prefix_len = if proxy.mode == ProxyProtocolMode::Off {
            0
        } else {
            match self.write_proxy_header(listener_id, vip, proxy, client, serial, buffer, headroom) {
                Ok(len) => len,
                Err(reason) => return self.drop_client(listener_id, reason),
            }
        };
        let affinity_hash = self.selection_hasher.flow_hash(vip, client, affinity);
        let backends = &self.backends;
        let cluster = &mut self.clusters[cluster_id.0 as usize];
        // QUIC-LB: a connection ID that names a backend takes the flow there (`quic.rs`).
        let (routed, quic) = match &cluster.quic_lb {
            Some(_) if crate::mutants::active(crate::mutants::Mutant::QuicLbIgnored) => {
                (None, Some(super::QuicRoute::UnknownServer))
            }
            Some(routing) => {
                let (routed, route) =
                    routing.route(&buffer[headroom..], |backend| backends[backend.0 as usize].health);
                (routed, Some(route))
            }
            None => (None, None),
        };
        let fail_open =
            cluster.fail_open && !crate::mutants::active(crate::mutants::Mutant::FailOpenNeverOpens);
        let selection = match routed {
            Some(backend) => Some(crate::select::Selection {
                candidate: backends[backend.0 as usize].candidate,
                backend,
                fail_open: false,
            }),
            None => {
                let request = SelectionRequest { affinity_hash, exclude: &[], fail_open };
                cluster.selector.select(&cluster.candidates, request)
            }
        };
        let Some(selection) = selection else {
            return self.drop_client(listener_id, DropReason::NoHealthyBackend);
        };
        let decision = super::Decision::of(cluster, &selection, reselected, quic);
        if let Some(route) = quic {
            self.stats.listeners[listener_id.0 as usize].quic_lb[route.index()] += 1;
        }
        // Counted as forwarded now, so the books balance while the upstream opens; a refused
        // open re-books it as dropped.
        self.stats.listeners[listener_id.0 as usize].client.pass(payload_len);
        ClientVerdict::Open(Incoming {
            flow: FlowId { slot: self.table.next_slot(), serial },
            listener: listener_id,
            backend: selection.backend,
            address: self.backends[selection.backend.0 as usize].address,
            client,
            local: vip,
            hash,
            // A header fits the datagram, which fits 65,507 bytes.
            prefix_len: u16::try_from(prefix_len).unwrap_or(u16::MAX),
            payload_len: u32::try_from(payload_len - skip).unwrap_or(u32::MAX),
            fail_open: selection.fail_open,
            resend: false,
            decision,
            via,
            skip: u16::try_from(skip).unwrap_or(u16::MAX),
        })
    }

    /// Whether the flow's next datagram should leave it for a new flow: its backend is out
    /// for its health (Down or ejected; an operator's decisions keep flows), its cluster says
    /// `on_backend_down = "reselect"`, and another backend can take the client.
    fn reselects(&self, slot: u32) -> bool {
        let backend = &self.backends[self.table.get(slot).backend.0 as usize];
        let cluster = &self.clusters[backend.cluster.0 as usize];
        if cluster.on_backend_down != crate::config::OnBackendDown::Reselect
            || backend.admin != crate::health::AdminState::Enabled
            || crate::mutants::active(crate::mutants::Mutant::ReselectKeepsFlow)
        {
            return false;
        }
        let candidates = &cluster.candidates;
        let out = candidates.get(backend.candidate).is_some_and(|c| !c.eligible);
        out && candidates.iter().any(|c| c.eligible && c.weight > 0)
    }

    /// `incoming`'s upstream is open: book the flow and forward `datagram` (the bytes to send,
    /// PROXY header included) on it. Returns the `Forward` to act on, or (for an `Incoming`
    /// whose id or key was taken since it was handed out, see [`Incoming`])
    /// `Drop(UpstreamOpenFailed)`: then the caller closes the upstream it opened.
    pub fn accept(&mut self, now: Instant, incoming: Incoming, datagram: &[u8]) -> ClientVerdict {
        let now = self.observe(now);
        let verdict = if self.is_current(&incoming) {
            self.book_incoming(now, &incoming, datagram)
        } else {
            self.refuse_incoming(&incoming);
            ClientVerdict::Drop(DropReason::UpstreamOpenFailed)
        };
        self.debug_check();
        verdict
    }

    /// `incoming`'s upstream could not be opened (EMFILE, EADDRINUSE, ...): no flow exists; its
    /// datagram counts as dropped (`UpstreamOpenFailed`), and as a flow created and closed
    /// for that reason.
    pub fn refuse(&mut self, now: Instant, incoming: Incoming) {
        self.observe(now);
        self.refuse_incoming(&incoming);
        self.debug_check();
    }

    /// Whether nothing has changed since `incoming` was handed out that would give its flow
    /// another id or key. Every booking takes the next serial, so an unchanged serial means no
    /// flow was booked since: its slot is still vacant and no flow holds its key (closes free
    /// slots and keys, never take them). Only a reload in between can remove its listener or
    /// backend. No hash probe is needed.
    fn is_current(&self, incoming: &Incoming) -> bool {
        let listener_live = self.listeners.get(incoming.listener.0 as usize).is_some_and(|l| !l.removed);
        let backend_live = self.backends.get(incoming.backend.0 as usize).is_some_and(|b| !b.removed);
        let current = listener_live && backend_live && self.next_serial == incoming.flow.serial;
        debug_assert!(
            !current || self.table.is_free(incoming.flow.slot),
            "an unchanged serial left the slot free"
        );
        current
    }

    fn book_incoming(&mut self, now: Instant, incoming: &Incoming, datagram: &[u8]) -> ClientVerdict {
        let listener = incoming.listener;
        if incoming.fail_open {
            self.stats.listeners[listener.0 as usize].fail_open_flows += 1;
        }
        let slot = incoming.flow.slot;
        self.open_flow(now, incoming);
        if incoming.resend {
            self.table.get_mut(slot).retried = true;
            self.stats.retries.resent += 1;
        }
        let payload = datagram.get(incoming.prefix_len()..).unwrap_or_default();
        // Counted when it arrived (a client datagram) or when first forwarded (a re-send).
        let closes = self.forward_on_flow(now, slot, incoming.client, incoming.via, payload, false);
        ClientVerdict::Forward {
            flow: incoming.flow,
            prefix_len: incoming.prefix_len(),
            skip: incoming.skip(),
            closes,
        }
    }

    fn refuse_incoming(&mut self, incoming: &Incoming) {
        let listener = incoming.listener.0 as usize;
        if listener >= self.stats.listeners.len() {
            return;
        }
        if !incoming.resend {
            self.stats.listeners[listener]
                .client
                .reclassify_as_dropped(incoming.payload_len as usize, DropReason::UpstreamOpenFailed);
        }
        for counters in [&mut self.stats.listeners[listener].flows, &mut self.stats.flows] {
            counters.created += 1;
            counters.closed[CloseReason::UpstreamOpenFailed.index()] += 1;
        }
    }

    /// Creates `incoming`'s flow (its upstream is open) in its slot, indexes it under its hash
    /// and books it. The caller forwards its first datagram.
    fn open_flow(&mut self, now: Instant, incoming: &Incoming) {
        let Incoming { flow, listener, backend, client, local, hash, decision, via, .. } = *incoming;
        let slot = flow.slot;
        let local = local.ip();
        let serial = self.next_serial;
        self.next_serial += 1;
        self.table.insert_at(
            slot,
            Flow {
                serial,
                hash,
                listener,
                backend,
                client,
                via: via.map(Box::new),
                local,
                created: now,
                last_client: now,
                last_backend: now,
                awaiting_since: Instant::MAX,
                // Armed by `forward_on_flow`, before the call that opened the flow returns.
                timer: TimerHandle::DISARMED,
                requests: 0,
                responses: 0,
                recent: None,
                retired: false,
                retried: false,
                decision,
                return_credit: self.clusters[self.backends[backend.0 as usize].cluster.0 as usize]
                    .amplification
                    .map_or(0, |cap| cap.allowance_bytes),
                retry: Vec::new(),
            },
        );
        for counters in [&mut self.stats.listeners[listener.0 as usize].flows, &mut self.stats.flows] {
            counters.created += 1;
            counters.active += 1;
        }
        if let Some(sources) = &mut self.listeners[listener.0 as usize].sources {
            sources.opened(now, client.ip());
            let stats = &mut self.stats.listeners[listener.0 as usize];
            sources.publish(stats);
        }
        self.backend_flow_opened(backend);
    }

    /// Books one forwarded client datagram on an established (or just created) flow: the
    /// counters (unless `count` is false: a re-sent datagram was counted when it arrived), the
    /// retry slot, the wait for a reply, retirement at `requests`. Re-arms the flow's timer
    /// only if it was just created; otherwise the armed entry stays (it is never late, see
    /// `Teardown::arm_time`). Returns whether the flow ended with this datagram.
    pub(super) fn forward_on_flow(
        &mut self,
        now: Instant,
        slot: u32,
        client: std::net::SocketAddr,
        via: Option<std::net::SocketAddr>,
        payload: &[u8],
        count: bool,
    ) -> bool {
        let payload_len = payload.len();
        let cluster =
            &self.clusters[self.backends[self.table.get(slot).backend.0 as usize].cluster.0 as usize];
        let keep_for_retry = cluster.retry_on_refused && cluster.teardown.responses != Some(0);
        let keep_for_retry = keep_for_retry && !self.table.get(slot).retried;
        let teardown = &cluster.teardown;
        let flow = self.table.get_mut(slot);
        let listener = flow.listener;
        let is_new = flow.requests == 0;
        if keep_for_retry && flow.responses == 0 {
            if !self.retry_slots.keep(&mut flow.retry, payload) {
                self.stats.retries.not_kept_over_budget += 1;
            }
            self.stats.retries.bytes_kept = self.retry_slots.bytes_kept();
        }
        flow.client = client;
        // Replies go to the upstream the latest datagram came through (no allocation when it
        // is the same one).
        if flow.via.as_deref() != via.as_ref() {
            flow.via = via.map(Box::new);
        }
        flow.last_client = now;
        flow.requests = flow.requests.saturating_add(1);
        if let Some(cap) = cluster.amplification {
            let earned = u64::from(cap.factor) * payload_len as u64;
            flow.return_credit = u32::try_from(u64::from(flow.return_credit) + earned).unwrap_or(u32::MAX);
        }
        // Per request only: per flow, a copy changes nothing that is owed.
        if teardown.drops_copies()
            && teardown.responses_mode == crate::config::ResponsesMode::PerRequest
            && !crate::mutants::active(crate::mutants::Mutant::CopiedRequestsOwed)
            && !flow.note_request(payload, now)
        {
            // A copy the network made: forwarded (the backend deduplicates, or answers twice,
            // and the second answer is a copy too), but it adds nothing to what is owed.
            let recent = flow.recent();
            recent.copies = recent.copies.saturating_add(1);
        }
        if teardown.responses.is_some_and(|n| n > 0) {
            flow.note_send(now);
        }
        if !flow.is_awaiting() && teardown.owes_replies(flow) != Some(false) {
            flow.awaiting_since = now;
            if teardown.responses.is_some_and(|n| n > 0) {
                let owed = teardown.owed_now(flow);
                flow.recent().floor = owed;
            }
        }
        let retires = teardown.requests_reached(flow);
        let owes_nothing = teardown.owes_replies(flow) == Some(false);
        if count {
            self.stats.listeners[listener.0 as usize].client.pass(payload_len);
        }
        if retires {
            self.retire_flow(slot);
            if owes_nothing {
                // `responses = 0`: no reply will come, so the flow is done once it has sent.
                self.close_flow(slot, CloseReason::RequestsReached);
                return true;
            }
        }
        if is_new {
            self.rearm_flow(now, slot);
        }
        false
    }

    /// Takes a flow out of the key index: the client's next datagram starts a new flow, and
    /// this one only waits for the replies it is owed.
    pub(super) fn retire_flow(&mut self, slot: u32) {
        let flow = self.table.get_mut(slot);
        flow.retired = true;
        let listener = flow.listener;
        self.table.unindex(slot);
        self.stats.listeners[listener.0 as usize].flows.retired += 1;
        self.stats.flows.retired += 1;
    }

    /// Writes the PROXY v2 header for this client into the end of the headroom.
    #[allow(clippy::too_many_arguments)]
    fn write_proxy_header(
        &self,
        listener: ListenerId,
        vip: SocketAddr,
        config: ProxyProtocolConfig,
        client: std::net::SocketAddr,
        serial: u64,
        buffer: &mut [u8],
        headroom: usize,
    ) -> Result<usize, DropReason> {
        let listener = &self.listeners[listener.0 as usize];
        let tlvs =
            TlvOptions { crc32c: config.crc32c, unique_id: config.unique_id.then(|| self.unique_id(serial)) };
        let header_len = proxy_v2::proxy_header_len(client, vip, tlvs);
        let payload_len = buffer.len() - headroom;
        if payload_len + header_len > listener.max_datagram_size {
            return Err(DropReason::ProxyHeaderTooLarge);
        }
        if header_len > headroom {
            return Err(DropReason::InsufficientHeadroom);
        }
        let start = headroom - header_len;
        proxy_v2::write_proxy_header(&mut buffer[start..headroom], client, vip, tlvs)
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
        let verdict = self.return_backend_datagram(now, flow, payload, truncated);
        self.debug_check();
        verdict
    }

    fn return_backend_datagram(
        &mut self,
        now: Instant,
        id: FlowId,
        payload: &[u8],
        truncated: bool,
    ) -> BackendVerdict {
        let payload_len = payload.len();
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
        let backend = self.table.get(slot).backend;
        let cluster = self.backends[backend.0 as usize].cluster;
        let teardown = &self.clusters[cluster.0 as usize].teardown;
        let flow = self.table.get_mut(slot);
        let drops_copies =
            teardown.drops_copies() && !crate::mutants::active(crate::mutants::Mutant::DuplicateRepliesKept);
        if drops_copies && !flow.note_reply(payload, now) {
            counters.drop_for(DropReason::DuplicateReply);
            self.stats.backends[backend.0 as usize].duplicate_replies += 1;
            return BackendVerdict::Drop(DropReason::DuplicateReply);
        }
        if let Some(cap) = self.clusters[cluster.0 as usize].amplification {
            let datagrams_allowed =
                u64::from(cap.factor) * u64::from(flow.requests) + u64::from(cap.allowance_datagrams);
            let bytes = u32::try_from(payload_len).unwrap_or(u32::MAX);
            if u64::from(flow.responses) >= datagrams_allowed || bytes > flow.return_credit {
                counters.drop_for(DropReason::Amplification);
                self.stats.backends[backend.0 as usize].amplification_drops += 1;
                return BackendVerdict::Drop(DropReason::Amplification);
            }
            flow.return_credit -= bytes;
        }
        counters.pass(payload_len);
        flow.last_backend = now;
        let waiting_since = flow.awaiting_since;
        if teardown.takes_back(flow) {
            flow.recent().written_off -= 1;
            self.stats.backends[backend.0 as usize].replies_taken_back += 1;
        } else if flow.copies() > 0 && teardown.owes_replies(flow) == Some(false) {
            // Nothing is owed, yet a reply came that is no copy: the backend answered a copied
            // request too, with other bytes. It settles the copy instead of a request to come.
            flow.recent().copies -= 1;
        }
        flow.responses = flow.responses.saturating_add(1);
        // A flow that has had a reply is never retried: its kept datagram can go.
        if flow.responses == 1 {
            self.retry_slots.release(&mut flow.retry);
            self.stats.retries.bytes_kept = self.retry_slots.bytes_kept();
        }
        let matched = teardown.answered_request(flow).and_then(|request| flow.reply_time(now, request));
        if let Some(took) = matched {
            self.backends[backend.0 as usize].reply_time.sample(now, took);
        }
        match teardown.owes_replies(flow) {
            Some(true) => {
                let floor = flow.floor().min(teardown.owed_now(flow));
                flow.recent().floor = floor;
            }
            // Retired by a write-off: it keeps waiting, from the write-off, for the rest of
            // the replies written off.
            Some(false) if flow.awaits_late_replies() => {}
            // Nothing owed, or the count is unknown: the next client datagram starts a wait.
            Some(false) | None => flow.awaiting_since = Instant::MAX,
        }
        // Where replies are not matched to requests, a reply that ends a wait measures it.
        let ended_wait =
            (!teardown.counts_per_request() && waiting_since != Instant::MAX && !flow.is_awaiting())
                .then(|| now.saturating_duration_since(waiting_since));
        if let Some(took) = matched.or(ended_wait) {
            self.stats.backends[backend.0 as usize].reply_latency.record(took);
        }
        let completes = teardown.completes_request(flow);
        // A flow retired by a write-off stays for the rest of the replies written off.
        let reached = teardown.responses_reached(flow) && !flow.awaits_late_replies();
        // A retired flow that owes nothing and waits for no late reply is done (its deadline
        // is now): this reply took back its last write-off under a reply count that asks for
        // none (`responses = 0`, set by a reload).
        let done = !reached
            && flow.retired
            && !flow.awaits_late_replies()
            && teardown.owes_replies(flow) == Some(false);
        let (client, local) = (flow.via.as_deref().copied().unwrap_or(flow.client), flow.local);
        if completes {
            self.passive_success(backend, 1);
        }
        if reached {
            self.close_flow(slot, CloseReason::ResponsesReached);
        } else if done {
            self.close_flow(slot, CloseReason::RequestsReached);
        }
        let listener = &self.listeners[listener_id.0 as usize];
        let local = if crate::mutants::active(crate::mutants::Mutant::RepliesFromListenerAddress) {
            listener.address
        } else {
            SocketAddr::new(local, listener.address.port())
        };
        BackendVerdict::Return { listener: listener_id, client, local }
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

/// Trusted ingress (`accept_proxy`): who the client of a datagram from `peer` is, the trusted
/// upstream it came through (where replies go), and how many bytes of header to leave out of
/// what is forwarded. A header from a source that is not trusted is refused (it would let
/// anyone pose as any client); so is a datagram without one where headers are `required`,
/// and a malformed one from a trusted upstream. A LOCAL header (an upstream's own health
/// check) names no client: the datagram is the upstream's own.
fn ingress(
    accept: &crate::config::AcceptProxyConfig,
    peer: std::net::SocketAddr,
    payload: &[u8],
) -> Result<(std::net::SocketAddr, Option<std::net::SocketAddr>, usize), DropReason> {
    let signed = payload.starts_with(&crate::proxy_v2::SIGNATURE);
    if !accept.trusts(peer.ip()) {
        return if signed || accept.required { Err(DropReason::ProxyUntrusted) } else { Ok((peer, None, 0)) };
    }
    if !signed {
        return if accept.required { Err(DropReason::ProxyMissing) } else { Ok((peer, None, 0)) };
    }
    let (header, consumed) = crate::proxy_v2::Header::parse(payload).map_err(|_| DropReason::ProxyInvalid)?;
    match header.proxied_endpoints() {
        Some((client, _)) => Ok((client, Some(peer), consumed)),
        None => Ok((peer, None, consumed)),
    }
}
