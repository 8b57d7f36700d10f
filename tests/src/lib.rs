//! QEMU integration tests (see tests/*.rs).
