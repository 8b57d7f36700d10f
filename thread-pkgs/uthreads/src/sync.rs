//! Mutexes, condition variables and counting semaphores as FIFO wait queues of thread ids, living in the package's state.

use alloc::{collections::VecDeque, vec::Vec};

use crate::package::State;
use crate::{
    AcquireOutcome, CondvarId, Error, MutexId, Package, SemaphoreId, ThreadId, ThreadState,
    WaitReason,
};

/// A mutex: its owner and the threads waiting for it, in arrival order.
#[derive(Default)]
pub(crate) struct MutexRecord {
    pub(crate) owner: Option<ThreadId>,
    pub(crate) waiters: VecDeque<ThreadId>,
}

/// A condition variable: its waiters, each with the mutex it must re-acquire.
#[derive(Default)]
pub(crate) struct CondvarRecord {
    pub(crate) waiters: VecDeque<(ThreadId, MutexId)>,
}

/// A counting semaphore: free units and the threads waiting for one.
pub(crate) struct SemaphoreRecord {
    count: u32,
    pub(crate) waiters: VecDeque<ThreadId>,
}

/// A new object's index, refused once `u32` ids run out.
fn next_index<T>(objects: &[T]) -> Result<u32, Error> {
    u32::try_from(objects.len()).map_err(|_| Error::Exhausted)
}

impl State {
    fn mutex(&mut self, id: MutexId) -> Result<&mut MutexRecord, Error> {
        self.mutexes
            .get_mut(id.0 as usize)
            .ok_or(Error::UnknownMutex(id))
    }

    /// Gives a free mutex to `thread` (made ready), or queues `thread` for it.
    /// Returns the thread if it was made ready.
    fn acquire_or_wait(&mut self, mutex: MutexId, thread: ThreadId) -> Option<ThreadId> {
        let record = &mut self.mutexes[mutex.0 as usize];
        if record.owner.is_some() {
            record.waiters.push_back(thread);
            if let Ok(waiter) = self.thread_mut(thread) {
                waiter.state = ThreadState::Blocked(WaitReason::Mutex(mutex));
            }
            return None;
        }
        record.owner = Some(thread);
        if let Ok(owner) = self.thread_mut(thread) {
            owner.mutexes_held += 1;
        }
        self.make_ready(thread);
        Some(thread)
    }

    /// Takes the mutex from its owner (checked by the caller) and hands it to the first waiter, made ready; returns that waiter.
    fn release(&mut self, mutex: MutexId, owner: ThreadId) -> Option<ThreadId> {
        if let Ok(record) = self.thread_mut(owner) {
            record.mutexes_held -= 1;
        }
        let record = &mut self.mutexes[mutex.0 as usize];
        record.owner = None;
        let next = record.waiters.pop_front()?;
        self.acquire_or_wait(mutex, next)
    }

    /// Refuses `thread` unless it owns `mutex`.
    fn check_owner(&mut self, mutex: MutexId, thread: ThreadId) -> Result<(), Error> {
        if self.mutex(mutex)?.owner == Some(thread) {
            Ok(())
        } else {
            Err(Error::NotOwner { mutex, thread })
        }
    }
}

impl Package {
    /// A new, unlocked mutex.
    pub fn new_mutex(&self) -> Result<MutexId, Error> {
        self.locked(|state| {
            let id = MutexId(next_index(&state.mutexes)?);
            state.mutexes.push(MutexRecord::default());
            Ok(id)
        })
    }

    /// A new condition variable with no waiters.
    pub fn new_condvar(&self) -> Result<CondvarId, Error> {
        self.locked(|state| {
            let id = CondvarId(next_index(&state.condvars)?);
            state.condvars.push(CondvarRecord::default());
            Ok(id)
        })
    }

    /// A new counting semaphore holding `initial` units.
    pub fn new_semaphore(&self, initial: u32) -> Result<SemaphoreId, Error> {
        self.locked(|state| {
            let id = SemaphoreId(next_index(&state.semaphores)?);
            state.semaphores.push(SemaphoreRecord {
                count: initial,
                waiters: VecDeque::new(),
            });
            Ok(id)
        })
    }

