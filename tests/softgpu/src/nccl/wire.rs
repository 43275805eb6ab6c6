//! The messages between the ranks and the hub: a kind byte, a length, the payload (integers
//! little-endian).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The largest payload accepted: anything larger is a broken or foreign peer.
pub const MAX_PAYLOAD: u64 = 1 << 36;

/// A message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A rank joins.
    Hello {
        /// The communicator's token (from the unique id).
        token: u64,
        /// The rank.
        rank: u32,
        /// The number of ranks.
        nranks: u32,
    },
    /// The hub: every rank has joined.
    Ready,
    /// The hub: the communicator failed (why).
    Error(String),
    /// A rank's contribution to a collective.
    Contribution(Contribution),
    /// The hub: the result of a collective.
    Result {
        /// The collective's number.
        seq: u64,
        /// The reduced bytes.
        data: Vec<u8>,
    },
    /// A rank leaves (its communicator is destroyed).
    Bye,
}

/// A rank's part of an all-reduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contribution {
    /// The collective's number on this communicator, from 0.
    pub seq: u64,
    /// `ncclDataType_t`.
    pub dtype: u32,
    /// `ncclRedOp_t`.
    pub op: u32,
    /// Elements.
    pub count: u64,
    /// The rank's bytes.
    pub data: Vec<u8>,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        let (kind, mut payload): (u8, Vec<u8>) = match self {
            Message::Hello { token, rank, nranks } => {
                (1, [token.to_le_bytes().as_slice(), &rank.to_le_bytes(), &nranks.to_le_bytes()].concat())
            }
            Message::Ready => (2, Vec::new()),
            Message::Error(why) => (3, why.as_bytes().to_vec()),
            Message::Contribution(c) => (
                4,
                [
                    c.seq.to_le_bytes().as_slice(),
                    &c.dtype.to_le_bytes(),
                    &c.op.to_le_bytes(),
                    &c.count.to_le_bytes(),
                    &c.data,
                ]
                .concat(),
            ),
            Message::Result { seq, data } => (5, [seq.to_le_bytes().as_slice(), data].concat()),
            Message::Bye => (6, Vec::new()),
        };
        let mut out = Vec::with_capacity(9 + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.append(&mut payload);
        out
    }

    fn decode(kind: u8, p: Vec<u8>) -> Result<Message, String> {
        let u32_at = |at: usize| p.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let u64_at = |at: usize| p.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let bad = || format!("a malformed message of kind {kind}");
        Ok(match kind {
            1 if p.len() == 16 => Message::Hello {
                token: u64_at(0).ok_or_else(bad)?,
                rank: u32_at(8).ok_or_else(bad)?,
                nranks: u32_at(12).ok_or_else(bad)?,
            },
            2 if p.is_empty() => Message::Ready,
            3 => Message::Error(String::from_utf8_lossy(&p).into_owned()),
            4 if p.len() >= 24 => Message::Contribution(Contribution {
                seq: u64_at(0).ok_or_else(bad)?,
                dtype: u32_at(8).ok_or_else(bad)?,
                op: u32_at(12).ok_or_else(bad)?,
                count: u64_at(16).ok_or_else(bad)?,
                data: p[24..].to_vec(),
            }),
            5 if p.len() >= 8 => Message::Result { seq: u64_at(0).ok_or_else(bad)?, data: p[8..].to_vec() },
            6 if p.is_empty() => Message::Bye,
            _ => return Err(bad()),
        })
    }
}

/// Sends `m`.
pub fn send(stream: &mut impl Write, m: &Message) -> std::io::Result<()> {
    stream.write_all(&m.encode())?;
    stream.flush()
}

/// How a receive failed.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing came within the time allowed.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// The connection failed, or the peer sent something that is not a message.
    Broken(String),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Timeout => f.write_str("timed out"),
            RecvError::Closed => f.write_str("the connection was closed"),
            RecvError::Broken(why) => f.write_str(why),
        }
    }
}

/// Receives one message, waiting at most until `deadline` (`None`: as long as it takes).
pub fn recv(stream: &mut TcpStream, deadline: Option<Instant>) -> Result<Message, RecvError> {
    let mut head = [0u8; 9];
    read_exact(stream, &mut head, deadline)?;
    let len = u64::from_le_bytes(head[1..9].try_into().unwrap_or([0; 8]));
    if len > MAX_PAYLOAD {
        return Err(RecvError::Broken(format!("a message of {len} bytes")));
    }
    let mut payload = Vec::new();
    payload.try_reserve_exact(len as usize).map_err(|_| RecvError::Broken(format!("no memory for {len} bytes")))?;
    payload.resize(len as usize, 0);
    read_exact(stream, &mut payload, deadline)?;
    Message::decode(head[0], payload).map_err(RecvError::Broken)
}

fn read_exact(stream: &mut TcpStream, mut buf: &mut [u8], deadline: Option<Instant>) -> Result<(), RecvError> {
    while !buf.is_empty() {
        let wait = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(RecvError::Timeout),
            },
        };
        stream
            .set_read_timeout(wait.map(|w| w.max(Duration::from_millis(1))))
            .map_err(|e| RecvError::Broken(e.to_string()))?;
        match stream.read(buf) {
            Ok(0) => return Err(RecvError::Closed),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {
                return Err(RecvError::Closed);
            }
            Err(e) => return Err(RecvError::Broken(e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_survives_the_wire() {
        let messages = [
            Message::Hello { token: 7, rank: 1, nranks: 2 },
            Message::Ready,
            Message::Error("rank 1 left".into()),
            Message::Contribution(Contribution {
                seq: 3,
                dtype: 7,
                op: 2,
                count: 2,
                data: vec![1, 2, 3, 4, 5, 6, 7, 8],
            }),
            Message::Result { seq: 3, data: vec![9; 8] },
            Message::Bye,
        ];
        for m in messages {
            let bytes = m.encode();
            let decoded = Message::decode(bytes[0], bytes[9..].to_vec()).unwrap();
            assert_eq!(decoded, m);
        }
        assert!(Message::decode(1, vec![0; 3]).is_err());
        assert!(Message::decode(99, Vec::new()).is_err());
    }
}
