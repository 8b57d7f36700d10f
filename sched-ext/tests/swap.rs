//! Live swaps between every pair of catalogue policies, driven through the public API and checked by the simulator.

use std::sync::Arc;

use spindle_sched_ext::sim::{SimConfig, SimErrorKind, Simulator, Workload};
use spindle_sched_ext::{
    catalogue, find, CpuId, CpuSet, Nanoseconds, Policy, SchedParams, StrandId,
    NANOSECONDS_PER_MILLISECOND, NANOSECONDS_PER_SECOND,
};

const MILLISECOND: Nanoseconds = NANOSECONDS_PER_MILLISECOND;
const CPU_COUNT: u16 = 4;
/// Every runnable strand must run at least this often, under every policy and across swaps.
const STALL_BOUND: Nanoseconds = 300 * MILLISECOND;

fn policy(name: &str) -> Arc<dyn Policy> {
    let info = find(name).expect("a catalogue policy");
    Arc::from((info.create)(CPU_COUNT))
}

fn simulator(first: &str) -> Simulator {
    let config = SimConfig::new(CPU_COUNT)
        .with_stall_bound(STALL_BOUND)
        .with_audit_interval(25 * MILLISECOND);
    Simulator::new(config, policy(first))
}

/// Strands of every kind: CPU-bound with various parameters, pinned, sleepy,
/// directed-yielding, periodic, one that exits, one that starts late. Returns the long-lived ones.
fn add_mixed_workload(sim: &mut Simulator) -> Vec<StrandId> {
    let all = CpuSet::all(CPU_COUNT);
    let default = SchedParams::default();
    let mut long_lived = Vec::new();
    let add = |sim: &mut Simulator, affinity: CpuSet, params: SchedParams, workload: Workload| {
        sim.add_strand(affinity, params, workload)
            .expect("the strand is accepted")
    };
    long_lived.push(add(sim, all, default, Workload::CpuBound));
    long_lived.push(add(sim, all, default, Workload::CpuBound));
    let heavy = default.with_tickets(300).with_weight(300).with_priority(14);
    long_lived.push(add(sim, all, heavy, Workload::CpuBound));
    long_lived.push(add(
        sim,
        CpuSet::single(CpuId(1)),
        default,
        Workload::CpuBound,
    ));
    let pair: CpuSet = [CpuId(2), CpuId(3)].into_iter().collect();
    let sleepy = Workload::ComputeSleep {
        compute: 3 * MILLISECOND,
        sleep: 5 * MILLISECOND,
    };
    long_lived.push(add(sim, all, default.with_priority(10), sleepy));
    long_lived.push(add(sim, pair, default, sleepy));
    // Directed yields, taken or refused, across every policy and swap.
    for compute in [MILLISECOND, 2 * MILLISECOND] {
        long_lived.push(add(sim, all, default, Workload::DirectedYield { compute }));
    }
    for _ in 0..2 {
        let params = default.periodic(20 * MILLISECOND, 4 * MILLISECOND, 0);
        let periodic = Workload::Periodic {
            period: 20 * MILLISECOND,
            execution: 4 * MILLISECOND,
            relative_deadline: 0,
        };
        long_lived.push(add(sim, all, params, periodic));
    }
    add(
        sim,
        all,
        default,
        Workload::Finite {
            compute: 40 * MILLISECOND,
        },
    );
    let late = sim
        .add_strand_at(100 * MILLISECOND, all, default, Workload::CpuBound)
        .expect("the late strand is accepted");
    long_lived.push(late);
    long_lived
}

fn cpu_times(sim: &Simulator, strands: &[StrandId]) -> Vec<Nanoseconds> {
    strands
        .iter()
        .map(|id| sim.strand_statistics(*id).cpu_time)
        .collect()
}

