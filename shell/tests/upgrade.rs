//! Hitless upgrades on loopback: the `udplb` binary hands its sockets and flows to a new
//! process while clients keep sending, and no client notices. Real sockets on 127.0.0.1 only.
//!
//! One harness ([`upgrade_under_load`]) serves every test: three echo backends that answer
//! with their own name, udplb in front of them (`algorithm = "round_robin"`, so that a fresh
//! process would place clients anew), 64 client sockets each keeping datagrams in flight for
//! a while before and after the upgrade, then a grace to collect late replies. It counts what
//! was sent, answered, lost, misdelivered (a reply this client never asked for) and moved (a
//! client whose replies came from more than one backend), and the longest gap in service (on
//! one flow, and over all flows). The upgrade itself is a closure: `udplb run --takeover`
//! (accepted; refused for another worker count, the old process serving on; `--fresh`, the old
//! flows relayed to the old process), a stop and start through a fake systemd's descriptor
//! store (also with the control socket's file removed in between, and with a store too small
//! for every descriptor), or a plain stop and start, which shows that the harness sees the
//! damage a restart without a handover does.
//!
//! Every wait is bounded in count and time; every process started is killed by its guard,
//! also when a test panics; every file lives in a directory of its own, removed at the end.
//! The runs of this file take a lock, so that one load at a time competes for the CPU.
//!
//! `upgrade_gap_figures` (ignored) repeats the upgrades `UPGRADE_RUNS` times (default 5) and
//! prints the gaps as table rows for `BENCHMARKS.md`: `bench/upgrade` runs it on the release
//! binary.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{ask, free_udp_address, udplb, wait_for};

/// Backends behind the balancer, named `b0`, `b1`, `b2` (their ids in the configuration too).
const BACKENDS: usize = 3;
/// Client sockets, one flow each.
const FLOWS: usize = 64;
/// Datagrams each long-lived flow keeps in flight.
const WINDOW: usize = 8;
/// Threads the clients are spread over.
const LOAD_THREADS: usize = 2;
/// How long the load runs before the upgrade starts.
const BEFORE: Duration = Duration::from_millis(1500);
/// How long it runs after the upgrade starts (and at least [`AFTER_DONE`] after it is done).
const AFTER: Duration = Duration::from_millis(1500);
/// The least time the load runs once the old process is gone.
const AFTER_DONE: Duration = Duration::from_millis(1000);
/// A datagram unanswered this long no longer holds its place in the window (the client sends
/// another); its reply still counts if it comes.
const LOSS_TIMEOUT: Duration = Duration::from_secs(1);
/// After the clients stop sending, how long they wait for the replies still owed.
const GRACE: Duration = Duration::from_secs(3);
/// How long a process may take to exit when it should, or to start answering.
const PROCESS_LIMIT: Duration = Duration::from_secs(20);
/// No load thread runs longer than this, whatever happens to the test that started it.
const LOAD_LIMIT: Duration = Duration::from_secs(60);
/// `FDSTORE` (systemd's `FileDescriptorStoreMax=`) given to udplb under the fake systemd, and
/// the most descriptors its store keeps.
const FD_STORE_MAX: usize = 64;

/// One upgrade run at a time in this process: each is a load that wants the CPU, and the gaps
/// measured would mostly measure the other runs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------------------------
// Backends

/// A UDP echo server that answers `<name> <payload>`.
struct NamedEcho {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NamedEcho {
    fn start(name: String) -> NamedEcho {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a backend");
        set_receive_buffer(&socket, 4 << 20);
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            let mut reply = Vec::with_capacity(2100);
            while !flag.load(Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else { continue };
                reply.clear();
                reply.extend_from_slice(name.as_bytes());
                reply.push(b' ');
                reply.extend_from_slice(&buffer[..length]);
                let _ = socket.send_to(&reply, from);
            }
        });
        NamedEcho { address, stop, thread: Some(thread) }
    }
}

