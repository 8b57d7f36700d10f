//! The thread table, per-carrier ready queues with stealing, join/exit, sleep, Checkpoint/Resume and the invariant check.

use alloc::{collections::VecDeque, vec, vec::Vec};
use core::num::NonZeroU16;

use crate::sync::{CondvarRecord, MutexRecord, SemaphoreRecord};
use crate::{
    CarrierId, CondvarId, Counters, Error, JoinOutcome, MutexId, SemaphoreId, ThreadId,
    ThreadState, Violation, WaitReason,
};

/// One live (or exited, not yet reaped) thread.
pub(crate) struct ThreadRecord {
    pub(crate) state: ThreadState,
    /// The carrier whose queue it joins when made ready: the last it ran on.
    carrier: CarrierId,
    /// Threads blocked in `join` on this one.
    joiners: Vec<ThreadId>,
    /// Mutexes it owns; it may not exit while this is not zero.
    pub(crate) mutexes_held: u32,
}

/// A thread-table slot; `generation` tells its successive threads apart.
struct Slot {
    generation: u32,
    thread: Option<ThreadRecord>,
}

/// One carrier's view: its FIFO ready queue, what it runs, what it ran last.
#[derive(Default)]
struct Carrier {
    ready: VecDeque<ThreadId>,
    running: Option<ThreadId>,
    last_ran: Option<ThreadId>,
}

/// Everything behind the package's lock.
pub(crate) struct State {
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    carriers: Vec<Carrier>,
    /// Sleeping threads sorted by deadline, FIFO among equal deadlines.
    sleepers: Vec<(u64, ThreadId)>,
    pub(crate) mutexes: Vec<MutexRecord>,
    pub(crate) condvars: Vec<CondvarRecord>,
    pub(crate) semaphores: Vec<SemaphoreRecord>,
    counters: Counters,
}

/// The thread package: all of its state behind one spin lock.
///
/// One lock rather than one per queue because nearly every operation moves a
/// thread between a queue and a state and both must change together; each
/// holds the lock for a few queue operations (a steal also scans the N
/// queue lengths).
pub struct Package {
    state: spin::Mutex<State>,
}

