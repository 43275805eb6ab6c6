//! A client of a TCP store speaking PyTorch's TCPStore protocol: qcalib's own
//! [`StoreServer`](super::StoreServer), the store a `torchrun` agent serves, or any
//! `torch.distributed.TCPStore` server.

use std::fmt;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::limits::{MAX_KEYS_PER_REQUEST, MAX_VALUE_LEN};
use super::protocol::{
    Message, READY, STOP_WAITING, VALIDATION_MAGIC, WAIT_CANCELED, query, read_bytes, read_i64, read_u8, read_u32,
    read_u64,
};
use crate::error::{Error, Result};

/// Extra time a client gives the store to answer beyond the wait it asked for, before it
/// decides that the store is frozen.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// The pause between two tries to reach a store that is not up yet (rank 0 may start later).
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// A connection to a TCP store (PyTorch's TCPStore protocol): the key-value table through which
/// the ranks meet and exchange their statistics.
///
/// Keys are as a `torch.distributed.TCPStore` client names them: `set("k", …)` here and
/// `store.set("k", …)` in Python write the same entry (`/k` on the wire). With a prefix
/// ([`TcpStore::with_prefix`]) the keys are those of Python's `PrefixStore(prefix, store)`.
/// Values are bytes of at most 8 MiB (the limit of PyTorch's libuv server). Every request fails
/// with an [`Error::Sync`] when the store is gone; no answer is read beyond what the request
/// may return (a value at most 8 MiB, a wait's single byte).
///
/// ```no_run
/// use std::time::Duration;
/// use qcalib::sync::TcpStore;
/// // A store served by `torch.distributed.TCPStore("127.0.0.1", 29500, is_master=True)`.
/// let store = TcpStore::connect("127.0.0.1:29500", Duration::from_secs(30))?;
/// store.set("qcalib/hello", b"world")?; // Python: store.get("qcalib/hello") == b"world"
/// assert_eq!(store.add("qcalib/count", 1)?, 1);
/// # Ok::<(), qcalib::Error>(())
/// ```
pub struct TcpStore {
    addr: String,
    /// The keys' prefix on the wire: `/`, or `/{prefix}/`.
    key_prefix: String,
    /// How the store is named in errors.
    label: String,
    timeout: Duration,
    conn: Mutex<Conn>,
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Set when an answer was cut short: the connection can no longer be trusted.
    broken: Option<String>,
}

/// One exchange with the store, under its lock.
pub(crate) struct Session<'a> {
    conn: MutexGuard<'a, Conn>,
    store: &'a TcpStore,
}

impl TcpStore {
    /// Connects to the store at `addr` (`host:port`; every address the host resolves to is
    /// tried), trying again until `timeout` has passed when it is not up yet, and checks that it
    /// speaks the protocol (the validation handshake and a ping). `timeout` is also the longest
    /// wait of [`TcpStore::get`] and [`TcpStore::wait`].
    pub fn connect(addr: &str, timeout: Duration) -> Result<TcpStore> {
        let deadline = Instant::now() + timeout;
        loop {
            // A store that is not up yet, or that closes the connection before it is validated
            // (busy with other new connections), is tried again until the deadline.
            match try_connect(addr, deadline).and_then(|stream| TcpStore::validate(addr, stream, timeout)) {
                Ok(store) => return Ok(store),
                Err(why) if Instant::now() + CONNECT_RETRY >= deadline => {
                    return Err(Error::Sync(format!(
                        "could not reach the store at {addr} within {:.1} s: {why}",
                        timeout.as_secs_f64()
                    )));
                }
                Err(_) => std::thread::sleep(CONNECT_RETRY),
            }
        }
    }

