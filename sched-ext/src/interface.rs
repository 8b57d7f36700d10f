//! The scheduler-extension interface: identities, parameters, SPIN's Strand events and the `Policy` trait.
//!
//! The kernel is SPIN's *trusted scheduler*: it owns strands, contexts and
//! CPUs, raises the Strand events (Block, Unblock, Checkpoint, Resume) on a
//! [`Policy`], and re-checks every decision the policy returns. A policy only
//! stores [`StrandId`]s and answers questions; it never touches hardware and
//! learns the time only through [`Context::now`].
//!
//! # Call contract
//!
//! * A strand is announced by [`Policy::strand_created`] in the Blocked state
//!   and becomes runnable through [`Policy::select_cpu`] followed at once by
//!   [`Policy::unblock`] (on the waker's CPU).
//! * A free CPU calls [`Policy::pick_next`]; the kernel checks the pick
//!   (known, runnable, not running, affinity allows this CPU) and raises
//!   [`Policy::resume`] on that CPU. `None` leads to [`Policy::cpu_idle`] and
//!   a halt until the next interrupt (the tick or a reschedule interrupt),
//!   after which the CPU calls `pick_next` again.
//! * [`Policy::tick`] runs at every timer tick of a CPU that ticks: every
//!   busy CPU, and CPU 0 even when idle (`current` is then `None`). Other
//!   idle CPUs are *tickless*: they get no tick and call nothing until an
//!   interrupt wakes them, so a policy that queues work an idle CPU should
//!   take must name that CPU in [`Policy::wants_wakeup`] (the kernel itself
//!   wakes the CPU `select_cpu` chose, and one tickless CPU the strand may
//!   use when that one is busy). `Preempt` makes the kernel raise
//!   [`Policy::checkpoint`]`(Preempted)` and call `pick_next`.
//! * A running strand leaves its CPU through `checkpoint` with a
//!   [`CheckpointReason`]: after `Preempted` or `Yielded` the policy must make
//!   it pickable again; a running strand that blocks gets [`Policy::block`]
//!   then `checkpoint(Blocked)`; one that exits gets `checkpoint(Exited)` then
//!   [`Policy::strand_exited`]; a queued strand that is killed gets `block`
//!   then `strand_exited`.
//! * A directed yield: the running strand gets `checkpoint(Yielded)`, then
//!   the kernel offers the strand it names to
//!   [`Policy::take_for_directed_yield`] on the same CPU. An agreement is a
//!   pick (checked like one, followed by `resume`); a refusal leads to
//!   `pick_next` as after any yield.
//! * After each call the kernel asks [`Policy::wants_wakeup`] and sends a
//!   reschedule interrupt to each CPU named: an idle CPU then calls
//!   `pick_next`, a busy one calls `tick` at once.
//! * The kernel never raises two events for the same strand at once, but
//!   events for different strands, `pick_next`, `tick` and `cpu_idle` arrive
//!   from many CPUs concurrently: every method takes `&self` and a policy
//!   locks internally. The kernel calls every method with interrupts disabled
//!   on the calling CPU, so a policy's spin locks cannot deadlock against the
//!   tick. The policies in this crate allocate or free memory only in
//!   `strand_created`, `strand_exited`, `export` and `import`: the other
//!   methods run in the scheduler's interrupt path and never grow a
//!   collection (capacity is reserved when strands arrive).
//! * Between `pick_next` returning a strand and `resume`, a `block` for that
//!   strand may arrive (it raced with the pick): the policy treats the strand
//!   as blocked and the kernel drops that stale pick without calling `resume`.
//!   Every other failed check is a policy fault, and the kernel may eject the
//!   policy.
//! * A live swap: with no call in flight on either policy, the kernel calls
//!   `export` on the old one and `import` on the new one (both on one CPU),
//!   then sends every idle CPU a reschedule interrupt. Strands running at the
//!   swap stay where they are; their next `checkpoint` goes to the new policy
//!   with the whole stint as `ran`.

use alloc::vec::Vec;
use core::fmt;

/// Time in nanoseconds. Extensions never read a clock: time comes only through [`Context::now`].
pub type Nanoseconds = u64;

/// Nanoseconds in one microsecond.
pub const NANOSECONDS_PER_MICROSECOND: Nanoseconds = 1_000;
/// Nanoseconds in one millisecond.
pub const NANOSECONDS_PER_MILLISECOND: Nanoseconds = 1_000_000;
/// Nanoseconds in one second.
pub const NANOSECONDS_PER_SECOND: Nanoseconds = 1_000_000_000;

