//! Logical protection domains: created from modules, linked by [`resolve`], aggregated by [`combine`].
//!
//! A [`Domain`] is SPIN's unit of linking and protection: the set of
//! interfaces a module exports, the imports it still needs, the provenance of
//! its code and its [`ExternalTable`]. Code reaches another domain's interface
//! only through an import that [`resolve`] bound after checking its type (or
//! through the [`NameServer`](crate::NameServer), which also asks the exporter).
//!
//! # Resolve
//!
//! [`resolve`]`(source, target)` binds every *unresolved* import of `target`
//! to `source`'s export of the same name. It resolves what it can: an import
//! `source` does not export stays unresolved and is listed in the
//! [`ResolveReport`] (resolve it against another domain later, and call
//! [`Domain::check_resolved`] before running the module). A same-named export
//! of another type is a [`ResolveError::TypeMismatch`], and then *nothing* is
//! bound by that call. Imports already bound are left alone.
//!
//! # Combine
//!
//! [`combine`]`(first, second)` makes a new aggregate domain exporting both
//! sets of interfaces (a name exported by both is
//! [`CombineError::ConflictingExport`]) and importing both sets (the same
//! name must be imported with the same type, and if bound in both, to the same
//! object). The aggregate has a fresh [`DomainId`], an empty external table,
//! and is [`Provenance::CompilerChecked`] only when both parts are.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::{type_name, Any, TypeId};
use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::external::ExternalTable;
use crate::module::{Import, Interface, Module};
use crate::name_server::Importer;
use crate::provenance::{Provenance, ProvenanceCertificate};

pub use spindle_dispatch::DomainId;

/// The number the next domain identity gets.
static NEXT_DOMAIN_ID: AtomicU32 = AtomicU32::new(1);

/// A fresh domain identity, or `None` once all `u32::MAX - 1` are taken.
pub(crate) fn allocate_domain_id() -> Option<DomainId> {
    NEXT_DOMAIN_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
            next.checked_add(1)
        })
        .ok()
        .map(DomainId::new)
}

/// An import and, once resolved, the interface it is bound to.
#[derive(Clone)]
struct ImportSlot {
    /// What the module asked for.
    import: Import,
    /// The interface bound to it and the domain that exported it.
    binding: Option<(Interface, DomainId)>,
}

/// A logical protection domain: a module's exports and imports, the provenance of its code, its external table.
///
/// Not `Clone`: a domain is an identity. Share it behind a reference or an
/// `Arc` (or a lock, to resolve into it later).
pub struct Domain {
    /// The domain's identity.
    id: DomainId,
    /// The module's name (for an aggregate, the parts' names joined by `+`).
    name: String,
    /// Where the domain's code comes from, as certified by the kernel.
    provenance: Provenance,
    /// The identities of the domains created from modules that make up this one.
    components: Vec<DomainId>,
    /// Exported interfaces by name.
    exports: BTreeMap<String, Interface>,
    /// Imports by name.
    imports: BTreeMap<String, ImportSlot>,
    /// The domain's table of externalized capabilities.
    external_table: ExternalTable,
}

impl Domain {
    /// SPIN's `Domain.CreateFromModule`: a domain holding `module`'s exports and (unresolved) imports.
    ///
    /// Identity and provenance come from `certificate`, which only the
    /// kernel's [`Attestation`](crate::Attestation) can make; nothing in
    /// `module` can influence them.
    pub fn create_from_module(module: Module, certificate: ProvenanceCertificate) -> Domain {
        let (name, exports, imports) = module.into_parts();
        let id = certificate.domain();
        Domain {
            id,
            name,
            provenance: certificate.provenance(),
            components: alloc::vec![id],
            exports: exports
                .into_iter()
                .map(|interface| (String::from(interface.name()), interface))
                .collect(),
            imports: imports
                .into_iter()
                .map(|import| {
                    (
                        String::from(import.name()),
                        ImportSlot {
                            import,
                            binding: None,
                        },
                    )
                })
                .collect(),
            external_table: ExternalTable::new(id),
        }
    }

