//! Cosmos DB saga store (in progress).
