//! Deliberately broken policies: round robin that misbehaves after a number of correct calls, for the kernel's ejection tests.
//!
//! Each [`Misbehaviour`] wraps [`RoundRobin`] and behaves correctly for
//! `healthy_calls` calls of the method it breaks, then breaks it. They are
//! registered in [`broken_catalogue`], never in the real catalogue.
//!
//! | name | breaks | after the healthy calls |
//! |---|---|---|
//! | `broken-panic` | `pick_next` | panics |
//! | `broken-hang` | `pick_next` | spins forever (never call it on the host) |
//! | `broken-drop` | `unblock` | forgets the strand: never picks or exports it again |
//! | `broken-foreign` | `pick_next` | returns [`FOREIGN_STRAND`], never given to it |
//! | `broken-twice` | `pick_next` | returns a strand already running (when one is) |
//! | `broken-stall` | `pick_next` | keeps one runnable strand queued forever |

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use crate::catalogue::PolicyInfo;
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    StrandId, StrandSpec, TickAction,
};
use crate::policies::rr::RoundRobin;

/// Healthy calls before the catalogue's broken policies misbehave.
pub const DEFAULT_HEALTHY_CALLS: u64 = 100;
/// The strand `broken-foreign` makes up.
pub const FOREIGN_STRAND: StrandId = StrandId::new(u32::MAX, u32::MAX);

/// How a broken policy misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// Panics in `pick_next`.
    Panics,
    /// Loops forever in `pick_next`.
    NeverReturns,
    /// Forgets a strand on `unblock`: never returns or exports it again.
    DropsStrand,
    /// Returns from `pick_next` a strand it was never given.
    ForeignStrand,
    /// Returns from `pick_next` a strand that is already running, without a checkpoint.
    DispatchesTwice,
    /// Keeps one runnable strand queued forever while running the others.
    StallsStrand,
}

impl Misbehaviour {
    /// Every misbehaviour, in catalogue order.
    pub const ALL: [Misbehaviour; 6] = [
        Self::Panics,
        Self::NeverReturns,
        Self::DropsStrand,
        Self::ForeignStrand,
        Self::DispatchesTwice,
        Self::StallsStrand,
    ];

    /// The broken policy's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Panics => "broken-panic",
            Self::NeverReturns => "broken-hang",
            Self::DropsStrand => "broken-drop",
            Self::ForeignStrand => "broken-foreign",
            Self::DispatchesTwice => "broken-twice",
            Self::StallsStrand => "broken-stall",
        }
    }

    /// What goes wrong, in one line.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Panics => "round robin that panics in pick_next",
            Self::NeverReturns => "round robin that never returns from pick_next",
            Self::DropsStrand => "round robin that forgets a strand on unblock",
            Self::ForeignStrand => "round robin that picks a strand it was never given",
            Self::DispatchesTwice => "round robin that picks a strand that is already running",
            Self::StallsStrand => "round robin that keeps one runnable strand queued forever",
        }
    }
}

/// Round robin with one [`Misbehaviour`].
pub struct Broken {
    misbehaviour: Misbehaviour,
    healthy_calls: u64,
    calls: AtomicU64,
    inner: RoundRobin,
    /// `DropsStrand`: the strand forgotten.
    dropped: Mutex<Option<StrandId>>,
    /// `StallsStrand`: the strand held back.
    held: Mutex<Option<StrandId>>,
    /// `DispatchesTwice`: strands picked and not yet checkpointed.
    dispatched: Mutex<Vec<StrandId>>,
}

impl Broken {
    /// Round robin for `cpu_count` CPUs that breaks after `healthy_calls` calls of the broken method.
    pub fn new(misbehaviour: Misbehaviour, cpu_count: u16, healthy_calls: u64) -> Self {
        Self {
            misbehaviour,
            healthy_calls,
            calls: AtomicU64::new(0),
            inner: RoundRobin::new(cpu_count),
            dropped: Mutex::new(None),
            held: Mutex::new(None),
            dispatched: Mutex::new(Vec::new()),
        }
    }

    /// Counts a call of the broken method; true once the healthy calls are used up.
    fn misbehaving(&self) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed) >= self.healthy_calls
    }

    fn is_dropped(&self, strand: StrandId) -> bool {
        *self.dropped.lock() == Some(strand)
    }
}

