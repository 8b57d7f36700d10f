//! Central scheduling: an agent on CPU 0 decides for every CPU; the others only run what it put in their mailbox.
//!
//! Runnable strands wait in one global FIFO. The agent runs whenever CPU 0
//! calls `pick_next`, `tick` or `cpu_idle`: for every other CPU whose
//! single-slot mailbox is empty and that is idle, or has run its strand for a
//! full slice, it moves the oldest strand allowed there from the FIFO into
//! the mailbox and asks the kernel to wake that CPU. A non-central CPU's
//! `pick_next` only takes its mailbox, and its `tick` preempts only when the
//! agent has put something there: the decision is always the agent's.
//! Work that arrives from another CPU asks for CPU 0 to be woken, so the
//! agent sees it at once. CPU 0 takes its own strands straight from the FIFO;
//! on a one-CPU system the policy is simply a FIFO with a slice.
//!
//! The mailboxes are `crossbeam_queue::ArrayQueue`s of capacity one: a
//! non-central CPU's `pick_next` and `tick` take no lock. Only the agent
//! fills a mailbox, under the policy's lock, and only when it is empty, so a
//! push cannot fail; anything else that takes from a mailbox (withdrawing a
//! strand that blocked while assigned) holds the lock too.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use crossbeam_queue::ArrayQueue;
use spin::Mutex;

use super::{bounded_cpu_count, choose_cpu, remove_from, reserve_queues, usable_cpus};
use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, Refusal,
    StrandId, StrandSpec, StrandState, TickAction, NANOSECONDS_PER_MILLISECOND,
};

/// The policy's name in the catalogue.
pub const NAME: &str = "central";
/// The CPU that runs the agent.
pub const CENTRAL_CPU: CpuId = CpuId(0);
/// How long a strand runs before the agent may give its CPU to a waiting one.
pub const DEFAULT_SLICE: Nanoseconds = 10 * NANOSECONDS_PER_MILLISECOND;
/// Strands a mailbox holds.
const MAILBOX_SLOTS: usize = 1;

/// Where the policy keeps a strand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    Blocked,
    /// In the global FIFO.
    Waiting,
    /// In this CPU's mailbox, or just taken from it by that CPU.
    Assigned(CpuId),
    /// Taken from the FIFO by CPU 0, not yet resumed.
    Dispatched,
    Running(CpuId),
}

impl Position {
    fn state(self) -> StrandState {
        match self {
            Self::Blocked => StrandState::Blocked,
            Self::Waiting | Self::Assigned(_) | Self::Dispatched => StrandState::Runnable,
            Self::Running(cpu) => StrandState::Running(cpu),
        }
    }
}

/// What the policy knows of one strand.
struct Entry {
    spec: StrandSpec,
    position: Position,
    run_time: Nanoseconds,
}

/// The agent's view of one CPU.
#[derive(Clone, Copy, Default)]
struct CpuRecord {
    /// The running strand and when it was resumed.
    running: Option<(StrandId, Nanoseconds)>,
    /// Strands the agent has put in this CPU's mailbox, ever.
    assignments: u64,
}

/// Everything behind the policy's lock.
struct State {
    strands: BTreeMap<StrandId, Entry>,
    fifo: VecDeque<StrandId>,
    cpus: Vec<CpuRecord>,
    wakeups: CpuSet,
}

/// Central scheduling by an agent on CPU 0.
pub struct Central {
    slice: Nanoseconds,
    mailboxes: Vec<ArrayQueue<StrandId>>,
    state: Mutex<State>,
}

impl State {
    fn allowed_on(&self, strand: StrandId, cpu: CpuId) -> bool {
        self.strands
            .get(&strand)
            .is_some_and(|entry| entry.spec.affinity.contains(cpu))
    }

    /// Takes the oldest strand allowed on `cpu` out of the FIFO.
    fn take_waiting(&mut self, cpu: CpuId) -> Option<StrandId> {
        let position = self
            .fifo
            .iter()
            .position(|strand| self.allowed_on(*strand, cpu))?;
        self.fifo.remove(position)
    }

    fn set_position(&mut self, strand: StrandId, position: Position) {
        if let Some(entry) = self.strands.get_mut(&strand) {
            entry.position = position;
        }
    }
}

impl Central {
    /// Central scheduling for `cpu_count` CPUs with the default slice.
    pub fn new(cpu_count: u16) -> Self {
        let cpu_count = bounded_cpu_count(cpu_count);
        Self {
            slice: DEFAULT_SLICE,
            mailboxes: (0..cpu_count)
                .map(|_| ArrayQueue::new(MAILBOX_SLOTS))
                .collect(),
            state: Mutex::new(State {
                strands: BTreeMap::new(),
                fifo: VecDeque::new(),
                cpus: (0..cpu_count).map(|_| CpuRecord::default()).collect(),
                wakeups: CpuSet::empty(),
            }),
        }
    }

