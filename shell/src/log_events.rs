//! Log lines for the core's outputs, and the subscriber `udplb run` writes them through.
//!
//! Each output that is worth a line gives exactly one tracing event. Its `event` field is the
//! stable name (`udplb_core::names`: `backend_down`, `backend_admin`, `cluster_all_down`,
//! `frontend_up`, `listener_drained`, ...; at debug level also `flow_opened` and
//! `flow_closed`); `listener`, `cluster` and `backend` name things by their ids in the
//! configuration file; every other value is a field of its own (`from`, `to`, `code`,
//! `state`, `reason`, `flows_remaining`, `flow`, `address`), written with its stable name. With
//! `log_format = "json"` each field is a key of the line's JSON object:
//!
//! ```text
//! {"timestamp":"…","level":"INFO","message":"backend health","event":"backend_down","cluster":"dns","backend":"a","from":"up","to":"down","code":"L4CON"}
//! ```
//!
//! and the human format reads `INFO backend health event=backend_down cluster=dns backend=a
//! from=up to=down code=L4CON`. The time of the line is the log's own timestamp.

use std::fmt;

use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use udplb_core::balancer::Output;
use udplb_core::config::LogFormat;
use udplb_core::health::HealthEvent;
use udplb_core::{BackendId, Balancer, ClusterId, Event, ListenerId};

/// The subscriber `udplb run` logs through: `format`, events up to `level`, written to
/// `writer` (stderr in the binary). JSON lines carry every field at the top level of the
/// object, beside `timestamp`, `level` and `message`.
pub fn subscriber<W>(
    format: LogFormat,
    level: Level,
    colour: bool,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_target(false)
        .with_max_level(level)
        .with_ansi(colour);
    match format {
        LogFormat::Human => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

/// A configured name, or the id when the name is not known (a removed listener, say).
struct Shown<'a, Id>(Option<&'a str>, Id);

impl<Id: fmt::Display> fmt::Display for Shown<'_, Id> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => f.write_str(name),
            None => self.1.fmt(f),
        }
    }
}

