//! The representation of a PROXY protocol v2 header: what a header says, independent of its
//! bytes, with [`Header::parse`], [`Header::buffer_len`] and [`Header::emit`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::encode::{
    AddressPair, TlvOptions, Writer, family_transport, version_command, write_checksum,
    write_checksum_placeholder, write_fixed, write_tlv,
};
use super::error::{BufferTooSmall, DecodeError, EmitError};
use super::tlv::{CRC32C_VALUE_LEN, Tlv, TlvKind, UNIQUE_ID_MAX_LEN};
use super::wire::{self, FIXED_HEADER_LEN, Packet};

/// Bytes of an AF_INET address block: two 4-byte addresses and two ports (PPv2 §2.2).
pub const IPV4_ADDRESS_BLOCK_LEN: usize = 12;
/// Bytes of an AF_INET6 address block: two 16-byte addresses and two ports (PPv2 §2.2).
pub const IPV6_ADDRESS_BLOCK_LEN: usize = 36;
/// Bytes of an AF_UNIX address block: two 108-byte paths (PPv2 §2.2).
pub const UNIX_ADDRESS_BLOCK_LEN: usize = 216;
/// Bytes of one AF_UNIX address (`sun_path`).
pub const UNIX_ADDRESS_LEN: usize = 108;

/// The command in the low nibble of the 13th byte (PPv2 §2.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// The proxy opened the connection itself (health checks): the receiver uses the real
    /// endpoints and ignores the address block.
    Local,
    /// The connection is relayed; the address block carries the original endpoints.
    Proxy,
}

impl Command {
    /// The nibble on the wire.
    pub const fn nibble(self) -> u8 {
        match self {
            Command::Local => 0x0,
            Command::Proxy => 0x1,
        }
    }

    fn from_nibble(nibble: u8) -> Option<Self> {
        match nibble {
            0x0 => Some(Command::Local),
            0x1 => Some(Command::Proxy),
            _ => None,
        }
    }
}

/// The address family in the high nibble of the 14th byte (PPv2 §2.2). It fixes the size
/// of the address block.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// AF_UNSPEC: no address block.
    Unspec,
    /// AF_INET: IPv4 addresses and ports, 12 bytes.
    Inet,
    /// AF_INET6: IPv6 addresses and ports, 36 bytes.
    Inet6,
    /// AF_UNIX: two 108-byte socket paths, 216 bytes.
    Unix,
}

impl AddressFamily {
    /// The nibble on the wire.
    pub const fn nibble(self) -> u8 {
        match self {
            AddressFamily::Unspec => 0x0,
            AddressFamily::Inet => 0x1,
            AddressFamily::Inet6 => 0x2,
            AddressFamily::Unix => 0x3,
        }
    }

    /// Bytes of this family's address block.
    pub const fn address_block_len(self) -> usize {
        match self {
            AddressFamily::Unspec => 0,
            AddressFamily::Inet => IPV4_ADDRESS_BLOCK_LEN,
            AddressFamily::Inet6 => IPV6_ADDRESS_BLOCK_LEN,
            AddressFamily::Unix => UNIX_ADDRESS_BLOCK_LEN,
        }
    }

    fn from_nibble(nibble: u8) -> Option<Self> {
        match nibble {
            0x0 => Some(AddressFamily::Unspec),
            0x1 => Some(AddressFamily::Inet),
            0x2 => Some(AddressFamily::Inet6),
            0x3 => Some(AddressFamily::Unix),
            _ => None,
        }
    }
}

impl core::fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AddressFamily::Unspec => "AF_UNSPEC",
            AddressFamily::Inet => "AF_INET",
            AddressFamily::Inet6 => "AF_INET6",
            AddressFamily::Unix => "AF_UNIX",
        })
    }
}

