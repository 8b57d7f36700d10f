//! Stride scheduling (Waldspurger and Weihl, 1995): deterministic proportional share, CPU time in proportion to tickets.
//!
//! Each strand has `stride = STRIDE1 / tickets` and a `pass`; the runnable
//! strand with the least pass runs, and running for `ran` nanoseconds
//! advances its pass by `stride * ran / quantum`. The *global pass* is the
//! pass of an imaginary strand holding every active ticket: it advances by
//! `STRIDE1 * ran / (quantum * global_tickets)` for CPU time used by anyone.
//! A strand joins at `global_pass + remain` and, when it blocks, keeps
//! `remain = pass - global_pass`, as in the paper: sleeping neither earns
//! credit nor loses the strand its place.
//!
//! The queue is global (one list under the lock), so shares hold on several
//! CPUs as long as no strand's share exceeds one CPU.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use spin::Mutex;

use super::{bounded_cpu_count, choose_cpu, reserve_list, usable_cpus, Place};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    StrandId, StrandSpec, StrandState, TickAction, DEFAULT_TICKETS, NANOSECONDS_PER_MILLISECOND,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "stride";
/// The paper's `stride1`: the stride of a strand holding one ticket. Large, so
/// that a stint of a microsecond still advances a pass (a strand that blocks
/// after every few microseconds must not run for free by rounding).
pub const STRIDE1: u64 = 1 << 34;
/// The most tickets a strand can hold (its stride is then `STRIDE1 >> 20`).
pub const MAX_TICKETS: u32 = 1 << 20;
/// The scheduling quantum: a strand's pass advances by its stride per quantum run,
/// and a strand is preempted only after a full quantum.
pub const DEFAULT_QUANTUM: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;
/// How far (in virtual nanoseconds) an imported strand may trail the most advanced.
pub const MAX_IMPORTED_LAG: Nanoseconds = 100 * NANOSECONDS_PER_MILLISECOND;
/// Where the global pass starts: room below it for strands that join with a negative remain.
const PASS_ORIGIN: u64 = 1 << 54;

/// What the policy knows of one strand.
struct Entry {
    spec: StrandSpec,
    place: Place,
    run_time: Nanoseconds,
    tickets: u64,
    stride: u64,
    /// Meaningful while active.
    pass: u64,
    /// `pass - global_pass` when it last left; meaningful while inactive.
    remain: i64,
    /// Whether its tickets count in the global tickets (runnable or running).
    active: bool,
    /// Whether it is on a CPU (from `resume` to `checkpoint`).
    on_cpu: bool,
}

/// Everything behind the policy's lock.
struct State {
    strands: BTreeMap<StrandId, Entry>,
    queue: Vec<StrandId>,
    global_pass: u64,
    global_tickets: u64,
    /// Strands running now: how fast the global pass advances.
    running: u64,
    /// When the global pass was last advanced.
    updated_at: Nanoseconds,
    cpu_count: usize,
}

/// Waldspurger's stride scheduling over a global queue.
pub struct Stride {
    quantum: Nanoseconds,
    state: Mutex<State>,
}

/// `numerator * multiplier / divisor` without overflow, saturating at `u64::MAX`.
fn scale(numerator: u64, multiplier: u64, divisor: u64) -> u64 {
    let exact = u128::from(numerator) * u128::from(multiplier) / u128::from(divisor.max(1));
    u64::try_from(exact).unwrap_or(u64::MAX)
}

/// Virtual nanoseconds (CPU time scaled to the default tickets) for a pass difference.
fn pass_to_virtual(pass: u64, quantum: Nanoseconds) -> u64 {
    scale(
        pass,
        quantum.saturating_mul(u64::from(DEFAULT_TICKETS)),
        STRIDE1,
    )
}

/// The pass difference for a difference in virtual nanoseconds.
fn virtual_to_pass(virtual_time: u64, quantum: Nanoseconds) -> u64 {
    scale(
        virtual_time,
        STRIDE1,
        quantum.saturating_mul(u64::from(DEFAULT_TICKETS)),
    )
}

