//! Everything the simulator remembers, and how it is saved to and loaded from disk.
//!
//! State lives in memory; with a data directory every change is also written to
//! `state.db` (SQLite, one row per resource, operation, secret, container and token).
//! The maps remember which keys changed, so a save writes only those rows: a write costs
//! what it changes, not the size of the whole state. A `state.json` from an older
//! simulator is read once and migrated.

use crate::doc::Doc;
use crate::util::{now_ms, random_token};
use crate::SimError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{hash_map, BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The older whole-state file, migrated on first start.
const STATE_FILE: &str = "state.json";
/// The database the state is saved in.
pub(crate) const DB_FILE: &str = "state.db";

/// What the simulator looks values up by and adds up over them, kept
/// current as values change so that neither needs a scan of the map.
pub(crate) trait Indexed {
    /// The index entries that name this value (e.g. `type:{rtype}`).
    fn index_keys(&self) -> Vec<String> {
        vec![]
    }
    /// What this value adds to each running total it counts in.
    fn tally(&self) -> Vec<(String, u64)> {
        vec![]
    }
    /// Whether a change to this value is announced to watchers
    /// ([`Tracked::take_watched`]).
    fn watched(&self) -> bool {
        false
    }
    /// The name a `substringof` listing matches against, when there is one
    /// ([`Tracked::named_like`]). It must not change while the key lives.
    fn searchable_name(&self) -> Option<&str> {
        None
    }
}

/// Which keys' names hold each run of three bytes (ASCII case folded), so
/// that a name-fragment listing reads the few names that can hold the
/// fragment instead of every name in the map. Runs list keys by a small
/// slot number (a key is hashed once per change, not once per run).
#[derive(Debug, Default, Clone)]
pub(crate) struct NameGrams {
    /// Keyed by the run's three bytes as a number ([`NameGrams::grams`]).
    postings: HashMap<u32, HashSet<u32, BuildSlotHasher>, BuildSlotHasher>,
    /// The slot of each indexed key.
    slots: HashMap<Arc<str>, u32, KeyHasher>,
    /// The key in each slot; `None` when free.
    keys: Vec<Option<Arc<str>>>,
    free: Vec<u32>,
}

/// Hashes a slot number (or a three-byte run) by one multiplication: they
/// are small, and not chosen by anyone outside.
#[derive(Debug, Default, Clone, Copy)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type BuildSlotHasher = std::hash::BuildHasherDefault<SlotHasher>;

impl NameGrams {
    /// The distinct three-byte runs of `text`, lower-cased, each as a number.
    fn grams(text: &str) -> Vec<u32> {
        let mut grams: Vec<u32> = text
            .as_bytes()
            .windows(3)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], 0].map(|b| b.to_ascii_lowercase())))
            .collect();
        grams.sort_unstable();
        grams.dedup();
        grams
    }
    fn add(&mut self, key: &str, name: &str) {
        let slot = match self.slots.get(key) {
            Some(&slot) => slot,
            None => {
                let key: Arc<str> = Arc::from(key);
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.keys[slot as usize] = Some(key.clone());
                        slot
                    }
                    None => {
                        self.keys.push(Some(key.clone()));
                        (self.keys.len() - 1) as u32
                    }
                };
                self.slots.insert(key, slot);
                slot
            }
        };
        for g in Self::grams(name) {
            self.postings.entry(g).or_default().insert(slot);
        }
    }
    fn remove(&mut self, key: &str, name: &str) {
        let Some(slot) = self.slots.remove(key) else {
            return;
        };
        self.keys[slot as usize] = None;
        self.free.push(slot);
        for g in Self::grams(name) {
            if let Some(slots) = self.postings.get_mut(&g) {
                slots.remove(&slot);
                if slots.is_empty() {
                    self.postings.remove(&g);
                }
            }
        }
    }
    /// Keys whose names may hold `fragment`: a superset of those that do,
    /// or `None` when the fragment is too short to narrow anything.
    fn candidates(&self, fragment: &str) -> Option<Vec<&str>> {
        let grams = Self::grams(fragment);
        if grams.is_empty() {
            return None;
        }
        let fewest = grams
            .iter()
            .map(|g| self.postings.get(g))
            .min_by_key(|slots| slots.map_or(0, HashSet::len))?;
        Some(
            fewest
                .into_iter()
                .flatten()
                .filter_map(|&slot| self.keys.get(slot as usize)?.as_deref())
                .collect(),
        )
    }
}

/// How [`Tracked`] hashes its keys (ARM ids of a hundred bytes that share
/// their first seventy, which an ordered map compares again at every level)
/// and the names of its indexes and totals.
type KeyHasher = foldhash::fast::RandomState;

/// A map that remembers which keys changed since the last save. Lookups go by
/// the key's hash; the few listings that want key order sort what they list
/// (each is a walk over the map anyway), so that no insert pays for an
/// ordered set of a hundred thousand keys. Every method that can change an
/// entry marks its key and keeps the [`Indexed`] index and totals current (a
/// mutable borrow re-indexes its value when it ends).
#[derive(Debug)]
pub(crate) struct Tracked<V> {
    map: HashMap<String, V, KeyHasher>,
    dirty: BTreeSet<String>,
    /// Whether changed keys are remembered for a save (not when nothing saves).
    saving: bool,
    /// Keys by index name; unordered (a listing sorts the few it reads, so
    /// that no insert pays for an ordered set of every key of a type).
    index: HashMap<String, HashSet<String, KeyHasher>, KeyHasher>,
    totals: HashMap<String, u64, KeyHasher>,
    /// Keys of watched values changed since the last `take_watched`.
    watched: BTreeSet<String>,
    /// Raised with every key added to `watched` ([`Tracked::watch_signal`]).
    watch_signal: Arc<AtomicBool>,
    /// The values' [`Indexed::searchable_name`]s, by three-byte run.
    grams: NameGrams,
}

