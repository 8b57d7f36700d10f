//! An interrupt-safe spin lock: for data that interrupt handlers (the scheduler's tick and switch paths) take too.
//!
//! Taking the lock disables interrupts on the CPU first and releasing it
//! restores what was there, so an interrupt handler on the same CPU can never
//! spin on a lock its own interrupted code holds. Locks nest in LIFO order
//! (release the last one taken first), as `lock_api` guards do when dropped
//! in scope order.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::cpu;

/// The raw lock behind [`IrqMutex`].
pub struct IrqSafeRawSpinlock {
    locked: AtomicBool,
    /// Whether interrupts were enabled when the holder took the lock (only
    /// the holder writes it, between acquiring and releasing).
    interrupts_were_enabled: AtomicBool,
}

// SAFETY: `lock` returns only once `locked` went from false to true with
// Acquire ordering, so one holder at a time; `unlock` stores false with
// Release ordering, publishing the holder's writes to the next holder.
unsafe impl lock_api::RawMutex for IrqSafeRawSpinlock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: IrqSafeRawSpinlock = IrqSafeRawSpinlock {
        locked: AtomicBool::new(false),
        interrupts_were_enabled: AtomicBool::new(false),
    };

    type GuardMarker = lock_api::GuardNoSend;

    fn lock(&self) {
        let were_enabled = cpu::disable_interrupts();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            crate::extensions::relax();
        }
        self.interrupts_were_enabled
            .store(were_enabled, Ordering::Relaxed);
    }

    fn try_lock(&self) -> bool {
        let were_enabled = cpu::disable_interrupts();
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.interrupts_were_enabled
                .store(were_enabled, Ordering::Relaxed);
            true
        } else {
            cpu::restore_interrupts(were_enabled);
            false
        }
    }

    unsafe fn unlock(&self) {
        let were_enabled = self.interrupts_were_enabled.load(Ordering::Relaxed);
        self.locked.store(false, Ordering::Release);
        cpu::restore_interrupts(were_enabled);
    }
}

/// A mutex whose holder runs with interrupts disabled.
pub type IrqMutex<T> = lock_api::Mutex<IrqSafeRawSpinlock, T>;

/// A new [`IrqMutex`] (usable in `static`s and `const` array initializers).
pub const fn irq_mutex<T>(value: T) -> IrqMutex<T> {
    lock_api::Mutex::const_new(<IrqSafeRawSpinlock as lock_api::RawMutex>::INIT, value)
}
