//! Spindle's scheduler extensions: the interface between the trusted scheduler and its policies, six policies, and a simulator.
//!
//! * [`interface`]: [`StrandId`], [`CpuSet`], [`SchedParams`], [`Context`]
//!   and the [`Policy`] trait, whose methods are SPIN's Strand events (Block,
//!   Unblock, Checkpoint, Resume) plus the questions the kernel asks
//!   (`select_cpu`, `pick_next`, `tick`) and the live-swap hand-over
//!   (`export`, `import`). Re-exported here.
//! * [`policies`]: `rr`, `priority`, `stride`, `edf`, `central`, `steal`, and
//!   `weighted`, the worked example of how to write a policy.
//! * [`catalogue()`] and [`find`]: the policies by name, `rr` first (the default).
//! * [`allocation`]: processor allocation to extension domains (grant,
//!   revocation with notice, the abort protocol) and [`ProcessorClient`].
//! * [`broken`]: deliberately broken policies for the kernel's ejection tests.
//! * [`sim`]: a deterministic multiprocessor simulator that calls a policy
//!   exactly as the kernel does and checks every decision it returns.
//!
//! Nothing here reads hardware or needs `std`; the crate is `no_std` outside
//! its tests and has no `unsafe`: a wrong policy can schedule badly, never
//! corrupt the kernel.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod allocation;
pub mod broken;
pub mod catalogue;
pub mod interface;
pub mod policies;
pub mod sim;

pub use allocation::{
    Allocation, AllocationError, DomainId, ProcessorClient, Revocation, Runner, DEFAULT_DOMAIN,
};
pub use broken::broken_catalogue;
pub use catalogue::{catalogue, find, PolicyInfo};
pub use interface::*;
