//! flotilla's saga core: the cluster spec, CloudEvents, the saga document, the
//! pure `decide` function, one module per step, the engine, the ports and the
//! embedded backends behind `flotilla up`.

pub mod adapters;
pub mod conformance;
pub mod decide;
pub mod embedded;
pub mod engine;
pub mod events;
pub mod names;
pub mod orphans;
pub mod plan;
pub mod ports;
pub mod preflight;
pub mod saga;
pub mod settings;
pub mod spec;
pub mod steps;
pub mod telemetry;
pub mod testing;
