//! The policies shipped with Spindle, one module each, and the few helpers they share.
//!
//! | module | idea | queues | locking | directed yield |
//! |---|---|---|---|---|
//! | [`rr`] | round robin, fixed slice | per CPU, FIFO | one `spin::Mutex` | takes it, from any CPU's queue |
//! | [`priority`] | strict priorities with aging | one global | one `spin::Mutex` | takes it among the most urgent for the CPU only |
//! | [`stride`] | Waldspurger's stride scheduling | one global | one `spin::Mutex` | takes it, out of pass order |
//! | [`edf`] | partitioned EDF, admission control | per CPU | one `spin::Mutex` | takes it where EDF order allows |
//! | [`central`] | CPU 0 decides for all | global FIFO + per-CPU mailbox | `spin::Mutex` + lock-free mailboxes | refuses |
//! | [`steal`] | work stealing | per CPU | a `spin::Mutex` per CPU | takes it, from any CPU's queue |
//! | [`weighted`] | weighted virtual time (the example) | none: scans its table | one `spin::Mutex` | takes it, out of virtual-time order |
//!
//! Every policy reserves its queues' capacity in `strand_created` and
//! `import`, so that the hot-path events (`unblock`, `block`, `checkpoint`,
//! `resume`, `pick_next`, `take_for_directed_yield`, `tick`, `cpu_idle`) do not allocate once the
//! strands exist (`central` and `weighted` never grow anything there).
//!
//! A directed yield ([`Policy::take_for_directed_yield`](crate::Policy::take_for_directed_yield))
//! is taken only for a known strand that is runnable, waiting in a queue (not
//! picked, not running) and allowed on the yielding CPU, and leaves it exactly
//! as `pick_next` would (`Place::Queued` becomes `Place::Dispatched`). Running
//! a strand out of turn changes no accounting: it is charged at its next
//! checkpoint, like any strand.

pub mod central;
pub mod edf;
pub mod priority;
pub mod rr;
pub mod steal;
pub mod stride;
pub mod weighted;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::interface::{CpuId, CpuSet, StrandState, MAX_CPUS};

/// Where a policy keeps a strand: the bookkeeping behind [`StrandState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Not runnable.
    Blocked,
    /// Runnable and waiting in a queue, for this CPU.
    Queued(CpuId),
    /// Returned by `pick_next` and not yet resumed: runnable, in no queue.
    Dispatched,
    /// Running on this CPU.
    Running(CpuId),
}

impl Place {
    /// The state a policy reports on export.
    pub(crate) fn state(self) -> StrandState {
        match self {
            Self::Blocked => StrandState::Blocked,
            Self::Queued(_) | Self::Dispatched => StrandState::Runnable,
            Self::Running(cpu) => StrandState::Running(cpu),
        }
    }

    /// The place of an imported strand in `state`; a runnable one is queued for `cpu`.
    pub(crate) fn imported(state: StrandState, cpu: CpuId) -> Self {
        match state {
            StrandState::Blocked => Self::Blocked,
            StrandState::Runnable => Self::Queued(cpu),
            StrandState::Running(cpu) => Self::Running(cpu),
        }
    }
}

/// The CPU count a policy sizes its per-CPU tables for: at least 1, at most [`MAX_CPUS`].
pub(crate) fn bounded_cpu_count(cpu_count: u16) -> usize {
    usize::from(cpu_count).clamp(1, MAX_CPUS)
}

/// The CPUs in `allowed` that exist among the first `cpu_count`.
pub(crate) fn usable_cpus(cpu_count: usize, allowed: &CpuSet) -> CpuSet {
    let online = CpuSet::all(u16::try_from(cpu_count).unwrap_or(u16::MAX));
    allowed.intersection(&online)
}

/// `previous` if it is usable, else the usable CPU with the least `load`
/// (the lowest-numbered on a tie), else CPU 0 (the kernel re-checks).
pub(crate) fn choose_cpu(
    cpu_count: usize,
    previous: Option<CpuId>,
    allowed: &CpuSet,
    load: impl Fn(CpuId) -> usize,
) -> CpuId {
    let usable = usable_cpus(cpu_count, allowed);
    match previous.filter(|cpu| usable.contains(*cpu)) {
        Some(cpu) => cpu,
        None => usable
            .iter()
            .min_by_key(|cpu| load(*cpu))
            .unwrap_or(CpuId(0)),
    }
}

