//! Unit tests of the PPv2 codec: byte-exact headers against hand-written arrays, every
//! decode error, insta snapshots of encoded headers, property tests, and a cross-check with
//! the independent `ppp` crate.

mod decode;
mod errors;
mod exact;
mod interop;
mod properties;
mod snapshots;

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{Header, MAX_PROXY_HEADER_LEN, TlvKind, TlvOptions, write_proxy_header};

/// Where the snapshots live: `snapshots/proxy_v2/` at the repository root, beside the
/// other crates' snapshots, rather than next to this file.
const SNAPSHOT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/proxy_v2");

/// Asserts `value` against the snapshot `name` in [`SNAPSHOT_DIR`].
fn assert_snapshot(name: &str, value: &str) {
    insta::with_settings!({
        snapshot_path => SNAPSHOT_DIR,
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, value);
    });
}

/// The client most tests use: 192.0.2.1:53000 (TEST-NET-1).
fn client_v4() -> SocketAddr {
    "192.0.2.1:53000".parse().expect("literal address")
}

/// The VIP most tests use: 198.51.100.7:53 (TEST-NET-2).
fn vip_v4() -> SocketAddr {
    "198.51.100.7:53".parse().expect("literal address")
}

/// An IPv6 client: [2001:db8::1]:53000 (documentation prefix).
fn client_v6() -> SocketAddr {
    "[2001:db8::1]:53000".parse().expect("literal address")
}

/// An IPv6 VIP: [2001:db8::7]:53.
fn vip_v6() -> SocketAddr {
    "[2001:db8::7]:53".parse().expect("literal address")
}

/// The address block of `client_v4()` → `vip_v4()`: 192.0.2.1 → 198.51.100.7, then ports
/// 53000 (0xCF08) → 53 (0x0035), as PPv2 §2.2 lays it out.
const IPV4_BLOCK: [u8; 12] = [192, 0, 2, 1, 198, 51, 100, 7, 0xCF, 0x08, 0x00, 0x35];

/// A header with these two field bytes and `payload`, its length field set to match.
fn raw(version_command: u8, family_transport: u8, payload: &[u8]) -> Vec<u8> {
    let length = u16::try_from(payload.len()).expect("test payloads are short");
    let mut header = super::SIGNATURE.to_vec();
    header.extend([version_command, family_transport]);
    header.extend(length.to_be_bytes());
    header.extend(payload);
    header
}

/// The unique id the tests send, chosen so that every byte differs.
const UNIQUE_ID: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/// The four TLV combinations, in a fixed order.
const TLV_COMBINATIONS: [TlvOptions; 4] = [
    TlvOptions { crc32c: false, unique_id: None },
    TlvOptions { crc32c: true, unique_id: None },
    TlvOptions { crc32c: false, unique_id: Some(UNIQUE_ID) },
    TlvOptions { crc32c: true, unique_id: Some(UNIQUE_ID) },
];

/// Encodes with the datapath encoder into a fresh buffer.
fn encode(source: SocketAddr, destination: SocketAddr, tlvs: TlvOptions) -> Vec<u8> {
    let mut out = [0; MAX_PROXY_HEADER_LEN];
    let len = write_proxy_header(&mut out, source, destination, tlvs).expect("headroom fits");
    out[..len].to_vec()
}

/// Emits a representation into a fresh buffer.
fn emit(header: &Header) -> Vec<u8> {
    let mut out = vec![0; header.buffer_len()];
    let len = header.emit(&mut out).expect("emittable header");
    assert_eq!(len, out.len(), "emit wrote other than buffer_len");
    out
}

/// `header` with every CRC32C value zeroed, for comparing a decoded header (which carries
/// the real checksum) with a constructed one (which carries a placeholder).
fn zero_checksums(mut header: Header) -> Header {
    for tlv in &mut header.tlvs {
        if tlv.kind == TlvKind::Crc32c {
            tlv.value = vec![0; 4];
        }
    }
    header
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time: a reference
/// independent of the `crc32c` crate, slow and obviously correct.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    crc_bitwise(data, 0x82F6_3B78)
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), the wrong checksum some PPv2
/// implementations use; here to prove the tests would catch that mistake.
fn crc32_ieee_bitwise(data: &[u8]) -> u32 {
    crc_bitwise(data, 0xEDB8_8320)
}

fn crc_bitwise(data: &[u8], reflected_polynomial: u32) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (reflected_polynomial & mask);
        }
    }
    !crc
}

/// A canonical hex dump: offset, 16 bytes in two groups of 8, printable ASCII.
fn hex_dump(bytes: &[u8]) -> String {
    let mut dump = String::new();
    for (line, chunk) in bytes.chunks(16).enumerate() {
        let _ = write!(dump, "{:04x} ", line * 16);
        for column in 0..16 {
            if column == 8 {
                dump.push(' ');
            }
            match chunk.get(column) {
                Some(byte) => {
                    let _ = write!(dump, " {byte:02x}");
                }
                None => dump.push_str("   "),
            }
        }
        dump.push_str("  |");
        for &byte in chunk {
            let shown = if byte.is_ascii_graphic() || byte == b' ' { char::from(byte) } else { '.' };
            dump.push(shown);
        }
        dump.push_str("|\n");
    }
    dump
}
