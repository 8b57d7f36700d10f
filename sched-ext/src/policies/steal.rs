//! Work stealing: per-CPU run queues, each behind its own lock; a CPU with nothing to run steals from the most loaded one.
//!
//! A waking strand is queued where it last ran, or on the waker's CPU (as a
//! spawn goes on the local deque in Cilk or Go), so work piles up where it is
//! created and spreads by stealing:
//!
//! * `pick_next` pops the local queue; if it is empty it tries the other CPUs
//!   from the most loaded down, and takes the oldest strand *whose affinity
//!   allows this CPU* (a strand pinned elsewhere is never taken).
//! * `tick` balances a busy CPU with an empty queue: it pulls one strand from
//!   a CPU with at least [`BALANCE_THRESHOLD`] waiting, so that round robin
//!   (the [`DEFAULT_SLICE`]) spreads CPU time across CPUs, not just within one.
//! * `unblock` onto a queue that already has a waiter asks the kernel to wake
//!   an idle CPU that may run the strand, so it comes and steals.
//!
//! Why `spin::Mutex<VecDeque>` per CPU and not `crossbeam_queue::SegQueue`:
//! a lock-free FIFO only pops its head, but an affinity-respecting steal has
//! to skip strands the thief may not run, and `block` has to take a queued
//! strand out of the middle. With `SegQueue` both become pop-and-push-back
//! (which reorders the victim's queue and briefly hides strands from other
//! thieves and from `block`) or lazy deletion (stale entries, and a
//! per-strand generation to tell them apart); `SegQueue` also allocates a new
//! block every 31 pushes, on the hot path. A short per-CPU lock keeps every
//! operation exact; the global table is behind a `spin::RwLock` that the hot
//! path only reads, and a strand's mutable state is in atomics.
//!
//! Lock order: the strand table, then queue locks in ascending CPU order.
//! A strand's `queued_on` is only written while holding the lock of the
//! queue it names (before or after the write), so reading it and then
//! re-checking under that queue's lock finds the strand exactly.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, RwLock};

use super::{bounded_cpu_count, choose_cpu, remove_from, usable_cpus};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    StrandId, StrandSpec, StrandState, TickAction, NANOSECONDS_PER_MILLISECOND,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "steal";
/// Round-robin slice within a CPU's queue.
pub const DEFAULT_SLICE: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;
/// A busy CPU with an empty queue pulls from a CPU with at least this many waiting.
pub const BALANCE_THRESHOLD: usize = 2;
/// `queued_on` / `running_on` of a strand that is in no queue / on no CPU.
const NOWHERE: u32 = u32::MAX;

// Orderings: every decision about a queue is made under that queue's lock,
// which orders the accesses; the kernel serialises a strand's own events.
// The atomics below are therefore either protected by a lock or hints
// (lengths, idle flags), and Relaxed is enough.
const HINT: Ordering = Ordering::Relaxed;

/// One strand's state, shared by every CPU.
struct Cell {
    spec: StrandSpec,
    /// The CPU whose queue holds it, or [`NOWHERE`].
    queued_on: AtomicU32,
    /// The CPU it runs on, or [`NOWHERE`].
    running_on: AtomicU32,
    blocked: AtomicBool,
    run_time: AtomicU64,
}

impl Cell {
    fn new(spec: StrandSpec) -> Self {
        Self {
            spec,
            queued_on: AtomicU32::new(NOWHERE),
            running_on: AtomicU32::new(NOWHERE),
            blocked: AtomicBool::new(true),
            run_time: AtomicU64::new(0),
        }
    }

    fn state(&self) -> StrandState {
        match self.running_on.load(HINT) {
            NOWHERE if self.blocked.load(HINT) => StrandState::Blocked,
            NOWHERE => StrandState::Runnable,
            cpu => StrandState::Running(CpuId(cpu as u16)),
        }
    }
}

/// One CPU's run queue.
struct CpuQueue {
    strands: Mutex<VecDeque<StrandId>>,
    /// The queue's length, readable without the lock (a hint for thieves).
    length: AtomicUsize,
    /// Whether the CPU said it is idle (and has not resumed anything since).
    idle: AtomicBool,
    /// Whether the policy wants the kernel to wake the CPU.
    wake_requested: AtomicBool,
}

/// The strand table.
type Cells = BTreeMap<StrandId, Cell>;

