//! Ending the run through QEMU's `isa-debug-exit` device (I/O port 0xf4):
//! QEMU exits with status `(value << 1) | 1`, so 0x10 gives 33 (success) and
//! 0x11 gives 35 (failure). See docs/serial-protocol.md.

use crate::arch::cpu;

/// The `isa-debug-exit` I/O port (`-device isa-debug-exit,iobase=0xf4`).
const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How the run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything asked for ran and passed its checks (QEMU status 33).
    Success = 0x10,
    /// A check failed, a fault or panic happened (QEMU status 35).
    Failure = 0x11,
}

/// Ends the run. If the device is missing (not under the runner), the CPU
/// halts instead.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: writing to the debug-exit port only makes QEMU exit; on a
    // machine without the device the write is ignored.
    unsafe { x86::io::outl(DEBUG_EXIT_PORT, code as u32) };
    cpu::halt_forever()
}
