//! How the CPU engine walks a host tensor: the one place that knows about layouts, chunking,
//! widening and threads. Each statistic is a [`Reducer`]; [`reduce`] feeds it every element of
//! the tensor, tagged with its channel.
//!
//! Determinism: the work is cut into pieces whose boundaries depend only on the tensor's shape
//! and layout, never on the number of threads, and partial results are merged in a fixed order.
//! So sums in floating point come out bit for bit the same on any machine and thread count.

use ndarray::{ArrayViewD, Axis};
use rayon::prelude::*;

use crate::tensor::{Element, HostLayout};

/// Elements per piece of work: small enough to balance threads, large enough to amortise.
const CHUNK: usize = 1 << 16;
/// The most pieces one channel (or the whole per-tensor input) is cut into.
const MAX_PIECES: usize = 64;
/// The memory partial results of one reduction may take together.
const PART_BUDGET_BYTES: usize = 256 << 20;
/// The tasks a walk by blocks of columns aims at: enough to balance the threads, few enough that
/// the blocks' counters are not flushed more often than needed.
const COLUMN_TASKS: usize = 16;
/// The rows a task walks through one block of its group before the next block (see
/// [`Reducer::column_group`]), in bytes of whole rows: 512 pages of 4 KiB, within the TLB (a few
/// thousand entries). Measured against 1 MiB (one process, KL per channel on the last axis):
/// about 3% less CPU time (a block's first rows of each chunk are not prefetched).
const COLUMN_CHUNK_BYTES: usize = 2 << 20;
/// Values widened at a time from f16/bf16.
const WIDEN_BLOCK: usize = 4096;

/// A statistic computed over a tensor, per channel.
pub(crate) trait Reducer: Sync {
    /// The partial result for a range of consecutive channels.
    type Part: Send;

    /// An empty partial result for channels `first .. first + count`.
    fn part(&self, first: usize, count: usize) -> Self::Part;

    /// Roughly the bytes of a part for `count` channels (bounds the number of parts alive).
    fn part_bytes(&self, count: usize) -> usize;

    /// Adds values that all belong to channel `c` (absolute index, inside the part's range).
    fn run(&self, part: &mut Self::Part, c: usize, x: &[f32]);

    /// Adds whole rows of `channels` values: value `j` of every row belongs to channel `j`.
    /// The part covers all channels.
    fn rows(&self, part: &mut Self::Part, rows: &[f32], channels: usize);

    /// Adds `n` rows of `width` values that lie `stride` apart in `data` (row `i` is
    /// `data[i * stride..][..width]`; value `j` of a row belongs to the part's channel `j`): a
    /// block of columns of a wider f32 tensor, read where it is. The default copies nothing
    /// either: it hands each row to [`rows`](Reducer::rows).
    fn columns(&self, part: &mut Self::Part, data: &[f32], n: usize, width: usize, stride: usize) {
        for i in 0..n {
            self.rows(part, &data[i * stride..][..width], width);
        }
    }

    /// For a dense tensor whose channel axis is innermost: `Some(n)` to have tasks take blocks of
    /// `n` channels through all rows (each block's part stays small enough for the caches, and
    /// sees its channels' values as rows of `n`), `None` (the default) to cut the rows among
    /// tasks, each with a part over all channels.
    fn column_block(&self, _channels: usize) -> Option<usize> {
        None
    }

    /// With [`column_block`](Reducer::column_block): how many blocks a task takes in turn through
    /// each chunk of [`COLUMN_CHUNK_BYTES`] of its rows (1, the default: one block through all
    /// its rows). A block's values are a few cache lines of each row, in a new page every row or
    /// so; the next block of the group reads the same pages while their translations are still
    /// in the TLB, instead of walking the page tables again.
    fn column_group(&self) -> usize {
        1
    }

    /// Called by a task of the column walk on each of its parts when it is done with them (the
    /// default does nothing): a part that adds its results somewhere shared can do it there, on
    /// the task's thread, instead of in the merge, which runs on one.
    fn finish_part(&self, _part: &mut Self::Part) {}

    /// Adds `other`, a part over the same channels, into `part`.
    fn merge(&self, part: &mut Self::Part, other: Self::Part);

    /// Joins parts over consecutive channel ranges, given in channel order.
    fn concat(&self, parts: Vec<Self::Part>) -> Self::Part;
}

