//! Strict priorities with aging: the most urgent runnable strand runs; waiting strands gain urgency so none starves.
//!
//! Level 0 is the most urgent. A queued strand's *effective* priority is its
//! base level minus one for every aging interval it has waited (never below
//! 0); when it is resumed it is back at its base. Among equals the one that
//! has waited longest goes first. The run queue is global (one list under the
//! lock), so the most urgent strand anywhere is the one picked, on any CPU it
//! may use: strict priority holds across CPUs.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use spin::Mutex;

use super::{bounded_cpu_count, choose_cpu, reserve_list, usable_cpus, Place};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    SchedParams, StrandId, StrandSpec, StrandState, TickAction, NANOSECONDS_PER_MILLISECOND,
    PRIORITY_LEVELS,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "priority";
/// How long a strand runs before an equally urgent waiting strand gets its CPU.
pub const DEFAULT_SLICE: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;
/// How long a strand waits to gain one level of urgency.
pub const DEFAULT_AGING_INTERVAL: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;
/// The least urgent level.
const LEAST_URGENT: u8 = PRIORITY_LEVELS - 1;

/// What the policy knows of one strand.
struct Entry {
    spec: StrandSpec,
    place: Place,
    run_time: Nanoseconds,
    /// When it last became queued: the start of its aging.
    waiting_since: Nanoseconds,
}

/// Everything behind the policy's lock.
struct State {
    strands: BTreeMap<StrandId, Entry>,
    /// Queued strands, in the order they were queued.
    queue: Vec<StrandId>,
    /// The strand running on each CPU, with its base priority.
    running: Vec<Option<(StrandId, u8)>>,
    /// CPUs running something less urgent than a strand just queued for them.
    wakeups: CpuSet,
}

/// Strict priorities with aging.
pub struct Priority {
    slice: Nanoseconds,
    aging_interval: Option<Nanoseconds>,
    state: Mutex<State>,
}

/// A strand's base level, clamped to the valid range.
fn base_priority(params: &SchedParams) -> u8 {
    params.priority.min(LEAST_URGENT)
}

impl Priority {
    /// Priorities for `cpu_count` CPUs with the default slice and aging interval.
    pub fn new(cpu_count: u16) -> Self {
        Self::with_aging_interval(cpu_count, Some(DEFAULT_AGING_INTERVAL))
    }

    /// Priorities without aging: a strand waits as long as anything more urgent is runnable.
    pub fn without_aging(cpu_count: u16) -> Self {
        Self::with_aging_interval(cpu_count, None)
    }

    /// Priorities gaining a level every `aging_interval` of waiting (`None`: never).
    pub fn with_aging_interval(cpu_count: u16, aging_interval: Option<Nanoseconds>) -> Self {
        let cpu_count = bounded_cpu_count(cpu_count);
        Self {
            slice: DEFAULT_SLICE,
            aging_interval: aging_interval.map(|interval| interval.max(1)),
            state: Mutex::new(State {
                strands: BTreeMap::new(),
                queue: Vec::new(),
                running: (0..cpu_count).map(|_| None).collect(),
                wakeups: CpuSet::empty(),
            }),
        }
    }

    /// The base level minus one for each aging interval waited.
    fn effective_priority(&self, entry: &Entry, now: Nanoseconds) -> u8 {
        let base = base_priority(&entry.spec.params);
        let Some(interval) = self.aging_interval else {
            return base;
        };
        let levels = now.saturating_sub(entry.waiting_since) / interval;
        base.saturating_sub(u8::try_from(levels).unwrap_or(u8::MAX))
    }

    /// The most urgent queued strand that may run on `cpu`: (queue position, effective level).
    fn most_urgent(&self, state: &State, cpu: CpuId, now: Nanoseconds) -> Option<(usize, u8)> {
        state
            .queue
            .iter()
            .enumerate()
            .filter_map(|(position, strand)| {
                let entry = state.strands.get(strand)?;
                entry.spec.affinity.contains(cpu).then(|| {
                    let level = self.effective_priority(entry, now);
                    (position, level, entry.waiting_since, *strand)
                })
            })
            .min_by_key(|(_, level, since, strand)| (*level, *since, *strand))
            .map(|(position, level, _, _)| (position, level))
    }
}

impl State {
    fn cpu_count(&self) -> usize {
        self.running.len()
    }