impl<V: Clone> Clone for Tracked<V> {
    fn clone(&self) -> Self {
        Tracked {
            map: self.map.clone(),
            dirty: self.dirty.clone(),
            saving: self.saving,
            index: self.index.clone(),
            totals: self.totals.clone(),
            watched: self.watched.clone(),
            watch_signal: Default::default(),
            grams: self.grams.clone(),
        }
    }
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            map: HashMap::default(),
            dirty: BTreeSet::new(),
            saving: true,
            index: HashMap::default(),
            totals: HashMap::default(),
            watched: BTreeSet::new(),
            watch_signal: Default::default(),
            grams: NameGrams::default(),
        }
    }
}

impl<V> Tracked<V> {
    pub fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }
    pub fn contains_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// The entries in key order (sorted for the call).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> + '_ {
        sorted(self.map.iter())
    }
    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }
    /// The entries whose keys start with `prefix`, in key order: a test of
    /// each key (about a millisecond over 100,000), and a sort of those found.
    pub fn with_prefix(&self, prefix: String) -> impl Iterator<Item = (&String, &V)> {
        sorted(self.map.iter().filter(move |(k, _)| k.starts_with(&prefix)))
    }
    /// Stops remembering changed keys: nothing will save them.
    pub fn stop_saving(&mut self) {
        self.saving = false;
        self.dirty.clear();
    }
    fn mark(&mut self, key: &str) {
        if self.saving && !self.dirty.contains(key) {
            self.dirty.insert(key.to_string());
        }
    }
}

/// A mutable borrow of one entry; the entry is indexed again when it ends.
pub(crate) struct EntryMut<'a, V: Indexed> {
    tracked: &'a mut Tracked<V>,
    key: String,
    /// What the entry was indexed and counted under when the borrow began.
    before: Placement,
}

/// The index entries and running totals one value is counted under.
type Placement = (Vec<String>, Vec<(String, u64)>);

impl<V: Indexed> std::ops::Deref for EntryMut<'_, V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.tracked.map[&self.key]
    }
}

impl<V: Indexed> std::ops::DerefMut for EntryMut<'_, V> {
    fn deref_mut(&mut self) -> &mut V {
        self.tracked
            .map
            .get_mut(&self.key)
            .expect("an EntryMut's key is present while it lives")
    }
}

impl<V: Indexed> Drop for EntryMut<'_, V> {
    fn drop(&mut self) {
        let after = {
            let v = &self.tracked.map[&self.key];
            (v.index_keys(), v.tally())
        };
        let before = std::mem::take(&mut self.before);
        self.tracked.replace_placement(&self.key, before, after);
    }
}

impl<V: Indexed> Tracked<V> {
    /// The entries the index names `name` under, in key order.
    pub fn indexed<'a>(&'a self, name: &str) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
        sorted(
            self.index
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|k| self.map.get_key_value(k)),
        )
    }
    /// The entries whose [`Indexed::searchable_name`] holds `fragment`
    /// (ASCII case ignored), in key order, read through the name index; `None`
    /// when the fragment is shorter than three bytes, too short to narrow anything.
    pub fn named_like<'a>(&'a self, fragment: &str) -> Option<Vec<(&'a String, &'a V)>> {
        let lower = fragment.to_ascii_lowercase();
        let mut out: Vec<(&String, &V)> = self
            .grams
            .candidates(&lower)?
            .into_iter()
            .filter_map(|k| self.map.get_key_value(k))
            .filter(|(_, v)| {
                v.searchable_name()
                    .is_some_and(|n| contains_ignoring_case(n, &lower))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Some(out)
    }
    /// The running total `name` over every value.
    pub fn total(&self, name: &str) -> u64 {
        self.totals.get(name).copied().unwrap_or(0)
    }
    /// A flag raised whenever a watched value changes, for whoever reacts
    /// to such changes and does not want to take the lock around this map
    /// to learn of them; lowering it is theirs to do.
    pub fn watch_signal(&self) -> Arc<AtomicBool> {
        self.watch_signal.clone()
    }
    fn watch(&mut self, key: &str) {
        if !self.watched.contains(key) {
            self.watched.insert(key.to_string());
        }
        self.watch_signal.store(true, Ordering::Release);
    }
    /// The keys of watched values (see [`Indexed::watched`]) inserted,
    /// changed or removed since the last call.
    pub fn take_watched(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.watched)
    }
    fn add(&mut self, key: &str, index: Vec<String>, tally: Vec<(String, u64)>) {
        for name in index {
            self.index.entry(name).or_default().insert(key.to_string());
        }
        for (name, n) in tally {
            *self.totals.entry(name).or_default() += n;
        }
    }
    /// Moves `key` from the index entries and totals of `before` to those of
    /// `after`, touching only what differs: most changes (a state, an
    /// operation) leave a value where it was counted.
    fn replace_placement(&mut self, key: &str, before: Placement, after: Placement) {
        let ((old_index, old_tally), (index, tally)) = (before, after);
        if old_index != index {
            let gone: Vec<String> = old_index
                .iter()
                .filter(|n| !index.contains(n))
                .cloned()
                .collect();
            let came: Vec<String> = index
                .into_iter()
                .filter(|n| !old_index.contains(n))
                .collect();
            self.sub(key, gone, vec![]);
            self.add(key, came, vec![]);
        }
        if old_tally != tally {
            self.sub(key, vec![], old_tally);
            self.add(key, vec![], tally);
        }
    }
    fn sub(&mut self, key: &str, index: Vec<String>, tally: Vec<(String, u64)>) {
        for name in index {
            if let Some(keys) = self.index.get_mut(&name) {
                keys.remove(key);
                if keys.is_empty() {
                    self.index.remove(&name);
                }
            }
        }
        for (name, n) in tally {
            if let Some(t) = self.totals.get_mut(&name) {
                *t = t.saturating_sub(n);
            }
        }
    }
    /// Inserts without marking the key changed (loading saved state).
    fn load(&mut self, key: String, value: V) -> Option<V> {
        let (index, tally) = (value.index_keys(), value.tally());
        // The stored value, borrowed from the one lookup that placed it.
        let (old, stored) = match self.map.entry(key.clone()) {
            hash_map::Entry::Vacant(e) => (None, &*e.insert(value)),
            hash_map::Entry::Occupied(e) => {
                let slot = e.into_mut();
                (Some(std::mem::replace(slot, value)), &*slot)
            }
        };
        let old_name = old.as_ref().and_then(V::searchable_name);
        let name = stored.searchable_name();
        if old_name != name {
            if let Some(n) = old_name {
                self.grams.remove(&key, n);
            }
            if let Some(n) = name {
                self.grams.add(&key, n);
            }
        }
        match &old {
            Some(old) => {
                let before = (old.index_keys(), old.tally());
                self.replace_placement(&key, before, (index, tally));
            }
            None => self.add(&key, index, tally),
        }
        old
    }
    /// Mutable access to an indexed entry (marked changed), re-indexed when
    /// the borrow ends.
    pub fn edit(&mut self, key: &str) -> Option<EntryMut<'_, V>> {
        let (index, tally, watched) = self
            .map
            .get(key)
            .map(|v| (v.index_keys(), v.tally(), v.watched()))?;
        self.mark(key);
        if watched {
            self.watch(key);
        }
        Some(EntryMut {
            tracked: self,
            key: key.to_string(),
            before: (index, tally),
        })
    }
    /// Inserts or replaces an entry.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.mark(&key);
        let watched = value.watched() || self.map.get(&key).is_some_and(V::watched);
        if watched {
            self.watch(&key);
        }
        self.load(key, value)
    }
    /// Removes an entry.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let v = self.map.remove(key);
        if let Some(v) = &v {
            self.mark(key);
            if v.watched() {
                self.watch(key);
            }
            self.sub(key, v.index_keys(), v.tally());
            if let Some(n) = v.searchable_name() {
                self.grams.remove(key, n);
            }
        }
        v
    }
    /// Keeps the entries `keep` accepts; the others are removed (and marked).
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &V) -> bool) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }
    /// Marks every entry changed (the next save writes them all).
    pub fn mark_all(&mut self) {
        if self.saving {
            self.dirty = self.map.keys().cloned().collect();
        }
    }
    /// The changed keys, each with its current value (`None` when removed), serialised.
    fn take_changes(&mut self, kind: &'static str, out: &mut Vec<Change>)
    where
        V: Serialize,
    {
        for k in std::mem::take(&mut self.dirty) {
            let value = self.map.get(&k).and_then(|v| serde_json::to_string(v).ok());
            out.push((kind, k, value));
        }
    }
}

