//! The serial console on COM1 (a 16550 UART): whole lines under one lock so
//! lines from different CPUs never interleave, structured records in the
//! `@sp1` format (docs/serial-protocol.md), and polled input.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};

use spindle_records::RecordWriter;
use x86::io::{inb, outb};

use crate::arch::{cpu, tsc};

/// COM1's I/O base.
const COM1: u16 = 0x3F8;
const DATA: u16 = COM1;
const INTERRUPT_ENABLE: u16 = COM1 + 1;
const FIFO_CONTROL: u16 = COM1 + 2;
const LINE_CONTROL: u16 = COM1 + 3;
const MODEM_CONTROL: u16 = COM1 + 4;
const LINE_STATUS: u16 = COM1 + 5;
const DIVISOR_LOW: u16 = COM1;
const DIVISOR_HIGH: u16 = COM1 + 1;
/// Line control: divisor latch access.
const DIVISOR_LATCH: u8 = 0x80;
/// Line control: 8 data bits, no parity, one stop bit.
const EIGHT_N_ONE: u8 = 0x03;
/// FIFO control: enable, clear the transmit FIFO (keep input that is
/// already waiting), 14-byte threshold.
const FIFO_ENABLE_CLEAR_TRANSMIT: u8 = 0xC5;
/// Modem control: DTR, RTS, OUT2.
const MODEM_READY: u8 = 0x0B;
/// Divisor 1: 115200 baud.
const DIVISOR_115200: u8 = 1;
/// Line status: data ready.
const DATA_READY: u8 = 0x01;
/// Line status: transmit holding register empty.
const TRANSMIT_EMPTY: u8 = 0x20;
/// Depth of the 16550A transmit FIFO.
const UART_FIFO_SIZE: usize = 16;
/// Spins before a fault report takes the console from a CPU that holds it.
const FORCED_TAKEOVER_SPINS: u64 = 50_000_000;

/// The CPU holding the console lock, or `cpu::NO_CPU`.
static OWNER: AtomicU32 = AtomicU32::new(cpu::NO_CPU);

/// Programs COM1 for 115200 8N1 with FIFOs and no UART interrupts.
pub fn init() {
    // SAFETY: ports 0x3F8..0x3FF belong to COM1, which only this module uses.
    unsafe {
        outb(INTERRUPT_ENABLE, 0);
        outb(LINE_CONTROL, DIVISOR_LATCH);
        outb(DIVISOR_LOW, DIVISOR_115200);
        outb(DIVISOR_HIGH, 0);
        outb(LINE_CONTROL, EIGHT_N_ONE);
        outb(FIFO_CONTROL, FIFO_ENABLE_CLEAR_TRANSMIT);
        outb(MODEM_CONTROL, MODEM_READY);
    }
}

fn write_byte(byte: u8) {
    write_bytes(&[byte]);
}

/// Writes `bytes`, a FIFO's worth at a time: when the line status says the
/// transmitter is empty, the 16-byte FIFO takes 16 bytes without loss, and
/// `rep outsb` hands them over in one instruction (one VM exit under KVM
/// instead of two per byte).
fn write_bytes(bytes: &[u8]) {
    for chunk in bytes.chunks(UART_FIFO_SIZE) {
        // SAFETY: COM1 status and data ports; see `init`. `rep outsb` reads
        // exactly `chunk.len()` bytes from `chunk` (direction flag clear, as
        // the ABI guarantees) and writes them to the data port.
        unsafe {
            while inb(LINE_STATUS) & TRANSMIT_EMPTY == 0 {
                core::hint::spin_loop();
            }
            core::arch::asm!(
                "rep outsb",
                in("dx") DATA,
                inout("rsi") chunk.as_ptr() => _,
                inout("rcx") chunk.len() => _,
                options(nostack, preserves_flags, readonly)
            );
        }
    }
}

/// Reads one byte from COM1 if one is waiting.
pub fn read_byte() -> Option<u8> {
    // SAFETY: COM1 status and data ports; see `init`.
    unsafe {
        if inb(LINE_STATUS) & DATA_READY != 0 {
            Some(inb(DATA))
        } else {
            None
        }
    }
}

/// Reads a line (without its `\n`; `\r` dropped) into `buffer`, cutting
/// what does not fit. Waits up to `timeout_ns` for each byte; returns the
/// bytes kept, or `None` on timeout.
pub fn read_line(buffer: &mut [u8], timeout_ns: u64) -> Option<usize> {
    let timeout = tsc::ns_to_cycles(timeout_ns);
    let mut length = 0;
    let mut waiting_since = tsc::now();
    loop {
        match read_byte() {
            Some(b'\n') => return Some(length),
            Some(b'\r') => {}
            Some(byte) => {
                if let Some(slot) = buffer.get_mut(length) {
                    *slot = byte;
                    length += 1;
                }
                waiting_since = tsc::now();
            }
            None if tsc::now() - waiting_since > timeout => return None,
            None => core::hint::spin_loop(),
        }
    }
}

/// The console while its lock is held: a `fmt::Write` sink.
pub struct Console {
    _private: (),
}

