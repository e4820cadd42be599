//! Socket addresses in configuration files: `"127.0.0.1:53"`, `"[::1]:53"`.
//!
//! Serde's own `SocketAddr` impl reports only "invalid socket address syntax", which does
//! not tell an operator that host names are not accepted. The core resolves nothing (that
//! would be I/O, and a name can change under a running balancer), so the message says so.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// `#[serde(deserialize_with = "address::deserialize")]` for `SocketAddr` fields.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    deserializer.deserialize_str(SocketAddrVisitor)
}

/// `#[serde(default, deserialize_with = "address::deserialize_optional")]` for
/// `Option<SocketAddr>` fields: absent is `None` (by the default), present must be an address.
pub fn deserialize_optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    deserialize(deserializer).map(Some)
}

struct SocketAddrVisitor;

impl Visitor<'_> for SocketAddrVisitor {
    type Value = SocketAddr;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a socket address such as \"127.0.0.1:53\" or \"[::1]:53\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
        text.parse().map_err(|_| {
            E::custom(format_args!(
                "invalid socket address {text:?}: expected an IP address and a port, such as \
                 \"127.0.0.1:53\" or \"[::1]:53\" (host names are not resolved)"
            ))
        })
    }
}

/// An address prefix: `"10.0.0.0/8"`, `"2001:db8::/32"`, or one address (`"192.0.2.7"`, a /32
/// or /128). Bits past the prefix are ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpPrefix {
    pub address: std::net::IpAddr,
    pub len: u8,
}

impl IpPrefix {
    /// Whether `ip` is in the prefix (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        // The addresses as integers, compared under the prefix's mask: no allocation, since
        // trusted ingress asks for every datagram.
        let (mine, theirs, bits) = match (self.address.to_canonical(), ip.to_canonical()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
            _ => return false,
        };
        let len = u32::from(self.len).min(bits);
        let mask = if len == 0 { 0 } else { (u128::MAX >> (128 - len)) << (bits - len) };
        mine & mask == theirs & mask
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

impl std::str::FromStr for IpPrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<IpPrefix, String> {
        let (address, len) = match text.split_once('/') {
            Some((address, len)) => (address, Some(len)),
            None => (text, None),
        };
        let address: std::net::IpAddr = address.parse().map_err(|_| {
            format!("invalid prefix {text:?}: expected an IP address with an optional length, such as \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\"")
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let len =
            match len {
                None => max,
                Some(len) => len.parse::<u8>().ok().filter(|len| *len <= max).ok_or_else(|| {
                    format!("invalid prefix {text:?}: the length must be between 0 and {max}")
                })?,
            };
        Ok(IpPrefix { address, len })
    }
}

impl serde::Serialize for IpPrefix {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpPrefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IpPrefix, D::Error> {
        struct PrefixVisitor;
        impl Visitor<'_> for PrefixVisitor {
            type Value = IpPrefix;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an address prefix such as \"10.0.0.0/8\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<IpPrefix, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PrefixVisitor)
    }
}
