//! The name server: exporters register interfaces with an authorization procedure, importers look them up.
//!
//! As in SPIN, an exporting domain registers an [`Interface`] under its name
//! together with an [`Authorization`] procedure. Every [`NameServer::lookup`]
//! calls that procedure with the importer's identity (an [`Importer`]: domain
//! identity and provenance); the procedure returns `Err(reason)` to refuse.
//! Only the exporter can [`NameServer::unregister`] the name.
//!
//! An [`Importer`] can only be obtained from a [`Domain`] ([`Domain::importer`]),
//! and domains only from the kernel's attestation authority, so the identity
//! an authorization procedure sees cannot be forged by extension code.
//!
//! # Concurrency
//!
//! All methods take `&self` and may be called from any number of CPUs. The
//! registry is a `spin::RwLock`; lookups hold the read lock only to find the
//! entry and clone an `Arc` to it. The authorization procedure runs *after*
//! the lock is released, so it may itself use the name server. A procedure
//! must not panic (in the kernel that is fatal). Note that `spin::RwLock`
//! does not favour writers: registration waits for a moment with no reader.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::{type_name, Any, TypeId};
use core::fmt;

use crate::domain::{Domain, DomainId};
use crate::module::Interface;
use crate::provenance::Provenance;

/// The identity of a domain asking for an interface, as shown to authorization procedures.
///
/// Obtained only from [`Domain::importer`]; it has no public constructor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Importer {
    /// The importing domain.
    domain: DomainId,
    /// The provenance the kernel certified for the importing domain.
    provenance: Provenance,
}

impl Importer {
    /// The identity of `domain`, whose certified provenance is `provenance`.
    pub(crate) fn new(domain: DomainId, provenance: Provenance) -> Importer {
        Importer { domain, provenance }
    }

    /// The importing domain.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// The provenance the kernel certified for the importing domain.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }
}

impl fmt::Display for Importer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} ({})", self.domain, self.provenance)
    }
}

/// An exporter's authorization procedure: called with the importer's identity on every lookup; `Err(reason)` refuses.
pub type Authorization = Box<dyn Fn(&Importer) -> Result<(), String> + Send + Sync>;

/// An authorization procedure that accepts every importer.
pub fn allow_all() -> Authorization {
    Box::new(|_| Ok(()))
}

/// An authorization procedure that accepts only the listed domains.
pub fn allow_domains(domains: &[DomainId]) -> Authorization {
    let allowed: Vec<DomainId> = domains.to_vec();
    Box::new(move |importer| {
        if allowed.contains(&importer.domain()) {
            Ok(())
        } else {
            Err(format!(
                "{} is not on the exporter's list",
                importer.domain()
            ))
        }
    })
}

/// An authorization procedure that refuses importers whose code is not [`Provenance::CompilerChecked`].
///
/// Note that this refuses [`Provenance::TrustedByAssertion`] importers, the
/// kernel's own domain included: the exporter insists that its callers be
/// checked by the compiler.
pub fn require_compiler_checked() -> Authorization {
    Box::new(|importer| match importer.provenance() {
        Provenance::CompilerChecked => Ok(()),
        Provenance::TrustedByAssertion => Err(format!(
            "{} is trusted by assertion, not compiler-checked",
            importer.domain()
        )),
    })
}

/// Why an interface could not be registered.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RegisterError {
    /// Another registration holds the name.
    NameTaken {
        /// The name.
        name: String,
        /// The domain that registered it.
        holder: DomainId,
    },
}

impl fmt::Display for RegisterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::NameTaken { name, holder } => {
                write!(formatter, "`{name}` is already registered by {holder}")
            }
        }
    }
}

impl core::error::Error for RegisterError {}