/// Values that are never indexed, so they may be changed in place.
pub(crate) trait Unindexed: Indexed {}

impl<V: Unindexed> Tracked<V> {
    /// Mutable access to an entry (marked changed).
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        if self.map.contains_key(key) {
            self.mark(key);
        }
        self.map.get_mut(key)
    }
    /// The entry for `key` (marked changed), made by `make` if there is none.
    pub fn get_or_insert_with(&mut self, key: String, make: impl FnOnce() -> V) -> &mut V {
        self.mark(&key);
        match self.map.entry(key) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(e) => e.insert(make()),
        }
    }
}

impl<V: Serialize> Serialize for Tracked<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, V: Deserialize<'de> + Indexed> Deserialize<'de> for Tracked<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut t = Tracked::default();
        for (k, v) in BTreeMap::<String, V>::deserialize(d)? {
            t.load(k, v);
        }
        Ok(t)
    }
}

/// `entries` in key order.
fn sorted<'a, V: 'a>(
    entries: impl Iterator<Item = (&'a String, &'a V)>,
) -> std::vec::IntoIter<(&'a String, &'a V)> {
    let mut all: Vec<_> = entries.collect();
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    all.into_iter()
}

/// Whether `hay` holds `lower` (already lower-case), ignoring ASCII case.
pub(crate) fn contains_ignoring_case(hay: &str, lower: &str) -> bool {
    let (hay, lower) = (hay.as_bytes(), lower.as_bytes());
    lower.is_empty()
        || hay.windows(lower.len()).any(|w| {
            w.iter()
                .zip(lower)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        })
}

/// One changed row: (kind, key, serialised value or `None` when removed).
pub(crate) type Change = (&'static str, String, Option<String>);

/// Credentials generated once per data directory.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Creds {
    pub client_id: String,
    pub client_secret: String,
    pub identity_header: String,
    /// Client id of the system-assigned managed identity.
    pub msi_client_id: String,
}

/// An issued access token.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct TokenInfo {
    /// Audience without trailing slash, e.g. `https://management.azure.com`.
    pub audience: String,
    pub principal: String,
    /// Expiry, epoch seconds.
    pub expires: i64,
}

/// Where a VMSS's instances are in their boot.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub(crate) struct Boot {
    /// Instances that finished booting before the current round started.
    pub booted: u32,
    /// Instance count of the current model.
    pub target: u32,
    /// When the current round of instances finishes booting (epoch ms).
    pub ready_at_ms: i64,
    /// Per extension: (name, error message when the script fetch failed).
    pub extensions: Vec<(String, Option<String>)>,
}

/// An ARM resource (or resource group / role assignment).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Resource {
    /// Canonical id (casing of the first PUT).
    pub id: String,
    /// Full ARM type, e.g. `Microsoft.Network/virtualNetworks`.
    pub rtype: String,
    pub name: String,
    /// Resource group name (lowercase) or empty for subscription-level things.
    pub rg: String,
    /// The stored model as PUT, plus server-computed fields (secrets included; stripped on output).
    pub body: Doc,
    /// `Creating`, `Updating`, `Deleting`, `Succeeded`, `Failed`.
    pub state: String,
    /// The operation that currently drives `state`.
    pub op: Option<String>,
    pub etag: String,
    /// Storage account keys (key1, key2).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub boot: Option<Boot>,
    /// When it was first created (epoch ms; ARM's `createdTime`).
    #[serde(default)]
    pub created_ms: i64,
}

