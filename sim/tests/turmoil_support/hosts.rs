//! Client and backend software on turmoil hosts.
//!
//! The decisions are the simulator's own host models ([`ClientHost`], [`BackendHost`]): what a
//! client sends, from which port, and how it matches replies to requests; how a backend
//! answers. Only the sockets, the clock and the network are turmoil's, so a difference between
//! the two engines points at the network or at the balancer, not at the hosts.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinSet, spawn_local};
use tokio::time::{sleep, sleep_until};
use turmoil::net::{TcpListener, UdpSocket};
use udplb_sim::hosts::{BackendHost, BackendReaction, BackendState, ClientHost};

use super::any_address;

/// Largest datagram a host reads.
const DATAGRAM_MAX: usize = 65_535;

/// A client's software: sends its requests on schedule and counts the replies.
pub async fn client(host: Rc<RefCell<ClientHost>>, vip: SocketAddr) -> turmoil::Result {
    // The schedule is in simulated time since the start, like the simulator's.
    let elapsed = turmoil::sim_elapsed().ok_or("a client runs inside the simulation")?;
    let origin = tokio::time::Instant::now() - elapsed;
    let (start, interval, count) = {
        let host = host.borrow();
        (host.start(), host.interval(), host.count())
    };
    let mut sockets: BTreeMap<u16, Rc<UdpSocket>> = BTreeMap::new();
    for number in 0..count {
        sleep_until(origin + start + interval * number).await;
        let Some((from, payload)) = host.borrow_mut().next_request() else { break };
        let socket = match sockets.get(&from.port()) {
            Some(socket) => socket.clone(),
            None => {
                let socket = Rc::new(UdpSocket::bind(any_address(from.port())).await?);
                spawn_local(count_replies(socket.clone(), host.clone()));
                sockets.insert(from.port(), socket.clone());
                socket
            }
        };
        socket.send_to(&payload, vip).await?;
    }
    // Turmoil stops running a host whose software has returned, and with it the tasks that
    // still wait for replies; so the client idles until the simulation ends.
    std::future::pending().await
}

async fn count_replies(socket: Rc<UdpSocket>, host: Rc<RefCell<ClientHost>>) {
    let mut buffer = vec![0u8; DATAGRAM_MAX];
    while let Ok((length, _)) = socket.recv_from(&mut buffer).await {
        host.borrow_mut().receive(&buffer[..length]);
    }
}

/// A backend's software, in the state the timeline puts it in:
///
/// - `Up`: the UDP port answers as the backend's model says, the companion TCP port (if any)
///   accepts;
/// - `Killed`: the process is dead and both ports are closed (the ICMP stand-in refuses UDP,
///   turmoil refuses TCP connects);
/// - `RefusingUdp`: the UDP port is closed, the TCP port still accepts;
/// - `Blackholed`: a firewall drops everything: datagrams are read and thrown away, TCP
///   connects are never answered (so a probe meets silence, not a refusal).
///
/// The simulator's [`BackendHost`] stays `Up` here: it only decides how to answer, and the
/// sockets carry the state.
pub async fn backend(
    host: Rc<RefCell<BackendHost>>,
    tcp_port: Option<u16>,
    mut state: watch::Receiver<BackendState>,
) -> turmoil::Result {
    let address = host.borrow().spec.address;
    let mut buffer = vec![0u8; DATAGRAM_MAX];
    // One turn per state; bounded by the timeline's actions on this backend.
    loop {
        let current = *state.borrow_and_update();
        let udp = match current {
            BackendState::Up | BackendState::Blackholed => {
                Some(Rc::new(UdpSocket::bind(any_address(address.port())).await?))
            }
            // Refused by the harness (`unsupported`): never played here.
            BackendState::Killed | BackendState::RefusingUdp | BackendState::DroppingUdp => None,
        };
        let tcp = match tcp_port {
            Some(port) if current != BackendState::Killed => {
                Some(TcpListener::bind(any_address(port)).await?)
            }
            _ => None,
        };
        let answers = current == BackendState::Up;
        let accepts = matches!(current, BackendState::Up | BackendState::RefusingUdp);
        let mut delayed_replies = JoinSet::new();
        loop {
            tokio::select! {
                // Biased, so that the run never depends on tokio's random branch choice.
                biased;
                changed = state.changed() => {
                    changed?;
                    break;
                }
                () = accept_and_close(tcp.as_ref().filter(|_| accepts)) => {}
                received = receive(udp.as_deref(), &mut buffer) => {
                    let (length, from) = received?;
                    if !answers {
                        continue;
                    }
                    // Finished replies are reaped as the backend goes, so the set stays small.
                    while delayed_replies.try_join_next().is_some() {}
                    // PROXY v2 checks are off (the harness refuses scenarios that ask for them),
                    // so the VIPs and client addresses are not needed.
                    let reaction = host.borrow_mut().receive(from, &buffer[..length], |_| Some(Vec::new()));
                    if let (BackendReaction::Reply { payloads, delay }, Some(udp)) = (reaction, &udp) {
                        if delay.is_zero() {
                            for payload in payloads {
                                udp.send_to(&payload, from).await?;
                            }
                        } else {
                            delayed_replies.spawn_local(reply_later(udp.clone(), from, payloads, delay));
                        }
                    }
                }
            }
        }
        // The state changed: replies still owed are lost with the old state (a dead process or
        // a firewall does not send them), and waiting for their tasks to end releases their
        // hold on the UDP port before the next state binds it again.
        delayed_replies.shutdown().await;
    }
}

async fn receive(socket: Option<&UdpSocket>, buffer: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

async fn accept_and_close(listener: Option<&TcpListener>) {
    match listener {
        // Accepted and closed at once: a TCP health probe only needs the handshake.
        Some(listener) => drop(listener.accept().await),
        None => std::future::pending().await,
    }
}

async fn reply_later(socket: Rc<UdpSocket>, to: SocketAddr, payloads: Vec<Vec<u8>>, delay: Duration) {
    sleep(delay).await;
    for payload in payloads {
        if socket.send_to(&payload, to).await.is_err() {
            return;
        }
    }
}
