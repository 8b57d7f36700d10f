//! Host tests of every upcall order the kernel can produce, critical-section recovery, the downcalls, and refused reports.

use spindle_activations::{
    Action, ActivationId, CpuId, Delivery, Error, Package, Place, SavedThread, ThreadId,
    ThreadState,
};

const CPU0: CpuId = CpuId(0);
const CPU1: CpuId = CpuId(1);
const CPU2: CpuId = CpuId(2);
const ACTIVATION0: ActivationId = ActivationId(100);
const ACTIVATION1: ActivationId = ActivationId(101);
const ACTIVATION2: ActivationId = ActivationId(102);
const ACTIVATION3: ActivationId = ActivationId(103);

fn run(cpu: CpuId, thread: ThreadId) -> Action {
    Action::Run {
        cpu,
        thread,
        recovering: false,
    }
}

fn recover(cpu: CpuId, thread: ThreadId) -> Action {
    Action::Run {
        cpu,
        thread,
        recovering: true,
    }
}

fn saved(thread: ThreadId, in_critical_section: bool) -> SavedThread {
    SavedThread {
        thread,
        in_critical_section,
    }
}

fn ready(recovering: bool) -> ThreadState {
    ThreadState {
        place: Place::Ready,
        recovering,
    }
}

fn spawn(package: &mut Package) -> ThreadId {
    package.spawn().unwrap().0
}

/// Two processors running the first two of three threads; the third waits.
fn two_busy_processors() -> (Package, [ThreadId; 3]) {
    let mut package = Package::new();
    package.processor_added(CPU0, ACTIVATION0).unwrap();
    package.processor_added(CPU1, ACTIVATION1).unwrap();
    let threads = [(); 3].map(|_| spawn(&mut package));
    assert_eq!(package.running_on(CPU0), Ok(Some(threads[0])));
    assert_eq!(package.running_on(CPU1), Ok(Some(threads[1])));
    package.check_invariants().unwrap();
    (package, threads)
}

/// Takes CPU0 (running `first`) away, delivering the upcall on CPU1 (running `second`, which the kernel stops for it).
fn preempt_cpu0_on_cpu1(
    package: &mut Package,
    first: SavedThread,
    second: SavedThread,
) -> Result<Vec<Action>, Error> {
    let on = Delivery {
        cpu: CPU1,
        activation: ACTIVATION2,
        interrupted: Some(second),
    };
    package.processor_preempted(CPU0, ACTIVATION0, Some(first), Some(on))
}

#[test]
fn a_processor_added_before_any_thread_is_reported_idle_then_runs_the_first() {
    let mut package = Package::new();
    assert_eq!(
        package.processor_added(CPU0, ACTIVATION0),
        Ok(vec![Action::ProcessorIsIdle(CPU0)])
    );
    let (thread, actions) = package.spawn().unwrap();
    assert_eq!(actions, vec![run(CPU0, thread)]);
    assert_eq!(
        package.state(thread),
        Ok(ThreadState {
            place: Place::Running(CPU0),
            recovering: false
        })
    );
    assert_eq!(
        package.exit(thread),
        Ok(vec![Action::ProcessorIsIdle(CPU0)])
    );
    assert_eq!(package.state(thread), Err(Error::UnknownThread(thread)));
    package.check_invariants().unwrap();
    let counters = package.counters();
    assert_eq!(
        (counters.processor_is_idle, counters.add_more_processors),
        (2, 0)
    );
}

#[test]
fn threads_before_processors_ask_for_as_many_as_wait() {
    let mut package = Package::new();
    let (first, actions) = package.spawn().unwrap();
    assert_eq!(actions, vec![Action::AddMoreProcessors(1)]);
    let (second, actions) = package.spawn().unwrap();
    assert_eq!(
        actions,
        vec![Action::AddMoreProcessors(1)],
        "one more than already asked for"
    );
    package.check_invariants().unwrap();
    assert_eq!(
        package.processor_added(CPU0, ACTIVATION0),
        Ok(vec![run(CPU0, first)])
    );
    assert_eq!(
        package.processor_added(CPU1, ACTIVATION1),
        Ok(vec![run(CPU1, second)])
    );
    assert_eq!(
        package.processor_added(CPU2, ACTIVATION2),
        Ok(vec![Action::ProcessorIsIdle(CPU2)])
    );
    package.check_invariants().unwrap();
    let counters = package.counters();
    assert_eq!(
        (
            counters.processors_added,
            counters.add_more_processors,
            counters.processor_is_idle
        ),
        (3, 2, 1)
    );
}

