//! Partitioned earliest-deadline-first for periodic strands, with admission control; other strands run in the background.
//!
//! * Admission: a periodic strand's density `budget / min(relative deadline,
//!   period)`, in parts per million and rounded up, must fit on one of its
//!   allowed CPUs (first fit, lowest CPU first) next to the densities already
//!   there, within [`CPU_CAPACITY_PPM`]. With implicit deadlines this is the
//!   exact EDF test (utilisation ≤ 1 per CPU). Otherwise `strand_created`
//!   refuses. The strand then always runs on that *home* CPU.
//! * Deadlines: when a periodic strand wakes (a job is released at `now`),
//!   its absolute deadline is `now + relative deadline`, unless the deadline
//!   it already has is still usable under the constant-bandwidth-server wake
//!   rule (its remaining budget fits in the time left at its bandwidth).
//! * Budget enforcement (hard CBS): a strand that has run its budget in the
//!   current period is preempted and throttled until its current deadline,
//!   which then moves one period later. An overrunning strand cannot steal
//!   other strands' reservations or starve the background.
//! * Background: non-periodic strands run round robin (per-CPU FIFO, idle
//!   CPUs pull) whenever their CPU has no eligible deadline work.
//!
//! [`Edf::without_admission_control`] accepts every periodic strand (least
//! reserved CPU when none fits), to show what overload does.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use spin::Mutex;

use super::{
    bounded_cpu_count, choose_cpu, remove_from, reserve_list, reserve_queues, usable_cpus, Place,
};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    SchedParams, StrandId, StrandSpec, StrandState, TickAction, NANOSECONDS_PER_MILLISECOND,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "edf";
/// Parts per million: the unit of utilisation.
pub const PARTS_PER_MILLION: u64 = 1_000_000;
/// The utilisation one CPU can take: all of it.
pub const CPU_CAPACITY_PPM: u64 = PARTS_PER_MILLION;
/// Round-robin slice among background strands.
pub const BACKGROUND_SLICE: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;

/// A periodic strand's reservation on its home CPU.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    home: CpuId,
    density_ppm: u64,
    period: Nanoseconds,
    budget: Nanoseconds,
    relative_deadline: Nanoseconds,
    /// The current job's absolute deadline.
    deadline: Nanoseconds,
    /// Throttled until then (budget spent).
    eligible_at: Nanoseconds,
    /// CPU time used in the current period.
    used: Nanoseconds,
}

impl Reservation {
    /// Charges `ran`; each full budget spent throttles the strand until its
    /// deadline and moves the deadline a period on (hard CBS).
    fn charge(&mut self, ran: Nanoseconds) {
        self.used = self.used.saturating_add(ran);
        let periods = self.used / self.budget;
        if periods > 0 {
            self.used %= self.budget;
            self.eligible_at = self
                .deadline
                .saturating_add(self.period.saturating_mul(periods - 1));
            self.deadline = self
                .deadline
                .saturating_add(self.period.saturating_mul(periods));
        }
    }

    /// A job is released at `now`: keep the current deadline if the
    /// remaining budget fits before it at the reserved bandwidth (CBS wake
    /// rule), else start afresh.
    fn release(&mut self, now: Nanoseconds) {
        let remaining = u128::from(self.budget - self.used);
        let keep = self.deadline > now
            && remaining * u128::from(self.period)
                <= u128::from(self.deadline - now) * u128::from(self.budget);
        if !keep {
            self.deadline = now.saturating_add(self.relative_deadline);
            self.eligible_at = now;
            self.used = 0;
        }
    }
}

/// What the policy knows of one strand.
struct Entry {
    spec: StrandSpec,
    place: Place,
    run_time: Nanoseconds,
    /// Present for periodic strands.
    reservation: Option<Reservation>,
}

/// One CPU's queues.
struct CpuQueues {
    /// Periodic strands homed here and queued, unordered (scanned for the earliest deadline).
    deadline: Vec<StrandId>,
    /// Background strands queued here, FIFO.
    background: VecDeque<StrandId>,
    running: Option<StrandId>,
    /// Sum of the densities of the periodic strands homed here.
    reserved_ppm: u64,
}

/// Everything behind the policy's lock.
struct State {
    strands: BTreeMap<StrandId, Entry>,
    cpus: Vec<CpuQueues>,
    wakeups: CpuSet,
}

/// Partitioned EDF with admission control.
pub struct Edf {
    admission_control: bool,
    state: Mutex<State>,
}

