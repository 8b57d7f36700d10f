//! The running package's record of its processors and activations: which activation each granted processor runs and in what state, the activations blocked in the kernel, the upcalls waiting for delivery, and the two invariants, counted at every upcall.
//!
//! The kernel glue ([`crate::runtime`]) keeps one `Ledger` under a lock and
//! asks it before every step: may this strand start an activation here, and
//! as which upcall; is this activation still its processor's; which idle
//! processors must wake now that threads wait. The ledger itself runs
//! nothing, so every order of events can be tested on the host.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use spindle_sched_ext::StrandId;

use crate::{ActivationId, CpuId, ThreadId};

/// What an activation is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationState {
    /// Running the package (its loop or a thread) on its processor.
    Running,
    /// Blocked in the kernel with nothing to run; woken when threads wait.
    Idle,
    /// Its thread made a blocking kernel call: the processor passes to a
    /// fresh activation.
    Blocking,
    /// The kernel took its processor by force (the abort protocol) while it
    /// ran: it waits, runnable, for the processor to come back, and stays
    /// the processor's activation meanwhile (a fresh one would run beside
    /// it once it does).
    Stranded,
}

/// The activation a processor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    activation: ActivationId,
    strand: StrandId,
    state: ActivationState,
}

/// One processor the package may hold.
#[derive(Clone, Copy, Debug, Default)]
struct Processor {
    granted: bool,
    revoking: bool,
    current: Option<Current>,
    /// A strand started to become this processor's next activation.
    standby: Option<StrandId>,
}

/// An activation blocked in the kernel, with the thread it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Blocked {
    cpu: CpuId,
    thread: ThreadId,
}

/// An upcall waiting to be delivered on a processor of the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upcall {
    /// "Activation unblocked": the thread that blocked in `activation` may
    /// continue (its state was saved when the activation left it).
    Unblocked {
        /// The activation that was blocked.
        activation: ActivationId,
        /// Its thread.
        thread: ThreadId,
    },
    /// "Processor preempted": the kernel took `cpu`, which ran
    /// `activation`; `thread` was running there (it is ready again).
    Preempted {
        /// The processor taken.
        cpu: CpuId,
        /// The activation it ran.
        activation: ActivationId,
        /// The thread it ran, if any.
        thread: Option<ThreadId>,
    },
}

/// How a strand starts as an activation ([`Ledger::start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Upcall "processor added": the processor had no activation.
    Added(ActivationId),
    /// Upcall "activation blocked": `blocked` blocked in the kernel with
    /// `thread`; this fresh activation takes the processor.
    Blocked {
        /// The new activation.
        fresh: ActivationId,
        /// The activation blocked in the kernel.
        blocked: ActivationId,
        /// Its thread.
        thread: ThreadId,
    },
    /// The processor is not the package's (or is being taken back): wait.
    NotGranted,
    /// Another activation runs the processor: this strand must not run the
    /// package (counted as a violation).
    Occupied,
}

/// Upcalls, downcalls and invariant checks, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// "Processor added" upcalls.
    pub processors_added: u64,
    /// "Processor preempted" upcalls.
    pub processors_preempted: u64,
    /// "Activation blocked" upcalls.
    pub activations_blocked: u64,
    /// "Activation unblocked" upcalls.
    pub activations_unblocked: u64,
    /// "Add more processors" downcalls.
    pub add_more_processors: u64,
    /// "This processor is idle" downcalls.
    pub processor_is_idle: u64,
    /// Invariant checks made.
    pub invariant_checks: u64,
    /// Checks that found more running activations than granted processors.
    pub over_granted: u64,
    /// Checks that found a granted processor idle while threads waited.
    pub idle_with_ready: u64,
    /// Strands that found their processor run by another activation.
    pub occupied: u64,
}

impl Counts {
    /// Invariant violations of every kind.
    pub fn violations(&self) -> u64 {
        self.over_granted + self.idle_with_ready + self.occupied
    }
}

/// Why the ledger refused a report: the glue's view and the ledger's differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerError {
    /// `cpu` does not run `activation`.
    NotCurrent {
        /// The processor.
        cpu: CpuId,
        /// The activation named.
        activation: ActivationId,
    },
    /// No such processor.
    NoSuchCpu(CpuId),
}

