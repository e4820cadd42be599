//! Per-source limits of a listener: how many new flows a source may start per second (a
//! token bucket with a burst) and how many it may hold at once, where a source is the client
//! address cut to a prefix (`/24` puts a whole IPv4 subnet behind one bucket).
//!
//! Memory is bounded: the table tracks at most `capacity` sources, a slab indexed by a keyed
//! hash. A source that holds no flow can be forgotten to make room for a new one (a clock hand
//! walks the slab for one; forgetting it refills its bucket, which is the price of the bound,
//! counted as an eviction). The capacity is kept above the listener's flow cap, so every
//! source that holds a flow stays tracked and the flow counts are exact.
//!
//! Deterministic: the hash is keyed by the flow-table key the core is given, time is the
//! caller's, and nothing iterates the index to produce an output.

use std::net::IpAddr;

use hashbrown::HashTable;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use crate::config::SourceLimitsConfig;
use crate::outcome::DropReason;
use crate::time::Instant;

/// A source: the client address with its host bits cleared, and its family.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Prefix {
    v6: bool,
    bits: [u8; 16],
}

impl Prefix {
    /// `ip` cut to the limits' prefix for its family (an IPv4-mapped IPv6 address counts as
    /// IPv4).
    pub(crate) fn of(ip: IpAddr, limits: &SourceLimitsConfig) -> Prefix {
        let (v6, octets, keep) = match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mut octets = [0u8; 16];
                octets[..4].copy_from_slice(&v4.octets());
                (false, octets, limits.prefix_v4)
            }
            IpAddr::V6(v6) => (true, v6.octets(), limits.prefix_v6),
        };
        let mut bits = [0u8; 16];
        for (index, byte) in octets.iter().enumerate() {
            let start = index as u32 * 8;
            bits[index] = match u32::from(keep).saturating_sub(start) {
                0 => 0,
                n if n >= 8 => *byte,
                n => byte & (0xFFu8 << (8 - n)),
            };
        }
        Prefix { v6, bits }
    }
}

/// What the table keeps of one source.
#[derive(Debug)]
struct Source {
    prefix: Prefix,
    hash: u64,
    /// Live flows of this source on the listener.
    flows: u32,
    /// Tokens in thousandths of a new flow.
    tokens_milli: u64,
    /// When `tokens_milli` was last brought up to date.
    updated: Instant,
}

/// One listener's sources.
#[derive(Debug)]
pub(crate) struct SourceTable {
    limits: SourceLimitsConfig,
    /// The most sources tracked: the configured `table_size`, raised above the listener's
    /// flow cap.
    capacity: usize,
    key: [u8; 16],
    sources: Vec<Source>,
    index: HashTable<u32>,
    /// Where the search for a source to forget starts next.
    hand: usize,
    /// Sources forgotten to make room.
    pub(crate) evictions: u64,
}

impl SourceTable {
    pub(crate) fn new(limits: SourceLimitsConfig, flow_cap: u32, key: [u8; 16]) -> SourceTable {
        let capacity = (limits.table_size as usize).max(flow_cap as usize + 1);
        SourceTable {
            limits,
            capacity,
            key,
            sources: Vec::new(),
            index: HashTable::new(),
            hand: 0,
            evictions: 0,
        }
    }

    /// Whether this table was built for these limits and flow cap (a reload that changes
    /// neither keeps it).
    pub(crate) fn built_for(&self, limits: &SourceLimitsConfig, flow_cap: u32) -> bool {
        self.limits == *limits && self.capacity == (limits.table_size as usize).max(flow_cap as usize + 1)
    }

    /// Sources tracked now.
    pub(crate) fn len(&self) -> usize {
        self.sources.len()
    }

    /// Copies what the table holds into its listener's counters.
    pub(crate) fn publish(&self, stats: &mut crate::stats::ListenerStats) {
        (stats.sources_tracked, stats.sources_evicted) = (self.sources.len() as u64, self.evictions);
    }

    fn hash(&self, prefix: &Prefix) -> u64 {
        let mut hasher = SipHasher13::new_with_key(&self.key);
        hasher.write(b"udplb/source/v1");
        hasher.write_u8(u8::from(prefix.v6));
        hasher.write(&prefix.bits);
        hasher.finish()
    }

    fn find(&self, prefix: &Prefix, hash: u64) -> Option<usize> {
        let sources = &self.sources;
        self.index.find(hash, |&i| sources[i as usize].prefix == *prefix).map(|&i| i as usize)
    }