/// The most CPUs a [`CpuSet`] can hold (and so the most CPUs Spindle schedules).
pub const MAX_CPUS: usize = 256;
/// Bits in one word of a [`CpuSet`].
const BITS_PER_WORD: usize = u64::BITS as usize;
/// Words in a [`CpuSet`].
const CPU_SET_WORDS: usize = MAX_CPUS / BITS_PER_WORD;

/// Number of priority levels; level 0 is the most urgent, `PRIORITY_LEVELS - 1` the least.
pub const PRIORITY_LEVELS: u8 = 32;
/// The priority a strand gets unless it asks for another: the middle level.
pub const DEFAULT_PRIORITY: u8 = PRIORITY_LEVELS / 2;
/// The lottery/stride tickets a strand gets unless it asks for more or fewer.
pub const DEFAULT_TICKETS: u32 = 100;
/// The weight a strand gets unless it asks for another (weighted virtual time).
pub const DEFAULT_WEIGHT: u32 = 100;

/// A strand's identity, handed out by the kernel.
///
/// `index` names a slot in the kernel's strand table and `generation` tells
/// apart successive strands in the same slot. A policy only stores and
/// returns identities; it never makes one up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StrandId {
    index: u32,
    generation: u32,
}

impl StrandId {
    /// The identity of the strand in slot `index`, incarnation `generation`.
    pub const fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The slot in the kernel's strand table.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// Which incarnation of the slot this is.
    pub const fn generation(self) -> u32 {
        self.generation
    }
}

impl fmt::Display for StrandId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "strand {}.{}", self.index, self.generation)
    }
}

/// A CPU, numbered densely from 0 to `cpu_count - 1` by the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuId(pub u16);

impl CpuId {
    /// The CPU number as an index into per-CPU tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for CpuId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "cpu {}", self.0)
    }
}

/// A set of up to [`MAX_CPUS`] CPUs, as a fixed bitset: no allocation, `Copy`.
///
/// CPUs at or beyond [`MAX_CPUS`] are never members: inserting one does nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuSet {
    words: [u64; CPU_SET_WORDS],
}

impl CpuSet {
    /// The set with no CPU.
    pub const fn empty() -> Self {
        Self {
            words: [0; CPU_SET_WORDS],
        }
    }

    /// CPUs `0..count` (at most [`MAX_CPUS`]).
    pub fn all(count: u16) -> Self {
        let mut set = Self::empty();
        let count = usize::from(count).min(MAX_CPUS);
        for (word_index, word) in set.words.iter_mut().enumerate() {
            let first = word_index * BITS_PER_WORD;
            let members = count.saturating_sub(first).min(BITS_PER_WORD);
            *word = match members {
                0 => 0,
                BITS_PER_WORD => u64::MAX,
                partial => (1u64 << partial) - 1,
            };
        }
        set
    }

    /// The set holding only `cpu`.
    pub fn single(cpu: CpuId) -> Self {
        let mut set = Self::empty();
        set.insert(cpu);
        set
    }

    /// Word index and bit mask of `cpu`, or `None` beyond [`MAX_CPUS`].
    fn locate(cpu: CpuId) -> Option<(usize, u64)> {
        let index = cpu.index();
        (index < MAX_CPUS).then(|| (index / BITS_PER_WORD, 1u64 << (index % BITS_PER_WORD)))
    }

    /// Adds `cpu`; returns whether it was newly added.
    pub fn insert(&mut self, cpu: CpuId) -> bool {
        match Self::locate(cpu) {
            Some((word, mask)) => {
                let added = self.words[word] & mask == 0;
                self.words[word] |= mask;
                added
            }
            None => false,
        }
    }

    /// Removes `cpu`; returns whether it was a member.
    pub fn remove(&mut self, cpu: CpuId) -> bool {
        match Self::locate(cpu) {
            Some((word, mask)) => {
                let present = self.words[word] & mask != 0;
                self.words[word] &= !mask;
                present
            }
            None => false,
        }
    }

