//! The fixed-size values of the codec: [`ServerId`], [`Nonce`] and [`ConnectionId`].
//!
//! Each holds its octets in an array sized for the longest allowed value plus a length, so
//! none of them allocates and all of them are `Copy`. The octets past the length are always
//! zero, which is what makes the derived comparisons and hashes mean "same octets".

use std::fmt;
use std::ops::Deref;

use super::error::QuicLbError;

/// The longest server ID, in octets.
pub const MAX_SERVER_ID_LEN: usize = 15;
/// The longest nonce, in octets.
pub const MAX_NONCE_LEN: usize = 18;
/// The longest connection ID this codec writes, in octets: QUIC version 1's limit.
pub const MAX_CID_LEN: usize = 20;

/// Writes octets as lowercase hex, two digits each.
fn write_hex(f: &mut fmt::Formatter<'_>, octets: &[u8]) -> fmt::Result {
    octets.iter().try_for_each(|octet| write!(f, "{octet:02x}"))
}

/// A server ID, 1..=15 octets: what a QUIC-LB connection ID routes to.
///
/// Ordered by length first, then octet by octet. Displayed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ServerId {
    len: u8,
    bytes: [u8; MAX_SERVER_ID_LEN],
}

impl ServerId {
    /// A server ID with these octets; an error unless there are 1 to 15 of them.
    pub fn new(bytes: &[u8]) -> Result<ServerId, QuicLbError> {
        let len = bytes.len();
        if !(1..=MAX_SERVER_ID_LEN).contains(&len) {
            return Err(QuicLbError::ServerIdLength(len));
        }
        let mut id = ServerId { len: len as u8, bytes: [0; MAX_SERVER_ID_LEN] };
        id.bytes[..len].copy_from_slice(bytes);
        Ok(id)
    }

    /// The server ID's octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Reads a server ID written as hex digits, two per octet, upper or lower case, with or
    /// without a leading `0x`: `"0a1b"`, `"0x0A1B"`.
    pub fn from_hex(s: &str) -> Result<ServerId, QuicLbError> {
        let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        if digits.len() % 2 != 0 {
            return Err(QuicLbError::ServerIdNotHex);
        }
        let len = digits.len() / 2;
        if !(1..=MAX_SERVER_ID_LEN).contains(&len) {
            return Err(QuicLbError::ServerIdLength(len));
        }
        let mut bytes = [0; MAX_SERVER_ID_LEN];
        for (octet, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or(QuicLbError::ServerIdNotHex)?;
            let low = hex_value(pair[1]).ok_or(QuicLbError::ServerIdNotHex)?;
            *octet = (high << 4) | low;
        }
        ServerId::new(&bytes[..len])
    }
}

/// The value of one ASCII hex digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ServerId {
    /// Lowercase hex, two digits per octet, no prefix: `0a1b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_bytes())
    }
}

/// A nonce as recovered from a connection ID, 4..=18 octets (see
/// [`QuicLbConfig::decode_with_nonce`](super::QuicLbConfig::decode_with_nonce)). Servers
/// pass their nonces to [`QuicLbConfig::encode`](super::QuicLbConfig::encode) as plain
/// slices; this type only carries one back out. Displayed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Nonce {
    len: u8,
    bytes: [u8; MAX_NONCE_LEN],
}

impl Nonce {
    /// A nonce holding `bytes`, which the caller has checked to be at most 18 octets.
    pub(super) fn from_checked(bytes: &[u8]) -> Nonce {
        let mut nonce = Nonce { len: 0, bytes: [0; MAX_NONCE_LEN] };
        let len = bytes.len().min(MAX_NONCE_LEN);
        nonce.bytes[..len].copy_from_slice(&bytes[..len]);
        nonce.len = len as u8;
        nonce
    }

    /// The nonce's octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for Nonce {
    /// Lowercase hex, two digits per octet, no prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_bytes())
    }
}

/// A connection ID written by [`QuicLbConfig::encode`](super::QuicLbConfig::encode): up to
/// 20 octets, held inline so that encoding never allocates.
///
/// It dereferences to `&[u8]`, so `cid.len()`, `&cid[1..]` and `cid.to_vec()` work as on a
/// slice; `Vec::from(cid)` gives an owned vector. Displayed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl ConnectionId {
    /// An empty connection ID, to be filled with [`ConnectionId::push`].
    pub(super) fn empty() -> ConnectionId {
        ConnectionId { len: 0, bytes: [0; MAX_CID_LEN] }
    }

    /// Appends octets; anything past 20 octets is dropped (the callers never get there:
    /// a config's connection IDs are at most 20 octets).
    pub(super) fn push(&mut self, octets: &[u8]) {
        let start = usize::from(self.len);
        let end = (start + octets.len()).min(MAX_CID_LEN);
        self.bytes[start..end].copy_from_slice(&octets[..end - start]);
        self.len = end as u8;
    }

    /// The connection ID's octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Deref for ConnectionId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for ConnectionId {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<ConnectionId> for Vec<u8> {
    fn from(cid: ConnectionId) -> Vec<u8> {
        cid.as_bytes().to_vec()
    }
}

impl fmt::Display for ConnectionId {
    /// Lowercase hex, two digits per octet, no prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.as_bytes())
    }
}
