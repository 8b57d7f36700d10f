//! Spindle's protection layer: typed capabilities, externalized references, protection domains and the name server.
//!
//! Spindle follows SPIN (Bershad et al., SOSP 1995), in safe Rust:
//!
//! * [`Capability<T>`] is SPIN's unforgeable typed pointer: only an object's
//!   [`Owner`] mints capabilities ([`Owner::grant`]), and the owner can revoke
//!   one grant ([`Owner::revoke_grant`]) or every capability to the object
//!   ([`Owner::revoke_all`]). Using a revoked capability is
//!   [`CapabilityError::Revoked`]. See [`capability`].
//! * [`ExternalTable`] is SPIN's per-application table: it turns capabilities
//!   into [`ExternalReference`]s (`index`, `generation`) for code outside the
//!   kernel and back, refusing forged, stale, revoked and mistyped references.
//!   See [`external`].
//! * [`Domain`] is SPIN's logical protection domain:
//!   [`Domain::create_from_module`], [`resolve`] and [`combine`] are
//!   `Domain.CreateFromModule`, `Domain.Resolve` and `Domain.Combine`. See
//!   [`domain`].
//! * [`Provenance`] records whether a domain's code is compiler-checked or
//!   trusted by assertion; only the kernel's [`Attestation`] can certify it.
//!   See [`provenance`].
//! * [`NameServer`] publishes interfaces guarded by the exporter's
//!   authorization procedure, which sees the importer's identity on every
//!   lookup. See [`name_server`].
//!
//! # For the kernel integrator
//!
//! * Call [`Attestation::establish`] once, early in boot and before any
//!   extension code runs; a failure means someone else got the authority
//!   first and must be treated as fatal. Keep the authority in the kernel.
//! * For each compiled-in module, certify its provenance
//!   ([`Attestation::certify`]) from the build script's list of crates whose
//!   root file carries `#![forbid(unsafe_code)]`, and create its domain with
//!   [`Domain::create_from_module`]. Domain identities are unique within the
//!   program; certify also assigns them.
//! * Holding a `&Domain` is the authority to act as that domain (to get its
//!   [`Importer`], to register and unregister names for it); hand extensions
//!   only what they should hold.
//! * Nothing here panics on bad input; every refusal is a typed error with a
//!   `Display` text.
//!
//! # Example
//!
//! A `console` module exports a `Console` interface; an extension imports it.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use spindle_domains::{
//!     allow_domains, combine, resolve, Attestation, Domain, Import, Interface, LookupError,
//!     Module, NameServer, Provenance,
//! };
//!
//! /// The console interface: what an extension may call.
//! struct Console {
//!     lines: Mutex<Vec<String>>,
//! }
//!
//! impl Console {
//!     fn print(&self, line: &str) {
//!         self.lines.lock().unwrap().push(line.to_owned());
//!     }
//! }
//!
//! // Boot: the kernel takes the attestation authority.
//! let authority = Attestation::establish()?;
//!
//! // The console module (kernel code, trusted by assertion).
//! let console = Arc::new(Console { lines: Mutex::new(Vec::new()) });
//! let console_module = Module::new(
//!     "console",
//!     vec![Interface::new("Console", Arc::clone(&console))],
//!     vec![],
//! )?;
//! let console_domain = Domain::create_from_module(
//!     console_module,
//!     authority.certify(Provenance::TrustedByAssertion)?,
//! );
//!
//! // An extension (a `#![forbid(unsafe_code)]` crate) importing `Console`.
//! let extension_module = Module::new("hello", vec![], vec![Import::of::<Console>("Console")])?;
//! let mut extension = Domain::create_from_module(
//!     extension_module,
//!     authority.certify(Provenance::CompilerChecked)?,
//! );
//! assert_eq!(extension.provenance(), Provenance::CompilerChecked);
//!
//! // Link time: resolve the extension against the console domain.
//! let report = resolve(&console_domain, &mut extension)?;
//! assert_eq!(report.bound, ["Console"]);
//! extension.check_resolved()?;
//! extension.import::<Console>("Console")?.print("hello from the extension");
//!
//! // Run time: the console is published, for the extension only.
//! let names = NameServer::new();
//! names.register(
//!     &console_domain,
//!     console_domain.export("Console").unwrap().clone(),
//!     allow_domains(&[extension.id()]),
//! )?;
//! let found = names.lookup::<Console>("Console", &extension.importer())?;
//! found.print("hello again");
//!
//! let other = Domain::create_from_module(
//!     Module::new("other", vec![], vec![])?,
//!     authority.certify(Provenance::CompilerChecked)?,
//! );
//! assert!(matches!(
//!     names.lookup::<Console>("Console", &other.importer()),
//!     Err(LookupError::Refused { .. })
//! ));
//!
//! // Combine: one aggregate domain exporting what both export.
//! let both = combine(&console_domain, &extension)?;
//! assert!(both.export("Console").is_some());
//! assert_eq!(both.provenance(), Provenance::TrustedByAssertion);
//!
//! assert_eq!(
//!     *console.lines.lock().unwrap(),
//!     ["hello from the extension", "hello again"]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Unforgeability
//!
//! Capabilities, importer identities and provenance certificates have private
//! fields and no public constructor, so code outside this crate cannot make
//! them; the compiler enforces it:
//!
//! ```compile_fail
//! // A capability can only come from its object's owner.
//! let forged: spindle_domains::Capability<u32> = spindle_domains::Capability {
//!     object: std::sync::Arc::new(1),
//!     rights: spindle_domains::Rights::ALL,
//! };
//! ```
//!
//! ```compile_fail
//! // An importer identity can only come from a domain.
//! let forged = spindle_domains::Importer::new(
//!     spindle_domains::DomainId::new(1),
//!     spindle_domains::Provenance::TrustedByAssertion,
//! );
//! ```
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod capability;
pub mod domain;
pub mod external;
pub mod module;
pub mod name_server;
pub mod provenance;

pub use capability::{Capability, CapabilityError, GrantId, Owner, Rights};
pub use domain::{
    combine, resolve, CombineError, Domain, DomainId, ImportError, ResolveError, ResolveReport,
    Unresolved,
};
pub use external::{ExternalError, ExternalReference, ExternalTable, TableConfiguration};
pub use module::{Import, Interface, Module, ModuleError};
pub use name_server::{
    allow_all, allow_domains, require_compiler_checked, Authorization, Importer, LookupError,
    NameServer, RegisterError, UnregisterError,
};
pub use provenance::{Attestation, AttestationError, Provenance, ProvenanceCertificate};