    /// The running `thread` takes `mutex`, or queues for it (FIFO) and blocks.
    pub fn lock(&self, mutex: MutexId, thread: ThreadId) -> Result<AcquireOutcome, Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            let record = state.mutex(mutex)?;
            match record.owner {
                Some(owner) if owner == thread => Err(Error::AlreadyOwner { mutex, thread }),
                Some(_) => {
                    record.waiters.push_back(thread);
                    let blocked = ThreadState::Blocked(WaitReason::Mutex(mutex));
                    state.stop_running(thread, carrier, blocked);
                    Ok(AcquireOutcome::MustWait)
                }
                None => {
                    record.owner = Some(thread);
                    state.thread_mut(thread)?.mutexes_held += 1;
                    Ok(AcquireOutcome::Acquired)
                }
            }
        })
    }

    /// `thread`, the owner, releases `mutex`; the first waiter, if any, becomes the owner, is made ready and is returned.
    pub fn unlock(&self, mutex: MutexId, thread: ThreadId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| {
            state.check_owner(mutex, thread)?;
            Ok(state.release(mutex, thread))
        })
    }

    /// The running `thread`, owner of `mutex`, releases it and waits on `condvar`. Returns the mutex's next owner, made ready, if any.
    pub fn wait(
        &self,
        condvar: CondvarId,
        mutex: MutexId,
        thread: ThreadId,
    ) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            state.check_owner(mutex, thread)?;
            state
                .condvars
                .get_mut(condvar.0 as usize)
                .ok_or(Error::UnknownCondvar(condvar))?
                .waiters
                .push_back((thread, mutex));
            let next_owner = state.release(mutex, thread);
            let blocked = ThreadState::Blocked(WaitReason::Condvar(condvar));
            state.stop_running(thread, carrier, blocked);
            Ok(next_owner)
        })
    }

    /// Moves `condvar`'s first waiter to re-acquire its mutex: returns it if the mutex was free (it then owns it and is ready), `None` if it now waits for the mutex or nobody waited.
    pub fn signal(&self, condvar: CondvarId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| {
            let first = state
                .condvars
                .get_mut(condvar.0 as usize)
                .ok_or(Error::UnknownCondvar(condvar))?
                .waiters
                .pop_front();
            Ok(first.and_then(|(thread, mutex)| state.acquire_or_wait(mutex, thread)))
        })
    }

    /// Moves every waiter of `condvar`, in order, to re-acquire its mutex; returns those made ready.
    pub fn broadcast(&self, condvar: CondvarId) -> Result<Vec<ThreadId>, Error> {
        self.locked(|state| {
            let waiters = core::mem::take(
                &mut state
                    .condvars
                    .get_mut(condvar.0 as usize)
                    .ok_or(Error::UnknownCondvar(condvar))?
                    .waiters,
            );
            Ok(waiters
                .into_iter()
                .filter_map(|(thread, mutex)| state.acquire_or_wait(mutex, thread))
                .collect())
        })
    }

    /// The running `thread` takes a unit of `semaphore`, or queues for one (FIFO) and blocks.
    pub fn down(&self, semaphore: SemaphoreId, thread: ThreadId) -> Result<AcquireOutcome, Error> {
        self.locked(|state| {
            let carrier = state.running_carrier(thread)?;
            let record = state
                .semaphores
                .get_mut(semaphore.0 as usize)
                .ok_or(Error::UnknownSemaphore(semaphore))?;
            if record.count > 0 {
                record.count -= 1;
                return Ok(AcquireOutcome::Acquired);
            }
            record.waiters.push_back(thread);
            let blocked = ThreadState::Blocked(WaitReason::Semaphore(semaphore));
            state.stop_running(thread, carrier, blocked);
            Ok(AcquireOutcome::MustWait)
        })
    }

    /// Returns a unit to `semaphore`: handed straight to the first waiter (made ready and returned) if there is one.
    pub fn up(&self, semaphore: SemaphoreId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| {
            let record = state
                .semaphores
                .get_mut(semaphore.0 as usize)
                .ok_or(Error::UnknownSemaphore(semaphore))?;
            if let Some(waiter) = record.waiters.pop_front() {
                state.make_ready(waiter);
                return Ok(Some(waiter));
            }
            record.count = record
                .count
                .checked_add(1)
                .ok_or(Error::SemaphoreOverflow(semaphore))?;
            Ok(None)
        })
    }

    /// The thread owning `mutex`, if any.
    pub fn mutex_owner(&self, mutex: MutexId) -> Result<Option<ThreadId>, Error> {
        self.locked(|state| state.mutex(mutex).map(|record| record.owner))
    }
}