/// The index entry of resources of ARM type `rtype`.
pub(crate) fn type_index(rtype: &str) -> String {
    format!("type:{}", rtype.to_ascii_lowercase())
}

/// The index entry of the resource whose managed identity is `principal_id`.
pub(crate) fn principal_index(principal_id: &str) -> String {
    format!("principal:{}", principal_id.to_ascii_lowercase())
}

/// The index entry of the role assignments made to `principal_id`.
pub(crate) fn assignee_index(principal_id: &str) -> String {
    format!("assignee:{}", principal_id.to_ascii_lowercase())
}

/// The index entry of the user-assigned identity whose client id is `client_id`.
pub(crate) fn client_index(client_id: &str) -> String {
    format!("client:{}", client_id.to_ascii_lowercase())
}

/// The index entry of the scale sets named `name` (any casing; VM
/// identities name their scale set, not its id).
pub(crate) fn scale_set_index(name: &str) -> String {
    format!("scaleset:{}", name.to_ascii_lowercase())
}

/// The running total of usage `name` (`cores`, a VM family,
/// `virtualMachines`, `virtualMachineScaleSets`) in normalized `location`.
pub(crate) fn usage_total(location: &str, name: &str) -> String {
    format!("usage:{location}:{name}")
}

#[cfg(test)]
impl Resource {
    /// A resource that exists and is settled, named by its id's last
    /// segment (unit tests).
    pub fn settled(id: &str, rtype: &str, body: serde_json::Value) -> Resource {
        Resource {
            id: id.into(),
            rtype: rtype.into(),
            name: id.rsplit('/').next().unwrap_or(id).into(),
            rg: String::new(),
            body: body.into(),
            state: "Succeeded".into(),
            op: None,
            etag: String::new(),
            keys: vec![],
            boot: None,
            created_ms: 0,
        }
    }
}

impl Indexed for Resource {
    fn index_keys(&self) -> Vec<String> {
        let mut keys = vec![type_index(&self.rtype)];
        let at = |pointer: &str| self.body.pointer(pointer).and_then(Doc::as_str);
        if let Some(p) = at("/identity/principalId") {
            keys.push(principal_index(p));
        }
        if self.rtype.eq_ignore_ascii_case(crate::arm::RA_TYPE) {
            keys.extend(at("/properties/principalId").map(assignee_index));
        }
        if self.rtype.eq_ignore_ascii_case(crate::arm::VMSS_TYPE) {
            keys.push(scale_set_index(&self.name));
        }
        if self
            .rtype
            .eq_ignore_ascii_case(crate::arm::identity::UAI_TYPE)
        {
            keys.extend(at("/properties/principalId").map(principal_index));
            keys.extend(at("/properties/clientId").map(client_index));
        }
        keys
    }
    /// Role assignments are never listed by name (their names are GUIDs).
    fn searchable_name(&self) -> Option<&str> {
        (!self.rtype.eq_ignore_ascii_case(crate::arm::RA_TYPE)).then_some(self.name.as_str())
    }
    /// Scale sets: the boot agent acts on their changes.
    fn watched(&self) -> bool {
        self.rtype.eq_ignore_ascii_case(crate::arm::VMSS_TYPE)
    }
    fn tally(&self) -> Vec<(String, u64)> {
        crate::arm::compute::usage_of(self)
            .map(|(loc, amounts)| {
                amounts
                    .into_iter()
                    .map(|(name, n)| (usage_total(&loc, &name), n))
                    .collect()
            })
            .unwrap_or_default()
    }
}
impl Indexed for Operation {}
impl Indexed for Secret {}
impl Indexed for Container {}
impl Indexed for Blob {}
impl Indexed for TokenInfo {}
impl Unindexed for Operation {}
impl Unindexed for Secret {}
impl Unindexed for Container {}
impl Unindexed for Blob {}
impl Unindexed for TokenInfo {}

/// What an asynchronous operation does when it finishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Put,
    Patch,
    Delete,
}

/// A long-running operation, timed by wall clock.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Operation {
    pub id: String,
    pub kind: OpKind,
    /// Lowercase key of the resource it acts on.
    pub resource_key: String,
    pub start_ms: i64,
    pub duration_ms: i64,
    /// (http status, code, message) when the operation is to fail.
    pub fail: Option<(u16, String, String)>,
    /// Whether its effect on the resource has been applied.
    pub applied: bool,
}

impl Operation {
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.duration_ms
    }
    pub fn done(&self, now: i64) -> bool {
        now >= self.end_ms()
    }
}

/// One version of a Key Vault secret.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct SecretVersion {
    pub version: String,
    pub value: String,
    pub content_type: Option<String>,
    pub enabled: bool,
    pub created: i64,
    pub updated: i64,
    pub tags: BTreeMap<String, String>,
}

/// A Key Vault secret with its versions, possibly soft-deleted.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Secret {
    pub name: String,
    /// Vault URL the secret was created through (for ids in the inventory).
    pub vault: String,
    pub versions: Vec<SecretVersion>,
    /// Epoch seconds of the soft delete.
    pub deleted: Option<i64>,
}

/// A block blob.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Blob {
    pub name: String,
    /// The content (saved as base64, as older simulators saved it).
    pub data: crate::content::Content,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub etag: String,
    pub modified_ms: i64,
    /// Base URL the blob was written through (for ids in the inventory).
    pub base: String,
}

/// A blob container.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub(crate) struct Container {
    pub name: String,
    pub etag: String,
    pub modified_ms: i64,
    /// Saved as rows of their own, so writing a blob costs that blob.
    pub blobs: Tracked<Blob>,
}

