//! The metrics endpoint of a running `udplb` on loopback: counters move with real traffic,
//! the text parses as Prometheus exposition, and the kernel's receive-queue drops show up.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, Balancer, ask, client, free_udp_address, listener_and_pool, wait_for};

/// One sample: metric name and labels, as written.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses the exposition strictly enough to catch a malformed line: every sample belongs to
/// a family declared by `# TYPE` (counters as `<family>_total`), names and label names are
/// valid identifiers, label values are quoted, values are numbers, and the text ends with
/// `# EOF` (OpenMetrics, which Prometheus reads).
fn parse(text: &str) -> Samples {
    let mut families = BTreeMap::new();
    let mut samples = Samples::new();
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !name.starts_with(|c: char| c.is_ascii_digit())
    };
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    assert!(valid_name(name) && ["counter", "gauge", "histogram"].contains(&kind), "{line}");
                    families.insert(name.to_owned(), kind.to_owned());
                }
                (Some("HELP"), Some(name), Some(_)) => assert!(valid_name(name), "{line}"),
                (Some("EOF"), None, None) => {}
                _ => panic!("unexpected comment: {line}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                (name, rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}")))
            }
            None => (series, ""),
        };
        let of_kind = |suffix: &str, kind: &str| {
            name.strip_suffix(suffix).filter(|f| families.get(*f).is_some_and(|k| k == kind))
        };
        let family = of_kind("_total", "counter")
            .or_else(|| of_kind("_bucket", "histogram"))
            .or_else(|| of_kind("_sum", "histogram"))
            .or_else(|| of_kind("_count", "histogram"))
            .unwrap_or(name);
        assert!(families.contains_key(family), "sample of an undeclared family: {line}");
        let mut parsed = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
            assert!(valid_name(key) && quoted.starts_with('"'), "bad label {pair:?} in {line}");
            parsed.insert(key.to_owned(), quoted.trim_start_matches('"').trim_end_matches('"').to_owned());
        }
        samples.insert((name.to_owned(), parsed), value);
    }
    samples
}

/// The value of `name` with exactly these labels (0 when absent).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

