//! [`Codec`] for the crate's public state types (the private ones implement it next to their
//! definitions, where their fields are visible).

use super::SnapshotError;
use super::codec::{Codec, Reader, Writer, codec_struct, codec_unit_enum};
use crate::balancer::FrontendState;
use crate::config::Algorithm;
use crate::health::{
    AdminState, BackendState, CheckCode, CheckDurations, Health, HealthStats, ProbeFailure, ProbeResult,
};
use crate::outcome::QuicRoute;
use crate::select::Candidate;
use crate::stats::{
    BackendStats, DatagramCounters, FlowCounters, LatencyHistogram, ListenerStats, RetryCounters, Stats,
};

codec_unit_enum!(Health { Unknown, Up, Down });
codec_unit_enum!(AdminState { Enabled, Paused, Disabled, Draining, Removed });
codec_unit_enum!(CheckCode {
    L4Ok,
    L4Con,
    L4Tout,
    L7Ok,
    L7Tout,
    L7Rsp,
    SockErr,
    PassiveCon,
    PassiveTout,
    PassiveRecovery,
    Init
});
codec_unit_enum!(ProbeFailure { Refused, Timeout, Mismatch, Error });
codec_unit_enum!(Algorithm { RoundRobin, Random, LeastFlows, PowerOfTwo, Hrw, Maglev });
codec_unit_enum!(QuicRoute { Routed, NotQuic, UnknownConfig, TooShort, UnknownServer, ServerDown });
codec_unit_enum!(FrontendState { Unknown, Up, Down });

impl Codec for ProbeResult {
    fn put(&self, w: &mut Writer) {
        match self {
            ProbeResult::Pass => w.bytes.push(0),
            ProbeResult::Fail(failure) => {
                w.bytes.push(1);
                failure.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("probe result")? {
            0 => Ok(ProbeResult::Pass),
            1 => Ok(ProbeResult::Fail(ProbeFailure::get(r)?)),
            _ => Err(r.invalid("probe result")),
        }
    }
}

codec_struct!(BackendState { eligible, health, admin });
codec_struct!(Candidate { backend, identity, weight, pool, backup, eligible, enabled, flows });
codec_struct!(DatagramCounters { received, bytes_received, passed, bytes_passed, drops });
codec_struct!(FlowCounters { created, closed, active, retired });
codec_struct!(ListenerStats {
    client,
    backend,
    flows,
    fail_open_flows,
    sources_tracked,
    sources_evicted,
    quic_lb
});
codec_struct!(Stats { listeners, unattributed, flows, retries, backends });
codec_struct!(BackendStats {
    requests_answered,
    replies_written_off,
    replies_taken_back,
    duplicate_replies,
    stray_replies,
    send_failures,
    flows_reselected,
    amplification_drops,
    reply_latency
});
codec_struct!(LatencyHistogram { buckets, sum_micros, count });
codec_struct!(RetryCounters { resent, no_other_backend, not_kept_over_budget, bytes_kept });
codec_struct!(HealthStats {
    probes_started,
    checks_passed,
    checks_failed,
    probes_refused,
    probes_timed_out,
    probes_mismatched,
    probes_errored,
    results_late,
    results_unknown,
    results_duplicate,
    replies_to_tcp_probes,
    passive_counted,
    passive_ignored,
    passive_answered,
    ejections,
    ejections_refused,
    unknown_backend,
    transitions,
    events_dropped
});
codec_struct!(CheckDurations { passed, failed });
