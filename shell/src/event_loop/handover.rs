//! A hitless restart, seen from the event loop (`crate::handover` has the protocol).
//!
//! The old process's side: a new process asks on the control socket; the leader freezes
//! every follower (each settles what it queued, passes its last passive signals on, takes
//! its snapshot and copies of its sockets, then waits for the leader's word), applies those
//! last signals, freezes itself, and sends it all. Nothing is deregistered: a frozen worker
//! simply does not poll, so datagrams wait in the sockets' queues. If the new process says
//! it serves, every worker ends (their sockets live on in the new process); if it fails or
//! says nothing within [`RESUME_DEADLINE`], every worker resumes as if nothing had happened.
//! The same freeze, under systemd, feeds the descriptor store on a stop.
//!
//! The new process's side is [`EventLoop::adopting`] and `spawn_follower_adopting`: a
//! worker built from a restored core takes over the handed sockets before it opens any.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use mio::Token;
use udplb_core::flow::ClientVerdict;
use udplb_core::{ClientDatagram, DATAGRAM_HEADROOM, DropReason, ListenerId};

use super::{Duties, EventLoop};
use crate::handover::{self, Handover, Header, RESUME_DEADLINE, RESUMED, WorkerState};
use crate::mio_platform::MioPlatform;
use crate::relay::{self, NewSide};
use crate::workers::ToFollower;

/// How long the leader waits for every follower to freeze.
const FREEZE_DEADLINE: Duration = Duration::from_secs(5);

/// What became of a handover the old process attempted.
pub(super) enum Outcome {
    /// The new process serves: this one ends.
    HandedOver,
    /// This process serves on.
    Resumed,
}

impl EventLoop {
    /// This worker's part of a handover: what it queued sent, then its core's snapshot, its
    /// platform's state and copies of its sockets. The worker must not run a turn after this
    /// unless the handover is called off.
    pub(super) fn freeze(&mut self) -> anyhow::Result<WorkerState> {
        self.settle();
        let snapshot = self.driver.core().snapshot(&self.running)?;
        let (platform, sockets) = self.driver.platform().hand_over()?;
        // Where each flow's datagrams come from, for a fallback's relay: the client, or the
        // trusted balancer its PROXY header came through.
        let (mut flows, mut proxied) = (Vec::new(), std::collections::BTreeSet::new());
        for flow in self.driver.core().flows().flows() {
            match flow.via {
                None => flows.push((flow.listener.0, flow.client)),
                Some(via) => {
                    proxied.insert((flow.listener.0, via));
                }
            }
        }
        let proxied = proxied.into_iter().collect();
        let active = self.driver.core().flows().stats().flows.active;
        Ok(WorkerState { snapshot, platform, sockets, flows, proxied, active })
    }

    /// The header of a handover from this process.
    fn handover_header(&self) -> Header {
        Header {
            protocol: handover::PROTOCOL,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            snapshot_version: udplb_core::snapshot::VERSION,
            config_text: self.config_text.clone(),
            default_max_flows: self.default_max_flows,
            origin_monotonic_nanos: handover::origin_on_monotonic(self.driver.platform().origin()),
            workers: Vec::new(),
            control: false,
            metrics: false,
            fds: Vec::new(),
        }
    }

