//! `udplb ctl` against a running `udplb` on loopback: every command changes (or shows) what
//! the balancer really does to real traffic.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{
    Backend, Balancer, UDP_HEALTH, ask, client, closed_port, free_udp_address, listener_and_pool, wait_for,
};

/// The backend id `show flow` names for this client socket.
fn backend_of(balancer: &Balancer, client: &std::net::UdpSocket) -> String {
    let address = client.local_addr().unwrap().to_string();
    let answer = balancer.ctl_json(&["show", "flow", &address]);
    let flows = answer["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "one flow for {address}: {answer}");
    flows[0]["backend"].as_str().unwrap().to_owned()
}

/// A new client socket, one request answered; returns its backend.
fn new_client_backend(balancer: &Balancer) -> String {
    let socket = client();
    assert!(ask(&socket, balancer.listen, b"hello").is_some(), "a new client is answered");
    backend_of(balancer, &socket)
}

/// Replaces what varies between runs by text of the same length, so columns stay aligned:
/// each address by `127.0.0.1:PORTn`, and the digits of each `… ago` age by `#`.
fn normalise(text: &str, addresses: &[SocketAddr]) -> String {
    let mut text = text.to_owned();
    for (n, address) in addresses.iter().enumerate() {
        let shown = address.to_string();
        let placeholder = format!("127.0.0.1:PORT{n}");
        assert_eq!(shown.len(), placeholder.len(), "ports from the ephemeral range have five digits");
        text = text.replace(&shown, &placeholder);
    }
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        let mut normalised: Vec<String> = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if words.get(i + 1) == Some(&"ago") {
                normalised.push(word.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect());
            } else {
                normalised.push((*word).to_owned());
            }
        }
        out.push_str(&normalised.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn show_backends_lists_every_backend_with_its_health_and_admin_state() {
    let (b0, b1, dead) = (Backend::echo(), Backend::echo(), closed_port());
    let listen = free_udp_address();
    let body = listener_and_pool(listen, UDP_HEALTH, &[b0.address, b1.address, dead]);
    let balancer = Balancer::start(&body, listen, false);
    let settled = wait_for(Duration::from_secs(10), || {
        let answer = balancer.ctl_json(&["show", "backends"]);
        let backends = answer["backends"].as_array().unwrap().clone();
        let state =
            |b: &serde_json::Value| (b["health"].clone(), b["counter"].clone(), b["last_code"].clone());
        backends.len() == 3
            && state(&backends[0]) == ("up".into(), "3/3".into(), "L7OK".into())
            && state(&backends[1]) == ("up".into(), "3/3".into(), "L7OK".into())
            && state(&backends[2]) == ("down".into(), "0/3".into(), "L4CON".into())
    });
    assert!(settled, "backends settle: {:?}", balancer.backend_states());
    assert!(balancer.ctl(&["backend", "pool", "b0", "pause"]).success);
    assert!(balancer.ctl(&["backend", "pool", "b1", "weight", "3"]).success);
    // Probes go on between the wait above and the table below; on a loaded machine one may
    // time out and move a counter. Take the table once it shows the settled states itself.
    let settled_row = |line: &str, id: &str, expected: [&str; 3]| {
        let cells: Vec<&str> = line.split_whitespace().collect();
        cells.get(1) == Some(&id)
            && [cells.get(3), cells.get(8), cells.get(9)] == expected.each_ref().map(Some)
    };
    let mut shown = String::new();
    let settled = wait_for(Duration::from_secs(10), || {
        let output = balancer.ctl(&["show", "backends"]);
        assert!(output.success, "{}", output.stderr);
        shown = output.stdout;
        let lines: Vec<&str> = shown.lines().collect();
        lines.len() == 4
            && settled_row(lines[1], "b0", ["up", "3/3", "L7OK"])
            && settled_row(lines[2], "b1", ["up", "3/3", "L7OK"])
            && settled_row(lines[3], "b2", ["down", "0/3", "L4CON"])
    });
    assert!(settled, "{shown}");
    let shown = normalise(&shown, &[b0.address, b1.address, dead]);
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/shell"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("ctl_show_backends", shown);
    });
}

