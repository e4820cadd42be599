//! The fallback of a handover (`crate::handover`): when the new process cannot read the old
//! one's snapshot (another format version, a configuration the new build rejects), it cannot
//! take the old flows over, but it can still take the listeners: it reads every client
//! datagram, and relays those of the old process's flows to it over a `SOCK_DGRAM` socket
//! pair (one per worker). The old process serves its flows on (its upstream sockets stay
//! with it, and it replies from its copy of the listener sockets) while its listeners drain,
//! and sends back what it no longer has a flow for (a flow that ended): the new process
//! then treats it as a new client. The old process exits once its flows have ended, or at
//! its `process.stop_timeout`.
//!
//! The steering is done here, in user space, rather than by a reuseport program: a
//! classic BPF program cannot consult a flow table, and an eBPF one needs CAP_BPF, which a
//! hardened service does not have. Each new worker reads the listener socket of the old
//! worker with the same number (the kernel's steering between workers is unchanged), so each
//! relays to one old worker.
//!
//! A frame: the old process's listener id (u32 LE), a flags byte (1: the datagram was
//! truncated on receipt), the client's address, the address the client sent to (or none),
//! then the datagram.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

use udplb_core::ListenerId;

/// Bytes each end of a relay may queue: a burst of a few hundred full datagrams.
pub const RELAY_BUFFER: usize = 4 << 20;

/// The new process's side of one worker's relay.
#[derive(Debug)]
pub struct NewSide {
    /// The old process's flows this worker relays: (this process's listener, client). A
    /// datagram the old process sends back (its flow has ended) removes its key.
    pub flows: HashSet<(ListenerId, SocketAddr)>,
    /// Trusted balancers the old process's PROXY v2 flows come through: everything from them
    /// is relayed for as long as the old process serves (it sends back what is not its own).
    pub proxied: HashSet<(ListenerId, SocketAddr)>,
    /// Datagrams dropped because the relay was full.
    pub dropped: u64,
    /// This process's listener ids to the old process's.
    pub to_old: BTreeMap<ListenerId, u32>,
    /// The old process's listener ids to this process's.
    pub from_old: BTreeMap<u32, ListenerId>,
}

/// A `SOCK_DGRAM` UNIX socket pair, both ends closed on exec.
pub fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors the call writes.
    let status = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
    };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let pair = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&pair.0, &pair.1] {
        // Past net.core.wmem_max when allowed (CAP_NET_ADMIN), else as much as it lets.
        let size = RELAY_BUFFER as libc::c_int;
        for option in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
            // SAFETY: an int option on a socket we own.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    libc::SOL_SOCKET,
                    option,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        let socket = socket2::SockRef::from(fd);
        if socket.send_buffer_size().unwrap_or(0) < RELAY_BUFFER {
            let _ = socket.set_send_buffer_size(RELAY_BUFFER);
            let _ = socket.set_recv_buffer_size(RELAY_BUFFER);
        }
    }
    Ok(pair)
}

fn put_ip(frame: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            frame.push(4);
            frame.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            frame.push(6);
            frame.extend_from_slice(&v6.octets());
        }
    }
}

/// One relayed datagram.
pub fn encode(
    listener: u32,
    client: SocketAddr,
    local: Option<IpAddr>,
    truncated: bool,
    datagram: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(48 + datagram.len());
    frame.extend_from_slice(&listener.to_le_bytes());
    frame.push(u8::from(truncated));
    put_ip(&mut frame, client.ip());
    frame.extend_from_slice(&client.port().to_le_bytes());
    match local {
        Some(ip) => put_ip(&mut frame, ip),
        None => frame.push(0),
    }
    frame.extend_from_slice(datagram);
    frame
}

/// A relayed datagram, read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub listener: u32,
    pub client: SocketAddr,
    pub local: Option<IpAddr>,
    pub truncated: bool,
    /// Where the datagram starts in the frame.
    pub at: usize,
}

/// Reads a frame [`encode`] wrote; `None` for anything else.
pub fn decode(frame: &[u8]) -> Option<Frame> {
    let listener = u32::from_le_bytes(frame.get(..4)?.try_into().ok()?);
    let truncated = match *frame.get(4)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let mut at = 5;
    let ip = |at: &mut usize| -> Option<Option<IpAddr>> {
        let family = *frame.get(*at)?;
        *at += 1;
        let ip = match family {
            0 => return Some(None),
            4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(frame.get(*at..*at + 4)?).ok()?)),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(frame.get(*at..*at + 16)?).ok()?)),
            _ => return None,
        };
        *at += if ip.is_ipv4() { 4 } else { 16 };
        Some(Some(ip))
    };
    let client_ip = ip(&mut at)??;
    let port = u16::from_le_bytes(frame.get(at..at + 2)?.try_into().ok()?);
    at += 2;
    let local = ip(&mut at)?;
    Some(Frame { listener, client: SocketAddr::new(client_ip, port), local, truncated, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let cases = [
            (3, "127.0.0.1:5353", None, &b"query"[..]),
            (0, "[::1]:9", Some("::2".parse().unwrap()), &b""[..]),
            (u32::MAX, "10.0.0.1:1", Some("10.0.0.2".parse().unwrap()), &[0u8; 1500][..]),
        ];
        for (i, (listener, client, local, datagram)) in cases.into_iter().enumerate() {
            let client: SocketAddr = client.parse().unwrap();
            let truncated = i == 1;
            let frame = encode(listener, client, local, truncated, datagram);
            let read = decode(&frame).expect("decodes");
            assert_eq!(read, Frame { listener, client, local, truncated, at: read.at });
            assert_eq!(&frame[read.at..], datagram);
        }
        for frame in [
            &b""[..],
            b"\0\0\0\0\0",
            b"\0\0\0\0\x02\x04",
            b"\0\0\0\0\0\x05",
            b"\0\0\0\0\0\x04\x7f\0\0\x01\x35",
        ] {
            assert!(decode(frame).is_none(), "{frame:?}");
        }
    }
}
