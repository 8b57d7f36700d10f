//! Many threads using one name server and one external table at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use spindle_domains::{
    allow_all, allow_domains, Attestation, Domain, ExternalError, ExternalTable, Interface,
    LookupError, Module, NameServer, Owner, Provenance, RegisterError, Rights, UnregisterError,
};

/// The attestation authority, shared by every test in this binary.
fn authority() -> &'static Attestation {
    static AUTHORITY: OnceLock<Attestation> = OnceLock::new();
    AUTHORITY.get_or_init(|| Attestation::establish().expect("first establish in this binary"))
}

/// An empty domain named `name`.
fn domain(name: &str) -> Domain {
    let certificate = authority().certify(Provenance::CompilerChecked).unwrap();
    Domain::create_from_module(Module::new(name, vec![], vec![]).unwrap(), certificate)
}

/// Names registered for the whole test.
const STABLE_NAMES: u64 = 8;
/// Threads doing lookups.
const READERS: usize = 4;
/// Threads registering and unregistering their own names.
const WRITERS: u64 = 2;
/// Registrations each writer makes.
const WRITER_ROUNDS: u64 = 2_000;
/// Names each writer cycles through.
const CHURN_NAMES: u64 = 4;

/// The value registered under churn name `slot` by writer `writer`.
fn churn_value(writer: u64, slot: u64) -> u64 {
    1_000 + writer * 100 + slot
}

#[test]
fn lookups_while_registering_and_unregistering() {
    let names = NameServer::new();
    let stable_exporter = domain("stable");
    let reader_domain = domain("reader");
    let refused_domain = domain("refused");
    let writers: Vec<Domain> = (0..WRITERS)
        .map(|writer| domain(&format!("writer{writer}")))
        .collect();
    for index in 0..STABLE_NAMES {
        names
            .register(
                &stable_exporter,
                Interface::new(format!("stable-{index}"), Arc::new(index)),
                allow_domains(&[reader_domain.id()]),
            )
            .unwrap();
    }
    let writers_done = AtomicBool::new(false);

    thread::scope(|scope| {
        let mut readers = Vec::new();
        for reader in 0..READERS {
            let names = &names;
            let writers_done = &writers_done;
            let importer = reader_domain.importer();
            let refused = refused_domain.importer();
            readers.push(scope.spawn(move || {
                let mut rounds = 0_u64;
                let mut churn_hits = 0_u64;
                while !writers_done.load(Ordering::Acquire) || rounds < 1_000 {
                    let index = (rounds + reader as u64) % STABLE_NAMES;
                    let name = format!("stable-{index}");
                    assert_eq!(*names.lookup::<u64>(&name, &importer).unwrap(), index);
                    assert!(matches!(
                        names.lookup::<u64>(&name, &refused),
                        Err(LookupError::Refused { .. })
                    ));
                    let writer = rounds % WRITERS;
                    let slot = rounds % CHURN_NAMES;
                    match names.lookup::<u64>(&format!("churn-{writer}-{slot}"), &importer) {
                        Ok(value) => {
                            assert_eq!(*value, churn_value(writer, slot));
                            churn_hits += 1;
                        }
                        Err(LookupError::NotFound { .. }) => {}
                        Err(other) => panic!("unexpected lookup error: {other}"),
                    }
                    rounds += 1;
                }
                (rounds, churn_hits)
            }));
        }

        let mut writer_threads = Vec::new();
        for (writer_index, writer) in writers.iter().enumerate() {
            let names = &names;
            let other = &writers[(writer_index + 1) % writers.len()];
            let writer_number = writer_index as u64;
            writer_threads.push(scope.spawn(move || {
                for round in 0..WRITER_ROUNDS {
                    let slot = round % CHURN_NAMES;
                    let name = format!("churn-{writer_number}-{slot}");
                    // Names stay registered for CHURN_NAMES rounds, so readers find some.
                    if round >= CHURN_NAMES {
                        names.unregister(writer, &name).unwrap();
                    }
                    let value = Arc::new(churn_value(writer_number, slot));
                    names
                        .register(writer, Interface::new(name.clone(), value), allow_all())
                        .unwrap();
                    let duplicate = Interface::new(name.clone(), Arc::new(0_u64));
                    assert!(matches!(
                        names.register(writer, duplicate, allow_all()),
                        Err(RegisterError::NameTaken { holder, .. }) if holder == writer.id()
                    ));
                    // The other writer may not remove this name.
                    assert!(matches!(
                        names.unregister(other, &name),
                        Err(UnregisterError::NotExporter { .. })
                    ));
                }
                for slot in 0..CHURN_NAMES.min(WRITER_ROUNDS) {
                    names
                        .unregister(writer, &format!("churn-{writer_number}-{slot}"))
                        .unwrap();
                }
            }));
        }
        for writer in writer_threads {
            writer.join().unwrap();
        }
        writers_done.store(true, Ordering::Release);
        let mut total_hits = 0;
        for reader in readers {
            let (rounds, hits) = reader.join().unwrap();
            assert!(rounds >= 1_000);
            total_hits += hits;
        }
        // Not guaranteed by scheduling, but readers ran throughout; report for the log.
        println!("readers found churn names {total_hits} times");
    });

    let mut remaining = names.names();
    remaining.sort();
    let expected: Vec<String> = (0..STABLE_NAMES)
        .map(|index| format!("stable-{index}"))
        .collect();
    assert_eq!(remaining, expected);
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<NameServer>();
    assert_send_sync::<ExternalTable>();
    assert_send_sync::<Domain>();
    assert_send_sync::<Attestation>();
    assert_send_sync::<Owner<u64>>();
    assert_send_sync::<spindle_domains::Capability<u64>>();
}

#[test]
fn external_table_shared_by_threads() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 2_000;
    let table = ExternalTable::new(domain("table").id());
    let owners: Vec<Owner<u64>> = (0..THREADS).map(Owner::new).collect();
    thread::scope(|scope| {
        for (thread_number, owner) in owners.iter().enumerate() {
            let table = &table;
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    let reference = table.externalize(owner.grant(Rights::READ)).unwrap();
                    let capability = table.resolve::<u64>(reference).unwrap();
                    assert_eq!(*capability.get().unwrap(), thread_number as u64);
                    assert!(matches!(
                        table.resolve::<u32>(reference),
                        Err(ExternalError::WrongType { .. })
                    ));
                    table.release(reference).unwrap();
                    assert!(matches!(
                        table.resolve::<u64>(reference),
                        Err(ExternalError::Stale { .. })
                    ));
                }
            });
        }
    });
    assert!(table.is_empty());
    assert!(table.slot_count() <= THREADS as usize);
}
