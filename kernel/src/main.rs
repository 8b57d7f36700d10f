//! Spindle: a multicore x86_64 kernel whose scheduling is extended by safe,
//! swappable extensions, after SPIN. This is the kernel image's entry point;
//! the image is built for `x86_64-unknown-none` by `cargo spindle`.
//!
//! On the host this crate compiles to a stub binary that says so, so that
//! `cargo test --workspace` can build the whole workspace.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("spindle-kernel runs under QEMU: build and boot it with `cargo spindle run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod args;
#[cfg(target_os = "none")]
mod bench;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod exceptions;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod extensions;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
mod metrics;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod strand;
#[cfg(target_os = "none")]
mod sync;
#[cfg(target_os = "none")]
mod timer;
#[cfg(target_os = "none")]
mod workloads;
