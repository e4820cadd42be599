//! Byte-exact headers. The expected bytes are written out by hand from the layout in
//! PPv2 §2.2 (signature, version/command, family/transport, length, address block, TLVs);
//! the checksums were computed outside this crate with a bit-at-a-time CRC-32C, and
//! `checksum_literals_match_an_independent_crc32c` re-derives them with one.

use std::net::SocketAddr;

use super::{
    IPV4_BLOCK, TLV_COMBINATIONS, client_v4, client_v6, crc32_ieee_bitwise, crc32c_bitwise, emit, encode,
    vip_v4, vip_v6,
};
use crate::proxy_v2::{
    BufferTooSmall, Header, MAX_PROXY_HEADER_LEN, TlvOptions, local_header_len, proxy_header_len,
    write_local_header, write_proxy_header,
};

/// PPv2 §2.2: `\x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A`.
const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// 2001:db8::1 → 2001:db8::7, then ports 53000 → 53.
const IPV6_BLOCK: [u8; 36] = [
    0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
    0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, //
    0xCF, 0x08, 0x00, 0x35,
];

/// ::ffff:192.0.2.1 (the IPv4 client, mapped) → 2001:db8::7, then ports 53000 → 53.
const MIXED_BLOCK: [u8; 36] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1, //
    0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07, //
    0xCF, 0x08, 0x00, 0x35,
];