    fn enqueue(&mut self, strand: StrandId, cpu: CpuId, now: Nanoseconds) {
        let Some(entry) = self.strands.get_mut(&strand) else {
            return;
        };
        entry.place = Place::Queued(cpu);
        entry.waiting_since = now;
        let base = base_priority(&entry.spec.params);
        self.queue.push(strand);
        // Prompt preemption: the CPU it was queued for runs something less urgent.
        let running_base = self.running.get(cpu.index()).copied().flatten();
        if running_base.is_some_and(|(_, running)| running > base) {
            self.wakeups.insert(cpu);
        }
    }

    /// Takes the strand out of the queue; returns whether it was there.
    fn dequeue(&mut self, strand: StrandId) -> bool {
        let position = self.queue.iter().position(|queued| *queued == strand);
        if let Some(position) = position {
            self.queue.remove(position);
        }
        position.is_some()
    }

    fn clear_running(&mut self, cpu: CpuId, strand: StrandId) {
        if let Some(running) = self.running.get_mut(cpu.index()) {
            if running.is_some_and(|(id, _)| id == strand) {
                *running = None;
            }
        }
    }
}

impl Policy for Priority {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if state.strands.contains_key(&strand.id) {
            return Err(Refusal("priority: the strand already exists"));
        }
        state.strands.insert(
            strand.id,
            Entry {
                spec: *strand,
                place: Place::Blocked,
                run_time: 0,
                waiting_since: ctx.now,
            },
        );
        let strands = state.strands.len();
        reserve_list(&mut state.queue, strands);
        Ok(())
    }

    fn strand_exited(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        for cpu in 0..state.cpu_count() {
            state.clear_running(CpuId(cpu as u16), strand);
        }
        state.strands.remove(&strand);
    }

    fn select_cpu(
        &self,
        _ctx: &Context,
        _strand: StrandId,
        previous: Option<CpuId>,
        allowed: &CpuSet,
    ) -> CpuId {
        let state = self.state.lock();
        let usable = usable_cpus(state.cpu_count(), allowed);
        let idle = |cpu: &CpuId| state.running.get(cpu.index()).is_some_and(Option::is_none);
        if let Some(previous) = previous.filter(|cpu| usable.contains(*cpu) && idle(cpu)) {
            return previous;
        }
        if let Some(cpu) = usable.iter().find(idle) {
            return cpu;
        }
        if let Some(previous) = previous.filter(|cpu| usable.contains(*cpu)) {
            return previous;
        }
        // Every usable CPU is busy: the one running the least urgent strand.
        let least_urgent = usable
            .iter()
            .max_by_key(|cpu| state.running[cpu.index()].map_or(u8::MAX, |(_, level)| level));
        least_urgent.unwrap_or_else(|| choose_cpu(state.cpu_count(), None, allowed, |_| 0))
    }

    fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId) {
        let mut state = self.state.lock();
        let blocked = state
            .strands
            .get(&strand)
            .is_some_and(|entry| entry.place == Place::Blocked);
        if blocked {
            state.enqueue(strand, cpu, ctx.now);
        }
    }

    fn block(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Blocked;
        }
    }

    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    ) {
        let mut state = self.state.lock();
        state.clear_running(ctx.cpu, strand);
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        entry.run_time = entry.run_time.saturating_add(ran);
        if reason.still_runnable() && matches!(entry.place, Place::Running(_)) {
            state.enqueue(strand, ctx.cpu, ctx.now);
        } else {
            entry.place = Place::Blocked;
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        entry.place = Place::Running(ctx.cpu);
        let base = base_priority(&entry.spec.params);
        if let Some(running) = state.running.get_mut(ctx.cpu.index()) {
            *running = Some((strand, base));
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let mut state = self.state.lock();
        let (position, _) = self.most_urgent(&state, ctx.cpu, ctx.now)?;
        let strand = state.queue.remove(position);
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Dispatched;
        }
        Some(strand)
    }

    /// Takes the named strand only among equals: it must be as urgent (by
    /// effective level) as the most urgent strand waiting for `ctx.cpu`, the
    /// just-queued yielder included, so strict priority holds; among equals
    /// it jumps the waiting-time order. A yield to a less urgent strand is
    /// refused (the tick would preempt it at once anyway).
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = state.strands.get(&strand) else {
            return false;
        };
        let allowed = usable_cpus(state.cpu_count(), &entry.spec.affinity).contains(ctx.cpu);
        if !matches!(entry.place, Place::Queued(_)) || !allowed {
            return false;
        }
        let level = self.effective_priority(entry, ctx.now);
        let most_urgent = self.most_urgent(&state, ctx.cpu, ctx.now);
        if most_urgent.is_some_and(|(_, most_urgent)| most_urgent < level) {
            return false;
        }
        if !state.dequeue(strand) {
            return false;
        }
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Dispatched;
        }
        true
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        let state = self.state.lock();
        let Some(running) = current.and_then(|strand| state.strands.get(&strand)) else {
            return TickAction::Continue;
        };
        let running = base_priority(&running.spec.params);
        match self.most_urgent(&state, ctx.cpu, ctx.now) {
            Some((_, waiting)) if waiting < running => TickAction::Preempt,
            Some((_, waiting)) if waiting == running && ran >= self.slice => TickAction::Preempt,
            _ => TickAction::Continue,
        }
    }

    fn cpu_idle(&self, _ctx: &Context) {}

    fn export(&self, _ctx: &Context) -> Vec<ExportedStrand> {
        let state = self.state.lock();
        state
            .strands
            .values()
            .map(|entry| ExportedStrand {
                spec: entry.spec,
                state: entry.place.state(),
                virtual_time: 0,
                absolute_deadline: None,
                run_time: entry.run_time,
            })
            .collect()
    }

    fn import(&self, ctx: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        let mut incoming = BTreeMap::new();
        for strand in &strands {
            let fresh = !state.strands.contains_key(&strand.spec.id);
            if !fresh || incoming.insert(strand.spec.id, ()).is_some() {
                return Err(Refusal("priority: a strand is handed over twice"));
            }
        }
        for strand in &strands {
            state.strands.insert(
                strand.spec.id,
                Entry {
                    spec: strand.spec,
                    place: Place::imported(strand.state, ctx.cpu),
                    run_time: strand.run_time,
                    waiting_since: ctx.now,
                },
            );
        }
        let total = state.strands.len();
        reserve_list(&mut state.queue, total);
        for strand in &strands {
            let id = strand.spec.id;
            match strand.state {
                StrandState::Runnable => {
                    let cpu = choose_cpu(state.cpu_count(), None, &strand.spec.affinity, |_| 0);
                    state.enqueue(id, cpu, ctx.now);
                }
                StrandState::Running(cpu) => {
                    if let Some(running) = state.running.get_mut(cpu.index()) {
                        *running = Some((id, base_priority(&strand.spec.params)));
                    }
                }
                StrandState::Blocked => {}
            }
        }
        Ok(())
    }

    fn wants_wakeup(&self, _ctx: &Context) -> CpuSet {
        core::mem::take(&mut self.state.lock().wakeups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interface::NANOSECONDS_PER_SECOND;
    use crate::policies::directed_yield_checks::{
        hands_over, refuses_and_changes_nothing, CPUS, QUEUED,
    };
    use crate::sim::{SimConfig, Simulator, Workload};
    use alloc::sync::Arc;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;

    fn spec(index: u32, priority: u8) -> StrandSpec {
        StrandSpec::new(
            StrandId::new(index, 0),
            CpuSet::all(1),
            SchedParams::default().with_priority(priority),
        )
    }

    #[test]
    fn the_most_urgent_strand_is_picked_first() {
        let policy = Priority::without_aging(1);
        let ctx = Context::new(0, CpuId(0), 1);
        let strands = [spec(1, 5), spec(2, 1), spec(3, 10), spec(4, 1)];
        for strand in &strands {
            policy.strand_created(&ctx, strand).unwrap();
            policy.unblock(&ctx, strand.id, CpuId(0));
        }
        let order: Vec<u32> = core::iter::from_fn(|| policy.pick_next(&ctx))
            .map(StrandId::index)
            .collect();
        // Level 1 twice (in the order they were queued), then 5, then 10.
        assert_eq!(order, [2, 4, 1, 3]);
    }

    #[test]
    fn a_more_urgent_waker_preempts_at_once_and_equals_wait_for_the_slice() {
        let policy = Priority::without_aging(1);
        let ctx = Context::new(0, CpuId(0), 1);
        let (low, equal, high) = (spec(1, 8), spec(2, 8), spec(3, 2));
        for strand in [&low, &equal, &high] {
            policy.strand_created(&ctx, strand).unwrap();
        }
        policy.unblock(&ctx, low.id, CpuId(0));
        assert_eq!(policy.pick_next(&ctx), Some(low.id));
        policy.resume(&ctx, low.id);
        policy.unblock(&ctx, equal.id, CpuId(0));
        assert_eq!(
            policy.tick(&ctx, Some(low.id), DEFAULT_SLICE - 1),
            TickAction::Continue
        );
        assert_eq!(
            policy.tick(&ctx, Some(low.id), DEFAULT_SLICE),
            TickAction::Preempt
        );
        policy.unblock(&ctx, high.id, CpuId(0));
        assert_eq!(policy.wants_wakeup(&ctx), CpuSet::single(CpuId(0)));
        assert_eq!(policy.tick(&ctx, Some(low.id), 0), TickAction::Preempt);
    }

    /// Two urgent CPU-bound strands keep the only CPU busy; a strand at
    /// level `low` runs only through aging.
    fn first_run_of_low_priority_strand(policy: Priority, low: u8) -> Option<Nanoseconds> {
        let mut sim = Simulator::new(
            SimConfig::new(1).without_stall_detection(),
            Arc::new(policy),
        );
        for _ in 0..2 {
            sim.add_strand(
                CpuSet::all(1),
                SchedParams::default().with_priority(0),
                Workload::CpuBound,
            )
            .unwrap();
        }
        let starving = sim
            .add_strand(
                CpuSet::all(1),
                SchedParams::default().with_priority(low),
                Workload::CpuBound,
            )
            .unwrap();
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        sim.strand_statistics(starving).first_run
    }

    #[test]
    fn aging_bounds_the_wait_of_a_low_priority_strand_under_urgent_work() {
        let low = 20;
        let first_run = first_run_of_low_priority_strand(Priority::new(1), low)
            .expect("aging lets the low-priority strand run");
        // It needs `low` intervals to reach level 0, then at most a slice.
        let bound = u64::from(low) * DEFAULT_AGING_INTERVAL + DEFAULT_SLICE + MILLISECOND;
        assert!(
            first_run <= bound,
            "first ran at {first_run} ns, bound {bound} ns"
        );
        assert!(
            first_run >= u64::from(low) * DEFAULT_AGING_INTERVAL,
            "it ran before aging could lift it"
        );
    }

    #[test]
    fn without_aging_a_low_priority_strand_starves() {
        assert_eq!(
            first_run_of_low_priority_strand(Priority::without_aging(1), 20),
            None
        );
    }

    #[test]
    fn strict_priority_holds_across_cpus() {
        // Two CPUs, three urgent strands and one lazy one: the lazy one never
        // runs while urgent work is runnable anywhere it could run.
        let mut sim = Simulator::new(
            SimConfig::new(2).without_stall_detection(),
            Arc::new(Priority::without_aging(2)),
        );
        let urgent: Vec<StrandId> = (0..3)
            .map(|_| {
                sim.add_strand(
                    CpuSet::all(2),
                    SchedParams::default().with_priority(1),
                    Workload::CpuBound,
                )
                .unwrap()
            })
            .collect();
        let lazy = sim
            .add_strand(
                CpuSet::all(2),
                SchedParams::default().with_priority(30),
                Workload::CpuBound,
            )
            .unwrap();
        sim.run_until(300 * MILLISECOND).unwrap();
        assert_eq!(sim.strand_statistics(lazy).cpu_time, 0);
        for id in urgent {
            let time = sim.strand_statistics(id).cpu_time;
            assert!(time >= 150 * MILLISECOND, "{id} ran only {time} ns");
        }
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(Priority::new(CPUS), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(|| Priority::new(CPUS));
    }

    #[test]
    fn a_directed_yield_is_taken_only_among_equally_urgent_strands() {
        let policy = Priority::without_aging(1);
        let at = |now| Context::new(now, CpuId(0), 1);
        let (yielder, lazy, first, second) = (spec(1, 5), spec(2, 9), spec(3, 5), spec(4, 5));
        for strand in [&yielder, &lazy, &first, &second] {
            policy.strand_created(&at(0), strand).unwrap();
        }
        policy.unblock(&at(0), yielder.id, CpuId(0));
        assert_eq!(policy.pick_next(&at(0)), Some(yielder.id));
        policy.resume(&at(0), yielder.id);
        for strand in [&lazy, &first, &second] {
            policy.unblock(&at(1), strand.id, CpuId(0));
        }
        policy.checkpoint(&at(2), yielder.id, CheckpointReason::Yielded, 2);
        assert!(
            !policy.take_for_directed_yield(&at(2), lazy.id),
            "level 9 while level 5 waits"
        );
        assert!(
            policy.take_for_directed_yield(&at(2), second.id),
            "an equal jumps the waiting order"
        );
        policy.resume(&at(2), second.id);
        let order: Vec<StrandId> = core::iter::from_fn(|| policy.pick_next(&at(3))).collect();
        assert_eq!(order, [first.id, yielder.id, lazy.id]);
    }
}
