//! `sweep`: the timer-triggered sweeper (every minute). It sends events still
//! held in saga documents, re-arms overdue jobs and logs stalled ones; see
//! `flotilla_core::engine::sweep`.

use super::envelope::Reply;
use super::AppState;
use axum::http::StatusCode;
use flotilla_core::engine::SweepOptions;

/// The timer binding's name in `functions/sweep/function.json`.
#[cfg_attr(not(test), allow(dead_code))]
pub const BINDING: &str = "timer";

/// One sweep; its report is the invocation's return value.
pub async fn invoke(state: &AppState) -> (StatusCode, Reply) {
    let mut reply = Reply::new();
    let opts = match SweepOptions::from_settings(SweepOptions::default()) {
        Ok(o) => o,
        Err(e) => {
            reply.log(format!("sweep: {e}"));
            return (StatusCode::INTERNAL_SERVER_ERROR, reply);
        }
    };
    match state.engine.sweep(&opts).await {
        Ok(report) => {
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
            reply.return_value = serde_json::to_value(&report).unwrap_or_default();
            (StatusCode::OK, reply)
        }
        Err(e) => {
            reply.log(format!("sweep failed: {e}"));
            (StatusCode::INTERNAL_SERVER_ERROR, reply)
        }
    }
}