/// PP2_TYPE_UNIQUE_ID (0x05), length 16, the bytes 1 to 16.
const UNIQUE_ID_TLV: [u8; 19] = [0x05, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// PP2_TYPE_CRC32C (0x03), length 4, then the checksum big-endian.
const fn crc_tlv(checksum: [u8; 4]) -> [u8; 7] {
    let [a, b, c, d] = checksum;
    [0x03, 0x00, 0x04, a, b, c, d]
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Checks the four TLV combinations for one address pair against `expected` (in
/// `TLV_COMBINATIONS` order), with both encoders, and that the lengths agree.
fn assert_headers(source: SocketAddr, destination: SocketAddr, expected: [Vec<u8>; 4]) {
    for (tlvs, expected) in TLV_COMBINATIONS.into_iter().zip(expected) {
        let encoded = encode(source, destination, tlvs);
        assert_eq!(encoded, expected, "write_proxy_header, {tlvs:?}");
        assert_eq!(proxy_header_len(source, destination, tlvs), expected.len());
        let emitted = emit(&Header::proxy(source, destination, tlvs));
        assert_eq!(emitted, expected, "Header::emit, {tlvs:?}");
        let (_, consumed) = Header::parse(&expected).expect("valid header");
        assert_eq!(consumed, expected.len());
    }
}

#[test]
fn castagnoli_check_value_is_e3069283() {
    // The check value of CRC-32C ("CRC-32/ISCSI" in the catalogue of parametrised CRCs).
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
    // IEEE CRC-32 gives 0xCBF43926: a header checksummed with it must not pass.
    assert_eq!(crc32_ieee_bitwise(b"123456789"), 0xCBF4_3926);
}

#[test]
fn ipv4_headers_are_byte_exact() {
    let fixed = |length: u8| [0x21, 0x12, 0x00, length];
    assert_headers(
        client_v4(),
        vip_v4(),
        [
            concat(&[&SIGNATURE, &fixed(12), &IPV4_BLOCK]),
            concat(&[&SIGNATURE, &fixed(19), &IPV4_BLOCK, &crc_tlv([0x85, 0x5C, 0x53, 0xE2])]),
            concat(&[&SIGNATURE, &fixed(31), &IPV4_BLOCK, &UNIQUE_ID_TLV]),
            concat(&[
                &SIGNATURE,
                &fixed(38),
                &IPV4_BLOCK,
                &crc_tlv([0x7A, 0x4A, 0x6B, 0xE2]),
                &UNIQUE_ID_TLV,
            ]),
        ],
    );
}

#[test]
fn ipv6_headers_are_byte_exact() {
    let fixed = |length: u8| [0x21, 0x22, 0x00, length];
    assert_headers(
        client_v6(),
        vip_v6(),
        [
            concat(&[&SIGNATURE, &fixed(36), &IPV6_BLOCK]),
            concat(&[&SIGNATURE, &fixed(43), &IPV6_BLOCK, &crc_tlv([0x14, 0x0D, 0x2E, 0x7F])]),
            concat(&[&SIGNATURE, &fixed(55), &IPV6_BLOCK, &UNIQUE_ID_TLV]),
            concat(&[
                &SIGNATURE,
                &fixed(62),
                &IPV6_BLOCK,
                &crc_tlv([0x49, 0xB7, 0xC3, 0x12]),
                &UNIQUE_ID_TLV,
            ]),
        ],
    );
}

#[test]
fn mixed_families_are_written_as_ipv6_with_the_ipv4_side_mapped() {
    let fixed = |length: u8| [0x21, 0x22, 0x00, length];
    assert_headers(
        client_v4(),
        vip_v6(),
        [
            concat(&[&SIGNATURE, &fixed(36), &MIXED_BLOCK]),
            concat(&[&SIGNATURE, &fixed(43), &MIXED_BLOCK, &crc_tlv([0x8D, 0x8F, 0x04, 0x5A])]),
            concat(&[&SIGNATURE, &fixed(55), &MIXED_BLOCK, &UNIQUE_ID_TLV]),
            concat(&[
                &SIGNATURE,
                &fixed(62),
                &MIXED_BLOCK,
                &crc_tlv([0xE8, 0xF5, 0x35, 0xEC]),
                &UNIQUE_ID_TLV,
            ]),
        ],
    );
}

#[test]
fn mapped_ipv4_on_both_sides_is_canonicalised_to_ipv4() {
    let client: SocketAddr = "[::ffff:192.0.2.1]:53000".parse().expect("literal");
    let vip: SocketAddr = "[::ffff:198.51.100.7]:53".parse().expect("literal");
    for tlvs in TLV_COMBINATIONS {
        assert_eq!(encode(client, vip, tlvs), encode(client_v4(), vip_v4(), tlvs));
        assert_eq!(encode(client, vip_v4(), tlvs), encode(client_v4(), vip_v4(), tlvs));
    }
}

#[test]
fn mapped_ipv4_beside_ipv6_is_written_as_mapped() {
    let client: SocketAddr = "[::ffff:192.0.2.1]:53000".parse().expect("literal");
    for tlvs in TLV_COMBINATIONS {
        assert_eq!(encode(client, vip_v6(), tlvs), encode(client_v4(), vip_v6(), tlvs));
    }
}

#[test]
fn ipv6_scope_and_flow_info_are_not_carried() {
    let scoped: SocketAddr = "[fe80::1%3]:53000".parse().expect("literal");
    let unscoped: SocketAddr = "[fe80::1]:53000".parse().expect("literal");
    let tlvs = TlvOptions::default();
    assert_eq!(encode(scoped, vip_v6(), tlvs), encode(unscoped, vip_v6(), tlvs));
    assert_eq!(Header::proxy(scoped, vip_v6(), tlvs), Header::proxy(unscoped, vip_v6(), tlvs));
}

#[test]
fn local_headers_are_byte_exact() {
    let fixed = |length: u8| [0x20, 0x00, 0x00, length];
    let expected = [
        concat(&[&SIGNATURE, &fixed(0)]),
        concat(&[&SIGNATURE, &fixed(7), &crc_tlv([0xA9, 0xB8, 0x7E, 0x8F])]),
        concat(&[&SIGNATURE, &fixed(19), &UNIQUE_ID_TLV]),
        concat(&[&SIGNATURE, &fixed(26), &crc_tlv([0x72, 0x64, 0xD9, 0x6B]), &UNIQUE_ID_TLV]),
    ];
    for (tlvs, expected) in TLV_COMBINATIONS.into_iter().zip(expected) {
        let mut out = [0; MAX_PROXY_HEADER_LEN];
        let len = write_local_header(&mut out, tlvs).expect("fits");
        assert_eq!(&out[..len], expected.as_slice(), "{tlvs:?}");
        assert_eq!(local_header_len(tlvs), expected.len());
        assert_eq!(emit(&Header::local(tlvs)), expected, "Header::emit, {tlvs:?}");
    }
}

#[test]
fn checksum_literals_match_an_independent_crc32c() {
    // (version/command to length, address block, expected checksum, UNIQUE_ID present)
    let cases: [(&[u8], &[u8], u32, bool); 8] = [
        (&[0x21, 0x12, 0x00, 19], &IPV4_BLOCK, 0x855C_53E2, false),
        (&[0x21, 0x12, 0x00, 38], &IPV4_BLOCK, 0x7A4A_6BE2, true),
        (&[0x21, 0x22, 0x00, 43], &IPV6_BLOCK, 0x140D_2E7F, false),
        (&[0x21, 0x22, 0x00, 62], &IPV6_BLOCK, 0x49B7_C312, true),
        (&[0x21, 0x22, 0x00, 43], &MIXED_BLOCK, 0x8D8F_045A, false),
        (&[0x21, 0x22, 0x00, 62], &MIXED_BLOCK, 0xE8F5_35EC, true),
        (&[0x20, 0x00, 0x00, 7], &[], 0xA9B8_7E8F, false),
        (&[0x20, 0x00, 0x00, 26], &[], 0x7264_D96B, true),
    ];
    for (fixed, block, checksum, with_unique_id) in cases {
        let unique_id: &[u8] = if with_unique_id { &UNIQUE_ID_TLV } else { &[] };
        let zeroed = concat(&[&SIGNATURE, fixed, block, &crc_tlv([0; 4]), unique_id]);
        assert_eq!(crc32c_bitwise(&zeroed), checksum, "{fixed:x?}");
        assert_ne!(crc32_ieee_bitwise(&zeroed), checksum);
    }
}

#[test]
fn max_proxy_header_len_is_the_ipv6_header_with_both_tlvs() {
    let both = TlvOptions { crc32c: true, unique_id: Some([0xFF; 16]) };
    assert_eq!(MAX_PROXY_HEADER_LEN, 78);
    assert_eq!(proxy_header_len(client_v6(), vip_v6(), both), 78);
    assert_eq!(proxy_header_len(client_v4(), vip_v6(), both), 78);
    assert_eq!(proxy_header_len(client_v4(), vip_v4(), both), 54);
}

#[test]
fn short_buffer_is_an_error_and_left_untouched() {
    let tlvs = TlvOptions { crc32c: true, unique_id: Some([1; 16]) };
    let len = proxy_header_len(client_v4(), vip_v4(), tlvs);
    let mut out = vec![0xAA; len - 1];
    assert_eq!(write_proxy_header(&mut out, client_v4(), vip_v4(), tlvs), Err(BufferTooSmall));
    assert!(out.iter().all(|&byte| byte == 0xAA));
    assert_eq!(write_local_header(&mut [0; 15], TlvOptions::default()), Err(BufferTooSmall));
    assert_eq!(write_proxy_header(&mut [], client_v6(), vip_v6(), tlvs), Err(BufferTooSmall));
}

#[test]
fn bytes_after_the_header_are_left_untouched() {
    let tlvs = TlvOptions { crc32c: true, unique_id: None };
    let mut out = [0xAA; 100];
    let len = write_proxy_header(&mut out, client_v4(), vip_v4(), tlvs).expect("fits");
    assert_eq!(len, 35);
    assert!(out[len..].iter().all(|&byte| byte == 0xAA));
    assert_eq!(&out[..len], encode(client_v4(), vip_v4(), tlvs).as_slice());
}
