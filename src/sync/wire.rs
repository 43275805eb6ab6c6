//! The TCP store's messages and how they travel: each message is a little-endian `u32` length
//! followed by that many bytes, a tag byte first.

use std::io::{self, Read, Write};

/// The largest message accepted (a histogram of 2^20 bins from 64 ranks is 512 MiB; the
/// all-reduce of one rank is at most 8 MiB).
const MAX_MESSAGE: u32 = 1 << 30;

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The first message of a connection: who is calling.
    Hello { rank: u32, world: u32 },
    /// Stores `value` under `key` (replacing an earlier value).
    Set { key: String, value: Vec<u8> },
    /// The values of `keys`, once all are set; waits at most `timeout_ms`.
    Wait { keys: Vec<String>, timeout_ms: u64 },
    /// Forgets `key`.
    Delete { key: String },
    /// The rank is done with the store: its connection closing next is not a failure. `failure`
    /// is empty when the rank finished well, else why it stopped (the other ranks' waits then
    /// fail at once with that reason).
    Bye { failure: String },
}

/// The store's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Response {
    /// Done.
    Ok,
    /// The values of a [`Request::Wait`], in the order of its keys.
    Values(Vec<Vec<u8>>),
    /// A [`Request::Wait`] timed out: the indices of the keys still missing.
    TimedOut(Vec<u32>),
    /// A [`Request::Wait`] cannot complete: this rank's connection closed before it said goodbye.
    RankLost(u32),
    /// A [`Request::Wait`] cannot complete: this rank stopped after a failure, for this reason.
    RankFailed(u32, String),
    /// The request was refused, and why.
    Refused(String),
}

/// Writes one message.
fn write_message(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).ok().filter(|&l| l <= MAX_MESSAGE).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("a store message of {} bytes is too large", body.len()))
    })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// Reads one message; `Ok(None)` when the peer closed the connection between messages.
fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_MESSAGE {
        return Err(bad(format!("a store message announces {len} bytes, more than {MAX_MESSAGE}")));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// Builds a message body.
#[derive(Default)]
struct Encoder(Vec<u8>);

impl Encoder {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn bytes(self, v: &[u8]) -> Self {
        let mut e = self.u32(v.len() as u32);
        e.0.extend(v);
        e
    }
}

/// Reads a message body.
struct Decoder<'a>(&'a [u8]);

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("a store message is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| bad("a store key is not UTF-8"))
    }
    /// A count of items that each take at least `min_size` bytes (so that a corrupt count
    /// cannot allocate much).
    fn count(&mut self, min_size: usize) -> io::Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.0.len() {
            return Err(bad("a store message is truncated"));
        }
        Ok(n)
    }
    fn end(self) -> io::Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(bad("a store message has trailing bytes")) }
    }
}

impl Request {
    /// Sends the request.
    pub(crate) fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let e = Encoder::default();
        let e = match self {
            Request::Hello { rank, world } => e.u8(1).u32(*rank).u32(*world),
            Request::Set { key, value } => e.u8(2).bytes(key.as_bytes()).bytes(value),
            Request::Wait { keys, timeout_ms } => {
                keys.iter().fold(e.u8(3).u64(*timeout_ms).u32(keys.len() as u32), |e, k| e.bytes(k.as_bytes()))
            }
            Request::Delete { key } => e.u8(4).bytes(key.as_bytes()),
            Request::Bye { failure } => e.u8(5).bytes(failure.as_bytes()),
        };
        write_message(w, &e.0)
    }

    /// Receives a request; `Ok(None)` when the client closed the connection.
    pub(crate) fn read(r: &mut impl Read) -> io::Result<Option<Request>> {
        let Some(body) = read_message(r)? else { return Ok(None) };
        let mut d = Decoder(&body);
        let request = match d.u8()? {
            1 => Request::Hello { rank: d.u32()?, world: d.u32()? },
            2 => Request::Set { key: d.string()?, value: d.bytes()? },
            3 => {
                let timeout_ms = d.u64()?;
                let n = d.count(4)?;
                Request::Wait { keys: (0..n).map(|_| d.string()).collect::<io::Result<_>>()?, timeout_ms }
            }
            4 => Request::Delete { key: d.string()? },
            5 => Request::Bye { failure: String::from_utf8_lossy(&d.bytes()?).into_owned() },
            tag => return Err(bad(format!("unknown store request {tag}"))),
        };
        d.end()?;
        Ok(Some(request))
    }
}

