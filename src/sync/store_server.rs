//! qcalib's TCP store server: PyTorch's TCPStore protocol (see [`protocol`](super::protocol)), so
//! that `torch.distributed.TCPStore` clients can use it as they use PyTorch's own, with limits
//! that keep malformed or hostile connections from exhausting the machine.
//!
//! One thread accepts connections; each connection has a thread that reads its requests. A
//! `WAIT` that cannot be answered yet is answered by the thread whose `SET` (or `ADD`,
//! `APPEND`, …) completes it.

use std::collections::HashMap;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::limits::{
    DEFAULT_STORE_BYTES, HANDSHAKE_DEADLINE, MAX_CONNECTIONS, MAX_PENDING_CONNECTIONS, MAX_VALUE_LEN, STORE_BYTES_VAR,
};
use super::protocol::{NOT_READY, READY, Request, STOP_WAITING, VALIDATION_MAGIC, WAIT_CANCELED, query, read_array};
use crate::error::{Error, Result};

/// How often the accepting thread looks for a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How long an answer may take to leave before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a stored entry costs beyond its key and value bytes (for the memory budget).
const ENTRY_OVERHEAD: usize = 64;

/// The stack of each connection thread (they only parse and copy).
const THREAD_STACK: usize = 256 * 1024;

/// A TCP store speaking PyTorch's TCPStore protocol: what rank 0 serves when no `torchrun`
/// agent does, and what a `torch.distributed.TCPStore(host, port, is_master=False)` client
/// can use (set, get, add, check, wait, multi-get, delete, compare-set, ping).
///
/// It has no authentication, like PyTorch's: serve it on trusted networks only. What it
/// enforces: a new connection must send the validation handshake within 5 s
/// ([`HANDSHAKE_DEADLINE`](super::limits::HANDSHAKE_DEADLINE)) and reads nothing else before it;
/// at most 32 connections wait for their handshake and 1024 are served; keys are at most 8 KiB,
/// values 8 MiB (also those that `APPEND` makes), requests name at most 131072 keys; the keys
/// and values held, with the keys of the waits in progress, stay under `QCALIB_STORE_MAX_BYTES`
/// (1 GiB by default), and so do the requests being read together with the answers being sent.
/// A connection that breaks a limit is closed.
///
/// ```
/// use std::time::Duration;
/// use qcalib::sync::{StoreServer, TcpStore};
/// let server = StoreServer::serve("127.0.0.1:0".parse().unwrap())?;
/// let store = TcpStore::connect(&server.local_addr().to_string(), Duration::from_secs(5))?;
/// store.set("greeting", b"hello")?;
/// assert_eq!(store.get("greeting")?, b"hello");
/// assert_eq!(store.add("counter", 2)?, 2);
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Debug)]
pub struct StoreServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    table: Mutex<Table>,
    stop: AtomicBool,
    /// Connections still in their handshake.
    pending: AtomicUsize,
    /// Validated connections.
    served: AtomicUsize,
    /// Bytes of requests being read (not yet in the table) and of answers being sent.
    reading: AtomicUsize,
    /// The most bytes the table and the requests being read (with the answers) may hold, each.
    capacity: usize,
    /// Every open connection, to close them when the server stops.
    streams: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    values: HashMap<Vec<u8>, Vec<u8>>,
    /// What `values` and the keys of the waits in progress cost against the capacity.
    bytes: usize,
    /// The connections waiting for each missing key.
    waiting: HashMap<Vec<u8>, Vec<u64>>,
    /// Each waiting connection: how many of its keys are still missing, and what its keys cost
    /// (counted in `bytes` until the wait ends).
    awaited: HashMap<u64, (usize, Arc<Conn>, usize)>,
}

/// The writing side of a connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    writer: Mutex<TcpStream>,
    /// A `STOP_WAITING` is owed: its wait completed, and the answer is not written yet.
    wake_owed: AtomicBool,
}

impl StoreServer {
    /// Serves a store on `addr` (port 0: a free port; see [`StoreServer::local_addr`]).
    pub fn serve(addr: SocketAddr) -> Result<StoreServer> {
        Self::serve_with_capacity(addr, store_capacity()?)
    }