    /// The domain's identity.
    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The module's name (for an aggregate, the parts' names joined by `+`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The provenance the kernel certified for this domain's code.
    pub fn provenance(&self) -> Provenance {
        self.provenance
    }

    /// The domains created from modules that make up this one (just itself unless made by [`combine`]).
    pub fn components(&self) -> &[DomainId] {
        &self.components
    }

    /// This domain's identity as presented to exporters' authorization procedures.
    ///
    /// Holding a `&Domain` is what lets code act as the domain.
    pub fn importer(&self) -> Importer {
        Importer::new(self.id, self.provenance)
    }

    /// The exported interfaces, by name.
    pub fn exports(&self) -> impl Iterator<Item = &Interface> {
        self.exports.values()
    }

    /// The exported interface named `name`.
    pub fn export(&self, name: &str) -> Option<&Interface> {
        self.exports.get(name)
    }

    /// The declared imports, by name.
    pub fn imports(&self) -> impl Iterator<Item = &Import> {
        self.imports.values().map(|slot| &slot.import)
    }

    /// The domain that exported the interface bound to import `name`, if bound.
    pub fn import_source(&self, name: &str) -> Option<DomainId> {
        self.imports
            .get(name)
            .and_then(|slot| slot.binding.as_ref())
            .map(|(_, source)| *source)
    }

    /// The names of the imports not bound yet, in name order.
    pub fn unresolved_imports(&self) -> Vec<String> {
        self.imports
            .values()
            .filter(|slot| slot.binding.is_none())
            .map(|slot| String::from(slot.import.name()))
            .collect()
    }

    /// Succeeds when every import is bound; otherwise lists the unbound ones.
    pub fn check_resolved(&self) -> Result<(), Unresolved> {
        let names = self.unresolved_imports();
        if names.is_empty() {
            Ok(())
        } else {
            Err(Unresolved {
                domain: self.id,
                names,
            })
        }
    }

    /// The object bound to import `name`, as the `T` the import declared.
    pub fn import<T: Any + Send + Sync>(&self, name: &str) -> Result<Arc<T>, ImportError> {
        let slot = self
            .imports
            .get(name)
            .ok_or_else(|| ImportError::NotDeclared {
                domain: self.id,
                name: String::from(name),
            })?;
        let wrong_type = || ImportError::WrongType {
            name: String::from(name),
            declared: slot.import.type_name(),
            requested: type_name::<T>(),
        };
        if slot.import.type_id() != TypeId::of::<T>() {
            return Err(wrong_type());
        }
        let (interface, _) = slot
            .binding
            .as_ref()
            .ok_or_else(|| ImportError::Unresolved {
                domain: self.id,
                name: String::from(name),
            })?;
        interface.object::<T>().ok_or_else(wrong_type)
    }

    /// The domain's table of externalized capabilities.
    pub fn external_table(&self) -> &ExternalTable {
        &self.external_table
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Domain")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("provenance", &self.provenance)
            .field("exports", &self.exports.keys().collect::<Vec<_>>())
            .field("unresolved_imports", &self.unresolved_imports())
            .finish()
    }
}

/// The imports of a domain that are not bound yet.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Unresolved {
    /// The domain.
    pub domain: DomainId,
    /// The unbound imports, in name order.
    pub names: Vec<String>,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} has unresolved imports: ", self.domain)?;
        write_names(formatter, &self.names)
    }
}

impl core::error::Error for Unresolved {}

/// Why an import could not be obtained from a domain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ImportError {
    /// The domain's module does not import this name.
    NotDeclared {
        /// The domain asked.
        domain: DomainId,
        /// The name asked for.
        name: String,
    },
    /// The import is declared but not bound yet.
    Unresolved {
        /// The domain asked.
        domain: DomainId,
        /// The unbound import.
        name: String,
    },
    /// The import was declared with another type than the one asked for.
    WrongType {
        /// The import.
        name: String,
        /// The type the module declared.
        declared: &'static str,
        /// The type asked for.
        requested: &'static str,
    },
}

