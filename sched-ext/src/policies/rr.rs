//! Round robin: per-CPU FIFO queues and a fixed time slice, with strands that fell a slice behind pulled across CPUs.
//!
//! A waking strand goes back to the CPU it last ran on (else to the least
//! loaded allowed CPU) and a preempted one to the back of its CPU's queue.
//! Per-CPU FIFOs alone are unfair when strands do not divide evenly among
//! CPUs (three strands on two CPUs would get 50/50/100 %), so the queues are
//! balanced by service: `pick_next` takes a waiter from another CPU instead
//! of the local head when it has had at least a slice less CPU time (or when
//! the local queue is empty), and `tick` preempts a strand that has had a
//! slice more than such a waiter. Strands whose service is within a slice of
//! each other never move, so evenly divided work stays put.
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use spin::Mutex;

use super::{bounded_cpu_count, choose_cpu, remove_from, reserve_queues, usable_cpus, Place};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    StrandId, StrandSpec, StrandState, TickAction, NANOSECONDS_PER_MILLISECOND,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "rr";
/// The time slice: a strand runs this long before a waiting one gets its CPU.
pub const DEFAULT_SLICE: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;

/// A strand waiting in a CPU's queue.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    strand: StrandId,
    affinity: CpuSet,
    /// When it was queued.
    since: Nanoseconds,
    /// Its CPU time when it was queued (it does not change while it waits).
    run_time: Nanoseconds,
}

/// What the policy knows of one strand.
struct Entry {
    spec: StrandSpec,
    place: Place,
    run_time: Nanoseconds,
}

/// Everything behind the policy's lock.
struct State {
    strands: BTreeMap<StrandId, Entry>,
    /// One FIFO per CPU.
    queues: Vec<VecDeque<Waiting>>,
    /// The strand running on each CPU.
    running: Vec<Option<StrandId>>,
    /// CPUs to wake (idle ones that should come and pull).
    wakeups: CpuSet,
}

/// Round robin over per-CPU FIFO queues.
pub struct RoundRobin {
    slice: Nanoseconds,
    state: Mutex<State>,
}

/// A waiter on another CPU: (CPU index, position in its queue, its CPU time).
type RemoteWaiter = (usize, usize, Nanoseconds);

impl State {
    fn cpu_count(&self) -> usize {
        self.queues.len()
    }

    /// Queued strands plus the running one.
    fn load(&self, cpu: CpuId) -> usize {
        let queued = self.queues.get(cpu.index()).map_or(0, VecDeque::len);
        let running = self.running.get(cpu.index()).is_some_and(Option::is_some);
        queued + usize::from(running)
    }

    /// `cpu` if the strand may run there, else the least loaded CPU it may run on.
    fn placement(&self, spec: &StrandSpec, cpu: CpuId) -> CpuId {
        if usable_cpus(self.cpu_count(), &spec.affinity).contains(cpu) {
            cpu
        } else {
            choose_cpu(self.cpu_count(), None, &spec.affinity, |other| {
                self.load(other)
            })
        }
    }

    /// Puts a runnable strand at the back of `cpu`'s queue (or of an allowed CPU's).
    fn enqueue(&mut self, strand: StrandId, cpu: CpuId, now: Nanoseconds) {
        let Some((spec, run_time)) = self
            .strands
            .get(&strand)
            .map(|entry| (entry.spec, entry.run_time))
        else {
            return;
        };
        let cpu = self.placement(&spec, cpu);
        let Some(queue) = self.queues.get_mut(cpu.index()) else {
            return;
        };
        queue.push_back(Waiting {
            strand,
            affinity: spec.affinity,
            since: now,
            run_time,
        });
        if let Some(entry) = self.strands.get_mut(&strand) {
            entry.place = Place::Queued(cpu);
        }
        let busy = self.running.get(cpu.index()).is_some_and(Option::is_some);
        if busy {
            // Ask an idle CPU the strand may use to come and pull it.
            let idle = usable_cpus(self.cpu_count(), &spec.affinity)
                .iter()
                .find(|other| self.load(*other) == 0);
            if let Some(idle) = idle {
                self.wakeups.insert(idle);
            }
        }
    }

