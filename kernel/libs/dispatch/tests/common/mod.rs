//! Host platform for the tests: host threads playing CPUs under grace periods (or read locks), `std::time::Instant`, yield as relax.
#![allow(dead_code)]

use std::cell::Cell;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Instant;

use spindle_dispatch::{CpuIdentity, Dispatcher, Platform};

thread_local! {
    /// The "CPU" this thread runs on.
    static CPU: Cell<usize> = const { Cell::new(0) };
    /// Clock reads made by this thread.
    static CLOCK_READS: Cell<u64> = const { Cell::new(0) };
    /// Deferred-work notifications made by this thread's raises.
    static DEFERRED_READY: Cell<u64> = const { Cell::new(0) };
}

/// The instant the host clock counts from.
static START: OnceLock<Instant> = OnceLock::new();

/// Makes the calling thread CPU `cpu` (for both kinds of platform).
pub fn set_cpu(cpu: usize) {
    CPU.with(|current| current.set(cpu));
    CpuIdentity::set_thread_cpu(cpu);
}

/// The calling thread's CPU.
pub fn current_cpu() -> usize {
    CPU.with(Cell::get)
}

/// Nanoseconds since the first read; counts the read.
pub fn now_nanoseconds() -> u64 {
    CLOCK_READS.with(|reads| reads.set(reads.get() + 1));
    let elapsed = START.get_or_init(Instant::now).elapsed().as_nanos();
    u64::try_from(elapsed).unwrap_or(u64::MAX)
}

/// Clock reads made by the calling thread so far.
pub fn clock_reads() -> u64 {
    CLOCK_READS.with(Cell::get)
}

/// Counts a deferred-work notification.
fn deferred_ready(_cpu: usize) {
    DEFERRED_READY.with(|count| count.set(count.get() + 1));
}

/// Deferred-work notifications made by the calling thread's raises so far.
pub fn deferred_notifications() -> u64 {
    DEFERRED_READY.with(Cell::get)
}

/// The host platform the kernel's way: raises are grace-period read
/// sections, host threads play the CPUs (a `const`, as a kernel would have
/// it in a `static`).
pub const HOST: Platform = Platform::per_cpu(CpuIdentity::host_threads(), now_nanoseconds)
    .with_deferred_ready(deferred_ready)
    .with_relax(std::thread::yield_now);

/// The host platform with read-locked raises (any CPU function).
pub const HOST_LOCKED: Platform = Platform::new(current_cpu, now_nanoseconds)
    .with_deferred_ready(deferred_ready)
    .with_relax(std::thread::yield_now);

/// A dispatcher for `cpus` host "CPUs", with grace periods.
pub fn dispatcher(cpus: usize) -> Dispatcher {
    Dispatcher::new(HOST, cpus)
}

/// A dispatcher for `cpus` host "CPUs", with read locks.
pub fn locked_dispatcher(cpus: usize) -> Dispatcher {
    Dispatcher::new(HOST_LOCKED, cpus)
}

/// Spawns a thread that runs `body` as CPU `cpu`.
pub fn spawn_on_cpu<T: Send + 'static>(
    cpu: usize,
    body: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || {
        set_cpu(cpu);
        body()
    })
}