impl Policy for Broken {
    fn name(&self) -> &'static str {
        self.misbehaviour.name()
    }

    fn strand_created(&self, ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        self.inner.strand_created(ctx, strand)
    }

    fn strand_exited(&self, ctx: &Context, strand: StrandId) {
        self.inner.strand_exited(ctx, strand)
    }

    fn select_cpu(
        &self,
        ctx: &Context,
        strand: StrandId,
        previous: Option<CpuId>,
        allowed: &CpuSet,
    ) -> CpuId {
        self.inner.select_cpu(ctx, strand, previous, allowed)
    }

    fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId) {
        if self.misbehaviour == Misbehaviour::DropsStrand {
            if self.is_dropped(strand) {
                return;
            }
            if self.misbehaving() {
                let mut dropped = self.dropped.lock();
                if dropped.is_none() {
                    *dropped = Some(strand);
                    return;
                }
            }
        }
        self.inner.unblock(ctx, strand, cpu)
    }

    fn block(&self, ctx: &Context, strand: StrandId) {
        let mut held = self.held.lock();
        if *held == Some(strand) {
            // Blocked, it is no longer runnable: nothing to hold back.
            *held = None;
        }
        drop(held);
        self.inner.block(ctx, strand)
    }

    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    ) {
        self.dispatched
            .lock()
            .retain(|dispatched| *dispatched != strand);
        self.inner.checkpoint(ctx, strand, reason, ran)
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        self.inner.resume(ctx, strand)
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        match self.misbehaviour {
            Misbehaviour::Panics => {
                if self.misbehaving() {
                    panic!(
                        "broken-panic: pick_next after {} healthy calls",
                        self.healthy_calls
                    );
                }
                self.inner.pick_next(ctx)
            }
            Misbehaviour::NeverReturns => {
                if self.misbehaving() {
                    loop {
                        core::hint::spin_loop();
                    }
                }
                self.inner.pick_next(ctx)
            }
            Misbehaviour::ForeignStrand => {
                if self.misbehaving() {
                    return Some(FOREIGN_STRAND);
                }
                self.inner.pick_next(ctx)
            }
            Misbehaviour::DispatchesTwice => {
                let running = self.dispatched.lock().first().copied();
                if self.misbehaving() && running.is_some() {
                    return running;
                }
                let picked = self.inner.pick_next(ctx);
                self.dispatched.lock().extend(picked);
                picked
            }
            Misbehaviour::StallsStrand => {
                let picked = self.inner.pick_next(ctx);
                if self.misbehaving() && picked.is_some() {
                    let mut held = self.held.lock();
                    if held.is_none() {
                        // Hold this one back (runnable, in no queue) and run the next.
                        *held = picked;
                        drop(held);
                        return self.inner.pick_next(ctx);
                    }
                }
                picked
            }
            Misbehaviour::DropsStrand => self.inner.pick_next(ctx),
        }
    }

    /// Round robin's, healthy in every misbehaviour: the dropped strand
    /// (unknown as far as this policy admits) and the held one (kept out of
    /// the queues on purpose) are refused; a strand taken counts as picked
    /// for `DispatchesTwice`.
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        if self.is_dropped(strand) || *self.held.lock() == Some(strand) {
            return false;
        }
        let taken = self.inner.take_for_directed_yield(ctx, strand);
        if taken && self.misbehaviour == Misbehaviour::DispatchesTwice {
            self.dispatched.lock().push(strand);
        }
        taken
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        self.inner.tick(ctx, current, ran)
    }

    fn cpu_idle(&self, ctx: &Context) {
        self.inner.cpu_idle(ctx)
    }

    fn export(&self, ctx: &Context) -> Vec<ExportedStrand> {
        let mut strands = self.inner.export(ctx);
        strands.retain(|strand| !self.is_dropped(strand.spec.id));
        strands
    }

    fn import(&self, ctx: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal> {
        self.inner.import(ctx, strands)
    }

    fn wants_wakeup(&self, ctx: &Context) -> CpuSet {
        self.inner.wants_wakeup(ctx)
    }
}

/// Makes the broken policy for `misbehaviour` with the default healthy calls.
fn create(misbehaviour: Misbehaviour, cpu_count: u16) -> Box<dyn Policy> {
    Box::new(Broken::new(misbehaviour, cpu_count, DEFAULT_HEALTHY_CALLS))
}

