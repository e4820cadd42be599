//! Every [`DecodeError`] and [`EmitError`] variant, each reached by a concrete input.

use super::{IPV4_BLOCK, assert_snapshot, client_v4, crc32c_bitwise, encode, raw, vip_v4};
use crate::proxy_v2::{
    AddressFamily, Addresses, BufferTooSmall, Command, DecodeError, EmitError, Header, Tlv, TlvKind,
    TlvOptions, Transport,
};

/// An IPv4 DGRAM PROXY header whose TLV bytes are `tlvs`.
fn ipv4_with_tlv_bytes(tlvs: &[u8]) -> Vec<u8> {
    raw(0x21, 0x12, &[&IPV4_BLOCK[..], tlvs].concat())
}

/// The plain IPv4 header (28 bytes).
fn plain() -> Vec<u8> {
    encode(client_v4(), vip_v4(), TlvOptions::default())
}

/// One input per variant (and a few more), with the error it must produce.
fn cases() -> Vec<(&'static str, Vec<u8>, DecodeError)> {
    let with_checksum = TlvOptions { crc32c: true, unique_id: None };
    let valid_checksummed = encode(client_v4(), vip_v4(), with_checksum);
    let mut corrupted = valid_checksummed.clone();
    corrupted[27] ^= 0x01; // the destination port's low byte
    let mut zeroed = corrupted.clone();
    zeroed[31..35].fill(0);
    let mut wrong_version = plain();
    wrong_version[12] = 0x11;
    let mut wrong_command = plain();
    wrong_command[12] = 0x22;
    let mut wrong_family = plain();
    wrong_family[13] = 0x42;
    let mut wrong_transport = plain();
    wrong_transport[13] = 0x13;
    let crc = [0x03, 0x00, 0x04, 0, 0, 0, 0];

    vec![
        ("empty input", Vec::new(), DecodeError::Truncated { needed: 16, available: 0 }),
        (
            "shorter than the fixed header",
            plain()[..15].to_vec(),
            DecodeError::Truncated { needed: 16, available: 15 },
        ),
        (
            "shorter than 16 + length",
            plain()[..27].to_vec(),
            DecodeError::Truncated { needed: 28, available: 27 },
        ),
        (
            "a PROXY v1 line",
            b"PROXY UDP4 192.0.2.1 198.51.100.7 53000 53\r\n".to_vec(),
            DecodeError::BadSignature,
        ),
        (
            "a short input that already differs from the signature",
            vec![0x0D, 0x0A, 0x0D, 0x0A, 0x01],
            DecodeError::BadSignature,
        ),
        ("version 1 in the version nibble", wrong_version, DecodeError::UnsupportedVersion(1)),
        ("command 2", wrong_command, DecodeError::UnknownCommand(2)),
        ("family 4", wrong_family, DecodeError::UnknownFamily(4)),
        ("transport 3", wrong_transport, DecodeError::UnknownTransport(3)),
        (
            "AF_INET with an 11-byte payload",
            raw(0x21, 0x12, &IPV4_BLOCK[..11]),
            DecodeError::AddressBlockTooShort { family: AddressFamily::Inet, needed: 12, length: 11 },
        ),
        (
            "AF_UNIX with only an AF_INET6-sized payload",
            raw(0x21, 0x32, &[0; 36]),
            DecodeError::AddressBlockTooShort { family: AddressFamily::Unix, needed: 216, length: 36 },
        ),
        (
            "two bytes after the address block",
            ipv4_with_tlv_bytes(&[0x04, 0x00]),
            DecodeError::TlvTruncated { offset: 28 },
        ),
        (
            "a TLV declaring 5 value bytes with 2 left",
            ipv4_with_tlv_bytes(&[0x04, 0x00, 0x05, 1, 2]),
            DecodeError::TlvLengthOverrun { offset: 28, length: 5, available: 2 },
        ),
        (
            "a 3-byte CRC32C value",
            ipv4_with_tlv_bytes(&[0x03, 0x00, 0x03, 0, 0, 0]),
            DecodeError::ChecksumLength { length: 3 },
        ),
        (
            "two CRC32C TLVs",
            ipv4_with_tlv_bytes(&[crc, crc].concat()),
            DecodeError::DuplicateChecksum { offset: 35 },
        ),
        (
            "a flipped bit in a checksummed header",
            corrupted,
            DecodeError::ChecksumMismatch {
                expected: u32::from_be_bytes(valid_checksummed[31..35].try_into().expect("4 bytes")),
                computed: crc32c_bitwise(&zeroed),
            },
        ),
        (
            "a 129-byte UNIQUE_ID",
            ipv4_with_tlv_bytes(&[&[0x05, 0x00, 129][..], &[7; 129]].concat()),
            DecodeError::UniqueIdTooLong { length: 129 },
        ),
    ]
}

