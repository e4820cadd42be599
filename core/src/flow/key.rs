//! Flow keys and keyed hashing.
//!
//! A flow key is the listener's VIP address plus the client address, with or without the
//! client port (the listener's `affinity`). Addresses are canonicalised first (an IPv4 client
//! seen on a dual-stack socket as `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d`), so one
//! client is one key whichever socket family saw it. The hash is SipHash-1-3 under a 128-bit
//! key: keyed, so spoofed sources cannot aim at collisions, and a fixed algorithm, so the
//! value never changes across Rust releases or machines (std's default hasher promises
//! neither).

use core::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

use crate::config::Affinity;

/// SipHash-1-3 under a fixed 128-bit key.
#[derive(Clone, Debug)]
pub(crate) struct KeyedHasher {
    key: [u8; 16],
}

/// Family tag + 16 address bytes + 2 port bytes, for each of two endpoints.
const MAX_KEY_BYTES: usize = 2 * (1 + 16 + 2);

impl KeyedHasher {
    pub(crate) fn new(key: [u8; 16]) -> Self {
        KeyedHasher { key }
    }

    /// Hash of the flow key (VIP, client) under `affinity`.
    pub(crate) fn flow_hash(&self, vip: SocketAddr, client: SocketAddr, affinity: Affinity) -> u64 {
        let mut bytes = [0u8; MAX_KEY_BYTES];
        let mut len = encode_endpoint(&mut bytes, 0, vip.ip(), Some(vip.port()));
        let client_port = match affinity {
            Affinity::ClientAddressPort => Some(client.port()),
            Affinity::ClientAddress => None,
        };
        len = encode_endpoint(&mut bytes, len, client.ip(), client_port);
        let mut hasher = SipHasher13::new_with_key(&self.key);
        hasher.write(&bytes[..len]);
        hasher.finish()
    }
}

/// Writes a canonical encoding of one endpoint at `offset`; returns the new length.
fn encode_endpoint(out: &mut [u8; MAX_KEY_BYTES], offset: usize, ip: IpAddr, port: Option<u16>) -> usize {
    let mut at = offset;
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            out[at] = 4;
            out[at + 1..at + 5].copy_from_slice(&v4.octets());
            at += 5;
        }
        IpAddr::V6(v6) => {
            out[at] = 6;
            out[at + 1..at + 17].copy_from_slice(&v6.octets());
            at += 17;
        }
    }
    if let Some(port) = port {
        out[at..at + 2].copy_from_slice(&port.to_be_bytes());
        at += 2;
    }
    at
}

/// Whether two client addresses are the same flow key under `affinity`.
pub(crate) fn same_client(a: SocketAddr, b: SocketAddr, affinity: Affinity) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical()
        && (affinity == Affinity::ClientAddress || a.port() == b.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn hash_is_stable_across_releases_and_machines() {
        // Pinned from SipHash-1-3 (siphasher 1.x): if this changes, the encoding of keys or
        // the algorithm changed, and tables built by two versions would disagree.
        let hasher = KeyedHasher::new(*b"0123456789abcdef");
        let hash =
            hasher.flow_hash(addr("10.0.0.1:53"), addr("192.0.2.7:40000"), Affinity::ClientAddressPort);
        assert_eq!(hash, 0xd498_7e95_1ca6_8677, "got {hash:#x}");
    }

    #[test]
    fn key_includes_vip_and_port_per_affinity_and_canonicalises_mapped_addresses() {
        let hasher = KeyedHasher::new([7; 16]);
        let vip_a = addr("10.0.0.1:53");
        let vip_b = addr("10.0.0.2:53");
        let client = addr("192.0.2.7:40000");
        let same_host_other_port = addr("192.0.2.7:40001");
        let mapped = addr("[::ffff:192.0.2.7]:40000");
        let with_port = Affinity::ClientAddressPort;
        let without_port = Affinity::ClientAddress;
        assert_ne!(hasher.flow_hash(vip_a, client, with_port), hasher.flow_hash(vip_b, client, with_port));
        assert_ne!(
            hasher.flow_hash(vip_a, client, with_port),
            hasher.flow_hash(vip_a, same_host_other_port, with_port)
        );
        assert_eq!(
            hasher.flow_hash(vip_a, client, without_port),
            hasher.flow_hash(vip_a, same_host_other_port, without_port)
        );
        assert_eq!(hasher.flow_hash(vip_a, client, with_port), hasher.flow_hash(vip_a, mapped, with_port));
        assert!(same_client(client, mapped, with_port));
        assert!(!same_client(client, same_host_other_port, with_port));
        assert!(same_client(client, same_host_other_port, without_port));
    }
}
