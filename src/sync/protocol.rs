//! PyTorch's TCPStore wire protocol, as torch 2.x clients and its libuv server speak it
//! (`torch/csrc/distributed/c10d/TCPStore.cpp`, `TCPStoreLibUvBackend.cpp`).
//!
//! A connection starts with the validation handshake: the byte `VALIDATE` and the magic number
//! `0x3C85F7CE` (little-endian `u32`), with no answer. Then each request is a query byte and its
//! arguments, little-endian: a key or a value is a `u64` length and that many bytes, a list of
//! keys a `u64` count and the keys. The answers:
//!
//! | query | arguments | answer |
//! |---|---|---|
//! | `SET` (1) | key, value | none |
//! | `COMPARE_SET` (2) | key, expected, desired | the value now stored (see [`compare_set`](super::TcpStore::compare_set)) |
//! | `GET` (3) | key | the value (empty when missing) |
//! | `ADD` (4) | key, `i64` | the new `i64` (values are decimal text) |
//! | `CHECK` (5) | keys | `u8`: 0 all present, 1 not |
//! | `WAIT` (6) | keys | `u8` 0 (`STOP_WAITING`) once all are present |
//! | `GETNUMKEYS` (7) | | `i64` |
//! | `DELETE_KEY` (8) | key | `i64`: 1 deleted, 0 missing |
//! | `APPEND` (9) | key, value | none |
//! | `MULTI_GET` (10) | keys | one value per key |
//! | `MULTI_SET` (11) | `u64` count, then key, value pairs | none |
//! | `CANCEL_WAIT` (12) | | `u8` 1 (`WAIT_CANCELED`), after a `STOP_WAITING` if the wait had just ended |
//! | `PING` (13) | `u32` nonce | the nonce |
//!
//! A `torch.distributed.TCPStore` client adds `/` in front of every key (and a `PrefixStore`
//! its prefix and `/` before that), so Python's `store.get("k")` reads the key `/k`.

use std::io::{self, Read};

use super::limits::{MAX_KEY_LEN, MAX_KEYS_PER_REQUEST, MAX_VALUE_LEN};

/// The magic number of the validation handshake.
pub(crate) const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;

/// The query bytes.
pub(crate) mod query {
    pub const VALIDATE: u8 = 0;
    pub const SET: u8 = 1;
    pub const COMPARE_SET: u8 = 2;
    pub const GET: u8 = 3;
    pub const ADD: u8 = 4;
    pub const CHECK: u8 = 5;
    pub const WAIT: u8 = 6;
    pub const GETNUMKEYS: u8 = 7;
    pub const DELETE_KEY: u8 = 8;
    pub const APPEND: u8 = 9;
    pub const MULTI_GET: u8 = 10;
    pub const MULTI_SET: u8 = 11;
    pub const CANCEL_WAIT: u8 = 12;
    pub const PING: u8 = 13;
}

/// `CHECK`'s answer when every key is present.
pub(crate) const READY: u8 = 0;
/// `CHECK`'s answer when a key is missing.
pub(crate) const NOT_READY: u8 = 1;
/// `WAIT`'s answer once every key is present.
pub(crate) const STOP_WAITING: u8 = 0;
/// `CANCEL_WAIT`'s answer.
pub(crate) const WAIT_CANCELED: u8 = 1;

/// The bytes a request is made of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Message(pub Vec<u8>);

impl Message {
    /// A request that starts with `query`.
    pub(crate) fn query(query: u8) -> Message {
        Message(vec![query])
    }
    pub(crate) fn u32(mut self, v: u32) -> Message {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Message {
        self.0.extend(v.to_le_bytes());
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> Message {
        self.0.extend(v.to_le_bytes());
        self
    }
    /// A key or a value: its length as `u64`, then its bytes.
    pub(crate) fn bytes(mut self, v: &[u8]) -> Message {
        self.0.extend((v.len() as u64).to_le_bytes());
        self.0.extend(v);
        self
    }
    /// A list of keys: their count as `u64`, then each key.
    pub(crate) fn keys<K: AsRef<[u8]>>(self, keys: &[K]) -> Message {
        keys.iter().fold(self.u64(keys.len() as u64), |m, k| m.bytes(k.as_ref()))
    }
}

fn bad(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Reads the fixed-size fields of the protocol.
pub(crate) fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// A `u8`.
pub(crate) fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    Ok(read_array::<1>(r)?[0])
}

/// A little-endian `u32`.
pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    Ok(u32::from_le_bytes(read_array(r)?))
}

/// A little-endian `u64`.
pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    Ok(u64::from_le_bytes(read_array(r)?))
}

