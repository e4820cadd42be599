//! Batched datagram I/O on Linux: `recvmmsg` fills many buffers in one system call,
//! `sendmmsg` sends a queue of datagrams (each with its own destination) in one, and the
//! `IP_RECVERR` error queue tells which destination an ICMP error was about.
//!
//! On loopback, most of a datagram's cost is the kernel's own path (the sender's system call
//! also delivers it to the receiving socket), so batching saves the per-call part: the entry
//! and exit, the file lookup, the wake-ups. The event loop receives a batch, lets the driver
//! decide about every datagram of it (queueing what must be sent), then flushes each queue.

use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams received or sent per system call (the kernel accepts up to 1024).
pub(crate) const BATCH: usize = 32;

/// Buffers for one `recvmmsg`: `BATCH` slots, each with `headroom` free bytes in front of the
/// datagram (for a PROXY header) and room for `capacity` bytes.
pub(crate) struct RecvBatch {
    buffer: Vec<u8>,
    headroom: usize,
    capacity: usize,
    /// Each slot's ancillary data (`CONTROL_WORDS` words): the packet information of a
    /// socket that asked for it ([`enable_pktinfo`]).
    control: Vec<u64>,
    received: Vec<Received>,
}

/// Words of ancillary data per received datagram: room for one `in6_pktinfo` (or
/// `in_pktinfo`) message with its header, and some to spare.
const CONTROL_WORDS: usize = 8;

/// One received datagram: where it came from, where it was sent (on a socket with
/// [`enable_pktinfo`]), its length, whether it was cut.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Received {
    pub source: Option<SocketAddr>,
    pub local: Option<IpAddr>,
    pub length: usize,
    pub truncated: bool,
}

impl RecvBatch {
    pub(crate) fn new(headroom: usize, capacity: usize) -> RecvBatch {
        RecvBatch {
            buffer: vec![0u8; BATCH * (headroom + capacity)],
            headroom,
            capacity,
            control: vec![0u64; BATCH * CONTROL_WORDS],
            received: Vec::with_capacity(BATCH),
        }
    }

    fn stride(&self) -> usize {
        self.headroom + self.capacity
    }

    /// Receives up to [`BATCH`] datagrams without blocking. `Ok(0)` never happens: no
    /// datagram waiting is `WouldBlock`.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let stride = self.stride();
        let base = self.buffer.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        // SAFETY: zeroed sockaddr_storage, iovec and mmsghdr are valid (null pointers, zero
        // lengths); every pointer set below points into `self.buffer` (each iovec inside its own
        // slot), into `self.control` (each slot's own words) or into these local arrays, all of
        // which outlive the call.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovecs[i] = libc::iovec {
                // SAFETY: `i * stride + headroom` is within the buffer (BATCH * stride bytes).
                iov_base: unsafe { base.add(i * stride + self.headroom) }.cast(),
                iov_len: self.capacity,
            };
            let header = &mut headers[i].msg_hdr;
            header.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
            // SAFETY: slot `i`'s words are within `self.control` (BATCH * CONTROL_WORDS).
            header.msg_control = unsafe { control.add(i * CONTROL_WORDS) }.cast();
            header.msg_controllen = (CONTROL_WORDS * size_of::<u64>()) as _;
        }
        // SAFETY: the headers describe BATCH valid, writable buffers and name slots.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received.clear();
        for (header, name) in headers.iter().zip(&names).take(count as usize) {
            let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.received.push(Received {
                source: socket_addr(name, header.msg_hdr.msg_namelen),
                local: packet_destination(&header.msg_hdr),
                length: (header.msg_len as usize).min(self.capacity),
                truncated,
            });
        }
        Ok(self.received.len())
    }

    /// What the last `recv` got.
    pub(crate) fn received(&self) -> &[Received] {
        &self.received
    }

    /// Slot `i`: the headroom followed by its datagram (`headroom + length` bytes).
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let stride = self.stride();
        let end = i * stride + self.headroom + self.received[i].length;
        &mut self.buffer[i * stride..end]
    }

    /// Slot `i`'s datagram alone.
    pub(crate) fn datagram(&self, i: usize) -> &[u8] {
        let start = i * self.stride() + self.headroom;
        &self.buffer[start..start + self.received[i].length]
    }

    pub(crate) fn headroom(&self) -> usize {
        self.headroom
    }
}

