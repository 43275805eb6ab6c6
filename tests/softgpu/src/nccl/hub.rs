//! The hub of a communicator: started by `ncclGetUniqueId` in that process, it listens on a
//! loopback port, lets the ranks join, then reduces every collective: each rank sends its
//! buffer, the hub combines them in rank order and sends every rank the same result.
//!
//! Failures are errors on every rank, never a hang: a rank that does not join within the
//! timeout, a rank whose connection ends (its process died, or it destroyed its communicator)
//! while others wait for it, a collective that a rank does not join within the timeout once
//! another rank has, ranks that call different collectives. The hub then tells every rank why
//! and ends.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::reduce;
use super::unique_id::{UniqueId, random_token};
use super::wire::{self, Contribution, Message, RecvError};

/// How long a new connection may take to say who it is.
const HELLO_WAIT: Duration = Duration::from_secs(10);

/// Starts a hub on a free loopback port; the unique id that leads to it.
pub fn start(timeout: Duration) -> std::io::Result<UniqueId> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    let addr = match listener.local_addr()? {
        std::net::SocketAddr::V4(a) => a,
        std::net::SocketAddr::V6(_) => return Err(std::io::Error::other("the hub did not bind an IPv4 address")),
    };
    let id = UniqueId { addr, token: random_token(), timeout };
    std::thread::Builder::new().name("softgpu-nccl-hub".into()).spawn(move || run(listener, id))?;
    Ok(id)
}

fn run(listener: TcpListener, id: UniqueId) {
    let Some(mut ranks) = join(&listener, &id) else { return };
    drop(listener);
    for r in ranks.iter_mut() {
        let _ = wire::send(r, &Message::Ready);
    }
    if let Err(why) = serve(&ranks, id.timeout) {
        for r in ranks.iter_mut() {
            let _ = wire::send(r, &Message::Error(why.clone()));
        }
    }
}

/// Waits until every rank has joined; their connections in rank order, or `None` after telling
/// the ranks that came why the communicator failed.
fn join(listener: &TcpListener, id: &UniqueId) -> Option<Vec<TcpStream>> {
    let deadline = Instant::now() + id.timeout;
    let mut joined: Vec<Option<TcpStream>> = Vec::new();
    let fail = |joined: &mut Vec<Option<TcpStream>>, why: String| {
        for s in joined.iter_mut().flatten() {
            let _ = wire::send(s, &Message::Error(why.clone()));
        }
        None
    };
    if listener.set_nonblocking(true).is_err() {
        return None;
    }
    loop {
        if !joined.is_empty() && joined.iter().all(Option::is_some) {
            return Some(joined.into_iter().flatten().collect());
        }
        if Instant::now() >= deadline {
            if joined.is_empty() {
                return None; // nobody came: nobody to tell
            }
            let missing: Vec<String> =
                joined.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(r, _)| r.to_string()).collect();
            let why = format!(
                "softgpu NCCL: rank(s) {} of {} did not join the communicator within {:.1} s",
                missing.join(", "),
                joined.len(),
                id.timeout.as_secs_f64()
            );
            return fail(&mut joined, why);
        }
        let mut stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        let hello = wire::recv(&mut stream, Some(Instant::now() + HELLO_WAIT));
        let Ok(Message::Hello { token, rank, nranks }) = hello else { continue }; // not one of ours
        if token != id.token {
            continue;
        }
        let (rank, nranks) = (rank as usize, nranks as usize);
        if joined.is_empty() {
            joined = (0..nranks).map(|_| None).collect();
        }
        if nranks != joined.len() {
            let why = format!(
                "softgpu NCCL: rank {rank} joined a communicator of {nranks} ranks, others one of {}",
                joined.len()
            );
            joined.push(Some(stream));
            return fail(&mut joined, why);
        }
        if joined[rank].is_some() {
            let why = format!("softgpu NCCL: two ranks joined as rank {rank}");
            joined.push(Some(stream));
            return fail(&mut joined, why);
        }
        joined[rank] = Some(stream);
    }
}

/// What a reader thread reports.
enum Event {
    Message(usize, Message),
    Gone(usize, String),
}

