//! Host tests of the package's queues, stealing, join/exit, sleep, Checkpoint/Resume and synchronization primitives.

use std::num::NonZeroU16;

use spindle_uthreads::{
    AcquireOutcome, CarrierId, Error, JoinOutcome, Package, ThreadId, ThreadState, WaitReason,
};

const FIRST: CarrierId = CarrierId(0);
const SECOND: CarrierId = CarrierId(1);
const THIRD: CarrierId = CarrierId(2);

fn new_package(carriers: u16) -> Package {
    Package::new(NonZeroU16::new(carriers).expect("at least one carrier"))
}

/// Spawns a thread on `carrier` and runs it there (the carrier must be idle with an empty queue).
fn running(package: &Package, carrier: CarrierId) -> ThreadId {
    let thread = package.spawn(Some(carrier)).unwrap();
    assert_eq!(package.next_for(carrier), Ok(Some(thread)));
    thread
}

/// Frees `carrier` by parking its thread, so that it can run another.
fn park_running(package: &Package, carrier: CarrierId) {
    let thread = package
        .running_on(carrier)
        .unwrap()
        .expect("a running thread");
    package.park(thread).unwrap();
}

#[test]
fn spawn_queues_on_the_hint_or_the_shortest_queue() {
    let package = new_package(3);
    let first = package.spawn(Some(SECOND)).unwrap();
    let second = package.spawn(Some(SECOND)).unwrap();
    let third = package.spawn(None).unwrap();
    assert_eq!(package.ready_len(SECOND), Ok(2));
    assert_eq!(
        package.ready_len(FIRST),
        Ok(1),
        "the shortest, lowest-numbered queue"
    );
    assert_eq!(
        package.next_for(SECOND),
        Ok(Some(first)),
        "local queue is FIFO"
    );
    assert_eq!(package.state(first), Ok(ThreadState::Running(SECOND)));
    assert_eq!(package.next_for(FIRST), Ok(Some(third)));
    assert_eq!(package.ready_len(SECOND), Ok(1));
    assert_eq!(package.state(second), Ok(ThreadState::Ready));
    assert_eq!(
        package.spawn(Some(CarrierId(3))),
        Err(Error::UnknownCarrier(CarrierId(3)))
    );
    assert_eq!(package.counters().spawned, 3);
    assert_eq!(package.counters().steals, 0);
    package.check_invariants().unwrap();
}

#[test]
fn an_idle_carrier_steals_the_head_of_the_longest_queue() {
    let package = new_package(3);
    let short = package.spawn(Some(FIRST)).unwrap();
    let long: Vec<ThreadId> = (0..3)
        .map(|_| package.spawn(Some(SECOND)).unwrap())
        .collect();
    assert_eq!(package.next_for(THIRD), Ok(Some(long[0])));
    assert_eq!(package.state(long[0]), Ok(ThreadState::Running(THIRD)));
    assert_eq!(package.counters().steals, 1);
    // The stolen thread now belongs to its thief: a yield requeues it there.
    package.yield_now(long[0]).unwrap();
    assert_eq!(package.ready_len(THIRD), Ok(1));
    assert_eq!(package.next_for(THIRD), Ok(Some(long[0])));
    assert_eq!(package.counters().steals, 1, "a local pick is no steal");
    assert_eq!(package.next_for(FIRST), Ok(Some(short)));
    package.check_invariants().unwrap();
    let empty = new_package(2);
    assert_eq!(empty.next_for(FIRST), Ok(None));
}

#[test]
fn a_busy_or_unknown_carrier_is_refused_a_pick() {
    let package = new_package(2);
    let thread = running(&package, FIRST);
    package.spawn(Some(FIRST)).unwrap();
    assert_eq!(
        package.next_for(FIRST),
        Err(Error::CarrierBusy {
            carrier: FIRST,
            running: thread
        })
    );
    assert_eq!(
        package.next_for(CarrierId(2)),
        Err(Error::UnknownCarrier(CarrierId(2)))
    );
    package.check_invariants().unwrap();
}

#[test]
fn yield_is_round_robin_and_counts_thread_to_thread_switches() {
    let package = new_package(1);
    let first = running(&package, FIRST);
    package.yield_now(first).unwrap();
    assert_eq!(
        package.next_for(FIRST),
        Ok(Some(first)),
        "alone, it runs again"
    );
    assert_eq!(package.counters().context_switches, 0);
    let second = package.spawn(Some(FIRST)).unwrap();
    package.yield_now(first).unwrap();
    assert_eq!(package.next_for(FIRST), Ok(Some(second)));
    package.yield_now(second).unwrap();
    assert_eq!(package.next_for(FIRST), Ok(Some(first)));
    assert_eq!(package.counters().context_switches, 2);
    assert_eq!(
        package.yield_now(second),
        Err(Error::WrongState {
            thread: second,
            state: ThreadState::Ready
        })
    );
    package.check_invariants().unwrap();
}

