//! Hitless restart: a running udplb hands its sockets and its state to a new process, which
//! serves every flow on from where the old one stopped (`docs/operations.md`, "Upgrading
//! without losing flows").
//!
//! What is handed over is a [`Handover`]: every worker's listener sockets, upstream sockets
//! (pool sockets, or one per flow) and probe sockets in flight, the control socket and the
//! metrics listener, all as file descriptors, plus a state: a [`Header`] (JSON: who hands
//! over, with which configuration, on which clock, and which descriptor is what) followed
//! by each worker's core snapshot ([`udplb_core::snapshot`]) and platform state
//! ([`udplb_core::snapshot::PlatformState`]). The sockets are the same kernel sockets, so
//! datagrams that arrive while the processes change hands wait in their queues: nothing is
//! lost, nothing is re-bound, and each listener's SO_REUSEPORT group and steering program
//! stay as they were.
//!
//! Two ways carry it:
//!
//! - `udplb run --takeover`: the new process asks the running one over its control socket
//!   (`{"command":"handover"}`). The old one stops its datapath and answers with the state in
//!   a memfd, then the other descriptors, over SCM_RIGHTS ([`send`], [`receive`]). The new
//!   one restores, starts, and writes `resumed`; the old one then exits. Any other answer,
//!   or none, and the old one resumes serving.
//! - systemd's file-descriptor store: with `FDSTORE` set (`FileDescriptorStoreMax=` in the
//!   unit) a stop pushes every descriptor to the store ([`push_to_fd_store`]) instead of
//!   draining; systemd hands them to the next start (`LISTEN_FDS`, `LISTEN_FDNAMES`:
//!   [`from_listen_fds`]), which restores from them and then empties the store.
//!
//! The header's `protocol` numbers this exchange; the snapshot has its own version, so a
//! new binary that can no longer read an old snapshot still understands what it was given.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use udplb_core::ListenerId;

/// The exchange this build speaks.
pub const PROTOCOL: u32 = 1;
/// The state's descriptor's name (in the fd store and in `LISTEN_FDNAMES`).
pub const STATE_NAME: &str = "udplb-state";
/// The first bytes of the state.
const MAGIC: &[u8; 8] = b"UDPLBHND";
/// The one byte each descriptor-carrying message holds (anything else from the old process
/// is the start of an error line).
const MARKER: u8 = b'H';
/// Descriptors per message (the kernel takes at most 253).
const FDS_PER_MESSAGE: usize = 200;
/// What the new process writes once it serves.
pub const RESUMED: &str = "resumed";
/// What the old process writes once it has let go of the sockets (its workers ended, or
/// stopped reading the listeners): the new process's workers start reading only then.
pub const LET_GO: &str = "let-go";
/// What the new process writes, with one relay socket per worker, when it cannot restore the
/// old one's flows and takes only its listeners (`crate::relay`).
pub const FALLBACK: &str = "fallback";
/// How long a notification to the service manager may wait for room in its queue.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the old process waits for the new one to say it serves before resuming itself.
pub const RESUME_DEADLINE: Duration = Duration::from_secs(30);

/// Who hands over, with what (everything but the descriptors and the snapshots).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub protocol: u32,
    /// The old process.
    pub pid: u32,
    /// Its version (`udplb --version`).
    pub version: String,
    /// The core snapshots' format version.
    pub snapshot_version: u16,
    /// The configuration file the old process ran, as it read it.
    pub config_text: String,
    /// The flow cap it derived from its limits (used where the file sets none).
    pub default_max_flows: u32,
    /// When its clock started, on CLOCK_MONOTONIC: the new process continues the same clock,
    /// so every deadline in the snapshots keeps its meaning.
    pub origin_monotonic_nanos: u64,
    /// Each worker's descriptors, in the order of `fds`.
    pub workers: Vec<WorkerFds>,
    pub control: bool,
    pub metrics: bool,
    /// The descriptors' names, in the order they are sent (the state itself excluded).
    pub fds: Vec<String>,
}