impl State {
    /// Makes a strand active at `global_pass + remain`.
    fn join(&mut self, strand: StrandId) {
        let Some(entry) = self.strands.get_mut(&strand) else {
            return;
        };
        if !entry.active {
            entry.pass = self.global_pass.saturating_add_signed(entry.remain);
            entry.active = true;
            self.global_tickets += entry.tickets;
        }
    }

    /// Makes a strand inactive, keeping `remain = pass - global_pass`.
    fn leave(&mut self, strand: StrandId) {
        let Some(entry) = self.strands.get_mut(&strand) else {
            return;
        };
        if entry.active {
            let remain = i128::from(entry.pass) - i128::from(self.global_pass);
            entry.remain =
                i64::try_from(remain).unwrap_or(if remain < 0 { i64::MIN } else { i64::MAX });
            entry.active = false;
            self.global_tickets = self.global_tickets.saturating_sub(entry.tickets);
        }
    }

    /// Advances the global pass to `now` (the paper's `global_pass_update`).
    /// Every event calls it first, so joins and leaves see the current value.
    fn advance_global(&mut self, now: Nanoseconds, quantum: Nanoseconds) {
        let elapsed = now.saturating_sub(self.updated_at);
        self.updated_at = self.updated_at.max(now);
        if self.global_tickets > 0 {
            let used = elapsed.saturating_mul(self.running);
            let advance = scale(STRIDE1, used, quantum.saturating_mul(self.global_tickets));
            self.global_pass = self.global_pass.saturating_add(advance);
        }
    }

    /// Charges `ran` to the strand's pass.
    fn charge(&mut self, strand: StrandId, ran: Nanoseconds, quantum: Nanoseconds) {
        let Some(entry) = self.strands.get_mut(&strand) else {
            return;
        };
        entry.run_time = entry.run_time.saturating_add(ran);
        entry.pass = entry.pass.saturating_add(scale(entry.stride, ran, quantum));
    }

    /// Records whether the strand is on a CPU, keeping the count of running strands.
    fn set_on_cpu(&mut self, strand: StrandId, on_cpu: bool) {
        if let Some(entry) = self.strands.get_mut(&strand) {
            if entry.on_cpu != on_cpu {
                entry.on_cpu = on_cpu;
                self.running = if on_cpu {
                    self.running + 1
                } else {
                    self.running.saturating_sub(1)
                };
            }
        }
    }

    fn set_place(&mut self, strand: StrandId, place: Place) {
        if let Some(entry) = self.strands.get_mut(&strand) {
            entry.place = place;
        }
    }