#[test]
fn preemption_outside_a_critical_section_requeues_both_stopped_threads() {
    let (mut package, [first, second, third]) = two_busy_processors();
    let actions = preempt_cpu0_on_cpu1(&mut package, saved(first, false), saved(second, false));
    // The waiting thread goes first, then the two stopped ones wait: one more processor is wanted.
    assert_eq!(
        actions,
        Ok(vec![run(CPU1, third), Action::AddMoreProcessors(1)])
    );
    assert_eq!(package.processors().collect::<Vec<_>>(), vec![CPU1]);
    assert_eq!(package.activation_on(CPU1), Ok(ACTIVATION2));
    assert_eq!(package.state(first), Ok(ready(false)));
    assert_eq!(package.state(second), Ok(ready(false)));
    assert_eq!(package.exit(third), Ok(vec![run(CPU1, first)]));
    package.check_invariants().unwrap();
    assert_eq!(package.counters().processors_preempted, 1);
    assert_eq!(package.counters().recoveries, 0);
}

#[test]
fn a_thread_preempted_in_a_critical_section_runs_first_until_it_reports_the_end() {
    let (mut package, [first, second, third]) = two_busy_processors();
    let actions = preempt_cpu0_on_cpu1(&mut package, saved(first, true), saved(second, false));
    assert_eq!(
        actions,
        Ok(vec![recover(CPU1, first), Action::AddMoreProcessors(1)])
    );
    assert_eq!(
        package.state(first),
        Ok(ThreadState {
            place: Place::Running(CPU1),
            recovering: true
        })
    );
    package.check_invariants().unwrap();
    let state = package.state(first).unwrap();
    assert_eq!(
        package.exit(first),
        Err(Error::WrongState {
            thread: first,
            state
        })
    );
    let running = package.state(third).unwrap();
    assert_eq!(
        package.critical_section_done(third),
        Err(Error::WrongState {
            thread: third,
            state: running
        })
    );
    // Done: it goes to the back of the ready list like any other thread.
    assert_eq!(
        package.critical_section_done(first),
        Ok(vec![run(CPU1, third)])
    );
    assert_eq!(package.state(first), Ok(ready(false)));
    assert_eq!(package.exit(third), Ok(vec![run(CPU1, second)]));
    assert_eq!(package.exit(second), Ok(vec![run(CPU1, first)]));
    assert_eq!(package.counters().recoveries, 1);
    package.check_invariants().unwrap();
}

#[test]
fn the_thread_interrupted_to_deliver_an_upcall_may_be_the_one_recovered() {
    let (mut package, [first, second, _]) = two_busy_processors();
    let actions = preempt_cpu0_on_cpu1(&mut package, saved(first, false), saved(second, true));
    assert_eq!(
        actions,
        Ok(vec![recover(CPU1, second), Action::AddMoreProcessors(1)])
    );
    package.check_invariants().unwrap();
}

#[test]
fn both_stopped_threads_in_critical_sections_recover_one_after_the_other() {
    let (mut package, [first, second, third]) = two_busy_processors();
    let actions = preempt_cpu0_on_cpu1(&mut package, saved(first, true), saved(second, true));
    assert_eq!(
        actions,
        Ok(vec![recover(CPU1, first), Action::AddMoreProcessors(1)])
    );
    assert_eq!(
        package.critical_section_done(first),
        Ok(vec![recover(CPU1, second)])
    );
    assert_eq!(
        package.critical_section_done(second),
        Ok(vec![run(CPU1, third)])
    );
    assert_eq!(package.counters().recoveries, 2);
    package.check_invariants().unwrap();
}