impl Write for Console {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_bytes(text.as_bytes());
        Ok(())
    }
}

/// Holds the console lock with interrupts off; releases both on drop.
struct ConsoleGuard {
    interrupts_were_enabled: bool,
    release: bool,
}

impl Drop for ConsoleGuard {
    fn drop(&mut self) {
        if self.release {
            OWNER.store(cpu::NO_CPU, Ordering::Release);
        }
        cpu::restore_interrupts(self.interrupts_were_enabled);
    }
}

fn lock() -> ConsoleGuard {
    let interrupts_were_enabled = cpu::disable_interrupts();
    let me = cpu::current_index() as u32;
    while OWNER
        .compare_exchange_weak(cpu::NO_CPU, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    ConsoleGuard {
        interrupts_were_enabled,
        release: true,
    }
}

/// Takes the console for a fault report. If this CPU already holds it (the
/// fault hit while printing), the report continues on a fresh line; if
/// another CPU holds it for too long (it died holding it), it is taken over.
fn lock_for_report() -> ConsoleGuard {
    let interrupts_were_enabled = cpu::disable_interrupts();
    let me = cpu::current_index() as u32;
    if OWNER.load(Ordering::Acquire) == me {
        write_byte(b'\n');
        return ConsoleGuard {
            interrupts_were_enabled,
            release: false,
        };
    }
    let mut spins = 0u64;
    while OWNER
        .compare_exchange_weak(cpu::NO_CPU, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > FORCED_TAKEOVER_SPINS {
            OWNER.store(me, Ordering::Release);
            write_byte(b'\n');
            break;
        }
        core::hint::spin_loop();
    }
    ConsoleGuard {
        interrupts_were_enabled,
        release: true,
    }
}

/// Runs `f` with exclusive use of the console: everything it writes is one
/// uninterrupted run of lines.
pub fn with_console<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    let _guard = lock();
    f(&mut Console { _private: () })
}

/// Like `with_console`, for fault and panic reports (see `lock_for_report`).
pub fn with_console_for_report<R>(f: impl FnOnce(&mut Console) -> R) -> R {
    let _guard = lock_for_report();
    f(&mut Console { _private: () })
}

/// Prints one human log line (used by `kprintln!`): raises the `print`
/// event once the extension services are up (extensions may observe or
/// replace it), writes the line directly before that.
pub fn print_line(arguments: fmt::Arguments<'_>) {
    if crate::extensions::print(arguments) {
        return;
    }
    with_console(|console| {
        let _ = console.write_fmt(arguments);
        let _ = console.write_str("\n");
    });
}

/// Writes one record of type `record_type`; `fill` adds its fields. The
/// whole record goes out under the console lock.
pub fn record(record_type: &str, fill: impl FnOnce(&mut RecordWriter<'_, Console>) -> fmt::Result) {
    with_console(|console| write_record(console, record_type, fill));
}

/// Writes one record on an already-held console.
pub fn write_record(
    console: &mut Console,
    record_type: &str,
    fill: impl FnOnce(&mut RecordWriter<'_, Console>) -> fmt::Result,
) {
    let result = RecordWriter::begin(console, record_type).and_then(|mut writer| {
        fill(&mut writer)?;
        writer.finish()
    });
    // The sink never fails; a formatting error would truncate the line, and
    // the host's checksum check reports it.
    let _ = result;
}

/// Writes a `scalar` record whose value is one number, on an already-held
/// console.
pub fn write_scalar_u64(console: &mut Console, name: &str, value: u64) {
    write_record(console, "scalar", |record| {
        record.str("name", name)?.u64("value", value)?;
        Ok(())
    });
}

/// Writes the `end` record (`status` is `ok` or `fail`) on an already-held
/// console: the last record of every run.
pub fn write_end(console: &mut Console, status: &str) {
    write_record(console, "end", |record| {
        record.str("status", status)?;
        Ok(())
    });
}

/// Prints a human log line on the serial console.
#[macro_export]
macro_rules! kprintln {
    ($($argument:tt)*) => {
        $crate::console::print_line(format_args!($($argument)*))
    };
}

/// A fixed buffer for text formatted where no allocation is allowed; text
/// beyond its capacity is cut at a character boundary.
pub struct BoundedText {
    bytes: [u8; BoundedText::CAPACITY],
    length: usize,
}

impl Default for BoundedText {
    fn default() -> Self {
        Self::new()
    }
}

impl BoundedText {
    /// Bytes kept at most.
    pub const CAPACITY: usize = 512;

    /// An empty buffer.
    pub fn new() -> Self {
        BoundedText {
            bytes: [0; Self::CAPACITY],
            length: 0,
        }
    }

    /// The text kept.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.length]).unwrap_or("")
    }
}

impl Write for BoundedText {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        for character in text.chars() {
            let mut encoded = [0u8; 4];
            let encoded = character.encode_utf8(&mut encoded).as_bytes();
            if self.length + encoded.len() > Self::CAPACITY {
                break;
            }
            self.bytes[self.length..self.length + encoded.len()].copy_from_slice(encoded);
            self.length += encoded.len();
        }
        Ok(())
    }
}
