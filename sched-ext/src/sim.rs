//! A deterministic simulator of several CPUs that drives a policy exactly as the kernel will and checks every decision.
//!
//! The simulator plays SPIN's trusted scheduler. It owns simulated CPUs, a
//! simulated clock and strands that follow a [`Workload`]; it raises the
//! Strand events on a [`Policy`] in the order of the call contract
//! ([`crate::interface`]): `select_cpu` then `unblock` on a wake-up, `block`
//! then `checkpoint(Blocked)` when a running strand sleeps, `tick` every
//! [`SimConfig::tick`] on every CPU and `checkpoint(Preempted)` when the tick
//! says so, `pick_next` then `resume` on a free CPU, `cpu_idle` when there is
//! nothing to run, and `wants_wakeup` after each of those. A strand with the
//! [`Workload::DirectedYield`] workload ends each burst with a directed
//! yield: `checkpoint(Yielded)`, then `take_for_directed_yield` for a strand
//! the seeded generator draws ([`SimConfig::seed`]), then `resume` of that
//! strand if the policy agrees, else `pick_next` as after any yield.
//!
//! Every pick, and every strand a policy agrees to take for a directed
//! yield, is checked (the strand exists, is runnable, is not running
//! elsewhere, may run on that CPU); a violation ends the run with a
//! [`SimError`] instead of a panic. The simulator also detects stalls
//! (a runnable strand not run for longer than [`SimConfig::stall_bound`]),
//! audits the policy's [`Policy::export`] against its own view (nothing lost,
//! duplicated or in the wrong state), and performs live swaps
//! ([`Simulator::swap_policy`]).
//!
//! Simultaneous events are handled in a fixed order (burst completions by
//! CPU, then strand starts, releases and wake-ups by strand, then ticks by
//! CPU), so a run is a pure function of its inputs.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::interface::{
    CheckpointReason, Context, CpuId, CpuSet, ExportedStrand, Nanoseconds, Policy, SchedParams,
    StrandId, StrandSpec, StrandState, TickAction, MAX_CPUS, NANOSECONDS_PER_MILLISECOND,
    NANOSECONDS_PER_SECOND,
};

/// The default timer tick: 1 ms.
pub const DEFAULT_TICK: Nanoseconds = NANOSECONDS_PER_MILLISECOND;
/// The default stall bound: a runnable strand must run within 1 s.
pub const DEFAULT_STALL_BOUND: Nanoseconds = NANOSECONDS_PER_SECOND;
/// The generation of every strand identity the simulator hands out.
pub const SIMULATED_GENERATION: u32 = 1;
/// The CPU that creates strands and performs swaps and audits.
pub const BOOT_CPU: CpuId = CpuId(0);
/// The default seed of the generator that draws directed-yield targets.
pub const DEFAULT_SEED: u64 = 0x5EED_5B1D_1E00_0001;
/// How many rounds of `wants_wakeup` the simulator follows after one call
/// before it stops asking (a policy that always wants more cannot loop it).
const MAX_WAKEUP_ROUNDS: usize = 8;

/// How the simulated machine is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of CPUs (1 to [`MAX_CPUS`]).
    pub cpu_count: u16,
    /// Interval between timer ticks on every CPU.
    pub tick: Nanoseconds,
    /// Longest a runnable strand may wait before the run fails with a stall; `None` disables the check.
    pub stall_bound: Option<Nanoseconds>,
    /// Interval between audits of the policy's export; `None` disables them.
    pub audit_interval: Option<Nanoseconds>,
    /// Seed of the generator that draws the targets of directed yields.
    pub seed: u64,
}

impl SimConfig {
    /// `cpu_count` CPUs, the default tick and stall bound, no periodic audits.
    pub fn new(cpu_count: u16) -> Self {
        Self {
            cpu_count: cpu_count.clamp(1, MAX_CPUS as u16),
            tick: DEFAULT_TICK,
            stall_bound: Some(DEFAULT_STALL_BOUND),
            audit_interval: None,
            seed: DEFAULT_SEED,
        }
    }

    /// This configuration with stall bound `bound`.
    pub fn with_stall_bound(mut self, bound: Nanoseconds) -> Self {
        self.stall_bound = Some(bound);
        self
    }

    /// This configuration without stall detection.
    pub fn without_stall_detection(mut self) -> Self {
        self.stall_bound = None;
        self
    }

    /// This configuration with an audit of the policy's export every `interval`.
    pub fn with_audit_interval(mut self, interval: Nanoseconds) -> Self {
        self.audit_interval = Some(interval.max(1));
        self
    }

    /// This configuration with `seed` for the targets of directed yields.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// What a simulated strand does when it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Computes forever, never blocks.
    CpuBound,
    /// Computes for `compute`, sleeps for `sleep`, and again, forever.
    ComputeSleep {
        /// CPU time of each burst.
        compute: Nanoseconds,
        /// Sleep after each burst.
        sleep: Nanoseconds,
    },
    /// A job of `execution` CPU time released every `period`, due
    /// `relative_deadline` after its release (0: at the end of the period).
    /// The strand sleeps between jobs; a job still unfinished at the next
    /// release makes the next one wait behind it.
    Periodic {
        /// Interval between releases (must be non-zero).
        period: Nanoseconds,
        /// CPU time each job needs.
        execution: Nanoseconds,
        /// Deadline relative to the release; 0 means the period.
        relative_deadline: Nanoseconds,
    },
    /// Computes for `compute`, then exits.
    Finite {
        /// CPU time before exiting.
        compute: Nanoseconds,
    },
    /// Computes for `compute`, then yields its CPU to another strand by
    /// name (a directed yield), and again, forever. The target is drawn by
    /// the simulator's seeded generator: half the time among the other
    /// runnable strands, else among all other strands, blocked, running,
    /// pinned elsewhere or exited ones included, which the policy must
    /// refuse.
    DirectedYield {
        /// CPU time of each burst.
        compute: Nanoseconds,
    },
}

