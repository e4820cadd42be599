//! The echo backend: every datagram goes back to its sender, unchanged. One thread serves all
//! its ports from one epoll set, moving datagrams in batches (`recvmmsg`, then one `sendmmsg`
//! for the whole batch), so that the backends take as little as possible of the CPU the load
//! side shares with them. One thread rather than one per port: on a two-core machine, four
//! busy echo threads beside the generator and the proxy make the scheduler, not the proxy,
//! decide the tail latency.

use anyhow::{Context, Result};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams moved per system call at most.
const BATCH: usize = 32;
/// Largest datagram an echo backend returns whole.
const DATAGRAM_MAX: usize = 65_536;

/// Binds a UDP socket with large buffers (forced past `rmem_max` when we are root, so that a
/// burst is queued rather than dropped).
pub fn bind_udp(address: SocketAddr, buffer_bytes: usize) -> Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(address), Type::DGRAM, None)?;
    set_buffers(&socket, buffer_bytes);
    socket.bind(&address.into()).with_context(|| format!("bind {address}"))?;
    Ok(socket.into())
}

/// Asks for `bytes` of send and receive buffer; with privileges past the sysctl caps.
pub fn set_buffers(socket: &impl AsRawFd, bytes: usize) {
    let fd = socket.as_raw_fd();
    let value = bytes.min(i32::MAX as usize) as libc::c_int;
    for (forced, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)]
    {
        // SAFETY: setsockopt reads `value` for its size; a failure leaves the socket as it was.
        unsafe {
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let pointer = (&value as *const libc::c_int).cast();
            if libc::setsockopt(fd, libc::SOL_SOCKET, forced, pointer, size) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, plain, pointer, size);
            }
        }
    }
}

/// Echoes on every socket until an unrecoverable error. Never returns `Ok`.
pub fn serve(sockets: Vec<UdpSocket>) -> Result<()> {
    let mut poll = Poll::new()?;
    for (token, socket) in sockets.iter().enumerate() {
        socket.set_nonblocking(true)?;
        poll.registry().register(&mut SourceFd(&socket.as_raw_fd()), Token(token), Interest::READABLE)?;
    }
    let mut batch = Batch::new();
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(error) = poll.poll(&mut events, None) {
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error).context("epoll_wait");
        }
        for event in events.iter() {
            // Edge-triggered: empty the socket before waiting again.
            while batch.echo(sockets[event.token().0].as_raw_fd())? == BATCH {}
        }
    }
}

/// Buffers and message headers for one `recvmmsg` / `sendmmsg` round.
struct Batch {
    buffers: Vec<[u8; DATAGRAM_MAX]>,
    addresses: [libc::sockaddr_storage; BATCH],
    iovecs: [libc::iovec; BATCH],
    messages: [libc::mmsghdr; BATCH],
}

impl Batch {
    fn new() -> Box<Batch> {
        Box::new(Batch {
            buffers: vec![[0u8; DATAGRAM_MAX]; BATCH],
            // SAFETY: all-zero is a valid value of these plain C structs.
            addresses: unsafe { std::mem::zeroed() },
            iovecs: unsafe { std::mem::zeroed() },
            messages: unsafe { std::mem::zeroed() },
        })
    }

    /// Receives up to a batch without blocking and sends it all back; returns how many came in.
    fn echo(&mut self, fd: RawFd) -> Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] =
                libc::iovec { iov_base: self.buffers[i].as_mut_ptr().cast(), iov_len: DATAGRAM_MAX };
            let header = &mut self.messages[i].msg_hdr;
            header.msg_name = (&mut self.addresses[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut self.iovecs[i];
            header.msg_iovlen = 1;
            self.messages[i].msg_len = 0;
        }
        // SAFETY: every message points at a live buffer, address and iovec of `self`.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.messages.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                _ => Err(error).context("recvmmsg"),
            };
        }
        let received = received as usize;
        for i in 0..received {
            // Send back exactly what came in, to the address it came from.
            self.iovecs[i].iov_len = self.messages[i].msg_len as usize;
        }
        let mut sent = 0;
        while sent < received {
            // SAFETY: as above; the kernel reads msg_name/msg_namelen as recvmmsg left them.
            let result = unsafe {
                libc::sendmmsg(fd, self.messages[sent..].as_mut_ptr(), (received - sent) as u32, 0)
            };
            // A reply that cannot be sent (the client's socket is gone) is dropped, as a real
            // server would; the generator counts it as lost.
            sent += if result <= 0 { 1 } else { result as usize };
        }
        Ok(received)
    }
}