/// Removes and returns the first entry of `queue` that `matches`.
pub(crate) fn remove_from<T: Copy>(
    queue: &mut VecDeque<T>,
    matches: impl Fn(&T) -> bool,
) -> Option<T> {
    let position = queue.iter().position(matches)?;
    queue.remove(position)
}

/// Makes sure every queue can hold `strands` entries without growing.
pub(crate) fn reserve_queues<T>(queues: &mut [VecDeque<T>], strands: usize) {
    for queue in queues {
        queue.reserve(strands.saturating_sub(queue.len()));
    }
}

/// Makes sure `list` can hold `strands` entries without growing.
pub(crate) fn reserve_list<T>(list: &mut Vec<T>, strands: usize) {
    list.reserve(strands.saturating_sub(list.len()));
}

/// Checks shared by the policies' directed-yield tests.
#[cfg(test)]
pub(crate) mod directed_yield_checks {
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    use crate::interface::{
        CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Policy, SchedParams, StrandId,
        StrandSpec, StrandState,
    };

    /// CPUs in the scene.
    pub(crate) const CPUS: u16 = 2;
    /// The strand that was running on CPU 0 and yields.
    pub(crate) const YIELDER: StrandId = StrandId::new(0, 0);
    /// Runnable strands, queued for CPU 0, CPU 1 and CPU 0.
    pub(crate) const QUEUED: [StrandId; 3] = [
        StrandId::new(1, 0),
        StrandId::new(2, 0),
        StrandId::new(3, 0),
    ];
    /// A runnable strand pinned to CPU 1, queued there.
    pub(crate) const PINNED: StrandId = StrandId::new(4, 0);
    /// A strand that was runnable and blocked.
    pub(crate) const BLOCKED: StrandId = StrandId::new(5, 0);
    /// A strand running on CPU 1.
    pub(crate) const RUNNING: StrandId = StrandId::new(6, 0);
    /// A strand the policy was never given.
    pub(crate) const UNKNOWN: StrandId = StrandId::new(99, 0);
    /// When the yielder yields (short of any slice or aging interval).
    pub(crate) const NOW: u64 = 1_000;
    /// The yielder's stint.
    pub(crate) const YIELDER_RAN: u64 = 700;

    /// A call on `cpu` at `now`.
    pub(crate) fn at(now: u64, cpu: u16) -> Context {
        Context::new(now, CpuId(cpu), CPUS)
    }

    /// Builds the scene on a fresh policy: [`YIELDER`] ran on CPU 0 and has
    /// just been checkpointed `Yielded` at [`NOW`]; [`RUNNING`] runs on CPU 1;
    /// [`QUEUED`] and [`PINNED`] wait; [`BLOCKED`] is blocked.
    pub(crate) fn scene<P: Policy>(policy: P) -> P {
        let everywhere = CpuSet::all(CPUS);
        for index in 0..=6 {
            let id = StrandId::new(index, 0);
            let affinity = if id == PINNED {
                CpuSet::single(CpuId(1))
            } else {
                everywhere
            };
            let spec = StrandSpec::new(id, affinity, SchedParams::default());
            policy.strand_created(&at(0, 0), &spec).unwrap();
        }
        policy.unblock(&at(0, 0), YIELDER, CpuId(0));
        assert_eq!(policy.pick_next(&at(0, 0)), Some(YIELDER));
        policy.resume(&at(0, 0), YIELDER);
        policy.unblock(&at(0, 1), RUNNING, CpuId(1));
        assert_eq!(policy.pick_next(&at(0, 1)), Some(RUNNING));
        policy.resume(&at(0, 1), RUNNING);
        for (id, cpu) in QUEUED.into_iter().zip([0, 1, 0]) {
            policy.unblock(&at(100, cpu), id, CpuId(cpu));
        }
        policy.unblock(&at(100, 1), PINNED, CpuId(1));
        policy.unblock(&at(100, 0), BLOCKED, CpuId(0));
        policy.block(&at(200, 0), BLOCKED);
        policy.checkpoint(&at(NOW, 0), YIELDER, CheckpointReason::Yielded, YIELDER_RAN);
        policy
    }