#[test]
fn drain_weight_and_pause_change_what_the_balancer_does() {
    let (first, second) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let balancer = Balancer::start(
        &listener_and_pool(listen, UDP_HEALTH, &[first.address, second.address]),
        listen,
        false,
    );
    assert!(balancer.wait_for_health("b0", "up") && balancer.wait_for_health("b1", "up"));
    let backends = [("b0", &first), ("b1", &second)];

    // Drain: the pinned client keeps its backend; every new client goes to the other one.
    let pinned_client = client();
    assert!(ask(&pinned_client, listen, b"first").is_some());
    let pinned = backend_of(&balancer, &pinned_client);
    let other = if pinned == "b0" { "b1" } else { "b0" };
    let drained = balancer.ctl(&["backend", "pool", &pinned, "drain"]);
    assert!(drained.success && drained.stdout.contains("draining"), "{}{}", drained.stdout, drained.stderr);
    for _ in 0..6 {
        assert_eq!(new_client_backend(&balancer), other, "no new flow goes to a draining backend");
    }
    assert!(ask(&pinned_client, listen, b"again").is_some());
    assert_eq!(backend_of(&balancer, &pinned_client), pinned, "a drain keeps existing flows");
    assert!(balancer.backend_states().iter().any(|(id, _, admin)| *id == pinned && admin == "draining"));

    // Weight 0 on the other backend: new flows go to the re-enabled one.
    assert!(balancer.ctl(&["backend", "pool", &pinned, "enable"]).success);
    assert!(balancer.ctl(&["backend", "pool", other, "weight", "0"]).success);
    for _ in 0..6 {
        assert_eq!(new_client_backend(&balancer), pinned, "weight 0 takes no new flows");
    }

    // Pause: no more probes reach the backend; resume starts them again.
    let (_, paused) = backends.iter().find(|(id, _)| *id == other).unwrap();
    assert!(balancer.ctl(&["backend", "pool", other, "pause"]).success);
    std::thread::sleep(Duration::from_millis(300));
    let before = paused.count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(paused.count(), before, "a paused backend is not probed");
    assert!(balancer.backend_states().iter().any(|(id, _, admin)| id == other && admin == "paused"));
    assert!(balancer.ctl(&["backend", "pool", other, "resume"]).success);
    assert!(wait_for(Duration::from_secs(5), || paused.count() > before), "probes resume");

    // Refusals are explained and exit 1.
    let unknown = balancer.ctl(&["backend", "pool", "nope", "pause"]);
    assert!(
        !unknown.success && unknown.stderr.contains("no backend \"nope\" in cluster \"pool\""),
        "{}",
        unknown.stderr
    );
    let not_paused = balancer.ctl(&["backend", "pool", other, "resume"]);
    assert!(
        !not_paused.success && not_paused.stderr.contains("only a paused backend"),
        "{}",
        not_paused.stderr
    );
}

#[test]
fn a_drained_listener_takes_no_new_clients_until_resumed() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let balancer = Balancer::start(&listener_and_pool(listen, "", &[backend.address]), listen, false);
    let existing = client();
    assert!(ask(&existing, listen, b"before").is_some());
    let drained = balancer.ctl(&["listener", "test", "drain"]);
    assert!(
        drained.success && drained.stdout.contains("test: draining, 2 flows remaining"),
        "{}",
        drained.stdout
    );
    assert!(ask(&client(), listen, b"new").is_none(), "a new client is dropped while draining");
    assert!(ask(&existing, listen, b"during").is_some(), "an existing flow keeps working");
    let listed = balancer.ctl_json(&["show", "listeners"]);
    assert_eq!(listed["listeners"][0]["draining"], true);
    assert!(balancer.ctl(&["listener", "test", "resume"]).success);
    assert!(ask(&client(), listen, b"new again").is_some(), "resumed");
    let unknown = balancer.ctl(&["listener", "nope", "drain"]);
    assert!(!unknown.success && unknown.stderr.contains("no listener \"nope\""), "{}", unknown.stderr);
}

