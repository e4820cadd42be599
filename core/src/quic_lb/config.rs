//! One QUIC-LB configuration ([`QuicLbConfig`]) and the connection IDs it writes and reads.

use super::bytes::{ConnectionId, MAX_CID_LEN, Nonce, ServerId};
use super::cipher::Key;
use super::error::QuicLbError;

/// The config ID that marks a connection ID as unroutable on purpose (draft §3.2): no
/// config may use it.
pub const UNROUTABLE_CONFIG_ID: u8 = 0b111;

/// The config ID (config rotation bits) of a connection ID: the top three bits of its
/// first octet.
pub fn config_id_of(first_octet: u8) -> u8 {
    first_octet >> 5
}

/// Which of the draft's three algorithms a config uses; it follows from the config (see
/// [`QuicLbConfig::format`]), it is not chosen separately.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Format {
    /// No key: the server ID and nonce are in the clear (draft §5.4, "If there is no key").
    Plaintext,
    /// A key, and server ID plus nonce exactly 16 octets: one AES-128-ECB block (§5.4.1).
    SinglePass,
    /// A key, and server ID plus nonce any other length: the four-pass Feistel network of
    /// §5.4.2.
    FourPass,
}

/// One QUIC-LB configuration: a config ID, the lengths of the server ID and nonce, and an
/// optional 16-octet AES-128 key.
///
/// The key's AES schedule is expanded once, when the config is built. `Debug` does not
/// print the key; equality compares it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QuicLbConfig {
    config_id: u8,
    server_id_len: u8,
    nonce_len: u8,
    key: Option<Key>,
}

impl QuicLbConfig {
    /// Checks and builds a config: `config_id` 0..=6 (7 is reserved for unroutable
    /// connection IDs), `server_id_len` 1..=15, `nonce_len` 4..=18, and
    /// `server_id_len + nonce_len <= 19` so that the connection ID, first octet included,
    /// fits QUIC version 1's 20 octets. Each violation is its own [`QuicLbError`], checked
    /// in that order.
    pub fn new(
        config_id: u8,
        server_id_len: u8,
        nonce_len: u8,
        key: Option<[u8; 16]>,
    ) -> Result<QuicLbConfig, QuicLbError> {
        if config_id >= UNROUTABLE_CONFIG_ID {
            return Err(QuicLbError::ConfigId(config_id));
        }
        if !(1..=15).contains(&server_id_len) {
            return Err(QuicLbError::ServerIdLen(server_id_len));
        }
        if !(4..=18).contains(&nonce_len) {
            return Err(QuicLbError::NonceLen(nonce_len));
        }
        if usize::from(server_id_len) + usize::from(nonce_len) > MAX_CID_LEN - 1 {
            return Err(QuicLbError::ConnectionIdTooLong { server_id_len, nonce_len });
        }
        Ok(QuicLbConfig { config_id, server_id_len, nonce_len, key: key.map(Key::new) })
    }

    /// The config ID: the config rotation bits of every connection ID this config writes.
    pub fn config_id(&self) -> u8 {
        self.config_id
    }

    /// The length of the server IDs, in octets.
    pub fn server_id_len(&self) -> usize {
        usize::from(self.server_id_len)
    }

    /// The length of the nonces, in octets.
    pub fn nonce_len(&self) -> usize {
        usize::from(self.nonce_len)
    }

    /// The key, if the config has one.
    pub fn key(&self) -> Option<&[u8; 16]> {
        self.key.as_ref().map(Key::octets)
    }

    /// The algorithm: [`Format::Plaintext`] without a key; with one, [`Format::SinglePass`]
    /// when server ID plus nonce is 16 octets and [`Format::FourPass`] otherwise.
    pub fn format(&self) -> Format {
        match self.key {
            None => Format::Plaintext,
            Some(_) if self.server_id_len() + self.nonce_len() == 16 => Format::SinglePass,
            Some(_) => Format::FourPass,
        }
    }

    /// The length of this config's connection IDs: `1 + server_id_len + nonce_len`, 6 to
    /// 20 octets. A connection ID may be longer (a server may append octets of its own,
    /// §5.4); only these first octets are read.
    pub fn cid_len(&self) -> usize {
        1 + self.server_id_len() + self.nonce_len()
    }

