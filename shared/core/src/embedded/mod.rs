//! Embedded backends (SQLite store + in-process bus).