impl fmt::Display for ImportError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotDeclared { domain, name } => {
                write!(formatter, "{domain} does not import `{name}`")
            }
            ImportError::Unresolved { domain, name } => {
                write!(formatter, "import `{name}` of {domain} is not resolved")
            }
            ImportError::WrongType {
                name,
                declared,
                requested,
            } => write!(
                formatter,
                "import `{name}` is declared as `{declared}`, not `{requested}`"
            ),
        }
    }
}

impl core::error::Error for ImportError {}

/// What one [`resolve`] call did.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResolveReport {
    /// The domain whose exports were used.
    pub source: DomainId,
    /// The domain whose imports were bound.
    pub target: DomainId,
    /// The imports this call bound, in name order.
    pub bound: Vec<String>,
    /// The imports still unbound after this call (the source does not export them), in name order.
    pub unresolved: Vec<String>,
}

/// Why [`resolve`] bound nothing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ResolveError {
    /// The source exports the name with another type than the import expects (the first such name).
    TypeMismatch {
        /// The import's name.
        name: String,
        /// The type the import expects.
        expected: &'static str,
        /// The type the source exports.
        found: &'static str,
        /// The source domain.
        source_domain: DomainId,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::TypeMismatch {
                name,
                expected,
                found,
                source_domain,
            } => write!(
                formatter,
                "{source_domain} exports `{name}` as `{found}`, but it is imported as `{expected}`; nothing was bound"
            ),
        }
    }
}

impl core::error::Error for ResolveError {}

/// SPIN's `Domain.Resolve`: binds `target`'s unresolved imports to `source`'s exports of the same names.
///
/// All-or-nothing per call: when any same-named export has the wrong type,
/// returns [`ResolveError::TypeMismatch`] and binds nothing. Imports
/// `source` does not export stay unresolved and are listed in the report.
pub fn resolve(source: &Domain, target: &mut Domain) -> Result<ResolveReport, ResolveError> {
    let mut to_bind = Vec::new();
    let mut unresolved = Vec::new();
    for (name, slot) in &target.imports {
        if slot.binding.is_some() {
            continue;
        }
        match source.exports.get(name) {
            Some(interface) if slot.import.accepts(interface) => to_bind.push(name.clone()),
            Some(interface) => {
                return Err(ResolveError::TypeMismatch {
                    name: name.clone(),
                    expected: slot.import.type_name(),
                    found: interface.type_name(),
                    source_domain: source.id,
                })
            }
            None => unresolved.push(name.clone()),
        }
    }
    for name in &to_bind {
        if let (Some(slot), Some(interface)) =
            (target.imports.get_mut(name), source.exports.get(name))
        {
            slot.binding = Some((interface.clone(), source.id));
        }
    }
    Ok(ResolveReport {
        source: source.id,
        target: target.id,
        bound: to_bind,
        unresolved,
    })
}

/// Why [`combine`] made no domain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CombineError {
    /// A domain cannot be combined with itself.
    SameDomain {
        /// The domain.
        domain: DomainId,
    },
    /// Both domains export this name.
    ConflictingExport {
        /// The export name.
        name: String,
        /// The first domain.
        first: DomainId,
        /// The second domain.
        second: DomainId,
    },
    /// Both domains import this name, with different types.
    ConflictingImport {
        /// The import name.
        name: String,
        /// The type the first domain expects.
        first_type: &'static str,
        /// The type the second domain expects.
        second_type: &'static str,
    },
    /// Both domains bound this import, to different objects.
    ConflictingBinding {
        /// The import name.
        name: String,
        /// The domain that exported the first domain's binding.
        first_source: DomainId,
        /// The domain that exported the second domain's binding.
        second_source: DomainId,
    },
    /// Every domain identity has been handed out.
    IdentifiersExhausted,
}