    /// The source's entry, made if it is new (forgetting one that holds no flow if the table
    /// is full). `None` only if every tracked source holds a flow, which the capacity rules
    /// out.
    fn entry(&mut self, now: Instant, prefix: Prefix) -> Option<usize> {
        let hash = self.hash(&prefix);
        if let Some(index) = self.find(&prefix, hash) {
            return Some(index);
        }
        let burst = u64::from(self.limits.burst()) * 1000;
        let fresh = Source { prefix, hash, flows: 0, tokens_milli: burst, updated: now };
        let index = if self.sources.len() < self.capacity {
            self.sources.push(fresh);
            self.sources.len() - 1
        } else {
            let victim = self.idle_source()?;
            let old_hash = self.sources[victim].hash;
            if let Ok(found) = self.index.find_entry(old_hash, |&i| i as usize == victim) {
                found.remove();
            }
            self.evictions += 1;
            self.sources[victim] = fresh;
            victim
        };
        let sources = &self.sources;
        self.index.insert_unique(hash, index as u32, |&i| sources[i as usize].hash);
        Some(index)
    }

    /// A tracked source that holds no flow, found by the clock hand.
    fn idle_source(&mut self) -> Option<usize> {
        for _ in 0..self.sources.len() {
            let at = self.hand % self.sources.len();
            self.hand = at + 1;
            if self.sources[at].flows == 0 {
                return Some(at);
            }
        }
        None
    }

    /// A datagram from `ip` would start a new flow: whether its source may, and if so the
    /// token it spends. The flow is counted when it opens ([`SourceTable::opened`]).
    pub(crate) fn admit(&mut self, now: Instant, ip: IpAddr) -> Result<(), DropReason> {
        let prefix = Prefix::of(ip, &self.limits);
        let Some(index) = self.entry(now, prefix) else { return Err(DropReason::SourceFlows) };
        let limits = self.limits;
        let source = &mut self.sources[index];
        if limits.max_flows.is_some_and(|max| source.flows >= max) {
            return Err(DropReason::SourceFlows);
        }
        if let Some(rate) = limits.new_flows_per_second {
            let burst = u64::from(limits.burst()) * 1000;
            let elapsed = now.saturating_duration_since(source.updated).as_nanos();
            let earned = elapsed.saturating_mul(u128::from(rate)) / 1_000_000;
            source.tokens_milli =
                u64::try_from(u128::from(source.tokens_milli) + earned).unwrap_or(u64::MAX).min(burst);
            source.updated = now;
            if source.tokens_milli < 1000 {
                return Err(DropReason::SourceRate);
            }
            source.tokens_milli -= 1000;
        }
        Ok(())
    }

    /// A flow of `ip` opened.
    pub(crate) fn opened(&mut self, now: Instant, ip: IpAddr) {
        let prefix = Prefix::of(ip, &self.limits);
        if let Some(index) = self.entry(now, prefix) {
            self.sources[index].flows += 1;
        }
    }

    /// A flow of `ip` closed.
    pub(crate) fn closed(&mut self, ip: IpAddr) {
        let prefix = Prefix::of(ip, &self.limits);
        let hash = self.hash(&prefix);
        if let Some(index) = self.find(&prefix, hash) {
            let source = &mut self.sources[index];
            source.flows = source.flows.saturating_sub(1);
        }
    }

    /// Every tracked source's flow count, by prefix (for the invariants).
    pub(crate) fn flow_counts(&self) -> impl Iterator<Item = (Prefix, u32)> + '_ {
        self.sources.iter().map(|source| (source.prefix, source.flows))
    }

    /// The prefix `ip` counts under.
    pub(crate) fn prefix_of(&self, ip: IpAddr) -> Prefix {
        Prefix::of(ip, &self.limits)
    }

    /// Whether the index and the slab agree (for the invariants).
    pub(crate) fn consistent(&self) -> bool {
        self.index.len() == self.sources.len()
            && self.sources.len() <= self.capacity
            && self.sources.iter().enumerate().all(|(i, s)| self.find(&s.prefix, s.hash) == Some(i))
    }
}

// ----- snapshots (`crate::snapshot`) ----------------------------------------------------------

crate::snapshot::codec_struct!(Prefix { v6, bits });
crate::snapshot::codec_struct!(Source { prefix, hash, flows, tokens_milli, updated });

impl SourceTable {
    /// Writes what inputs changed (the sources, the eviction hand, the count of evictions);
    /// the limits, capacity and key come from the configuration and the keys.
    pub(crate) fn write_snapshot(&self, w: &mut crate::snapshot::Writer) {
        use crate::snapshot::Codec;
        self.sources.put(w);
        self.hand.put(w);
        self.evictions.put(w);
    }

