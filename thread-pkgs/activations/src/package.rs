//! The package's state machine: upcall handlers, thread operations, the scheduling that answers them, and the invariant check.

use alloc::{collections::BTreeMap, collections::VecDeque, vec::Vec};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{
    Action, ActivationId, Counters, CpuId, Delivery, Error, Place, SavedThread, ThreadId,
    ThreadState, Violation,
};

/// A processor granted to the package.
struct Processor {
    /// The activation it currently runs (the last upcall's).
    activation: ActivationId,
    /// The thread it runs; `None` when idle.
    thread: Option<ThreadId>,
    /// `ProcessorIsIdle` was sent since it last ran a thread.
    idle_reported: bool,
}

/// The package side of scheduler activations. Not internally synchronized: the kernel glue serializes calls.
pub struct Package {
    processors: BTreeMap<CpuId, Processor>,
    /// Activations blocked in the kernel, with their thread.
    blocked: BTreeMap<ActivationId, ThreadId>,
    threads: BTreeMap<ThreadId, ThreadState>,
    /// Ready threads that must finish a critical section: always run first.
    recovering: VecDeque<ThreadId>,
    ready: VecDeque<ThreadId>,
    /// Index of the next thread spawned (ids are never reused: generation 0).
    next_thread: u32,
    /// Processors asked for by `AddMoreProcessors` and not yet added.
    requested: u32,
    counters: Counters,
    /// Apart from `counters` so that the check can count itself through `&self`.
    invariant_checks: AtomicU64,
}

impl Default for Package {
    fn default() -> Self {
        Self::new()
    }
}

impl Package {
    /// A package with no processors and no threads.
    pub fn new() -> Self {
        Self {
            processors: BTreeMap::new(),
            blocked: BTreeMap::new(),
            threads: BTreeMap::new(),
            recovering: VecDeque::new(),
            ready: VecDeque::new(),
            next_thread: 0,
            requested: 0,
            counters: Counters::default(),
            invariant_checks: AtomicU64::new(0),
        }
    }

    /// A new ready thread, and what the package does about it (run it on an idle processor, or ask for one).
    pub fn spawn(&mut self) -> Result<(ThreadId, Vec<Action>), Error> {
        let thread = ThreadId {
            index: self.next_thread,
            generation: 0,
        };
        self.next_thread = self.next_thread.checked_add(1).ok_or(Error::Exhausted)?;
        let ready = ThreadState {
            place: Place::Ready,
            recovering: false,
        };
        self.threads.insert(thread, ready);
        self.ready.push_back(thread);
        self.counters.spawned += 1;
        Ok((thread, self.settle(None)))
    }

    /// The running `thread` finishes; its processor takes the next thread. Refused while it is recovering: it must leave its critical section first.
    pub fn exit(&mut self, thread: ThreadId) -> Result<Vec<Action>, Error> {
        let cpu = self.running_cpu(thread, false)?;
        self.processor_mut(cpu)?.thread = None;
        self.threads.remove(&thread);
        self.counters.exited += 1;
        Ok(self.settle(Some(cpu)))
    }

    /// The recovering `thread` has left its critical section: it goes to the back of the ready list and its processor takes the next thread (recovering ones first).
    pub fn critical_section_done(&mut self, thread: ThreadId) -> Result<Vec<Action>, Error> {
        let cpu = self.running_cpu(thread, true)?;
        self.processor_mut(cpu)?.thread = None;
        if let Some(state) = self.threads.get_mut(&thread) {
            state.recovering = false;
        }
        self.make_ready(SavedThread {
            thread,
            in_critical_section: false,
        });
        Ok(self.settle(Some(cpu)))
    }

    /// Upcall "processor added": `cpu` is granted to the package and runs `activation`.
    pub fn processor_added(
        &mut self,
        cpu: CpuId,
        activation: ActivationId,
    ) -> Result<Vec<Action>, Error> {
        if self.processors.contains_key(&cpu) {
            return Err(Error::CpuAlreadyGranted(cpu));
        }
        self.check_fresh(activation)?;
        let processor = Processor {
            activation,
            thread: None,
            idle_reported: false,
        };
        self.processors.insert(cpu, processor);
        self.requested = self.requested.saturating_sub(1);
        self.counters.processors_added += 1;
        Ok(self.settle(Some(cpu)))
    }

    /// Upcall "processor preempted": the kernel took `cpu`, which ran `preempted` with the thread in `saved` (if any); that thread goes back to the ready list. The upcall is delivered `on` another processor of the package, or, with `None`, when the package has no processor left (the kernel then delivers it once it adds one).
    pub fn processor_preempted(
        &mut self,
        cpu: CpuId,
        preempted: ActivationId,
        saved: Option<SavedThread>,
        on: Option<Delivery>,
    ) -> Result<Vec<Action>, Error> {
        let processor = self.processor(cpu)?;
        if processor.activation != preempted {
            return Err(Error::WrongActivation {
                cpu,
                activation: preempted,
            });
        }
        check_thread(processor.thread, saved)?;
        if let Some(on) = on {
            if on.cpu == cpu {
                return Err(Error::DeliveredOnPreemptedCpu(cpu));
            }
            self.check_delivery(on)?;
        }
        self.processors.remove(&cpu);
        if let Some(saved) = saved {
            self.make_ready(saved);
        }
        let first = on.map(|on| self.deliver(on));
        self.counters.processors_preempted += 1;
        Ok(self.settle(first))
    }

