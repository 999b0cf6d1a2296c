//! Production adapters for flotilla's ports: the Cosmos DB saga store and the
//! Service Bus event bus. Both pass the same conformance suites as the
//! embedded backends (`flotilla_core::conformance`).

pub mod cosmos;
pub mod servicebus;