    /// Freezes every worker and assembles the handover. On an error every follower frozen so
    /// far is resumed.
    fn freeze_all(&mut self) -> anyhow::Result<Handover> {
        anyhow::ensure!(!self.stopping, "this udplb is stopping (its listeners drain)");
        anyhow::ensure!(
            self.relay.is_none(),
            "this udplb is in a fallback handover with another process; try again once it has ended"
        );
        anyhow::ensure!(
            self.queries.pending.is_empty(),
            "this udplb is answering another command; try again"
        );
        // The followers freeze with every backend state decided so far.
        self.relay_backend_states();
        let (reply, replies) = std::sync::mpsc::channel();
        for follower in self.followers() {
            follower.send(ToFollower::Freeze { reply: reply.clone() });
        }
        let deadline = std::time::Instant::now() + FREEZE_DEADLINE;
        let mut frozen: Vec<(u32, Result<WorkerState, String>)> = Vec::new();
        while frozen.len() < self.followers().len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match replies.recv_timeout(left) {
                Ok(answer) => frozen.push(answer),
                Err(_) => break,
            }
        }
        let result = self.freeze_leader(&mut frozen);
        if result.is_err() {
            self.thaw_followers();
        }
        result
    }

    fn freeze_leader(
        &mut self,
        frozen: &mut Vec<(u32, Result<WorkerState, String>)>,
    ) -> anyhow::Result<Handover> {
        anyhow::ensure!(
            frozen.len() == self.followers().len(),
            "{} of {} workers froze within {FREEZE_DEADLINE:?}",
            frozen.len(),
            self.followers().len()
        );
        frozen.sort_by_key(|(index, _)| *index);
        let mut workers = Vec::new();
        for (index, state) in frozen.drain(..) {
            workers.push(state.map_err(|error| anyhow::anyhow!("worker {index}: {error}"))?);
        }
        // The followers' last passive signals, which they sent as they froze.
        self.read_followers_messages();
        // A backend state they changed would have to reach the frozen followers: call the
        // handover off (the state is relayed at the end of this turn, once they have thawed).
        let changed = self.driver.platform().notices.relays_backend_state();
        anyhow::ensure!(
            !changed || self.followers().is_empty(),
            "a backend changed state during the handover; try again"
        );
        workers.insert(0, self.freeze()?);
        let control = self.control.as_ref().map(|c| c.listener_fd()).transpose()?;
        let metrics = self.metrics.as_ref().map(|m| m.listener_fd()).transpose()?;
        Ok(Handover::new(self.handover_header(), workers, control, metrics))
    }

    fn thaw_followers(&self) {
        for follower in self.followers() {
            follower.send(ToFollower::Thaw);
        }
    }

    /// `{"command":"handover"}` on control connection `token`: hands everything to the
    /// process that asked, which answers [`RESUMED`] once it serves.
    pub(super) fn hand_over_on(&mut self, token: Token, pid: u32, protocol: u32) -> anyhow::Result<Outcome> {
        let Some(stream) = self.control.as_mut().and_then(|control| control.take_stream(token)) else {
            return Ok(Outcome::Resumed);
        };
        // SAFETY: the descriptor comes out of the mio stream, which gives up its ownership.
        let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(stream.into_raw_fd()) };
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(FREEZE_DEADLINE))?;
        stream.set_read_timeout(Some(RESUME_DEADLINE))?;
        let refuse = |stream: &std::os::unix::net::UnixStream, message: String| {
            tracing::warn!(event = %"handover_refused", new_pid = pid, "handover refused: {message}");
            let line = serde_json::json!({ "ok": false, "error": message });
            let _ = (&*stream).write_all(format!("{line}\n").as_bytes());
        };
        if protocol != handover::PROTOCOL {
            refuse(
                &stream,
                format!(
                    "the new process speaks handover protocol {protocol}, this one {}",
                    handover::PROTOCOL
                ),
            );
            return Ok(Outcome::Resumed);
        }
        let started = std::time::Instant::now();
        tracing::info!(event = %"handover_started", new_pid = pid, "a new process asked for this one's sockets and flows");
        let handover = match self.freeze_all() {
            Ok(handover) => handover,
            Err(error) => {
                refuse(&stream, format!("{error:#}"));
                return Ok(Outcome::Resumed);
            }
        };
        let flows: u64 = handover.workers.iter().map(|worker| worker.active).sum();
        if let Err(error) = handover::send(&stream, handover) {
            tracing::warn!(event = %"handover_failed", new_pid = pid, "handover failed, serving on: {error:#}");
            self.thaw_followers();
            return Ok(Outcome::Resumed);
        }
        let (answer, relays) = handover::receive_message(stream.as_raw_fd(), 256).unwrap_or_default();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if answer.trim() == handover::FALLBACK && relays.len() == self.followers().len() + 1 {
            tracing::warn!(
                event = %"handover_fallback",
                new_pid = pid,
                flows,
                "the new process cannot restore this one's flows: it takes new clients and relays this \
                 one's flows to it until they end (at most process.stop_timeout)"
            );
            self.fall_back(relays);
            let _ = (&stream).write_all(format!("{}\n", handover::LET_GO).as_bytes());
            return Ok(Outcome::Resumed);
        }
        if answer.trim() != RESUMED {
            let said = if answer.trim().is_empty() { "nothing".to_owned() } else { answer.trim().to_owned() };
            tracing::warn!(
                event = %"handover_failed",
                new_pid = pid,
                "the new process did not take over (it said {said}); serving on"
            );
            self.thaw_followers();
            return Ok(Outcome::Resumed);
        }
        self.finish_handover();
        let _ = (&stream).write_all(format!("{}\n", handover::LET_GO).as_bytes());
        tracing::info!(
            event = %"handed_over",
            new_pid = pid,
            flows,
            frozen_ms = started.elapsed().as_millis() as u64,
            "handed over to the new process; exiting"
        );
        Ok(Outcome::HandedOver)
    }

    /// The new process serves: every follower ends, and the control socket file is left to it.
    fn finish_handover(&mut self) {
        for follower in self.followers() {
            follower.send(ToFollower::Exit);
        }
        if let Duties::Leader(leader) = &mut self.duties {
            for follower in &mut leader.followers {
                if let Some(thread) = follower.thread.take() {
                    let _ = thread.join();
                }
            }
        }
        if let Some(control) = &mut self.control {
            control.leave_file();
        }
    }

    /// A stop under systemd with a descriptor store: everything goes to the store for the next
    /// start, and this process exits at once. Returns false when the store could not take it
    /// (the stop then drains as usual).
    pub(super) fn hand_over_to_fd_store(&mut self) -> bool {
        let handover = match self.freeze_all() {
            Ok(handover) => handover,
            Err(error) => {
                tracing::warn!(event = %"fd_store_failed", "cannot hand over to the descriptor store, draining instead: {error:#}");
                return false;
            }
        };
        let flows: u64 = handover.workers.iter().map(|worker| worker.active).sum();
        match handover::push_to_fd_store(handover) {
            Ok(stored) => {
                self.finish_handover();
                tracing::info!(event = %"handed_over", flows, descriptors = stored, "sockets and flows are in systemd's descriptor store; exiting");
                true
            }
            Err(error) => {
                tracing::warn!(event = %"fd_store_failed", "cannot hand over to the descriptor store, draining instead: {error:#}");
                self.thaw_followers();
                false
            }
        }
    }

    /// Right after a takeover, the new process's own configuration file: applied as a reload
    /// when it differs from the one the old process ran (the snapshots were restored under
    /// that one), exactly as `udplb ctl reload` would.
    pub fn settle_takeover(&mut self, file_text: &str, default_max_flows: u32) {
        if file_text == self.config_text && default_max_flows == self.default_max_flows {
            return;
        }
        let previous = std::mem::replace(&mut self.default_max_flows, default_max_flows);
        if let Err(message) = self.reload(None) {
            self.default_max_flows = previous;
            tracing::warn!(
                event = %"config_reload_rejected",
                "serving with the previous process's configuration: this file was rejected:\n{message}"
            );
        }
    }

    /// Whether this process took only the listeners of the one it replaces and relays that
    /// one's flows to it (a fallback handover, `crate::relay`).
    pub fn relaying(&self) -> bool {
        matches!(self.relay, Some(Relay::New { .. }))
    }

    /// A follower told to freeze: sends its last passive signals and its state to the
    /// leader, then waits for the leader's word. Returns whether the worker is done (handed
    /// over).
    pub(super) fn freeze_follower(
        &mut self,
        reply: std::sync::mpsc::Sender<(u32, Result<WorkerState, String>)>,
    ) -> bool {
        self.relay_to_leader();
        let state = self.freeze().map_err(|error| format!("{error:#}"));
        let Duties::Follower(duties) = &self.duties else { return false };
        let index = duties.link.index;
        let _ = reply.send((index, state));
        loop {
            let Duties::Follower(duties) = &self.duties else { return false };
            // No deadline of its own: the leader decides (it waits for the new process at most
            // RESUME_DEADLINE), and a leader that is gone disconnects the channel.
            match duties.link.inbox.recv() {
                Ok(ToFollower::Exit) => return true,
                Ok(ToFollower::FallBack { relay }) => {
                    self.serve_relayed(relay);
                    return false;
                }
                Ok(ToFollower::Thaw) | Err(_) => return false,
                // Nothing else is sent while the leader hands over.
                Ok(_) => {}
            }
        }
    }
}