    /// Replaces the sources with a snapshot's and rebuilds the index over them.
    pub(crate) fn read_snapshot(
        &mut self,
        r: &mut crate::snapshot::Reader<'_>,
    ) -> Result<(), crate::snapshot::SnapshotError> {
        use crate::snapshot::Codec;
        let sources: Vec<Source> = Codec::get(r)?;
        let hand: usize = Codec::get(r)?;
        let evictions: u64 = Codec::get(r)?;
        if sources.len() > self.capacity || (hand > sources.len() && !sources.is_empty()) {
            return Err(r.invalid("source table size or hand"));
        }
        self.sources = sources;
        self.hand = hand;
        self.evictions = evictions;
        self.index = HashTable::new();
        for index in 0..self.sources.len() {
            let hash = self.sources[index].hash;
            if self.find(&self.sources[index].prefix, hash).is_some() {
                return Err(r.invalid("duplicate source"));
            }
            let sources = &self.sources;
            self.index.insert_unique(hash, index as u32, |&i| sources[i as usize].hash);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(text: &str) -> SourceLimitsConfig {
        toml::from_str(text).expect("valid limits")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_clear_host_bits_per_family() {
        let l = limits("prefix_v4 = 24\nprefix_v6 = 52");
        assert_eq!(Prefix::of(ip("192.0.2.77"), &l), Prefix::of(ip("192.0.2.1"), &l));
        assert_ne!(Prefix::of(ip("192.0.3.1"), &l), Prefix::of(ip("192.0.2.1"), &l));
        assert_eq!(Prefix::of(ip("::ffff:192.0.2.9"), &l), Prefix::of(ip("192.0.2.1"), &l), "mapped is IPv4");
        // /52: the first 6 bytes whole, the 7th's top nibble.
        assert_eq!(Prefix::of(ip("2001:db8:1:2f00::1"), &l), Prefix::of(ip("2001:db8:1:2fff::9"), &l));
        assert_ne!(Prefix::of(ip("2001:db8:1:3000::1"), &l), Prefix::of(ip("2001:db8:1:2000::1"), &l));
        let whole = limits("prefix_v4 = 32\nprefix_v6 = 128");
        assert_ne!(Prefix::of(ip("192.0.2.1"), &whole), Prefix::of(ip("192.0.2.2"), &whole));
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let l = limits("new_flows_per_second = 10\nburst = 5");
        let mut table = SourceTable::new(l, 100, [7; 16]);
        let t0 = Instant::ZERO;
        let admitted = (0..8).filter(|_| table.admit(t0, ip("192.0.2.1")).is_ok()).count();
        assert_eq!(admitted, 5, "the burst");
        assert_eq!(table.admit(t0, ip("192.0.2.1")), Err(DropReason::SourceRate));
        assert!(table.admit(t0, ip("192.0.2.2")).is_ok(), "another source has its own bucket");
        // 10 per second: one more every 100 ms.
        assert_eq!(table.admit(t0 + Duration::from_millis(99), ip("192.0.2.1")), Err(DropReason::SourceRate));
        assert!(table.admit(t0 + Duration::from_millis(200), ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn concurrent_flows_are_capped_and_freed_on_close() {
        let l = limits("max_flows = 2\nprefix_v4 = 24");
        let mut table = SourceTable::new(l, 100, [7; 16]);
        let now = Instant::ZERO;
        for host in ["192.0.2.1", "192.0.2.2"] {
            assert!(table.admit(now, ip(host)).is_ok());
            table.opened(now, ip(host));
        }
        assert_eq!(table.admit(now, ip("192.0.2.3")), Err(DropReason::SourceFlows), "same /24");
        table.closed(ip("192.0.2.1"));
        assert!(table.admit(now, ip("192.0.2.3")).is_ok());
    }

    #[test]
    fn a_full_table_forgets_an_idle_source_never_one_with_flows() {
        let l = limits("max_flows = 1\ntable_size = 3");
        // A flow cap of 1: the capacity stays 3.
        let mut table = SourceTable::new(l, 1, [7; 16]);
        let now = Instant::ZERO;
        table.admit(now, ip("192.0.2.1")).unwrap();
        table.opened(now, ip("192.0.2.1"));
        for host in 2..=10 {
            table.admit(now, ip(&format!("192.0.2.{host}"))).unwrap();
        }
        assert_eq!(table.len(), 3);
        assert_eq!(table.evictions, 7);
        assert!(table.consistent());
        assert_eq!(
            table.admit(now, ip("192.0.2.1")),
            Err(DropReason::SourceFlows),
            "still tracked, still full"
        );
    }
}
