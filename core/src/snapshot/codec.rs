//! The snapshot's byte codec: little-endian integers, length-prefixed sequences, and a
//! [`Codec`] trait the state structs implement (mostly through [`codec_struct!`]).
//!
//! Every read is bounds-checked and names what it was reading and where; a sequence's length
//! is checked against the bytes left before anything is allocated (every element takes at
//! least one byte), so no input can make the decoder allocate more than its own length.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::SnapshotError;
use crate::id::{BackendId, ClusterId, FlowId, ListenerId, ProbeId};
use crate::time::Instant;

/// Appends to a snapshot.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) bytes: Vec<u8>,
}

impl Writer {
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// A section: its tag, its length (u32), then what `body` writes.
    pub(crate) fn section(&mut self, tag: u8, body: impl FnOnce(&mut Writer)) {
        self.bytes.push(tag);
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        body(self);
        let len = u32::try_from(self.bytes.len() - at - 4).expect("a section is under 4 GiB");
        self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// Reads a snapshot, or one section of it.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    /// Offset of `bytes[0]` in the whole snapshot (for error messages).
    base: usize,
    pos: usize,
    /// What is being read (the section's name).
    pub(crate) section: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], section: &'static str) -> Reader<'a> {
        Reader { bytes, base: 0, pos: 0, section }
    }