impl Response {
    /// Sends the response.
    pub(crate) fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let e = Encoder::default();
        let e = match self {
            Response::Ok => e.u8(0),
            Response::Values(values) => values.iter().fold(e.u8(1).u32(values.len() as u32), |e, v| e.bytes(v)),
            Response::TimedOut(missing) => missing.iter().fold(e.u8(2).u32(missing.len() as u32), |e, &i| e.u32(i)),
            Response::RankLost(rank) => e.u8(3).u32(*rank),
            Response::Refused(why) => e.u8(4).bytes(why.as_bytes()),
            Response::RankFailed(rank, why) => e.u8(5).u32(*rank).bytes(why.as_bytes()),
        };
        write_message(w, &e.0)
    }

    /// Receives a response; `Ok(None)` when the store closed the connection.
    pub(crate) fn read(r: &mut impl Read) -> io::Result<Option<Response>> {
        let Some(body) = read_message(r)? else { return Ok(None) };
        let mut d = Decoder(&body);
        let response = match d.u8()? {
            0 => Response::Ok,
            1 => {
                let n = d.count(4)?;
                Response::Values((0..n).map(|_| d.bytes()).collect::<io::Result<_>>()?)
            }
            2 => {
                let n = d.count(4)?;
                Response::TimedOut((0..n).map(|_| d.u32()).collect::<io::Result<_>>()?)
            }
            3 => Response::RankLost(d.u32()?),
            4 => Response::Refused(String::from_utf8_lossy(&d.bytes()?).into_owned()),
            5 => Response::RankFailed(d.u32()?, String::from_utf8_lossy(&d.bytes()?).into_owned()),
            tag => return Err(bad(format!("unknown store response {tag}"))),
        };
        d.end()?;
        Ok(Some(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let requests = [
            Request::Hello { rank: 3, world: 4 },
            Request::Set { key: "ar/7/1".into(), value: vec![1, 2, 3] },
            Request::Wait { keys: vec!["a".into(), "bc".into()], timeout_ms: 1500 },
            Request::Delete { key: "x".into() },
            Request::Bye { failure: String::new() },
            Request::Bye { failure: "rank 2 did not join".into() },
        ];
        for q in requests {
            let mut buf = Vec::new();
            q.write(&mut buf).unwrap();
            assert_eq!(Request::read(&mut &buf[..]).unwrap(), Some(q));
        }
        let responses = [
            Response::Ok,
            Response::Values(vec![vec![], vec![9; 10]]),
            Response::TimedOut(vec![0, 2]),
            Response::RankLost(1),
            Response::Refused("no".into()),
            Response::RankFailed(2, "bad file".into()),
        ];
        for a in responses {
            let mut buf = Vec::new();
            a.write(&mut buf).unwrap();
            assert_eq!(Response::read(&mut &buf[..]).unwrap(), Some(a));
        }
        assert_eq!(Request::read(&mut &[][..]).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [
            &[9u8][..],
            &[2, 255, 255, 255, 255],
            &[3, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255],
            &[5, 0, 0, 0, 0, 0],
        ] {
            let mut buf = (body.len() as u32).to_le_bytes().to_vec();
            buf.extend(body);
            assert!(Request::read(&mut &buf[..]).is_err(), "{body:?}");
        }
        let huge = (MAX_MESSAGE + 1).to_le_bytes();
        assert!(Response::read(&mut &huge[..]).is_err());
    }
}
