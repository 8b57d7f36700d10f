//! Typed errors of installing, removing and uninstalling handlers.

use core::fmt;

use crate::identity::DomainId;

/// Why a handler (or an extension's handler) was not installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallError {
    /// The event's authorization procedure refused the request.
    Refused {
        /// The event's name.
        event: &'static str,
        /// The domain that asked.
        domain: DomainId,
        /// The reason the authorization procedure gave.
        reason: &'static str,
    },
    /// The domain already has `quota` handlers installed on the event.
    QuotaExceeded {
        /// The event's name.
        event: &'static str,
        /// The domain that asked.
        domain: DomainId,
        /// The event's per-domain limit.
        quota: usize,
    },
    /// The handler asked to replace the default handler, but the event's
    /// owner did not make the default replaceable.
    DefaultNotReplaceable {
        /// The event's name.
        event: &'static str,
    },
    /// The handler's options contradict each other or are out of range.
    InvalidOptions {
        /// The event's name.
        event: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// Called while the current CPU is inside a raise of this dispatcher (from
    /// a handler, a guard or an overrun callback): installing waits for raises
    /// in progress to end, which would wait for the caller itself. Install
    /// from deferred work instead.
    InsideRaise {
        /// The event's (or extension's) name.
        event: &'static str,
    },
    /// An extension's handler names an event of another dispatcher.
    ForeignDispatcher {
        /// The event's name.
        event: &'static str,
    },
}

impl fmt::Display for InstallError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Refused {
                event,
                domain,
                reason,
            } => write!(formatter, "event {event} refused {domain}: {reason}"),
            InstallError::QuotaExceeded {
                event,
                domain,
                quota,
            } => write!(
                formatter,
                "{domain} already has {quota} handlers on event {event} (its quota)"
            ),
            InstallError::DefaultNotReplaceable { event } => write!(
                formatter,
                "event {event} does not let handlers replace its default handler"
            ),
            InstallError::InvalidOptions { event, reason } => {
                write!(formatter, "invalid handler options for event {event}: {reason}")
            }
            InstallError::InsideRaise { event } => write!(
                formatter,
                "cannot change {event} from inside a raise on the same CPU (it would wait for itself)"
            ),
            InstallError::ForeignDispatcher { event } => write!(
                formatter,
                "event {event} belongs to another dispatcher than the extension"
            ),
        }
    }
}

/// Why a handler or an extension was not removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveError {
    /// It was already removed (or evicted by the event's owner).
    NotInstalled,
    /// Called while the current CPU is inside a raise of this dispatcher:
    /// removing waits for raises in progress to end, which would wait for the
    /// caller itself. Nothing was changed; remove from deferred work instead.
    InsideRaise,
}

impl fmt::Display for RemoveError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::NotInstalled => formatter.write_str("the handler is not installed"),
            RemoveError::InsideRaise => formatter.write_str(
                "cannot remove from inside a raise on the same CPU (it would wait for itself)",
            ),
        }
    }
}

/// Why an extension was not installed. None of its handlers is installed
/// and no raise ever ran any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionInstallError {
    /// The extension's name.
    pub extension: &'static str,
    /// Position (from 0, in the order they were added) of the handler that
    /// was refused.
    pub index: usize,
    /// Why it was refused.
    pub error: InstallError,
}

impl fmt::Display for ExtensionInstallError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "extension {} not installed: handler {} refused: {}",
            self.extension, self.index, self.error
        )
    }
}

impl core::error::Error for InstallError {}

impl core::error::Error for RemoveError {}

impl core::error::Error for ExtensionInstallError {}
