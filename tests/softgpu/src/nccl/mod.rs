//! NCCL in the same library: communicators whose ranks (threads of one process or separate
//! processes on one machine) meet through the unique id, and all-reduce in stream order.
//!
//! `ncclGetUniqueId` starts a *hub* in the calling process ([`hub`]): a thread listening on a
//! loopback port, named in the id together with a random token and the timeout. Every rank
//! connects to it; each all-reduce sends the rank's buffer and receives the result, which the hub
//! computes once, in rank order, so that every rank gets the same bits. Every wait has the id's
//! timeout (`SOFTGPU_NCCL_TIMEOUT` seconds when the id was made, 300 by default): a rank that never
//! comes, or whose process ends, is an error on every other rank, never a hang.
//!
//! A collective that fails on the stream (a peer gone) breaks the communicator (its asynchronous
//! error) and, as a failed kernel would, makes the stream's context error sticky
//! (`CUDA_ERROR_LAUNCH_FAILED`), so that the data never looks reduced when it is not.

pub mod comm;
pub mod error;
pub mod hub;
pub mod reduce;
pub mod unique_id;
pub mod wire;

use std::sync::OnceLock;
use std::time::Duration;

use self::comm::Comm;
use self::unique_id::UniqueId;
use crate::device::handles::Registry;

/// The NCCL version softgpu reports: 2.30.0 (`ncclGetVersion`'s code, `major * 10000 + minor * 100
/// + patch`), the version of cudarc's `nccl` bindings.
pub const VERSION_CODE: i32 = 23_000;

/// The variable that sets the timeout of the ids made from then on (seconds).
pub const TIMEOUT_VAR: &str = "SOFTGPU_NCCL_TIMEOUT";

/// The timeout when `SOFTGPU_NCCL_TIMEOUT` is not set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The timeout of a new unique id: `SOFTGPU_NCCL_TIMEOUT`, else [`DEFAULT_TIMEOUT`]; an error for a
/// value that is not a positive number of seconds.
pub fn timeout_from_env() -> Result<Duration, String> {
    match std::env::var(TIMEOUT_VAR) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!("{TIMEOUT_VAR}={v:?} is not a positive number of seconds")),
        },
    }
}

/// A new unique id whose ranks wait at most `timeout` for each other (what `ncclGetUniqueId`
/// does, with the timeout given rather than read from the environment).
pub fn unique_id(timeout: Duration) -> std::io::Result<UniqueId> {
    hub::start(timeout)
}

/// The communicators, by handle.
pub fn comms() -> &'static Registry<Comm> {
    static COMMS: OnceLock<Registry<Comm>> = OnceLock::new();
    COMMS.get_or_init(|| Registry::new(0xcc))
}
