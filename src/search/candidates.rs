//! Candidate lists and the pick of the best candidate by error (SPEC §4, MSEObserver and
//! MixObserver).

/// The number of MSE candidate indices before striding: `i = 0 .. 95`.
pub const MSE_CANDIDATES: usize = 95;

/// Errors within this relative distance of the smallest count as tied.
pub const TIE_RTOL: f64 = 1e-6;

/// The MSE candidates `(i, f_i)` for `i = 0, stride, 2*stride, … < 95`, with
/// `f_i = f32(1 - 0.01 * i)` (the product in f64).
///
/// ```
/// use qcalib::search::candidates::mse_candidates;
/// let c = mse_candidates(5);
/// assert_eq!(c.len(), 19);
/// assert_eq!(c[1], (5, 0.95));
/// ```
pub fn mse_candidates(stride: usize) -> Vec<(usize, f32)> {
    (0..MSE_CANDIDATES).step_by(stride.max(1)).map(|i| (i, (1.0 - 0.01 * i as f64) as f32)).collect()
}

/// Which of several tied candidates wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TieBreak {
    /// The first tied candidate in list order (Mix: the smallest clip).
    First,
    /// The last tied candidate in list order (MSE: the most clipping).
    Last,
}

/// The index of the candidate with the smallest error, where errors within a relative
/// [`TIE_RTOL`] of the smallest count as tied and `tie` decides among them. `None` for an empty
/// list.
///
/// ```
/// use qcalib::search::candidates::{pick_smallest, TieBreak};
/// let e = [3.0, 1.0, 1.0 + 1e-9, 2.0];
/// assert_eq!(pick_smallest(&e, TieBreak::First), Some(1));
/// assert_eq!(pick_smallest(&e, TieBreak::Last), Some(2));
/// ```
pub fn pick_smallest(errors: &[f64], tie: TieBreak) -> Option<usize> {
    let min = errors.iter().copied().fold(f64::INFINITY, f64::min);
    let tied = |e: f64| (e - min).abs() <= TIE_RTOL * min.abs();
    match tie {
        TieBreak::First => errors.iter().position(|&e| tied(e)),
        TieBreak::Last => errors.iter().rposition(|&e| tied(e)),
    }
}
