//! The unique id: what rank 0's `ncclGetUniqueId` hands the other ranks. softgpu's holds where
//! the communicator's hub listens (a loopback TCP port), a random token that only this
//! communicator's ranks know, and the timeout every rank uses.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The bytes of an NCCL unique id.
pub const ID_BYTES: usize = 128;

const MAGIC: &[u8; 8] = b"SGPUNCCL";
const VERSION: u32 = 1;

/// A decoded unique id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniqueId {
    /// Where the hub listens.
    pub addr: SocketAddrV4,
    /// The communicator's secret: a connection without it is refused.
    pub token: u64,
    /// How long a rank waits for the others (to join, and in each collective).
    pub timeout: Duration,
}

impl UniqueId {
    /// The 128 bytes.
    pub fn encode(&self) -> [u8; ID_BYTES] {
        let mut b = [0u8; ID_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.addr.ip().octets());
        b[16..18].copy_from_slice(&self.addr.port().to_le_bytes());
        b[20..28].copy_from_slice(&self.token.to_le_bytes());
        b[28..36].copy_from_slice(&(self.timeout.as_millis() as u64).to_le_bytes());
        b
    }

    /// The id in `b`, or why it is not one of softgpu's.
    pub fn decode(b: &[u8; ID_BYTES]) -> Result<UniqueId, String> {
        if &b[..8] != MAGIC {
            return Err("the unique id was not made by softgpu's ncclGetUniqueId".into());
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if version != VERSION {
            return Err(format!("the unique id has version {version}, softgpu's is {VERSION}"));
        }
        let ip = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let port = u16::from_le_bytes([b[16], b[17]]);
        Ok(UniqueId { addr: SocketAddrV4::new(ip, port), token: word(20), timeout: Duration::from_millis(word(28)) })
    }

    /// The hub's address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.addr)
    }
}

/// A random token: a hash of the time, the process and a counter, by a randomly keyed hasher.
pub fn random_token() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    RandomState::new().hash_one((now.as_nanos(), std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_survives_its_bytes_and_others_are_refused() {
        let id = UniqueId {
            addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40123),
            token: 0x0123_4567_89ab_cdef,
            timeout: Duration::from_millis(2500),
        };
        assert_eq!(UniqueId::decode(&id.encode()), Ok(id));
        assert!(UniqueId::decode(&[0; ID_BYTES]).unwrap_err().contains("not made by softgpu"));
        assert_ne!(random_token(), random_token());
    }
}