/// Density of a periodic strand in parts per million, rounded up; `None` if it has no budget.
fn density_ppm(params: &SchedParams) -> Option<u64> {
    let window = params.deadline_or_period().min(params.period);
    if params.budget == 0 || window == 0 {
        return None;
    }
    let density =
        (u128::from(params.budget) * u128::from(PARTS_PER_MILLION)).div_ceil(u128::from(window));
    Some(u64::try_from(density).unwrap_or(u64::MAX))
}

impl State {
    fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// Chooses a home CPU for a periodic strand given per-CPU reservations `reserved`.
    fn place_reservation(
        reserved: &[u64],
        spec: &StrandSpec,
        admission_control: bool,
    ) -> Result<(CpuId, u64), Refusal> {
        let density = density_ppm(&spec.params).ok_or(Refusal(
            "edf: a periodic strand needs a non-zero budget and deadline",
        ))?;
        let usable = usable_cpus(reserved.len(), &spec.affinity);
        let fits = usable
            .iter()
            .find(|cpu| reserved[cpu.index()].saturating_add(density) <= CPU_CAPACITY_PPM);
        match fits {
            Some(cpu) => Ok((cpu, density)),
            None if !admission_control => usable
                .iter()
                .min_by_key(|cpu| reserved[cpu.index()])
                .map(|cpu| (cpu, density))
                .ok_or(Refusal("edf: none of the strand's CPUs is online")),
            None => Err(Refusal(
                "edf admission control: the strand's utilisation fits on none of its CPUs",
            )),
        }
    }

    fn load(&self, cpu: CpuId) -> usize {
        self.cpus.get(cpu.index()).map_or(0, |queues| {
            queues.deadline.len() + queues.background.len() + usize::from(queues.running.is_some())
        })
    }

    /// Queues a runnable strand: periodic ones at home, others on `cpu` (or an allowed CPU).
    fn enqueue(&mut self, strand: StrandId, cpu: CpuId, now: Nanoseconds) {
        let Some(entry) = self.strands.get(&strand) else {
            return;
        };
        let (spec, reservation) = (entry.spec, entry.reservation);
        let cpu = match reservation {
            Some(reservation) => reservation.home,
            None if usable_cpus(self.cpu_count(), &spec.affinity).contains(cpu) => cpu,
            None => choose_cpu(self.cpu_count(), None, &spec.affinity, |other| {
                self.load(other)
            }),
        };
        let running = self.cpus[cpu.index()].running;
        match reservation {
            Some(reservation) => {
                self.cpus[cpu.index()].deadline.push(strand);
                // Wake the home CPU if the newcomer should preempt what runs there.
                let preempts = match running.and_then(|running| self.deadline_of(running)) {
                    Some(deadline) => {
                        reservation.deadline < deadline && reservation.eligible_at <= now
                    }
                    None => true,
                };
                if preempts {
                    self.wakeups.insert(cpu);
                }
            }
            None => self.cpus[cpu.index()].background.push_back(strand),
        }
        if let Some(entry) = self.strands.get_mut(&strand) {
            entry.place = Place::Queued(cpu);
        }
    }

    fn dequeue(&mut self, strand: StrandId) {
        let Some(Place::Queued(cpu)) = self.strands.get(&strand).map(|entry| entry.place) else {
            return;
        };
        if let Some(queues) = self.cpus.get_mut(cpu.index()) {
            if let Some(position) = queues.deadline.iter().position(|queued| *queued == strand) {
                queues.deadline.remove(position);
            }
            remove_from(&mut queues.background, |queued| *queued == strand);
        }
    }

    fn deadline_of(&self, strand: StrandId) -> Option<Nanoseconds> {
        self.strands
            .get(&strand)?
            .reservation
            .map(|reservation| reservation.deadline)
    }

    /// The eligible queued deadline strand on `cpu` with the earliest deadline: (position, deadline).
    fn earliest_deadline(&self, cpu: CpuId, now: Nanoseconds) -> Option<(usize, Nanoseconds)> {
        let queues = self.cpus.get(cpu.index())?;
        queues
            .deadline
            .iter()
            .enumerate()
            .filter_map(|(position, strand)| {
                let reservation = self.strands.get(strand)?.reservation?;
                (reservation.eligible_at <= now).then_some((
                    position,
                    reservation.deadline,
                    *strand,
                ))
            })
            .min_by_key(|(_, deadline, strand)| (*deadline, *strand))
            .map(|(position, deadline, _)| (position, deadline))
    }

