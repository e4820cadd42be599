//! Cross-check with the independent `ppp` crate (v2 module): it must read our headers as we
//! do, and we must read the headers it builds as it does.
//!
//! One known difference is asserted rather than hidden: for AF_UNSPEC, `ppp` counts the
//! whole payload as address bytes and finds no TLVs, while this codec (like HAProxy's
//! sender, which appends TLVs to its LOCAL headers) reads an empty address block followed
//! by TLVs. PPv2 §2.2 gives AF_UNSPEC no address format, so an empty block is the reading
//! that lets LOCAL health probes carry a checksum.

use std::net::SocketAddr;

use ppp::v2 as theirs;
use proptest::prelude::*;

use super::properties::strategies::{addresses, endpoint, header, tlv, tlv_options};
use super::{TLV_COMBINATIONS, client_v4, client_v6, emit, encode, vip_v4, vip_v6};
use crate::proxy_v2::{
    Addresses, Command, Header, MAX_PROXY_HEADER_LEN, Tlv, TlvOptions, Transport, write_local_header,
};

/// Asserts that `ppp` reads `bytes` as `ours` (which this codec decoded from them).
fn assert_ppp_agrees(bytes: &[u8], ours: &Header) {
    let header = theirs::Header::try_from(bytes).expect("ppp accepts the header");
    assert_eq!(header.len(), ours.buffer_len(), "header length");

    let command = match ours.command {
        Command::Local => theirs::Command::Local,
        Command::Proxy => theirs::Command::Proxy,
    };
    assert_eq!(header.command, command);
    let protocol = match ours.transport {
        Transport::Unspec => theirs::Protocol::Unspecified,
        Transport::Stream => theirs::Protocol::Stream,
        Transport::Dgram => theirs::Protocol::Datagram,
    };
    assert_eq!(header.protocol, protocol);

    match (&ours.addresses, header.addresses) {
        (Addresses::Unspec, theirs::Addresses::Unspecified) => {}
        (Addresses::Ipv4 { source, destination }, theirs::Addresses::IPv4(addresses)) => {
            assert_eq!(*source.ip(), addresses.source_address);
            assert_eq!(source.port(), addresses.source_port);
            assert_eq!(*destination.ip(), addresses.destination_address);
            assert_eq!(destination.port(), addresses.destination_port);
        }
        (Addresses::Ipv6 { source, destination }, theirs::Addresses::IPv6(addresses)) => {
            assert_eq!(*source.ip(), addresses.source_address);
            assert_eq!(source.port(), addresses.source_port);
            assert_eq!(*destination.ip(), addresses.destination_address);
            assert_eq!(destination.port(), addresses.destination_port);
        }
        (Addresses::Unix { source, destination }, theirs::Addresses::Unix(addresses)) => {
            assert_eq!(*source, addresses.source);
            assert_eq!(*destination, addresses.destination);
        }
        (ours, theirs) => panic!("addresses differ: ours {ours:?}, ppp {theirs:?}"),
    }

    let our_tlvs: Vec<(u8, Vec<u8>)> =
        ours.tlvs.iter().map(|tlv| (tlv.kind.byte(), tlv.value.clone())).collect();
    if ours.addresses == Addresses::Unspec {
        // The known difference: ppp takes the whole AF_UNSPEC payload as address bytes.
        assert_eq!(header.tlvs().count(), 0);
        let our_tlv_bytes = bytes.get(16..ours.buffer_len()).expect("whole header");
        assert_eq!(header.address_bytes(), our_tlv_bytes);
        let reparsed: Vec<(u8, Vec<u8>)> = theirs::TypeLengthValues::from(our_tlv_bytes)
            .map(|tlv| tlv.map(|tlv| (tlv.kind, tlv.value.to_vec())))
            .collect::<Result<_, _>>()
            .expect("ppp reads the TLV bytes when pointed at them");
        assert_eq!(reparsed, our_tlvs);
    } else {
        let their_tlvs: Vec<(u8, Vec<u8>)> = header
            .tlvs()
            .map(|tlv| tlv.map(|tlv| (tlv.kind, tlv.value.to_vec())))
            .collect::<Result<_, _>>()
            .expect("ppp reads the TLVs");
        assert_eq!(their_tlvs, our_tlvs);
    }
}