/// What went wrong, as the trusted scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimErrorKind {
    /// `strand_created` refused the strand.
    CreateRefused {
        /// The strand.
        strand: StrandId,
        /// The policy's reason.
        reason: &'static str,
    },
    /// `pick_next` returned (or a directed yield took) a strand that does not exist (never given, or exited).
    UnknownStrand {
        /// The CPU that asked.
        cpu: CpuId,
        /// The strand returned.
        strand: StrandId,
    },
    /// `pick_next` returned (or a directed yield took) a blocked strand.
    NotRunnable {
        /// The CPU that asked.
        cpu: CpuId,
        /// The strand returned.
        strand: StrandId,
    },
    /// `pick_next` returned (or a directed yield took) a strand that is running on another CPU.
    RunningElsewhere {
        /// The CPU that asked.
        cpu: CpuId,
        /// The strand returned.
        strand: StrandId,
        /// Where it is running.
        elsewhere: CpuId,
    },
    /// `pick_next` returned (or a directed yield took) a strand whose affinity excludes the CPU.
    AffinityViolated {
        /// The CPU that asked.
        cpu: CpuId,
        /// The strand returned.
        strand: StrandId,
    },
    /// `select_cpu` chose a CPU outside the strand's affinity or offline.
    InvalidCpuChoice {
        /// The waking strand.
        strand: StrandId,
        /// The CPU chosen.
        cpu: CpuId,
    },
    /// A runnable strand waited longer than the stall bound.
    Stall {
        /// The strand.
        strand: StrandId,
        /// How long it has waited.
        waited: Nanoseconds,
    },
    /// The export lacks a live strand.
    LostStrand {
        /// The strand.
        strand: StrandId,
    },
    /// The export lists a strand twice.
    DuplicatedStrand {
        /// The strand.
        strand: StrandId,
    },
    /// The export lists a strand that does not exist (never given, or exited).
    ExportedUnknown {
        /// The strand.
        strand: StrandId,
    },
    /// The export reports a strand in the wrong state.
    StateMismatch {
        /// The strand.
        strand: StrandId,
        /// Its state as the simulator knows it.
        expected: StrandState,
        /// Its state as exported.
        exported: StrandState,
    },
    /// The export reports a run time other than the sum of the checkpoints' `ran`.
    RunTimeMismatch {
        /// The strand.
        strand: StrandId,
        /// The sum the simulator passed.
        expected: Nanoseconds,
        /// The run time exported.
        exported: Nanoseconds,
    },
    /// The new policy refused the hand-over; the old one stays in charge.
    ImportRefused {
        /// The new policy's reason.
        reason: &'static str,
    },
}

/// A violation found by the simulator: when, under which policy, and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimError {
    /// Simulated time of the violation.
    pub time: Nanoseconds,
    /// The policy in charge.
    pub policy: &'static str,
    /// What happened.
    pub kind: SimErrorKind,
}

impl fmt::Display for SimError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "at {} ns under {}: ", self.time, self.policy)?;
        match self.kind {
            SimErrorKind::CreateRefused { strand, reason } => {
                write!(formatter, "{strand} refused: {reason}")
            }
            SimErrorKind::UnknownStrand { cpu, strand } => {
                write!(formatter, "{cpu} was given unknown {strand}")
            }
            SimErrorKind::NotRunnable { cpu, strand } => {
                write!(formatter, "{cpu} was given blocked {strand}")
            }
            SimErrorKind::RunningElsewhere {
                cpu,
                strand,
                elsewhere,
            } => write!(
                formatter,
                "{cpu} was given {strand}, running on {elsewhere}"
            ),
            SimErrorKind::AffinityViolated { cpu, strand } => {
                write!(
                    formatter,
                    "{cpu} was given {strand}, which may not run there"
                )
            }
            SimErrorKind::InvalidCpuChoice { strand, cpu } => {
                write!(formatter, "{strand} may not wake on {cpu}")
            }
            SimErrorKind::Stall { strand, waited } => {
                write!(formatter, "runnable {strand} waited {waited} ns")
            }
            SimErrorKind::LostStrand { strand } => {
                write!(formatter, "{strand} missing from the export")
            }
            SimErrorKind::DuplicatedStrand { strand } => {
                write!(formatter, "{strand} exported twice")
            }
            SimErrorKind::ExportedUnknown { strand } => {
                write!(formatter, "unknown {strand} exported")
            }
            SimErrorKind::StateMismatch {
                strand,
                expected,
                exported,
            } => write!(
                formatter,
                "{strand} exported as {exported:?}, is {expected:?}"
            ),
            SimErrorKind::RunTimeMismatch {
                strand,
                expected,
                exported,
            } => write!(
                formatter,
                "{strand} exported run time {exported} ns, ran {expected} ns"
            ),
            SimErrorKind::ImportRefused { reason } => write!(formatter, "import refused: {reason}"),
        }
    }
}