impl Drop for NamedEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Asks for a larger receive buffer (the kernel caps it at `net.core.rmem_max`).
fn set_receive_buffer(socket: &UdpSocket, bytes: usize) {
    let value = bytes as libc::c_int;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`, which lives across the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A `udplb` process this test started, killed (SIGKILL) and reaped when dropped, unless it
/// has exited already. Its standard error goes to a file, shown when something fails.
struct Udplb {
    child: Child,
    label: String,
    log: PathBuf,
    status: Option<ExitStatus>,
    /// When this test saw it exit.
    exited_at: Option<Instant>,
}

impl Udplb {
    /// Starts `command` (stdout discarded, stderr to `log`).
    fn spawn(mut command: Command, label: &str, log: PathBuf) -> Udplb {
        let stderr = std::fs::File::create(&log).expect("create a log file");
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr).env("NO_COLOR", "1");
        let child = command.spawn().unwrap_or_else(|error| panic!("start {label}: {error}"));
        Udplb { child, label: label.to_owned(), log, status: None, exited_at: None }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its exit status, if it has exited (reaped once).
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
            self.exited_at = Some(Instant::now());
        }
        self.status
    }

    /// Waits (bounded) for it to exit, looking every millisecond (as systemd, which learns it
    /// at once): the time a restart takes is udplb's, not this loop's.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.poll().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.poll()
    }

    fn signal(&mut self, signal: i32) {
        if self.poll().is_none() {
            // SAFETY: a signal to our own child, which has not been reaped (its pid is still ours).
            unsafe { libc::kill(self.pid(), signal) };
        }
    }

    /// The last lines of what it wrote on standard error.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- {} (pid {}) stderr, last lines ---\n{}",
            self.label,
            self.pid(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Udplb {
    fn drop(&mut self) {
        if self.poll().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A status as the report prints it.
fn describe(status: Option<ExitStatus>) -> String {
    match status {
        None => "still running".to_owned(),
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            _ => format!("{status}"),
        },
    }
}

/// A directory of its own for one run's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("udplb-upgrade-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// A fake systemd: the notification socket and the descriptor store

/// What the fake systemd was told.
#[derive(Default)]
struct Store {
    /// Stored descriptors by name, in the order they came (systemd's order for `LISTEN_FDS`).
    fds: Vec<(String, OwnedFd)>,
    /// Every notification's text, in order.
    messages: Vec<String>,
    /// Descriptors refused because the store was full (systemd closes them and logs).
    refused: Vec<String>,
    /// `FileDescriptorStoreMax=`.
    max: usize,
}

/// The test as systemd: a UNIX datagram socket at `NOTIFY_SOCKET`, read by a thread that keeps
/// the descriptors pushed with `FDSTORE=1` (at most `max`, refusing the others as systemd does)
/// and drops them on `FDSTOREREMOVE=1`.
struct FakeSystemd {
    path: PathBuf,
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSystemd {
    fn start(path: PathBuf, max: usize) -> FakeSystemd {
        let socket = UnixDatagram::bind(&path).expect("bind the notification socket");
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let store = Arc::new(Mutex::new(Store { max, ..Store::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (kept, flag) = (store.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Some((text, fds)) = receive_notification(&socket) else { continue };
                let mut store = kept.lock().unwrap_or_else(|e| e.into_inner());
                apply_notification(&mut store, &text, fds);
            }
        });
        FakeSystemd { path, store, stop, thread: Some(thread) }
    }

    fn env(&self) -> Vec<(String, OsString)> {
        vec![
            ("NOTIFY_SOCKET".to_owned(), self.path.clone().into_os_string()),
            ("FDSTORE".to_owned(), OsString::from(self.with_store(|store| store.max).to_string())),
        ]
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Copies of the stored descriptors, with their names, in store order.
    fn stored(&self) -> Vec<(String, OwnedFd)> {
        self.with_store(|store| {
            store
                .fds
                .iter()
                .map(|(name, fd)| (name.clone(), fd.try_clone().expect("dup a stored fd")))
                .collect()
        })
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What systemd does with one notification.
fn apply_notification(store: &mut Store, text: &str, fds: Vec<OwnedFd>) {
    let field = |key: &str| text.lines().find_map(|line| line.strip_prefix(key).map(str::to_owned));
    let name = field("FDNAME=").unwrap_or_else(|| "stored".to_owned());
    if field("FDSTORE=").as_deref() == Some("1") {
        for fd in fds {
            if store.fds.len() < store.max {
                store.fds.push((name.clone(), fd));
            } else {
                store.refused.push(name.clone());
            }
        }
    } else if field("FDSTOREREMOVE=").as_deref() == Some("1") {
        store.fds.retain(|(stored, _)| *stored != name);
    }
    // Descriptors sent with anything else are closed, as systemd does.
    store.messages.push(text.to_owned());
}

/// One notification: its text and the descriptors that came with it (closed on exec). None on
/// a timeout or an error.
fn receive_notification(socket: &UnixDatagram) -> Option<(String, Vec<OwnedFd>)> {
    const MAX_FDS: usize = 16;
    let mut text = [0u8; 4096];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: text.as_mut_ptr().cast(), iov_len: text.len() };
    // SAFETY: an all-zero msghdr is valid; the buffers set below outlive the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    // SAFETY: `header` describes valid buffers; the socket is ours.
    let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        return None;
    }
    let mut fds = Vec::new();
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen; each
    // SCM_RIGHTS entry holds descriptors that are now this process's, taken once each.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    let fd: RawFd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    assert!(header.msg_flags & libc::MSG_CTRUNC == 0, "a notification carried more than {MAX_FDS} fds");
    Some((String::from_utf8_lossy(&text[..received as usize]).into_owned(), fds))
}

/// `udplb run -c CONFIG` as systemd starts it after a stop that filled the store: `fds` at 3,
/// 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (set to its own pid by a shell
/// that then execs udplb, keeping the pid).
fn command_with_listen_fds(config: &Path, fds: Vec<(String, OwnedFd)>) -> Command {
    let names: Vec<&str> = fds.iter().map(|(name, _)| name.as_str()).collect();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(udplb())
        .args(["run", "-c"])
        .arg(config)
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    let sources: Vec<RawFd> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let first_free = 3 + sources.len() as RawFd;
    let mut moved: Vec<RawFd> = vec![-1; sources.len()];
    // The closure owns the descriptors, so they stay open until the command is dropped.
    let owned: Vec<OwnedFd> = fds.into_iter().map(|(_, fd)| fd).collect();
    // SAFETY: between fork and exec the closure only calls fcntl and dup2 (async-signal-safe)
    // and writes into a vector allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let _ = &owned;
            // First every source above the targets (a source may sit on a target), closed on
            // exec; then each onto its target, where dup2 leaves FD_CLOEXEC clear.
            for (i, fd) in sources.iter().enumerate() {
                let high = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first_free);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = high;
            }
            for (i, high) in moved.iter().enumerate() {
                if libc::dup2(*high, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
}

// ---------------------------------------------------------------------------------------------
// The load

/// What the clients do.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// 64 long-lived flows, [`WINDOW`] datagrams in flight on each.
    LongLived,
    /// DNS-like: 64 sockets, one query in flight on each; with `responses = 1` each query is
    /// a flow of its own.
    Queries,
}

impl Load {
    fn window(self) -> usize {
        match self {
            Load::LongLived => WINDOW,
            Load::Queries => 1,
        }
    }
}

/// Shared by the harness and the load threads: microseconds since `origin`, 0 until set.
struct Clock {
    origin: Instant,
    stop_sending: AtomicBool,
    /// When the upgrade started and when the old process was seen gone (µs since origin + 1).
    upgrade_started: AtomicU64,
    old_gone: AtomicU64,
}

impl Clock {
    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_micros() as u64 + 1
    }

    fn mark(&self, field: &AtomicU64) {
        field.store(self.micros(Instant::now()), Ordering::Relaxed);
    }
}

/// One client socket and what it saw.
struct Flow {
    index: usize,
    socket: UdpSocket,
    next_sequence: u64,
    /// Sent and not answered yet: sequence → when sent.
    outstanding: BTreeMap<u64, Instant>,
    answered: u64,
    duplicates: u64,
    misdelivered: u64,
    /// The backends that answered, each with its count, in the order first seen.
    backends: Vec<(String, u64)>,
    /// Replies that arrived after the old process was gone (the new one served them).
    answered_after_old: u64,
    last_reply: Option<Instant>,
    /// The longest time between two replies, the second before the upgrade started (the
    /// baseline) and from then on.
    longest_gap_before: Duration,
    longest_gap: Duration,
    /// When the longest gap ended (µs since origin).
    longest_gap_end: u64,
}

/// What one load thread hands back.
#[derive(Default)]
struct ThreadResult {
    flows: Vec<Flow>,
    /// Every reply's arrival (µs since origin).
    replies: Vec<u64>,
}

fn run_load(flows: Vec<Flow>, target: SocketAddr, window: usize, clock: Arc<Clock>) -> ThreadResult {
    let mut result = ThreadResult { flows, replies: Vec::with_capacity(1 << 16) };
    let mut polls: Vec<libc::pollfd> = result
        .flows
        .iter()
        .map(|flow| libc::pollfd { fd: flow.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let hard_deadline = Instant::now() + LOAD_LIMIT;
    let mut grace_deadline: Option<Instant> = None;
    let mut buffer = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= hard_deadline {
            break;
        }
        let sending = !clock.stop_sending.load(Ordering::Relaxed);
        if sending {
            for flow in &mut result.flows {
                let holding =
                    flow.outstanding.values().filter(|sent| now.duration_since(**sent) < LOSS_TIMEOUT);
                let mut in_flight = holding.count();
                while in_flight < window {
                    let payload = format!("c{} s{}", flow.index, flow.next_sequence);
                    match flow.socket.send_to(payload.as_bytes(), target) {
                        Ok(_) => {
                            flow.outstanding.insert(flow.next_sequence, Instant::now());
                            flow.next_sequence += 1;
                            in_flight += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
        } else {
            let deadline = *grace_deadline.get_or_insert(now + GRACE);
            if now >= deadline || result.flows.iter().all(|flow| flow.outstanding.is_empty()) {
                break;
            }
        }
        // SAFETY: `polls` is a valid array of `polls.len()` pollfd structures.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 5) };
        if ready <= 0 {
            continue;
        }
        for (flow, poll) in result.flows.iter_mut().zip(&mut polls) {
            if poll.revents == 0 {
                continue;
            }
            poll.revents = 0;
            // Bounded: a socket's queue holds at most what its flow has in flight, plus strays.
            for _ in 0..256 {
                let Ok((length, from)) = flow.socket.recv_from(&mut buffer) else { break };
                let at = Instant::now();
                let micros = clock.micros(at);
                result.replies.push(micros);
                take_reply(flow, &buffer[..length], from == target, at, micros, &clock);
            }
        }
    }
    result
}

/// Checks one reply (`<backend> c<flow> s<sequence>`) against what `flow` sent.
fn take_reply(flow: &mut Flow, reply: &[u8], from_target: bool, at: Instant, micros: u64, clock: &Clock) {
    let text = String::from_utf8_lossy(reply);
    let mut words = text.split(' ');
    let (Some(backend), Some(client), Some(sequence), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        flow.misdelivered += 1;
        return;
    };
    let ours = client.strip_prefix('c').and_then(|c| c.parse::<usize>().ok()) == Some(flow.index);
    let sequence = sequence.strip_prefix('s').and_then(|s| s.parse::<u64>().ok());
    let (true, true, Some(sequence)) = (from_target, ours, sequence) else {
        flow.misdelivered += 1;
        return;
    };
    if sequence >= flow.next_sequence {
        flow.misdelivered += 1;
        return;
    }
    if flow.outstanding.remove(&sequence).is_none() {
        flow.duplicates += 1;
        return;
    }
    flow.answered += 1;
    match flow.backends.iter_mut().find(|(name, _)| name == backend) {
        Some((_, count)) => *count += 1,
        None => flow.backends.push((backend.to_owned(), 1)),
    }
    let old_gone = clock.old_gone.load(Ordering::Relaxed);
    if old_gone != 0 && micros > old_gone {
        flow.answered_after_old += 1;
    }
    let started = clock.upgrade_started.load(Ordering::Relaxed);
    if let Some(last) = flow.last_reply {
        let gap = at.duration_since(last);
        if started == 0 || micros <= started {
            flow.longest_gap_before = flow.longest_gap_before.max(gap);
        } else if gap > flow.longest_gap {
            flow.longest_gap = gap;
            flow.longest_gap_end = micros;
        }
    }
    flow.last_reply = Some(at);
}

// ---------------------------------------------------------------------------------------------
// The harness

/// One run: the configuration and the load.
#[derive(Clone, Debug)]
struct Plan {
    label: String,
    /// `[process]` lines besides `control_socket`, e.g. `workers = 2`.
    process: String,
    /// Cluster lines besides `algorithm` and `backends`.
    cluster: String,
    load: Load,
    /// Start the old process under the fake systemd (`NOTIFY_SOCKET`, `FDSTORE`), with a store
    /// of this many descriptors.
    fake_systemd: Option<usize>,
}

impl Plan {
    fn long_lived(label: &str, process: &str) -> Plan {
        Plan {
            label: label.to_owned(),
            process: process.to_owned(),
            cluster: "idle_timeout = { front = \"60s\", back = \"60s\" }".to_owned(),
            load: Load::LongLived,
            fake_systemd: None,
        }
    }

    fn queries(label: &str, process: &str) -> Plan {
        Plan {
            label: label.to_owned(),
            process: process.to_owned(),
            cluster: "responses = 1".to_owned(),
            load: Load::Queries,
            fake_systemd: None,
        }
    }

    fn under_systemd(self) -> Plan {
        self.under_systemd_with_store(FD_STORE_MAX)
    }

    fn under_systemd_with_store(mut self, max: usize) -> Plan {
        self.fake_systemd = Some(max);
        self
    }
}

/// UDP probes that any reply passes (the backends answer `b0 probe`), so that probe sockets
/// are in flight when the process changes hands.
const HEALTH: &str = "health = { mode = \"udp\", udp_payload = \"probe\", interval = \"200ms\", timeout = \"500ms\", rise = 1, fall = 3, jitter = 0 }";

/// What an upgrade left serving.
enum After {
    /// A new process, which took over (the old one has exited).
    New(Udplb),
    /// The old process, which serves on: the takeover was refused, as expected.
    OldServesOn,
    /// A new process, which took the listeners and new clients, and relays the old flows to the
    /// old process, which still serves them (`--takeover --fresh`).
    Relaying(Udplb),
}

/// What the upgrade closure works with: the old process, the files, the fake systemd.
struct Stage {
    /// The process serving before the upgrade (exited once the closure returns, for every
    /// upgrade in this file).
    old: Udplb,
    config: PathBuf,
    /// The configuration the old process runs.
    config_text: String,
    systemd: Option<FakeSystemd>,
    /// Set by an upgrade through the store: whether `udplb-state` was in it.
    state_stored: Option<bool>,
    dir: PathBuf,
    clock: Arc<Clock>,
}

impl Stage {
    /// `udplb run -c CONFIG ARGS` with `env`, stderr to a file named after `label`.
    fn start(&self, label: &str, args: &[&str], env: &[(String, OsString)]) -> Udplb {
        let mut command = Command::new(udplb());
        command.args(["run", "-c"]).arg(&self.config).args(args);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        Udplb::spawn(command, label, self.dir.join(format!("{label}.log")))
    }

    fn systemd_env(&self) -> Vec<(String, OsString)> {
        self.systemd.as_ref().map(FakeSystemd::env).unwrap_or_default()
    }

    /// Marks the old process gone for the load's counts once it has exited.
    fn old_gone(&self) {
        self.clock.mark(&self.clock.old_gone);
    }
}

/// What a run measured.
#[derive(Debug, Default)]
struct Report {
    label: String,
    flows: usize,
    sent: u64,
    answered: u64,
    lost: u64,
    misdelivered: u64,
    duplicates: u64,
    /// Flows whose replies came from more than one backend.
    moved: usize,
    /// Flows the new process answered (after the old one was gone).
    answered_by_new: usize,
    /// The longest time without a reply from the upgrade's start on: on one flow, and over all
    /// flows (no flow got a reply).
    longest_gap_flow: Duration,
    longest_gap_all: Duration,
    /// When that longest gap over all flows ended, after the upgrade started.
    gap_end_after_start_ms: f64,
    /// The same in the load before the upgrade: the baseline.
    longest_gap_flow_before: Duration,
    longest_gap_all_before: Duration,
    /// From the upgrade's start until the old process was seen gone.
    upgrade_took: Duration,
    old_status: Option<ExitStatus>,
    /// The takeover was refused and the old process was to serve on.
    kept_old: bool,
    /// The new process relays the old flows to the old process, which serves them on.
    relaying: bool,
    /// A fresh client got an answer from the process that should serve now: the new one, or the
    /// old one when the takeover was refused.
    serves_after: bool,
    new_status: Option<ExitStatus>,
    /// Logs of both processes, for failure messages.
    logs: String,
    /// Descriptors the fake systemd refused (store full).
    fd_store_refused: usize,
    /// Under the fake systemd: whether the old process's stop left `udplb-state` in the store.
    state_stored: Option<bool>,
    notes: Vec<String>,
}

impl Report {
    fn summary(&self) -> String {
        format!(
            "upgrade [{}]: flows {}, sent {}, answered {}, lost {}, misdelivered {}, duplicates {}, moved {}, \
             answered by the new process {}, longest gap from the upgrade on {:.1} ms on a flow, {:.1} ms \
             over all flows (ended {:.0} ms after the upgrade started), before it {:.1} ms and {:.1} ms; \
             upgrade took {:.0} ms, old process {}, new {}",
            self.label,
            self.flows,
            self.sent,
            self.answered,
            self.lost,
            self.misdelivered,
            self.duplicates,
            self.moved,
            self.answered_by_new,
            ms(self.longest_gap_flow),
            ms(self.longest_gap_all),
            self.gap_end_after_start_ms,
            ms(self.longest_gap_flow_before),
            ms(self.longest_gap_all_before),
            ms(self.upgrade_took),
            describe(self.old_status),
            match (self.kept_old, self.serves_after) {
                (false, true) if self.relaying => "serves, relaying the old flows",
                (false, true) => "serves",
                (false, false) => "does NOT serve",
                (true, true) => "refused, the old one serves on",
                (true, false) => "refused, and the old one does NOT serve on",
            },
        )
    }

    /// Everything a failed assertion should show.
    fn details(&self) -> String {
        let mut text = self.summary();
        for note in &self.notes {
            let _ = write!(text, "\n  {note}");
        }
        let _ = write!(text, "\n{}", self.logs);
        text
    }

    /// The checks of a hitless upgrade; the failures, empty when it was one.
    fn hitless_failures(&self, sticky: bool) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                failures.push(what);
            }
        };
        check(self.sent > 0 && self.answered > 0, "no traffic went through".to_owned());
        check(self.lost == 0, format!("{} replies lost", self.lost));
        check(self.misdelivered == 0, format!("{} replies misdelivered", self.misdelivered));
        check(self.duplicates == 0, format!("{} replies duplicated", self.duplicates));
        if sticky {
            check(self.moved == 0, format!("{} flows moved to another backend", self.moved));
        }
        if sticky && !self.kept_old && !self.relaying {
            check(
                self.answered_by_new == self.flows,
                format!("the new process answered {} of {} flows", self.answered_by_new, self.flows),
            );
        }
        if self.relaying {
            check(
                self.old_status.is_none_or(|s| s.success()),
                format!("the old process: {} (expected to serve its flows on)", describe(self.old_status)),
            );
        } else if self.kept_old {
            check(
                self.old_status.is_none(),
                format!("the old process: {} (expected to serve on)", describe(self.old_status)),
            );
        } else {
            check(
                self.old_status.is_some_and(|s| s.success()),
                format!("the old process: {} (expected exit 0)", describe(self.old_status)),
            );
        }
        check(self.serves_after, "no process answers a fresh client".to_owned());
        check(self.fd_store_refused == 0, format!("{} fds refused by a full store", self.fd_store_refused));
        check(self.state_stored != Some(false), "the stop stored no udplb-state".to_owned());
        failures
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Sets `stop_sending` when dropped, so that a panicking harness stops its load threads.
struct StopOnDrop(Arc<Clock>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop_sending.store(true, Ordering::Relaxed);
    }
}

/// Runs `plan`'s load across `upgrade`, which returns the new process (or why it could not
/// start one), and measures what the clients saw.
fn upgrade_under_load(plan: &Plan, upgrade: impl FnOnce(&mut Stage) -> Result<After, String>) -> Report {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new();
    let backends: Vec<NamedEcho> = (0..BACKENDS).map(|i| NamedEcho::start(format!("b{i}"))).collect();
    let listen = free_udp_address();
    let config = dir.0.join("udplb.toml");
    let control = dir.0.join("control.sock");
    let list: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{{ id = \"b{i}\", address = \"{}\" }}", b.address))
        .collect();
    let text = format!(
        "[process]\ncontrol_socket = \"{}\"\n{}\n\n[listeners.test]\naddress = \"{listen}\"\ncluster = \"echo\"\n\n\
         [clusters.echo]\nalgorithm = \"round_robin\"\n{}\n{HEALTH}\nbackends = [{}]\n",
        control.display(),
        plan.process,
        plan.cluster,
        list.join(", ")
    );
    std::fs::write(&config, &text).unwrap();

    let clock = Arc::new(Clock {
        origin: Instant::now(),
        stop_sending: AtomicBool::new(false),
        upgrade_started: AtomicU64::new(0),
        old_gone: AtomicU64::new(0),
    });
    let _stop_load = StopOnDrop(clock.clone());
    let systemd = plan.fake_systemd.map(|max| FakeSystemd::start(dir.0.join("notify.sock"), max));
    let env = systemd.as_ref().map(FakeSystemd::env).unwrap_or_default();
    let mut command = Command::new(udplb());
    command.args(["run", "-c"]).arg(&config).envs(env.iter().map(|(k, v)| (k, v)));
    let old = Udplb::spawn(command, "old", dir.0.join("old.log"));
    let mut stage = Stage {
        old,
        config,
        config_text: text.clone(),
        systemd,
        state_stored: None,
        dir: dir.0.clone(),
        clock: clock.clone(),
    };

    let probe = common::client();
    let answering = wait_for(PROCESS_LIMIT, || {
        stage.old.poll().is_none() && ask(&probe, listen, b"hello").is_some_and(|r| r.ends_with(b" hello"))
    });
    assert!(answering, "udplb did not answer on {listen}\n{}\nconfiguration:\n{text}", stage.old.log_tail());

    // The clients, spread over the load threads.
    let window = plan.load.window();
    let mut groups: Vec<Vec<Flow>> = (0..LOAD_THREADS).map(|_| Vec::new()).collect();
    for index in 0..FLOWS {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a client");
        socket.set_nonblocking(true).unwrap();
        set_receive_buffer(&socket, 1 << 20);
        groups[index % LOAD_THREADS].push(Flow {
            index,
            socket,
            next_sequence: 0,
            outstanding: BTreeMap::new(),
            answered: 0,
            duplicates: 0,
            misdelivered: 0,
            backends: Vec::new(),
            answered_after_old: 0,
            last_reply: None,
            longest_gap_before: Duration::ZERO,
            longest_gap: Duration::ZERO,
            longest_gap_end: 0,
        });
    }
    let threads: Vec<JoinHandle<ThreadResult>> = groups
        .into_iter()
        .map(|flows| {
            let clock = clock.clone();
            std::thread::spawn(move || run_load(flows, listen, window, clock))
        })
        .collect();

    std::thread::sleep(BEFORE);
    let started = Instant::now();
    clock.mark(&clock.upgrade_started);
    let upgraded = upgrade(&mut stage);
    // Whatever the closure did, the old process is gone or is going: note when it went.
    if stage.old.poll().is_some() && clock.old_gone.load(Ordering::Relaxed) == 0 {
        stage.old_gone();
    }
    let upgrade_took =
        stage.old.exited_at.map(|at| at.duration_since(started)).unwrap_or_else(|| started.elapsed());
    let after_done = Instant::now() + AFTER_DONE;
    let stop_at = (started + AFTER).max(after_done);
    std::thread::sleep(stop_at.saturating_duration_since(Instant::now()));
    clock.stop_sending.store(true, Ordering::Relaxed);
    let results: Vec<ThreadResult> =
        threads.into_iter().map(|thread| thread.join().expect("a load thread panicked")).collect();

    let mut report = Report { label: plan.label.clone(), flows: FLOWS, upgrade_took, ..Report::default() };
    let mut new = match upgraded {
        Ok(After::New(new)) => Some(new),
        Ok(After::OldServesOn) => {
            report.kept_old = true;
            None
        }
        Ok(After::Relaying(new)) => {
            report.relaying = true;
            Some(new)
        }
        Err(why) => {
            report.notes.push(format!("the upgrade failed: {why}"));
            None
        }
    };
    report.old_status = stage.old.poll();
    report.state_stored = stage.state_stored;
    let stop_micros = clock.micros(stop_at);
    let mut replies: Vec<u64> = Vec::new();
    for result in &results {
        replies.extend(result.replies.iter().copied().filter(|at| *at <= stop_micros));
        for flow in &result.flows {
            report.sent += flow.next_sequence;
            report.answered += flow.answered;
            report.misdelivered += flow.misdelivered;
            report.duplicates += flow.duplicates;
            if flow.backends.len() > 1 {
                report.moved += 1;
                if matches!(plan.load, Load::LongLived) && report.notes.len() < 8 {
                    report.notes.push(format!("flow {} answered by {:?}", flow.index, flow.backends));
                }
            }
            if flow.answered_after_old > 0 {
                report.answered_by_new += 1;
            }
            // A flow silent until the load stopped: that silence is a gap too.
            let trailing =
                flow.last_reply.map(|last| stop_at.saturating_duration_since(last)).unwrap_or_default();
            report.longest_gap_flow = report.longest_gap_flow.max(flow.longest_gap).max(trailing);
            report.longest_gap_flow_before = report.longest_gap_flow_before.max(flow.longest_gap_before);
            if !flow.outstanding.is_empty() && report.notes.len() < 8 {
                let first: Vec<u64> = flow.outstanding.keys().take(8).copied().collect();
                report.notes.push(format!(
                    "flow {} has {} unanswered (first: {first:?}), longest gap ended at {} ms",
                    flow.index,
                    flow.outstanding.len(),
                    flow.longest_gap_end / 1000
                ));
            }
        }
    }
    report.lost = report.sent - report.answered;
    replies.sort_unstable();
    // Silence until the load stopped counts as a gap, as if a reply had come then.
    replies.push(stop_micros);
    let started_micros = clock.upgrade_started.load(Ordering::Relaxed);
    let gaps = || replies.windows(2).map(|w| (w[1], w[1] - w[0]));
    if let Some((_, gap)) = gaps().filter(|(end, _)| *end <= started_micros).max_by_key(|(_, gap)| *gap) {
        report.longest_gap_all_before = Duration::from_micros(gap);
    }
    if let Some((end, gap)) = gaps().filter(|(end, _)| *end > started_micros).max_by_key(|(_, gap)| *gap) {
        report.longest_gap_all = Duration::from_micros(gap);
        report.gap_end_after_start_ms = (end as f64 - started_micros as f64) / 1000.0;
    }

    // The process that should serve now (the new one, or the old one when the takeover was
    // refused) answers a client it has never seen.
    let serving = match new.as_mut() {
        Some(new) => Some(new),
        None if report.kept_old => Some(&mut stage.old),
        None => None,
    };
    if let Some(serving) = serving {
        let fresh = common::client();
        report.serves_after = wait_for(Duration::from_secs(5), || {
            serving.poll().is_none() && ask(&fresh, listen, b"fresh").is_some_and(|r| r.ends_with(b" fresh"))
        });
        report.new_status = new.as_mut().and_then(Udplb::poll);
        report.old_status = stage.old.poll();
    }
    if let Some(systemd) = &stage.systemd {
        systemd.with_store(|store| {
            report.fd_store_refused = store.refused.len();
            // Each kind of notification with its count, in the order first seen.
            let mut kinds: Vec<(String, usize)> = Vec::new();
            for message in &store.messages {
                let kind = message.lines().next().unwrap_or_default();
                match kinds.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, count)) => *count += 1,
                    None => kinds.push((kind.to_owned(), 1)),
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(kind, count)| format!("{kind} x{count}")).collect();
            report.notes.push(format!(
                "fake systemd: notifications {}; {} fds refused; {} fds stored now",
                kinds.join(", "),
                store.refused.len(),
                store.fds.len()
            ));
        });
    }
    report.logs = stage.old.log_tail();
    if let Some(new) = &new {
        report.logs.push('\n');
        report.logs.push_str(&new.log_tail());
    }
    println!("{}", report.summary());
    for note in &report.notes {
        println!("  {note}");
    }
    if std::env::var_os("UPGRADE_LOGS").is_some() {
        println!("{}", report.logs);
    }
    drop(new);
    drop(stage);
    drop(backends);
    report
}

// ---------------------------------------------------------------------------------------------
// The upgrades

/// `udplb run --takeover` with the same file; done when the old process has exited.
fn takeover(stage: &mut Stage) -> Result<After, String> {
    let mut new = stage.start("new", &["--takeover"], &stage.systemd_env());
    let deadline = Instant::now() + PROCESS_LIMIT;
    loop {
        if stage.old.poll().is_some() {
            stage.old_gone();
            return Ok(After::New(new));
        }
        if let Some(status) = new.poll() {
            return Err(format!(
                "udplb run --takeover: {} before the old process exited\n{}",
                describe(Some(status)),
                new.log_tail()
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the old process still runs {PROCESS_LIMIT:?} after udplb run --takeover started"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A stop and start under systemd with a descriptor store: SIGTERM, the old process pushes
/// its sockets and state to the store and exits, the new one gets them as `LISTEN_FDS`.
fn fd_store_restart(stage: &mut Stage) -> Result<After, String> {
    fd_store_restart_with(stage, |_| ())
}

/// The same, with the control socket's file gone between the stop and the start, as systemd
/// leaves it when the socket lives in the unit's `RuntimeDirectory=` (removed on every stop,
/// restarts included, unless `RuntimeDirectoryPreserve=`) or its `PrivateTmp=`.
fn fd_store_restart_in_a_new_runtime_directory(stage: &mut Stage) -> Result<After, String> {
    fd_store_restart_with(stage, |stage| {
        let _ = std::fs::remove_file(stage.dir.join("control.sock"));
    })
}

/// A stop and start through the store, with `between` done after the stop.
fn fd_store_restart_with(stage: &mut Stage, between: impl FnOnce(&Stage)) -> Result<After, String> {
    stage.old.signal(libc::SIGTERM);
    let status = stage.old.wait_exit(PROCESS_LIMIT);
    stage.old_gone();
    let Some(status) = status else {
        return Err(format!("the old process still runs {PROCESS_LIMIT:?} after SIGTERM"));
    };
    between(stage);
    let systemd = stage.systemd.as_ref().expect("a run under the fake systemd");
    let stored = systemd.stored();
    let state_stored = stored.iter().any(|(name, _)| name == "udplb-state");
    stage.state_stored = Some(state_stored);
    if !state_stored {
        let names: Vec<&str> = stored.iter().map(|(name, _)| name.as_str()).collect();
        println!("the old process ({}) stored no udplb-state; stored: {names:?}", describe(Some(status)));
    }
    // As systemd does: the next start gets whatever the store holds.
    let mut command = command_with_listen_fds(&stage.config, stored);
    command.envs(systemd.env());
    Ok(After::New(Udplb::spawn(command, "new", stage.dir.join("new.log"))))
}

/// A plain restart: SIGTERM (the old process drains, within its `stop_timeout`), then a new
/// process started from scratch.
fn plain_restart(stage: &mut Stage) -> Result<After, String> {
    stage.old.signal(libc::SIGTERM);
    if stage.old.wait_exit(PROCESS_LIMIT).is_none() {
        return Err(format!("the old process still runs {PROCESS_LIMIT:?} after SIGTERM"));
    }
    stage.old_gone();
    Ok(After::New(stage.start("new", &[], &[])))
}

/// `udplb run --takeover --fresh`: the new process takes the listeners with an empty flow
/// table and relays the old flows to the old process, which serves them until they end (here
/// not before its `stop_timeout`, longer than the run). Done when the old process says so.
fn fresh_takeover(stage: &mut Stage) -> Result<After, String> {
    let mut new = stage.start("new", &["--takeover", "--fresh"], &[]);
    let deadline = Instant::now() + PROCESS_LIMIT;
    loop {
        let said = std::fs::read_to_string(&stage.old.log).unwrap_or_default();
        if said.contains("handover_fallback") {
            return Ok(After::Relaying(new));
        }
        if let Some(status) = new.poll() {
            return Err(format!(
                "udplb run --takeover --fresh: {}\n{}",
                describe(Some(status)),
                new.log_tail()
            ));
        }
        if let Some(status) = stage.old.poll() {
            return Err(format!("the old process ended ({}) instead of relaying", describe(Some(status))));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no handover_fallback in the old process's log {PROCESS_LIMIT:?} after --fresh"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A takeover the running process must refuse: the new configuration asks for another number
/// of workers (each worker hands over to the worker of the same number). The new process must
/// exit non-zero, saying why, and the old one serve on as if nothing had happened.
fn refused_takeover(stage: &mut Stage) -> Result<After, String> {
    let other = stage.config_text.replace("workers = 1\n", "workers = 2\n");
    if other == stage.config_text {
        return Err("the plan sets no `workers = 1` to change".to_owned());
    }
    let path = stage.dir.join("two-workers.toml");
    std::fs::write(&path, other).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut command = Command::new(udplb());
    command.args(["run", "-c"]).arg(&path).arg("--takeover");
    let mut new = Udplb::spawn(command, "new", stage.dir.join("new.log"));
    let status = new.wait_exit(PROCESS_LIMIT);
    let said = std::fs::read_to_string(&new.log).unwrap_or_default();
    let last_line = said.lines().last().unwrap_or_default();
    println!("udplb run --takeover with another worker count: {}, said: {last_line}", describe(status));
    match status {
        None => Err(format!("udplb run --takeover still runs after {PROCESS_LIMIT:?}\n{}", new.log_tail())),
        Some(status) if status.success() => Err(format!("udplb run --takeover exited 0\n{}", new.log_tail())),
        Some(_) if said.trim().is_empty() => Err("udplb run --takeover failed without a word".to_owned()),
        Some(_) => Ok(After::OldServesOn),
    }
}

/// A reload first (a setting every worker's share of the configuration carries), then
/// `udplb run --takeover`: each worker's snapshot is taken under the configuration its core
/// runs since the reload, so the new process restores every flow rather than fall back.
fn reload_then_takeover(stage: &mut Stage) -> Result<After, String> {
    let text = stage.config_text.replacen("[process]\n", "[process]\nstop_timeout = \"25s\"\n", 1);
    if text == stage.config_text {
        return Err("the configuration has no [process] section".to_owned());
    }
    std::fs::write(&stage.config, &text).map_err(|e| format!("write {}: {e}", stage.config.display()))?;
    let output = Command::new(udplb())
        .args(["ctl", "-c"])
        .arg(&stage.config)
        .arg("reload")
        .output()
        .map_err(|e| format!("udplb ctl reload: {e}"))?;
    if !output.status.success() {
        return Err(format!("udplb ctl reload failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    stage.config_text = text;
    let after = takeover(stage)?;
    if let After::New(new) = &after {
        let log = std::fs::read_to_string(&new.log).unwrap_or_default();
        if !log.contains("restored the previous process's flows") {
            return Err(format!(
                "the new process did not restore the flows after a reload\n{}",
                new.log_tail()
            ));
        }
    }
    Ok(after)
}

fn assert_hitless(reports: &[Report], sticky: bool) {
    let failed: Vec<String> = reports
        .iter()
        .filter_map(|report| {
            let failures = report.hitless_failures(sticky);
            (!failures.is_empty()).then(|| format!("{}\n  => {}", report.details(), failures.join("; ")))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed:\n\n{}",
        failed.len(),
        reports.len(),
        failed.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn an_upgrade_under_load_loses_no_reply() {
    let plans = [
        Plan::long_lived("takeover, 1 worker, pool", "workers = 1"),
        Plan::long_lived("takeover, 2 workers, pool", "workers = 2"),
        Plan::long_lived("takeover, 2 workers, per_flow", "workers = 2\nupstream_mode = \"per_flow\""),
    ];
    let reports: Vec<Report> = plans.iter().map(|plan| upgrade_under_load(plan, takeover)).collect();
    assert_hitless(&reports, true);
}

#[test]
fn a_dns_like_upgrade_loses_no_query() {
    let plans = [
        Plan::queries("takeover, queries, 1 worker, pool", "workers = 1"),
        Plan::queries("takeover, queries, 2 workers, per_flow", "workers = 2\nupstream_mode = \"per_flow\""),
    ];
    let reports: Vec<Report> = plans.iter().map(|plan| upgrade_under_load(plan, takeover)).collect();
    // Each query is a flow of its own, placed round robin: moving is what they do.
    assert_hitless(&reports, false);
}

/// A reload before the takeover: every worker snapshots under what its core runs since.
#[test]
fn a_takeover_after_a_reload_restores_every_flow() {
    let plan = Plan::long_lived("reload, then takeover, 2 workers, pool", "workers = 2");
    let report = upgrade_under_load(&plan, reload_then_takeover);
    assert_hitless(&[report], true);
}

#[test]
fn a_refused_takeover_leaves_the_old_process_serving_every_flow() {
    let plan = Plan::long_lived("refused takeover, 1 worker, pool", "workers = 1");
    let report = upgrade_under_load(&plan, refused_takeover);
    assert!(report.kept_old, "the takeover was not refused:\n{}", report.details());
    assert_hitless(&[report], true);
}

/// The fallback when a new build cannot restore the flows, asked for with `--fresh`: no reply
/// lost and no flow moved while the old process serves them through the relay.
#[test]
fn a_fresh_takeover_relays_the_old_flows_without_a_loss() {
    let plans = [
        Plan::long_lived("takeover --fresh, 1 worker, pool", "workers = 1\nstop_timeout = \"30s\""),
        Plan::long_lived(
            "takeover --fresh, 2 workers, per_flow",
            "workers = 2\nupstream_mode = \"per_flow\"\nstop_timeout = \"30s\"",
        ),
    ];
    let reports: Vec<Report> = plans.iter().map(|plan| upgrade_under_load(plan, fresh_takeover)).collect();
    assert_hitless(&reports, true);
}

#[test]
fn the_fd_store_restart_keeps_every_flow() {
    let plans = [
        Plan::long_lived("fd store, 1 worker, pool", "workers = 1").under_systemd(),
        Plan::long_lived("fd store, 2 workers, pool", "workers = 2").under_systemd(),
    ];
    let reports: Vec<Report> = plans.iter().map(|plan| upgrade_under_load(plan, fd_store_restart)).collect();
    assert_hitless(&reports, true);
}

/// The store keeps the control socket, but its file is gone: the restart keeps every flow
/// all the same, and `udplb ctl` works again (the file is there once more).
#[test]
fn an_fd_store_restart_keeps_every_flow_when_the_runtime_directory_was_emptied() {
    let plan = Plan::long_lived("fd store, control socket file removed, 1 worker, pool", "workers = 1")
        .under_systemd();
    let report = upgrade_under_load(&plan, fd_store_restart_in_a_new_runtime_directory);
    assert_hitless(&[report], true);
}

/// A store too small for every descriptor (`FileDescriptorStoreMax=` set too low): systemd
/// refuses the excess, and the restart must still leave a udplb that serves. What the
/// clients lose is printed, not asserted: keeping the flows is not possible here.
#[test]
fn a_restart_through_a_store_too_small_still_serves() {
    let plan = Plan::long_lived("fd store of 4, 1 worker, pool", "workers = 1\nstop_timeout = \"1s\"")
        .under_systemd_with_store(4);
    let report = upgrade_under_load(&plan, fd_store_restart);
    assert!(
        report.old_status.is_some_and(|s| s.success()),
        "the old process did not exit 0:\n{}",
        report.details()
    );
    assert!(report.serves_after, "the new process does not serve:\n{}", report.details());
    assert_eq!(report.misdelivered, 0, "{}", report.details());
}

#[test]
fn a_plain_restart_loses_flows() {
    let plan = Plan::long_lived("plain restart, 1 worker, pool", "workers = 1\nstop_timeout = \"1s\"");
    let report = upgrade_under_load(&plan, plain_restart);
    // The restart itself worked: the old process stopped as asked and the new one serves.
    assert!(
        report.old_status.is_some_and(|s| s.success()),
        "the old process did not exit 0:\n{}",
        report.details()
    );
    assert!(report.serves_after, "the new process does not serve:\n{}", report.details());
    assert_eq!(report.misdelivered, 0, "{}", report.details());
    // And the harness sees what it did to the clients.
    assert!(
        report.lost > 0 || report.moved > 0,
        "a plain restart went unnoticed: the harness cannot tell a handover from none\n{}",
        report.details()
    );
    assert!(!report.hitless_failures(true).is_empty(), "{}", report.details());
}

// ---------------------------------------------------------------------------------------------
// Figures for BENCHMARKS.md (bench/upgrade)

/// The median of sorted `values`.
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn min_median_max(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let (first, last) =
        (values.first().copied().unwrap_or(f64::NAN), values.last().copied().unwrap_or(f64::NAN));
    format!("{:.1} / {:.1} / {:.1}", first, median(&values), last)
}

/// Repeats every upgrade `UPGRADE_RUNS` times (default 5) and prints the gaps, min / median /
/// max over the runs, as rows of a Markdown table (lines starting with `#table `).
#[test]
#[ignore = "a benchmark: bench/upgrade runs it on the release binary"]
fn upgrade_gap_figures() {
    let runs: usize =
        std::env::var("UPGRADE_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(5).clamp(1, 100);
    type Upgrade = fn(&mut Stage) -> Result<After, String>;
    let cases: Vec<(Plan, Upgrade, bool)> = vec![
        (Plan::long_lived("takeover, 1 worker, pool", "workers = 1"), takeover, true),
        (Plan::long_lived("takeover, 2 workers, pool", "workers = 2"), takeover, true),
        (
            Plan::long_lived("takeover, 1 worker, per_flow", "workers = 1\nupstream_mode = \"per_flow\""),
            takeover,
            true,
        ),
        (
            Plan::long_lived("takeover, 2 workers, per_flow", "workers = 2\nupstream_mode = \"per_flow\""),
            takeover,
            true,
        ),
        (Plan::queries("takeover, queries (responses = 1), 2 workers, pool", "workers = 2"), takeover, false),
        (
            Plan::long_lived(
                "takeover --fresh (relay), 1 worker, pool",
                "workers = 1\nstop_timeout = \"30s\"",
            ),
            fresh_takeover,
            true,
        ),
        (Plan::long_lived("fd store, 1 worker, pool", "workers = 1").under_systemd(), fd_store_restart, true),
        (
            Plan::long_lived("fd store, 2 workers, pool", "workers = 2").under_systemd(),
            fd_store_restart,
            true,
        ),
    ];
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (plan, upgrade, sticky) in &cases {
        let reports: Vec<Report> = (0..runs).map(|_| upgrade_under_load(plan, upgrade)).collect();
        let field = |f: fn(&Report) -> f64| min_median_max(reports.iter().map(f).collect());
        let total = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
        // Each query is a flow of its own, placed anew: "moved" means nothing there.
        let moved = if *sticky {
            reports.iter().map(|r| r.moved).sum::<usize>().to_string()
        } else {
            "–".to_owned()
        };
        rows.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            plan.label,
            reports.len(),
            total(|r| r.sent),
            total(|r| r.lost),
            total(|r| r.misdelivered),
            moved,
            field(|r| ms(r.longest_gap_all)),
            field(|r| ms(r.longest_gap_all_before)),
            field(|r| ms(r.longest_gap_flow)),
            field(|r| ms(r.longest_gap_flow_before)),
            field(|r| ms(r.upgrade_took)),
        ));
        for report in &reports {
            let why = report.hitless_failures(*sticky);
            if !why.is_empty() {
                failures.push(format!("{}\n  => {}", report.details(), why.join("; ")));
            }
        }
    }
    println!(
        "#table | upgrade | runs | sent | lost | misdelivered | moved | gap over all flows, upgrade, ms | same, before it | gap on one flow, upgrade, ms | same, before it | upgrade took, ms |"
    );
    println!("#table |---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("#table {row}");
    }
    assert!(failures.is_empty(), "{} runs were not hitless:\n\n{}", failures.len(), failures.join("\n\n"));
}
