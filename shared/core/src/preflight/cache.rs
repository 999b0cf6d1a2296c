//! The reads pre-flights share. A location's VM-size catalog and a resource
//! group's VNets are as large as what the subscription or the group holds,
//! so reading them for every job made each job's pre-flight cost grow with
//! the jobs already there; jobs that follow each other closely share one
//! read instead.
//!
//! # Guarantees
//! - A job is refused for a VNet overlap only on a listing made for it: a
//!   shared listing can let a job pass, never refuse it, so a VNet deleted
//!   since it was read refuses nothing.
//! - The VNet of a job that passed pre-flight here counts from that moment
//!   (for [`PASSED_VNET_TTL`]), before it exists and whatever listing is
//!   shared: jobs this process admits see each other as soon as their VNets
//!   exist, as they did with a listing per job.
//! - A group is refused as missing, or the caller as not permitted on it,
//!   only on a read made for the job: only reads that found the group, or
//!   every action permitted, are shared (for [`GROUP_CHECK_TTL`]).
//!
//! # Caveats
//! A group deleted, or a permission taken away, within [`GROUP_CHECK_TTL`]
//! of a shared read lets a job pass pre-flight; its first write in the group
//! is then refused (`ResourceGroupNotFound`, `AuthorizationFailed`: terminal
//! errors that compensate).
//!
//! A VNet created by anything else (the portal, another instance of the
//! app) is seen once the shared listing is older than [`VNET_LISTING_TTL`];
//! a job pre-flighted in between passes although it overlaps it (Azure
//! accepts overlapping VNets that are not peered). A VM size withdrawn
//! within [`SKU_CATALOG_TTL`] is refused by the scale set's PUT instead
//! (`SkuNotAvailable`, a terminal error that compensates).

