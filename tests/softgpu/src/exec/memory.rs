//! Loads, stores and atomics (PTX ISA §9.7.9.8–9.7.9.11, §9.7.13.5–9.7.13.6) over the lanes of
//! a warp, in lane order, with the checks of [`FaultKind`]:
//!
//! - every access must be aligned to its size (a vector access to the size of the whole
//!   vector): otherwise [`FaultKind::MisalignedAddress`];
//! - a global access must lie inside one live allocation of the driver's [`GlobalMemory`], a
//!   shared access inside the block's shared memory (static and dynamic): otherwise
//!   [`FaultKind::IllegalAddress`];
//! - a shared read (a load, or an atomic: it reads what it modifies) must read only bytes that
//!   a thread of the block wrote: otherwise [`FaultKind::UninitializedShared`]. Shared memory
//!   starts filled with the poison byte `0xA5` and every byte written is tracked.
//!
//! Global memory is accessed with host atomics of the access's size (relaxed for loads and
//! stores, so plain accesses of different blocks never race in the Rust sense; acquire-release
//! for `atom` and `red`), since blocks run on several host threads. A `.v4` access is four
//! element accesses. Shared memory belongs to one block, which one host thread runs.

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};

use super::int::{extend, truncate};
use super::lanes::Lanes;
use super::warp::LaneFault;
use super::{Allocation, FaultKind, GlobalMemory};
use crate::ptx::inst::{Addr, AtomOp, Reg, Space, Src};
use crate::ptx::types::IntTy;

/// The byte shared memory starts filled with.
pub(crate) const POISON: u8 = 0xA5;

/// What went wrong with one access.
type AccessError = (FaultKind, String);

/// The shared memory of one block, and which of its bytes were written.
pub(crate) struct Shared {
    bytes: Vec<u8>,
    written: Vec<bool>,
}

impl Shared {
    pub(crate) fn new(len: usize) -> Self {
        Shared { bytes: vec![POISON; len], written: vec![false; len] }
    }

    /// Back to the state of a new block.
    pub(crate) fn reset(&mut self) {
        self.bytes.fill(POISON);
        self.written.fill(false);
    }

    /// The index of the `size` bytes at `addr`, checked.
    fn range(&self, addr: u64, size: u64, what: &str) -> Result<usize, AccessError> {
        if !addr.is_multiple_of(size) {
            return Err((FaultKind::MisalignedAddress, format!("{what} of {size} bytes at shared address {addr:#x}")));
        }
        match addr.checked_add(size) {
            Some(end) if end <= self.bytes.len() as u64 => Ok(addr as usize),
            _ => Err((
                FaultKind::IllegalAddress,
                format!(
                    "{what} of {size} bytes at shared address {addr:#x}, outside the block's {} bytes of shared memory",
                    self.bytes.len()
                ),
            )),
        }
    }

    fn read_at(&self, at: usize, size: usize, addr: u64, what: &str) -> Result<u64, AccessError> {
        if let Some(k) = self.written[at..at + size].iter().position(|w| !w) {
            return Err((
                FaultKind::UninitializedShared,
                format!(
                    "{what} of {size} bytes at shared address {addr:#x} reads byte {:#x}, which no thread of the block wrote",
                    addr + k as u64
                ),
            ));
        }
        let mut v = [0u8; 8];
        v[..size].copy_from_slice(&self.bytes[at..at + size]);
        Ok(u64::from_le_bytes(v))
    }

    fn write_at(&mut self, at: usize, size: usize, value: u64) {
        self.bytes[at..at + size].copy_from_slice(&value.to_le_bytes()[..size]);
        self.written[at..at + size].fill(true);
    }
}

/// Global memory through the driver's table, with the last allocation found kept.
pub(crate) struct Global<'a> {
    memory: &'a dyn GlobalMemory,
    cache: Option<Allocation>,
}

impl<'a> Global<'a> {
    pub(crate) fn new(memory: &'a dyn GlobalMemory) -> Self {
        Global { memory, cache: None }
    }