    /// Whether `cpu` is a member.
    pub fn contains(&self, cpu: CpuId) -> bool {
        Self::locate(cpu).is_some_and(|(word, mask)| self.words[word] & mask != 0)
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// The members in ascending order.
    pub fn iter(&self) -> CpuSetIter {
        CpuSetIter {
            set: *self,
            position: 0,
        }
    }

    /// The lowest-numbered member.
    pub fn first(&self) -> Option<CpuId> {
        self.iter().next()
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let mut result = *self;
        for (word, other_word) in result.words.iter_mut().zip(other.words) {
            *word &= other_word;
        }
        result
    }

    /// CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        let mut result = *self;
        for (word, other_word) in result.words.iter_mut().zip(other.words) {
            *word |= other_word;
        }
        result
    }
}

impl fmt::Debug for CpuSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_set()
            .entries(self.iter().map(|cpu| cpu.0))
            .finish()
    }
}

impl FromIterator<CpuId> for CpuSet {
    fn from_iter<I: IntoIterator<Item = CpuId>>(cpus: I) -> Self {
        let mut set = Self::empty();
        for cpu in cpus {
            set.insert(cpu);
        }
        set
    }
}

impl IntoIterator for &CpuSet {
    type Item = CpuId;
    type IntoIter = CpuSetIter;

    fn into_iter(self) -> CpuSetIter {
        self.iter()
    }
}

/// Iterator over the members of a [`CpuSet`], in ascending order.
#[derive(Clone, Debug)]
pub struct CpuSetIter {
    set: CpuSet,
    position: usize,
}

impl Iterator for CpuSetIter {
    type Item = CpuId;

    fn next(&mut self) -> Option<CpuId> {
        while self.position < MAX_CPUS {
            let word_index = self.position / BITS_PER_WORD;
            let remaining = self.set.words[word_index] >> (self.position % BITS_PER_WORD);
            if remaining == 0 {
                self.position = (word_index + 1) * BITS_PER_WORD;
                continue;
            }
            let found = self.position + remaining.trailing_zeros() as usize;
            self.position = found + 1;
            return u16::try_from(found).ok().map(CpuId);
        }
        None
    }
}

/// What a strand asks of the scheduler. Each policy reads the fields it understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SchedParams {
    /// Strict priority: 0 is the most urgent, `PRIORITY_LEVELS - 1` the least.
    pub priority: u8,
    /// Stride-scheduling tickets: CPU share is proportional to them.
    pub tickets: u32,
    /// Weighted-virtual-time weight: CPU share is proportional to it.
    pub weight: u32,
    /// Period of a periodic (real-time) strand; 0 means the strand is not periodic.
    pub period: Nanoseconds,
    /// Deadline of each job relative to its release; 0 means equal to the period.
    pub relative_deadline: Nanoseconds,
    /// Worst-case execution time per period.
    pub budget: Nanoseconds,
}

impl Default for SchedParams {
    fn default() -> Self {
        Self {
            priority: DEFAULT_PRIORITY,
            tickets: DEFAULT_TICKETS,
            weight: DEFAULT_WEIGHT,
            period: 0,
            relative_deadline: 0,
            budget: 0,
        }
    }
}

impl SchedParams {
    /// These parameters with strict priority `priority` (0 is the most urgent).
    pub const fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// These parameters with `tickets` stride tickets.
    pub const fn with_tickets(mut self, tickets: u32) -> Self {
        self.tickets = tickets;
        self
    }

    /// These parameters with weight `weight`.
    pub const fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// These parameters for a periodic strand: `budget` of work every
    /// `period`, each job due `relative_deadline` after its release (0: at
    /// the end of the period).
    pub const fn periodic(
        mut self,
        period: Nanoseconds,
        budget: Nanoseconds,
        relative_deadline: Nanoseconds,
    ) -> Self {
        self.period = period;
        self.budget = budget;
        self.relative_deadline = relative_deadline;
        self
    }

    /// Whether the strand is periodic (has a period).
    pub const fn is_periodic(&self) -> bool {
        self.period > 0
    }

    /// The relative deadline, with 0 read as "the period".
    pub const fn deadline_or_period(&self) -> Nanoseconds {
        if self.relative_deadline == 0 {
            self.period
        } else {
            self.relative_deadline
        }
    }
}

/// A strand as the kernel describes it to a policy. Affinity and parameters
/// do not change during the strand's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrandSpec {
    /// The strand's identity.
    pub id: StrandId,
    /// The CPUs it may run on (the kernel guarantees at least one is online).
    pub affinity: CpuSet,
    /// What it asks of the scheduler.
    pub params: SchedParams,
}

