//! Emitting: [`Header::buffer_len`] and [`Header::emit`] write the representation as bytes,
//! through the field writers here (fixed header, address block, TLVs, checksum). The
//! datapath encoder in `encode.rs` writes with the same functions, so the two cannot drift
//! apart.

use super::error::{BufferTooSmall, EmitError};
use super::field::{
    AddressFamily, CRC32C_VALUE_LEN, Command, FIXED_HEADER_LEN, SIGNATURE, Transport, UNIQUE_ID_MAX_LEN,
    VERSION,
};
use super::repr::{Addresses, Header};
use super::tlv::{Tlv, TlvKind};

impl Header {
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

impl Addresses {
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

/// The 13th byte: version 2 in the high nibble, the command in the low one.
pub(super) const fn version_command(command: Command) -> u8 {
    VERSION << 4 | command.nibble()
}

/// The 14th byte: the address family in the high nibble, the transport in the low one.
pub(super) const fn family_transport(family: AddressFamily, transport: Transport) -> u8 {
    family.nibble() << 4 | transport.nibble()
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
