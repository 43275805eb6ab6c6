//! Rounding an exact value to a binary floating-point format, in any of the four IEEE modes:
//! what `cvt` needs beyond the host's round-to-nearest conversions (directed modes, `.f16`,
//! `.bf16`).

use crate::ptx::inst::Rounding;

/// A binary interchange format: exponent and fraction bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Format {
    pub exp_bits: u32,
    pub frac_bits: u32,
}

pub(crate) const F16: Format = Format { exp_bits: 5, frac_bits: 10 };
pub(crate) const BF16: Format = Format { exp_bits: 8, frac_bits: 7 };
pub(crate) const F32: Format = Format { exp_bits: 8, frac_bits: 23 };
pub(crate) const F64: Format = Format { exp_bits: 11, frac_bits: 52 };

impl Format {
    fn bias(self) -> i32 {
        (1 << (self.exp_bits - 1)) - 1
    }

    fn sign_bit(self) -> u64 {
        1 << (self.exp_bits + self.frac_bits)
    }

    fn exp_mask(self) -> u64 {
        (1 << self.exp_bits) - 1
    }

    /// The bits of +infinity.
    pub(crate) fn infinity(self) -> u64 {
        self.exp_mask() << self.frac_bits
    }

    /// The bits of the largest finite value.
    pub(crate) fn max_finite(self) -> u64 {
        self.infinity() - 1
    }

    /// The canonical NaN of NVIDIA GPUs: sign clear, every exponent and fraction bit set
    /// (`0x7fffffff` for `.f32`).
    pub(crate) fn canonical_nan(self) -> u64 {
        self.sign_bit() - 1
    }

    /// The smallest normal exponent.
    fn emin(self) -> i32 {
        1 - self.bias()
    }
}

/// What a bit pattern of a format holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Nan,
    Infinity {
        negative: bool,
    },
    Zero {
        negative: bool,
    },
    /// `(-1)^negative × mantissa × 2^exp`, exactly.
    Finite {
        negative: bool,
        mantissa: u64,
        exp: i32,
    },
}

/// Decodes `bits` of format `f`.
pub(crate) fn decode(bits: u64, f: Format) -> Value {
    let negative = bits & f.sign_bit() != 0;
    let e = ((bits >> f.frac_bits) & f.exp_mask()) as i32;
    let frac = bits & ((1 << f.frac_bits) - 1);
    if e == f.exp_mask() as i32 {
        return if frac == 0 { Value::Infinity { negative } } else { Value::Nan };
    }
    if e == 0 {
        if frac == 0 {
            return Value::Zero { negative };
        }
        return Value::Finite { negative, mantissa: frac, exp: f.emin() - f.frac_bits as i32 };
    }
    Value::Finite { negative, mantissa: frac | (1 << f.frac_bits), exp: e - f.bias() - f.frac_bits as i32 }
}

/// Whether `bits` of format `f` is a subnormal number.
pub(crate) fn is_subnormal(bits: u64, f: Format) -> bool {
    (bits >> f.frac_bits) & f.exp_mask() == 0 && bits & ((1 << f.frac_bits) - 1) != 0
}

/// The bits of `(-1)^negative × mantissa × 2^exp` rounded to format `f` by `rnd`, with the
/// format's overflow rules (to infinity, or to the largest finite value when the mode rounds
/// towards zero from that side) and gradual underflow.
pub(crate) fn round(negative: bool, mantissa: u128, exp: i32, f: Format, rnd: Rounding) -> u64 {
    let sign = if negative { f.sign_bit() } else { 0 };
    if mantissa == 0 {
        return sign;
    }
    let p = f.frac_bits as i32;
    let top = 127 - mantissa.leading_zeros() as i32; // the value is in [2^(exp+top), 2^(exp+top+1))
    let e = exp + top;
    // The exponent of the last place kept: normal numbers keep p fraction bits, subnormal ones
    // the places down to 2^(emin - p).
    let mut quantum = e.max(f.emin()) - p;
    let shift = quantum - exp;
    let (mut m, rem, half): (u128, u128, u128) = if shift <= 0 {
        (mantissa << (-shift) as u32, 0, 1)
    } else if shift > 128 {
        (0, mantissa, u128::MAX) // below half a place, and not zero
    } else if shift == 128 {
        (0, mantissa, 1 << 127)
    } else {
        (mantissa >> shift, mantissa & ((1u128 << shift) - 1), 1u128 << (shift - 1))
    };
    let up = match rnd {
        Rounding::NearestEven => rem > half || (rem == half && rem != 0 && m & 1 == 1),
        Rounding::TowardZero => false,
        Rounding::Down => negative && rem != 0,
        Rounding::Up => !negative && rem != 0,
    };
    if up {
        m += 1;
    }
    if m == 1u128 << (p + 1) {
        m >>= 1;
        quantum += 1;
    }
    if m < 1u128 << p {
        // Subnormal (or zero): the exponent field is 0.
        return sign | m as u64;
    }
    let biased = quantum + p + f.bias();
    if biased >= f.exp_mask() as i32 {
        let to_max = match rnd {
            Rounding::NearestEven => false,
            Rounding::TowardZero => true,
            Rounding::Down => !negative,
            Rounding::Up => negative,
        };
        return sign | if to_max { f.max_finite() } else { f.infinity() };
    }
    sign | (biased as u64) << f.frac_bits | (m as u64 & ((1 << f.frac_bits) - 1))
}