#[test]
fn blocked_then_unblocked_with_the_processor_revoked_in_between() {
    let mut package = Package::new();
    package.processor_added(CPU0, ACTIVATION0).unwrap();
    let blocker = spawn(&mut package);
    let other = spawn(&mut package);
    // The processor gets a fresh activation and runs the other thread.
    assert_eq!(
        package.activation_blocked(CPU0, ACTIVATION0, blocker, ACTIVATION1),
        Ok(vec![run(CPU0, other)])
    );
    let blocked = ThreadState {
        place: Place::BlockedInKernel(ACTIVATION0),
        recovering: false,
    };
    assert_eq!(package.state(blocker), Ok(blocked));
    package.check_invariants().unwrap();
    // The kernel takes the processor back; the package has none left, and one request outstanding.
    assert_eq!(
        package.processor_preempted(CPU0, ACTIVATION1, Some(saved(other, false)), None),
        Ok(vec![])
    );
    assert_eq!(package.processors().count(), 0);
    package.check_invariants().unwrap();
    // The unblocked thread waits too: one more processor wanted.
    let unblocked = package.activation_unblocked(ACTIVATION0, saved(blocker, false), None);
    assert_eq!(unblocked, Ok(vec![Action::AddMoreProcessors(1)]));
    assert_eq!(package.state(blocker), Ok(ready(false)));
    package.check_invariants().unwrap();
    // The blocked activation is discarded: the kernel may reuse its id.
    assert_eq!(
        package.processor_added(CPU1, ACTIVATION0),
        Ok(vec![run(CPU1, other)])
    );
    assert_eq!(package.exit(other), Ok(vec![run(CPU1, blocker)]));
    let counters = package.counters();
    assert_eq!(
        (
            counters.activations_blocked,
            counters.activations_unblocked,
            counters.processors_preempted
        ),
        (1, 1, 1)
    );
    package.check_invariants().unwrap();
}

#[test]
fn unblocked_in_a_critical_section_before_any_processor_recovers_on_the_first_added() {
    let mut package = Package::new();
    package.processor_added(CPU0, ACTIVATION0).unwrap();
    let thread = spawn(&mut package);
    let actions = package.activation_blocked(CPU0, ACTIVATION0, thread, ACTIVATION1);
    assert_eq!(actions, Ok(vec![Action::ProcessorIsIdle(CPU0)]));
    assert_eq!(
        package.processor_preempted(CPU0, ACTIVATION1, None, None),
        Ok(vec![])
    );
    let actions = package.activation_unblocked(ACTIVATION0, saved(thread, true), None);
    assert_eq!(actions, Ok(vec![Action::AddMoreProcessors(1)]));
    assert_eq!(package.state(thread), Ok(ready(true)));
    package.check_invariants().unwrap();
    assert_eq!(
        package.processor_added(CPU2, ACTIVATION2),
        Ok(vec![recover(CPU2, thread)])
    );
    assert_eq!(
        package.critical_section_done(thread),
        Ok(vec![run(CPU2, thread)])
    );
    package.check_invariants().unwrap();
}

#[test]
fn an_unblocked_thread_delivered_on_a_busy_processor_runs_there_before_the_interrupted_one() {
    let (mut package, [first, second, third]) = two_busy_processors();
    let actions = package.activation_blocked(CPU0, ACTIVATION0, first, ACTIVATION2);
    assert_eq!(actions, Ok(vec![run(CPU0, third)]));
    // Delivered by interrupting CPU1: the interrupted thread is requeued behind the unblocked one
    // (and the processor asked for when the third thread was spawned is still awaited).
    let on = Delivery {
        cpu: CPU1,
        activation: ACTIVATION3,
        interrupted: Some(saved(second, false)),
    };
    let actions = package.activation_unblocked(ACTIVATION0, saved(first, false), Some(on));
    assert_eq!(actions, Ok(vec![run(CPU1, first)]));
    assert_eq!(package.waiting(), 1);
    package.check_invariants().unwrap();
    assert_eq!(package.exit(third), Ok(vec![run(CPU0, second)]));
    assert_eq!(
        package.exit(second),
        Ok(vec![Action::ProcessorIsIdle(CPU0)])
    );
    package.check_invariants().unwrap();
}

#[test]
fn an_unblocked_thread_delivered_without_a_processor_takes_an_idle_one() {
    let mut package = Package::new();
    package.processor_added(CPU0, ACTIVATION0).unwrap();
    package.processor_added(CPU1, ACTIVATION1).unwrap();
    let thread = spawn(&mut package);
    let actions = package.activation_blocked(CPU0, ACTIVATION0, thread, ACTIVATION2);
    assert_eq!(actions, Ok(vec![Action::ProcessorIsIdle(CPU0)]));
    let actions = package.activation_unblocked(ACTIVATION0, saved(thread, false), None);
    assert_eq!(actions, Ok(vec![run(CPU0, thread)]));
    package.check_invariants().unwrap();
}

