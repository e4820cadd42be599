//! PROXY protocol version 2 (haproxy.org `proxy-protocol.txt`, cited here as "PPv2 §n").
//!
//! udplb prefixes datagrams it forwards to a backend with a binary PROXY header so the
//! backend learns the real client (source) and the VIP it reached (destination). Which
//! datagrams of a flow carry it (the first, or every one) is a cluster setting decided by
//! the flow manager; this module only writes and reads headers.
//!
//! # Layout
//!
//! The files are layered, the field layout at the bottom and the encoders on top; each
//! imports only from the layers below it, never from its own layer or one above:
//!
//! 1. `field`: the field layout and vocabulary — the signature, lengths, byte offsets and
//!    the command, address family and transport nibbles ([`Command`], [`AddressFamily`],
//!    [`Transport`]).
//! 2. [`tlv`]: the TLV registry ([`TlvKind`]) and owned TLVs ([`Tlv`]); `error`: the error
//!    vocabulary ([`DecodeError`], [`EmitError`], [`BufferTooSmall`]).
//! 3. [`wire`]: the checked view ([`Packet`]): framing of one header and accessors that
//!    cannot panic, plus a TLV iterator. [`repr`]: the representation ([`Header`],
//!    [`Addresses`]), what a header says independent of its bytes.
//! 4. `parse`: [`Header::parse`], which reads the representation through the checked view;
//!    every malformed field is a [`DecodeError`] variant. `emit`: [`Header::buffer_len`] and
//!    [`Header::emit`], and the field writers they use. The simulator's backends and the
//!    fuzzers decode and re-emit with these.
//! 5. `encode`: the datapath's allocation-free encoder, [`write_proxy_header`] (and
//!    [`write_local_header`] for health probes), which writes into the headroom in front of
//!    a received datagram. It writes with the emit layer's field writers, and the tests
//!    check that it and `Header::emit` produce the same bytes.
//!
//! # What udplb sends
//!
//! PROXY command, DGRAM transport, 0x12 (IPv4) when both endpoints are IPv4 after
//! canonicalising IPv4-mapped addresses, otherwise 0x22 (IPv6) with any IPv4 endpoint
//! mapped. Optional TLVs, always in this order: CRC32C (Castagnoli, computed over the whole
//! header with its own field zeroed, PPv2 §2.2.3), then UNIQUE_ID (the flow serial, 8 bytes
//! big-endian, PPv2 §2.2.5).
//!
//! ```
//! use std::net::SocketAddr;
//! use udplb_core::proxy_v2::{Header, TlvOptions, MAX_PROXY_HEADER_LEN, write_proxy_header};
//!
//! let client: SocketAddr = "192.0.2.1:53000".parse().unwrap();
//! let vip: SocketAddr = "198.51.100.7:53".parse().unwrap();
//! let tlvs = TlvOptions { crc32c: true, unique_id: Some([7; 16]) };
//! let mut headroom = [0u8; MAX_PROXY_HEADER_LEN];
//! let len = write_proxy_header(&mut headroom, client, vip, tlvs).unwrap();
//!
//! let (header, consumed) = Header::parse(&headroom[..len]).unwrap();
//! assert_eq!(consumed, len);
//! assert_eq!(header.proxied_endpoints(), Some((client, vip)));
//! ```

mod emit;
mod encode;
mod error;
mod field;
#[cfg(any(test, feature = "fuzzing"))]
mod fuzz;
mod parse;
pub mod repr;
pub mod tlv;
pub mod wire;

pub use encode::{TlvOptions, local_header_len, proxy_header_len, write_local_header, write_proxy_header};
pub use error::{BufferTooSmall, DecodeError, EmitError};
pub use field::{CRC32C_TLV_LEN, MAX_PROXY_HEADER_LEN, UNIQUE_ID_TLV_LEN};
#[cfg(any(test, feature = "fuzzing"))]
pub use fuzz::{fuzz_decode, fuzz_roundtrip};
pub use repr::{AddressFamily, Addresses, Command, Header, Transport};
pub use tlv::{Tlv, TlvKind};
pub use wire::{FIXED_HEADER_LEN, Packet, SIGNATURE};

#[cfg(test)]
mod tests;
