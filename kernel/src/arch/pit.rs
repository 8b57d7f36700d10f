//! The 8254 programmable interval timer, channel 2 in one-shot mode, polled:
//! a known 1.193182 MHz clock to calibrate the TSC against (and to wait the
//! 10 ms that INIT needs before the TSC is known).

use x86::io::{inb, outb};

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;
const CHANNEL_2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
/// Port 0x61: bit 0 gates channel 2, bit 1 drives the speaker, bit 5 reads
/// channel 2's output.
const CONTROL_PORT_B: u16 = 0x61;
const GATE_BIT: u8 = 0x01;
const SPEAKER_BIT: u8 = 0x02;
const OUTPUT_BIT: u8 = 0x20;
/// Channel 2, low then high byte, mode 0 (interrupt on terminal count), binary.
const CHANNEL_2_MODE_0: u8 = 0b1011_0000;
/// Longest wait one countdown can give (16-bit counter).
const MAX_COUNT: u64 = 0xFFFF;

/// Busy-waits `milliseconds` using PIT channel 2.
pub fn wait_ms(milliseconds: u64) {
    let mut remaining = PIT_HZ * milliseconds / 1000;
    while remaining > 0 {
        let count = remaining.min(MAX_COUNT);
        countdown(count as u16);
        remaining -= count;
    }
}

fn countdown(count: u16) {
    // SAFETY: ports 0x42, 0x43 and 0x61 belong to the PIT and the keyboard
    // controller's port B; only channel 2 (the speaker channel, unused here)
    // is reprogrammed, with the speaker off.
    unsafe {
        let control = inb(CONTROL_PORT_B) & !(SPEAKER_BIT | GATE_BIT);
        outb(CONTROL_PORT_B, control);
        outb(COMMAND, CHANNEL_2_MODE_0);
        outb(CHANNEL_2_DATA, (count & 0xFF) as u8);
        outb(CHANNEL_2_DATA, (count >> 8) as u8);
        outb(CONTROL_PORT_B, control | GATE_BIT);
        while inb(CONTROL_PORT_B) & OUTPUT_BIT == 0 {
            core::hint::spin_loop();
        }
        outb(CONTROL_PORT_B, control);
    }
}
