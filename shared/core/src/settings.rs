//! Every app setting (environment variable) flotilla or its Functions host reads.
//!
//! This table is the single source of truth: code reads the environment only
//! through [`get`], the README's configuration table and `infra/main.bicep`
//! are checked against it by `scripts/check_infra.py`.

/// Who reads a setting, which decides who must provide it on Azure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBy {
    /// flotilla's own code; the Bicep template sets it when `deployed` is true.
    Flotilla,
    /// The Functions host or a binding (host.json / function.json); set by the template.
    Host,
    /// Provided by the platform at run time (never set by the template).
    Platform,
}

/// One app setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub name: &'static str,
    pub read_by: ReadBy,
    /// Whether `infra/main.bicep` sets it on the Function App.
    pub deployed: bool,
    pub doc: &'static str,
}

const fn s(name: &'static str, read_by: ReadBy, deployed: bool, doc: &'static str) -> Setting {
    Setting {
        name,
        read_by,
        deployed,
        doc,
    }
}

use ReadBy::{Flotilla, Host, Platform};

/// Settings with `deployed: true` that the template sets on the Dedicated
/// (App Service) plan only. The Flex Consumption plan (the default) takes the
/// worker runtime from `functionAppConfig.runtime` and sets the host version
/// itself; it rejects or ignores these as app settings, and
/// `scripts/check_infra.py` fails if the Flex Consumption site sets them.
pub const DEDICATED_PLAN_ONLY: &[&str] =
    &["FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION"];

