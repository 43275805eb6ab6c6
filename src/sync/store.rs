//! A rank's connection to the TCP store served by rank 0.

use std::fmt;
use std::io::{BufReader, BufWriter};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::contribution::name_ranks;
use super::wire::{Request, Response};
use crate::error::{Error, Result};

/// Extra time a client gives the store to answer beyond the wait it asked for, before it
/// decides that the store (rank 0) is frozen.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// The pause between two tries to reach a store that is not up yet (rank 0 may start later).
const CONNECT_RETRY: Duration = Duration::from_millis(100);

/// A connection to the key-value store that rank 0 serves (the rendezvous of the ranks, the
/// exchanges of [`TcpGroup`](super::TcpGroup), the NCCL unique id).
///
/// Values are bytes; [`TcpStore::get`] waits until its key is set, at most the store's timeout.
/// Every request fails with an [`Error::Sync`] naming rank 0 when the store is gone.
pub struct TcpStore {
    rank: usize,
    world: usize,
    addr: String,
    timeout: Duration,
    conn: Mutex<Conn>,
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

/// Why a wait for keys failed.
#[derive(Debug)]
pub(crate) enum WaitFailure {
    /// The keys at these indices were still missing when the wait timed out.
    TimedOut(Vec<usize>),
    /// This rank's process is gone: its connection to the store closed without a goodbye.
    RankLost(usize),
    /// This rank stopped after a failure, for this reason.
    RankFailed(usize, String),
    /// The store itself failed.
    Store(Error),
}

impl TcpStore {
    /// Connects rank `rank` of `world` to the store at `addr` (`host:port`), trying again until
    /// `timeout` has passed when the store is not up yet.
    pub fn connect(addr: &str, rank: usize, world: usize, timeout: Duration) -> Result<TcpStore> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            let attempt = addr
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut addrs| addrs.next().ok_or_else(|| "the address resolves to nothing".to_string()))
                .and_then(|a| {
                    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
                    TcpStream::connect_timeout(&a, left).map_err(|e| e.to_string())
                });
            match attempt {
                Ok(stream) => break stream,
                Err(why) if Instant::now() + CONNECT_RETRY >= deadline => {
                    return Err(Error::Sync(format!(
                        "rank {rank} could not reach the store of rank 0 at {addr} within {:.1} s: {why} \
                         (is rank 0 running, with the same MASTER_ADDR and MASTER_PORT?)",
                        timeout.as_secs_f64()
                    )));
                }
                Err(_) => std::thread::sleep(CONNECT_RETRY),
            }
        };
        let io = |e: std::io::Error| Error::Sync(format!("rank {rank}: the connection to the store at {addr}: {e}"));
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout + ANSWER_GRACE)).map_err(io)?;
        stream.set_write_timeout(Some(timeout + ANSWER_GRACE)).map_err(io)?;
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        let store = TcpStore {
            rank,
            world,
            addr: addr.to_string(),
            timeout,
            conn: Mutex::new(Conn { reader, writer: BufWriter::new(stream) }),
        };
        let hello = Request::Hello {
            rank: u32::try_from(rank).map_err(|_| Error::config("RANK", "is too large"))?,
            world: u32::try_from(world).map_err(|_| Error::config("WORLD_SIZE", "is too large"))?,
        };
        match store.call(&hello)? {
            Response::Ok => Ok(store),
            Response::Refused(why) => Err(Error::Sync(format!("the store at {addr} refused rank {rank}: {why}"))),
            other => Err(store.unexpected(&other)),
        }
    }

    /// The timeout of every wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Stores `value` under `key`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        self.expect_ok(&Request::Set { key: key.into(), value: value.to_vec() })
    }

    /// The value of `key`, once some rank has set it (at most the timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self.wait(&[key.to_string()], self.timeout) {
            Ok(mut values) => Ok(values.pop().unwrap_or_default()),
            Err(WaitFailure::TimedOut(_)) => Err(Error::Sync(format!(
                "rank {}: the key {key:?} was not set within {:.1} s",
                self.rank,
                self.timeout.as_secs_f64()
            ))),
            Err(WaitFailure::RankLost(r)) => Err(Error::Sync(lost_message(r))),
            Err(WaitFailure::RankFailed(r, why)) => Err(Error::Sync(failed_message(r, &why))),
            Err(WaitFailure::Store(e)) => Err(e),
        }
    }

    /// Forgets `key`.
    pub fn delete(&self, key: &str) -> Result<()> {
        self.expect_ok(&Request::Delete { key: key.into() })
    }

    /// The values of `keys` in order, once all are set: at most `timeout`, and no longer once
    /// some rank's process is gone.
    pub(crate) fn wait(&self, keys: &[String], timeout: Duration) -> Result<Vec<Vec<u8>>, WaitFailure> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        match self.call(&Request::Wait { keys: keys.to_vec(), timeout_ms }).map_err(WaitFailure::Store)? {
            Response::Values(values) if values.len() == keys.len() => Ok(values),
            Response::TimedOut(missing) => {
                Err(WaitFailure::TimedOut(missing.into_iter().map(|i| i as usize).collect()))
            }
            Response::RankLost(r) => Err(WaitFailure::RankLost(r as usize)),
            Response::RankFailed(r, why) => Err(WaitFailure::RankFailed(r as usize, why)),
            other => Err(WaitFailure::Store(self.unexpected(&other))),
        }
    }

    /// Tells the store this rank is done, so that its connection closing is no failure:
    /// `failure` is `None` when it finished well, else why it stopped.
    pub(crate) fn goodbye(&self, failure: Option<&str>) -> Result<()> {
        self.expect_ok(&Request::Bye { failure: failure.unwrap_or_default().to_string() })
    }

    fn expect_ok(&self, request: &Request) -> Result<()> {
        match self.call(request)? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sends one request and reads its answer.
    fn call(&self, request: &Request) -> Result<Response> {
        let mut conn = self.lock();
        let lost = |why: String| {
            Error::Sync(format!(
                "rank {} lost the connection to the store of rank 0 at {} ({why}): rank 0's process has ended \
                 or is unreachable",
                self.rank, self.addr
            ))
        };
        request.write(&mut conn.writer).map_err(|e| lost(e.to_string()))?;
        match Response::read(&mut conn.reader) {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(lost("connection closed".into())),
            Err(e) => Err(lost(e.to_string())),
        }
    }

    fn unexpected(&self, response: &Response) -> Error {
        match response {
            Response::Refused(why) => Error::Sync(format!("the store at {} refused a request: {why}", self.addr)),
            _ => Error::Sync(format!("the store at {} answered out of turn", self.addr)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The error text for a rank whose process is gone.
pub(crate) fn lost_message(rank: usize) -> String {
    format!(
        "{} left: its connection to the store closed before it finished (its process exited, failed or was killed)",
        name_ranks(&[rank])
    )
}

/// The error text for a rank that stopped after a failure.
pub(crate) fn failed_message(rank: usize, why: &str) -> String {
    format!("{} stopped: {why}", name_ranks(&[rank]))
}

impl fmt::Debug for TcpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStore")
            .field("addr", &self.addr)
            .field("rank", &self.rank)
            .field("world_size", &self.world)
            .finish()
    }
}