    /// [`StoreServer::serve`] holding at most `capacity` bytes (instead of
    /// `QCALIB_STORE_MAX_BYTES`).
    pub(crate) fn serve_with_capacity(addr: SocketAddr, capacity: usize) -> Result<StoreServer> {
        let listener = TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::Sync(format!("could not serve a store on {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| Error::Sync(format!("the store's address: {e}")))?;
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            stop: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            reading: AtomicUsize::new(0),
            capacity,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let accepting = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("qcalib-store".into())
            .spawn(move || accept_loop(&listener, &accepting))
            .map_err(|e| Error::Sync(format!("could not start the store's thread: {e}")))?;
        Ok(StoreServer { addr, shared, acceptor: Some(acceptor) })
    }

    /// The address the store listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The number of validated connections being served (for tests of the limits).
    pub fn connections(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }
}

/// The store's capacity: [`STORE_BYTES_VAR`] or [`DEFAULT_STORE_BYTES`].
fn store_capacity() -> Result<usize> {
    match std::env::var(STORE_BYTES_VAR) {
        Err(_) => Ok(DEFAULT_STORE_BYTES),
        Ok(v) => {
            v.trim().parse::<usize>().ok().filter(|&b| b >= 1 << 20).ok_or_else(|| {
                Error::config(STORE_BYTES_VAR, format!("`{v}` is not a number of bytes of at least 1 MiB"))
            })
        }
    }
}

impl Drop for StoreServer {
    /// Stops accepting and closes every connection.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for stream in lock(&self.shared.streams).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // Over the cap of connections in their handshake: closed at once.
                if shared.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_CONNECTIONS {
                    shared.pending.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let serving = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("qcalib-store-conn".into())
                    .stack_size(THREAD_STACK)
                    .spawn(move || serve_connection(stream, &serving));
                if spawned.is_err() {
                    // Out of threads: the connection is dropped.
                    shared.pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// The validation handshake: the byte `VALIDATE` and the magic number, within the deadline.
fn handshake(stream: &mut TcpStream) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_DEADLINE;
    let mut got = [0u8; 5];
    let mut filled = 0;
    while filled < got.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "no handshake in time"));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut got[filled..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let magic = u32::from_le_bytes([got[1], got[2], got[3], got[4]]);
    if got[0] != query::VALIDATE || magic != VALIDATION_MAGIC {
        return Err(io::Error::new(ErrorKind::InvalidData, "not a TCPStore handshake"));
    }
    stream.set_read_timeout(None)
}

fn serve_connection(mut stream: TcpStream, shared: &Arc<Shared>) {
    let _ = stream.set_nonblocking(false);
    let validated = handshake(&mut stream);
    shared.pending.fetch_sub(1, Ordering::SeqCst);
    if validated.is_err() {
        return;
    }
    if shared.served.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        shared.served.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let setup = (|| -> io::Result<(TcpStream, TcpStream)> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok((stream.try_clone()?, stream.try_clone()?))
    })();
    if let Ok((writer, registered)) = setup {
        lock(&shared.streams).insert(id, registered);
        // The server may have stopped between the accept and now: then nothing is served.
        if !shared.stop.load(Ordering::SeqCst) {
            let conn = Arc::new(Conn { id, writer: Mutex::new(writer), wake_owed: AtomicBool::new(false) });
            let mut reader = BufReader::with_capacity(64 * 1024, stream);
            while serve_request(&mut reader, &conn, shared).is_ok() {}
            shared.forget_waits(id);
        }
        if let Some(s) = lock(&shared.streams).remove(&id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
    shared.served.fetch_sub(1, Ordering::SeqCst);
}

/// Reads one request and answers it; an error ends the connection.
fn serve_request(reader: &mut impl Read, conn: &Arc<Conn>, shared: &Shared) -> io::Result<()> {
    let q = read_array::<1>(reader)?[0];
    let mut charged = 0usize;
    let request = Request::read(q, reader, &mut |n| {
        shared.charge_reading(n)?;
        charged += n;
        Ok(())
    });
    let result = request.and_then(|r| shared.handle(r, conn));
    shared.reading.fetch_sub(charged, Ordering::SeqCst);
    result
}

fn full(why: &str) -> io::Error {
    io::Error::new(ErrorKind::OutOfMemory, why.to_string())
}

impl Shared {
    /// Counts `n` more bytes of requests being read, refusing beyond the capacity.
    fn charge_reading(&self, n: usize) -> io::Result<()> {
        let before = self.reading.fetch_add(n, Ordering::SeqCst);
        if before.saturating_add(n) > self.capacity {
            self.reading.fetch_sub(n, Ordering::SeqCst);
            return Err(full("the store is full (requests being read)"));
        }
        Ok(())
    }

    fn handle(&self, request: Request, conn: &Arc<Conn>) -> io::Result<()> {
        match request {
            Request::Set(key, value) => {
                let woken = self.store(&mut lock(&self.table), key, value)?;
                self.wake(woken)
            }
            Request::CompareSet(key, expected, desired) => {
                let (answer, woken) = {
                    let mut table = lock(&self.table);
                    // PyTorch's libuv semantics: a missing key is set when `expected` is empty
                    // (and `expected` answered otherwise); a present key is replaced when it
                    // equals `expected`; the answer is the value now stored.
                    let (answer, replace) = match table.values.get(&key) {
                        None if expected.is_empty() => (self.answer(&[&desired])?, true),
                        None => (self.answer(&[&expected])?, false),
                        Some(current) if *current == expected => (self.answer(&[&desired])?, true),
                        Some(current) => (self.answer(&[current])?, false),
                    };
                    let woken = if replace { self.store(&mut table, key, desired)? } else { table.woken_by(&key) };
                    (answer, woken)
                };
                self.wake(woken)?;
                conn.send(&answer.bytes)
            }
            Request::Get(key) => {
                let answer = {
                    let table = lock(&self.table);
                    self.answer(&[table.values.get(&key).map_or(&[][..], Vec::as_slice)])?
                };
                conn.send(&answer.bytes)
            }
            Request::Add(key, delta) => {
                let (sum, woken) = {
                    let mut table = lock(&self.table);
                    let old = match table.values.get(&key) {
                        None => 0,
                        Some(v) => parse_i64(v)?,
                    };
                    let sum = old
                        .checked_add(delta)
                        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "an ADD overflows"))?;
                    (sum, self.store(&mut table, key, sum.to_string().into_bytes())?)
                };
                self.wake(woken)?;
                conn.send(&sum.to_le_bytes())
            }
            Request::Check(keys) => {
                let ready = {
                    let table = lock(&self.table);
                    keys.iter().all(|k| table.values.contains_key(k))
                };
                conn.send(&[if ready { READY } else { NOT_READY }])
            }
            Request::Wait(keys) => {
                let mut table = lock(&self.table);
                if table.awaited.contains_key(&conn.id) {
                    return Err(io::Error::new(ErrorKind::InvalidData, "a WAIT while another is pending"));
                }
                let missing: Vec<Vec<u8>> = keys.into_iter().filter(|k| !table.values.contains_key(k)).collect();
                if missing.is_empty() {
                    drop(table);
                    return conn.send(&[STOP_WAITING]);
                }
                // The keys stay in the table until the wait ends: they count against its capacity.
                let keys_cost = missing.iter().map(|k| k.len() + ENTRY_OVERHEAD).sum::<usize>();
                let bytes = table.bytes.saturating_add(keys_cost);
                if bytes > self.capacity {
                    return Err(full("the store is full (keys waited for)"));
                }
                table.bytes = bytes;
                table.awaited.insert(conn.id, (missing.len(), conn.clone(), keys_cost));
                for k in missing {
                    table.waiting.entry(k).or_default().push(conn.id);
                }
                Ok(())
            }
            Request::NumKeys => {
                let n = lock(&self.table).values.len() as i64;
                conn.send(&n.to_le_bytes())
            }
            Request::Delete(key) => {
                let removed = {
                    let mut table = lock(&self.table);
                    match table.values.remove(&key) {
                        Some(v) => {
                            table.bytes -= cost(&key, &v);
                            1i64
                        }
                        None => 0,
                    }
                };
                conn.send(&removed.to_le_bytes())
            }
            Request::Append(key, value) => {
                let woken = {
                    let mut table = lock(&self.table);
                    let old = table.values.get(&key).map_or(0, Vec::len);
                    if old.saturating_add(value.len()) > MAX_VALUE_LEN {
                        return Err(io::Error::new(
                            ErrorKind::InvalidData,
                            format!("an APPEND beyond the largest value ({MAX_VALUE_LEN} bytes)"),
                        ));
                    }
                    let mut joined = table.values.get(&key).cloned().unwrap_or_default();
                    joined.extend(value);
                    self.store(&mut table, key, joined)?
                };
                self.wake(woken)
            }
            Request::MultiGet(keys) => {
                let answer = {
                    let table = lock(&self.table);
                    let values: Vec<&[u8]> =
                        keys.iter().map(|k| table.values.get(k).map_or(&[][..], Vec::as_slice)).collect();
                    self.answer(&values)?
                };
                conn.send(&answer.bytes)
            }
            Request::MultiSet(pairs) => {
                let mut woken = Vec::new();
                {
                    let mut table = lock(&self.table);
                    for (key, value) in pairs {
                        woken.extend(self.store(&mut table, key, value)?);
                    }
                }
                self.wake(woken)
            }
            Request::CancelWait => {
                let writing = lock(&conn.writer);
                {
                    let mut table = lock(&self.table);
                    table.cancel(conn.id);
                }
                // A wait completed just before the cancel is answered first, as PyTorch does.
                if conn.wake_owed.swap(false, Ordering::SeqCst) {
                    write_to(&writing, &[STOP_WAITING])?;
                }
                write_to(&writing, &[WAIT_CANCELED])
            }
            Request::Ping(nonce) => conn.send(&nonce.to_le_bytes()),
        }
    }

    /// Stores `value` under `key` within the capacity; returns the connections whose waits it
    /// completes.
    fn store(&self, table: &mut Table, key: Vec<u8>, value: Vec<u8>) -> io::Result<Vec<Arc<Conn>>> {
        let old = table.values.get(&key).map_or(0, |v| cost(&key, v));
        let new = cost(&key, &value);
        let bytes = table.bytes - old + new;
        if bytes > self.capacity {
            return Err(full("the store is full"));
        }
        table.bytes = bytes;
        let woken = table.woken_by(&key);
        table.values.insert(key, value);
        Ok(woken)
    }

    /// Answers the waits that completed.
    fn wake(&self, woken: Vec<Arc<Conn>>) -> io::Result<()> {
        for conn in woken {
            let writing = lock(&conn.writer);
            if conn.wake_owed.swap(false, Ordering::SeqCst) && write_to(&writing, &[STOP_WAITING]).is_err() {
                let _ = writing.shutdown(Shutdown::Both);
            }
        }
        Ok(())
    }

    /// Forgets the wait of a connection that closed.
    fn forget_waits(&self, id: u64) {
        lock(&self.table).cancel(id);
    }

    /// The answer made of `values` (each as its length and its bytes), counted with the
    /// requests being read before anything is allocated for it: a peer that asks for the same
    /// large value many times, or does not read its answers, cannot take more than the capacity.
    fn answer(&self, values: &[&[u8]]) -> io::Result<Answer<'_>> {
        let len = values.iter().fold(0usize, |n, v| n.saturating_add(8).saturating_add(v.len()));
        self.charge_reading(len)?;
        let mut answer = Answer { shared: self, charged: len, bytes: Vec::new() };
        answer.bytes.try_reserve_exact(len).map_err(|_| full("cannot allocate an answer"))?;
        for v in values {
            answer.bytes.extend((v.len() as u64).to_le_bytes());
            answer.bytes.extend_from_slice(v);
        }
        Ok(answer)
    }
}

/// An answer of stored values, counted against the store's capacity until it is dropped (sent).
struct Answer<'a> {
    shared: &'a Shared,
    charged: usize,
    bytes: Vec<u8>,
}

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        self.shared.reading.fetch_sub(self.charged, Ordering::SeqCst);
    }
}

