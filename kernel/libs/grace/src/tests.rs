//! Host tests: grace periods wait for every section open at the swap, and only for those.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::{CpuIdentity, Grace, Published};

thread_local! {
    /// The CPU this test thread plays under the trusted test identity.
    static TEST_CPU: Cell<usize> = const { Cell::new(0) };
}

fn test_cpu() -> usize {
    TEST_CPU.with(Cell::get)
}

/// The kernel's kind of identity, played by test threads: each test gives
/// every thread its own CPU index, and no section crosses threads.
fn trusted(cpus: usize) -> Arc<Grace> {
    // SAFETY: every test below gives each of its threads a distinct CPU
    // index (`set_cpu`) before it reads, and read sections are not `Send`,
    // so they end on the thread (the "CPU") where they began.
    let identity = unsafe { CpuIdentity::new(test_cpu) };
    Arc::new(Grace::new(identity, cpus))
}

fn set_cpu(cpu: usize) {
    TEST_CPU.with(|current| current.set(cpu));
}

/// Marks the thread's CPU idle when dropped (also when the thread panics
/// outside a read section): a CPU taken offline holds up no writer.
struct OfflineAtExit(Arc<Grace>);

impl Drop for OfflineAtExit {
    fn drop(&mut self) {
        self.0.enter_idle();
    }
}

/// A value that knows whether it has been dropped.
struct Canary {
    alive: AtomicBool,
    generation: u64,
    drops: Arc<AtomicUsize>,
}

impl Canary {
    fn new(generation: u64, drops: &Arc<AtomicUsize>) -> Arc<Canary> {
        Arc::new(Canary {
            alive: AtomicBool::new(true),
            generation,
            drops: Arc::clone(drops),
        })
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::SeqCst);
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

const WAIT: Duration = Duration::from_millis(100);

#[test]
fn a_writer_waits_for_a_section_open_at_the_swap_and_the_old_value_outlives_it() {
    writer_waits_for_the_open_section(trusted(2), set_cpu);
}

/// The test above with `grace` (two CPUs), whose threads take their CPU
/// with `play`.
fn writer_waits_for_the_open_section(grace: Arc<Grace>, play: fn(usize)) {
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(Published::new(Canary::new(1, &drops), Arc::clone(&grace)));
    let (opened, opened_seen) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let reader = {
        let (grace, cell) = (Arc::clone(&grace), Arc::clone(&cell));
        thread::spawn(move || {
            play(1);
            let section = grace.read();
            let value = cell.read(&section);
            opened.send(()).unwrap();
            released.recv().unwrap();
            let still_alive = value.alive.load(Ordering::SeqCst);
            let generation = value.generation;
            drop(section);
            (still_alive, generation)
        })
    };
    opened_seen.recv().unwrap();
    let replaced = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cell, replaced, drops) =
            (Arc::clone(&cell), Arc::clone(&replaced), Arc::clone(&drops));
        thread::spawn(move || {
            play(0);
            let old = cell.replace(Canary::new(2, &drops), thread::yield_now);
            replaced.store(true, Ordering::SeqCst);
            old.generation
        })
    };
    thread::sleep(WAIT);
    assert!(
        !replaced.load(Ordering::SeqCst),
        "the writer did not wait for the open section"
    );
    release.send(()).unwrap();
    assert_eq!(reader.join().unwrap(), (true, 1));
    assert_eq!(
        writer.join().unwrap(),
        1,
        "replace hands back the old value"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the old value is dropped once, after"
    );
    play(0);
    let section = grace.read();
    assert_eq!(cell.read(&section).generation, 2);
}

#[test]
fn cpus_that_never_read_or_are_idle_do_not_hold_writers() {
    let grace = trusted(8);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Published::new(Canary::new(0, &drops), Arc::clone(&grace));
    set_cpu(3);
    drop(grace.read());
    assert!(grace.enter_idle());
    set_cpu(0);
    let started = Instant::now();
    for generation in 1..=100 {
        drop(cell.replace(Canary::new(generation, &drops), thread::yield_now));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 100);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(grace.is_idle(3));
}

#[test]
fn a_cpu_that_read_and_went_quiet_holds_writers_until_it_reports() {
    let grace = trusted(2);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(Published::new(Canary::new(0, &drops), Arc::clone(&grace)));
    let (report, report_now) = mpsc::channel::<()>();
    let (read_done, read_done_seen) = mpsc::channel();
    let quiet = {
        let grace = Arc::clone(&grace);
        thread::spawn(move || {
            set_cpu(1);
            drop(grace.read());
            read_done.send(()).unwrap();
            report_now.recv().unwrap();
            // Inside a section a report does not count.
            let section = grace.read();
            grace.quiescent_state();
            let reports_inside = grace.reports(1);
            drop(section);
            grace.quiescent_state();
            reports_inside
        })
    };
    read_done_seen.recv().unwrap();
    let replaced = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cell, replaced, drops) =
            (Arc::clone(&cell), Arc::clone(&replaced), Arc::clone(&drops));
        thread::spawn(move || {
            set_cpu(0);
            drop(cell.replace(Canary::new(1, &drops), thread::yield_now));
            replaced.store(true, Ordering::SeqCst);
        })
    };
    thread::sleep(WAIT);
    assert!(
        !replaced.load(Ordering::SeqCst),
        "a CPU that read is not idle until it says so"
    );
    let before = grace.reports(1);
    report.send(()).unwrap();
    writer.join().unwrap();
    let reports_inside = quiet.join().unwrap();
    assert!(replaced.load(Ordering::SeqCst));
    // The section's own end reported (a writer wanted it) or the explicit
    // report did; the one made inside the section did not count.
    assert_eq!(reports_inside, before);
    assert!(grace.reports(1) > before);
}

