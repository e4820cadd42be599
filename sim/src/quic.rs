//! QUIC-like hosts, enough of QUIC for QUIC-LB connection-ID routing to matter: a client that
//! holds one connection from one socket, and a server that issues connection IDs with a
//! QUIC-LB configuration (draft-ietf-quic-load-balancers-21) and knows which ones it issued.
//!
//! The packets carry QUIC's invariant header (RFC 8999) and a request's tag as their payload:
//!
//! - long header: `[0xc0, 0, 0, 0, 1 (version 1), DCID length, DCID, SCID length, SCID, tag]`;
//! - short header: `[0x40, DCID, tag]` (the DCID's length is not on the wire: its receiver
//!   knows the lengths of the IDs it issued).
//!
//! A client starts with long-header "Initials" whose DCID is random (its own choice, drawn
//! once from its name and the run's seed) and whose SCID is its own connection ID. The server
//! that gets one it has not seen issues a connection ID (its server ID and a counter as the
//! nonce, encoded by `udplb_core::quic_lb`) and answers with a long header carrying it as the
//! SCID; from the first such answer on, the client sends short headers to that ID. A server
//! answers a short header only if it issued the ID: any other is a packet for a connection it
//! does not have, which a real server answers with a stateless reset, ending the connection.
//! Here it stays silent and counts it (`unknown_connections`), so the request goes unanswered
//! and the client, which never hears of the reset, keeps sending into the void — what a
//! connection broken by a balancer that sent it to the wrong server feels like.

use std::collections::{BTreeMap, BTreeSet};

use udplb_core::config::QuicLbEntry;
use udplb_core::quic_lb::{QuicLbConfig, ServerId};

/// The first octet of a long header (header form and fixed bits set, type Initial).
const LONG: u8 = 0xc0;
/// The first octet of a short header (fixed bit set).
const SHORT: u8 = 0x40;
/// QUIC version 1.
const VERSION_1: [u8; 4] = [0, 0, 0, 1];
/// The length of the connection IDs clients choose (their own, and their Initials' DCIDs).
pub const CLIENT_CID_LEN: usize = 8;

/// A long header's connection IDs and what follows them.
struct Long<'a> {
    dcid: &'a [u8],
    scid: &'a [u8],
    body: &'a [u8],
}

/// Reads a long header; `None` for anything else or a header cut short.
fn parse_long(datagram: &[u8]) -> Option<Long<'_>> {
    let (&first, rest) = datagram.split_first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let rest = rest.get(4..)?;
    let (&dcid_len, rest) = rest.split_first()?;
    let (dcid, rest) = rest.split_at_checked(usize::from(dcid_len))?;
    let (&scid_len, rest) = rest.split_first()?;
    let (scid, body) = rest.split_at_checked(usize::from(scid_len))?;
    Some(Long { dcid, scid, body })
}

/// A long-header packet.
fn long_packet(dcid: &[u8], scid: &[u8], body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(7 + dcid.len() + scid.len() + body.len());
    packet.push(LONG);
    packet.extend_from_slice(&VERSION_1);
    packet.push(dcid.len() as u8);
    packet.extend_from_slice(dcid);
    packet.push(scid.len() as u8);
    packet.extend_from_slice(scid);
    packet.extend_from_slice(body);
    packet
}

/// A short-header packet.
fn short_packet(dcid: &[u8], body: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(1 + dcid.len() + body.len());
    packet.push(SHORT);
    packet.extend_from_slice(dcid);
    packet.extend_from_slice(body);
    packet
}