/// The registry. Keep it sorted by concern; names are unique.
pub const SETTINGS: &[Setting] = &[
    // Host and platform
    s("FUNCTIONS_WORKER_RUNTIME", Host, true, "`custom`: the host starts the flotilla binary as a custom handler. Dedicated plan only: Flex Consumption takes it from `functionAppConfig.runtime` and refuses the app setting."),
    s("FUNCTIONS_EXTENSION_VERSION", Host, true, "`~4`: the Functions host major version. Dedicated plan only: Flex Consumption sets the host version itself."),
    s("AzureWebJobsStorage__accountName", Host, true, "Host storage account (identity-based connection)."),
    s("AzureWebJobsStorage__credential", Host, true, "`managedidentity` for the host storage connection."),
    s("AzureWebJobsStorage__clientId", Host, true, "Client id of the user-assigned identity the host uses for its storage."),
    s("ServiceBusConnection__fullyQualifiedNamespace", Host, true, "Service Bus namespace the triggers listen on (`<ns>.servicebus.windows.net`)."),
    s("ServiceBusConnection__credential", Host, true, "`managedidentity` for the Service Bus triggers."),
    s("ServiceBusConnection__clientId", Host, true, "Client id of the user-assigned identity used by the Service Bus triggers."),
    s("FUNCTIONS_CUSTOMHANDLER_PORT", Platform, false, "Port the host expects `flotilla serve` to listen on (127.0.0.1)."),
    s("IDENTITY_ENDPOINT", Platform, false, "App Service managed-identity token endpoint (read by azure_identity)."),
    s("IDENTITY_HEADER", Platform, false, "Secret header for IDENTITY_ENDPOINT (read by azure_identity; never logged)."),
    // Backends
    s("FLOTILLA_STORE", Flotilla, true, "Saga store: `sqlite` (default, embedded) or `cosmos`."),
    s("FLOTILLA_BUS", Flotilla, true, "Event bus: `embedded` (default, in-process) or `servicebus`."),
    s("FLOTILLA_STAGING", Flotilla, true, "Staging: `blob` (at STAGING_BLOB_ENDPOINT; an Azurite endpoint is signed with its public development key). Locally, unset: the built-in simulator's blob service."),
    s("FLOTILLA_DATA_DIR", Flotilla, false, "Embedded store, bus and simulator state (default `./.flotilla`)."),
    s("FLOTILLA_DELIVER_TWICE", Flotilla, false, "Test mode: `true` makes the embedded bus deliver every message twice (duplicate delivery; `flotilla chaos` sets it)."),
    s("COSMOS_ENDPOINT", Flotilla, true, "Cosmos DB account endpoint (`https://<account>.documents.azure.com:443/`)."),
    s("COSMOS_DATABASE", Flotilla, true, "Cosmos DB database name (default `flotilla`)."),
    s("COSMOS_CONTAINER", Flotilla, true, "Cosmos DB container for sagas, partitioned by `/id` (default `sagas`)."),
    s("SERVICEBUS_ENDPOINT", Flotilla, true, "Service Bus namespace URL flotilla sends to (`https://<ns>.servicebus.windows.net`)."),
    s("SERVICEBUS_QUEUE", Flotilla, true, "Topic (or queue) that carries flotilla's CloudEvents (default `flotilla-events`)."),
    s("STAGING_BLOB_ENDPOINT", Flotilla, true, "Blob endpoint of the staging account (`https://<account>.blob.core.windows.net`)."),
    s("STAGING_CONTAINER", Flotilla, true, "Blob container for cluster specs and init scripts (default `staging`)."),
    s("STAGING_ACCOUNT_ID", Flotilla, true, "ARM id of the staging storage account; `keys` calls its `listKeys`."),
    // Azure control plane and identity
    s("ARM_ENDPOINT", Flotilla, false, "Azure Resource Manager endpoint (default `https://management.azure.com`)."),
    s("AZURE_SUBSCRIPTION_ID", Flotilla, true, "Subscription that holds the clusters' resource group."),
    s("AZURE_TENANT_ID", Flotilla, true, "Tenant of the identities."),
    s("KEYVAULT_URL", Flotilla, true, "Key Vault that receives the per-job secrets (`https://<vault>.vault.azure.net`)."),
    s("KEYVAULT_ID", Flotilla, true, "ARM id of that vault: `keys` gives each job's nodes a role on exactly their own join secrets below it."),
    s("AZURE_CREDENTIAL", Flotilla, true, "`managed-identity` (default on Azure), `client-secret` or `azure-cli`."),
    s("AZURE_CLIENT_ID", Flotilla, true, "Client id of the user-assigned managed identity (or of the app for `client-secret`)."),
    s("AZURE_CLIENT_SECRET", Flotilla, false, "Only for `client-secret`; use a Key Vault reference, never a literal."),
    s("AZURE_AUTHORITY_HOST", Flotilla, false, "Entra authority for `client-secret` (default `https://login.microsoftonline.com`)."),
    s("AZURE_CA_CERT", Flotilla, false, "Extra CA certificate (PEM path) to trust, e.g. the simulator's; never set on Azure."),
    s("CLUSTER_SP_CLIENT_ID", Flotilla, false, "Service-principal identity mode: the cluster principal's client id."),
    s("CLUSTER_SP_OBJECT_ID", Flotilla, false, "Service-principal identity mode: the cluster principal's object id, which gets the scaler role on the job's worker scale sets and its nodes' roles on the job's join secrets (without it the cluster cannot scale itself, and the deployment must grant the principal Key Vault access)."),
    s("CLUSTER_SCALER_ROLE_ID", Flotilla, true, "Role definition GUID the cluster identity gets on each worker scale set of its job and its worker subnet (infra/ defines the narrow custom role `flotilla cluster scaler` and sets its GUID; default when unset: built-in Virtual Machine Contributor)."),
    s("CLUSTER_SP_CLIENT_SECRET", Flotilla, false, "Service-principal identity mode: its secret, as a Key Vault reference; copied into the job's vault secret, never logged."),
    // Who may call (App Service Authentication in front of the app) and what Event Grid may deliver
    s("FLOTILLA_AUTH", Flotilla, true, "`required` (set by `infra/`, with App Service Authentication in front): an HTTP request that names no caller (`X-MS-CLIENT-PRINCIPAL-ID`) is refused with 401. `off` (default: `flotilla up`, Core Tools, tests): such a request is the local operator and may touch every job. Either way a named caller may touch only the jobs it submitted, unless it holds the admin app role."),
    s("FLOTILLA_ADMIN_ROLE", Flotilla, false, "The Entra app role whose holders may read, scale and delete every job (default `Flotilla.Admin`)."),
    s("FLOTILLA_EVENTGRID_TOPIC", Flotilla, true, "The `topic` (Event Grid schema; `source` in CloudEvents) the `events` function accepts deliveries from: the clusters' resource group id, `/subscriptions/{s}/resourceGroups/{rg}`, the source of its system topic. Any other topic is refused. Unset (local runs): any topic."),
    // Operations
    s("FLOTILLA_SWEEP_INTERVAL_S", Flotilla, false, "Seconds between sweeps in `flotilla worker` and the embedded runner (default 30; on Azure the `sweep` timer function runs every minute)."),
    s("FLOTILLA_SWEEP_GRACE_S", Flotilla, false, "Seconds a job's next event may be overdue before the sweeper sends it again from the saga document (Cosmos DB) or re-arms the job (default 60)."),
    s("FLOTILLA_STALL_AFTER_S", Flotilla, false, "Seconds without progress after which `status` and the sweeper report a job as stalled (default 900)."),
    s("FLOTILLA_SWEEP_RESOURCE_GROUPS", Flotilla, false, "Comma-separated resource groups the orphan sweep lists besides those of known jobs (it never lists the whole subscription)."),
    s("FLOTILLA_SWEEP_ORPHAN_AGE_S", Flotilla, false, "Seconds an orphan must have existed before the `sweep` timer function reports or deletes it (default 3600)."),
    s("FLOTILLA_SWEEP_DELETE_ORPHANS", Flotilla, false, "`true` makes the `sweep` timer function delete the orphans it finds; default `false`: it only reports them."),
    s("RUST_LOG", Flotilla, false, "Log filter (tracing-subscriber syntax, default `info`)."),
    s("RUST_LIB_BACKTRACE", Flotilla, false, "Whether errors capture a backtrace (Rust's standard variable). flotilla sets it to `0` for itself when unset: the Azure SDK builds and drops an error for every absent response header, and with `RUST_BACKTRACE=1` each captured a backtrace under a process-wide lock. Panics still print theirs as `RUST_BACKTRACE` says."),
    s("OTEL_EXPORTER_OTLP_ENDPOINT", Flotilla, false, "OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`): flotilla exports its traces and metrics there (also when APPLICATIONINSIGHTS_CONNECTION_STRING is set); unset, nothing goes over OTLP. The SDK also honours the other standard `OTEL_*` variables (headers, timeouts, per-signal endpoints, batch and export intervals)."),
    s("APPLICATIONINSIGHTS_CONNECTION_STRING", Flotilla, true, "Application Insights (not a secret: the resource's instrumentation key and ingestion endpoint; local auth is off). The Functions host sends its logs there, and flotilla its traces and metrics (also when OTEL_EXPORTER_OTLP_ENDPOINT is set: each destination gets everything); unset, flotilla sends nothing there."),
    s("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", Flotilla, true, "`ClientId=<app identity>;Authorization=AAD`: the host and flotilla send telemetry with an Entra token of that managed identity (without `ClientId`, the system-assigned one), which Application Insights with local auth off requires; unset, flotilla sends with the instrumentation key alone."),
    s("OTEL_SERVICE_NAME", Flotilla, false, "`service.name` of the exported telemetry, Application Insights' cloud role (default `flotilla`)."),
    s("FLOTILLA_LOG_FORMAT", Flotilla, true, "`text` (default) or `json` (one JSON object per line, for Application Insights)."),
    s("NO_COLOR", Flotilla, false, "Set (not empty): text logs carry no colour codes even on a terminal. Logs to anything else (a file, a pipe, the Functions host) never carry them."),
    // `flotilla serve` listener (seconds may have decimals)
    s("FLOTILLA_SERVE_HEADER_TIMEOUT", Flotilla, false, "`flotilla serve`: seconds a client has to send a request's headers; an idle keep-alive connection is closed after the same time (default 10)."),
    s("FLOTILLA_SERVE_BODY_TIMEOUT", Flotilla, false, "`flotilla serve`: seconds a client has to send a whole request body, else 408 and the connection is closed (default 30)."),
    s("FLOTILLA_SERVE_REQUEST_TIMEOUT", Flotilla, false, "`flotilla serve`: seconds one request may take in all, else 503 (default 280, under host.json's 5-minute functionTimeout)."),
    s("FLOTILLA_SERVE_MAX_CONNECTIONS", Flotilla, false, "`flotilla serve`: connections served at once; further ones wait to be accepted (default 256)."),
    // Tests
    s("FLOTILLA_CHROMIUM", Flotilla, false, "Tests only: the Chromium binary the progress-page test drives (default `chromium`, else `chromium-browser`, on PATH)."),
];

/// Reads a registered setting; `None` when unset or empty.
///
/// Panics in debug builds when `name` is not in [`SETTINGS`], so an unregistered
/// read cannot slip past the infra cross-check.
pub fn get(name: &str) -> Option<String> {
    debug_assert!(
        SETTINGS.iter().any(|s| s.name == name),
        "setting {name} is not registered in settings::SETTINGS"
    );
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn dedicated_plan_only_settings_are_deployed_host_settings() {
        for name in DEDICATED_PLAN_ONLY {
            let s = SETTINGS
                .iter()
                .find(|s| s.name == *name)
                .unwrap_or_else(|| panic!("{name} is not registered"));
            assert!(
                s.deployed,
                "{name} is dedicated-plan only, so it is deployed"
            );
            assert_eq!(
                s.read_by,
                ReadBy::Host,
                "{name} is read by the Functions host"
            );
        }
    }

    #[test]
    fn platform_settings_are_never_deployed() {
        for s in SETTINGS.iter().filter(|s| s.read_by == ReadBy::Platform) {
            assert!(!s.deployed, "{} is provided by the platform", s.name);
        }
    }
}