/// The package's record of processors and activations.
#[derive(Debug)]
pub struct Ledger {
    processors: Vec<Processor>,
    blocked: BTreeMap<ActivationId, Blocked>,
    upcalls: VecDeque<Upcall>,
    /// Idle activations whose processor was taken: blocked strands that
    /// must be woken once to end.
    orphans: Vec<StrandId>,
    next_activation: u32,
    counts: Counts,
}

impl Ledger {
    /// A ledger for CPUs `0..cpus`, none granted.
    pub fn new(cpus: u16) -> Ledger {
        Ledger {
            processors: alloc::vec![Processor::default(); usize::from(cpus)],
            blocked: BTreeMap::new(),
            upcalls: VecDeque::new(),
            orphans: Vec::new(),
            next_activation: 0,
            counts: Counts::default(),
        }
    }

    fn processor(&mut self, cpu: CpuId) -> Result<&mut Processor, LedgerError> {
        self.processors
            .get_mut(usize::from(cpu.0))
            .ok_or(LedgerError::NoSuchCpu(cpu))
    }

    fn fresh(&mut self) -> ActivationId {
        self.next_activation = self.next_activation.wrapping_add(1);
        ActivationId(self.next_activation)
    }

    /// The kernel's `processor_added` event: `cpu` is the package's.
    pub fn processor_added(&mut self, cpu: CpuId) {
        if let Ok(processor) = self.processor(cpu) {
            processor.granted = true;
            processor.revoking = false;
        }
    }

    /// The kernel's `revoke_requested` event: `cpu` must be given up.
    pub fn revoke_requested(&mut self, cpu: CpuId) {
        if let Ok(processor) = self.processor(cpu) {
            processor.revoking = processor.granted;
        }
    }

    /// The kernel's `processor_revoked` event: `cpu` is gone. An activation
    /// still recorded there (idle, or preempted by force) is reported by a
    /// "processor preempted" upcall; an idle one becomes an orphan, one
    /// preempted by force is stranded until the processor comes back.
    pub fn processor_revoked(&mut self, cpu: CpuId) {
        let Ok(processor) = self.processor(cpu) else {
            return;
        };
        processor.granted = false;
        processor.revoking = false;
        let Some(current) = processor.current else {
            return;
        };
        match current.state {
            ActivationState::Running => {
                if let Some(current) = processor.current.as_mut() {
                    current.state = ActivationState::Stranded;
                }
            }
            ActivationState::Idle => {
                processor.current = None;
                self.orphans.push(current.strand);
            }
            ActivationState::Blocking => processor.current = None,
            ActivationState::Stranded => return,
        }
        if current.state != ActivationState::Blocking {
            self.upcalls.push_back(Upcall::Preempted {
                cpu,
                activation: current.activation,
                thread: None,
            });
        }
    }

    /// A stranded `activation` runs again on `cpu`, granted again: the
    /// processor is back ("processor added", to the same activation).
    pub fn resume_stranded(&mut self, cpu: CpuId, activation: ActivationId) {
        let granted = self
            .processors
            .get(usize::from(cpu.0))
            .is_some_and(|processor| processor.granted);
        if let Ok(current) = self.current_mut(cpu, activation) {
            if current.state == ActivationState::Stranded && granted {
                current.state = ActivationState::Running;
                self.counts.processors_added += 1;
            }
        }
    }

    /// Whether `cpu` is granted, has no activation and no standby: a strand
    /// must be started there.
    pub fn needs_activation(&self, cpu: CpuId) -> bool {
        self.processors
            .get(usize::from(cpu.0))
            .is_some_and(|processor| {
                processor.granted
                    && !processor.revoking
                    && processor
                        .current
                        .is_none_or(|current| current.state == ActivationState::Blocking)
                    && processor.standby.is_none()
            })
    }

    /// A strand was started to become `cpu`'s next activation.
    pub fn standby_started(&mut self, cpu: CpuId, strand: StrandId) {
        if let Ok(processor) = self.processor(cpu) {
            processor.standby = Some(strand);
        }
    }

    /// `strand` ends without having become an activation (the package is
    /// done, or the processor was taken): it is no longer `cpu`'s standby.
    pub fn standby_ended(&mut self, cpu: CpuId, strand: StrandId) {
        if let Ok(processor) = self.processor(cpu) {
            if processor.standby == Some(strand) {
                processor.standby = None;
            }
        }
    }