fn has(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> bool {
    let labels: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.contains_key(&(name.to_owned(), labels))
}

#[test]
fn counters_move_with_traffic_and_parse_as_prometheus_text() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let config = listener_and_pool(listen, "", &[backend.address]).replacen(
        "cluster = \"pool\"\n",
        "cluster = \"pool\"\nempty_datagrams = \"drop\"\n",
        1,
    );
    let balancer = Balancer::start(&config, listen, true);
    let (status, body) = balancer.http_get("/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    let before = parse(&body);

    for i in 0..5 {
        let socket = client();
        assert!(ask(&socket, listen, format!("request {i}").as_bytes()).is_some());
    }
    client().send_to(b"", listen).unwrap(); // Empty: dropped as `empty` (the listener says so).
    let after = wait_for(Duration::from_secs(5), || {
        let samples = parse(&balancer.http_get("/metrics").1);
        value(
            &samples,
            "udplb_datagrams_dropped_total",
            &[("listener", "test"), ("direction", "client_to_backend"), ("reason", "empty")],
        ) == 1.0
    });
    assert!(after, "the empty datagram is counted as an `empty` drop");
    let after = parse(&balancer.http_get("/metrics").1);

    let delta =
        |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let client_side = [("listener", "test"), ("direction", "client_to_backend")];
    let backend_side = [("listener", "test"), ("direction", "backend_to_client")];
    assert_eq!(
        delta("udplb_datagrams_received_total", &client_side),
        6.0,
        "five requests and one empty datagram"
    );
    assert_eq!(delta("udplb_datagrams_passed_total", &client_side), 5.0);
    assert_eq!(delta("udplb_datagrams_passed_total", &backend_side), 5.0, "five replies returned");
    assert_eq!(delta("udplb_flows_created_total", &[("listener", "test")]), 5.0);
    assert!(value(&after, "udplb_flows_active", &[("listener", "test")]) >= 5.0);
    let to_backend = [("cluster", "pool"), ("backend", "b0"), ("direction", "to_backend")];
    let from_backend = [("cluster", "pool"), ("backend", "b0"), ("direction", "from_backend")];
    assert_eq!(delta("udplb_backend_datagrams_total", &to_backend), 5.0);
    assert_eq!(delta("udplb_backend_datagrams_total", &from_backend), 5.0);
    assert_eq!(
        value(&after, "udplb_backend_health", &[("cluster", "pool"), ("backend", "b0"), ("state", "up")]),
        1.0
    );
    let kernel =
        [("listener", "test"), ("direction", "client_to_backend"), ("reason", "kernel_receive_queue")];
    assert!(
        has(&after, "udplb_datagrams_dropped_total", &kernel),
        "kernel drops are listed beside the core's reasons"
    );

    let (status, _) = balancer.http_get("/elsewhere");
    assert_eq!(status, "HTTP/1.0 404 Not Found");
}

#[test]
fn a_backend_going_down_shows_in_health_gauges_and_transitions() {
    let (stays, goes) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let body = listener_and_pool(listen, common::UDP_HEALTH, &[stays.address, goes.address]);
    let balancer = Balancer::start(&body, listen, true);
    assert!(balancer.wait_for_health("b1", "up"));
    drop(goes);
    assert!(balancer.wait_for_health("b1", "down"));
    let samples = parse(&balancer.http_get("/metrics").1);
    let b1 = |extra: (&'static str, &'static str)| [("cluster", "pool"), ("backend", "b1"), extra];
    assert_eq!(value(&samples, "udplb_backend_health", &b1(("state", "down"))), 1.0);
    assert_eq!(value(&samples, "udplb_backend_eligible", &[("cluster", "pool"), ("backend", "b1")]), 0.0);
    let to_down = [("cluster", "pool"), ("backend", "b1"), ("to", "down"), ("code", "L4CON")];
    assert_eq!(value(&samples, "udplb_backend_transitions_total", &to_down), 1.0);
    assert!(value(&samples, "udplb_probe_failures_total", &[("cause", "refused")]) >= 1.0);
    assert!(value(&samples, "udplb_checks_total", &[("result", "pass")]) >= 2.0);
}

/// Stops udplb, fills its listener's receive queue until the kernel drops, lets it run again:
/// the scrape reports the kernel's count for that socket.
#[test]
fn kernel_receive_queue_drops_are_counted() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let balancer = Balancer::start(&listener_and_pool(listen, "", &[backend.address]), listen, true);
    balancer.signal(libc::SIGSTOP);
    let flood = client();
    let payload = [0u8; 512];
    // Bounded: the queue holds at most net.core.rmem_max × 2 bytes (8 MiB on this machine),
    // far less than 200,000 datagrams take.
    let mut dropped = false;
    for round in 0..200 {
        for _ in 0..1000 {
            let _ = flood.send_to(&payload, listen);
        }
        if round % 10 == 9 && kernel_drops_on(listen) > 0 {
            dropped = true;
            break;
        }
    }
    balancer.signal(libc::SIGCONT);
    assert!(dropped, "the kernel dropped datagrams for the stopped listener");
    let counted = wait_for(Duration::from_secs(10), || {
        let samples = parse(&balancer.http_get("/metrics").1);
        let kernel =
            [("listener", "test"), ("direction", "client_to_backend"), ("reason", "kernel_receive_queue")];
        value(&samples, "udplb_datagrams_dropped_total", &kernel) > 0.0
    });
    assert!(counted, "the scrape shows the kernel's drops");
}

/// The `drops` column of `/proc/net/udp` for the socket bound to `address` (the test's own
/// view, independent of how udplb reads it).
fn kernel_drops_on(address: std::net::SocketAddr) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!("0100007F:{:04X}", address.port());
    table
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|line| line.split_whitespace().nth(12)?.parse::<u64>().ok())
        .sum()
}