/// Eight octets drawn from `name` and `seed` (FNV-1a, then a SplitMix64 finish): a client's
/// "random" connection IDs, the same in every run with that seed.
fn octets_of(name: &str, seed: u64, domain: u8) -> [u8; CLIENT_CID_LEN] {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(domain);
    for byte in name.bytes().chain(seed.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (hash ^ (hash >> 31)).to_be_bytes()
}

/// What a packet sent to a client carries after its header, whichever client's connection
/// it is (every client's ID has [`CLIENT_CID_LEN`] octets); `None` for anything else.
pub fn after_client_header(datagram: &[u8]) -> Option<&[u8]> {
    match parse_long(datagram) {
        Some(long) => Some(long.body),
        None => datagram.strip_prefix(&[SHORT])?.get(CLIENT_CID_LEN..),
    }
}

/// A QUIC client's one connection: the IDs it chose, and the server's once it has it.
#[derive(Clone, Debug)]
pub struct QuicClient {
    /// The DCID of its Initials: its own random choice.
    initial_dcid: [u8; CLIENT_CID_LEN],
    /// Its own connection ID: the DCID of what the server sends it.
    cid: [u8; CLIENT_CID_LEN],
    /// The connection ID the server issued (the SCID of the first long-header answer).
    pub server_cid: Option<Vec<u8>>,
}

impl QuicClient {
    /// Client `name`'s connection in a run with `seed`.
    pub fn new(name: &str, seed: u64) -> QuicClient {
        QuicClient { initial_dcid: octets_of(name, seed, 1), cid: octets_of(name, seed, 2), server_cid: None }
    }

    /// A request carrying `body`: an Initial until the server's ID is known, then a short
    /// header to that ID.
    pub fn packet(&self, body: &[u8]) -> Vec<u8> {
        match &self.server_cid {
            None => long_packet(&self.initial_dcid, &self.cid, body),
            Some(server) => short_packet(server, body),
        }
    }

    /// What a datagram sent to the client carries after its header, if it is a packet of
    /// its connection (its DCID is the client's ID); reads nothing into the connection.
    pub fn body<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        match parse_long(datagram) {
            Some(long) => (long.dcid == self.cid).then_some(long.body),
            None => {
                let rest = datagram.strip_prefix(&[SHORT])?;
                rest.strip_prefix(&self.cid[..])
            }
        }
    }

    /// A datagram reached the client: its payload after the header, if it belongs to the
    /// connection. The first long header from a server gives the server's connection ID.
    pub fn receive<'a>(&mut self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        if self.server_cid.is_none()
            && let Some(long) = parse_long(datagram)
            && long.dcid == self.cid
            && !long.scid.is_empty()
        {
            self.server_cid = Some(long.scid.to_vec());
        }
        self.body(datagram)
    }
}

/// What a QUIC server does with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum QuicAnswer {
    /// Answer with this packet.
    Reply(Vec<u8>),
    /// A short header whose connection ID it did not issue: a connection it does not have.
    UnknownConnection,
    /// Not a QUIC packet it can read (dropped, as a QUIC stack drops garbage).
    NotQuic,
}

/// A QUIC server that issues connection IDs with QUIC-LB.
#[derive(Clone, Debug)]
pub struct QuicServer {
    server_id: ServerId,
    /// The configuration it issues new IDs with (a `set_backend` may rotate it).
    config: QuicLbConfig,
    /// The next nonce, as a counter.
    next_nonce: u64,
    /// Its connections: the ID it issued for each, and the client's ID (where its answers
    /// go).
    connections: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The DCIDs of the Initials that opened them (the client's own choice), and the ID
    /// issued for each: a repeated Initial belongs to the connection it opened.
    initials: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The lengths of the IDs it issued: a short header's DCID is one of them.
    lengths: BTreeSet<usize>,
}

impl QuicServer {
    /// A server with `server_id` (hex) issuing IDs with `config`; `Err` says what is wrong.
    pub fn new(server_id: &str, config: &QuicLbEntry) -> Result<QuicServer, String> {
        let server_id =
            ServerId::from_hex(server_id).map_err(|error| format!("server_id {server_id:?}: {error}"))?;
        let config = Self::codec(&server_id, config)?;
        Ok(QuicServer {
            server_id,
            config,
            next_nonce: 0,
            connections: BTreeMap::new(),
            initials: BTreeMap::new(),
            lengths: BTreeSet::new(),
        })
    }

    /// The codec's configuration for `entry`, checked against the server ID's length.
    fn codec(server_id: &ServerId, entry: &QuicLbEntry) -> Result<QuicLbConfig, String> {
        let config = entry.to_codec().map_err(|error| format!("cid_config: {error}"))?;
        if config.server_id_len() != server_id.as_bytes().len() {
            return Err(format!(
                "cid_config has server_id_len = {}, but server_id {server_id} is {} octets",
                config.server_id_len(),
                server_id.as_bytes().len()
            ));
        }
        Ok(config)
    }

    /// From now on it issues IDs with `config` (a config rotation); the connections it has
    /// keep their IDs.
    pub fn set_config(&mut self, config: &QuicLbEntry) -> Result<(), String> {
        self.config = Self::codec(&self.server_id, config)?;
        Ok(())
    }

    /// Connections it has opened so far.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// A datagram arrived: answer it, or say why not.
    pub fn answer(&mut self, datagram: &[u8]) -> QuicAnswer {
        if let Some(long) = parse_long(datagram) {
            let issued = if self.connections.contains_key(long.dcid) {
                long.dcid.to_vec()
            } else if let Some(issued) = self.initials.get(long.dcid) {
                issued.clone()
            } else {
                let issued = self.issue();
                self.initials.insert(long.dcid.to_vec(), issued.clone());
                self.connections.insert(issued.clone(), long.scid.to_vec());
                issued
            };
            let client = &self.connections[&issued];
            return QuicAnswer::Reply(long_packet(client, &issued, long.body));
        }
        if datagram.first().is_none_or(|first| first & SHORT == 0) {
            return QuicAnswer::NotQuic;
        }
        match self.short_dcid(datagram) {
            Some((dcid, body)) => QuicAnswer::Reply(short_packet(&self.connections[dcid], body)),
            None => QuicAnswer::UnknownConnection,
        }
    }