impl StrandSpec {
    /// A strand description.
    pub const fn new(id: StrandId, affinity: CpuSet, params: SchedParams) -> Self {
        Self {
            id,
            affinity,
            params,
        }
    }
}

/// What every call tells the policy about the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    /// The time of the call, from the kernel's monotonic clock.
    pub now: Nanoseconds,
    /// The CPU making the call.
    pub cpu: CpuId,
    /// CPUs online; CPU ids are `0..cpu_count`.
    pub cpu_count: u16,
}

impl Context {
    /// A context for a call made by `cpu` at `now`, with `cpu_count` CPUs online.
    pub const fn new(now: Nanoseconds, cpu: CpuId, cpu_count: u16) -> Self {
        Self {
            now,
            cpu,
            cpu_count,
        }
    }
}

/// Why a policy refuses a strand or a hand-over (EDF admission control, import failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

impl fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.0)
    }
}

/// Why a strand left its CPU (SPIN's Checkpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CheckpointReason {
    /// The kernel took the CPU away (the policy's tick said so): still runnable.
    Preempted,
    /// The strand gave the CPU up: still runnable.
    Yielded,
    /// The strand blocked (a `block` was raised just before): not runnable.
    Blocked,
    /// The strand exited (`strand_exited` follows): not runnable.
    Exited,
}

impl CheckpointReason {
    /// Whether the strand is still runnable, so the policy must make it pickable again.
    pub const fn still_runnable(self) -> bool {
        matches!(self, Self::Preempted | Self::Yielded)
    }
}

/// A policy's answer to a timer tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickAction {
    /// Let the current strand run on.
    Continue,
    /// Take the CPU away: the kernel raises `checkpoint(Preempted)` and `pick_next`.
    Preempt,
}

/// Where a strand is, as a policy reports it on export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrandState {
    /// Runnable and not running (queued, or picked and about to be resumed).
    Runnable,
    /// Not runnable.
    Blocked,
    /// Running on this CPU.
    Running(CpuId),
}

/// One strand's state as handed from one policy to the next during a live swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportedStrand {
    /// The strand as the kernel described it.
    pub spec: StrandSpec,
    /// Where it is.
    pub state: StrandState,
    /// Policy-neutral progress: virtual nanoseconds, i.e. CPU time scaled by
    /// `DEFAULT_WEIGHT / weight` (stride: by `DEFAULT_TICKETS / tickets`).
    /// Only differences between strands matter; 0 when the policy does not
    /// track it.
    pub virtual_time: u64,
    /// The absolute deadline of the strand's current job, if it has one.
    pub absolute_deadline: Option<Nanoseconds>,
    /// CPU time consumed so far, as the policy knows it (the sum of `ran`
    /// over its checkpoints, including those seen by earlier policies).
    pub run_time: Nanoseconds,
}

impl StrandState {
    /// The state after `checkpoint(reason)`: runnable again if the strand was
    /// running and is still runnable, blocked otherwise (also when a `block`
    /// came before the checkpoint).
    pub const fn after_checkpoint(self, reason: CheckpointReason) -> Self {
        match self {
            Self::Running(_) if reason.still_runnable() => Self::Runnable,
            _ => Self::Blocked,
        }
    }
}

impl ExportedStrand {
    /// The hand-over record of a strand that was just created: blocked, no history.
    pub const fn created(spec: StrandSpec) -> Self {
        Self {
            spec,
            state: StrandState::Blocked,
            virtual_time: 0,
            absolute_deadline: None,
            run_time: 0,
        }
    }
}

/// A scheduling policy: SPIN's scheduler extension, handling the Strand events.
///
/// See the [module documentation](self) for the call contract. Every method
/// must return promptly and must not panic; the kernel treats a panic, a
/// hang or a failed check as a fault and may eject the policy.
pub trait Policy: Send + Sync {
    /// The policy's name, as in the catalogue.
    fn name(&self) -> &'static str;

    /// A new strand exists, initially Blocked; it becomes runnable through
    /// [`unblock`](Policy::unblock). A refusal (e.g. admission control)
    /// means the strand is not created and the policy keeps nothing of it.
    fn strand_created(&self, ctx: &Context, strand: &StrandSpec) -> Result<(), Refusal>;