    /// Upcall "activation blocked": `thread` blocked in the kernel in `blocked`, the activation `cpu` ran; `cpu` now runs the `fresh` activation and takes another thread.
    pub fn activation_blocked(
        &mut self,
        cpu: CpuId,
        blocked: ActivationId,
        thread: ThreadId,
        fresh: ActivationId,
    ) -> Result<Vec<Action>, Error> {
        let processor = self.processor(cpu)?;
        if processor.activation != blocked {
            return Err(Error::WrongActivation {
                cpu,
                activation: blocked,
            });
        }
        let saved = SavedThread {
            thread,
            in_critical_section: false,
        };
        check_thread(processor.thread, Some(saved))?;
        if fresh == blocked {
            return Err(Error::ActivationInUse(fresh));
        }
        self.check_fresh(fresh)?;
        let processor = self.processor_mut(cpu)?;
        processor.activation = fresh;
        processor.thread = None;
        self.blocked.insert(blocked, thread);
        if let Some(state) = self.threads.get_mut(&thread) {
            state.place = Place::BlockedInKernel(blocked);
        }
        self.counters.activations_blocked += 1;
        Ok(self.settle(Some(cpu)))
    }

    /// Upcall "activation unblocked": the thread blocked in `activation` can continue; its state comes back in `saved` and it is made ready (recovering first if it was inside a critical section). Delivered `on` a processor of the package, or with `None` when it has none.
    pub fn activation_unblocked(
        &mut self,
        activation: ActivationId,
        saved: SavedThread,
        on: Option<Delivery>,
    ) -> Result<Vec<Action>, Error> {
        let blocked = self.blocked.get(&activation).copied();
        let Some(thread) = blocked else {
            return Err(Error::NotBlocked(activation));
        };
        check_thread(Some(thread), Some(saved))?;
        if let Some(on) = on {
            self.check_delivery(on)?;
        }
        self.blocked.remove(&activation);
        self.make_ready(saved);
        let first = on.map(|on| self.deliver(on));
        self.counters.activations_unblocked += 1;
        Ok(self.settle(first))
    }

    /// The thread's state.
    pub fn state(&self, thread: ThreadId) -> Result<ThreadState, Error> {
        self.threads
            .get(&thread)
            .copied()
            .ok_or(Error::UnknownThread(thread))
    }

    /// The thread `cpu` runs, if any.
    pub fn running_on(&self, cpu: CpuId) -> Result<Option<ThreadId>, Error> {
        self.processor(cpu).map(|processor| processor.thread)
    }

    /// The activation `cpu` runs.
    pub fn activation_on(&self, cpu: CpuId) -> Result<ActivationId, Error> {
        self.processor(cpu).map(|processor| processor.activation)
    }