    /// Takes the strand out of its queue, if it is queued.
    fn dequeue(&mut self, strand: StrandId) {
        let Some(entry) = self.strands.get(&strand) else {
            return;
        };
        if let Place::Queued(cpu) = entry.place {
            if let Some(queue) = self.queues.get_mut(cpu.index()) {
                remove_from(queue, |waiting| waiting.strand == strand);
            }
        }
    }

    /// The waiter on another CPU's queue that may run on `cpu` and has had
    /// the least CPU time (the longest waiting among equals).
    fn least_served_remote_waiter(&self, cpu: CpuId) -> Option<RemoteWaiter> {
        let mut best: Option<(RemoteWaiter, Nanoseconds)> = None;
        for (index, queue) in self.queues.iter().enumerate() {
            if index == cpu.index() {
                continue;
            }
            for (position, waiting) in queue.iter().enumerate() {
                if !waiting.affinity.contains(cpu) {
                    continue;
                }
                let key = (waiting.run_time, waiting.since);
                if best.is_none_or(|((_, _, run_time), since)| key < (run_time, since)) {
                    best = Some(((index, position, waiting.run_time), waiting.since));
                }
            }
        }
        best.map(|(waiter, _)| waiter)
    }
}

impl RoundRobin {
    /// Round robin for `cpu_count` CPUs with the default slice.
    pub fn new(cpu_count: u16) -> Self {
        Self::with_slice(cpu_count, DEFAULT_SLICE)
    }

    /// Round robin for `cpu_count` CPUs with time slice `slice`.
    pub fn with_slice(cpu_count: u16, slice: Nanoseconds) -> Self {
        let cpu_count = bounded_cpu_count(cpu_count);
        Self {
            slice: slice.max(1),
            state: Mutex::new(State {
                strands: BTreeMap::new(),
                queues: (0..cpu_count).map(|_| VecDeque::new()).collect(),
                running: (0..cpu_count).map(|_| None).collect(),
                wakeups: CpuSet::empty(),
            }),
        }
    }

    /// The time slice.
    pub fn slice(&self) -> Nanoseconds {
        self.slice
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, _ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if state.strands.contains_key(&strand.id) {
            return Err(Refusal("rr: the strand already exists"));
        }
        state.strands.insert(
            strand.id,
            Entry {
                spec: *strand,
                place: Place::Blocked,
                run_time: 0,
            },
        );
        let strands = state.strands.len();
        reserve_queues(&mut state.queues, strands);
        Ok(())
    }

