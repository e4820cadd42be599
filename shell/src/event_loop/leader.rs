//! The leader's duties: the main thread's worker, alone (`process.workers = 1`) or with
//! followers. It handles signals (SIGHUP reloads, SIGTERM and SIGINT drain and then exit),
//! starts its followers, takes the passive failures they send, relays its backend states to
//! them, checks that they are alive, stops them, and adds up their counters. Being the
//! process's one voice, it also binds the control socket and the metrics endpoint and tells
//! systemd how it is doing.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mio::{Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use udplb_core::balancer::Output;
use udplb_core::{Balancer, Config, Input, Keys, Role};

use super::follower::FollowerDuties;
use super::{Duties, EventLoop};
use crate::control::server::ControlServer;
use crate::handover::Adopted;
use crate::metrics::http::MetricsServer;
use crate::mio_platform::Source;
use crate::workers::{Follower, LeaderLink, ToFollower, ToLeader, WorkerView};

/// What a new process takes over from the one it replaces, for its leader.
#[derive(Debug)]
pub struct Takeover {
    /// When the old process's clock started, on this process's clock.
    pub origin: std::time::Instant,
    pub adopted: Adopted,
    pub control: Option<OwnedFd>,
    pub metrics: Option<OwnedFd>,
}

/// The token of the leader's signals.
pub(super) const SIGNALS: Token = Token(0);

/// How often a stopping leader checks whether its followers have drained.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// What the leader has that a follower lacks.
pub(super) struct LeaderDuties {
    signals: Signals,
    /// Its followers (none with one worker).
    pub(super) followers: Vec<Follower>,
    /// Its messages from its followers, once it has one.
    inbox: Option<(Sender<ToLeader>, Receiver<ToLeader>)>,
    /// `udplb run --share-listeners`: bind listener addresses another process already serves.
    pub(super) share_listeners: bool,
}

