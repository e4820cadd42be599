//! `quic_lb_decode`: the QUIC-LB router and decoders against arbitrary datagrams.

use crate::quic_lb::{QuicLbConfig, QuicLbConfigs, Route, Unroutable};

/// Octets that describe one config at the start of the input: flags and config ID, server
/// ID length, nonce length, key seed.
const CONFIG_OCTETS: usize = 4;

/// The first octet says how many configs follow (0 to 7), each in four octets: flags with
/// the config ID in the low three bits, then server ID length and nonce length (taken
/// modulo 16 and 20, so most are valid and some are not), then a key seed. Flag 0x80 gives
/// the config a key: with flag 0x40 too, the key is the 16 octets that follow (so the seed
/// corpus can hold the draft's vectors), otherwise it is spread from the seed octet. A
/// config that fails validation, or a duplicate ID, ends the run. The rest of the input is
/// the datagram.
///
/// Promises checked: nothing panics; `route` agrees with a plain re-reading of the
/// invariant header written here from RFC 8999; a server ID that comes out has the
/// config's length; decoding with the nonce and encoding the result again (with the same
/// first octet) gives the connection ID's octets back; each config's `decode` agrees with
/// `decode_with_nonce` on the raw datagram.
pub fn quic_lb_decode(data: &[u8]) {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut configs = Vec::new();
    for _ in 0..count % 8 {
        let Some((&[flags, sid_len, nonce_len, seed], tail)) = rest.split_first_chunk::<CONFIG_OCTETS>()
        else {
            return;
        };
        rest = tail;
        let key = match flags & 0xc0 {
            0xc0 => {
                let Some((key, tail)) = rest.split_first_chunk::<16>() else {
                    return;
                };
                rest = tail;
                Some(*key)
            }
            0x80 => Some(spread_key(seed)),
            _ => None,
        };
        let Ok(config) = QuicLbConfig::new(flags & 0x07, sid_len % 16, nonce_len % 20, key) else {
            return;
        };
        configs.push(config);
    }
    let Ok(set) = QuicLbConfigs::new(configs.clone()) else {
        return;
    };
    let datagram = rest;

    let route = set.route(datagram);
    assert_eq!(route, set.route(datagram), "route is not a function of its input");
    assert_eq!(route, reference_route(&set, datagram), "route disagrees with the reference reading");
    if let Route::Server(server_id) = route {
        let (config, dcid) = set.locate(datagram).expect("a routed datagram has a DCID");
        assert_eq!(server_id.as_bytes().len(), config.server_id_len());
        assert_reencodes(config, dcid);
    }

    for config in &configs {
        let decoded = config.decode(datagram);
        match config.decode_with_nonce(datagram) {
            Ok((server_id, _)) => {
                assert_eq!(decoded, Ok(server_id), "the three-pass shortcut disagrees with four passes");
                assert_reencodes(config, datagram);
            }
            Err(error) => assert_eq!(decoded, Err(error)),
        }
    }
}

/// A 16-octet key from one seed octet (the fuzzer needs to find only one).
fn spread_key(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add((i as u8).wrapping_mul(97)))
}

/// Decoding `cid` with its nonce and encoding the two again, with the same first octet,
/// gives `cid`'s first `cid_len` octets back.
fn assert_reencodes(config: &QuicLbConfig, cid: &[u8]) {
    let (server_id, nonce) = config.decode_with_nonce(cid).expect("decodes");
    let again = config.encode(&server_id, nonce.as_bytes(), cid[0], false).expect("re-encodes");
    assert_eq!(again.as_bytes(), &cid[..config.cid_len()], "decode then encode changed the connection ID");
}

/// The routing rules re-read from RFC 8999 and the module documentation, written as
/// plainly as possible, to check `QuicLbConfigs::route` against.
fn reference_route(set: &QuicLbConfigs, datagram: &[u8]) -> Route {
    let unroutable = Route::Unroutable;
    if datagram.is_empty() {
        return unroutable(Unroutable::NotQuic);
    }
    let dcid = if datagram[0] >= 0x80 {
        if datagram.len() < 6 {
            return unroutable(Unroutable::NotQuic);
        }
        let version = u32::from_be_bytes([datagram[1], datagram[2], datagram[3], datagram[4]]);
        let known = version == 1 || version == 0x6b33_43cf;
        let dcid_len = datagram[5] as usize;
        if version == 0 || (known && dcid_len > 20) || datagram.len() < 6 + dcid_len + 1 {
            return unroutable(Unroutable::NotQuic);
        }
        let scid_len = datagram[6 + dcid_len] as usize;
        if (known && scid_len > 20) || datagram.len() < 6 + dcid_len + 1 + scid_len {
            return unroutable(Unroutable::NotQuic);
        }
        &datagram[6..6 + dcid_len]
    } else {
        &datagram[1..]
    };
    if dcid.is_empty() {
        return unroutable(Unroutable::TooShort);
    }
    let bits = dcid[0] >> 5;
    let Some(config) = set.get(bits) else {
        return unroutable(Unroutable::UnknownConfig(bits));
    };
    if dcid.len() < config.cid_len() {
        return unroutable(Unroutable::TooShort);
    }
    match config.decode(&dcid[..config.cid_len()]) {
        Ok(server_id) => Route::Server(server_id),
        Err(error) => panic!("a DCID of the right length and config did not decode: {error}"),
    }
}