    /// The host address of the `size` bytes at `addr`, checked.
    fn host(&mut self, addr: u64, size: u64, what: &str) -> Result<*mut u8, AccessError> {
        if !addr.is_multiple_of(size) {
            return Err((FaultKind::MisalignedAddress, format!("{what} of {size} bytes at global address {addr:#x}")));
        }
        let inside = |a: &Allocation| addr >= a.base && a.len >= size && addr - a.base <= a.len - size;
        let host = match self.cache {
            Some(a) if inside(&a) => Some(a.host.wrapping_add((addr - a.base) as usize)),
            _ => match self.memory.allocation(addr) {
                Some(a) if inside(&a) => {
                    self.cache = Some(a);
                    Some(a.host.wrapping_add((addr - a.base) as usize))
                }
                _ => self.memory.resolve(addr, size),
            },
        };
        match host {
            None => Err((
                FaultKind::IllegalAddress,
                format!("{what} of {size} bytes at global address {addr:#x}, outside every live allocation"),
            )),
            Some(p) if !(p as usize).is_multiple_of(size as usize) => Err((
                FaultKind::IllegalAddress,
                format!("{what} at global address {addr:#x}: the driver maps it to a misaligned host address {p:p}"),
            )),
            Some(p) => Ok(p),
        }
    }
}

/// Loads `size` bytes at `p` atomically (relaxed).
///
/// # Safety
/// `p` must be valid for `size` bytes, aligned to `size`, and accessed only atomically while the
/// launch runs.
unsafe fn load_host(p: *mut u8, size: u64) -> u64 {
    // SAFETY: the caller's contract (checked alignment, a live allocation of the driver).
    unsafe {
        match size {
            1 => u64::from(AtomicU8::from_ptr(p).load(Ordering::Relaxed)),
            2 => u64::from(AtomicU16::from_ptr(p.cast()).load(Ordering::Relaxed)),
            4 => u64::from(AtomicU32::from_ptr(p.cast()).load(Ordering::Relaxed)),
            _ => AtomicU64::from_ptr(p.cast()).load(Ordering::Relaxed),
        }
    }
}

/// Stores the low `size` bytes of `v` at `p` atomically (relaxed).
///
/// # Safety
/// As [`load_host`].
unsafe fn store_host(p: *mut u8, size: u64, v: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        match size {
            1 => AtomicU8::from_ptr(p).store(v as u8, Ordering::Relaxed),
            2 => AtomicU16::from_ptr(p.cast()).store(v as u16, Ordering::Relaxed),
            4 => AtomicU32::from_ptr(p.cast()).store(v as u32, Ordering::Relaxed),
            _ => AtomicU64::from_ptr(p.cast()).store(v, Ordering::Relaxed),
        }
    }
}

/// The value an atomic leaves, given the old one (`b`, `c`: its operands).
fn atom_new(op: AtomOp, ty: IntTy, old: u64, b: u64, c: u64) -> u64 {
    let bits = ty.bits();
    let (o, b) = (truncate(old, bits), truncate(b, bits));
    let signed = |v: u64| extend(v, bits, true) as i64;
    let v = match op {
        AtomOp::Add => o.wrapping_add(b),
        AtomOp::Min if ty.signed() => signed(o).min(signed(b)) as u64,
        AtomOp::Max if ty.signed() => signed(o).max(signed(b)) as u64,
        AtomOp::Min => o.min(b),
        AtomOp::Max => o.max(b),
        AtomOp::And => o & b,
        AtomOp::Or => o | b,
        AtomOp::Xor => o ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if o == b {
                c
            } else {
                o
            }
        }
        AtomOp::Inc => {
            if o >= b {
                0
            } else {
                o + 1
            }
        }
        AtomOp::Dec => {
            if o == 0 || o > b {
                b
            } else {
                o - 1
            }
        }
    };
    truncate(v, bits)
}

