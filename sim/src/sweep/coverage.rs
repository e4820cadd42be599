//! Coverage of rare branches: for a named list of paths through the core that few runs take,
//! how many runs of a sweep reached each and how often in all. Read after each run from the
//! core's own counters (every instance's `Stats`: drops and closes by reason, retries,
//! fail-open flows, per-backend faults) and from the events the run's record counted by name.

use std::collections::BTreeMap;

use udplb_core::names::EventName;
use udplb_core::{CloseReason, DropReason, Stats};

use crate::world::World;

/// A rare path: its name in the table and how to count it in one run's stats and events.
pub struct RarePath {
    pub name: &'static str,
    count: fn(&Stats, &BTreeMap<EventName, u64>) -> u64,
}

fn client_drops(stats: &Stats, reason: DropReason) -> u64 {
    stats.listeners.iter().map(|l| l.client.dropped(reason)).sum()
}

fn backend_drops(stats: &Stats, reason: DropReason) -> u64 {
    stats.listeners.iter().map(|l| l.backend.dropped(reason)).sum::<u64>()
        + stats.unattributed.dropped(reason)
}

fn event(events: &BTreeMap<EventName, u64>, name: EventName) -> u64 {
    events.get(&name).copied().unwrap_or(0)
}

/// The paths `sweep` reports, in the order of its table.
pub const PATHS: &[RarePath] = &[
    RarePath {
        name: "ICMP refusal closes a flow (upstream_refused)",
        count: |s, _| s.flows.closed_for(CloseReason::UpstreamRefused),
    },
    RarePath { name: "refused datagram re-sent to another backend", count: |s, _| s.retries.resent },
    RarePath {
        name: "refused datagram, no other backend to retry",
        count: |s, _| s.retries.no_other_backend,
    },
    RarePath {
        name: "retry slot exhausted (retry_buffer_bytes)",
        count: |s, _| s.retries.not_kept_over_budget,
    },
    RarePath { name: "table full (shed)", count: |s, _| client_drops(s, DropReason::Shed) },
    RarePath {
        name: "no healthy backend (dropped)",
        count: |s, _| client_drops(s, DropReason::NoHealthyBackend),
    },
    RarePath {
        name: "fail-open entry (flow to an ineligible backend)",
        count: |s, _| s.listeners.iter().map(|l| l.fail_open_flows).sum(),
    },
    RarePath { name: "ejection (outlier)", count: |_, e| event(e, EventName::BackendEjected) },
    RarePath { name: "readmission after ejection", count: |_, e| event(e, EventName::BackendReadmitted) },
    RarePath {
        name: "reselect (flow moved off a Down backend)",
        count: |s, _| s.flows.closed_for(CloseReason::Reselected),
    },
    RarePath {
        name: "flow closed because its backend went Down",
        count: |s, _| s.flows.closed_for(CloseReason::BackendDown),
    },
    RarePath { name: "cluster all down", count: |_, e| event(e, EventName::ClusterAllDown) },
    RarePath {
        name: "reply written off (idle_timeout.back)",
        count: |s, _| s.backends.iter().map(|b| b.replies_written_off).sum(),
    },
    RarePath {
        name: "written-off reply taken back",
        count: |s, _| s.backends.iter().map(|b| b.replies_taken_back).sum(),
    },
    RarePath { name: "duplicate reply dropped", count: |s, _| backend_drops(s, DropReason::DuplicateReply) },
    RarePath {
        name: "stray reply (backend's IP, other port)",
        count: |s, _| s.backends.iter().map(|b| b.stray_replies).sum(),
    },
    RarePath {
        name: "upstream unreachable closes a flow",
        count: |s, _| s.flows.closed_for(CloseReason::UpstreamUnreachable),
    },
    RarePath { name: "upstream open failed", count: |s, _| client_drops(s, DropReason::UpstreamOpenFailed) },
    RarePath {
        name: "send failed",
        count: |s, _| client_drops(s, DropReason::SendFailed) + backend_drops(s, DropReason::SendFailed),
    },
    RarePath { name: "lifetime reached", count: |s, _| s.flows.closed_for(CloseReason::LifetimeReached) },
    RarePath { name: "listener drained", count: |_, e| event(e, EventName::ListenerDrained) },
    RarePath { name: "backend fault event", count: |_, e| event(e, EventName::BackendFault) },
];

/// One run's count of each path, in [`PATHS`] order.
pub fn of_run(world: &World) -> Vec<u64> {
    let mut stats = Stats::default();
    let mut counts = vec![0u64; PATHS.len()];
    for driver in &world.drivers {
        stats.clone_from(driver.core().flows().stats());
        for (count, path) in counts.iter_mut().zip(PATHS) {
            // Events are counted from the first instance's view (the record's); stats per
            // instance, so an event-only path is counted once.
            *count += (path.count)(&stats, &BTreeMap::new());
        }
    }
    for (count, path) in counts.iter_mut().zip(PATHS) {
        *count += (path.count)(&Stats::default(), &world.record.events);
    }
    counts
}

/// A sweep's totals: per path, the runs that reached it and how often in all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub runs: Vec<u64>,
    pub times: Vec<u64>,
}

impl Coverage {
    pub fn new() -> Coverage {
        Coverage { runs: vec![0; PATHS.len()], times: vec![0; PATHS.len()] }
    }

    pub fn add(&mut self, counts: &[u64]) {
        for (index, count) in counts.iter().enumerate() {
            self.times[index] += count;
            self.runs[index] += u64::from(*count > 0);
        }
    }

    /// The table `sweep` prints at its end, and a line naming every path no run reached.
    pub fn table(&self) -> String {
        let mut out = format!("{:<50} {:>8} {:>10}\n", "rare path", "runs", "times");
        for (index, path) in PATHS.iter().enumerate() {
            out.push_str(&format!("{:<50} {:>8} {:>10}\n", path.name, self.runs[index], self.times[index]));
        }
        let missed: Vec<&str> =
            PATHS.iter().zip(&self.runs).filter(|(_, runs)| **runs == 0).map(|(p, _)| p.name).collect();
        if missed.is_empty() {
            out.push_str("every rare path was reached\n");
        } else {
            out.push_str(&format!("not reached by any run: {}\n", missed.join("; ")));
        }
        out
    }
}
