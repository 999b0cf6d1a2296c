//! The library side of the flotilla package: what other crates reuse from it.
//! [`emulators`] (the `flotilla-harness` crate) starts the emulators, the
//! simulator and flotilla child processes on loopback, for `flotilla chaos`
//! and the integration tests.

pub use flotilla_harness as emulators;