/// Feeds every element of the tensor to `r` and returns the part covering all channels.
pub(crate) fn reduce<T: Element, R: Reducer>(layout: HostLayout<'_, T>, r: &R) -> R::Part {
    match layout {
        HostLayout::Dense { data, outer, channels, inner } if channels > 1 && inner == 1 => {
            match r.column_block(channels) {
                Some(block) if block < channels => reduce_columns(data, outer, channels, block, r),
                _ => reduce_rows(data, outer, channels, r),
            }
        }
        HostLayout::Dense { data, outer, channels, inner } => {
            let per_channel = outer * inner;
            if per_channel >= CHUNK || channels == 1 {
                let parts = (0..channels)
                    .into_par_iter()
                    .map(|c| reduce_channel_runs(data, outer, channels, inner, c, r))
                    .collect();
                r.concat(parts)
            } else {
                // Small channels: a task takes a range of them, each channel whole and in order.
                let group = CHUNK.div_ceil(per_channel.max(1));
                let parts = (0..channels.div_ceil(group))
                    .into_par_iter()
                    .map(|g| {
                        let (first, last) = (g * group, ((g + 1) * group).min(channels));
                        let mut part = r.part(first, last - first);
                        for c in first..last {
                            for o in 0..outer {
                                let start = (o * channels + c) * inner;
                                feed(r, &mut part, c, &data[start..start + inner]);
                            }
                        }
                        part
                    })
                    .collect();
                r.concat(parts)
            }
        }
        HostLayout::Strided { view, axis: None } => reduce_strided(&view, 0, r),
        HostLayout::Strided { view, axis: Some(axis) } => {
            let parts = (0..view.shape()[axis])
                .into_par_iter()
                .map(|c| reduce_strided(&view.index_axis(Axis(axis), c), c, r))
                .collect();
            r.concat(parts)
        }
    }
}

/// How many pieces `n` elements are cut into, given the size of a part.
fn pieces(n: usize, part_bytes: usize) -> usize {
    let by_budget = (PART_BUDGET_BYTES / part_bytes.max(1)).max(1);
    (n / CHUNK).clamp(1, MAX_PIECES.min(by_budget))
}

/// Merges parts in their order.
fn merge_all<R: Reducer>(r: &R, parts: Vec<R::Part>) -> Option<R::Part> {
    let mut it = parts.into_iter();
    let mut acc = it.next()?;
    for p in it {
        r.merge(&mut acc, p);
    }
    Some(acc)
}

/// Channel `c` of a dense `[outer, channels, inner]` slice: `outer` runs of `inner` values.
fn reduce_channel_runs<T: Element, R: Reducer>(
    data: &[T],
    outer: usize,
    channels: usize,
    inner: usize,
    c: usize,
    r: &R,
) -> R::Part {
    let n = outer * inner;
    let k = pieces(n, r.part_bytes(1));
    let per = n.div_ceil(k).max(1);
    let parts = (0..k)
        .into_par_iter()
        .map(|piece| {
            let mut part = r.part(c, 1);
            // The channel's values in order: position p is run p / inner, offset p % inner.
            let (mut p, end) = (piece * per, ((piece + 1) * per).min(n));
            while p < end {
                let (o, i) = (p / inner, p % inner);
                let len = (inner - i).min(end - p);
                let start = (o * channels + c) * inner + i;
                feed(r, &mut part, c, &data[start..start + len]);
                p += len;
            }
            part
        })
        .collect();
    merge_all(r, parts).unwrap_or_else(|| r.part(c, 1))
}

/// A dense slice of `outer` rows of `channels` values (channel axis innermost).
fn reduce_rows<T: Element, R: Reducer>(data: &[T], outer: usize, channels: usize, r: &R) -> R::Part {
    let k = pieces(data.len(), r.part_bytes(channels)).min(outer).max(1);
    let rows_per = outer.div_ceil(k).max(1);
    let parts = data
        .par_chunks(rows_per * channels)
        .map(|rows| {
            let mut part = r.part(0, channels);
            match T::as_f32(rows) {
                Some(x) => r.rows(&mut part, x, channels),
                None => {
                    let block_rows = (WIDEN_BLOCK / channels).max(1);
                    let mut buf = vec![0f32; block_rows * channels];
                    for src in rows.chunks(block_rows * channels) {
                        let dst = &mut buf[..src.len()];
                        T::widen(src, dst);
                        r.rows(&mut part, dst, channels);
                    }
                }
            }
            part
        })
        .collect();
    merge_all(r, parts).unwrap_or_else(|| r.part(0, channels))
}