fn decode_and_compare(bytes: &[u8]) {
    let (ours, consumed) = Header::parse(bytes).expect("valid header");
    assert_eq!(consumed, bytes.len());
    assert_ppp_agrees(bytes, &ours);
}

#[test]
fn ppp_reads_the_byte_exact_examples_as_we_do() {
    let pairs = [(client_v4(), vip_v4()), (client_v6(), vip_v6()), (client_v4(), vip_v6())];
    for (client, vip) in pairs {
        for tlvs in TLV_COMBINATIONS {
            decode_and_compare(&encode(client, vip, tlvs));
        }
    }
    for tlvs in TLV_COMBINATIONS {
        let mut out = [0; MAX_PROXY_HEADER_LEN];
        let len = write_local_header(&mut out, tlvs).expect("fits");
        decode_and_compare(&out[..len]);
    }
}

#[test]
fn we_read_a_ppp_built_header_as_ppp_does() {
    let addresses: theirs::Addresses = (client_v4(), vip_v4()).into();
    let bytes = theirs::Builder::with_addresses(
        theirs::Version::Two | theirs::Command::Proxy,
        theirs::Protocol::Datagram,
        addresses,
    )
    .write_tlv(theirs::Type::UniqueId, b"flow-1")
    .and_then(|builder| builder.write_tlv(theirs::Type::NoOp, &[0; 3]))
    .and_then(theirs::Builder::build)
    .expect("ppp builds the header");
    decode_and_compare(&bytes);
    let (ours, _) = Header::parse(&bytes).expect("valid header");
    assert_eq!(ours.proxied_endpoints(), Some((client_v4(), vip_v4())));
    assert_eq!(emit(&ours), bytes);
}

/// The `ppp` view of our IP addresses, for its builder.
fn ppp_addresses(addresses: &Addresses) -> theirs::Addresses {
    match *addresses {
        Addresses::Unspec => theirs::Addresses::Unspecified,
        Addresses::Ipv4 { source, destination } => {
            (SocketAddr::from(source), SocketAddr::from(destination)).into()
        }
        Addresses::Ipv6 { source, destination } => {
            (SocketAddr::from(source), SocketAddr::from(destination)).into()
        }
        Addresses::Unix { source, destination } => theirs::Unix::new(source, destination).into(),
    }
}

proptest! {
    #[test]
    fn ppp_agrees_on_encoded_headers(
        source in endpoint(),
        destination in endpoint(),
        tlvs in tlv_options(),
    ) {
        decode_and_compare(&encode(source, destination, tlvs));
    }

    #[test]
    fn ppp_agrees_on_emitted_headers(header in header()) {
        decode_and_compare(&emit(&header));
    }

    #[test]
    fn we_agree_with_ppp_on_the_headers_it_builds(
        command in prop::sample::select(vec![theirs::Command::Local, theirs::Command::Proxy]),
        protocol in prop::sample::select(vec![
            theirs::Protocol::Unspecified,
            theirs::Protocol::Stream,
            theirs::Protocol::Datagram,
        ]),
        addresses in addresses(),
        tlvs in prop::collection::vec(tlv(), 0..6),
    ) {
        let mut builder = theirs::Builder::with_addresses(
            theirs::Version::Two | command,
            protocol,
            ppp_addresses(&addresses),
        );
        for Tlv { kind, value } in &tlvs {
            builder = builder.write_tlv(kind.byte(), value).expect("ppp writes the TLV");
        }
        let bytes = builder.build().expect("ppp builds the header");
        let (ours, consumed) = Header::parse(&bytes).expect("we read what ppp builds");
        prop_assert_eq!(consumed, bytes.len());
        prop_assert_eq!(&ours.addresses, &addresses);
        prop_assert_eq!(&ours.tlvs, &tlvs);
        assert_ppp_agrees(&bytes, &ours);
        prop_assert_eq!(emit(&ours), bytes);
    }
}

#[test]
fn ppp_reads_a_local_header_without_tlvs_as_we_do() {
    decode_and_compare(&emit(&Header::local(TlvOptions::default())));
}