    /// The processors granted to the package, in order.
    pub fn processors(&self) -> impl Iterator<Item = CpuId> + '_ {
        self.processors.keys().copied()
    }

    /// How many threads wait on the ready list (recovering ones included).
    pub fn waiting(&self) -> usize {
        self.recovering.len() + self.ready.len()
    }

    /// How many threads are live (not exited).
    pub fn live_threads(&self) -> usize {
        self.threads.len()
    }

    /// The running totals.
    pub fn counters(&self) -> Counters {
        Counters {
            invariant_checks: self.invariant_checks.load(Ordering::Relaxed),
            ..self.counters
        }
    }

    /// Checks, as after every handled upcall: no more running activations than processors (each processor runs its own, none of them blocked); no granted processor idle while threads wait; every thread in exactly one place, the one its state names.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        self.invariant_checks.fetch_add(1, Ordering::Relaxed);
        let fail = |problem| Err(Violation { problem });
        let mut running: Vec<ActivationId> =
            self.processors.values().map(|p| p.activation).collect();
        running.sort_unstable();
        running.dedup();
        if running.len() != self.processors.len()
            || running
                .iter()
                .any(|activation| self.blocked.contains_key(activation))
        {
            return fail("activations shared by processors, or running and blocked at once");
        }
        if self.waiting() > 0 && self.processors.values().any(|p| p.thread.is_none()) {
            return fail("a processor is idle while threads wait");
        }
        let mut places = BTreeMap::<ThreadId, u32>::new();
        let mut place = |thread: ThreadId, expected: Place, recovering: Option<bool>| match self
            .threads
            .get(&thread)
        {
            Some(state)
                if state.place == expected
                    && recovering.is_none_or(|flag| flag == state.recovering) =>
            {
                *places.entry(thread).or_default() += 1;
                Ok(())
            }
            _ => fail("a thread named where its state does not put it"),
        };
        for &thread in &self.recovering {
            place(thread, Place::Ready, Some(true))?;
        }
        for &thread in &self.ready {
            place(thread, Place::Ready, Some(false))?;
        }
        for (&cpu, processor) in &self.processors {
            if let Some(thread) = processor.thread {
                place(thread, Place::Running(cpu), None)?;
            }
        }
        for (&activation, &thread) in &self.blocked {
            place(thread, Place::BlockedInKernel(activation), None)?;
        }
        if places.len() != self.threads.len() || places.values().any(|&count| count != 1) {
            return fail("a thread in no place or in two");
        }
        Ok(())
    }

    fn processor(&self, cpu: CpuId) -> Result<&Processor, Error> {
        self.processors.get(&cpu).ok_or(Error::UnknownCpu(cpu))
    }

    fn processor_mut(&mut self, cpu: CpuId) -> Result<&mut Processor, Error> {
        self.processors.get_mut(&cpu).ok_or(Error::UnknownCpu(cpu))
    }

    /// The processor `thread` runs on, if it runs and its recovering mark is `recovering`.
    fn running_cpu(&self, thread: ThreadId, recovering: bool) -> Result<CpuId, Error> {
        let state = self.state(thread)?;
        match state.place {
            Place::Running(cpu) if state.recovering == recovering => Ok(cpu),
            _ => Err(Error::WrongState { thread, state }),
        }
    }

    /// Refuses an activation the package still knows as live.
    fn check_fresh(&self, activation: ActivationId) -> Result<(), Error> {
        let on_processor = self.processors.values().any(|p| p.activation == activation);
        if on_processor || self.blocked.contains_key(&activation) {
            return Err(Error::ActivationInUse(activation));
        }
        Ok(())
    }

    fn check_delivery(&self, on: Delivery) -> Result<(), Error> {
        check_thread(self.processor(on.cpu)?.thread, on.interrupted)?;
        self.check_fresh(on.activation)
    }

    /// Puts a checked delivery into effect: its processor runs the fresh activation and its interrupted thread is ready again. Returns the processor.
    fn deliver(&mut self, on: Delivery) -> CpuId {
        if let Some(processor) = self.processors.get_mut(&on.cpu) {
            processor.activation = on.activation;
            processor.thread = None;
        }
        if let Some(saved) = on.interrupted {
            self.make_ready(saved);
        }
        on.cpu
    }

    /// Puts a thread on the ready list: behind the recovering ones if it was stopped inside a critical section or is still recovering, else at the back.
    fn make_ready(&mut self, saved: SavedThread) {
        let Some(state) = self.threads.get_mut(&saved.thread) else {
            return;
        };
        let entering = saved.in_critical_section && !state.recovering;
        state.recovering |= entering;
        state.place = Place::Ready;
        if entering {
            self.counters.recoveries += 1;
        }
        if state.recovering {
            self.recovering.push_back(saved.thread);
        } else {
            self.ready.push_back(saved.thread);
        }
    }

    /// Gives waiting threads (recovering ones first) to idle processors, `first` before the others, then makes the downcalls: `AddMoreProcessors` for threads still waiting beyond those already asked for, `ProcessorIsIdle` once for each processor newly idle.
    fn settle(&mut self, first: Option<CpuId>) -> Vec<Action> {
        let mut actions = Vec::new();
        let others = self
            .processors
            .keys()
            .copied()
            .filter(|&cpu| Some(cpu) != first);
        let order: Vec<CpuId> = first.into_iter().chain(others).collect();
        for cpu in order {
            let Some(processor) = self.processors.get_mut(&cpu) else {
                continue;
            };
            if processor.thread.is_some() {
                continue;
            }
            let Some(thread) = self
                .recovering
                .pop_front()
                .or_else(|| self.ready.pop_front())
            else {
                break;
            };
            processor.thread = Some(thread);
            processor.idle_reported = false;
            if let Some(state) = self.threads.get_mut(&thread) {
                state.place = Place::Running(cpu);
                actions.push(Action::Run {
                    cpu,
                    thread,
                    recovering: state.recovering,
                });
            }
        }
        let waiting = u32::try_from(self.waiting()).unwrap_or(u32::MAX);
        if waiting > self.requested {
            actions.push(Action::AddMoreProcessors(waiting - self.requested));
            self.requested = waiting;
            self.counters.add_more_processors += 1;
        }
        for (&cpu, processor) in &mut self.processors {
            if processor.thread.is_none() && !processor.idle_reported {
                processor.idle_reported = true;
                // More processors than threads: cancel what was asked for.
                self.requested = 0;
                actions.push(Action::ProcessorIsIdle(cpu));
                self.counters.processor_is_idle += 1;
            }
        }
        actions
    }
}

/// Refuses a kernel report naming another thread than the package has there.
fn check_thread(expected: Option<ThreadId>, saved: Option<SavedThread>) -> Result<(), Error> {
    let reported = saved.map(|saved| saved.thread);
    if expected == reported {
        Ok(())
    } else {
        Err(Error::WrongThread { expected, reported })
    }
}