    /// Whether `cpu` is granted (and not being taken back).
    pub fn granted(&self, cpu: CpuId) -> bool {
        self.processors
            .get(usize::from(cpu.0))
            .is_some_and(|processor| processor.granted && !processor.revoking)
    }

    /// `strand`, running on `cpu`, asks to start an activation there.
    pub fn start(&mut self, cpu: CpuId, strand: StrandId) -> Start {
        let Ok(processor) = self.processor(cpu) else {
            return Start::NotGranted;
        };
        if !processor.granted || processor.revoking {
            // A standby stays the standby: it runs again at the next grant.
            return Start::NotGranted;
        }
        if processor.standby == Some(strand) {
            processor.standby = None;
        }
        let previous = processor.current;
        match previous {
            Some(current) if current.state != ActivationState::Blocking => {
                self.counts.occupied += 1;
                Start::Occupied
            }
            _ => {
                let fresh = self.fresh();
                let processor = &mut self.processors[usize::from(cpu.0)];
                processor.current = Some(Current {
                    activation: fresh,
                    strand,
                    state: ActivationState::Running,
                });
                match previous {
                    None => {
                        self.counts.processors_added += 1;
                        Start::Added(fresh)
                    }
                    Some(blocked) => {
                        self.counts.activations_blocked += 1;
                        let thread = self
                            .blocked
                            .get(&blocked.activation)
                            .map(|record| record.thread)
                            .unwrap_or(ThreadId {
                                index: u32::MAX,
                                generation: 0,
                            });
                        Start::Blocked {
                            fresh,
                            blocked: blocked.activation,
                            thread,
                        }
                    }
                }
            }
        }
    }

    /// The processor and activation `strand` runs as, if it is one.
    pub fn activation_of(&self, strand: StrandId) -> Option<(CpuId, ActivationId)> {
        self.processors
            .iter()
            .enumerate()
            .find_map(|(index, processor)| {
                processor
                    .current
                    .filter(|current| current.strand == strand)
                    .map(|current| (CpuId(index as u16), current.activation))
            })
    }

    /// `activation`, running on `cpu`, blocks in the kernel with `thread`:
    /// the processor waits for a fresh activation.
    pub fn block(
        &mut self,
        cpu: CpuId,
        activation: ActivationId,
        thread: ThreadId,
    ) -> Result<(), LedgerError> {
        let current = self.current_mut(cpu, activation)?;
        current.state = ActivationState::Blocking;
        self.blocked.insert(activation, Blocked { cpu, thread });
        Ok(())
    }

    /// If `activation` is blocked in the kernel, it has just woken (its
    /// thread's state is saved): queues the "activation unblocked" upcall
    /// and returns its thread.
    pub fn unblocked(&mut self, activation: ActivationId) -> Option<ThreadId> {
        let record = self.blocked.remove(&activation)?;
        self.upcalls.push_back(Upcall::Unblocked {
            activation,
            thread: record.thread,
        });
        Some(record.thread)
    }

    /// Whether `cpu` runs `activation` (and is not blocked in it).
    pub fn is_current(&self, cpu: CpuId, activation: ActivationId) -> bool {
        self.processors
            .get(usize::from(cpu.0))
            .and_then(|processor| processor.current)
            .is_some_and(|current| {
                current.activation == activation && current.state != ActivationState::Blocking
            })
    }

    /// Whether `cpu` is being taken back.
    pub fn revoking(&self, cpu: CpuId) -> bool {
        self.processors
            .get(usize::from(cpu.0))
            .is_some_and(|processor| processor.revoking)
    }

    /// `activation` leaves `cpu` under revocation: the "processor preempted"
    /// upcall is queued for another processor, with the thread it ran.
    pub fn give_up(
        &mut self,
        cpu: CpuId,
        activation: ActivationId,
        thread: Option<ThreadId>,
    ) -> Result<(), LedgerError> {
        self.current_mut(cpu, activation)?;
        self.processors[usize::from(cpu.0)].current = None;
        self.upcalls.push_back(Upcall::Preempted {
            cpu,
            activation,
            thread,
        });
        Ok(())
    }

    /// `activation` has nothing to run. Refused (false) while `waiting`
    /// threads wait; otherwise it goes idle and the "this processor is
    /// idle" downcall is counted.
    pub fn go_idle(
        &mut self,
        cpu: CpuId,
        activation: ActivationId,
        waiting: usize,
    ) -> Result<bool, LedgerError> {
        if waiting > 0 {
            return Ok(false);
        }
        self.current_mut(cpu, activation)?.state = ActivationState::Idle;
        self.counts.processor_is_idle += 1;
        Ok(true)
    }

