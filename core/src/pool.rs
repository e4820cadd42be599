//! The upstream socket pool's bookkeeping: which local socket carries which flow to which
//! backend (see docs/architecture.md, "Upstream sockets").
//!
//! A flow to backend B needs a local port that no other live flow to B uses, because B's
//! replies are told apart by (local port, B's address) alone. So the pool's sockets are
//! shared by flows to *different* backends: with N backends, N flows can share one port.
//! Each backend address has a *lane*: the pool sockets it has used, the ones free for it again
//! (oldest first), and how many it has taken so far. A socket released by a flow to B is not
//! given to the next flow to B at once: it waits [`QUARANTINE_NANOS`] (unless the pool cannot grow,
//! or is already more than twice the lane's live flows plus [`POOL_SLACK`]), so that a late
//! reply to the old flow is not taken for one to the new flow.
//!
//! This module decides; the platform owns the sockets and asks it. It holds no sockets, so it
//! is tested without any, and both platforms use it: the shell's `MioPlatform` (real sockets)
//! and the simulator's `SimPlatform` (simulated ports), so the simulator shares ports between
//! flows exactly as the binary does.
//!
//! Determinism: the maps are keyed lookups with a fixed hasher ([`FastHasher`]); nothing
//! iterates them on the way to a decision (only the test-only consistency check does), so the
//! same calls give the same sockets in every run.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

use crate::id::{BackendId, FlowId};
use crate::snapshot::Codec;
use crate::time::Instant;

/// How long a socket released by a flow to backend B stays unused for B (if the pool may
/// grow instead): a reply arriving later than this after its flow closed could otherwise
/// reach the client of a new flow. Replies that late are already lost to the old flow's
/// client; per-flow sockets have the same exposure when the kernel reuses a port.
pub const QUARANTINE_NANOS: u64 = 250_000_000;

/// Sockets the pool may hold beyond twice the live flows of the lane asking, before it
/// reuses a quarantined socket instead of opening one: every pool socket holds an ephemeral
/// port, which the whole machine shares, so churn (a new flow per query at tens of thousands
/// per second) must not turn the quarantine into thousands of idle ports.
pub const POOL_SLACK: usize = 256;

/// A fast hasher for the pool's small keys (ids and addresses), which are not chosen by a
/// remote peer in a way that could collide on purpose: backend addresses come from the
/// configuration, and flow ids from the core.
#[derive(Default)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, value: u32) {
        self.write_u64(u64::from(value));
    }
    fn write_u16(&mut self, value: u16) {
        self.write_u64(u64::from(value));
    }
    fn write_u8(&mut self, value: u8) {
        self.write_u64(u64::from(value));
    }
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }
}

/// A map with the fast, fixed hasher: keyed lookups only (see the module's note on
/// determinism).
pub type FastMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// One flow's place in the pool.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Binding<F> {
    /// The pool socket (index into the event loop's socket list).
    pub socket: u32,
    /// The backend's address.
    pub address: SocketAddr,
    /// The flow (a `FlowId` in the event loop).
    pub flow: F,
    /// For per-backend traffic counters.
    pub backend: BackendId,
}

/// What [`Pool::acquire`] found for a new flow.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Use this existing socket.
    Socket(u32),
    /// Every existing socket of this address family is busy (or quarantined) for this
    /// backend: open a new one and call [`Pool::add_socket`], or, if that fails,
    /// [`Pool::acquire_quarantined`].
    Grow,
}

#[derive(Debug, Default)]
struct Lane {
    /// Sockets free for this backend, released oldest first, with when.
    free: VecDeque<(u32, Instant)>,
    /// The family's sockets `0..taken` have served this backend at some time; each is either
    /// busy with a flow to it or in `free`.
    taken: u32,
}

/// The pool's bookkeeping (no sockets).
#[derive(Debug)]
pub struct Pool<F> {
    /// Pool sockets by family: `[IPv4, IPv6]`, each a list of indices into the socket list.
    families: [Vec<u32>; 2],
    lanes: FastMap<SocketAddr, Lane>,
    bindings: FastMap<F, Binding<F>>,
    /// Who receives a datagram from `address` on `socket`.
    occupants: FastMap<(u32, SocketAddr), F>,
    sockets: u32,
}

fn family(address: SocketAddr) -> usize {
    usize::from(address.is_ipv6())
}