    fn enqueue(&mut self, strand: StrandId, cpu: CpuId) {
        if let Some(entry) = self.strands.get_mut(&strand) {
            entry.place = Place::Queued(cpu);
            self.queue.push(strand);
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

    /// The queued strand with the least pass that may run on `cpu`: (position, pass).
    fn least_pass(&self, cpu: CpuId) -> Option<(usize, u64)> {
        self.queue
            .iter()
            .enumerate()
            .filter_map(|(position, strand)| {
                let entry = self.strands.get(strand)?;
                entry
                    .spec
                    .affinity
                    .contains(cpu)
                    .then_some((position, entry.pass, *strand))
            })
            .min_by_key(|(_, pass, strand)| (*pass, *strand))
            .map(|(position, pass, _)| (position, pass))
    }

    /// The strand's pass as if it were active now.
    fn effective_pass(&self, entry: &Entry) -> u64 {
        if entry.active {
            entry.pass
        } else {
            self.global_pass.saturating_add_signed(entry.remain)
        }
    }
}

impl Stride {
    /// Stride scheduling for `cpu_count` CPUs with the default quantum.
    pub fn new(cpu_count: u16) -> Self {
        Self::with_quantum(cpu_count, DEFAULT_QUANTUM)
    }

    /// Stride scheduling for `cpu_count` CPUs with quantum `quantum`.
    pub fn with_quantum(cpu_count: u16, quantum: Nanoseconds) -> Self {
        Self {
            quantum: quantum.max(1),
            state: Mutex::new(State {
                strands: BTreeMap::new(),
                queue: Vec::new(),
                global_pass: PASS_ORIGIN,
                global_tickets: 0,
                running: 0,
                updated_at: 0,
                cpu_count: bounded_cpu_count(cpu_count),
            }),
        }
    }

    /// How far the strand's pass is ahead of the global pass (negative: behind).
    pub fn lead(&self, strand: StrandId) -> Option<i64> {
        let state = self.state.lock();
        let entry = state.strands.get(&strand)?;
        let lead = i128::from(state.effective_pass(entry)) - i128::from(state.global_pass);
        i64::try_from(lead).ok()
    }
}

/// A new entry: inactive, one stride ahead of the global pass when it joins (the paper's rule).
fn new_entry(spec: StrandSpec, place: Place, run_time: Nanoseconds, remain: Option<i64>) -> Entry {
    let tickets = u64::from(spec.params.tickets.clamp(1, MAX_TICKETS));
    let stride = STRIDE1 / tickets;
    Entry {
        spec,
        place,
        run_time,
        tickets,
        stride,
        pass: 0,
        remain: remain.unwrap_or(i64::try_from(stride).unwrap_or(i64::MAX)),
        active: false,
        on_cpu: false,
    }
}

impl Policy for Stride {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, _ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if state.strands.contains_key(&strand.id) {
            return Err(Refusal("stride: the strand already exists"));
        }
        state
            .strands
            .insert(strand.id, new_entry(*strand, Place::Blocked, 0, None));
        let strands = state.strands.len();
        reserve_list(&mut state.queue, strands);
        Ok(())
    }

    fn strand_exited(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        state.dequeue(strand);
        state.leave(strand);
        state.set_on_cpu(strand, false);
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
        let running_on = |cpu: CpuId| {
            let busy = state
                .strands
                .values()
                .any(|entry| entry.place == Place::Running(cpu));
            usize::from(busy)
        };
        choose_cpu(state.cpu_count, previous, allowed, running_on)
    }

    fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId) {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        let blocked = state
            .strands
            .get(&strand)
            .is_some_and(|entry| entry.place == Place::Blocked);
        if blocked {
            state.join(strand);
            state.enqueue(strand, cpu);
        }
    }

