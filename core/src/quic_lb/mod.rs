//! QUIC-LB connection IDs (draft-ietf-quic-load-balancers-21, cited as "draft §n"): servers
//! write their server ID into the connection IDs they issue, and the balancer reads it
//! back from each datagram's destination connection ID (DCID), so a client that moves to a
//! new address still reaches the same server.
//!
//! A [`QuicLbConfig`] is one parameter set: a config ID (0 to 6, carried in the top three
//! bits of every connection ID's first octet), server ID and nonce lengths, and an optional
//! AES-128 key. The key picks the algorithm ([`Format`]): none means the server ID is in the
//! clear; a key with server ID plus nonce of 16 octets means one AES block; any other
//! length means the draft's four-pass Feistel network. A cluster holds up to seven configs
//! in a [`QuicLbConfigs`], whose [`route`](QuicLbConfigs::route) reads a datagram's header
//! and gives a [`Route`].
//!
//! Everything here is a pure function of its inputs: no clock, no randomness (servers pass
//! their nonces in), no allocation on the routing path.
//!
//! ```
//! use udplb_core::quic_lb::{QuicLbConfig, QuicLbConfigs, Route, ServerId};
//!
//! let config = QuicLbConfig::new(1, 3, 5, Some([7; 16])).unwrap();
//! let server = ServerId::from_hex("0a0b0c").unwrap();
//! let cid = config.encode(&server, &[1, 2, 3, 4, 5], 0, true).unwrap();
//! assert_eq!(config.decode(&cid), Ok(server));
//!
//! // A short-header packet carrying that connection ID.
//! let mut datagram = vec![0x40];
//! datagram.extend_from_slice(&cid);
//! datagram.extend_from_slice(b"payload");
//! let configs = QuicLbConfigs::new(vec![config]).unwrap();
//! assert_eq!(configs.route(&datagram), Route::Server(server));
//! ```
//!
//! # Layout
//!
//! `error` ([`QuicLbError`]) and `bytes` ([`ServerId`], [`Nonce`], [`ConnectionId`]) at the
//! bottom; `cipher`, the keyed algorithms on raw octets; `config`, one config's encoder and
//! decoder; `route`, the set of configs and the header reading. Each file imports only
//! from the ones listed before it.

mod bytes;
mod cipher;
mod config;
mod error;
mod route;

pub use bytes::{ConnectionId, MAX_CID_LEN, MAX_NONCE_LEN, MAX_SERVER_ID_LEN, Nonce, ServerId};
pub use config::{Format, QuicLbConfig, UNROUTABLE_CONFIG_ID, config_id_of};
pub use error::QuicLbError;
pub use route::{QuicLbConfigs, Route, Unroutable};
