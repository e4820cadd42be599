//! `proxy_v2_decode` and `proxy_v2_roundtrip`: the PPv2 codec against arbitrary bytes, and
//! against arbitrary headers cross-checked with the independent `ppp` crate.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use arbitrary::{Result, Unstructured};
use ppp::v2 as theirs;

use crate::proxy_v2::repr::UNIX_ADDRESS_LEN;
use crate::proxy_v2::{
    Addresses, Command, EmitError, Header, Tlv, TlvKind, Transport, fuzz_decode, fuzz_roundtrip,
};

/// Most TLVs in a generated header; enough for every ordering question (checksum first or
/// last, duplicates, padding between) without spending the input on lists.
const MAX_TLVS: usize = 12;
/// Longest generated TLV value: past UNIQUE_ID's 128-byte limit, so its refusal is reached.
const MAX_TLV_VALUE: usize = 300;
/// Type bytes worth drawing more often than chance would: every registered type, one from
/// the custom range and one from the experimental range (PPv2 §2.2.8).
const INTERESTING_TLV_TYPES: [u8; 9] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x20, 0x30, 0xE0, 0xF0];

/// Arbitrary bytes never make the decoder panic; whatever decodes re-emits, byte for byte,
/// and decodes to the same header (the body is `proxy_v2::fuzz_decode`).
pub fn proxy_v2_decode(data: &[u8]) {
    fuzz_decode(data);
}

/// An arbitrary header (any command, transport and address family, IPv4, IPv6, IPv4-mapped
/// or AF_UNIX addresses, any TLVs) emits, decodes to itself, and `ppp` reads the same
/// command, transport, addresses and TLVs from the bytes; a header `ppp` builds from the same
/// fields is the same bytes, and we read it back. The same bytes also drive the datapath
/// encoder's own round trip (`proxy_v2::fuzz_roundtrip`).
pub fn proxy_v2_roundtrip(data: &[u8]) {
    fuzz_roundtrip(data);
    let Ok(header) = arbitrary_header(&mut Unstructured::new(data)) else {
        return;
    };
    let mut bytes = vec![0; header.buffer_len()];
    match header.emit(&mut bytes) {
        Ok(written) => assert_eq!(written, bytes.len(), "emit wrote other than buffer_len"),
        Err(error) => {
            assert_refusal_is_justified(&header, &error);
            return;
        }
    }
    let (decoded, consumed) = Header::parse(&bytes).expect("an emitted header decodes");
    assert_eq!(consumed, bytes.len());
    assert_eq!(decoded, with_emitted_checksum(&header, &decoded), "emit ∘ parse changed the header");
    assert_ppp_reads_as_we_do(&bytes, &decoded);
    assert_ppp_builds_what_we_emit(&decoded, &bytes);
}

fn arbitrary_header(u: &mut Unstructured<'_>) -> Result<Header> {
    let command = if u.arbitrary()? { Command::Proxy } else { Command::Local };
    let transport = *u.choose(&[Transport::Unspec, Transport::Stream, Transport::Dgram])?;
    let addresses = match u.int_in_range(0..=4u8)? {
        0 => Addresses::Unspec,
        1 => Addresses::Ipv4 { source: ipv4(u)?, destination: ipv4(u)? },
        2 => Addresses::Ipv6 { source: ipv6(u)?, destination: ipv6(u)? },
        // Mixed families travel as AF_INET6 with the IPv4 side mapped (`::ffff:a.b.c.d`).
        3 => {
            let mapped = SocketAddrV6::new(
                Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?).to_ipv6_mapped(),
                u.arbitrary()?,
                0,
                0,
            );
            if u.arbitrary()? {
                Addresses::Ipv6 { source: mapped, destination: ipv6(u)? }
            } else {
                Addresses::Ipv6 { source: ipv6(u)?, destination: mapped }
            }
        }
        _ => Addresses::Unix { source: unix_path(u)?, destination: unix_path(u)? },
    };
    let tlv_count = u.int_in_range(0..=MAX_TLVS)?;
    let mut tlvs = Vec::with_capacity(tlv_count);
    for _ in 0..tlv_count {
        let kind = if u.ratio(3, 4)? { *u.choose(&INTERESTING_TLV_TYPES)? } else { u.arbitrary()? };
        let value_len = u.int_in_range(0..=MAX_TLV_VALUE)?;
        let value = u.bytes(value_len.min(u.len()))?.to_vec();
        tlvs.push(Tlv::new(TlvKind::from_byte(kind), value));
    }
    // Rarely, padding that pushes the payload past the 16-bit length field.
    if u.ratio(1, 64)? {
        tlvs.push(Tlv::new(TlvKind::Noop, vec![0; usize::from(u.arbitrary::<u16>()?)]));
    }
    Ok(Header { command, transport, addresses, tlvs })
}

fn ipv4(u: &mut Unstructured<'_>) -> Result<SocketAddrV4> {
    Ok(SocketAddrV4::new(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?), u.arbitrary()?))
}

/// Flow info and scope id do not travel on the wire, so they are generated as zero.
fn ipv6(u: &mut Unstructured<'_>) -> Result<SocketAddrV6> {
    Ok(SocketAddrV6::new(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?), u.arbitrary()?, 0, 0))
}

/// A `sun_path`: a short arbitrary prefix, NUL-padded as senders do, so the input is not
/// spent on 108 bytes per path.
fn unix_path(u: &mut Unstructured<'_>) -> Result<[u8; UNIX_ADDRESS_LEN]> {
    let mut path = [0; UNIX_ADDRESS_LEN];
    let len = u.int_in_range(0..=UNIX_ADDRESS_LEN)?.min(u.len());
    path[..len].copy_from_slice(u.bytes(len)?);
    Ok(path)
}