    /// Whether it issued the ID a short-header datagram is sent to.
    pub fn issued(&self, datagram: &[u8]) -> bool {
        parse_long(datagram).is_none() && self.short_dcid(datagram).is_some()
    }

    /// The ID a short header is sent to, among those it issued, and what follows it.
    fn short_dcid<'a>(&self, datagram: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let rest = datagram.get(1..)?;
        self.lengths.iter().find_map(|length| {
            let (dcid, body) = rest.split_at_checked(*length)?;
            self.connections.contains_key(dcid).then_some((dcid, body))
        })
    }

    /// A new connection ID: its server ID, and the counter as the nonce.
    fn issue(&mut self) -> Vec<u8> {
        let counter = self.next_nonce.to_be_bytes();
        self.next_nonce += 1;
        let length = self.config.nonce_len();
        let mut nonce = vec![0u8; length];
        let take = length.min(counter.len());
        nonce[length - take..].copy_from_slice(&counter[counter.len() - take..]);
        let cid = self
            .config
            .encode(&self.server_id, &nonce, 0, true)
            .expect("the server ID and nonce have the configuration's lengths");
        self.lengths.insert(cid.len());
        cid.to_vec()
    }
}

/// Which of `servers` (one per backend host, `None` for a host without a QUIC server) issued
/// the connection ID a short-header packet is sent to, if any did.
pub fn issuer<'a>(servers: impl Iterator<Item = Option<&'a QuicServer>>, packet: &[u8]) -> Option<usize> {
    servers.enumerate().find_map(|(index, server)| server.is_some_and(|s| s.issued(packet)).then_some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u8, nonce_len: u8, key: Option<&str>) -> QuicLbEntry {
        QuicLbEntry { id, server_id_len: 1, nonce_len, key: key.map(str::to_owned) }
    }

    #[test]
    fn a_connection_opens_with_an_initial_and_goes_on_with_short_headers() {
        let mut client = QuicClient::new("c", 1);
        let mut server = QuicServer::new("01", &entry(0, 6, None)).unwrap();
        let initial = client.packet(b"c#0");
        assert_eq!(initial[0], LONG);
        let QuicAnswer::Reply(reply) = server.answer(&initial) else { panic!("no answer") };
        assert_eq!(client.receive(&reply), Some(&b"c#0"[..]));
        let cid = client.server_cid.clone().unwrap();
        assert_eq!(cid.len(), 8);
        assert_eq!(cid[1], 0x01, "plaintext: the server ID follows the first octet");
        let short = client.packet(b"c#1");
        assert_eq!(short[0], SHORT);
        assert!(server.issued(&short));
        let QuicAnswer::Reply(reply) = server.answer(&short) else { panic!("no answer") };
        assert_eq!(client.receive(&reply), Some(&b"c#1"[..]));
        // Another server has no such connection.
        let mut other = QuicServer::new("02", &entry(0, 6, None)).unwrap();
        assert_eq!(other.answer(&short), QuicAnswer::UnknownConnection);
        assert!(!other.issued(&short));
    }

    #[test]
    fn a_repeated_initial_belongs_to_the_connection_it_opened() {
        let client = QuicClient::new("c", 1);
        let mut server = QuicServer::new("01", &entry(0, 6, None)).unwrap();
        let first = server.answer(&client.packet(b"c#0"));
        let second = server.answer(&client.packet(b"c#0"));
        assert_eq!(first, second);
        assert_eq!(server.connections(), 1);
    }

    #[test]
    fn after_a_rotation_old_and_new_ids_are_both_known() {
        let key = Some("000102030405060708090a0b0c0d0e0f");
        let mut server = QuicServer::new("01", &entry(0, 6, key)).unwrap();
        let mut old = QuicClient::new("old", 1);
        let QuicAnswer::Reply(reply) = server.answer(&old.packet(b"old#0")) else { panic!() };
        old.receive(&reply);
        server.set_config(&entry(1, 15, key)).unwrap();
        let mut new = QuicClient::new("new", 1);
        let QuicAnswer::Reply(reply) = server.answer(&new.packet(b"new#0")) else { panic!() };
        new.receive(&reply);
        let new_cid = new.server_cid.clone().unwrap();
        assert_eq!((new_cid.len(), new_cid[0] >> 5), (17, 1));
        for client in [&old, &new] {
            let QuicAnswer::Reply(reply) = server.answer(&client.packet(b"x")) else { panic!() };
            assert_eq!(client.body(&reply), Some(&b"x"[..]));
        }
    }

    #[test]
    fn a_server_id_of_another_length_than_the_configuration_says_is_refused() {
        assert!(QuicServer::new("0102", &entry(0, 6, None)).is_err());
        assert!(QuicServer::new("zz", &entry(0, 6, None)).is_err());
    }
}
