//! Replies from the address the client used. A listener on a wildcard address (`0.0.0.0`,
//! `[::]`) serves every address of the host: udplb reads each datagram's destination
//! (IP_PKTINFO), keys the flow by it, names it in the PROXY v2 header and sends the replies
//! from it. Without that the kernel picks the source by route (a query to 127.0.0.2 was
//! answered from 127.0.0.1), and a client with a connected socket — most resolvers, every
//! QUIC stack — never sees the answer. And `freebind`: a listener on a VIP the host does not
//! have yet. Traffic stays on loopback, or inside a network namespace the test makes.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{Balancer, ask, client, free_udp_address, listener_and_pool};
use udplb_core::proxy_v2::Header;

/// Each payload a backend got, with the destination its PROXY v2 header named.
type Seen = Vec<(Vec<u8>, SocketAddr)>;

/// An echo backend on 127.0.0.1 that strips PROXY v2 headers, answers the payload and
/// records, for each payload, the destination its header named.
struct ProxyBackend {
    address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyBackend {
    fn start() -> ProxyBackend {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (record, flag) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((length, from)) = socket.recv_from(&mut buffer) else { continue };
                let Ok((header, consumed)) = Header::parse(&buffer[..length]) else { continue };
                let payload = buffer[consumed..length].to_vec();
                if let Some((_, destination)) = header.proxied_endpoints() {
                    let destination = SocketAddr::new(destination.ip().to_canonical(), destination.port());
                    record.lock().unwrap().push((payload.clone(), destination));
                }
                let _ = socket.send_to(&payload, from);
            }
        });
        ProxyBackend { address, seen, stop, thread: Some(thread) }
    }

    /// The destination named for `payload`.
    fn destination_of(&self, payload: &[u8]) -> Option<SocketAddr> {
        self.seen.lock().unwrap().iter().find(|(p, _)| p == payload).map(|(_, d)| *d)
    }
}

impl Drop for ProxyBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A socket on `bind` connected to `to`: the kernel hands it only datagrams from `to`.
fn connected(bind: &str, to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    socket.connect(to).unwrap();
    socket
}

/// Sends `payload` on a connected socket and waits (bounded) for the answer.
fn ask_connected(socket: &UdpSocket, payload: &[u8]) -> Option<Vec<u8>> {
    socket.send(payload).ok()?;
    let mut buffer = [0u8; 2048];
    let length = socket.recv(&mut buffer).ok()?;
    Some(buffer[..length].to_vec())
}

/// Sends `payload` from an unconnected socket; the answer and the address it came from.
fn ask_from(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    socket.send_to(payload, to).ok()?;
    let mut buffer = [0u8; 2048];
    let (length, from) = socket.recv_from(&mut buffer).ok()?;
    Some((buffer[..length].to_vec(), from))
}

#[test]
fn a_wildcard_listener_answers_each_client_from_the_address_it_used_and_names_it_in_proxy_v2() {
    let backend = ProxyBackend::start();
    let port = free_udp_address().port();
    let listen: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    let vips: [SocketAddr; 2] =
        [format!("127.0.0.2:{port}").parse().unwrap(), format!("127.0.0.3:{port}").parse().unwrap()];
    let body = listener_and_pool(listen, "proxy_protocol = { mode = \"every\" }", &[backend.address]);
    let balancer = Balancer::start(&body, vips[0], false);
    for vip in vips {
        for i in 0..10 {
            // Unconnected: the reply's source is the one the client sent to.
            let payload = format!("to {vip} unconnected {i}");
            let (answer, from) = ask_from(&client(), vip, payload.as_bytes()).expect("answered");
            assert_eq!(answer, payload.as_bytes());
            assert_eq!(from, vip, "{payload}: the reply left from another address");
            assert_eq!(backend.destination_of(payload.as_bytes()), Some(vip), "{payload}: PROXY v2");
            // Connected, as a resolver's socket: it sees the reply at all only from `vip`.
            let payload = format!("to {vip} connected {i}");
            let socket = connected("127.0.0.1:0", vip);
            assert_eq!(ask_connected(&socket, payload.as_bytes()).as_deref(), Some(payload.as_bytes()));
        }
    }
    // `show flows` says which address each flow's client used.
    let flows = balancer.ctl_json(&["show", "flows"]);
    let seen: Vec<&str> =
        flows["flows"].as_array().unwrap().iter().map(|f| f["vip"].as_str().unwrap()).collect();
    for vip in vips {
        assert!(seen.contains(&vip.to_string().as_str()), "{vip} not among {seen:?}");
    }
    assert!(!seen.iter().any(|v| v.starts_with("0.0.0.0")), "{seen:?}");
}

