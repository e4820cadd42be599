//! The network between the hosts: what becomes of a packet once a host puts it on the wire.
//!
//! It cuts partitioned links, drops what exceeds the MTU (and, past a host's own link MTU, says
//! so to the sender as a router would), loses (everywhere, and on one host's own link), delays
//! (latency, jitter, reordering) and duplicates, limits how many ICMP errors a host sends (per
//! second in all, and per destination as Linux does), and
//! spreads clients over balancer instances as an ECMP router would. It knows hosts by name
//! only and never delivers anything itself: it tells the world when a packet arrives, and the
//! world hands it to the host. Every random draw of a run comes from the ChaCha stream held
//! here, in the order packets are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use udplb_core::Instant;

use crate::scenario::{LinkDirection, LinkProtocol, LinkSpec, NetworkSpec};

/// A datagram (or an ICMP error about one) in flight.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub payload: Vec<u8>,
    /// An ICMP error about a datagram `to` sent earlier from `to`'s address to `from`; the
    /// packet goes back to that sender.
    pub icmp: Option<Icmp>,
    /// A TCP probe's segment (SYN, SYN-ACK or RST), not a datagram.
    pub tcp: bool,
}

/// The ICMP errors the network carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Icmp {
    /// Port unreachable: nothing listens on the datagram's port.
    PortUnreachable,
    /// Fragmentation needed: the datagram was too big for a link on its path, whose MTU this
    /// is.
    FragmentationNeeded { mtu: usize },
}

impl Packet {
    /// A placeholder, in a free slot.
    pub const EMPTY: Packet = Packet {
        from: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        to: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        payload: Vec::new(),
        icmp: None,
        tcp: false,
    };

    /// A UDP datagram.
    pub fn datagram(from: SocketAddr, to: SocketAddr, payload: Vec<u8>) -> Packet {
        Packet { from, to, payload, icmp: None, tcp: false }
    }

    /// The ICMP port unreachable that `refused`'s destination sends back to its sender.
    pub fn port_unreachable(refused: &Packet) -> Packet {
        Packet {
            from: refused.to,
            to: refused.from,
            payload: Vec::new(),
            icmp: Some(Icmp::PortUnreachable),
            tcp: false,
        }
    }

    /// The ICMP "fragmentation needed" that the router before a link of `mtu` sends back to
    /// the sender of `too_big` (named after the datagram's destination, which is what the
    /// sender's kernel files it under).
    pub fn fragmentation_needed(too_big: &Packet, mtu: usize) -> Packet {
        let icmp = Some(Icmp::FragmentationNeeded { mtu });
        Packet { from: too_big.to, to: too_big.from, payload: Vec::new(), icmp, tcp: false }
    }

    pub fn is_icmp(&self) -> bool {
        self.icmp.is_some()
    }
}

/// What the network does with one packet.
#[derive(Debug)]
pub enum Transit {
    /// Cut by a partition, larger than the MTU, or lost.
    Lost,
    /// Larger than the MTU of its destination's own link (`mtu`): lost, and the router before
    /// that link tells the sender.
    TooBig { mtu: usize },
    /// It arrives at this time, and again at the second when duplicated.
    Arrives(Instant, Option<Instant>),
}

/// A per-destination ICMP token bucket (Linux's `inet_peer` rate limit): tokens, in
/// nanoseconds of credit, as of `at`.
#[derive(Copy, Clone, Debug)]
struct IcmpBucket {
    credit: u128,
    at: Instant,
}

/// The network's state: its current conditions, the links cut, the ICMP budget spent, the
/// ECMP hash salt, and the random stream.
#[derive(Debug)]
pub struct Network {
    spec: NetworkSpec,
    /// Cut links: (from host, to host).
    partitions: BTreeSet<(String, String)>,
    /// ICMP errors sent per host in the current second: (second, count).
    icmp_sent: BTreeMap<String, (u64, u32)>,
    /// Per sending host and destination IP: the per-destination ICMP token bucket.
    icmp_buckets: BTreeMap<(String, IpAddr), IcmpBucket>,
    /// The spreader's current hash salt (changed by `rehash`).
    ecmp_salt: u64,
    rng: ChaCha8Rng,
}