/// An atomic on global memory at `p`; returns the old value.
///
/// # Safety
/// As [`load_host`], with `p` aligned to the type's size.
unsafe fn atom_host(p: *mut u8, op: AtomOp, ty: IntTy, b: u64, c: u64) -> u64 {
    const O: Ordering = Ordering::AcqRel;
    // SAFETY: the caller's contract.
    unsafe {
        if ty.bits() == 32 {
            let a = AtomicU32::from_ptr(p.cast());
            let (b32, c32) = (b as u32, c as u32);
            let old = match op {
                AtomOp::Add => a.fetch_add(b32, O),
                AtomOp::Min if ty.signed() => AtomicI32::from_ptr(p.cast()).fetch_min(b32 as i32, O) as u32,
                AtomOp::Max if ty.signed() => AtomicI32::from_ptr(p.cast()).fetch_max(b32 as i32, O) as u32,
                AtomOp::Min => a.fetch_min(b32, O),
                AtomOp::Max => a.fetch_max(b32, O),
                AtomOp::And => a.fetch_and(b32, O),
                AtomOp::Or => a.fetch_or(b32, O),
                AtomOp::Xor => a.fetch_xor(b32, O),
                AtomOp::Exch => a.swap(b32, O),
                AtomOp::Cas => a.compare_exchange(b32, c32, O, Ordering::Acquire).unwrap_or_else(|old| old),
                AtomOp::Inc | AtomOp::Dec => a
                    .fetch_update(O, Ordering::Acquire, |o| Some(atom_new(op, ty, u64::from(o), b, c) as u32))
                    .unwrap_or_else(|old| old),
            };
            u64::from(old)
        } else {
            let a = AtomicU64::from_ptr(p.cast());
            match op {
                AtomOp::Add => a.fetch_add(b, O),
                AtomOp::Min if ty.signed() => AtomicI64::from_ptr(p.cast()).fetch_min(b as i64, O) as u64,
                AtomOp::Max if ty.signed() => AtomicI64::from_ptr(p.cast()).fetch_max(b as i64, O) as u64,
                AtomOp::Min => a.fetch_min(b, O),
                AtomOp::Max => a.fetch_max(b, O),
                AtomOp::And => a.fetch_and(b, O),
                AtomOp::Or => a.fetch_or(b, O),
                AtomOp::Xor => a.fetch_xor(b, O),
                AtomOp::Exch => a.swap(b, O),
                AtomOp::Cas => a.compare_exchange(b, c, O, Ordering::Acquire).unwrap_or_else(|old| old),
                AtomOp::Inc | AtomOp::Dec => {
                    a.fetch_update(O, Ordering::Acquire, |o| Some(atom_new(op, ty, o, b, c))).unwrap_or_else(|old| old)
                }
            }
        }
    }
}

/// The memory a block sees: its shared memory, global memory, the launch's parameters.
pub(crate) struct Memory<'a> {
    pub shared: Shared,
    pub global: Global<'a>,
    pub params: &'a [u8],
}

/// The address of lane `lane` (each lane computes its address before it writes a register).
#[inline]
fn address(regs: &[Lanes], addr: Addr, lane: usize) -> u64 {
    addr.base.map_or(0, |r| regs[r as usize][lane]).wrapping_add(addr.offset as u64)
}

fn read(regs: &[Lanes], s: Src, lane: usize) -> u64 {
    match s {
        Src::Reg(r) => regs[r as usize][lane],
        Src::Imm(v) => v,
    }
}

/// Iterates over the set bits of `mask`, lowest first.
fn lanes(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            None
        } else {
            let l = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some(l)
        }
    })
}