/// A fallback handover's relay (`crate::relay`), on the side this worker is on.
pub(crate) enum Relay {
    /// The new process: relays the old process's flows' datagrams to it.
    New { socket: mio::net::UnixDatagram, side: NewSide },
    /// The old process: serves the datagrams relayed to it, and sends back those it has no
    /// flow for.
    Old { socket: mio::net::UnixDatagram },
}

impl Relay {
    /// The new process's end, registered with `platform`.
    pub(super) fn new_side(platform: &mut MioPlatform, fd: OwnedFd, side: NewSide) -> std::io::Result<Relay> {
        let mut socket = relay_socket(fd)?;
        platform.register_relay(&mut socket)?;
        Ok(Relay::New { socket, side })
    }

    pub(super) fn is_old_side(&self) -> bool {
        matches!(self, Relay::Old { .. })
    }

    /// The new process's side: relays a client datagram of one of the old process's flows
    /// and returns true; false for anything else (this process handles it). Once the old
    /// process has gone, nothing is relayed any more.
    pub(super) fn relays(
        &mut self,
        listener: ListenerId,
        client: SocketAddr,
        local: Option<IpAddr>,
        (datagram, truncated): (&[u8], bool),
    ) -> bool {
        let Relay::New { socket, side } = self else { return false };
        let key = (listener, client);
        if !side.flows.contains(&key) && !side.proxied.contains(&key) {
            return false;
        }
        let Some(&old) = side.to_old.get(&listener) else { return false };
        match socket.send(&relay::encode(old, client, local, truncated, datagram)) {
            Ok(_) => true,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                // The old process is behind by a whole relay buffer: the datagram is lost, as
                // it would be in a full socket queue (counted, and logged when the relay ends).
                side.dropped += 1;
                true
            }
            Err(error) => {
                tracing::info!(
                    event = %"handover_fallback_ended",
                    %error,
                    flows = side.flows.len(),
                    dropped_relay_full = side.dropped,
                    "the old process is gone: its clients are new clients now"
                );
                side.flows.clear();
                side.proxied.clear();
                false
            }
        }
    }
}