/// A dense slice of `outer` rows of `channels` values (channel axis innermost), walked by blocks
/// of `block` channels: a task takes a group of blocks through a range of rows, a chunk of rows
/// at a time, each block of the group in turn through the chunk (see [`Reducer::column_group`]).
/// Each block's part sees its rows in order, whatever the group: the results are those of one
/// block through all the rows.
fn reduce_columns<T: Element, R: Reducer>(data: &[T], outer: usize, channels: usize, block: usize, r: &R) -> R::Part {
    let blocks = channels.div_ceil(block);
    // Row pieces per block: enough tasks to balance threads when there are few blocks, within the
    // budget for the parts of all blocks together (every part is alive until the merge).
    let k = pieces(outer * block.min(channels), r.part_bytes(channels))
        .min(outer)
        .min(COLUMN_TASKS.div_ceil(blocks))
        .max(1);
    // Blocks per task: as many as the reducer asks for, but no fewer than two tasks a thread (the
    // grouping changes only which task counts a block's piece, never a result).
    let group = r.column_group().min(blocks * k / (2 * rayon::current_num_threads()).max(1)).max(1);
    let groups = blocks.div_ceil(group);
    let chunk_rows = (COLUMN_CHUNK_BYTES / (channels * std::mem::size_of::<T>()).max(1)).max(1);
    let rows_per = outer.div_ceil(k).max(1);
    let tasks: Vec<(usize, usize)> = (0..groups).flat_map(|g| (0..k).map(move |p| (g, p))).collect();
    let parts: Vec<Vec<R::Part>> = tasks
        .into_par_iter()
        .map(|(g, p)| {
            let group_blocks = (g * group)..((g + 1) * group).min(blocks);
            let mut parts: Vec<R::Part> =
                group_blocks.clone().map(|b| r.part(b * block, block.min(channels - b * block))).collect();
            let rows = (p * rows_per).min(outer)..((p + 1) * rows_per).min(outer);
            let mut start = rows.start;
            while start < rows.end {
                let end = rows.end.min(start + chunk_rows);
                for (b, part) in group_blocks.clone().zip(parts.iter_mut()) {
                    let (first, width) = (b * block, block.min(channels - b * block));
                    block_rows(data, channels, first, width, start..end, r, part);
                }
                start = end;
            }
            parts.iter_mut().for_each(|part| r.finish_part(part));
            parts
        })
        .collect();
    // Each block's pieces merged in order, then the blocks in channel order.
    let mut by_block: Vec<Vec<R::Part>> = (0..blocks).map(|_| Vec::with_capacity(k)).collect();
    for (i, task) in parts.into_iter().enumerate() {
        for (j, part) in task.into_iter().enumerate() {
            by_block[(i / k) * group + j].push(part);
        }
    }
    let merged = by_block
        .into_iter()
        .enumerate()
        .map(|(b, pieces)| {
            let width = block.min(channels - b * block);
            merge_all(r, pieces).unwrap_or_else(|| r.part(b * block, width))
        })
        .collect();
    r.concat(merged)
}

/// Rows `rows` of the block of `width` columns from `first` of a dense slice of rows of
/// `channels` values, into `part`: read in place (f32), or widened a few rows at a time.
fn block_rows<T: Element, R: Reducer>(
    data: &[T],
    channels: usize,
    first: usize,
    width: usize,
    rows: std::ops::Range<usize>,
    r: &R,
    part: &mut R::Part,
) {
    if rows.is_empty() {
        return;
    }
    if let Some(x) = T::as_f32(data) {
        // f32: the block's columns read in place (no copy).
        r.columns(part, &x[rows.start * channels + first..], rows.len(), width, channels);
        return;
    }
    let per_copy = (WIDEN_BLOCK / width).max(1);
    let mut buf = vec![0f32; per_copy * width];
    let mut row = rows.start;
    while row < rows.end {
        let n = per_copy.min(rows.end - row);
        for (i, dst) in buf.chunks_exact_mut(width).take(n).enumerate() {
            let start = (row + i) * channels + first;
            T::widen(&data[start..start + width], dst);
        }
        r.rows(part, &buf[..n * width], width);
        row += n;
    }
}

/// A view that is not dense, all of it channel `c`: walked in logical order, in pieces along its
/// longest axis.
fn reduce_strided<T: Element, R: Reducer>(view: &ArrayViewD<'_, T>, c: usize, r: &R) -> R::Part {
    let walk = |v: ArrayViewD<'_, T>| {
        let mut part = r.part(c, 1);
        if let Some(data) = v.to_slice_memory_order() {
            feed(r, &mut part, c, data);
            return part;
        }
        let mut buf = [0f32; WIDEN_BLOCK];
        let mut len = 0;
        for &x in v.iter() {
            buf[len] = x.to_f32();
            len += 1;
            if len == WIDEN_BLOCK {
                r.run(&mut part, c, &buf);
                len = 0;
            }
        }
        r.run(&mut part, c, &buf[..len]);
        part
    };
    let Some((axis, &axis_len)) = view.shape().iter().enumerate().max_by_key(|&(_, &len)| len) else {
        return walk(view.clone()); // 0-dimensional: one element
    };
    let k = pieces(view.len(), r.part_bytes(1)).min(axis_len.max(1));
    let per = axis_len.div_ceil(k).max(1);
    let subviews: Vec<_> = view.axis_chunks_iter(Axis(axis), per).collect();
    let parts = subviews.into_par_iter().map(walk).collect();
    merge_all(r, parts).unwrap_or_else(|| r.part(c, 1))
}

/// Feeds a run of one channel, widening f16/bf16 a block at a time.
fn feed<T: Element, R: Reducer>(r: &R, part: &mut R::Part, c: usize, src: &[T]) {
    match T::as_f32(src) {
        Some(x) => r.run(part, c, x),
        None => {
            let mut buf = [0f32; WIDEN_BLOCK];
            for block in src.chunks(WIDEN_BLOCK) {
                let dst = &mut buf[..block.len()];
                T::widen(block, dst);
                r.run(part, c, dst);
            }
        }
    }
}