/// Bytes a send queue keeps allocated between flushes.
const MAX_KEPT_QUEUE_BYTES: usize = 16 << 10;

/// A send buffer with no room (`EAGAIN`, `ENOBUFS`).
fn is_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock || error.raw_os_error() == Some(libc::ENOBUFS)
}

/// Datagrams waiting to be sent from one socket, each to its own destination, with a tag the
/// caller uses to learn which ones failed.
#[derive(Debug)]
pub(crate) struct SendQueue<T> {
    bytes: Vec<u8>,
    entries: Vec<Queued<T>>,
}

/// One queued datagram: its bytes in the queue's buffer, where it goes, the source address
/// it must leave from (a wildcard listener's reply), and the caller's tag.
#[derive(Copy, Clone, Debug)]
struct Queued<T> {
    offset: usize,
    length: usize,
    destination: SocketAddr,
    source: Option<IpAddr>,
    tag: T,
}

impl<T> Default for SendQueue<T> {
    fn default() -> Self {
        SendQueue { bytes: Vec::new(), entries: Vec::new() }
    }
}

/// A datagram of a queue that could not be sent, and why.
#[derive(Debug)]
pub(crate) struct SendFailure<T> {
    pub tag: T,
    pub length: usize,
    pub error: io::Error,
}

impl<T: Copy> SendQueue<T> {
    pub(crate) fn push(&mut self, destination: SocketAddr, datagram: &[u8], tag: T) {
        self.push_from(None, destination, datagram, tag);
    }