fn relay_socket(fd: OwnedFd) -> std::io::Result<mio::net::UnixDatagram> {
    let socket = std::os::unix::net::UnixDatagram::from(fd);
    socket.set_nonblocking(true)?;
    Ok(mio::net::UnixDatagram::from_std(socket))
}

impl EventLoop {
    /// The old process's side of a fallback: each worker serves what the new process relays.
    fn fall_back(&mut self, mut relays: Vec<OwnedFd>) {
        let own = relays.remove(0);
        for (follower, relay) in self.followers().iter().zip(relays) {
            follower.send(ToFollower::FallBack { relay });
        }
        // The new process answers on the control socket and serves metrics now.
        if let Some(mut control) = self.control.take() {
            control.leave_file();
        }
        self.metrics = None;
        self.serve_relayed(own);
        self.stop();
    }

    /// Stops reading the listeners, serves the relay, drains.
    pub(super) fn serve_relayed(&mut self, fd: OwnedFd) {
        self.driver.platform_mut().stop_reading_listeners();
        match relay_socket(fd) {
            Ok(mut socket) => match self.driver.platform_mut().register_relay(&mut socket) {
                Ok(_) => self.relay = Some(Relay::Old { socket }),
                Err(error) => {
                    tracing::error!(%error, "cannot serve the relay: this worker's flows get no more datagrams")
                }
            },
            Err(error) => {
                tracing::error!(%error, "cannot serve the relay: this worker's flows get no more datagrams")
            }
        }
        self.drain();
    }

