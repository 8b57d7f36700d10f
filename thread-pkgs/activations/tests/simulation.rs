//! Seeded randomized upcall sequences from a model kernel, with the invariants and the package's actions checked after every step.

use std::collections::BTreeMap;

use spindle_activations::{Action, ActivationId, CpuId, Delivery, Package, SavedThread, ThreadId};

const CPUS: u16 = 4;
const THREADS: u64 = 400;
const STEPS: u64 = 2_500;
const DRAIN_STEP_LIMIT: u64 = 100_000;
const SEEDS: [u64; 3] = [0xAC71_0001, 0x5EED_5EED_5EED, 0x0DDB_A11C_AFE5_0002];

/// Marsaglia's xorshift64: deterministic, seeded, good enough to pick upcalls.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// The kernel's side: which processors it granted, what runs on each (learnt from `Run` actions), which activations are blocked.
struct Kernel {
    package: Package,
    random: XorShift,
    /// Granted processors and the (thread, recovering) each runs.
    granted: BTreeMap<CpuId, Option<(ThreadId, bool)>>,
    blocked: BTreeMap<ActivationId, ThreadId>,
    next_activation: u32,
    spawned: u64,
}

impl Kernel {
    fn new(seed: u64) -> Self {
        Self {
            package: Package::new(),
            random: XorShift(seed),
            granted: BTreeMap::new(),
            blocked: BTreeMap::new(),
            next_activation: 0,
            spawned: 0,
        }
    }

    fn fresh_activation(&mut self) -> ActivationId {
        self.next_activation += 1;
        ActivationId(self.next_activation)
    }

    /// The state of the thread running on `cpu`, as the kernel saves it (randomly inside a critical section).
    fn save(&mut self, cpu: CpuId) -> Option<SavedThread> {
        let in_critical_section = self.random.coin();
        self.granted[&cpu].map(|(thread, _)| SavedThread {
            thread,
            in_critical_section,
        })
    }

    /// Sometimes another granted processor, stopped to deliver the upcall.
    fn delivery(&mut self, except: Option<CpuId>) -> Option<Delivery> {
        let others: Vec<CpuId> = self
            .granted
            .keys()
            .copied()
            .filter(|&cpu| Some(cpu) != except)
            .collect();
        let cpu = self.random.pick(&others).filter(|_| self.random.coin())?;
        let interrupted = self.save(cpu);
        self.granted.insert(cpu, None);
        Some(Delivery {
            cpu,
            activation: self.fresh_activation(),
            interrupted,
        })
    }

    fn running(&self, recovering: bool) -> Vec<ThreadId> {
        let running = self.granted.values().flatten();
        running
            .filter(|&&(_, flag)| flag == recovering)
            .map(|&(thread, _)| thread)
            .collect()
    }