impl Memory<'_> {
    /// `ld.space`: `n` elements of `size` bytes into `d`, extended to `dst_bits`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ld(
        &mut self,
        regs: &mut [Lanes],
        mask: u32,
        space: Space,
        size: u8,
        signed: bool,
        n: u8,
        d: [Reg; 4],
        dst_bits: u8,
        addr: Addr,
    ) -> Result<(), LaneFault> {
        let (size, total) = (u64::from(size), u64::from(size) * u64::from(n));
        let what = if space == Space::Global { "load" } else { "shared load" };
        for lane in lanes(mask) {
            let a = address(regs, addr, lane);
            let fault = |(kind, detail)| LaneFault { lane: lane as u32, kind, detail };
            let extend_to = |v: u64| truncate(extend(v, size as u32 * 8, signed), u32::from(dst_bits));
            match space {
                Space::Global => {
                    let p = self.global.host(a, total, what).map_err(fault)?;
                    for (k, &dst) in d.iter().enumerate().take(usize::from(n)) {
                        // SAFETY: checked by `host` (a live allocation, aligned).
                        let v = unsafe { load_host(p.wrapping_add(k * size as usize), size) };
                        regs[dst as usize][lane] = extend_to(v);
                    }
                }
                Space::Shared => {
                    let at = self.shared.range(a, total, what).map_err(fault)?;
                    for (k, &dst) in d.iter().enumerate().take(usize::from(n)) {
                        let (at, e) = (at + k * size as usize, a + k as u64 * size);
                        let v = self.shared.read_at(at, size as usize, e, what).map_err(fault)?;
                        regs[dst as usize][lane] = extend_to(v);
                    }
                }
            }
        }
        Ok(())
    }

    /// `st.space`: `n` elements of `size` bytes (the low bytes of each source).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn st(
        &mut self,
        regs: &[Lanes],
        mask: u32,
        space: Space,
        size: u8,
        n: u8,
        src: [Src; 4],
        addr: Addr,
    ) -> Result<(), LaneFault> {
        let (size, total) = (u64::from(size), u64::from(size) * u64::from(n));
        for lane in lanes(mask) {
            let a = address(regs, addr, lane);
            let fault = |(kind, detail)| LaneFault { lane: lane as u32, kind, detail };
            match space {
                Space::Global => {
                    let p = self.global.host(a, total, "store").map_err(fault)?;
                    for (k, &s) in src.iter().enumerate().take(usize::from(n)) {
                        // SAFETY: checked by `host`.
                        unsafe { store_host(p.wrapping_add(k * size as usize), size, read(regs, s, lane)) };
                    }
                }
                Space::Shared => {
                    let at = self.shared.range(a, total, "shared store").map_err(fault)?;
                    for (k, &s) in src.iter().enumerate().take(usize::from(n)) {
                        self.shared.write_at(at + k * size as usize, size as usize, read(regs, s, lane));
                    }
                }
            }
        }
        Ok(())
    }

    /// `atom.space.op.type` (and `red`, with `d == None`), lane by lane.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn atom(
        &mut self,
        regs: &mut [Lanes],
        mask: u32,
        space: Space,
        op: AtomOp,
        ty: IntTy,
        d: Option<Reg>,
        addr: Addr,
        b: Src,
        c: Src,
    ) -> Result<(), LaneFault> {
        let size = u64::from(ty.bits() / 8);
        for lane in lanes(mask) {
            let a = address(regs, addr, lane);
            let fault = |(kind, detail)| LaneFault { lane: lane as u32, kind, detail };
            let (bv, cv) = (read(regs, b, lane), read(regs, c, lane));
            let old = match space {
                Space::Global => {
                    let p = self.global.host(a, size, "atomic").map_err(fault)?;
                    // SAFETY: checked by `host`.
                    unsafe { atom_host(p, op, ty, bv, cv) }
                }
                Space::Shared => {
                    let at = self.shared.range(a, size, "shared atomic").map_err(fault)?;
                    let old = self.shared.read_at(at, size as usize, a, "shared atomic").map_err(fault)?;
                    self.shared.write_at(at, size as usize, atom_new(op, ty, old, bv, cv));
                    old
                }
            };
            if let Some(d) = d {
                regs[d as usize][lane] = truncate(old, ty.bits());
            }
        }
        Ok(())
    }

    /// `ld.param`: the same value for every lane.
    pub(crate) fn param(&self, offset: u32, size: u8, signed: bool, dst_bits: u8) -> u64 {
        let at = offset as usize;
        let mut v = [0u8; 8];
        v[..usize::from(size)].copy_from_slice(&self.params[at..at + usize::from(size)]);
        truncate(extend(u64::from_le_bytes(v), u32::from(size) * 8, signed), u32::from(dst_bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_results() {
        assert_eq!(atom_new(AtomOp::Inc, IntTy::U32, 5, 5, 0), 0);
        assert_eq!(atom_new(AtomOp::Inc, IntTy::U32, 4, 5, 0), 5);
        assert_eq!(atom_new(AtomOp::Dec, IntTy::U32, 0, 5, 0), 5);
        assert_eq!(atom_new(AtomOp::Dec, IntTy::U32, 7, 5, 0), 5);
        assert_eq!(atom_new(AtomOp::Dec, IntTy::U32, 3, 5, 0), 2);
        assert_eq!(atom_new(AtomOp::Min, IntTy::S32, 0xFFFF_FFFF, 3, 0), 0xFFFF_FFFF);
        assert_eq!(atom_new(AtomOp::Min, IntTy::U32, 0xFFFF_FFFF, 3, 0), 3);
        assert_eq!(atom_new(AtomOp::Add, IntTy::U32, 0xFFFF_FFFF, 1, 0), 0);
        assert_eq!(atom_new(AtomOp::Cas, IntTy::U64, 9, 9, 4), 4);
        assert_eq!(atom_new(AtomOp::Cas, IntTy::U64, 9, 8, 4), 9);
    }

    #[test]
    fn shared_checks() {
        let mut s = Shared::new(16);
        assert_eq!(s.range(3, 4, "x").unwrap_err().0, FaultKind::MisalignedAddress);
        assert_eq!(s.range(16, 4, "x").unwrap_err().0, FaultKind::IllegalAddress);
        assert_eq!(s.range(u64::MAX - 3, 4, "x").unwrap_err().0, FaultKind::IllegalAddress);
        let at = s.range(8, 8, "x").unwrap();
        s.write_at(at, 4, 0x1122_3344);
        assert_eq!(s.read_at(at, 4, 8, "x").unwrap(), 0x1122_3344);
        let e = s.read_at(at, 8, 8, "x").unwrap_err();
        assert_eq!(e.0, FaultKind::UninitializedShared);
        assert!(e.1.contains("0xc"), "{}", e.1);
    }
}
