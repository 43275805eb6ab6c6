//! The limits the TCP store and the exchanges between ranks enforce: every length or count a
//! peer sends is checked against one of these (or against what the local rank expects) before
//! anything is allocated for it.

use std::time::Duration;

/// The largest `WORLD_SIZE` (and so the largest `RANK + 1`) qcalib accepts: 2^16 ranks.
pub const MAX_WORLD_SIZE: usize = 1 << 16;

/// The longest key the store accepts, in bytes (PyTorch's libuv store: 8 KiB).
pub const MAX_KEY_LEN: usize = 8 * 1024;

/// The largest value the store accepts in one `set`, in bytes (PyTorch's libuv store: 8 MiB).
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;

/// The most keys one request may name (PyTorch's libuv store: 128 Ki).
pub const MAX_KEYS_PER_REQUEST: usize = 128 * 1024;

/// The largest piece of a rank's contribution stored under one key: below [`MAX_VALUE_LEN`], so
/// that a store served by PyTorch takes it too. Larger contributions go in several pieces.
pub const CHUNK_LEN: usize = 4 * 1024 * 1024;

/// The most bytes of keys and values qcalib's store holds at once, unless
/// [`STORE_BYTES_VAR`] says otherwise: a `set` beyond it closes the connection that sent it.
pub const DEFAULT_STORE_BYTES: usize = 1 << 30;

/// The environment variable that sets the most bytes qcalib's store holds (a whole number of
/// bytes, at least 1 MiB).
pub const STORE_BYTES_VAR: &str = "QCALIB_STORE_MAX_BYTES";

/// How long a new connection to qcalib's store may take to send the validation handshake
/// (PyTorch's magic number, 5 bytes) before it is closed.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The most connections that have not completed the handshake yet; further ones are closed at
/// once.
pub const MAX_PENDING_CONNECTIONS: usize = 32;

/// The most validated connections qcalib's store serves at once; further ones are closed.
pub const MAX_CONNECTIONS: usize = 1024;

/// The most channels (per observer) whose statistics a rank accepts from its peers when it has
/// none of its own to compare with (a per-channel observer's range before its first batch).
pub const MAX_SYNC_CHANNELS: usize = 1 << 24;
