//! Opening a batch file: regular files only, read into memory or memory-mapped.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::path::Path;

/// The bytes of a batch file.
pub(crate) enum Bytes {
    /// Read into memory.
    Read(Vec<u8>),
    /// Memory-mapped (read-only, shared with the page cache).
    Mapped(memmap2::Mmap),
}

impl std::fmt::Debug for Bytes {
    /// The kind and the length (not the bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bytes::Read(v) => write!(f, "Read({} bytes)", v.len()),
            Bytes::Mapped(m) => write!(f, "Mapped({} bytes)", m.len()),
        }
    }
}

impl Bytes {
    /// All the bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Read(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

/// Opens `path` for reading if it is a regular file (following symbolic links), and gives its
/// length. Devices, FIFOs, sockets and directories are refused at once by what they are, before
/// anything is read (a FIFO is opened without blocking, should one replace the file between the
/// check and the open).
fn open_regular(path: &Path) -> Result<(File, u64), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    check_regular(&meta)?;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    check_regular(&meta)?;
    Ok((file, meta.len()))
}

/// An error naming what the file is when it is not a regular file.
fn check_regular(meta: &Metadata) -> Result<(), String> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "a directory"
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_char_device() {
                "a character device"
            } else if t.is_block_device() {
                "a block device"
            } else if t.is_fifo() {
                "a FIFO (named pipe)"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        }
        #[cfg(not(unix))]
        "not a regular file"
    };
    Err(format!("is {what}, not a regular file; qcalib reads batches from regular files"))
}

/// Reads a regular file into memory (its length is allocated once, and an allocation that
/// fails is an error).
pub(crate) fn read(path: &Path) -> Result<Bytes, String> {
    let (file, len) = open_regular(path)?;
    let len = usize::try_from(len).map_err(|_| format!("the file is too large ({len} bytes) for this machine"))?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| format!("cannot allocate {len} bytes to read the file"))?;
    file.take(len as u64).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if bytes.len() != len {
        return Err(format!("the file shrank from {len} to {} bytes while it was read", bytes.len()));
    }
    Ok(Bytes::Read(bytes))
}

/// Memory-maps a regular file (an empty one is read instead: it has nothing to map).
///
/// # Safety
///
/// As for [`memmap2::Mmap::map`]: the file must not be truncated or modified while the map is
/// alive (see [`map_batch`](super::map_batch)).
pub(crate) unsafe fn map(path: &Path) -> Result<Bytes, String> {
    let (file, len) = open_regular(path)?;
    if len == 0 {
        return Ok(Bytes::Read(Vec::new()));
    }
    // SAFETY: the caller keeps the file unchanged while the map lives.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("cannot memory-map the file: {e}"))?;
    Ok(Bytes::Mapped(map))
}
