//! Decoder behaviour on valid input, including the choices PPv2 §2.2 leaves open, and the
//! wire view's accessors.

use std::net::SocketAddr;

use super::{IPV4_BLOCK, UNIQUE_ID, client_v4, client_v6, emit, encode, raw, vip_v4, vip_v6};
use crate::proxy_v2::wire::RawTlv;
use crate::proxy_v2::{
    AddressFamily, Addresses, Command, DecodeError, Header, Packet, Tlv, TlvKind, TlvOptions, Transport,
    local_header_len, write_local_header,
};

/// Parses, checks the whole input was the header, re-emits and checks the bytes match.
fn parse_exact(bytes: &[u8]) -> Header {
    let (header, consumed) = Header::parse(bytes).expect("valid header");
    assert_eq!(consumed, bytes.len());
    assert_eq!(emit(&header), bytes, "re-emit is byte-exact");
    header
}

#[test]
fn proxy_header_decodes_to_the_client_and_the_vip() {
    for (client, vip) in [(client_v4(), vip_v4()), (client_v6(), vip_v6()), (client_v4(), vip_v6())] {
        let tlvs = TlvOptions { crc32c: true, unique_id: Some(UNIQUE_ID) };
        let header = parse_exact(&encode(client, vip, tlvs));
        assert_eq!(header.command, Command::Proxy);
        assert_eq!(header.transport, Transport::Dgram);
        let (source, destination) = header.proxied_endpoints().expect("IP endpoints");
        let canonical = |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
        assert_eq!((canonical(source), canonical(destination)), (client, vip));
        assert_eq!(header.tlv(TlvKind::UniqueId), Some(&UNIQUE_ID[..]));
        assert!(header.checksum().is_some());
    }
}

#[test]
fn the_datagram_after_the_header_is_not_consumed() {
    let header = encode(client_v4(), vip_v4(), TlvOptions::default());
    let datagram = [&header[..], b"\x12\x34 a DNS query"].concat();
    let (_, consumed) = Header::parse(&datagram).expect("valid header");
    assert_eq!(consumed, header.len());
}

#[test]
fn local_header_decodes_without_endpoints() {
    let tlvs = TlvOptions { crc32c: true, unique_id: Some([9; 16]) };
    let mut out = [0; 64];
    let len = write_local_header(&mut out, tlvs).expect("fits");
    assert_eq!(len, local_header_len(tlvs));
    let header = parse_exact(&out[..len]);
    assert_eq!(header.command, Command::Local);
    assert_eq!(header.transport, Transport::Unspec);
    assert_eq!(header.addresses, Addresses::Unspec);
    assert_eq!(header.proxied_endpoints(), None);
    assert_eq!(header.tlv(TlvKind::UniqueId), Some(&[9u8; 16][..]));
}

#[test]
fn local_header_with_a_short_address_block_is_accepted_and_the_block_discarded() {
    // PPv2 §2.2: LOCAL "must accept this connection as valid" and "discard the protocol
    // block including the family"; these bytes cannot be an IPv4 block.
    let input = raw(0x20, 0x12, &[1, 2, 3, 4, 5]);
    let (header, consumed) = Header::parse(&input).expect("accepted");
    assert_eq!(consumed, input.len());
    assert_eq!(
        header,
        Header {
            command: Command::Local,
            transport: Transport::Dgram,
            addresses: Addresses::Unspec,
            tlvs: Vec::new(),
        }
    );
    // It re-emits as AF_UNSPEC with nothing after the fixed header, which decodes the same.
    let emitted = emit(&header);
    assert_eq!(emitted, raw(0x20, 0x02, &[]));
    assert_eq!(Header::parse(&emitted), Ok((header, 16)));

    assert!(Header::parse(&raw(0x20, 0x11, &[])).is_ok());
    assert!(Header::parse(&raw(0x20, 0x32, &[0; 215])).is_ok());
}

