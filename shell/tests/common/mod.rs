//! Helpers for tests that run the `udplb` binary on loopback: the binary itself, echo
//! backends, clients, a balancer with a control socket (and optionally a metrics endpoint),
//! `udplb ctl`, scrapes. Every wait is bounded; traffic goes to 127.0.0.1 only.
#![allow(dead_code)] // Each test file uses its own subset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The `udplb` binary every test runs: one built without test-only features, as it ships.
///
/// Cargo builds each package once per invocation, with the union of the features anything in
/// that invocation asks for, dev-dependencies included. So under `cargo test --workspace` the
/// core inside `CARGO_BIN_EXE_udplb` has the simulator's `mutants` and its own `fuzzing`, and is
/// not the binary that ships. When that binary reports test-only features (`udplb
/// --version`), this builds the package again with a cargo of its own (`cargo build --locked
/// -p udplb --bin udplb`, same profile) into `<target dir>/shipped`, where the running
/// `cargo test` holds no lock, and returns that binary. Once per test process; cargo's own
/// lock on that directory serialises test processes that build at the same time, and a
/// second build finds nothing to do. Under `cargo test -p udplb` nothing adds features, and
/// `CARGO_BIN_EXE_udplb` is used as it is.
pub fn udplb() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let tested = PathBuf::from(env!("CARGO_BIN_EXE_udplb"));
        if version_of(&tested) == format!("udplb {}", env!("CARGO_PKG_VERSION")) {
            return tested;
        }
        build_shipped(&tested)
    })
}

/// What `BINARY --version` prints, without the line end.
pub fn version_of(binary: &Path) -> String {
    let output = Command::new(binary).arg("--version").output().expect("run udplb --version");
    assert!(output.status.success(), "{} --version failed", binary.display());
    String::from_utf8(output.stdout).expect("UTF-8").trim_end().to_owned()
}

/// Builds `udplb` without test-only features into `<target dir>/shipped` and returns it.
fn build_shipped(tested: &Path) -> PathBuf {
    // `tested` is <target dir>/<profile>/udplb.
    let target = tested.parent().and_then(Path::parent).expect("a binary under a target directory");
    let shipped = target.join("shipped");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let release = !cfg!(debug_assertions);
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(workspace)
        .args(["build", "--locked", "-p", "udplb", "--bin", "udplb", "--target-dir"])
        .arg(&shipped);
    if release {
        cargo.arg("--release");
    }
    let output = cargo.output().expect("run cargo build");
    assert!(
        output.status.success(),
        "building udplb without test-only features failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    shipped.join(if release { "release" } else { "debug" }).join("udplb")
}

/// A UDP echo server on a free loopback port, counting what it receives (probes included)
/// and which client sockets it has served (by the balancer's upstream port).
pub struct Backend {
    pub address: SocketAddr,
    pub received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn echo() -> Backend {
        Backend::echo_on(UdpSocket::bind("127.0.0.1:0").expect("bind backend"))
    }

    pub fn echo_on(socket: UdpSocket) -> Backend {
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, flag) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else { continue };
                counter.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&buffer[..length], from);
            }
        });
        Backend { address, received, stop, thread: Some(thread) }
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Backend {
    /// Stops the thread and closes the socket: the port then answers with ICMP unreachable.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A loopback UDP port with nothing listening on it.
pub fn closed_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub fn free_udp_address() -> SocketAddr {
    closed_port()
}

pub fn free_tcp_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A client socket. Replies on loopback take microseconds; the generous timeout only matters
/// on a machine loaded by other work, where a short one would fail tests for nothing.
pub fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    socket
}

/// Sends `payload` and waits (bounded) for the reply.
pub fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(payload, to).ok()?;
    let mut buffer = [0u8; 2048];
    let (length, _) = socket.recv_from(&mut buffer).ok()?;
    Some(buffer[..length].to_vec())
}

/// Polls `condition` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One listener `test` on `listen` routed to cluster `pool` with these backends (ids b0, b1…).
pub fn listener_and_pool(listen: SocketAddr, cluster_extra: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> =
        backends.iter().enumerate().map(|(i, a)| format!("{{ id = \"b{i}\", address = \"{a}\" }}")).collect();
    format!(
        "[listeners.test]\naddress = \"{listen}\"\ncluster = \"pool\"\n\n[clusters.pool]\n{cluster_extra}\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// UDP probes every 100 ms that pass on any reply (the echo backends reply); a closed port
/// fails them at once through ICMP, long before the timeout.
pub const UDP_HEALTH: &str = "health = { mode = \"udp\", udp_payload = \"probe\", interval = \"100ms\", down_interval = \"200ms\", timeout = \"300ms\", rise = 2, fall = 2, model = \"haproxy\", jitter = 0 }";

fn write_config_file(
    config: &std::path::Path,
    socket: &std::path::Path,
    metrics: Option<SocketAddr>,
    body: &str,
) {
    let mut process = format!("[process]\ncontrol_socket = \"{}\"\n", socket.display());
    if let Some(metrics) = metrics {
        process.push_str(&format!("metrics_addr = \"{metrics}\"\n"));
    }
    // A body that opens with its own `[process]` lines (up to a blank line) adds them here.
    let body = match body.strip_prefix("[process]\n") {
        Some(rest) => {
            let (extra, rest) = rest.split_once("\n\n").unwrap_or((rest, ""));
            process.push_str(extra);
            process.push('\n');
            rest
        }
        None => body,
    };
    std::fs::write(config, format!("{process}\n{body}")).unwrap();
}

/// A configuration file and a control socket path no other test uses.
fn fresh_paths() -> (PathBuf, PathBuf) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("udplb-ctl-test-{}-{n}", std::process::id()));
    (base.with_extension("toml"), base.with_extension("sock"))
}

