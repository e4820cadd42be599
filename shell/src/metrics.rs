//! Prometheus metrics: what the core counts, what the shell counts, and the kernel's own
//! drop counter, encoded at scrape time by `prometheus-client` (OpenMetrics text).
//!
//! Nothing here is updated per datagram (the shell's own counts are plain integers in
//! [`ShellCounters`]): the registry is built from scratch on each scrape from the core's
//! [`udplb_core::Stats`] and the health monitor's state, so the datapath pays nothing for
//! metrics it is not asked for, and a backend removed by a reload simply stops appearing. The
//! HTTP side lives in [`crate::metrics::http`]; `scrape.rs` answers scrapes from the event
//! loop.

pub mod http;
mod process;
mod scrape;

use std::collections::BTreeMap;

use crate::counters::WorkerView;
pub use crate::counters::{BackendTraffic, ReloadCounters, ShellCounters};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use udplb_core::stats::DatagramCounters;
use udplb_core::stats::{LATENCY_BOUNDS_MICROS, LatencyHistogram};
use udplb_core::{AdminState, Balancer, CloseReason, DropReason, FrontendState, Health};

/// The reason label of datagrams the kernel dropped before udplb could read them (a full
/// listener receive queue): counted beside the core's reasons, but never in `received`.
pub const KERNEL_DROP_REASON: &str = "kernel_receive_queue";

