//! The policies shipped with Spindle, one module each, and the few helpers they share.
//!
//! | module | idea | queues | locking |
//! |---|---|---|---|
//! | [`rr`] | round robin, fixed slice | per CPU, FIFO | one `spin::Mutex` |
//! | [`priority`] | strict priorities with aging | one global | one `spin::Mutex` |
//! | [`stride`] | Waldspurger's stride scheduling | one global | one `spin::Mutex` |
//! | [`edf`] | partitioned EDF, admission control | per CPU | one `spin::Mutex` |
//! | [`central`] | CPU 0 decides for all | global FIFO + per-CPU mailbox | `spin::Mutex` + lock-free mailboxes |
//! | [`steal`] | work stealing | per CPU | a `spin::Mutex` per CPU |
//! | [`weighted`] | weighted virtual time (the example) | none: scans its table | one `spin::Mutex` |
//!
//! Every policy reserves its queues' capacity in `strand_created` and
//! `import`, so that the hot-path events (`unblock`, `block`, `checkpoint`,
//! `resume`, `pick_next`, `tick`, `cpu_idle`) do not allocate once the
//! strands exist (`central` and `weighted` never grow anything there).

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