impl Network {
    /// The network a run starts with: `spec`'s conditions, no cut link, the random stream
    /// seeded by `seed`.
    pub fn new(spec: NetworkSpec, seed: u64) -> Network {
        Network {
            spec,
            partitions: BTreeSet::new(),
            icmp_sent: BTreeMap::new(),
            icmp_buckets: BTreeMap::new(),
            ecmp_salt: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// New conditions (loss, latency, …) from now on.
    pub fn set_conditions(&mut self, spec: NetworkSpec) {
        self.spec = spec;
    }

    /// Cuts the link from `from` to `to`, and back unless `one_way`.
    pub fn partition(&mut self, from: &str, to: &str, one_way: bool) {
        self.partitions.insert((from.to_owned(), to.to_owned()));
        if !one_way {
            self.partitions.insert((to.to_owned(), from.to_owned()));
        }
    }

    /// The conditions in force now.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.partitions.clear();
    }

    /// The ECMP router rehashes: clients may land on other instances.
    pub fn rehash(&mut self) {
        self.ecmp_salt += 1;
    }

    fn is_cut(&self, from: &str, to: &str) -> bool {
        // Compared in place: no owned key per packet.
        self.partitions.iter().any(|(a, b)| a == from && b == to)
    }

    /// Whether a TCP connection between the two hosts can be made: no partition either way.
    pub fn connects(&self, a: &str, b: &str) -> bool {
        !self.is_cut(a, b) && !self.is_cut(b, a)
    }

    /// No link cut and no loss, on the whole network or on any host's link, and no host's link
    /// with an MTU of its own.
    pub fn fault_free(&self) -> bool {
        self.partitions.is_empty()
            && self.spec.loss == 0.0
            && self.spec.links.iter().all(|l| l.loss.0 == 0.0 && l.mtu.is_none())
    }

    /// How long a host keeps a path MTU it learned.
    pub fn pmtu_expires(&self) -> Duration {
        self.spec.pmtu_expires
    }

    /// The MTU of the link into `host`, if it has one of its own.
    fn link_mtu(&self, host: Option<&str>) -> Option<usize> {
        let host = host?;
        self.spec.links.iter().filter(|l| l.host.as_str() == host).filter_map(|l| l.mtu).min()
    }

    /// The chance that a datagram between the two hosts is lost on their own links: each
    /// `[[network.link]]` of either host (in the link's direction) is one more independent
    /// chance. Zero without any.
    fn link_loss(&self, from: Option<&str>, to: Option<&str>, tcp: bool) -> f64 {
        let applies = |link: &&LinkSpec| !tcp || link.protocol == LinkProtocol::Any;
        let kept: f64 = self.links_on_path(from, to).filter(applies).map(|l| 1.0 - l.loss.0).product();
        1.0 - kept
    }

    /// The `[[network.link]]`s a datagram from `from` to `to` crosses, in their direction.
    fn links_on_path<'a>(
        &'a self,
        from: Option<&'a str>,
        to: Option<&'a str>,
    ) -> impl Iterator<Item = &'a LinkSpec> + 'a {
        self.spec.links.iter().filter(move |link| {
            let host = Some(link.host.as_str());
            match link.direction {
                LinkDirection::Both => from == host || to == host,
                LinkDirection::In => to == host,
                LinkDirection::Out => from == host,
            }
        })
    }

    /// Whether `host` may send one more ICMP error to `destination` at `now`: within its
    /// per-destination token bucket (when `icmp_ratelimit` is set) and its per-second limit
    /// over all destinations (if so, it counts against both).
    pub fn icmp_allowed(&mut self, now: Instant, host: &str, destination: IpAddr) -> bool {
        let interval = self.spec.icmp_ratelimit.as_nanos();
        if interval > 0 {
            // Linux's `inet_peer_xrlim_allow`: credit grows with time up to `burst` tokens;
            // an error costs one token. A new peer starts full.
            let burst = u128::from(self.spec.icmp_burst) * interval;
            let bucket = self
                .icmp_buckets
                .entry((host.to_owned(), destination))
                .or_insert(IcmpBucket { credit: burst, at: now });
            bucket.credit = (bucket.credit + (now - bucket.at).as_nanos()).min(burst);
            bucket.at = now;
            if bucket.credit < interval {
                return false;
            }
            if !self.icmp_within_second(now, host) {
                return false;
            }
            if let Some(bucket) = self.icmp_buckets.get_mut(&(host.to_owned(), destination)) {
                bucket.credit -= interval;
            }
            return true;
        }
        self.icmp_within_second(now, host)
    }

