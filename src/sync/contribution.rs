//! Sync as data: what one participant (an observer) needs reduced across ranks
//! ([`Contribution`]), what comes back ([`Reduced`]), and how the CPU groups combine the
//! contributions of all ranks (in rank order, after checking them) or any group does it with
//! plain all-reduces ([`reduce_with_all_reduces`]).

use std::fmt;

use super::ReduceOp;
use crate::error::{Error, Result};

/// What one participant (one observer, one tensor) needs reduced across ranks in one round of a
/// synchronisation. Every rank contributes arrays of the same lengths (a rank whose lengths
/// differ is named in the error); the contributions of every participant of a round travel in
/// one bucket, so that a step costs the same few collectives for 1 tensor or 1000.
///
/// Per-channel statistics are arrays like per-tensor ones: `C` minimums, `C × bins` counts.
///
/// ```
/// use qcalib::sync::{Contribution, ProcessGroup, SingleRank};
/// let part = Contribution { mins: vec![-1.5], maxs: vec![2.0], sums: vec![3, 4], ..Default::default() };
/// let reduced = SingleRank.all_reduce_bucket(&[part])?;
/// assert_eq!((reduced[0].mins.as_slice(), reduced[0].sums.as_slice()), (&[-1.5f32][..], &[3u64, 4][..]));
/// assert_eq!(reduced[0].gathered, vec![Vec::<u64>::new()]); // one rank, nothing gathered
/// # Ok::<(), qcalib::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contribution {
    /// Reduced by elementwise minimum. A rank's values are all finite, or all `+inf` (it has
    /// nothing: the minimum of the others results); anything else (NaN, a mix) is an error
    /// naming the rank.
    pub mins: Vec<f32>,
    /// Reduced by elementwise maximum. A rank's values are all finite, or all `-inf`.
    pub maxs: Vec<f32>,
    /// Reduced by elementwise sum (histogram counts, element counts); a sum beyond `u64::MAX`
    /// is an error.
    pub sums: Vec<u64>,
    /// Words every rank must hold equal (settings, a position in a window): the ranks that
    /// differ from this one come back in [`Reduced::checks_differ`].
    pub checks: Vec<u64>,
    /// Words of this rank that every rank receives, per rank (counts, failure flags).
    pub gathered: Vec<u64>,
}

/// What comes back for one [`Contribution`]: the same on every rank, except
/// [`Reduced::checks_differ`], which is empty on every rank or on none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reduced {
    /// The elementwise minimum of the ranks' `mins` (`+inf` where every rank had nothing).
    pub mins: Vec<f32>,
    /// The elementwise maximum of the ranks' `maxs` (`-inf` where every rank had nothing).
    pub maxs: Vec<f32>,
    /// The elementwise sum of the ranks' `sums`.
    pub sums: Vec<u64>,
    /// The ranks whose `checks` differ from this rank's.
    pub checks_differ: Vec<usize>,
    /// Every rank's `gathered` words, in rank order.
    pub gathered: Vec<Vec<u64>>,
}

/// The lengths of a contribution's five arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lengths([usize; 5]);

impl Contribution {
    pub(crate) fn lengths(&self) -> Lengths {
        Lengths([self.mins.len(), self.maxs.len(), self.sums.len(), self.checks.len(), self.gathered.len()])
    }

    /// Checks the values a rank may send: `mins` all finite or all `+inf`, `maxs` all finite or
    /// all `-inf`. The error says what is wrong (the caller names the rank).
    pub(crate) fn check_values(&self) -> std::result::Result<(), String> {
        let check = |v: &[f32], nothing: f32, what: &str| {
            if v.iter().all(|x| x.is_finite()) || v.iter().all(|&x| x == nothing) {
                Ok(())
            } else {
                let bad = v.iter().find(|x| !x.is_finite()).copied().unwrap_or(f32::NAN);
                Err(format!("its {what} hold {bad} among other values (all finite, or all {nothing}, expected)"))
            }
        };
        check(&self.mins, f32::INFINITY, "minimums")?;
        check(&self.maxs, f32::NEG_INFINITY, "maximums")
    }
}

impl fmt::Display for Lengths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e] = self.0;
        write!(f, "mins {a}, maxs {b}, sums {c}, checks {d}, gathered {e}")
    }
}

