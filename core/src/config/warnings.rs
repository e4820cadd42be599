//! Warnings: settings that are valid but risky, which `udplb check` reports (and
//! `--deny-warnings` turns into errors) and `udplb run` logs at start. Each names its field,
//! says what could go wrong in an operator's words, and what to do about it.
//!
//! The core knows only the file; the shell adds what depends on the machine (the descriptor
//! limit behind `max_flows`, the CPUs behind `workers`) as warnings of the same shape.

use std::time::Duration;

use super::locate::SpannedDocument;
use super::{Config, FieldPath, HealthMode, Location};

/// How long the systemd unit udplb ships (and systemd by default) lets a service take to
/// stop before it is killed.
const SYSTEMD_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A valid but risky setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The field it is about (a table for a setting that is absent).
    pub path: FieldPath,
    /// What could go wrong, and what to do.
    pub message: String,
}

impl ConfigWarning {
    pub fn new(path: FieldPath, message: impl Into<String>) -> ConfigWarning {
        ConfigWarning { path, message: message.into() }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

impl Config {
    /// The warnings this configuration deserves, in the order of the configuration's maps
    /// (deterministic); [`render_warnings`] sorts them by place in the file.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        for (name, cluster) in &self.clusters {
            if cluster.quic_lb.is_some() {
                continue;
            }
            for (index, backend) in cluster.backends.iter().enumerate() {
                if backend.server_id.is_some() {
                    warnings.push(ConfigWarning::new(
                        FieldPath::root()
                            .key("clusters")
                            .key(name)
                            .key("backends")
                            .index(index)
                            .key("server_id"),
                        format!(
                            "has no effect: cluster {name:?} has no quic_lb table, so connection IDs are not \
                             read and flows are placed by its algorithm alone"
                        ),
                    ));
                }
            }
        }
        let process = FieldPath::root().key("process");
        let stop = self.process.stop_timeout();
        if stop > SYSTEMD_STOP_TIMEOUT {
            warnings.push(ConfigWarning::new(
                process.clone().key("stop_timeout"),
                format!(
                    "a stop may take {}, longer than the {} systemd gives a service by default (and the \
                     shipped unit's TimeoutStopSec): systemd would kill udplb first, dropping every flow at \
                     once. Raise TimeoutStopSec with it",
                    seconds(stop),
                    seconds(SYSTEMD_STOP_TIMEOUT)
                ),
            ));
        }
        if let Some(address) = self.process.metrics_addr
            && address.ip().is_unspecified()
        {
            warnings.push(ConfigWarning::new(
                process.clone().key("metrics_addr"),
                format!(
                    "{address} serves metrics on every address of the host, without authentication; bind \
                     a private or loopback address (such as 127.0.0.1:{})",
                    address.port()
                ),
            ));
        }
        for (name, listener) in &self.listeners {
            let path = FieldPath::root().key("listeners").key(name.clone());
            match listener.drain_timeout {
                None => warnings.push(ConfigWarning::new(
                    path.clone(),
                    format!(
                        "no drain_timeout: when the listener drains (udplb stopping, or `udplb ctl listener \
                         {name} drain`) a client that keeps sending keeps its flow alive, and new clients \
                         are refused all the while; a stop waits up to process.stop_timeout ({}) before it \
                         closes them. Set drain_timeout (such as \"5s\")",
                        seconds(stop)
                    ),
                )),
                Some(drain) if drain > stop => warnings.push(ConfigWarning::new(
                    path.clone().key("drain_timeout"),
                    format!(
                        "{} is longer than process.stop_timeout ({}): on a stop, flows left at stop_timeout \
                         are closed anyway",
                        seconds(drain),
                        seconds(stop)
                    ),
                )),
                Some(_) => {}
            }
            if let (Some(own), Some(process_cap)) = (listener.max_flows, self.process.max_flows)
                && own > process_cap
            {
                warnings.push(ConfigWarning::new(
                    path.clone().key("max_flows"),
                    format!(
                        "{own} is above process.max_flows ({process_cap}), which caps this listener first"
                    ),
                ));
            }
        }
        for (name, cluster) in &self.clusters {
            let path = FieldPath::root().key("clusters").key(name.clone());
            // A service that answers every request (`responses` > 0) can answer a probe too; a
            // one-way service (syslog) or one that answers only well-formed sessions (QUIC)
            // may have no better check than TCP.
            if cluster.health.mode == HealthMode::Tcp
                && let Some(responses) = cluster.responses.filter(|n| *n > 0)
            {
                warnings.push(ConfigWarning::new(
                    path.clone().key("health").key("mode"),
                    format!(
                        "TCP-only health for a UDP service that answers (responses = {responses}): a backend \
                         whose UDP service stops answering stays up for as long as its TCP port accepts. Use \
                         mode = \"udp\" with a probe the service answers, or \"tcp+udp\""
                    ),
                ));
            }
        }
        warnings
    }
}

/// `file:line:column: warning: field `path`: message`, one line per warning, sorted by their
/// place in `text`, without a trailing newline.
pub fn render_warnings(text: &str, file: &str, warnings: &[ConfigWarning]) -> String {
    let document = SpannedDocument::parse(text);
    let mut located: Vec<(Location, &ConfigWarning)> =
        warnings.iter().map(|warning| (document.locate(&warning.path), warning)).collect();
    located.sort_by_key(|(location, _)| *location);
    located
        .iter()
        .map(|(Location { line, column }, warning)| {
            format!("{file}:{line}:{column}: warning: field `{}`: {}", warning.path, warning.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
