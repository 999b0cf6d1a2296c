//! Orphans: things flotilla made (tagged `managed-by: flotilla`) that no live
//! job owns. Pure rules here — what counts as an orphan, and in which order
//! orphans are deleted; the engine lists and deletes (`engine::orphans`).
//!
//! An ARM resource, Key Vault secret or staged blob tagged `managed-by:
//! flotilla` is an orphan when its `flotilla-job` tag names
//! - no job at all (the tag is missing),
//! - a job the saga store does not know (its saga was lost, or it was made
//!   outside any saga),
//! - a job that ended: `Compensated`, `Deleted` or `Rejected`,
//! - a job that ended `Failed` with nothing left in its undo log (what a
//!   `delete` found left over).
//!
//! A job that is running, succeeded, degraded, being undone, or failed with
//! resources still in its undo log owns what carries its tag: `delete JOB`,
//! not the sweep, removes those.

use crate::saga::{JobStatus, ResourceKind, Saga};
use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;

/// One orphan, as `flotilla sweep` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Orphan {
    /// ARM id, secret id (URL without version) or blob URL.
    pub id: String,
    /// `arm`, `secret` or `blob`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// The `flotilla-job` tag, when there is one.
    pub job: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// Age when found (`3h05m`), when the plane says when it was created.
    pub age: Option<String>,
    pub age_seconds: Option<u64>,
    pub why: String,
    /// How it is deleted; `None` for a resource type flotilla never
    /// creates (left for a person to judge).
    #[serde(skip)]
    pub delete: Option<ResourceKind>,
}

/// Whether a job in `status` has ended for good: nothing of it may run again
/// (`Rejected`: refused by pre-flight before it created anything).
pub fn ended(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Compensated | JobStatus::Deleted | JobStatus::Rejected
    )
}

/// What the store says about a job a tag names.
#[derive(Clone, Copy, Debug)]
pub enum Known<'a> {
    /// No saga with this id.
    Unknown,
    /// A document exists but is not a readable saga: treated as live, never swept.
    Unreadable,
    Saga(&'a Saga),
}

/// Why something tagged `managed-by: flotilla` whose `flotilla-job` tag is
/// `job` is an orphan, or `None` when a live job owns it.
pub fn why_orphan(job: Option<&str>, known: Known<'_>) -> Option<String> {
    let Some(job) = job else {
        return Some("tagged managed-by: flotilla but has no flotilla-job tag".into());
    };
    match known {
        Known::Unknown => Some(format!("job {job} is unknown to the saga store")),
        Known::Unreadable => None,
        Known::Saga(s) if ended(s.status) => Some(format!("job {job} ended {:?}", s.status)),
        Known::Saga(s)
            if s.status == JobStatus::Failed
                && s.pending.is_none()
                && s.live_resources().next().is_none() =>
        {
            Some(format!(
                "job {job} ended Failed with nothing left in its undo log (left over)"
            ))
        }
        Known::Saga(_) => None,
    }
}

/// The order deletion goes in, by ARM type: the reverse of the order the
/// steps create them (`creation` lists types in creation order), so a scale
/// set goes before the load balancer, the public IP before... and NSGs last.
/// Secrets and blobs depend on nothing and go first (rank 0); ARM types rank
/// from 1. `None` for a type flotilla never creates.
pub fn removal_rank(resource_type: Option<&str>, creation: &[String]) -> Option<usize> {
    let Some(ty) = resource_type else {
        return Some(0);
    };
    let pos = creation.iter().position(|t| t.eq_ignore_ascii_case(ty))?;
    Some(creation.len() - pos)
}

/// Parses `90s`, `15m`, `2h`, `7d`, `1h30m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a duration (use e.g. 0, 90s, 15m, 2h, 7d or 1h30m)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A short human age: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::{ResourceRecord, ResourceState, StepName};
    use crate::spec::ClusterSpec;

    fn saga(status: JobStatus) -> Saga {
        let mut s = Saga::new(
            "demo-abc123".into(),
            ClusterSpec::example(),
            OffsetDateTime::UNIX_EPOCH,
        );
        s.status = status;
        s
    }

    #[test]
    fn a_live_job_owns_its_resources_and_an_ended_one_does_not() {
        for status in [
            JobStatus::Running,
            JobStatus::Succeeded,
            JobStatus::Compensating,
            JobStatus::Deleting,
            JobStatus::Degraded,
        ] {
            let s = saga(status);
            assert_eq!(
                why_orphan(Some("demo-abc123"), Known::Saga(&s)),
                None,
                "{status:?}"
            );
        }
        for status in [JobStatus::Compensated, JobStatus::Deleted] {
            let s = saga(status);
            let why = why_orphan(Some("demo-abc123"), Known::Saga(&s)).expect("orphan");
            assert!(why.contains(&format!("{status:?}")), "{why}");
        }
        assert!(why_orphan(Some("x-000000"), Known::Unknown)
            .unwrap()
            .contains("unknown to the saga store"));
        assert!(why_orphan(None, Known::Unknown)
            .unwrap()
            .contains("no flotilla-job tag"));
        assert_eq!(why_orphan(Some("x-000000"), Known::Unreadable), None);
    }

    #[test]
    fn a_failed_job_owns_what_its_undo_log_still_holds() {
        let mut s = saga(JobStatus::Failed);
        s.resources.push(ResourceRecord {
            id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v"
                .into(),
            step: StepName::Prereqs,
            kind: ResourceKind::Arm {
                api_version: "2024-05-01".into(),
            },
            state: ResourceState::Created,
            reopened: 0,
        });
        assert_eq!(why_orphan(Some("demo-abc123"), Known::Saga(&s)), None);
        s.resources[0].state = ResourceState::Deleted;
        let why = why_orphan(Some("demo-abc123"), Known::Saga(&s)).unwrap();
        assert!(why.contains("left over"), "{why}");
    }

    #[test]
    fn removal_goes_in_reverse_creation_order_with_secrets_and_blobs_first() {
        let creation: Vec<String> = [
            "Microsoft.Network/networkSecurityGroups",
            "Microsoft.Network/virtualNetworks",
            "Microsoft.Network/publicIPAddresses",
            "Microsoft.Network/loadBalancers",
            "Microsoft.Compute/virtualMachineScaleSets",
        ]
        .map(String::from)
        .to_vec();
        let rank = |t: &str| removal_rank(Some(t), &creation).unwrap();
        assert!(
            rank("microsoft.compute/virtualmachinescalesets")
                < rank("Microsoft.Network/loadBalancers")
        );
        assert!(
            rank("Microsoft.Network/loadBalancers") < rank("Microsoft.Network/publicIPAddresses")
        );
        assert!(
            rank("Microsoft.Network/publicIPAddresses") < rank("Microsoft.Network/virtualNetworks")
        );
        assert!(
            rank("Microsoft.Network/virtualNetworks")
                < rank("Microsoft.Network/networkSecurityGroups")
        );
        assert_eq!(removal_rank(None, &creation), Some(0));
        assert_eq!(removal_rank(Some("Microsoft.Sql/servers"), &creation), None);
    }

    #[test]
    fn durations_parse_and_ages_print() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "h", "10x", "5m3", "-1s", "1.5h"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("not a duration"), "{bad}: {e}");
        }
        assert_eq!(format_age(Duration::from_secs(45)), "45s");
        assert_eq!(format_age(Duration::from_secs(725)), "12m");
        assert_eq!(format_age(Duration::from_secs(3600 * 3 + 300)), "3h05m");
        assert_eq!(
            format_age(Duration::from_secs(86_400 * 2 + 3600 * 4)),
            "2d04h"
        );
    }
}
