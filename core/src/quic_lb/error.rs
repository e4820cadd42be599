//! The one error type of the QUIC-LB codec.

/// Why a QUIC-LB value could not be built, or a connection ID could not be encoded or
/// decoded. The messages are written for an operator reading a config error or a log line.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuicLbError {
    /// A server ID must be 1 to 15 octets long. Carries the length that was given.
    #[error("a QUIC-LB server ID is 1 to 15 octets long, not {0}")]
    ServerIdLength(usize),
    /// A server ID written as text must be hex digits, two per octet, optionally after `0x`.
    #[error("a QUIC-LB server ID is written as hex digits, two per octet (for example \"0a1b\")")]
    ServerIdNotHex,
    /// The config ID (the connection ID's config rotation bits) must be 0 to 6; 7 marks
    /// connection IDs that are unroutable on purpose. Carries the value that was given.
    #[error(
        "QUIC-LB config ID {0} is out of range: use 0 to 6 (7 is reserved for unroutable connection IDs)"
    )]
    ConfigId(u8),
    /// A config's server ID length must be 1 to 15 octets. Carries the value that was given.
    #[error("QUIC-LB server ID length {0} is out of range: use 1 to 15 octets")]
    ServerIdLen(u8),
    /// A config's nonce length must be 4 to 18 octets. Carries the value that was given.
    #[error("QUIC-LB nonce length {0} is out of range: use 4 to 18 octets")]
    NonceLen(u8),
    /// Server ID length plus nonce length is over 19 octets, so with the first octet the
    /// connection ID would be longer than the 20 octets QUIC version 1 allows.
    #[error(
        "QUIC-LB server ID length {server_id_len} plus nonce length {nonce_len} is over 19 octets: \
         with the first octet the connection ID would exceed QUIC's 20"
    )]
    ConnectionIdTooLong {
        /// The configured server ID length, in octets.
        server_id_len: u8,
        /// The configured nonce length, in octets.
        nonce_len: u8,
    },
    /// A server ID given to encode is not as long as the config's server IDs.
    #[error("this QUIC-LB config's server IDs are {expected} octets long, but the one given has {actual}")]
    ServerIdMismatch {
        /// The config's server ID length.
        expected: usize,
        /// The length of the server ID that was given.
        actual: usize,
    },
    /// A nonce given to encode is not as long as the config's nonces.
    #[error("this QUIC-LB config's nonces are {expected} octets long, but the one given has {actual}")]
    NonceMismatch {
        /// The config's nonce length.
        expected: usize,
        /// The length of the nonce that was given.
        actual: usize,
    },
    /// A connection ID is shorter than the config's connection ID length.
    #[error("the connection ID has {actual} octets, fewer than the {needed} this QUIC-LB config needs")]
    TooShort {
        /// The config's connection ID length (first octet, server ID and nonce).
        needed: usize,
        /// The length of the connection ID that was given.
        actual: usize,
    },
    /// A connection ID's config rotation bits name another config than the one asked to
    /// decode it.
    #[error("the connection ID belongs to QUIC-LB config {actual}, not to config {expected}")]
    WrongConfig {
        /// The config ID of the config asked to decode.
        expected: u8,
        /// The config rotation bits of the connection ID.
        actual: u8,
    },
    /// Two configs of one set have the same config ID. Carries the ID.
    #[error("QUIC-LB config ID {0} is given more than once")]
    DuplicateConfigId(u8),
}
