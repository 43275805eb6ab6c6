//! The lane arithmetic of `shfl.sync` (PTX ISA §9.7.9.6): which lane each lane reads.

use super::FaultKind;
use super::lanes::Lanes;
use super::warp::LaneFault;
use crate::ptx::inst::ShflMode;

/// The lane that `lane` reads and the predicate `p`, from the ISA's semantics: `b` is the lane
/// or offset (its low 5 bits), `c` packs the clamp value (bits 0–4) and the segment mask (bits
/// 8–12). Out of range, a lane reads its own value and `p` is false.
pub(crate) fn source(mode: ShflMode, lane: u32, b: u32, c: u32) -> (u32, bool) {
    let bval = b & 31;
    let cval = c & 31;
    let segmask = (c >> 8) & 31;
    let max_lane = (lane & segmask) | (cval & !segmask);
    let min_lane = lane & segmask;
    let (j, pval) = match mode {
        ShflMode::Up => {
            let j = lane as i32 - bval as i32;
            (j, j >= max_lane as i32)
        }
        ShflMode::Down => {
            let j = (lane + bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Bfly => {
            let j = (lane ^ bval) as i32;
            (j, j <= max_lane as i32)
        }
        ShflMode::Idx => {
            let j = (min_lane | (bval & !segmask)) as i32;
            (j, j <= max_lane as i32)
        }
    };
    if pval { (j as u32, true) } else { (lane, false) }
}

/// Each lane of `part` reads `a` of its source lane into `out`, and its predicate into `p`.
/// Reading a lane outside `member` is a fault: the ISA leaves the value undefined.
#[allow(clippy::too_many_arguments)]
pub(crate) fn exchange(
    mode: ShflMode,
    a: &Lanes,
    b: &Lanes,
    c: &Lanes,
    part: u32,
    member: u32,
    out: &mut Lanes,
    p: &mut u32,
) -> Result<(), LaneFault> {
    let mut m = part;
    while m != 0 {
        let lane = m.trailing_zeros();
        m &= m - 1;
        let (j, pval) = source(mode, lane, b[lane as usize] as u32, c[lane as usize] as u32);
        if member >> j & 1 == 0 {
            return Err(LaneFault {
                lane,
                kind: FaultKind::ShuffleMask,
                detail: format!("lane {lane} reads lane {j}, which is not in the membermask {member:#010x}"),
            });
        }
        out[lane as usize] = a[j as usize];
        *p |= u32::from(pval) << lane;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_isa_lane_formulas() {
        // __shfl_xor_sync(FULL, v, 16): c = 0x1f.
        assert_eq!(source(ShflMode::Bfly, 3, 16, 0x1f), (19, true));
        // __shfl_xor_sync with width 8: c = ((32 - 8) << 8) | 0x1f.
        assert_eq!(source(ShflMode::Bfly, 3, 8, (24 << 8) | 0x1f), (3, false));
        assert_eq!(source(ShflMode::Bfly, 3, 4, (24 << 8) | 0x1f), (7, true));
        // __shfl_up_sync(FULL, v, 1): c = 0; lane 0 keeps its own value.
        assert_eq!(source(ShflMode::Up, 0, 1, 0), (0, false));
        assert_eq!(source(ShflMode::Up, 5, 1, 0), (4, true));
        // __shfl_down_sync(FULL, v, 1): c = 0x1f; lane 31 keeps its own.
        assert_eq!(source(ShflMode::Down, 31, 1, 0x1f), (31, false));
        assert_eq!(source(ShflMode::Down, 30, 1, 0x1f), (31, true));
        // __shfl_sync(FULL, v, 7): c = 0x1f.
        assert_eq!(source(ShflMode::Idx, 20, 7, 0x1f), (7, true));
        // With width 16 (c = (16 << 8) | 0x1f): lane 20 reads lane 16 + 7.
        assert_eq!(source(ShflMode::Idx, 20, 7, (16 << 8) | 0x1f), (23, true));
    }
}