/// Per-CPU queues with affinity-respecting work stealing.
pub struct Steal {
    slice: Nanoseconds,
    queues: Vec<CpuQueue>,
    cells: RwLock<Cells>,
    steals: AtomicU64,
}

impl Steal {
    /// Work stealing for `cpu_count` CPUs.
    pub fn new(cpu_count: u16) -> Self {
        let cpu_count = bounded_cpu_count(cpu_count);
        Self {
            slice: DEFAULT_SLICE,
            queues: (0..cpu_count)
                .map(|_| CpuQueue {
                    strands: Mutex::new(VecDeque::new()),
                    length: AtomicUsize::new(0),
                    idle: AtomicBool::new(true),
                    wake_requested: AtomicBool::new(false),
                })
                .collect(),
            cells: RwLock::new(BTreeMap::new()),
            steals: AtomicU64::new(0),
        }
    }

    /// Strands taken from another CPU's queue so far (by `pick_next` or balancing).
    pub fn steals(&self) -> u64 {
        self.steals.load(HINT)
    }

    fn length(&self, cpu: usize) -> usize {
        self.queues
            .get(cpu)
            .map_or(0, |queue| queue.length.load(HINT))
    }

    /// Queues a runnable strand at the back of `cpu`'s queue (or of a CPU it may use).
    fn enqueue(&self, cells: &Cells, strand: StrandId, cpu: CpuId) {
        let Some(cell) = cells.get(&strand) else {
            return;
        };
        let usable = usable_cpus(self.queues.len(), &cell.spec.affinity);
        let cpu = if usable.contains(cpu) {
            cpu
        } else {
            choose_cpu(self.queues.len(), None, &cell.spec.affinity, |other| {
                self.length(other.index())
            })
        };
        let queue = &self.queues[cpu.index()];
        let length = {
            let mut strands = queue.strands.lock();
            strands.push_back(strand);
            cell.queued_on.store(u32::from(cpu.0), HINT);
            queue.length.store(strands.len(), HINT);
            strands.len()
        };
        if length >= BALANCE_THRESHOLD {
            // Someone is already waiting here: call an idle CPU over to steal.
            let idle = usable
                .iter()
                .find(|other| *other != cpu && self.queues[other.index()].idle.swap(false, HINT));
            if let Some(idle) = idle {
                self.queues[idle.index()].wake_requested.store(true, HINT);
            }
        }
    }

    /// Takes the strand out of whatever queue holds it.
    fn dequeue(&self, cell: &Cell, strand: StrandId) {
        loop {
            let cpu = cell.queued_on.load(HINT);
            let Some(queue) = self.queues.get(cpu as usize) else {
                return;
            };
            let mut strands = queue.strands.lock();
            if cell.queued_on.load(HINT) == cpu {
                remove_from(&mut strands, |queued| *queued == strand);
                cell.queued_on.store(NOWHERE, HINT);
                queue.length.store(strands.len(), HINT);
                return;
            }
            // It moved between the read and the lock: look again.
        }
    }

    /// Removes the oldest strand allowed on `thief` from `strands` (the victim's locked queue).
    fn take_allowed(
        cells: &Cells,
        strands: &mut VecDeque<StrandId>,
        thief: CpuId,
    ) -> Option<StrandId> {
        remove_from(strands, |strand| {
            cells
                .get(strand)
                .is_some_and(|cell| cell.spec.affinity.contains(thief))
        })
    }

    /// The most loaded other CPU with at least `minimum` waiting, not in `tried`.
    fn busiest(&self, thief: CpuId, minimum: usize, tried: &CpuSet) -> Option<usize> {
        (0..self.queues.len())
            .filter(|index| *index != thief.index() && !tried.contains(CpuId(*index as u16)))
            .map(|index| (index, self.length(index)))
            .filter(|(_, length)| *length >= minimum.max(1))
            .max_by_key(|(index, length)| (*length, core::cmp::Reverse(*index)))
            .map(|(index, _)| index)
    }

    /// Steals a strand for `thief` to run now, from the most loaded CPU down.
    fn steal(&self, cells: &Cells, thief: CpuId) -> Option<StrandId> {
        let mut tried = CpuSet::empty();
        while let Some(victim) = self.busiest(thief, 1, &tried) {
            tried.insert(CpuId(victim as u16));
            let queue = &self.queues[victim];
            let mut strands = queue.strands.lock();
            if let Some(strand) = Self::take_allowed(cells, &mut strands, thief) {
                queue.length.store(strands.len(), HINT);
                if let Some(cell) = cells.get(&strand) {
                    cell.queued_on.store(NOWHERE, HINT);
                }
                self.steals.fetch_add(1, HINT);
                return Some(strand);
            }
        }
        None
    }

