//! The workloads behind `--bench dispatch` and `selftest=dispatch-churn`, against the dispatcher's public interface only.
//!
//! * [`bench`]: the cost of a raise with 0, 1, 1 guarded, 4 and 16 handlers
//!   against a direct and an indirect call of the same handler body, and the
//!   cost of installing and removing a handler.
//! * [`churn`]: one CPU installs and removes handlers (single ones and
//!   two-handler extensions) while the other CPUs raise the event in a loop;
//!   every call is counted, so a lost, doubled, half-visible or late call
//!   shows up as a number that is not zero.
//!
//! Both are plain safe code driven by the kernel (which supplies the clock,
//! the CPUs and the loop) or by host threads in the tests.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod bench;
pub mod churn;

/// The protection domain the benchmark's and the stress test's handlers are
/// installed for.
pub const BENCH_DOMAIN: spindle_dispatch::DomainId = spindle_dispatch::DomainId::new(0x0be0);