/// Serves collectives until every rank has left; `Err` with the reason the communicator failed.
fn serve(ranks: &[TcpStream], timeout: Duration) -> Result<(), String> {
    let n = ranks.len();
    let (tx, rx) = mpsc::channel();
    for (r, s) in ranks.iter().enumerate() {
        let mut s = s.try_clone().map_err(|e| format!("softgpu NCCL: {e}"))?;
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("softgpu-nccl-hub-rank{r}"))
            .spawn(move || {
                loop {
                    match wire::recv(&mut s, None) {
                        Ok(m) => {
                            let bye = m == Message::Bye;
                            if tx.send(Event::Message(r, m)).is_err() || bye {
                                return;
                            }
                        }
                        Err(e) => {
                            let why = match e {
                                RecvError::Closed => "its connection closed (its process ended?)".to_string(),
                                e => e.to_string(),
                            };
                            let _ = tx.send(Event::Gone(r, why));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| format!("softgpu NCCL: {e}"))?;
    }
    drop(tx);
    let mut pending: Vec<Option<Contribution>> = vec![None; n];
    let mut left = vec![false; n];
    let mut first: Option<Instant> = None;
    let mut next_seq = 0u64;
    loop {
        let event = match first {
            None => rx.recv().map_err(|_| "softgpu NCCL: the hub lost its readers".to_string())?,
            Some(t) => match rx.recv_timeout((t + timeout).saturating_duration_since(Instant::now())) {
                Ok(e) => e,
                Err(_) => {
                    let missing: Vec<String> =
                        (0..n).filter(|&r| pending[r].is_none()).map(|r| r.to_string()).collect();
                    return Err(format!(
                        "softgpu NCCL: all-reduce #{next_seq}: rank(s) {} did not join within {:.1} s",
                        missing.join(", "),
                        timeout.as_secs_f64()
                    ));
                }
            },
        };
        match event {
            Event::Gone(r, why) if !left[r] => {
                return Err(format!("softgpu NCCL: rank {r} is gone: {why}"));
            }
            Event::Gone(..) => {}
            Event::Message(r, Message::Bye) => {
                left[r] = true;
                if left.iter().all(|&l| l) {
                    return Ok(());
                }
                if first.is_some() {
                    return Err(format!(
                        "softgpu NCCL: rank {r} destroyed its communicator while others wait in all-reduce #{next_seq}"
                    ));
                }
            }
            Event::Message(r, Message::Contribution(c)) => {
                if let Some(l) = left.iter().position(|&l| l) {
                    return Err(format!(
                        "softgpu NCCL: all-reduce #{}: rank {l} has destroyed its communicator",
                        c.seq
                    ));
                }
                if c.seq != next_seq || pending[r].is_some() {
                    return Err(format!(
                        "softgpu NCCL: rank {r} sent all-reduce #{} while the communicator is at #{next_seq}",
                        c.seq
                    ));
                }
                pending[r] = Some(c);
                first.get_or_insert_with(Instant::now);
                if pending.iter().all(Option::is_some) {
                    let all: Vec<Contribution> = pending.iter_mut().filter_map(Option::take).collect();
                    let result = reduce_all(&all)?;
                    for (r, s) in ranks.iter().enumerate() {
                        let mut s = s;
                        wire::send(&mut s, &Message::Result { seq: next_seq, data: result.clone() })
                            .map_err(|e| format!("softgpu NCCL: sending rank {r} the result: {e}"))?;
                    }
                    first = None;
                    next_seq += 1;
                }
            }
            Event::Message(r, m) => return Err(format!("softgpu NCCL: rank {r} sent an unexpected {m:?}")),
        }
    }
}

/// The result of one all-reduce, after checking that every rank called the same one.
fn reduce_all(all: &[Contribution]) -> Result<Vec<u8>, String> {
    let c0 = &all[0];
    for (r, c) in all.iter().enumerate() {
        if (c.dtype, c.op, c.count, c.data.len()) != (c0.dtype, c0.op, c0.count, c0.data.len()) {
            return Err(format!(
                "softgpu NCCL: all-reduce #{}: rank 0 reduces {} elements of type {} with op {}, rank {r} {} of type {} \
                 with op {}",
                c0.seq, c0.count, c0.dtype, c0.op, c.count, c.dtype, c.op
            ));
        }
    }
    let buffers: Vec<Vec<u8>> = all.iter().map(|c| c.data.clone()).collect();
    Ok(reduce::all_reduce(&buffers, c0.dtype, c0.op))
}
