//! End-to-end use of the public API: a console module, an extension importing it, the name server and external tables.

use std::sync::{Arc, Mutex, OnceLock};

use spindle_domains::{
    allow_domains, combine, require_compiler_checked, resolve, Attestation, CapabilityError,
    Domain, ExternalError, Import, Interface, LookupError, Module, NameServer, Owner, Provenance,
    Rights,
};

/// The kernel's attestation authority, shared by every test in this binary (it can be had once).
fn authority() -> &'static Attestation {
    static AUTHORITY: OnceLock<Attestation> = OnceLock::new();
    AUTHORITY.get_or_init(|| Attestation::establish().expect("first establish in this binary"))
}

/// Creates the domain of `module` with `provenance`, as the kernel would.
fn create(module: Module, provenance: Provenance) -> Domain {
    Domain::create_from_module(module, authority().certify(provenance).unwrap())
}

/// The console interface: a struct holding a print function, as SPIN interfaces are.
#[derive(Debug)]
struct Console {
    /// Prints a line; returns how many lines were printed so far.
    print: fn(&Console, &str) -> usize,
    /// What was printed.
    lines: Mutex<Vec<String>>,
}

/// The console module's implementation of `print`.
fn console_print(console: &Console, line: &str) -> usize {
    let mut lines = console.lines.lock().unwrap();
    lines.push(line.to_owned());
    lines.len()
}

/// The console module: exports `Console`.
fn console_module() -> (Module, Arc<Console>) {
    let console = Arc::new(Console {
        print: console_print,
        lines: Mutex::new(Vec::new()),
    });
    let module = Module::new(
        "console",
        vec![Interface::new("Console", Arc::clone(&console))],
        vec![],
    )
    .unwrap();
    (module, console)
}

/// An extension module: imports `Console`.
fn extension_module(name: &str) -> Module {
    Module::new(name, vec![], vec![Import::of::<Console>("Console")]).unwrap()
}

#[test]
fn console_and_extension_end_to_end() {
    let (module, console) = console_module();
    let console_domain = create(module, Provenance::TrustedByAssertion);
    let mut extension = create(extension_module("hello"), Provenance::CompilerChecked);
    let intruder = create(extension_module("intruder"), Provenance::CompilerChecked);

    // Link: resolve binds the import, typed.
    assert!(extension.check_resolved().is_err());
    let report = resolve(&console_domain, &mut extension).unwrap();
    assert_eq!(report.bound, ["Console"]);
    extension.check_resolved().unwrap();
    let linked = extension.import::<Console>("Console").unwrap();
    assert_eq!((linked.print)(&linked, "linked"), 1);

    // Publish: the exporter's procedure admits the extension only.
    let names = NameServer::new();
    names
        .register(
            &console_domain,
            console_domain.export("Console").unwrap().clone(),
            allow_domains(&[extension.id()]),
        )
        .unwrap();
    let found = names
        .lookup::<Console>("Console", &extension.importer())
        .unwrap();
    assert_eq!((found.print)(&found, "looked up"), 2);
    assert!(Arc::ptr_eq(&found, &console));
    let refused = names
        .lookup::<Console>("Console", &intruder.importer())
        .unwrap_err();
    assert!(
        matches!(refused, LookupError::Refused { exporter, .. } if exporter == console_domain.id())
    );

    // Combine: the aggregate exports the console too.
    let aggregate = combine(&console_domain, &extension).unwrap();
    assert!(aggregate.export("Console").is_some());
    assert_eq!(
        aggregate.import_source("Console"),
        Some(console_domain.id())
    );

    assert_eq!(*console.lines.lock().unwrap(), ["linked", "looked up"]);
}

#[test]
fn exporter_may_refuse_importers_that_are_not_compiler_checked() {
    let (module, _) = console_module();
    let console_domain = create(module, Provenance::CompilerChecked);
    let checked = create(extension_module("checked"), Provenance::CompilerChecked);
    let asserted = create(extension_module("asserted"), Provenance::TrustedByAssertion);
    let names = NameServer::new();
    names
        .register(
            &console_domain,
            console_domain.export("Console").unwrap().clone(),
            require_compiler_checked(),
        )
        .unwrap();
    assert!(names
        .lookup::<Console>("Console", &checked.importer())
        .is_ok());
    assert!(matches!(
        names.lookup::<Console>("Console", &asserted.importer()),
        Err(LookupError::Refused { .. })
    ));
}

#[test]
fn domains_report_the_provenance_the_kernel_certified() {
    // The same module description yields either provenance: only the certificate decides.
    let checked = create(extension_module("same"), Provenance::CompilerChecked);
    let asserted = create(extension_module("same"), Provenance::TrustedByAssertion);
    assert_eq!(checked.provenance(), Provenance::CompilerChecked);
    assert_eq!(asserted.provenance(), Provenance::TrustedByAssertion);
    assert_eq!(checked.importer().provenance(), Provenance::CompilerChecked);
    assert_eq!(checked.importer().domain(), checked.id());
    let certificate = authority().certify(Provenance::CompilerChecked).unwrap();
    let expected_id = certificate.domain();
    let domain = Domain::create_from_module(extension_module("third"), certificate);
    assert_eq!(domain.id(), expected_id);
    assert!(Attestation::establish().is_err());
}

#[test]
fn external_references_are_per_domain() {
    let (module, _) = console_module();
    let console_domain = create(module, Provenance::TrustedByAssertion);
    let first = create(extension_module("first"), Provenance::CompilerChecked);
    let second = create(extension_module("second"), Provenance::CompilerChecked);

    let first_secret = Owner::new(String::from("first's file"));
    let second_file = Owner::new(String::from("second's file"));
    let reference = first
        .external_table()
        .externalize(first_secret.grant(Rights::READ))
        .unwrap();
    let second_reference = second
        .external_table()
        .externalize(second_file.grant(Rights::READ))
        .unwrap();
    assert_eq!(reference.index, second_reference.index);

    let capability = first.external_table().resolve::<String>(reference).unwrap();
    assert_eq!(capability.get().unwrap(), "first's file");
    // The same numbers mean nothing in another domain's table.
    assert!(matches!(
        second.external_table().resolve::<String>(reference),
        Err(ExternalError::Forged { .. } | ExternalError::Stale { .. })
    ));
    assert!(matches!(
        console_domain.external_table().resolve::<String>(reference),
        Err(ExternalError::Forged { .. })
    ));

    // Revoking the grant ends access through the table and directly.
    first_secret.revoke_grant(&capability).unwrap();
    assert!(matches!(
        first.external_table().resolve::<String>(reference),
        Err(ExternalError::Revoked { .. })
    ));
    assert!(matches!(
        capability.get(),
        Err(CapabilityError::Revoked { .. })
    ));
    // Another domain's capability is untouched.
    assert!(second
        .external_table()
        .resolve::<String>(second_reference)
        .is_ok());
}