/// The metrics that measure time and the process: reply latency per backend and check
/// durations (histograms that count every reply and check), build info, start time, memory,
/// descriptors, and reloads by outcome with their times.
#[test]
fn latency_process_and_reload_metrics_are_present_and_move() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let cluster = format!("responses = 1\n{}", common::UDP_HEALTH);
    let body = listener_and_pool(listen, &cluster, &[backend.address]);
    let balancer = Balancer::start(&body, listen, true);
    let started = std::time::SystemTime::now();
    assert!(balancer.wait_for_health("b0", "up"));
    let b0 = [("cluster", "pool"), ("backend", "b0")];
    let before = parse(&balancer.http_get("/metrics").1);
    let socket = client();
    for i in 0..10 {
        assert!(ask(&socket, listen, format!("query {i}").as_bytes()).is_some());
    }
    let after = parse(&balancer.http_get("/metrics").1);
    let count = |samples: &Samples| value(samples, "udplb_backend_reply_seconds_count", &b0);
    assert_eq!(count(&after) - count(&before), 10.0, "every reply timed");
    let sum = value(&after, "udplb_backend_reply_seconds_sum", &b0);
    assert!(sum > 0.0 && sum < 1.0, "loopback replies take microseconds to milliseconds: {sum}");
    // Buckets are cumulative and end at +Inf with the count.
    let bucket = |le: &str| value(&after, "udplb_backend_reply_seconds_bucket", &[b0[0], b0[1], ("le", le)]);
    assert!(bucket("0.00025") <= bucket("0.1") && bucket("0.1") <= bucket("+Inf"));
    assert_eq!(bucket("+Inf"), count(&after));
    assert!(bucket("1.0") >= count(&after) - 1.0, "under a second: {}", bucket("1.0"));
    // Checks (UDP probes every 100 ms) passed and were timed.
    let checks = [b0[0], b0[1], ("result", "pass")];
    assert!(value(&after, "udplb_probe_duration_seconds_count", &checks) >= 1.0);
    assert!(value(&after, "udplb_probe_duration_seconds_sum", &checks) < 1.0);

    // The process.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(value(&after, "udplb_build_info", &[("version", version)]), 1.0);
    let now = started.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let start = value(&after, "udplb_process_start_time_seconds", &[]);
    assert!((now - 30.0..=now + 1.0).contains(&start), "started at {start}, now {now}");
    assert!(value(&after, "udplb_process_resident_memory_bytes", &[]) > 1e6);
    let (open, max) =
        (value(&after, "udplb_process_open_fds", &[]), value(&after, "udplb_process_max_fds", &[]));
    assert!(open >= 4.0 && open < max, "{open} of {max} descriptors");

    // Reloads: none yet, then one refused, then one applied.
    let reloads =
        |samples: &Samples, outcome: &str| value(samples, "udplb_reloads_total", &[("outcome", outcome)]);
    assert_eq!((reloads(&after, "success"), reloads(&after, "failure")), (0.0, 0.0));
    assert!(!has(&after, "udplb_last_reload_success_timestamp_seconds", &[]));
    balancer.write_config("[listeners.test]\naddress = \"not an address\"\n");
    assert!(!balancer.ctl(&["reload"]).success);
    balancer.write_config(&body);
    assert!(balancer.ctl(&["reload"]).success);
    let reloaded = parse(&balancer.http_get("/metrics").1);
    assert_eq!((reloads(&reloaded, "success"), reloads(&reloaded, "failure")), (1.0, 1.0));
    let last = value(&reloaded, "udplb_last_reload_success_timestamp_seconds", &[]);
    let failed = value(&reloaded, "udplb_last_reload_failure_timestamp_seconds", &[]);
    assert!(last >= failed && failed >= now - 1.0, "success at {last}, failure at {failed}");
}