impl<F> Default for Pool<F> {
    fn default() -> Self {
        Pool {
            families: [Vec::new(), Vec::new()],
            lanes: FastMap::default(),
            bindings: FastMap::default(),
            occupants: FastMap::default(),
            sockets: 0,
        }
    }
}

impl<F: Copy + Eq + std::hash::Hash + std::fmt::Debug> Pool<F> {
    /// Where a new flow to `address` goes.
    pub fn acquire(&mut self, address: SocketAddr, now: Instant) -> Acquire {
        let sockets = &self.families[family(address)];
        let lane = self.lanes.entry(address).or_default();
        if let Some(&(socket, released)) = lane.free.front()
            && now.as_nanos().saturating_sub(released.as_nanos()) >= QUARANTINE_NANOS
        {
            lane.free.pop_front();
            return Acquire::Socket(socket);
        }
        if let Some(&socket) = sockets.get(lane.taken as usize) {
            lane.taken += 1;
            return Acquire::Socket(socket);
        }
        let busy = lane.taken as usize - lane.free.len();
        if sockets.len() >= 2 * (busy + 1) + POOL_SLACK
            && let Some((socket, _)) = lane.free.pop_front()
        {
            return Acquire::Socket(socket);
        }
        Acquire::Grow
    }

    /// The pool could not grow: the socket released longest ago for `address`, quarantine or
    /// not, if there is one.
    pub fn acquire_quarantined(&mut self, address: SocketAddr) -> Option<u32> {
        self.lanes.get_mut(&address)?.free.pop_front().map(|(socket, _)| socket)
    }

    /// Registers a socket just opened for `address`'s family after [`Acquire::Grow`] and
    /// takes it for `address`. Returns its index.
    pub fn add_socket(&mut self, address: SocketAddr) -> u32 {
        let socket = self.sockets;
        self.sockets += 1;
        self.families[family(address)].push(socket);
        let lane = self.lanes.entry(address).or_default();
        // Every other socket of the family is already busy or quarantined for this lane.
        lane.taken = self.families[family(address)].len() as u32;
        socket
    }

    /// Records that `flow` (to `backend` at `address`) uses `socket`.
    pub fn bind(&mut self, flow: F, socket: u32, address: SocketAddr, backend: BackendId) {
        self.occupants.insert((socket, address), flow);
        self.bindings.insert(flow, Binding { socket, address, flow, backend });
    }

    /// Ends `flow`'s use of its socket; the socket waits in its lane's quarantine.
    pub fn release(&mut self, flow: F, now: Instant) -> Option<Binding<F>> {
        let binding = self.bindings.remove(&flow)?;
        self.occupants.remove(&(binding.socket, binding.address));
        if let Some(lane) = self.lanes.get_mut(&binding.address) {
            lane.free.push_back((binding.socket, now));
        }
        Some(binding)
    }

    pub fn binding(&self, flow: F) -> Option<&Binding<F>> {
        self.bindings.get(&flow)
    }

    /// The flow a datagram from `source` on `socket` belongs to.
    pub fn occupant(&self, socket: u32, source: SocketAddr) -> Option<&Binding<F>> {
        self.bindings.get(self.occupants.get(&(socket, source))?)
    }

    /// Flows currently placed.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// No flow is placed.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Pool sockets opened (never closed while the process runs).
    pub fn sockets(&self) -> u32 {
        self.sockets
    }
}

/// The pool in a handover ([`crate::snapshot::PlatformState`]): lanes and bindings in
/// address and flow order (the reply index is rebuilt from the bindings), then checked, so
/// that no input decodes into a pool that would misroute a reply.
impl crate::snapshot::Codec for Pool<FlowId> {
    fn put(&self, w: &mut crate::snapshot::Writer) {
        self.families.put(w);
        let mut lanes: Vec<(&SocketAddr, &Lane)> = self.lanes.iter().collect();
        lanes.sort_by_key(|(address, _)| **address);
        lanes.len().put(w);
        for (address, lane) in lanes {
            address.put(w);
            lane.free.put(w);
            lane.taken.put(w);
        }
        let mut bindings: Vec<&Binding<FlowId>> = self.bindings.values().collect();
        bindings.sort_by_key(|binding| binding.flow);
        bindings.len().put(w);
        for binding in bindings {
            binding.flow.put(w);
            binding.socket.put(w);
            binding.address.put(w);
            binding.backend.put(w);
        }
        self.sockets.put(w);
    }