    /// Moves one strand from a CPU with a backlog to `thief`'s empty queue.
    fn balance(&self, cells: &Cells, thief: CpuId) {
        let Some(victim) = self.busiest(thief, BALANCE_THRESHOLD, &CpuSet::empty()) else {
            return;
        };
        let local = thief.index();
        // Both locks, in ascending CPU order.
        let (first, second) = (victim.min(local), victim.max(local));
        let mut first_strands = self.queues[first].strands.lock();
        let mut second_strands = self.queues[second].strands.lock();
        let (victim_strands, local_strands) = if victim < local {
            (&mut first_strands, &mut second_strands)
        } else {
            (&mut second_strands, &mut first_strands)
        };
        if victim_strands.len() < BALANCE_THRESHOLD || !local_strands.is_empty() {
            return;
        }
        if let Some(strand) = Self::take_allowed(cells, victim_strands, thief) {
            local_strands.push_back(strand);
            if let Some(cell) = cells.get(&strand) {
                cell.queued_on.store(u32::from(thief.0), HINT);
            }
            self.queues[victim].length.store(victim_strands.len(), HINT);
            self.queues[local].length.store(local_strands.len(), HINT);
            self.steals.fetch_add(1, HINT);
        }
    }

    /// Makes every queue able to hold every strand without growing.
    fn reserve(&self, strands: usize) {
        for queue in &self.queues {
            let mut queued = queue.strands.lock();
            let missing = strands.saturating_sub(queued.len());
            queued.reserve(missing);
        }
    }
}

