//! `sweep`: the timer-triggered sweeper (every minute). It sends events still
//! held in saga documents, re-arms overdue jobs and logs stalled ones (see
//! `flotilla_core::engine::sweep`), then looks for orphans — anything tagged
//! `managed-by: flotilla` that no live job owns (`engine::orphans`) — older
//! than `FLOTILLA_SWEEP_ORPHAN_AGE_S`. It only reports them unless
//! `FLOTILLA_SWEEP_DELETE_ORPHANS` is `true`.

use super::envelope::Reply;
use super::AppState;
use axum::http::StatusCode;
use flotilla_core::engine::{OrphanOptions, RemovalOptions, SweepOptions};
use flotilla_core::settings;
use std::time::Duration;

/// The timer binding's name in `functions/sweep/function.json`.
#[cfg_attr(not(test), allow(dead_code))]
pub const BINDING: &str = "timer";

/// How old an orphan must be before the timer reports it, by default.
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// How long one invocation waits for orphan deletes (the next run carries on).
const REMOVAL_WAIT: Duration = Duration::from_secs(240);

/// Whether the timer deletes orphans (`FLOTILLA_SWEEP_DELETE_ORPHANS`).
fn delete_orphans() -> Result<bool, crate::error::Error> {
    use crate::error::Error;
    match settings::get("FLOTILLA_SWEEP_DELETE_ORPHANS").as_deref() {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::Setting {
            name: "FLOTILLA_SWEEP_DELETE_ORPHANS".into(),
            why: format!("must be true or false (got '{v}')"),
        }),
    }
}

/// One sweep; its report is the invocation's return value.
pub async fn invoke(state: &AppState) -> (StatusCode, Reply) {
    let mut reply = Reply::new();
    let settings = SweepOptions::from_settings(SweepOptions::default()).and_then(|opts| {
        let orphans = OrphanOptions::from_settings(OrphanOptions {
            older_than: ORPHAN_AGE,
            resource_groups: vec![],
        })?;
        Ok((opts, orphans, delete_orphans().map_err(|e| e.to_string())?))
    });
    let (opts, orphan_opts, delete) = match settings {
        Ok(s) => s,
        Err(e) => {
            reply.log(format!("sweep: {e}"));
            return (StatusCode::INTERNAL_SERVER_ERROR, reply);
        }
    };
    let report = match state.engine.sweep(&opts).await {
        Ok(report) => report,
        Err(e) => {
            reply.log(format!("sweep failed: {e}"));
            return (StatusCode::INTERNAL_SERVER_ERROR, reply);
        }
    };
    reply.log(format!(
        "sweep: {} sagas, {} outboxes sent, {} re-armed, {} stalled, {} errors",
        report.scanned,
        report.sent.len(),
        report.rearmed.len(),
        report.stalled.len(),
        report.errors.len()
    ));
    for s in &report.stalled {
        reply.log(format!("sweep: job {} stalled: {}", s.job, s.why));
    }
    let mut value = serde_json::to_value(&report).unwrap_or_default();
    match state.engine.find_orphans(&orphan_opts).await {
        Ok(found) => {
            reply.log(format!(
                "sweep: {} orphan(s) in {} resource group(s), the vault and the staging container{}",
                found.orphans.len(),
                found.resource_groups.len(),
                if delete { "; deleting them" } else { "; reporting only" }
            ));
            for o in &found.orphans {
                reply.log(format!(
                    "sweep: orphan {} (age {}): {}",
                    o.id,
                    o.age.as_deref().unwrap_or("unknown"),
                    o.why
                ));
            }
            for e in &found.errors {
                reply.log(format!("sweep: could not list {e}"));
            }
            if delete && !found.orphans.is_empty() {
                let removal = state
                    .engine
                    .remove_orphans(
                        &found.orphans,
                        &RemovalOptions {
                            max_wait: REMOVAL_WAIT,
                        },
                    )
                    .await;
                for n in &removal.not_removed {
                    reply.log(format!("sweep: orphan {} not removed: {}", n.id, n.why));
                }
                value["removal"] = serde_json::to_value(&removal).unwrap_or_default();
            }
            value["orphans"] = serde_json::to_value(&found).unwrap_or_default();
        }
        Err(e) => {
            // The re-arm sweep above did its work; the orphan sweep retries next time.
            reply.log(format!("sweep: orphan sweep failed: {e}"));
            value["orphans"] = serde_json::json!({"error": e.to_string()});
        }
    }
    reply.return_value = value;
    (StatusCode::OK, reply)
}