/// Converts `bits` of format `from` to format `to`, rounding by `rnd`; NaN becomes the
/// canonical NaN of `to`.
pub(crate) fn convert(bits: u64, from: Format, to: Format, rnd: Rounding) -> u64 {
    match decode(bits, from) {
        Value::Nan => to.canonical_nan(),
        Value::Infinity { negative } => to.infinity() | if negative { to.sign_bit() } else { 0 },
        Value::Zero { negative } => {
            if negative {
                to.sign_bit()
            } else {
                0
            }
        }
        Value::Finite { negative, mantissa, exp } => round(negative, u128::from(mantissa), exp, to, rnd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODES: [Rounding; 4] = [Rounding::NearestEven, Rounding::TowardZero, Rounding::Down, Rounding::Up];

    fn samples64() -> Vec<f64> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.1,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1e-40,
            -1e-45,
            3.4028235677973366e38,
            3.4028234663852886e38,
            1.401298464324817e-45,
            7.006492321624085e-46,
            7.006492321624087e-46,
            2.0f64.powi(-149) * 1.5,
            2.0f64.powi(-126) * (1.0 - 2.0f64.powi(-25)),
        ];
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            if f.is_finite() {
                v.push(f);
                v.push(f64::from_bits((x & 0x800F_FFFF_FFFF_FFFF) | (((x >> 52) % 300 + 1023 - 150) << 52)));
            }
        }
        v
    }

    #[test]
    fn nearest_matches_the_hosts_conversions() {
        for x in samples64() {
            let got = convert(x.to_bits(), F64, F32, Rounding::NearestEven) as u32;
            assert_eq!(got, (x as f32).to_bits(), "{x:e}");
        }
    }

    #[test]
    fn directed_modes_bracket_the_value() {
        for x in samples64() {
            let r = |m| f32::from_bits(convert(x.to_bits(), F64, F32, m) as u32) as f64;
            let (z, d, u) = (r(Rounding::TowardZero), r(Rounding::Down), r(Rounding::Up));
            assert!(d <= x && x <= u, "{x:e}: {d:e} {u:e}");
            assert!(z.abs() <= x.abs(), "{x:e}: {z:e}");
            if (x as f32) as f64 == x {
                assert!(d == x && u == x && z == x);
            } else if d.is_finite() && u.is_finite() {
                // Adjacent floats: nothing representable in between.
                let (db, ub) = ((d as f32).to_bits() as i64, (u as f32).to_bits() as i64);
                assert!((db - ub).abs() == 1 || (d == 0.0 && u > 0.0 && ub == 1) || (u == 0.0 && d < 0.0), "{x:e}");
            }
        }
    }

    #[test]
    fn overflow_and_underflow_follow_the_mode() {
        let big = f64::MAX.to_bits();
        assert_eq!(convert(big, F64, F32, Rounding::NearestEven) as u32, f32::INFINITY.to_bits());
        assert_eq!(convert(big, F64, F32, Rounding::TowardZero) as u32, f32::MAX.to_bits());
        assert_eq!(convert(big, F64, F32, Rounding::Down) as u32, f32::MAX.to_bits());
        assert_eq!(convert((-f64::MAX).to_bits(), F64, F32, Rounding::Down) as u32, f32::NEG_INFINITY.to_bits());
        assert_eq!(convert((-f64::MAX).to_bits(), F64, F32, Rounding::Up) as u32, (-f32::MAX).to_bits());
        let tiny = 1e-300f64.to_bits();
        assert_eq!(convert(tiny, F64, F32, Rounding::NearestEven), 0);
        assert_eq!(convert(tiny, F64, F32, Rounding::Up), 1, "the smallest subnormal");
        assert_eq!(convert((-1e-300f64).to_bits(), F64, F32, Rounding::Down) as u32, 0x8000_0001);
        assert_eq!(convert(f64::NAN.to_bits(), F64, F32, Rounding::Up), 0x7fff_ffff);
        for m in MODES {
            assert_eq!(convert(f64::INFINITY.to_bits(), F64, F16, m), 0x7c00);
        }
    }

    #[test]
    fn half_precision_rounding() {
        // 65520 is halfway between 65504 (the largest f16) and 65536: it rounds to infinity.
        assert_eq!(convert(65520f32.to_bits() as u64, F32, F16, Rounding::NearestEven), 0x7c00);
        assert_eq!(convert(65519f32.to_bits() as u64, F32, F16, Rounding::NearestEven), 0x7bff);
        assert_eq!(convert(65520f32.to_bits() as u64, F32, F16, Rounding::TowardZero), 0x7bff);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(convert((1.0f32 + 2f32.powi(-11)).to_bits() as u64, F32, F16, Rounding::NearestEven), 0x3c00);
        assert_eq!(convert((1.0f32 + 3.0 * 2f32.powi(-11)).to_bits() as u64, F32, F16, Rounding::NearestEven), 0x3c02);
        // The smallest f16 subnormal is 2^-24; half of it ties to even (0), a bit more rounds up.
        assert_eq!(convert(2f32.powi(-25).to_bits() as u64, F32, F16, Rounding::NearestEven), 0);
        assert_eq!(convert((2f32.powi(-25) * 1.5).to_bits() as u64, F32, F16, Rounding::NearestEven), 1);
        assert_eq!(decode(1, F16), Value::Finite { negative: false, mantissa: 1, exp: -24 });
    }
}
