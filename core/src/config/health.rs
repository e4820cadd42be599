//! The health block of a cluster: active probes, hysteresis, passive health.
//!
//! Semantics follow HAProxy where it has them (`interval` when fully up, `down_interval` when
//! fully down, `fast_interval` in between and while Unknown; one counter in [0, rise+fall−1]
//! for the `haproxy` model) and fix what other UDP proxies get wrong: silence is never healthy
//! (a probe with no answer within `timeout` is a failure), and Unknown resolves on the first
//! result. `docs/configuration.md` lists every field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Active and passive health settings of a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// What the active probes do.
    #[serde(default)]
    pub mode: HealthMode,
    /// Companion TCP port for `tcp` probes; absent = the backend's data port.
    #[serde(default)]
    pub tcp_port: Option<u16>,
    /// Payload of a `udp` probe, as text.
    #[serde(default)]
    pub udp_payload: Option<String>,
    /// Payload of a `udp` probe, as hexadecimal (for binary protocols such as DNS).
    #[serde(default)]
    pub udp_payload_hex: Option<String>,
    /// Expected reply to a `udp` probe, as text; absent = any reply passes.
    #[serde(default)]
    pub udp_expect: Option<String>,
    /// Expected reply, as hexadecimal.
    #[serde(default)]
    pub udp_expect_hex: Option<String>,
    /// How the reply is compared with the expectation.
    #[serde(default)]
    pub udp_expect_match: ExpectMatch,
    /// Probe interval while the backend is fully up.
    #[serde(default = "HealthConfig::default_interval", with = "duration::required")]
    pub interval: Duration,
    /// Probe interval while the backend is changing state, or Unknown; absent = `interval`.
    #[serde(default, with = "duration::optional")]
    pub fast_interval: Option<Duration>,
    /// Probe interval while the backend is fully down; absent = `interval`.
    #[serde(default, with = "duration::optional")]
    pub down_interval: Option<Duration>,
    /// How long a probe may take; no answer by then is a `Timeout` failure.
    #[serde(default = "HealthConfig::default_timeout", with = "duration::required")]
    pub timeout: Duration,
    /// Passes needed to come up.
    #[serde(default = "HealthConfig::default_rise")]
    pub rise: u32,
    /// Failures needed to go down.
    #[serde(default = "HealthConfig::default_fall")]
    pub fall: u32,
    /// How passes and failures are counted.
    #[serde(default)]
    pub model: HysteresisModel,
    /// Random spread added to each interval, in percent of it (seeded, deterministic).
    #[serde(default = "HealthConfig::default_jitter")]
    pub jitter: u8,
    /// Transitions kept per backend for `ctl show backends`.
    #[serde(default = "HealthConfig::default_history")]
    pub history: u32,
    /// An ICMP refusal on the data path counts as a failed check.
    #[serde(default = "yes")]
    pub passive_refused: bool,
    /// A flow whose owed replies never came (it closed `IdleBack` with `responses` set)
    /// counts as a failed check.
    #[serde(default = "yes")]
    pub passive_unanswered: bool,
    /// With `mode = "off"`, how long a backend marked Down by passive health stays out before
    /// it is eligible again (nothing could probe it back up).
    #[serde(default = "HealthConfig::default_passive_recovery", with = "duration::required")]
    pub passive_recovery: Duration,
    /// Outlier ejection: passive signals take a failing backend out for a while, whatever
    /// its active checks say.
    #[serde(default)]
    pub outlier: OutlierConfig,
}

