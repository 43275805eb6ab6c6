//! The fundamental types of PTX (`.u32`, `.f64`, `.pred`, ...) as qualifiers and as register
//! classes.

/// A scalar type qualifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scalar {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    Bf16,
    F32,
    F64,
    Pred,
}

impl Scalar {
    /// The type a qualifier such as `.u32` names, if it names one.
    pub(crate) fn parse(q: &str) -> Option<Scalar> {
        Some(match q {
            ".b8" => Scalar::B8,
            ".b16" => Scalar::B16,
            ".b32" => Scalar::B32,
            ".b64" => Scalar::B64,
            ".u8" => Scalar::U8,
            ".u16" => Scalar::U16,
            ".u32" => Scalar::U32,
            ".u64" => Scalar::U64,
            ".s8" => Scalar::S8,
            ".s16" => Scalar::S16,
            ".s32" => Scalar::S32,
            ".s64" => Scalar::S64,
            ".f16" => Scalar::F16,
            ".bf16" => Scalar::Bf16,
            ".f32" => Scalar::F32,
            ".f64" => Scalar::F64,
            ".pred" => Scalar::Pred,
            _ => return None,
        })
    }

    /// Its width in bits (1 for `.pred`).
    pub(crate) fn bits(self) -> u32 {
        match self {
            Scalar::B8 | Scalar::U8 | Scalar::S8 => 8,
            Scalar::B16 | Scalar::U16 | Scalar::S16 | Scalar::F16 | Scalar::Bf16 => 16,
            Scalar::B32 | Scalar::U32 | Scalar::S32 | Scalar::F32 => 32,
            Scalar::B64 | Scalar::U64 | Scalar::S64 | Scalar::F64 => 64,
            Scalar::Pred => 1,
        }
    }

    /// Its width in bytes (0 for `.pred`).
    pub(crate) fn bytes(self) -> u32 {
        self.bits() / 8
    }

    /// A signed integer type.
    pub(crate) fn is_signed(self) -> bool {
        matches!(self, Scalar::S8 | Scalar::S16 | Scalar::S32 | Scalar::S64)
    }

    /// A floating-point type.
    pub(crate) fn is_float(self) -> bool {
        matches!(self, Scalar::F16 | Scalar::Bf16 | Scalar::F32 | Scalar::F64)
    }

    /// An integer (signed, unsigned) or bit-size type.
    pub(crate) fn is_int(self) -> bool {
        !self.is_float() && self != Scalar::Pred
    }

    /// The integer type of arithmetic on this type, if it is an integer type of 16, 32 or 64
    /// bits (bit-size types count as unsigned).
    pub(crate) fn int_ty(self) -> Option<IntTy> {
        Some(match self {
            Scalar::U16 | Scalar::B16 => IntTy::U16,
            Scalar::S16 => IntTy::S16,
            Scalar::U32 | Scalar::B32 => IntTy::U32,
            Scalar::S32 => IntTy::S32,
            Scalar::U64 | Scalar::B64 => IntTy::U64,
            Scalar::S64 => IntTy::S64,
            _ => return None,
        })
    }
}

/// The integer types of arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum IntTy {
    U16,
    S16,
    U32,
    S32,
    U64,
    S64,
}

impl IntTy {
    pub(crate) fn bits(self) -> u32 {
        match self {
            IntTy::U16 | IntTy::S16 => 16,
            IntTy::U32 | IntTy::S32 => 32,
            IntTy::U64 | IntTy::S64 => 64,
        }
    }

    pub(crate) fn signed(self) -> bool {
        matches!(self, IntTy::S16 | IntTy::S32 | IntTy::S64)
    }

    /// The unsigned type of the same width.
    pub(crate) fn unsigned(self) -> IntTy {
        match self {
            IntTy::U16 | IntTy::S16 => IntTy::U16,
            IntTy::U32 | IntTy::S32 => IntTy::U32,
            IntTy::U64 | IntTy::S64 => IntTy::U64,
        }
    }
}

/// The floating-point formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FloatTy {
    F16,
    Bf16,
    F32,
    F64,
}

impl FloatTy {
    pub(crate) fn of(s: Scalar) -> Option<FloatTy> {
        Some(match s {
            Scalar::F16 => FloatTy::F16,
            Scalar::Bf16 => FloatTy::Bf16,
            Scalar::F32 => FloatTy::F32,
            Scalar::F64 => FloatTy::F64,
            _ => return None,
        })
    }

    pub(crate) fn bits(self) -> u32 {
        match self {
            FloatTy::F16 | FloatTy::Bf16 => 16,
            FloatTy::F32 => 32,
            FloatTy::F64 => 64,
        }
    }
}

/// What a register holds: a predicate, or a value of 16, 32 or 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegClass {
    Pred,
    Bits(u32),
}

impl RegClass {
    /// The class of a `.reg` type; `.b8` registers and packed types are not supported.
    pub(crate) fn of(s: Scalar) -> Option<RegClass> {
        match s {
            Scalar::Pred => Some(RegClass::Pred),
            Scalar::B8 | Scalar::U8 | Scalar::S8 => None,
            other => Some(RegClass::Bits(other.bits())),
        }
    }
}
