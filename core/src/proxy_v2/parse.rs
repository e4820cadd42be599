//! Parsing: [`Header::parse`] reads a header through the checked view of [`super::wire`] and
//! judges what each field says, reporting the first fault as a [`DecodeError`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use super::error::DecodeError;
use super::field::{AddressFamily, CRC32C_VALUE_LEN, Command, Transport, UNIQUE_ID_MAX_LEN};
use super::repr::{Addresses, Header};
use super::tlv::{Tlv, TlvKind};
use super::wire::{self, Packet};

impl Header {
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
}

impl Addresses {
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