/// An all-reduce of one plain array (`all_reduce_f32`, `all_reduce_u64`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Array {
    /// `all_reduce_f32`.
    F32(ReduceOp, Vec<f32>),
    /// `all_reduce_u64`.
    U64(ReduceOp, Vec<u64>),
}

/// What one rank brings to a collective of a CPU group.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Payload {
    /// A plain all-reduce.
    Array(Array),
    /// The contributions of a round ([`ProcessGroup::all_reduce_bucket`](super::ProcessGroup::all_reduce_bucket)).
    Bucket(Vec<Contribution>),
}

/// What a collective of a CPU group returns.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The reduced array.
    Array(Array),
    /// One [`Reduced`] per contribution.
    Bucket(Vec<Reduced>),
}

/// Which collective a rank called: what every rank must agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CollectiveShape {
    /// `true` for `all_reduce_f32`, `false` for `all_reduce_u64`.
    pub floats: bool,
    /// The reduction.
    pub op: ReduceOp,
    /// The number of elements.
    pub len: usize,
}

impl CollectiveShape {
    /// The shape as one word (for groups that can only compare numbers across ranks):
    /// bit 63 the element type, bits 61..63 the op, the rest the length.
    pub(crate) fn to_word(self) -> u64 {
        (u64::from(self.floats) << 63) | (op_code(self.op) << 61) | (self.len as u64 & ((1 << 61) - 1))
    }
}

impl fmt::Display for CollectiveShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = if self.floats { "f32" } else { "u64" };
        write!(f, "{} {ty} ({:?})", self.len, self.op)
    }
}

fn op_code(op: ReduceOp) -> u64 {
    match op {
        ReduceOp::Min => 0,
        ReduceOp::Max => 1,
        ReduceOp::Sum => 2,
    }
}

fn op_from(code: u8) -> Option<ReduceOp> {
    match code {
        0 => Some(ReduceOp::Min),
        1 => Some(ReduceOp::Max),
        2 => Some(ReduceOp::Sum),
        _ => None,
    }
}

impl Array {
    /// Which collective this is.
    pub(crate) fn shape(&self) -> CollectiveShape {
        match self {
            Array::F32(op, v) => CollectiveShape { floats: true, op: *op, len: v.len() },
            Array::U64(op, v) => CollectiveShape { floats: false, op: *op, len: v.len() },
        }
    }

    /// Copies the reduced f32 values into `data`.
    pub(crate) fn write_f32(self, data: &mut [f32]) -> Result<()> {
        match self {
            Array::F32(_, v) if v.len() == data.len() => {
                data.copy_from_slice(&v);
                Ok(())
            }
            _ => Err(Error::Sync("an f32 all-reduce returned something else".into())),
        }
    }

    /// Copies the reduced u64 values into `data`.
    pub(crate) fn write_u64(self, data: &mut [u64]) -> Result<()> {
        match self {
            Array::U64(_, v) if v.len() == data.len() => {
                data.copy_from_slice(&v);
                Ok(())
            }
            _ => Err(Error::Sync("a u64 all-reduce returned something else".into())),
        }
    }
}

impl Outcome {
    pub(crate) fn into_array(self) -> Result<Array> {
        match self {
            Outcome::Array(a) => Ok(a),
            Outcome::Bucket(_) => Err(Error::Sync("an all-reduce returned a bucket".into())),
        }
    }

    pub(crate) fn into_bucket(self) -> Result<Vec<Reduced>> {
        match self {
            Outcome::Bucket(b) => Ok(b),
            Outcome::Array(_) => Err(Error::Sync("a bucket returned an array".into())),
        }
    }
}

/// What a payload looks like, for error messages (and for comparing across ranks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PayloadShape {
    Array(CollectiveShape),
    Bucket(Vec<Lengths>),
}

impl fmt::Display for PayloadShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadShape::Array(s) => s.fmt(f),
            PayloadShape::Bucket(parts) => {
                let total = parts.iter().fold([0; 5], |mut acc, l| {
                    for (a, b) in acc.iter_mut().zip(l.0) {
                        *a += b;
                    }
                    acc
                });
                write!(f, "a bucket of {} part(s) ({})", parts.len(), Lengths(total))
            }
        }
    }
}

// The bytes of a payload, little-endian:
//   tag 0 (f32 array) or 1 (u64 array): an op byte, a u64 length, the values;
//   tag 2 (bucket): a u64 count of contributions, their five u64 lengths each, then each
//   contribution's mins, maxs (f32), sums, checks, gathered (u64).
const TAG_F32: u8 = 0;
const TAG_U64: u8 = 1;
const TAG_BUCKET: u8 = 2;