    fn strand_exited(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        for running in &mut state.running {
            if *running == Some(strand) {
                *running = None;
            }
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
        choose_cpu(state.cpu_count(), previous, allowed, |cpu| state.load(cpu))
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
        if let Some(running) = state.running.get_mut(ctx.cpu.index()) {
            if *running == Some(strand) {
                *running = None;
            }
        }
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        entry.run_time = entry.run_time.saturating_add(ran);
        let runnable = reason.still_runnable() && matches!(entry.place, Place::Running(_));
        if runnable {
            state.enqueue(strand, ctx.cpu, ctx.now);
        } else {
            entry.place = Place::Blocked;
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        // Normally the strand is Dispatched; if a block and an unblock raced
        // with the pick it may be queued again, and must leave that queue.
        state.dequeue(strand);
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Running(ctx.cpu);
        }
        if let Some(running) = state.running.get_mut(ctx.cpu.index()) {
            *running = Some(strand);
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let mut state = self.state.lock();
        let local = ctx.cpu.index();
        let local_head = state
            .queues
            .get(local)?
            .front()
            .map(|waiting| waiting.run_time);
        let remote = state.least_served_remote_waiter(ctx.cpu);
        let waiting = match (local_head, remote) {
            (None, Some((cpu, position, _))) => state.queues[cpu].remove(position),
            (Some(local_run_time), Some((cpu, position, run_time)))
                if run_time.saturating_add(self.slice) <= local_run_time =>
            {
                state.queues[cpu].remove(position)
            }
            _ => state.queues[local].pop_front(),
        }?;
        if let Some(entry) = state.strands.get_mut(&waiting.strand) {
            entry.place = Place::Dispatched;
        }
        Some(waiting.strand)
    }

    /// Takes a strand queued on any CPU, if it may run on `ctx.cpu`: the
    /// yielder's CPU goes to the strand it names, out of FIFO and service
    /// order (it is charged as usual at its next checkpoint).
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let cpu_count = state.cpu_count();
        let Some(entry) = state.strands.get_mut(&strand) else {
            return false;
        };
        let Place::Queued(queued_on) = entry.place else {
            return false;
        };
        if !usable_cpus(cpu_count, &entry.spec.affinity).contains(ctx.cpu) {
            return false;
        }
        let Some(queue) = state.queues.get_mut(queued_on.index()) else {
            return false;
        };
        if remove_from(queue, |waiting| waiting.strand == strand).is_none() {
            return false;
        }
        entry.place = Place::Dispatched;
        true
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        if ran < self.slice {
            return TickAction::Continue;
        }
        let state = self.state.lock();
        let Some(running) = current.and_then(|strand| state.strands.get(&strand)) else {
            return TickAction::Continue;
        };
        let served = running.run_time.saturating_add(ran);
        let local_waiting = state
            .queues
            .get(ctx.cpu.index())
            .is_some_and(|queue| !queue.is_empty());
        let remote_behind = state
            .least_served_remote_waiter(ctx.cpu)
            .is_some_and(|(_, _, run_time)| run_time.saturating_add(self.slice) <= served);
        if local_waiting || remote_behind {
            TickAction::Preempt
        } else {
            TickAction::Continue
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
                return Err(Refusal("rr: a strand is handed over twice"));
            }
        }
        // Runnable strands join the queues in the order of their progress.
        let mut runnable: Vec<&ExportedStrand> = strands
            .iter()
            .filter(|strand| strand.state == StrandState::Runnable)
            .collect();
        runnable.sort_by_key(|strand| strand.virtual_time);
        for strand in &strands {
            state.strands.insert(
                strand.spec.id,
                Entry {
                    spec: strand.spec,
                    place: Place::imported(strand.state, ctx.cpu),
                    run_time: strand.run_time,
                },
            );
            if let StrandState::Running(cpu) = strand.state {
                if let Some(running) = state.running.get_mut(cpu.index()) {
                    *running = Some(strand.spec.id);
                }
            }
        }
        let total = state.strands.len();
        reserve_queues(&mut state.queues, total);
        for strand in runnable {
            let cpu = choose_cpu(state.cpu_count(), None, &strand.spec.affinity, |cpu| {
                state.load(cpu)
            });
            state.enqueue(strand.spec.id, cpu, ctx.now);
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
    use crate::interface::{SchedParams, NANOSECONDS_PER_SECOND};
    use crate::policies::directed_yield_checks::{
        hands_over, refuses_and_changes_nothing, CPUS, QUEUED,
    };
    use crate::sim::{SimConfig, Simulator, Workload};
    use alloc::sync::Arc;

    /// Allowed deviation from an equal share, in percent of that share.
    const FAIRNESS_TOLERANCE_PERCENT: u64 = 3;

    fn equal_cpu_bound_shares(cpu_count: u16, strands: usize) {
        let policy: Arc<dyn Policy> = Arc::new(RoundRobin::new(cpu_count));
        let mut sim = Simulator::new(SimConfig::new(cpu_count), policy);
        let ids: Vec<StrandId> = (0..strands)
            .map(|_| {
                sim.add_strand(
                    CpuSet::all(cpu_count),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap()
            })
            .collect();
        let duration = 2 * NANOSECONDS_PER_SECOND;
        sim.run_until(duration).unwrap();
        let capacity = duration * u64::from(cpu_count);
        let fair = capacity.min(duration * strands as u64) / strands as u64;
        for id in ids {
            let time = sim.strand_statistics(id).cpu_time;
            let deviation = time.abs_diff(fair);
            assert!(
                deviation * 100 <= fair * FAIRNESS_TOLERANCE_PERCENT,
                "{id} ran {time} ns, fair is {fair} ns ({strands} strands, {cpu_count} CPUs)"
            );
        }
    }

    #[test]
    fn equal_strands_share_one_cpu_equally() {
        equal_cpu_bound_shares(1, 3);
    }

    #[test]
    fn equal_strands_share_two_cpus_equally_even_when_they_do_not_divide_evenly() {
        equal_cpu_bound_shares(2, 4);
        equal_cpu_bound_shares(2, 3);
        equal_cpu_bound_shares(2, 5);
    }

    #[test]
    fn slice_bounds_each_stint_and_a_lone_strand_is_not_preempted() {
        let policy = RoundRobin::new(1);
        let ctx = Context::new(0, CpuId(0), 1);
        let spec = StrandSpec::new(StrandId::new(1, 0), CpuSet::all(1), SchedParams::default());
        policy.strand_created(&ctx, &spec).unwrap();
        policy.unblock(&ctx, spec.id, CpuId(0));
        assert_eq!(policy.pick_next(&ctx), Some(spec.id));
        policy.resume(&ctx, spec.id);
        assert_eq!(
            policy.tick(&ctx, Some(spec.id), DEFAULT_SLICE * 5),
            TickAction::Continue
        );
        let other = StrandSpec::new(StrandId::new(2, 0), CpuSet::all(1), SchedParams::default());
        policy.strand_created(&ctx, &other).unwrap();
        policy.unblock(&ctx, other.id, CpuId(0));
        assert_eq!(
            policy.tick(&ctx, Some(spec.id), DEFAULT_SLICE - 1),
            TickAction::Continue
        );
        assert_eq!(
            policy.tick(&ctx, Some(spec.id), DEFAULT_SLICE),
            TickAction::Preempt
        );
    }

    #[test]
    fn affinity_is_respected_and_pinned_strands_stay_home() {
        let cpu_count = 4;
        let policy: Arc<dyn Policy> = Arc::new(RoundRobin::new(cpu_count));
        let mut sim = Simulator::new(SimConfig::new(cpu_count), policy);
        let pinned = sim
            .add_strand(
                CpuSet::single(CpuId(2)),
                SchedParams::default(),
                Workload::CpuBound,
            )
            .unwrap();
        let pair: CpuSet = [CpuId(0), CpuId(1)].into_iter().collect();
        let paired: Vec<StrandId> = (0..3)
            .map(|_| {
                let workload = Workload::ComputeSleep {
                    compute: 3 * NANOSECONDS_PER_MILLISECOND,
                    sleep: NANOSECONDS_PER_MILLISECOND,
                };
                sim.add_strand(pair, SchedParams::default(), workload)
                    .unwrap()
            })
            .collect();
        let free: Vec<StrandId> = (0..3)
            .map(|_| {
                sim.add_strand(
                    CpuSet::all(cpu_count),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap()
            })
            .collect();
        // The simulator fails the run if a pick breaks affinity.
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        assert_eq!(
            sim.strand_statistics(pinned).cpus_used,
            CpuSet::single(CpuId(2))
        );
        for id in paired {
            let used = sim.strand_statistics(id).cpus_used;
            assert!(
                !used.is_empty() && used.intersection(&pair) == used,
                "{id} ran on {used:?}"
            );
        }
        for id in free {
            assert!(sim.strand_statistics(id).cpu_time > 0);
        }
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(RoundRobin::new(CPUS), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(|| RoundRobin::new(CPUS));
    }
}
