//! Structured configurations for the `datagram_path` target.
//!
//! A fuzzer that writes TOML text spends nearly all of its inputs on syntax errors; these
//! specs are plain values with small ranges, turned into a [`Config`] that is valid by
//! construction in most cases (names from a small fixed set, so reloads keep identities;
//! duplicate backends and listener addresses skipped, listeners pointed at a cluster that
//! exists). A few knobs keep rare out-of-range values so that `validate()` still refuses some
//! configurations, on start and on reload.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use arbitrary::Arbitrary;

use crate::config::{
    Affinity, Algorithm, BackendConfig, ClusterConfig, Config, ExpectMatch, HealthConfig, HealthMode,
    HysteresisModel, IdleTimeout, ListenerConfig, MAX_UDP_PAYLOAD, OnBackendDown, OutlierConfig,
    ProcessConfig, ProxyProtocolConfig, ProxyProtocolMode, ResponsesMode,
};

/// UDP probe payloads and expected replies. `datagram_path` answers probes from the same
/// list, so replies match their expectation often enough to bring backends up.
pub(super) const PROBE_REPLIES: [&[u8]; 4] = [b"pong", b"pong, and more", b"ok", b""];

/// VIP addresses: IPv4, IPv6, IPv4-mapped IPv6 (a dual-stack listener) and a second port on
/// the first address.
const LISTENER_ADDRESSES: [&str; 8] = [
    "10.0.0.1:53",
    "10.0.0.2:53",
    "10.0.0.1:5353",
    "[2001:db8::53]:53",
    "[::ffff:10.0.0.3]:53",
    "10.0.0.4:123",
    "0.0.0.0:514",
    "[::]:443",
];

#[derive(Arbitrary, Debug)]
pub(super) struct ConfigSpec {
    process_max_flows: Option<u8>,
    retry_buffer_bytes: Option<u16>,
    /// Listener `l0` and cluster `c0` always exist: a configuration without a listener
    /// spends the whole run on `UnknownListener` drops.
    first_listener: ListenerSpec,
    more_listeners: [Option<ListenerSpec>; 2],
    first_cluster: ClusterSpec,
    more_clusters: [Option<ClusterSpec>; 2],
}