impl Payload {
    pub(crate) fn shape(&self) -> PayloadShape {
        match self {
            Payload::Array(a) => PayloadShape::Array(a.shape()),
            Payload::Bucket(parts) => PayloadShape::Bucket(parts.iter().map(Contribution::lengths).collect()),
        }
    }

    /// The header: everything but the values (a peer's header must equal the local one).
    fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Payload::Array(a) => {
                let s = a.shape();
                out.push(if s.floats { TAG_F32 } else { TAG_U64 });
                out.push(op_code(s.op) as u8);
                out.extend((s.len as u64).to_le_bytes());
            }
            Payload::Bucket(parts) => {
                out.push(TAG_BUCKET);
                out.extend((parts.len() as u64).to_le_bytes());
                for p in parts {
                    for l in p.lengths().0 {
                        out.extend((l as u64).to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// The number of bytes [`Payload::to_bytes`] makes.
    pub(crate) fn encoded_len(&self) -> usize {
        let values = match self {
            Payload::Array(Array::F32(_, v)) => 4 * v.len(),
            Payload::Array(Array::U64(_, v)) => 8 * v.len(),
            Payload::Bucket(parts) => parts
                .iter()
                .map(|p| 4 * (p.mins.len() + p.maxs.len()) + 8 * (p.sums.len() + p.checks.len() + p.gathered.len()))
                .sum(),
        };
        self.header().len() + values
    }

    /// The payload as bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header();
        out.reserve(self.encoded_len() - out.len());
        let f32s = |out: &mut Vec<u8>, v: &[f32]| out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        let u64s = |out: &mut Vec<u8>, v: &[u64]| out.extend(v.iter().flat_map(|x| x.to_le_bytes()));
        match self {
            Payload::Array(Array::F32(_, v)) => f32s(&mut out, v),
            Payload::Array(Array::U64(_, v)) => u64s(&mut out, v),
            Payload::Bucket(parts) => {
                for p in parts {
                    f32s(&mut out, &p.mins);
                    f32s(&mut out, &p.maxs);
                    u64s(&mut out, &p.sums);
                    u64s(&mut out, &p.checks);
                    u64s(&mut out, &p.gathered);
                }
            }
        }
        out
    }

    /// A peer's payload, read from `bytes` against this rank's payload `local`: the peer must
    /// have called the same collective with the same lengths (else the error describes what it
    /// sent, as far as its header can be read). Nothing is allocated beyond `local`'s size.
    pub(crate) fn from_bytes(bytes: &[u8], local: &Payload) -> std::result::Result<Payload, String> {
        let header = local.header();
        if bytes.len() != local.encoded_len() || !bytes.starts_with(&header) {
            return Err(describe(bytes));
        }
        let mut values = Cursor(&bytes[header.len()..]);
        Ok(match local {
            Payload::Array(Array::F32(op, v)) => Payload::Array(Array::F32(*op, values.f32s(v.len()))),
            Payload::Array(Array::U64(op, v)) => Payload::Array(Array::U64(*op, values.u64s(v.len()))),
            Payload::Bucket(parts) => Payload::Bucket(
                parts
                    .iter()
                    .map(|p| Contribution {
                        mins: values.f32s(p.mins.len()),
                        maxs: values.f32s(p.maxs.len()),
                        sums: values.u64s(p.sums.len()),
                        checks: values.u64s(p.checks.len()),
                        gathered: values.u64s(p.gathered.len()),
                    })
                    .collect(),
            ),
        })
    }
}

/// Reads values from bytes whose length has been checked.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        let (head, rest) = self.0.split_at((4 * n).min(self.0.len()));
        self.0 = rest;
        head.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    fn u64s(&mut self, n: usize) -> Vec<u64> {
        let (head, rest) = self.0.split_at((8 * n).min(self.0.len()));
        self.0 = rest;
        head.chunks_exact(8).map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect()
    }
}

/// What a peer's bytes hold, as far as their header can be read (for error messages; reads
/// only what is there).
fn describe(bytes: &[u8]) -> String {
    let word =
        |at: usize| bytes.get(at..at + 8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
    match bytes.first() {
        Some(&t @ (TAG_F32 | TAG_U64)) => match (bytes.get(1).copied().and_then(op_from), word(2)) {
            (Some(op), Some(len)) => {
                format!("{len} {} ({op:?})", if t == TAG_F32 { "f32" } else { "u64" })
            }
            _ => format!("{} malformed bytes", bytes.len()),
        },
        Some(&TAG_BUCKET) => match word(1) {
            Some(n) => format!("a bucket of {n} part(s) in {} bytes", bytes.len()),
            None => format!("{} malformed bytes", bytes.len()),
        },
        _ => format!("{} malformed bytes", bytes.len()),
    }
}

/// Combines the payloads of ranks `0, 1, …` in that order (so that every rank computes
/// bit-identical results), after checking that all ranks called the same collective and sent
/// valid values. `local` is this rank. The error, computed from the same inputs, is the same
/// on every rank.
pub(crate) fn reduce_in_rank_order(seq: u64, parts: &[&Payload], local: usize) -> Result<Outcome> {
    let Some(first) = parts.first() else {
        return Err(Error::Sync(format!("collective #{seq} has no contributions")));
    };
    let shape = first.shape();
    if parts.iter().any(|p| p.shape() != shape) {
        let calls: Vec<String> = parts.iter().enumerate().map(|(r, p)| format!("rank {r}: {}", p.shape())).collect();
        return Err(Error::Sync(format!(
            "the ranks called different collectives at collective #{seq} ({}); every rank must run the same \
             observers with the same settings on the same tensors",
            calls.join(", ")
        )));
    }
    match first {
        Payload::Array(a) => {
            let arrays: Vec<&Array> = parts
                .iter()
                .filter_map(|p| match p {
                    Payload::Array(a) => Some(a),
                    Payload::Bucket(_) => None,
                })
                .collect();
            let mut acc = a.clone();
            for part in &arrays[1..] {
                combine_arrays(seq, &mut acc, part)?;
            }
            Ok(Outcome::Array(acc))
        }
        Payload::Bucket(local_parts) => {
            let buckets: Vec<&Vec<Contribution>> = parts
                .iter()
                .filter_map(|p| match p {
                    Payload::Bucket(b) => Some(b),
                    Payload::Array(_) => None,
                })
                .collect();
            for (rank, b) in buckets.iter().enumerate() {
                for (i, c) in b.iter().enumerate() {
                    c.check_values().map_err(|why| {
                        Error::Sync(format!("rank {rank} sent invalid values at collective #{seq} (part {i}): {why}"))
                    })?;
                }
            }
            let mine = buckets.get(local).copied().unwrap_or(local_parts);
            let mut out = Vec::with_capacity(local_parts.len());
            for i in 0..local_parts.len() {
                let ranks: Vec<&Contribution> = buckets.iter().map(|b| &b[i]).collect();
                out.push(combine_contributions(seq, &ranks, &mine[i])?);
            }
            Ok(Outcome::Bucket(out))
        }
    }
}

fn combine_arrays(seq: u64, acc: &mut Array, part: &Array) -> Result<()> {
    match (acc, part) {
        (Array::F32(op, a), Array::F32(_, b)) => {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = match op {
                    ReduceOp::Min => x.min(y),
                    ReduceOp::Max => x.max(y),
                    ReduceOp::Sum => *x + y,
                };
            }
        }
        (Array::U64(op, a), Array::U64(_, b)) => {
            for (x, &y) in a.iter_mut().zip(b) {
                *x = match op {
                    ReduceOp::Min => (*x).min(y),
                    ReduceOp::Max => (*x).max(y),
                    ReduceOp::Sum => x
                        .checked_add(y)
                        .ok_or_else(|| Error::Sync(format!("collective #{seq}: a u64 sum overflows")))?,
                };
            }
        }
        _ => return Err(Error::Sync(format!("collective #{seq}: mixed element types"))),
    }
    Ok(())
}

/// One part of a bucket: the ranks' contributions (checked: same lengths, valid values).
fn combine_contributions(seq: u64, ranks: &[&Contribution], mine: &Contribution) -> Result<Reduced> {
    let mut mins = ranks[0].mins.clone();
    let mut maxs = ranks[0].maxs.clone();
    let mut sums = ranks[0].sums.clone();
    for c in &ranks[1..] {
        for (x, &y) in mins.iter_mut().zip(&c.mins) {
            *x = x.min(y);
        }
        for (x, &y) in maxs.iter_mut().zip(&c.maxs) {
            *x = x.max(y);
        }
        for (x, &y) in sums.iter_mut().zip(&c.sums) {
            *x = x.checked_add(y).ok_or_else(|| Error::Sync(format!("collective #{seq}: a sum overflows u64")))?;
        }
    }
    Ok(Reduced {
        mins,
        maxs,
        sums,
        checks_differ: ranks.iter().enumerate().filter(|(_, c)| c.checks != mine.checks).map(|(r, _)| r).collect(),
        gathered: ranks.iter().map(|c| c.gathered.clone()).collect(),
    })
}

/// A bucket reduced with the plain all-reduces of `group` (for groups that have only those, as
/// NCCL): one MAX that agrees on the lengths and carries each rank's verdict on its own values,
/// then one MAX of every `mins` negated together with every `maxs`, and one SUM of every `sums`
/// together with every rank's `checks` and `gathered` words in its own slots. Three collectives
/// at most, whatever the number of contributions.
pub(crate) fn reduce_with_all_reduces<G: super::ProcessGroup + ?Sized>(
    group: &G,
    parts: &[Contribution],
) -> Result<Vec<Reduced>> {
    let collectives = PlainCollectives {
        header_max: &|h| group.all_reduce_u64(h, ReduceOp::Max),
        extremes_max: &|e| group.all_reduce_f32(e, ReduceOp::Max),
        words_sum: &|w| group.all_reduce_u64(w, ReduceOp::Sum),
    };
    reduce_with(group.rank(), group.world_size(), parts, &collectives)
}

/// The three collectives of [`reduce_with`], in the order it runs them; every rank runs the
/// same ones with arrays of the same lengths (once the first has agreed on them).
pub(crate) struct PlainCollectives<'a> {
    /// The elementwise MAX of the header (lengths and verdicts): it also finds every rank here.
    pub header_max: &'a dyn Fn(&mut [u64]) -> Result<()>,
    /// The elementwise MAX of the negated minimums and the maximums.
    pub extremes_max: &'a dyn Fn(&mut [f32]) -> Result<()>,
    /// The elementwise SUM of the words (sums, checks and gathered words); beyond `u64::MAX` is
    /// an error.
    pub words_sum: &'a dyn Fn(&mut [u64]) -> Result<()>,
}

/// [`reduce_with_all_reduces`] with the three collectives given: rank `rank` of `world`.
pub(crate) fn reduce_with(
    rank: usize,
    world: usize,
    parts: &[Contribution],
    collectives: &PlainCollectives<'_>,
) -> Result<Vec<Reduced>> {
    // 1. The lengths (as one hash and its complement) and each rank's verdict on its values.
    let layout = fnv1a(parts.iter().flat_map(|p| p.lengths().0).flat_map(|l| (l as u64).to_le_bytes()));
    let own = parts.iter().enumerate().find_map(|(i, p)| p.check_values().err().map(|why| (i, why)));
    let mut header = vec![0u64; 2 + world];
    header[0] = layout;
    header[1] = !layout;
    if own.is_some() {
        header[2 + rank] = 1;
    }
    (collectives.header_max)(&mut header)?;
    if header[0] != !header[1] {
        return Err(Error::Sync(
            "the ranks reduced buckets of different lengths; every rank must run the same observers with the same \
             settings on the same tensors"
                .into(),
        ));
    }
    if let Some((i, why)) = own {
        return Err(Error::Sync(format!("rank {rank} sent invalid values (part {i}): {why}")));
    }
    let bad: Vec<usize> = (0..world).filter(|&r| header[2 + r] != 0).collect();
    if !bad.is_empty() {
        return Err(Error::Sync(format!("{} sent invalid values (see the error there)", name_ranks(&bad))));
    }

    // 2. The values: the minimums negated next to the maximums, in one `Max` (negation is exact
    // and maps a rank's `+inf`, nothing, to `-inf`, nothing again), then the words in one `Sum`.
    let n_mins: usize = parts.iter().map(|p| p.mins.len()).sum();
    let mut extremes: Vec<f32> = parts
        .iter()
        .flat_map(|p| p.mins.iter().map(|&v| -v))
        .chain(parts.iter().flat_map(|p| p.maxs.iter().copied()))
        .collect();
    let n_sums: usize = parts.iter().map(|p| p.sums.len()).sum();
    let per_rank: usize = parts.iter().map(|p| p.checks.len() + p.gathered.len()).sum();
    let mut words = vec![0u64; n_sums + world * per_rank];
    let mut at = 0;
    for p in parts {
        words[at..at + p.sums.len()].copy_from_slice(&p.sums);
        at += p.sums.len();
    }
    let mut slot = n_sums + rank * per_rank;
    for p in parts {
        for &w in p.checks.iter().chain(&p.gathered) {
            words[slot] = w;
            slot += 1;
        }
    }
    if !extremes.is_empty() {
        (collectives.extremes_max)(&mut extremes)?;
    }
    let (negated_mins, maxs) = extremes.split_at(n_mins);
    let mins: Vec<f32> = negated_mins.iter().map(|&v| -v).collect();
    if !words.is_empty() {
        (collectives.words_sum)(&mut words)?;
    }

    // 3. Each contribution's slice.
    let (mut mi, mut ma, mut su, mut pr) = (0, 0, 0, 0);
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        let (nc, ng) = (p.checks.len(), p.gathered.len());
        let of_rank = |r: usize| &words[n_sums + r * per_rank + pr..n_sums + r * per_rank + pr + nc + ng];
        out.push(Reduced {
            mins: mins[mi..mi + p.mins.len()].to_vec(),
            maxs: maxs[ma..ma + p.maxs.len()].to_vec(),
            sums: words[su..su + p.sums.len()].to_vec(),
            checks_differ: (0..world).filter(|&r| of_rank(r)[..nc] != p.checks[..]).collect(),
            gathered: (0..world).map(|r| of_rank(r)[nc..].to_vec()).collect(),
        });
        mi += p.mins.len();
        ma += p.maxs.len();
        su += p.sums.len();
        pr += nc + ng;
    }
    Ok(out)
}

