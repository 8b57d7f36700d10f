//! `Strands`: the strand operations the kernel exports to workloads (`bench-apps/`) and thread packages, so that they are written against an interface and not against the kernel's internals.

use alloc::boxed::Box;
use alloc::string::String;

use spindle_sched_ext::{CpuId, CpuSet, SchedParams, StrandId};

/// A latency histogram the kernel keeps (fixed memory, per CPU) and reports
/// over the serial line.
pub trait Recorder: Sync {
    /// Records one value (nanoseconds, for the histograms here).
    fn record(&self, value: u64);
}

/// The strand operations and the measurement plumbing a workload needs.
/// Every method may be called from a strand; `wait_until` only from a CPU's
/// own context (the one that starts the workload).
pub trait Strands: Sync {
    /// CPUs online; CPU ids are `0..cpu_count`.
    fn cpu_count(&self) -> u16;
    /// Nanoseconds since boot (the kernel's monotonic clock).
    fn now(&self) -> u64;
    /// Creates a strand, blocked until [`start`](Strands::start).
    fn spawn_held(
        &self,
        body: Box<dyn FnOnce() + Send>,
        affinity: CpuSet,
        params: SchedParams,
    ) -> Result<StrandId, String>;
    /// Makes a held strand runnable; false if it does not exist.
    fn start(&self, strand: StrandId) -> bool;
    /// Gives the CPU up (the caller stays runnable).
    fn yield_now(&self);
    /// Blocks the calling strand for `nanoseconds`.
    fn sleep(&self, nanoseconds: u64);
    /// SPIN's Block on the calling strand (a wake-up that came first is kept).
    fn block(&self);
    /// SPIN's Unblock; false if the strand does not exist.
    fn unblock(&self, strand: StrandId) -> bool;
    /// Waits until `strand` has exited (at once if it has).
    fn join(&self, strand: StrandId) -> Result<(), String>;
    /// The calling strand, if a strand is calling.
    fn current(&self) -> Option<StrandId>;
    /// CPU time `strand` has used so far.
    fn run_time(&self, strand: StrandId) -> Option<u64>;
    /// Time CPU `cpu` has spent in strands so far.
    fn busy_nanoseconds(&self, cpu: CpuId) -> u64;
    /// The CPU the caller runs on (it may move at the next scheduling
    /// decision unless its affinity or its policy pins it).
    fn current_cpu(&self) -> CpuId;
    /// Time CPU `cpu` has so far been unable to take its timer interrupt,
    /// as it can tell: the summed lateness of its ticks that came well past
    /// their deadline. Under a hypervisor this is mostly time the host did
    /// not run the virtual CPU, which no scheduling policy can use.
    fn stalled_nanoseconds(&self, cpu: CpuId) -> u64;
    /// Strands created and exited so far, kernel-wide.
    fn strand_counts(&self) -> (u64, u64);
    /// Halts the calling CPU's own context until `done` holds or
    /// `timeout_ns` passes; returns whether `done` held.
    fn wait_until(&self, done: &dyn Fn() -> bool, timeout_ns: u64) -> bool;
    /// The histogram named `name` (registered on first use).
    fn histogram(&self, name: &'static str) -> &'static dyn Recorder;
}

/// Packs a strand identity into one word (to keep it in an atomic).
pub fn pack(strand: StrandId) -> u64 {
    u64::from(strand.index()) | u64::from(strand.generation()) << 32
}

/// The identity [`pack`] packed.
pub fn unpack(packed: u64) -> StrandId {
    StrandId::new(packed as u32, (packed >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_index_and_generation() {
        let strand = StrandId::new(7, 0xdead_beef);
        assert_eq!(unpack(pack(strand)), strand);
    }
}
