//! Fuzz target bodies. `fuzz/` calls them with the fuzzer's bytes, and the unit tests replay
//! them on stable, so a crash found by the fuzzer is reproducible with `cargo test`. They
//! panic (assert) exactly when the codec breaks a promise; the codec itself never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{
    Addresses, Command, Header, MAX_PROXY_HEADER_LEN, TlvKind, TlvOptions, proxy_header_len,
    write_proxy_header,
};

/// Decodes `data`; whatever decodes must re-emit, and the emitted bytes must decode to the
/// same header (decode ∘ emit ∘ decode is a fixpoint). Emit is also byte-exact, except for
/// a LOCAL header whose address block was too short for its family: that block is
/// discarded, and the header re-emits as AF_UNSPEC (see [`Header::parse`]).
pub fn fuzz_decode(data: &[u8]) {
    let Ok((header, consumed)) = Header::parse(data) else {
        return;
    };
    assert!(consumed <= data.len(), "consumed more than the input");
    let mut emitted = vec![0; header.buffer_len()];
    let written = header.emit(&mut emitted).expect("a decoded header always re-emits");
    assert_eq!(written, emitted.len(), "emit wrote other than buffer_len");
    let (again, again_len) = Header::parse(&emitted).expect("an emitted header always decodes");
    assert_eq!(again, header, "decode ∘ emit ∘ decode is not a fixpoint");
    assert_eq!(again_len, written);
    let discarded_local_block =
        header.command == Command::Local && header.addresses == Addresses::Unspec && header.tlvs.is_empty();
    if !discarded_local_block {
        assert_eq!(Some(emitted.as_slice()), data.get(..consumed), "emit is not byte-exact");
    }
}

/// Builds endpoints and TLV options from `data`, writes a header with the datapath encoder
/// and checks that it decodes to what [`Header::proxy`] describes, that `Header::emit`
/// writes the same bytes, and that the endpoints come back canonicalised. Missing input
/// bytes read as zero, so every input is a test case.
pub fn fuzz_roundtrip(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let source = input.endpoint(flags & 0b11);
    let destination = input.endpoint((flags >> 2) & 0b11);
    let tlvs =
        TlvOptions { crc32c: flags & 0x10 != 0, unique_id: (flags & 0x20 != 0).then(|| input.array()) };

    let mut out = [0; MAX_PROXY_HEADER_LEN];
    let len = write_proxy_header(&mut out, source, destination, tlvs)
        .expect("MAX_PROXY_HEADER_LEN fits every header");
    assert_eq!(len, proxy_header_len(source, destination, tlvs));
    let written = out.get(..len).expect("len is at most the buffer");

    let mut expected = Header::proxy(source, destination, tlvs);
    let (decoded, consumed) = Header::parse(written).expect("an encoded header decodes");
    assert_eq!(consumed, len);
    assert_eq!(decoded.checksum().is_some(), tlvs.crc32c);
    // `Header::proxy` carries a zero placeholder where the wire has the checksum.
    for tlv in &mut expected.tlvs {
        if tlv.kind == TlvKind::Crc32c {
            tlv.value = decoded.tlv(TlvKind::Crc32c).unwrap_or_default().to_vec();
        }
    }
    assert_eq!(decoded, expected);

    let mut emitted = vec![0; expected.buffer_len()];
    expected.emit(&mut emitted).expect("Header::proxy always emits");
    assert_eq!(emitted, written, "the two encoders disagree");

    let canonical = |address: SocketAddr| SocketAddr::new(address.ip().to_canonical(), address.port());
    let (decoded_source, decoded_destination) =
        decoded.proxied_endpoints().expect("a PROXY header with IP addresses");
    assert_eq!(canonical(decoded_source), canonical(source));
    assert_eq!(canonical(decoded_destination), canonical(destination));
}

/// Reads fuzz input, padding with zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let [byte] = self.array();
        byte
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut array = [0; N];
        let taken = self.0.len().min(N);
        let (head, rest) = self.0.split_at(taken);
        array.get_mut(..taken).expect("taken is at most N").copy_from_slice(head);
        self.0 = rest;
        array
    }

    /// An endpoint of the `shape` chosen by two flag bits: IPv4, IPv6, IPv4-mapped IPv6,
    /// or IPv6 again (so that genuine IPv6 is as likely as IPv4).
    fn endpoint(&mut self, shape: u8) -> SocketAddr {
        let ip = match shape {
            0 => IpAddr::V4(Ipv4Addr::from(self.array::<4>())),
            2 => IpAddr::V6(Ipv4Addr::from(self.array::<4>()).to_ipv6_mapped()),
            _ => IpAddr::V6(Ipv6Addr::from(self.array::<16>())),
        };
        SocketAddr::new(ip, u16::from_be_bytes(self.array()))
    }
}