    /// Queues a datagram that must leave from `source` (`IP_PKTINFO`/`IPV6_PKTINFO` on its
    /// send): a socket bound to a wildcard address would otherwise let the kernel pick one.
    pub(crate) fn push_from(
        &mut self,
        source: Option<IpAddr>,
        destination: SocketAddr,
        datagram: &[u8],
        tag: T,
    ) {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.entries.push(Queued { offset, length: datagram.len(), destination, source, tag });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sends everything queued with as few `sendmmsg` calls as the kernel allows, and empties
    /// the queue. A datagram the kernel refuses is skipped and reported to `failed`; `retry`
    /// says whether an error is worth one more attempt of the same datagram (a pending ICMP
    /// error reported on an unconnected socket's next send is about an *earlier* datagram).
    pub(crate) fn flush(
        &mut self,
        fd: RawFd,
        mut retry: impl FnMut(&io::Error) -> bool,
        mut failed: impl FnMut(SendFailure<T>),
    ) {
        let mut next = 0;
        let mut retried_at = usize::MAX;
        while next < self.entries.len() {
            let end = (next + BATCH).min(self.entries.len());
            match self.send_some(fd, next, end) {
                Ok(sent) => next += sent,
                Err(error) if is_full(&error) => {
                    // The socket's send buffer is full: the rest would fail the same way.
                    for entry in &self.entries[next..] {
                        let (tag, length) = (entry.tag, entry.length);
                        failed(SendFailure { tag, length, error: io::Error::from(error.kind()) });
                    }
                    break;
                }
                Err(error) => {
                    if retried_at != next && retry(&error) {
                        retried_at = next;
                        continue;
                    }
                    let (tag, length) = (self.entries[next].tag, self.entries[next].length);
                    failed(SendFailure { tag, length, error });
                    next += 1;
                }
            }
        }
        self.bytes.clear();
        self.entries.clear();
        // A burst of large datagrams must not pin its memory on every socket it went through.
        if self.bytes.capacity() > MAX_KEPT_QUEUE_BYTES {
            self.bytes.shrink_to(MAX_KEPT_QUEUE_BYTES);
            self.entries.shrink_to(BATCH);
        }
    }

    /// One `sendmmsg` of entries `start..end`; how many went out (at least one), or the
    /// error of the first.
    fn send_some(&self, fd: RawFd, start: usize, end: usize) -> io::Result<usize> {
        let count = end - start;
        let mut names: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        // SAFETY: zeroed iovec and mmsghdr are valid; the pointers set below point into
        // `self.bytes` (read only by the kernel) and into `names`, which outlive the call.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        let mut controls = [[0u64; CONTROL_WORDS]; BATCH];
        for (i, entry) in self.entries[start..end].iter().enumerate() {
            let name = names[i].write(SockAddr::from(entry.destination));
            iovecs[i] = libc::iovec {
                iov_base: self.bytes[entry.offset..].as_ptr().cast_mut().cast(),
                iov_len: entry.length,
            };
            let header = &mut headers[i].msg_hdr;
            header.msg_name = name.as_ptr().cast_mut().cast();
            header.msg_namelen = name.len();
            header.msg_iov = &mut iovecs[i];
            header.msg_iovlen = 1;
            if let Some(source) = entry.source {
                set_packet_source(header, &mut controls[i], source, entry.destination.is_ipv6());
            }
        }
        // SAFETY: `count` headers are initialised and describe readable buffers and names.
        let sent =
            unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
        if sent <= 0 {
            // 0 cannot happen for a non-empty batch; treat it as an error rather than spin.
            let error = io::Error::last_os_error();
            return Err(if sent == 0 { io::Error::from(io::ErrorKind::WriteZero) } else { error });
        }
        Ok(sent as usize)
    }
}

/// Asks the kernel to say, for every datagram a socket receives, the address it was sent to
/// (`IP_PKTINFO`, or `IPV6_RECVPKTINFO`, which also covers IPv4 datagrams on a dual-stack
/// socket, as IPv4-mapped addresses): a socket bound to a wildcard address learns which of
/// the host's addresses each client used.
pub(crate) fn enable_pktinfo(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        set_flag(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// Sets a boolean socket option.
fn set_flag(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid c_int option value and its size.
    let result = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// The destination address of a received datagram, from its packet information (present
/// only on a socket with [`enable_pktinfo`]).
fn packet_destination(header: &libc::msghdr) -> Option<IpAddr> {
    if header.msg_controllen == 0 {
        return None;
    }
    let mut local = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen; each
    // payload read is the size the kernel wrote for its type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    local
}

/// Points `header`'s ancillary data at `control`, holding one packet-information message
/// that makes the datagram leave from `source`: `IPV6_PKTINFO` on an IPv6 socket (an IPv4
/// source as IPv4-mapped, for an IPv4 client of a dual-stack socket), `IP_PKTINFO` with
/// `ipi_spec_dst` on an IPv4 one. The interface is left to the route.
fn set_packet_source(
    header: &mut libc::msghdr,
    control: &mut [u64; CONTROL_WORDS],
    source: IpAddr,
    ipv6_socket: bool,
) {
    if ipv6_socket {
        let address = match source {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let info =
            libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: address.octets() }, ipi6_ifindex: 0 };
        put_control_message(header, control, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info);
    } else {
        // An IPv6 source cannot leave an IPv4 socket: then the kernel picks.
        let IpAddr::V4(address) = source.to_canonical() else { return };
        let spec_dst = libc::in_addr { s_addr: u32::from(address).to_be() };
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: spec_dst,
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        put_control_message(header, control, libc::IPPROTO_IP, libc::IP_PKTINFO, info);
    }
}

/// Makes `control` the ancillary data of `header`, with one message of `level` and `kind`
/// carrying `value`.
fn put_control_message<T>(
    header: &mut libc::msghdr,
    control: &mut [u64; CONTROL_WORDS],
    level: libc::c_int,
    kind: libc::c_int,
    value: T,
) {
    let length = size_of::<T>() as u32;
    // SAFETY: CMSG_SPACE(length) fits `control` (a packet-information structure takes at most
    // 40 of its 64 bytes, `control_room_fits_packet_information`), so CMSG_FIRSTHDR is
    // non-null and the header and data written stay inside `control`, which outlives the send.
    unsafe {
        debug_assert!(libc::CMSG_SPACE(length) as usize <= size_of::<[u64; CONTROL_WORDS]>());
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = libc::CMSG_SPACE(length) as _;
        let cmsg = libc::CMSG_FIRSTHDR(header);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(length) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), value);
    }
}

/// An ICMP error the kernel queued on a socket with `IP_RECVERR`: the destination of the
/// datagram it was about, and the error (`ECONNREFUSED` for port unreachable).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct QueuedError {
    pub destination: SocketAddr,
    pub errno: i32,
}