#[test]
fn reload_reports_a_bad_file_keeps_serving_and_applies_a_good_one() {
    let (first, second) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let balancer = Balancer::start(&listener_and_pool(listen, "", &[first.address]), listen, false);

    balancer.write_config("[listeners.test]\naddress = \"127.0.0.1:1\"\ncluster = \"nope\"\n");
    let rejected = balancer.ctl(&["reload"]);
    assert!(!rejected.success, "a bad file fails the command");
    assert!(
        rejected.stderr.contains("reload rejected")
            && rejected.stderr.contains("field `listeners.test.cluster`"),
        "the rendered error names the field: {}",
        rejected.stderr
    );
    assert!(ask(&client(), listen, b"still serving").is_some(), "the running configuration is kept");

    balancer.write_config(&listener_and_pool(listen, "", &[first.address, second.address]));
    let applied = balancer.ctl(&["reload"]);
    assert!(applied.success, "{}", applied.stderr);
    assert!(applied.stdout.contains("backends added: pool/b1"), "{}", applied.stdout);
    let before = second.count();
    for _ in 0..6 {
        assert!(ask(&client(), listen, b"spread").is_some());
    }
    assert!(second.count() >= before + 3, "the added backend takes its share of new flows");

    // Settings a reload cannot change are named, and still named at the next reload: the
    // process runs with the values it started with until it restarts.
    let key = "ab".repeat(32);
    let body = listener_and_pool(listen, "", &[first.address, second.address]);
    balancer.write_config(&format!("[process]\nselection_key = \"{key}\"\nlog_format = \"json\"\n\n{body}"));
    for attempt in 0..2 {
        let applied = balancer.ctl(&["reload"]);
        assert!(applied.success, "{}", applied.stderr);
        for field in ["process.selection_key", "process.log_format"] {
            assert!(
                applied
                    .stdout
                    .contains(&format!("warning: {field} differs from the value udplb started with")),
                "reload {attempt}: {}",
                applied.stdout
            );
        }
        assert!(!applied.stdout.contains("process.workers"), "{}", applied.stdout);
    }
}

#[test]
fn watch_streams_a_health_transition_when_a_backend_port_closes() {
    let (stays, goes) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let balancer = Balancer::start(
        &listener_and_pool(listen, UDP_HEALTH, &[stays.address, goes.address]),
        listen,
        false,
    );
    assert!(balancer.wait_for_health("b1", "up"));
    let mut watcher = Command::new(common::udplb())
        .args(["ctl", "--json", "--socket"])
        .arg(&balancer.socket)
        .arg("watch")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ctl watch");
    let (lines, received) = mpsc::channel();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = received.recv_timeout(Duration::from_secs(10)).expect("the watch answer");
    assert!(first.contains("\"watching\":true"), "{first}");
    drop(goes); // Its port closes: probes draw ICMP port unreachable.
    let mut seen = Vec::new();
    let transition = loop {
        let Ok(line) = received.recv_timeout(Duration::from_secs(10)) else { break None };
        let event: serde_json::Value = serde_json::from_str(&line).expect("events are JSON lines");
        seen.push(line);
        if event["event"] == "backend_health" && event["backend"] == "b1" && event["to"] == "down" {
            break Some(event);
        }
    };
    let _ = watcher.kill();
    let _ = watcher.wait();
    let transition = transition.unwrap_or_else(|| panic!("no transition to down; saw {seen:?}"));
    // Stamped with the time of day (ISO 8601, UTC, milliseconds), not only udplb's uptime.
    let time = transition["time"].as_str().unwrap_or_default();
    let shape: String = time.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999Z", "{transition}");
    assert!(time.starts_with("20"), "{time}");
    assert_eq!(transition["cluster"], "pool");
    assert_eq!(transition["from"], "up");
    assert_eq!(transition["code"], "L4CON", "refused by ICMP port unreachable");
}