    /// Takes a background strand allowed on `cpu` from the CPU with the most background work.
    fn pull_background(&mut self, cpu: CpuId) -> Option<StrandId> {
        let mut best: Option<(usize, usize)> = None;
        for (index, queues) in self.cpus.iter().enumerate() {
            if index == cpu.index() {
                continue;
            }
            let allowed = queues.background.iter().position(|strand| {
                self.strands
                    .get(strand)
                    .is_some_and(|entry| entry.spec.affinity.contains(cpu))
            });
            if let Some(position) = allowed {
                let length = queues.background.len();
                if best
                    .is_none_or(|(best_index, _)| self.cpus[best_index].background.len() < length)
                {
                    best = Some((index, position));
                }
            }
        }
        let (index, position) = best?;
        self.cpus[index].background.remove(position)
    }
}

impl Edf {
    /// EDF for `cpu_count` CPUs, refusing periodic strands that do not fit.
    pub fn new(cpu_count: u16) -> Self {
        Self::build(cpu_count, true)
    }

    /// EDF that accepts every periodic strand, overloaded or not.
    pub fn without_admission_control(cpu_count: u16) -> Self {
        Self::build(cpu_count, false)
    }

    fn build(cpu_count: u16, admission_control: bool) -> Self {
        let cpu_count = bounded_cpu_count(cpu_count);
        Self {
            admission_control,
            state: Mutex::new(State {
                strands: BTreeMap::new(),
                cpus: (0..cpu_count)
                    .map(|_| CpuQueues {
                        deadline: Vec::new(),
                        background: VecDeque::new(),
                        running: None,
                        reserved_ppm: 0,
                    })
                    .collect(),
                wakeups: CpuSet::empty(),
            }),
        }
    }

    /// The utilisation reserved on `cpu`, in parts per million.
    pub fn reserved_ppm(&self, cpu: CpuId) -> u64 {
        let state = self.state.lock();
        state
            .cpus
            .get(cpu.index())
            .map_or(0, |queues| queues.reserved_ppm)
    }

    /// Makes every queue able to hold every strand without growing.
    fn reserve(state: &mut State) {
        let strands = state.strands.len();
        for queues in &mut state.cpus {
            reserve_list(&mut queues.deadline, strands);
            reserve_queues(core::slice::from_mut(&mut queues.background), strands);
        }
    }
}

/// A fresh reservation for a periodic strand homed on `home`.
fn reservation(params: &SchedParams, home: CpuId, density_ppm: u64) -> Reservation {
    Reservation {
        home,
        density_ppm,
        period: params.period,
        budget: params.budget,
        relative_deadline: params.deadline_or_period(),
        deadline: 0,
        eligible_at: 0,
        used: 0,
    }
}