#[test]
fn reaped_ids_are_stale_and_slots_are_reused() {
    let package = new_package(1);
    let thread = running(&package, FIRST);
    assert_eq!(
        package.reap(thread),
        Err(Error::WrongState {
            thread,
            state: ThreadState::Running(FIRST)
        })
    );
    assert_eq!(package.exit(thread), Ok(Vec::new()));
    assert_eq!(package.state(thread), Ok(ThreadState::Exited));
    package.reap(thread).unwrap();
    assert_eq!(package.state(thread), Err(Error::UnknownThread(thread)));
    assert_eq!(package.yield_now(thread), Err(Error::UnknownThread(thread)));
    assert_eq!(package.reap(thread), Err(Error::UnknownThread(thread)));
    let successor = package.spawn(None).unwrap();
    assert_eq!(
        successor,
        ThreadId {
            index: thread.index,
            generation: thread.generation + 1
        }
    );
    let never = ThreadId {
        index: 7,
        generation: 0,
    };
    assert_eq!(package.make_ready(never), Err(Error::UnknownThread(never)));
    package.check_invariants().unwrap();
}

#[test]
fn join_waits_for_exit_and_exit_readies_the_joiners() {
    let package = new_package(2);
    let target = package.spawn(Some(SECOND)).unwrap();
    let waiter = running(&package, FIRST);
    assert_eq!(package.join(waiter, waiter), Err(Error::SelfJoin(waiter)));
    assert_eq!(package.join(waiter, target), Ok(JoinOutcome::MustWait));
    assert_eq!(
        package.state(waiter),
        Ok(ThreadState::Blocked(WaitReason::Join(target)))
    );
    assert_eq!(
        package.running_on(FIRST),
        Ok(None),
        "the joiner's carrier is free"
    );
    let second_waiter = running(&package, FIRST);
    assert_eq!(
        package.join(second_waiter, target),
        Ok(JoinOutcome::MustWait)
    );
    package.check_invariants().unwrap();
    assert_eq!(package.next_for(SECOND), Ok(Some(target)));
    assert_eq!(package.exit(target), Ok(vec![waiter, second_waiter]));
    assert_eq!(package.state(waiter), Ok(ThreadState::Ready));
    assert_eq!(
        package.ready_len(FIRST),
        Ok(2),
        "joiners go back to their own carrier"
    );
    assert_eq!(package.next_for(FIRST), Ok(Some(waiter)));
    assert_eq!(package.join(waiter, target), Ok(JoinOutcome::AlreadyExited));
    assert_eq!(package.counters().exited, 1);
    package.check_invariants().unwrap();
}

#[test]
fn sleepers_wake_in_deadline_order_when_due() {
    let package = new_package(1);
    let late = running(&package, FIRST);
    package.sleep_until(late, 300).unwrap();
    let early = running(&package, FIRST);
    package.sleep_until(early, 100).unwrap();
    let tied = running(&package, FIRST);
    package.sleep_until(tied, 100).unwrap();
    assert_eq!(
        package.state(late),
        Ok(ThreadState::Blocked(WaitReason::Sleep(300)))
    );
    assert_eq!(package.next_deadline(), Some(100));
    package.check_invariants().unwrap();
    assert_eq!(package.wake_due(99), Vec::new());
    assert_eq!(package.wake_due(200), vec![early, tied]);
    assert_eq!(package.next_deadline(), Some(300));
    assert_eq!(package.wake_due(300), vec![late]);
    assert_eq!(package.next_deadline(), None);
    assert_eq!(package.ready_len(FIRST), Ok(3));
    package.check_invariants().unwrap();
}