/// Outlier ejection, after Envoy's outlier detection: the datapath's signals (replies owed
/// and written off, refusals, sends that failed, replies from the wrong port; and requests
/// answered) eject a backend when it fails `consecutive_failures` times in a row, or when
/// at least `failure_percent` of its last `window`'s requests failed (once there were
/// `min_requests`) and that share is at least twice the rest of the cluster's. An ejected backend takes no new flows for `base_ejection_time` times the
/// number of its recent ejections (at most `max_ejection_time`); no passing probe readmits it
/// earlier. At most `max_ejected_percent` of a cluster's backends are ejected at once, and
/// never its last eligible one.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Whether passive signals eject. Off: they count as failed checks instead (the
    /// `passive_refused` / `passive_unanswered` switches), as with `mode = "off"`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Failures in a row that eject; 0 turns this rule off.
    #[serde(default = "OutlierConfig::default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Share of failed requests over `window`, in percent, that ejects; 0 turns this rule off.
    #[serde(default = "OutlierConfig::default_failure_percent")]
    pub failure_percent: u32,
    /// Requests (answered or failed) a window needs before `failure_percent` applies.
    #[serde(default = "OutlierConfig::default_min_requests")]
    pub min_requests: u32,
    /// How far back `failure_percent` looks (between one and two windows, in practice).
    #[serde(default = "OutlierConfig::default_window", with = "duration::required")]
    pub window: Duration,
    /// How long a first ejection lasts; the n-th recent one lasts n times as long.
    #[serde(default = "OutlierConfig::default_base_ejection_time", with = "duration::required")]
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts.
    #[serde(default = "OutlierConfig::default_max_ejection_time", with = "duration::required")]
    pub max_ejection_time: Duration,
    /// The largest share of a cluster's backends ejected at once, in percent (at least one
    /// backend may always be ejected, unless it is the last eligible one).
    #[serde(default = "OutlierConfig::default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

impl OutlierConfig {
    fn default_consecutive_failures() -> u32 {
        10
    }
    fn default_failure_percent() -> u32 {
        20
    }
    fn default_min_requests() -> u32 {
        20
    }
    fn default_window() -> Duration {
        Duration::from_secs(5)
    }
    fn default_base_ejection_time() -> Duration {
        Duration::from_secs(10)
    }
    fn default_max_ejection_time() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_ejected_percent() -> u32 {
        50
    }

    fn problems(&self, problems: &mut Vec<HealthProblem>) {
        for (key, value) in [
            ("outlier.window", self.window),
            ("outlier.base_ejection_time", self.base_ejection_time),
            ("outlier.max_ejection_time", self.max_ejection_time),
        ] {
            if value.is_zero() {
                problems.push(HealthProblem::ZeroDuration { key });
            }
        }
        for (key, value) in
            [("outlier.failure_percent", self.failure_percent), ("outlier.max_ejected_percent", self.max_ejected_percent)]
        {
            if value > 100 {
                problems.push(HealthProblem::PercentOutOfRange { key, value });
            }
        }
        if self.max_ejection_time < self.base_ejection_time {
            problems.push(HealthProblem::MaxEjectionBelowBase);
        }
    }
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: Self::default_consecutive_failures(),
            failure_percent: Self::default_failure_percent(),
            min_requests: Self::default_min_requests(),
            window: Self::default_window(),
            base_ejection_time: Self::default_base_ejection_time(),
            max_ejection_time: Self::default_max_ejection_time(),
            max_ejected_percent: Self::default_max_ejected_percent(),
        }
    }
}

fn yes() -> bool {
    true
}

