//! A natural logarithm that vectorises: fdlibm's `__ieee754_log` (error below 1 ulp) without its
//! branches, for the thousands of logarithms of the KL search.

// fdlibm's constants, by their bits.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);

/// `ln(x)` for positive, finite, normal `x`, within 1 ulp; branch-free so that loops over it
/// vectorise. Other inputs give unspecified finite or non-finite values: callers keep to the
/// domain.
///
/// ```
/// use qcalib::search::ln::ln;
/// for x in [1e-10, 0.5, 1.0, 2.0, 123.456, 1e300] {
///     assert!((ln(x) - x.ln()).abs() <= 2.0 * f64::EPSILON * x.ln().abs().max(1.0));
/// }
/// ```
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut k = ((bits >> 52) as i64) - 1023;
    // The mantissa m in [1, 2), moved to [sqrt(2)/2, sqrt(2)) so that f = m - 1 is small.
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    k += big as i64;
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let dk = k as f64;
    dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f)
}

/// `ln(1 + z)` for finite `z >= 0`, within a few ulp also where `z` is tiny (Goldberg's
/// correction of the rounding of `1 + z`); branch-free like [`ln`].
///
/// ```
/// use qcalib::search::ln::ln_1p;
/// for z in [0.0, 1e-300, 1e-17, 3e-10, 0.5, 1.0, 7.0, 1e12, 1e300] {
///     assert!((ln_1p(z) - z.ln_1p()).abs() <= 4.0 * f64::EPSILON * z.ln_1p());
/// }
/// ```
#[inline(always)]
pub fn ln_1p(z: f64) -> f64 {
    let u = 1.0 + z;
    let d = u - 1.0;
    // ln(u) is exact to rounding for the u that 1 + z rounded to; z / d scales it back to z.
    let corrected = ln(u) * (z / d);
    if d == 0.0 { z } else { corrected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_one_ulp_of_the_library_logarithm() {
        let mut worst = 0f64;
        let mut x = 1e-300f64;
        while x < 1e300 {
            let r2 = std::f64::consts::SQRT_2;
            for y in [x, x * 1.000_000_1, x * r2 * (1.0 - 1e-9), x * r2 * (1.0 + 1e-9), x * 1.9999] {
                let (a, b) = (ln(y), y.ln());
                let ulp = f64::EPSILON * b.abs().max(f64::MIN_POSITIVE);
                worst = worst.max((a - b).abs() / ulp);
            }
            x *= 1.37;
        }
        for i in 1..100_000u64 {
            let y = i as f64;
            let (a, b) = (ln(y), y.ln());
            worst = worst.max((a - b).abs() / (f64::EPSILON * b.abs().max(1e-300)));
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn ln_1p_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut z = 1e-300f64;
        while z < 1e300 {
            for y in [z, z * 1.000_000_1, z * 1.37, z * 1.9999] {
                let (a, b) = (ln_1p(y), y.ln_1p());
                worst = worst.max((a - b).abs() / (f64::EPSILON * b));
            }
            z *= 1.21;
        }
        assert!(worst <= 4.0, "worst error {worst} ulp");
        assert_eq!(ln_1p(0.0), 0.0);
    }
}