#[derive(Arbitrary, Debug)]
struct ListenerSpec {
    address: u8,
    cluster: u8,
    by_address: bool,
    max_flows: Option<u8>,
    max_datagram_size: u16,
    drain_timeout_ms: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct ClusterSpec {
    backends: [Option<BackendSpec>; 4],
    responses: Option<u8>,
    per_flow: bool,
    requests: Option<u8>,
    idle_front_ms: u16,
    idle_back_ms: u16,
    lifetime_ms: Option<u16>,
    proxy_protocol: u8,
    algorithm: u8,
    maglev_table_size: u8,
    fail_open: bool,
    on_backend_down: u8,
    retry_on_refused: bool,
    health: HealthSpec,
}

#[derive(Arbitrary, Debug)]
struct BackendSpec {
    id: u8,
    address: u8,
    weight: u8,
    pool: u8,
    backup: bool,
}

#[derive(Arbitrary, Debug)]
struct HealthSpec {
    mode: u8,
    tcp_port: Option<u8>,
    payload: u8,
    expect: u8,
    prefix: bool,
    interval_ms: u16,
    fast_interval_ms: Option<u16>,
    down_interval_ms: Option<u16>,
    timeout_ms: u16,
    rise: u8,
    fall: u8,
    haproxy: bool,
    jitter: u8,
    history: u8,
    passive_refused: bool,
    passive_unanswered: bool,
    passive_recovery_ms: u16,
    outlier: OutlierSpec,
}

#[derive(Arbitrary, Debug)]
struct OutlierSpec {
    enabled: bool,
    consecutive_failures: u8,
    failure_percent: u8,
    min_requests: u8,
    window_ms: u16,
    base_ejection_ms: u16,
    max_ejection_ms: u16,
    max_ejected_percent: u8,
}

/// Milliseconds, at least one (a zero duration is refused by validation, which is tested
/// elsewhere; here it would only waste the configuration).
fn millis(ms: u16) -> Duration {
    Duration::from_millis(u64::from(ms.max(1)))
}

impl ConfigSpec {
    pub(super) fn to_config(&self) -> Config {
        let mut clusters = BTreeMap::new();
        let all_clusters =
            std::iter::once(Some(&self.first_cluster)).chain(self.more_clusters.iter().map(Option::as_ref));
        for (index, cluster) in all_clusters.enumerate() {
            if let Some(cluster) = cluster {
                clusters.insert(format!("c{index}"), cluster.to_config());
            }
        }
        let cluster_names: Vec<String> = clusters.keys().cloned().collect();
        let mut listeners = BTreeMap::new();
        let mut addresses_taken = Vec::new();
        let all_listeners =
            std::iter::once(Some(&self.first_listener)).chain(self.more_listeners.iter().map(Option::as_ref));
        for (index, listener) in all_listeners.enumerate() {
            let Some(listener) = listener else { continue };
            let address = LISTENER_ADDRESSES[usize::from(listener.address) % LISTENER_ADDRESSES.len()];
            if addresses_taken.contains(&address) {
                continue;
            }
            addresses_taken.push(address);
            let cluster = cluster_names[usize::from(listener.cluster) % cluster_names.len()].clone();
            listeners.insert(format!("l{index}"), listener.to_config(address, cluster));
        }
        Config {
            process: ProcessConfig {
                // 0 is out of range: a rare refusal.
                max_flows: self.process_max_flows.map(u32::from),
                retry_buffer_bytes: self.retry_buffer_bytes.map(u32::from),
                // The shell's own settings (log format, control socket, metrics, key) do not
                // reach the datapath.
                ..ProcessConfig::default()
            },
            listeners,
            clusters,
        }
    }
}

impl ListenerSpec {
    fn to_config(&self, address: &str, cluster: String) -> ListenerConfig {
        ListenerConfig {
            address: address.parse().expect("the listener addresses are valid"),
            cluster,
            affinity: if self.by_address { Affinity::ClientAddress } else { Affinity::ClientAddressPort },
            // 0 is out of range: a rare refusal.
            max_flows: self.max_flows.map(|flows| if flows == 0 { 0 } else { u32::from(flows % 16) + 1 }),
            // Half the listeners take any datagram; the other half have sizes around the
            // datagrams `datagram_path` sends (at most 2 KiB), so that `Truncated` and
            // `ProxyHeaderTooLarge` are reachable without being most verdicts. 0 (refused)
            // is rare.
            max_datagram_size: match self.max_datagram_size % 8 {
                0..=3 => MAX_UDP_PAYLOAD,
                4 | 5 => 512 + u32::from(self.max_datagram_size % 2_048),
                _ => u32::from(self.max_datagram_size % 2_200),
            },
            drain_timeout: self.drain_timeout_ms.map(millis),
            freebind: false,
            empty_datagrams: Default::default(),
            source_limits: None,
            // Bits `max_flows` leaves free: trusted ingress from two of the four IPv4 clients
            // `datagram_path` sends from, the header required or not. (Its payloads never
            // start with the PROXY signature: this reaches the trust and `required` checks.)
            accept_proxy: self.max_flows.filter(|flows| flows & 0x10 != 0).map(|flows| {
                crate::config::AcceptProxyConfig {
                    from: vec!["192.0.2.0/31".parse().expect("a valid prefix")],
                    required: flows & 0x20 != 0,
                }
            }),
        }
    }
}

impl ClusterSpec {
    fn to_config(&self) -> ClusterConfig {
        let mut backends: Vec<BackendConfig> = Vec::new();
        for backend in self.backends.iter().flatten() {
            let backend = backend.to_config();
            if backends.iter().any(|b| b.id == backend.id || b.address == backend.address) {
                continue;
            }
            backends.push(backend);
        }
        let mode = [ProxyProtocolMode::Off, ProxyProtocolMode::First, ProxyProtocolMode::Every]
            [usize::from(self.proxy_protocol % 3)];
        let algorithm = [
            Algorithm::RoundRobin,
            Algorithm::Random,
            Algorithm::LeastFlows,
            Algorithm::PowerOfTwo,
            Algorithm::Hrw,
            Algorithm::Maglev,
        ][usize::from(self.algorithm % 6)];
        ClusterConfig {
            backends,
            responses: self.responses.map(|n| u32::from(n % 4)),
            responses_mode: if self.per_flow { ResponsesMode::PerFlow } else { ResponsesMode::PerRequest },
            // 0 is refused by validation: a rare refusal.
            requests: self.requests.map(|n| if n == 0 { 0 } else { u32::from(n % 4) + 1 }),
            idle_timeout: IdleTimeout {
                front: millis(self.idle_front_ms),
                back: Some(millis(self.idle_back_ms)),
            },
            lifetime: self.lifetime_ms.map(millis),
            proxy_protocol: ProxyProtocolConfig {
                mode,
                // Options without a header are refused; keep them to modes that send one.
                crc32c: mode != ProxyProtocolMode::Off && self.proxy_protocol & 0x10 != 0,
                unique_id: mode != ProxyProtocolMode::Off && self.proxy_protocol & 0x20 != 0,
            },
            algorithm,
            // The two smallest primes validation allows (a reload may still change the size),
            // so Maglev tables stay cheap to build on every reload and health change; 255 is
            // not prime (a rare refusal).
            maglev_table_size: match self.maglev_table_size {
                255 => 255,
                n if n % 2 == 0 => 251,
                _ => 257,
            },
            fail_open: self.fail_open,
            on_backend_down: match self.on_backend_down % 4 {
                0 => None,
                1 => Some(OnBackendDown::Keep),
                2 => Some(OnBackendDown::Close),
                _ => Some(OnBackendDown::Reselect),
            },
            retry_on_refused: self.retry_on_refused,
            // A bit `on_backend_down` leaves free.
            backend_drain_timeout: (self.on_backend_down & 4 != 0).then(|| millis(self.idle_back_ms)),
            // The other free bits: a cap from none at all (factor 0) to a loose one.
            amplification: (self.on_backend_down & 8 != 0).then(|| crate::config::AmplificationConfig {
                factor: u32::from(self.on_backend_down >> 4),
                allowance_bytes: u32::from(self.on_backend_down) * 16,
                allowance_datagrams: u32::from(self.on_backend_down >> 6),
            }),
            // What `algorithm % 6` leaves: QUIC-LB off, in plaintext, or keyed (four passes);
            // one server-ID octet, so datagrams routed by it are easy to come by.
            quic_lb: match (self.algorithm / 6) % 3 {
                0 => None,
                keyed => Some(crate::config::QuicLbSection {
                    configs: vec![crate::config::QuicLbEntry {
                        id: 0,
                        server_id_len: 1,
                        nonce_len: 4,
                        key: (keyed == 2).then(|| "fdf726a9893ec05c0632d3956680baf0".to_owned()),
                    }],
                }),
            },
            health: self.health.to_config(),
        }
    }
}

impl BackendSpec {
    fn to_config(&self) -> BackendConfig {
        let host = self.address % 8;
        let ip = if host < 6 {
            IpAddr::V4(Ipv4Addr::new(10, 1, 0, host + 1))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, u16::from(host)))
        };
        BackendConfig {
            id: format!("b{}", self.id % 6),
            address: SocketAddr::new(ip, 53 + u16::from(self.address >> 7)),
            // 255 maps over `MAX_WEIGHT`: a rare refusal. 0 takes no new flows.
            weight: if self.weight == 255 { 70_000 } else { u32::from(self.weight % 8) },
            pool: u32::from(self.pool % 3),
            backup: self.backup,
            // Distinct per id; used when the cluster has `quic_lb`.
            server_id: Some(format!("{:02x}", self.id % 6)),
        }
    }
}