    /// The strand is gone: forget it. It is neither runnable nor queued nor running.
    fn strand_exited(&self, ctx: &Context, strand: StrandId);

    /// Chooses the CPU for a waking strand; called just before
    /// [`unblock`](Policy::unblock). `previous` is the CPU it last ran on.
    /// The kernel re-checks that the answer is in `allowed` and online.
    ///
    /// The default keeps the strand where it ran last, else takes the
    /// lowest-numbered allowed CPU that is online.
    fn select_cpu(
        &self,
        ctx: &Context,
        _strand: StrandId,
        previous: Option<CpuId>,
        allowed: &CpuSet,
    ) -> CpuId {
        let usable = allowed.intersection(&CpuSet::all(ctx.cpu_count));
        previous
            .filter(|cpu| usable.contains(*cpu))
            .or(usable.first())
            .unwrap_or(ctx.cpu)
    }

    /// SPIN's Unblock: the strand is runnable, to be queued for `cpu` (the
    /// answer of `select_cpu`). The kernel sends `cpu` a reschedule
    /// interrupt if it is idle; a policy that queues the strand elsewhere
    /// names that CPU in [`wants_wakeup`](Policy::wants_wakeup).
    fn unblock(&self, ctx: &Context, strand: StrandId, cpu: CpuId);

    /// SPIN's Block: the strand is no longer runnable; if it is queued,
    /// dequeue it. For a running strand the kernel raises Block and then
    /// `checkpoint(Blocked)`, both on the strand's CPU.
    fn block(&self, ctx: &Context, strand: StrandId);

    /// SPIN's Checkpoint: the strand was taken off `ctx.cpu` after running
    /// `ran` nanoseconds in this stint.
    fn checkpoint(
        &self,
        ctx: &Context,
        strand: StrandId,
        reason: CheckpointReason,
        ran: Nanoseconds,
    );

    /// SPIN's Resume: the strand is being put on `ctx.cpu`.
    fn resume(&self, ctx: &Context, strand: StrandId);

    /// The next strand for `ctx.cpu`, removed from the policy's queue;
    /// `None` means idle. The kernel verifies the pick and raises `resume`.
    fn pick_next(&self, ctx: &Context) -> Option<StrandId>;

    /// Directed yield (the Aegis exokernel's `Yield`): the strand that was running on
    /// `ctx.cpu` hands the processor to `strand`. It has already been checkpointed
    /// with [`CheckpointReason::Yielded`] (so it is runnable and queued again).
    /// Return `true` to agree: `strand` is runnable, waiting in your queues, may run
    /// on `ctx.cpu`, and you have taken it out of them exactly as if `pick_next` on
    /// `ctx.cpu` had just returned it (the kernel re-checks it, resumes it on
    /// `ctx.cpu` and raises `resume`). Return `false` to refuse (the default): the
    /// kernel then runs `pick_next` as after any yield.
    fn take_for_directed_yield(&self, _ctx: &Context, _strand: StrandId) -> bool {
        false
    }