    /// Whether `host` may send one more ICMP error at `now` within its per-second limit over
    /// all destinations (if so, it counts).
    fn icmp_within_second(&mut self, now: Instant, host: &str) -> bool {
        let second = now.as_nanos() / 1_000_000_000;
        let limit = self.spec.icmp_per_second;
        let entry = self.icmp_sent.entry(host.to_owned()).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        if entry.1 >= limit {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Takes a packet sent at `now` between the named hosts (`None`: an address no host has):
    /// partitions, MTU, loss, the hosts' own links' loss and the destination link's MTU,
    /// latency, jitter, reordering, duplication.
    pub fn transit(
        &mut self,
        now: Instant,
        packet: &Packet,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Transit {
        if let (Some(a), Some(b)) = (from, to)
            && self.is_cut(a, b)
        {
            return Transit::Lost;
        }
        if packet.payload.len() > self.spec.mtu {
            return Transit::Lost;
        }
        let loss = if packet.is_icmp() { self.spec.loss.max(self.spec.icmp_loss) } else { self.spec.loss };
        if self.chance(loss) {
            return Transit::Lost;
        }
        // A draw of its own, and none at all without a link fault on the path, so a network
        // without `[[network.link]]` draws exactly what it always did.
        let link_loss = self.link_loss(from, to, packet.tcp);
        if self.chance(link_loss) {
            return Transit::Lost;
        }
        // Checked after the draws, so that a link without an MTU draws what it always did.
        if let Some(mtu) = self.link_mtu(to)
            && !packet.is_icmp()
            && packet.payload.len() + crate::scenario::IP_UDP_HEADERS > mtu
        {
            return Transit::TooBig { mtu };
        }
        let mut copies = if self.chance(self.spec.duplicate) { 2 } else { 1 };
        // The links' own copies and delays: no draw without a link that duplicates.
        let link_duplicate = 1.0 - self.links_on_path(from, to).map(|l| 1.0 - l.duplicate.0).product::<f64>();
        if link_duplicate > 0.0 && copies == 1 && self.chance(link_duplicate) {
            copies = 2;
        }
        let link_latency: Duration = self.links_on_path(from, to).map(|l| l.latency).sum();
        let first = self.arrival(now, link_latency);
        let second = (copies == 2).then(|| self.arrival(now, link_latency));
        Transit::Arrives(first, second)
    }

    /// When one copy of a packet sent at `now` arrives: latency (the network's and its links'),
    /// jitter, and reordering's extra delay when drawn.
    fn arrival(&mut self, now: Instant, link_latency: Duration) -> Instant {
        let mut delay = self.spec.latency + link_latency + self.uniform(self.spec.jitter);
        if self.chance(self.spec.reorder) {
            delay += self.spec.reorder_delay;
        }
        now + delay
    }

    fn chance(&mut self, probability: f64) -> bool {
        // 53 random bits as a fraction in [0, 1): the same on every machine.
        probability > 0.0 && ((self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    fn uniform(&mut self, up_to: Duration) -> Duration {
        let nanos = u64::try_from(up_to.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 { Duration::ZERO } else { Duration::from_nanos(self.rng.next_u64() % (nanos + 1)) }
    }

    /// The ECMP spreader: which of `instances` balancer instances a client address lands on.
    pub fn spread(&self, client: SocketAddr, instances: usize) -> usize {
        let instances = instances as u64;
        if instances == 1 {
            return 0;
        }
        // SplitMix64 over the address and the salt: fixed, so the same on every machine.
        let ip = match client.ip().to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) as u64) ^ ((u128::from(v6) >> 64) as u64),
        };
        let mut z = ip.wrapping_mul(0x1_0000).wrapping_add(u64::from(client.port()))
            ^ self.ecmp_salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % instances) as usize
    }
}