/// The broken policies.
static BROKEN_CATALOGUE: [PolicyInfo; 6] = [
    PolicyInfo {
        name: Misbehaviour::Panics.name(),
        description: Misbehaviour::Panics.description(),
        create: |cpu_count| create(Misbehaviour::Panics, cpu_count),
    },
    PolicyInfo {
        name: Misbehaviour::NeverReturns.name(),
        description: Misbehaviour::NeverReturns.description(),
        create: |cpu_count| create(Misbehaviour::NeverReturns, cpu_count),
    },
    PolicyInfo {
        name: Misbehaviour::DropsStrand.name(),
        description: Misbehaviour::DropsStrand.description(),
        create: |cpu_count| create(Misbehaviour::DropsStrand, cpu_count),
    },
    PolicyInfo {
        name: Misbehaviour::ForeignStrand.name(),
        description: Misbehaviour::ForeignStrand.description(),
        create: |cpu_count| create(Misbehaviour::ForeignStrand, cpu_count),
    },
    PolicyInfo {
        name: Misbehaviour::DispatchesTwice.name(),
        description: Misbehaviour::DispatchesTwice.description(),
        create: |cpu_count| create(Misbehaviour::DispatchesTwice, cpu_count),
    },
    PolicyInfo {
        name: Misbehaviour::StallsStrand.name(),
        description: Misbehaviour::StallsStrand.description(),
        create: |cpu_count| create(Misbehaviour::StallsStrand, cpu_count),
    },
];

