//! Snapshots of the core: the whole dynamic state of a [`Balancer`](crate::Balancer),
//! written and read by the core, so that a new process can take over from an old one
//! without losing a flow.
//!
//! A snapshot is restored against the same [`Config`] the balancer runs (the configuration is
//! not in it; a fingerprint of it is). What the configuration determines is rebuilt from it;
//! what inputs changed is in the snapshot. [`Balancer::restore`](crate::Balancer::restore)
//! followed by the inputs the original would have seen produces, byte for byte, the outputs
//! the original would have.
//!
//! # Format (version 1)
//!
//! ```text
//! magic    8 bytes  "UDPLBSNP"
//! version  u16 LE   1
//! sections, in this order, each: tag u8, length u32 LE, body (length bytes)
//!   1 header    role u8, config fingerprint u64, the keys (32 + 16 + 8 bytes)
//!   2 layout    every listener, cluster and backend id: name, address, removed
//!   3 flows     the flow manager: flows, timers, counters, retry budget, serials, sources,
//!               backend tallies, candidates and selector state
//!   4 health    the health monitor: per-backend hysteresis, admin, check in flight, jitter
//!               generator position, history, outlier state; probes, timers, counters
//!   5 balancer  frontend states, a follower's backend states
//! ```
//!
//! Integers are little-endian; sequences carry a u64 length; every read is bounds-checked,
//! and every section must be read to its last byte. A reader meeting a version it does not
//! know refuses it ([`SnapshotError::UnsupportedVersion`]) before reading anything else.
//!
//! The configuration fingerprint is SipHash-1-3 (a fixed, public key) over the
//! configuration's canonical TOML rendering (`toml::to_string`: maps are ordered), so two
//! configurations that parse to the same value have the same fingerprint.

mod codec;
mod platform;
mod types;

pub use platform::{PLATFORM_MAGIC, PlatformState};

pub(crate) use codec::{Codec, Reader, Writer, codec_struct, codec_unit_enum};

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

use crate::config::Config;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"UDPLBSNP";
/// The format this build writes and the only one it reads.
pub const VERSION: u16 = 1;

pub(crate) const SECTION_HEADER: u8 = 1;
pub(crate) const SECTION_LAYOUT: u8 = 2;
pub(crate) const SECTION_FLOWS: u8 = 3;
pub(crate) const SECTION_HEALTH: u8 = 4;
pub(crate) const SECTION_BALANCER: u8 = 5;

/// The name of a section tag, for errors.
pub(crate) fn section_name(tag: u8) -> &'static str {
    match tag {
        SECTION_HEADER => "header",
        SECTION_LAYOUT => "layout",
        SECTION_FLOWS => "flows",
        SECTION_HEALTH => "health",
        SECTION_BALANCER => "balancer",
        _ => "unknown",
    }
}

/// Why a snapshot could not be written or restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a udplb snapshot: the first bytes are {found:02x?}, not \"UDPLBSNP\"")]
    BadMagic { found: Vec<u8> },
    #[error("snapshot format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("{section} section: {what} at offset {offset} needs {needed} bytes, {available} left")]
    Truncated { section: &'static str, what: &'static str, offset: usize, needed: usize, available: usize },
    #[error("{section} section: {what} at offset {offset} says {length}, but only {available} bytes follow")]
    BadLength { section: &'static str, what: &'static str, offset: usize, length: u64, available: usize },
    #[error("{section} section: invalid {what} at offset {offset}")]
    InvalidValue { section: &'static str, what: &'static str, offset: usize },
    #[error("{section} section: {extra} bytes left over at offset {offset}")]
    TrailingBytes { section: &'static str, offset: usize, extra: usize },
    #[error("expected the {expected} section (tag {tag_expected}) at offset {offset}, found tag {found}")]
    UnexpectedSection { expected: &'static str, tag_expected: u8, found: u8, offset: usize },
    #[error(
        "the snapshot was taken under another configuration (fingerprint {snapshot:016x}, this one {config:016x})"
    )]
    ConfigMismatch { snapshot: u64, config: u64 },
    #[error("the configuration is invalid: {0}")]
    InvalidConfig(String),
    #[error("the snapshot's {what} {index} is {snapshot}, the configuration builds {config}")]
    LayoutMismatch { what: &'static str, index: usize, snapshot: String, config: String },
    #[error("the snapshot's state is inconsistent: {0}")]
    Inconsistent(String),
    #[error("{0} outputs are waiting: drain poll_output() before taking a snapshot")]
    PendingOutputs(usize),
}

/// The fingerprint of a configuration (see the module docs).
pub fn config_fingerprint(config: &Config) -> u64 {
    let text = toml::to_string(config).unwrap_or_else(|error| format!("unrenderable: {error}"));
    let mut hasher = SipHasher13::new_with_key(b"udplb/snapshot/1");
    hasher.write(text.as_bytes());
    hasher.finish()
}

/// Reads the magic, the version and then hands out the sections in order.
pub(crate) struct Sections<'a> {
    reader: Reader<'a>,
}

impl<'a> Sections<'a> {
    pub(crate) fn open(bytes: &'a [u8]) -> Result<Sections<'a>, SnapshotError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::BadMagic { found: bytes[..bytes.len().min(MAGIC.len())].to_vec() });
        }
        let mut reader = Reader::new(bytes, "preamble");
        reader.take(MAGIC.len(), "magic")?;
        let version = u16::get(&mut reader)?;
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version, supported: VERSION });
        }
        Ok(Sections { reader })
    }

    /// The next section, which must be `tag`.
    pub(crate) fn next(&mut self, tag: u8) -> Result<Reader<'a>, SnapshotError> {
        let offset = self.reader.offset();
        self.reader.section = "preamble";
        let found = self.reader.u8("section tag")?;
        if found != tag {
            return Err(SnapshotError::UnexpectedSection {
                expected: section_name(tag),
                tag_expected: tag,
                found,
                offset,
            });
        }
        self.reader.section = section_name(tag);
        let len = self.reader.u32("section length")? as usize;
        if len > self.reader.remaining() {
            return Err(SnapshotError::BadLength {
                section: section_name(tag),
                what: "section length",
                offset: offset + 1,
                length: len as u64,
                available: self.reader.remaining(),
            });
        }
        self.reader.sub(len, section_name(tag))
    }

    pub(crate) fn finish(self) -> Result<(), SnapshotError> {
        let mut reader = self.reader;
        reader.section = "end";
        reader.finish()
    }
}

/// Starts a snapshot: the magic and the version.
pub(crate) fn preamble() -> Writer {
    let mut w = Writer::default();
    w.raw(&MAGIC);
    VERSION.put(&mut w);
    w
}