/// CPU time handed to strands equals CPU time the CPUs were busy: nothing ran twice.
fn assert_conserved(sim: &Simulator) {
    let handed: Nanoseconds = sim
        .strand_ids()
        .map(|id| sim.strand_statistics(id).cpu_time)
        .sum();
    let busy: Nanoseconds = (0..CPU_COUNT)
        .map(|cpu| sim.cpu_statistics(CpuId(cpu)).busy_time)
        .sum();
    assert_eq!(handed, busy);
}

#[test]
fn every_ordered_pair_of_policies_swaps_live_without_losing_a_strand() {
    for from in catalogue() {
        for to in catalogue() {
            let context = format!("{} -> {}", from.name, to.name);
            let mut sim = simulator(from.name);
            let long_lived = add_mixed_workload(&mut sim);
            sim.run_until(150 * MILLISECOND)
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            let before = cpu_times(&sim, &long_lived);
            sim.swap_policy(policy(to.name))
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            assert_eq!(sim.policy_name(), to.name);
            sim.run_until(300 * MILLISECOND)
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            // A strand created under the new policy is scheduled by it too.
            let newcomer = sim
                .add_strand(
                    CpuSet::all(CPU_COUNT),
                    SchedParams::default(),
                    Workload::CpuBound,
                )
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            sim.run_until(450 * MILLISECOND)
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            let after = cpu_times(&sim, &long_lived);
            for ((id, before), after) in long_lived.iter().zip(before).zip(after) {
                assert!(
                    after > before,
                    "{context}: {id} stopped running after the swap"
                );
            }
            assert!(
                sim.strand_statistics(newcomer).cpu_time > 0,
                "{context}: the newcomer never ran"
            );
            sim.audit()
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            assert_conserved(&sim);
        }
    }
}

#[test]
fn swapping_every_fifty_milliseconds_through_all_policies_keeps_everyone_running() {
    let swap_interval = 50 * MILLISECOND;
    let duration = 2 * NANOSECONDS_PER_SECOND;
    let window = 250 * MILLISECOND;
    let mut sim = simulator(catalogue()[0].name);
    let long_lived = add_mixed_workload(&mut sim);
    let mut previous = cpu_times(&sim, &long_lived);
    let mut next_policy = catalogue().iter().cycle().skip(1);
    let mut now = 0;
    while now < duration {
        now += swap_interval;
        sim.run_until(now).unwrap_or_else(|error| panic!("{error}"));
        let name = next_policy.next().map(|info| info.name).unwrap_or("rr");
        sim.swap_policy(policy(name))
            .unwrap_or_else(|error| panic!("swap to {name}: {error}"));
        if now % window == 0 {
            let current = cpu_times(&sim, &long_lived);
            for ((id, before), after) in long_lived.iter().zip(&previous).zip(&current) {
                let started = now > 100 * MILLISECOND + window;
                assert!(
                    !started || after > before,
                    "{id} made no progress by {now} ns"
                );
            }
            previous = current;
        }
    }
    assert_eq!(sim.swaps(), duration / swap_interval);
    assert_conserved(&sim);
}

#[test]
fn a_refused_hand_over_leaves_the_old_policy_in_charge() {
    let mut sim = Simulator::new(SimConfig::new(1), policy("rr"));
    // Utilisation 0.6 + 0.6 on one CPU: round robin runs it, EDF would refuse it.
    for _ in 0..2 {
        let params = SchedParams::default().periodic(10 * MILLISECOND, 6 * MILLISECOND, 0);
        let workload = Workload::Periodic {
            period: 10 * MILLISECOND,
            execution: 6 * MILLISECOND,
            relative_deadline: 0,
        };
        sim.add_strand(CpuSet::all(1), params, workload).unwrap();
    }
    sim.run_until(50 * MILLISECOND).unwrap();
    let refused = sim
        .swap_policy(Arc::from((find("edf").unwrap().create)(1)))
        .unwrap_err();
    assert!(
        matches!(refused.kind, SimErrorKind::ImportRefused { .. }),
        "{refused}"
    );
    assert_eq!(sim.policy_name(), "rr");
    sim.run_until(100 * MILLISECOND).unwrap();
    sim.audit().unwrap();
}