/// What one worker's descriptors are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerFds {
    /// Its listener sockets, by listener id.
    pub listeners: Vec<u32>,
    /// Its pool sockets, in index order.
    pub pool_sockets: u32,
    /// Its flows' own sockets, in the platform state's order.
    pub flow_sockets: u32,
    /// Its probes' sockets, in the platform state's order.
    pub probes: u32,
    /// Its flows' keys (listener id, the address datagrams come from), for the fallback
    /// (`crate::relay`): the datagrams a new process that cannot restore relays back.
    #[serde(default)]
    pub flows: Vec<(u32, std::net::SocketAddr)>,
    /// The trusted balancers its PROXY v2 flows come through (listener id, address): every
    /// datagram from one is relayed during a fallback, since the client it carries is known
    /// only once its header is read.
    #[serde(default)]
    pub proxied: Vec<(u32, std::net::SocketAddr)>,
}

/// One worker's sockets.
#[derive(Debug, Default)]
pub struct WorkerSockets {
    pub listeners: Vec<(ListenerId, OwnedFd)>,
    pub pool: Vec<OwnedFd>,
    pub flows: Vec<OwnedFd>,
    pub probes: Vec<OwnedFd>,
}

/// One worker's part: its core's snapshot, its platform's state, its sockets.
#[derive(Debug)]
pub struct WorkerState {
    pub snapshot: Vec<u8>,
    pub platform: Vec<u8>,
    pub sockets: WorkerSockets,
    /// Its flows' keys ([`WorkerFds::flows`], [`WorkerFds::proxied`]).
    pub flows: Vec<(u32, std::net::SocketAddr)>,
    pub proxied: Vec<(u32, std::net::SocketAddr)>,
    /// Its live flows when it froze, for the old process's log (not sent: 0 when received).
    pub active: u64,
}

/// What a worker of the new process takes over: the old worker's sockets and the state that
/// says what each is.
#[derive(Debug)]
pub struct Adopted {
    pub platform: udplb_core::snapshot::PlatformState,
    pub sockets: WorkerSockets,
    /// In a fallback (`crate::relay`): this worker's end of its relay to the old process's
    /// worker of the same number, and the old flows to relay.
    pub relay: Option<(OwnedFd, crate::relay::NewSide)>,
}

/// Descriptors by name, in the order they travel.
type NamedFds = Vec<(String, OwnedFd)>;

/// Everything handed over.
#[derive(Debug)]
pub struct Handover {
    pub header: Header,
    /// By worker number.
    pub workers: Vec<WorkerState>,
    pub control: Option<OwnedFd>,
    pub metrics: Option<OwnedFd>,
}

fn worker_names(worker: usize, fds: &WorkerFds) -> Vec<String> {
    let mut names = Vec::new();
    names.extend(fds.listeners.iter().map(|id| format!("udplb-w{worker}-listener-{id}")));
    names.extend((0..fds.pool_sockets).map(|i| format!("udplb-w{worker}-pool-{i}")));
    names.extend((0..fds.flow_sockets).map(|i| format!("udplb-w{worker}-flow-{i}")));
    names.extend((0..fds.probes).map(|i| format!("udplb-w{worker}-probe-{i}")));
    names
}

impl Handover {
    /// Assembles a handover: fills the header's descriptor lists from the workers' sockets.
    pub fn new(
        mut header: Header,
        workers: Vec<WorkerState>,
        control: Option<OwnedFd>,
        metrics: Option<OwnedFd>,
    ) -> Handover {
        header.workers = workers
            .iter()
            .map(|worker| WorkerFds {
                listeners: worker.sockets.listeners.iter().map(|(id, _)| id.0).collect(),
                pool_sockets: worker.sockets.pool.len() as u32,
                flow_sockets: worker.sockets.flows.len() as u32,
                probes: worker.sockets.probes.len() as u32,
                flows: worker.flows.clone(),
                proxied: worker.proxied.clone(),
            })
            .collect();
        header.control = control.is_some();
        header.metrics = metrics.is_some();
        header.fds = Vec::new();
        if header.control {
            header.fds.push("udplb-control".to_owned());
        }
        if header.metrics {
            header.fds.push("udplb-metrics".to_owned());
        }
        for (index, fds) in header.workers.iter().enumerate() {
            header.fds.extend(worker_names(index, fds));
        }
        Handover { header, workers, control, metrics }
    }

