//! The representation of a PROXY protocol v2 header: what a header says, independent of its
//! bytes. [`Header::parse`] reads one from bytes and [`Header::buffer_len`] /
//! [`Header::emit`] write one; they live in the parse and emit layers above this file, which
//! needs only the field vocabulary and the TLVs.

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};

use super::field::CRC32C_VALUE_LEN;
pub use super::field::{
    AddressFamily, Command, IPV4_ADDRESS_BLOCK_LEN, IPV6_ADDRESS_BLOCK_LEN, Transport,
    UNIX_ADDRESS_BLOCK_LEN, UNIX_ADDRESS_LEN,
};
use super::tlv::{Tlv, TlvKind};

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
}
