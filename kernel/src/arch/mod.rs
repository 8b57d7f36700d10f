//! x86_64 mechanism: boot, CPU tables, interrupts, local APIC, TSC and PIT,
//! application-processor start-up, strand contexts. Most of the kernel's `unsafe` lives here.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod interrupts;
pub mod paging;
pub mod pit;
pub mod pvh;
pub mod recovery;
pub mod smp;
pub mod thread_context;
pub mod tsc;