impl State {
    pub(crate) fn thread(&self, id: ThreadId) -> Result<&ThreadRecord, Error> {
        self.slots
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.thread.as_ref())
            .ok_or(Error::UnknownThread(id))
    }

    pub(crate) fn thread_mut(&mut self, id: ThreadId) -> Result<&mut ThreadRecord, Error> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
            .and_then(|slot| slot.thread.as_mut())
            .ok_or(Error::UnknownThread(id))
    }

    fn carrier(&self, id: CarrierId) -> Result<&Carrier, Error> {
        self.carriers
            .get(usize::from(id.0))
            .ok_or(Error::UnknownCarrier(id))
    }

    /// The carrier the thread runs on, or `WrongState` if it is not running.
    pub(crate) fn running_carrier(&self, id: ThreadId) -> Result<CarrierId, Error> {
        match self.thread(id)?.state {
            ThreadState::Running(carrier) => Ok(carrier),
            state => Err(Error::WrongState { thread: id, state }),
        }
    }

    /// Takes a running thread (checked by the caller) off its carrier into `state`.
    pub(crate) fn stop_running(&mut self, id: ThreadId, carrier: CarrierId, state: ThreadState) {
        self.carriers[usize::from(carrier.0)].running = None;
        if let Ok(thread) = self.thread_mut(id) {
            thread.state = state;
        }
    }

    /// Marks a thread (checked by the caller) ready at the back of its carrier's queue.
    pub(crate) fn make_ready(&mut self, id: ThreadId) {
        if let Ok(thread) = self.thread_mut(id) {
            thread.state = ThreadState::Ready;
            let carrier = usize::from(thread.carrier.0);
            self.carriers[carrier].ready.push_back(id);
        }
    }

    /// Running → Ready at the back of its own carrier's queue, the carrier left free.
    fn requeue_running(&mut self, id: ThreadId, carrier: CarrierId) {
        self.stop_running(id, carrier, ThreadState::Ready);
        self.carriers[usize::from(carrier.0)].ready.push_back(id);
    }

    /// The local queue's head, else the head of the longest other queue.
    fn pick(&mut self, carrier: CarrierId) -> Result<Option<ThreadId>, Error> {
        if let Some(running) = self.carrier(carrier)?.running {
            return Err(Error::CarrierBusy { carrier, running });
        }
        let local = usize::from(carrier.0);
        let picked = match self.carriers[local].ready.pop_front() {
            Some(id) => id,
            None => {
                // Longest queue, lowest index among equals; its head is the
                // thread that has waited longest there.
                let victim = (0..self.carriers.len())
                    .filter(|&index| !self.carriers[index].ready.is_empty())
                    .max_by_key(|&index| (self.carriers[index].ready.len(), usize::MAX - index));
                let stolen = victim.and_then(|index| self.carriers[index].ready.pop_front());
                let Some(id) = stolen else {
                    return Ok(None);
                };
                self.counters.steals += 1;
                id
            }
        };
        if let Ok(thread) = self.thread_mut(picked) {
            thread.state = ThreadState::Running(carrier);
            thread.carrier = carrier;
        }
        let slot = &mut self.carriers[local];
        if slot.last_ran.is_some_and(|last| last != picked) {
            self.counters.context_switches += 1;
        }
        slot.running = Some(picked);
        slot.last_ran = Some(picked);
        Ok(Some(picked))
    }

    /// Counts the places (queues, carriers) that name each thread, checking that each names the state the thread is in, then that each thread is named exactly where its state says.
    fn check(&self) -> Result<(), Violation> {
        let fail = |thread, problem| Err(Violation { thread, problem });
        let mut places = vec![0_u32; self.slots.len()];
        let mut owned = vec![0_u32; self.slots.len()];
        let mut place = |thread: ThreadId, expected: ThreadState| match self.thread(thread) {
            Ok(record) if record.state == expected => {
                places[thread.index as usize] += 1;
                Ok(())
            }
            _ => fail(
                thread,
                "named by a queue or carrier that its state does not name",
            ),
        };
        for (index, carrier) in self.carriers.iter().enumerate() {
            let carrier_id = CarrierId(index as u16);
            for &thread in &carrier.ready {
                if self.thread(thread).map(|record| record.carrier) != Ok(carrier_id) {
                    return fail(thread, "queued on a carrier not its own");
                }
                place(thread, ThreadState::Ready)?;
            }
            if let Some(thread) = carrier.running {
                place(thread, ThreadState::Running(carrier_id))?;
            }
        }
        for (index, mutex) in self.mutexes.iter().enumerate() {
            let blocked = ThreadState::Blocked(WaitReason::Mutex(MutexId(index as u32)));
            for &thread in &mutex.waiters {
                place(thread, blocked)?;
            }
            if let Some(owner) = mutex.owner {
                match self.thread(owner) {
                    Ok(record) if record.state != ThreadState::Exited => {}
                    _ => return fail(owner, "a mutex owned by a dead thread"),
                }
                owned[owner.index as usize] += 1;
            }
        }
        for (index, condvar) in self.condvars.iter().enumerate() {
            let blocked = ThreadState::Blocked(WaitReason::Condvar(CondvarId(index as u32)));
            for &(thread, _) in &condvar.waiters {
                place(thread, blocked)?;
            }
        }
        for (index, semaphore) in self.semaphores.iter().enumerate() {
            let blocked = ThreadState::Blocked(WaitReason::Semaphore(SemaphoreId(index as u32)));
            for &thread in &semaphore.waiters {
                place(thread, blocked)?;
            }
        }
        for (position, &(deadline, thread)) in self.sleepers.iter().enumerate() {
            if position > 0 && self.sleepers[position - 1].0 > deadline {
                return fail(thread, "sleepers out of deadline order");
            }
            place(thread, ThreadState::Blocked(WaitReason::Sleep(deadline)))?;
        }
        let live = self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let id = ThreadId {
                index: index as u32,
                generation: slot.generation,
            };
            slot.thread.as_ref().map(|record| (id, record))
        });
        for (target, record) in live.clone() {
            if record.state == ThreadState::Exited && !record.joiners.is_empty() {
                return fail(target, "exited with joiners left waiting");
            }
            for &thread in &record.joiners {
                place(thread, ThreadState::Blocked(WaitReason::Join(target)))?;
            }
        }
        for (thread, record) in live {
            let expected = match record.state {
                ThreadState::Exited | ThreadState::Blocked(WaitReason::Parked) => 0,
                _ => 1,
            };
            if places[thread.index as usize] != expected {
                return fail(thread, "not in exactly the one place its state names");
            }
            if owned[thread.index as usize] != record.mutexes_held {
                return fail(thread, "wrong count of mutexes held");
            }
        }
        Ok(())
    }
}