/// Logs one output of `core`, naming listeners, clusters and backends by their configured ids
/// (or by the core's id, `listener#3`, for one the configuration no longer has). Outputs that
/// are not worth a line (probes to start, resends, states relayed between workers) log nothing.
pub fn log_output(core: &Balancer, output: &Output) {
    let flows = core.flows();
    let listener = |id: ListenerId| Shown(flows.listener(id).map(|(name, _)| name), id);
    let cluster = |id: ClusterId| Shown(flows.cluster_name(id), id);
    let backend = |id: BackendId| Shown(flows.backend(id).map(|(name, _)| name), id);
    // A backend's cluster, for events that do not carry it.
    let cluster_of = |id: BackendId| match flows.backend_cluster(id) {
        Some(cluster_id) => cluster(cluster_id).to_string(),
        None => "?".to_owned(),
    };
    // `%`: the human format writes a displayed value without quotes.
    let event = tracing::field::display(output.event_name().map_or("", |name| name.as_str()));
    match output {
        Output::Health(HealthEvent::Transition { cluster: c, backend: b, from, to, code, .. }) => {
            tracing::info!(
                event,
                cluster = %cluster(*c),
                backend = %backend(*b),
                %from,
                %to,
                %code,
                "backend health"
            )
        }
        Output::Health(HealthEvent::AdminChanged { cluster: c, backend: b, from, to, .. }) => {
            tracing::info!(event, cluster = %cluster(*c), backend = %backend(*b), %from, %to, "backend admin")
        }
        Output::Health(HealthEvent::Ejected { cluster: c, backend: b, until, at }) => {
            let ejected_for = tracing::field::debug(*until - *at);
            tracing::warn!(event, cluster = %cluster(*c), backend = %backend(*b), ejected_for, "backend ejected")
        }
        Output::Health(HealthEvent::Readmitted { cluster: c, backend: b, .. }) => {
            tracing::info!(event, cluster = %cluster(*c), backend = %backend(*b), "backend readmitted")
        }
        Output::Health(HealthEvent::ClusterAllDown { cluster: c, .. }) => {
            tracing::info!(event, cluster = %cluster(*c), "cluster all down")
        }
        Output::Health(HealthEvent::ClusterRecovered { cluster: c, .. }) => {
            tracing::info!(event, cluster = %cluster(*c), "cluster recovered")
        }
        Output::Frontend { listener: l, state } => {
            tracing::info!(event, listener = %listener(*l), %state, "listener state")
        }
        Output::Flow(udplb_core::Output::Event(flow_event)) => match flow_event {
            Event::ListenerDraining { listener: l, flows_remaining } => {
                tracing::info!(event, listener = %listener(*l), flows_remaining, "listener draining")
            }
            Event::ListenerDrained { listener: l } => {
                tracing::info!(event, listener = %listener(*l), "listener drained")
            }
            Event::ListenerResumed { listener: l } => {
                tracing::info!(event, listener = %listener(*l), "listener resumed")
            }
            Event::BackendDrained { backend: b } => {
                tracing::info!(event, cluster = %cluster_of(*b), backend = %backend(*b), "backend drained")
            }
            Event::BackendFault { backend: b, failure, count } => {
                let what = match failure {
                    udplb_core::PassiveFailure::StrayReply => "replies from another port than the one udplb sent to, dropped",
                    udplb_core::PassiveFailure::SendFailed => "datagrams to the backend could not be sent",
                    _ => "datapath failures",
                };
                tracing::warn!(
                    event,
                    cluster = %cluster_of(*b),
                    backend = %backend(*b),
                    fault = %failure,
                    count,
                    "{what} (at most one line per backend and kind every 10s)"
                )
            }
        },
        Output::Flow(udplb_core::Output::CloseUpstream { flow, reason, .. }) => {
            tracing::debug!(event = %"flow_closed", flow = flow.serial(), %reason, "flow closed")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use udplb_core::health::ProbeFailure;
    use udplb_core::{Config, FrontendState, Input, Instant, Keys, ProbeResult};

    use super::*;

    const CONFIG: &str = r#"
[listeners.dns-vip]
address = "127.0.0.1:5353"
cluster = "dns-pool"

[clusters.dns-pool]
health = { mode = "tcp", interval = "1s", timeout = "500ms", rise = 1, fall = 1, jitter = 0 }
backends = [
  { id = "ns-a", address = "127.0.0.1:5301" },
  { id = "ns-b", address = "127.0.0.1:5302" },
]
"#;

    /// Everything written, shared with the subscriber.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A real balancer whose probes of `ns-a` are refused, so it goes down (and `ns-b` up),
    /// with every output logged in `format`; returns what was written.
    fn log_a_backend_going_down(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, Level::INFO, false, move || writer.clone());
        let config = Config::from_toml_str(CONFIG).unwrap();
        let mut core = Balancer::new(&config, Keys::from_seed(1)).unwrap();
        let down = core.flows().backend_id("dns-pool", "ns-a").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            for step in 0..30 {
                let now = Instant::from_millis(step * 100);
                core.handle(now, Input::Timeout).unwrap();
                while let Some(output) = core.poll_output() {
                    log_output(&core, &output);
                    if let Output::Probe(probe) = output {
                        let result = if probe.backend == down {
                            ProbeResult::Fail(ProbeFailure::Refused)
                        } else {
                            ProbeResult::Pass
                        };
                        core.handle(now, Input::ProbeResult { probe: probe.probe, result }).unwrap();
                    }
                }
            }
        });
        assert_eq!(core.monitor().backend(down).unwrap().health, udplb_core::Health::Down);
        buffer.text()
    }

    #[test]
    fn json_lines_carry_the_event_name_and_configured_ids_as_separate_fields() {
        let text = log_a_backend_going_down(LogFormat::Json);
        let lines: Vec<serde_json::Value> =
            text.lines().map(|line| serde_json::from_str(line).expect("one JSON object per line")).collect();
        let down: Vec<_> = lines.iter().filter(|line| line["event"] == "backend_down").collect();
        assert_eq!(down.len(), 1, "{text}");
        let down = down[0];
        assert_eq!(down["cluster"], "dns-pool");
        assert_eq!(down["backend"], "ns-a");
        assert_eq!(down["from"], "unknown");
        assert_eq!(down["to"], "down");
        assert_eq!(down["code"], "L4CON");
        assert_eq!(down["level"], "INFO");
        assert!(text.contains(r#""event":"backend_down","cluster":"dns-pool","backend":"ns-a""#), "{text}");
        let up = lines.iter().find(|line| line["event"] == "backend_up").expect("ns-b comes up");
        assert_eq!(up["backend"], "ns-b");
        let listener = lines.iter().find(|line| line["event"] == "frontend_up").expect("the listener is up");
        assert_eq!(listener["listener"], "dns-vip");
        assert_eq!(listener["state"], FrontendState::Up.as_str());
        assert!(!text.contains("BackendId") && !text.contains("Transition"), "no Debug output: {text}");
    }

    #[test]
    fn human_lines_read_as_names() {
        let text = log_a_backend_going_down(LogFormat::Human);
        // Strip the colours: `ESC [ ... m`.
        let mut plain = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                chars.by_ref().find(|c| *c == 'm');
            } else {
                plain.push(c);
            }
        }
        let line = plain.lines().find(|line| line.contains("event=backend_down")).expect(&plain);
        assert!(
            line.contains("backend health event=backend_down cluster=dns-pool backend=ns-a from=unknown to=down code=L4CON"),
            "{line}"
        );
    }

    #[test]
    fn without_names_the_ids_are_shown() {
        // Listener 3 is not in the configuration: the line shows the core's id.
        let core = Balancer::new(&Config::from_toml_str(CONFIG).unwrap(), Keys::from_seed(1)).unwrap();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(LogFormat::Json, Level::DEBUG, false, move || writer.clone());
        let output = Output::Flow(udplb_core::Output::Event(Event::ListenerDraining {
            listener: ListenerId(3),
            flows_remaining: 7,
        }));
        tracing::subscriber::with_default(subscriber, || log_output(&core, &output));
        let line: serde_json::Value = serde_json::from_str(buffer.text().trim()).unwrap();
        assert_eq!(line["event"], "listener_draining");
        assert_eq!(line["listener"], "listener#3");
        assert_eq!(line["flows_remaining"], 7);
    }
}