/// What the simulator measured for one strand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrandStatistics {
    /// CPU time received, including the current stint.
    pub cpu_time: Nanoseconds,
    /// Times it was put on a CPU.
    pub dispatches: u64,
    /// Dispatches on a CPU other than the one it ran on before.
    pub migrations: u64,
    /// When it first ran.
    pub first_run: Option<Nanoseconds>,
    /// The longest it waited, runnable, for a CPU.
    pub longest_wait: Nanoseconds,
    /// Periodic jobs completed.
    pub completed_jobs: u64,
    /// Periodic jobs completed after their deadline.
    pub late_jobs: u64,
    /// Every CPU it ran on.
    pub cpus_used: CpuSet,
    /// Whether it has exited.
    pub exited: bool,
}

/// What the simulator measured for one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStatistics {
    /// Strands put on the CPU.
    pub dispatches: u64,
    /// Dispatches of a strand other than the one that ran there last.
    pub context_switches: u64,
    /// Time spent running strands.
    pub busy_time: Nanoseconds,
    /// Time spent idle.
    pub idle_time: Nanoseconds,
}

/// Where a simulated strand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created; first unblocked at `start`.
    Pending {
        start: Nanoseconds,
    },
    Blocked,
    Runnable {
        since: Nanoseconds,
    },
    Running {
        cpu: CpuId,
        since: Nanoseconds,
    },
    Exited,
}

/// One simulated strand.
struct SimStrand {
    spec: StrandSpec,
    workload: Workload,
    phase: Phase,
    /// CPU time left in the current burst; `None` is unbounded.
    remaining: Option<Nanoseconds>,
    /// When a sleeping strand wakes.
    wake_at: Option<Nanoseconds>,
    /// A periodic strand's next release.
    next_release: Option<Nanoseconds>,
    /// Deadlines of released, unfinished jobs, oldest first.
    job_deadlines: VecDeque<Nanoseconds>,
    /// Sum of `ran` over the checkpoints raised for the strand.
    accounted: Nanoseconds,
    last_cpu: Option<CpuId>,
    statistics: StrandStatistics,
}

/// One simulated CPU.
#[derive(Default)]
struct SimCpu {
    /// Index of the running strand.
    current: Option<usize>,
    /// Index of the strand that ran last.
    last: Option<usize>,
    statistics: CpuStatistics,
}

/// N simulated CPUs, a simulated clock and strands, under one policy at a time.
pub struct Simulator {
    config: SimConfig,
    policy: Arc<dyn Policy>,
    now: Nanoseconds,
    next_tick: Nanoseconds,
    next_audit: Option<Nanoseconds>,
    strands: Vec<SimStrand>,
    cpus: Vec<SimCpu>,
    swaps: u64,
    /// The state of the generator that draws directed-yield targets.
    random: u64,
    /// Directed yields the policy agreed to.
    directed_yields_taken: u64,
    /// Directed yields the policy refused.
    directed_yields_refused: u64,
}

/// A short-lived result inside the simulator.
type Outcome<T = ()> = Result<T, SimError>;

impl Simulator {
    /// A machine set up as `config`, scheduled by `policy`, at time 0.
    pub fn new(config: SimConfig, policy: Arc<dyn Policy>) -> Self {
        let config = SimConfig {
            cpu_count: config.cpu_count.clamp(1, MAX_CPUS as u16),
            tick: config.tick.max(1),
            ..config
        };
        Self {
            config,
            policy,
            now: 0,
            next_tick: config.tick.max(1),
            next_audit: config.audit_interval,
            strands: Vec::new(),
            cpus: (0..config.cpu_count).map(|_| SimCpu::default()).collect(),
            swaps: 0,
            random: config.seed,
            directed_yields_taken: 0,
            directed_yields_refused: 0,
        }
    }

    /// Creates a strand now (`strand_created` on the boot CPU); it first wakes now.
    pub fn add_strand(
        &mut self,
        affinity: CpuSet,
        params: SchedParams,
        workload: Workload,
    ) -> Outcome<StrandId> {
        self.add_strand_at(self.now, affinity, params, workload)
    }

    /// Creates a strand now (`strand_created` on the boot CPU); it first
    /// wakes at `start` (not before now).
    pub fn add_strand_at(
        &mut self,
        start: Nanoseconds,
        affinity: CpuSet,
        params: SchedParams,
        workload: Workload,
    ) -> Outcome<StrandId> {
        let index = u32::try_from(self.strands.len()).unwrap_or(u32::MAX);
        let id = StrandId::new(index, SIMULATED_GENERATION);
        let spec = StrandSpec::new(id, affinity, params);
        let refusal = self.policy.strand_created(&self.context(BOOT_CPU), &spec);
        let phase = match refusal {
            Ok(()) => Phase::Pending {
                start: start.max(self.now),
            },
            // Identities are never reused, so a refused strand keeps its slot, as exited.
            Err(_) => Phase::Exited,
        };
        self.strands.push(SimStrand {
            spec,
            workload,
            phase,
            remaining: None,
            wake_at: None,
            next_release: None,
            job_deadlines: VecDeque::new(),
            accounted: 0,
            last_cpu: None,
            statistics: StrandStatistics::default(),
        });
        match refusal {
            Ok(()) => Ok(id),
            Err(refusal) => Err(self.error(SimErrorKind::CreateRefused {
                strand: id,
                reason: refusal.0,
            })),
        }
    }

    /// Runs until simulated time `end`, or the first violation.
    pub fn run_until(&mut self, end: Nanoseconds) -> Outcome {
        loop {
            let next = self.next_event_time();
            if next > end {
                self.advance(end);
                return Ok(());
            }
            self.advance(next);
            self.process_instant()?;
        }
    }

    /// Runs for `duration` more simulated time.
    pub fn run_for(&mut self, duration: Nanoseconds) -> Outcome {
        self.run_until(self.now.saturating_add(duration))
    }

