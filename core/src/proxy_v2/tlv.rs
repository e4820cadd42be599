//! TLVs (PPv2 §2.2): the type registry and an owned TLV, as the representation keeps them.

use super::field::TLV_HEADER_LEN;
pub use super::field::{CRC32C_VALUE_LEN, UNIQUE_ID_MAX_LEN};

/// A TLV type (PPv2 §2.2), with the registered ones named.
///
/// Equality and hashing go by the type byte, so `Other(0x03)` and `Crc32c` are the same
/// type; [`TlvKind::from_byte`] always yields the named variant.
#[derive(Copy, Clone, Debug)]
pub enum TlvKind {
    /// PP2_TYPE_ALPN (0x01), PPv2 §2.2.1.
    Alpn,
    /// PP2_TYPE_AUTHORITY (0x02), PPv2 §2.2.2.
    Authority,
    /// PP2_TYPE_CRC32C (0x03), PPv2 §2.2.3.
    Crc32c,
    /// PP2_TYPE_NOOP (0x04), PPv2 §2.2.4: padding, kept so that a header re-emits as it came.
    Noop,
    /// PP2_TYPE_UNIQUE_ID (0x05), PPv2 §2.2.5.
    UniqueId,
    /// PP2_TYPE_SSL (0x20), PPv2 §2.2.6. Its value (client flags, verify result and
    /// sub-TLVs) is kept raw: udplb never sends it and has no use for its contents.
    Ssl,
    /// PP2_TYPE_NETNS (0x30), PPv2 §2.2.7.
    Netns,
    /// Any other type, including the custom and experimental ranges of PPv2 §2.2.8.
    Other(u8),
}

impl TlvKind {
    /// PP2_TYPE_ALPN.
    pub const ALPN: u8 = 0x01;
    /// PP2_TYPE_AUTHORITY.
    pub const AUTHORITY: u8 = 0x02;
    /// PP2_TYPE_CRC32C.
    pub const CRC32C: u8 = 0x03;
    /// PP2_TYPE_NOOP.
    pub const NOOP: u8 = 0x04;
    /// PP2_TYPE_UNIQUE_ID.
    pub const UNIQUE_ID: u8 = 0x05;
    /// PP2_TYPE_SSL.
    pub const SSL: u8 = 0x20;
    /// PP2_TYPE_NETNS.
    pub const NETNS: u8 = 0x30;

    /// The kind for a type byte, naming the registered ones.
    pub const fn from_byte(byte: u8) -> Self {
        match byte {
            Self::ALPN => TlvKind::Alpn,
            Self::AUTHORITY => TlvKind::Authority,
            Self::CRC32C => TlvKind::Crc32c,
            Self::NOOP => TlvKind::Noop,
            Self::UNIQUE_ID => TlvKind::UniqueId,
            Self::SSL => TlvKind::Ssl,
            Self::NETNS => TlvKind::Netns,
            other => TlvKind::Other(other),
        }
    }

    /// The type byte on the wire.
    pub const fn byte(self) -> u8 {
        match self {
            TlvKind::Alpn => Self::ALPN,
            TlvKind::Authority => Self::AUTHORITY,
            TlvKind::Crc32c => Self::CRC32C,
            TlvKind::Noop => Self::NOOP,
            TlvKind::UniqueId => Self::UNIQUE_ID,
            TlvKind::Ssl => Self::SSL,
            TlvKind::Netns => Self::NETNS,
            TlvKind::Other(byte) => byte,
        }
    }
}

impl PartialEq for TlvKind {
    fn eq(&self, other: &Self) -> bool {
        self.byte() == other.byte()
    }
}

impl Eq for TlvKind {}

impl core::hash::Hash for TlvKind {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.byte().hash(state);
    }
}

/// One TLV, owning its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// The type.
    pub kind: TlvKind,
    /// The value bytes. For a CRC32C TLV, [`Header::emit`](super::Header::emit) ignores
    /// them and writes the checksum it computes.
    pub value: Vec<u8>,
}

impl Tlv {
    /// A TLV of any type.
    pub fn new(kind: TlvKind, value: impl Into<Vec<u8>>) -> Self {
        Tlv { kind, value: value.into() }
    }

    /// A CRC32C TLV; emit fills in the checksum.
    pub fn crc32c() -> Self {
        Tlv::new(TlvKind::Crc32c, [0; CRC32C_VALUE_LEN])
    }

    /// The UNIQUE_ID TLV udplb sends: 16 bytes, its worker's prefix then the flow's serial.
    pub fn unique_id(id: [u8; 16]) -> Self {
        Tlv::new(TlvKind::UniqueId, id)
    }

    /// Bytes this TLV takes on the wire. A CRC32C TLV always takes 3 + 4, whatever its
    /// stored value, because emit writes a fresh 4-byte checksum.
    pub fn wire_len(&self) -> usize {
        match self.kind {
            TlvKind::Crc32c => TLV_HEADER_LEN + CRC32C_VALUE_LEN,
            _ => TLV_HEADER_LEN + self.value.len(),
        }
    }
}