    /// The state (header and snapshots) and the named descriptors, in the header's order.
    fn into_parts(self) -> anyhow::Result<(Vec<u8>, NamedFds)> {
        let header = serde_json::to_vec(&self.header)?;
        let mut state = MAGIC.to_vec();
        state.extend_from_slice(&(header.len() as u64).to_le_bytes());
        state.extend_from_slice(&header);
        let mut fds: Vec<OwnedFd> = Vec::new();
        fds.extend(self.control);
        fds.extend(self.metrics);
        for worker in self.workers {
            for part in [&worker.snapshot, &worker.platform] {
                state.extend_from_slice(&(part.len() as u64).to_le_bytes());
                state.extend_from_slice(part);
            }
            let sockets = worker.sockets;
            fds.extend(sockets.listeners.into_iter().map(|(_, fd)| fd));
            fds.extend(sockets.pool);
            fds.extend(sockets.flows);
            fds.extend(sockets.probes);
        }
        let names = self.header.fds;
        anyhow::ensure!(names.len() == fds.len(), "{} names for {} descriptors", names.len(), fds.len());
        Ok((state, names.into_iter().zip(fds).collect()))
    }

    /// Reads a state and takes its descriptors from `named`: every one the header lists must
    /// be there.
    fn from_parts(state: &[u8], mut named: BTreeMap<String, OwnedFd>) -> anyhow::Result<Handover> {
        let mut rest = state
            .strip_prefix(MAGIC.as_slice())
            .context("the handed-over state does not start with udplb's magic")?;
        let mut take = |what: &str| -> anyhow::Result<Vec<u8>> {
            anyhow::ensure!(rest.len() >= 8, "the handed-over state is cut short in {what}");
            let (length, tail) = rest.split_at(8);
            let length = u64::from_le_bytes(length.try_into().expect("8 bytes")) as usize;
            anyhow::ensure!(tail.len() >= length, "the handed-over state is cut short in {what}");
            let (part, tail) = tail.split_at(length);
            rest = tail;
            Ok(part.to_vec())
        };
        let header: Header = serde_json::from_slice(&take("its header")?)
            .context("the handed-over state's header is not one this build reads")?;
        anyhow::ensure!(
            header.protocol == PROTOCOL,
            "the old process hands over with protocol {}, this build speaks {PROTOCOL}",
            header.protocol
        );
        let mut fd = |name: String| {
            named.remove(&name).with_context(|| format!("descriptor {name} was not handed over"))
        };
        let control = header.control.then(|| fd("udplb-control".to_owned())).transpose()?;
        let metrics = header.metrics.then(|| fd("udplb-metrics".to_owned())).transpose()?;
        let mut workers = Vec::new();
        for (index, fds) in header.workers.iter().enumerate() {
            let snapshot = take("a snapshot")?;
            let platform = take("a platform state")?;
            let mut sockets = WorkerSockets::default();
            for id in &fds.listeners {
                sockets.listeners.push((ListenerId(*id), fd(format!("udplb-w{index}-listener-{id}"))?));
            }
            for i in 0..fds.pool_sockets {
                sockets.pool.push(fd(format!("udplb-w{index}-pool-{i}"))?);
            }
            for i in 0..fds.flow_sockets {
                sockets.flows.push(fd(format!("udplb-w{index}-flow-{i}"))?);
            }
            for i in 0..fds.probes {
                sockets.probes.push(fd(format!("udplb-w{index}-probe-{i}"))?);
            }
            let (flows, proxied) = (fds.flows.clone(), fds.proxied.clone());
            workers.push(WorkerState { snapshot, platform, sockets, flows, proxied, active: 0 });
        }
        anyhow::ensure!(rest.is_empty(), "the handed-over state has {} bytes left over", rest.len());
        Ok(Handover { header, workers, control, metrics })
    }
}

/// The state in an anonymous memory file, ready to be passed as a descriptor.
fn state_file(state: &[u8]) -> anyhow::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name; the call returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"udplb-state".as_ptr(), libc::MFD_CLOEXEC) };
    anyhow::ensure!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just created and is owned by nobody else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(state)?;
    Ok(file.into())
}

fn read_state(fd: OwnedFd) -> anyhow::Result<Vec<u8>> {
    let mut file = std::fs::File::from(fd);
    file.rewind()?;
    let mut state = Vec::new();
    file.read_to_end(&mut state)?;
    Ok(state)
}