/// The deliberately broken policies (misbehaving after [`DEFAULT_HEALTHY_CALLS`]), for ejection tests.
pub fn broken_catalogue() -> &'static [PolicyInfo] {
    &BROKEN_CATALOGUE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::{SchedParams, NANOSECONDS_PER_MILLISECOND, NANOSECONDS_PER_SECOND};
    use crate::sim::{SimConfig, SimError, SimErrorKind, Simulator, Workload};
    use alloc::sync::Arc;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;
    const HEALTHY_CALLS: u64 = 20;
    const STALL_BOUND: Nanoseconds = 200 * MILLISECOND;

    /// Runs `policy` on `cpu_count` CPUs with CPU-bound and sleeping strands for a second.
    fn run(policy: Broken, cpu_count: u16, config: SimConfig) -> Result<(), SimError> {
        let mut sim = Simulator::new(config, Arc::new(policy));
        for _ in 0..3 {
            sim.add_strand(
                CpuSet::all(cpu_count),
                SchedParams::default(),
                Workload::CpuBound,
            )?;
            let workload = Workload::ComputeSleep {
                compute: 2 * MILLISECOND,
                sleep: 3 * MILLISECOND,
            };
            sim.add_strand(CpuSet::all(cpu_count), SchedParams::default(), workload)?;
        }
        sim.run_until(NANOSECONDS_PER_SECOND)
    }

    fn caught(misbehaviour: Misbehaviour, cpu_count: u16, config: SimConfig) -> SimErrorKind {
        let policy = Broken::new(misbehaviour, cpu_count, HEALTHY_CALLS);
        let error =
            run(policy, cpu_count, config).expect_err("the simulator catches the misbehaviour");
        assert_eq!(error.policy, misbehaviour.name());
        error.kind
    }

    #[test]
    fn broken_policies_are_registered_apart_from_the_real_ones() {
        let names: Vec<&str> = broken_catalogue().iter().map(|info| info.name).collect();
        assert_eq!(
            names,
            [
                "broken-panic",
                "broken-hang",
                "broken-drop",
                "broken-foreign",
                "broken-twice",
                "broken-stall"
            ]
        );
        for info in broken_catalogue() {
            assert!(crate::find(info.name).is_none());
            assert_eq!((info.create)(2).name(), info.name);
        }
    }

    #[test]
    fn healthy_calls_are_really_healthy() {
        for misbehaviour in Misbehaviour::ALL {
            let policy = Broken::new(misbehaviour, 2, u64::MAX);
            let config = SimConfig::new(2)
                .with_stall_bound(STALL_BOUND)
                .with_audit_interval(10 * MILLISECOND);
            run(policy, 2, config).unwrap();
        }
    }

    #[test]
    fn panics_after_its_healthy_calls() {
        let policy = Broken::new(Misbehaviour::Panics, 1, 3);
        let ctx = Context::new(0, CpuId(0), 1);
        let spec = StrandSpec::new(StrandId::new(1, 0), CpuSet::all(1), SchedParams::default());
        policy.strand_created(&ctx, &spec).unwrap();
        policy.unblock(&ctx, spec.id, CpuId(0));
        for _ in 0..3 {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.pick_next(&ctx)));
            assert!(result.is_ok(), "healthy calls do not panic");
        }
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| policy.pick_next(&ctx)));
        assert!(result.is_err(), "the fourth call panics");
    }

    #[test]
    fn a_dropped_strand_is_caught_as_a_stall_or_by_an_audit() {
        let config = SimConfig::new(1).with_stall_bound(STALL_BOUND);
        let kind = caught(Misbehaviour::DropsStrand, 1, config);
        assert!(matches!(kind, SimErrorKind::Stall { .. }), "{kind:?}");
        let audited = config.with_audit_interval(5 * MILLISECOND);
        let kind = caught(Misbehaviour::DropsStrand, 1, audited);
        assert!(matches!(kind, SimErrorKind::LostStrand { .. }), "{kind:?}");
    }

    #[test]
    fn a_foreign_strand_is_caught() {
        let kind = caught(Misbehaviour::ForeignStrand, 2, SimConfig::new(2));
        assert!(
            matches!(
                kind,
                SimErrorKind::UnknownStrand {
                    strand: FOREIGN_STRAND,
                    ..
                }
            ),
            "{kind:?}"
        );
    }

    #[test]
    fn a_double_dispatch_is_caught() {
        let kind = caught(Misbehaviour::DispatchesTwice, 2, SimConfig::new(2));
        assert!(
            matches!(kind, SimErrorKind::RunningElsewhere { .. }),
            "{kind:?}"
        );
    }

    #[test]
    fn a_stalled_strand_is_caught() {
        let config = SimConfig::new(2)
            .with_stall_bound(STALL_BOUND)
            .with_audit_interval(5 * MILLISECOND);
        let kind = caught(Misbehaviour::StallsStrand, 2, config);
        assert!(
            matches!(kind, SimErrorKind::Stall { .. }),
            "the export is right, only the stall shows: {kind:?}"
        );
    }

    fn strand(index: u32) -> StrandSpec {
        StrandSpec::new(
            StrandId::new(index, 0),
            CpuSet::all(1),
            SchedParams::default(),
        )
    }

    #[test]
    fn directed_yields_never_hand_out_the_dropped_or_held_strand() {
        let ctx = Context::new(0, CpuId(0), 1);
        let dropping = Broken::new(Misbehaviour::DropsStrand, 1, 0);
        let (dropped, kept) = (strand(1), strand(2));
        for spec in [&dropped, &kept] {
            dropping.strand_created(&ctx, spec).unwrap();
            dropping.unblock(&ctx, spec.id, CpuId(0));
        }
        assert!(!dropping.take_for_directed_yield(&ctx, dropped.id));
        assert!(dropping.take_for_directed_yield(&ctx, kept.id));

        let stalling = Broken::new(Misbehaviour::StallsStrand, 1, 0);
        let (held, other) = (strand(1), strand(2));
        for spec in [&held, &other] {
            stalling.strand_created(&ctx, spec).unwrap();
            stalling.unblock(&ctx, spec.id, CpuId(0));
        }
        assert_eq!(stalling.pick_next(&ctx), Some(other.id), "holds the first");
        assert!(!stalling.take_for_directed_yield(&ctx, held.id));
    }

    #[test]
    fn a_strand_taken_for_a_directed_yield_counts_as_dispatched() {
        let ctx = Context::new(0, CpuId(0), 1);
        let policy = Broken::new(Misbehaviour::DispatchesTwice, 1, 0);
        let spec = strand(1);
        policy.strand_created(&ctx, &spec).unwrap();
        policy.unblock(&ctx, spec.id, CpuId(0));
        assert!(policy.take_for_directed_yield(&ctx, spec.id));
        policy.resume(&ctx, spec.id);
        assert_eq!(
            policy.pick_next(&ctx),
            Some(spec.id),
            "misbehaving, it hands out the running strand again"
        );
    }

    #[test]
    fn healthy_broken_policies_take_directed_yields_like_round_robin() {
        for misbehaviour in Misbehaviour::ALL {
            let policy = Broken::new(misbehaviour, 2, u64::MAX);
            let config = SimConfig::new(2)
                .with_stall_bound(STALL_BOUND)
                .with_audit_interval(5 * MILLISECOND);
            let mut sim = Simulator::new(config, Arc::new(policy));
            for _ in 0..4 {
                let workload = Workload::DirectedYield {
                    compute: MILLISECOND / 2,
                };
                sim.add_strand(CpuSet::all(2), SchedParams::default(), workload)
                    .unwrap();
            }
            sim.add_strand(CpuSet::all(2), SchedParams::default(), Workload::CpuBound)
                .unwrap();
            sim.run_until(NANOSECONDS_PER_SECOND)
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(sim.directed_yields_taken() > 0, "{}", misbehaviour.name());
        }
    }
}