/// Asks the kernel to queue ICMP errors on an unconnected UDP socket (`IP_RECVERR`, or
/// `IPV6_RECVERR`), so that they can be read back with the destination they concern.
pub(crate) fn enable_recverr(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let (level, name) =
        if ipv6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) } else { (libc::IPPROTO_IP, libc::IP_RECVERR) };
    set_flag(fd, level, name)
}

/// Reads one error from a socket's error queue (`MSG_ERRQUEUE`), or `None` once it is empty.
pub(crate) fn recv_error(fd: RawFd) -> Option<QueuedError> {
    let mut payload = [0u8; 64];
    let mut control = [0u64; 64];
    // SAFETY: zeroed sockaddr_storage and msghdr are valid; the pointers below point into
    // these locals, which outlive the call.
    let mut name: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iovec = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut header: libc::msghdr = unsafe { zeroed() };
    header.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    header.msg_iov = &mut iovec;
    header.msg_iovlen = 1;
    header.msg_control = control.as_mut_ptr().cast();
    header.msg_controllen = size_of::<[u64; 64]>() as _;
    // SAFETY: the header describes valid, writable buffers.
    let received = unsafe { libc::recvmsg(fd, &mut header, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if received < 0 {
        return None;
    }
    let destination = socket_addr(&name, header.msg_namelen)?;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    let mut errno = None;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&header);
        while !cmsg.is_null() {
            let level = (*cmsg).cmsg_level;
            let kind = (*cmsg).cmsg_type;
            if (level == libc::IPPROTO_IP && kind == libc::IP_RECVERR)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_RECVERR)
            {
                let error: libc::sock_extended_err = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                errno = Some(error.ee_errno as i32);
            }
            cmsg = libc::CMSG_NXTHDR(&header, cmsg);
        }
    }
    // An entry without the extended error is still an error about `destination`.
    Some(QueuedError { destination, errno: errno.unwrap_or(libc::EIO) })
}

