//! Seeded randomized simulation: 2000 threads on 4 carriers doing random yields, locks, condvar waits, semaphores, joins, sleeps and preemptions, with the invariants checked after every step.

use std::collections::HashMap;
use std::num::NonZeroU16;

use spindle_uthreads::{
    AcquireOutcome, CarrierId, CondvarId, JoinOutcome, MutexId, Package, SemaphoreId, ThreadId,
};

const CARRIERS: u16 = 4;
const THREADS: usize = 2000;
const INITIAL_THREADS: usize = 50;
/// Condition variable `i` is always used with mutex `i`.
const MUTEXES: usize = 4;
const SEMAPHORE_UNITS: u32 = 2;
const MOST_WORK: u64 = 12;
const LONGEST_SLEEP_NS: u64 = 40;
const STEP_LIMIT: u64 = 2_000_000;
const SEEDS: [u64; 3] = [0x5EED_0001, 0xC0FF_EE15_600D, 0x1234_5678_9ABC_DEF1];

/// Marsaglia's xorshift64: deterministic, seeded, good enough to pick actions.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// What the test knows of one thread.
struct Model {
    spawn_order: usize,
    work_left: u64,
    mutex: Option<usize>,
    semaphore: bool,
}

struct Simulation {
    package: Package,
    random: XorShift,
    threads: HashMap<ThreadId, Model>,
    /// By spawn order, for join targets; `None` once reaped.
    by_spawn_order: Vec<Option<ThreadId>>,
    mutexes: Vec<MutexId>,
    condvars: Vec<CondvarId>,
    semaphore: SemaphoreId,
    owners: Vec<Option<ThreadId>>,
    semaphore_holders: u32,
    now_ns: u64,
}

impl Simulation {
    fn new(seed: u64) -> Self {
        let package = Package::new(NonZeroU16::new(CARRIERS).unwrap());
        let mutexes = (0..MUTEXES).map(|_| package.new_mutex().unwrap()).collect();
        let condvars = (0..MUTEXES)
            .map(|_| package.new_condvar().unwrap())
            .collect();
        let semaphore = package.new_semaphore(SEMAPHORE_UNITS).unwrap();
        let mut simulation = Self {
            package,
            random: XorShift(seed),
            threads: HashMap::new(),
            by_spawn_order: Vec::new(),
            mutexes,
            condvars,
            semaphore,
            owners: vec![None; MUTEXES],
            semaphore_holders: 0,
            now_ns: 0,
        };
        for _ in 0..INITIAL_THREADS {
            simulation.spawn();
        }
        simulation
    }

    fn spawn(&mut self) {
        let hint = match self.random.below(u64::from(CARRIERS) + 1) {
            carrier if carrier < u64::from(CARRIERS) => Some(CarrierId(carrier as u16)),
            _ => None,
        };
        let thread = self.package.spawn(hint).unwrap();
        let model = Model {
            spawn_order: self.by_spawn_order.len(),
            work_left: 1 + self.random.below(MOST_WORK),
            mutex: None,
            semaphore: false,
        };
        self.by_spawn_order.push(Some(thread));
        assert!(self.threads.insert(thread, model).is_none(), "a fresh id");
    }

    /// `thread` now owns mutex `index`: nobody else may.
    fn grant(&mut self, index: usize, thread: ThreadId) {
        assert_eq!(self.owners[index], None, "mutual exclusion");
        self.owners[index] = Some(thread);
        self.threads.get_mut(&thread).unwrap().mutex = Some(index);
        assert_eq!(
            self.package.mutex_owner(self.mutexes[index]),
            Ok(Some(thread))
        );
    }

    fn release(&mut self, index: usize, thread: ThreadId) {
        self.owners[index] = None;
        self.threads.get_mut(&thread).unwrap().mutex = None;
    }

    fn unlock(&mut self, index: usize, thread: ThreadId) {
        self.release(index, thread);
        if let Some(next) = self.package.unlock(self.mutexes[index], thread).unwrap() {
            self.grant(index, next);
        }
    }

    fn down(&mut self, thread: ThreadId) {
        if self.package.down(self.semaphore, thread) == Ok(AcquireOutcome::Acquired) {
            self.semaphore_holders += 1;
            self.threads.get_mut(&thread).unwrap().semaphore = true;
        }
    }

    fn up(&mut self, thread: ThreadId) {
        self.threads.get_mut(&thread).unwrap().semaphore = false;
        match self.package.up(self.semaphore).unwrap() {
            Some(next) => self.threads.get_mut(&next).unwrap().semaphore = true,
            None => self.semaphore_holders -= 1,
        }
    }

    fn step(&mut self) {
        self.now_ns += 1;
        self.package.wake_due(self.now_ns);
        let carrier = CarrierId(self.random.below(u64::from(CARRIERS)) as u16);
        match self.package.running_on(carrier).unwrap() {
            Some(thread) => self.act(carrier, thread),
            None => {
                if let Some(thread) = self.package.next_for(carrier).unwrap() {
                    assert!(self.threads.contains_key(&thread), "picked a live thread");
                }
            }
        }
        if (0..CARRIERS).all(|carrier| self.idle(CarrierId(carrier))) {
            self.unstall();
        }
        self.package.check_invariants().unwrap();
        assert!(self.semaphore_holders <= SEMAPHORE_UNITS);
    }

    fn idle(&self, carrier: CarrierId) -> bool {
        self.package.running_on(carrier) == Ok(None) && self.package.ready_len(carrier) == Ok(0)
    }

