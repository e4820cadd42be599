//! Property tests: the datapath encoder round-trips through the decoder, decode ∘ emit ∘
//! decode is a fixpoint on arbitrary and near-valid input, and nothing panics.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;

use super::{crc32c_bitwise, emit, encode, zero_checksums};
use crate::proxy_v2::repr::UNIX_ADDRESS_LEN;
use crate::proxy_v2::{
    AddressFamily, Addresses, Command, Header, MAX_PROXY_HEADER_LEN, Packet, SIGNATURE, Tlv, TlvKind,
    TlvOptions, Transport, fuzz_decode, fuzz_roundtrip, proxy_header_len, write_proxy_header,
};

/// Strategies shared with the `ppp` cross-check.
pub(super) mod strategies {
    use super::*;

    /// Endpoints of every shape a socket can hand the datapath: IPv4, IPv6 (sometimes with
    /// flow info and scope id), and IPv4-mapped IPv6 from a dual-stack socket.
    pub fn endpoint() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| { SocketAddr::new(Ipv4Addr::from(ip).to_ipv6_mapped().into(), port) }),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, port, flow_info, scope_id)| {
                    SocketAddrV6::new(Ipv6Addr::from(ip), port, flow_info, scope_id).into()
                }
            ),
        ]
    }

    pub fn tlv_options() -> impl Strategy<Value = TlvOptions> {
        (any::<bool>(), proptest::option::of(any::<[u8; 16]>()))
            .prop_map(|(crc32c, unique_id)| TlvOptions { crc32c, unique_id })
    }

    /// A TLV that is not CRC32C: registered types more often than chance would pick them,
    /// UNIQUE_ID within its 128-byte limit.
    pub fn tlv() -> impl Strategy<Value = Tlv> {
        let kind = prop_oneof![
            prop::sample::select(vec![0x01u8, 0x02, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xF8]),
            any::<u8>(),
        ]
        .prop_filter("CRC32C is placed separately", |&byte| byte != TlvKind::CRC32C);
        (kind, prop::collection::vec(any::<u8>(), 0..48))
            .prop_map(|(kind, value)| Tlv::new(TlvKind::from_byte(kind), value))
    }

    fn unix_path() -> impl Strategy<Value = [u8; UNIX_ADDRESS_LEN]> {
        prop::collection::vec(any::<u8>(), UNIX_ADDRESS_LEN).prop_map(|bytes| {
            let mut path = [0; UNIX_ADDRESS_LEN];
            path.copy_from_slice(&bytes);
            path
        })
    }

    pub fn addresses() -> impl Strategy<Value = Addresses> {
        prop_oneof![
            Just(Addresses::Unspec),
            (any::<[u8; 4]>(), any::<u16>(), any::<[u8; 4]>(), any::<u16>()).prop_map(
                |(source, source_port, destination, destination_port)| {
                    Addresses::Ipv4 {
                        source: SocketAddrV4::new(source.into(), source_port),
                        destination: SocketAddrV4::new(destination.into(), destination_port),
                    }
                }
            ),
            (any::<[u8; 16]>(), any::<u16>(), any::<[u8; 16]>(), any::<u16>()).prop_map(
                |(source, source_port, destination, destination_port)| {
                    Addresses::Ipv6 {
                        source: SocketAddrV6::new(source.into(), source_port, 0, 0),
                        destination: SocketAddrV6::new(destination.into(), destination_port, 0, 0),
                    }
                }
            ),
            (unix_path(), unix_path())
                .prop_map(|(source, destination)| Addresses::Unix { source, destination }),
        ]
    }

    /// Any header the decoder can produce: every command, transport and family, up to six
    /// TLVs, and at most one CRC32C TLV at any position.
    pub fn header() -> impl Strategy<Value = Header> {
        (
            prop::sample::select(vec![Command::Local, Command::Proxy]),
            prop::sample::select(vec![Transport::Unspec, Transport::Stream, Transport::Dgram]),
            addresses(),
            prop::collection::vec(tlv(), 0..6),
            proptest::option::of(any::<prop::sample::Index>()),
        )
            .prop_map(|(command, transport, addresses, mut tlvs, checksum_at)| {
                if let Some(index) = checksum_at {
                    tlvs.insert(index.index(tlvs.len() + 1), Tlv::crc32c());
                }
                Header { command, transport, addresses, tlvs }
            })
    }
}

use strategies::{endpoint, header, tlv, tlv_options};

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// Sets the length field of a header whose payload was changed.
fn fix_length(bytes: &mut [u8]) {
    let length = u16::try_from(bytes.len() - 16).expect("test headers stay short");
    bytes[14..16].copy_from_slice(&length.to_be_bytes());
}