    /// The handshake and a ping on a new connection.
    fn validate(addr: &str, stream: TcpStream, timeout: Duration) -> Result<TcpStore, String> {
        let io = |e: io::Error| e.to_string();
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(timeout + ANSWER_GRACE)).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        let store = TcpStore {
            addr: addr.to_string(),
            key_prefix: "/".into(),
            label: format!("the store at {addr}"),
            timeout,
            conn: Mutex::new(Conn { reader, writer: stream, broken: None }),
        };
        let text = |e: Error| e.to_string();
        store.session().map_err(text)?.send(&Message::query(query::VALIDATE).u32(VALIDATION_MAGIC)).map_err(text)?;
        store.ping().map_err(text)?;
        Ok(store)
    }

    /// The same connection with the keys of Python's `PrefixStore(prefix, store)`: `prefix`, a
    /// `/`, then the key.
    pub fn with_prefix(mut self, prefix: &str) -> TcpStore {
        self.key_prefix = format!("/{prefix}/");
        self
    }

    /// Names the store in errors, e.g. `the store of rank 0 at 10.0.0.1:29500`.
    pub(crate) fn with_label(mut self, label: String) -> TcpStore {
        self.label = label;
        self
    }

    /// The address given to [`TcpStore::connect`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The longest wait of [`TcpStore::get`] and [`TcpStore::wait`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The key as it travels (the prefix in front).
    pub(crate) fn wire_key(&self, key: &str) -> Vec<u8> {
        let mut k = self.key_prefix.clone().into_bytes();
        k.extend(key.as_bytes());
        k
    }

    /// Stores `value` under `key` (at most 8 MiB).
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        check_value(value)?;
        self.session()?.send(&Message::query(query::SET).bytes(&self.wire_key(key)).bytes(value))
    }

    /// The value of `key`, once it is set (at most the timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.wait(&[key], self.timeout)?;
        let mut s = self.session()?;
        s.send(&Message::query(query::GET).bytes(&self.wire_key(key)))?;
        s.read_value(MAX_VALUE_LEN)
    }

    /// Adds `delta` to the counter `key` (0 when missing) and returns the new value. Counters
    /// are decimal text, as in PyTorch.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let mut s = self.session()?;
        s.send(&Message::query(query::ADD).bytes(&self.wire_key(key)).i64(delta))?;
        s.read_i64()
    }

    /// Whether every key of `keys` is set, without waiting.
    pub fn check(&self, keys: &[&str]) -> Result<bool> {
        let wire: Vec<Vec<u8>> = self.wire_keys(keys)?;
        let mut s = self.session()?;
        s.send(&Message::query(query::CHECK).keys(&wire))?;
        Ok(s.read_u8()? == READY)
    }

    /// Waits until every key of `keys` is set: an error naming the keys when `timeout` passes
    /// first.
    pub fn wait(&self, keys: &[&str], timeout: Duration) -> Result<()> {
        let wire = self.wire_keys(keys)?;
        if self.wait_wire(&wire, timeout)? {
            Ok(())
        } else {
            Err(Error::Sync(format!(
                "the key(s) {keys:?} were not set in {} within {:.1} s",
                self.label,
                timeout.as_secs_f64()
            )))
        }
    }

    /// The values of `keys`, once all are set (at most the timeout).
    pub fn multi_get(&self, keys: &[&str]) -> Result<Vec<Vec<u8>>> {
        self.wait(keys, self.timeout)?;
        let wire = self.wire_keys(keys)?;
        let mut s = self.session()?;
        s.send(&Message::query(query::MULTI_GET).keys(&wire))?;
        (0..wire.len()).map(|_| s.read_value(MAX_VALUE_LEN)).collect()
    }

    /// Stores each value under its key, in one request.
    pub fn multi_set(&self, keys: &[&str], values: &[&[u8]]) -> Result<()> {
        if keys.len() != values.len() || keys.len() > MAX_KEYS_PER_REQUEST {
            return Err(Error::Sync(format!(
                "multi_set takes as many values as keys, at most {MAX_KEYS_PER_REQUEST} ({} keys, {} values)",
                keys.len(),
                values.len()
            )));
        }
        let mut m = Message::query(query::MULTI_SET).u64(keys.len() as u64);
        for (k, v) in keys.iter().zip(values) {
            check_value(v)?;
            m = m.bytes(&self.wire_key(k)).bytes(v);
        }
        self.session()?.send(&m)
    }

    /// Forgets `key`; whether it was set.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let mut s = self.session()?;
        s.send(&Message::query(query::DELETE_KEY).bytes(&self.wire_key(key)))?;
        Ok(s.read_i64()? == 1)
    }

    /// Sets `key` to `desired` if it holds `expected` (or if it is missing and `expected` is
    /// empty), and returns the value the store holds afterwards (PyTorch's `compare_set`; for a
    /// missing key and a non-empty `expected`, PyTorch answers `expected`).
    pub fn compare_set(&self, key: &str, expected: &[u8], desired: &[u8]) -> Result<Vec<u8>> {
        check_value(expected)?;
        check_value(desired)?;
        let mut s = self.session()?;
        s.send(&Message::query(query::COMPARE_SET).bytes(&self.wire_key(key)).bytes(expected).bytes(desired))?;
        s.read_value(MAX_VALUE_LEN)
    }

    /// The number of keys in the store (all of them, whatever their prefix).
    pub fn num_keys(&self) -> Result<i64> {
        let mut s = self.session()?;
        s.send(&Message::query(query::GETNUMKEYS))?;
        s.read_i64()
    }

    /// A round trip: an error when the store does not answer with the nonce sent.
    pub fn ping(&self) -> Result<()> {
        let nonce = std::process::id();
        let mut s = self.session()?;
        s.send(&Message::query(query::PING).u32(nonce))?;
        let answer = s.read_u32()?;
        if answer != nonce {
            return Err(s.broken(format!("a ping answered {answer} instead of {nonce}: not a TCPStore")));
        }
        Ok(())
    }

    fn wire_keys(&self, keys: &[&str]) -> Result<Vec<Vec<u8>>> {
        if keys.len() > MAX_KEYS_PER_REQUEST {
            return Err(Error::Sync(format!("{} keys in one request, more than {MAX_KEYS_PER_REQUEST}", keys.len())));
        }
        Ok(keys.iter().map(|k| self.wire_key(k)).collect())
    }

    /// Waits at most `timeout` for the wire keys `keys`: `true` once all are set, `false` when
    /// the time passed first (the wait is then cancelled, as PyTorch's client does).
    pub(crate) fn wait_wire(&self, keys: &[Vec<u8>], timeout: Duration) -> Result<bool> {
        let mut s = self.session()?;
        s.send(&Message::query(query::WAIT).keys(keys))?;
        s.finish_wait(timeout)
    }

    /// Opens an exchange with the store (its lock held until the session is dropped).
    pub(crate) fn session(&self) -> Result<Session<'_>> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(why) = &conn.broken {
            return Err(Error::Sync(format!("the connection to {} is unusable: {why}", self.label)));
        }
        Ok(Session { conn, store: self })
    }
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::Sync(format!(
            "a value of {} bytes is more than a TCP store takes ({MAX_VALUE_LEN})",
            value.len()
        )));
    }
    Ok(())
}

