//! flotilla's saga core: the cluster spec, CloudEvents, the saga document, the
//! pure `decide` function, one module per step, the ports and the embedded
//! backends behind `flotilla up`.

pub mod conformance;
pub mod embedded;
pub mod ports;
pub mod settings;