impl HealthConfig {
    fn default_interval() -> Duration {
        Duration::from_secs(2)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_rise() -> u32 {
        2
    }
    fn default_fall() -> u32 {
        3
    }
    fn default_jitter() -> u8 {
        10
    }
    fn default_history() -> u32 {
        5
    }
    fn default_passive_recovery() -> Duration {
        Duration::from_secs(30)
    }

    /// The interval while changing state or Unknown.
    pub fn fast_interval(&self) -> Duration {
        self.fast_interval.unwrap_or(self.interval)
    }

    /// The interval while fully down.
    pub fn down_interval(&self) -> Duration {
        self.down_interval.unwrap_or(self.interval)
    }

    /// The UDP probe payload bytes (from text or hex; empty if neither is set).
    pub fn udp_payload_bytes(&self) -> Vec<u8> {
        bytes_of(self.udp_payload.as_deref(), self.udp_payload_hex.as_deref())
    }

    /// The expected UDP reply bytes, or `None` for "any reply".
    pub fn udp_expect_bytes(&self) -> Option<Vec<u8>> {
        if self.udp_expect.is_none() && self.udp_expect_hex.is_none() {
            return None;
        }
        Some(bytes_of(self.udp_expect.as_deref(), self.udp_expect_hex.as_deref()))
    }

    /// The problems with this block, each with the key it is about.
    pub fn problems(&self) -> Vec<HealthProblem> {
        let mut problems = Vec::new();
        for (key, value) in [
            ("interval", Some(self.interval)),
            ("fast_interval", self.fast_interval),
            ("down_interval", self.down_interval),
            ("timeout", Some(self.timeout)),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                problems.push(HealthProblem::ZeroDuration { key });
            }
        }
        if self.passive_recovery.is_zero() {
            problems.push(HealthProblem::ZeroDuration { key: "passive_recovery" });
        }
        for (key, value) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_RISE_FALL).contains(&value) {
                problems.push(HealthProblem::CountOutOfRange { key, value });
            }
        }
        if self.jitter > MAX_JITTER_PERCENT {
            problems.push(HealthProblem::JitterTooLarge { jitter: self.jitter });
        }
        if self.history > MAX_HISTORY {
            problems.push(HealthProblem::HistoryTooLong { history: self.history });
        }
        if self.tcp_port == Some(0) {
            problems.push(HealthProblem::TcpPortZero);
        }
        for (text_key, hex_key, text, hex) in [
            ("udp_payload", "udp_payload_hex", &self.udp_payload, &self.udp_payload_hex),
            ("udp_expect", "udp_expect_hex", &self.udp_expect, &self.udp_expect_hex),
        ] {
            if text.is_some() && hex.is_some() {
                problems.push(HealthProblem::BothTextAndHex { text_key, hex_key });
            }
            if let Some(hex) = hex
                && let Err(message) = parse_hex(hex)
            {
                problems.push(HealthProblem::InvalidHex { key: hex_key, message });
            }
        }
        if self.mode.probes_udp() && self.udp_payload.is_none() && self.udp_payload_hex.is_none() {
            problems.push(HealthProblem::UdpPayloadMissing);
        }
        self.outlier.problems(&mut problems);
        problems
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            mode: HealthMode::default(),
            tcp_port: None,
            udp_payload: None,
            udp_payload_hex: None,
            udp_expect: None,
            udp_expect_hex: None,
            udp_expect_match: ExpectMatch::default(),
            interval: Self::default_interval(),
            fast_interval: None,
            down_interval: None,
            timeout: Self::default_timeout(),
            rise: Self::default_rise(),
            fall: Self::default_fall(),
            model: HysteresisModel::default(),
            jitter: Self::default_jitter(),
            history: Self::default_history(),
            passive_refused: true,
            passive_unanswered: true,
            passive_recovery: Self::default_passive_recovery(),
            outlier: OutlierConfig::default(),
        }
    }
}

/// Largest `rise` or `fall`.
pub const MAX_RISE_FALL: u32 = 1_000;
/// Largest `jitter`, in percent.
pub const MAX_JITTER_PERCENT: u8 = 50;
/// Largest `history`.
pub const MAX_HISTORY: u32 = 100;

/// What active probes do.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum HealthMode {
    /// No active probes; passive health only.
    #[default]
    #[serde(rename = "off")]
    Off,
    /// TCP connect to the companion port: a hint that the host and service are up, not proof
    /// that the UDP service answers.
    #[serde(rename = "tcp")]
    Tcp,
    /// A UDP datagram (`udp_payload`) that must be answered within `timeout`.
    #[serde(rename = "udp")]
    Udp,
    /// Both; a check passes only when both do.
    #[serde(rename = "tcp+udp")]
    TcpAndUdp,
}

impl HealthMode {
    /// Whether probes include a TCP connect.
    pub fn probes_tcp(self) -> bool {
        matches!(self, HealthMode::Tcp | HealthMode::TcpAndUdp)
    }

    /// Whether probes include a UDP datagram.
    pub fn probes_udp(self) -> bool {
        matches!(self, HealthMode::Udp | HealthMode::TcpAndUdp)
    }
}

/// How a UDP probe's reply is compared with `udp_expect`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectMatch {
    /// The reply equals the expectation.
    #[default]
    Exact,
    /// The reply starts with the expectation.
    Prefix,
}

