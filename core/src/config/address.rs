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