/// Runs `udplb run -c CONFIG ARGS` to its exit (bounded: killed after 10 s); its status and
/// stderr.
pub fn run_to_exit(config_text: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let config = std::env::temp_dir().join(format!(
        "udplb-test-exit-{}-{}.toml",
        std::process::id(),
        closed_port().port()
    ));
    std::fs::write(&config, config_text).unwrap();
    let mut child = Command::new(udplb())
        .args(["run", "-c"])
        .arg(&config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start udplb");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let _ = std::fs::remove_file(&config);
    (status, stderr)
}

/// What `udplb ctl` printed.
pub struct CtlOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A running `udplb run` with a control socket, killed when dropped.
pub struct Balancer {
    pub child: Child,
    pub listen: SocketAddr,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
}

impl Balancer {
    /// Starts udplb with `body` (listeners and clusters) under a `[process]` table naming a
    /// fresh control socket and, when `metrics`, a metrics address; waits until `listen`
    /// answers through it.
    pub fn start(body: &str, listen: SocketAddr, metrics: bool) -> Balancer {
        let (config, socket) = fresh_paths();
        let metrics = metrics.then(free_tcp_address);
        let balancer = Balancer::spawn(config, socket, metrics, listen, body);
        balancer.wait_until_answering();
        balancer
    }

    /// Starts udplb with `body` and a fresh control socket, without waiting for traffic.
    pub fn launch(body: &str, listen: SocketAddr) -> Balancer {
        let (config, socket) = fresh_paths();
        Balancer::spawn(config, socket, None, listen, body)
    }

    /// Starts udplb without waiting for traffic to pass (for configurations that drop it).
    pub fn spawn(
        config: PathBuf,
        socket: PathBuf,
        metrics: Option<SocketAddr>,
        listen: SocketAddr,
        body: &str,
    ) -> Balancer {
        write_config_file(&config, &socket, metrics, body);
        let child = Command::new(udplb())
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start udplb");
        let balancer = Balancer { child, listen, config, socket, metrics };
        let socket = balancer.socket.clone();
        assert!(wait_for(Duration::from_secs(10), || socket.exists()), "no control socket within 10s");
        balancer
    }

    /// Rewrites the configuration file (the same `[process]` table, a new `body`).
    pub fn write_config(&self, body: &str) {
        write_config_file(&self.config, &self.socket, self.metrics, body);
    }

    fn wait_until_answering(&self) {
        let client = client();
        let answered = wait_for(Duration::from_secs(10), || ask(&client, self.listen, b"ping").is_some());
        assert!(answered, "udplb did not answer on {} within 10s", self.listen);
    }

    /// Runs `udplb ctl --socket … ARGS` and waits for it (bounded by ctl's own timeout).
    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        let output = Command::new(udplb())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run udplb ctl");
        CtlOutput {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `udplb ctl --json ARGS`, parsed; panics unless it succeeded.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.ctl(&all);
        assert!(output.success, "ctl {args:?} failed: {}{}", output.stdout, output.stderr);
        serde_json::from_str(output.stdout.trim()).expect("ctl --json prints one JSON line")
    }

    /// The backends as `show backends` lists them, by id: (health, admin).
    pub fn backend_states(&self) -> Vec<(String, String, String)> {
        let answer = self.ctl_json(&["show", "backends"]);
        answer["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let text = |key: &str| b[key].as_str().unwrap().to_owned();
                (text("id"), text("health"), text("admin"))
            })
            .collect()
    }

    /// Waits until backend `id` has health `health`.
    pub fn wait_for_health(&self, id: &str, health: &str) -> bool {
        wait_for(Duration::from_secs(10), || {
            self.backend_states().iter().any(|(b, h, _)| b == id && h == health)
        })
    }

    /// `GET path` on the metrics endpoint: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        let address = self.metrics.expect("started with metrics");
        let mut stream =
            TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect to metrics");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.socket);
    }
}