#[test]
fn show_flow_names_the_backend_a_client_is_on_and_why() {
    let (first, second) = (Backend::echo(), Backend::echo());
    let listen = free_udp_address();
    let body = listener_and_pool(listen, "algorithm = \"maglev\"", &[first.address, second.address]);
    let balancer = Balancer::start(&body, listen, false);
    let socket = client();
    let (before_first, before_second) = (first.count(), second.count());
    for _ in 0..3 {
        assert!(ask(&socket, listen, b"where am i").is_some());
    }
    let on_first = first.count() - before_first == 3;
    assert!(on_first || second.count() - before_second == 3, "one backend took all three");
    let expected = if on_first { ("b0", first.address) } else { ("b1", second.address) };

    let address = socket.local_addr().unwrap().to_string();
    let shown = balancer.ctl(&["show", "flow", &address]);
    assert!(shown.success, "{}", shown.stderr);
    let names = format!("client {address} -> backend pool/{} ({})", expected.0, expected.1);
    assert!(shown.stdout.contains(&names), "{}", shown.stdout);
    assert!(shown.stdout.contains("3 requests, 3 responses"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains(&format!("chosen by maglev on key [vip {listen} + client {address}]")),
        "{}",
        shown.stdout
    );

    let why = balancer.ctl_json(&["show", "flow", &address]);
    let clusters = balancer.ctl_json(&["show", "clusters"]);
    assert_eq!(why["explanations"][0]["fingerprint"], clusters["clusters"][0]["fingerprint"]);
    assert_eq!(why["explanations"][0]["affinity"], "client_address_port");
    let host = balancer.ctl_json(&["show", "flow", "127.0.0.1"]);
    assert!(host["flows"].as_array().unwrap().len() >= 2, "by host: this client and the start-up ping");

    let listeners = balancer.ctl(&["show", "listeners"]);
    assert!(listeners.stdout.starts_with("LISTENER") && listeners.stdout.contains(&listen.to_string()));
    let flows = balancer.ctl(&["show", "flows"]);
    assert!(flows.stdout.contains(&address), "{}", flows.stdout);

    // The decision, not the present: after a reload to round robin with a third backend,
    // the flow still says maglev, the fingerprint it was admitted under, and when.
    let explained = &why["explanations"][0];
    let fingerprint = explained["fingerprint"].as_str().unwrap().to_owned();
    assert_eq!(explained["fingerprint_at_admission"].as_str().unwrap(), &fingerprint[..8]);
    assert_eq!((explained["pool"].as_u64(), explained["fail_open"].as_bool()), (Some(0), Some(false)));
    assert!(explained["admitted_at"].as_str().unwrap().ends_with('Z'), "{explained}");
    assert!(shown.stdout.contains("(unchanged since admission)"), "{}", shown.stdout);
    let third = Backend::echo();
    let body = listener_and_pool(
        listen,
        "algorithm = \"round_robin\"",
        &[first.address, second.address, third.address],
    );
    balancer.write_config(&body);
    assert!(balancer.ctl(&["reload"]).success);
    let after = balancer.ctl(&["show", "flow", &address]);
    assert!(after.stdout.contains(&format!("chosen by maglev on key [vip {listen} + client {address}], in pool 0 (the cluster uses round_robin now)")), "{}", after.stdout);
    assert!(
        after.stdout.contains(&format!("table fingerprint at admission {}…, now ", &fingerprint[..8])),
        "{}",
        after.stdout
    );
    // A new client is placed by the new rule, which uses no key.
    let newcomer = client();
    assert!(ask(&newcomer, listen, b"hello").is_some());
    let newcomer = newcomer.local_addr().unwrap().to_string();
    let placed = balancer.ctl(&["show", "flow", &newcomer]);
    assert!(
        placed.stdout.contains("chosen by round_robin (takes turns; uses no key), in pool 0"),
        "{}",
        placed.stdout
    );
}

#[test]
fn the_control_socket_is_private_replaces_a_stale_file_and_goes_away_on_exit() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let body = listener_and_pool(listen, "", &[backend.address]);
    let socket = std::env::temp_dir().join(format!("udplb-stale-{}.sock", std::process::id()));
    // A socket file nobody listens on, as a killed udplb leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let config = socket.with_extension("toml");
    let mut balancer = Balancer::spawn(config, socket.clone(), None, listen, &body);
    assert!(
        wait_for(Duration::from_secs(10), || balancer.ctl(&["show", "listeners"]).success),
        "serving over the replaced socket"
    );
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);

    balancer.signal(libc::SIGTERM);
    assert!(
        wait_for(Duration::from_secs(10), || balancer.child.try_wait().unwrap().is_some()),
        "exits on SIGTERM"
    );
    assert!(!socket.exists(), "the socket file is removed on exit");
    let absent = balancer.ctl(&["show", "backends"]);
    assert!(!absent.success);
    assert!(absent.stderr.contains("no such socket: is udplb running"), "{}", absent.stderr);
}

/// Two workers: `show listeners`, `show backends` and the flow total count every worker's
/// flows (clients are spread over the workers' sockets by the kernel), and metrics add up.
/// A balancer with two workers in front of two echo backends (kept alive with it).
fn two_workers() -> (Balancer, [Backend; 2]) {
    let backends = [Backend::echo(), Backend::echo()];
    let listen = free_udp_address();
    let body = format!(
        "[process]\nworkers = 2\n\n{}",
        listener_and_pool(listen, "", &[backends[0].address, backends[1].address])
    );
    (Balancer::start(&body, listen, true), backends)
}