#[test]
fn revoking_the_last_processor_in_a_critical_section_defers_the_recovery() {
    let mut package = Package::new();
    package.processor_added(CPU0, ACTIVATION0).unwrap();
    let thread = spawn(&mut package);
    let actions = package.processor_preempted(CPU0, ACTIVATION0, Some(saved(thread, true)), None);
    assert_eq!(actions, Ok(vec![Action::AddMoreProcessors(1)]));
    assert_eq!(package.state(thread), Ok(ready(true)));
    package.check_invariants().unwrap();
    assert_eq!(
        package.processor_added(CPU0, ACTIVATION1),
        Ok(vec![recover(CPU0, thread)])
    );
    assert_eq!(
        package.critical_section_done(thread),
        Ok(vec![run(CPU0, thread)])
    );
    // An idle last processor taken back: nothing to do.
    assert_eq!(
        package.exit(thread),
        Ok(vec![Action::ProcessorIsIdle(CPU0)])
    );
    assert_eq!(
        package.processor_preempted(CPU0, ACTIVATION1, None, None),
        Ok(vec![])
    );
    package.check_invariants().unwrap();
}

#[test]
fn reports_that_do_not_match_the_package_are_refused_and_change_nothing() {
    let (mut package, [first, second, third]) = two_busy_processors();
    let before = package.counters();
    let fresh = Delivery {
        cpu: CPU1,
        activation: ACTIVATION2,
        interrupted: Some(saved(second, false)),
    };
    let refusals = [
        (
            package.processor_added(CPU0, ACTIVATION2),
            Error::CpuAlreadyGranted(CPU0),
        ),
        (
            package.processor_added(CPU2, ACTIVATION1),
            Error::ActivationInUse(ACTIVATION1),
        ),
        (
            package.processor_preempted(CPU2, ACTIVATION0, None, None),
            Error::UnknownCpu(CPU2),
        ),
        (
            package.processor_preempted(CPU0, ACTIVATION1, Some(saved(first, false)), None),
            Error::WrongActivation {
                cpu: CPU0,
                activation: ACTIVATION1,
            },
        ),
        (
            package.processor_preempted(CPU0, ACTIVATION0, Some(saved(third, false)), None),
            Error::WrongThread {
                expected: Some(first),
                reported: Some(third),
            },
        ),
        (
            package.processor_preempted(
                CPU0,
                ACTIVATION0,
                Some(saved(first, false)),
                Some(Delivery { cpu: CPU0, ..fresh }),
            ),
            Error::DeliveredOnPreemptedCpu(CPU0),
        ),
        (
            package.processor_preempted(
                CPU0,
                ACTIVATION0,
                Some(saved(first, false)),
                Some(Delivery {
                    activation: ACTIVATION0,
                    ..fresh
                }),
            ),
            Error::ActivationInUse(ACTIVATION0),
        ),
        (
            package.processor_preempted(
                CPU0,
                ACTIVATION0,
                Some(saved(first, false)),
                Some(Delivery {
                    interrupted: None,
                    ..fresh
                }),
            ),
            Error::WrongThread {
                expected: Some(second),
                reported: None,
            },
        ),
        (
            package.activation_blocked(CPU0, ACTIVATION0, first, ACTIVATION1),
            Error::ActivationInUse(ACTIVATION1),
        ),
        (
            package.activation_blocked(CPU0, ACTIVATION0, first, ACTIVATION0),
            Error::ActivationInUse(ACTIVATION0),
        ),
        (
            package.activation_unblocked(ACTIVATION0, saved(first, false), None),
            Error::NotBlocked(ACTIVATION0),
        ),
        (
            package.critical_section_done(first),
            Error::WrongState {
                thread: first,
                state: package.state(first).unwrap(),
            },
        ),
        (
            package.exit(third),
            Error::WrongState {
                thread: third,
                state: ready(false),
            },
        ),
    ];
    for (refused, error) in refusals {
        assert_eq!(refused, Err(error));
    }
    let gone = ThreadId {
        index: 99,
        generation: 0,
    };
    assert_eq!(package.exit(gone), Err(Error::UnknownThread(gone)));
    assert_eq!(package.counters(), before);
    assert_eq!(package.running_on(CPU0), Ok(Some(first)));
    assert_eq!(package.running_on(CPU1), Ok(Some(second)));
    assert_eq!(package.waiting(), 1);
    package.check_invariants().unwrap();
}
