//! The hot-path encoder: writes the PROXY header of one forwarded datagram straight into the
//! headroom the shell left in front of it. Allocation-free, and the length is known before
//! anything is written, so the flow manager can check `max_datagram_size` first.
//!
//! It writes with the field writers of the emit layer, the ones
//! [`Header::emit`](super::Header::emit) uses, so the two encoders cannot drift apart; and
//! [`Header::proxy`] / [`Header::local`] describe, as a representation, what it writes.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::emit::{
    Writer, family_transport, version_command, write_checksum, write_checksum_placeholder, write_fixed,
    write_tlv,
};
use super::error::BufferTooSmall;
use super::field::{
    AddressFamily, CRC32C_TLV_LEN, Command, FIXED_HEADER_LEN, IPV4_ADDRESS_BLOCK_LEN, IPV6_ADDRESS_BLOCK_LEN,
    Transport, UNIQUE_ID_TLV_LEN,
};
use super::repr::{Addresses, Header};
use super::tlv::{Tlv, TlvKind};

/// The version/command byte of a PROXY header: version 2, command PROXY.
const PROXY_VERSION_COMMAND: u8 = version_command(Command::Proxy);
/// The version/command byte of a LOCAL header: version 2, command LOCAL.
const LOCAL_VERSION_COMMAND: u8 = version_command(Command::Local);
/// Family/transport byte for UDP over IPv4 (PPv2 §2.2: `\x12`).
const INET_DGRAM: u8 = family_transport(AddressFamily::Inet, Transport::Dgram);
/// Family/transport byte for UDP over IPv6 (PPv2 §2.2: `\x22`).
const INET6_DGRAM: u8 = family_transport(AddressFamily::Inet6, Transport::Dgram);
/// Family/transport byte of a LOCAL header: AF_UNSPEC, UNSPEC (PPv2 §2.2: `\x00`).
const UNSPEC: u8 = family_transport(AddressFamily::Unspec, Transport::Unspec);

/// TLVs the encoder can add.
///
/// They are written in a fixed order: CRC32C first, then UNIQUE_ID. Putting the checksum
/// first gives its field a fixed offset for each address family (31 for IPv4, 55 for IPv6),
/// so a capture can be checked by eye and the encoder never searches for it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlvOptions {
    /// Add a PP2_TYPE_CRC32C TLV (PPv2 §2.2.3): the Castagnoli CRC of the whole header.
    pub crc32c: bool,
    /// Add a PP2_TYPE_UNIQUE_ID TLV (PPv2 §2.2.5) carrying these 16 bytes (udplb passes its
    /// worker's 8-byte prefix, drawn at start, then the flow's serial, big-endian).
    pub unique_id: Option<[u8; 16]>,
}

impl TlvOptions {
    /// Bytes these TLVs take.
    pub const fn len(self) -> usize {
        let crc32c = if self.crc32c { CRC32C_TLV_LEN } else { 0 };
        let unique_id = if self.unique_id.is_some() { UNIQUE_ID_TLV_LEN } else { 0 };
        crc32c + unique_id
    }

    /// Whether no TLV is asked for.
    pub const fn is_empty(self) -> bool {
        !self.crc32c && self.unique_id.is_none()
    }

    /// The same TLVs as a list, in the order the encoder writes them.
    pub fn to_tlvs(self) -> Vec<Tlv> {
        let crc32c = self.crc32c.then(Tlv::crc32c);
        let unique_id = self.unique_id.map(Tlv::unique_id);
        crc32c.into_iter().chain(unique_id).collect()
    }
}

/// Bytes of a PROXY-command DGRAM header for these addresses and TLVs.
pub fn proxy_header_len(source: SocketAddr, destination: SocketAddr, tlvs: TlvOptions) -> usize {
    FIXED_HEADER_LEN + AddressPair::new(source, destination).block_len() + tlvs.len()
}

/// Writes exactly [`proxy_header_len`] bytes into `out[..len]` and returns len.
/// Allocation-free.
///
/// Source is the real client and destination the VIP it sent to. IPv4-mapped IPv6
/// addresses (a dual-stack socket's view of IPv4 peers) are canonicalised to IPv4, so two
/// IPv4 endpoints always give a 0x12 (UDP over IPv4) header; a genuine mix of families is
/// written as 0x22 (UDP over IPv6) with the IPv4 side as `::ffff:a.b.c.d`. IPv6 flow info
/// and scope ids are not carried (PPv2 §2.2 has no field for them).
pub fn write_proxy_header(
    out: &mut [u8],
    source: SocketAddr,
    destination: SocketAddr,
    tlvs: TlvOptions,
) -> Result<usize, BufferTooSmall> {
    let addresses = AddressPair::new(source, destination);
    let family_transport = match addresses {
        AddressPair::V4(..) => INET_DGRAM,
        AddressPair::V6(..) => INET6_DGRAM,
    };
    let payload_len = addresses.block_len() + tlvs.len();
    let header_len = FIXED_HEADER_LEN + payload_len;
    let header = out.get_mut(..header_len).ok_or(BufferTooSmall)?;
    let mut writer = Writer::new(header);
    // Cannot truncate: the payload is at most 54 bytes.
    let payload_len = payload_len as u16;
    write_fixed(&mut writer, PROXY_VERSION_COMMAND, family_transport, payload_len)?;
    addresses.write(&mut writer)?;
    let checksum_offset = write_tlvs(&mut writer, tlvs)?;
    if let Some(offset) = checksum_offset {
        write_checksum(header, offset)?;
    }
    Ok(header_len)
}

