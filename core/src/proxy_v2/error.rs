//! Errors of the PROXY protocol v2 codec: one type for writing into a short buffer, one
//! enum naming every way a received header can be malformed, and one for representations
//! that cannot be put on the wire.

use super::field::AddressFamily;

/// Error writing a header: the output slice is shorter than the header.
///
/// The datapath sizes its headroom with [`super::MAX_PROXY_HEADER_LEN`], so on the hot path
/// this only happens when the caller's buffer is misconfigured; it is still an error rather
/// than a panic, because the core never panics on a caller's data.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("output buffer is too small for the PROXY v2 header")]
pub struct BufferTooSmall;

/// Why a received PROXY protocol v2 header was rejected.
///
/// The decoder checks the fields in wire order (signature, fixed header, version, command,
/// family, transport, length, address block, TLVs, checksum) and reports the first fault,
/// so a given input always yields the same error. Offsets count from the first byte of the
/// signature.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the header does: either it is shorter than the 16-byte fixed
    /// header, or shorter than 16 + the length field (PPv2 §2.2: "the length of the protocol
    /// header in bytes is always exactly 16 + this value"). A stream reader may wait for
    /// `needed` bytes; for a datagram this is final.
    #[error("truncated PROXY v2 header: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the header needs, counted from its start.
        needed: usize,
        /// Bytes that were available.
        available: usize,
    },
    /// The input does not start with the 12-byte signature `\r\n\r\n\0\r\nQUIT\n`
    /// (PPv2 §2.2). Reported as soon as one available byte differs, even if fewer than 12
    /// bytes are present, since no amount of further input can make it a header.
    #[error("not a PROXY v2 header: bad signature")]
    BadSignature,
    /// The high nibble of the 13th byte is not 2 (PPv2 §2.2: "the receiver must only
    /// accept this value"). Carries the nibble that was found.
    #[error("unsupported PROXY protocol version {0}")]
    UnsupportedVersion(u8),
    /// The low nibble of the 13th byte is neither LOCAL (0) nor PROXY (1); PPv2 §2.2 says
    /// receivers must drop such connections. Carries the nibble.
    #[error("unknown PROXY v2 command {0:#x}")]
    UnknownCommand(u8),
    /// The high nibble of the 14th byte is not one of AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX;
    /// PPv2 §2.2 says other values must be rejected. Carries the nibble.
    #[error("unknown PROXY v2 address family {0:#x}")]
    UnknownFamily(u8),
    /// The low nibble of the 14th byte is not UNSPEC, STREAM or DGRAM; PPv2 §2.2 says other
    /// values must be rejected. Carries the nibble.
    #[error("unknown PROXY v2 transport protocol {0:#x}")]
    UnknownTransport(u8),
    /// In a PROXY-command header, the length field is smaller than the address block its
    /// family requires (12 bytes for AF_INET, 36 for AF_INET6, 216 for AF_UNIX; PPv2 §2.2).
    /// A LOCAL-command header is not rejected for this: its address block is discarded
    /// (see [`super::Header::parse`]).
    #[error("PROXY v2 address block too short for {family}: {needed} bytes needed, length is {length}")]
    AddressBlockTooShort {
        /// The family the header announced.
        family: AddressFamily,
        /// The size of that family's address block.
        needed: usize,
        /// The header's length field (address block plus TLVs).
        length: usize,
    },
    /// Fewer than 3 bytes remain after the last complete TLV: not enough for a TLV's type
    /// and length (PPv2 §2.2 lays TLVs end to end after the address block, each at least
    /// 3 bytes, up to the end of the header).
    #[error("truncated PROXY v2 TLV at offset {offset}")]
    TlvTruncated {
        /// Offset of the incomplete TLV.
        offset: usize,
    },
    /// A TLV's length runs past the end of the header (PPv2 §2.2: the length field bounds
    /// the whole header, TLVs included).
    #[error("PROXY v2 TLV at offset {offset} declares {length} value bytes, only {available} remain")]
    TlvLengthOverrun {
        /// Offset of the TLV.
        offset: usize,
        /// The length the TLV declared.
        length: usize,
        /// Value bytes left in the header after the TLV's type and length.
        available: usize,
    },
    /// A PP2_TYPE_CRC32C TLV whose value is not exactly 4 bytes (PPv2 §2.2.3: the value
    /// is a 32-bit number).
    #[error("PROXY v2 CRC32C TLV has {length} value bytes, not 4")]
    ChecksumLength {
        /// The length the TLV declared.
        length: usize,
    },
    /// A second PP2_TYPE_CRC32C TLV. The spec defines one checksum of the header with
    /// "the checksum field" zeroed (PPv2 §2.2.3); with two fields neither value is
    /// well-defined, so such a header is rejected rather than half-verified.
    #[error("second PROXY v2 CRC32C TLV at offset {offset}")]
    DuplicateChecksum {
        /// Offset of the second CRC32C TLV.
        offset: usize,
    },
    /// The CRC32C (Castagnoli) of the header, computed with the checksum field zeroed,
    /// differs from the value carried in the TLV; PPv2 §2.2.3 says the receiver must then
    /// treat the connection as invalid.
    #[error("PROXY v2 checksum mismatch: header carries {expected:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The checksum carried in the header.
        expected: u32,
        /// The checksum computed over the received header.
        computed: u32,
    },
    /// A PP2_TYPE_UNIQUE_ID value longer than the 128 bytes PPv2 §2.2.5 allows.
    #[error("PROXY v2 UNIQUE_ID is {length} bytes, more than 128")]
    UniqueIdTooLong {
        /// The length the TLV declared.
        length: usize,
    },
}

/// Why [`super::Header::emit`] could not write a header.
///
/// Apart from a short buffer, these are representations that no decoded header can have;
/// emit refuses them rather than write bytes its own decoder would reject.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The output slice is shorter than [`super::Header::buffer_len`].
    #[error(transparent)]
    BufferTooSmall(#[from] BufferTooSmall),
    /// Address block plus TLVs exceed the 65535 bytes the 16-bit length field can describe
    /// (PPv2 §2.2).
    #[error("PROXY v2 header payload of {length} bytes exceeds the 16-bit length field")]
    PayloadTooLong {
        /// The payload length the header would need.
        length: usize,
    },
    /// A UNIQUE_ID TLV longer than the 128 bytes PPv2 §2.2.5 allows.
    #[error("PROXY v2 UNIQUE_ID is {length} bytes, more than 128")]
    UniqueIdTooLong {
        /// The value's length.
        length: usize,
    },
    /// More than one CRC32C TLV; see [`DecodeError::DuplicateChecksum`].
    #[error("more than one PROXY v2 CRC32C TLV")]
    DuplicateChecksum,
}
