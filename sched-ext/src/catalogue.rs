//! The catalogue: every shipped policy by name, with a one-line description and a constructor.

use alloc::boxed::Box;

use crate::interface::Policy;
use crate::policies::{central, edf, priority, rr, steal, stride, weighted};

/// A policy the kernel can instantiate by name.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInfo {
    /// The name, as [`Policy::name`] returns it.
    pub name: &'static str,
    /// What the policy does, in one line.
    pub description: &'static str,
    /// Makes an instance for `cpu_count` CPUs.
    pub create: fn(cpu_count: u16) -> Box<dyn Policy>,
}

/// The shipped policies; the first is the default.
static CATALOGUE: [PolicyInfo; 7] = [
    PolicyInfo {
        name: rr::NAME,
        description: "round robin: per-CPU FIFO queues, 10 ms slices, strands a slice behind pulled across CPUs",
        create: |cpu_count| Box::new(rr::RoundRobin::new(cpu_count)),
    },
    PolicyInfo {
        name: priority::NAME,
        description: "strict priorities (0 most urgent) with aging: a waiting strand gains a level every 10 ms",
        create: |cpu_count| Box::new(priority::Priority::new(cpu_count)),
    },
    PolicyInfo {
        name: stride::NAME,
        description: "Waldspurger's stride scheduling: CPU share proportional to tickets, deterministic",
        create: |cpu_count| Box::new(stride::Stride::new(cpu_count)),
    },
    PolicyInfo {
        name: edf::NAME,
        description: "partitioned earliest-deadline-first for periodic strands with admission control; others in the background",
        create: |cpu_count| Box::new(edf::Edf::new(cpu_count)),
    },
    PolicyInfo {
        name: central::NAME,
        description: "a central agent on CPU 0 assigns every strand to a CPU through per-CPU single-slot mailboxes",
        create: |cpu_count| Box::new(central::Central::new(cpu_count)),
    },
    PolicyInfo {
        name: steal::NAME,
        description: "per-CPU queues with work stealing that respects affinity, and balancing on tick",
        create: |cpu_count| Box::new(steal::Steal::new(cpu_count)),
    },
    PolicyInfo {
        name: weighted::NAME,
        description: "weighted virtual time like CFS: runs the strand with the least weight-scaled CPU time",
        create: |_cpu_count| Box::new(weighted::Weighted::default()),
    },
];

/// The shipped policies, `rr` (the default) first. The broken ones are in
/// [`broken_catalogue`](crate::broken_catalogue), not here.
pub fn catalogue() -> &'static [PolicyInfo] {
    &CATALOGUE
}

/// The shipped policy called `name`.
pub fn find(name: &str) -> Option<&'static PolicyInfo> {
    CATALOGUE.iter().find(|info| info.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_holds_the_six_policies_and_the_example_with_one_line_descriptions() {
        let names: alloc::vec::Vec<&str> = catalogue().iter().map(|info| info.name).collect();
        assert_eq!(
            names,
            ["rr", "priority", "stride", "edf", "central", "steal", "weighted"]
        );
        for info in catalogue() {
            assert!(
                !info.description.trim().is_empty(),
                "{} has no description",
                info.name
            );
            assert!(
                !info.description.contains('\n'),
                "{}'s description is not one line",
                info.name
            );
            let policy = (info.create)(4);
            assert_eq!(
                policy.name(),
                info.name,
                "the catalogue name and the policy's name differ"
            );
        }
    }

    #[test]
    fn find_returns_the_named_policy_and_nothing_for_unknown_names() {
        assert_eq!(find("edf").map(|info| info.name), Some("edf"));
        assert_eq!(find("rr").map(|info| info.name), Some(catalogue()[0].name));
        assert!(find("no-such-policy").is_none());
        assert!(
            find("broken-panic").is_none(),
            "broken policies stay out of the catalogue"
        );
    }
}