    /// Live swap, now: exports the strands from the current policy, checks
    /// the export, imports them into `replacement`, checks the replacement's
    /// own export, and continues under it. On a refused import the current
    /// policy stays in charge (and the refusal is returned).
    pub fn swap_policy(&mut self, replacement: Arc<dyn Policy>) -> Outcome {
        let ctx = self.context(BOOT_CPU);
        let exported = self.policy.export(&ctx);
        self.check_export(&exported)?;
        if let Err(refusal) = replacement.import(&ctx, exported) {
            return Err(self.error(SimErrorKind::ImportRefused { reason: refusal.0 }));
        }
        self.policy = replacement;
        self.swaps += 1;
        self.audit()?;
        for cpu in 0..self.cpus.len() {
            if self.cpus[cpu].current.is_none() {
                self.reschedule(cpu_id(cpu))?;
            }
        }
        self.handle_wakeups(BOOT_CPU)
    }

    /// Runs until `time`, then swaps to `replacement` live (see [`swap_policy`](Self::swap_policy)).
    pub fn swap_at(&mut self, time: Nanoseconds, replacement: Arc<dyn Policy>) -> Outcome {
        self.run_until(time)?;
        self.swap_policy(replacement)
    }

    /// Checks the policy's export against the simulator's view now.
    pub fn audit(&mut self) -> Outcome {
        let exported = self.policy.export(&self.context(BOOT_CPU));
        self.check_export(&exported)
    }

    /// The simulated time.
    pub fn now(&self) -> Nanoseconds {
        self.now
    }

    /// The name of the policy in charge.
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// Live swaps performed.
    pub fn swaps(&self) -> u64 {
        self.swaps
    }

