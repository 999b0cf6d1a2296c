//! flotilla's Azure layer: a thin typed ARM REST client on `azure_core`'s
//! pipeline (there is no current Rust management-plane SDK), the Key Vault and
//! Blob data planes through the official SDK crates, credentials from
//! `azure_identity`, one long-running-operation poller, one retry policy and one
//! error type that says retryable vs terminal.

pub mod actions;
pub mod arm;
pub mod blob;
pub mod config;
pub mod error;
pub mod inventory;
pub mod kube;
pub mod models;
pub mod resource_id;
pub mod telemetry;
pub mod transport;
pub mod vault;

pub use arm::{ArmClient, DeleteStart, PollOutcome, PollState, PutStart, VnetPrefixes};
pub use config::{AzureConfig, CredentialConfig, RetryPolicy};
pub use error::{AzureError, Retry};
pub use inventory::{Listed, Purge};
pub use resource_id::ResourceId;