    /// The wake protocol, then the invariant check: with `waiting` threads
    /// waiting, marks up to that many idle processors running and returns
    /// their activations' strands (the caller wakes them). Afterwards no
    /// running activation may lack a granted processor, and no granted
    /// processor may be left idle while threads wait that no woken
    /// processor will take; a failure is counted.
    pub fn settle(&mut self, waiting: usize) -> Vec<StrandId> {
        let mut woken = Vec::new();
        for processor in &mut self.processors {
            if woken.len() >= waiting {
                break;
            }
            if let Some(current) = processor.current.as_mut() {
                if current.state == ActivationState::Idle && processor.granted {
                    current.state = ActivationState::Running;
                    woken.push(current.strand);
                }
            }
        }
        self.check(waiting, woken.len());
        woken
    }

    /// Counts one invariant check (see [`settle`](Ledger::settle)): a
    /// processor still idle is a violation only if fewer processors were
    /// woken than threads wait.
    fn check(&mut self, waiting: usize, woken: usize) {
        self.counts.invariant_checks += 1;
        let granted = self
            .processors
            .iter()
            .filter(|processor| processor.granted)
            .count();
        let running = self
            .processors
            .iter()
            .filter(|processor| {
                processor.current.is_some_and(|current| {
                    matches!(
                        current.state,
                        ActivationState::Running | ActivationState::Idle
                    )
                })
            })
            .count();
        if running > granted {
            self.counts.over_granted += 1;
        }
        let idle = self.processors.iter().any(|processor| {
            processor.granted
                && !processor.revoking
                && processor
                    .current
                    .is_some_and(|current| current.state == ActivationState::Idle)
        });
        if woken < waiting && idle {
            self.counts.idle_with_ready += 1;
        }
    }

    /// The upcalls waiting for delivery, oldest first; each is counted as
    /// delivered.
    pub fn take_upcalls(&mut self) -> Vec<Upcall> {
        let upcalls: Vec<Upcall> = self.upcalls.drain(..).collect();
        for upcall in &upcalls {
            match upcall {
                Upcall::Unblocked { .. } => self.counts.activations_unblocked += 1,
                Upcall::Preempted { .. } => self.counts.processors_preempted += 1,
            }
        }
        upcalls
    }

    /// Whether upcalls wait for delivery.
    pub fn has_upcalls(&self) -> bool {
        !self.upcalls.is_empty()
    }

    /// Standbys and stranded activations of processors the package does
    /// not hold now (they run only if their processor is granted again).
    pub fn stranded_standbys(&self) -> Vec<(CpuId, StrandId)> {
        self.processors
            .iter()
            .enumerate()
            .filter(|(_, processor)| !processor.granted)
            .filter_map(|(index, processor)| {
                let stranded = processor
                    .current
                    .filter(|current| current.state == ActivationState::Stranded)
                    .map(|current| current.strand);
                processor
                    .standby
                    .or(stranded)
                    .map(|strand| (CpuId(index as u16), strand))
            })
            .collect()
    }

    /// Orphaned idle activations to wake once so that they end.
    pub fn take_orphans(&mut self) -> Vec<StrandId> {
        core::mem::take(&mut self.orphans)
    }

    /// `activation` ends on `cpu` (the package is done).
    pub fn finish(&mut self, cpu: CpuId, activation: ActivationId) -> Result<(), LedgerError> {
        self.current_mut(cpu, activation)?;
        self.processors[usize::from(cpu.0)].current = None;
        Ok(())
    }

    /// Idle activations of granted processors: woken at the end.
    pub fn idle_strands(&mut self) -> Vec<StrandId> {
        self.processors
            .iter_mut()
            .filter_map(|processor| processor.current.as_mut())
            .filter(|current| current.state == ActivationState::Idle)
            .map(|current| {
                current.state = ActivationState::Running;
                current.strand
            })
            .collect()
    }