    /// Timer tick on `ctx.cpu`; `current` is the running strand (if any),
    /// `ran` its stint so far. May also be called between ticks (after a
    /// reschedule interrupt), so a policy must not assume a fixed interval.
    fn tick(&self, ctx: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction;

    /// `ctx.cpu` found nothing to run and is about to halt. The default does nothing.
    fn cpu_idle(&self, _ctx: &Context) {}

    /// Every strand the policy holds (runnable, blocked or running) with its
    /// state, for a live swap. Export does not change the policy: if the next
    /// policy refuses the hand-over, the kernel keeps this one.
    fn export(&self, ctx: &Context) -> Vec<ExportedStrand>;

    /// Takes over strands from another policy during a live swap. Running
    /// strands stay running where they are; `virtual_time` and
    /// `absolute_deadline` are translated into the policy's own terms. On a
    /// refusal the policy keeps nothing.
    fn import(&self, ctx: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal>;

    /// CPUs the policy would like the kernel to send a reschedule interrupt,
    /// taken (cleared) by the call. The kernel asks after each call it makes;
    /// an idle CPU then runs `pick_next`, a busy one runs `tick` at once.
    fn wants_wakeup(&self, _ctx: &Context) -> CpuSet {
        CpuSet::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn cpu_set_operations() {
        let mut set = CpuSet::empty();
        assert!(set.is_empty());
        assert_eq!((set.len(), set.first()), (0, None));
        for cpu in [CpuId(200), CpuId(3), CpuId(64), CpuId(63)] {
            assert!(set.insert(cpu), "{cpu} is new");
        }
        assert!(!set.insert(CpuId(3)), "inserting twice reports no change");
        assert!(
            !set.insert(CpuId(256)),
            "beyond MAX_CPUS nothing is inserted"
        );
        assert!(!set.contains(CpuId(256)));
        assert_eq!(set.len(), 4);
        let members: Vec<u16> = set.iter().map(|cpu| cpu.0).collect();
        assert_eq!(members, [3, 63, 64, 200], "ascending, across words");
        assert_eq!(set.first(), Some(CpuId(3)));
        assert!(set.contains(CpuId(64)) && !set.contains(CpuId(65)));
        assert!(set.remove(CpuId(3)));
        assert!(!set.remove(CpuId(3)));
        assert_eq!(set.first(), Some(CpuId(63)));
        assert_eq!(format!("{set:?}"), "{63, 64, 200}");
        assert_eq!(
            CpuSet::single(CpuId(7)).iter().collect::<Vec<_>>(),
            [CpuId(7)]
        );
    }

    #[test]
    fn cpu_set_all_counts_and_set_algebra() {
        assert!(CpuSet::all(0).is_empty());
        assert_eq!(CpuSet::all(1), CpuSet::single(CpuId(0)));
        for count in [1u16, 63, 64, 65, 128, 255, 256, 300] {
            let set = CpuSet::all(count);
            let expected = usize::from(count).min(MAX_CPUS);
            assert_eq!(set.len(), expected, "all({count})");
            assert_eq!(set.iter().count(), expected);
            assert_eq!(set.iter().last().map(CpuId::index), Some(expected - 1));
        }
        let low: CpuSet = (0..4).map(CpuId).collect();
        let high: CpuSet = (2..70).map(CpuId).collect();
        let both: Vec<u16> = low.intersection(&high).iter().map(|cpu| cpu.0).collect();
        assert_eq!(both, [2, 3]);
        assert_eq!(low.union(&high), (0..70).map(CpuId).collect());
        assert_eq!((&low).into_iter().count(), 4);
    }

    #[test]
    fn identities_display_as_the_kernel_prints_them() {
        let strand = StrandId::new(5, 1);
        assert_eq!((strand.index(), strand.generation()), (5, 1));
        assert_eq!(format!("{strand}"), "strand 5.1");
        assert_eq!(format!("{}", CpuId(3)), "cpu 3");
        assert_eq!(CpuId(3).index(), 3);
        assert!(
            StrandId::new(1, 9) < StrandId::new(2, 0),
            "ordered by slot first"
        );
        assert_eq!(format!("{}", Refusal("no room")), "no room");
    }

    #[test]
    fn parameters_default_and_build() {
        let default = SchedParams::default();
        assert_eq!(
            (default.priority, default.tickets, default.weight),
            (16, 100, 100)
        );
        assert!(!default.is_periodic());
        let built = default
            .with_priority(2)
            .with_tickets(300)
            .with_weight(50)
            .periodic(10, 3, 0);
        assert_eq!((built.priority, built.tickets, built.weight), (2, 300, 50));
        assert_eq!(
            (built.period, built.budget, built.relative_deadline),
            (10, 3, 0)
        );
        assert!(built.is_periodic());
        assert_eq!(built.deadline_or_period(), 10, "0 means the period");
        assert_eq!(default.periodic(10, 3, 7).deadline_or_period(), 7);
    }

    #[test]
    fn checkpoint_reasons_say_what_stays_runnable() {
        let running = StrandState::Running(CpuId(1));
        assert_eq!(
            running.after_checkpoint(CheckpointReason::Preempted),
            StrandState::Runnable
        );
        assert_eq!(
            running.after_checkpoint(CheckpointReason::Yielded),
            StrandState::Runnable
        );
        assert_eq!(
            running.after_checkpoint(CheckpointReason::Blocked),
            StrandState::Blocked
        );
        assert_eq!(
            running.after_checkpoint(CheckpointReason::Exited),
            StrandState::Blocked
        );
        // A block raised before the checkpoint wins.
        let blocked = StrandState::Blocked;
        assert_eq!(
            blocked.after_checkpoint(CheckpointReason::Preempted),
            StrandState::Blocked
        );
    }
}
