//! Where a rank learns who it is and where the others are: the environment variables that
//! `torchrun` sets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::limits::MAX_WORLD_SIZE;
use super::timeout::{TIMEOUT_VAR, parse_timeout};
use crate::error::{Error, Result};

/// Who serves the TCP store the ranks meet in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreRole {
    /// Rank 0 serves qcalib's [`StoreServer`](super::StoreServer) on `MASTER_PORT`, the other
    /// ranks are its clients (the plain variables, or a launcher without an agent store).
    RankZero,
    /// A `torchrun` agent serves it on `MASTER_ADDR:MASTER_PORT`
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank is a client, and qcalib's keys go
    /// under `/worker/attempt_{restart_count}/`, so that they never meet another job's.
    Agent {
        /// `TORCHELASTIC_RESTART_COUNT`: which attempt of the job this is.
        restart_count: u64,
    },
}

/// One rank's place in a multi-process run, read from the variables `torchrun` sets:
/// `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (the GPU ordinal on its machine; 0 when unset),
/// `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE`, `TORCHELASTIC_RESTART_COUNT`,
/// and qcalib's [`QCALIB_SYNC_TIMEOUT`](super::TIMEOUT_VAR). `WORLD_SIZE` above 65536
/// ([`MAX_WORLD_SIZE`](super::limits::MAX_WORLD_SIZE)) is a configuration error.
///
/// Under `torchrun` (`TORCHELASTIC_USE_AGENT_STORE=True`) every rank is a client of the store
/// torchrun's agent serves at `MASTER_ADDR:MASTER_PORT`. Otherwise rank 0 serves one there (on
/// `MASTER_ADDR` when it is a loopback address, else on every interface of its address family)
/// and the other ranks connect to it. The store has no authentication, like PyTorch's: use it
/// on trusted networks only.
///
/// ```
/// use qcalib::sync::{Rendezvous, StoreRole};
/// let vars = [("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"),
///             ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")];
/// let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
/// let rv = Rendezvous::from_vars(get)?.expect("a multi-rank run");
/// assert_eq!((rv.rank, rv.world_size, rv.local_rank), (1, 4, 1));
/// assert_eq!(rv.store_addr(), "127.0.0.1:29500");
/// assert_eq!(rv.store, StoreRole::RankZero); // no torchrun agent: rank 0 serves
/// let agent = |k: &str| match k {
///     "TORCHELASTIC_USE_AGENT_STORE" => Some("True".to_string()),
///     "TORCHELASTIC_RESTART_COUNT" => Some("2".to_string()),
///     _ => get(k),
/// };
/// assert_eq!(Rendezvous::from_vars(agent)?.unwrap().store, StoreRole::Agent { restart_count: 2 });
/// // Without WORLD_SIZE, or with WORLD_SIZE=1, there is nothing to join.
/// assert_eq!(Rendezvous::from_vars(|_| None)?, None);
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    /// This rank, `0 .. world_size`.
    pub rank: usize,
    /// The number of ranks, at least 2.
    pub world_size: usize,
    /// The rank's index on its machine: its GPU ordinal for NCCL.
    pub local_rank: usize,
    /// The host of rank 0.
    pub master_addr: String,
    /// The port of rank 0's store.
    pub master_port: u16,
    /// How long every wait for other ranks may take.
    pub timeout: Duration,
    /// Who serves the store.
    pub store: StoreRole,
}

