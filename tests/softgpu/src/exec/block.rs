//! One block: its warps run in turn until each has exited or waits at `bar.sync`; then the
//! barrier completes, or the block faults (see [`FaultKind::BarrierDivergence`]).

use super::grid::Plan;
use super::memory::{Global, Memory, Shared};
use super::warp::{Warp, bits};
use super::{Fault, FaultKind, RunStats};
use crate::ptx::Kernel;
use crate::ptx::inst::Op;

/// What a warp sees of its block and launch.
pub(crate) struct Env<'a> {
    pub kernel: &'a Kernel,
    pub mem: Memory<'a>,
    pub block: [u32; 3],
    pub block_dim: [u32; 3],
    pub grid: [u32; 3],
    pub stats: RunStats,
}

impl Env<'_> {
    /// A fault at instruction `pc` of thread `thread` of the current block.
    pub(crate) fn fault(&self, kind: FaultKind, pc: u32, thread: [u32; 3], detail: String) -> Fault {
        let k = self.kernel;
        let line = k.lines.get(pc as usize).copied().unwrap_or(0) as usize;
        let detail = match k.source.get(pc as usize) {
            Some(text) => format!("{detail} (`{text}`)"),
            None => detail,
        };
        Fault { kind, kernel: k.name.clone(), ptx_line: line, block: self.block, thread, detail }
    }
}

/// A host thread's state for running blocks of one launch, one after the other.
pub(crate) struct Worker<'a> {
    pub env: Env<'a>,
    warps: Vec<Warp>,
    threads: u32,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(plan: &'a Plan<'a>) -> Self {
        let k = plan.launch.kernel;
        let threads = plan.threads_per_block;
        let warps = (0..threads.div_ceil(32)).map(|w| Warp::new(w, k.value_regs, k.pred_regs)).collect();
        let mem =
            Memory { shared: Shared::new(plan.shared_bytes), global: Global::new(plan.memory), params: &plan.params };
        let env = Env {
            kernel: k,
            mem,
            block: [0; 3],
            block_dim: plan.launch.block,
            grid: plan.launch.grid,
            stats: RunStats::default(),
        };
        Worker { env, warps, threads }
    }

    /// Runs block `block` to its end.
    pub(crate) fn run_block(&mut self, block: [u32; 3]) -> Result<(), Fault> {
        self.env.block = block;
        self.env.mem.shared.reset();
        for w in &mut self.warps {
            let first = w.index * 32;
            let n = (self.threads - first).min(32);
            w.start(if n == 32 { u32::MAX } else { (1u32 << n) - 1 });
        }
        loop {
            for w in &mut self.warps {
                w.run(&mut self.env)?;
            }
            if self.warps.iter().all(|w| w.bar_wait == 0) {
                break;
            }
            self.complete_barrier()?;
        }
        self.env.stats.blocks += 1;
        Ok(())
    }

    /// Every thread has exited or waits at a barrier, some wait: the barrier completes if all
    /// threads wait at the same `bar.sync`.
    fn complete_barrier(&mut self) -> Result<(), Fault> {
        let dim = self.env.block_dim;
        let mut first: Option<(usize, usize)> = None;
        for (wi, w) in self.warps.iter().enumerate() {
            if let Some(l) = bits(w.bar_wait).next() {
                first = Some((wi, l));
                break;
            }
        }
        let Some((fw, fl)) = first else { return Ok(()) };
        let at = self.warps[fw].pcs[fl];
        let line_of = |pc: u32| self.env.kernel.lines.get(pc as usize).copied().unwrap_or(0);
        let barrier = match self.env.kernel.code.get(at as usize).map(|i| i.op) {
            Some(Op::BarSync { barrier }) => barrier,
            _ => 0,
        };
        let waiting: u32 = self.warps.iter().map(|w| w.bar_wait.count_ones()).sum();
        for w in &self.warps {
            if let Some(l) = bits(w.present & !w.live).next() {
                let t = w.thread(l as u32, dim);
                let detail = format!(
                    "thread ({}, {}, {}) exited at PTX line {} without reaching this bar.sync {barrier}, where {waiting} \
                     threads of the block wait (bar.sync is .aligned: every thread of the block must execute it)",
                    t[0],
                    t[1],
                    t[2],
                    line_of(w.pcs[l])
                );
                return Err(self.env.fault(FaultKind::BarrierDivergence, at, t, detail));
            }
        }
        for w in &self.warps {
            if let Some(l) = bits(w.bar_wait).find(|&l| w.pcs[l] != at) {
                let t = w.thread(l as u32, dim);
                let t0 = self.warps[fw].thread(fl as u32, dim);
                let detail = format!(
                    "threads wait at different bar.sync instructions: thread ({}, {}, {}) at PTX line {}, thread ({}, \
                     {}, {}) at PTX line {} (bar.sync is .aligned: every thread must execute the same one)",
                    t[0],
                    t[1],
                    t[2],
                    line_of(w.pcs[l]),
                    t0[0],
                    t0[1],
                    t0[2],
                    line_of(at)
                );
                return Err(self.env.fault(FaultKind::BarrierDivergence, w.pcs[l], t, detail));
            }
        }
        for w in &mut self.warps {
            w.release();
        }
        Ok(())
    }
}
