//! The house rules, checked by the test suite so CI enforces them: `unsafe`
//! only in `kernel/` (the kernel crate, and the grace-period crate under
//! `kernel/libs/grace`, whose few unsafe lines are host-tested), every other
//! crate `#![forbid(unsafe_code)]`, and the
//! kernel and the host crates clean under clippy with the workspace lints
//! (every unsafe block documented with `// SAFETY:`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Where `unsafe` may appear: the kernel crate and the grace-period crate
/// (publication under grace periods cannot be written in safe Rust).
fn trusted_sources(root: &Path) -> [PathBuf; 2] {
    [
        root.join("kernel").join("src"),
        root.join("kernel").join("libs").join("grace").join("src"),
    ]
}

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|name| name == "target" || name == ".git")
            {
                continue;
            }
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn unsafe_code_only_in_the_kernel_crate() {
    let root = workspace_root();
    let trusted = trusted_sources(&root);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 10,
        "found too few Rust files under {}",
        root.display()
    );
    // Built at run time so this file does not match its own patterns.
    let keyword = ["un", "safe"].concat();
    let unsafe_keyword: Vec<String> = ["{", "fn", "impl", "extern", "trait"]
        .iter()
        .map(|next| format!("{keyword} {next}"))
        .collect();
    let offenders: Vec<String> = files
        .iter()
        .filter(|path| !trusted.iter().any(|source| path.starts_with(source)))
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .any(|line| {
                    unsafe_keyword
                        .iter()
                        .any(|pattern| line.contains(pattern.as_str()))
                })
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "unsafe code outside kernel/src and kernel/libs/grace/src: {offenders:?}"
    );
}

#[test]
fn every_other_crate_forbids_unsafe_code() {
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    // Crate roots: src/lib.rs and src/main.rs of every package but the kernel.
    let crate_roots: Vec<&PathBuf> = files
        .iter()
        .filter(|path| path.ends_with("src/lib.rs") || path.ends_with("src/main.rs"))
        .filter(|path| {
            !trusted_sources(&root)
                .iter()
                .any(|source| path.starts_with(source))
        })
        .collect();
    assert!(
        crate_roots.len() >= 6,
        "found too few crate roots: {crate_roots:?}"
    );
    for crate_root in crate_roots {
        let text = std::fs::read_to_string(crate_root)
            .unwrap_or_else(|error| panic!("{}: {error}", crate_root.display()));
        assert!(
            text.contains("#![forbid(unsafe_code)]"),
            "{} lacks #![forbid(unsafe_code)]",
            crate_root.display()
        );
    }
}

/// Runs `cargo clippy ARGUMENTS -- -D warnings` in the workspace and fails
/// the test with clippy's output when it finds anything.
fn assert_clippy_clean(arguments: &[&str], what: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .arg("clippy")
        .arg("--quiet")
        .args(arguments)
        .args(["--", "-D", "warnings"])
        .output()
        .expect("cargo clippy runs");
    assert!(
        output.status.success(),
        "clippy found problems in {what}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn kernel_passes_clippy_with_the_workspace_lints() {
    assert_clippy_clean(
        &[
            "--release",
            "-p",
            "spindle-kernel",
            "--target",
            "x86_64-unknown-none",
        ],
        "the kernel (every unsafe block needs a // SAFETY: comment)",
    );
}

#[test]
fn host_crates_pass_clippy_with_the_workspace_lints() {
    assert_clippy_clean(
        &[
            "--workspace",
            "--exclude",
            "spindle-kernel",
            "--all-targets",
        ],
        "the host crates",
    );
}
