//! A follower's duties: every worker but the main thread's (`process.workers` > 1). Its link
//! to the leader carries the leader's messages in (backend states, reloads, commands, the
//! stop), which it applies to its own core, and the passive failures its datapath sees out;
//! a few times per second it publishes its counters for the leader's metrics.

use std::time::Duration;

use udplb_core::Input;
use udplb_core::balancer::Output;

use super::{Duties, EventLoop};
use crate::workers::{FlowAnswer, LeaderLink, ToFollower, ToLeader};

/// How often a follower publishes its counters for the leader's metrics.
pub(super) const VIEW_INTERVAL: Duration = Duration::from_millis(200);

/// What a follower has that the leader lacks.
pub(super) struct FollowerDuties {
    pub(super) link: LeaderLink,
    /// When this follower last published its view.
    last_view: std::time::Instant,
}

impl FollowerDuties {
    /// `origin`: when the process's clock started, as if the follower had published then.
    pub(super) fn new(link: LeaderLink, origin: std::time::Instant) -> FollowerDuties {
        FollowerDuties { link, last_view: origin }
    }
}

impl EventLoop {
    fn following(&self) -> Option<&FollowerDuties> {
        match &self.duties {
            Duties::Follower(duties) => Some(duties),
            Duties::Leader(_) => None,
        }
    }

    /// The leader's messages: backend states, listener commands, weights, reloads and the
    /// stop.
    pub(super) fn read_leader_messages(&mut self) {
        let now = self.driver.platform().now();
        let Some(duties) = self.following() else { return };
        let messages: Vec<ToFollower> = duties.link.inbox.try_iter().collect();
        for message in messages {
            match message {
                ToFollower::Input(input) => {
                    let _ = self.driver.handle(now, input);
                }
                ToFollower::Reload { config, ack } => {
                    let mut answer = FlowAnswer::default();
                    match self.driver.reload(now, &config) {
                        Ok(reload) => {
                            answer.total = reload.flows.flows_closed;
                            self.running = (*config).clone();
                        }
                        Err(errors) => {
                            // Cannot happen: the leader validated the same file.
                            let errors = udplb_core::config::render_errors(&errors);
                            tracing::error!(%errors, "worker could not apply the leader's configuration");
                            answer.error = Some(format!("could not apply the configuration: {errors}"));
                        }
                    }
                    let (core, platform) = self.driver.parts_mut();
                    if let Err(error) = platform.sync_listeners(core, &config) {
                        tracing::error!("a new listener could not be opened: {error:#}");
                        answer.error = Some(format!("a new listener could not be opened: {error:#}"));
                    }
                    if let Some(id) = ack
                        && let Some(duties) = self.following()
                    {
                        duties.link.send(ToLeader::Answer { id, worker: duties.link.index, answer });
                    }
                }
                ToFollower::Stop => self.drain(),
                ToFollower::Freeze { reply } => {
                    if self.freeze_follower(reply) {
                        self.handed_over = true;
                        return;
                    }
                }
                ToFollower::Exit => {
                    self.handed_over = true;
                    return;
                }
                // Only meaningful while frozen (`freeze_follower` waits for them).
                ToFollower::Thaw | ToFollower::FallBack { .. } => {}
                ToFollower::Query { id, question } => {
                    let Some(worker) = self.following().map(|duties| duties.link.index) else { continue };
                    let answer = self.answer_question(&question, worker);
                    if let Some(duties) = self.following() {
                        duties.link.send(ToLeader::Answer { id, worker, answer });
                    }
                }
            }
        }
    }

    /// The end of a follower's turn: passes its passive signals on to the leader, publishes
    /// its view now and then (at every turn while stopping). Returns whether the loop is done:
    /// stopped and drained.
    pub(super) fn end_follower_turn(&mut self) -> bool {
        if self.handed_over {
            return true;
        }
        self.relay_to_leader();
        let Some(duties) = self.following() else { return false };
        if duties.last_view.elapsed() >= VIEW_INTERVAL || self.stopping {
            self.publish_view();
        }
        if !self.drained() {
            return false;
        }
        if let Some(duties) = self.following() {
            tracing::info!(worker = duties.link.index, "drained; worker done");
        }
        true
    }

    /// Passes the passive signals this worker's datapath saw on to the leader.
    pub(super) fn relay_to_leader(&mut self) {
        let relayed = self.driver.platform_mut().notices.take_relayed();
        let Some(duties) = self.following() else { return };
        for output in relayed {
            // Passive signals only: backend states come from the leader.
            match output {
                Output::Flow(udplb_core::Output::PassiveFailure { backend, failure }) => {
                    duties.link.send(ToLeader::Input(Input::PassiveFailure { backend, failure }));
                }
                Output::Flow(udplb_core::Output::PassiveSuccess { backend, answered }) => {
                    duties.link.send(ToLeader::Input(Input::PassiveSuccess { backend, answered }));
                }
                _ => {}
            }
        }
    }

    fn publish_view(&mut self) {
        if let Duties::Follower(duties) = &mut self.duties {
            duties.last_view = std::time::Instant::now();
        }
        let view = self.view();
        if let Some(duties) = self.following()
            && let Ok(mut shared) = duties.link.view.lock()
        {
            *shared = view;
        }
    }
}