impl Package {
    /// A package running on `carriers` carriers, numbered `0..carriers`.
    pub fn new(carriers: NonZeroU16) -> Self {
        let carriers = (0..carriers.get()).map(|_| Carrier::default()).collect();
        let state = State {
            slots: Vec::new(),
            free_slots: Vec::new(),
            carriers,
            sleepers: Vec::new(),
            mutexes: Vec::new(),
            condvars: Vec::new(),
            semaphores: Vec::new(),
            counters: Counters::default(),
        };
        Self {
            state: spin::Mutex::new(state),
        }
    }

    /// Runs `operation` under the package's lock.
    pub(crate) fn locked<R>(&self, operation: impl FnOnce(&mut State) -> R) -> R {
        operation(&mut self.state.lock())
    }

    /// How many carriers the package runs on.
    pub fn carrier_count(&self) -> u16 {
        self.locked(|state| state.carriers.len() as u16)
    }

    /// A new thread, ready at the back of `carrier_hint`'s queue, or of the shortest queue when there is no hint.
    pub fn spawn(&self, carrier_hint: Option<CarrierId>) -> Result<ThreadId, Error> {
        self.locked(|state| {
            let carrier = match carrier_hint {
                Some(carrier) => state.carrier(carrier).map(|_| carrier)?,
                None => {
                    let shortest = (0..state.carriers.len())
                        .min_by_key(|&index| state.carriers[index].ready.len())
                        .unwrap_or(0);
                    CarrierId(shortest as u16)
                }
            };
            let thread = ThreadRecord {
                state: ThreadState::Ready,
                carrier,
                joiners: Vec::new(),
                mutexes_held: 0,
            };
            let id = match state.free_slots.pop() {
                Some(index) => {
                    let slot = &mut state.slots[index as usize];
                    slot.thread = Some(thread);
                    ThreadId {
                        index,
                        generation: slot.generation,
                    }
                }
                None => {
                    let index = u32::try_from(state.slots.len()).map_err(|_| Error::Exhausted)?;
                    state.slots.push(Slot {
                        generation: 0,
                        thread: Some(thread),
                    });
                    ThreadId {
                        index,
                        generation: 0,
                    }
                }
            };
            state.carriers[usize::from(carrier.0)].ready.push_back(id);
            state.counters.spawned += 1;
            Ok(id)
        })
    }