    fn get(r: &mut crate::snapshot::Reader<'_>) -> Result<Self, crate::snapshot::SnapshotError> {
        let families = <[Vec<u32>; 2]>::get(r)?;
        let mut pool = Pool { families, ..Pool::default() };
        let mut last_address = None;
        for _ in 0..r.len("lanes")? {
            let address = SocketAddr::get(r)?;
            let lane = Lane { free: <VecDeque<(u32, Instant)> as Codec>::get(r)?, taken: u32::get(r)? };
            // In address order (the encoding is canonical), and consistent with its family:
            // it took at most every socket of the family, and its free ones are among those.
            let sockets = &pool.families[family(address)];
            let consistent = lane.free.len() <= lane.taken as usize
                && lane.taken as usize <= sockets.len()
                && lane.free.iter().all(|(socket, _)| sockets[..lane.taken as usize].contains(socket));
            if last_address.is_some_and(|last| last >= address) || !consistent {
                return Err(r.invalid("pool lane"));
            }
            last_address = Some(address);
            pool.lanes.insert(address, lane);
        }
        let mut last_flow = None;
        for _ in 0..r.len("bindings")? {
            let flow = FlowId::get(r)?;
            let (socket, address, backend) = <(u32, SocketAddr, BackendId)>::get(r)?;
            let in_family = pool.families[family(address)].contains(&socket);
            if last_flow.is_some_and(|last| last >= flow)
                || pool.occupants.contains_key(&(socket, address))
                || !in_family
            {
                return Err(r.invalid("pool binding"));
            }
            last_flow = Some(flow);
            pool.bind(flow, socket, address, backend);
        }
        pool.sockets = u32::get(r)?;
        let sockets = pool.sockets;
        let listed = pool.families.iter().flatten().count();
        let in_range = pool.families.iter().flatten().all(|&socket| socket < sockets)
            && pool.bindings.values().all(|binding| binding.socket < sockets)
            && pool.lanes.values().all(|lane| lane.free.iter().all(|(socket, _)| *socket < sockets));
        if listed != sockets as usize || !in_range {
            return Err(r.invalid("pool socket index"));
        }
        Ok(pool)
    }
}

