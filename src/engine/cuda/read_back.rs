//! Results back to the host.
//!
//! - [`read_back`]: a copy into a new (pageable) vector, then a synchronisation of the stream
//!   before anything reads it. cudarc queues the copy with `cuMemcpyDtoHAsync`; the driver
//!   documents when such a copy may return before the data has arrived, and those rules differ by
//!   memory kind and driver, so the stream is synchronised explicitly: the vector is complete
//!   when this returns, whatever the driver does.
//! - [`Staging`]: large counts (per-channel histograms, megabytes a batch) come back through one
//!   page-locked buffer that the GPU keeps, and are added where the observer keeps its counts. A
//!   fresh vector of that size would be faulted in page by page during the copy, and the driver
//!   copies pageable memory through a bounce buffer of its own.

use std::sync::{Arc, Mutex, PoisonError};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, PinnedHostSlice, result};
use rayon::prelude::*;

use super::error::GpuError;

/// `src` as a host vector, complete (the stream synchronised after the copy).
pub(crate) fn read_back<T: DeviceRepr, S: DevicePtr<T>>(
    stream: &Arc<CudaStream>,
    src: &S,
) -> Result<Vec<T>, DriverError> {
    let values = stream.clone_dtoh(src)?;
    stream.synchronize()?;
    Ok(values)
}

/// The most counters the staging buffer holds (32 MiB): larger results come back in pieces of
/// this size, so that the page-locked memory a process keeps stays small.
const STAGING_COUNTERS: usize = 1 << 22;

/// Counters added on the host by one task of the thread pool.
const ADD_CHUNK: usize = 1 << 15;

/// A page-locked host buffer of `u64` counters, allocated on first use (as large as the first
/// result needs, up to `piece` counters, [`STAGING_COUNTERS`] by default; grown when a later one
/// needs more) and reused. Larger results come back `piece` counters at a time.
pub(crate) struct Staging {
    buffer: Mutex<Option<PinnedHostSlice<u64>>>,
    piece: usize,
}

impl Default for Staging {
    fn default() -> Staging {
        Staging { buffer: Mutex::new(None), piece: STAGING_COUNTERS }
    }
}

impl Staging {
    /// A staging buffer of at most `piece` counters (the tests cut small results in pieces).
    #[cfg(test)]
    pub(crate) fn with_piece(piece: usize) -> Staging {
        Staging { buffer: Mutex::new(None), piece: piece.max(1) }
    }

    /// Adds the counters of `src` (on `stream`) to `out`, element by element: `out[i] += src[i]`.
    /// Where page-locked memory cannot be had, the counters come back through pageable vectors
    /// instead (slower, the same sums). On an error, `out` may hold part of the sums.
    pub(crate) fn add_back(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        src: &CudaSlice<u64>,
        out: &mut [u64],
    ) -> Result<(), GpuError> {
        let (n, piece) = (out.len(), self.piece);
        if src.len() < n {
            return Err(GpuError::Internal(format!("{} counters on the device for {n} on the host", src.len())));
        }
        let mut guard = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let want = n.min(piece);
        if guard.as_ref().is_none_or(|b| b.len() < want) {
            *guard = None; // the old buffer goes first
            // SAFETY: only the counters a copy below has written are read.
            *guard = unsafe { ctx.alloc_pinned_with_flags::<u64>(want, 0) }.ok();
        }
        for start in (0..n).step_by(piece) {
            let end = (start + piece).min(n);
            let counts = src.slice(start..end);
            let out = &mut out[start..end];
            match guard.as_mut() {
                Some(pinned) => {
                    // Not `memcpy_dtoh`: cudarc copies as many elements as the destination holds,
                    // past the end of a shorter source.
                    let host = &mut pinned.as_mut_slice()?[..end - start];
                    let (from, record) = counts.device_ptr(stream);
                    // SAFETY: `host` is page-locked memory of exactly the source's length, not
                    // touched until the stream is synchronised below.
                    unsafe { result::memcpy_dtoh_async(host, from, stream.cu_stream()) }?;
                    drop(record);
                    stream.synchronize()?;
                    add(out, host);
                }
                None => add(out, &read_back(stream, &counts)?),
            }
        }
        Ok(())
    }

    /// Whether the page-locked buffer exists (for the tests: softgpu has page-locked memory, so
    /// the pageable fallback must not be what they test).
    #[cfg(test)]
    pub(crate) fn is_pinned(&self) -> bool {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

/// `out[i] += counts[i]`, on the thread pool.
fn add(out: &mut [u64], counts: &[u64]) {
    out.par_chunks_mut(ADD_CHUNK).zip(counts.par_chunks(ADD_CHUNK)).for_each(|(o, c)| {
        for (o, c) in o.iter_mut().zip(c) {
            *o += c;
        }
    });
}