    /// Nothing runs or is ready: jump the clock to the next sleeper, else wake every condvar waiter (whose signallers are all gone), else spawn.
    fn unstall(&mut self) {
        if let Some(deadline) = self.package.next_deadline() {
            self.now_ns = deadline;
            self.package.wake_due(deadline);
            return;
        }
        let mut woken = false;
        for index in 0..MUTEXES {
            for thread in self.package.broadcast(self.condvars[index]).unwrap() {
                self.grant(index, thread);
                woken = true;
            }
        }
        if !woken && self.by_spawn_order.len() < THREADS {
            self.spawn();
        } else if !woken {
            let blocked: Vec<_> = self
                .threads
                .keys()
                .map(|&id| self.package.state(id))
                .collect();
            assert!(blocked.is_empty(), "deadlock: {blocked:?}");
        }
    }

    fn act(&mut self, carrier: CarrierId, thread: ThreadId) {
        let model = &self.threads[&thread];
        let (held_mutex, holds_semaphore) = (model.mutex, model.semaphore);
        let holding = held_mutex.is_some() || holds_semaphore;
        if model.work_left == 0 {
            match held_mutex {
                Some(index) => self.unlock(index, thread),
                None if holds_semaphore => self.up(thread),
                None => self.exit(thread),
            }
            return;
        }
        self.threads.get_mut(&thread).unwrap().work_left -= 1;
        let package = &self.package;
        match self.random.below(100) {
            0..10 => {
                let others_waiting = package.ready_len(carrier).unwrap() > 0;
                package.checkpoint(carrier, thread).unwrap();
                let resumed = package.resume(carrier).unwrap();
                assert!(resumed.is_some());
                assert!(
                    !others_waiting || resumed != Some(thread),
                    "round-robin after a checkpoint"
                );
            }
            10..25 => package.yield_now(thread).unwrap(),
            25..40 => match held_mutex {
                Some(index) => self.unlock(index, thread),
                None => {
                    let index = self.random.below(MUTEXES as u64) as usize;
                    if package.lock(self.mutexes[index], thread) == Ok(AcquireOutcome::Acquired) {
                        self.grant(index, thread);
                    }
                }
            },
            40..45 => {
                if let Some(index) = held_mutex {
                    let next = package.wait(self.condvars[index], self.mutexes[index], thread);
                    self.release(index, thread);
                    if let Some(next) = next.unwrap() {
                        self.grant(index, next);
                    }
                }
            }
            45..50 => {
                let index = self.random.below(MUTEXES as u64) as usize;
                let woken = match self.random.below(2) {
                    0 => package
                        .signal(self.condvars[index])
                        .unwrap()
                        .into_iter()
                        .collect(),
                    _ => package.broadcast(self.condvars[index]).unwrap(),
                };
                for woken in woken {
                    self.grant(index, woken);
                }
            }
            50..60 => {
                let deadline = self.now_ns + 1 + self.random.below(LONGEST_SLEEP_NS);
                package.sleep_until(thread, deadline).unwrap();
            }
            60..68 if holds_semaphore => self.up(thread),
            60..68 if !holding => self.down(thread),
            // Only later-spawned targets, and never while holding anything, so joins cannot deadlock.
            68..73 if !holding => {
                let own = self.threads[&thread].spawn_order;
                let later = self.by_spawn_order.len() - own - 1;
                if later > 0 {
                    let order = own + 1 + self.random.below(later as u64) as usize;
                    if let Some(target) = self.by_spawn_order[order] {
                        let outcome = package.join(thread, target).unwrap();
                        let exited = !self.threads.contains_key(&target);
                        assert_eq!(outcome == JoinOutcome::AlreadyExited, exited);
                    }
                }
            }
            73..83 if self.by_spawn_order.len() < THREADS => self.spawn(),
            _ => {} // computes
        }
    }

    fn exit(&mut self, thread: ThreadId) {
        for joiner in self.package.exit(thread).unwrap() {
            assert!(self.threads.contains_key(&joiner));
        }
        let order = self.threads.remove(&thread).unwrap().spawn_order;
        // Half are reaped at once, making their ids stale; the rest stay as join targets.
        if self.random.below(2) == 0 {
            self.package.reap(thread).unwrap();
            self.by_spawn_order[order] = None;
            assert!(self.package.state(thread).is_err(), "a reaped id is stale");
        }
    }
}

#[test]
fn two_thousand_threads_on_four_carriers_all_exit_and_the_invariants_always_hold() {
    for seed in SEEDS {
        let mut simulation = Simulation::new(seed);
        let mut steps = 0;
        while !(simulation.threads.is_empty() && simulation.by_spawn_order.len() == THREADS) {
            simulation.step();
            steps += 1;
            assert!(
                steps < STEP_LIMIT,
                "seed {seed:#x}: no progress after {steps} steps"
            );
        }
        let counters = simulation.package.counters();
        assert_eq!(counters.spawned, THREADS as u64);
        assert_eq!(counters.exited, THREADS as u64);
        assert!(counters.steals > 0 && counters.preemptions > 0 && counters.context_switches > 0);
        for carrier in 0..CARRIERS {
            assert!(simulation.idle(CarrierId(carrier)));
        }
        assert_eq!(simulation.package.next_deadline(), None);
        assert_eq!(simulation.owners, vec![None; MUTEXES]);
        assert_eq!(simulation.semaphore_holders, 0);
    }
}