/// A little-endian `i64`.
pub(crate) fn read_i64(r: &mut impl Read) -> io::Result<i64> {
    Ok(i64::from_le_bytes(read_array(r)?))
}

/// A length-prefixed byte string of at most `max` bytes. A longer announced length is an error
/// before anything is allocated, and the buffer grows only as the bytes actually arrive (a peer
/// that announces `max` bytes and sends none costs nothing). `charge` is told of each growth and
/// may refuse it (the store's memory budget).
pub(crate) fn read_bytes(
    r: &mut impl Read,
    max: usize,
    what: &str,
    charge: &mut impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let len = read_u64(r)?;
    if len > max as u64 {
        return Err(bad(format!("{what} of {len} bytes announced, more than the {max} allowed")));
    }
    let len = len as usize;
    const STEP: usize = 64 * 1024;
    let mut out = Vec::new();
    while out.len() < len {
        let step = STEP.min(len - out.len());
        charge(step)?;
        let at = out.len();
        out.resize(at + step, 0);
        r.read_exact(&mut out[at..])?;
    }
    Ok(out)
}

/// A key (at most [`MAX_KEY_LEN`] bytes).
pub(crate) fn read_key(r: &mut impl Read, charge: &mut impl FnMut(usize) -> io::Result<()>) -> io::Result<Vec<u8>> {
    read_bytes(r, MAX_KEY_LEN, "a key", charge)
}

/// A value (at most [`MAX_VALUE_LEN`] bytes).
pub(crate) fn read_value(r: &mut impl Read, charge: &mut impl FnMut(usize) -> io::Result<()>) -> io::Result<Vec<u8>> {
    read_bytes(r, MAX_VALUE_LEN, "a value", charge)
}

/// A count of keys (at most [`MAX_KEYS_PER_REQUEST`]).
pub(crate) fn read_count(r: &mut impl Read) -> io::Result<usize> {
    let n = read_u64(r)?;
    if n > MAX_KEYS_PER_REQUEST as u64 {
        return Err(bad(format!("a request names {n} keys, more than the {MAX_KEYS_PER_REQUEST} allowed")));
    }
    Ok(n as usize)
}

/// A list of keys.
pub(crate) fn read_keys(
    r: &mut impl Read,
    charge: &mut impl FnMut(usize) -> io::Result<()>,
) -> io::Result<Vec<Vec<u8>>> {
    let n = read_count(r)?;
    let mut keys = Vec::new();
    for _ in 0..n {
        keys.push(read_key(r, charge)?);
    }
    Ok(keys)
}

/// A request, as the server reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// `SET`.
    Set(Vec<u8>, Vec<u8>),
    /// `COMPARE_SET`: key, expected, desired.
    CompareSet(Vec<u8>, Vec<u8>, Vec<u8>),
    /// `GET`.
    Get(Vec<u8>),
    /// `ADD`.
    Add(Vec<u8>, i64),
    /// `CHECK`.
    Check(Vec<Vec<u8>>),
    /// `WAIT`.
    Wait(Vec<Vec<u8>>),
    /// `GETNUMKEYS`.
    NumKeys,
    /// `DELETE_KEY`.
    Delete(Vec<u8>),
    /// `APPEND`.
    Append(Vec<u8>, Vec<u8>),
    /// `MULTI_GET`.
    MultiGet(Vec<Vec<u8>>),
    /// `MULTI_SET`.
    MultiSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// `CANCEL_WAIT`.
    CancelWait,
    /// `PING`.
    Ping(u32),
}