/// The transport protocol in the low nibble of the 14th byte (PPv2 §2.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UNSPEC: unknown or unsupported protocol (and LOCAL commands).
    Unspec,
    /// STREAM: TCP or UNIX_STREAM.
    Stream,
    /// DGRAM: UDP or UNIX_DGRAM; what udplb sends.
    Dgram,
}

impl Transport {
    /// The nibble on the wire.
    pub const fn nibble(self) -> u8 {
        match self {
            Transport::Unspec => 0x0,
            Transport::Stream => 0x1,
            Transport::Dgram => 0x2,
        }
    }

    fn from_nibble(nibble: u8) -> Option<Self> {
        match nibble {
            0x0 => Some(Transport::Unspec),
            0x1 => Some(Transport::Stream),
            0x2 => Some(Transport::Dgram),
            _ => None,
        }
    }
}

/// The address block. Its variant *is* the header's address family, so the family byte and
/// the block can never disagree.
///
/// Only addresses and ports travel on the wire: a decoded [`SocketAddrV6`] has zero flow
/// info and scope id, and emit ignores them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addresses {
    /// AF_UNSPEC: no address block.
    Unspec,
    /// AF_INET: source (the client) and destination (the address it reached).
    Ipv4 {
        /// The original source.
        source: SocketAddrV4,
        /// The original destination.
        destination: SocketAddrV4,
    },
    /// AF_INET6, including IPv4-mapped addresses when the families were mixed.
    Ipv6 {
        /// The original source.
        source: SocketAddrV6,
        /// The original destination.
        destination: SocketAddrV6,
    },
    /// AF_UNIX: raw `sun_path` bytes, NUL-padded by the sender.
    Unix {
        /// The original source path.
        source: [u8; UNIX_ADDRESS_LEN],
        /// The original destination path.
        destination: [u8; UNIX_ADDRESS_LEN],
    },
}

impl Addresses {
    /// The addresses `write_proxy_header` puts on the wire for this pair: IPv4-mapped
    /// inputs are canonicalised to IPv4 first, and a remaining IPv4/IPv6 mix is written as
    /// IPv6 with the IPv4 side mapped (`::ffff:a.b.c.d`).
    pub fn from_socket_addrs(source: SocketAddr, destination: SocketAddr) -> Self {
        AddressPair::new(source, destination).into()
    }

    /// The family this block belongs to.
    pub const fn family(&self) -> AddressFamily {
        match self {
            Addresses::Unspec => AddressFamily::Unspec,
            Addresses::Ipv4 { .. } => AddressFamily::Inet,
            Addresses::Ipv6 { .. } => AddressFamily::Inet6,
            Addresses::Unix { .. } => AddressFamily::Unix,
        }
    }

    /// The source as a socket address, for the IP families.
    pub fn source(&self) -> Option<SocketAddr> {
        match *self {
            Addresses::Ipv4 { source, .. } => Some(source.into()),
            Addresses::Ipv6 { source, .. } => Some(source.into()),
            Addresses::Unspec | Addresses::Unix { .. } => None,
        }
    }

    /// The destination as a socket address, for the IP families.
    pub fn destination(&self) -> Option<SocketAddr> {
        match *self {
            Addresses::Ipv4 { destination, .. } => Some(destination.into()),
            Addresses::Ipv6 { destination, .. } => Some(destination.into()),
            Addresses::Unspec | Addresses::Unix { .. } => None,
        }
    }