#[test]
fn local_header_keeps_a_full_address_block_and_its_tlvs() {
    let input = raw(0x20, 0x12, &[&IPV4_BLOCK[..], &[0x05, 0x00, 0x01, 0x2A]].concat());
    let header = parse_exact(&input);
    assert_eq!(header.command, Command::Local);
    assert_eq!(header.family(), AddressFamily::Inet);
    assert_eq!(header.addresses.source(), Some(client_v4()));
    assert_eq!(header.proxied_endpoints(), None, "LOCAL uses the real endpoints");
    assert_eq!(header.tlvs, vec![Tlv::new(TlvKind::UniqueId, [0x2A])]);
}

#[test]
fn proxy_header_with_unspec_family_decodes_without_addresses() {
    let header = parse_exact(&raw(0x21, 0x00, &[]));
    assert_eq!(header.addresses, Addresses::Unspec);
    assert_eq!(header.proxied_endpoints(), None);
    let header = parse_exact(&raw(0x21, 0x02, &[0x04, 0x00, 0x02, 0, 0]));
    assert_eq!(header.tlvs, vec![Tlv::new(TlvKind::Noop, [0, 0])]);
}

#[test]
fn unlisted_family_and_transport_combinations_decode() {
    // AF_INET with UNSPEC transport: the family alone sizes the address block.
    let header = parse_exact(&raw(0x21, 0x10, &IPV4_BLOCK));
    assert_eq!(header.family(), AddressFamily::Inet);
    assert_eq!(header.transport, Transport::Unspec);
    // AF_UNSPEC with STREAM transport.
    let header = parse_exact(&raw(0x21, 0x01, &[]));
    assert_eq!(header.family(), AddressFamily::Unspec);
    assert_eq!(header.transport, Transport::Stream);
    // TCP over IPv4, which udplb never sends, decodes like UDP.
    let header = parse_exact(&raw(0x21, 0x11, &IPV4_BLOCK));
    assert_eq!(header.transport, Transport::Stream);
    assert_eq!(header.addresses.destination(), Some(vip_v4()));
}

#[test]
fn unix_addresses_decode_and_reemit() {
    let mut block = [0u8; 216];
    block[..9].copy_from_slice(b"/run/a.so");
    block[108..117].copy_from_slice(b"/run/b.so");
    let header = parse_exact(&raw(0x21, 0x32, &block));
    let Addresses::Unix { source, destination } = header.addresses else {
        panic!("expected AF_UNIX, got {:?}", header.addresses);
    };
    assert_eq!(&source[..9], b"/run/a.so");
    assert_eq!(&destination[..9], b"/run/b.so");
    assert_eq!(header.proxied_endpoints(), None);
}

#[test]
fn unique_ids_up_to_128_bytes_decode() {
    for length in [0u8, 1, 8, 128] {
        let tlv = [&[0x05, 0x00, length][..], &vec![0xAB; usize::from(length)]].concat();
        let header = parse_exact(&raw(0x21, 0x12, &[&IPV4_BLOCK[..], &tlv].concat()));
        assert_eq!(header.tlv(TlvKind::UniqueId).map(<[u8]>::len), Some(usize::from(length)));
    }
}

#[test]
fn unknown_tlv_types_are_kept_raw_and_known_ones_named() {
    let tlvs: Vec<u8> = [
        &[0x01, 0x00, 0x02][..],
        b"h3",
        &[0x02, 0x00, 0x0B],
        b"example.com",
        &[0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0],
        &[0x30, 0x00, 0x03],
        b"ns1",
        &[0xE0, 0x00, 0x01, 0x7F],
        &[0xF8, 0x00, 0x00],
        &[0x21, 0x00, 0x01, 0x01],
    ]
    .concat();
    let header = parse_exact(&raw(0x21, 0x12, &[&IPV4_BLOCK[..], &tlvs].concat()));
    let kinds: Vec<TlvKind> = header.tlvs.iter().map(|tlv| tlv.kind).collect();
    assert!(matches!(
        kinds.as_slice(),
        [
            TlvKind::Alpn,
            TlvKind::Authority,
            TlvKind::Ssl,
            TlvKind::Netns,
            TlvKind::Other(0xE0),
            TlvKind::Other(0xF8),
            TlvKind::Other(0x21),
        ]
    ));
    assert_eq!(header.tlv(TlvKind::Authority), Some(&b"example.com"[..]));
    assert_eq!(header.tlv(TlvKind::Ssl), Some(&[0x01, 0, 0, 0, 0][..]));
}