    /// The offset in the whole snapshot.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SnapshotError> {
        if self.remaining() < n {
            return Err(SnapshotError::Truncated {
                section: self.section,
                what,
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, SnapshotError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A sub-reader over the next `len` bytes, for a section named `section`.
    pub(crate) fn sub(&mut self, len: usize, section: &'static str) -> Result<Reader<'a>, SnapshotError> {
        let base = self.offset();
        let bytes = self.take(len, "section body")?;
        Ok(Reader { bytes, base, pos: 0, section })
    }

    /// A value that cannot be: `what` held something no snapshot writes.
    pub(crate) fn invalid(&self, what: &'static str) -> SnapshotError {
        SnapshotError::InvalidValue { section: self.section, what, offset: self.offset() }
    }

    /// A sequence length, checked against the bytes left (every element takes at least one).
    pub(crate) fn len(&mut self, what: &'static str) -> Result<usize, SnapshotError> {
        let offset = self.offset();
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(SnapshotError::BadLength {
                section: self.section,
                what,
                offset,
                length: len,
                available: self.remaining(),
            });
        }
        Ok(len as usize)
    }

    /// Everything was read.
    pub(crate) fn finish(&self) -> Result<(), SnapshotError> {
        if self.remaining() != 0 {
            return Err(SnapshotError::TrailingBytes {
                section: self.section,
                offset: self.offset(),
                extra: self.remaining(),
            });
        }
        Ok(())
    }
}

/// A value the snapshot writes and reads back exactly.
pub(crate) trait Codec: Sized {
    fn put(&self, w: &mut Writer);
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError>;
}

/// `impl Codec` for a struct, field by field in the order given (all of them: a field left
/// out does not compile). Invoke it next to the struct, where its fields are visible.
macro_rules! codec_struct {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $crate::snapshot::Codec for $ty {
            fn put(&self, w: &mut $crate::snapshot::Writer) {
                let $ty { $($field),* } = self;
                $( $crate::snapshot::Codec::put($field, w); )*
            }
            fn get(r: &mut $crate::snapshot::Reader<'_>) -> Result<Self, $crate::snapshot::SnapshotError> {
                Ok($ty { $( $field: $crate::snapshot::Codec::get(r)?, )* })
            }
        }
    };
}
pub(crate) use codec_struct;

/// `impl Codec` for a fieldless enum, one byte per variant (in the order given).
macro_rules! codec_unit_enum {
    ($ty:ident { $($variant:ident),* $(,)? }) => {
        impl $crate::snapshot::Codec for $ty {
            fn put(&self, w: &mut $crate::snapshot::Writer) {
                let all = [$($ty::$variant),*];
                let index = all.iter().position(|v| v == self).expect("every variant is listed");
                w.bytes.push(index as u8);
            }
            fn get(r: &mut $crate::snapshot::Reader<'_>) -> Result<Self, $crate::snapshot::SnapshotError> {
                let all = [$($ty::$variant),*];
                let index = r.u8(stringify!($ty))?;
                all.get(usize::from(index)).copied().ok_or_else(|| r.invalid(stringify!($ty)))
            }
        }
    };
}
pub(crate) use codec_unit_enum;

macro_rules! codec_int {
    ($($ty:ty),*) => {$(
        impl Codec for $ty {
            fn put(&self, w: &mut Writer) {
                w.raw(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
                Ok(<$ty>::from_le_bytes(r.array(stringify!($ty))?))
            }
        }
    )*};
}
codec_int!(u8, u16, u32, u64, i64);

impl Codec for usize {
    fn put(&self, w: &mut Writer) {
        (*self as u64).put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let value = r.u64("usize")?;
        usize::try_from(value).map_err(|_| r.invalid("usize"))
    }
}

impl Codec for bool {
    fn put(&self, w: &mut Writer) {
        w.bytes.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("bool")? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(r.invalid("bool")),
        }
    }
}

impl Codec for Instant {
    fn put(&self, w: &mut Writer) {
        self.as_nanos().put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        Ok(Instant::from_nanos(r.u64("instant")?))
    }
}

impl Codec for Duration {
    fn put(&self, w: &mut Writer) {
        self.as_secs().put(w);
        self.subsec_nanos().put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let secs = r.u64("duration")?;
        let nanos = r.u32("duration")?;
        if nanos >= 1_000_000_000 {
            return Err(r.invalid("duration nanoseconds"));
        }
        Ok(Duration::new(secs, nanos))
    }
}

impl<T: Codec> Codec for Option<T> {
    fn put(&self, w: &mut Writer) {
        match self {
            None => w.bytes.push(0),
            Some(value) => {
                w.bytes.push(1);
                value.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("option")? {
            0 => Ok(None),
            1 => Ok(Some(T::get(r)?)),
            _ => Err(r.invalid("option tag")),
        }
    }
}

impl<T: Codec> Codec for Box<T> {
    fn put(&self, w: &mut Writer) {
        (**self).put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        Ok(Box::new(T::get(r)?))
    }
}

impl<T: Codec, const N: usize> Codec for [T; N] {
    fn put(&self, w: &mut Writer) {
        self.iter().for_each(|value| value.put(w));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let mut values = Vec::with_capacity(N.min(r.remaining()));
        for _ in 0..N {
            values.push(T::get(r)?);
        }
        Ok(values.try_into().unwrap_or_else(|_| unreachable!("exactly N values")))
    }
}

macro_rules! codec_tuple {
    ($(($($name:ident $index:tt),*)),*) => {$(
        impl<$($name: Codec),*> Codec for ($($name,)*) {
            fn put(&self, w: &mut Writer) {
                $( self.$index.put(w); )*
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
                Ok(($($name::get(r)?,)*))
            }
        }
    )*};
}
codec_tuple!((A 0, B 1), (A 0, B 1, C 2), (A 0, B 1, C 2, D 3));

impl<T: Codec> Codec for Vec<T> {
    fn put(&self, w: &mut Writer) {
        self.len().put(w);
        self.iter().for_each(|value| value.put(w));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let len = r.len("sequence length")?;
        let mut values = Vec::with_capacity(len);
        for _ in 0..len {
            values.push(T::get(r)?);
        }
        Ok(values)
    }
}

impl<T: Codec> Codec for VecDeque<T> {
    fn put(&self, w: &mut Writer) {
        self.len().put(w);
        self.iter().for_each(|value| value.put(w));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        Ok(Vec::get(r)?.into())
    }
}

impl<K: Codec + Ord, V: Codec> Codec for BTreeMap<K, V> {
    fn put(&self, w: &mut Writer) {
        self.len().put(w);
        self.iter().for_each(|(k, v)| {
            k.put(w);
            v.put(w);
        });
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let len = r.len("map length")?;
        let mut map = BTreeMap::new();
        for _ in 0..len {
            let key = K::get(r)?;
            let value = V::get(r)?;
            // Keys are written in order: anything else is not a snapshot this code wrote.
            if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return Err(r.invalid("map keys out of order"));
            }
            map.insert(key, value);
        }
        Ok(map)
    }
}

impl<K: Codec + Ord> Codec for BTreeSet<K> {
    fn put(&self, w: &mut Writer) {
        self.len().put(w);
        self.iter().for_each(|k| k.put(w));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let len = r.len("set length")?;
        let mut set = BTreeSet::new();
        for _ in 0..len {
            let key = K::get(r)?;
            if set.last().is_some_and(|last| *last >= key) {
                return Err(r.invalid("set keys out of order"));
            }
            set.insert(key);
        }
        Ok(set)
    }
}

impl Codec for IpAddr {
    fn put(&self, w: &mut Writer) {
        match self {
            IpAddr::V4(v4) => {
                w.bytes.push(4);
                w.raw(&v4.octets());
            }
            IpAddr::V6(v6) => {
                w.bytes.push(6);
                w.raw(&v6.octets());
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        match r.u8("address family")? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(r.array::<4>("IPv4 address")?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(r.array::<16>("IPv6 address")?))),
            _ => Err(r.invalid("address family")),
        }
    }
}

impl Codec for SocketAddr {
    fn put(&self, w: &mut Writer) {
        self.ip().put(w);
        self.port().put(w);
        if let SocketAddr::V6(v6) = self {
            v6.flowinfo().put(w);
            v6.scope_id().put(w);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        let ip = IpAddr::get(r)?;
        let port = u16::get(r)?;
        Ok(match ip {
            IpAddr::V4(v4) => SocketAddr::from((v4, port)),
            IpAddr::V6(v6) => {
                let flowinfo = u32::get(r)?;
                let scope = u32::get(r)?;
                SocketAddr::V6(std::net::SocketAddrV6::new(v6, port, flowinfo, scope))
            }
        })
    }
}

macro_rules! codec_newtype {
    ($($ty:ident($inner:ty)),*) => {$(
        impl Codec for $ty {
            fn put(&self, w: &mut Writer) {
                self.0.put(w);
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
                Ok($ty(<$inner>::get(r)?))
            }
        }
    )*};
}
codec_newtype!(ListenerId(u32), ClusterId(u32), BackendId(u32), ProbeId(u64));

impl Codec for FlowId {
    fn put(&self, w: &mut Writer) {
        self.slot.put(w);
        self.serial.put(w);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, SnapshotError> {
        Ok(FlowId { slot: u32::get(r)?, serial: u64::get(r)? })
    }
}