    /// Datagrams on the relay: on the old side, its flows' datagrams (anything it has no flow
    /// for goes back); on the new side, what came back, now a new client's.
    pub(super) fn read_relay(&mut self) {
        let mut frame = vec![0u8; DATAGRAM_HEADROOM + 70_000];
        for _ in 0..1024 {
            let Some(relay) = &self.relay else { return };
            let socket = match relay {
                Relay::New { socket, .. } | Relay::Old { socket } => socket,
            };
            let length = match socket.recv(&mut frame[DATAGRAM_HEADROOM..]) {
                Ok(length) => length,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            };
            let Some(relay::Frame { listener, client, local, truncated, at }) =
                relay::decode(&frame[DATAGRAM_HEADROOM..DATAGRAM_HEADROOM + length])
            else {
                continue;
            };
            let now = self.driver.platform().now();
            let listener = match &mut self.relay {
                Some(Relay::New { side, .. }) => {
                    let Some(&ours) = side.from_old.get(&listener) else { continue };
                    side.flows.remove(&(ours, client));
                    ours
                }
                _ => ListenerId(listener),
            };
            // The datagram goes to the core with its headroom in front, as from a listener.
            let start = DATAGRAM_HEADROOM + at;
            let mut buffer = frame[start - DATAGRAM_HEADROOM..DATAGRAM_HEADROOM + length].to_vec();
            let kept = buffer[DATAGRAM_HEADROOM..].to_vec();
            let datagram = ClientDatagram {
                listener,
                client,
                local,
                buffer: &mut buffer,
                headroom: DATAGRAM_HEADROOM,
                truncated,
            };
            let verdict = self.driver.client_datagram(now, datagram);
            if let (ClientVerdict::Drop(DropReason::Draining), Some(Relay::Old { socket })) =
                (verdict, &self.relay)
            {
                // Not one of this process's flows (any more): the new process's.
                let _ = socket.send(&relay::encode(listener.0, client, local, truncated, &kept));
            }
            self.settle();
        }
    }
}

/// Followers a new process has spawned wait here until the old process has let go of the
/// sockets: open (serve) or shut (end without reading anything).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: std::sync::Mutex<Option<bool>>,
    changed: std::sync::Condvar,
}

impl Gate {
    /// Blocks until the gate is opened or shut; true when opened.
    pub(super) fn wait(&self) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        loop {
            if let Some(open) = *open {
                return open;
            }
            open = self.changed.wait(open).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn set(&self, value: bool) {
        *self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value);
        self.changed.notify_all();
    }
}

impl EventLoop {
    /// Followers spawned from now on wait for [`EventLoop::release_workers`] before they
    /// serve: a new process must not read the sockets before the old one has let go of them.
    pub fn hold_workers(&mut self) {
        self.gate = Some(Arc::new(Gate::default()));
    }

    /// Lets the held followers serve (`go`), or end without reading anything.
    pub fn release_workers(&mut self, go: bool) {
        if let Some(gate) = self.gate.take() {
            gate.set(go);
        }
    }
}
