//! Grace periods for per-CPU readers (quiescent-state-based reclamation) and values published under them.
//!
//! A *read section* is a stretch of code on one CPU that may hold references
//! to a [`Published`] value. Entering and leaving one is a plain load and
//! store of the CPU's own counter: no locked instruction, no fence, no write
//! to a line another CPU writes. A writer replaces the value with one atomic
//! swap and then waits for a *grace period*: until every CPU has been seen in
//! a *quiescent state* (outside every read section) after the swap. Only then
//! is the old value dropped, so no reader can still hold it.
//!
//! A CPU proves it is quiescent in one of three ways, each a full fence on
//! that CPU (a locked read-modify-write), which is what lets readers go
//! without one:
//!
//! * [`Grace::quiescent_state`]: the kernel calls it where the CPU is known
//!   to hold no reference (every timer tick; every wait loop); it counts only
//!   when the CPU is outside all read sections.
//! * the end of the outermost read section, while some writer waits for this
//!   CPU (so a CPU that does nothing but read still lets writers go).
//! * [`Grace::enter_idle`]: an idle CPU is quiescent until its next read
//!   section, which leaves idle first (with a fence) by itself.
//!
//! # Soundness
//!
//! Everything rests on the [`CpuIdentity`]: it must name the CPU that runs
//! the caller, no two threads of execution may use one CPU index at once
//! (interrupt handlers nest, which is allowed), and a read section must end
//! on the CPU where it began. Only the kernel can promise that, so
//! [`CpuIdentity::new`] is `unsafe`; host tests use an identity that checks
//! the calling thread at run time. Given the identity, the API is safe: a
//! section is not `Send`, a reference read from a [`Published`] lives no
//! longer than the section, sections count (so they may end in any order),
//! and a forgotten section only delays writers for ever; it never lets a
//! value be freed early.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod grace;
mod identity;
mod published;

pub use grace::{Awaited, Grace, ReadSection, MAX_CPUS};
pub use identity::CpuIdentity;
pub use published::{Published, Reading};

#[cfg(test)]
mod tests;
