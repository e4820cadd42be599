//! The checked wire view of a PROXY protocol v2 header (PPv2 §2.2).
//!
//! [`Packet::new_checked`] frames one header at the start of a buffer: it checks the
//! signature, the version and that the buffer holds all `16 + length` bytes. Once it has
//! succeeded, every accessor reads from a fixed-size array or from the exact payload slice,
//! so none of them can panic, whatever the bytes say. What the fields *mean* (known command,
//! family, address block size, TLV rules, checksum) is judged when the representation in
//! [`super::repr`] is parsed from the view ([`Header::parse`](super::Header::parse)).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        signature: 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A         |
//! |                          (12 bytes)                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |version|command| family|transp.|     length (big-endian)      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  address block (0, 12, 36 or 216 bytes by family), then TLVs  |
//! |                     (`length` bytes in all)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::error::DecodeError;
use super::field;
pub use super::field::{FIXED_HEADER_LEN, SIGNATURE, TLV_HEADER_LEN, VERSION};

/// A checked view of one PROXY protocol v2 header at the start of a buffer.
///
/// The view only exists for buffers that hold a complete version 2 header, so its
/// accessors return plain values. Bytes after the header (the datagram it prefixes) are not
/// part of the view.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    fixed: [u8; FIXED_HEADER_LEN],
    header: &'a [u8],
    payload: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Frames the header at the start of `bytes`.
    ///
    /// Checks, in this order: the signature (as far as `bytes` goes, so a foreign protocol
    /// is named as such even when shorter than 12 bytes), the 16-byte fixed header, the
    /// version, and finally that all `16 + length` bytes are present (PPv2 §2.2: "the
    /// receiver must also reject incoming connections containing partial protocol
    /// headers").
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let signature_present = bytes.len().min(SIGNATURE.len());
        if bytes.get(..signature_present) != SIGNATURE.get(..signature_present) {
            return Err(DecodeError::BadSignature);
        }
        let Some(fixed) = bytes.first_chunk::<FIXED_HEADER_LEN>().copied() else {
            return Err(DecodeError::Truncated { needed: FIXED_HEADER_LEN, available: bytes.len() });
        };
        let version = fixed[field::VERSION_COMMAND] >> 4;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let payload_len = u16::from_be_bytes([fixed[field::LENGTH_HIGH], fixed[field::LENGTH_LOW]]);
        let header_len = FIXED_HEADER_LEN + usize::from(payload_len);
        let truncated = DecodeError::Truncated { needed: header_len, available: bytes.len() };
        let header = bytes.get(..header_len).ok_or(truncated)?;
        let payload = header.get(FIXED_HEADER_LEN..).ok_or(truncated)?;
        Ok(Packet { fixed, header, payload })
    }

    /// The protocol version (the high nibble of the 13th byte); always [`VERSION`].
    pub fn version(&self) -> u8 {
        self.fixed[field::VERSION_COMMAND] >> 4
    }

    /// The raw command nibble: 0 for LOCAL, 1 for PROXY, anything else is invalid.
    pub fn command(&self) -> u8 {
        self.fixed[field::VERSION_COMMAND] & 0x0f
    }

    /// The raw address family nibble (high nibble of the 14th byte).
    pub fn family(&self) -> u8 {
        self.fixed[field::FAMILY_TRANSPORT] >> 4
    }

    /// The raw transport protocol nibble (low nibble of the 14th byte).
    pub fn transport(&self) -> u8 {
        self.fixed[field::FAMILY_TRANSPORT] & 0x0f
    }

    /// The length field: bytes after the fixed header (address block plus TLVs).
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.fixed[field::LENGTH_HIGH], self.fixed[field::LENGTH_LOW]])
    }

    /// The whole header's length, `16 + payload_len()`; what a receiver strips.
    pub fn header_len(&self) -> usize {
        self.header.len()
    }

    /// The bytes after the fixed header: exactly `payload_len()` of them.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// The whole header, signature to last TLV.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.header
    }

    /// The TLVs that follow an address block of `address_block_len` bytes.
    ///
    /// If the payload is shorter than the address block there are no TLVs to read; the
    /// representation reports that case before asking.
    pub fn tlvs(&self, address_block_len: usize) -> Tlvs<'a> {
        Tlvs {
            rest: self.payload.get(address_block_len..).unwrap_or_default(),
            offset: FIXED_HEADER_LEN + address_block_len,
            failed: false,
        }
    }
}

/// One TLV as it sits on the wire, borrowed from the header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RawTlv<'a> {
    /// The type byte.
    pub kind: u8,
    /// The value: exactly as many bytes as the TLV's length field says.
    pub value: &'a [u8],
    /// Offset of the type byte from the start of the header.
    pub offset: usize,
}

impl RawTlv<'_> {
    /// Offset of the first value byte from the start of the header.
    pub fn value_offset(&self) -> usize {
        self.offset + TLV_HEADER_LEN
    }
}

/// Iterator over the TLVs of a header, in wire order.
///
/// Yields an error at the first TLV that does not fit and stops there: once a length is
/// wrong, nothing after it can be framed.
#[derive(Clone, Debug)]
pub struct Tlvs<'a> {
    rest: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<RawTlv<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let offset = self.offset;
        let Some((&[kind, length_high, length_low], after)) = self.rest.split_first_chunk::<TLV_HEADER_LEN>()
        else {
            self.failed = true;
            return Some(Err(DecodeError::TlvTruncated { offset }));
        };
        let length = usize::from(u16::from_be_bytes([length_high, length_low]));
        let Some((value, rest)) = after.split_at_checked(length) else {
            self.failed = true;
            return Some(Err(DecodeError::TlvLengthOverrun { offset, length, available: after.len() }));
        };
        self.rest = rest;
        self.offset = offset + TLV_HEADER_LEN + length;
        Some(Ok(RawTlv { kind, value, offset }))
    }
}

/// The CRC32C (Castagnoli) of `header` with the four bytes at `field_offset` read as zero,
/// as PPv2 §2.2.3 defines the checksum. Computed in three pieces so that a received header
/// can be verified without copying it.
pub(super) fn checksum_with_zeroed_field(header: &[u8], field_offset: usize) -> u32 {
    let (before, field_and_after) = header.split_at_checked(field_offset).unwrap_or((header, &[]));
    let after = field_and_after.get(4..).unwrap_or_default();
    let crc = crc32c::crc32c_append(0, before);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, after)
}
