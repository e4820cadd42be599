//! The `udplb` binary on loopback with real sockets: real backends, real clients, real ICMP.
//! Every wait is bounded; traffic goes to 127.0.0.1 only.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::run_to_exit;
use udplb_core::proxy_v2::Header;

/// A UDP echo server on a free loopback port, counting what it receives.
struct Backend {
    address: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The PROXY v2 source addresses it saw (when decoding).
    sources: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    /// The balancer-side ports datagrams came from: one per upstream, so one per flow.
    peer_ports: Arc<std::sync::Mutex<Vec<u16>>>,
    /// Every payload it received (after any PROXY v2 header).
    payloads: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Backend {
    fn echo(decode_proxy: bool) -> Backend {
        Backend::with_delay(decode_proxy, Duration::ZERO)
    }

    /// An echo server that waits `delay` before each answer.
    fn with_delay(decode_proxy: bool, delay: Duration) -> Backend {
        Backend::serve(UdpSocket::bind("127.0.0.1:0").expect("bind backend"), decode_proxy, delay)
    }

    /// An echo server on ::1.
    fn echo_v6(decode_proxy: bool) -> Backend {
        Backend::serve(UdpSocket::bind("[::1]:0").expect("bind [::1]"), decode_proxy, Duration::ZERO)
    }

    /// An echo server on another loopback address (127.0.0.0/8 is all loopback on Linux).
    fn echo_at(ip: &str) -> Backend {
        let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        Backend::serve(socket, false, Duration::ZERO)
    }

    fn serve(socket: UdpSocket, decode_proxy: bool, delay: Duration) -> Backend {
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
        let peer_ports = Arc::new(std::sync::Mutex::new(Vec::new()));
        let payloads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, flag, seen, ports, kept) =
            (received.clone(), stop.clone(), sources.clone(), peer_ports.clone(), payloads.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else { continue };
                counter.fetch_add(1, Ordering::Relaxed);
                ports.lock().unwrap().push(from.port());
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                let mut payload = &buffer[..length];
                if decode_proxy && let Ok((header, consumed)) = Header::parse(payload) {
                    if let Some((source, _)) = header.proxied_endpoints() {
                        seen.lock().unwrap().push(source);
                    }
                    payload = &payload[consumed..];
                }
                kept.lock().unwrap().push(payload.to_vec());
                let _ = socket.send_to(payload, from);
            }
        });
        Backend { address, received, stop, thread: Some(thread), sources, peer_ports, payloads }
    }
}