/// How probe results move a backend between Up and Down.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HysteresisModel {
    /// Separate streaks: `rise` passes in a row to come up, `fall` failures in a row to go
    /// down; any result of the other kind resets the streak.
    #[default]
    Consecutive,
    /// HAProxy's single counter in [0, rise+fall−1]: a pass moves it up, a failure down.
    /// From full health it takes `fall` failures to go down, from 0 it takes `rise` passes to
    /// come up, and alternating results park it in between without a transition.
    Haproxy,
}

/// A problem with a cluster's health block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthProblem {
    #[error("must be longer than zero")]
    ZeroDuration { key: &'static str },
    #[error("{value} is out of range: it must be between 1 and {MAX_RISE_FALL}")]
    CountOutOfRange { key: &'static str, value: u32 },
    #[error("jitter = {jitter}% is over the maximum of {MAX_JITTER_PERCENT}%")]
    JitterTooLarge { jitter: u8 },
    #[error("history = {history} is over the maximum of {MAX_HISTORY}")]
    HistoryTooLong { history: u32 },
    #[error("port 0 cannot be probed; remove tcp_port to probe the backend's data port")]
    TcpPortZero,
    #[error("set either {text_key} or {hex_key}, not both")]
    BothTextAndHex { text_key: &'static str, hex_key: &'static str },
    #[error("invalid hexadecimal: {message}")]
    InvalidHex { key: &'static str, message: String },
    #[error("mode includes udp probes, which need udp_payload or udp_payload_hex")]
    UdpPayloadMissing,
    #[error("{value}% is out of range: a percentage is between 0 and 100")]
    PercentOutOfRange { key: &'static str, value: u32 },
    #[error("max_ejection_time is shorter than base_ejection_time, so no ejection could last as long as the first")]
    MaxEjectionBelowBase,
}

impl HealthProblem {
    /// The key inside the health block that the problem is about.
    pub fn key(&self) -> &'static str {
        match self {
            HealthProblem::ZeroDuration { key }
            | HealthProblem::CountOutOfRange { key, .. }
            | HealthProblem::InvalidHex { key, .. }
            | HealthProblem::PercentOutOfRange { key, .. } => key,
            HealthProblem::MaxEjectionBelowBase => "outlier.max_ejection_time",
            HealthProblem::JitterTooLarge { .. } => "jitter",
            HealthProblem::HistoryTooLong { .. } => "history",
            HealthProblem::TcpPortZero => "tcp_port",
            HealthProblem::BothTextAndHex { hex_key, .. } => hex_key,
            HealthProblem::UdpPayloadMissing => "mode",
        }
    }
}

fn bytes_of(text: Option<&str>, hex: Option<&str>) -> Vec<u8> {
    match (text, hex) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(hex)) => parse_hex(hex).unwrap_or_default(),
        (None, None) => Vec::new(),
    }
}

/// Parses hexadecimal digits; spaces and colons between bytes are allowed ("0a 1b:2c").
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("{} hex digits: bytes need two digits each", digits.len()));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16);
            let low = (pair[1] as char).to_digit(16);
            match (high, low) {
                (Some(high), Some(low)) => Ok((high * 16 + low) as u8),
                _ => Err(format!("{:?} is not a hexadecimal byte", String::from_utf8_lossy(pair))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_accepts_separators_and_rejects_odd_or_bad_digits() {
        assert_eq!(parse_hex("0a 1B:2c"), Ok(vec![0x0a, 0x1b, 0x2c]));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }

    #[test]
    fn defaults_are_valid_and_udp_mode_needs_a_payload() {
        assert!(HealthConfig::default().problems().is_empty());
        let udp = HealthConfig { mode: HealthMode::Udp, ..HealthConfig::default() };
        assert_eq!(udp.problems(), vec![HealthProblem::UdpPayloadMissing]);
        let udp = HealthConfig { udp_payload_hex: Some("00ff".into()), ..udp };
        assert!(udp.problems().is_empty());
        assert_eq!(udp.udp_payload_bytes(), vec![0, 255]);
        assert_eq!(udp.udp_expect_bytes(), None);
    }
}