#[test]
fn with_two_workers_show_and_metrics_count_every_workers_flows() {
    let (balancer, _backends) = two_workers();
    let listen = balancer.listen;
    // Long-lived flows (30 s idle timeout), plus the one `start` opened to check the path.
    let clients: Vec<_> = (0..40).map(|_| client()).collect();
    for (i, socket) in clients.iter().enumerate() {
        assert!(ask(socket, listen, format!("hello {i}").as_bytes()).is_some(), "client {i}");
    }
    let total = |answer: &serde_json::Value| -> u64 {
        answer["listeners"].as_array().unwrap().iter().map(|l| l["flows"].as_u64().unwrap()).sum()
    };
    // Followers publish their counters five times a second.
    assert!(
        wait_for(Duration::from_secs(5), || total(&balancer.ctl_json(&["show", "listeners"])) == 41),
        "{}",
        balancer.ctl_json(&["show", "listeners"])
    );
    let backends_view = balancer.ctl_json(&["show", "backends"]);
    let per_backend: u64 =
        backends_view["backends"].as_array().unwrap().iter().map(|b| b["flows"].as_u64().unwrap()).sum();
    assert_eq!(per_backend, 41, "{backends_view}");
    assert_eq!(balancer.ctl_json(&["show", "flows"])["flows_total"].as_u64(), Some(41));
    let (_, metrics) = balancer.http_get("/metrics");
    assert!(metrics.lines().any(|line| line == "udplb_workers 2"), "{metrics}");
    assert!(metrics.lines().any(|line| line == "udplb_flows_active{listener=\"test\"} 41"), "{metrics}");
}

/// With two workers each has its own flow table: `show flows` and `show flow` must ask both.
/// Before they did, 40 live clients showed as about 20 flows in `show flows`, and `show flow`
/// answered "no live flow" for every client the follower served.
#[test]
fn with_two_workers_show_flows_and_show_flow_find_every_workers_flows() {
    let (balancer, _backends) = two_workers();
    let listen = balancer.listen;
    let clients: Vec<_> = (0..40).map(|_| client()).collect();
    for (i, socket) in clients.iter().enumerate() {
        assert!(ask(socket, listen, format!("hello {i}").as_bytes()).is_some(), "client {i}");
    }
    // Every flow, the one `start` opened included, named by worker and serial.
    let answer = balancer.ctl_json(&["show", "flows"]);
    let flows = answer["flows"].as_array().unwrap();
    assert_eq!((flows.len(), answer["flows_total"].as_u64()), (41, Some(41)), "{answer}");
    let named: std::collections::BTreeSet<(u64, u64)> =
        flows.iter().map(|f| (f["worker"].as_u64().unwrap(), f["flow"].as_u64().unwrap())).collect();
    assert_eq!(named.len(), 41, "each flow once: {answer}");
    let workers: std::collections::BTreeSet<u64> = named.iter().map(|(worker, _)| *worker).collect();
    assert_eq!(workers.len(), 2, "both workers serve: {answer}");
    // Every client's flow is found, whichever worker holds it, and explained.
    for socket in &clients {
        let address = socket.local_addr().unwrap().to_string();
        let answer = balancer.ctl_json(&["show", "flow", &address]);
        let flows = answer["flows"].as_array().unwrap();
        assert_eq!(flows.len(), 1, "{address}: {answer}");
        assert_eq!(flows[0]["client"].as_str(), Some(address.as_str()));
        assert_eq!(answer["explanations"].as_array().unwrap().len(), 1, "{answer}");
    }
    // The limit applies to the whole list.
    let limited = balancer.ctl_json(&["show", "flows", "--limit", "5"]);
    assert_eq!(limited["flows"].as_array().unwrap().len(), 5, "{limited}");
    assert_eq!(limited["flows_total"].as_u64(), Some(41));
}

