//! Weighted virtual time, after Linux's CFS: the worked example of how to write a policy.
//!
//! Virtual time grows by `ran * DEFAULT_WEIGHT / weight`; every `SLICE` the queued strand with
//! the least runs, so CPU shares follow weights. A waking strand starts at most `WAKE_CREDIT`
//! behind the least runnable one. Each strand is kept as the `ExportedStrand` it will hand over.

use crate::interface::{StrandState::*, *};
use alloc::{collections::BTreeMap, collections::BTreeSet, vec, vec::Vec};
use spin::Mutex;

/// The policy's name in the catalogue.
pub const NAME: &str = "weighted";
/// The longest stint: then the strand is checkpointed and competes again.
pub const SLICE: Nanoseconds = 4 * NANOSECONDS_PER_MILLISECOND;
/// How far behind the least runnable virtual time a waking strand may start.
pub const WAKE_CREDIT: Nanoseconds = 3 * NANOSECONDS_PER_MILLISECOND;

/// Runs the runnable strand with the least weight-scaled CPU time.
#[derive(Default)]
pub struct Weighted(Mutex<BTreeMap<StrandId, ExportedStrand>>);

impl Policy for Weighted {
    fn name(&self) -> &'static str {
        NAME
    }

    fn strand_created(&self, ctx: &Context, spec: &StrandSpec) -> Result<(), Refusal> {
        self.import(ctx, vec![ExportedStrand::created(*spec)])
    }

    fn strand_exited(&self, _: &Context, id: StrandId) {
        self.0.lock().remove(&id);
    }

    fn unblock(&self, _: &Context, id: StrandId, _: CpuId) {
        let mut table = self.0.lock();
        let runnable = table.values().filter(|strand| strand.state != Blocked);
        let least = runnable.map(|strand| strand.virtual_time).min();
        if let Some(strand) = table.get_mut(&id).filter(|strand| strand.state == Blocked) {
            let earliest = least.unwrap_or(0).saturating_sub(WAKE_CREDIT);
            (strand.state, strand.virtual_time) = (Runnable, strand.virtual_time.max(earliest));
        }
    }

    fn block(&self, _: &Context, id: StrandId) {
        if let Some(strand) = self.0.lock().get_mut(&id) {
            strand.state = Blocked;
        }
    }

    fn checkpoint(&self, _: &Context, id: StrandId, reason: CheckpointReason, ran: Nanoseconds) {
        if let Some(strand) = self.0.lock().get_mut(&id) {
            let weight = u64::from(strand.spec.params.weight.max(1));
            strand.virtual_time += ran * u64::from(DEFAULT_WEIGHT) / weight;
            strand.run_time += ran;
            strand.state = strand.state.after_checkpoint(reason);
        }
    }

    fn resume(&self, ctx: &Context, id: StrandId) {
        if let Some(strand) = self.0.lock().get_mut(&id) {
            strand.state = Running(ctx.cpu);
        }
    }

    fn pick_next(&self, ctx: &Context) -> Option<StrandId> {
        let mut table = self.0.lock();
        let eligible = |strand: &&mut ExportedStrand| {
            strand.state == Runnable && strand.spec.affinity.contains(ctx.cpu)
        };
        let queued = table.values_mut().filter(eligible);
        let strand = queued.min_by_key(|strand| strand.virtual_time)?;
        strand.state = Running(ctx.cpu);
        Some(strand.spec.id)
    }

    /// Any runnable strand allowed here, out of virtual-time order: it is charged when it is checkpointed.
    fn take_for_directed_yield(&self, ctx: &Context, id: StrandId) -> bool {
        let mut table = self.0.lock();
        let eligible = |strand: &&mut ExportedStrand| {
            strand.state == Runnable && strand.spec.affinity.contains(ctx.cpu)
        };
        let Some(strand) = table.get_mut(&id).filter(eligible) else {
            return false;
        };
        strand.state = Running(ctx.cpu);
        true
    }

    fn tick(&self, _: &Context, current: Option<StrandId>, ran: Nanoseconds) -> TickAction {
        match current {
            Some(_) if ran >= SLICE => TickAction::Preempt,
            _ => TickAction::Continue,
        }
    }

    fn export(&self, _: &Context) -> Vec<ExportedStrand> {
        self.0.lock().values().copied().collect()
    }

    fn import(&self, _: &Context, strands: Vec<ExportedStrand>) -> Result<(), Refusal> {
        let mut table = self.0.lock();
        let ids: BTreeSet<StrandId> = strands.iter().map(|strand| strand.spec.id).collect();
        if ids.len() < strands.len() || ids.iter().any(|id| table.contains_key(id)) {
            return Err(Refusal("weighted: the strand is already known"));
        }
        table.extend(strands.into_iter().map(|strand| (strand.spec.id, strand)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::directed_yield_checks::{hands_over, refuses_and_changes_nothing, QUEUED};
    use crate::sim::{SimConfig, Simulator, Workload};
    use alloc::sync::Arc;

    #[test]
    fn cpu_shares_follow_weights() {
        let weights = [100, 200, 300, 400];
        for cpu_count in [1, 2] {
            let mut sim = Simulator::new(SimConfig::new(cpu_count), Arc::new(Weighted::default()));
            let ids: Vec<StrandId> = weights
                .iter()
                .map(|weight| {
                    let params = SchedParams::default().with_weight(*weight);
                    sim.add_strand(CpuSet::all(cpu_count), params, Workload::CpuBound)
                        .unwrap()
                })
                .collect();
            let duration = 2 * NANOSECONDS_PER_SECOND;
            sim.run_until(duration).unwrap();
            let capacity = duration * u64::from(cpu_count);
            let total: u64 = weights.iter().map(|weight| u64::from(*weight)).sum();
            for (id, weight) in ids.iter().zip(weights) {
                let ideal = capacity * u64::from(weight) / total;
                let time = sim.strand_statistics(*id).cpu_time;
                assert!(
                    time.abs_diff(ideal) * 20 <= ideal,
                    "{id}, weight {weight}: {time} ns, ideal {ideal} ns"
                );
            }
        }
    }

    #[test]
    fn a_long_sleeper_wakes_near_the_others_not_far_behind() {
        let mut sim = Simulator::new(SimConfig::new(1), Arc::new(Weighted::default()));
        let workload = Workload::ComputeSleep {
            compute: 50 * NANOSECONDS_PER_MILLISECOND,
            sleep: 500 * NANOSECONDS_PER_MILLISECOND,
        };
        let sleeper = sim
            .add_strand(CpuSet::all(1), SchedParams::default(), workload)
            .unwrap();
        let worker = sim
            .add_strand(CpuSet::all(1), SchedParams::default(), Workload::CpuBound)
            .unwrap();
        sim.run_until(NANOSECONDS_PER_SECOND).unwrap();
        // The sleeper's waiting after each wake is bounded by the wake credit plus a slice, not its sleep.
        let longest = sim.strand_statistics(worker).longest_wait;
        assert!(
            longest <= WAKE_CREDIT + SLICE + NANOSECONDS_PER_MILLISECOND,
            "worker waited {longest} ns"
        );
        assert!(sim.strand_statistics(sleeper).cpu_time >= 100 * NANOSECONDS_PER_MILLISECOND);
    }

    #[test]
    fn a_directed_yield_hands_over_the_named_queued_strand() {
        for target in QUEUED {
            hands_over(Weighted::default(), target);
        }
    }

    #[test]
    fn a_directed_yield_refuses_strands_it_may_not_take_and_changes_nothing() {
        refuses_and_changes_nothing(Weighted::default);
    }
}