    /// Strands the agent has assigned to `cpu` so far.
    pub fn assignments(&self, cpu: CpuId) -> u64 {
        let state = self.state.lock();
        state
            .cpus
            .get(cpu.index())
            .map_or(0, |record| record.assignments)
    }

    /// The agent: fills the empty mailboxes of CPUs that are idle or past their slice.
    fn run_agent(&self, state: &mut State, now: Nanoseconds) {
        for (index, mailbox) in self.mailboxes.iter().enumerate().skip(1) {
            let cpu = CpuId(index as u16);
            let needs_work = match state.cpus[index].running {
                None => true,
                Some((_, since)) => now.saturating_sub(since) >= self.slice,
            };
            if !mailbox.is_empty() || !needs_work {
                continue;
            }
            let Some(strand) = state.take_waiting(cpu) else {
                continue;
            };
            if let Err(strand) = mailbox.push(strand) {
                // Unreachable: only the agent fills mailboxes, under the lock, when empty.
                state.fifo.push_front(strand);
                continue;
            }
            state.set_position(strand, Position::Assigned(cpu));
            state.cpus[index].assignments += 1;
            state.wakeups.insert(cpu);
        }
    }

    /// Takes a strand out of the FIFO or back out of a mailbox, wherever it waits.
    fn withdraw(&self, state: &mut State, strand: StrandId) {
        match state.strands.get(&strand).map(|entry| entry.position) {
            Some(Position::Waiting) => {
                remove_from(&mut state.fifo, |waiting| *waiting == strand);
            }
            Some(Position::Assigned(cpu)) => {
                // The mailbox holds the strand, or (if its CPU already took it)
                // nothing or a later assignment, which goes back.
                if let Some(mailbox) = self.mailboxes.get(cpu.index()) {
                    if let Some(found) = mailbox.pop() {
                        if found != strand {
                            let _ = mailbox.push(found);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Queues a runnable strand in the FIFO; work arriving from elsewhere wakes the agent.
    fn enqueue(&self, state: &mut State, strand: StrandId, from: CpuId) {
        state.fifo.push_back(strand);
        state.set_position(strand, Position::Waiting);
        if from != CENTRAL_CPU {
            state.wakeups.insert(CENTRAL_CPU);
        }
    }
}

impl Policy for Central {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, _ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if state.strands.contains_key(&strand.id) {
            return Err(Refusal("central: the strand already exists"));
        }
        state.strands.insert(
            strand.id,
            Entry {
                spec: *strand,
                position: Position::Blocked,
                run_time: 0,
            },
        );
        let strands = state.strands.len();
        reserve_queues(core::slice::from_mut(&mut state.fifo), strands);
        Ok(())
    }

    fn strand_exited(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        self.withdraw(&mut state, strand);
        for record in &mut state.cpus {
            if record.running.is_some_and(|(running, _)| running == strand) {
                record.running = None;
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
        // The agent places the strand; the kernel's wake-up goes to the agent.
        let cpu_count = self.mailboxes.len();
        if usable_cpus(cpu_count, allowed).contains(CENTRAL_CPU) {
            CENTRAL_CPU
        } else {
            choose_cpu(cpu_count, previous, allowed, |_| 0)
        }
    }

    fn unblock(&self, ctx: &Context, strand: StrandId, _cpu: CpuId) {
        let mut state = self.state.lock();
        let blocked = state
            .strands
            .get(&strand)
            .is_some_and(|entry| entry.position == Position::Blocked);
        if blocked {
            self.enqueue(&mut state, strand, ctx.cpu);
            // Wake the agent even when the call comes from CPU 0 itself: if it is
            // busy, the kernel runs its tick (and so the agent) at once.
            state.wakeups.insert(CENTRAL_CPU);
        }
    }

    fn block(&self, _ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        self.withdraw(&mut state, strand);
        state.set_position(strand, Position::Blocked);
    }

    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    ) {
        let mut state = self.state.lock();
        if let Some(record) = state.cpus.get_mut(ctx.cpu.index()) {
            if record.running.is_some_and(|(running, _)| running == strand) {
                record.running = None;
            }
        }
        let Some(entry) = state.strands.get_mut(&strand) else {
            return;
        };
        entry.run_time = entry.run_time.saturating_add(ran);
        if reason.still_runnable() && matches!(entry.position, Position::Running(_)) {
            self.enqueue(&mut state, strand, ctx.cpu);
        } else {
            entry.position = Position::Blocked;
        }
    }

    fn resume(&self, ctx: &Context, strand: StrandId) {
        let mut state = self.state.lock();
        self.withdraw(&mut state, strand);
        state.set_position(strand, Position::Running(ctx.cpu));
        if let Some(record) = state.cpus.get_mut(ctx.cpu.index()) {
            record.running = Some((strand, ctx.now));
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        if ctx.cpu != CENTRAL_CPU {
            // Lock-free: whatever the agent assigned, nothing else.
            return self.mailboxes.get(ctx.cpu.index())?.pop();
        }
        let mut state = self.state.lock();
        self.run_agent(&mut state, ctx.now);
        let strand = state.take_waiting(CENTRAL_CPU)?;
        state.set_position(strand, Position::Dispatched);
        Some(strand)
    }

    /// Refused: only the agent on CPU 0 decides which strand runs where.
    fn take_for_directed_yield(&self, _ctx: &Context, _strand: StrandId) -> bool {
        false
    }

    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        if ctx.cpu != CENTRAL_CPU {
            let assigned = self
                .mailboxes
                .get(ctx.cpu.index())
                .is_some_and(|mailbox| !mailbox.is_empty());
            return if current.is_some() && assigned {
                TickAction::Preempt
            } else {
                TickAction::Continue
            };
        }
        let mut state = self.state.lock();
        self.run_agent(&mut state, ctx.now);
        let waiting_here = state
            .fifo
            .iter()
            .any(|strand| state.allowed_on(*strand, CENTRAL_CPU));
        if current.is_some() && ran >= self.slice && waiting_here {
            TickAction::Preempt
        } else {
            TickAction::Continue
        }
    }

    fn cpu_idle(&self, ctx: &Context) {
        let mut state = self.state.lock();
        if ctx.cpu == CENTRAL_CPU {
            self.run_agent(&mut state, ctx.now);
        } else if state
            .fifo
            .iter()
            .any(|strand| state.allowed_on(*strand, ctx.cpu))
        {
            state.wakeups.insert(CENTRAL_CPU);
        }
    }

    fn export(&self, _ctx: &Context) -> Vec<ExportedStrand> {
        let state = self.state.lock();
        state
            .strands
            .values()
            .map(|entry| ExportedStrand {
                spec: entry.spec,
                state: entry.position.state(),
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
                return Err(Refusal("central: a strand is handed over twice"));
            }
        }
        for strand in &strands {
            let id = strand.spec.id;
            let position = match strand.state {
                StrandState::Blocked | StrandState::Runnable => Position::Blocked,
                StrandState::Running(cpu) => Position::Running(cpu),
            };
            state.strands.insert(
                id,
                Entry {
                    spec: strand.spec,
                    position,
                    run_time: strand.run_time,
                },
            );
            if let StrandState::Running(cpu) = strand.state {
                if let Some(record) = state.cpus.get_mut(cpu.index()) {
                    record.running = Some((id, ctx.now));
                }
            }
        }
        let total = state.strands.len();
        reserve_queues(core::slice::from_mut(&mut state.fifo), total);
        for strand in strands
            .iter()
            .filter(|strand| strand.state == StrandState::Runnable)
        {
            self.enqueue(&mut state, strand.spec.id, ctx.cpu);
        }
        state.wakeups.insert(CENTRAL_CPU);
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
    use crate::sim::{SimConfig, Simulator, Workload};
    use alloc::sync::Arc;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;

    #[test]
    fn other_cpus_take_only_what_the_agent_assigned() {
        let policy = Central::new(2);
        let on = |cpu: u16| Context::new(0, CpuId(cpu), 2);
        let spec = StrandSpec::new(
            StrandId::new(1, 0),
            CpuSet::single(CpuId(1)),
            SchedParams::default(),
        );
        policy.strand_created(&on(1), &spec).unwrap();
        assert_eq!(
            policy.select_cpu(&on(1), spec.id, None, &spec.affinity),
            CpuId(1)
        );
        policy.unblock(&on(1), spec.id, CpuId(1));
        assert!(
            policy.wants_wakeup(&on(1)).contains(CENTRAL_CPU),
            "new work wakes the agent"
        );
        // CPU 1 may not help itself from the FIFO.
        assert_eq!(policy.pick_next(&on(1)), None);
        // The agent runs on CPU 0's tick and assigns the strand to CPU 1.
        assert_eq!(policy.tick(&on(0), None, 0), TickAction::Continue);
        assert_eq!(policy.assignments(CpuId(1)), 1);
        assert_eq!(policy.wants_wakeup(&on(0)), CpuSet::single(CpuId(1)));
        assert_eq!(policy.pick_next(&on(1)), Some(spec.id));
    }

    #[test]
    fn a_strand_blocked_in_a_mailbox_is_withdrawn() {
        let policy = Central::new(2);
        let on = |cpu: u16| Context::new(0, CpuId(cpu), 2);
        let spec = StrandSpec::new(
            StrandId::new(1, 0),
            CpuSet::single(CpuId(1)),
            SchedParams::default(),
        );
        policy.strand_created(&on(0), &spec).unwrap();
        policy.unblock(&on(0), spec.id, CpuId(1));
        policy.cpu_idle(&on(0));
        assert_eq!(policy.assignments(CpuId(1)), 1);
        policy.block(&on(0), spec.id);
        assert_eq!(
            policy.pick_next(&on(1)),
            None,
            "the blocked strand left the mailbox"
        );
        assert_eq!(policy.export(&on(0))[0].state, StrandState::Blocked);
    }

    #[test]
    fn non_central_cpus_run_only_assigned_strands_and_everyone_progresses() {
        let cpu_count = 4;
        let policy = Arc::new(Central::new(cpu_count));
        let mut sim = Simulator::new(
            SimConfig::new(cpu_count).with_audit_interval(50 * MILLISECOND),
            policy.clone(),
        );
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(
                sim.add_strand(
                    CpuSet::all(cpu_count),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap(),
            );
        }
        for _ in 0..3 {
            let workload = Workload::ComputeSleep {
                compute: 2 * MILLISECOND,
                sleep: 3 * MILLISECOND,
            };
            ids.push(
                sim.add_strand(CpuSet::all(cpu_count), SchedParams::default(), workload)
                    .unwrap(),
            );
        }
        let duration = NANOSECONDS_PER_SECOND;
        sim.run_until(duration).unwrap();
        for cpu in 1..cpu_count {
            let dispatched = sim.cpu_statistics(CpuId(cpu)).dispatches;
            let assigned = policy.assignments(CpuId(cpu));
            assert!(dispatched > 0, "cpu {cpu} never ran anything");
            assert!(
                dispatched <= assigned && assigned <= dispatched + 1,
                "cpu {cpu} ran {dispatched} strands, the agent assigned {assigned}"
            );
        }
        for id in &ids {
            assert!(
                sim.strand_statistics(*id).cpu_time >= 50 * MILLISECOND,
                "{id} starved"
            );
        }
        // The agent keeps the machine busy: four CPUs, more than four CPU-bound strands.
        for cpu in 0..cpu_count {
            let idle = sim.cpu_statistics(CpuId(cpu)).idle_time;
            assert!(idle <= duration / 10, "cpu {cpu} idled {idle} ns");
        }
    }

    #[test]
    fn on_one_cpu_it_is_a_fifo_with_a_slice() {
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Central::new(1)));
        let ids: Vec<StrandId> = (0..3)
            .map(|_| {
                sim.add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
                    .unwrap()
            })
            .collect();
        sim.run_until(300 * MILLISECOND).unwrap();
        for id in ids {
            assert_eq!(sim.strand_statistics(id).cpu_time, 100 * MILLISECOND);
        }
    }

    #[test]
    fn directed_yields_are_refused_and_change_nothing() {
        let policy = Central::new(2);
        let on = |cpu: u16| Context::new(0, CpuId(cpu), 2);
        let waiting = StrandSpec::new(StrandId::new(1, 0), CpuSet::all(2), SchedParams::default());
        let assigned = StrandSpec::new(
            StrandId::new(2, 0),
            CpuSet::single(CpuId(1)),
            SchedParams::default(),
        );
        for spec in [&waiting, &assigned] {
            policy.strand_created(&on(0), spec).unwrap();
        }
        policy.unblock(&on(0), assigned.id, CpuId(1));
        policy.cpu_idle(&on(0));
        assert_eq!(policy.assignments(CpuId(1)), 1, "in CPU 1's mailbox");
        policy.unblock(&on(0), waiting.id, CpuId(0));
        for cpu in [0, 1] {
            for strand in [waiting.id, assigned.id] {
                assert!(!policy.take_for_directed_yield(&on(cpu), strand));
            }
        }
        assert_eq!(policy.pick_next(&on(1)), Some(assigned.id));
        policy.resume(&on(1), assigned.id);
        assert_eq!(policy.pick_next(&on(0)), Some(waiting.id));
    }
}