/// The simulator's whole persisted state.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct State {
    pub creds: Creds,
    /// Key: lowercase resource id.
    pub resources: Tracked<Resource>,
    pub ops: Tracked<Operation>,
    /// Key: lowercase secret name.
    pub secrets: Tracked<Secret>,
    /// Key: `{account}/{container}`, lowercase.
    pub containers: Tracked<Container>,
    pub tokens: Tracked<TokenInfo>,
    /// Bumped on every save (a count of saves since start).
    #[serde(default)]
    pub generation: u64,
    /// The vault has purge protection: deleted secrets stay recoverable
    /// until their scheduled purge date and a purge is refused.
    #[serde(default)]
    pub purge_protection: bool,
    /// Unapplied operations by (end time, id); rebuilt on load.
    #[serde(skip)]
    pub pending: BTreeSet<(i64, String)>,
    /// Names (lowercase) of scale sets deleted since start: their VMs are gone.
    #[serde(skip)]
    pub deleted_scale_sets: std::collections::HashSet<String>,
    /// Whether changes go unremembered ([`State::stop_saving`]).
    #[serde(skip)]
    pub saves_nothing: bool,
    /// How many operations the next forgetting of old ones waits for
    /// (`arm::lro`); 0 until a try leaves too many.
    #[serde(skip)]
    pub ops_forget_at: usize,
}

impl State {
    /// The resources of ARM type `rtype` (any casing), without a scan.
    pub fn of_type<'a>(&'a self, rtype: &str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.indexed(&type_index(rtype)).map(|(_, r)| r)
    }

    /// The scale set named `name` (any casing; the first by id when groups
    /// hold one each), without a scan.
    pub fn scale_set(&self, name: &str) -> Option<&Resource> {
        self.resources
            .indexed(&scale_set_index(name))
            .map(|(_, r)| r)
            .next()
    }

    /// A new, empty state with freshly generated credentials.
    pub fn fresh() -> State {
        State {
            creds: Creds {
                client_id: uuid::Uuid::new_v4().to_string(),
                client_secret: random_token(32),
                identity_header: random_token(24),
                msi_client_id: uuid::Uuid::new_v4().to_string(),
            },
            resources: Tracked::default(),
            ops: Tracked::default(),
            secrets: Tracked::default(),
            containers: Tracked::default(),
            tokens: Tracked::default(),
            generation: 0,
            purge_protection: false,
            pending: BTreeSet::new(),
            deleted_scale_sets: Default::default(),
            ops_forget_at: 0,
            saves_nothing: false,
        }
    }

    /// Rebuilds what is derived from the stored state (the pending-operation index) and
    /// drops expired tokens.
    fn after_load(&mut self) {
        self.pending = self
            .ops
            .values()
            .filter(|o| !o.applied)
            .map(|o| (o.end_ms(), o.id.clone()))
            .collect();
        let now_s = now_ms() / 1000;
        self.tokens.retain(|_, t| t.expires > now_s);
    }

    /// Every changed row since the last call, plus the credentials row.
    pub fn take_changes(&mut self) -> Vec<Change> {
        let mut out = Vec::new();
        self.resources.take_changes("resource", &mut out);
        self.ops.take_changes("op", &mut out);
        self.secrets.take_changes("secret", &mut out);
        for k in std::mem::take(&mut self.containers.dirty) {
            // The container row holds its own fields; blobs are rows of their own.
            let value = self.containers.map.get(&k).map(|c| {
                serde_json::json!({"name": c.name, "etag": c.etag, "modified_ms": c.modified_ms, "blobs": {}})
                    .to_string()
            });
            out.push(("container", k, value));
        }
        for (ckey, c) in self.containers.map.iter_mut() {
            for name in std::mem::take(&mut c.blobs.dirty) {
                let value = c
                    .blobs
                    .map
                    .get(&name)
                    .and_then(|b| serde_json::to_string(b).ok());
                out.push(("blob", format!("{ckey}\u{0}{name}"), value));
            }
        }
        self.tokens.take_changes("token", &mut out);
        out.push((
            "meta",
            "creds".into(),
            serde_json::to_string(&self.creds).ok(),
        ));
        out.push((
            "meta",
            "purge_protection".into(),
            Some(self.purge_protection.to_string()),
        ));
        out
    }

    /// Stops remembering changes, in every map and every container's blobs,
    /// now and in the containers made from now on ([`State::new_blobs`]): a
    /// simulator without a data directory saves nothing.
    pub fn stop_saving(&mut self) {
        self.saves_nothing = true;
        self.resources.stop_saving();
        self.ops.stop_saving();
        self.secrets.stop_saving();
        self.containers.stop_saving();
        for c in self.containers.map.values_mut() {
            c.blobs.stop_saving();
        }
        self.tokens.stop_saving();
    }

    /// The blobs of a new container: remembered for a save unless nothing saves.
    pub fn new_blobs(&self) -> Tracked<Blob> {
        let mut blobs = Tracked::default();
        if self.saves_nothing {
            blobs.stop_saving();
        }
        blobs
    }

    fn mark_all(&mut self) {
        for c in self.containers.map.values_mut() {
            c.blobs.mark_all();
        }
        self.resources.mark_all();
        self.ops.mark_all();
        self.secrets.mark_all();
        self.containers.mark_all();
        self.tokens.mark_all();
    }
}

/// Where changes are saved: the SQLite database of a data directory, or nowhere.
#[derive(Default)]
pub(crate) struct Persist {
    conn: Option<rusqlite::Connection>,
}

