//! A cluster's set of configs ([`QuicLbConfigs`]) and the routing of one datagram by its
//! destination connection ID ([`Route`]).
//!
//! # Reading the header
//!
//! Only QUIC's version-independent properties (RFC 8999) are read, so a new QUIC version
//! routes like the old ones:
//!
//! * The first octet's most significant bit picks the header form. The second bit (QUIC
//!   version 1's "fixed bit") is not an invariant and may be greased (RFC 9287), so it is
//!   not checked.
//! * Long header (bit set): version (4 octets), DCID length (1), DCID, SCID length (1),
//!   SCID. The whole of that must be in the datagram, or it is [`Unroutable::NotQuic`]: the
//!   invariants promise those fields, and a datagram cut short of them is not a QUIC packet.
//!   For the versions whose limit is known, QUIC version 1 (RFC 9000) and 2 (RFC 9369), a
//!   DCID or SCID over 20 octets is also `NotQuic` (RFC 9000 §17.2 says to drop such
//!   packets); for other versions RFC 8999 allows up to 255 octets and they are read.
//! * Version 0 is Version Negotiation (RFC 8999 §6), which only servers send; a client never
//!   does (RFC 9000 §6.1), so at a load balancer in front of servers it is `NotQuic`. Its
//!   DCID would be a value the client chose, never one of our servers' connection IDs.
//! * Short header (bit clear): the DCID's length is not on the wire. It is the octets after
//!   the first, as many as the config named by the config rotation bits of the second
//!   octet (the DCID's first) says.
//!
//! A DCID longer than the config's [`cid_len`](QuicLbConfig::cid_len) is read by its first
//! `cid_len` octets (servers may append octets of their own, draft §5.4). A server ID that
//! decodes is reported as it is: whether a server has it is the caller's question (draft §4
//! counts "does not correspond to an active server" as unroutable too).

use super::bytes::ServerId;
use super::config::{QuicLbConfig, UNROUTABLE_CONFIG_ID, config_id_of};
use super::error::QuicLbError;

/// The header-form bit of a QUIC packet's first octet: set for a long header.
const LONG_HEADER: u8 = 0x80;
/// QUIC version 1 (RFC 9000).
const QUIC_V1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
const QUIC_V2: u32 = 0x6b33_43cf;
/// The longest connection ID in QUIC versions 1 and 2.
const MAX_KNOWN_CID_LEN: usize = 20;
/// Octets of a long header before the DCID: first octet, version, DCID length.
const LONG_HEADER_DCID_OFFSET: usize = 6;

/// What a datagram's destination connection ID says about where it goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Route {
    /// The DCID decodes, with the config its rotation bits name, to this server ID.
    Server(ServerId),
    /// The DCID cannot be decoded; the balancer falls back to its other routing (draft
    /// §4.2).
    Unroutable(Unroutable),
}

/// Why a datagram has no server ID to route by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Unroutable {
    /// Not a QUIC packet by the invariants (RFC 8999): an empty datagram; a long header cut
    /// short of its version, DCID or SCID; a DCID or SCID over 20 octets for QUIC version 1
    /// or 2; or Version Negotiation (version 0), which clients never send. The module
    /// documentation says why each.
    NotQuic,
    /// The DCID's config rotation bits are 0b111 (unroutable on purpose) or name a config
    /// the cluster does not have. Carries the bits (0 to 7).
    UnknownConfig(u8),
    /// The DCID is too short for its config: in a long header, the DCID length field is
    /// less than the config's `cid_len` (zero included); in a short header, the datagram
    /// ends before `cid_len` octets after the first (or before the DCID's first octet).
    TooShort,
}

impl Unroutable {
    /// A short snake_case name for metric labels: `"not_quic"`, `"unknown_config"`,
    /// `"too_short"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Unroutable::NotQuic => "not_quic",
            Unroutable::UnknownConfig(_) => "unknown_config",
            Unroutable::TooShort => "too_short",
        }
    }
}

/// Up to seven configs, at most one per config ID (0 to 6): what a cluster holds. A DCID is
/// decoded with the config its config rotation bits name.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct QuicLbConfigs {
    by_id: [Option<QuicLbConfig>; UNROUTABLE_CONFIG_ID as usize],
}

impl QuicLbConfigs {
    /// A set of configs; two with the same config ID are an error
    /// ([`QuicLbError::DuplicateConfigId`]). An empty set is allowed: every DCID is then
    /// unroutable.
    pub fn new(configs: Vec<QuicLbConfig>) -> Result<QuicLbConfigs, QuicLbError> {
        let mut set = QuicLbConfigs::default();
        for config in configs {
            let id = config.config_id();
            // A config's ID is 0 to 6 (checked when it was built), so the slot exists.
            let Some(slot) = set.by_id.get_mut(usize::from(id)) else {
                return Err(QuicLbError::ConfigId(id));
            };
            if slot.is_some() {
                return Err(QuicLbError::DuplicateConfigId(id));
            }
            *slot = Some(config);
        }
        Ok(set)
    }