/// Why a lookup gave no interface.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LookupError {
    /// Nothing is registered under the name.
    NotFound {
        /// The name.
        name: String,
    },
    /// The exporter's authorization procedure refused the importer.
    Refused {
        /// The name.
        name: String,
        /// The exporting domain.
        exporter: DomainId,
        /// The reason the procedure gave.
        reason: String,
    },
    /// The interface has another type than the one asked for (reported only to authorized importers).
    WrongType {
        /// The name.
        name: String,
        /// The type asked for.
        expected: &'static str,
        /// The interface's type.
        found: &'static str,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound { name } => write!(formatter, "`{name}` is not registered"),
            LookupError::Refused {
                name,
                exporter,
                reason,
            } => write!(formatter, "{exporter} refused access to `{name}`: {reason}"),
            LookupError::WrongType {
                name,
                expected,
                found,
            } => write!(formatter, "`{name}` is a `{found}`, not a `{expected}`"),
        }
    }
}

impl core::error::Error for LookupError {}

/// Why an interface could not be unregistered.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum UnregisterError {
    /// Nothing is registered under the name.
    NotFound {
        /// The name.
        name: String,
    },
    /// The caller is not the domain that registered the name.
    NotExporter {
        /// The name.
        name: String,
        /// The domain that registered it.
        exporter: DomainId,
        /// The domain that tried to unregister it.
        caller: DomainId,
    },
}

impl fmt::Display for UnregisterError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnregisterError::NotFound { name } => write!(formatter, "`{name}` is not registered"),
            UnregisterError::NotExporter {
                name,
                exporter,
                caller,
            } => write!(
                formatter,
                "{caller} cannot unregister `{name}`: it was registered by {exporter}"
            ),
        }
    }
}

impl core::error::Error for UnregisterError {}

/// One registered interface.
struct Registration {
    /// The domain that registered it.
    exporter: DomainId,
    /// The interface.
    interface: Interface,
    /// The exporter's authorization procedure.
    authorization: Authorization,
}

/// The registry of exported interfaces, safe to use from many CPUs.
pub struct NameServer {
    /// Registrations by name.
    registrations: spin::RwLock<BTreeMap<String, Arc<Registration>>>,
}

impl NameServer {
    /// An empty name server (usable in a `static`).
    pub const fn new() -> NameServer {
        NameServer {
            registrations: spin::RwLock::new(BTreeMap::new()),
        }
    }

    /// Registers `interface` under its name on behalf of `exporter`, guarded by `authorization`.
    ///
    /// Fails with [`RegisterError::NameTaken`] when the name is registered
    /// already (by anyone, the exporter included).
    pub fn register(
        &self,
        exporter: &Domain,
        interface: Interface,
        authorization: Authorization,
    ) -> Result<(), RegisterError> {
        let mut registrations = self.registrations.write();
        if let Some(existing) = registrations.get(interface.name()) {
            return Err(RegisterError::NameTaken {
                name: String::from(interface.name()),
                holder: existing.exporter,
            });
        }
        registrations.insert(
            String::from(interface.name()),
            Arc::new(Registration {
                exporter: exporter.id(),
                interface,
                authorization,
            }),
        );
        Ok(())
    }

    /// Removes the registration of `name`; only the domain that registered it may.
    ///
    /// Importers that already looked the interface up keep their `Arc`;
    /// protect the object itself with a [`Capability`](crate::Capability) if
    /// access must end with the registration.
    pub fn unregister(&self, exporter: &Domain, name: &str) -> Result<(), UnregisterError> {
        let removed = {
            let mut registrations = self.registrations.write();
            let registration =
                registrations
                    .get(name)
                    .ok_or_else(|| UnregisterError::NotFound {
                        name: String::from(name),
                    })?;
            if registration.exporter != exporter.id() {
                return Err(UnregisterError::NotExporter {
                    name: String::from(name),
                    exporter: registration.exporter,
                    caller: exporter.id(),
                });
            }
            registrations.remove(name)
        };
        // Dropped outside the lock: the procedure's captures may have destructors.
        drop(removed);
        Ok(())
    }