/// `[::]` with two workers (the followers' sockets read the destination too): IPv6 clients to
/// ::1 and IPv4 clients to 127.0.0.2 through the same dual-stack listener, each answered from
/// the address it used, each header naming it.
#[test]
fn a_dual_stack_wildcard_listener_with_two_workers_answers_from_the_address_used_in_both_families() {
    let backend = ProxyBackend::start();
    let port = free_udp_address().port();
    let listen: SocketAddr = format!("[::]:{port}").parse().unwrap();
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let v4: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let body = format!(
        "[process]\nworkers = 2\n\n{}",
        listener_and_pool(listen, "proxy_protocol = { mode = \"every\" }", &[backend.address])
    );
    let _balancer = Balancer::start(&body, v4, false);
    for i in 0..20 {
        for (vip, bind) in [(v6, "[::1]:0"), (v4, "127.0.0.1:0")] {
            let payload = format!("to {vip} {i}");
            let socket = UdpSocket::bind(bind).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let (answer, from) = ask_from(&socket, vip, payload.as_bytes()).expect("answered");
            assert_eq!(answer, payload.as_bytes());
            let from = SocketAddr::new(from.ip().to_canonical(), from.port());
            assert_eq!(from, vip, "{payload}: the reply left from another address");
            assert_eq!(backend.destination_of(payload.as_bytes()), Some(vip), "{payload}: PROXY v2");
            let socket = connected(bind, vip);
            assert_eq!(ask_connected(&socket, payload.as_bytes()).as_deref(), Some(payload.as_bytes()));
        }
    }
}

/// A listener on one address never needs the destination: its socket can only have been
/// reached there, and replies leave from it as before.
#[test]
fn a_listener_on_one_address_still_answers_connected_clients() {
    let backend = common::Backend::echo();
    let listen = free_udp_address();
    let _balancer = Balancer::start(&listener_and_pool(listen, "", &[backend.address]), listen, false);
    let socket = connected("127.0.0.1:0", listen);
    assert_eq!(ask_connected(&socket, b"q").as_deref(), Some(&b"q"[..]));
    assert_eq!(ask(&client(), listen, b"r").as_deref(), Some(&b"r"[..]));
}

/// A network namespace this test makes (with its loopback up) and removes when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    /// `None` where namespaces cannot be made (no CAP_SYS_ADMIN, no `ip`): outside CI the
    /// test is skipped with a notice; under `CI=true` it fails.
    fn create(name: &str) -> Option<Namespace> {
        let _ = ip(&["netns", "del", name]);
        if let Err(error) = ip(&["netns", "add", name]) {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(!in_ci, "cannot make a network namespace under CI=true: {error}");
            eprintln!(
                "NOTICE: freebind test skipped: cannot make a network namespace ({error}); it needs root"
            );
            return None;
        }
        let namespace = Namespace { name: name.to_owned() };
        ip(&["-n", name, "link", "set", "lo", "up"]).expect("loopback up");
        Some(namespace)
    }

    /// Runs `body` on a thread inside the namespace: its sockets, and the threads and
    /// processes it starts, are the namespace's.
    fn run<T: Send + 'static>(&self, body: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            // SAFETY: setns on a file descriptor we own, for this thread only.
            let entered = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            body()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// A listener on a VIP the host does not have yet (a failover daemon or a BGP announcement
/// brings it up later): refused with a hint to `freebind`, then with `freebind = true` bound
/// at once and serving as soon as the address appears.
#[test]
fn freebind_binds_a_vip_before_the_host_has_it_and_serves_once_it_appears() {
    let Some(namespace) = Namespace::create(&format!("udplbfb{}", std::process::id())) else { return };
    let add_vip = {
        let name = namespace.name.clone();
        move || ip(&["-n", &name, "addr", "add", "192.0.2.10/32", "dev", "lo"]).expect("add the VIP")
    };
    namespace.run(move || {
        let backend = common::Backend::echo();
        let vip: SocketAddr = "192.0.2.10:5300".parse().unwrap();
        let body = listener_and_pool(vip, "", &[backend.address]);
        let (status, stderr) = common::run_to_exit(&body, &[]);
        assert!(!status.success(), "bound an address the host lacks without freebind: {stderr}");
        assert!(
            stderr.contains("cannot listen on 192.0.2.10:5300") && stderr.contains("freebind = true"),
            "{stderr}"
        );
        let body = body.replace("cluster = \"pool\"\n", "cluster = \"pool\"\nfreebind = true\n");
        let mut balancer = common::Balancer::launch(&body, vip);
        std::thread::sleep(Duration::from_millis(300));
        assert!(balancer.child.try_wait().unwrap().is_none(), "udplb with freebind = true exited");
        add_vip();
        let socket = client();
        let answered = common::wait_for(Duration::from_secs(5), || ask(&socket, vip, b"q").is_some());
        assert!(answered, "no answer on {vip} once the address was up");
        drop(balancer);
    });
}