    /// Reads the block for `family` from the start of `payload`, or `None` when the payload
    /// is shorter than that family's block.
    fn parse(family: AddressFamily, payload: &[u8]) -> Option<Self> {
        let mut reader = Reader(payload);
        Some(match family {
            AddressFamily::Unspec => Addresses::Unspec,
            AddressFamily::Inet => {
                let source_ip = Ipv4Addr::from(reader.take::<4>()?);
                let destination_ip = Ipv4Addr::from(reader.take::<4>()?);
                let source_port = u16::from_be_bytes(reader.take()?);
                let destination_port = u16::from_be_bytes(reader.take()?);
                Addresses::Ipv4 {
                    source: SocketAddrV4::new(source_ip, source_port),
                    destination: SocketAddrV4::new(destination_ip, destination_port),
                }
            }
            AddressFamily::Inet6 => {
                let source_ip = Ipv6Addr::from(reader.take::<16>()?);
                let destination_ip = Ipv6Addr::from(reader.take::<16>()?);
                let source_port = u16::from_be_bytes(reader.take()?);
                let destination_port = u16::from_be_bytes(reader.take()?);
                Addresses::Ipv6 {
                    source: SocketAddrV6::new(source_ip, source_port, 0, 0),
                    destination: SocketAddrV6::new(destination_ip, destination_port, 0, 0),
                }
            }
            AddressFamily::Unix => Addresses::Unix { source: reader.take()?, destination: reader.take()? },
        })
    }

    /// Writes the block in the PPv2 §2.2 order: source address, destination address,
    /// source port, destination port.
    pub(super) fn write(&self, writer: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        match self {
            Addresses::Unspec => Ok(()),
            Addresses::Ipv4 { source, destination } => write_ip_block(
                writer,
                (&source.ip().octets(), source.port()),
                (&destination.ip().octets(), destination.port()),
            ),
            Addresses::Ipv6 { source, destination } => write_ip_block(
                writer,
                (&source.ip().octets(), source.port()),
                (&destination.ip().octets(), destination.port()),
            ),
            Addresses::Unix { source, destination } => {
                writer.put(source)?;
                writer.put(destination)
            }
        }
    }
}

/// Writes an AF_INET or AF_INET6 block from (address octets, port) pairs: both addresses
/// first, then both ports (PPv2 §2.2, `union proxy_addr`).
fn write_ip_block(
    writer: &mut Writer<'_>,
    (source_ip, source_port): (&[u8], u16),
    (destination_ip, destination_port): (&[u8], u16),
) -> Result<(), BufferTooSmall> {
    writer.put(source_ip)?;
    writer.put(destination_ip)?;
    writer.put(&source_port.to_be_bytes())?;
    writer.put(&destination_port.to_be_bytes())
}

/// A PROXY protocol v2 header (PPv2 §2.2).
///
/// The address family is not a separate field: it is `addresses.family()`. For a LOCAL
/// command the addresses, if any, are informational only; PPv2 §2.2 tells the receiver to
/// use the real connection endpoints instead (see [`Header::proxied_endpoints`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// LOCAL or PROXY.
    pub command: Command,
    /// The transport protocol nibble.
    pub transport: Transport,
    /// The address block, which also fixes the address family.
    pub addresses: Addresses,
    /// The TLVs in wire order, NOOP padding included.
    pub tlvs: Vec<Tlv>,
}

impl Header {
    /// The header [`super::write_proxy_header`] writes for these arguments: PROXY, DGRAM,
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

    /// The header [`super::write_local_header`] writes: LOCAL, UNSPEC family and transport,
    /// no address block, then the TLVs asked for.
    pub fn local(tlvs: TlvOptions) -> Self {
        Header {
            command: Command::Local,
            transport: Transport::Unspec,
            addresses: Addresses::Unspec,
            tlvs: tlvs.to_tlvs(),
        }
    }

    /// The address family, as announced by the address block.
    pub const fn family(&self) -> AddressFamily {
        self.addresses.family()
    }

    /// The original (source, destination) a receiver should use in place of the
    /// connection's own: only for PROXY commands with an IP family (PPv2 §2.2 has LOCAL
    /// and AF_UNSPEC fall back to the real endpoints).
    pub fn proxied_endpoints(&self) -> Option<(SocketAddr, SocketAddr)> {
        match self.command {
            Command::Local => None,
            Command::Proxy => Some((self.addresses.source()?, self.addresses.destination()?)),
        }
    }

