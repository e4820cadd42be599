//! Snapshots of representative encoded headers, as hex dumps followed by the decoded
//! representation, in `snapshots/proxy_v2/`. A change in any byte the datapath sends shows
//! up here as a reviewable diff.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{UNIQUE_ID, assert_snapshot, client_v4, client_v6, encode, hex_dump, vip_v4, vip_v6};
use crate::proxy_v2::{Header, MAX_PROXY_HEADER_LEN, TlvOptions, write_local_header};

/// The dump of `bytes` and what they decode to.
fn describe(title: &str, bytes: &[u8]) -> String {
    let mut text = format!("{title}\n{} bytes\n\n{}\n", bytes.len(), hex_dump(bytes));
    match Header::parse(bytes) {
        Ok((header, consumed)) => {
            let _ = writeln!(text, "decodes ({consumed} bytes) to:");
            let _ = writeln!(text, "  command    {:?}", header.command);
            let _ = writeln!(text, "  transport  {:?}", header.transport);
            let _ = writeln!(text, "  addresses  {:?}", header.addresses);
            for tlv in &header.tlvs {
                let value: String = tlv.value.iter().map(|byte| format!("{byte:02x}")).collect();
                let _ = writeln!(text, "  tlv        {:?} {value}", tlv.kind);
            }
        }
        Err(error) => {
            let _ = writeln!(text, "does not decode: {error}");
        }
    }
    text
}

fn snapshot_proxy(name: &str, title: &str, source: SocketAddr, destination: SocketAddr, tlvs: TlvOptions) {
    assert_snapshot(name, &describe(title, &encode(source, destination, tlvs)));
}

const BOTH_TLVS: TlvOptions = TlvOptions { crc32c: true, unique_id: Some(UNIQUE_ID) };

#[test]
fn snapshot_ipv4_plain() {
    snapshot_proxy(
        "ipv4_plain",
        "PROXY, UDP over IPv4 (0x12), 192.0.2.1:53000 -> 198.51.100.7:53, no TLV",
        client_v4(),
        vip_v4(),
        TlvOptions::default(),
    );
}

#[test]
fn snapshot_ipv4_crc32c_unique_id() {
    snapshot_proxy(
        "ipv4_crc32c_unique_id",
        "PROXY, UDP over IPv4 (0x12), 192.0.2.1:53000 -> 198.51.100.7:53, CRC32C then UNIQUE_ID",
        client_v4(),
        vip_v4(),
        BOTH_TLVS,
    );
}

#[test]
fn snapshot_ipv6_crc32c_unique_id() {
    snapshot_proxy(
        "ipv6_crc32c_unique_id",
        "PROXY, UDP over IPv6 (0x22), [2001:db8::1]:53000 -> [2001:db8::7]:53, CRC32C then UNIQUE_ID",
        client_v6(),
        vip_v6(),
        BOTH_TLVS,
    );
}

#[test]
fn snapshot_mixed_families() {
    snapshot_proxy(
        "mixed_families",
        "PROXY, UDP over IPv6 (0x22), IPv4 client 192.0.2.1:53000 mapped -> [2001:db8::7]:53, UNIQUE_ID",
        client_v4(),
        vip_v6(),
        TlvOptions { crc32c: false, unique_id: Some(UNIQUE_ID) },
    );
}

#[test]
fn snapshot_local_crc32c() {
    let tlvs = TlvOptions { crc32c: true, unique_id: None };
    let mut out = [0; MAX_PROXY_HEADER_LEN];
    let len = write_local_header(&mut out, tlvs).expect("fits");
    assert_snapshot(
        "local_crc32c",
        &describe("LOCAL (health probe), AF_UNSPEC/UNSPEC (0x00), CRC32C", &out[..len]),
    );
}