/// A reload that changes a listener's affinity changes how its workers are steered: with
/// `client_address_port` the steering program spreads one host's sockets over the workers
/// by port; after a reload to `client_address` every socket of the host must reach one worker
/// (one flow, one backend), which only holds if the new program was attached to the group.
/// The first datagrams go out as soon as `ctl reload` answers: it must not answer before
/// every worker has replaced its socket (a client steered to a follower's old socket went
/// unanswered, 1 run in 15, when only the leader had applied it).
#[test]
fn a_reload_that_keys_by_address_steers_a_hosts_sockets_to_one_worker() {
    let backends = [Backend::echo(), Backend::echo(), Backend::echo()];
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let listen = free_udp_address();
    let body = |affinity: &str| {
        let pool = listener_and_pool(listen, "algorithm = \"round_robin\"", &addresses);
        let pool =
            pool.replace("cluster = \"pool\"\n", &format!("cluster = \"pool\"\naffinity = \"{affinity}\"\n"));
        format!("[process]\nworkers = 4\n\n{pool}")
    };
    let balancer = Balancer::start(&body("client_address_port"), listen, false);
    let workers_of = |ports: &[u16]| {
        let flows = balancer.ctl_json(&["show", "flows"]);
        let mut workers: Vec<u64> = flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                f["client"].as_str().unwrap().parse::<SocketAddr>().is_ok_and(|c| ports.contains(&c.port()))
            })
            .map(|f| f["worker"].as_u64().unwrap())
            .collect();
        workers.sort_unstable();
        workers.dedup();
        workers
    };
    // Keyed by port: 16 sockets of 127.0.0.1 land on several workers.
    let before: Vec<_> = (0..16).map(|_| client()).collect();
    for (i, socket) in before.iter().enumerate() {
        assert!(ask(socket, listen, format!("before {i}").as_bytes()).is_some(), "socket {i}");
    }
    let ports: Vec<u16> = before.iter().map(|s| s.local_addr().unwrap().port()).collect();
    assert!(workers_of(&ports).len() > 1, "16 sockets by port on one worker: {:?}", workers_of(&ports));
    balancer.write_config(&body("client_address"));
    let applied = balancer.ctl(&["reload"]);
    assert!(applied.success, "{}", applied.stderr);
    // The listener is replaced (its flows close): every worker opens it again, the leader
    // too, although the followers' old sockets are still bound when it does.
    assert!(!applied.stdout.contains("could not be opened"), "{}", applied.stdout);
    assert!(applied.stdout.contains("listeners added: test"), "{}", applied.stdout);
    // The answer waits for every worker: it counts the flows all four closed, the 16 sockets'
    // and the one `Balancer::start` opened to see udplb answer.
    assert!(applied.stdout.contains("flows closed: 17"), "{}", applied.stdout);
    // Keyed by address: every new socket of the host reaches the same worker.
    let after: Vec<_> = (0..16).map(|_| client()).collect();
    for (i, socket) in after.iter().enumerate() {
        assert!(ask(socket, listen, format!("after {i}").as_bytes()).is_some(), "socket {i}");
    }
    let mut workers = Vec::new();
    for socket in &after {
        // With `client_address` a flow's client is the port it last heard from: ask each
        // socket's flow alone.
        assert!(ask(socket, listen, b"where").is_some());
        workers.extend(workers_of(&[socket.local_addr().unwrap().port()]));
    }
    workers.sort_unstable();
    workers.dedup();
    assert_eq!(workers.len(), 1, "after the reload the host's sockets reached workers {workers:?}");
}