/// One try at every address `addr` resolves to.
fn try_connect(addr: &str, deadline: Instant) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| e.to_string())?.collect();
    if addrs.is_empty() {
        return Err("the address resolves to nothing".into());
    }
    let mut last = String::new();
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        match TcpStream::connect_timeout(&a, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

impl Session<'_> {
    /// Sends one request.
    pub(crate) fn send(&mut self, m: &Message) -> Result<()> {
        let result = self.conn.writer.write_all(&m.0).and_then(|()| self.conn.writer.flush());
        result.map_err(|e| self.lost(e))
    }

    /// The store is gone (or answered nonsense): the error, and the connection is not used again.
    fn lost(&mut self, e: io::Error) -> Error {
        let why = match e.kind() {
            ErrorKind::UnexpectedEof => "connection closed".to_string(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut => "no answer in time".to_string(),
            _ => e.to_string(),
        };
        self.broken(format!("{why}: the process serving it has ended or is unreachable"))
    }

    fn broken(&mut self, why: String) -> Error {
        self.conn.broken = Some(why.clone());
        Error::Sync(format!("lost the connection to {} ({why})", self.store.label))
    }

    /// Sets how long the next read may wait.
    fn expect_within(&mut self, timeout: Duration) -> Result<()> {
        let t = timeout.max(Duration::from_millis(1));
        self.conn.reader.get_ref().set_read_timeout(Some(t)).map_err(|e| Error::Sync(e.to_string()))
    }

    pub(crate) fn read_u8(&mut self) -> Result<u8> {
        self.expect_within(self.store.timeout + ANSWER_GRACE)?;
        read_u8(&mut self.conn.reader).map_err(|e| self.lost(e))
    }

    pub(crate) fn read_u32(&mut self) -> Result<u32> {
        self.expect_within(self.store.timeout + ANSWER_GRACE)?;
        read_u32(&mut self.conn.reader).map_err(|e| self.lost(e))
    }

    pub(crate) fn read_i64(&mut self) -> Result<i64> {
        self.expect_within(self.store.timeout + ANSWER_GRACE)?;
        read_i64(&mut self.conn.reader).map_err(|e| self.lost(e))
    }

    /// A value of at most `max` bytes (a longer one breaks the connection, unread).
    pub(crate) fn read_value(&mut self, max: usize) -> Result<Vec<u8>> {
        self.expect_within(self.store.timeout + ANSWER_GRACE)?;
        read_bytes(&mut self.conn.reader, max, "a value", &mut |_| Ok(())).map_err(|e| self.lost(e))
    }

    /// A value written by a peer, expected to hold at most `max` bytes: `Ok(Err(len))` when it
    /// announces more (its bytes are read and dropped, up to the 8 MiB any store holds, so that
    /// the connection stays usable and nothing is allocated for them).
    pub(crate) fn read_peer_value(&mut self, max: usize) -> Result<std::result::Result<Vec<u8>, u64>> {
        self.expect_within(self.store.timeout + ANSWER_GRACE)?;
        let len = read_u64(&mut self.conn.reader).map_err(|e| self.lost(e))?;
        if len > MAX_VALUE_LEN as u64 {
            return Err(self.broken(format!("a value of {len} bytes announced: not a TCPStore")));
        }
        if len > max as u64 {
            let skipped =
                io::copy(&mut (&mut self.conn.reader).take(len), &mut io::sink()).map_err(|e| self.lost(e))?;
            if skipped != len {
                return Err(self.lost(ErrorKind::UnexpectedEof.into()));
            }
            return Ok(Err(len));
        }
        let mut v = vec![0u8; len as usize];
        self.conn.reader.read_exact(&mut v).map_err(|e| self.lost(e))?;
        Ok(Ok(v))
    }

    /// The answer to a `WAIT` just sent: `true` when it came within `timeout`; otherwise the
    /// wait is cancelled and `false` (or `true` when the wait ended as it was cancelled).
    pub(crate) fn finish_wait(&mut self, timeout: Duration) -> Result<bool> {
        self.expect_within(timeout)?;
        match read_u8(&mut self.conn.reader) {
            Ok(STOP_WAITING) => return Ok(true),
            Ok(other) => return Err(self.broken(format!("a wait was answered {other}"))),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(self.lost(e)),
        }
        self.send(&Message::query(query::CANCEL_WAIT))?;
        match self.read_u8()? {
            WAIT_CANCELED => Ok(false),
            STOP_WAITING => match self.read_u8()? {
                WAIT_CANCELED => Ok(true),
                other => Err(self.broken(format!("a cancelled wait was answered {other}"))),
            },
            other => Err(self.broken(format!("a cancelled wait was answered {other}"))),
        }
    }
}

impl fmt::Debug for TcpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStore").field("addr", &self.addr).field("prefix", &self.key_prefix).finish()
    }
}