use super::{check_vnets, cidr_range, Problem};
use crate::engine::Engine;
use crate::ports::ResourceSku;
use crate::spec::ClusterSpec;
use flotilla_azure::{AzureError, ResourceId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use time::{Duration, OffsetDateTime};

/// How long a location's VM-size catalog is reused before it is read again.
pub const SKU_CATALOG_TTL: Duration = Duration::minutes(10);

/// How long a resource group's VNet listing is shared by the pre-flights
/// that follow it.
pub const VNET_LISTING_TTL: Duration = Duration::seconds(10);

/// How long the VNet of a job that passed pre-flight counts without being
/// listed (its job creates it in `prereqs`, normally well within this).
pub const PASSED_VNET_TTL: Duration = Duration::minutes(10);

/// How long a resource group found present, or the caller found permitted
/// every action on it, is taken as such by the pre-flights that follow.
pub const GROUP_CHECK_TTL: Duration = Duration::seconds(30);

/// What the last reads of each resource group (lowercase name) found that
/// later pre-flights may take as read.
#[derive(Default)]
pub struct GroupCache(Mutex<HashMap<String, GroupChecks>>);

/// One of the group checks a pre-flight may share.
#[derive(Clone, Copy, Debug)]
pub(super) enum GroupCheck {
    /// The group exists.
    Present,
    /// The caller's permissions on the group allow every action of the flow.
    Permitted,
}

/// When each check of one group last passed on a read.
#[derive(Default)]
struct GroupChecks {
    present: Option<OffsetDateTime>,
    permitted: Option<OffsetDateTime>,
}

impl GroupChecks {
    fn at(&mut self, check: GroupCheck) -> &mut Option<OffsetDateTime> {
        match check {
            GroupCheck::Present => &mut self.present,
            GroupCheck::Permitted => &mut self.permitted,
        }
    }
}

impl GroupCache {
    /// Whether `check` passed on a read of group `key` less than
    /// [`GROUP_CHECK_TTL`] before `now`.
    pub(super) fn passed(&self, key: &str, now: OffsetDateTime, check: GroupCheck) -> bool {
        lock(&self.0)
            .get_mut(key)
            .and_then(|g| *g.at(check))
            .is_some_and(|at| now - at < GROUP_CHECK_TTL)
    }

    /// Notes that `check` passed on a read of group `key` made at `now`.
    pub(super) fn pass(&self, key: &str, now: OffsetDateTime, check: GroupCheck) {
        *lock(&self.0).entry(key.to_string()).or_default().at(check) = Some(now);
    }
}

/// The VM-size catalog of each location as last read, with when.
#[derive(Default)]
pub struct SkuCache(Mutex<HashMap<String, CachedSkus>>);

/// A catalog and when it was read.
type CachedSkus = (OffsetDateTime, Arc<Vec<ResourceSku>>);

/// The VNets of each resource group (lowercase name) as pre-flight knows them.
#[derive(Default)]
pub struct VnetCache(Mutex<HashMap<String, GroupVnets>>);

/// One VNet: lowercase id and the address ranges of its readable prefixes.
type VnetRanges = (String, Vec<(u32, u32)>);

/// What pre-flight knows of one group's VNets.
#[derive(Default)]
struct GroupVnets {
    /// The last listing and when it was made.
    listed: Option<(OffsetDateTime, RangeIndex)>,
    /// VNets of jobs that passed pre-flight.
    passed: RangeIndex,
    /// When each of `passed` passed, oldest first, to let it go after
    /// [`PASSED_VNET_TTL`].
    passed_at: VecDeque<(OffsetDateTime, RangeKey)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where [`RangeIndex`] keeps a range: its first address and an insertion
/// number (ranges may share a first address).
type RangeKey = (u32, u64);

/// Address ranges, each with its VNet's lowercase id, ordered by first
/// address, so that a pre-flight reads the few ranges near its own instead
/// of every VNet in the group (a group holding thousands of clusters made
/// each pre-flight cost grow with them).
#[derive(Default)]
struct RangeIndex {
    by_start: BTreeMap<RangeKey, (u32, Arc<str>)>,
    /// The size of the widest range held so far: no range starting further
    /// below a query than this can reach it.
    widest: u32,
    next: u64,
}

impl RangeIndex {
    fn insert(&mut self, (first, last): (u32, u32), vnet: Arc<str>) -> RangeKey {
        let key = (first, self.next);
        self.next += 1;
        self.widest = self.widest.max(last.saturating_sub(first));
        self.by_start.insert(key, (last, vnet));
        key
    }

    fn remove(&mut self, key: RangeKey) {
        self.by_start.remove(&key);
    }

    /// Whether a range of a VNet other than `own` shares an address with `range`.
    fn overlaps_other(&self, (first, last): (u32, u32), own: &str) -> bool {
        let from = (first.saturating_sub(self.widest), 0);
        self.by_start
            .range(from..=(last, u64::MAX))
            .any(|(_, (end, vnet))| *end >= first && &**vnet != own)
    }
}

impl VnetCache {
    /// Whether a fresh shared listing of group `key`, with the VNets of the
    /// jobs passed since, shows no VNet but `own` overlapping `range`.
    /// `false` when there is no fresh listing.
    fn clear(&self, key: &str, now: OffsetDateTime, range: (u32, u32), own: &str) -> bool {
        let mut groups = lock(&self.0);
        let Some(group) = groups.get_mut(key) else {
            return false;
        };
        while let Some(&(at, passed)) = group.passed_at.front() {
            if now - at < PASSED_VNET_TTL {
                break;
            }
            group.passed.remove(passed);
            group.passed_at.pop_front();
        }
        let Some((read, listed)) = &group.listed else {
            return false;
        };
        if now - *read >= VNET_LISTING_TTL {
            return false;
        }
        !listed.overlaps_other(range, own) && !group.passed.overlaps_other(range, own)
    }

    /// Keeps `vnets` as group `key`'s listing made at `now`.
    fn store(&self, key: String, now: OffsetDateTime, vnets: Vec<VnetRanges>) {
        let mut listed = RangeIndex::default();
        for (id, ranges) in vnets {
            let id: Arc<str> = Arc::from(id);
            for range in ranges {
                listed.insert(range, id.clone());
            }
        }
        lock(&self.0).entry(key).or_default().listed = Some((now, listed));
    }

    /// Counts `vnet` in group `key` from `now` on.
    fn pass(&self, key: String, now: OffsetDateTime, (id, ranges): VnetRanges) {
        let mut groups = lock(&self.0);
        let group = groups.entry(key).or_default();
        let id: Arc<str> = Arc::from(id);
        for range in ranges {
            let passed = group.passed.insert(range, id.clone());
            group.passed_at.push_back((now, passed));
        }
    }
}

impl Engine {
    /// The VM sizes offered in `location`, from the cache while it is fresh.
    pub(super) async fn resource_skus(
        &self,
        location: &str,
    ) -> Result<Arc<Vec<ResourceSku>>, AzureError> {
        let key = location.to_ascii_lowercase();
        let now = self.clock.now();
        let cached = lock(&self.skus.0)
            .get(&key)
            .filter(|(read, _)| now - *read < SKU_CATALOG_TTL)
            .map(|(_, skus)| skus.clone());
        if let Some(skus) = cached {
            return Ok(skus);
        }
        let skus = Arc::new(self.azure.arm.resource_skus(location).await?);
        lock(&self.skus.0).insert(key, (now, skus.clone()));
        Ok(skus)
    }

    /// [`check_vnets`]' problems for `spec` whose VNet is `own`: none when
    /// the shared listing shows nothing in the way; otherwise (or with no
    /// fresh listing) the group is listed again and judged on that.
    pub(super) async fn vnet_problems(
        &self,
        spec: &ClusterSpec,
        own: &ResourceId,
    ) -> Result<Vec<Problem>, AzureError> {
        let Some(range) = cidr_range(&spec.network.vnet_cidr) else {
            // An unreadable range overlaps nothing (validation refuses it first).
            return Ok(vec![]);
        };
        let key = spec.resource_group.to_ascii_lowercase();
        let own_lc = own.to_string().to_ascii_lowercase();
        let now = self.clock.now();
        if self.vnets.clear(&key, now, range, &own_lc) {
            return Ok(vec![]);
        }
        let vnets: Vec<(String, Vec<String>)> = self
            .azure
            .arm
            .list_vnets(&spec.resource_group)
            .await?
            .into_iter()
            .filter(|v| !v.id.is_empty())
            .map(|v| (v.id, v.prefixes))
            .collect();
        let problems = check_vnets(spec, own, &vnets);
        let ranges = vnets
            .into_iter()
            .map(|(id, prefixes)| {
                let ranges = prefixes.iter().filter_map(|p| cidr_range(p)).collect();
                (id.to_ascii_lowercase(), ranges)
            })
            .collect();
        self.vnets.store(key, now, ranges);
        Ok(problems)
    }

    /// Counts the VNet `own` of a job that passed pre-flight from now on.
    pub(super) fn vnet_passed(&self, spec: &ClusterSpec, own: &ResourceId) {
        if let Some(range) = cidr_range(&spec.network.vnet_cidr) {
            self.vnets.pass(
                spec.resource_group.to_ascii_lowercase(),
                self.clock.now(),
                (own.to_string().to_ascii_lowercase(), vec![range]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(cidr: &str) -> (u32, u32) {
        cidr_range(cidr).expect("a CIDR")
    }

    #[test]
    fn a_range_index_finds_every_overlap_and_only_overlaps() {
        let mut index = RangeIndex::default();
        let a: Arc<str> = Arc::from("a");
        index.insert(range("10.1.0.0/16"), a.clone());
        index.insert(range("10.3.4.0/24"), Arc::from("b"));
        // Inside, around, and at either edge of a held range.
        assert!(index.overlaps_other(range("10.1.2.0/24"), "x"));
        assert!(index.overlaps_other(range("10.0.0.0/8"), "x"));
        assert!(index.overlaps_other(range("10.1.255.255/32"), "x"));
        assert!(index.overlaps_other(range("10.3.4.128/25"), "x"));
        // Beside them.
        assert!(!index.overlaps_other(range("10.2.0.0/16"), "x"));
        assert!(!index.overlaps_other(range("10.3.5.0/24"), "x"));
        assert!(!index.overlaps_other(range("10.0.255.0/24"), "x"));
        // The job's own VNet is not in its way.
        assert!(!index.overlaps_other(range("10.1.0.0/16"), "a"));
        // A wide range starting far below a query still reaches it.
        let wide = index.insert(range("172.16.0.0/12"), Arc::from("c"));
        assert!(index.overlaps_other(range("172.31.255.0/24"), "x"));
        index.remove(wide);
        assert!(!index.overlaps_other(range("172.31.255.0/24"), "x"));
        assert!(
            index.overlaps_other(range("10.1.0.0/16"), "b")
                && !index.overlaps_other(range("10.1.0.0/16"), "a")
        );
    }

    #[test]
    fn a_passed_vnet_counts_until_its_ttl_and_not_after() {
        let cache = VnetCache::default();
        let t0 = OffsetDateTime::UNIX_EPOCH;
        cache.store(
            "rg".into(),
            t0,
            vec![("listed".into(), vec![range("10.0.0.0/16")])],
        );
        cache.pass(
            "rg".into(),
            t0,
            ("passed".into(), vec![range("10.9.0.0/16")]),
        );
        assert!(!cache.clear("rg", t0, range("10.9.1.0/24"), "mine"));
        assert!(cache.clear("rg", t0, range("10.9.1.0/24"), "passed"));
        assert!(!cache.clear("rg", t0, range("10.0.0.0/24"), "mine"));
        // The listing is stale after its TTL: nothing is taken as clear.
        assert!(!cache.clear("rg", t0 + VNET_LISTING_TTL, range("10.7.0.0/16"), "mine"));
        // A fresh listing after the passed VNet's TTL: it no longer counts.
        let later = t0 + PASSED_VNET_TTL;
        cache.store("rg".into(), later, vec![]);
        assert!(cache.clear("rg", later, range("10.9.1.0/24"), "mine"));
    }
}