/// A `sockaddr_storage` the kernel filled, as a Rust address (`None` for other families).
fn socket_addr(storage: &libc::sockaddr_storage, length: libc::socklen_t) -> Option<SocketAddr> {
    let mut copy = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is one of the platform's `sockaddr_*` types, and socket2's
    // storage is that type; the kernel wrote `length` valid bytes of it.
    unsafe {
        *copy.view_as::<libc::sockaddr_storage>() = *storage;
        SockAddr::new(copy, length)
    }
    .as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        (a, b)
    }

    #[test]
    fn addresses_round_trip() {
        for text in ["127.0.0.1:53", "[::1]:5353", "[fe80::1%3]:9", "0.0.0.0:0"] {
            let address: SocketAddr = text.parse().unwrap();
            let name = SockAddr::from(address);
            // SAFETY: socket2's storage is a `sockaddr_storage`.
            let storage = unsafe { *name.as_ptr().cast::<libc::sockaddr_storage>() };
            assert_eq!(socket_addr(&storage, name.len()), Some(address), "{text}");
        }
    }

    #[test]
    fn a_queue_arrives_in_order_with_sources_and_headroom() {
        let (a, b) = pair();
        let mut queue = SendQueue::default();
        for i in 0..(BATCH + 7) as u32 {
            queue.push(b.local_addr().unwrap(), &i.to_be_bytes(), i);
        }
        assert_eq!(queue.len(), BATCH + 7);
        queue.flush(a.as_raw_fd(), |_| false, |failure| panic!("{failure:?}"));
        assert!(queue.is_empty());
        let mut batch = RecvBatch::new(16, 100);
        let mut seen = Vec::new();
        while seen.len() < BATCH + 7 {
            let count = batch.recv(b.as_raw_fd()).expect("loopback delivers at once");
            for i in 0..count {
                let received = batch.received()[i];
                assert_eq!(received.source, Some(a.local_addr().unwrap()));
                assert!(!received.truncated);
                assert_eq!(batch.slot_mut(i).len(), 16 + 4);
                seen.push(u32::from_be_bytes(batch.datagram(i).try_into().unwrap()));
            }
        }
        assert_eq!(seen, (0..(BATCH + 7) as u32).collect::<Vec<_>>());
        assert_eq!(batch.recv(b.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn control_room_fits_packet_information() {
        let room = CONTROL_WORDS * size_of::<u64>();
        // SAFETY: CMSG_SPACE is arithmetic.
        let needed = unsafe {
            libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32)
                .max(libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32))
        };
        assert!(needed as usize <= room, "{needed} > {room}");
    }

    /// A socket on the wildcard address learns each datagram's destination, and a reply
    /// queued with a source leaves from it.
    #[test]
    fn a_wildcard_socket_reads_the_destination_and_replies_from_it() {
        let server = UdpSocket::bind("0.0.0.0:0").unwrap();
        enable_pktinfo(server.as_raw_fd(), false).unwrap();
        let port = server.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(1))).unwrap();
        for vip in ["127.0.0.2", "127.0.0.3"] {
            let to = SocketAddr::new(vip.parse().unwrap(), port);
            client.send_to(b"q", to).unwrap();
            let mut batch = RecvBatch::new(0, 100);
            assert_eq!(batch.recv(server.as_raw_fd()).unwrap(), 1);
            let received = batch.received()[0];
            assert_eq!(received.local, Some(to.ip()));
            let mut queue = SendQueue::default();
            queue.push_from(received.local, received.source.unwrap(), b"r", ());
            queue.flush(server.as_raw_fd(), |_| false, |failure| panic!("{failure:?}"));
            let mut buffer = [0u8; 8];
            let (_, from) = client.recv_from(&mut buffer).unwrap();
            assert_eq!(from, to, "the reply left from another address");
        }
    }

    #[test]
    fn a_datagram_larger_than_the_slot_is_marked_truncated() {
        let (a, b) = pair();
        a.send_to(&[7u8; 300], b.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(0, 100);
        assert_eq!(batch.recv(b.as_raw_fd()).unwrap(), 1);
        assert!(batch.received()[0].truncated);
        assert_eq!(batch.datagram(0).len(), 100);
    }

    #[test]
    fn a_refusal_names_the_destination_and_fails_the_next_send_once() {
        let (a, _) = pair();
        enable_recverr(a.as_raw_fd(), false).unwrap();
        let closed = {
            let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap()
        };
        let (_, alive) = pair();
        a.send_to(b"x", closed).unwrap();
        // The ICMP port unreachable comes back through loopback at once.
        let error = recv_error(a.as_raw_fd()).expect("an error is queued");
        assert_eq!(error, QueuedError { destination: closed, errno: libc::ECONNREFUSED });
        assert_eq!(recv_error(a.as_raw_fd()), None);
        // The pending socket error makes one send fail; the queue retries it once.
        a.send_to(b"y", closed).unwrap();
        let mut queue = SendQueue::default();
        queue.push(alive.local_addr().unwrap(), b"z", 1u8);
        let mut retries = 0;
        queue.flush(
            a.as_raw_fd(),
            |error| {
                retries += 1;
                error.raw_os_error() == Some(libc::ECONNREFUSED)
            },
            |failure| panic!("{failure:?}"),
        );
        assert_eq!(retries, 1);
        let mut buffer = [0u8; 8];
        assert_eq!(alive.recv_from(&mut buffer).unwrap().0, 1);
    }
}
