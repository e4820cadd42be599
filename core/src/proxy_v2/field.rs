//! The field layout of a PROXY protocol v2 header and the values its fields take: lengths,
//! byte offsets, and the command, address family and transport nibbles (PPv2 §2.2).
//!
//! This is the bottom of the codec: the error vocabulary, the TLV registry, the wire view,
//! the representation, and above them parse and emit, all build on these definitions, and
//! this file imports none of them.

/// The 12-byte signature every version 2 header starts with (PPv2 §2.2). It contains a NUL
/// byte and bare CR/LF, so no text protocol mistakes it for a request line.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Length of the fixed part of the header: signature, version/command, family/transport and
/// the 16-bit length (PPv2 §2.2, `struct proxy_hdr_v2`).
pub const FIXED_HEADER_LEN: usize = 16;

/// The only protocol version this specification defines, in the high nibble of the 13th byte.
pub const VERSION: u8 = 0x2;

/// Bytes of a TLV's type and length, before its value (PPv2 §2.2, `struct pp2_tlv`).
pub const TLV_HEADER_LEN: usize = 3;

/// Byte offset of the version (high nibble) and command (low nibble).
pub(super) const VERSION_COMMAND: usize = 12;
/// Byte offset of the address family (high nibble) and transport protocol (low nibble).
pub(super) const FAMILY_TRANSPORT: usize = 13;
/// Byte offset of the high byte of the big-endian length of what follows the fixed header.
pub(super) const LENGTH_HIGH: usize = 14;
/// Byte offset of the low byte of the length.
pub(super) const LENGTH_LOW: usize = 15;

/// Bytes of an AF_INET address block: two 4-byte addresses and two ports (PPv2 §2.2).
pub const IPV4_ADDRESS_BLOCK_LEN: usize = 12;
/// Bytes of an AF_INET6 address block: two 16-byte addresses and two ports (PPv2 §2.2).
pub const IPV6_ADDRESS_BLOCK_LEN: usize = 36;
/// Bytes of an AF_UNIX address block: two 108-byte paths (PPv2 §2.2).
pub const UNIX_ADDRESS_BLOCK_LEN: usize = 216;
/// Bytes of one AF_UNIX address (`sun_path`).
pub const UNIX_ADDRESS_LEN: usize = 108;

/// The longest UNIQUE_ID value PPv2 §2.2.5 allows.
pub const UNIQUE_ID_MAX_LEN: usize = 128;
/// Value bytes of a CRC32C TLV (PPv2 §2.2.3).
pub const CRC32C_VALUE_LEN: usize = 4;

/// Bytes of the CRC32C TLV: type, length, 4-byte checksum (PPv2 §2.2.3).
pub const CRC32C_TLV_LEN: usize = TLV_HEADER_LEN + CRC32C_VALUE_LEN;

/// Bytes of the UNIQUE_ID TLV udplb sends: type, length, the flow serial as a big-endian
/// u64 (PPv2 §2.2.5 allows up to 128 value bytes; 8 suffice).
pub const UNIQUE_ID_TLV_LEN: usize = TLV_HEADER_LEN + 16;

/// Largest header [`write_proxy_header`](super::write_proxy_header) can produce (both TLVs,
/// IPv6): 70 bytes. The shell reserves this much headroom in front of every received
/// datagram.
pub const MAX_PROXY_HEADER_LEN: usize =
    FIXED_HEADER_LEN + IPV6_ADDRESS_BLOCK_LEN + CRC32C_TLV_LEN + UNIQUE_ID_TLV_LEN;

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

    pub(super) fn from_nibble(nibble: u8) -> Option<Self> {
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

    pub(super) fn from_nibble(nibble: u8) -> Option<Self> {
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

    pub(super) fn from_nibble(nibble: u8) -> Option<Self> {
        match nibble {
            0x0 => Some(Transport::Unspec),
            0x1 => Some(Transport::Stream),
            0x2 => Some(Transport::Dgram),
            _ => None,
        }
    }
}