/// A number per variant; the match has no wildcard, so a new variant fails to compile
/// here until a case reaches it.
fn variant_index(error: &DecodeError) -> usize {
    match error {
        DecodeError::Truncated { .. } => 0,
        DecodeError::BadSignature => 1,
        DecodeError::UnsupportedVersion(_) => 2,
        DecodeError::UnknownCommand(_) => 3,
        DecodeError::UnknownFamily(_) => 4,
        DecodeError::UnknownTransport(_) => 5,
        DecodeError::AddressBlockTooShort { .. } => 6,
        DecodeError::TlvTruncated { .. } => 7,
        DecodeError::TlvLengthOverrun { .. } => 8,
        DecodeError::ChecksumLength { .. } => 9,
        DecodeError::DuplicateChecksum { .. } => 10,
        DecodeError::ChecksumMismatch { .. } => 11,
        DecodeError::UniqueIdTooLong { .. } => 12,
    }
}
const DECODE_ERROR_VARIANTS: usize = 13;

#[test]
fn every_decode_error_variant_is_reached() {
    let mut reached = [false; DECODE_ERROR_VARIANTS];
    for (name, input, expected) in cases() {
        assert_eq!(Header::parse(&input), Err(expected), "{name}");
        reached[variant_index(&expected)] = true;
    }
    assert!(reached.iter().all(|&reached| reached), "{reached:?}");
}

#[test]
fn decode_error_messages() {
    let messages: String =
        cases().into_iter().map(|(name, _, error)| format!("{name}:\n    {error}\n")).collect();
    assert_snapshot("decode_error_messages", &messages);
}

#[test]
fn a_signature_prefix_is_truncated_not_foreign() {
    let prefix = &crate::proxy_v2::SIGNATURE[..5];
    assert_eq!(Header::parse(prefix), Err(DecodeError::Truncated { needed: 16, available: 5 }));
}

#[test]
fn ieee_crc32_in_the_checksum_field_is_rejected() {
    let mut header = ipv4_with_tlv_bytes(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
    let ieee = super::crc32_ieee_bitwise(&header);
    header[31..35].copy_from_slice(&ieee.to_be_bytes());
    assert!(matches!(
        Header::parse(&header),
        Err(DecodeError::ChecksumMismatch { expected, .. }) if expected == ieee
    ));
    let castagnoli = crc32c_bitwise(&ipv4_with_tlv_bytes(&[0x03, 0x00, 0x04, 0, 0, 0, 0]));
    header[31..35].copy_from_slice(&castagnoli.to_be_bytes());
    assert!(Header::parse(&header).is_ok());
}

fn proxy_header(tlvs: Vec<Tlv>) -> Header {
    Header {
        command: Command::Proxy,
        transport: Transport::Dgram,
        addresses: Addresses::from_socket_addrs(client_v4(), vip_v4()),
        tlvs,
    }
}

#[test]
fn emit_refuses_a_payload_over_65535_bytes() {
    let header = proxy_header(vec![Tlv::new(TlvKind::Noop, vec![0; 65535 - 12 - 3 + 1])]);
    let mut out = vec![0; header.buffer_len()];
    assert_eq!(header.emit(&mut out), Err(EmitError::PayloadTooLong { length: 65536 }));
    let largest = proxy_header(vec![Tlv::new(TlvKind::Noop, vec![0; 65535 - 12 - 3])]);
    let mut out = vec![0; largest.buffer_len()];
    assert_eq!(largest.emit(&mut out), Ok(16 + 65535));
    assert_eq!(Header::parse(&out), Ok((largest, 16 + 65535)));
}

#[test]
fn emit_refuses_a_unique_id_over_128_bytes() {
    let header = proxy_header(vec![Tlv::new(TlvKind::UniqueId, vec![1; 129])]);
    let mut out = vec![0; header.buffer_len()];
    assert_eq!(header.emit(&mut out), Err(EmitError::UniqueIdTooLong { length: 129 }));
}

#[test]
fn emit_refuses_two_checksums() {
    let header = proxy_header(vec![Tlv::crc32c(), Tlv::unique_id([1; 16]), Tlv::crc32c()]);
    let mut out = vec![0; header.buffer_len()];
    assert_eq!(header.emit(&mut out), Err(EmitError::DuplicateChecksum));
}

#[test]
fn emit_into_a_short_buffer_is_an_error() {
    let header = proxy_header(vec![Tlv::crc32c()]);
    let mut out = vec![0; header.buffer_len() - 1];
    assert_eq!(header.emit(&mut out), Err(EmitError::BufferTooSmall(BufferTooSmall)));
}

#[test]
fn emit_error_messages() {
    let messages = [
        EmitError::BufferTooSmall(BufferTooSmall),
        EmitError::PayloadTooLong { length: 65536 },
        EmitError::UniqueIdTooLong { length: 129 },
        EmitError::DuplicateChecksum,
    ]
    .iter()
    .map(|error| format!("{error}\n"))
    .collect::<String>();
    assert_snapshot("emit_error_messages", &messages);
}