#[test]
fn sections_nest_and_may_end_in_any_order() {
    let grace = trusted(1);
    set_cpu(0);
    let outer = grace.read();
    let inner = grace.read();
    assert!(grace.inside_read());
    drop(outer);
    assert!(grace.inside_read(), "the inner section is still open");
    grace.quiescent_state();
    assert_eq!(grace.reports(0), 0, "no report while a section is open");
    assert!(!grace.enter_idle(), "not idle while a section is open");
    drop(inner);
    assert!(!grace.inside_read());
    grace.quiescent_state();
    assert_eq!(grace.reports(0), 1);
}

#[test]
#[should_panic(expected = "inside a read section")]
fn replacing_inside_a_section_panics_instead_of_waiting_for_itself() {
    let grace = trusted(1);
    set_cpu(0);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Published::new(Canary::new(0, &drops), Arc::clone(&grace));
    let _section = grace.read();
    drop(cell.replace(Canary::new(1, &drops), thread::yield_now));
}

#[test]
#[should_panic(expected = "another grace domain")]
fn a_section_of_another_domain_is_refused() {
    let (first, second) = (trusted(1), trusted(1));
    set_cpu(0);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Published::new(Canary::new(0, &drops), first);
    let section = second.read();
    let _ = cell.read(&section).generation;
}

