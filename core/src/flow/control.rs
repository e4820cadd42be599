//! Every input other than datagrams: timeouts, upstream errors, admin commands; and the one
//! place a flow is closed.

use super::{
    AdminCommand, AdminError, DrainState, Event, FlowManager, Incoming, Output, TimerKey, UpstreamError,
};
use crate::id::{FlowId, ListenerId};
use crate::outcome::{CloseReason, DropReason, PassiveFailure};
use crate::proxy_v2::{self, TlvOptions};
use crate::select::SelectionRequest;
use crate::time::Instant;
use crate::timer::TimerHandle;

/// A deadline reports at most this many lost requests to the health monitor: a flow that
/// always has requests in flight may write off several at once (see
/// `Teardown::due_at_deadline`), and a handful says as much about the backend.
const MAX_FAILURES_PER_DEADLINE: u32 = 4;

impl FlowManager {
    /// Runs every deadline due at or before `now`. Afterwards [`FlowManager::poll_timeout`]
    /// is strictly later than `now`. Calling it before the deadline changes nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        // Each iteration removes one entry and re-arms, if at all, strictly after `now`, so the
        // loop ends after at most as many iterations as there were entries due.
        while let Some((_, key)) = self.timers.pop_expired(now) {
            match key {
                TimerKey::Flow { slot } => self.flow_timer_fired(now, slot),
                TimerKey::ListenerDrain(listener) => self.drain_deadline_reached(listener),
                TimerKey::BackendDrain(backend) => self.backend_drain_deadline_reached(backend),
            }
        }
        self.timeouts_handled_until = Some(now);
        self.debug_check();
    }

    fn flow_timer_fired(&mut self, now: Instant, slot: u32) {
        // The entry was popped; the flow has no armed timer until re-armed below.
        self.table.get_mut(slot).timer = TimerHandle::DISARMED;
        let flow = self.table.get(slot);
        let teardown = self.teardown_of(flow);
        let (deadline, reason) = teardown.deadline(flow);
        if deadline > now {
            if !crate::mutants::active(crate::mutants::Mutant::TimerLostOnEarlyFire) {
                // Fired early relative to the flow's activity: re-arm once, at the real deadline.
                self.rearm_flow(now, slot);
            }
            return;
        }
        let counted = teardown.responses.is_some();
        if reason == CloseReason::IdleBack && counted && !flow.retired {
            self.write_off(now, slot);
            return;
        }
        let backend = flow.backend;
        let lost =
            if reason == CloseReason::IdleBack && counted { teardown.unanswered_requests(flow) } else { 0 };
        if lost > 0 {
            self.stats.backends[backend.0 as usize].replies_written_off += u64::from(teardown.owed_now(flow));
        }
        self.close_flow(slot, reason);
        for _ in 0..lost.min(MAX_FAILURES_PER_DEADLINE) {
            self.passive_failure(now, backend, PassiveFailure::Unanswered);
        }
    }

    /// A live flow's back deadline passed: the replies owed all through the wait are written
    /// off (each request they stand for is a passive failure, at most
    /// [`MAX_FAILURES_PER_DEADLINE`]). The flow ends (`IdleBack`) if
    /// that was all it owed, so the client's next datagram is a new flow, selected afresh;
    /// otherwise the replies still owed get a wait of their own, from now.
    pub(super) fn write_off(&mut self, now: Instant, slot: u32) {
        let cluster = self.backends[self.table.get(slot).backend.0 as usize].cluster;
        let teardown = &self.clusters[cluster.0 as usize].teardown;
        let flow = self.table.get(slot);
        let backend = flow.backend;
        let fastest = self.backends[backend.0 as usize].reply_time.fastest();
        let (replies, lost) = teardown.due_at_deadline(flow, now, fastest);
        if replies == 0 {
            // Replies in flight, none lost: a new wait, from now.
            let owed = teardown.owed_now(flow);
            let flow = self.table.get_mut(slot);
            flow.awaiting_since = now;
            flow.recent().floor = owed;
            self.rearm_flow(now, slot);
            return;
        }
        let flow = self.table.get_mut(slot);
        let recent = flow.recent();
        recent.written_off = recent.written_off.saturating_add(replies);
        self.stats.backends[backend.0 as usize].replies_written_off += u64::from(replies);
        // The backend lost a reply: the client's next datagram starts a new flow, selected
        // afresh, so a lost reply never pins a client to a lossy backend. This one waits
        // `back` more for what it still owes and for replies that were only late.
        flow.awaiting_since = now;
        flow.recent().floor = 0;
        if !crate::mutants::active(crate::mutants::Mutant::WriteOffKeepsFlow) {
            self.retire_flow(slot);
        }
        self.rearm_flow(now, slot);
        for _ in 0..lost.min(MAX_FAILURES_PER_DEADLINE) {
            self.passive_failure(now, backend, PassiveFailure::Unanswered);
        }
    }

    /// Replaces the flow's timer entry with one at its arm time.
    pub(super) fn rearm_flow(&mut self, now: Instant, slot: u32) {
        let flow = self.table.get(slot);
        let at = self.teardown_of(flow).arm_time(flow, now);
        let old = flow.timer;
        self.timers.remove(old);
        let handle = self.timers.insert(at, TimerKey::Flow { slot });
        self.table.get_mut(slot).timer = handle;
    }

    /// Closes a live flow: frees its slot and timer, books the reason, tells the shell to
    /// close its upstream, and finishes a drain that was waiting for it.
    pub(super) fn close_flow(&mut self, slot: u32, reason: CloseReason) {
        let mut flow = self.table.remove(slot);
        self.timers.remove(flow.timer);
        self.retry_slots.release(&mut flow.retry);
        self.stats.retries.bytes_kept = self.retry_slots.bytes_kept();
        self.book_close(&flow, reason);
        self.outputs.push_back(Output::CloseUpstream { flow: FlowId { slot, serial: flow.serial }, reason });
        self.finish_drain_if_empty(flow.listener);
    }

    fn book_close(&mut self, flow: &super::entry::Flow, reason: CloseReason) {
        self.backend_flow_closed(flow.backend);
        if let Some(sources) = &mut self.listeners[flow.listener.0 as usize].sources {
            sources.closed(flow.client.ip());
        }
        for counters in [&mut self.stats.flows, &mut self.stats.listeners[flow.listener.0 as usize].flows] {
            counters.closed[reason.index()] += 1;
            counters.active -= 1;
            if flow.retired {
                counters.retired -= 1;
            }
        }
    }

    /// Reports a draining listener drained once its last flow has ended.
    fn finish_drain_if_empty(&mut self, listener_id: ListenerId) {
        let listener = &mut self.listeners[listener_id.0 as usize];
        let DrainState::Draining { timer, drained: false } = listener.drain else { return };
        if self.stats.listeners[listener_id.0 as usize].flows.active > 0 {
            return;
        }
        if let Some(handle) = timer {
            self.timers.remove(handle);
        }
        listener.drain = DrainState::Draining { timer: None, drained: true };
        self.outputs.push_back(Output::Event(Event::ListenerDrained { listener: listener_id }));
    }

    /// `drain_timeout` ran out: whatever is left closes (`Drained`). The last close reports
    /// the listener drained.
    fn drain_deadline_reached(&mut self, listener: ListenerId) {
        self.listeners[listener.0 as usize].drain = DrainState::Draining { timer: None, drained: false };
        // A scan of the table, once per drain: acceptable, and it keeps flows free of
        // per-listener links.
        let remaining: Vec<u32> =
            self.table.iter().filter(|(_, flow)| flow.listener == listener).map(|(slot, _)| slot).collect();
        for slot in remaining {
            self.close_flow(slot, CloseReason::Drained);
        }
        self.finish_drain_if_empty(listener);
    }

    /// An error the shell saw on a flow's upstream. Errors for flows that no longer exist are
    /// ignored (the flow already ended).
    pub fn handle_upstream_error(&mut self, now: Instant, flow: FlowId, error: UpstreamError) {
        let now = self.observe(now);
        if let Some(slot) = self.table.resolve(flow) {
            match error {
                UpstreamError::Refused => self.upstream_refused(now, slot),
                UpstreamError::Unreachable => {
                    let backend = self.table.get(slot).backend;
                    self.close_flow(slot, CloseReason::UpstreamUnreachable);
                    self.passive_failure(now, backend, PassiveFailure::Unreachable);
                }
                UpstreamError::SendFailed => {
                    let (listener, backend) = (self.table.get(slot).listener, self.table.get(slot).backend);
                    // The byte count of the lost datagram is not known here; bytes stay booked.
                    self.stats.listeners[listener.0 as usize]
                        .client
                        .reclassify_as_dropped(0, DropReason::SendFailed);
                    self.stats.backends[backend.0 as usize].send_failures += 1;
                    self.passive_failure(now, backend, PassiveFailure::SendFailed);
                }
            }
        }
        self.debug_check();
    }

    /// The backend refused a flow: the flow closes, the refusal is reported to the health
    /// monitor, and if the flow has had no reply yet its kept datagram is re-sent once, on a
    /// new flow to a backend selected without the refusing one.
    fn upstream_refused(&mut self, now: Instant, slot: u32) {
        let flow = self.table.get_mut(slot);
        let (backend, listener, client, local, hash) =
            (flow.backend, flow.listener, flow.client, flow.local, flow.hash);
        let via = flow.via.as_deref().copied();
        let retry = if !flow.retried && !flow.retired && flow.responses == 0 {
            self.retry_slots.take(&mut flow.retry)
        } else {
            Vec::new()
        };
        // Closing the flow syncs the retry bytes in the stats.
        self.close_flow(slot, CloseReason::UpstreamRefused);
        self.passive_failure(now, backend, PassiveFailure::Refused);
        if retry.is_empty() {
            return;
        }
        let listener_state = &self.listeners[listener.0 as usize];
        let (vip, affinity) = (listener_state.vip(Some(local)), listener_state.affinity);
        let cluster_id = self.backends[backend.0 as usize].cluster;
        let affinity_hash = self.selection_hasher.flow_hash(vip, client, affinity);
        let cluster = &mut self.clusters[cluster_id.0 as usize];
        let request = SelectionRequest { affinity_hash, exclude: &[backend], fail_open: cluster.fail_open };
        let Some(selection) = cluster.selector.select(&cluster.candidates, request) else {
            self.stats.retries.no_other_backend += 1;
            return;
        };
        let proxy = cluster.proxy_protocol;
        let decision = super::Decision::of(cluster, &selection, false, None);
        // Staged like a client's new flow: booked once its upstream is open (`accept`).
        let flow = FlowId { slot: self.table.next_slot(), serial: self.next_serial };
        let datagram = self.datagram_with_header(vip, client, flow.serial, proxy, &retry);
        let incoming = Incoming {
            flow,
            listener,
            backend: selection.backend,
            address: self.backends[selection.backend.0 as usize].address,
            client,
            local: vip,
            hash,
            prefix_len: u16::try_from(datagram.len() - retry.len()).unwrap_or(u16::MAX),
            payload_len: u32::try_from(retry.len()).unwrap_or(u32::MAX),
            fail_open: selection.fail_open,
            resend: true,
            decision,
            via,
            skip: 0,
        };
        self.outputs.push_back(Output::Resend { incoming, datagram });
    }

    /// A re-sent datagram: the PROXY header a new flow's first datagram carries (if the
    /// cluster sends one), then the payload.
    fn datagram_with_header(
        &self,
        vip: std::net::SocketAddr,
        client: std::net::SocketAddr,
        serial: u64,
        proxy: crate::config::ProxyProtocolConfig,
        payload: &[u8],
    ) -> Vec<u8> {
        if proxy.mode == crate::config::ProxyProtocolMode::Off {
            return payload.to_vec();
        }
        let tlvs =
            TlvOptions { crc32c: proxy.crc32c, unique_id: proxy.unique_id.then(|| self.unique_id(serial)) };
        let header_len = proxy_v2::proxy_header_len(client, vip, tlvs);
        let mut datagram = vec![0; header_len + payload.len()];
        // The buffer is exactly the header's length, so writing cannot fail.
        let _ = proxy_v2::write_proxy_header(&mut datagram[..header_len], client, vip, tlvs);
        datagram[header_len..].copy_from_slice(payload);
        datagram
    }

    /// The shell could not send a returned datagram to its client: it counts as dropped
    /// (`SendFailed`) instead of returned.
    pub fn handle_return_failed(&mut self, now: Instant, listener: ListenerId, bytes: usize) {
        self.observe(now);
        if let Some(stats) = self.stats.listeners.get_mut(listener.0 as usize) {
            stats.backend.reclassify_as_dropped(bytes, DropReason::SendFailed);
        }
        self.debug_check();
    }

    /// An operator command.
    pub fn handle_admin(&mut self, now: Instant, command: AdminCommand) -> Result<(), AdminError> {
        let now = self.observe(now);
        let result = match command {
            AdminCommand::DrainListener(listener) => self.drain_listener(now, listener),
            AdminCommand::ResumeListener(listener) => self.resume_listener(listener),
            AdminCommand::CloseFlow(flow) => match self.table.resolve(flow) {
                Some(slot) => {
                    self.close_flow(slot, CloseReason::Aborted);
                    Ok(())
                }
                None => Err(AdminError::UnknownFlow(flow)),
            },
            AdminCommand::CloseAll => {
                let slots: Vec<u32> = self.table.iter().map(|(slot, _)| slot).collect();
                for slot in slots {
                    self.close_flow(slot, CloseReason::Shutdown);
                }
                Ok(())
            }
        };
        self.debug_check();
        result
    }

    fn drain_listener(&mut self, now: Instant, listener_id: ListenerId) -> Result<(), AdminError> {
        let listener =
            self.listeners.get_mut(listener_id.0 as usize).ok_or(AdminError::UnknownListener(listener_id))?;
        if matches!(listener.drain, DrainState::Draining { .. }) {
            return Ok(());
        }
        let flows_remaining = self.stats.listeners[listener_id.0 as usize].flows.active;
        listener.drain = DrainState::Draining { timer: None, drained: false };
        let timeout = listener.drain_timeout;
        self.outputs
            .push_back(Output::Event(Event::ListenerDraining { listener: listener_id, flows_remaining }));
        match timeout {
            _ if flows_remaining == 0 => self.finish_drain_if_empty(listener_id),
            Some(timeout) if timeout.is_zero() => self.drain_deadline_reached(listener_id),
            Some(timeout) => {
                let handle = self.timers.insert(now + timeout, TimerKey::ListenerDrain(listener_id));
                self.listeners[listener_id.0 as usize].drain =
                    DrainState::Draining { timer: Some(handle), drained: false };
            }
            None => {}
        }
        Ok(())
    }

    fn resume_listener(&mut self, listener_id: ListenerId) -> Result<(), AdminError> {
        let listener =
            self.listeners.get_mut(listener_id.0 as usize).ok_or(AdminError::UnknownListener(listener_id))?;
        let DrainState::Draining { timer, .. } = listener.drain else {
            return Err(AdminError::NotDraining(listener_id));
        };
        if let Some(handle) = timer {
            self.timers.remove(handle);
        }
        listener.drain = DrainState::Active;
        self.outputs.push_back(Output::Event(Event::ListenerResumed { listener: listener_id }));
        Ok(())
    }
}
