//! A rank's communicator: its connection to the hub, its collectives (run in stream order, on
//! the stream's thread), its asynchronous error.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cudarc::nccl::sys::ncclResult_t;

use super::error::NcclError;
use super::unique_id::UniqueId;
use super::wire::{self, Contribution, Message, RecvError};

/// How long past the communicator's timeout a rank waits for the hub's answer (the hub itself
/// gives up after the timeout and says so).
const ANSWER_MARGIN: Duration = Duration::from_secs(30);

/// One rank of a communicator.
#[derive(Debug)]
pub struct Comm {
    /// This rank.
    pub rank: usize,
    /// The number of ranks.
    pub nranks: usize,
    /// The device of the rank (its current context's when it joined).
    pub device: usize,
    id: UniqueId,
    link: Mutex<Link>,
    joined: Condvar,
    /// A second handle of the connection, to shut it down while a collective holds `link`.
    socket: Mutex<Option<TcpStream>>,
    /// Collectives enqueued so far (the next one's number).
    next_seq: AtomicU64,
    async_error: Mutex<Option<NcclError>>,
}

#[derive(Debug)]
enum Link {
    /// Joining (in a group, the join finishes in the background).
    Joining,
    /// Joined: the connection to the hub.
    Ready(TcpStream),
    /// Failed or aborted.
    Broken(NcclError),
}

impl Comm {
    /// A rank that has not joined yet.
    pub fn new(id: UniqueId, rank: usize, nranks: usize, device: usize) -> Comm {
        Comm {
            rank,
            nranks,
            device,
            id,
            link: Mutex::new(Link::Joining),
            joined: Condvar::new(),
            socket: Mutex::new(None),
            next_seq: AtomicU64::new(0),
            async_error: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the communicator: returns once every rank has joined, or with the error that says
    /// why they did not (within the id's timeout).
    pub fn join(&self) -> Result<(), NcclError> {
        let result = self.connect().and_then(|stream| {
            let second = stream.try_clone().map_err(|e| NcclError::system(format!("softgpu NCCL: {e}")))?;
            Ok((stream, second))
        });
        let mut link = self.lock();
        let outcome = match result {
            Ok((stream, second)) => {
                *self.socket.lock().unwrap_or_else(PoisonError::into_inner) = Some(second);
                *link = Link::Ready(stream);
                Ok(())
            }
            Err(e) => {
                *link = Link::Broken(e.clone());
                *self.async_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
                Err(e)
            }
        };
        self.joined.notify_all();
        outcome
    }

    fn connect(&self) -> Result<TcpStream, NcclError> {
        let deadline = Instant::now() + self.id.timeout;
        let who = format!("softgpu NCCL rank {} of {}", self.rank, self.nranks);
        let mut stream =
            TcpStream::connect_timeout(&self.id.socket_addr(), self.id.timeout.max(Duration::from_millis(1))).map_err(
                |e| {
                    NcclError::system(format!(
                        "{who}: cannot reach the communicator's hub at {} (made by ncclGetUniqueId in another process \
                     that has ended, or an id that is too old): {e}",
                        self.id.addr
                    ))
                },
            )?;
        let _ = stream.set_nodelay(true);
        let hello = Message::Hello { token: self.id.token, rank: self.rank as u32, nranks: self.nranks as u32 };
        wire::send(&mut stream, &hello).map_err(|e| NcclError::system(format!("{who}: {e}")))?;
        match wire::recv(&mut stream, Some(deadline + ANSWER_MARGIN)) {
            Ok(Message::Ready) => Ok(stream),
            Ok(Message::Error(why)) => Err(NcclError::remote(format!("{who}: {why}"))),
            Ok(m) => Err(NcclError::system(format!("{who}: the hub answered {m:?}"))),
            Err(RecvError::Timeout) => Err(NcclError::timeout(format!(
                "{who}: the other ranks did not join within {:.1} s",
                self.id.timeout.as_secs_f64()
            ))),
            Err(e) => Err(NcclError::remote(format!("{who}: the communicator's hub is gone: {e}"))),
        }
    }

    /// The number the next collective gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs all-reduce `seq` of this rank's `data`: the reduced bytes, the same on every rank.
    /// Waits for a join in progress first. A failure breaks the communicator (and is its
    /// asynchronous error).
    pub fn all_reduce(&self, seq: u64, dtype: u32, op: u32, count: u64, data: Vec<u8>) -> Result<Vec<u8>, NcclError> {
        let mut link = self.lock();
        while matches!(*link, Link::Joining) {
            link = self.joined.wait(link).unwrap_or_else(PoisonError::into_inner);
        }
        let who = format!("softgpu NCCL rank {} of {}: all-reduce #{seq}", self.rank, self.nranks);
        let result = match &mut *link {
            Link::Joining => unreachable!("waited above"),
            Link::Broken(e) => Err(NcclError::new(e.code, format!("{who}: the communicator is broken: {}", e.message))),
            Link::Ready(stream) => {
                let len = data.len();
                let sent = wire::send(stream, &Message::Contribution(Contribution { seq, dtype, op, count, data }));
                match sent {
                    Err(e) => Err(NcclError::remote(format!("{who}: the hub is gone: {e}"))),
                    Ok(()) => match wire::recv(stream, Some(Instant::now() + self.id.timeout + ANSWER_MARGIN)) {
                        Ok(Message::Result { seq: s, data }) if s == seq && data.len() == len => Ok(data),
                        Ok(Message::Error(why)) => Err(NcclError::remote(format!("{who}: {why}"))),
                        Ok(m) => Err(NcclError::system(format!("{who}: the hub answered {m:?}"))),
                        Err(RecvError::Timeout) => Err(NcclError::timeout(format!("{who}: no answer from the hub"))),
                        Err(e) => Err(NcclError::remote(format!("{who}: the communicator's hub is gone: {e}"))),
                    },
                }
            }
        };
        if let Err(e) = &result {
            if let Link::Ready(stream) = &*link {
                let _ = stream.shutdown(Shutdown::Both);
            }
            *link = Link::Broken(e.clone());
            *self.async_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.clone());
        }
        result
    }

    /// The asynchronous error (`ncclCommGetAsyncError`): `ncclInProgress` while joining.
    pub fn async_error(&self) -> ncclResult_t {
        if matches!(*self.lock(), Link::Joining) {
            return ncclResult_t::ncclInProgress;
        }
        self.async_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(ncclResult_t::ncclSuccess, |e| e.code)
    }

    /// Aborts: a collective blocked on the hub fails at once, later ones fail.
    pub fn abort(&self) {
        // Not through `link`: a collective may hold it while it waits for the hub.
        if let Some(s) = self.socket.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Comm {
    /// Leaves the communicator: the hub learns that this rank is done (a rank that leaves while
    /// others wait for it in a collective fails them).
    fn drop(&mut self) {
        if let Link::Ready(stream) = &mut *self.lock() {
            let _ = wire::send(stream, &Message::Bye);
            let _ = stream.shutdown(Shutdown::Write);
        }
    }
}