impl Rendezvous {
    /// The rendezvous of this process, from its environment; `None` for a single rank
    /// (`WORLD_SIZE` unset or 1). Missing or malformed variables are errors naming them.
    pub fn from_env() -> Result<Option<Rendezvous>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Rendezvous::from_env`] with the variables that `var` returns.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Rendezvous>> {
        let number = |name: &'static str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::config(name, format!("`{v}` is not a non-negative integer"))),
            }
        };
        let Some(world_size) = number("WORLD_SIZE")? else { return Ok(None) };
        let rank = number("RANK")?;
        if world_size == 0 {
            return Err(Error::config("WORLD_SIZE", "must be at least 1"));
        }
        if world_size > MAX_WORLD_SIZE {
            return Err(Error::config(
                "WORLD_SIZE",
                format!("{world_size} is more than the {MAX_WORLD_SIZE} ranks qcalib supports"),
            ));
        }
        if world_size == 1 {
            return match rank {
                None | Some(0) => Ok(None),
                Some(r) => Err(Error::config("RANK", format!("{r} is not below WORLD_SIZE=1"))),
            };
        }
        let rank = rank.ok_or_else(|| Error::config("RANK", "must be set when WORLD_SIZE is above 1"))?;
        if rank >= world_size {
            return Err(Error::config("RANK", format!("{rank} is not below WORLD_SIZE={world_size}")));
        }
        let local_rank = number("LOCAL_RANK")?.unwrap_or(0);
        if local_rank >= MAX_WORLD_SIZE {
            return Err(Error::config("LOCAL_RANK", format!("{local_rank} is not below {MAX_WORLD_SIZE}")));
        }
        let master_addr = var("MASTER_ADDR")
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::config("MASTER_ADDR", "must be set when WORLD_SIZE is above 1"))?;
        let port =
            var("MASTER_PORT").ok_or_else(|| Error::config("MASTER_PORT", "must be set when WORLD_SIZE is above 1"))?;
        let master_port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| Error::config("MASTER_PORT", format!("`{port}` is not a port number (1 to 65535)")))?;
        let timeout = parse_timeout(var(TIMEOUT_VAR).as_deref())?;
        let store = match var("TORCHELASTIC_USE_AGENT_STORE").as_deref().map(str::trim) {
            Some("True") => {
                let count = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
                let restart_count =
                    count.trim().parse::<u64>().ok().filter(|&c| c <= u64::from(u32::MAX)).ok_or_else(|| {
                        Error::config("TORCHELASTIC_RESTART_COUNT", format!("`{count}` is not a restart count"))
                    })?;
                StoreRole::Agent { restart_count }
            }
            _ => StoreRole::RankZero,
        };
        Ok(Some(Rendezvous { rank, world_size, local_rank, master_addr, master_port, timeout, store }))
    }

    /// `MASTER_ADDR:MASTER_PORT`, an IPv6 address in brackets.
    pub fn store_addr(&self) -> String {
        let host = self.master_addr.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.master_port)
        } else {
            format!("{host}:{}", self.master_port)
        }
    }

    /// Where rank 0 serves the store: `MASTER_ADDR` itself when it is a loopback address, else
    /// the unspecified address of its family (every interface).
    pub(crate) fn bind_addr(&self) -> Result<SocketAddr> {
        let resolved = self.store_addr().to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
            Error::config("MASTER_ADDR", format!("`{}` does not resolve to an address", self.master_addr))
        })?;
        Ok(match resolved.ip() {
            ip if ip.is_loopback() => resolved,
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), self.master_port),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), self.master_port),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(vars: &[(&str, &str)]) -> Result<Option<Rendezvous>> {
        Rendezvous::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn reads_the_torchrun_variables() {
        let r = rv(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "3"),
            ("MASTER_ADDR", "::1"),
            ("MASTER_PORT", "1234"),
            ("QCALIB_SYNC_TIMEOUT", "0.5"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((r.rank, r.world_size, r.local_rank, r.timeout), (2, 3, 0, Duration::from_millis(500)));
        assert_eq!(r.store_addr(), "[::1]:1234");
        assert_eq!(r.bind_addr().unwrap(), "[::1]:1234".parse().unwrap());
        assert_eq!(rv(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        assert_eq!(r.store, StoreRole::RankZero);
        let max = MAX_WORLD_SIZE.to_string();
        let last = (MAX_WORLD_SIZE - 1).to_string();
        let big = rv(&[("RANK", &last), ("WORLD_SIZE", &max), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")]);
        assert_eq!(big.unwrap().unwrap().world_size, MAX_WORLD_SIZE);
        let agent = rv(&[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "localhost"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]);
        assert_eq!(agent.unwrap().unwrap().store, StoreRole::Agent { restart_count: 0 });
    }

    #[test]
    fn names_what_is_wrong() {
        let base = [("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")];
        let cases: [(&[(&str, &str)], &str); 10] = [
            (&[("WORLD_SIZE", "two")], "WORLD_SIZE"),
            (&[("WORLD_SIZE", "2")], "RANK"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")], "RANK"),
            (&[("WORLD_SIZE", "1"), ("RANK", "1")], "RANK"),
            (&[("WORLD_SIZE", "0")], "WORLD_SIZE"),
            (&[("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "-1")], "LOCAL_RANK"),
            (&[("WORLD_SIZE", "1000000000000"), ("RANK", "0")], "WORLD_SIZE"),
            (&[("WORLD_SIZE", "65537"), ("RANK", "65536")], "WORLD_SIZE"),
            (&[("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "70000")], "LOCAL_RANK"),
            (
                &[
                    ("WORLD_SIZE", "2"),
                    ("RANK", "1"),
                    ("TORCHELASTIC_USE_AGENT_STORE", "True"),
                    ("TORCHELASTIC_RESTART_COUNT", "x"),
                ],
                "TORCHELASTIC_RESTART_COUNT",
            ),
        ];
        for (vars, name) in cases {
            let all: Vec<_> = vars.iter().chain(&base).copied().collect();
            let e = rv(&all).unwrap_err().to_string();
            assert!(e.contains(name), "{vars:?}: {e}");
        }
        let e = rv(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")]).unwrap_err().to_string();
        assert!(e.contains("MASTER_PORT"), "{e}");
        let e = rv(&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1")]).unwrap_err().to_string();
        assert!(e.contains("MASTER_ADDR"), "{e}");
    }
}