#[test]
fn tlv_kinds_round_trip_through_their_byte() {
    for byte in 0..=u8::MAX {
        let kind = TlvKind::from_byte(byte);
        assert_eq!(kind.byte(), byte);
        assert_eq!(kind, TlvKind::Other(byte), "equality goes by the byte");
    }
    assert!(matches!(TlvKind::from_byte(0x03), TlvKind::Crc32c));
}

#[test]
fn noop_padding_is_kept() {
    let tlvs = [&[0x04, 0x00, 0x00][..], &[0x04, 0x00, 0x03, 0, 0, 0]].concat();
    let header = parse_exact(&raw(0x21, 0x12, &[&IPV4_BLOCK[..], &tlvs].concat()));
    assert_eq!(header.tlvs.len(), 2);
}

#[test]
fn emit_recomputes_a_stale_checksum() {
    let tlvs = TlvOptions { crc32c: true, unique_id: None };
    let (mut header, _) = Header::parse(&encode(client_v4(), vip_v4(), tlvs)).expect("valid header");
    header.addresses = Addresses::from_socket_addrs(client_v6(), vip_v6());
    let emitted = emit(&header);
    assert_eq!(emitted, encode(client_v6(), vip_v6(), tlvs));
    let (decoded, _) = Header::parse(&emitted).expect("checksum was recomputed");
    assert_ne!(decoded.checksum(), header.checksum());
}

#[test]
fn a_checksum_placeholder_of_any_length_is_emitted_as_four_bytes() {
    let mut header = Header::proxy(client_v4(), vip_v4(), TlvOptions::default());
    header.tlvs.push(Tlv::new(TlvKind::Crc32c, []));
    assert_eq!(header.buffer_len(), 28 + 7);
    let (decoded, _) = Header::parse(&emit(&header)).expect("valid checksum");
    assert!(decoded.checksum().is_some());
}

#[test]
fn packet_view_reads_the_fixed_fields() {
    let tlvs = TlvOptions { crc32c: true, unique_id: Some(UNIQUE_ID) };
    let bytes = [&encode(client_v4(), vip_v4(), tlvs)[..], b"datagram"].concat();
    let packet = Packet::new_checked(&bytes).expect("valid framing");
    assert_eq!(packet.version(), 2);
    assert_eq!(packet.command(), 1);
    assert_eq!(packet.family(), 1);
    assert_eq!(packet.transport(), 2);
    // 12 of addresses, 7 of CRC32C, 19 of UNIQUE_ID.
    assert_eq!(packet.payload_len(), 38);
    assert_eq!(packet.header_len(), 54);
    assert_eq!(packet.payload().len(), 38);
    assert_eq!(packet.as_bytes(), &bytes[..54]);
    let tlvs: Vec<RawTlv<'_>> = packet.tlvs(12).collect::<Result<_, _>>().expect("valid TLVs");
    assert_eq!(tlvs.len(), 2);
    assert_eq!((tlvs[0].kind, tlvs[0].offset, tlvs[0].value_offset()), (0x03, 28, 31));
    assert_eq!((tlvs[1].kind, tlvs[1].offset, tlvs[1].value), (0x05, 35, &UNIQUE_ID[..]));
}

#[test]
fn packet_view_frames_without_judging_fields() {
    // Command, family and transport are the representation's business.
    let bytes = raw(0x2F, 0xFF, &[]);
    let packet = Packet::new_checked(&bytes).expect("framing is fine");
    assert_eq!((packet.command(), packet.family(), packet.transport()), (0xF, 0xF, 0xF));
}

#[test]
fn tlv_iteration_stops_after_the_first_error() {
    let bytes = raw(0x21, 0x12, &[&IPV4_BLOCK[..], &[0x04, 0x00, 0x09, 1]].concat());
    let packet = Packet::new_checked(&bytes).expect("valid framing");
    let mut tlvs = packet.tlvs(12);
    assert_eq!(tlvs.next(), Some(Err(DecodeError::TlvLengthOverrun { offset: 28, length: 9, available: 1 })));
    assert_eq!(tlvs.next(), None);
    assert_eq!(packet.tlvs(500).next(), None, "past the payload there is nothing");
}