impl Request {
    /// Reads the request that starts with the query byte `q` (already read). A query this
    /// store does not serve, or a length beyond the limits, is an error.
    pub(crate) fn read(
        q: u8,
        r: &mut impl Read,
        charge: &mut impl FnMut(usize) -> io::Result<()>,
    ) -> io::Result<Request> {
        Ok(match q {
            query::SET => Request::Set(read_key(r, charge)?, read_value(r, charge)?),
            query::COMPARE_SET => {
                Request::CompareSet(read_key(r, charge)?, read_value(r, charge)?, read_value(r, charge)?)
            }
            query::GET => Request::Get(read_key(r, charge)?),
            query::ADD => Request::Add(read_key(r, charge)?, read_i64(r)?),
            query::CHECK => Request::Check(read_keys(r, charge)?),
            query::WAIT => Request::Wait(read_keys(r, charge)?),
            query::GETNUMKEYS => Request::NumKeys,
            query::DELETE_KEY => Request::Delete(read_key(r, charge)?),
            query::APPEND => Request::Append(read_key(r, charge)?, read_value(r, charge)?),
            query::MULTI_GET => Request::MultiGet(read_keys(r, charge)?),
            query::MULTI_SET => {
                let n = read_count(r)?;
                let mut pairs = Vec::new();
                for _ in 0..n {
                    pairs.push((read_key(r, charge)?, read_value(r, charge)?));
                }
                Request::MultiSet(pairs)
            }
            query::CANCEL_WAIT => Request::CancelWait,
            query::PING => Request::Ping(read_u32(r)?),
            query::VALIDATE => return Err(bad("a second validation handshake".into())),
            other => return Err(bad(format!("query {other} is not served by this store"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(_: usize) -> io::Result<()> {
        Ok(())
    }

    #[test]
    fn requests_read_back_as_written() {
        let cases = [
            (Message::query(query::SET).bytes(b"/k").bytes(b"v"), Request::Set(b"/k".to_vec(), b"v".to_vec())),
            (
                Message::query(query::COMPARE_SET).bytes(b"k").bytes(b"").bytes(b"x"),
                Request::CompareSet(b"k".to_vec(), vec![], b"x".to_vec()),
            ),
            (Message::query(query::ADD).bytes(b"n").i64(-3), Request::Add(b"n".to_vec(), -3)),
            (Message::query(query::WAIT).keys(&["a", "b"]), Request::Wait(vec![b"a".to_vec(), b"b".to_vec()])),
            (
                Message::query(query::MULTI_SET).u64(1).bytes(b"a").bytes(b"1"),
                Request::MultiSet(vec![(b"a".to_vec(), b"1".to_vec())]),
            ),
            (Message::query(query::PING).u32(77), Request::Ping(77)),
            (Message::query(query::CANCEL_WAIT), Request::CancelWait),
        ];
        for (m, expected) in cases {
            let mut r = &m.0[1..];
            assert_eq!(Request::read(m.0[0], &mut r, &mut free).unwrap(), expected);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn lengths_beyond_the_limits_are_refused_before_any_allocation() {
        let huge = Message::query(query::SET).u64(1 << 62);
        assert!(Request::read(query::SET, &mut &huge.0[1..], &mut free).is_err());
        let many = Message::query(query::WAIT).u64(u64::MAX);
        assert!(Request::read(query::WAIT, &mut &many.0[1..], &mut free).is_err());
        // A value of the largest size announced but not sent: an error once the stream ends,
        // having allocated no more than what arrived.
        let mut charged = 0;
        let mut short = Message::query(query::SET).bytes(b"k").u64(MAX_VALUE_LEN as u64);
        short.0.push(1);
        let e = Request::read(query::SET, &mut &short.0[1..], &mut |n| {
            charged += n;
            Ok(())
        });
        assert!(e.is_err());
        assert!(charged <= 64 * 1024 + 1, "{charged}"); // the key, then one step of the value
        assert!(Request::read(99, &mut &[][..], &mut free).is_err());
        assert!(Request::read(query::VALIDATE, &mut &[][..], &mut free).is_err());
    }

    #[test]
    fn the_charge_can_refuse() {
        let m = Message::query(query::SET).bytes(b"k").bytes(&[0; 100]);
        let e = Request::read(query::SET, &mut &m.0[1..], &mut |_| Err(io::Error::other("full"))).unwrap_err();
        assert_eq!(e.to_string(), "full");
    }
}