    /// The value of the first TLV of this kind.
    pub fn tlv(&self, kind: TlvKind) -> Option<&[u8]> {
        self.tlvs.iter().find(|tlv| tlv.kind == kind).map(|tlv| tlv.value.as_slice())
    }

    /// The carried checksum, if the header has a well-formed CRC32C TLV.
    pub fn checksum(&self) -> Option<u32> {
        let value: [u8; CRC32C_VALUE_LEN] = self.tlv(TlvKind::Crc32c)?.try_into().ok()?;
        Some(u32::from_be_bytes(value))
    }

    /// Decodes the header at the start of `bytes` and returns it with its length; the
    /// datagram it prefixes starts at that offset.
    ///
    /// This is a full parse: every field is checked and the first fault is reported as a
    /// [`DecodeError`]. Choices the spec leaves open:
    ///
    /// - Family and transport are checked nibble by nibble (PPv2 §2.2 rejects unknown
    ///   nibbles), so combinations outside the "expected" list, such as AF_INET with
    ///   UNSPEC transport, decode; the family alone fixes the address block size.
    /// - AF_UNSPEC has an empty address block, so everything after the fixed header is
    ///   TLVs; HAProxy's sender appends its TLVs to AF_UNSPEC LOCAL headers this way. (The
    ///   `ppp` crate instead reads such a payload as opaque address bytes.)
    /// - A PROXY command with AF_UNSPEC decodes with [`Addresses::Unspec`]; PPv2 §2.2 lets
    ///   the receiver accept or reject it, and that is the caller's policy, not the codec's.
    /// - A LOCAL command never fails for its addresses: PPv2 §2.2 says the receiver "must
    ///   accept this connection as valid" and "discard the protocol block including the
    ///   family". When the length covers the family's address block, the block is parsed
    ///   (and kept, for logging) and the TLVs after it are parsed too. When it does not,
    ///   the whole payload is taken as a short, discarded address block: the header decodes
    ///   as [`Addresses::Unspec`] with no TLVs, since there is no telling where TLVs would
    ///   start. Re-emitting such a header writes AF_UNSPEC with length 0.
    /// - TLVs must fill the rest of the header exactly; known types are checked (CRC32C is
    ///   4 bytes and appears once, UNIQUE_ID is at most 128 bytes) and unknown types kept.
    ///   PPv2 §2.2 lets a receiver skip TLVs instead, but this decoder is the one the
    ///   simulator and fuzzers judge senders by, so it is strict.
    /// - A CRC32C TLV is verified (PPv2 §2.2.3) over the whole header with its value zeroed.
    ///
    /// Allocation is bounded by the 16-bit length: at most 65535 value bytes in all.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize), DecodeError> {
        let packet = Packet::new_checked(bytes)?;
        let command =
            Command::from_nibble(packet.command()).ok_or(DecodeError::UnknownCommand(packet.command()))?;
        let family =
            AddressFamily::from_nibble(packet.family()).ok_or(DecodeError::UnknownFamily(packet.family()))?;
        let transport = Transport::from_nibble(packet.transport())
            .ok_or(DecodeError::UnknownTransport(packet.transport()))?;

        let Some(addresses) = Addresses::parse(family, packet.payload()) else {
            return match command {
                Command::Local => Ok((
                    Header { command, transport, addresses: Addresses::Unspec, tlvs: Vec::new() },
                    packet.header_len(),
                )),
                Command::Proxy => Err(DecodeError::AddressBlockTooShort {
                    family,
                    needed: family.address_block_len(),
                    length: packet.payload().len(),
                }),
            };
        };