    /// Writes a connection ID for `server_id` with `nonce` (both exactly this config's
    /// lengths, or an error saying which is not).
    ///
    /// The first octet is the config ID in its top three bits, and in its low five bits
    /// either the length of the rest (`cid_len() - 1`) when `length_self_encoded` is set
    /// (§3.3), or else the low five bits of `first_octet_random`. The server ID and nonce
    /// follow, encrypted as [`QuicLbConfig::format`] says.
    ///
    /// The nonce is an input: the codec draws nothing at random. With a key, nonces must
    /// not repeat for one server ID, or two connection IDs are equal; without one, they
    /// must look random to an observer (§5.4).
    pub fn encode(
        &self,
        server_id: &ServerId,
        nonce: &[u8],
        first_octet_random: u8,
        length_self_encoded: bool,
    ) -> Result<ConnectionId, QuicLbError> {
        let server_id = server_id.as_bytes();
        if server_id.len() != self.server_id_len() {
            return Err(QuicLbError::ServerIdMismatch {
                expected: self.server_id_len(),
                actual: server_id.len(),
            });
        }
        if nonce.len() != self.nonce_len() {
            return Err(QuicLbError::NonceMismatch { expected: self.nonce_len(), actual: nonce.len() });
        }
        let low_bits = if length_self_encoded { (self.cid_len() - 1) as u8 } else { first_octet_random };
        let first_octet = (self.config_id << 5) | (low_bits & 0x1f);

        let total = self.cid_len() - 1;
        let mut plaintext = [0u8; MAX_CID_LEN - 1];
        plaintext[..server_id.len()].copy_from_slice(server_id);
        plaintext[server_id.len()..total].copy_from_slice(nonce);
        let plaintext = &plaintext[..total];

        let mut cid = ConnectionId::empty();
        cid.push(&[first_octet]);
        match &self.key {
            None => cid.push(plaintext),
            Some(key) => {
                if let Ok(block) = <&[u8; 16]>::try_from(plaintext) {
                    let mut block = *block;
                    key.single_pass_encrypt(&mut block);
                    cid.push(&block);
                } else {
                    let mut ciphertext = [0u8; MAX_CID_LEN - 1];
                    key.four_pass_encrypt(plaintext, &mut ciphertext[..total]);
                    cid.push(&ciphertext[..total]);
                }
            }
        }
        Ok(cid)
    }

    /// Reads the server ID from a connection ID written with this config.
    ///
    /// Errors: [`QuicLbError::TooShort`] when `cid` is shorter than [`cid_len`]
    /// (an empty one included), [`QuicLbError::WrongConfig`] when its config rotation bits
    /// are not this config's ID. Octets past `cid_len` are ignored. Any other input decodes
    /// to some server ID: whether a server has it is the caller's question.
    ///
    /// With four passes and a server ID no longer than the nonce, this runs three AES
    /// rounds instead of four (§5.5.2).
    ///
    /// [`cid_len`]: QuicLbConfig::cid_len
    pub fn decode(&self, cid: &[u8]) -> Result<ServerId, QuicLbError> {
        let mut plaintext = [0u8; MAX_CID_LEN - 1];
        self.open(cid, &mut plaintext, self.server_id_len() <= self.nonce_len())?;
        ServerId::new(&plaintext[..self.server_id_len()])
    }

    /// Like [`QuicLbConfig::decode`], but recovers the nonce too (always four passes where
    /// four apply). Encoding the two again with the same first octet gives `cid` back.
    pub fn decode_with_nonce(&self, cid: &[u8]) -> Result<(ServerId, Nonce), QuicLbError> {
        let mut plaintext = [0u8; MAX_CID_LEN - 1];
        self.open(cid, &mut plaintext, false)?;
        let server_id = ServerId::new(&plaintext[..self.server_id_len()])?;
        Ok((server_id, Nonce::from_checked(&plaintext[self.server_id_len()..self.cid_len() - 1])))
    }

    /// Checks `cid`'s length and config rotation bits, then writes its server ID and nonce
    /// in the clear to the start of `plaintext`. With `server_id_only`, only the first
    /// `(cid_len() - 1) / 2` octets need be right.
    fn open(
        &self,
        cid: &[u8],
        plaintext: &mut [u8; MAX_CID_LEN - 1],
        server_id_only: bool,
    ) -> Result<(), QuicLbError> {
        let needed = self.cid_len();
        let (Some(&first_octet), Some(body)) = (cid.first(), cid.get(1..needed)) else {
            return Err(QuicLbError::TooShort { needed, actual: cid.len() });
        };
        let actual = config_id_of(first_octet);
        if actual != self.config_id {
            return Err(QuicLbError::WrongConfig { expected: self.config_id, actual });
        }
        let out = &mut plaintext[..body.len()];
        match &self.key {
            None => out.copy_from_slice(body),
            Some(key) => {
                if let Ok(block) = <&[u8; 16]>::try_from(body) {
                    let mut block = *block;
                    key.single_pass_decrypt(&mut block);
                    out.copy_from_slice(&block);
                } else {
                    key.four_pass_decrypt(body, out, server_id_only);
                }
            }
        }
        Ok(())
    }
}