impl<F: Copy + Eq + std::hash::Hash + std::fmt::Debug> Pool<F> {
    /// Every binding is in the reply index and vice versa; no socket serves two flows to one
    /// backend; every lane accounts for each socket it took exactly once.
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        if self.bindings.len() != self.occupants.len() {
            return Err(format!("{} bindings, {} occupants", self.bindings.len(), self.occupants.len()));
        }
        for (flow, binding) in &self.bindings {
            if self.occupants.get(&(binding.socket, binding.address)) != Some(flow) {
                return Err(format!("{flow:?} is not the occupant of its own place"));
            }
        }
        for (address, lane) in &self.lanes {
            let busy = self.bindings.values().filter(|b| b.address == *address).count();
            if busy + lane.free.len() != lane.taken as usize {
                return Err(format!(
                    "{address}: {busy} busy + {} free != {} taken",
                    lane.free.len(),
                    lane.taken
                ));
            }
            let mut seen: Vec<u32> = lane.free.iter().map(|(s, _)| *s).collect();
            seen.extend(self.bindings.values().filter(|b| b.address == *address).map(|b| b.socket));
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{address}: a socket is both busy and free, or twice free"));
            }
        }
        for (index, sockets) in self.families.iter().enumerate() {
            let busiest = self.lanes.iter().filter(|(a, _)| family(**a) == index).map(|(_, l)| l.taken).max();
            if sockets.len() as u32 != busiest.unwrap_or(0) {
                return Err(format!("{} sockets, but the busiest lane took {busiest:?}", sockets.len()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backend(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(i)))
    }

    fn flow(serial: u64) -> u64 {
        serial
    }

    /// Opens a flow the way the event loop does (growing when asked).
    fn open(pool: &mut Pool<u64>, serial: u64, address: SocketAddr, now: Instant) -> u32 {
        let socket = match pool.acquire(address, now) {
            Acquire::Socket(socket) => socket,
            Acquire::Grow => pool.add_socket(address),
        };
        pool.bind(flow(serial), socket, address, BackendId(0));
        socket
    }

    #[test]
    fn flows_to_different_backends_share_a_port_and_to_one_backend_do_not() {
        let mut pool = Pool::<u64>::default();
        let now = Instant::ZERO;
        let sockets: Vec<u32> = (0..4).map(|i| open(&mut pool, i, backend(i as u8), now)).collect();
        assert_eq!(sockets, [0, 0, 0, 0]);
        assert_eq!(open(&mut pool, 10, backend(0), now), 1);
        assert_eq!(open(&mut pool, 11, backend(0), now), 2);
        assert_eq!(open(&mut pool, 12, backend(1), now), 1);
        assert_eq!(pool.sockets(), 3);
        assert_eq!(pool.occupant(1, backend(1)).map(|b| b.flow), Some(flow(12)));
        assert_eq!(pool.occupant(2, backend(1)), None);
        pool.check().unwrap();
    }

    #[test]
    fn a_released_socket_waits_out_its_quarantine_before_serving_the_same_backend() {
        let mut pool = Pool::<u64>::default();
        let t0 = Instant::ZERO;
        open(&mut pool, 1, backend(0), t0);
        open(&mut pool, 2, backend(1), t0);
        pool.release(flow(1), t0);
        // Within the quarantine a new flow to backend 0 gets a new socket...
        assert_eq!(pool.acquire(backend(0), Instant::from_nanos(QUARANTINE_NANOS - 1)), Acquire::Grow);
        assert_eq!(pool.add_socket(backend(0)), 1);
        pool.bind(flow(3), 1, backend(0), BackendId(0));
        // ...after it, the released one; and when the pool cannot grow, the oldest anyway.
        let later = Instant::from_nanos(QUARANTINE_NANOS);
        assert_eq!(pool.acquire(backend(0), later), Acquire::Socket(0));
        pool.bind(flow(4), 0, backend(0), BackendId(0));
        pool.release(flow(3), later);
        assert_eq!(pool.acquire(backend(0), later), Acquire::Grow);
        assert_eq!(pool.acquire_quarantined(backend(0)), Some(1));
        pool.bind(flow(5), 1, backend(0), BackendId(0));
        pool.check().unwrap();
        // Backend 1's lane never saw socket 1: it takes it fresh.
        assert_eq!(pool.acquire(backend(1), later), Acquire::Socket(1));
    }

    #[test]
    fn churn_within_the_quarantine_does_not_grow_the_pool_without_bound() {
        let mut pool = Pool::<u64>::default();
        let now = Instant::ZERO;
        // A new flow per query, each closed at once, all within one quarantine.
        for serial in 0..10_000 {
            open(&mut pool, serial, backend(0), now);
            pool.release(flow(serial), now);
        }
        assert!(pool.sockets() as usize <= 2 + POOL_SLACK + 1, "{} sockets", pool.sockets());
        pool.check().unwrap();
    }

    #[test]
    fn families_have_their_own_sockets() {
        let mut pool = Pool::<u64>::default();
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(open(&mut pool, 1, backend(0), Instant::ZERO), 0);
        assert_eq!(open(&mut pool, 2, v6, Instant::ZERO), 1);
        assert_eq!(open(&mut pool, 3, backend(1), Instant::ZERO), 0);
        pool.check().unwrap();
    }

    proptest! {
        /// Under any sequence of opens and closes over a few backends: no socket ever serves
        /// two live flows to one backend, every reply finds its own flow, and the pool never
        /// holds more sockets than the busiest backend has taken (its peak of live plus
        /// quarantined flows).
        #[test]
        fn the_pool_never_mixes_flows(ops in proptest::collection::vec((0u8..4, any::<bool>(), 0u64..3), 1..300)) {
            let mut pool = Pool::<u64>::default();
            let mut live: Vec<(u64, SocketAddr)> = Vec::new();
            let mut now = 0u64;
            let mut serial = 0u64;
            for (b, close, advance) in ops {
                now += advance * QUARANTINE_NANOS / 2;
                let t = Instant::from_nanos(now);
                if close && !live.is_empty() {
                    let (s, _) = live.remove(usize::from(b) % live.len());
                    prop_assert!(pool.release(flow(s), t).is_some());
                } else {
                    serial += 1;
                    open(&mut pool, serial, backend(b), t);
                    live.push((serial, backend(b)));
                }
                pool.check().map_err(TestCaseError::fail)?;
                for (s, address) in &live {
                    let binding = *pool.binding(flow(*s)).unwrap();
                    prop_assert_eq!(pool.occupant(binding.socket, *address).map(|b| b.flow), Some(flow(*s)));
                }
                prop_assert_eq!(pool.len(), live.len());
            }
        }
    }
}