    /// The interface registered as `name`, if its exporter's authorization procedure accepts `importer`.
    ///
    /// The procedure is called on every lookup. The interface's type is
    /// checked only after authorization, so a refused importer learns nothing
    /// about it.
    pub fn lookup_interface(
        &self,
        name: &str,
        importer: &Importer,
    ) -> Result<Interface, LookupError> {
        let registration = self
            .registrations
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LookupError::NotFound {
                name: String::from(name),
            })?;
        (registration.authorization)(importer).map_err(|reason| LookupError::Refused {
            name: String::from(name),
            exporter: registration.exporter,
            reason,
        })?;
        Ok(registration.interface.clone())
    }

    /// The object registered as `name`, as a `T`, if its exporter's authorization procedure accepts `importer`.
    ///
    /// Errors: [`LookupError::NotFound`], [`LookupError::Refused`], then
    /// [`LookupError::WrongType`].
    pub fn lookup<T: Any + Send + Sync>(
        &self,
        name: &str,
        importer: &Importer,
    ) -> Result<Arc<T>, LookupError> {
        let interface = self.lookup_interface(name, importer)?;
        let wrong_type = LookupError::WrongType {
            name: String::from(name),
            expected: type_name::<T>(),
            found: interface.type_name(),
        };
        if interface.type_id() != TypeId::of::<T>() {
            return Err(wrong_type);
        }
        interface.object::<T>().ok_or(wrong_type)
    }

    /// The domain that registered `name`, if any.
    pub fn exporter_of(&self, name: &str) -> Option<DomainId> {
        self.registrations
            .read()
            .get(name)
            .map(|registration| registration.exporter)
    }

    /// The registered names, in order.
    pub fn names(&self) -> Vec<String> {
        self.registrations.read().keys().cloned().collect()
    }

    /// Number of registered names.
    pub fn len(&self) -> usize {
        self.registrations.read().len()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for NameServer {
    fn default() -> Self {
        NameServer::new()
    }
}

impl fmt::Debug for NameServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NameServer")
            .field("names", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::Module;
    use crate::provenance::Attestation;
    use alloc::string::ToString;
    use alloc::vec;
    use core::sync::atomic::{AtomicUsize, Ordering};

    fn domain(name: &str, provenance: Provenance) -> Domain {
        let certificate = Attestation::for_tests().certify(provenance).unwrap();
        Domain::create_from_module(Module::new(name, vec![], vec![]).unwrap(), certificate)
    }

    fn counter(value: u32) -> Interface {
        Interface::new("counter", Arc::new(value))
    }

    #[test]
    fn lookup_returns_the_registered_object() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let importer = domain("importer", Provenance::CompilerChecked);
        names.register(&exporter, counter(5), allow_all()).unwrap();
        assert_eq!(
            *names
                .lookup::<u32>("counter", &importer.importer())
                .unwrap(),
            5
        );
        assert_eq!(names.exporter_of("counter"), Some(exporter.id()));
        assert_eq!(names.names(), vec![String::from("counter")]);
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn authorization_is_called_with_the_importer_on_every_lookup() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let importer = domain("importer", Provenance::CompilerChecked);
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(spin::Mutex::new(Vec::new()));
        let procedure: Authorization = {
            let calls = Arc::clone(&calls);
            let seen = Arc::clone(&seen);
            Box::new(move |who: &Importer| {
                calls.fetch_add(1, Ordering::Relaxed);
                seen.lock().push(*who);
                Ok(())
            })
        };
        names.register(&exporter, counter(1), procedure).unwrap();
        for _ in 0..3 {
            names
                .lookup::<u32>("counter", &importer.importer())
                .unwrap();
        }
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(seen.lock().iter().all(|who| *who == importer.importer()));
    }

    #[test]
    fn lookup_refused_by_the_exporters_procedure() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let friend = domain("friend", Provenance::CompilerChecked);
        let stranger = domain("stranger", Provenance::CompilerChecked);
        names
            .register(&exporter, counter(1), allow_domains(&[friend.id()]))
            .unwrap();
        assert!(names.lookup::<u32>("counter", &friend.importer()).is_ok());
        let error = names
            .lookup::<u32>("counter", &stranger.importer())
            .unwrap_err();
        assert_eq!(
            error,
            LookupError::Refused {
                name: "counter".into(),
                exporter: exporter.id(),
                reason: format!("{} is not on the exporter's list", stranger.id()),
            }
        );
        // Refused before the type check: a stranger asking for the wrong type is still just refused.
        assert!(matches!(
            names.lookup::<u64>("counter", &stranger.importer()),
            Err(LookupError::Refused { .. })
        ));
    }

    #[test]
    fn require_compiler_checked_refuses_trusted_by_assertion() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::CompilerChecked);
        let checked = domain("checked", Provenance::CompilerChecked);
        let kernel = domain("kernel", Provenance::TrustedByAssertion);
        names
            .register(&exporter, counter(1), require_compiler_checked())
            .unwrap();
        assert!(names.lookup::<u32>("counter", &checked.importer()).is_ok());
        assert!(matches!(
            names.lookup::<u32>("counter", &kernel.importer()),
            Err(LookupError::Refused { reason, .. }) if reason.contains("trusted by assertion")
        ));
    }

    #[test]
    fn lookup_of_a_missing_name_fails() {
        let names = NameServer::new();
        let importer = domain("importer", Provenance::CompilerChecked);
        assert_eq!(
            names
                .lookup::<u32>("absent", &importer.importer())
                .unwrap_err(),
            LookupError::NotFound {
                name: "absent".into()
            }
        );
    }

    #[test]
    fn wrong_type_lookup_fails() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let importer = domain("importer", Provenance::CompilerChecked);
        names.register(&exporter, counter(1), allow_all()).unwrap();
        let error = names
            .lookup::<u64>("counter", &importer.importer())
            .unwrap_err();
        assert_eq!(
            error,
            LookupError::WrongType {
                name: "counter".into(),
                expected: "u64",
                found: "u32"
            }
        );
        assert_eq!(error.to_string(), "`counter` is a `u32`, not a `u64`");
    }

    #[test]
    fn duplicate_registration_fails() {
        let names = NameServer::new();
        let first = domain("first", Provenance::TrustedByAssertion);
        let second = domain("second", Provenance::TrustedByAssertion);
        names.register(&first, counter(1), allow_all()).unwrap();
        assert_eq!(
            names
                .register(&second, counter(2), allow_all())
                .unwrap_err(),
            RegisterError::NameTaken {
                name: "counter".into(),
                holder: first.id()
            }
        );
        assert!(matches!(
            names.register(&first, counter(3), allow_all()),
            Err(RegisterError::NameTaken { .. })
        ));
        let importer = domain("importer", Provenance::CompilerChecked);
        assert_eq!(
            *names
                .lookup::<u32>("counter", &importer.importer())
                .unwrap(),
            1
        );
    }

    #[test]
    fn only_the_exporter_unregisters() {
        let names = NameServer::new();
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let intruder = domain("intruder", Provenance::TrustedByAssertion);
        names.register(&exporter, counter(1), allow_all()).unwrap();
        assert_eq!(
            names.unregister(&intruder, "counter").unwrap_err(),
            UnregisterError::NotExporter {
                name: "counter".into(),
                exporter: exporter.id(),
                caller: intruder.id(),
            }
        );
        assert_eq!(names.exporter_of("counter"), Some(exporter.id()));
        names.unregister(&exporter, "counter").unwrap();
        assert!(names.is_empty());
        assert_eq!(
            names.unregister(&exporter, "counter").unwrap_err(),
            UnregisterError::NotFound {
                name: "counter".into()
            }
        );
        // The name is free again.
        names.register(&intruder, counter(2), allow_all()).unwrap();
    }

    #[test]
    fn authorization_may_use_the_name_server() {
        // The procedure runs without the registry lock held.
        let names = Arc::new(NameServer::new());
        let exporter = domain("exporter", Provenance::TrustedByAssertion);
        let procedure: Authorization = {
            let names = Arc::clone(&names);
            Box::new(move |_: &Importer| {
                if names.exporter_of("counter").is_some() {
                    Ok(())
                } else {
                    Err("gone".into())
                }
            })
        };
        names.register(&exporter, counter(1), procedure).unwrap();
        assert!(names.lookup::<u32>("counter", &exporter.importer()).is_ok());
        // Break the cycle so the test leaks nothing.
        names.unregister(&exporter, "counter").unwrap();
    }
}