/// Emit refuses exactly the headers the decoder would reject (see `EmitError`).
fn assert_refusal_is_justified(header: &Header, error: &EmitError) {
    let unique_id_too_long =
        header.tlvs.iter().any(|tlv| tlv.kind == TlvKind::UniqueId && tlv.value.len() > 128);
    let checksums = header.tlvs.iter().filter(|tlv| tlv.kind == TlvKind::Crc32c).count();
    let payload_len = header.buffer_len() - crate::proxy_v2::FIXED_HEADER_LEN;
    let justified = match error {
        EmitError::PayloadTooLong { length } => *length == payload_len && payload_len > usize::from(u16::MAX),
        EmitError::UniqueIdTooLong { .. } => unique_id_too_long,
        EmitError::DuplicateChecksum => checksums > 1,
        EmitError::BufferTooSmall(_) => false,
    };
    assert!(justified, "emit refused {header:?}: {error}");
}

/// `header` with each CRC32C value replaced by the one on the wire: emit computes the
/// checksum and ignores the stored value.
fn with_emitted_checksum(header: &Header, decoded: &Header) -> Header {
    let mut expected = header.clone();
    let wire = decoded.tlv(TlvKind::Crc32c).unwrap_or_default();
    for tlv in &mut expected.tlvs {
        if tlv.kind == TlvKind::Crc32c {
            tlv.value = wire.to_vec();
        }
    }
    expected
}

fn their_command(command: Command) -> theirs::Command {
    match command {
        Command::Local => theirs::Command::Local,
        Command::Proxy => theirs::Command::Proxy,
    }
}

fn their_protocol(transport: Transport) -> theirs::Protocol {
    match transport {
        Transport::Unspec => theirs::Protocol::Unspecified,
        Transport::Stream => theirs::Protocol::Stream,
        Transport::Dgram => theirs::Protocol::Datagram,
    }
}

fn their_addresses(addresses: &Addresses) -> theirs::Addresses {
    match *addresses {
        Addresses::Unspec => theirs::Addresses::Unspecified,
        Addresses::Ipv4 { source, destination } => theirs::Addresses::IPv4(theirs::IPv4 {
            source_address: *source.ip(),
            destination_address: *destination.ip(),
            source_port: source.port(),
            destination_port: destination.port(),
        }),
        Addresses::Ipv6 { source, destination } => theirs::Addresses::IPv6(theirs::IPv6 {
            source_address: *source.ip(),
            destination_address: *destination.ip(),
            source_port: source.port(),
            destination_port: destination.port(),
        }),
        Addresses::Unix { source, destination } => theirs::Unix::new(source, destination).into(),
    }
}

/// `ppp` parses `bytes` into the same fields as `ours` (which we decoded from them).
///
/// One difference is known and checked rather than skipped: for AF_UNSPEC, `ppp` takes the
/// whole payload as opaque address bytes, where this codec (like HAProxy's sender, which
/// appends TLVs to LOCAL headers) reads an empty address block followed by TLVs; pointed at
/// those bytes, `ppp` must read our TLVs.
fn assert_ppp_reads_as_we_do(bytes: &[u8], ours: &Header) {
    let header = theirs::Header::try_from(bytes).expect("ppp parses what we emit");
    assert_eq!(header.len(), bytes.len(), "header length");
    assert_eq!(header.command, their_command(ours.command));
    assert_eq!(header.protocol, their_protocol(ours.transport));
    assert_eq!(header.addresses, their_addresses(&ours.addresses));

    let our_tlvs: Vec<(u8, &[u8])> =
        ours.tlvs.iter().map(|tlv| (tlv.kind.byte(), tlv.value.as_slice())).collect();
    let tlv_bytes = if ours.addresses == Addresses::Unspec {
        assert_eq!(header.tlvs().count(), 0, "ppp found TLVs in an AF_UNSPEC payload");
        header.address_bytes()
    } else {
        header.tlv_bytes()
    };
    let their_tlvs: Vec<theirs::TypeLengthValue<'_>> = theirs::TypeLengthValues::from(tlv_bytes)
        .collect::<std::result::Result<_, _>>()
        .expect("ppp reads the TLVs");
    let their_tlvs: Vec<(u8, &[u8])> = their_tlvs.iter().map(|tlv| (tlv.kind, tlv.value.as_ref())).collect();
    assert_eq!(their_tlvs, our_tlvs, "TLVs differ");
}

/// `ppp`'s builder, given the same fields, writes the bytes we emitted. A header with a
/// CRC32C TLV is skipped: `ppp` writes the value it is given, and the value we decoded is the
/// checksum of our bytes, so the comparison would only restate the decode check.
fn assert_ppp_builds_what_we_emit(ours: &Header, bytes: &[u8]) {
    if ours.checksum().is_some() {
        return;
    }
    let mut builder = theirs::Builder::with_addresses(
        theirs::Version::Two | their_command(ours.command),
        their_protocol(ours.transport),
        their_addresses(&ours.addresses),
    );
    for tlv in &ours.tlvs {
        builder = builder.write_tlv(tlv.kind.byte(), &tlv.value).expect("ppp writes the TLV");
    }
    let built = builder.build().expect("ppp builds the header");
    assert_eq!(built, bytes, "ppp builds other bytes from the same fields");
    let (decoded, consumed) = Header::parse(&built).expect("we read what ppp builds");
    assert_eq!((&decoded, consumed), (ours, bytes.len()));
}
