//! What a platform keeps beside the core and hands over with it: the upstream pool's
//! bookkeeping (which pool socket each flow uses, and each backend's quarantined sockets),
//! which flows have a socket of their own, and which probes are in flight. The sockets
//! themselves travel separately (a new process receives them as file descriptors); this
//! says what each one is, in the order the platform lists them.
//!
//! The encoding is the snapshot's: a magic, the format version, one section.

use super::{Codec, Reader, SnapshotError, VERSION, Writer};
use crate::id::{BackendId, FlowId, ProbeId};
use crate::pool::Pool;
use crate::time::Instant;

/// The first eight bytes of a platform state.
pub const PLATFORM_MAGIC: [u8; 8] = *b"UDPLBPLT";

/// A platform's own state, for a handover.
#[derive(Debug, Default)]
pub struct PlatformState {
    /// The pool's bookkeeping: its socket indices are the positions of the pool sockets
    /// handed over.
    pub pool: Pool<FlowId>,
    /// Flows with a socket of their own (`upstream_mode = "per_flow"`), in the order their
    /// sockets are handed over, with each one's backend.
    pub flow_sockets: Vec<(FlowId, BackendId)>,
    /// Probes in flight, in the order their sockets are handed over: the probe, when the
    /// core gives up on it, and whether it is a TCP connect (else a UDP datagram).
    pub probes: Vec<(ProbeId, Instant, bool)>,
}

impl PlatformState {
    /// The bytes [`PlatformState::decode`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        PlatformState::encode_parts(&self.pool, &self.flow_sockets, &self.probes)
    }

    /// [`PlatformState::encode`] from borrowed parts (a platform that goes on using its pool).
    pub fn encode_parts(
        pool: &Pool<FlowId>,
        flow_sockets: &[(FlowId, BackendId)],
        probes: &[(ProbeId, Instant, bool)],
    ) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(&PLATFORM_MAGIC);
        VERSION.put(&mut w);
        w.section(1, |w| {
            pool.put(w);
            flow_sockets.to_vec().put(w);
            probes.to_vec().put(w);
        });
        w.bytes
    }

    /// Reads what [`PlatformState::encode`] wrote; anything else is a typed error.
    pub fn decode(bytes: &[u8]) -> Result<PlatformState, SnapshotError> {
        if bytes.len() < PLATFORM_MAGIC.len() || bytes[..PLATFORM_MAGIC.len()] != PLATFORM_MAGIC {
            return Err(SnapshotError::BadMagic {
                found: bytes[..bytes.len().min(PLATFORM_MAGIC.len())].to_vec(),
            });
        }
        let mut r = Reader::new(bytes, "platform");
        r.take(PLATFORM_MAGIC.len(), "magic")?;
        let version = u16::get(&mut r)?;
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion { found: version, supported: VERSION });
        }
        let tag = r.u8("section tag")?;
        if tag != 1 {
            return Err(r.invalid("platform section tag"));
        }
        let len = r.u32("section length")? as usize;
        let mut body = r.sub(len, "platform")?;
        r.finish()?;
        let pool = Pool::get(&mut body)?;
        let flow_sockets = Vec::get(&mut body)?;
        let probes = Vec::get(&mut body)?;
        body.finish()?;
        Ok(PlatformState { pool, flow_sockets, probes })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::pool::Acquire;

    fn address(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_pool_round_trips_and_keeps_deciding_the_same() {
        let mut pool = Pool::<FlowId>::default();
        let backend = address("127.0.0.1:53");
        let other = address("[::1]:53");
        for (serial, to) in [(1, backend), (2, backend), (3, other)] {
            let now = Instant::from_nanos(serial);
            let socket = match pool.acquire(to, now) {
                Acquire::Socket(socket) => socket,
                Acquire::Grow => pool.add_socket(to),
            };
            pool.bind(FlowId::for_tests(serial as u32, serial), socket, to, BackendId(serial as u32));
        }
        pool.release(FlowId::for_tests(1, 1), Instant::from_nanos(10));
        let state = PlatformState {
            pool,
            flow_sockets: vec![(FlowId::for_tests(7, 9), BackendId(2))],
            probes: vec![(ProbeId(4), Instant::from_nanos(99), true)],
        };
        let bytes = state.encode();
        let mut restored = PlatformState::decode(&bytes).expect("decodes");
        assert_eq!(restored.encode(), bytes, "the same bytes again");
        assert_eq!(restored.flow_sockets, state.flow_sockets);
        assert_eq!(restored.probes, state.probes);
        let mut original = state.pool;
        for pool in [&mut original, &mut restored.pool] {
            assert_eq!(pool.occupant(1, backend).map(|b| b.flow), Some(FlowId::for_tests(2, 2)));
        }
        // Both pools decide the next flows alike: the quarantined socket, then growth.
        for nanos in [11, 300_000_100] {
            let now = Instant::from_nanos(nanos);
            assert_eq!(original.acquire(backend, now), restored.pool.acquire(backend, now));
        }
    }

    #[test]
    fn damaged_bytes_are_typed_errors() {
        let bytes = PlatformState::default().encode();
        assert!(matches!(PlatformState::decode(b"nonsense"), Err(SnapshotError::BadMagic { .. })));
        for cut in 0..bytes.len() {
            assert!(PlatformState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = bytes.clone();
        newer[8] = 0xfe;
        assert!(matches!(PlatformState::decode(&newer), Err(SnapshotError::UnsupportedVersion { .. })));
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(PlatformState::decode(&longer), Err(SnapshotError::TrailingBytes { .. })));
    }
}