impl Backend {
    /// Distinct balancer-side ports seen so far: the number of flows (upstreams) used.
    fn distinct_peer_ports(&self) -> usize {
        let mut ports = self.peer_ports.lock().unwrap().clone();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback port with nothing listening on it: datagrams to it draw ICMP port unreachable.
fn closed_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn free_port() -> u16 {
    closed_port().port()
}

/// A running `udplb run`, killed when dropped.
struct Balancer {
    child: Child,
    listen: SocketAddr,
    config: PathBuf,
}

impl Balancer {
    fn start(config_text: &str, listen: SocketAddr) -> Balancer {
        let balancer = Balancer::spawn(config_text, listen);
        balancer.wait_until_answering();
        balancer
    }

    /// Starts udplb without waiting for an answer (one-way configurations give none).
    fn spawn(config_text: &str, listen: SocketAddr) -> Balancer {
        Balancer::spawn_with(config_text, listen, &[])
    }

    /// Starts `udplb run -c FILE ARGS` without waiting for an answer.
    fn spawn_with(config_text: &str, listen: SocketAddr, args: &[&str]) -> Balancer {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let config = std::env::temp_dir().join(format!("udplb-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&config, config_text).unwrap();
        let child = Command::new(common::udplb())
            .args(["run", "-c"])
            .arg(&config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start udplb");
        Balancer { child, listen, config }
    }

    fn wait_until_answering(&self) {
        let client = if self.listen.is_ipv6() { client_v6() } else { client() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ask(&client, self.listen, b"ping").is_some() {
                return;
            }
        }
        panic!("udplb did not answer on {} within 10s", self.listen);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// A client socket on ::1.
fn client_v6() -> UdpSocket {
    let socket = UdpSocket::bind("[::1]:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    socket
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    socket
}

/// Sends `payload` and waits (bounded) for the reply.
fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(payload, to).ok()?;
    let mut buffer = [0u8; 2048];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    Some(buffer[..length].to_vec())
}

fn config(listen: SocketAddr, cluster_extra: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> =
        backends.iter().enumerate().map(|(i, a)| format!("{{ id = \"b{i}\", address = \"{a}\" }}")).collect();
    format!(
        "[listeners.test]\naddress = \"{listen}\"\ncluster = \"pool\"\n\n[clusters.pool]\n{cluster_extra}\nbackends = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn forwards_and_returns_over_several_echo_backends() {
    let backends = [Backend::echo(false), Backend::echo(false), Backend::echo(false)];
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let _balancer = Balancer::start(&config(listen, "", &addresses), listen);
    for i in 0..30 {
        let socket = client();
        let payload = format!("hello {i}");
        assert_eq!(
            ask(&socket, listen, payload.as_bytes()).as_deref(),
            Some(payload.as_bytes()),
            "request {i}"
        );
    }
    for backend in &backends {
        assert!(backend.received.load(Ordering::Relaxed) >= 5, "round robin reaches every backend");
    }
}

#[test]
fn an_empty_datagram_is_forwarded_and_its_empty_reply_returned() {
    // Empty datagrams are legal UDP (some keepalive schemes send them), and real sockets
    // carry them both ways; with PROXY v2 the backend gets the header alone.
    let backend = Backend::echo(true);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "proxy_protocol = { mode = \"every\" }";
    let _balancer = Balancer::start(&config(listen, extra, &[backend.address]), listen);
    let socket = client();
    for _ in 0..3 {
        assert_eq!(ask(&socket, listen, b"").as_deref(), Some(&b""[..]), "an empty reply comes back");
    }
    // (The start-up check that the balancer serves sent one datagram of its own first.)
    let payloads = backend.payloads.lock().unwrap().clone();
    assert_eq!(payloads[payloads.len() - 3..], vec![Vec::<u8>::new(); 3], "{payloads:?}");
    let sources = backend.sources.lock().unwrap().clone();
    assert_eq!(sources[sources.len() - 3..], vec![socket.local_addr().unwrap(); 3], "the header alone");
}

#[test]
fn one_client_socket_stays_on_one_backend() {
    let backends = [Backend::echo(false), Backend::echo(false)];
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let _balancer = Balancer::start(&config(listen, "", &addresses), listen);
    let socket = client();
    let before: Vec<u64> = backends.iter().map(|b| b.received.load(Ordering::Relaxed)).collect();
    for i in 0..20 {
        assert!(ask(&socket, listen, format!("{i}").as_bytes()).is_some());
    }
    let grew: Vec<u64> =
        backends.iter().zip(&before).map(|(b, before)| b.received.load(Ordering::Relaxed) - before).collect();
    assert!(grew.contains(&20) && grew.contains(&0), "affinity: {grew:?}");
}

#[test]
fn a_backend_with_a_closed_port_loses_no_query_thanks_to_retries() {
    let live = Backend::echo(false);
    let dead = closed_port();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "responses = 1\nhealth = { mode = \"udp\", udp_payload = \"probe\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 2 }";
    let _balancer = Balancer::start(&config(listen, extra, &[live.address, dead]), listen);
    for i in 0..40 {
        let socket = client();
        let payload = format!("query {i}");
        let answer = ask(&socket, listen, payload.as_bytes());
        assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "query {i} lost");
    }
}

#[test]
fn the_backend_gets_a_proxy_v2_header_naming_the_real_client() {
    let backend = Backend::echo(true);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "proxy_protocol = { mode = \"every\", crc32c = true }";
    let _balancer = Balancer::start(&config(listen, extra, &[backend.address]), listen);
    let socket = client();
    assert_eq!(ask(&socket, listen, b"who am i").as_deref(), Some(&b"who am i"[..]));
    let sources = backend.sources.lock().unwrap().clone();
    assert!(sources.contains(&socket.local_addr().unwrap()), "{sources:?}");
}

#[test]
fn a_bad_reload_keeps_serving_and_sigterm_drains_then_exits_zero() {
    let backend = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "idle_timeout = { front = \"300ms\", back = \"300ms\" }";
    let mut balancer = Balancer::start(&config(listen, extra, &[backend.address]), listen);
    std::fs::write(&balancer.config, "[listeners.test]\naddress = \"not an address\"\n").unwrap();
    balancer.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    let socket = client();
    assert!(ask(&socket, listen, b"still there?").is_some(), "a bad reload keeps the running configuration");
    balancer.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = balancer.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "udplb did not drain and exit within 10s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tests run the binary as it ships, whatever features this `cargo test` unified into the
/// core: `udplb --version` names test-only features, and the one the tests run has none.
#[test]
fn the_binary_under_test_has_no_test_only_features() {
    let shipped = format!("udplb {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(common::version_of(common::udplb()), shipped);
    // The binary this cargo invocation built links the same core as this test, features and
    // all; its version says so (under `cargo test --workspace`, `mutants` and `fuzzing`).
    let tested = common::version_of(std::path::Path::new(env!("CARGO_BIN_EXE_udplb")));
    if udplb_core::TEST_FEATURES.is_empty() {
        assert_eq!(tested, shipped);
    } else {
        assert_eq!(
            tested,
            format!("{shipped} (test-only features: {})", udplb_core::TEST_FEATURES.join(", "))
        );
    }
}

#[test]
fn check_reports_each_error_with_file_line_column_and_field() {
    let path = std::env::temp_dir().join("udplb-check-bad.toml");
    std::fs::write(
        &path,
        "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"nope\"\n\n[clusters.pool]\nbackends = [{ id = \"a\", address = \"10.0.0.1:53\", wieght = 2 }]\n",
    )
    .unwrap();
    let output = Command::new(common::udplb()).args(["check", "-c"]).arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "bad.toml");
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/shell"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("check_bad_config", stderr);
    });
    let good = std::env::temp_dir().join("udplb-check-good.toml");
    std::fs::write(
        &good,
        config("127.0.0.1:5353".parse().unwrap(), "", &["127.0.0.1:5301".parse().unwrap()]),
    )
    .unwrap();
    let output = Command::new(common::udplb()).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Valid, with one risky setting (no drain_timeout): a warning, and --deny-warnings fails.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.ends_with(", 1 warning\n"), "{stdout}");
    assert!(stderr.contains(":1:12: warning: field `listeners.test`: no drain_timeout"), "{stderr}");
    let denied =
        Command::new(common::udplb()).args(["check", "--deny-warnings", "-c"]).arg(&good).output().unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("--deny-warnings makes warnings errors"));
    // What depends on the machine: a flow cap past the descriptors, more workers than CPUs.
    let greedy = format!(
        "[process]\nmax_flows = 16000000\nworkers = 256\n\n{}",
        config("127.0.0.1:5353".parse().unwrap(), "", &["127.0.0.1:5301".parse().unwrap()]).replacen(
            "cluster = \"pool\"\n",
            "cluster = \"pool\"\ndrain_timeout = \"1s\"\n",
            1
        )
    );
    std::fs::write(&good, greedy).unwrap();
    let output = Command::new(common::udplb()).args(["check", "-c"]).arg(&good).output().unwrap();
    let _ = std::fs::remove_file(&good);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("field `process.max_flows`: 16000000 flows need more upstream sockets"),
        "{stderr}"
    );
    assert!(stderr.contains("field `process.workers`: 256 workers on"), "{stderr}");
}

/// SIGTERM is bounded: a listener without drain_timeout and a client that never stops
/// sending would keep udplb draining for ever; `process.stop_timeout` closes what is left.
#[test]
fn sigterm_is_bounded_by_stop_timeout_even_when_a_client_keeps_sending() {
    let backend = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "[process]\nstop_timeout = \"1s\"\n\n{}",
        config(listen, "idle_timeout = { front = \"60s\", back = \"60s\" }", &[backend.address])
    );
    let mut balancer = Balancer::start(&text, listen);
    let stop = Arc::new(AtomicBool::new(false));
    let sending = stop.clone();
    let sender = std::thread::spawn(move || {
        let socket = client();
        // Every 50 ms, at most 200 times (10 s): its flow never goes idle.
        for i in 0..200 {
            if sending.load(Ordering::Relaxed) {
                break;
            }
            let _ = socket.send_to(format!("keepalive {i}").as_bytes(), listen);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    balancer.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = balancer.child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(8), "udplb still running 8 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(took >= Duration::from_millis(900), "it waited for the flow first ({took:?})");
    assert!(took < Duration::from_secs(4), "and stopped at stop_timeout ({took:?})");
}

#[test]
fn responses_1_closes_each_dns_like_flow_after_its_answer() {
    let backend = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // New source ports are the observable: one socket per flow makes each new flow visible
    // (the pool may hand a port back out once its quarantine is over).
    let text = format!(
        "[process]\nupstream_mode = \"per_flow\"\n\n{}",
        config(listen, "responses = 1", &[backend.address])
    );
    let _balancer = Balancer::start(&text, listen);
    let before = backend.distinct_peer_ports();
    let socket = client();
    for i in 0..5 {
        assert!(ask(&socket, listen, format!("q{i}").as_bytes()).is_some());
    }
    // One socket, five queries: each answer closed its flow, so each query opened a new one.
    assert_eq!(backend.distinct_peer_ports() - before, 5);

    let kept = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _balancer = Balancer::start(&config(listen, "", &[kept.address]), listen);
    let before = kept.distinct_peer_ports();
    let socket = client();
    for i in 0..5 {
        assert!(ask(&socket, listen, format!("q{i}").as_bytes()).is_some());
    }
    assert_eq!(kept.distinct_peer_ports() - before, 1, "without a reply count the flow stays");
}

#[test]
fn an_idle_flow_closes_after_its_front_idle_timeout() {
    let backend = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "idle_timeout = { front = \"300ms\", back = \"300ms\" }";
    // The observable is the backend seeing a new source port for the new flow: with one socket
    // per flow it must; the pool may reuse a port once its quarantine is over.
    let text =
        format!("[process]\nupstream_mode = \"per_flow\"\n\n{}", config(listen, extra, &[backend.address]));
    let _balancer = Balancer::start(&text, listen);
    let socket = client();
    assert!(ask(&socket, listen, b"a").is_some());
    assert!(ask(&socket, listen, b"b").is_some());
    let busy = backend.distinct_peer_ports();
    std::thread::sleep(Duration::from_millis(700));
    assert!(ask(&socket, listen, b"c").is_some());
    assert_eq!(backend.distinct_peer_ports(), busy + 1, "the idle flow closed; a new one opened");
}

#[test]
fn a_closed_companion_tcp_port_takes_a_backend_down_and_reopening_it_brings_it_back() {
    // Both backends answer UDP; the health checks (mode tcp) connect to each one's companion
    // TCP port, which is open for `good` and closed for `flaky` until the end of the test.
    let good = Backend::echo_at("127.0.0.1");
    let flaky = Backend::echo_at("127.0.0.2");
    let good_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = good_tcp.local_addr().unwrap().port();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "[listeners.test]\naddress = \"{listen}\"\ncluster = \"pool\"\n\n[clusters.pool]\n\
         health = {{ mode = \"tcp\", tcp_port = {tcp_port}, interval = \"100ms\", timeout = \"100ms\", rise = 2, fall = 2, jitter = 0 }}\n\
         backends = [{{ id = \"good\", address = \"{}\" }}, {{ id = \"flaky\", address = \"{}\" }}]\n",
        good.address, flaky.address
    );
    let _balancer = Balancer::start(&text, listen);
    std::thread::sleep(Duration::from_millis(600));
    let flaky_before = flaky.received.load(Ordering::Relaxed);
    for i in 0..20 {
        assert!(ask(&client(), listen, format!("{i}").as_bytes()).is_some(), "query {i}");
    }
    assert_eq!(flaky.received.load(Ordering::Relaxed), flaky_before, "a Down backend gets no new flows");
    // Its companion port opens: two passing checks bring it back, and it takes flows again.
    let _flaky_tcp =
        std::net::TcpListener::bind(("127.0.0.2", tcp_port)).expect("bind 127.0.0.2 companion port");
    std::thread::sleep(Duration::from_millis(800));
    for i in 0..20 {
        assert!(ask(&client(), listen, format!("again {i}").as_bytes()).is_some(), "query {i}");
    }
    assert!(flaky.received.load(Ordering::Relaxed) > flaky_before, "recovered: it takes new flows again");
}

#[test]
fn sigterm_lets_an_in_flight_flow_finish_before_exiting() {
    let slow = Backend::with_delay(false, Duration::from_millis(400));
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "responses = 1";
    let mut balancer = Balancer::start(&config(listen, extra, &[slow.address]), listen);
    let socket = client();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    socket.send_to(b"slow question", listen).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    balancer.signal(libc::SIGTERM);
    let mut buffer = [0u8; 64];
    let (length, _) = socket.recv_from(&mut buffer).expect("the in-flight answer still arrives");
    assert_eq!(&buffer[..length], b"slow question");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = balancer.child.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_reload_adds_and_removes_backends_without_touching_unrelated_flows() {
    let (b1, b2, b3) = (Backend::echo(false), Backend::echo(false), Backend::echo(false));
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let balancer = Balancer::start(&config(listen, "", &[b1.address, b2.address]), listen);
    // A session: find which backend it landed on.
    let counts = |backends: &[&Backend]| {
        backends.iter().map(|b| b.received.load(Ordering::Relaxed)).collect::<Vec<_>>()
    };
    let before = counts(&[&b1, &b2]);
    let session = client();
    assert!(ask(&session, listen, b"hello").is_some());
    let after = counts(&[&b1, &b2]);
    let (kept, removed) = if after[0] > before[0] { (&b1, &b2) } else { (&b2, &b1) };
    let kept_received = kept.received.load(Ordering::Relaxed);
    let kept_ports = kept.distinct_peer_ports();
    // Reload: the other backend is replaced by b3; the session's backend keeps its identity
    // (same id, same address: ids are positional in this helper).
    let next = if std::ptr::eq(kept, &b1) { [b1.address, b3.address] } else { [b3.address, b2.address] };
    std::fs::write(&balancer.config, config(listen, "", &next)).unwrap();
    balancer.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        assert!(ask(&session, listen, format!("more {i}").as_bytes()).is_some());
    }
    assert_eq!(kept.received.load(Ordering::Relaxed), kept_received + 5, "the session stayed on its backend");
    assert_eq!(kept.distinct_peer_ports(), kept_ports, "on the same flow");
    let before = b3.received.load(Ordering::Relaxed);
    for i in 0..6 {
        assert!(ask(&client(), listen, format!("new {i}").as_bytes()).is_some());
    }
    assert!(b3.received.load(Ordering::Relaxed) > before, "the added backend takes new flows");
    let removed_count = removed.received.load(Ordering::Relaxed);
    for i in 0..4 {
        assert!(ask(&client(), listen, format!("late {i}").as_bytes()).is_some());
    }
    assert_eq!(removed.received.load(Ordering::Relaxed), removed_count, "the removed backend gets nothing");
}

/// `upstream_mode = "per_flow"`: the same service over one connected socket per flow,
/// refusals included.
#[test]
fn per_flow_upstreams_forward_and_retry_refused_queries_too() {
    let live = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "responses = 1\nhealth = { mode = \"off\" }";
    let text = format!(
        "[process]\nupstream_mode = \"per_flow\"\n\n{}",
        config(listen, extra, &[live.address, closed_port()])
    );
    let _balancer = Balancer::start(&text, listen);
    for i in 0..40 {
        let socket = client();
        let payload = format!("query {i}");
        assert_eq!(
            ask(&socket, listen, payload.as_bytes()).as_deref(),
            Some(payload.as_bytes()),
            "query {i}"
        );
    }
}

/// The pool: 300 live flows over 3 backends need about 100 upstream sockets, not 300, and
/// every reply still reaches the client that asked.
#[test]
fn pooled_flows_to_different_backends_share_sockets_and_replies_reach_their_own_clients() {
    let backends = [Backend::echo(false), Backend::echo(false), Backend::echo(false)];
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let addresses: Vec<_> = backends.iter().map(|b| b.address).collect();
    let balancer = Balancer::start(&config(listen, "algorithm = \"round_robin\"", &addresses), listen);
    let clients: Vec<UdpSocket> = (0..300).map(|_| client()).collect();
    for (i, socket) in clients.iter().enumerate() {
        let payload = format!("client {i}");
        assert_eq!(
            ask(socket, listen, payload.as_bytes()).as_deref(),
            Some(payload.as_bytes()),
            "client {i}"
        );
    }
    // Every flow is still open (30 s idle timeout): count the balancer's sockets.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", balancer.child.id())).unwrap().count();
    assert!(fds < 100 + 40, "{fds} descriptors for 300 flows over 3 backends");
    // A second round on the same flows: each reply still comes back to its own client.
    for (i, socket) in clients.iter().enumerate() {
        let payload = format!("again {i}");
        assert_eq!(
            ask(socket, listen, payload.as_bytes()).as_deref(),
            Some(payload.as_bytes()),
            "client {i}"
        );
    }
}

/// `workers = 2`: clients are spread over two threads with their own sockets and flow tables;
/// every query is answered (a refused one retried elsewhere), and SIGTERM still drains both
/// and exits 0.
#[test]
fn two_workers_answer_every_client_and_stop_cleanly() {
    let backends = [Backend::echo(false), Backend::echo(false)];
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "responses = 1\nhealth = { mode = \"udp\", udp_payload = \"probe\", interval = \"200ms\", timeout = \"100ms\" }";
    let text = format!(
        "[process]\nworkers = 2\n\n{}",
        config(listen, extra, &[backends[0].address, backends[1].address, closed_port()])
    );
    let mut balancer = Balancer::start(&text, listen);
    let pid = balancer.child.id();
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(names.iter().any(|name| name == "udplb-worker-1"), "threads: {names:?}");
    for i in 0..200 {
        let socket = client();
        let payload = format!("query {i}");
        // Like a stub resolver, ask again after 200 ms of silence (a loaded CI machine can be
        // that slow); what matters is that every client gets its answer from either worker.
        let answer = (0..5).find_map(|_| ask(&socket, listen, payload.as_bytes()));
        assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "query {i}");
    }
    balancer.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = balancer.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "udplb did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// A one-way, one-datagram flow (`requests = 1`, `responses = 0`) is opened, used and closed in
/// one call: its datagram must still go out, in either upstream mode.
#[test]
fn a_flow_that_closes_on_its_only_datagram_still_sends_it() {
    for mode in ["pool", "per_flow"] {
        let backend = Backend::echo(false);
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = format!(
            "[process]\nupstream_mode = \"{mode}\"\n\n{}",
            config(listen, "requests = 1\nresponses = 0", &[backend.address])
        );
        let _balancer = Balancer::spawn(&text, listen);
        let socket = client();
        let deadline = Instant::now() + Duration::from_secs(5);
        while backend.received.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            socket.send_to(b"one way", listen).unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            backend.received.load(Ordering::Relaxed) >= 3,
            "{mode}: the datagrams never reached the backend"
        );
    }
}

/// `affinity = "client_address"` promises one flow, so one backend, per client host: every
/// socket of the host shares it. With several workers each worker has its own flow table, so
/// that holds only if every datagram of a host reaches the same worker — which the kernel's
/// own SO_REUSEPORT pick (a hash of the 4-tuple) does not do, and the steering program
/// attached to the listener's group does. Ten hosts (127.0.0.10-19), eight sockets each,
/// after an uneven warm-up from 127.0.0.1, round robin over three backends: each host's
/// datagrams all reach one backend, with 2 and with 4 workers. (Before the steering program,
/// with 2 workers, every host was split over two or three backends.)
#[test]
fn a_client_host_keeps_one_backend_whatever_the_number_of_workers() {
    for workers in [2, 4] {
        let backends = [Backend::echo(false), Backend::echo(false), Backend::echo(false)];
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
        let text = format!(
            "[process]\nworkers = {workers}\n\n{}",
            config(listen, "algorithm = \"round_robin\"", &addresses)
                .replace("cluster = \"pool\"\n", "cluster = \"pool\"\naffinity = \"client_address\"\n")
        );
        let balancer = Balancer::start(&text, listen);
        // Uneven warm-up: sockets of 127.0.0.1, spread over the workers, move their counters.
        for i in 0..7 {
            let socket = client();
            let _ = (0..5).find_map(|_| ask(&socket, listen, format!("warm {i}").as_bytes()));
        }
        for host in 10..20 {
            for socket_number in 0..8 {
                let socket = UdpSocket::bind(format!("127.0.0.{host}:0")).unwrap();
                socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                let payload = format!("host {host} socket {socket_number}");
                let answer = (0..5).find_map(|_| ask(&socket, listen, payload.as_bytes()));
                assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "{payload} with {workers} workers");
            }
        }
        drop(balancer);
        let mut split = Vec::new();
        for host in 10..20 {
            let prefix = format!("host {host} ");
            let reached: Vec<usize> = (0..backends.len())
                .filter(|b| {
                    backends[*b].payloads.lock().unwrap().iter().any(|p| p.starts_with(prefix.as_bytes()))
                })
                .collect();
            if reached.len() != 1 {
                split.push(format!("127.0.0.{host} on backends {reached:?}"));
            }
        }
        assert!(split.is_empty(), "with {workers} workers: {split:?}");
    }
}

/// A second `udplb run` on a listener address another process serves would join its
/// SO_REUSEPORT group and take part of the new clients (99 of 200 when tried by hand), maybe
/// with another configuration. It refuses to start instead, naming the address and the way to
/// share it on purpose; the first keeps serving. With `--share-listeners` it starts.
#[test]
fn a_second_instance_on_a_served_listener_refuses_to_start_unless_told_to_share() {
    let backend = Backend::echo(false);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = config(listen, "", &[backend.address]);
    let first = Balancer::start(&text, listen);
    let (status, stderr) = run_to_exit(&text, &[]);
    assert!(!status.success(), "the second instance ran: {stderr}");
    assert!(stderr.contains(&format!("cannot listen on {listen} (listener test)")), "{stderr}");
    assert!(
        stderr.contains("another process already serves") && stderr.contains("--share-listeners"),
        "{stderr}"
    );
    first.wait_until_answering();
    // Told to share, it starts and stays up (killed when dropped).
    let mut shared = Balancer::spawn_with(&text, listen, &["--share-listeners"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(shared.child.try_wait().unwrap().is_none(), "--share-listeners should start");
    drop(shared);
    drop(first);
    drop(backend);
}

/// A process whose control socket is in use by a running udplb refuses before it binds
/// anything: its own listener is never opened.
#[test]
fn a_busy_control_socket_is_refused_before_any_listener_is_bound() {
    let backend = Backend::echo(false);
    let socket =
        std::env::temp_dir().join(format!("udplb-test-ctl-{}-{}.sock", std::process::id(), free_port()));
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let process = format!("[process]\ncontrol_socket = \"{}\"\n\n", socket.display());
    let first = Balancer::start(&format!("{process}{}", config(listen, "", &[backend.address])), listen);
    let other: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (status, stderr) = run_to_exit(&format!("{process}{}", config(other, "", &[backend.address])), &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("is in use by a running process"), "{stderr}");
    assert!(!stderr.contains("listening"), "a listener was bound before the refusal: {stderr}");
    first.wait_until_answering();
    drop(first);
    let _ = std::fs::remove_file(&socket);
}

/// IPv6 end to end: a listener on [::1] in front of one IPv6 and one IPv4 backend, PROXY v2
/// on every datagram. Every client is answered by both kinds of backend; the IPv6 backend's
/// header names the IPv6 client, and so does the IPv4 backend's (a header for an IPv6 client
/// is an IPv6 header whatever the backend's family).
#[test]
fn an_ipv6_listener_serves_through_ipv6_and_ipv4_backends_with_proxy_v2_naming_the_client() {
    let (v6, v4) = (Backend::echo_v6(true), Backend::echo(true));
    let listen: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let extra =
        "algorithm = \"round_robin\"\nproxy_protocol = { mode = \"every\", crc32c = true, unique_id = true }";
    let _balancer = Balancer::start(&config(listen, extra, &[v6.address, v4.address]), listen);
    let mut clients = Vec::new();
    for i in 0..20 {
        let socket = client_v6();
        let payload = format!("v6 query {i}");
        let answer = (0..5).find_map(|_| ask(&socket, listen, payload.as_bytes()));
        assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "query {i}");
        clients.push(socket.local_addr().unwrap());
    }
    // Each header names an IPv6 client socket (the start-up check's among them); every test
    // client is named by one backend or the other.
    let mut named = Vec::new();
    for backend in [&v6, &v4] {
        let sources = backend.sources.lock().unwrap().clone();
        assert!(sources.len() >= 5, "round robin reaches {}: {sources:?}", backend.address);
        let loopback = std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        assert!(sources.iter().all(|s| s.ip() == loopback), "{}: {sources:?}", backend.address);
        named.extend(sources);
    }
    assert!(clients.iter().all(|c| named.contains(c)), "clients {clients:?}, named {named:?}");
}

/// A refusal in ICMPv6 (port unreachable from ::1) moves the query to another backend, as in
/// IPv4: none is lost.
#[test]
fn an_icmpv6_refusal_moves_the_query_to_another_backend() {
    let live = Backend::echo_v6(false);
    let dead = {
        let socket = UdpSocket::bind("[::1]:0").unwrap();
        socket.local_addr().unwrap()
    };
    let listen: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let extra = "responses = 1\nhealth = { mode = \"udp\", udp_payload = \"probe\", interval = \"200ms\", timeout = \"100ms\", rise = 2, fall = 2 }";
    let _balancer = Balancer::start(&config(listen, extra, &[live.address, dead]), listen);
    for i in 0..40 {
        let socket = client_v6();
        let payload = format!("query {i}");
        assert_eq!(
            ask(&socket, listen, payload.as_bytes()).as_deref(),
            Some(payload.as_bytes()),
            "query {i} lost"
        );
    }
}

/// The steering program's IPv6 path, in the kernel: with four workers and affinity by
/// address, every socket of ::1 stays on one backend (a program that misread the IPv6 header
/// would return an index past the last socket, and the kernel's own 4-tuple hash would split
/// them).
#[test]
fn ipv6_sockets_of_one_host_keep_one_backend_with_four_workers() {
    let backends = [Backend::echo_v6(false), Backend::echo_v6(false), Backend::echo_v6(false)];
    let listen: SocketAddr = format!("[::1]:{}", free_port()).parse().unwrap();
    let addresses: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    let text = format!(
        "[process]\nworkers = 4\n\n{}",
        config(listen, "algorithm = \"round_robin\"", &addresses)
            .replace("cluster = \"pool\"\n", "cluster = \"pool\"\naffinity = \"client_address\"\n")
    );
    let balancer = Balancer::start(&text, listen);
    for i in 0..16 {
        let socket = client_v6();
        let payload = format!("socket {i}");
        let answer = (0..5).find_map(|_| ask(&socket, listen, payload.as_bytes()));
        assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "{payload}");
    }
    drop(balancer);
    let reached: Vec<usize> = (0..backends.len())
        .filter(|b| backends[*b].payloads.lock().unwrap().iter().any(|p| p.starts_with(b"socket ")))
        .collect();
    assert_eq!(reached.len(), 1, "::1 on backends {reached:?}");
}

/// Trusted ingress: udplb behind another balancer that sends PROXY v2. A real sender on
/// 127.0.0.1 (trusted) puts a header naming the client in front of each datagram: the backend
/// sees that client in udplb's own header, and the answer comes back to the sender. The
/// same from 127.0.0.3, which the listener does not trust, is dropped and counted.
#[test]
fn a_trusted_upstream_names_the_client_and_an_untrusted_one_is_refused() {
    use udplb_core::proxy_v2::{TlvOptions, write_proxy_header};
    let backend = Backend::echo(true);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let extra = "proxy_protocol = { mode = \"every\" }";
    let text = config(listen, extra, &[backend.address]).replacen(
        "cluster = \"pool\"\n",
        "cluster = \"pool\"\naccept_proxy = { from = [\"127.0.0.1/32\", \"::1\"] }\n",
        1,
    );
    let _balancer = Balancer::start(&text, listen);
    let real_client: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let proxied = |payload: &[u8]| {
        let mut out = vec![0u8; 128];
        let len = write_proxy_header(&mut out, real_client, listen, TlvOptions::default()).unwrap();
        out.truncate(len);
        out.extend_from_slice(payload);
        out
    };
    let upstream = client();
    for i in 0..5 {
        let payload = format!("query {i}");
        let answer = ask(&upstream, listen, &proxied(payload.as_bytes()));
        assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "answered to the upstream, header stripped");
    }
    let sources = backend.sources.lock().unwrap().clone();
    assert_eq!(
        sources.iter().filter(|s| **s == real_client).count(),
        5,
        "the backend saw the real client: {sources:?}"
    );

    let untrusted = UdpSocket::bind("127.0.0.3:0").unwrap();
    untrusted.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert_eq!(
        ask(&untrusted, listen, &proxied(b"spoof")),
        None,
        "a header from an untrusted source is dropped"
    );
    assert!(!backend.payloads.lock().unwrap().iter().any(|p| p == b"spoof"));
    // Without a header, that host is an ordinary client (headers are not required here).
    assert_eq!(ask(&untrusted, listen, b"plain").as_deref(), Some(&b"plain"[..]));
}
