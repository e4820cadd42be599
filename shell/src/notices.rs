//! What a worker does with the core's outputs besides acting on sockets. The driver hands every
//! output to the platform (`Platform::notify`), and the platform hands it here, where it is
//! kept for the other workers, counted, queued for `watch`ers of the control socket, and
//! logged. The worker's own counts ([`ShellCounters`]) live here too: the platform adds the
//! traffic it sends and receives, this adds the transitions and the events `watch`ers lost.

use udplb_core::Balancer;
use udplb_core::balancer::Output;
use udplb_core::health::HealthEvent;

use crate::counters::ShellCounters;

/// Events waiting for `watch`ers between two turns of the loop; more are counted as lost.
const MAX_QUEUED_WATCH_EVENTS: usize = 4096;

/// One worker's notices of the core's outputs.
#[derive(Debug, Default)]
pub(crate) struct Notices {
    /// Counts the core does not keep (per-backend traffic, transitions by code).
    pub(crate) counters: ShellCounters,
    /// Set while a control connection watches: events are then queued for it.
    watching: bool,
    watch_queue: Vec<Output>,
    /// Events not queued since the last turn because the queue was full.
    watch_lost: u64,
    /// Set with several workers: outputs another worker must know are kept in `relayed`.
    relay: bool,
    relayed: Vec<Output>,
}

impl Notices {
    /// `relay`: whether this worker has others to tell (with several workers, every one).
    pub(crate) fn new(relay: bool) -> Notices {
        Notices { relay, ..Notices::default() }
    }

    /// Takes one output of the core: an output another worker must know is kept for it (and
    /// only that); any other is counted, queued for watchers, and logged.
    pub(crate) fn notify(&mut self, core: &Balancer, output: &Output) {
        if self.relay
            && matches!(
                output,
                Output::BackendState { .. }
                    | Output::Flow(
                        udplb_core::Output::PassiveFailure { .. } | udplb_core::Output::PassiveSuccess { .. }
                    )
            )
        {
            self.relayed.push(output.clone());
            return;
        }
        if let Output::Health(HealthEvent::Transition { backend, to, code, .. }) = output {
            self.counters.transition(*backend, *to, *code);
        }
        if self.watching && crate::control::status::is_watch_event(output) {
            if self.watch_queue.len() < MAX_QUEUED_WATCH_EVENTS {
                self.watch_queue.push(output.clone());
            } else {
                self.watch_lost += 1;
                self.counters.watch_events_lost += 1;
            }
        }
        crate::log_events::log_output(core, output);
    }

    /// Starts or stops queueing events for watchers. Stopping drops what was queued.
    pub(crate) fn set_watching(&mut self, watching: bool) {
        self.watching = watching;
        if !watching {
            self.watch_queue.clear();
            self.watch_lost = 0;
        }
    }

    /// The events queued for watchers since the last call, and how many could not be queued.
    pub(crate) fn take_watch_events(&mut self) -> (Vec<Output>, u64) {
        (std::mem::take(&mut self.watch_queue), std::mem::take(&mut self.watch_lost))
    }

    /// The outputs kept for the other workers since the last call.
    /// Whether a backend state waits to be relayed to the followers.
    pub(crate) fn relays_backend_state(&self) -> bool {
        self.relayed.iter().any(|output| matches!(output, Output::BackendState { .. }))
    }

    pub(crate) fn take_relayed(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.relayed)
    }
}