    fn step(&mut self, spawning: bool) {
        let free: Vec<CpuId> = (0..CPUS)
            .map(CpuId)
            .filter(|cpu| !self.granted.contains_key(cpu))
            .collect();
        let busy: Vec<CpuId> = self
            .granted
            .iter()
            .filter(|(_, run)| run.is_some())
            .map(|(&cpu, _)| cpu)
            .collect();
        let granted: Vec<CpuId> = self.granted.keys().copied().collect();
        let blocked: Vec<ActivationId> = self.blocked.keys().copied().collect();
        let actions = match self.random.below(8) {
            0 | 7 if spawning && self.spawned < THREADS => {
                self.spawned += 1;
                self.package.spawn().unwrap().1
            }
            1 => match self.random.pick(&free) {
                Some(cpu) => {
                    self.granted.insert(cpu, None);
                    let activation = self.fresh_activation();
                    self.package.processor_added(cpu, activation).unwrap()
                }
                None => return,
            },
            2 => match self.random.pick(&granted).filter(|_| spawning) {
                Some(cpu) => {
                    let preempted = self.package.activation_on(cpu).unwrap();
                    let saved = self.save(cpu);
                    self.granted.remove(&cpu);
                    let on = self.delivery(Some(cpu));
                    self.package
                        .processor_preempted(cpu, preempted, saved, on)
                        .unwrap()
                }
                None => return,
            },
            3 => match self.random.pick(&busy).filter(|_| spawning) {
                Some(cpu) => {
                    let (thread, _) = self.granted[&cpu].unwrap();
                    let activation = self.package.activation_on(cpu).unwrap();
                    self.blocked.insert(activation, thread);
                    self.granted.insert(cpu, None);
                    let fresh = self.fresh_activation();
                    self.package
                        .activation_blocked(cpu, activation, thread, fresh)
                        .unwrap()
                }
                None => return,
            },
            4 => match self.random.pick(&blocked) {
                Some(activation) => {
                    let thread = self.blocked.remove(&activation).unwrap();
                    let saved = SavedThread {
                        thread,
                        in_critical_section: self.random.coin(),
                    };
                    let on = self.delivery(None);
                    self.package
                        .activation_unblocked(activation, saved, on)
                        .unwrap()
                }
                None => return,
            },
            5 => match self.random.pick(&self.running(true)) {
                Some(thread) => {
                    self.stop(thread);
                    self.package.critical_section_done(thread).unwrap()
                }
                None => return,
            },
            6 => match self.random.pick(&self.running(false)) {
                Some(thread) => {
                    self.stop(thread);
                    self.package.exit(thread).unwrap()
                }
                None => return,
            },
            _ => return,
        };
        self.apply(&actions);
        self.package.check_invariants().unwrap();
    }

    fn stop(&mut self, thread: ThreadId) {
        for run in self.granted.values_mut() {
            if run.is_some_and(|(running, _)| running == thread) {
                *run = None;
            }
        }
    }

    /// Applies the package's actions to the kernel's view, then checks that view against the package.
    fn apply(&mut self, actions: &[Action]) {
        for &action in actions {
            match action {
                Action::Run {
                    cpu,
                    thread,
                    recovering,
                } => {
                    assert_eq!(
                        self.granted.insert(cpu, Some((thread, recovering))),
                        Some(None),
                        "runs on an idle, granted processor"
                    );
                }
                Action::AddMoreProcessors(wanted) => {
                    assert!(wanted > 0 && self.package.waiting() > 0)
                }
                Action::ProcessorIsIdle(cpu) => {
                    assert_eq!(self.granted[&cpu], None);
                    assert_eq!(self.package.waiting(), 0);
                }
            }
        }
        for (&cpu, &run) in &self.granted {
            assert_eq!(
                self.package.running_on(cpu),
                Ok(run.map(|(thread, _)| thread))
            );
            if let Some((thread, recovering)) = run {
                assert_eq!(self.package.state(thread).unwrap().recovering, recovering);
            }
        }
        assert_eq!(
            self.package.processors().collect::<Vec<_>>(),
            self.granted.keys().copied().collect::<Vec<_>>()
        );
    }
}

#[test]
fn random_upcall_sequences_keep_the_invariants_and_every_thread_exits() {
    for seed in SEEDS {
        let mut kernel = Kernel::new(seed);
        for _ in 0..STEPS {
            kernel.step(true);
        }
        // Drain: no more spawns, preemptions or blocks; threads finish.
        let mut steps = 0;
        while kernel.package.live_threads() > 0 || kernel.spawned < THREADS {
            if kernel.spawned < THREADS {
                kernel.spawned += 1;
                let actions = kernel.package.spawn().unwrap().1;
                kernel.apply(&actions);
            }
            kernel.step(false);
            steps += 1;
            assert!(
                steps < DRAIN_STEP_LIMIT,
                "seed {seed:#x}: threads left after {steps} steps"
            );
        }
        let counters = kernel.package.counters();
        assert_eq!((counters.spawned, counters.exited), (THREADS, THREADS));
        assert!(
            counters.processors_preempted > 0
                && counters.activations_blocked > 0
                && counters.recoveries > 0
        );
        assert!(counters.add_more_processors > 0 && counters.processor_is_idle > 0);
        assert!(kernel.blocked.is_empty());
    }
}