/// The 64-bit FNV-1a hash.
pub(crate) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// `ranks` as people read them: `rank 2` or `ranks 1, 3`; beyond 16 ranks, the first 16 and
/// how many more (a world of 65536 ranks would otherwise make a message of 400 KB).
pub(crate) fn name_ranks(ranks: &[usize]) -> String {
    const LISTED: usize = 16;
    let list: Vec<String> = ranks.iter().take(LISTED).map(usize::to_string).collect();
    match ranks.len() {
        1 => format!("rank {}", list[0]),
        n if n > LISTED => format!("{n} ranks ({}, and {} more)", list.join(", "), n - LISTED),
        _ => format!("ranks {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(min: f32, max: f32, sum: u64) -> Contribution {
        Contribution { mins: vec![min], maxs: vec![max, 0.5], sums: vec![sum], checks: vec![7], gathered: vec![sum, 1] }
    }

    #[test]
    fn bytes_round_trip_against_the_local_shape() {
        for p in [
            Payload::Array(Array::F32(ReduceOp::Min, vec![1.5, -0.0, f32::INFINITY])),
            Payload::Array(Array::U64(ReduceOp::Sum, vec![0, u64::MAX, 7])),
            Payload::Array(Array::U64(ReduceOp::Max, vec![])),
            Payload::Bucket(vec![part(-1.0, 2.0, 3), Contribution::default(), part(0.0, 1.0, 9)]),
        ] {
            let bytes = p.to_bytes();
            assert_eq!(bytes.len(), p.encoded_len());
            assert_eq!(Payload::from_bytes(&bytes, &p), Ok(p.clone()));
        }
        let local = Payload::Bucket(vec![part(-1.0, 2.0, 3)]);
        let other = Payload::Bucket(vec![part(-1.0, 2.0, 3), part(-1.0, 2.0, 3)]);
        assert_eq!(Payload::from_bytes(&other.to_bytes(), &local).unwrap_err(), "a bucket of 2 part(s) in 177 bytes");
        let array = Payload::Array(Array::U64(ReduceOp::Max, vec![1, 2, 3]));
        assert_eq!(Payload::from_bytes(&array.to_bytes(), &local).unwrap_err(), "3 u64 (Max)");
        assert_eq!(Payload::from_bytes(&[2, 255], &local).unwrap_err(), "2 malformed bytes");
        assert_eq!(Payload::from_bytes(&[], &local).unwrap_err(), "0 malformed bytes");
    }

    #[test]
    fn arrays_reduce_in_rank_order_and_mismatches_are_refused() {
        let a = Payload::Array(Array::F32(ReduceOp::Max, vec![1.0, -2.0]));
        let b = Payload::Array(Array::F32(ReduceOp::Max, vec![0.5, 3.0]));
        let r = reduce_in_rank_order(0, &[&a, &b], 0).unwrap();
        assert_eq!(r, Outcome::Array(Array::F32(ReduceOp::Max, vec![1.0, 3.0])));
        let c = Payload::Array(Array::U64(ReduceOp::Max, vec![1, 2]));
        let e = reduce_in_rank_order(4, &[&a, &c], 0).unwrap_err().to_string();
        assert!(e.contains("collective #4") && e.contains("rank 1: 2 u64 (Max)"), "{e}");
        let big = Payload::Array(Array::U64(ReduceOp::Sum, vec![u64::MAX]));
        assert!(reduce_in_rank_order(0, &[&big, &big], 1).is_err());
        assert_eq!(CollectiveShape { floats: true, op: ReduceOp::Sum, len: 5 }.to_word(), (1 << 63) | (2 << 61) | 5);
    }

    #[test]
    fn buckets_reduce_each_part_and_name_invalid_ranks() {
        let r0 = Payload::Bucket(vec![
            part(-1.0, 2.0, 3),
            Contribution { mins: vec![f32::INFINITY; 2], ..Default::default() },
        ]);
        let mut p1 = part(-4.0, 1.0, 5);
        p1.checks = vec![8];
        let r1 = Payload::Bucket(vec![p1, Contribution { mins: vec![2.0, -3.0], ..Default::default() }]);
        let out = reduce_in_rank_order(0, &[&r0, &r1], 0).unwrap().into_bucket().unwrap();
        assert_eq!(out[0].mins, vec![-4.0]);
        assert_eq!(out[0].maxs, vec![2.0, 0.5]);
        assert_eq!(out[0].sums, vec![8]);
        assert_eq!(out[0].checks_differ, vec![1]);
        assert_eq!(out[0].gathered, vec![vec![3, 1], vec![5, 1]]);
        assert_eq!(out[1].mins, vec![2.0, -3.0]); // rank 0 had nothing (+inf)
        assert!(out[1].checks_differ.is_empty());

        let second = || Contribution { mins: vec![1.0, 2.0], ..Default::default() };
        let bad = Payload::Bucket(vec![part(f32::NAN, 2.0, 3), second()]);
        let e = reduce_in_rank_order(3, &[&r0, &bad], 0).unwrap_err().to_string();
        assert!(e.contains("rank 1 sent invalid values at collective #3 (part 0)"), "{e}");
        let mixed = Payload::Bucket(vec![part(-1.0, f32::INFINITY, 3), second()]);
        let e = reduce_in_rank_order(3, &[&mixed, &r1], 1).unwrap_err().to_string();
        assert!(e.contains("rank 0 sent invalid values"), "{e}");
        let over = Payload::Bucket(vec![part(-1.0, 2.0, u64::MAX), second()]);
        let r2 = Payload::Bucket(vec![part(-1.0, 2.0, 1), second()]);
        assert!(reduce_in_rank_order(0, &[&over, &r2], 0).unwrap_err().to_string().contains("overflows"));
    }

    #[test]
    fn all_reduces_give_what_the_exchange_gives() {
        let parts = vec![part(-1.0, 2.0, 3), Contribution { maxs: vec![f32::NEG_INFINITY], ..Default::default() }];
        let out = reduce_with_all_reduces(&super::super::SingleRank, &parts).unwrap();
        let local = Payload::Bucket(parts.clone());
        assert_eq!(Outcome::Bucket(out), reduce_in_rank_order(0, &[&local], 0).unwrap());
        let bad = vec![part(f32::NAN, 2.0, 3)];
        let e = reduce_with_all_reduces(&super::super::SingleRank, &bad).unwrap_err().to_string();
        assert!(e.contains("rank 0 sent invalid values (part 0)"), "{e}");
    }

    #[test]
    fn names_ranks() {
        assert_eq!(name_ranks(&[2]), "rank 2");
        assert_eq!(name_ranks(&[1, 3]), "ranks 1, 3");
        let many: Vec<usize> = (1..65536).collect();
        assert_eq!(
            name_ranks(&many),
            "65535 ranks (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, and 65519 more)"
        );
    }
}