/// Bytes of a LOCAL-command header carrying these TLVs.
pub const fn local_header_len(tlvs: TlvOptions) -> usize {
    FIXED_HEADER_LEN + tlvs.len()
}

/// Writes a LOCAL-command header (0x20, AF_UNSPEC/UNSPEC 0x00, no addresses) with these
/// TLVs into `out[..len]` and returns len. Health probes carry it when a cluster speaks
/// PPv2, so the backend's parser accepts them and uses the probe's real endpoints
/// (PPv2 §2.2: "Such connections exist when the proxy sends health-checks to the server").
pub fn write_local_header(out: &mut [u8], tlvs: TlvOptions) -> Result<usize, BufferTooSmall> {
    let header_len = local_header_len(tlvs);
    let header = out.get_mut(..header_len).ok_or(BufferTooSmall)?;
    let mut writer = Writer::new(header);
    // Cannot truncate: the payload is at most 18 bytes.
    let payload_len = tlvs.len() as u16;
    write_fixed(&mut writer, LOCAL_VERSION_COMMAND, UNSPEC, payload_len)?;
    let checksum_offset = write_tlvs(&mut writer, tlvs)?;
    if let Some(offset) = checksum_offset {
        write_checksum(header, offset)?;
    }
    Ok(header_len)
}

/// Writes the optional TLVs, the checksum's value zeroed, and returns that value's offset.
fn write_tlvs(writer: &mut Writer<'_>, tlvs: TlvOptions) -> Result<Option<usize>, BufferTooSmall> {
    let checksum_offset = if tlvs.crc32c { Some(write_checksum_placeholder(writer)?) } else { None };
    if let Some(id) = tlvs.unique_id {
        write_tlv(writer, TlvKind::UNIQUE_ID, &id)?;
    }
    Ok(checksum_offset)
}

/// A source/destination pair as it goes on the wire: both IPv4 after canonicalisation, or
/// both IPv6 with any IPv4 side mapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum AddressPair {
    V4(SocketAddrV4, SocketAddrV4),
    V6(SocketAddrV6, SocketAddrV6),
}

impl AddressPair {
    fn new(source: SocketAddr, destination: SocketAddr) -> Self {
        match (canonical(source), canonical(destination)) {
            (SocketAddr::V4(source), SocketAddr::V4(destination)) => AddressPair::V4(source, destination),
            (source, destination) => AddressPair::V6(mapped(source), mapped(destination)),
        }
    }

    fn block_len(self) -> usize {
        match self {
            AddressPair::V4(..) => IPV4_ADDRESS_BLOCK_LEN,
            AddressPair::V6(..) => IPV6_ADDRESS_BLOCK_LEN,
        }
    }

    /// Writes the block with the same code as [`Header::emit`](super::Header::emit).
    fn write(self, writer: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        Addresses::from(self).write(writer)
    }
}

impl From<AddressPair> for Addresses {
    fn from(pair: AddressPair) -> Self {
        match pair {
            AddressPair::V4(source, destination) => Addresses::Ipv4 { source, destination },
            AddressPair::V6(source, destination) => {
                Addresses::Ipv6 { source: without_scope(source), destination: without_scope(destination) }
            }
        }
    }
}

/// `address` with an IPv4-mapped IPv6 address turned into the IPv4 one.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// `address` as IPv6, an IPv4 address becoming `::ffff:a.b.c.d`.
fn mapped(address: SocketAddr) -> SocketAddrV6 {
    match address {
        SocketAddr::V4(v4) => SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0),
        SocketAddr::V6(v6) => v6,
    }
}

/// `address` without the flow info and scope id the wire cannot carry.
fn without_scope(address: SocketAddrV6) -> SocketAddrV6 {
    SocketAddrV6::new(*address.ip(), address.port(), 0, 0)
}

impl Header {
    /// The header [`write_proxy_header`] writes for these arguments: PROXY, DGRAM,
    /// addresses as [`Addresses::from_socket_addrs`] chooses, then the CRC32C TLV (first)
    /// and the UNIQUE_ID TLV if asked for.
    pub fn proxy(source: SocketAddr, destination: SocketAddr, tlvs: TlvOptions) -> Self {
        Header {
            command: Command::Proxy,
            transport: Transport::Dgram,
            addresses: Addresses::from_socket_addrs(source, destination),
            tlvs: tlvs.to_tlvs(),
        }
    }

    /// The header [`write_local_header`] writes: LOCAL, UNSPEC family and transport,
    /// no address block, then the TLVs asked for.
    pub fn local(tlvs: TlvOptions) -> Self {
        Header {
            command: Command::Local,
            transport: Transport::Unspec,
            addresses: Addresses::Unspec,
            tlvs: tlvs.to_tlvs(),
        }
    }
}

impl Addresses {
    /// The addresses `write_proxy_header` puts on the wire for this pair: IPv4-mapped
    /// inputs are canonicalised to IPv4 first, and a remaining IPv4/IPv6 mix is written as
    /// IPv6 with the IPv4 side mapped (`::ffff:a.b.c.d`).
    pub fn from_socket_addrs(source: SocketAddr, destination: SocketAddr) -> Self {
        AddressPair::new(source, destination).into()
    }
}