/// Sends `bytes` and `fds` in one message on a blocking socket.
pub fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let payload = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
    // u64 words: the kernel's control messages are aligned to them.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    let mut iov = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    if !fds.is_empty() {
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one header and `payload` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), payload);
        }
    }
    loop {
        // SAFETY: `header` describes valid buffers.
        let sent = unsafe { libc::sendmsg(socket, &header, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Receives one byte and the descriptors that came with it (closed on exec).
fn receive_with_fds(socket: RawFd) -> std::io::Result<(Option<u8>, Vec<OwnedFd>)> {
    let (bytes, fds) = receive_message(socket, 1)?;
    Ok((bytes.first().copied(), fds))
}

/// Receives one message of at most `max` bytes and the descriptors that came with it (closed
/// on exec).
pub fn receive_message(socket: RawFd, max: usize) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; max];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((FDS_PER_MESSAGE * 4 + 64) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: max };
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = &mut iov;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = space as _;
    let received = loop {
        // SAFETY: `header` describes valid buffers.
        let received = unsafe { libc::recvmsg(socket, &mut header, libc::MSG_CMSG_CLOEXEC) };
        if received >= 0 {
            break received;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen; each
    // SCM_RIGHTS entry holds descriptors now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let count = ((*cmsg).cmsg_len as usize - (data as usize - cmsg as usize)) / 4;
                for i in 0..count {
                    let fd: RawFd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    bytes.truncate(received as usize);
    Ok((bytes, fds))
}

/// The old process's side: sends the handover on `stream` (blocking).
pub fn send(stream: &UnixStream, handover: Handover) -> anyhow::Result<()> {
    let (state, named) = handover.into_parts()?;
    let state = state_file(&state)?;
    send_with_fds(stream.as_raw_fd(), &[MARKER], &[state.as_raw_fd()]).context("sending the state")?;
    let fds: Vec<RawFd> = named.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        send_with_fds(stream.as_raw_fd(), &[MARKER], chunk).context("sending the sockets")?;
    }
    Ok(())
}

/// The new process's side: asks the process behind `stream` for its sockets and state.
pub fn receive(stream: &mut UnixStream) -> anyhow::Result<Handover> {
    let request =
        serde_json::json!({ "command": "handover", "pid": std::process::id(), "protocol": PROTOCOL });
    stream.write_all(format!("{request}\n").as_bytes())?;
    let (marker, mut fds) = receive_with_fds(stream.as_raw_fd()).context("reading the handover")?;
    match marker {
        Some(MARKER) if fds.len() == 1 => {}
        Some(first) => {
            // An error line (an old process that cannot hand over, or one that refused).
            let mut line = vec![first];
            let mut rest = [0u8; 4096];
            let read = stream.read(&mut rest).unwrap_or(0);
            line.extend_from_slice(&rest[..read]);
            let text = String::from_utf8_lossy(&line);
            let message = serde_json::from_str::<serde_json::Value>(text.trim())
                .ok()
                .and_then(|value| value.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            anyhow::bail!("the running udplb did not hand over: {message}");
        }
        None => anyhow::bail!("the running udplb closed the connection without handing over"),
    }
    let state = read_state(fds.remove(0))?;
    let names = peek_names(&state)?;
    let mut received: Vec<OwnedFd> = Vec::with_capacity(names.len());
    while received.len() < names.len() {
        let (marker, fds) = receive_with_fds(stream.as_raw_fd()).context("reading the sockets")?;
        anyhow::ensure!(marker == Some(MARKER), "the handover stopped after {} sockets", received.len());
        received.extend(fds);
    }
    anyhow::ensure!(received.len() == names.len(), "{} sockets for {} names", received.len(), names.len());
    Handover::from_parts(&state, names.into_iter().zip(received).collect())
}

/// The descriptor names a state's header lists.
fn peek_names(state: &[u8]) -> anyhow::Result<Vec<String>> {
    let rest = state.strip_prefix(MAGIC.as_slice()).context("the handed-over state is not udplb's")?;
    anyhow::ensure!(rest.len() >= 8, "the handed-over state is cut short");
    let length = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
    let header = rest.get(8..8 + length).context("the handed-over state is cut short")?;
    #[derive(Deserialize)]
    struct Names {
        fds: Vec<String>,
    }
    Ok(serde_json::from_slice::<Names>(header).context("the handed-over header")?.fds)
}

/// Whether a stop should push the sockets to systemd's descriptor store rather than drain:
/// `NOTIFY_SOCKET` is set and so is `FDSTORE` (systemd sets it to `FileDescriptorStoreMax=`).
pub fn fd_store_enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() && fd_store_capacity().is_some_and(|n| n > 0)
}

/// How many descriptors the store takes (`FDSTORE`, which systemd sets to
/// `FileDescriptorStoreMax=`).
fn fd_store_capacity() -> Option<u64> {
    std::env::var("FDSTORE").ok().and_then(|text| text.parse::<u64>().ok())
}

/// Sends one notification with (at most) one descriptor to `NOTIFY_SOCKET`.
fn notify_with_fd(message: &str, fd: Option<RawFd>) -> anyhow::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let path = std::env::var_os("NOTIFY_SOCKET").context("NOTIFY_SOCKET is not set")?;
    let path = path.to_string_lossy().into_owned();
    let address = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
        None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    // The service manager reads its queue as it can (a UNIX datagram queue holds few
    // messages): wait for room, but not for ever.
    socket.set_write_timeout(Some(NOTIFY_TIMEOUT))?;
    socket.connect_addr(&address)?;
    let fds: Vec<RawFd> = fd.into_iter().collect();
    send_with_fds(socket.as_raw_fd(), message.as_bytes(), &fds)?;
    Ok(())
}

/// Pushes the handover to systemd's descriptor store: one notification per descriptor
/// (`FDSTORE=1`, `FDNAME=`), the state last, so that a store that took the state took every
/// socket before it.
///
/// A store too small for them all is not used (systemd would keep the first ones and drop the
/// rest, the state among them): the caller drains instead. After the last one, a barrier
/// (`BARRIER=1`) waits until the service manager has taken every notification, so that none is
/// still queued when this process exits.
pub fn push_to_fd_store(handover: Handover) -> anyhow::Result<usize> {
    wait_for_clearing();
    let (state, named) = handover.into_parts()?;
    let needed = named.len() as u64 + 1;
    if let Some(capacity) = fd_store_capacity()
        && needed > capacity
    {
        anyhow::bail!(
            "the descriptor store takes {capacity} (FileDescriptorStoreMax=) and this process has {needed} \
             to hand over; raise FileDescriptorStoreMax="
        );
    }
    let state = state_file(&state)?;
    // A state left from an earlier start would be read instead of this one.
    notify_with_fd(&format!("FDSTOREREMOVE=1\nFDNAME={STATE_NAME}"), None)?;
    let mut pushed = Vec::new();
    let stored = named
        .iter()
        .try_for_each(|(name, fd)| {
            notify_with_fd(&format!("FDSTORE=1\nFDNAME={name}"), Some(fd.as_raw_fd()))
                .with_context(|| format!("storing {name}"))?;
            pushed.push(name.clone());
            Ok::<(), anyhow::Error>(())
        })
        .and_then(|()| {
            notify_with_fd(&format!("FDSTORE=1\nFDNAME={STATE_NAME}"), Some(state.as_raw_fd()))
                .context("storing the state")
        })
        .and_then(|()| barrier());
    if let Err(error) = stored {
        // What was stored would be half a handover: take it back.
        for name in pushed.iter().chain(std::iter::once(&STATE_NAME.to_owned())) {
            let _ = notify_with_fd(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None);
        }
        return Err(error);
    }
    Ok(named.len() + 1)
}

/// `BARRIER=1` with the write end of a pipe: the service manager closes it once it has
/// processed every notification sent before it.
fn barrier() -> anyhow::Result<()> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors the call writes.
    anyhow::ensure!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == 0, "pipe2 failed");
    // SAFETY: both were just created and are owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    notify_with_fd("BARRIER=1", Some(write.as_raw_fd()))?;
    drop(write);
    let mut poll = libc::pollfd { fd: read.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let timeout = NOTIFY_TIMEOUT.as_millis() as libc::c_int;
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
    anyhow::ensure!(ready > 0, "the service manager did not confirm it took the descriptors (BARRIER=1)");
    Ok(())
}

/// A store that holds udplb's sockets but not its state (a store that took only some, or an
/// older stop's leftovers): the listener, control and metrics sockets, by their names, so that
/// the start can serve on them with an empty flow table rather than find them bound.
fn partial(named: BTreeMap<String, OwnedFd>) -> Option<Handover> {
    let mut workers: Vec<WorkerState> = Vec::new();
    let (mut control, mut metrics) = (None, None);
    for (name, fd) in named {
        match name.as_str() {
            "udplb-control" => control = Some(fd),
            "udplb-metrics" => metrics = Some(fd),
            _ => {
                let Some((worker, id)) = name
                    .strip_prefix("udplb-w")
                    .and_then(|rest| rest.split_once("-listener-"))
                    .and_then(|(worker, id)| Some((worker.parse::<usize>().ok()?, id.parse::<u32>().ok()?)))
                else {
                    continue;
                };
                while workers.len() <= worker.min(1023) {
                    let sockets = WorkerSockets::default();
                    workers.push(WorkerState {
                        snapshot: Vec::new(),
                        platform: Vec::new(),
                        sockets,
                        flows: Vec::new(),
                        proxied: Vec::new(),
                        active: 0,
                    });
                }
                if let Some(state) = workers.get_mut(worker) {
                    state.sockets.listeners.push((ListenerId(id), fd));
                }
            }
        }
    }
    if workers.is_empty() && control.is_none() && metrics.is_none() {
        return None;
    }
    let header = Header {
        protocol: PROTOCOL,
        pid: 0,
        version: String::new(),
        snapshot_version: 0,
        config_text: String::new(),
        default_max_flows: 0,
        origin_monotonic_nanos: 0,
        workers: Vec::new(),
        control: control.is_some(),
        metrics: metrics.is_some(),
        fds: Vec::new(),
    };
    Some(Handover { header, workers, control, metrics })
}

/// Empties the descriptor store of what a start received: this process holds its own copies,
/// and the next stop stores them afresh.
/// On a thread of its own: the service manager takes these at its pace, and serving must
/// not wait for it. A push to the store ([`push_to_fd_store`]) waits for it first.
pub fn clear_fd_store(names: Vec<String>) {
    let clear = move || {
        for name in names {
            let _ = notify_with_fd(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None);
        }
    };
    match std::thread::Builder::new().name("udplb-fdstore".into()).spawn(clear) {
        Ok(thread) => *CLEARING.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(thread),
        Err(error) => {
            tracing::warn!(%error, "cannot empty systemd's descriptor store: it keeps the old descriptors")
        }
    }
}

/// The thread [`clear_fd_store`] started, until a push or a failed start waits for it.
static CLEARING: std::sync::Mutex<Option<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(None);

/// Waits until the store has been told to drop what this start received.
pub fn wait_for_clearing() {
    let thread = CLEARING.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

/// What systemd's descriptor store gave this start.
#[derive(Debug)]
pub enum Stored {
    /// A whole handover.
    Complete(Handover),
    /// udplb's sockets without the state: only the listener, control and metrics sockets are
    /// of use ([`Handover`] with empty snapshots).
    Partial(Handover),
}

/// The handover systemd passed to this start, if any: descriptors from `LISTEN_FDS` (when
/// `LISTEN_PID` is this process) with names from `LISTEN_FDNAMES`, one of them the state.
/// The variables are removed, so that nothing this process starts inherits them. Returns the
/// names received with it, for [`clear_fd_store`].
pub fn from_listen_fds() -> anyhow::Result<Option<(Stored, Vec<String>)>> {
    let ours =
        std::env::var("LISTEN_PID").ok().and_then(|pid| pid.parse::<u32>().ok()) == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<usize>().ok());
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // SAFETY: single-threaded at this point of the start (no worker runs yet).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let (true, Some(count @ 1..)) = (ours, count) else { return Ok(None) };
    let names: Vec<String> = names.split(':').filter(|name| !name.is_empty()).map(str::to_owned).collect();
    anyhow::ensure!(
        names.len() == count,
        "LISTEN_FDS is {count} but LISTEN_FDNAMES has {} names",
        names.len()
    );
    let mut named: BTreeMap<String, OwnedFd> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let fd = 3 + i as RawFd;
        // SAFETY: systemd passed descriptors 3..3+count to this process, which owns them now.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: as above; each is taken once.
        named.insert(name.clone(), unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let Some(state) = named.remove(STATE_NAME) else {
        return Ok(partial(named).map(|handover| (Stored::Partial(handover), names)));
    };
    // Copies, in case the state turns out unreadable: the sockets are still of use.
    let copies: BTreeMap<String, OwnedFd> =
        named.iter().filter_map(|(name, fd)| Some((name.clone(), fd.try_clone().ok()?))).collect();
    match read_state(state).and_then(|state| Handover::from_parts(&state, named)) {
        Ok(handover) => Ok(Some((Stored::Complete(handover), names))),
        Err(error) => {
            tracing::error!(event = %"handover_failed", "the stored state is unreadable: {error:#}");
            Ok(partial(copies).map(|handover| (Stored::Partial(handover), names)))
        }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (shared by every process of the host).
pub fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// `origin` (a `std::time::Instant`) on CLOCK_MONOTONIC.
pub fn origin_on_monotonic(origin: std::time::Instant) -> u64 {
    monotonic_nanos().saturating_sub(origin.elapsed().as_nanos() as u64)
}

/// The `std::time::Instant` at which another process's clock started, from its
/// [`Header::origin_monotonic_nanos`]: the same moment on this process's clock.
pub fn origin_from_monotonic(origin_monotonic_nanos: u64) -> anyhow::Result<std::time::Instant> {
    let since = Duration::from_nanos(monotonic_nanos().saturating_sub(origin_monotonic_nanos));
    std::time::Instant::now()
        .checked_sub(since)
        .context("the old process's clock started before this one can express")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both were just created.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn header() -> Header {
        Header {
            protocol: PROTOCOL,
            pid: 1,
            version: "test".into(),
            snapshot_version: 1,
            config_text: "[listeners]".into(),
            default_max_flows: 10,
            origin_monotonic_nanos: 5,
            workers: Vec::new(),
            control: false,
            metrics: false,
            fds: Vec::new(),
        }
    }

    #[test]
    fn a_handover_crosses_a_socket_pair_with_every_descriptor_in_its_place() {
        // 450 pipes: more than two messages' worth of descriptors.
        let pipes: Vec<(OwnedFd, OwnedFd)> = (0..450).map(|_| pipe()).collect();
        let worker = |range: std::ops::Range<usize>| WorkerState {
            snapshot: vec![1, 2, 3],
            platform: vec![4],
            flows: Vec::new(),
            proxied: Vec::new(),
            active: 0,
            sockets: WorkerSockets {
                listeners: vec![(ListenerId(7), pipes[range.start].1.try_clone().unwrap())],
                pool: pipes[range.start + 1..range.end].iter().map(|p| p.1.try_clone().unwrap()).collect(),
                flows: Vec::new(),
                probes: Vec::new(),
            },
        };
        let handover = Handover::new(header(), vec![worker(0..300), worker(300..450)], None, None);
        let (a, mut b) = UnixStream::pair().unwrap();
        let sender = std::thread::spawn(move || {
            let mut request = [0u8; 256];
            let _ = (&a).read(&mut request).unwrap();
            send(&a, handover).unwrap();
        });
        let received = receive(&mut b).unwrap();
        sender.join().unwrap();
        assert_eq!(received.workers.len(), 2);
        assert_eq!(received.workers[0].sockets.pool.len(), 299);
        assert_eq!(received.workers[1].snapshot, vec![1, 2, 3]);
        // Each descriptor is the write end of its own pipe: write through it, read the pipe.
        for (worker, first) in [(0, 0usize), (1, 300)] {
            let sockets = &received.workers[worker].sockets;
            let fds = std::iter::once(&sockets.listeners[0].1).chain(&sockets.pool);
            for (offset, fd) in fds.enumerate() {
                let mut file = std::fs::File::from(fd.try_clone().unwrap());
                file.write_all(&[offset as u8]).unwrap();
                let mut byte = [0u8];
                std::fs::File::from(pipes[first + offset].0.try_clone().unwrap())
                    .read_exact(&mut byte)
                    .unwrap();
                assert_eq!(byte[0], offset as u8, "worker {worker}, descriptor {offset}");
            }
        }
    }

    #[test]
    fn an_old_process_that_refuses_is_an_error_with_its_words() {
        let (a, mut b) = UnixStream::pair().unwrap();
        (&a).write_all(b"{\"error\":\"unknown command\"}\n").unwrap();
        let error = receive(&mut b).unwrap_err().to_string();
        assert!(error.contains("did not hand over: unknown command"), "{error}");
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let (state, _) = Handover::new(header(), Vec::new(), None, None).into_parts().unwrap();
        assert!(Handover::from_parts(&state, BTreeMap::new()).is_ok());
        for cut in 0..state.len() {
            assert!(Handover::from_parts(&state[..cut], BTreeMap::new()).is_err(), "cut at {cut}");
        }
    }
}