impl fmt::Display for CombineError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CombineError::SameDomain { domain } => {
                write!(formatter, "cannot combine {domain} with itself")
            }
            CombineError::ConflictingExport {
                name,
                first,
                second,
            } => write!(formatter, "both {first} and {second} export `{name}`"),
            CombineError::ConflictingImport {
                name,
                first_type,
                second_type,
            } => write!(
                formatter,
                "`{name}` is imported both as `{first_type}` and as `{second_type}`"
            ),
            CombineError::ConflictingBinding {
                name,
                first_source,
                second_source,
            } => write!(
                formatter,
                "import `{name}` is bound to different objects (from {first_source} and from {second_source})"
            ),
            CombineError::IdentifiersExhausted => {
                formatter.write_str("every domain identifier is in use")
            }
        }
    }
}

impl core::error::Error for CombineError {}

/// SPIN's `Domain.Combine`: a new aggregate domain exporting (and importing) the interfaces of both.
///
/// The parts are left as they are. The aggregate gets a fresh identity, the
/// parts' bindings, an empty external table, and the provenance
/// [`Provenance::combined_with`] of the parts'.
pub fn combine(first: &Domain, second: &Domain) -> Result<Domain, CombineError> {
    if first.id == second.id {
        return Err(CombineError::SameDomain { domain: first.id });
    }
    let mut exports = first.exports.clone();
    for (name, interface) in &second.exports {
        if exports.insert(name.clone(), interface.clone()).is_some() {
            return Err(CombineError::ConflictingExport {
                name: name.clone(),
                first: first.id,
                second: second.id,
            });
        }
    }
    let mut imports = first.imports.clone();
    for (name, slot) in &second.imports {
        let Some(existing) = imports.get_mut(name) else {
            imports.insert(name.clone(), slot.clone());
            continue;
        };
        if existing.import.type_id() != slot.import.type_id() {
            return Err(CombineError::ConflictingImport {
                name: name.clone(),
                first_type: existing.import.type_name(),
                second_type: slot.import.type_name(),
            });
        }
        match (&existing.binding, &slot.binding) {
            (Some((first_bound, first_source)), Some((second_bound, second_source)))
                if !first_bound.same_object(second_bound) =>
            {
                return Err(CombineError::ConflictingBinding {
                    name: name.clone(),
                    first_source: *first_source,
                    second_source: *second_source,
                });
            }
            (None, Some(_)) => existing.binding.clone_from(&slot.binding),
            _ => {}
        }
    }
    let id = allocate_domain_id().ok_or(CombineError::IdentifiersExhausted)?;
    let mut components = first.components.clone();
    for component in &second.components {
        if !components.contains(component) {
            components.push(*component);
        }
    }
    Ok(Domain {
        id,
        name: format!("{}+{}", first.name, second.name),
        provenance: first.provenance.combined_with(second.provenance),
        components,
        exports,
        imports,
        external_table: ExternalTable::new(id),
    })
}

