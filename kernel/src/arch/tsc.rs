//! The time-stamp counter: reading it, calibrating its frequency (CPUID leaf
//! 0x15, the hypervisor timing leaf 0x4000_0010, or the PIT), and converting
//! cycles to nanoseconds without division on the hot path.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::{cpu, pit};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per cycle as a 32.32 fixed-point multiplier.
static NANOSECONDS_PER_CYCLE_FIXED: AtomicU64 = AtomicU64::new(0);
static SOURCE: AtomicU8 = AtomicU8::new(0);

const NANOSECONDS_PER_SECOND: u64 = 1_000_000_000;
const FIXED_POINT_SHIFT: u32 = 32;
/// PIT calibration window (ms) and number of tries (the median is kept).
const PIT_WINDOW_MS: u64 = 10;
const PIT_TRIES: usize = 3;

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// CPUID leaf 0x15 (crystal clock × ratio).
    CpuidCrystal,
    /// The hypervisor's timing leaf (CPUID 0x4000_0010, TSC kHz).
    Hypervisor,
    /// Measured against the 8254 PIT.
    Pit,
}

impl TscSource {
    /// The name used in the `tsc_source` scalar.
    pub fn name(self) -> &'static str {
        match self {
            TscSource::CpuidCrystal => "cpuid-15h",
            TscSource::Hypervisor => "hypervisor",
            TscSource::Pit => "pit",
        }
    }
}

/// Reads the TSC.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: RDTSC is unprivileged-safe and has no side effects (CR4.TSD is
    // clear in the kernel).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The calibrated TSC frequency in Hz.
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Where the frequency came from.
pub fn source() -> TscSource {
    match SOURCE.load(Ordering::Relaxed) {
        1 => TscSource::CpuidCrystal,
        2 => TscSource::Hypervisor,
        _ => TscSource::Pit,
    }
}

/// `value * numerator / denominator` in 128-bit arithmetic.
pub fn scale(value: u64, numerator: u64, denominator: u64) -> u64 {
    if denominator == 0 {
        return 0;
    }
    (u128::from(value) * u128::from(numerator) / u128::from(denominator)) as u64
}

/// Converts TSC cycles to nanoseconds (multiply and shift, no division).
#[inline]
pub fn cycles_to_ns(cycles: u64) -> u64 {
    let multiplier = NANOSECONDS_PER_CYCLE_FIXED.load(Ordering::Relaxed);
    ((u128::from(cycles) * u128::from(multiplier)) >> FIXED_POINT_SHIFT) as u64
}

/// Converts nanoseconds to TSC cycles.
pub fn ns_to_cycles(nanoseconds: u64) -> u64 {
    scale(nanoseconds, hz(), NANOSECONDS_PER_SECOND)
}

/// Converts TSC cycles to APIC timer counts at `timer_hz`.
pub fn cycles_to_timer_counts(cycles: u64, timer_hz: u64) -> u64 {
    scale(cycles, timer_hz, hz())
}

/// Spins for `nanoseconds` (after calibration).
pub fn delay_ns(nanoseconds: u64) {
    let start = now();
    let cycles = ns_to_cycles(nanoseconds);
    while now() - start < cycles {
        core::hint::spin_loop();
    }
}

fn set_hz(hz: u64, source: TscSource) {
    TSC_HZ.store(hz, Ordering::Relaxed);
    let multiplier =
        ((u128::from(NANOSECONDS_PER_SECOND) << FIXED_POINT_SHIFT) / u128::from(hz.max(1))) as u64;
    NANOSECONDS_PER_CYCLE_FIXED.store(multiplier, Ordering::Relaxed);
    let code = match source {
        TscSource::CpuidCrystal => 1,
        TscSource::Hypervisor => 2,
        TscSource::Pit => 3,
    };
    SOURCE.store(code, Ordering::Relaxed);
}

/// Determines the TSC frequency once, on the bootstrap processor.
pub fn calibrate() -> u64 {
    let max_leaf = cpu::raw_cpuid_max_leaf();
    if max_leaf >= 0x15 {
        let leaf = cpu::cpuid(0x15, 0);
        // EAX: denominator, EBX: numerator, ECX: crystal Hz (SDM Vol. 2A CPUID).
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            let hz = scale(
                u64::from(leaf.ecx),
                u64::from(leaf.ebx),
                u64::from(leaf.eax),
            );
            set_hz(hz, TscSource::CpuidCrystal);
            return hz;
        }
    }
    let hypervisor_max = if cpu::cpuid(1, 0).ecx & (1 << 31) != 0 {
        cpu::cpuid(0x4000_0000, 0).eax
    } else {
        0
    };
    if hypervisor_max >= 0x4000_0010 {
        let kilohertz = u64::from(cpu::cpuid(0x4000_0010, 0).eax);
        if kilohertz != 0 {
            let hz = kilohertz * 1000;
            set_hz(hz, TscSource::Hypervisor);
            return hz;
        }
    }
    let mut measurements = [0u64; PIT_TRIES];
    for measurement in measurements.iter_mut() {
        let start = now();
        pit::wait_ms(PIT_WINDOW_MS);
        let cycles = now() - start;
        *measurement = cycles * (1000 / PIT_WINDOW_MS);
    }
    measurements.sort_unstable();
    let hz = measurements[PIT_TRIES / 2];
    set_hz(hz, TscSource::Pit);
    hz
}

/// Slowest TSC frequency believed; below it the PIT gate (port 0x61) is
/// missing or broken, as on QEMU's `microvm` machine, and the measurement
/// is meaningless.
pub const PLAUSIBLE_MINIMUM_HZ: u64 = 200_000_000;