fn db_error(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Persist {
    /// Opens (creating with mode 0600) `state.db` in `dir` and loads the state it holds;
    /// migrates `state.json` when there is no database yet.
    pub fn open(dir: &Path) -> Result<(Persist, Option<State>), SimError> {
        let path = dir.join(DB_FILE);
        let existed = path.exists();
        if !existed {
            let mut o = std::fs::OpenOptions::new();
            o.create(true).write(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            o.open(&path)?;
        }
        let conn = rusqlite::Connection::open(&path).map_err(|e| db_error(&path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS entries (kind TEXT NOT NULL, key TEXT NOT NULL,
               value TEXT NOT NULL, PRIMARY KEY (kind, key));",
        )
        .map_err(|e| db_error(&path, e))?;
        let persist = Persist { conn: Some(conn) };
        let state = if existed { persist.load(&path)? } else { None };
        let state = match state {
            Some(s) => Some(s),
            None => State::load_json(dir)?.map(|mut s| {
                s.mark_all();
                s
            }),
        };
        Ok((persist, state))
    }

    fn load(&self, path: &Path) -> Result<Option<State>, SimError> {
        let Some(conn) = &self.conn else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare("SELECT kind, key, value FROM entries")
            .map_err(|e| db_error(path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| db_error(path, e))?;
        let mut st = State::fresh();
        let mut creds = None;
        let mut blobs = Vec::new();
        for row in rows {
            let (kind, key, value) = row.map_err(|e| db_error(path, e))?;
            let what = format!("{kind} {key}");
            let bad = |e: serde_json::Error| db_error(path, format!("{what}: {e}"));
            match kind.as_str() {
                "resource" => {
                    st.resources
                        .load(key, serde_json::from_str(&value).map_err(bad)?);
                }
                "op" => {
                    st.ops.load(key, serde_json::from_str(&value).map_err(bad)?);
                }
                "secret" => {
                    st.secrets
                        .load(key, serde_json::from_str(&value).map_err(bad)?);
                }
                "container" => {
                    st.containers
                        .load(key, serde_json::from_str(&value).map_err(bad)?);
                }
                "blob" => blobs.push((key, value)),
                "token" => {
                    st.tokens
                        .load(key, serde_json::from_str(&value).map_err(bad)?);
                }
                "meta" if key == "creds" => {
                    creds = Some(serde_json::from_str(&value).map_err(bad)?)
                }
                "meta" if key == "purge_protection" => {
                    st.purge_protection = serde_json::from_str(&value).map_err(bad)?
                }
                _ => {}
            }
        }
        for (key, value) in blobs {
            let Some((ckey, name)) = key.split_once('\u{0}') else {
                continue;
            };
            let blob: Blob = serde_json::from_str(&value)
                .map_err(|e| db_error(path, format!("blob {ckey}/{name}: {e}")))?;
            if let Some(c) = st.containers.map.get_mut(ckey) {
                c.blobs.load(name.to_string(), blob);
            }
        }
        let Some(creds) = creds else {
            return Ok(None);
        };
        st.creds = creds;
        st.after_load();
        Ok(Some(st))
    }

    /// Writes the changed rows in one transaction.
    pub fn write(&mut self, changes: &[Change]) -> Result<(), rusqlite::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO entries (kind, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
            )?;
            let mut del = tx.prepare_cached("DELETE FROM entries WHERE kind = ?1 AND key = ?2")?;
            let mut del_blobs = tx.prepare_cached(
                "DELETE FROM entries WHERE kind = 'blob' AND key >= ?1 || char(0) AND key < ?1 || char(1)",
            )?;
            for (kind, key, value) in changes {
                match value {
                    Some(v) => put.execute(rusqlite::params![kind, key, v])?,
                    None => {
                        if *kind == "container" {
                            del_blobs.execute(rusqlite::params![key])?;
                        }
                        del.execute(rusqlite::params![kind, key])?
                    }
                };
            }
        }
        tx.commit()
    }
}

impl State {
    /// Loads an older simulator's `state.json` from `dir`, if it exists.
    fn load_json(dir: &Path) -> Result<Option<State>, SimError> {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut st: State = serde_json::from_slice(&bytes).map_err(|e| SimError::State {
            path: path.clone(),
            message: e.to_string(),
        })?;
        st.after_load();
        Ok(Some(st))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(id: &str, rtype: &str) -> Resource {
        Resource::settled(id, rtype, serde_json::Value::Null)
    }

    fn names(t: &Tracked<Resource>, rtype: &str) -> Vec<String> {
        t.indexed(&type_index(rtype))
            .map(|(_, r)| r.name.clone())
            .collect()
    }

    fn vmss(id: &str, capacity: u64) -> Resource {
        let mut r = resource(id, VMSS);
        r.body = serde_json::json!({
            "location": "westeurope",
            "sku": {"name": "Standard_D2s_v5", "capacity": capacity},
            "identity": {"principalId": format!("P-{id}")},
        })
        .into();
        r
    }

    const VMSS: &str = "Microsoft.Compute/virtualMachineScaleSets";
    const VNET: &str = "Microsoft.Network/virtualNetworks";

    #[test]
    fn the_index_follows_inserts_borrows_removes_retains_and_loads() {
        let mut t = Tracked::<Resource>::default();
        t.insert("a".into(), resource("a", VMSS));
        t.insert("b".into(), resource("b", VNET));
        t.insert("c".into(), resource("c", VMSS));
        assert_eq!(names(&t, VMSS), ["a", "c"]);
        // Replacing a value with one of another type moves it.
        let old = t.insert("a".into(), resource("a", VNET));
        assert_eq!(old.map(|r| r.rtype), Some(VMSS.to_string()));
        assert_eq!(names(&t, VMSS), ["c"]);
        // So does a change through a mutable borrow, once the borrow ends.
        t.edit("b").unwrap().rtype = VMSS.into();
        assert_eq!(names(&t, VMSS), ["b", "c"]);
        t.remove("c");
        assert_eq!(names(&t, VMSS), ["b"]);
        t.insert("d".into(), resource("d", VMSS));
        t.retain(|k, _| k != "d");
        assert_eq!(names(&t, VMSS), ["b"]);
        assert_eq!(names(&t, VNET), ["a"]);
        // A saved map loads back with its index.
        let json = serde_json::to_string(&t).unwrap();
        let back: Tracked<Resource> = serde_json::from_str(&json).unwrap();
        assert_eq!(names(&back, VNET), ["a"]);
        assert_eq!(names(&back, VMSS), ["b"]);
    }

    /// The index and the non-zero totals of `t`, and of the same values
    /// indexed from scratch (as a load does).
    fn placement_and_rebuilt(t: &Tracked<Resource>) -> [(String, String); 2] {
        let rebuilt: Tracked<Resource> =
            serde_json::from_str(&serde_json::to_string(t).unwrap()).unwrap();
        [t, &rebuilt].map(|t| {
            let index: BTreeMap<_, _> = t
                .index
                .iter()
                .map(|(name, keys)| (name, keys.iter().collect::<BTreeSet<_>>()))
                .collect();
            let totals: BTreeMap<_, _> = t.totals.iter().filter(|(_, n)| **n > 0).collect();
            (format!("{index:?}"), format!("{totals:?}"))
        })
    }

    #[test]
    fn only_what_a_change_moves_is_reindexed_and_the_rest_stays_put() {
        let mut t = Tracked::<Resource>::default();
        t.insert("x".into(), vmss("x", 3));
        t.insert("v".into(), resource("v", VNET));
        type Step = Box<dyn Fn(&mut Tracked<Resource>)>;
        let steps: Vec<Step> = vec![
            // Nothing the index or totals see.
            Box::new(|t| t.edit("x").unwrap().etag = "e2".into()),
            // The totals only.
            Box::new(|t| {
                let mut x = t.edit("x").unwrap();
                let mut body = x.body.to_value();
                body["sku"]["capacity"] = 5.into();
                x.body = body.into();
            }),
            // One index entry gone (the principal), the type's kept.
            Box::new(|t| {
                let mut x = t.edit("x").unwrap();
                let mut body = x.body.to_value();
                body["identity"] = serde_json::json!({});
                x.body = body.into();
            }),
            // Replaced by an equal value, then by another type.
            Box::new(|t| {
                let same = t.get("v").cloned().expect("v is present");
                t.insert("v".into(), same);
            }),
            Box::new(|t| {
                t.insert("v".into(), vmss("v", 1));
            }),
            Box::new(|t| {
                t.remove("x");
            }),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&mut t);
            let [now, rebuilt] = placement_and_rebuilt(&t);
            assert_eq!(now, rebuilt, "after step {i}");
        }
        assert_eq!(names(&t, VMSS), ["v"]);
        assert!(t.indexed(&principal_index("P-v")).next().is_some());
        assert!(t.indexed(&principal_index("P-x")).next().is_none());
    }

    #[test]
    fn watchers_hear_of_every_change_to_a_scale_set_and_of_nothing_else() {
        let mut t = Tracked::<Resource>::default();
        t.insert("a".into(), resource("a", VMSS));
        t.insert("b".into(), resource("b", VNET));
        assert_eq!(t.take_watched().into_iter().collect::<Vec<_>>(), ["a"]);
        assert!(t.take_watched().is_empty(), "each change is told once");
        t.edit("b").unwrap().state = "Updating".into();
        assert!(t.take_watched().is_empty(), "a VNet is not watched");
        t.edit("a").unwrap().state = "Updating".into();
        // A VNet replaced by a scale set, and a scale set replaced by a VNet.
        t.insert("b".into(), resource("b", VMSS));
        t.insert("c".into(), resource("c", VMSS));
        t.take_watched();
        t.insert("c".into(), resource("c", VNET));
        assert_eq!(t.take_watched().into_iter().collect::<Vec<_>>(), ["c"]);
        t.remove("a");
        t.remove("c");
        assert_eq!(t.take_watched().into_iter().collect::<Vec<_>>(), ["a"]);
        // Loading saved state announces nothing: the agent's first tick looks at everything.
        let back: Tracked<Resource> =
            serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert!(back.clone().take_watched().is_empty());
    }

    #[test]
    fn the_watch_signal_rises_with_each_change_to_a_scale_set_only() {
        use std::sync::atomic::Ordering::Acquire;
        let mut t = Tracked::<Resource>::default();
        let signal = t.watch_signal();
        t.insert("b".into(), resource("b", VNET));
        t.edit("b").unwrap().state = "Updating".into();
        t.remove("b");
        assert!(!signal.load(Acquire), "a VNet is not watched");
        let steps: [fn(&mut Tracked<Resource>); 3] = [
            |t| {
                t.insert("a".into(), resource("a", VMSS));
            },
            |t| t.edit("a").unwrap().state = "Updating".into(),
            |t| {
                t.remove("a");
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&mut t);
            assert!(signal.swap(false, Acquire), "step {i} raised the signal");
        }
    }

    #[test]
    fn usage_totals_and_principals_follow_every_change() {
        let cores = usage_total("westeurope", "cores");
        let mut t = Tracked::<Resource>::default();
        t.insert("x".into(), vmss("x", 3));
        t.insert("y".into(), vmss("y", 1));
        assert_eq!(t.total(&cores), 8, "4 instances of 2 vCPUs");
        {
            let mut x = t.edit("x").unwrap();
            let mut body = x.body.to_value();
            body["sku"]["capacity"] = 1.into();
            x.body = body.into();
        }
        assert_eq!(t.total(&cores), 4);
        t.edit("y").unwrap().state = "Deleting".into();
        assert_eq!(
            t.total(&cores),
            2,
            "a scale set being deleted counts no more"
        );
        assert!(t.indexed(&principal_index("p-x")).next().is_some());
        t.remove("x");
        assert_eq!(t.total(&cores), 0);
        assert!(t.indexed(&principal_index("P-x")).next().is_none());
        assert!(t.indexed(&principal_index("P-y")).next().is_some());
    }

    #[test]
    fn scale_sets_are_found_by_name_until_removed() {
        let mut st = State::fresh();
        let id = "/s/rg/providers/Microsoft.Compute/virtualMachineScaleSets/Pool-A";
        st.resources.insert(id.to_ascii_lowercase(), vmss(id, 1));
        st.resources
            .insert("/s/rg/v".into(), resource("/s/rg/pool-a", VNET));
        assert_eq!(st.scale_set("pool-a").map(|r| r.id.as_str()), Some(id));
        assert!(st.scale_set("pool").is_none());
        st.resources.remove(&id.to_ascii_lowercase());
        assert!(
            st.scale_set("pool-a").is_none(),
            "a VNet of that name is not one"
        );
    }

    #[test]
    fn a_prefix_finds_exactly_the_keys_below_it() {
        let mut t = Tracked::<Resource>::default();
        for k in ["/s/a", "/s/a/x", "/s/a/y", "/s/ab", "/s/b"] {
            t.insert(k.into(), resource(k, "T"));
        }
        let keys: Vec<&String> = t.with_prefix("/s/a/".into()).map(|(k, _)| k).collect();
        assert_eq!(keys, ["/s/a/x", "/s/a/y"]);
    }

    #[test]
    fn entries_are_listed_in_key_order_whatever_the_order_of_their_changes() {
        let mut t = Tracked::<Resource>::default();
        for k in ["/s/c", "/s/a", "/s/d", "/s/b"] {
            t.insert(k.into(), resource(k, "T"));
        }
        t.remove("/s/d");
        t.insert("/s/a".into(), resource("/s/a2", "T"));
        let keys: Vec<&String> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["/s/a", "/s/b", "/s/c"]);
        let ids: Vec<&str> = t.values().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["/s/a2", "/s/b", "/s/c"]);
        assert_eq!(t.len(), 3);
        assert!(t.get("/s/d").is_none() && !t.contains_key("/s/d"));
        let saved = serde_json::to_string(&t).unwrap();
        assert!(saved.find("/s/a").unwrap() < saved.find("/s/b").unwrap());
        assert!(saved.find("/s/b").unwrap() < saved.find("/s/c").unwrap());
    }

    #[test]
    fn a_state_that_saves_nothing_remembers_no_changes_but_keeps_its_values() {
        let mut st = State::fresh();
        st.resources.insert("/s/a".into(), resource("/s/a", VNET));
        let blobs = st.new_blobs();
        st.containers.insert(
            "acct/old".into(),
            Container {
                name: "old".into(),
                etag: "e".into(),
                modified_ms: 0,
                blobs,
            },
        );
        st.stop_saving();
        st.resources.insert("/s/b".into(), resource("/s/b", VNET));
        if let Some(mut r) = st.resources.edit("/s/a") {
            r.state = "Deleting".into();
        }
        st.resources.mark_all();
        // Blobs too, in a container made before and in one made after.
        let blob = |name: &str| Blob {
            name: name.into(),
            data: crate::content::Content::new(b"x"),
            content_type: None,
            metadata: BTreeMap::new(),
            etag: "e".into(),
            modified_ms: 0,
            base: String::new(),
        };
        for ckey in ["acct/old", "acct/new"] {
            if ckey == "acct/new" {
                let blobs = st.new_blobs();
                st.containers.insert(
                    ckey.into(),
                    Container {
                        name: "new".into(),
                        etag: "e".into(),
                        modified_ms: 0,
                        blobs,
                    },
                );
            }
            if let Some(c) = st.containers.get_mut(ckey) {
                c.blobs.insert("b".into(), blob("b"));
            }
        }
        assert_eq!(
            st.containers.get("acct/old").map(|c| c.blobs.len()),
            Some(1)
        );
        let changes = st.take_changes();
        assert!(
            changes.iter().all(|(kind, ..)| *kind == "meta"),
            "{changes:?}"
        );
        assert_eq!(st.resources.get("/s/a").unwrap().state, "Deleting");
        assert!(st.resources.get("/s/b").is_some());
        assert_eq!(st.of_type(VNET).count(), 2);
    }

    #[test]
    fn a_name_fragment_finds_what_a_scan_finds_through_every_change() {
        let mut t = Tracked::<Resource>::default();
        let ids = [
            "/g/Demo-ab12cd-vnet",
            "/g/demo-ab12cd-api-lb",
            "/g/demo-zz99yy-vnet",
            "/g/xdemo-ab12cdx",
            "/g/other",
            "/g/ra-demo-ab12cd",
        ];
        for id in ids {
            let rtype = if id.contains("ra-") {
                crate::arm::RA_TYPE
            } else {
                "T"
            };
            t.insert(id.to_ascii_lowercase(), resource(id, rtype));
        }
        let scan = |t: &Tracked<Resource>, fragment: &str| -> Vec<String> {
            let lower = fragment.to_ascii_lowercase();
            t.iter()
                .filter(|(_, r)| {
                    r.searchable_name()
                        .is_some_and(|n| contains_ignoring_case(n, &lower))
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        let found = |t: &Tracked<Resource>, fragment: &str| -> Vec<String> {
            t.named_like(fragment)
                .expect("three bytes or more")
                .into_iter()
                .map(|(k, _)| k.clone())
                .collect()
        };
        for fragment in [
            "demo-ab12cd",
            "DEMO-AB12CD",
            "ab12cd",
            "-vnet",
            "oth",
            "nothing",
            "zz9",
        ] {
            assert_eq!(found(&t, fragment), scan(&t, fragment), "{fragment}");
        }
        assert_eq!(
            found(&t, "Demo-AB12cd"),
            [
                "/g/demo-ab12cd-api-lb",
                "/g/demo-ab12cd-vnet",
                "/g/xdemo-ab12cdx"
            ],
            "every casing, in key order; a role assignment is never listed by name"
        );
        assert!(t.named_like("ab").is_none(), "too short to narrow");

        t.remove("/g/demo-ab12cd-vnet");
        t.retain(|k, _| k != "/g/xdemo-ab12cdx");
        if let Some(mut r) = t.edit("/g/demo-ab12cd-api-lb") {
            r.state = "Updating".into();
        }
        assert_eq!(found(&t, "demo-ab12cd"), ["/g/demo-ab12cd-api-lb"]);
        t.insert(
            "/g/demo-ab12cd-vnet".into(),
            resource("/g/demo-ab12cd-vnet", "T"),
        );
        assert_eq!(found(&t, "ab12cd-vnet"), ["/g/demo-ab12cd-vnet"]);
        assert_eq!(found(&t, "demo-ab12cd").len(), 2);
        let copy = t.clone();
        assert_eq!(found(&copy, "zz99yy"), ["/g/demo-zz99yy-vnet"]);
    }
}
