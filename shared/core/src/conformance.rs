//! Conformance suites every adapter of a port must pass.
