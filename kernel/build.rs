//! Build script: links the kernel image at 1 MiB with `linker.ld` when (and
//! only when) building for the bare-metal target; host builds stay plain.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if target == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
    }
}