impl Policy for Edf {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, _ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if state.strands.contains_key(&strand.id) {
            return Err(Refusal("edf: the strand already exists"));
        }
        let reservation = if strand.params.is_periodic() {
            let reserved: Vec<u64> = state
                .cpus
                .iter()
                .map(|queues| queues.reserved_ppm)
                .collect();
            let (home, density) =
                State::place_reservation(&reserved, strand, self.admission_control)?;
            let reserved = &mut state.cpus[home.index()].reserved_ppm;
            *reserved = reserved.saturating_add(density);
            Some(reservation(&strand.params, home, density))
        } else {
            None
        };
        state.strands.insert(
            strand.id,
            Entry {
                spec: *strand,
                place: Place::Blocked,
                run_time: 0,
                reservation,
            },
        );
        Self::reserve(&mut state);
        Ok(())
    }

    fn strand_exited(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        for queues in &mut state.cpus {
            if queues.running == Some(strand) {
                queues.running = None;
            }
        }
        if let Some(entry) = state.strands.remove(&strand) {
            if let Some(reservation) = entry.reservation {
                let queues = &mut state.cpus[reservation.home.index()];
                queues.reserved_ppm = queues.reserved_ppm.saturating_sub(reservation.density_ppm);
            }
        }
    }

    fn select_cpu(
        &self,
        _ctx: &Context,
        strand: StrandId,
        previous: Option<CpuId>,
        allowed: &CpuSet,
    ) -> CpuId {
        let state = self.state.lock();
        let home = state
            .strands
            .get(&strand)
            .and_then(|entry| entry.reservation)
            .map(|reservation| reservation.home);
        match home {
            Some(home) => home,
            None => choose_cpu(state.cpu_count(), previous, allowed, |cpu| state.load(cpu)),
        }
    }

    fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId) {
        let mut state = self.state.lock();
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        if entry.place != Place::Blocked {
            return;
        }
        if let Some(reservation) = &mut entry.reservation {
            reservation.release(ctx.now);
        }
        state.enqueue(strand, cpu, ctx.now);
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
        if let Some(queues) = state.cpus.get_mut(ctx.cpu.index()) {
            if queues.running == Some(strand) {
                queues.running = None;
            }
        }
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        entry.run_time = entry.run_time.saturating_add(ran);
        if let Some(reservation) = &mut entry.reservation {
            reservation.charge(ran);
        }
        if reason.still_runnable() && matches!(entry.place, Place::Running(_)) {
            state.enqueue(strand, ctx.cpu, ctx.now);
        } else {
            entry.place = Place::Blocked;
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        state.dequeue(strand);
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Running(ctx.cpu);
        }
        if let Some(queues) = state.cpus.get_mut(ctx.cpu.index()) {
            queues.running = Some(strand);
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let mut state = self.state.lock();
        let local = ctx.cpu.index();
        if local >= state.cpu_count() {
            return None;
        }
        let strand = if let Some((position, _)) = state.earliest_deadline(ctx.cpu, ctx.now) {
            Some(state.cpus[local].deadline.remove(position))
        } else if let Some(strand) = state.cpus[local].background.pop_front() {
            Some(strand)
        } else {
            state.pull_background(ctx.cpu)
        }?;
        if let Some(entry) = state.strands.get_mut(&strand) {
            entry.place = Place::Dispatched;
        }
        Some(strand)
    }

    /// Agrees only where EDF order allows it: a periodic strand homed on
    /// `ctx.cpu`, not throttled, whose deadline is the earliest eligible one
    /// there (the yielder, queued again, included; ties allowed), or a
    /// background strand allowed on `ctx.cpu` (from any CPU's queue) while
    /// no eligible deadline work waits there. Anything else would run a
    /// strand ahead of an earlier deadline and break the guarantee.
    fn take_for_directed_yield(&self, ctx: &Context, strand: StrandId) -> bool {
        let mut state = self.state.lock();
        let Some(entry) = state.strands.get(&strand) else {
            return false;
        };
        let Place::Queued(queued_on) = entry.place else {
            return false;
        };
        if !usable_cpus(state.cpu_count(), &entry.spec.affinity).contains(ctx.cpu) {
            return false;
        }
        let earliest = state
            .earliest_deadline(ctx.cpu, ctx.now)
            .map(|(_, deadline)| deadline);
        let reservation = entry.reservation;
        let Some(queues) = state.cpus.get_mut(queued_on.index()) else {
            return false;
        };
        let taken = match reservation {
            Some(reservation) => {
                let first = reservation.home == ctx.cpu
                    && reservation.eligible_at <= ctx.now
                    && earliest.is_some_and(|earliest| reservation.deadline <= earliest);
                let position = queues.deadline.iter().position(|queued| *queued == strand);
                match position {
                    Some(position) if first => {
                        queues.deadline.remove(position);
                        true
                    }
                    _ => false,
                }
            }
            None if earliest.is_none() => {
                remove_from(&mut queues.background, |queued| *queued == strand).is_some()
            }
            None => false,
        };
        if taken {
            if let Some(entry) = state.strands.get_mut(&strand) {
                entry.place = Place::Dispatched;
            }
        }
        taken
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        let state = self.state.lock();
        let Some(running) = current.and_then(|strand| state.strands.get(&strand)) else {
            return TickAction::Continue;
        };
        let earliest = state.earliest_deadline(ctx.cpu, ctx.now);
        let preempt = match running.reservation {
            Some(reservation) => {
                let budget_spent = reservation.used.saturating_add(ran) >= reservation.budget;
                budget_spent
                    || earliest.is_some_and(|(_, deadline)| deadline < reservation.deadline)
            }
            None => {
                let background_waiting = state
                    .cpus
                    .get(ctx.cpu.index())
                    .is_some_and(|queues| !queues.background.is_empty());
                earliest.is_some() || (ran >= BACKGROUND_SLICE && background_waiting)
            }
        };
        if preempt {
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
                absolute_deadline: entry
                    .reservation
                    .filter(|_| entry.place != Place::Blocked)
                    .map(|reservation| reservation.deadline),
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
                return Err(Refusal("edf: a strand is handed over twice"));
            }
        }
        // Admit every periodic strand on a scratch copy first: all or nothing.
        let mut reserved: Vec<u64> = state
            .cpus
            .iter()
            .map(|queues| queues.reserved_ppm)
            .collect();
        let mut entries = Vec::with_capacity(strands.len());
        for strand in &strands {
            let reservation = if strand.spec.params.is_periodic() {
                let (home, density) =
                    State::place_reservation(&reserved, &strand.spec, self.admission_control)?;
                reserved[home.index()] = reserved[home.index()].saturating_add(density);
                let mut reservation = reservation(&strand.spec.params, home, density);
                // A deadline handed over is kept, within [now, now + relative deadline]:
                // an overdue job is due at once, and no job is due later than a fresh one.
                let fresh = ctx.now.saturating_add(reservation.relative_deadline);
                reservation.deadline = strand
                    .absolute_deadline
                    .map_or(fresh, |deadline| deadline.clamp(ctx.now, fresh));
                reservation.eligible_at = ctx.now;
                Some(reservation)
            } else {
                None
            };
            entries.push(Entry {
                spec: strand.spec,
                place: Place::imported(strand.state, ctx.cpu),
                run_time: strand.run_time,
                reservation,
            });
        }
        for (queues, reserved) in state.cpus.iter_mut().zip(reserved) {
            queues.reserved_ppm = reserved;
        }
        for entry in entries {
            let (id, place) = (entry.spec.id, entry.place);
            state.strands.insert(id, entry);
            if let Place::Running(cpu) = place {
                if let Some(queues) = state.cpus.get_mut(cpu.index()) {
                    queues.running = Some(id);
                }
            }
        }
        Self::reserve(&mut state);
        for strand in &strands {
            if strand.state == StrandState::Runnable {
                state.enqueue(strand.spec.id, ctx.cpu, ctx.now);
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
    use crate::sim::{SimConfig, SimErrorKind, Simulator, Workload};
    use alloc::sync::Arc;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;

    /// Adds a periodic strand whose jobs use their whole budget.
    fn add_periodic(
        sim: &mut Simulator,
        cpu_count: u16,
        period: Nanoseconds,
        budget: Nanoseconds,
    ) -> Result<StrandId, crate::sim::SimError> {
        sim.add_strand(
            CpuSet::all(cpu_count),
            SchedParams::default().periodic(period, budget, 0),
            Workload::Periodic {
                period,
                execution: budget,
                relative_deadline: 0,
            },
        )
    }

    #[test]
    fn jobs_are_picked_in_deadline_order() {
        let policy = Edf::new(1);
        let ctx = Context::new(0, CpuId(0), 1);
        let deadlines = [30, 10, 20];
        for (index, deadline) in deadlines.iter().enumerate() {
            let period = deadline * MILLISECOND;
            let spec = StrandSpec::new(
                StrandId::new(index as u32, 0),
                CpuSet::all(1),
                SchedParams::default().periodic(period, MILLISECOND, 0),
            );
            policy.strand_created(&ctx, &spec).unwrap();
            policy.unblock(&ctx, spec.id, CpuId(0));
        }
        let background =
            StrandSpec::new(StrandId::new(9, 0), CpuSet::all(1), SchedParams::default());
        policy.strand_created(&ctx, &background).unwrap();
        policy.unblock(&ctx, background.id, CpuId(0));
        let order: Vec<u32> = core::iter::from_fn(|| policy.pick_next(&ctx))
            .map(StrandId::index)
            .collect();
        assert_eq!(
            order,
            [1, 2, 0, 9],
            "earliest deadline first, background last"
        );
    }

    #[test]
    fn a_feasible_set_meets_every_deadline() {
        // U = 0.3 + 0.3 + 0.3 = 0.9 on one CPU, with a background strand soaking up the rest.
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Edf::new(1)));
        let periodic: Vec<StrandId> = [(10, 3), (20, 6), (40, 12)]
            .iter()
            .map(|(period, budget)| {
                add_periodic(&mut sim, 1, period * MILLISECOND, budget * MILLISECOND).unwrap()
            })
            .collect();
        let background = sim
            .add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        let duration = 2 * NANOSECONDS_PER_SECOND;
        sim.run_until(duration).unwrap();
        for (id, period) in periodic.iter().zip([10, 20, 40]) {
            assert_eq!(sim.deadline_misses(*id), 0, "{id} missed deadlines");
            let jobs = duration / (period * MILLISECOND);
            assert!(
                sim.strand_statistics(*id).completed_jobs >= jobs - 1,
                "{id} fell behind"
            );
        }
        let spare = sim.strand_statistics(background).cpu_time;
        assert!(
            spare.abs_diff(duration / 10) <= 5 * MILLISECOND,
            "background got {spare} ns"
        );
    }

    #[test]
    fn admission_control_refuses_an_infeasible_set() {
        let policy = Arc::new(Edf::new(1));
        let mut sim = Simulator::new(SimConfig::new(1), policy.clone());
        add_periodic(&mut sim, 1, 10 * MILLISECOND, 5 * MILLISECOND).unwrap();
        add_periodic(&mut sim, 1, 20 * MILLISECOND, 8 * MILLISECOND).unwrap();
        assert_eq!(policy.reserved_ppm(CpuId(0)), 900_000);
        let refused = add_periodic(&mut sim, 1, 10 * MILLISECOND, 2 * MILLISECOND).unwrap_err();
        assert!(
            matches!(refused.kind, SimErrorKind::CreateRefused { .. }),
            "{refused}"
        );
        assert_eq!(
            policy.reserved_ppm(CpuId(0)),
            900_000,
            "a refusal reserves nothing"
        );
        // What still fits is accepted, and the set meets its deadlines.
        let small = add_periodic(&mut sim, 1, 10 * MILLISECOND, MILLISECOND).unwrap();
        assert_eq!(
            small.index(),
            3,
            "the refused strand's identity is not reused"
        );
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        for id in sim.strand_ids().collect::<Vec<_>>() {
            assert_eq!(sim.deadline_misses(id), 0);
        }
    }

    #[test]
    fn first_fit_partitions_over_cpus_and_counts_constrained_deadlines_as_density() {
        let policy = Edf::new(2);
        let ctx = Context::new(0, CpuId(0), 2);
        let create = |index: u32, params: SchedParams| {
            let spec = StrandSpec::new(StrandId::new(index, 0), CpuSet::all(2), params);
            policy.strand_created(&ctx, &spec)
        };
        create(
            0,
            SchedParams::default().periodic(10 * MILLISECOND, 6 * MILLISECOND, 0),
        )
        .unwrap();
        create(
            1,
            SchedParams::default().periodic(10 * MILLISECOND, 6 * MILLISECOND, 0),
        )
        .unwrap();
        assert_eq!(
            (policy.reserved_ppm(CpuId(0)), policy.reserved_ppm(CpuId(1))),
            (600_000, 600_000)
        );
        // Budget 2 ms due within 4 ms: density 0.5, fits nowhere.
        assert!(create(
            2,
            SchedParams::default().periodic(10 * MILLISECOND, 2 * MILLISECOND, 4 * MILLISECOND)
        )
        .is_err());
        assert!(
            create(3, SchedParams::default().periodic(10 * MILLISECOND, 0, 0)).is_err(),
            "no budget"
        );
        create(
            4,
            SchedParams::default().periodic(10 * MILLISECOND, 4 * MILLISECOND, 0),
        )
        .unwrap();
        assert_eq!(policy.reserved_ppm(CpuId(0)), CPU_CAPACITY_PPM);
    }

    #[test]
    fn without_admission_control_an_overloaded_set_misses_deadlines() {
        // U = 0.5 + 0.4 + 0.3 = 1.2 on one CPU.
        let mut sim = Simulator::new(
            SimConfig::new(1).without_stall_detection(),
            Arc::new(Edf::without_admission_control(1)),
        );
        for (period, budget) in [(10, 5), (20, 8), (40, 12)] {
            add_periodic(&mut sim, 1, period * MILLISECOND, budget * MILLISECOND).unwrap();
        }
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        let misses: u64 = sim.strand_ids().map(|id| sim.deadline_misses(id)).sum();
        assert!(misses > 0, "an overloaded set cannot meet every deadline");
    }

    #[test]
    fn an_overrunning_strand_is_throttled_to_its_budget() {
        // A strand that declares 2 ms every 10 ms but computes forever gets
        // 20 % of the CPU; the background strand gets the rest.
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Edf::new(1)));
        let greedy = sim
            .add_strand(
                CpuSet::all(1),
                SchedParams::default().periodic(10 * MILLISECOND, 2 * MILLISECOND, 0),
                Workload::CpuBound,
            )
            .unwrap();
        let background = sim
            .add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        let greedy = sim.strand_statistics(greedy).cpu_time;
        assert!(
            greedy.abs_diff(200 * MILLISECOND) <= 10 * MILLISECOND,
            "greedy ran {greedy} ns"
        );
        assert!(sim.strand_statistics(background).cpu_time >= 780 * MILLISECOND);
    }

    #[test]
    fn periodic_strands_stay_on_their_home_cpu() {
        let mut sim = Simulator::new(SimConfig::new(2), Arc::new(Edf::new(2)));
        let ids: Vec<StrandId> = (0..4)
            .map(|_| add_periodic(&mut sim, 2, 10 * MILLISECOND, 4 * MILLISECOND).unwrap())
            .collect();
        sim.run_until(500 * MILLISECOND).unwrap();
        for id in ids {
            let statistics = sim.strand_statistics(id);
            assert_eq!(statistics.cpus_used.len(), 1, "{id} migrated");
            assert_eq!(sim.deadline_misses(id), 0);
        }
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(Edf::new(CPUS), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(|| Edf::new(CPUS));
    }

    #[test]
    fn a_directed_yield_keeps_deadline_order() {
        let cpus = 2;
        let policy = Edf::new(cpus);
        let at = |now: Nanoseconds, cpu: u16| Context::new(now, CpuId(cpu), cpus);
        let periodic = |index: u32, period: Nanoseconds| {
            StrandSpec::new(
                StrandId::new(index, 0),
                CpuSet::all(cpus),
                SchedParams::default().periodic(period, MILLISECOND, 0),
            )
        };
        let (yielder, near, far) = (
            periodic(0, 10 * MILLISECOND),
            periodic(1, 5 * MILLISECOND),
            periodic(2, 20 * MILLISECOND),
        );
        let background = StrandSpec::new(
            StrandId::new(3, 0),
            CpuSet::all(cpus),
            SchedParams::default(),
        );
        for strand in [&yielder, &near, &far, &background] {
            policy.strand_created(&at(0, 0), strand).unwrap();
        }
        // First fit homes the three periodic strands on CPU 0.
        policy.unblock(&at(0, 0), yielder.id, CpuId(0));
        assert_eq!(policy.pick_next(&at(0, 0)), Some(yielder.id));
        policy.resume(&at(0, 0), yielder.id);
        for strand in [&near, &far, &background] {
            policy.unblock(&at(0, 0), strand.id, CpuId(0));
        }
        // The yielder spends its whole budget: throttled until its deadline (10 ms).
        policy.checkpoint(
            &at(MILLISECOND, 0),
            yielder.id,
            CheckpointReason::Yielded,
            MILLISECOND,
        );
        let now = at(MILLISECOND, 0);
        assert!(
            !policy.take_for_directed_yield(&now, yielder.id),
            "throttled"
        );
        assert!(
            !policy.take_for_directed_yield(&now, far.id),
            "a later deadline while an earlier one waits"
        );
        assert!(
            !policy.take_for_directed_yield(&now, background.id),
            "background while deadline work waits"
        );
        assert!(
            !policy.take_for_directed_yield(&at(MILLISECOND, 1), near.id),
            "away from its home CPU"
        );
        assert!(
            policy.take_for_directed_yield(&now, near.id),
            "the earliest deadline"
        );
        policy.resume(&now, near.id);
        policy.checkpoint(
            &at(2 * MILLISECOND, 0),
            near.id,
            CheckpointReason::Blocked,
            MILLISECOND,
        );
        // Only `far` is eligible deadline work now; then the background may be taken.
        let later = at(2 * MILLISECOND, 0);
        assert!(policy.take_for_directed_yield(&later, far.id));
        policy.resume(&later, far.id);
        assert!(
            policy.take_for_directed_yield(&at(2 * MILLISECOND, 1), background.id),
            "background, pulled from CPU 0's queue to CPU 1"
        );
        assert_eq!(
            policy.pick_next(&at(2 * MILLISECOND, 0)),
            None,
            "the throttled yielder waits for its deadline"
        );
        assert_eq!(policy.pick_next(&at(10 * MILLISECOND, 0)), Some(yielder.id));
    }
}