#[test]
fn resume_after_a_checkpoint_chooses_the_next_thread_not_the_preempted_one() {
    let package = new_package(2);
    let preempted = running(&package, FIRST);
    let waiting = package.spawn(Some(FIRST)).unwrap();
    assert_eq!(
        package.checkpoint(SECOND, preempted),
        Err(Error::NotOnCarrier {
            thread: preempted,
            carrier: SECOND
        })
    );
    package.checkpoint(FIRST, preempted).unwrap();
    assert_eq!(package.state(preempted), Ok(ThreadState::Ready));
    assert_eq!(package.resume(FIRST), Ok(Some(waiting)));
    package.checkpoint(FIRST, waiting).unwrap();
    assert_eq!(package.resume(FIRST), Ok(Some(preempted)));
    let counters = package.counters();
    assert_eq!((counters.preemptions, counters.context_switches), (2, 2));
    // Alone on the carrier, the preempted thread continues.
    package.exit(preempted).unwrap();
    assert_eq!(package.resume(FIRST), Ok(Some(waiting)));
    package.checkpoint(FIRST, waiting).unwrap();
    assert_eq!(package.resume(FIRST), Ok(Some(waiting)));
    package.check_invariants().unwrap();
}

#[test]
fn parked_threads_and_only_they_are_made_ready_explicitly() {
    let package = new_package(1);
    let parked = running(&package, FIRST);
    package.park(parked).unwrap();
    assert_eq!(
        package.state(parked),
        Ok(ThreadState::Blocked(WaitReason::Parked))
    );
    package.check_invariants().unwrap();
    package.make_ready(parked).unwrap();
    assert_eq!(
        package.make_ready(parked),
        Err(Error::WrongState {
            thread: parked,
            state: ThreadState::Ready
        })
    );
    let sleeper = package.next_for(FIRST).unwrap().unwrap();
    package.sleep_until(sleeper, 10).unwrap();
    let blocked = ThreadState::Blocked(WaitReason::Sleep(10));
    assert_eq!(
        package.make_ready(sleeper),
        Err(Error::WrongState {
            thread: sleeper,
            state: blocked
        })
    );
    package.check_invariants().unwrap();
}

#[test]
fn a_mutex_is_exclusive_and_handed_off_in_fifo_order() {
    let package = new_package(1);
    let mutex = package.new_mutex().unwrap();
    let owner = running(&package, FIRST);
    assert_eq!(package.lock(mutex, owner), Ok(AcquireOutcome::Acquired));
    assert_eq!(
        package.lock(mutex, owner),
        Err(Error::AlreadyOwner {
            mutex,
            thread: owner
        })
    );
    assert_eq!(package.exit(owner), Err(Error::HoldsMutexes(owner)));
    package.park(owner).unwrap();
    let waiters: Vec<ThreadId> = (0..3)
        .map(|_| {
            let waiter = running(&package, FIRST);
            assert_eq!(package.lock(mutex, waiter), Ok(AcquireOutcome::MustWait));
            waiter
        })
        .collect();
    assert_eq!(
        package.unlock(mutex, waiters[0]),
        Err(Error::NotOwner {
            mutex,
            thread: waiters[0]
        })
    );
    package.check_invariants().unwrap();
    // The owner may unlock from any state (here parked); each unlock hands the mutex to the next in line.
    assert_eq!(package.unlock(mutex, owner), Ok(Some(waiters[0])));
    assert_eq!(package.mutex_owner(mutex), Ok(Some(waiters[0])));
    assert_eq!(package.state(waiters[0]), Ok(ThreadState::Ready));
    assert_eq!(
        package.state(waiters[1]),
        Ok(ThreadState::Blocked(WaitReason::Mutex(mutex)))
    );
    assert_eq!(package.unlock(mutex, waiters[0]), Ok(Some(waiters[1])));
    assert_eq!(package.unlock(mutex, waiters[1]), Ok(Some(waiters[2])));
    assert_eq!(package.unlock(mutex, waiters[2]), Ok(None));
    assert_eq!(package.mutex_owner(mutex), Ok(None));
    let unknown = spindle_uthreads::MutexId(9);
    let next = package.next_for(FIRST).unwrap().unwrap();
    assert_eq!(
        package.lock(unknown, next),
        Err(Error::UnknownMutex(unknown))
    );
    package.check_invariants().unwrap();
}