proptest! {
    #[test]
    fn encoded_header_decodes_to_its_endpoints_and_tlvs(
        source in endpoint(),
        destination in endpoint(),
        tlvs in tlv_options(),
    ) {
        let bytes = encode(source, destination, tlvs);
        prop_assert_eq!(bytes.len(), proxy_header_len(source, destination, tlvs));
        prop_assert!(bytes.len() <= MAX_PROXY_HEADER_LEN);

        let (decoded, consumed) = Header::parse(&bytes).expect("encoded header decodes");
        prop_assert_eq!(consumed, bytes.len());
        prop_assert_eq!(decoded.command, Command::Proxy);
        prop_assert_eq!(decoded.transport, Transport::Dgram);
        let both_ipv4 = canonical(source).is_ipv4() && canonical(destination).is_ipv4();
        let family = if both_ipv4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
        prop_assert_eq!(decoded.family(), family);
        let (decoded_source, decoded_destination) =
            decoded.proxied_endpoints().expect("IP endpoints");
        prop_assert_eq!(canonical(decoded_source), canonical(source));
        prop_assert_eq!(canonical(decoded_destination), canonical(destination));

        let unique_id = tlvs.unique_id;
        prop_assert_eq!(decoded.tlv(TlvKind::UniqueId), unique_id.as_ref().map(|id| &id[..]));
        prop_assert_eq!(decoded.checksum().is_some(), tlvs.crc32c);
        if let Some(checksum) = decoded.checksum() {
            let field = if both_ipv4 { 31 } else { 55 };
            let mut zeroed = bytes.clone();
            zeroed[field..field + 4].fill(0);
            prop_assert_eq!(checksum, crc32c_bitwise(&zeroed));
        }
        prop_assert_eq!(zero_checksums(decoded), Header::proxy(source, destination, tlvs));
        prop_assert_eq!(emit(&Header::proxy(source, destination, tlvs)), bytes);
    }

    #[test]
    fn emitted_header_decodes_to_itself(header in header()) {
        let bytes = emit(&header);
        let (decoded, consumed) = Header::parse(&bytes).expect("emitted header decodes");
        prop_assert_eq!(consumed, header.buffer_len());
        prop_assert_eq!(zero_checksums(decoded.clone()), zero_checksums(header));
        prop_assert_eq!(emit(&decoded), bytes);
    }

    #[test]
    fn short_buffers_are_refused(
        source in endpoint(),
        destination in endpoint(),
        tlvs in tlv_options(),
        cut in any::<prop::sample::Index>(),
    ) {
        let len = proxy_header_len(source, destination, tlvs);
        let mut out = vec![0; cut.index(len)];
        prop_assert!(write_proxy_header(&mut out, source, destination, tlvs).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_emit_decode_is_a_fixpoint_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        fuzz_decode(&bytes);
    }

    /// Arbitrary bytes rarely get past the signature, so also try fixed headers with
    /// arbitrary field bytes and payloads (the length field may or may not match).
    #[test]
    fn decode_emit_decode_is_a_fixpoint_behind_a_signature(
        version_command in prop_oneof![0x20u8..=0x21, any::<u8>()],
        family_transport in prop_oneof![
            prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]),
            any::<u8>(),
        ],
        fix in any::<bool>(),
        length in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend([version_command, family_transport]);
        bytes.extend(length.to_be_bytes());
        bytes.extend(&payload);
        if fix {
            fix_length(&mut bytes);
        }
        fuzz_decode(&bytes);
    }

    #[test]
    fn decode_emit_decode_is_a_fixpoint_on_mutated_headers(
        header in header(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = emit(&header);
        for (index, mask) in flips {
            let at = index.index(bytes.len());
            bytes[at] ^= mask;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        fuzz_decode(&bytes);
    }

    /// Valid headers with random TLVs appended (type byte, length and value as raw bytes):
    /// they decode exactly when none of them is a CRC32C TLV, whose checksum would not match.
    #[test]
    fn headers_with_appended_tlvs_decode_unless_a_checksum_is_appended(
        mut header in header(),
        appended in prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40)),
            0..5,
        ),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        header.tlvs.retain(|tlv| tlv.kind != TlvKind::Crc32c);
        let mut bytes = emit(&header);
        for (kind, value) in &appended {
            bytes.push(*kind);
            bytes.extend(u16::try_from(value.len()).expect("short").to_be_bytes());
            bytes.extend(value);
        }
        let header_len = bytes.len();
        fix_length(&mut bytes);
        bytes.extend(&trailing);

        let appended_checksum = appended.iter().any(|(kind, _)| *kind == TlvKind::CRC32C);
        match Header::parse(&bytes) {
            Ok((decoded, consumed)) => {
                prop_assert!(!appended_checksum);
                prop_assert_eq!(consumed, header_len);
                prop_assert_eq!(decoded.tlvs.len(), header.tlvs.len() + appended.len());
            }
            Err(error) => prop_assert!(appended_checksum, "{:?}", error),
        }
        fuzz_decode(&bytes);
    }

    #[test]
    fn parse_and_the_wire_view_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        address_block_len in 0usize..400,
    ) {
        let _ = Header::parse(&bytes);
        let mut prefixed = SIGNATURE.to_vec();
        prefixed.extend(&bytes);
        let _ = Header::parse(&prefixed);
        if let Ok(packet) = Packet::new_checked(&prefixed) {
            for tlv in packet.tlvs(address_block_len) {
                let _ = tlv;
            }
        }
    }

    #[test]
    fn fuzz_roundtrip_holds_for_arbitrary_input(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        fuzz_roundtrip(&bytes);
    }

    #[test]
    fn a_tlv_list_round_trips_in_order(tlvs in prop::collection::vec(tlv(), 0..12)) {
        let header = Header { tlvs, ..Header::local(TlvOptions::default()) };
        let (decoded, _) = Header::parse(&emit(&header)).expect("valid header");
        prop_assert_eq!(decoded, header);
    }
}