type Labels = Vec<(&'static str, String)>;

/// A scrape in the making: families are created on first use, so a metric with no sample
/// (no listener yet) is left out rather than shown empty.
struct Scrape {
    registry: Registry,
    counters: BTreeMap<&'static str, Family<Labels, Counter>>,
    gauges: BTreeMap<&'static str, Family<Labels, Gauge>>,
    histograms: BTreeMap<&'static str, Family<Labels, Histogram>>,
}

/// A histogram the core already counted ([`LatencyHistogram`]), encoded in seconds: the
/// scrape copies its buckets in, nothing is observed here.
#[derive(Debug, Default)]
struct Histogram(std::sync::Mutex<LatencyHistogram>);

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let histogram = self.0.lock().map_err(|_| std::fmt::Error)?.clone();
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MICROS
            .iter()
            .zip(&histogram.buckets)
            .map(|(bound, count)| (*bound as f64 / 1e6, *count))
            .collect();
        buckets.push((f64::INFINITY, histogram.buckets[LATENCY_BOUNDS_MICROS.len()]));
        let sum = histogram.sum_micros as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, histogram.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Scrape {
    fn new() -> Scrape {
        Scrape {
            registry: Registry::with_prefix("udplb"),
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            histograms: BTreeMap::new(),
        }
    }

    /// Adds a histogram sample set (labels required), in seconds.
    fn histogram(&mut self, name: &'static str, help: &str, labels: Labels, value: &LatencyHistogram) {
        let registry = &mut self.registry;
        let family = self.histograms.entry(name).or_insert_with(|| {
            let family = Family::<Labels, Histogram>::default();
            registry.register(name, help, family.clone());
            family
        });
        if let Ok(mut slot) = family.get_or_create(&labels).0.lock() {
            *slot = value.clone();
        }
    }

    /// Adds a counter sample. `name` has no prefix and no `_total` (the encoder adds both);
    /// `help` has no final period (the encoder adds one).
    fn counter(&mut self, name: &'static str, help: &str, labels: Labels, value: u64) {
        if labels.is_empty() {
            // A metric without labels is a plain counter: a family would print `name{}`.
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            self.registry.register(name, help, counter);
            return;
        }
        let registry = &mut self.registry;
        let family = self.counters.entry(name).or_insert_with(|| {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels).inc_by(value);
    }

    /// As [`Scrape::counter`], for a gauge.
    fn gauge(&mut self, name: &'static str, help: &str, labels: Labels, value: i64) {
        if labels.is_empty() {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            self.registry.register(name, help, gauge);
            return;
        }
        let registry = &mut self.registry;
        let family = self.gauges.entry(name).or_insert_with(|| {
            let family = Family::<Labels, Gauge>::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels).set(value);
    }

    fn finish(self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn gauge_bool(value: bool) -> i64 {
    i64::from(value)
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The whole exposition: health state and names from the leader's `core`, its own counters
/// (`shell`: health transitions, watch events lost), and the datapath counters of every
/// worker added up (`totals`, the kernel's listener drop counts included).
pub(crate) fn render(
    core: &Balancer,
    shell: &ShellCounters,
    totals: &WorkerView,
    reloads: &ReloadCounters,
) -> String {
    let mut scrape = Scrape::new();
    process::metrics(&mut scrape, reloads);
    listener_metrics(&mut scrape, core, totals);
    backend_metrics(&mut scrape, core, totals, shell);
    health_metrics(&mut scrape, core);
    scrape.counter(
        "watch_events_lost",
        "Events that could not be queued for control-socket watchers",
        vec![],
        shell.watch_events_lost,
    );
    scrape.counter(
        "stray_upstream_datagrams",
        "Datagrams on a pool socket from an address with no flow on that socket (dropped)",
        vec![],
        totals.stray_upstream_datagrams,
    );
    scrape.gauge(
        "upstream_sockets",
        "Sockets carrying flows to backends: shared pool sockets, or one per flow",
        vec![],
        saturating_i64(totals.upstream_sockets),
    );
    scrape.gauge("workers", "Worker threads", vec![], i64::from(totals.workers));
    scrape.finish()
}

const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

fn datagram_metrics(
    scrape: &mut Scrape,
    listener: &str,
    direction: &'static str,
    counters: &DatagramCounters,
) {
    let labels = || vec![("listener", listener.to_owned()), ("direction", direction.to_owned())];
    scrape.counter("datagrams_received", "Datagrams handed to the core", labels(), counters.received);
    scrape.counter("bytes_received", "Payload bytes handed to the core", labels(), counters.bytes_received);
    scrape.counter(
        "datagrams_passed",
        "Datagrams forwarded to a backend or returned to a client",
        labels(),
        counters.passed,
    );
    scrape.counter("bytes_passed", "Payload bytes forwarded or returned", labels(), counters.bytes_passed);
    for reason in DropReason::ALL {
        let mut labels = labels();
        labels.push(("reason", reason.as_str().to_owned()));
        scrape.counter("datagrams_dropped", DROPPED_HELP, labels, counters.dropped(*reason));
    }
}

const DROPPED_HELP: &str = "Datagrams dropped, by reason; kernel_receive_queue drops never reached udplb";

fn listener_metrics(scrape: &mut Scrape, core: &Balancer, totals: &WorkerView) {
    let flows = core.flows();
    let stats = &totals.stats;
    for id in flows.listener_ids() {
        let (Some((name, _)), Some(listener)) = (flows.listener(id), stats.listeners.get(id.0 as usize))
        else {
            continue;
        };
        let labels = || vec![("listener", name.to_owned())];
        datagram_metrics(scrape, name, DIRECTIONS[0], &listener.client);
        datagram_metrics(scrape, name, DIRECTIONS[1], &listener.backend);
        if let Some((_, drops)) = totals.kernel_drops.iter().find(|(listener, _)| *listener == id) {
            let mut labels = labels();
            labels
                .extend([("direction", DIRECTIONS[0].to_owned()), ("reason", KERNEL_DROP_REASON.to_owned())]);
            scrape.counter("datagrams_dropped", DROPPED_HELP, labels, *drops);
        }
        scrape.counter("flows_created", "Flows created", labels(), listener.flows.created);
        for reason in CloseReason::ALL {
            let mut labels = labels();
            labels.push(("reason", reason.as_str().to_owned()));
            scrape.counter(
                "flows_closed",
                "Flows closed, by reason",
                labels,
                listener.flows.closed_for(*reason),
            );
        }
        scrape.gauge(
            "flows_active",
            "Flows alive, retired ones included",
            labels(),
            saturating_i64(listener.flows.active),
        );
        scrape.gauge(
            "flows_retired",
            "Flows that reached requests and only wait for replies",
            labels(),
            saturating_i64(listener.flows.retired),
        );
        scrape.counter(
            "fail_open_flows",
            "New flows routed by fail-open: no backend was eligible",
            labels(),
            listener.fail_open_flows,
        );
        if flows.listener_routes_quic(id) {
            for route in udplb_core::flow::QuicRoute::ALL {
                let mut labels = labels();
                labels.push(("outcome", route.as_str().to_owned()));
                scrape.counter(
                    "quic_lb_flows",
                    "New flows of a quic_lb cluster: routed by connection ID, or why not (then placed by the algorithm)",
                    labels,
                    listener.quic_lb[route.index()],
                );
            }
        }
        if flows.listener_sources(id).is_some() {
            scrape.gauge(
                "source_table_entries",
                "Client sources (addresses cut to the source_limits prefix) tracked now",
                labels(),
                saturating_i64(listener.sources_tracked),
            );
            scrape.counter(
                "source_table_evictions",
                "Sources that held no flow, forgotten to make room for new ones (their new-flow budgets restart full)",
                labels(),
                listener.sources_evicted,
            );
        }
        scrape.gauge(
            "listener_draining",
            "1 while the listener drains",
            labels(),
            gauge_bool(flows.is_draining(id)),
        );
        let state = core.frontend(id);
        for &value in FrontendState::ALL {
            let mut labels = labels();
            labels.push(("state", value.as_str().to_owned()));
            scrape.gauge(
                "listener_state",
                "1 for the listener's current state",
                labels,
                gauge_bool(state == Some(value)),
            );
        }
    }
    // One set of counters for both directions: the reason says which (an unknown listener
    // is a client datagram, an ended flow a backend one).
    for (direction, reason) in
        [(DIRECTIONS[0], DropReason::UnknownListener), (DIRECTIONS[1], DropReason::UnknownFlow)]
    {
        scrape.counter(
            "unattributed_datagrams_dropped",
            "Datagrams for an unknown listener or an ended flow",
            vec![("direction", direction.to_owned()), ("reason", reason.as_str().to_owned())],
            stats.unattributed.dropped(reason),
        );
    }
    let retries = &stats.retries;
    for (outcome, value) in [("resent", retries.resent), ("no_other_backend", retries.no_other_backend)] {
        scrape.counter(
            "retries",
            "Requests refused before any reply, by outcome",
            vec![("outcome", outcome.to_owned())],
            value,
        );
    }
    scrape.counter(
        "retry_datagrams_not_kept",
        "Datagrams not kept for a retry: retry_buffer_bytes was spent",
        vec![],
        retries.not_kept_over_budget,
    );
    scrape.gauge(
        "retry_buffer_bytes",
        "Bytes held for retries now",
        vec![],
        saturating_i64(retries.bytes_kept),
    );
}

fn backend_metrics(scrape: &mut Scrape, core: &Balancer, totals: &WorkerView, shell: &ShellCounters) {
    let flows = core.flows();
    for cluster in flows.cluster_ids() {
        let cluster_name = flows.cluster_name(cluster).unwrap_or("?").to_owned();
        let mut eligible = 0;
        for backend in flows.cluster_backends(cluster) {
            let (Some((id, _)), Some(status)) = (flows.backend(backend), core.monitor().backend(backend))
            else {
                continue;
            };
            eligible += i64::from(status.eligible);
            let labels = || vec![("cluster", cluster_name.clone()), ("backend", id.to_owned())];
            let with = |key: &'static str, value: &str| {
                let mut labels = labels();
                labels.push((key, value.to_owned()));
                labels
            };
            let traffic = totals.traffic.get(backend.0 as usize).copied().unwrap_or_default();
            for (direction, datagrams, bytes) in [
                ("to_backend", traffic.datagrams_sent, traffic.bytes_sent),
                ("from_backend", traffic.datagrams_received, traffic.bytes_received),
            ] {
                let help = "Datagrams on the backend's upstream sockets (PROXY headers included)";
                scrape.counter("backend_datagrams", help, with("direction", direction), datagrams);
                scrape.counter(
                    "backend_bytes",
                    "Bytes on the backend's upstream sockets",
                    with("direction", direction),
                    bytes,
                );
            }
            scrape.gauge(
                "backend_flows",
                "Flows pinned to the backend",
                labels(),
                saturating_i64(totals.backend_flows.get(backend.0 as usize).copied().unwrap_or(0)),
            );
            scrape.gauge(
                "backend_weight",
                "The backend's weight now",
                labels(),
                i64::from(flows.backend_weight(backend).unwrap_or(0)),
            );
            scrape.gauge(
                "backend_eligible",
                "1 if the backend may take new flows",
                labels(),
                gauge_bool(status.eligible),
            );
            scrape.gauge(
                "backend_ejected",
                "1 while outlier detection keeps the backend out of selection",
                labels(),
                gauge_bool(status.ejected_until.is_some()),
            );
            scrape.counter(
                "backend_ejections",
                "Times outlier detection ejected the backend",
                labels(),
                status.ejections,
            );
            let seen = totals.stats.backends.get(backend.0 as usize).cloned().unwrap_or_default();
            scrape.histogram(
                "backend_reply_seconds",
                "Time from a request to the backend's reply: per request where responses are counted \
                 per request, otherwise from the first request of a wait to the reply that ends it",
                labels(),
                &seen.reply_latency,
            );
            for (result, durations) in
                [("pass", &status.check_durations.passed), ("fail", &status.check_durations.failed)]
            {
                scrape.histogram(
                    "probe_duration_seconds",
                    "How long each health check took, from its start to its result (a timeout counts whole)",
                    with("result", result),
                    durations,
                );
            }
            for (what, value) in [
                ("requests_answered", seen.requests_answered),
                ("replies_written_off", seen.replies_written_off),
                ("replies_taken_back", seen.replies_taken_back),
                ("duplicate_replies", seen.duplicate_replies),
                ("stray_replies", seen.stray_replies),
                ("send_failures", seen.send_failures),
                ("flows_reselected", seen.flows_reselected),
                ("amplification_drops", seen.amplification_drops),
            ] {
                scrape.counter(
                    "backend_datapath",
                    "What the datapath saw of the backend: requests answered, replies written off \
                     (and taken back when late), copies dropped, replies from another port, \
                     failed sends, flows moved off it, replies over the amplification cap",
                    with("what", what),
                    value,
                );
            }
            for &health in Health::ALL {
                let value = gauge_bool(status.health == health);
                scrape.gauge(
                    "backend_health",
                    "1 for the backend's health state",
                    with("state", health.as_str()),
                    value,
                );
            }
            // A removed backend is not shown at all.
            for &admin in AdminState::ALL.iter().filter(|admin| **admin != AdminState::Removed) {
                let value = gauge_bool(status.admin == admin);
                scrape.gauge(
                    "backend_admin",
                    "1 for the backend's admin state",
                    with("state", admin.as_str()),
                    value,
                );
            }
            if let Some(code) = status.last_code {
                scrape.gauge(
                    "backend_last_check",
                    "1 for the code of the backend's last check",
                    with("code", code.as_str()),
                    1,
                );
            }
        }
        let labels = vec![("cluster", cluster_name.clone())];
        scrape.gauge(
            "cluster_eligible_backends",
            "Backends that may take new flows",
            labels.clone(),
            eligible,
        );
        scrape.gauge(
            "cluster_all_down",
            "1 while no enabled backend is eligible",
            labels,
            gauge_bool(core.monitor().cluster_all_down(cluster)),
        );
    }
    for ((backend, to, code), count) in shell.transitions() {
        let (Some(cluster), Some((id, _))) = (flows.backend_cluster(*backend), flows.backend(*backend))
        else {
            continue;
        };
        let labels = vec![
            ("cluster", flows.cluster_name(cluster).unwrap_or("?").to_owned()),
            ("backend", id.to_owned()),
            ("to", to.as_str().to_owned()),
            ("code", code.as_str().to_owned()),
        ];
        scrape.counter(
            "backend_transitions",
            "Health transitions since start, by new state and check code",
            labels,
            *count,
        );
    }
}

fn health_metrics(scrape: &mut Scrape, core: &Balancer) {
    let stats = core.monitor().stats();
    scrape.counter(
        "probes_started",
        "Probes started (a tcp+udp check starts two)",
        vec![],
        stats.probes_started,
    );
    for (result, value) in [("pass", stats.checks_passed), ("fail", stats.checks_failed)] {
        scrape.counter(
            "checks",
            "Health checks completed, by result",
            vec![("result", result.to_owned())],
            value,
        );
    }
    for (cause, value) in [
        ("refused", stats.probes_refused),
        ("timeout", stats.probes_timed_out),
        ("mismatch", stats.probes_mismatched),
        ("error", stats.probes_errored),
    ] {
        scrape.counter(
            "probe_failures",
            "Probes that failed, by cause",
            vec![("cause", cause.to_owned())],
            value,
        );
    }
    for (why, value) in [
        ("late", stats.results_late),
        ("unknown_probe", stats.results_unknown),
        ("duplicate", stats.results_duplicate),
        ("reply_to_tcp_probe", stats.replies_to_tcp_probes),
        ("unknown_backend", stats.unknown_backend),
    ] {
        scrape.counter(
            "health_inputs_ignored",
            "Probe results and inputs ignored, by why",
            vec![("why", why.to_owned())],
            value,
        );
    }
    for (outcome, value) in [("counted", stats.passive_counted), ("ignored", stats.passive_ignored)] {
        scrape.counter(
            "passive_failures",
            "Datapath evidence against a backend, by outcome",
            vec![("outcome", outcome.to_owned())],
            value,
        );
    }
    scrape.counter("health_transitions", "Health transitions of every backend", vec![], stats.transitions);
    scrape.counter(
        "health_events_dropped",
        "Health events dropped: the core's queue was full",
        vec![],
        stats.events_dropped,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use udplb_core::{BackendId, Config, Keys, ListenerId};

    /// With several workers, the leader's scrape adds every follower's datapath counters to its
    /// own (workers share listener and backend ids).
    #[test]
    fn a_scrape_adds_up_every_workers_counters() {
        let config = Config::from_toml_str(
            "[listeners.l]\naddress = \"127.0.0.1:5300\"\ncluster = \"c\"\n\
             [clusters.c]\nbackends = [{ id = \"b\", address = \"127.0.0.1:5301\" }]\n",
        )
        .unwrap();
        let core = Balancer::new(&config, Keys::from_seed(1)).unwrap();
        let mut stats = core.flows().stats().clone();
        stats.listeners[0].client.received = 7;
        stats.listeners[0].flows.active = 3;
        stats.backends[0].stray_replies = 4;
        let mut shell = ShellCounters::default();
        shell.sent_to_backend(BackendId(0), 10);
        let follower = WorkerView {
            workers: 1,
            stats,
            backend_flows: vec![3],
            traffic: vec![BackendTraffic { datagrams_sent: 4, bytes_sent: 40, ..BackendTraffic::default() }],
            kernel_drops: vec![(ListenerId(0), 2)],
            upstream_sockets: 5,
            stray_upstream_datagrams: 1,
        };
        // The leader's own counters, as `WorkerView::of` gives them, then two followers'.
        let mut totals = WorkerView {
            workers: 1,
            stats: core.flows().stats().clone(),
            backend_flows: vec![0],
            traffic: shell.all_traffic().to_vec(),
            kernel_drops: vec![(ListenerId(0), 1)],
            ..WorkerView::default()
        };
        totals.absorb(&follower);
        totals.absorb(&follower);
        let text = render(&core, &shell, &totals, &ReloadCounters::default());
        let line = |prefix: &str| {
            text.lines()
                .find(|line| line.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix}\n{text}"))
                .to_owned()
        };
        assert!(
            line("udplb_datagrams_received_total{listener=\"l\",direction=\"client_to_backend\"}")
                .ends_with(" 14")
        );
        assert!(line("udplb_flows_active{listener=\"l\"}").ends_with(" 6"));
        assert!(line("udplb_backend_flows{cluster=\"c\",backend=\"b\"}").ends_with(" 6"));
        assert!(
            line("udplb_backend_datagrams_total{cluster=\"c\",backend=\"b\",direction=\"to_backend\"}")
                .ends_with(" 9")
        );
        assert!(line("udplb_datagrams_dropped_total{listener=\"l\",direction=\"client_to_backend\",reason=\"kernel_receive_queue\"}").ends_with(" 5"));
        assert!(line("udplb_upstream_sockets").ends_with(" 10"));
        assert!(line("udplb_stray_upstream_datagrams_total").ends_with(" 2"));
        assert!(line("udplb_workers").ends_with(" 3"));
        assert!(
            line("udplb_backend_datapath_total{cluster=\"c\",backend=\"b\",what=\"stray_replies\"}")
                .ends_with(" 8")
        );
        assert!(line("udplb_backend_ejected{cluster=\"c\",backend=\"b\"}").ends_with(" 0"));
    }
}
