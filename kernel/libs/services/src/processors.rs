//! `Processors`: processor allocation to an extension domain, as the kernel exports it to a scheduler-activations package: a domain of its own, strands in it, the downcalls ("add more processors", "this processor is idle"), and the kernel's way to stop a processor to deliver an upcall.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;

use spindle_sched_ext::{CpuId, CpuSet, DomainId, Nanoseconds, ProcessorClient, StrandId};

/// The allocation operations of the kernel (`kernel/src/strand/domains.rs`).
/// Every method may be called from a strand; none from a
/// [`ProcessorClient`] event, except [`interrupt`](Processors::interrupt).
pub trait Processors: Sync {
    /// An extension domain named `name`, scheduled by its own instance of the
    /// kernel's round-robin policy and told of its processors through
    /// `client`. A domain of the same name that holds no processor and has
    /// no strand left is reused (with the new client).
    fn register(
        &self,
        name: &'static str,
        client: Arc<dyn ProcessorClient>,
    ) -> Result<DomainId, String>;
    /// A strand of `domain`, blocked until [`Strands::start`] (or an
    /// unblock); it runs only on CPUs in `affinity` that the domain holds.
    ///
    /// [`Strands::start`]: crate::strands::Strands::start
    fn spawn_held_in(
        &self,
        domain: DomainId,
        body: Box<dyn FnOnce() + Send>,
        affinity: CpuSet,
    ) -> Result<StrandId, String>;
    /// Downcall "add more processors": grants `domain` up to `count` more
    /// CPUs that are free; returns how many. They become the domain's at the
    /// next rendezvous, and each raises `processor_added` on its CPU.
    fn request_processors(&self, domain: DomainId, count: usize) -> usize;
    /// Grants `domain` the free CPU `cpu` (see
    /// [`request_processors`](Processors::request_processors)).
    fn grant(&self, domain: DomainId, cpu: CpuId) -> Result<(), String>;
    /// Downcall "this processor is idle": `domain` gives `cpu` back. If the
    /// caller runs there, the CPU leaves at its next yield, block or exit.
    fn release(&self, domain: DomainId, cpu: CpuId) -> Result<(), String>;
    /// The kernel takes `cpu` back from `domain` with `notice` nanoseconds'
    /// notice (`revoke_requested` at once, `processor_revoked` after).
    fn revoke(&self, domain: DomainId, cpu: CpuId, notice: Nanoseconds) -> Result<(), String>;
    /// The CPUs allocated to `domain` in any state: being granted, held,
    /// being taken back or on their way back.
    fn allocated(&self, domain: DomainId) -> CpuSet;
    /// Changes the CPUs a strand of `domain` may run on (for a blocked
    /// strand the change lands when it is woken).
    fn set_affinity(&self, strand: StrandId, affinity: CpuSet) -> Result<(), String>;
    /// Whether `domain` holds no CPU, has none on its way to or from it, and
    /// has no strand left.
    fn is_idle(&self, domain: DomainId) -> bool;
    /// Stops whatever strand runs on `cpu` at its next scheduling point, as
    /// a tick would; a thread package's thread running there is handed back
    /// (the kernel's way to deliver an upcall on a busy processor). May be
    /// called from a `ProcessorClient` event.
    fn interrupt(&self, cpu: CpuId);
}