#[test]
fn condvar_wait_releases_the_mutex_and_signals_requeue_on_it() {
    let package = new_package(1);
    let mutex = package.new_mutex().unwrap();
    let condvar = package.new_condvar().unwrap();
    let first = running(&package, FIRST);
    assert_eq!(
        package.wait(condvar, mutex, first),
        Err(Error::NotOwner {
            mutex,
            thread: first
        })
    );
    package.lock(mutex, first).unwrap();
    park_running(&package, FIRST);
    let contender = running(&package, FIRST);
    assert_eq!(package.lock(mutex, contender), Ok(AcquireOutcome::MustWait));
    package.make_ready(first).unwrap();
    assert_eq!(package.next_for(FIRST), Ok(Some(first)));
    // Waiting hands the mutex to the contender.
    assert_eq!(package.wait(condvar, mutex, first), Ok(Some(contender)));
    assert_eq!(
        package.state(first),
        Ok(ThreadState::Blocked(WaitReason::Condvar(condvar)))
    );
    assert_eq!(package.next_for(FIRST), Ok(Some(contender)));
    let second = package.spawn(Some(FIRST)).unwrap();
    package.yield_now(contender).unwrap();
    assert_eq!(package.next_for(FIRST), Ok(Some(second)));
    assert_eq!(package.lock(mutex, second), Ok(AcquireOutcome::MustWait));
    // `second` waits for the mutex the contender holds; let the contender wait too, handing it over.
    assert_eq!(package.next_for(FIRST), Ok(Some(contender)));
    assert_eq!(package.wait(condvar, mutex, contender), Ok(Some(second)));
    package.check_invariants().unwrap();
    // Signal while the mutex is held: the first waiter moves to the mutex's queue.
    assert_eq!(package.signal(condvar), Ok(None));
    assert_eq!(
        package.state(first),
        Ok(ThreadState::Blocked(WaitReason::Mutex(mutex)))
    );
    assert_eq!(package.unlock(mutex, second), Ok(Some(first)));
    assert_eq!(package.unlock(mutex, first), Ok(None));
    // Broadcast with the mutex free: the remaining waiter gets it at once.
    assert_eq!(package.broadcast(condvar), Ok(vec![contender]));
    assert_eq!(package.mutex_owner(mutex), Ok(Some(contender)));
    assert_eq!(package.signal(condvar), Ok(None), "nobody waits");
    package.check_invariants().unwrap();
}

#[test]
fn a_semaphore_counts_and_hands_units_over_in_fifo_order() {
    let package = new_package(1);
    let semaphore = package.new_semaphore(1).unwrap();
    let holder = running(&package, FIRST);
    assert_eq!(
        package.down(semaphore, holder),
        Ok(AcquireOutcome::Acquired)
    );
    assert_eq!(
        package.down(semaphore, holder),
        Ok(AcquireOutcome::MustWait)
    );
    let second = running(&package, FIRST);
    assert_eq!(
        package.down(semaphore, second),
        Ok(AcquireOutcome::MustWait)
    );
    package.check_invariants().unwrap();
    assert_eq!(package.up(semaphore), Ok(Some(holder)));
    assert_eq!(package.up(semaphore), Ok(Some(second)));
    assert_eq!(package.up(semaphore), Ok(None));
    let third = package.next_for(FIRST).unwrap().unwrap();
    assert_eq!(package.down(semaphore, third), Ok(AcquireOutcome::Acquired));
    let full = package.new_semaphore(u32::MAX).unwrap();
    assert_eq!(package.up(full), Err(Error::SemaphoreOverflow(full)));
    package.check_invariants().unwrap();
}

#[test]
fn the_package_is_shared_by_several_cpus_at_once() {
    const CPUS: u16 = 4;
    const THREADS: usize = 400;
    const ROUNDS: u32 = 5;
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Package>();
    let package = new_package(CPUS);
    let mutex = package.new_mutex().unwrap();
    for _ in 0..THREADS {
        package.spawn(None).unwrap();
    }
    let rounds_of = std::sync::Mutex::new(std::collections::HashMap::<ThreadId, u32>::new());
    std::thread::scope(|scope| {
        for cpu in 0..CPUS {
            let (package, rounds_of) = (&package, &rounds_of);
            scope.spawn(move || {
                while package.counters().exited < THREADS as u64 {
                    let Some(thread) = package.next_for(CarrierId(cpu)).unwrap() else {
                        std::thread::yield_now();
                        continue;
                    };
                    // Only this CPU runs `thread` now, so nobody else changes whether it owns the mutex.
                    let owns = package.mutex_owner(mutex) == Ok(Some(thread));
                    if !owns && package.lock(mutex, thread).unwrap() == AcquireOutcome::MustWait {
                        continue; // an unlock hands the mutex over and readies it
                    }
                    package.unlock(mutex, thread).unwrap();
                    let mut rounds = rounds_of.lock().unwrap();
                    let done = rounds.entry(thread).or_default();
                    *done += 1;
                    if *done >= ROUNDS {
                        package.exit(thread).unwrap();
                    } else {
                        package.yield_now(thread).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(package.counters().exited, THREADS as u64);
    package.check_invariants().unwrap();
}