    /// The identities of every strand added, in order (including refused and exited ones).
    pub fn strand_ids(&self) -> impl Iterator<Item = StrandId> + '_ {
        self.strands.iter().map(|strand| strand.spec.id)
    }

    /// What was measured for `strand` (all zero for an identity the simulator never gave).
    pub fn strand_statistics(&self, strand: StrandId) -> StrandStatistics {
        self.lookup(strand)
            .map(|index| self.strands[index].statistics)
            .unwrap_or_default()
    }

    /// Periodic jobs of `strand` that missed their deadline: completed late,
    /// or released, unfinished and already overdue.
    pub fn deadline_misses(&self, strand: StrandId) -> u64 {
        self.lookup(strand).map_or(0, |index| {
            let strand = &self.strands[index];
            let overdue = strand
                .job_deadlines
                .iter()
                .filter(|deadline| **deadline < self.now)
                .count();
            strand.statistics.late_jobs + overdue as u64
        })
    }

    /// What was measured for `cpu`.
    pub fn cpu_statistics(&self, cpu: CpuId) -> CpuStatistics {
        self.cpus
            .get(cpu.index())
            .map(|cpu| cpu.statistics)
            .unwrap_or_default()
    }

    /// Migrations of all strands.
    pub fn total_migrations(&self) -> u64 {
        self.strands
            .iter()
            .map(|strand| strand.statistics.migrations)
            .sum()
    }

    /// Directed yields the policy agreed to, so far.
    pub fn directed_yields_taken(&self) -> u64 {
        self.directed_yields_taken
    }

    /// Directed yields the policy refused (and so ran `pick_next` instead), so far.
    pub fn directed_yields_refused(&self) -> u64 {
        self.directed_yields_refused
    }

    /// Context switches on all CPUs.
    pub fn total_context_switches(&self) -> u64 {
        self.cpus
            .iter()
            .map(|cpu| cpu.statistics.context_switches)
            .sum()
    }

    /// The strand running on `cpu`.
    pub fn running_on(&self, cpu: CpuId) -> Option<StrandId> {
        let index = self.cpus.get(cpu.index())?.current?;
        Some(self.strands[index].spec.id)
    }

    fn context(&self, cpu: CpuId) -> Context {
        Context::new(self.now, cpu, self.config.cpu_count)
    }

    fn error(&self, kind: SimErrorKind) -> SimError {
        SimError {
            time: self.now,
            policy: self.policy.name(),
            kind,
        }
    }

    /// The index of a strand the simulator gave out.
    fn lookup(&self, strand: StrandId) -> Option<usize> {
        let index = usize::try_from(strand.index()).ok()?;
        (strand.generation() == SIMULATED_GENERATION && index < self.strands.len()).then_some(index)
    }

    fn next_event_time(&self) -> Nanoseconds {
        let mut next = self.next_tick;
        if let Some(audit) = self.next_audit {
            next = next.min(audit);
        }
        for cpu in &self.cpus {
            if let Some(remaining) = cpu.current.and_then(|index| self.strands[index].remaining) {
                next = next.min(self.now.saturating_add(remaining));
            }
        }
        for strand in &self.strands {
            if let Phase::Pending { start } = strand.phase {
                next = next.min(start);
            }
            if let Some(wake) = strand.wake_at {
                next = next.min(wake);
            }
            if let Some(release) = strand.next_release {
                next = next.min(release);
            }
        }
        next
    }

    /// Moves the clock to `to`, charging running strands.
    fn advance(&mut self, to: Nanoseconds) {
        let delta = to.saturating_sub(self.now);
        if delta == 0 {
            return;
        }
        for cpu in &mut self.cpus {
            match cpu.current {
                Some(index) => {
                    let strand = &mut self.strands[index];
                    strand.statistics.cpu_time += delta;
                    if let Some(remaining) = &mut strand.remaining {
                        *remaining = remaining.saturating_sub(delta);
                    }
                    cpu.statistics.busy_time += delta;
                }
                None => cpu.statistics.idle_time += delta,
            }
        }
        self.now = to;
    }

    /// Handles everything due now, in the fixed order.
    fn process_instant(&mut self) -> Outcome {
        for cpu in 0..self.cpus.len() {
            let finished = self.cpus[cpu]
                .current
                .filter(|index| self.strands[*index].remaining == Some(0));
            if let Some(index) = finished {
                self.complete_burst(cpu_id(cpu), index)?;
            }
        }
        for index in 0..self.strands.len() {
            self.start_release_or_wake(index)?;
        }
        if self.now >= self.next_tick {
            for cpu in 0..self.cpus.len() {
                self.tick_cpu(cpu_id(cpu))?;
                self.handle_wakeups(cpu_id(cpu))?;
            }
            self.check_stalls()?;
            self.next_tick = self.now + self.config.tick;
        }
        if let Some(audit) = self.next_audit {
            if self.now >= audit {
                self.audit()?;
                self.next_audit = self
                    .config
                    .audit_interval
                    .map(|interval| self.now + interval);
            }
        }
        Ok(())
    }

    fn start_release_or_wake(&mut self, index: usize) -> Outcome {
        let strand = &mut self.strands[index];
        if let Phase::Pending { start } = strand.phase {
            if start > self.now {
                return Ok(());
            }
            strand.phase = Phase::Blocked;
            match strand.workload {
                Workload::Periodic { .. } => strand.next_release = Some(self.now),
                Workload::CpuBound => return self.wake(index, None),
                Workload::ComputeSleep { compute, .. }
                | Workload::Finite { compute }
                | Workload::DirectedYield { compute } => return self.wake(index, Some(compute)),
            }
        }
        let strand = &mut self.strands[index];
        if let (
            Some(release),
            Workload::Periodic {
                period,
                execution,
                relative_deadline,
            },
        ) = (strand.next_release, strand.workload)
        {
            if release <= self.now {
                let deadline = if relative_deadline == 0 {
                    period
                } else {
                    relative_deadline
                };
                strand
                    .job_deadlines
                    .push_back(release.saturating_add(deadline));
                strand.next_release = Some(release.saturating_add(period.max(1)));
                if strand.phase == Phase::Blocked {
                    return self.wake(index, Some(execution));
                }
            }
            return Ok(());
        }
        if strand.wake_at.is_some_and(|wake| wake <= self.now) {
            strand.wake_at = None;
            let burst = match strand.workload {
                Workload::ComputeSleep { compute, .. } => Some(compute),
                _ => None,
            };
            return self.wake(index, burst);
        }
        Ok(())
    }

    /// Wakes a blocked strand with a burst of `burst` CPU time: `select_cpu` then `unblock`.
    fn wake(&mut self, index: usize, burst: Option<Nanoseconds>) -> Outcome {
        let strand = &self.strands[index];
        let (id, affinity, previous) = (strand.spec.id, strand.spec.affinity, strand.last_cpu);
        // The waker runs where the strand last ran (its timer was armed there).
        let waker = previous.unwrap_or(BOOT_CPU);
        let ctx = self.context(waker);
        let cpu = self.policy.select_cpu(&ctx, id, previous, &affinity);
        if !affinity.contains(cpu) || cpu.index() >= self.cpus.len() {
            return Err(self.error(SimErrorKind::InvalidCpuChoice { strand: id, cpu }));
        }
        self.policy.unblock(&ctx, id, cpu);
        let strand = &mut self.strands[index];
        strand.remaining = burst;
        strand.phase = Phase::Runnable { since: self.now };
        if self.cpus[cpu.index()].current.is_none() {
            self.reschedule(cpu)?;
        }
        self.handle_wakeups(waker)
    }

    /// The running strand on `cpu` finished its current burst.
    fn complete_burst(&mut self, cpu: CpuId, index: usize) -> Outcome {
        let strand = &mut self.strands[index];
        match strand.workload {
            Workload::CpuBound => return Ok(()),
            Workload::ComputeSleep { sleep, .. } => {
                strand.wake_at = Some(self.now.saturating_add(sleep));
                self.block_running(cpu, index);
            }
            Workload::Finite { .. } => self.exit_running(cpu, index),
            Workload::DirectedYield { compute } => {
                strand.remaining = Some(compute);
                return self.directed_yield(cpu, index);
            }
            Workload::Periodic { execution, .. } => {
                if let Some(deadline) = strand.job_deadlines.pop_front() {
                    strand.statistics.completed_jobs += 1;
                    if self.now > deadline {
                        strand.statistics.late_jobs += 1;
                    }
                }
                if strand.job_deadlines.is_empty() {
                    self.block_running(cpu, index);
                } else {
                    strand.remaining = Some(execution);
                    return Ok(());
                }
            }
        }
        self.reschedule(cpu)?;
        self.handle_wakeups(cpu)
    }

    /// The stint of the strand running on `cpu` so far.
    fn stint(&self, index: usize) -> Nanoseconds {
        match self.strands[index].phase {
            Phase::Running { since, .. } => self.now - since,
            _ => 0,
        }
    }

    /// Takes the running strand off `cpu` for `reason`, after `checkpoint`.
    fn take_off(&mut self, cpu: CpuId, index: usize, reason: CheckpointReason) {
        let ran = self.stint(index);
        let id = self.strands[index].spec.id;
        self.policy.checkpoint(&self.context(cpu), id, reason, ran);
        let strand = &mut self.strands[index];
        strand.accounted += ran;
        strand.phase = match reason {
            CheckpointReason::Preempted | CheckpointReason::Yielded => {
                Phase::Runnable { since: self.now }
            }
            CheckpointReason::Blocked => Phase::Blocked,
            CheckpointReason::Exited => Phase::Exited,
        };
        self.cpus[cpu.index()].current = None;
    }

    fn block_running(&mut self, cpu: CpuId, index: usize) {
        let id = self.strands[index].spec.id;
        self.policy.block(&self.context(cpu), id);
        self.take_off(cpu, index, CheckpointReason::Blocked);
        self.strands[index].remaining = None;
    }

    fn exit_running(&mut self, cpu: CpuId, index: usize) {
        let id = self.strands[index].spec.id;
        self.take_off(cpu, index, CheckpointReason::Exited);
        self.policy.strand_exited(&self.context(cpu), id);
        let strand = &mut self.strands[index];
        strand.remaining = None;
        strand.statistics.exited = true;
    }

    /// The strand running on `cpu` yields it to a strand drawn by the
    /// generator: `checkpoint(Yielded)`, then `take_for_directed_yield`;
    /// a strand the policy agrees to take is checked like a pick and
    /// resumed, a refusal leads to `pick_next` as after any yield.
    fn directed_yield(&mut self, cpu: CpuId, index: usize) -> Outcome {
        self.take_off(cpu, index, CheckpointReason::Yielded);
        let Some(target) = self.yield_target(index) else {
            self.reschedule(cpu)?;
            return self.handle_wakeups(cpu);
        };
        if self
            .policy
            .take_for_directed_yield(&self.context(cpu), target)
        {
            self.directed_yields_taken += 1;
            self.dispatch(cpu, target)?;
        } else {
            self.directed_yields_refused += 1;
            self.reschedule(cpu)?;
        }
        self.handle_wakeups(cpu)
    }

    /// A strand other than `yielder` to yield to: with an even draw one of
    /// the runnable ones (if any), else any of them, in whatever phase.
    fn yield_target(&mut self, yielder: usize) -> Option<StrandId> {
        let draw = self.next_random();
        let others = || (0..self.strands.len()).filter(move |index| *index != yielder);
        let runnable = |index: &usize| matches!(self.strands[*index].phase, Phase::Runnable { .. });
        let runnable_count = others().filter(runnable).count();
        let pick = (draw >> 1) as usize;
        let index = if draw & 1 == 0 && runnable_count > 0 {
            others().filter(runnable).nth(pick % runnable_count)
        } else {
            let count = others().count();
            others().nth(pick % count.max(1))
        }?;
        Some(self.strands[index].spec.id)
    }

    /// The next number from the seeded generator (SplitMix64).
    fn next_random(&mut self) -> u64 {
        self.random = self.random.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.random;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A free `cpu` asks for work: `pick_next`, checked, then `resume`; or `cpu_idle`.
    fn reschedule(&mut self, cpu: CpuId) -> Outcome {
        let ctx = self.context(cpu);
        let Some(id) = self.policy.pick_next(&ctx) else {
            self.policy.cpu_idle(&ctx);
            return Ok(());
        };
        self.dispatch(cpu, id)
    }

    /// Puts `id`, handed over by the policy, on the free `cpu`: checked, then `resume`.
    fn dispatch(&mut self, cpu: CpuId, id: StrandId) -> Outcome {
        let ctx = self.context(cpu);
        let index = self.check_pick(cpu, id)?;
        self.policy.resume(&ctx, id);
        let now = self.now;
        let strand = &mut self.strands[index];
        let statistics = &mut strand.statistics;
        if let Phase::Runnable { since } = strand.phase {
            statistics.longest_wait = statistics.longest_wait.max(now - since);
        }
        statistics.dispatches += 1;
        statistics.first_run.get_or_insert(now);
        if strand.last_cpu.is_some_and(|last| last != cpu) {
            statistics.migrations += 1;
        }
        statistics.cpus_used.insert(cpu);
        strand.last_cpu = Some(cpu);
        strand.phase = Phase::Running { cpu, since: now };
        let simulated = &mut self.cpus[cpu.index()];
        simulated.statistics.dispatches += 1;
        if simulated.last != Some(index) {
            simulated.statistics.context_switches += 1;
        }
        simulated.last = Some(index);
        simulated.current = Some(index);
        Ok(())
    }

    /// The trusted scheduler's check of a pick.
    fn check_pick(&self, cpu: CpuId, strand: StrandId) -> Outcome<usize> {
        let Some(index) = self.lookup(strand) else {
            return Err(self.error(SimErrorKind::UnknownStrand { cpu, strand }));
        };
        let simulated = &self.strands[index];
        match simulated.phase {
            Phase::Runnable { .. } => {}
            Phase::Running { cpu: elsewhere, .. } => {
                return Err(self.error(SimErrorKind::RunningElsewhere {
                    cpu,
                    strand,
                    elsewhere,
                }))
            }
            Phase::Exited => return Err(self.error(SimErrorKind::UnknownStrand { cpu, strand })),
            Phase::Pending { .. } | Phase::Blocked => {
                return Err(self.error(SimErrorKind::NotRunnable { cpu, strand }))
            }
        }
        if !simulated.spec.affinity.contains(cpu) {
            return Err(self.error(SimErrorKind::AffinityViolated { cpu, strand }));
        }
        Ok(index)
    }

    /// The timer tick on `cpu`.
    fn tick_cpu(&mut self, cpu: CpuId) -> Outcome {
        let ctx = self.context(cpu);
        match self.cpus[cpu.index()].current {
            Some(index) => {
                let id = self.strands[index].spec.id;
                if self.policy.tick(&ctx, Some(id), self.stint(index)) == TickAction::Preempt {
                    self.take_off(cpu, index, CheckpointReason::Preempted);
                    self.reschedule(cpu)?;
                }
                Ok(())
            }
            None => {
                // The tick wakes an idle CPU from its halt; it looks for work again.
                self.policy.tick(&ctx, None, 0);
                self.reschedule(cpu)
            }
        }
    }

    /// Follows the policy's `wants_wakeup` after a call made on `from`.
    fn handle_wakeups(&mut self, from: CpuId) -> Outcome {
        for _ in 0..MAX_WAKEUP_ROUNDS {
            let online = CpuSet::all(self.config.cpu_count);
            let wanted = self
                .policy
                .wants_wakeup(&self.context(from))
                .intersection(&online);
            if wanted.is_empty() {
                break;
            }
            for cpu in wanted.iter() {
                match self.cpus[cpu.index()].current {
                    None => self.reschedule(cpu)?,
                    Some(_) => self.tick_cpu(cpu)?,
                }
            }
        }
        Ok(())
    }

    fn check_stalls(&self) -> Outcome {
        let Some(bound) = self.config.stall_bound else {
            return Ok(());
        };
        for strand in &self.strands {
            if let Phase::Runnable { since } = strand.phase {
                let waited = self.now - since;
                if waited > bound {
                    return Err(self.error(SimErrorKind::Stall {
                        strand: strand.spec.id,
                        waited,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Compares an export with the simulator's view: every live strand exactly
    /// once, in the right state, with the right run time.
    fn check_export(&self, exported: &[ExportedStrand]) -> Outcome {
        let mut seen = vec![false; self.strands.len()];
        for entry in exported {
            let strand = entry.spec.id;
            let Some(index) = self.lookup(strand) else {
                return Err(self.error(SimErrorKind::ExportedUnknown { strand }));
            };
            let simulated = &self.strands[index];
            let expected = match simulated.phase {
                Phase::Pending { .. } | Phase::Blocked => StrandState::Blocked,
                Phase::Runnable { .. } => StrandState::Runnable,
                Phase::Running { cpu, .. } => StrandState::Running(cpu),
                Phase::Exited => return Err(self.error(SimErrorKind::ExportedUnknown { strand })),
            };
            if core::mem::replace(&mut seen[index], true) {
                return Err(self.error(SimErrorKind::DuplicatedStrand { strand }));
            }
            if entry.state != expected {
                return Err(self.error(SimErrorKind::StateMismatch {
                    strand,
                    expected,
                    exported: entry.state,
                }));
            }
            if entry.run_time != simulated.accounted {
                return Err(self.error(SimErrorKind::RunTimeMismatch {
                    strand,
                    expected: simulated.accounted,
                    exported: entry.run_time,
                }));
            }
        }
        for (index, strand) in self.strands.iter().enumerate() {
            if strand.phase != Phase::Exited && !seen[index] {
                return Err(self.error(SimErrorKind::LostStrand {
                    strand: strand.spec.id,
                }));
            }
        }
        Ok(())
    }
}

/// The CPU with index `index` (always below [`MAX_CPUS`] here).
fn cpu_id(index: usize) -> CpuId {
    CpuId(u16::try_from(index).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::rr::RoundRobin;

    const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;

    fn round_robin(cpu_count: u16) -> Simulator {
        Simulator::new(
            SimConfig::new(cpu_count),
            Arc::new(RoundRobin::new(cpu_count)),
        )
    }

    #[test]
    fn cpu_time_is_conserved_and_workloads_are_followed() {
        let mut sim = round_robin(2);
        let bound = sim
            .add_strand(CpuSet::all(2), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        let sleeper = sim
            .add_strand(
                CpuSet::all(2),
                SchedParams::default(),
                Workload::ComputeSleep {
                    compute: 2 * MILLISECOND,
                    sleep: 8 * MILLISECOND,
                },
            )
            .unwrap();
        let finite = sim
            .add_strand(
                CpuSet::all(2),
                SchedParams::default(),
                Workload::Finite {
                    compute: 30 * MILLISECOND,
                },
            )
            .unwrap();
        let periodic = sim
            .add_strand(
                CpuSet::all(2),
                SchedParams::default(),
                Workload::Periodic {
                    period: 10 * MILLISECOND,
                    execution: MILLISECOND,
                    relative_deadline: 0,
                },
            )
            .unwrap();
        let end = 200 * MILLISECOND;
        sim.run_until(end).unwrap();
        let total: Nanoseconds = [bound, sleeper, finite, periodic]
            .iter()
            .map(|id| sim.strand_statistics(*id).cpu_time)
            .sum();
        let busy: Nanoseconds = (0..2)
            .map(|cpu| sim.cpu_statistics(CpuId(cpu)).busy_time)
            .sum();
        let idle: Nanoseconds = (0..2)
            .map(|cpu| sim.cpu_statistics(CpuId(cpu)).idle_time)
            .sum();
        assert_eq!(total, busy, "CPU time handed out equals CPU time used");
        assert_eq!(busy + idle, 2 * end);
        assert_eq!(sim.strand_statistics(finite).cpu_time, 30 * MILLISECOND);
        assert!(sim.strand_statistics(finite).exited);
        // A 2 ms burst every 10 ms at most: 20 bursts in 200 ms.
        assert!(sim.strand_statistics(sleeper).cpu_time <= 40 * MILLISECOND);
        assert!(sim.strand_statistics(sleeper).cpu_time >= 30 * MILLISECOND);
        assert!(sim.strand_statistics(periodic).completed_jobs >= 19);
        sim.audit().unwrap();
    }

    #[test]
    fn a_swap_hands_every_strand_over_once() {
        let mut sim = round_robin(2);
        for _ in 0..5 {
            sim.add_strand(CpuSet::all(2), SchedParams::default(), Workload::CpuBound)
                .unwrap();
        }
        sim.swap_at(35 * MILLISECOND, Arc::new(RoundRobin::new(2)))
            .unwrap();
        sim.run_until(70 * MILLISECOND).unwrap();
        assert_eq!(sim.swaps(), 1);
        let total: Nanoseconds = sim
            .strand_ids()
            .map(|id| sim.strand_statistics(id).cpu_time)
            .sum();
        assert_eq!(total, 2 * 70 * MILLISECOND);
    }

    /// Strands that directed-yield (one pinned to CPU 1) among CPU-bound,
    /// sleeping and finite ones, on two CPUs, for a second.
    fn run_directed_yields(policy: Arc<dyn Policy>, seed: u64) -> Outcome<Simulator> {
        let config = SimConfig::new(2)
            .with_stall_bound(300 * MILLISECOND)
            .with_audit_interval(5 * MILLISECOND)
            .with_seed(seed);
        let mut sim = Simulator::new(config, policy);
        let all = CpuSet::all(2);
        let default = SchedParams::default();
        for compute in [MILLISECOND / 2, MILLISECOND, 3 * MILLISECOND] {
            sim.add_strand(all, default, Workload::DirectedYield { compute })?;
        }
        let pinned = Workload::DirectedYield {
            compute: 2 * MILLISECOND,
        };
        sim.add_strand(CpuSet::single(CpuId(1)), default, pinned)?;
        sim.add_strand(all, default, Workload::CpuBound)?;
        let sleepy = Workload::ComputeSleep {
            compute: 2 * MILLISECOND,
            sleep: 3 * MILLISECOND,
        };
        sim.add_strand(all, default, sleepy)?;
        let finite = Workload::Finite {
            compute: 20 * MILLISECOND,
        };
        sim.add_strand(all, default, finite)?;
        sim.run_until(NANOSECONDS_PER_SECOND)?;
        Ok(sim)
    }

    #[test]
    fn directed_yields_are_checked_under_every_policy() {
        for info in crate::catalogue() {
            for seed in [DEFAULT_SEED, 1, 2] {
                let sim = run_directed_yields(Arc::from((info.create)(2)), seed)
                    .unwrap_or_else(|error| panic!("{error}"));
                let (taken, refused) = (sim.directed_yields_taken(), sim.directed_yields_refused());
                assert!(
                    refused > 0,
                    "{}: blocked and exited targets are refused",
                    info.name
                );
                if info.name == crate::policies::central::NAME {
                    assert_eq!(taken, 0, "central refuses every directed yield");
                } else {
                    assert!(taken > 0, "{} took no directed yield", info.name);
                }
                let handed_out: Nanoseconds = sim
                    .strand_ids()
                    .map(|id| sim.strand_statistics(id).cpu_time)
                    .sum();
                let busy: Nanoseconds = (0..2)
                    .map(|cpu| sim.cpu_statistics(CpuId(cpu)).busy_time)
                    .sum();
                assert_eq!(handed_out, busy, "{}", info.name);
            }
        }
    }

    /// Round robin that agrees to every directed yield without looking.
    struct Agreeable(RoundRobin);

    impl Policy for Agreeable {
        fn name(&self) -> &'static str {
            "agreeable"
        }
        fn strand_created(&self, ctx: &Context, strand: &StrandSpec) -> Result<(), crate::Refusal> {
            self.0.strand_created(ctx, strand)
        }
        fn strand_exited(&self, ctx: &Context, strand: StrandId) {
            self.0.strand_exited(ctx, strand)
        }
        fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId) {
            self.0.unblock(ctx, strand, cpu)
        }
        fn block(&self, ctx: &Context, strand: StrandId) {
            self.0.block(ctx, strand)
        }
        fn checkpoint(
            &self,
            ctx: &Context,
            strand: StrandId,
            reason: CheckpointReason,
            ran: Nanoseconds,
        ) {
            self.0.checkpoint(ctx, strand, reason, ran)
        }
        fn resume(&self, ctx: &Context, strand: StrandId) {
            self.0.resume(ctx, strand)
        }
        fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
            self.0.pick_next(ctx)
        }
        fn take_for_directed_yield(&self, _ctx: &Context, _strand: StrandId) -> bool {
            true
        }
        fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
            self.0.tick(ctx, current, ran)
        }
        fn export(&self, ctx: &Context) -> Vec<ExportedStrand> {
            self.0.export(ctx)
        }
        fn import(
            &self,
            ctx: &Context,
            strands: Vec<ExportedStrand>,
        ) -> Result<(), crate::Refusal> {
            self.0.import(ctx, strands)
        }
    }

    #[test]
    fn a_policy_that_takes_what_it_may_not_is_caught() {
        let error = run_directed_yields(Arc::new(Agreeable(RoundRobin::new(2))), DEFAULT_SEED)
            .err()
            .expect("the simulator re-checks an agreed directed yield");
        assert_eq!(error.policy, "agreeable");
        assert!(
            matches!(
                error.kind,
                SimErrorKind::NotRunnable { .. }
                    | SimErrorKind::RunningElsewhere { .. }
                    | SimErrorKind::UnknownStrand { .. }
                    | SimErrorKind::AffinityViolated { .. }
            ),
            "{error}"
        );
    }
}
