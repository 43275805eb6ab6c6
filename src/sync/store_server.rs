//! The TCP store that rank 0 serves: a table of keys and values that the ranks set and wait for.
//!
//! One thread accepts connections and one thread serves each connection. The store knows each
//! connection's rank (its first message says it), so when a rank's connection closes before it
//! said goodbye (its process died), every wait fails at once with that rank's name instead of
//! running into its timeout.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire::{Request, Response};

/// How often the accepting thread looks for a stop request.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// A running store; stops accepting connections when dropped.
#[derive(Debug)]
pub(crate) struct StoreServer {
    addr: SocketAddr,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    world: usize,
    table: Mutex<Table>,
    changed: Condvar,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Table {
    values: HashMap<String, Vec<u8>>,
    ranks: Vec<Presence>,
}

/// Where a rank stands with the store.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Presence {
    /// Not connected yet.
    Absent,
    /// Connected and working.
    Connected,
    /// Said goodbye: done with the store.
    Finished,
    /// Said goodbye after a failure, for this reason.
    Failed(String),
    /// Its connection closed without a goodbye.
    Lost,
}

impl StoreServer {
    /// Serves a store for `world` ranks on `addr`.
    pub(crate) fn serve(addr: SocketAddr, world: usize) -> io::Result<StoreServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            world,
            table: Mutex::new(Table { values: HashMap::new(), ranks: vec![Presence::Absent; world] }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let accepting = state.clone();
        let acceptor = std::thread::Builder::new()
            .name("qcalib-store".into())
            .spawn(move || accept_loop(&listener, &accepting))?;
        Ok(StoreServer { addr, state, acceptor: Some(acceptor) })
    }

    /// The address the store listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits (at most `timeout`) until no rank is connected and working any more, so that the
    /// store outlives the ranks still reading the last values.
    pub(crate) fn linger(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut table = lock(&self.state.table);
        while table.ranks.contains(&Presence::Connected) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            table = wait(&self.state.changed, table, deadline - now);
        }
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.changed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait<'a>(c: &Condvar, t: MutexGuard<'a, Table>, d: Duration) -> MutexGuard<'a, Table> {
    c.wait_timeout(t, d).map_or_else(|e| e.into_inner().0, |(t, _)| t)
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let serving = state.clone();
                let spawned = std::thread::Builder::new()
                    .name("qcalib-store-conn".into())
                    .spawn(move || serve_connection(stream, &serving));
                if spawned.is_err() {
                    // Out of threads: the connection is dropped, and its rank sees the store go away.
                    continue;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

fn serve_connection(stream: TcpStream, state: &State) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut writer = BufWriter::new(stream);
    let mut rank: Option<usize> = None;
    while let Ok(Some(request)) = Request::read(&mut reader) {
        let response = match (request, rank) {
            (Request::Hello { rank: r, world }, None) => match state.join(r as usize, world as usize) {
                Ok(()) => {
                    rank = Some(r as usize);
                    Response::Ok
                }
                Err(why) => Response::Refused(why),
            },
            (Request::Hello { .. }, Some(_)) => Response::Refused("this connection has already said hello".into()),
            (_, None) => Response::Refused("the first message must say which rank is calling".into()),
            (Request::Set { key, value }, Some(_)) => {
                lock(&state.table).values.insert(key, value);
                state.changed.notify_all();
                Response::Ok
            }
            (Request::Wait { keys, timeout_ms }, Some(_)) => state.wait_for(&keys, Duration::from_millis(timeout_ms)),
            (Request::Delete { key }, Some(_)) => {
                lock(&state.table).values.remove(&key);
                Response::Ok
            }
            (Request::Bye { failure }, Some(r)) => {
                state.set_presence(r, if failure.is_empty() { Presence::Finished } else { Presence::Failed(failure) });
                Response::Ok
            }
        };
        if response.write(&mut writer).is_err() {
            break;
        }
    }
    if let Some(r) = rank {
        let mut table = lock(&state.table);
        if table.ranks[r] == Presence::Connected {
            table.ranks[r] = Presence::Lost;
        }
        drop(table);
        state.changed.notify_all();
    }
}

impl State {
    fn join(&self, rank: usize, world: usize) -> Result<(), String> {
        if world != self.world {
            return Err(format!(
                "rank {rank} was started with WORLD_SIZE={world}, but the store serves {} ranks",
                self.world
            ));
        }
        if rank >= self.world {
            return Err(format!("rank {rank} is not below WORLD_SIZE={}", self.world));
        }
        let mut table = lock(&self.table);
        if table.ranks[rank] != Presence::Absent {
            return Err(format!("rank {rank} has already joined: two processes were started with RANK={rank}"));
        }
        table.ranks[rank] = Presence::Connected;
        Ok(())
    }

    fn set_presence(&self, rank: usize, presence: Presence) {
        lock(&self.table).ranks[rank] = presence;
        self.changed.notify_all();
    }

    fn wait_for(&self, keys: &[String], timeout: Duration) -> Response {
        let deadline = Instant::now() + timeout;
        let mut table = lock(&self.table);
        loop {
            let missing: Vec<u32> =
                (0..keys.len() as u32).filter(|&i| !table.values.contains_key(&keys[i as usize])).collect();
            if missing.is_empty() {
                return Response::Values(
                    keys.iter().map(|k| table.values.get(k).cloned().unwrap_or_default()).collect(),
                );
            }
            // A rank that is gone comes first: a rank that stopped may only have seen it go.
            if let Some(r) = table.ranks.iter().position(|p| *p == Presence::Lost) {
                return Response::RankLost(r as u32);
            }
            for (r, presence) in table.ranks.iter().enumerate() {
                if let Presence::Failed(why) = presence {
                    return Response::RankFailed(r as u32, why.clone());
                }
            }
            let now = Instant::now();
            if now >= deadline || self.stop.load(Ordering::SeqCst) {
                return Response::TimedOut(missing);
            }
            table = wait(&self.changed, table, deadline - now);
        }
    }
}
