//! `cargo spindle list`: the extensions compiled into the kernel, with a one-line description each.

use std::fmt::Write;

/// The listing: scheduling policies (the sched-ext catalogue, the default
/// first), then the other extensions.
pub fn extension_listing() -> String {
    let mut text = String::from("scheduling policies (--append sched=NAME; rr is the default):\n");
    let policies = spindle_sched_ext::catalogue();
    let width = policies
        .iter()
        .map(|policy| policy.name.len())
        .max()
        .unwrap_or(0)
        .max(spindle_console_timestamps::NAME.len());
    for policy in policies {
        let _ = writeln!(text, "  {:width$}  {}", policy.name, policy.description);
    }
    text.push_str("other extensions (--append extensions=NAME):\n");
    let _ = writeln!(
        text,
        "  {:width$}  {}",
        spindle_console_timestamps::NAME,
        spindle_console_timestamps::DESCRIPTION
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_and_extension_is_listed_with_a_description() {
        let listing = extension_listing();
        for name in [
            "rr",
            "priority",
            "stride",
            "edf",
            "central",
            "steal",
            "weighted",
            "timestamps",
        ] {
            let line = listing
                .lines()
                .find(|line| line.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} missing from:\n{listing}"));
            let description = line.trim_start()[name.len()..].trim();
            assert!(description.len() > 10, "{name}: {line:?}");
        }
        // The default comes first.
        let first_policy = listing.lines().nth(1).unwrap().split_whitespace().next();
        assert_eq!(first_policy, Some("rr"));
        // Broken test policies are not offered to users.
        assert!(!listing.contains("broken"));
    }
}
