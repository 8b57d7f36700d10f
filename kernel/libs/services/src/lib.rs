//! The interfaces the kernel domain exports to extensions: the console, the clock, the `print` event, the strand operations for workloads (`strands`) and execution contexts for thread packages (`contexts`), and processor allocation for scheduler activations (`processors`).
//!
//! An extension names these types in its module's imports
//! (`Import::of::<Console>(CONSOLE)`); resolving its domain against the
//! kernel domain binds them, and the types must match exactly. The kernel
//! fills them with its own functions; an extension can only call them.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod contexts;
pub mod processors;
pub mod strands;

/// The name under which the kernel exports its [`Console`].
pub const CONSOLE: &str = "kernel.Console";
/// The name under which the kernel exports its [`Clock`].
pub const CLOCK: &str = "kernel.Clock";
/// The name under which the console registers its [`PrintEvent`] in the
/// name server (only compiler-checked importers may look it up).
pub const PRINT: &str = "console.print";

/// `print`, the console's procedure as an event: its argument is one line
/// of text without the newline; its default handler writes the line.
pub type PrintEvent = spindle_dispatch::Event<str, ()>;

/// Writing to the console: each call writes one whole line, never
/// interleaved with another CPU's output.
pub struct Console {
    write_line: fn(prefix: &str, text: &str),
}

impl Console {
    /// A console that writes with `write_line` (the kernel's serial console).
    pub const fn new(write_line: fn(prefix: &str, text: &str)) -> Console {
        Console { write_line }
    }

    /// Writes `prefix` then `text` as one line.
    pub fn write_line(&self, prefix: &str, text: &str) {
        (self.write_line)(prefix, text)
    }
}

/// The kernel's monotonic clock. Extensions never read hardware clocks.
pub struct Clock {
    now_nanoseconds: fn() -> u64,
}

impl Clock {
    /// A clock reading `now_nanoseconds`.
    pub const fn new(now_nanoseconds: fn() -> u64) -> Clock {
        Clock { now_nanoseconds }
    }

    /// Nanoseconds since boot.
    pub fn now_nanoseconds(&self) -> u64 {
        (self.now_nanoseconds)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static WRITTEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record(prefix: &str, text: &str) {
        WRITTEN.lock().unwrap().push(format!("{prefix}{text}"));
    }

    #[test]
    fn the_interfaces_call_the_functions_the_kernel_gave_them() {
        Console::new(record).write_line("[1] ", "hello");
        assert_eq!(*WRITTEN.lock().unwrap(), ["[1] hello"]);
        assert_eq!(Clock::new(|| 42).now_nanoseconds(), 42);
    }
}