impl HealthSpec {
    fn to_config(&self) -> HealthConfig {
        let mode = [HealthMode::Off, HealthMode::Tcp, HealthMode::Udp, HealthMode::TcpAndUdp]
            [usize::from(self.mode % 4)];
        let text = |index: u8| {
            String::from_utf8_lossy(PROBE_REPLIES[usize::from(index) % PROBE_REPLIES.len()]).into_owned()
        };
        let hex = |index: u8| {
            PROBE_REPLIES[usize::from(index) % PROBE_REPLIES.len()]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        };
        // UDP modes need a payload; the others may have one (it is then unused).
        let (udp_payload, udp_payload_hex) = match self.payload % 3 {
            0 if !mode.probes_udp() => (None, None),
            1 => (None, Some(hex(self.payload / 3))),
            _ => (Some(text(self.payload / 3)), None),
        };
        let (udp_expect, udp_expect_hex) = match self.expect % 3 {
            0 => (None, None),
            1 => (None, Some(hex(self.expect / 3))),
            _ => (Some(text(self.expect / 3)), None),
        };
        HealthConfig {
            mode,
            // Port 0 is refused: a rare refusal.
            tcp_port: self.tcp_port.map(|port| u16::from(port) * 257),
            udp_payload,
            udp_payload_hex,
            udp_expect,
            udp_expect_hex,
            udp_expect_match: if self.prefix { ExpectMatch::Prefix } else { ExpectMatch::Exact },
            interval: millis(self.interval_ms % 4_000),
            fast_interval: self.fast_interval_ms.map(|ms| millis(ms % 4_000)),
            down_interval: self.down_interval_ms.map(|ms| millis(ms % 8_000)),
            timeout: millis(self.timeout_ms % 3_000),
            rise: u32::from(self.rise % 4) + 1,
            fall: u32::from(self.fall % 4) + 1,
            model: if self.haproxy { HysteresisModel::Haproxy } else { HysteresisModel::Consecutive },
            jitter: self.jitter % 51,
            history: u32::from(self.history % 6),
            passive_refused: self.passive_refused,
            passive_unanswered: self.passive_unanswered,
            passive_recovery: millis(self.passive_recovery_ms),
            outlier: OutlierConfig {
                enabled: self.outlier.enabled,
                consecutive_failures: u32::from(self.outlier.consecutive_failures % 8),
                consecutive_refusals: u32::from(self.outlier.consecutive_failures / 8 % 4),
                // Over 100 is refused: a rare refusal.
                failure_percent: u32::from(self.outlier.failure_percent % 102),
                min_requests: u32::from(self.outlier.min_requests % 32),
                window: millis(self.outlier.window_ms % 8_000),
                base_ejection_time: millis(self.outlier.base_ejection_ms % 8_000),
                // Below the base is refused.
                max_ejection_time: millis(self.outlier.max_ejection_ms),
                max_ejected_percent: u32::from(self.outlier.max_ejected_percent % 102),
            },
        }
    }
}