/// Writes `names` as a comma-separated list of backquoted names.
fn write_names(formatter: &mut fmt::Formatter<'_>, names: &[String]) -> fmt::Result {
    for (position, name) in names.iter().enumerate() {
        if position > 0 {
            formatter.write_str(", ")?;
        }
        write!(formatter, "`{name}`")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::Attestation;
    use alloc::string::ToString;
    use alloc::vec;

    /// A clock interface: a struct of function pointers, as SPIN's interfaces are.
    #[derive(Debug)]
    struct Clock {
        now: fn() -> u64,
    }

    /// A different interface type.
    #[derive(Debug)]
    struct Timer {
        period: u64,
    }

    fn domain(module: Module, provenance: Provenance) -> Domain {
        let certificate = Attestation::for_tests().certify(provenance).unwrap();
        Domain::create_from_module(module, certificate)
    }

    fn clock_domain() -> Domain {
        let module = Module::new(
            "clock",
            vec![
                Interface::new("Clock", Arc::new(Clock { now: || 1_000 })),
                Interface::new("Timer", Arc::new(Timer { period: 10 })),
            ],
            vec![],
        )
        .unwrap();
        domain(module, Provenance::TrustedByAssertion)
    }

    fn user_domain(imports: Vec<Import>) -> Domain {
        let module = Module::new("user", vec![], imports).unwrap();
        domain(module, Provenance::CompilerChecked)
    }

    #[test]
    fn domain_reports_what_the_kernel_certified() {
        let checked = user_domain(vec![]);
        assert_eq!(checked.provenance(), Provenance::CompilerChecked);
        assert_eq!(checked.importer().provenance(), Provenance::CompilerChecked);
        let asserted = clock_domain();
        assert_eq!(asserted.provenance(), Provenance::TrustedByAssertion);
        assert_ne!(checked.id(), asserted.id());
        assert_eq!(checked.components(), &[checked.id()]);
        assert_eq!(checked.external_table().owner(), checked.id());
    }

    #[test]
    fn resolve_binds_and_import_returns_the_right_object() {
        let clock = clock_domain();
        let mut user = user_domain(vec![Import::of::<Clock>("Clock")]);
        assert!(matches!(
            user.import::<Clock>("Clock"),
            Err(ImportError::Unresolved { .. })
        ));

        let report = resolve(&clock, &mut user).unwrap();
        assert_eq!(report.bound, vec![String::from("Clock")]);
        assert!(report.unresolved.is_empty());
        assert_eq!(report.source, clock.id());
        assert_eq!(report.target, user.id());
        assert_eq!(user.check_resolved(), Ok(()));
        assert_eq!(user.import_source("Clock"), Some(clock.id()));

        let imported = user.import::<Clock>("Clock").unwrap();
        assert_eq!((imported.now)(), 1_000);
        let exported = clock.export("Clock").unwrap().object::<Clock>().unwrap();
        assert!(Arc::ptr_eq(&imported, &exported));
    }

    #[test]
    fn import_asks_are_checked() {
        let clock = clock_domain();
        let mut user = user_domain(vec![Import::of::<Clock>("Clock")]);
        resolve(&clock, &mut user).unwrap();
        assert_eq!(
            user.import::<Timer>("Clock").unwrap_err(),
            ImportError::WrongType {
                name: "Clock".into(),
                declared: type_name::<Clock>(),
                requested: type_name::<Timer>(),
            }
        );
        assert_eq!(
            user.import::<Clock>("Calendar").unwrap_err(),
            ImportError::NotDeclared {
                domain: user.id(),
                name: "Calendar".into()
            }
        );
    }

    #[test]
    fn missing_symbol_stays_unresolved_and_is_reported() {
        let clock = clock_domain();
        let mut user = user_domain(vec![
            Import::of::<Clock>("Clock"),
            Import::of::<u32>("Calendar"),
        ]);
        let report = resolve(&clock, &mut user).unwrap();
        assert_eq!(report.bound, vec![String::from("Clock")]);
        assert_eq!(report.unresolved, vec![String::from("Calendar")]);
        let error = user.check_resolved().unwrap_err();
        assert_eq!(
            error,
            Unresolved {
                domain: user.id(),
                names: vec!["Calendar".into()]
            }
        );
        assert_eq!(
            error.to_string(),
            format!("{} has unresolved imports: `Calendar`", user.id())
        );

        // A later resolve against another domain completes it; bound imports stay.
        let calendar = domain(
            Module::new(
                "calendar",
                vec![Interface::new("Calendar", Arc::new(2026_u32))],
                vec![],
            )
            .unwrap(),
            Provenance::CompilerChecked,
        );
        let report = resolve(&calendar, &mut user).unwrap();
        assert_eq!(report.bound, vec![String::from("Calendar")]);
        assert_eq!(user.check_resolved(), Ok(()));
        assert_eq!(*user.import::<u32>("Calendar").unwrap(), 2026);
        assert_eq!(user.import_source("Clock"), Some(clock.id()));
    }

    #[test]
    fn mistyped_symbol_fails_and_binds_nothing() {
        let clock = clock_domain();
        // "Clock" would bind fine, but "Timer" is exported as `Timer`, imported as `u64`.
        let mut user = user_domain(vec![
            Import::of::<Clock>("Clock"),
            Import::of::<u64>("Timer"),
        ]);
        let error = resolve(&clock, &mut user).unwrap_err();
        assert_eq!(
            error,
            ResolveError::TypeMismatch {
                name: "Timer".into(),
                expected: "u64",
                found: type_name::<Timer>(),
                source_domain: clock.id(),
            }
        );
        assert_eq!(
            user.unresolved_imports(),
            vec![String::from("Clock"), String::from("Timer")]
        );
        assert!(matches!(
            user.import::<Clock>("Clock"),
            Err(ImportError::Unresolved { .. })
        ));
        assert_eq!(user.import_source("Clock"), None);
    }

    #[test]
    fn combine_exports_both_sets() {
        let clock = clock_domain();
        let console = domain(
            Module::new(
                "console",
                vec![Interface::new("Console", Arc::new(String::from("tty")))],
                vec![Import::of::<Clock>("Clock")],
            )
            .unwrap(),
            Provenance::CompilerChecked,
        );
        let combined = combine(&clock, &console).unwrap();
        let mut names: Vec<&str> = combined.exports().map(Interface::name).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["Clock", "Console", "Timer"]);
        assert_eq!(combined.name(), "clock+console");
        assert_eq!(combined.provenance(), Provenance::TrustedByAssertion);
        assert_eq!(combined.components(), &[clock.id(), console.id()]);
        assert_ne!(combined.id(), clock.id());
        assert_ne!(combined.id(), console.id());
        assert_eq!(combined.unresolved_imports(), vec![String::from("Clock")]);

        // The aggregate resolves an importer of both.
        let mut user = user_domain(vec![
            Import::of::<Clock>("Clock"),
            Import::of::<String>("Console"),
        ]);
        let report = resolve(&combined, &mut user).unwrap();
        assert_eq!(report.bound.len(), 2);
        assert_eq!(*user.import::<String>("Console").unwrap(), "tty");
        let timer = combined.export("Timer").unwrap().object::<Timer>().unwrap();
        assert_eq!(timer.period, 10);
        assert_eq!(user.import_source("Console"), Some(combined.id()));
    }

    #[test]
    fn combine_with_conflicting_names_fails() {
        let first = clock_domain();
        let second = clock_domain();
        assert_eq!(
            combine(&first, &second).unwrap_err(),
            CombineError::ConflictingExport {
                name: "Clock".into(),
                first: first.id(),
                second: second.id(),
            }
        );
        assert_eq!(
            combine(&first, &first).unwrap_err(),
            CombineError::SameDomain { domain: first.id() }
        );

        let wants_u32 = user_domain(vec![Import::of::<u32>("Calendar")]);
        let wants_u64 = user_domain(vec![Import::of::<u64>("Calendar")]);
        assert_eq!(
            combine(&wants_u32, &wants_u64).unwrap_err(),
            CombineError::ConflictingImport {
                name: "Calendar".into(),
                first_type: "u32",
                second_type: "u64",
            }
        );
    }

    #[test]
    fn combine_refuses_imports_bound_to_different_objects() {
        let first_clock = clock_domain();
        let second_clock = clock_domain();
        let mut first = user_domain(vec![Import::of::<Clock>("Clock")]);
        let mut second = user_domain(vec![Import::of::<Clock>("Clock")]);
        resolve(&first_clock, &mut first).unwrap();
        resolve(&second_clock, &mut second).unwrap();
        assert!(matches!(
            combine(&first, &second),
            Err(CombineError::ConflictingBinding { .. })
        ));

        // Bound in one part only: the aggregate keeps the binding.
        let unbound = user_domain(vec![Import::of::<Clock>("Clock")]);
        let combined = combine(&unbound, &first).unwrap();
        assert_eq!(combined.check_resolved(), Ok(()));
        assert_eq!(combined.import_source("Clock"), Some(first_clock.id()));
        assert_eq!(combined.provenance(), Provenance::CompilerChecked);
    }
}
