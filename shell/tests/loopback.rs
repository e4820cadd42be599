//! The `udplb` binary on loopback with real sockets: real backends, real clients, real ICMP.
//! Every wait is bounded; traffic goes to 127.0.0.1 only.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use udplb_core::proxy_v2::Header;

/// A UDP echo server on a free loopback port, counting what it receives.
struct Backend {
    address: SocketAddr,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The PROXY v2 source addresses it saw (when decoding).
    sources: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
}

impl Backend {
    fn echo(decode_proxy: bool) -> Backend {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sources = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (counter, flag, seen) = (received.clone(), stop.clone(), sources.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else { continue };
                counter.fetch_add(1, Ordering::Relaxed);
                let mut payload = &buffer[..length];
                if decode_proxy && let Ok((header, consumed)) = Header::parse(payload) {
                    if let Some((source, _)) = header.proxied_endpoints() {
                        seen.lock().unwrap().push(source);
                    }
                    payload = &payload[consumed..];
                }
                let _ = socket.send_to(payload, from);
            }
        });
        Backend { address, received, stop, thread: Some(thread), sources }
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
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let config = std::env::temp_dir().join(format!("udplb-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&config, config_text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_udplb"))
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start udplb");
        let balancer = Balancer { child, listen, config };
        balancer.wait_until_answering();
        balancer
    }

    fn wait_until_answering(&self) {
        let client = client();
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

#[test]
fn check_reports_each_error_with_file_line_column_and_field() {
    let path = std::env::temp_dir().join("udplb-check-bad.toml");
    std::fs::write(
        &path,
        "[listeners.dns]\naddress = \"127.0.0.1:53\"\ncluster = \"nope\"\n\n[clusters.pool]\nbackends = [{ id = \"a\", address = \"10.0.0.1:53\", wieght = 2 }]\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_udplb")).args(["check", "-c"]).arg(&path).output().unwrap();
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
    let output = Command::new(env!("CARGO_BIN_EXE_udplb")).args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}