/// QUIC-LB on a real process with two workers: short-header packets whose connection ID
/// carries backend b1's server ID reach b1 from every client socket, whichever worker takes
/// the socket; `show flow` says the connection ID routed each, and the metrics count them by
/// outcome beside the client's own first packets, which the hash placed.
#[test]
fn quic_lb_routes_by_connection_id_and_counts_each_outcome() {
    use udplb_core::quic_lb::{QuicLbConfig, ServerId};
    let backends = [Backend::echo(), Backend::echo(), Backend::echo()];
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let listen = free_udp_address();
    let mut pool = listener_and_pool(listen, "algorithm = \"maglev\"", &addresses);
    for (i, address) in addresses.iter().enumerate() {
        pool = pool.replace(
            &format!("address = \"{address}\" }}"),
            &format!("address = \"{address}\", server_id = \"0{i}\" }}"),
        );
    }
    let body = format!(
        "[process]\nworkers = 2\n\n{pool}\n[clusters.pool.quic_lb]\nconfigs = [{{ id = 0, server_id_len = 1, nonce_len = 8, key = \"4d7a2ce4bd80bdbc2b6c8b0e2f3a9d15\" }}]\n"
    );
    let balancer = Balancer::start(&body, listen, true);
    let key: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&"4d7a2ce4bd80bdbc2b6c8b0e2f3a9d15"[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let config = QuicLbConfig::new(0, 1, 8, Some(key.try_into().unwrap())).unwrap();
    let before: Vec<u64> = backends.iter().map(Backend::count).collect();
    let sockets: Vec<_> = (0..16).map(|_| client()).collect();
    for (i, socket) in sockets.iter().enumerate() {
        let nonce = [i as u8; 8];
        let cid = config.encode(&ServerId::from_hex("01").unwrap(), &nonce, 0, false).unwrap();
        let mut packet = vec![0x40];
        packet.extend_from_slice(cid.as_bytes());
        packet.extend_from_slice(format!("stream data {i}").as_bytes());
        assert!(ask(socket, listen, &packet).is_some(), "socket {i} answered");
    }
    let served: Vec<u64> = backends.iter().zip(&before).map(|(b, before)| b.count() - before).collect();
    assert!(served[1] >= 16, "b1 took every routed datagram: {served:?}");
    let flows = balancer.ctl_json(&["show", "flows"]);
    let flows = flows["flows"].as_array().unwrap();
    let ports: Vec<u16> = sockets.iter().map(|s| s.local_addr().unwrap().port()).collect();
    let ours: Vec<_> = flows
        .iter()
        .filter(|f| {
            f["client"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|c| ports.contains(&c.port()))
        })
        .collect();
    assert_eq!(ours.len(), 16, "{flows:?}");
    assert!(ours.iter().all(|f| f["backend"] == "b1"), "{ours:?}");
    let workers: std::collections::BTreeSet<u64> =
        ours.iter().map(|f| f["worker"].as_u64().unwrap()).collect();
    assert_eq!(workers.len(), 2, "the sockets were spread over both workers");
    let client = sockets[3].local_addr().unwrap().to_string();
    let shown = balancer.ctl_json(&["show", "flow", &client]);
    assert_eq!(shown["explanations"][0]["quic_lb"], "routed", "{shown}");
    // A client's first packet, with its own random connection ID: placed by the hash.
    let mut initial = vec![0xc0, 0, 0, 0, 1, 8, 0xf1, 2, 3, 4, 5, 6, 7, 8, 0];
    initial.resize(1200, 0);
    assert!(ask(&common::client(), listen, &initial).is_some());
    let counted = wait_for(Duration::from_secs(5), || {
        let samples = parse(&balancer.http_get("/metrics").1);
        let outcome =
            |o: &str| value(&samples, "udplb_quic_lb_flows_total", &[("listener", "test"), ("outcome", o)]);
        // 16 routed; the Initial (config bits 7) and `Balancer::start`'s "ping" (read as a
        // short header whose connection ID starts with 'i': config bits 3) are unroutable.
        outcome("routed") == 16.0 && outcome("unknown_config") == 2.0 && outcome("too_short") == 0.0
    });
    assert!(counted, "{}", balancer.http_get("/metrics").1);
}