impl EventLoop {
    /// Binds every listener, the control socket and the metrics endpoint (when configured),
    /// and starts the core: the leader's loop, which runs alone until followers are spawned.
    /// `config` is the file as read (`max_flows` may be unset: the core then runs with
    /// `default_max_flows`, now and after every reload).
    ///
    /// Before binding anything it refuses to start beside another udplb: when the control
    /// socket answers (a running process owns it), and, unless `share_listeners`, when another
    /// process already serves a listener's address (checked as each is bound).
    pub fn new(
        config_path: &Path,
        (config, config_text): (Config, String),
        core: (Balancer, Config),
        default_max_flows: u32,
        share_listeners: bool,
        takeover: Option<Takeover>,
    ) -> anyhow::Result<EventLoop> {
        if let Some(path) = &config.process.control_socket
            && takeover.is_none()
        {
            crate::control::server::refuse_if_in_use(path)?;
        }
        let (origin, adopted, services) = match takeover {
            Some(takeover) => (takeover.origin, Some(takeover.adopted), (takeover.control, takeover.metrics)),
            None => (std::time::Instant::now(), None, (None, None)),
        };
        let poll = Poll::new()?;
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT])?;
        poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
        let duties =
            Duties::Leader(LeaderDuties { signals, followers: Vec::new(), inbox: None, share_listeners });
        let mut event_loop = EventLoop::build(
            poll,
            config_path,
            (config, config_text),
            core,
            default_max_flows,
            origin,
            duties,
            adopted,
        )?;
        event_loop.bind_services(services)?;
        Ok(event_loop)
    }

    /// Binds the control socket and the metrics endpoint, when the configuration has them,
    /// or takes over those a previous process handed over (when they are where the
    /// configuration wants them; otherwise they are closed and new ones bound).
    fn bind_services(
        &mut self,
        (control, metrics): (Option<OwnedFd>, Option<OwnedFd>),
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.config.process.control_socket {
            let token = self.driver.platform_mut().token(Source::ControlListener);
            let handed = control.filter(|fd| {
                let Ok(copy) = fd.try_clone() else { return false };
                let listener = std::os::unix::net::UnixListener::from(copy);
                let address = listener.local_addr().ok();
                // The file may be gone (systemd empties RuntimeDirectory= between a stop and
                // the next start): a socket nobody can reach is no use, so a new one is bound.
                let reachable = std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                });
                reachable && address.as_ref().and_then(|a| a.as_pathname()) == Some(path.as_path())
            });
            let server = match handed {
                Some(fd) => ControlServer::adopt(path, fd, self.poll.registry(), token)?,
                None => ControlServer::bind(path, self.poll.registry(), token)?,
            };
            tracing::info!(path = %path.display(), "control socket ready");
            self.control = Some(server);
        }
        if let Some(address) = self.config.process.metrics_addr {
            let token = self.driver.platform_mut().token(Source::MetricsListener);
            let handed = metrics.filter(|fd| {
                let Ok(copy) = fd.try_clone() else { return false };
                let listener = std::net::TcpListener::from(copy);
                listener.local_addr().ok() == Some(address)
            });
            let server = match handed {
                Some(fd) => MetricsServer::adopt(fd, self.poll.registry(), token)?,
                None => MetricsServer::bind(address, self.poll.registry(), token)?,
            };
            tracing::info!(%address, "metrics at /metrics");
            self.metrics = Some(server);
        }
        Ok(())
    }

    /// Starts worker `index` (≥ 1) as a follower of this loop, which must run a
    /// [`Role::Leader`] core: binds its listeners (SO_REUSEPORT) now, so that a failure stops
    /// the start, then runs it on its own thread. `effective` is the configuration with the
    /// worker's share of the flow cap.
    pub fn spawn_follower(&mut self, index: u32, effective: &Config, keys: Keys) -> anyhow::Result<()> {
        let core = Balancer::with_role(effective, keys, Role::Follower).map_err(|errors| {
            anyhow::anyhow!("invalid configuration: {}", udplb_core::config::render_errors(&errors))
        })?;
        self.spawn_follower_with(index, (core, effective.clone()), None)
    }

    /// Starts worker `index` (≥ 1) on a core restored from a handover, with the sockets that
    /// worker of the old process had (`adopted`).
    pub fn spawn_follower_adopting(
        &mut self,
        index: u32,
        core: Balancer,
        adopted: Adopted,
    ) -> anyhow::Result<()> {
        let running = self.running.clone();
        self.spawn_follower_with(index, (core, running), Some(adopted))
    }

    fn spawn_follower_with(
        &mut self,
        index: u32,
        core: (Balancer, Config),
        adopted: Option<Adopted>,
    ) -> anyhow::Result<()> {
        let origin = self.driver.platform().origin();
        let leader_waker = self.waker.clone();
        let Duties::Leader(leader) = &mut self.duties else {
            anyhow::bail!("worker {index}: only the leader starts workers");
        };
        let (to_leader, _) = leader.inbox.get_or_insert_with(std::sync::mpsc::channel);
        let (sender, inbox) = std::sync::mpsc::channel();
        // Counted as a worker from the start, with no counters until it first publishes.
        let view = Arc::new(Mutex::new(WorkerView { workers: 1, ..WorkerView::default() }));
        let link = LeaderLink {
            inbox,
            sender: to_leader.clone(),
            leader_waker: leader_waker.clone(),
            view: view.clone(),
            index,
        };
        let mut follower = EventLoop::build(
            Poll::new()?,
            &self.config_path,
            (self.config.clone(), self.config_text.clone()),
            core,
            self.default_max_flows,
            origin,
            Duties::Follower(FollowerDuties::new(link, origin)),
            adopted,
        )?;
        let waker = follower.waker.clone();
        let gate = self.gate.clone();
        let thread = std::thread::Builder::new().name(format!("udplb-worker-{index}")).spawn(move || {
            // Wakes the leader once this thread is all but done (its sockets closed), however
            // it ends, panics included: the leader may be waiting for the last worker to drain,
            // or must learn that one died.
            struct WakeOnExit(Arc<Waker>);
            impl Drop for WakeOnExit {
                fn drop(&mut self) {
                    let _ = self.0.wake();
                }
            }
            let _wake = WakeOnExit(leader_waker);
            if gate.is_some_and(|gate| !gate.wait()) {
                // The takeover was called off before this worker served: its sockets stay
                // with the old process.
                return;
            }
            if let Err(error) = follower.run() {
                tracing::error!(worker = index, "worker stopped: {error:#}");
            }
            drop(follower);
        })?;
        if let Duties::Leader(leader) = &mut self.duties {
            leader.followers.push(Follower { sender, waker, view, thread: Some(thread) });
        }
        Ok(())
    }

    /// The leader's followers: none for a follower, or for a leader alone.
    pub(crate) fn followers(&self) -> &[Follower] {
        match &self.duties {
            Duties::Leader(leader) => &leader.followers,
            Duties::Follower(_) => &[],
        }
    }

    /// Every worker's datapath counters added up: this one's now, the followers' as they last
    /// published them.
    pub(crate) fn totals(&self) -> WorkerView {
        let mut totals = self.view();
        for follower in self.followers() {
            if let Ok(view) = follower.view.lock() {
                totals.absorb(&view);
            }
        }
        totals
    }

    /// How long the leader may sleep at most: while stopping, it checks on its followers until
    /// the last has drained.
    pub(super) fn leader_interval(&self) -> Option<Duration> {
        let waiting = !self.queries.pending.is_empty();
        ((self.stopping && !self.followers().is_empty()) || waiting).then_some(DRAIN_CHECK_INTERVAL)
    }

    pub(super) fn handle_signals(&mut self) -> anyhow::Result<()> {
        let Duties::Leader(leader) = &mut self.duties else { return Ok(()) };
        let pending: Vec<i32> = leader.signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => {
                    // The outcome is logged by `reload`; there is no one else to tell.
                    let _ = self.reload(None);
                }
                SIGTERM | SIGINT if !self.stopping => {
                    crate::system::sd_notify("STOPPING=1");
                    if crate::handover::fd_store_enabled() && self.hand_over_to_fd_store() {
                        self.handed_over = true;
                        return Ok(());
                    }
                    tracing::info!("stop requested: draining listeners");
                    self.stop();
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// SIGTERM: drain every listener, every follower's included; the loop ends when no flow
    /// is left in any worker.
    pub(super) fn stop(&mut self) {
        if self.stopping {
            return;
        }
        for follower in self.followers() {
            follower.send(ToFollower::Stop);
        }
        self.drain();
    }

    /// The followers' messages: the passive failures their datapaths saw.
    pub(super) fn read_followers_messages(&mut self) {
        let now = self.driver.platform().now();
        let Duties::Leader(LeaderDuties { inbox: Some((_, inbox)), .. }) = &self.duties else { return };
        let messages: Vec<ToLeader> = inbox.try_iter().collect();
        for message in messages {
            match message {
                ToLeader::Input(input) => {
                    let _ = self.driver.handle(now, input);
                }
                ToLeader::Answer { id, worker, answer } => self.take_answer(id, worker, answer),
            }
        }
    }

    /// Passes the backend states the leader's core decided on to every follower.
    pub(super) fn relay_backend_states(&mut self) {
        for output in self.driver.platform_mut().notices.take_relayed() {
            // Backend states only: a leader's core hands its own passive failures to its monitor.
            if let Output::BackendState { backend, state } = output {
                for follower in self.followers() {
                    follower.send(ToFollower::Input(Input::BackendState { backend, state }));
                }
            }
        }
    }

    /// The end of the leader's turn: passes its backend states on to every follower and checks
    /// that they are alive. Returns whether the loop is done: stopped, and every worker
    /// drained.
    pub(super) fn end_leader_turn(&mut self) -> anyhow::Result<bool> {
        if !self.queries.pending.is_empty() {
            self.finish_queries();
        }
        self.relay_backend_states();
        // After the relay above: the followers freeze with every backend state this turn made.
        if let Some((token, pid, protocol)) = self.handover_request.take()
            && let super::handover::Outcome::HandedOver = self.hand_over_on(token, pid, protocol)?
        {
            self.handed_over = true;
        }
        if self.handed_over {
            return Ok(true);
        }
        if !self.stopping
            && let Some(index) = self.followers().iter().position(Follower::finished)
        {
            // A worker that ends on its own has failed (a panic, a socket error): its
            // clients are being moved to the others' sockets. Stop, loudly, and let the
            // service manager restart the process whole.
            anyhow::bail!("worker {} stopped unexpectedly; exiting", index + 1);
        }
        if !(self.drained() && self.followers().iter().all(Follower::finished)) {
            return Ok(false);
        }
        if let Duties::Leader(leader) = &mut self.duties {
            for follower in &mut leader.followers {
                if let Some(thread) = follower.thread.take() {
                    let _ = thread.join();
                }
            }
        }
        tracing::info!("drained; exiting");
        Ok(true)
    }
}