#[test]
fn readers_never_see_a_dropped_value_while_writers_replace_it() {
    const READERS: usize = 3;
    const WRITERS: usize = 2;
    const REPLACEMENTS: u64 = 3_000;
    let grace = trusted(READERS + WRITERS);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(Published::new(Canary::new(0, &drops), Arc::clone(&grace)));
    let stop = Arc::new(AtomicBool::new(false));
    let dead_seen = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(READERS + WRITERS));
    let readers: Vec<_> = (0..READERS)
        .map(|index| {
            let (grace, cell, stop, dead_seen, start) = (
                Arc::clone(&grace),
                Arc::clone(&cell),
                Arc::clone(&stop),
                Arc::clone(&dead_seen),
                Arc::clone(&start),
            );
            thread::spawn(move || {
                set_cpu(WRITERS + index);
                // A reader that panics takes its CPU offline (idle), so that
                // the writers finish and the test reports the panic instead
                // of waiting for that CPU for ever.
                let _offline_at_exit = OfflineAtExit(Arc::clone(&grace));
                start.wait();
                let mut reads = 0u64;
                // The last generation seen from each writer: the two writers
                // race each other, but each one's values appear in order.
                let mut last = [0u64; WRITERS];
                while !stop.load(Ordering::Relaxed) {
                    let section = grace.read();
                    let value = cell.read(&section);
                    for _ in 0..8 {
                        if !value.alive.load(Ordering::SeqCst) {
                            dead_seen.fetch_add(1, Ordering::SeqCst);
                        }
                        std::hint::spin_loop();
                    }
                    if value.generation != 0 {
                        let writer = (value.generation % WRITERS as u64) as usize;
                        assert!(
                            value.generation >= last[writer],
                            "a reader went back in time"
                        );
                        last[writer] = value.generation;
                    }
                    drop(section);
                    reads += 1;
                    if reads.is_multiple_of(64) {
                        grace.quiescent_state();
                        thread::yield_now();
                    }
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|index| {
            let (cell, drops, start) = (Arc::clone(&cell), Arc::clone(&drops), Arc::clone(&start));
            thread::spawn(move || {
                set_cpu(index);
                start.wait();
                // Writer `index` publishes generations index + WRITERS * n.
                for round in 1..=REPLACEMENTS {
                    let generation = round * WRITERS as u64 + index as u64;
                    drop(cell.replace(Canary::new(generation, &drops), thread::yield_now));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .sum();
    assert_eq!(
        dead_seen.load(Ordering::SeqCst),
        0,
        "a reader saw a dropped value"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst) as u64,
        REPLACEMENTS * WRITERS as u64,
        "every replaced value was dropped exactly once"
    );
    assert!(reads > 0);
}

#[test]
fn host_threads_playing_one_cpu_take_turns_and_writers_wait_for_their_sections() {
    let grace = Arc::new(Grace::new(CpuIdentity::host_threads(), 2));
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(Published::new(Canary::new(0, &drops), Arc::clone(&grace)));
    let inside = Arc::new(AtomicUsize::new(0));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (grace, cell, inside, overlaps) = (
                Arc::clone(&grace),
                Arc::clone(&cell),
                Arc::clone(&inside),
                Arc::clone(&overlaps),
            );
            thread::spawn(move || {
                CpuIdentity::set_thread_cpu(1);
                for _ in 0..2_000 {
                    let section = grace.read();
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    assert!(cell.read(&section).alive.load(Ordering::SeqCst));
                    inside.fetch_sub(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    CpuIdentity::set_thread_cpu(0);
    for generation in 1..=500 {
        drop(cell.replace(Canary::new(generation, &drops), thread::yield_now));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "two threads were inside CPU 1 at once"
    );
    assert_eq!(drops.load(Ordering::SeqCst), 500);
    // Nobody inside: a replace returns without any report.
    drop(cell.replace(Canary::new(501, &drops), thread::yield_now));
}

#[test]
fn the_one_thread_identity_refuses_a_second_thread() {
    let grace = Arc::new(Grace::new(CpuIdentity::one_thread(), 1));
    drop(grace.read());
    let other = {
        let grace = Arc::clone(&grace);
        thread::spawn(move || drop(grace.read()))
    };
    assert!(
        other.join().is_err(),
        "a second thread used the one-thread identity"
    );
}

/// Linux on x86_64: points the calling thread's GS base at a block whose
/// `u32` at [`GS_OFFSET`] is `cpu`, as the kernel's per-CPU blocks do.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn bind_gs(cpu: usize) {
    const SYS_ARCH_PRCTL: u64 = 158;
    const ARCH_SET_GS: u64 = 0x1001;
    let block: &'static [u32; 4] = Box::leak(Box::new([u32::MAX, cpu as u32, u32::MAX, 0]));
    let result: i64;
    // SAFETY: arch_prctl(ARCH_SET_GS) changes only this thread's GS base,
    // which nothing in a Linux x86_64 process uses (TLS is FS-based); the
    // `syscall` instruction clobbers rcx and r11, declared here.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_SET_GS,
            in("rsi") block.as_ptr() as u64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    assert_eq!(result, 0, "arch_prctl(ARCH_SET_GS) failed");
}

/// Where [`bind_gs`]'s blocks keep the CPU index.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const GS_OFFSET: u32 = 4;

#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn the_gs_relative_identity_reads_each_cpus_own_block() {
    // SAFETY: each thread below binds its GS base to its own block
    // (`bind_gs`) before it uses the identity, the two threads play distinct
    // CPUs, and read sections are not `Send`.
    let identity = unsafe { CpuIdentity::gs_relative::<GS_OFFSET>() };
    let seen: Vec<(usize, usize, usize)> = (0..3)
        .map(|cpu| {
            thread::spawn(move || {
                bind_gs(cpu);
                let grace = Grace::new(identity, 3);
                let section = grace.read();
                let inside = grace.inside_read();
                let read = (
                    grace.current_cpu(),
                    identity.current_function()(),
                    section.cpu(),
                );
                drop(section);
                assert!(inside && !grace.inside_read());
                read
            })
            .join()
            .unwrap()
        })
        .collect();
    assert_eq!(seen, [(0, 0, 0), (1, 1, 1), (2, 2, 2)]);
    writer_waits_for_the_open_section(Arc::new(Grace::new(identity, 2)), bind_gs);
}

#[test]
fn a_watched_writer_is_told_which_cpu_holds_its_grace_period() {
    let grace = trusted(3);
    let drops = Arc::new(AtomicUsize::new(0));
    let cell = Arc::new(Published::new(Canary::new(1, &drops), Arc::clone(&grace)));
    // CPU 2 read once and went idle: only CPU 1 holds writers.
    set_cpu(2);
    drop(grace.read());
    assert!(grace.enter_idle());
    let watched = Arc::new(AtomicBool::new(false));
    let (opened, opened_seen) = mpsc::channel();
    let reader = {
        let (grace, cell, watched) = (Arc::clone(&grace), Arc::clone(&cell), Arc::clone(&watched));
        thread::spawn(move || {
            set_cpu(1);
            let section = grace.read();
            let generation = cell.read(&section).generation;
            opened.send(()).unwrap();
            while !watched.load(Ordering::SeqCst) {
                thread::yield_now();
            }
            drop(section);
            generation
        })
    };
    opened_seen.recv().unwrap();
    set_cpu(0);
    let mut seen: Vec<Vec<usize>> = Vec::new();
    let old = cell.replace_watched(Canary::new(2, &drops), thread::yield_now, &mut |awaited| {
        assert!(!awaited.is_empty());
        assert_eq!(awaited.len(), awaited.cpus().count());
        seen.push(awaited.cpus().collect());
        watched.store(true, Ordering::SeqCst);
    });
    assert_eq!(reader.join().unwrap(), 1);
    assert_eq!(old.generation, 1);
    assert!(
        !seen.is_empty(),
        "the watch was called while the writer waited"
    );
    assert!(
        seen.iter().all(|cpus| cpus == &[1]),
        "only CPU 1 held the grace period: {seen:?}"
    );
}