    /// The config with this config ID, if the set has one (never for 7 or more).
    pub fn get(&self, config_id: u8) -> Option<&QuicLbConfig> {
        self.by_id.get(usize::from(config_id)).and_then(Option::as_ref)
    }

    /// True when the set has no config.
    pub fn is_empty(&self) -> bool {
        self.by_id.iter().all(Option::is_none)
    }

    /// The number of configs in the set, 0 to 7.
    pub fn len(&self) -> usize {
        self.by_id.iter().flatten().count()
    }

    /// The configs, in increasing config ID.
    pub fn iter(&self) -> impl Iterator<Item = &QuicLbConfig> + '_ {
        self.by_id.iter().flatten()
    }

    /// Routes a datagram by its destination connection ID: reads the invariant header
    /// (long or short form, see the module documentation), picks the config by the DCID's
    /// config rotation bits, and decodes the server ID. Never panics; allocates nothing.
    pub fn route(&self, datagram: &[u8]) -> Route {
        // `locate` has checked the DCID's length and config, so `decode` cannot fail; were
        // it to, the DCID would be too short for it.
        let decoded = self
            .locate(datagram)
            .and_then(|(config, dcid)| config.decode(dcid).map_err(|_| Unroutable::TooShort));
        match decoded {
            Ok(server_id) => Route::Server(server_id),
            Err(why) => Route::Unroutable(why),
        }
    }

    /// The config and DCID that [`QuicLbConfigs::route`] would decode: for a long header the
    /// whole DCID field, for a short header the config's `cid_len` octets after the first.
    /// The DCID is at least `cid_len` octets and its rotation bits name the config.
    pub fn locate<'a>(&self, datagram: &'a [u8]) -> Result<(&QuicLbConfig, &'a [u8]), Unroutable> {
        let Some(&first_octet) = datagram.first() else {
            return Err(Unroutable::NotQuic);
        };
        if first_octet & LONG_HEADER != 0 {
            let dcid = long_header_dcid(datagram)?;
            let config = self.config_for(dcid.first())?;
            if dcid.len() < config.cid_len() {
                return Err(Unroutable::TooShort);
            }
            Ok((config, dcid))
        } else {
            let config = self.config_for(datagram.get(1))?;
            let dcid = datagram.get(1..1 + config.cid_len()).ok_or(Unroutable::TooShort)?;
            Ok((config, dcid))
        }
    }

    /// The config named by a DCID's first octet: `TooShort` if the DCID has none,
    /// `UnknownConfig` if the set lacks it.
    fn config_for(&self, dcid_first_octet: Option<&u8>) -> Result<&QuicLbConfig, Unroutable> {
        let Some(&octet) = dcid_first_octet else {
            return Err(Unroutable::TooShort);
        };
        let id = config_id_of(octet);
        self.get(id).ok_or(Unroutable::UnknownConfig(id))
    }
}

/// The DCID of a long-header packet, after checking the invariant fields around it (module
/// documentation, "Reading the header").
fn long_header_dcid(datagram: &[u8]) -> Result<&[u8], Unroutable> {
    let Some(&[_, v0, v1, v2, v3, dcid_len]) = datagram.first_chunk::<LONG_HEADER_DCID_OFFSET>() else {
        return Err(Unroutable::NotQuic);
    };
    let version = u32::from_be_bytes([v0, v1, v2, v3]);
    if version == 0 {
        return Err(Unroutable::NotQuic);
    }
    let limited = version == QUIC_V1 || version == QUIC_V2;
    let dcid_len = usize::from(dcid_len);
    if limited && dcid_len > MAX_KNOWN_CID_LEN {
        return Err(Unroutable::NotQuic);
    }
    let dcid_end = LONG_HEADER_DCID_OFFSET + dcid_len;
    let (Some(dcid), Some(&scid_len)) =
        (datagram.get(LONG_HEADER_DCID_OFFSET..dcid_end), datagram.get(dcid_end))
    else {
        return Err(Unroutable::NotQuic);
    };
    let scid_len = usize::from(scid_len);
    if (limited && scid_len > MAX_KNOWN_CID_LEN) || datagram.len() < dcid_end + 1 + scid_len {
        return Err(Unroutable::NotQuic);
    }
    Ok(dcid)
}
