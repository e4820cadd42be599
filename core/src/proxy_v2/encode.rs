//! The hot-path encoder: writes the PROXY header of one forwarded datagram straight into the
//! headroom the shell left in front of it. Allocation-free, and the length is known before
//! anything is written, so the flow manager can check `max_datagram_size` first.
//!
//! The field writers here (fixed header, TLVs, checksum) are also what
//! [`Header::emit`](super::Header::emit) uses, so the two encoders cannot drift apart.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::error::BufferTooSmall;
use super::repr::{
    AddressFamily, Addresses, Command, IPV4_ADDRESS_BLOCK_LEN, IPV6_ADDRESS_BLOCK_LEN, Transport,
};
use super::tlv::{CRC32C_VALUE_LEN, Tlv, TlvKind};
use super::wire::{FIXED_HEADER_LEN, SIGNATURE, TLV_HEADER_LEN, VERSION};

/// Bytes of the CRC32C TLV: type, length, 4-byte checksum (PPv2 §2.2.3).
pub const CRC32C_TLV_LEN: usize = TLV_HEADER_LEN + CRC32C_VALUE_LEN;

/// Bytes of the UNIQUE_ID TLV udplb sends: type, length, the flow serial as a big-endian
/// u64 (PPv2 §2.2.5 allows up to 128 value bytes; 8 suffice).
pub const UNIQUE_ID_TLV_LEN: usize = TLV_HEADER_LEN + 8;

/// Largest header [`write_proxy_header`] can produce (both TLVs, IPv6): 70 bytes. The shell
/// reserves this much headroom in front of every received datagram.
pub const MAX_PROXY_HEADER_LEN: usize =
    FIXED_HEADER_LEN + IPV6_ADDRESS_BLOCK_LEN + CRC32C_TLV_LEN + UNIQUE_ID_TLV_LEN;

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

/// The 13th byte: version 2 in the high nibble, the command in the low one.
pub(super) const fn version_command(command: Command) -> u8 {
    VERSION << 4 | command.nibble()
}

/// The 14th byte: the address family in the high nibble, the transport in the low one.
pub(super) const fn family_transport(family: AddressFamily, transport: Transport) -> u8 {
    family.nibble() << 4 | transport.nibble()
}

/// TLVs the encoder can add.
///
/// They are written in a fixed order: CRC32C first, then UNIQUE_ID. Putting the checksum
/// first gives its field a fixed offset for each address family (31 for IPv4, 55 for IPv6),
/// so a capture can be checked by eye and the encoder never searches for it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlvOptions {
    /// Add a PP2_TYPE_CRC32C TLV (PPv2 §2.2.3): the Castagnoli CRC of the whole header.
    pub crc32c: bool,
    /// Add a PP2_TYPE_UNIQUE_ID TLV (PPv2 §2.2.5) carrying this value as 8 big-endian bytes
    /// (udplb passes the flow serial).
    pub unique_id: Option<u64>,
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

/// Writes the 16-byte fixed header (PPv2 §2.2) of a header with `payload_len` bytes after it.
pub(super) fn write_fixed(
    writer: &mut Writer<'_>,
    version_command: u8,
    family_transport: u8,
    payload_len: u16,
) -> Result<(), BufferTooSmall> {
    writer.put(&SIGNATURE)?;
    writer.put(&[version_command, family_transport])?;
    writer.put(&payload_len.to_be_bytes())
}

/// Writes the optional TLVs, the checksum's value zeroed, and returns that value's offset.
fn write_tlvs(writer: &mut Writer<'_>, tlvs: TlvOptions) -> Result<Option<usize>, BufferTooSmall> {
    let checksum_offset = if tlvs.crc32c { Some(write_checksum_placeholder(writer)?) } else { None };
    if let Some(id) = tlvs.unique_id {
        write_tlv(writer, TlvKind::UNIQUE_ID, &id.to_be_bytes())?;
    }
    Ok(checksum_offset)
}

/// Writes a CRC32C TLV with its value zeroed and returns the value's offset, where
/// [`write_checksum`] puts the checksum once the rest of the header is written.
pub(super) fn write_checksum_placeholder(writer: &mut Writer<'_>) -> Result<usize, BufferTooSmall> {
    writer.put(&[TlvKind::CRC32C, 0, CRC32C_VALUE_LEN as u8])?;
    let offset = writer.position();
    writer.put(&[0; CRC32C_VALUE_LEN])?;
    Ok(offset)
}

/// Writes one TLV. Callers keep `value` under 65536 bytes (the whole payload must fit the
/// 16-bit length field), so its length cannot truncate.
pub(super) fn write_tlv(writer: &mut Writer<'_>, kind: u8, value: &[u8]) -> Result<(), BufferTooSmall> {
    writer.put(&[kind])?;
    writer.put(&(value.len() as u16).to_be_bytes())?;
    writer.put(value)
}

/// Fills the zeroed checksum field at `offset` with the CRC32C of the whole `header`
/// (PPv2 §2.2.3), big-endian as every multi-byte PPv2 field.
pub(super) fn write_checksum(header: &mut [u8], offset: usize) -> Result<(), BufferTooSmall> {
    let checksum = if crate::mutants::active(crate::mutants::Mutant::IeeeCrc32) {
        crate::mutants::ieee_crc32(header)
    } else {
        crc32c::crc32c(header)
    };
    let field = header.get_mut(offset..offset + CRC32C_VALUE_LEN).ok_or(BufferTooSmall)?;
    field.copy_from_slice(&checksum.to_be_bytes());
    Ok(())
}

/// A source/destination pair as it goes on the wire: both IPv4 after canonicalisation, or
/// both IPv6 with any IPv4 side mapped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum AddressPair {
    V4(SocketAddrV4, SocketAddrV4),
    V6(SocketAddrV6, SocketAddrV6),
}

impl AddressPair {
    pub(super) fn new(source: SocketAddr, destination: SocketAddr) -> Self {
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

/// A cursor that writes byte strings one after another into a slice, failing instead of
/// panicking when the slice runs out.
pub(super) struct Writer<'a> {
    out: &'a mut [u8],
    position: usize,
}

impl<'a> Writer<'a> {
    pub(super) fn new(out: &'a mut [u8]) -> Self {
        Writer { out, position: 0 }
    }

    /// Bytes written so far.
    pub(super) fn position(&self) -> usize {
        self.position
    }

    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<(), BufferTooSmall> {
        let end = self.position.checked_add(bytes.len()).ok_or(BufferTooSmall)?;
        let target = self.out.get_mut(self.position..end).ok_or(BufferTooSmall)?;
        target.copy_from_slice(bytes);
        self.position = end;
        Ok(())
    }
}
