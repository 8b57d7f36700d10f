//! Extensions: a domain's handlers on several events, installed and uninstalled all together.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::dispatcher::{lock_with, Dispatcher, DispatcherInner};
use crate::error::{ExtensionInstallError, InstallError, RemoveError};
use crate::event::Event;
use crate::handler::{ExtensionSwitch, Handler, HandlerHandle};
use crate::identity::{DomainId, HandlerId};

/// One planned installation, with its argument and result types erased.
type InstallStep =
    Box<dyn FnOnce(&Arc<ExtensionSwitch>) -> Result<HandlerHandle, InstallError> + Send>;

/// The handlers an extension wants, on events of possibly different types,
/// collected before anything is installed. [`install`](ExtensionPlan::install)
/// installs them all or none.
pub struct ExtensionPlan {
    dispatcher: Arc<DispatcherInner>,
    domain: DomainId,
    name: &'static str,
    steps: Vec<InstallStep>,
}

impl fmt::Debug for ExtensionPlan {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ExtensionPlan")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .field("handlers", &self.steps.len())
            .finish()
    }
}

impl ExtensionPlan {
    /// An empty plan for extension `name` of `domain`, on events of
    /// `dispatcher`.
    pub fn new(dispatcher: &Dispatcher, domain: DomainId, name: &'static str) -> ExtensionPlan {
        ExtensionPlan {
            dispatcher: Arc::clone(&dispatcher.inner),
            domain,
            name,
            steps: Vec::new(),
        }
    }

    /// Adds `handler` on `event` to the plan (nothing is installed yet).
    pub fn add<A: ?Sized + 'static, R: 'static>(
        &mut self,
        event: &Event<A, R>,
        handler: Handler<A, R>,
    ) -> &mut ExtensionPlan {
        let event = event.clone();
        let domain = self.domain;
        let dispatcher = Arc::clone(&self.dispatcher);
        self.steps
            .push(Box::new(move |switch: &Arc<ExtensionSwitch>| {
                if !Arc::ptr_eq(&event.inner.dispatcher, &dispatcher) {
                    return Err(InstallError::ForeignDispatcher {
                        event: event.name(),
                    });
                }
                event
                    .inner
                    .install(domain, handler, Some(Arc::clone(switch)))
            }));
        self
    }

    /// Number of handlers planned.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether no handler is planned.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Installs every planned handler, or none.
    ///
    /// The handlers are installed switched off (raises skip them), then one
    /// commit of the dispatcher's visibility sequence switches them all on:
    /// a raise on any CPU, of any of the events, sees all of them or none,
    /// and a raise that saw them is followed only by raises that see them
    /// (until uninstalled). If one is refused, those already installed are
    /// removed (no raise ever ran them) and the refusal is returned.
    pub fn install(self) -> Result<Extension, ExtensionInstallError> {
        let name = self.name;
        if self.dispatcher.inside_raise() {
            return Err(ExtensionInstallError {
                extension: name,
                index: 0,
                error: InstallError::InsideRaise { event: name },
            });
        }
        let switch = Arc::new(ExtensionSwitch::pending(name));
        let mut handles = Vec::with_capacity(self.steps.len());
        for (index, step) in self.steps.into_iter().enumerate() {
            match step(&switch) {
                Ok(handle) => handles.push(handle),
                Err(error) => {
                    for handle in handles {
                        // Not inside a raise (checked above); `NotInstalled`
                        // means the owner evicted it already.
                        let _ = handle.remove();
                    }
                    return Err(ExtensionInstallError {
                        extension: name,
                        index,
                        error,
                    });
                }
            }
        }
        self.dispatcher.commit(|next| switch.enable_from(next));
        Ok(Extension {
            dispatcher: self.dispatcher,
            domain: self.domain,
            name,
            switch,
            handles: spin::Mutex::new(handles),
            uninstalled: AtomicBool::new(false),
        })
    }
}

/// An installed extension: its handlers run (all of them) until it is
/// uninstalled or an event's owner evicts one of them. Dropping it leaves the
/// handlers installed.
#[must_use = "dropping the extension leaves its handlers installed with no way to uninstall them"]
pub struct Extension {
    dispatcher: Arc<DispatcherInner>,
    domain: DomainId,
    name: &'static str,
    switch: Arc<ExtensionSwitch>,
    handles: spin::Mutex<Vec<HandlerHandle>>,
    uninstalled: AtomicBool,
}

impl fmt::Debug for Extension {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Extension")
            .field("name", &self.name)
            .field("domain", &self.domain)
            .finish()
    }
}

impl Extension {
    /// The extension's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The extension's domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// Identifiers of its handlers (empty once uninstalled).
    pub fn handler_ids(&self) -> Vec<HandlerId> {
        lock_with(&self.handles, self.dispatcher.platform.relax)
            .iter()
            .map(HandlerHandle::id)
            .collect()
    }

    /// Whether raises starting now run its handlers (false once uninstalled
    /// or once an owner evicted one of its handlers).
    pub fn is_enabled(&self) -> bool {
        self.switch.visible_at(self.dispatcher.visible_sequence())
    }

    /// Whether an event's owner evicted one of its handlers (which switched
    /// the whole extension off).
    pub fn is_evicted(&self) -> bool {
        self.switch.is_disabled() && !self.uninstalled.load(Ordering::Acquire)
    }

    /// Uninstalls every handler together: one commit switches them all off
    /// (no raise that starts afterwards, on any CPU, runs any of them), then
    /// each is removed with its grace period. When this returns `Ok`, none of
    /// them is running or will run again.
    pub fn uninstall(&self) -> Result<(), RemoveError> {
        if self.dispatcher.inside_raise() {
            return Err(RemoveError::InsideRaise);
        }
        if self.uninstalled.swap(true, Ordering::AcqRel) {
            return Err(RemoveError::NotInstalled);
        }
        self.dispatcher
            .commit(|next| self.switch.disable_from(next));
        let handles = core::mem::take(&mut *lock_with(
            &self.handles,
            self.dispatcher.platform.relax,
        ));
        for handle in handles {
            // `NotInstalled` means an owner evicted it already.
            let _ = handle.remove();
        }
        Ok(())
    }
}