    /// A processor to stop for delivering an upcall: an idle one is woken
    /// (its strand returned in `Err`), else a busy one other than `avoid`
    /// (or `avoid` itself) is named; `None` if the package has none.
    pub fn delivery_target(&mut self, avoid: Option<CpuId>) -> Option<Result<CpuId, StrandId>> {
        let mut busy = None;
        for (index, processor) in self.processors.iter_mut().enumerate() {
            let cpu = CpuId(index as u16);
            if !processor.granted || processor.revoking {
                continue;
            }
            match processor.current.as_mut() {
                Some(current) if current.state == ActivationState::Idle => {
                    current.state = ActivationState::Running;
                    return Some(Err(current.strand));
                }
                Some(current)
                    if current.state == ActivationState::Running
                        && (busy.is_none() || busy == avoid) =>
                {
                    busy = Some(cpu);
                }
                _ => {}
            }
        }
        busy.map(Ok)
    }

    /// Counts an "add more processors" downcall.
    pub fn add_more_processors(&mut self) {
        self.counts.add_more_processors += 1;
    }

    /// Processors granted and not being taken back, with a running
    /// activation (revocation candidates).
    pub fn busy_processors(&self) -> Vec<CpuId> {
        self.processors
            .iter()
            .enumerate()
            .filter(|(_, processor)| {
                processor.granted
                    && !processor.revoking
                    && processor
                        .current
                        .is_some_and(|current| current.state == ActivationState::Running)
            })
            .map(|(index, _)| CpuId(index as u16))
            .collect()
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Activations blocked in the kernel now.
    pub fn blocked_count(&self) -> usize {
        self.blocked.len()
    }

    fn current_mut(
        &mut self,
        cpu: CpuId,
        activation: ActivationId,
    ) -> Result<&mut Current, LedgerError> {
        self.processor(cpu)?
            .current
            .as_mut()
            .filter(|current| current.activation == activation)
            .ok_or(LedgerError::NotCurrent { cpu, activation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: CpuId = CpuId(1);
    const OTHER: CpuId = CpuId(2);
    const THREAD: ThreadId = ThreadId {
        index: 7,
        generation: 0,
    };

    fn strand(index: u32) -> StrandId {
        StrandId::new(index, 1)
    }

    fn granted() -> Ledger {
        let mut ledger = Ledger::new(4);
        ledger.processor_added(CPU);
        ledger
    }

    #[test]
    fn a_strand_on_a_fresh_processor_is_the_processor_added_upcall() {
        let mut ledger = Ledger::new(4);
        assert_eq!(ledger.start(CPU, strand(1)), Start::NotGranted);
        ledger.processor_added(CPU);
        assert!(ledger.needs_activation(CPU));
        ledger.standby_started(CPU, strand(1));
        assert!(!ledger.needs_activation(CPU));
        let Start::Added(activation) = ledger.start(CPU, strand(1)) else {
            panic!("not added");
        };
        assert!(ledger.is_current(CPU, activation));
        assert_eq!(ledger.activation_of(strand(1)), Some((CPU, activation)));
        assert_eq!(ledger.counts().processors_added, 1);
        // A second strand finds the processor taken.
        assert_eq!(ledger.start(CPU, strand(2)), Start::Occupied);
        assert_eq!(ledger.counts().violations(), 1);
    }

    #[test]
    fn blocking_hands_the_processor_to_a_fresh_activation_and_unblocking_queues_the_thread() {
        let mut ledger = granted();
        let Start::Added(first) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        ledger.block(CPU, first, THREAD).unwrap();
        assert!(!ledger.is_current(CPU, first));
        assert!(ledger.needs_activation(CPU));
        let Start::Blocked {
            fresh,
            blocked,
            thread,
        } = ledger.start(CPU, strand(2))
        else {
            panic!("not the blocked upcall")
        };
        assert_ne!(fresh, first);
        assert_eq!((blocked, thread), (first, THREAD));
        assert_eq!(ledger.blocked_count(), 1);
        // Woken: the upcall waits for delivery, once.
        assert_eq!(ledger.unblocked(first), Some(THREAD));
        assert_eq!(ledger.unblocked(first), None);
        assert_eq!(
            ledger.take_upcalls(),
            [Upcall::Unblocked {
                activation: first,
                thread: THREAD
            }]
        );
        let counts = ledger.counts();
        assert_eq!(
            (counts.activations_blocked, counts.activations_unblocked),
            (1, 1)
        );
    }

    #[test]
    fn revocation_is_given_up_with_the_thread_and_a_standby_waits_for_the_next_grant() {
        let mut ledger = granted();
        ledger.processor_added(OTHER);
        let Start::Added(activation) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        ledger.revoke_requested(CPU);
        assert!(ledger.revoking(CPU));
        assert_eq!(ledger.start(CPU, strand(2)), Start::NotGranted);
        ledger.give_up(CPU, activation, Some(THREAD)).unwrap();
        ledger.processor_revoked(CPU);
        assert_eq!(
            ledger.take_upcalls(),
            [Upcall::Preempted {
                cpu: CPU,
                activation,
                thread: Some(THREAD)
            }]
        );
        assert!(!ledger.needs_activation(CPU));
        ledger.processor_added(CPU);
        assert!(matches!(ledger.start(CPU, strand(2)), Start::Added(_)));
    }

    #[test]
    fn an_idle_processor_taken_back_leaves_an_orphan_and_a_preempted_upcall() {
        let mut ledger = granted();
        let Start::Added(activation) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        assert_eq!(ledger.go_idle(CPU, activation, 0), Ok(true));
        ledger.processor_revoked(CPU);
        assert_eq!(ledger.take_orphans(), [strand(1)]);
        assert_eq!(ledger.take_upcalls().len(), 1);
        assert!(!ledger.is_current(CPU, activation));
    }

    #[test]
    fn an_activation_preempted_by_force_keeps_its_processor_until_it_comes_back() {
        let mut ledger = granted();
        let Start::Added(activation) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        ledger.revoke_requested(CPU);
        // The notice ran out: the kernel took the processor by force.
        ledger.processor_revoked(CPU);
        assert_eq!(ledger.take_upcalls().len(), 1);
        assert_eq!(ledger.stranded_standbys(), [(CPU, strand(1))]);
        // No fresh activation is started beside it, and it does not count
        // as running.
        ledger.processor_added(CPU);
        assert!(!ledger.needs_activation(CPU));
        assert_eq!(ledger.start(CPU, strand(2)), Start::Occupied);
        ledger.settle(0);
        assert_eq!(ledger.counts().over_granted, 0);
        ledger.resume_stranded(CPU, activation);
        assert!(ledger.is_current(CPU, activation));
        assert_eq!(ledger.counts().processors_added, 2);
    }

    #[test]
    fn the_wake_protocol_leaves_no_idle_processor_while_threads_wait() {
        let mut ledger = granted();
        ledger.processor_added(OTHER);
        let Start::Added(first) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        let Start::Added(second) = ledger.start(OTHER, strand(2)) else {
            panic!()
        };
        // Not idle while threads wait.
        assert_eq!(ledger.go_idle(CPU, first, 3), Ok(false));
        assert_eq!(ledger.go_idle(CPU, first, 0), Ok(true));
        assert_eq!(ledger.go_idle(OTHER, second, 0), Ok(true));
        assert_eq!(ledger.counts().processor_is_idle, 2);
        // One thread waits: one processor wakes; the check passes.
        assert_eq!(ledger.settle(1), [strand(1)]);
        assert_eq!(ledger.counts().violations(), 0);
        // Had nobody run the protocol, the check would count it.
        ledger.check(1, 0);
        assert_eq!(ledger.counts().idle_with_ready, 1);
    }

    #[test]
    fn delivery_prefers_an_idle_processor_then_a_busy_one_other_than_the_caller() {
        let mut ledger = granted();
        ledger.processor_added(OTHER);
        let Start::Added(first) = ledger.start(CPU, strand(1)) else {
            panic!()
        };
        assert!(matches!(ledger.start(OTHER, strand(2)), Start::Added(_)));
        assert_eq!(ledger.delivery_target(Some(CPU)), Some(Ok(OTHER)));
        assert_eq!(ledger.delivery_target(Some(OTHER)), Some(Ok(CPU)));
        ledger.go_idle(CPU, first, 0).unwrap();
        assert_eq!(ledger.delivery_target(None), Some(Err(strand(1))));
        assert!(ledger.is_current(CPU, first));
        assert_eq!(Ledger::new(2).delivery_target(None), None);
    }

    #[test]
    fn reports_that_do_not_match_are_refused() {
        let mut ledger = granted();
        let wrong = ActivationId(99);
        assert_eq!(
            ledger.block(CPU, wrong, THREAD),
            Err(LedgerError::NotCurrent {
                cpu: CPU,
                activation: wrong
            })
        );
        assert!(ledger.give_up(CpuId(9), wrong, None).is_err());
        assert!(ledger.finish(CPU, wrong).is_err());
    }
}
