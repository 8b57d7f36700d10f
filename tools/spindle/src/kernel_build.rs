//! Building the kernel image with cargo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::RunError;

/// The kernel's package (and binary) name.
pub const KERNEL_PACKAGE: &str = "spindle-kernel";

/// The target the kernel is built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The workspace root, found at compile time from this crate's manifest
/// directory (`tools/spindle/../..`).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

/// Where the kernel image lands with the default target directory.
pub fn default_kernel_image() -> PathBuf {
    workspace_root()
        .join("target")
        .join(KERNEL_TARGET)
        .join("release")
        .join(KERNEL_PACKAGE)
}

/// Runs `cargo build --release -p spindle-kernel --target x86_64-unknown-none`
/// in the workspace root and returns the image's path.
///
/// cargo's diagnostics go to the runner's stderr. The path is taken from
/// cargo's build messages, so a `CARGO_TARGET_DIR` or `build.target-dir`
/// setting is honoured; without such a message it is
/// `target/x86_64-unknown-none/release/spindle-kernel`. The cargo used is
/// `$CARGO` (set when the runner itself runs under `cargo run`) or `cargo`.
pub fn build_kernel() -> Result<PathBuf, RunError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--release",
            "--package",
            KERNEL_PACKAGE,
            "--target",
            KERNEL_TARGET,
        ])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| RunError::Build {
            status: None,
            detail: format!("cannot run {}: {error}", Path::new(&cargo).display()),
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut image = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(path) = executable_from_message(&line) {
            image = Some(path);
        }
    }
    let status = child.wait().map_err(|error| RunError::Build {
        status: None,
        detail: format!("waiting for cargo: {error}"),
    })?;
    if !status.success() {
        return Err(RunError::Build {
            status: status.code(),
            detail: "see cargo's messages above".into(),
        });
    }
    let image = image.unwrap_or_else(default_kernel_image);
    if !image.is_file() {
        return Err(RunError::Build {
            status: status.code(),
            detail: format!("cargo succeeded but {} does not exist", image.display()),
        });
    }
    Ok(image)
}

/// The kernel executable named by one line of cargo's JSON messages, if it
/// is the `compiler-artifact` message of the kernel binary.
fn executable_from_message(line: &str) -> Option<PathBuf> {
    let message: Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    if message.get("target")?.get("name")?.as_str()? != KERNEL_PACKAGE {
        return None;
    }
    message.get("executable")?.as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_kernel() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(
            default_kernel_image().ends_with("target/x86_64-unknown-none/release/spindle-kernel")
        );
    }

    #[test]
    fn artifact_messages() {
        let kernel = r#"{"reason":"compiler-artifact","target":{"name":"spindle-kernel","kind":["bin"]},"executable":"/t/spindle-kernel"}"#;
        let library =
            r#"{"reason":"compiler-artifact","target":{"name":"spin"},"executable":null}"#;
        assert_eq!(
            executable_from_message(kernel),
            Some(PathBuf::from("/t/spindle-kernel"))
        );
        assert_eq!(executable_from_message(library), None);
        assert_eq!(executable_from_message("not json"), None);
        assert_eq!(
            executable_from_message(r#"{"reason":"build-finished","success":true}"#),
            None
        );
    }
}