    /// The export as (strand, state, run time), checking no strand appears twice.
    pub(crate) fn states(policy: &dyn Policy, now: u64) -> Vec<(StrandId, StrandState, u64)> {
        let exported = policy.export(&at(now, 0));
        let ids: BTreeSet<StrandId> = exported.iter().map(|strand| strand.spec.id).collect();
        assert_eq!(ids.len(), exported.len(), "a strand is exported twice");
        let mut states: Vec<_> = exported
            .iter()
            .map(|strand| (strand.spec.id, strand.state, strand.run_time))
            .collect();
        states.sort_by_key(|(id, _, _)| *id);
        states
    }

    /// The whole export, in strand order.
    fn export(policy: &dyn Policy, now: u64) -> Vec<ExportedStrand> {
        let mut exported = policy.export(&at(now, 0));
        exported.sort_by_key(|strand| strand.spec.id);
        exported
    }

    /// Picks on CPU 0 and CPU 1 in turn until neither finds anything; the picks in order.
    pub(crate) fn drain(policy: &dyn Policy, now: u64) -> Vec<(u16, StrandId)> {
        let mut picks = Vec::new();
        loop {
            let mut found = false;
            for cpu in 0..CPUS {
                if let Some(strand) = policy.pick_next(&at(now, cpu)) {
                    picks.push((cpu, strand));
                    found = true;
                }
            }
            if !found {
                return picks;
            }
        }
    }

    /// The yield to `target` (one of [`QUEUED`]) is taken: the strand runs on
    /// CPU 0, is checkpointed later, and every strand is accounted for once.
    pub(crate) fn hands_over<P: Policy>(policy: P, target: StrandId) {
        let policy = scene(policy);
        assert!(QUEUED.contains(&target));
        assert!(policy.take_for_directed_yield(&at(NOW, 0), target));
        assert!(
            !policy.take_for_directed_yield(&at(NOW, 0), target),
            "taken once, it is no longer waiting"
        );
        policy.resume(&at(NOW, 0), target);
        assert!(
            !policy.take_for_directed_yield(&at(NOW, 1), target),
            "a running strand is refused"
        );
        let expected = |target_state: StrandState, target_ran: u64| {
            (0..=6)
                .map(|index| {
                    let id = StrandId::new(index, 0);
                    let state = match id {
                        id if id == target => target_state,
                        BLOCKED => StrandState::Blocked,
                        RUNNING => StrandState::Running(CpuId(1)),
                        _ => StrandState::Runnable,
                    };
                    let ran = match id {
                        YIELDER => YIELDER_RAN,
                        id if id == target => target_ran,
                        _ => 0,
                    };
                    (id, state, ran)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            states(&policy, NOW),
            expected(StrandState::Running(CpuId(0)), 0)
        );
        let later = NOW + 500;
        policy.checkpoint(&at(later, 0), target, CheckpointReason::Preempted, 500);
        assert_eq!(states(&policy, later), expected(StrandState::Runnable, 500));
        // Every runnable strand is still queued exactly once.
        let mut picked: Vec<StrandId> = drain(&policy, later)
            .into_iter()
            .map(|(cpu, strand)| {
                if strand == PINNED {
                    assert_eq!(cpu, 1, "the pinned strand is picked only on its CPU");
                }
                strand
            })
            .collect();
        picked.sort();
        let mut runnable = Vec::from(QUEUED);
        runnable.extend([YIELDER, PINNED]);
        runnable.sort();
        assert_eq!(picked, runnable);
    }

    /// Blocked, unknown, running and pinned-elsewhere strands are refused,
    /// and the refusals change nothing: the export and every later pick
    /// are those of a twin that was never asked.
    pub(crate) fn refuses_and_changes_nothing<P: Policy>(make: impl Fn() -> P) {
        let asked = scene(make());
        let twin = scene(make());
        let context = at(NOW, 0);
        assert!(!asked.take_for_directed_yield(&context, BLOCKED), "blocked");
        assert!(!asked.take_for_directed_yield(&context, UNKNOWN), "unknown");
        assert!(!asked.take_for_directed_yield(&context, RUNNING), "running");
        assert!(
            !asked.take_for_directed_yield(&at(NOW, 1), RUNNING),
            "running here"
        );
        assert!(
            !asked.take_for_directed_yield(&context, PINNED),
            "affinity excludes the CPU"
        );
        let beyond = Context::new(NOW, CpuId(CPUS), CPUS);
        assert!(
            !asked.take_for_directed_yield(&beyond, QUEUED[0]),
            "a CPU that is not online"
        );
        assert_eq!(export(&asked, NOW), export(&twin, NOW));
        assert_eq!(drain(&asked, NOW), drain(&twin, NOW));
    }
}