        let tlvs = parse_tlvs(&packet, family.address_block_len())?;
        let header = Header { command, transport, addresses, tlvs };
        Ok((header, packet.header_len()))
    }

    /// Bytes [`Header::emit`] writes: the fixed header, the address block and every TLV.
    pub fn buffer_len(&self) -> usize {
        FIXED_HEADER_LEN + self.payload_len()
    }

    /// Writes the header into `out[..self.buffer_len()]` and returns that length.
    ///
    /// A CRC32C TLV is written with the checksum of the emitted header (PPv2 §2.2.3), not
    /// with its stored value, so a decoded header, or one edited after decoding, always
    /// re-emits with a valid checksum. Headers the decoder would reject are refused
    /// ([`EmitError`]), so whatever emit writes, [`Header::parse`] reads back.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, EmitError> {
        let payload_len = self.payload_len();
        let length_field =
            u16::try_from(payload_len).map_err(|_| EmitError::PayloadTooLong { length: payload_len })?;
        self.check_tlvs()?;

        let header_len = FIXED_HEADER_LEN + payload_len;
        let header = out.get_mut(..header_len).ok_or(BufferTooSmall)?;
        let mut writer = Writer::new(header);
        write_fixed(
            &mut writer,
            version_command(self.command),
            family_transport(self.family(), self.transport),
            length_field,
        )?;
        self.addresses.write(&mut writer)?;
        let mut checksum_offset = None;
        for tlv in &self.tlvs {
            if tlv.kind == TlvKind::Crc32c {
                checksum_offset = Some(write_checksum_placeholder(&mut writer)?);
            } else {
                // The payload, this value included, fits the length field: checked above.
                write_tlv(&mut writer, tlv.kind.byte(), &tlv.value)?;
            }
        }
        if let Some(offset) = checksum_offset {
            write_checksum(header, offset)?;
        }
        Ok(header_len)
    }

    fn payload_len(&self) -> usize {
        let tlvs: usize = self.tlvs.iter().map(Tlv::wire_len).sum();
        self.family().address_block_len() + tlvs
    }

    /// Refuses TLV lists the decoder would reject: see [`EmitError`].
    fn check_tlvs(&self) -> Result<(), EmitError> {
        let mut checksums = 0;
        for tlv in &self.tlvs {
            match tlv.kind {
                TlvKind::Crc32c => checksums += 1,
                TlvKind::UniqueId if tlv.value.len() > UNIQUE_ID_MAX_LEN => {
                    return Err(EmitError::UniqueIdTooLong { length: tlv.value.len() });
                }
                _ => {}
            }
        }
        if checksums > 1 {
            return Err(EmitError::DuplicateChecksum);
        }
        Ok(())
    }
}

/// Parses and checks the TLVs after an address block of `address_block_len` bytes, then
/// verifies the checksum if one was present.
fn parse_tlvs(packet: &Packet<'_>, address_block_len: usize) -> Result<Vec<Tlv>, DecodeError> {
    let mut tlvs = Vec::new();
    let mut checksum: Option<(usize, u32)> = None;
    for raw in packet.tlvs(address_block_len) {
        let raw = raw?;
        let kind = TlvKind::from_byte(raw.kind);
        match kind {
            TlvKind::Crc32c => {
                if checksum.is_some() {
                    return Err(DecodeError::DuplicateChecksum { offset: raw.offset });
                }
                let value: [u8; CRC32C_VALUE_LEN] = raw
                    .value
                    .try_into()
                    .map_err(|_| DecodeError::ChecksumLength { length: raw.value.len() })?;
                checksum = Some((raw.value_offset(), u32::from_be_bytes(value)));
            }
            TlvKind::UniqueId if raw.value.len() > UNIQUE_ID_MAX_LEN => {
                return Err(DecodeError::UniqueIdTooLong { length: raw.value.len() });
            }
            _ => {}
        }
        tlvs.push(Tlv::new(kind, raw.value));
    }
    if let Some((offset, expected)) = checksum {
        let computed = wire::checksum_with_zeroed_field(packet.as_bytes(), offset);
        if computed != expected {
            return Err(DecodeError::ChecksumMismatch { expected, computed });
        }
    }
    Ok(tlvs)
}

/// Reads fixed-size arrays off the front of a slice; `None` once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (chunk, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*chunk)
    }
}
