//! Tests of the health monitor, driven as the shell drives it: inputs with a virtual `now`,
//! outputs drained after every call, the timer re-armed from `poll_timeout`.

mod monitor;
mod outlier;
mod probes;
mod properties;
mod scheduling;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::{HealthConfig, HealthMode, HysteresisModel};

pub(super) const KEY: [u8; 32] = [42; 32];

/// A health block with round numbers: interval 2 s, fast 500 ms, down 5 s, timeout 1 s,
/// rise 2, fall 3, the HAProxy model, no jitter (tests that want jitter set it).
pub(super) fn config(mode: HealthMode) -> HealthConfig {
    HealthConfig {
        mode,
        udp_payload: mode.probes_udp().then(|| "ping".to_string()),
        interval: Duration::from_secs(2),
        fast_interval: Some(Duration::from_millis(500)),
        down_interval: Some(Duration::from_secs(5)),
        timeout: Duration::from_secs(1),
        rise: 2,
        fall: 3,
        model: HysteresisModel::Haproxy,
        jitter: 0,
        ..HealthConfig::default()
    }
}

/// `config(mode)` with outlier ejection off: passive failures move the hysteresis.
pub(super) fn without_ejection(mode: HealthMode) -> HealthConfig {
    let outlier = crate::config::OutlierConfig { enabled: false, ..Default::default() };
    HealthConfig { outlier, ..config(mode) }
}

/// Backend `index` of cluster `cluster`, at 192.0.2.`index`:53 (a documentation address).
pub(super) fn spec(cluster: u32, index: u8, health: &HealthConfig) -> MonitoredBackend {
    MonitoredBackend {
        cluster: ClusterId(cluster),
        cluster_name: format!("cluster-{cluster}"),
        id: format!("b{index}"),
        address: SocketAddr::from((Ipv4Addr::new(192, 0, 2, index), 53)),
        health: Arc::new(health.clone()),
        proxy_v2_local: false,
    }
}

/// How a scripted backend answers one probe: after a delay, a result or a reply; `None`
/// from the responder means silence.
#[derive(Clone, Debug)]
pub(super) enum Answer {
    Result(ProbeResult),
    Reply(Vec<u8>),
}

pub(super) fn pass() -> Option<(Duration, Answer)> {
    Some((Duration::ZERO, Answer::Result(ProbeResult::Pass)))
}

pub(super) fn fail(failure: ProbeFailure) -> Option<(Duration, Answer)> {
    Some((Duration::ZERO, Answer::Result(ProbeResult::Fail(failure))))
}

/// A monitor with a virtual clock and a log of every output with the time it was polled.
pub(super) struct Harness {
    pub(super) monitor: HealthMonitor,
    pub(super) now: Instant,
    pub(super) log: Vec<(Instant, HealthOutput)>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with_key(&KEY)
    }

    pub(super) fn with_key(key: &[u8; 32]) -> Self {
        Harness { monitor: HealthMonitor::new(key), now: Instant::ZERO, log: Vec::new() }
    }

    /// Adds backend `BackendId(id)` and drains.
    pub(super) fn add(&mut self, id: u32, spec: MonitoredBackend) {
        self.monitor.add_backend(self.now, BackendId(id), spec);
        self.drain();
    }

    /// Drains every output into the log and returns them.
    pub(super) fn drain(&mut self) -> Vec<HealthOutput> {
        let outputs: Vec<HealthOutput> = std::iter::from_fn(|| self.monitor.poll_output()).collect();
        self.log.extend(outputs.iter().map(|output| (self.now, output.clone())));
        outputs
    }

    /// Runs the world until `until`: fires deadlines, starts probes, and delivers whatever
    /// `respond` answers for each probe (by its delay), in time order, draining after every
    /// call. Answers due at the same instant as a deadline are delivered first.
    pub(super) fn drive(
        &mut self,
        until: Instant,
        mut respond: impl FnMut(Instant, &ProbeRequest) -> Option<(Duration, Answer)>,
    ) {
        let mut pending: Vec<(Instant, u64, ProbeId, Answer)> = Vec::new();
        let mut sequence = 0u64;
        for _ in 0..1_000_000 {
            for output in self.drain() {
                if let HealthOutput::StartProbe(request) = &output
                    && let Some((delay, answer)) = respond(self.now, request)
                {
                    pending.push((self.now + delay, sequence, request.probe, answer));
                    sequence += 1;
                }
            }
            let next_answer = pending.iter().enumerate().min_by_key(|(_, (at, seq, ..))| (*at, *seq));
            let next_answer = next_answer.map(|(index, (at, ..))| (index, *at));
            let next_timer = self.monitor.poll_timeout();
            match (next_answer, next_timer) {
                (Some((index, at)), timer) if at <= until && timer.is_none_or(|timer| at <= timer) => {
                    self.now = at;
                    let (_, _, probe, answer) = pending.swap_remove(index);
                    match answer {
                        Answer::Result(result) => self.monitor.handle_probe_result(at, probe, result),
                        Answer::Reply(bytes) => self.monitor.handle_probe_reply(at, probe, &bytes),
                    }
                }
                (_, Some(timer)) if timer <= until => {
                    self.now = timer;
                    self.monitor.handle_timeout(timer);
                    assert!(self.monitor.poll_timeout().is_none_or(|next| next > timer));
                }
                _ => {
                    self.now = until;
                    self.drain();
                    return;
                }
            }
            self.monitor.check_invariants().unwrap();
        }
        panic!("drive did not reach {until}");
    }

    /// Advances to `until` with every probe left unanswered.
    pub(super) fn silence(&mut self, until: Instant) {
        self.drive(until, |_, _| None);
    }

    /// The probes started so far, with their start times.
    pub(super) fn starts(&self) -> Vec<(Instant, ProbeRequest)> {
        self.log
            .iter()
            .filter_map(|(at, output)| match output {
                HealthOutput::StartProbe(request) => Some((*at, request.clone())),
                _ => None,
            })
            .collect()
    }

    /// The health events logged so far.
    pub(super) fn events(&self) -> Vec<HealthEvent> {
        self.log
            .iter()
            .filter_map(|(_, output)| match output {
                HealthOutput::Event(event) => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    /// The transitions logged so far: (backend, from, to, code, at).
    pub(super) fn transitions(&self) -> Vec<(u32, Health, Health, CheckCode, Instant)> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                HealthEvent::Transition { backend, from, to, code, at, .. } => {
                    Some((backend.0, from, to, code, at))
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn status(&self, id: u32) -> BackendStatus {
        self.monitor.backend(BackendId(id)).expect("backend is monitored")
    }
}

pub(super) fn secs(seconds: u64) -> Instant {
    Instant::from_secs(seconds)
}

pub(super) fn millis(milliseconds: u64) -> Instant {
    Instant::from_millis(milliseconds)
}