impl Table {
    /// The connections whose last missing key is `key` (now set): their waits complete.
    fn woken_by(&mut self, key: &[u8]) -> Vec<Arc<Conn>> {
        let mut woken = Vec::new();
        for id in self.waiting.remove(key).unwrap_or_default() {
            if let Some((left, _, _)) = self.awaited.get_mut(&id) {
                *left -= 1;
                if *left == 0
                    && let Some((_, conn, keys_cost)) = self.awaited.remove(&id)
                {
                    self.bytes -= keys_cost;
                    conn.wake_owed.store(true, Ordering::SeqCst);
                    woken.push(conn);
                }
            }
        }
        woken
    }

    /// Drops the pending wait of connection `id`, if any.
    fn cancel(&mut self, id: u64) {
        if let Some((_, _, keys_cost)) = self.awaited.remove(&id) {
            self.bytes -= keys_cost;
            self.waiting.retain(|_, ids| {
                ids.retain(|&i| i != id);
                !ids.is_empty()
            });
        }
    }
}

impl Conn {
    /// Writes one whole answer.
    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        write_to(&lock(&self.writer), bytes)
    }
}

fn write_to(mut stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

/// What an entry costs against the capacity.
fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

/// A stored counter (decimal text, as `ADD` writes it).
fn parse_i64(v: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| io::Error::new(ErrorKind::InvalidData, "ADD on a value that is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::protocol::Message;

    /// A validated raw connection to `server`.
    fn connect(server: &StoreServer) -> TcpStream {
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&Message::query(query::VALIDATE).u32(VALIDATION_MAGIC).0).unwrap();
        s
    }

    /// Whether the server closed `s` (rather than answering, or keeping it open).
    fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    fn ping(s: &mut TcpStream) {
        s.write_all(&Message::query(query::PING).u32(7).0).unwrap();
        assert_eq!(read_array::<4>(s).unwrap(), 7u32.to_le_bytes());
    }

    #[test]
    fn answers_count_against_the_capacity_before_they_are_allocated() {
        // A peer that asked for one stored value many times in one MULTI_GET made the store
        // allocate the whole answer (131072 times 8 MiB): an abort, or all the machine's memory.
        let server = StoreServer::serve_with_capacity("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let mut a = connect(&server);
        a.write_all(&Message::query(query::SET).bytes(b"/k").bytes(&[7; 256 * 1024]).0).unwrap();
        ping(&mut a);
        let keys = vec![b"/k".to_vec(); 8]; // 2 MiB of answer
        a.write_all(&Message::query(query::MULTI_GET).keys(&keys).0).unwrap();
        assert!(closed(&mut a), "an answer beyond the capacity is refused");
        let mut b = connect(&server);
        let two = vec![b"/k".to_vec(); 2];
        b.write_all(&Message::query(query::MULTI_GET).keys(&two).0).unwrap();
        let mut answer = vec![0u8; 2 * (8 + 256 * 1024)];
        b.read_exact(&mut answer).unwrap();
        assert!(answer[8..8 + 256 * 1024].iter().all(|&x| x == 7));
        b.write_all(&Message::query(query::GET).bytes(b"/k").0).unwrap();
        assert_eq!(read_array::<8>(&mut b).unwrap(), (256u64 * 1024).to_le_bytes());
    }

    #[test]
    fn the_keys_of_pending_waits_count_against_the_capacity() {
        // Each connection could hold a WAIT of up to 1 GiB of keys, none of it counted.
        let server = StoreServer::serve_with_capacity("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let keys = |c: u8| -> Vec<Vec<u8>> { (0..80u8).map(|i| [c, i].repeat(4096)).collect() }; // 640 KiB
        let mut first = connect(&server);
        first.write_all(&Message::query(query::WAIT).keys(&keys(1)).0).unwrap();
        ping(&mut first); // the wait is registered
        let mut second = connect(&server);
        second.write_all(&Message::query(query::WAIT).keys(&keys(2)).0).unwrap();
        assert!(closed(&mut second), "a second 640 KiB wait does not fit in 1 MiB");
        // The first wait ends (cancelled): its keys are no longer counted.
        first.write_all(&Message::query(query::CANCEL_WAIT).0).unwrap();
        assert_eq!(read_array::<1>(&mut first).unwrap(), [WAIT_CANCELED]);
        let mut third = connect(&server);
        let same = vec![vec![3u8; 8192]; 80]; // one key, 80 times: 640 KiB waited for
        third.write_all(&Message::query(query::WAIT).keys(&same).0).unwrap();
        ping(&mut third);
        // The third wait ends (its key is set): its keys are no longer counted either.
        first.write_all(&Message::query(query::SET).bytes(&same[0]).bytes(b"").0).unwrap();
        assert_eq!(read_array::<1>(&mut third).unwrap(), [STOP_WAITING]);
        let mut fourth = connect(&server);
        fourth.write_all(&Message::query(query::WAIT).keys(&keys(4)).0).unwrap();
        ping(&mut fourth);
    }

    #[test]
    fn append_makes_no_value_beyond_the_largest() {
        let server = StoreServer::serve_with_capacity("127.0.0.1:0".parse().unwrap(), 64 << 20).unwrap();
        let mut s = connect(&server);
        let half = vec![1u8; MAX_VALUE_LEN / 2 + 1];
        s.write_all(&Message::query(query::APPEND).bytes(b"/k").bytes(&half).0).unwrap();
        ping(&mut s);
        s.write_all(&Message::query(query::APPEND).bytes(b"/k").bytes(&half).0).unwrap();
        assert!(closed(&mut s));
        let mut t = connect(&server);
        t.write_all(&Message::query(query::GET).bytes(b"/k").0).unwrap();
        assert_eq!(read_array::<8>(&mut t).unwrap(), (half.len() as u64).to_le_bytes());
    }
}