/// `ctl -c FILE` reads the socket from the file's `process.control_socket`; a file with a
/// TOML syntax error (the most common way to break one) must not stop `ctl -c FILE reload`
/// from reaching udplb, which then says what is wrong and keeps its configuration.
#[test]
fn ctl_with_a_broken_file_still_finds_the_socket_and_the_reload_names_the_error() {
    let backend = Backend::echo();
    let listen = free_udp_address();
    let balancer = Balancer::start(&listener_and_pool(listen, "", &[backend.address]), listen, false);
    let good = std::fs::read_to_string(&balancer.config).unwrap();
    // A table header without its closing bracket.
    let broken = good.replace("[clusters.pool]", "[clusters.pool");
    assert_ne!(broken, good);
    std::fs::write(&balancer.config, &broken).unwrap();
    let ctl = |args: &[&str]| {
        Command::new(common::udplb()).arg("ctl").arg("-c").arg(&balancer.config).args(args).output().unwrap()
    };
    let shown = ctl(&["show", "listeners"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let reload = ctl(&["reload"]);
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert!(!reload.status.success(), "the reload is refused");
    assert!(stderr.contains("reload rejected") && stderr.contains("invalid TOML"), "{stderr}");
    assert!(ask(&client(), listen, b"still serving").is_some(), "the running configuration is kept");
}

/// Something that accepts on the socket but never answers: `ctl` gives up after `--timeout`
/// and says what it means, not `Resource temporarily unavailable (os error 11)`.
#[test]
fn ctl_against_a_socket_that_never_answers_gives_up_with_an_explanation() {
    let path = std::env::temp_dir().join(format!("udplb-mute-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let holder = std::thread::spawn(move || {
        // Accept, read nothing, answer nothing; let go when the client does.
        let (stream, _) = listener.accept().unwrap();
        let mut buffer = [0u8; 1];
        let _ = std::io::Read::read(&mut &stream, &mut buffer);
        std::thread::sleep(Duration::from_secs(3));
    });
    let started = std::time::Instant::now();
    let output = Command::new(common::udplb())
        .args(["ctl", "--timeout", "0.5", "--socket"])
        .arg(&path)
        .args(["show", "listeners"])
        .output()
        .unwrap();
    let waited = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no answer within 500ms") && stderr.contains("--timeout"), "{stderr}");
    assert!(!stderr.contains("os error 11"), "{stderr}");
    assert!(waited < Duration::from_secs(3), "gave up after {waited:?}");
    holder.join().unwrap();
}

/// `flow CLIENT close` and `backend CLUSTER ID close-flows` close flows on every worker: the
/// closed flows are gone from `show flows`, their clients are answered again (on new
/// flows), and nothing else is touched.
#[test]
fn closing_a_clients_flows_and_a_backends_flows_reaches_every_worker() {
    let (balancer, _backends) = two_workers();
    let listen = balancer.listen;
    let clients: Vec<_> = (0..30).map(|_| client()).collect();
    for (i, socket) in clients.iter().enumerate() {
        assert!(ask(socket, listen, format!("hello {i}").as_bytes()).is_some(), "client {i}");
    }
    let flows =
        |balancer: &Balancer| balancer.ctl_json(&["show", "flows"])["flows"].as_array().unwrap().clone();
    let before = flows(&balancer);
    assert_eq!(before.len(), 31, "30 clients and the start-up check");
    let workers: std::collections::BTreeSet<u64> =
        before.iter().map(|f| f["worker"].as_u64().unwrap()).collect();
    assert_eq!(workers.len(), 2, "both workers hold flows");

    // One client socket, on whichever worker holds it.
    let one = clients[7].local_addr().unwrap().to_string();
    let closed = balancer.ctl(&["flow", &one, "close"]);
    assert!(closed.success, "{}", closed.stderr);
    assert!(closed.stdout.starts_with(&format!("{one}: closed 1 flow\n")), "{}", closed.stdout);
    assert!(closed.stdout.contains(&one), "the closed flow is listed: {}", closed.stdout);
    assert!(balancer.ctl_json(&["show", "flow", &one])["flows"].as_array().unwrap().is_empty());
    assert_eq!(flows(&balancer).len(), 30);
    assert!(ask(&clients[7], listen, b"again").is_some(), "the client's next datagram starts a new flow");
    assert_eq!(flows(&balancer).len(), 31);

    // Every flow of backend b0, on both workers.
    let on_b0 = |flows: &[serde_json::Value]| flows.iter().filter(|f| f["backend"] == "b0").count();
    let expected = on_b0(&flows(&balancer));
    assert!(expected > 0);
    let answer = balancer.ctl_json(&["backend", "pool", "b0", "close-flows"]);
    assert_eq!(answer["message"].as_str().unwrap(), format!("pool/b0: closed {expected} flows"), "{answer}");
    assert_eq!(answer["flows"].as_array().unwrap().len(), expected);
    let after = flows(&balancer);
    assert_eq!((on_b0(&after), after.len()), (0, 31 - expected), "only b0's flows closed");
    for socket in &clients {
        assert!(ask(socket, listen, b"still served").is_some(), "every client is answered afterwards");
    }
    let unknown = balancer.ctl(&["flow", "not-an-address", "close"]);
    assert!(!unknown.success && unknown.stderr.contains("is not a client address"), "{}", unknown.stderr);
}