impl Policy for Steal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, _ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut cells = self.cells.write();
        if cells.contains_key(&strand.id) {
            return Err(Refusal("steal: the strand already exists"));
        }
        cells.insert(strand.id, Cell::new(*strand));
        self.reserve(cells.len());
        Ok(())
    }

    fn strand_exited(&self, _ctx: &Context, strand: StrandId) {
        let mut cells = self.cells.write();
        if let Some(cell) = cells.get(&strand) {
            self.dequeue(cell, strand);
        }
        cells.remove(&strand);
    }

    fn select_cpu(
        &self,
        ctx: &Context,
        _strand: StrandId,
        previous: Option<CpuId>,
        allowed: &CpuSet,
    ) -> CpuId {
        let usable = usable_cpus(self.queues.len(), allowed);
        let preferred = previous.filter(|cpu| usable.contains(*cpu));
        match preferred {
            Some(cpu) => cpu,
            None if usable.contains(ctx.cpu) => ctx.cpu,
            None => choose_cpu(self.queues.len(), None, allowed, |cpu| {
                self.length(cpu.index())
            }),
        }
    }

    fn unblock(&self, _ctx: &Context, strand: StrandId, cpu: CpuId) {
        let cells = self.cells.read();
        let Some(cell) = cells.get(&strand) else {
            return;
        };
        if cell.blocked.swap(false, HINT) {
            self.enqueue(&cells, strand, cpu);
        }
    }

    fn block(&self, _ctx: &Context, strand: StrandId) {
        let cells = self.cells.read();
        if let Some(cell) = cells.get(&strand) {
            cell.blocked.store(true, HINT);
            self.dequeue(cell, strand);
        }
    }

    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    ) {
        let cells = self.cells.read();
        let Some(cell) = cells.get(&strand) else {
            return;
        };
        cell.run_time.fetch_add(ran, HINT);
        cell.running_on.store(NOWHERE, HINT);
        if reason.still_runnable() && !cell.blocked.load(HINT) {
            self.enqueue(&cells, strand, ctx.cpu);
        } else {
            cell.blocked.store(true, HINT);
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let cells = self.cells.read();
        if let Some(cell) = cells.get(&strand) {
            // Normally in no queue; if a block and an unblock raced with the pick, leave the queue.
            self.dequeue(cell, strand);
            cell.running_on.store(u32::from(ctx.cpu.0), HINT);
        }
        if let Some(queue) = self.queues.get(ctx.cpu.index()) {
            queue.idle.store(false, HINT);
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let cells = self.cells.read();
        let queue = self.queues.get(ctx.cpu.index())?;
        {
            let mut strands = queue.strands.lock();
            if let Some(strand) = strands.pop_front() {
                queue.length.store(strands.len(), HINT);
                if let Some(cell) = cells.get(&strand) {
                    cell.queued_on.store(NOWHERE, HINT);
                }
                return Some(strand);
            }
        }
        self.steal(&cells, ctx.cpu)
    }

    /// Takes the strand out of whichever CPU's queue holds it, if it may run
    /// on `ctx.cpu`, under that queue's lock (a thief that got there first
    /// wins, and the yield is refused). Not counted in [`Steal::steals`]:
    /// the yielder chose the strand, no idle CPU went looking for it.
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        let cells = self.cells.read();
        let Some(cell) = cells.get(&strand) else {
            return false;
        };
        let allowed = usable_cpus(self.queues.len(), &cell.spec.affinity).contains(ctx.cpu);
        let runnable = !cell.blocked.load(HINT) && cell.running_on.load(HINT) == NOWHERE;
        if !allowed || !runnable {
            return false;
        }
        let cpu = cell.queued_on.load(HINT);
        let Some(queue) = self.queues.get(cpu as usize) else {
            // In no queue: picked (or being picked) elsewhere.
            return false;
        };
        let mut strands = queue.strands.lock();
        // `queued_on` only changes under the lock of the queue it names: if
        // it still names this one, the strand is in it.
        if cell.queued_on.load(HINT) != cpu
            || remove_from(&mut strands, |queued| *queued == strand).is_none()
        {
            return false;
        }
        cell.queued_on.store(NOWHERE, HINT);
        queue.length.store(strands.len(), HINT);
        true
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        if current.is_none() {
            return TickAction::Continue;
        }
        let local = ctx.cpu.index();
        if self.length(local) == 0 {
            let cells = self.cells.read();
            self.balance(&cells, ctx.cpu);
        }
        if ran >= self.slice && self.length(local) > 0 {
            TickAction::Preempt
        } else {
            TickAction::Continue
        }
    }

    fn cpu_idle(&self, ctx: &Context) {
        if let Some(queue) = self.queues.get(ctx.cpu.index()) {
            queue.idle.store(true, HINT);
        }
    }

    fn export(&self, _ctx: &Context) -> Vec<ExportedStrand> {
        let cells = self.cells.read();
        cells
            .values()
            .map(|cell| ExportedStrand {
                spec: cell.spec,
                state: cell.state(),
                virtual_time: 0,
                absolute_deadline: None,
                run_time: cell.run_time.load(HINT),
            })
            .collect()
    }

    fn import(&self, _ctx: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal> {
        let mut cells = self.cells.write();
        let mut incoming = BTreeMap::new();
        for strand in &strands {
            let fresh = !cells.contains_key(&strand.spec.id);
            if !fresh || incoming.insert(strand.spec.id, ()).is_some() {
                return Err(Refusal("steal: a strand is handed over twice"));
            }
        }
        for strand in &strands {
            let cell = Cell::new(strand.spec);
            cell.run_time.store(strand.run_time, HINT);
            match strand.state {
                StrandState::Blocked => {}
                StrandState::Runnable => cell.blocked.store(false, HINT),
                StrandState::Running(cpu) => {
                    cell.blocked.store(false, HINT);
                    cell.running_on.store(u32::from(cpu.0), HINT);
                    if let Some(queue) = self.queues.get(cpu.index()) {
                        queue.idle.store(false, HINT);
                    }
                }
            }
            cells.insert(strand.spec.id, cell);
        }
        self.reserve(cells.len());
        for strand in strands
            .iter()
            .filter(|strand| strand.state == StrandState::Runnable)
        {
            let cpu = choose_cpu(self.queues.len(), None, &strand.spec.affinity, |cpu| {
                self.length(cpu.index())
            });
            self.enqueue(&cells, strand.spec.id, cpu);
        }
        Ok(())
    }

    fn wants_wakeup(&self, _ctx: &Context) -> CpuSet {
        self.queues
            .iter()
            .enumerate()
            .filter(|(_, queue)| queue.wake_requested.swap(false, HINT))
            .map(|(index, _)| CpuId(index as u16))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::{SchedParams, NANOSECONDS_PER_SECOND};
    use crate::policies::directed_yield_checks::{
        hands_over, refuses_and_changes_nothing, CPUS, QUEUED,
    };
    use crate::sim::{SimConfig, Simulator, Workload};
    use alloc::sync::Arc;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;

    #[test]
    fn strands_woken_on_one_cpu_spread_to_the_others() {
        let cpu_count = 4;
        let policy = Arc::new(Steal::new(cpu_count));
        let mut sim = Simulator::new(SimConfig::new(cpu_count), policy.clone());
        // Every strand wakes first on the boot CPU's queue.
        let ids: Vec<StrandId> = (0..8)
            .map(|_| {
                sim.add_strand(
                    CpuSet::all(cpu_count),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap()
            })
            .collect();
        let duration = NANOSECONDS_PER_SECOND;
        sim.run_until(duration).unwrap();
        assert!(policy.steals() >= 3, "the other CPUs stole");
        for cpu in 0..cpu_count {
            let busy = sim.cpu_statistics(CpuId(cpu)).busy_time;
            assert!(
                busy >= duration * 99 / 100,
                "cpu {cpu} was busy only {busy} ns"
            );
        }
        // Balancing on tick spreads the eight strands two per CPU: equal shares.
        let fair = duration * u64::from(cpu_count) / ids.len() as u64;
        for id in ids {
            let time = sim.strand_statistics(id).cpu_time;
            assert!(
                time.abs_diff(fair) <= fair / 10,
                "{id} ran {time} ns, fair {fair} ns"
            );
        }
    }

    #[test]
    fn pinned_strands_are_never_stolen() {
        let cpu_count = 4;
        let policy = Arc::new(Steal::new(cpu_count));
        let mut sim = Simulator::new(SimConfig::new(cpu_count), policy.clone());
        let pinned: Vec<StrandId> = (0..4)
            .map(|_| {
                sim.add_strand(
                    CpuSet::single(CpuId(0)),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap()
            })
            .collect();
        let free: Vec<StrandId> = (0..4)
            .map(|_| {
                let workload = Workload::ComputeSleep {
                    compute: 3 * MILLISECOND,
                    sleep: 2 * MILLISECOND,
                };
                sim.add_strand(CpuSet::all(cpu_count), SchedParams::default(), workload)
                    .unwrap()
            })
            .collect();
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        for id in pinned {
            let statistics = sim.strand_statistics(id);
            assert_eq!(
                statistics.cpus_used,
                CpuSet::single(CpuId(0)),
                "{id} was stolen"
            );
            assert!(statistics.cpu_time >= 100 * MILLISECOND);
        }
        let elsewhere = free
            .iter()
            .filter(|id| {
                sim.strand_statistics(**id)
                    .cpus_used
                    .iter()
                    .any(|cpu| cpu != CpuId(0))
            })
            .count();
        assert_eq!(
            elsewhere,
            free.len(),
            "the free strands were stolen off the crowded CPU"
        );
    }

    #[test]
    fn a_thief_skips_strands_it_may_not_run() {
        let policy = Steal::new(2);
        let on = |cpu: u16| Context::new(0, CpuId(cpu), 2);
        let pinned = StrandSpec::new(
            StrandId::new(1, 0),
            CpuSet::single(CpuId(0)),
            SchedParams::default(),
        );
        let free = StrandSpec::new(StrandId::new(2, 0), CpuSet::all(2), SchedParams::default());
        for spec in [&pinned, &free] {
            policy.strand_created(&on(0), spec).unwrap();
            policy.unblock(&on(0), spec.id, CpuId(0));
        }
        assert_eq!(
            policy.pick_next(&on(1)),
            Some(free.id),
            "steals past the pinned head"
        );
        assert_eq!(policy.pick_next(&on(1)), None, "and never the pinned one");
        assert_eq!(policy.pick_next(&on(0)), Some(pinned.id));
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(Steal::new(CPUS), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(|| Steal::new(CPUS));
    }

    #[test]
    fn a_directed_yield_across_cpus_is_not_a_steal() {
        use crate::policies::directed_yield_checks::{at, scene, NOW};
        let policy = scene(Steal::new(CPUS));
        // QUEUED[1] waits in CPU 1's queue.
        assert!(policy.take_for_directed_yield(&at(NOW, 0), QUEUED[1]));
        assert_eq!(policy.steals(), 0);
        assert_eq!(policy.length(1), 1, "only the pinned strand is left there");
    }
}