    fn block(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        let Some(place) = state.strands.get(&strand).map(|entry| entry.place) else {
            return;
        };
        state.dequeue(strand);
        // A running strand leaves at its checkpoint, once its last stint is charged.
        if !matches!(place, Place::Running(_)) {
            state.leave(strand);
        }
        state.set_place(strand, Place::Blocked);
    }

    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    ) {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        state.set_on_cpu(strand, false);
        state.charge(strand, ran, self.quantum);
        let Some(place) = state.strands.get(&strand).map(|entry| entry.place) else {
            return;
        };
        if reason.still_runnable() && matches!(place, Place::Running(_)) {
            state.enqueue(strand, ctx.cpu);
        } else {
            // A running strand that blocked leaves now, with its last stint charged.
            state.leave(strand);
            state.set_place(strand, Place::Blocked);
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        state.dequeue(strand);
        state.set_place(strand, Place::Running(ctx.cpu));
        state.set_on_cpu(strand, true);
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        let (position, _) = state.least_pass(ctx.cpu)?;
        let strand = state.queue.remove(position);
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Dispatched;
        }
        Some(strand)
    }

    /// Takes any queued strand that may run on `ctx.cpu`, out of pass order:
    /// the yielder gives its turn away, not its tickets. Shares still follow
    /// tickets, because nothing here changes a pass: the taken strand's pass
    /// advances by what it runs when it is checkpointed as usual, so it
    /// waits correspondingly longer afterwards, and the yielder was charged
    /// for its own stint at its checkpoint.
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        let Some(entry) = state.strands.get(&strand) else {
            return false;
        };
        let allowed = usable_cpus(state.cpu_count, &entry.spec.affinity).contains(ctx.cpu);
        if !matches!(entry.place, Place::Queued(_)) || !allowed {
            return false;
        }
        if !state.dequeue(strand) {
            return false;
        }
        state.set_place(strand, Place::Dispatched);
        true
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        if ran < self.quantum {
            return TickAction::Continue;
        }
        let state = self.state.lock();
        let Some(running) = current.and_then(|strand| state.strands.get(&strand)) else {
            return TickAction::Continue;
        };
        let projected = running
            .pass
            .saturating_add(scale(running.stride, ran, self.quantum));
        match state.least_pass(ctx.cpu) {
            Some((_, waiting)) if waiting < projected => TickAction::Preempt,
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
                virtual_time: pass_to_virtual(state.effective_pass(entry), self.quantum),
                absolute_deadline: None,
                run_time: entry.run_time,
            })
            .collect()
    }

    fn import(&self, ctx: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        state.advance_global(ctx.now, self.quantum);
        let mut incoming = BTreeMap::new();
        for strand in &strands {
            let fresh = !state.strands.contains_key(&strand.spec.id);
            if !fresh || incoming.insert(strand.spec.id, ()).is_some() {
                return Err(Refusal("stride: a strand is handed over twice"));
            }
        }
        // Progress differences become pass differences above the global pass.
        let base = strands
            .iter()
            .filter(|strand| strand.state != StrandState::Blocked)
            .map(|strand| strand.virtual_time)
            .min()
            .unwrap_or(0);
        for strand in &strands {
            let lag = strand
                .virtual_time
                .saturating_sub(base)
                .min(MAX_IMPORTED_LAG);
            let remain = i64::try_from(virtual_to_pass(lag, self.quantum)).unwrap_or(i64::MAX);
            let entry = new_entry(
                strand.spec,
                Place::imported(strand.state, ctx.cpu),
                strand.run_time,
                Some(remain),
            );
            let id = strand.spec.id;
            state.strands.insert(id, entry);
            match strand.state {
                StrandState::Blocked => {}
                StrandState::Running(_) => {
                    state.join(id);
                    state.set_on_cpu(id, true);
                }
                StrandState::Runnable => {
                    state.join(id);
                    let cpu = choose_cpu(state.cpu_count, None, &strand.spec.affinity, |_| 0);
                    state.enqueue(id, cpu);
                }
            }
        }
        let total = state.strands.len();
        reserve_list(&mut state.queue, total);
        Ok(())
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
    /// Allowed deviation from the ideal share, in percent of that share.
    const SHARE_TOLERANCE_PERCENT: u64 = 5;

    fn assert_share(time: Nanoseconds, ideal: Nanoseconds, what: &str) {
        let deviation = time.abs_diff(ideal);
        assert!(
            deviation * 100 <= ideal * SHARE_TOLERANCE_PERCENT,
            "{what}: ran {time} ns, ideal {ideal} ns"
        );
    }

    /// CPU-bound strands with `tickets` on `cpu_count` CPUs for `duration`: each gets its share.
    fn shares_follow_tickets(cpu_count: u16, tickets: &[u32], duration: Nanoseconds) {
        let mut sim = Simulator::new(SimConfig::new(cpu_count), Arc::new(Stride::new(cpu_count)));
        let ids: Vec<StrandId> = tickets
            .iter()
            .map(|tickets| {
                let params = SchedParams::default().with_tickets(*tickets);
                sim.add_strand(CpuSet::all(cpu_count), params, Workload::CpuBound)
                    .unwrap()
            })
            .collect();
        sim.run_until(duration).unwrap();
        let total_tickets: u64 = tickets.iter().map(|tickets| u64::from(*tickets)).sum();
        let capacity = duration * u64::from(cpu_count);
        for (id, tickets) in ids.iter().zip(tickets) {
            let ideal = capacity * u64::from(*tickets) / total_tickets;
            let what = alloc::format!("{id} with {tickets} tickets");
            assert_share(sim.strand_statistics(*id).cpu_time, ideal, &what);
        }
    }

    #[test]
    fn sub_microsecond_stints_still_advance_the_pass() {
        // A strand that gives the CPU up after half a microsecond must pay
        // for it: were its pass advance rounded to nothing, it would be
        // picked again forever and the other strand never.
        let policy = Stride::new(1);
        let context = |now| crate::Context::new(now, crate::CpuId(0), 1);
        let strands = [StrandId::new(1, 1), StrandId::new(2, 1)];
        for id in strands {
            let spec = crate::StrandSpec::new(id, CpuSet::all(1), SchedParams::default());
            policy.strand_created(&context(0), &spec).unwrap();
            policy.unblock(&context(0), id, crate::CpuId(0));
        }
        const STINT: Nanoseconds = 500;
        const STINTS: usize = 10_000;
        let mut now = 0;
        let mut picks = [0usize; 2];
        for _ in 0..STINTS {
            let next = policy.pick_next(&context(now)).unwrap();
            policy.resume(&context(now), next);
            now += STINT;
            policy.checkpoint(&context(now), next, crate::CheckpointReason::Yielded, STINT);
            picks[usize::from(next == strands[1])] += 1;
        }
        assert!(
            picks.iter().all(|&count| count * 10 >= STINTS * 4),
            "picks {picks:?}"
        );
    }

    #[test]
    fn tickets_three_two_one_share_one_cpu_half_third_sixth() {
        shares_follow_tickets(1, &[300, 200, 100], 3 * NANOSECONDS_PER_SECOND);
    }

    #[test]
    fn tickets_share_two_cpus_when_strands_share_them() {
        shares_follow_tickets(
            2,
            &[300, 300, 200, 200, 100, 100],
            3 * NANOSECONDS_PER_SECOND,
        );
    }

    #[test]
    fn sleeping_earns_no_credit_and_loses_no_place() {
        // A computes 200 ms, sleeps 300 ms, computes again; B is CPU-bound.
        // After waking, A shares the CPU half and half with B: it does not
        // run alone to make up for its sleep.
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Stride::new(1)));
        let sleeper = sim
            .add_strand(
                CpuSet::all(1),
                SchedParams::default(),
                Workload::ComputeSleep {
                    compute: 200 * MILLISECOND,
                    sleep: 300 * MILLISECOND,
                },
            )
            .unwrap();
        sim.add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        // First burst: about 400 ms at half the CPU; asleep until about 700 ms.
        sim.run_until(750 * MILLISECOND).unwrap();
        let before = sim.strand_statistics(sleeper).cpu_time;
        assert!(
            (200 * MILLISECOND..260 * MILLISECOND).contains(&before),
            "{before}"
        );
        sim.run_until(950 * MILLISECOND).unwrap();
        let gained = sim.strand_statistics(sleeper).cpu_time - before;
        let half = 100 * MILLISECOND;
        assert!(
            gained.abs_diff(half) <= half / 5,
            "after waking it ran {gained} ns of 200 ms"
        );
    }

    #[test]
    fn remain_is_kept_across_block_and_unblock() {
        let policy = Stride::new(1);
        let at = |now: Nanoseconds| Context::new(now, CpuId(0), 1);
        let specs: Vec<StrandSpec> = (0..2)
            .map(|index| {
                StrandSpec::new(
                    StrandId::new(index, 0),
                    CpuSet::all(1),
                    SchedParams::default(),
                )
            })
            .collect();
        for spec in &specs {
            policy.strand_created(&at(0), spec).unwrap();
            policy.unblock(&at(0), spec.id, CpuId(0));
        }
        let (sleeper, other) = (specs[0].id, specs[1].id);
        // Equal passes: the lower identity goes first. It runs 3 ms of its quantum and blocks.
        assert_eq!(policy.pick_next(&at(0)), Some(sleeper));
        policy.resume(&at(0), sleeper);
        let mut now = 3 * MILLISECOND;
        policy.block(&at(now), sleeper);
        policy.checkpoint(
            &at(now),
            sleeper,
            CheckpointReason::Blocked,
            3 * MILLISECOND,
        );
        let lead = policy.lead(sleeper).unwrap();
        assert_ne!(lead, 0, "the sleeper left ahead of the global pass");
        // The other strand runs alone for half a second: the global pass moves on.
        for _ in 0..50 {
            let strand = policy.pick_next(&at(now)).unwrap();
            policy.resume(&at(now), strand);
            now += DEFAULT_QUANTUM;
            policy.checkpoint(
                &at(now),
                strand,
                CheckpointReason::Preempted,
                DEFAULT_QUANTUM,
            );
        }
        policy.unblock(&at(now), sleeper, CpuId(0));
        assert_eq!(
            policy.lead(sleeper),
            Some(lead),
            "rejoins at global pass + remain"
        );
        // It left 3 ms of service ahead of the other strand, and still is.
        assert_eq!(policy.pick_next(&at(now)), Some(other));
    }

    #[test]
    fn a_late_joiner_gets_its_share_from_the_global_pass_not_a_burst() {
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Stride::new(1)));
        for _ in 0..2 {
            sim.add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
                .unwrap();
        }
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        let late = sim
            .add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        sim.run_until(NANOSECONDS_PER_SECOND + 600 * MILLISECOND)
            .unwrap();
        assert_share(
            sim.strand_statistics(late).cpu_time,
            200 * MILLISECOND,
            "late joiner",
        );
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(Stride::new(CPUS), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(|| Stride::new(CPUS));
    }

    #[test]
    fn a_strand_taken_out_of_pass_order_pays_for_its_stint() {
        let policy = Stride::new(1);
        let at = |now: Nanoseconds| Context::new(now, CpuId(0), 1);
        let ids: Vec<StrandId> = (0..3).map(|index| StrandId::new(index, 0)).collect();
        for id in &ids {
            let spec = StrandSpec::new(*id, CpuSet::all(1), SchedParams::default());
            policy.strand_created(&at(0), &spec).unwrap();
            policy.unblock(&at(0), *id, CpuId(0));
        }
        let (first, yielder, behind) = (ids[0], ids[1], ids[2]);
        // `first` runs a quantum, then `yielder` runs one and yields: only `behind` has not run.
        let mut now = 0;
        for (strand, reason) in [
            (first, CheckpointReason::Preempted),
            (yielder, CheckpointReason::Yielded),
        ] {
            assert_eq!(policy.pick_next(&at(now)), Some(strand));
            policy.resume(&at(now), strand);
            now += DEFAULT_QUANTUM;
            policy.checkpoint(&at(now), strand, reason, DEFAULT_QUANTUM);
        }
        assert!(policy.lead(first) > policy.lead(behind));
        let before = policy.lead(first).unwrap();
        // The yield goes to `first`, out of pass order; its pass advances when it is checkpointed.
        assert!(policy.take_for_directed_yield(&at(now), first));
        assert_eq!(
            policy.lead(first),
            Some(before),
            "taking it changes no pass"
        );
        policy.resume(&at(now), first);
        now += DEFAULT_QUANTUM;
        policy.checkpoint(
            &at(now),
            first,
            CheckpointReason::Preempted,
            DEFAULT_QUANTUM,
        );
        assert!(policy.lead(first) > policy.lead(yielder));
        let order: Vec<StrandId> = core::iter::from_fn(|| policy.pick_next(&at(now))).collect();
        assert_eq!(order, [behind, yielder, first], "pass order again");
    }
}