    /// The running `thread` finishes. Its joiners are made ready (at the back of their carriers' queues) and returned, so the glue can wake their carriers.
    pub fn exit(&self, thread: ThreadId) -> Result<Vec<ThreadId>, Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            let record = state.thread_mut(thread)?;
            if record.mutexes_held > 0 {
                return Err(Error::HoldsMutexes(thread));
            }
            let joiners = core::mem::take(&mut record.joiners);
            state.stop_running(thread, carrier, ThreadState::Exited);
            for &joiner in &joiners {
                state.make_ready(joiner);
            }
            state.counters.exited += 1;
            Ok(joiners)
        })
    }

    /// Frees an exited thread's slot; its id, and every copy of it, becomes stale.
    pub fn reap(&self, thread: ThreadId) -> Result<(), Error> {
        self.locked(|state| {
            let current = state.thread(thread)?.state;
            if current != ThreadState::Exited {
                return Err(Error::WrongState {
                    thread,
                    state: current,
                });
            }
            let slot = &mut state.slots[thread.index as usize];
            slot.thread = None;
            slot.generation = slot.generation.wrapping_add(1);
            state.free_slots.push(thread.index);
            Ok(())
        })
    }

    /// The running `waiter` waits for `target` to exit, unless it already has.
    pub fn join(&self, waiter: ThreadId, target: ThreadId) -> Result<JoinOutcome, Error> {
        self.locked(|state| {
            if waiter == target {
                return Err(Error::SelfJoin(waiter));
            }
            let carrier = state.running_carrier(waiter)?;
            let target_record = state.thread_mut(target)?;
            if target_record.state == ThreadState::Exited {
                return Ok(JoinOutcome::AlreadyExited);
            }
            target_record.joiners.push(waiter);
            let blocked = ThreadState::Blocked(WaitReason::Join(target));
            state.stop_running(waiter, carrier, blocked);
            Ok(JoinOutcome::MustWait)
        })
    }

    /// The thread `carrier` runs next: its own queue's head, else one stolen from the head of the longest other queue. The thread becomes running there. `CarrierBusy` if the carrier still runs a thread.
    pub fn next_for(&self, carrier: CarrierId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| state.pick(carrier))
    }

    /// The running `thread` gives up its carrier and goes to the back of that carrier's queue.
    pub fn yield_now(&self, thread: ThreadId) -> Result<(), Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            state.requeue_running(thread, carrier);
            Ok(())
        })
    }

    /// The running `thread` blocks with no queue until [`Package::make_ready`] (e.g. it blocked in the kernel).
    pub fn park(&self, thread: ThreadId) -> Result<(), Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            state.stop_running(thread, carrier, ThreadState::Blocked(WaitReason::Parked));
            Ok(())
        })
    }

    /// A parked thread becomes ready at the back of its carrier's queue. Threads blocked on a wait queue are refused: they leave it only through their primitive.
    pub fn make_ready(&self, thread: ThreadId) -> Result<(), Error> {
        self.locked(|state| match state.thread(thread)?.state {
            ThreadState::Blocked(WaitReason::Parked) => {
                state.make_ready(thread);
                Ok(())
            }
            current => Err(Error::WrongState {
                thread,
                state: current,
            }),
        })
    }

    /// The running `thread` sleeps until the clock reaches `deadline_ns`.
    pub fn sleep_until(&self, thread: ThreadId, deadline_ns: u64) -> Result<(), Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            let position = state
                .sleepers
                .partition_point(|&(deadline, _)| deadline <= deadline_ns);
            state.sleepers.insert(position, (deadline_ns, thread));
            let blocked = ThreadState::Blocked(WaitReason::Sleep(deadline_ns));
            state.stop_running(thread, carrier, blocked);
            Ok(())
        })
    }

    /// Makes ready, in deadline order, every sleeper whose deadline is at or before `now_ns`, and returns them.
    pub fn wake_due(&self, now_ns: u64) -> Vec<ThreadId> {
        self.locked(|state| {
            let due = state
                .sleepers
                .partition_point(|&(deadline, _)| deadline <= now_ns);
            let woken: Vec<ThreadId> = state.sleepers.drain(..due).map(|(_, id)| id).collect();
            for &id in &woken {
                state.make_ready(id);
            }
            woken
        })
    }

    /// The earliest sleeper's deadline, for the glue's timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.locked(|state| state.sleepers.first().map(|&(deadline, _)| deadline))
    }

    /// Checkpoint event: `carrier`'s strand was preempted while running `running`, whose state the caller saved. The thread goes back to the end of the carrier's queue.
    pub fn checkpoint(&self, carrier: CarrierId, running: ThreadId) -> Result<(), Error> {
        self.locked(|state| {
            if state.carrier(carrier)?.running != Some(running) {
                return Err(Error::NotOnCarrier {
                    thread: running,
                    carrier,
                });
            }
            state.requeue_running(running, carrier);
            state.counters.preemptions += 1;
            Ok(())
        })
    }

    /// Resume event: the thread `carrier` continues with, chosen round-robin as by [`Package::next_for`], so a checkpointed thread runs again only after those queued before it.
    pub fn resume(&self, carrier: CarrierId) -> Result<Option<ThreadId>, Error> {
        self.next_for(carrier)
    }

    /// The thread's state.
    pub fn state(&self, thread: ThreadId) -> Result<ThreadState, Error> {
        self.locked(|state| state.thread(thread).map(|record| record.state))
    }

    /// The thread `carrier` runs, if any.
    pub fn running_on(&self, carrier: CarrierId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| state.carrier(carrier).map(|slot| slot.running))
    }

    /// How many threads wait in `carrier`'s ready queue.
    pub fn ready_len(&self, carrier: CarrierId) -> Result<usize, Error> {
        self.locked(|state| state.carrier(carrier).map(|slot| slot.ready.len()))
    }

    /// The running totals.
    pub fn counters(&self) -> Counters {
        self.locked(|state| state.counters)
    }

    /// Checks that every thread is in exactly the one place its state names: one ready queue (its carrier's) if ready, one carrier if running, one wait queue if blocked (none if parked), none if exited; that mutex owners are live and their counts right; that sleepers are in deadline order.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        self.locked(|state| {
            state.counters.invariant_checks += 1;
            state.check()
        })
    }
}
