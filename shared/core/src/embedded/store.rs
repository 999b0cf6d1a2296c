//! The SQLite saga store with a transactional outbox.

use super::bus::{complete_and_take, enqueue};
use super::{now_ms, unix_ms, Inner};
use crate::engine::in_hand;
use crate::ports::{ETag, OutMessage, SagaStore, StoreError, StoredDoc, SweepHint};
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// [`SagaStore`] over the embedded database; obtained from
/// [`super::Embedded::store`]. The ETag is the document's version counter,
/// rendered as a quoted string (`"\"7\""`).
pub struct EmbeddedStore {
    pub(crate) inner: Arc<Inner>,
}

fn etag(version: i64) -> ETag {
    ETag(format!("\"{version}\""))
}

/// The version an ETag stands for; `None` for a tag this store never issued
/// (which therefore matches no document).
fn version_of(tag: &ETag) -> Option<i64> {
    tag.0
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .and_then(|s| s.parse().ok())
}

/// Maps a SQLite error: unreadable column values mean a corrupt row, anything
/// else means the database could not do its job.
fn store_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        store_err(e)
    }
}

impl From<super::group::CommitFailed> for StoreError {
    fn from(e: super::group::CommitFailed) -> Self {
        StoreError::Unavailable(format!("commit failed: {}", e.0))
    }
}

fn parse_doc(id: String, etag: ETag, text: &str) -> Result<StoredDoc, StoreError> {
    let doc = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("document {id} is not valid JSON: {e}")))?;
    Ok(StoredDoc { id, etag, doc })
}

impl EmbeddedStore {
    /// The documents a `SELECT id, version, doc` query returns (read on the
    /// scanner), parsed after the connection is given back. A document that
    /// is not JSON text fails the read, or with `keep_unreadable` comes back
    /// as what could be read of it: its text as a JSON string, or null.
    fn read_docs(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        keep_unreadable: bool,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let rows = {
            let conn = self.inner.scanner();
            let mut stmt = conn.prepare_cached(sql).map_err(store_err)?;
            let rows = stmt
                .query_map(args, |r| {
                    let text = match r.get_ref(2)?.as_str() {
                        Ok(text) => Some(text.to_owned()),
                        Err(_) if keep_unreadable => None,
                        Err(_) => Some(r.get::<_, String>(2)?),
                    };
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, text))
                })
                .map_err(store_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(store_err)?;
            rows
        };
        rows.into_iter()
            .map(|(id, version, text)| match (text, keep_unreadable) {
                (Some(text), false) => parse_doc(id, etag(version), &text),
                (text, _) => Ok(StoredDoc {
                    doc: text.map_or(Value::Null, |t| {
                        serde_json::from_str(&t).unwrap_or(Value::String(t))
                    }),
                    id,
                    etag: etag(version),
                }),
            })
            .collect()
    }
}

/// The `settled` and `sweep_at` columns for a hint (see the schema).
fn sweep_columns(hint: SweepHint) -> (Option<i64>, Option<i64>) {
    match hint {
        SweepHint::Settled => (Some(1), None),
        SweepHint::Holding => (None, Some(i64::MIN)),
        SweepHint::SavedAt(t) => (None, Some(unix_ms(t))),
        SweepHint::Unknown => (None, None),
    }
}

/// SQL true when a valid JSON `doc` is a settled job's (status terminal,
/// nothing `pending`), as [`SweepHint::of_doc`] reads it.
pub(super) fn settled_in_json() -> String {
    format!(
        "(json_type(doc, '$.status') IS 'text' \
         AND json_extract(doc, '$.status') IN ({}) \
         AND json_type(doc, '$.pending') IS 'null')",
        crate::saga::JobStatus::terminal_in_list()
    )
}

/// The sweeper's listing (`?1` after, `?2` limit, `?3` the quiet cut as a
/// Julian day, `?4` the same in Unix ms): see
/// [`EmbeddedStore::list_sweepable_after`].
fn sweepable_query() -> String {
    format!(
        "SELECT id, version, doc FROM sagas WHERE id > ?1 AND settled IS NOT 1 AND CASE \
         WHEN sweep_at IS NOT NULL THEN sweep_at < ?4 \
         WHEN json_valid(doc) THEN json_type(doc, '$.outbox') IS NOT NULL \
         OR NOT {} \
         AND coalesce(julianday(json_extract(doc, '$.updatedAt')) < ?3, 1) \
         ELSE 1 END ORDER BY id LIMIT ?2",
        settled_in_json()
    )
}

/// What follows a committed saga write: its version noted, and receivers
/// woken for the messages its outbox made available.
fn published(inner: &Inner, id: &str, version: i64, wake: super::bus::Wake) {
    inner.committed(id, version);
    inner.writes.fetch_add(1, Ordering::Relaxed);
    wake.apply(inner);
}

#[async_trait]
impl SagaStore for EmbeddedStore {
    async fn create(
        &self,
        id: &str,
        doc: &Value,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        self.create_text(id, &doc.to_string(), SweepHint::of_doc(doc), outbox)
            .await
    }

    async fn create_text(
        &self,
        id: &str,
        text: &str,
        sweep: SweepHint,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let (key, text, outbox) = (id.to_string(), text.to_string(), outbox.to_vec());
        let (settled, sweep_at) = sweep_columns(sweep);
        let created = key.clone();
        self.inner
            .write(
                move |tx, inner| {
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO sagas (id, version, settled, sweep_at, doc) \
                             VALUES (?1, 1, ?3, ?4, ?2) ON CONFLICT (id) DO NOTHING",
                        )
                        .and_then(|mut s| s.execute(params![key, text, settled, sweep_at]))
                        .map_err(store_err)?;
                    if inserted == 0 {
                        return Err(StoreError::Conflict(key));
                    }
                    enqueue(tx, inner, &outbox, now_ms()).map_err(store_err)
                },
                move |wake, inner| published(inner, &created, 1, *wake),
            )
            .await?;
        Ok(etag(1))
    }

    async fn get(&self, id: &str) -> Result<Option<StoredDoc>, StoreError> {
        let row = self.get_text(id).await?;
        row.map(|(text, tag)| parse_doc(id.to_string(), tag, &text))
            .transpose()
    }

    async fn get_text(&self, id: &str) -> Result<Option<(String, ETag)>, StoreError> {
        let conn = self.inner.reader();
        let mut stmt = conn
            .prepare_cached("SELECT version, doc FROM sagas WHERE id = ?1")
            .map_err(store_err)?;
        let row = stmt
            .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .optional()
            .map_err(store_err)?;
        Ok(row.map(|(version, text)| (text, etag(version))))
    }

    async fn etag(&self, id: &str) -> Result<Option<ETag>, StoreError> {
        if let Some(version) = self.inner.version(id) {
            return Ok(Some(etag(version)));
        }
        let conn = self.inner.reader();
        let mut stmt = conn
            .prepare_cached("SELECT version FROM sagas WHERE id = ?1")
            .map_err(store_err)?;
        let version = stmt
            .query_row([id], |r| r.get::<_, i64>(0))
            .optional()
            .map_err(store_err)?;
        Ok(version.map(etag))
    }

    async fn replace(
        &self,
        id: &str,
        doc: &Value,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        self.replace_text(
            id,
            &doc.to_string(),
            SweepHint::of_doc(doc),
            if_match,
            outbox,
        )
        .await
    }

    async fn replace_text(
        &self,
        id: &str,
        text: &str,
        sweep: SweepHint,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let expected = version_of(if_match);
        let (key, text, outbox) = (id.to_string(), text.to_string(), outbox.to_vec());
        let (settled, sweep_at) = sweep_columns(sweep);
        let replaced = key.clone();
        // The message being handled, completed with this save when it can be.
        let in_hand = if outbox.is_empty() {
            None
        } else {
            in_hand::offered(id)
        };
        let (version, _, taken) = self
            .inner
            .write(
                move |tx, inner| {
                    let updated = match expected {
                        Some(v) => tx
                            .prepare_cached(
                                "UPDATE sagas SET doc = ?1, version = version + 1, \
                                 settled = ?4, sweep_at = ?5 WHERE id = ?2 AND version = ?3",
                            )
                            .and_then(|mut s| s.execute(params![text, key, v, settled, sweep_at]))
                            .map_err(store_err)?,
                        None => 0,
                    };
                    if updated == 0 {
                        let exists = tx
                            .prepare_cached("SELECT 1 FROM sagas WHERE id = ?1")
                            .and_then(|mut s| s.exists([&key]))
                            .map_err(store_err)?;
                        return Err(if exists {
                            StoreError::PreconditionFailed(key)
                        } else {
                            StoreError::NotFound(key)
                        });
                    }
                    let now = now_ms();
                    let taken = match &in_hand {
                        Some(offer) => complete_and_take(
                            tx,
                            inner,
                            &offer.lock_token,
                            &outbox,
                            now,
                            offer.receive,
                        )
                        .map_err(store_err)?,
                        None => None,
                    };
                    let (wake, taken) = match taken {
                        Some((wake, next)) => (wake, Some(in_hand::Taken { next })),
                        None => (enqueue(tx, inner, &outbox, now).map_err(store_err)?, None),
                    };
                    // `updated == 1` implies `expected` was `Some`.
                    Ok((expected.unwrap_or(0) + 1, wake, taken))
                },
                move |&(version, wake, _), inner| published(inner, &replaced, version, wake),
            )
            .await?;
        if let Some(taken) = taken {
            in_hand::take(taken);
        }
        Ok(etag(version))
    }

    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError> {
        self.read_docs("SELECT id, version, doc FROM sagas ORDER BY id", [], false)
    }

    async fn list_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_docs(
            "SELECT id, version, doc FROM sagas WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after.unwrap_or(""), limit],
            false,
        )
    }

    /// Filtered where the documents are, from what each write said of its
    /// document ([`SweepHint`], two small columns of each row): a sweep
    /// reads only the documents it may act on, not every one the database
    /// keeps (without an index: see the README's known limits). Settled jobs are left out as
    /// Cosmos DB's query does (`cosmos::unsettled_query`), and so are jobs
    /// saved since `quiet_before`, with a second's margin. A document whose
    /// writer could not tell (`SweepHint::Unknown`, or a row written before
    /// the hints) is read by SQLite's JSON functions, several times faster
    /// than parsing it here; one that is not JSON, or whose `updatedAt`
    /// SQLite cannot read, is listed, so that the sweeper looks at it. A
    /// document that is not JSON comes back as its text (as a JSON string),
    /// which the sweeper reports as corrupt: one unreadable document must
    /// not stop the sweep of every other job.
    async fn list_sweepable_after(
        &self,
        after: Option<&str>,
        limit: usize,
        quiet_before: time::OffsetDateTime,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let quiet = quiet_before + time::Duration::SECOND;
        let julian_day = quiet.unix_timestamp_nanos() as f64 / 86_400e9 + 2_440_587.5;
        self.read_docs(
            &sweepable_query(),
            params![after.unwrap_or(""), limit, julian_day, unix_ms(quiet)],
            true,
        )
    }

    fn delivers_outbox(&self) -> bool {
        true
    }

    /// This handle is the database's only writer (the data-dir lock) and
    /// notes every version it commits; a saga it does not remember is read.
    fn etag_is_local(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sweepers_listing_leaves_out_jobs_saved_since_the_cut() {
        let store = super::super::Embedded::in_memory(Default::default())
            .unwrap()
            .store();
        let now = time::OffsetDateTime::now_utc();
        let at = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let docs = [
            (
                "a-recent",
                serde_json::json!({"status": "Running", "pending": null, "updatedAt": at(now)}),
            ),
            (
                "b-quiet",
                serde_json::json!({"status": "Running", "pending": null, "updatedAt": at(now - time::Duration::minutes(5))}),
            ),
            (
                "c-unreadable-time",
                serde_json::json!({"status": "Running", "pending": null, "updatedAt": "yesterday"}),
            ),
            (
                "d-recent-holding",
                serde_json::json!({"status": "Running", "pending": null, "updatedAt": at(now), "outbox": []}),
            ),
        ];
        for (id, doc) in &docs {
            store.create(id, doc, &[]).await.unwrap();
        }
        let cut = now - time::Duration::seconds(30);
        assert_eq!(
            swept(store.as_ref(), cut).await,
            ["b-quiet", "c-unreadable-time", "d-recent-holding"]
        );
    }

    /// Every id the sweeper's listing gives at `cut`, a page of two at a time.
    async fn swept(store: &dyn SagaStore, cut: time::OffsetDateTime) -> Vec<String> {
        crate::conformance::sweepable_ids(store, 2, cut).await
    }

    #[tokio::test]
    async fn the_sweepers_listing_goes_by_what_each_write_said_and_follows_a_job_that_runs_again() {
        let store = super::super::Embedded::in_memory(Default::default())
            .unwrap()
            .store();
        let now = time::OffsetDateTime::now_utc();
        let cut = now - time::Duration::seconds(30);
        let old = now - time::Duration::minutes(5);
        // Each text says the opposite of its hint: the listing reads the hint.
        let running = r#"{"status":"Running","pending":null}"#;
        let settled = r#"{"status":"Succeeded","pending":null}"#;
        let writes = [
            ("a-settled", running, SweepHint::Settled),
            ("b-quiet", settled, SweepHint::SavedAt(old)),
            ("c-recent", running, SweepHint::SavedAt(now)),
            ("d-holding", settled, SweepHint::Holding),
            ("e-unknown", running, SweepHint::Unknown),
        ];
        for (id, text, hint) in writes {
            store.create_text(id, text, hint, &[]).await.unwrap();
        }
        assert_eq!(
            swept(store.as_ref(), cut).await,
            ["b-quiet", "d-holding", "e-unknown"]
        );

        // A settled job that runs again is listed again, and settles again.
        let e1 = etag(1);
        let e2 = store
            .replace_text("a-settled", running, SweepHint::SavedAt(old), &e1, &[])
            .await
            .unwrap();
        assert_eq!(
            swept(store.as_ref(), cut).await,
            ["a-settled", "b-quiet", "d-holding", "e-unknown"]
        );
        let e3 = store
            .replace_text("a-settled", settled, SweepHint::Settled, &e2, &[])
            .await
            .unwrap();
        assert_eq!(
            swept(store.as_ref(), cut).await,
            ["b-quiet", "d-holding", "e-unknown"]
        );
        // A stale ETag is still refused, settled or not.
        for hint in [SweepHint::Settled, SweepHint::SavedAt(old)] {
            assert!(matches!(
                store
                    .replace_text("a-settled", running, hint, &e2, &[])
                    .await,
                Err(StoreError::PreconditionFailed(_))
            ));
        }
        assert_eq!(store.etag("a-settled").await.unwrap(), Some(e3));
        assert!(matches!(
            store
                .replace_text("nobody", running, SweepHint::SavedAt(old), &e1, &[])
                .await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_sweep_reads_no_document_its_write_said_it_would_not_act_on() {
        let db = super::super::Embedded::in_memory(Default::default()).unwrap();
        let store = db.store();
        let now = time::OffsetDateTime::now_utc();
        let text = r#"{"status":"Running","pending":null}"#;
        for (id, hint) in [
            ("settled", SweepHint::Settled),
            ("recent", SweepHint::SavedAt(now)),
            (
                "quiet",
                SweepHint::SavedAt(now - time::Duration::minutes(5)),
            ),
        ] {
            store.create_text(id, text, hint, &[]).await.unwrap();
        }
        // Every document becomes unreadable behind the store's back: only
        // the one the sweeper may act on is read, and comes back as its text
        // (the sweeper reports it as corrupt and goes on with the others).
        db.inner
            .conn()
            .execute("UPDATE sagas SET doc = '{not json'", [])
            .unwrap();
        let cut = now - time::Duration::seconds(30);
        let listed = store.list_sweepable_after(None, 10, cut).await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].id, "quiet");
        assert_eq!(listed[0].doc, serde_json::json!("{not json"));
        // Nor does a document that is not text at all stop the listing.
        db.inner
            .conn()
            .execute("UPDATE sagas SET doc = x'00ff' WHERE id = 'quiet'", [])
            .unwrap();
        let listed = store.list_sweepable_after(None, 10, cut).await.unwrap();
        assert_eq!(listed[0].doc, Value::Null, "{listed:?}");
        assert!(matches!(store.list().await, Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn etag_round_trip() {
        assert_eq!(version_of(&etag(42)), Some(42));
        assert_eq!(version_of(&ETag("42".into())), None);
        assert_eq!(version_of(&ETag("\"x\"".into())), None);
    }

    /// A queue with `ids` sent, and a saga `job` to save.
    async fn queue_with(ids: &[&str]) -> (super::super::Embedded, ETag) {
        let db = super::super::Embedded::in_memory(Default::default()).unwrap();
        let messages: Vec<OutMessage> = ids
            .iter()
            .map(|id| crate::conformance::test_message(id))
            .collect();
        db.bus().send(&messages).await.unwrap();
        let etag = db
            .store()
            .create("job", &serde_json::json!({"n": 0}), &[])
            .await
            .unwrap();
        (db, etag)
    }

    async fn receive(db: &super::super::Embedded) -> Option<crate::ports::Delivery> {
        db.bus().receive(std::time::Duration::ZERO).await.unwrap()
    }

    /// Every message receivable now, each received once.
    async fn drain(db: &super::super::Embedded) -> Vec<String> {
        let mut got = vec![];
        while let Some(d) = receive(db).await {
            got.push(d.message_id);
        }
        got
    }

    /// Saves `job` over `etag`, sending `c`, while handling the message
    /// locked by `in_hand` (and taking the next one with `receive`).
    async fn save_handling(
        db: &super::super::Embedded,
        in_hand: &crate::ports::Delivery,
        receive: bool,
        etag: &ETag,
    ) -> (Result<ETag, StoreError>, Option<in_hand::Taken>) {
        in_hand::handling("job", &in_hand.lock_token, receive, async {
            let out = [crate::conformance::test_message("c")];
            db.store()
                .replace("job", &serde_json::json!({"n": 1}), etag, &out)
                .await
        })
        .await
    }

    #[tokio::test]
    async fn a_save_of_the_handled_job_completes_its_message_and_takes_the_next_in_one_commit() {
        let (db, etag) = queue_with(&["a", "b"]).await;
        let a = receive(&db).await.unwrap();
        assert_eq!(a.message_id, "a");
        let commits = db.commits().1;
        let (saved, taken) = save_handling(&db, &a, true, &etag).await;
        saved.unwrap();
        assert_eq!(
            db.commits().1,
            commits + 1,
            "the save, the completion and the receive commit once"
        );
        let next = taken
            .expect("the save completed `a`")
            .next
            .expect("and took the next message");
        assert_eq!(
            (next.message_id.as_str(), next.delivery_count),
            ("b", 1),
            "the oldest, as a receive takes it"
        );
        // `a` is gone: only the save's message is left to receive; `b` is locked.
        assert_eq!(drain(&db).await, ["c"]);
        let r = db.bus().complete(&a).await;
        assert!(
            matches!(r, Err(crate::ports::BusError::LockLost(_))),
            "{r:?}"
        );
        db.bus()
            .complete(&next)
            .await
            .expect("the taken lock holds");
    }

    #[tokio::test]
    async fn only_a_save_of_the_handled_job_that_sends_something_completes_its_message() {
        let (db, etag) = queue_with(&["a"]).await;
        let other = db
            .store()
            .create("other", &serde_json::json!({}), &[])
            .await
            .unwrap();
        let a = receive(&db).await.unwrap();
        let ((), taken) = in_hand::handling("job", &a.lock_token, true, async {
            let out = [crate::conformance::test_message("x")];
            let store = db.store();
            let doc = serde_json::json!({"n": 1});
            store.replace("other", &doc, &other, &out).await.unwrap();
            store.replace("job", &doc, &etag, &[]).await.unwrap();
        })
        .await;
        assert!(taken.is_none());
        assert_eq!(
            drain(&db).await,
            ["x"],
            "`a` stays locked for its own settlement"
        );
        db.bus().complete(&a).await.expect("the lock holds");
    }

    #[tokio::test]
    async fn a_lost_lock_leaves_the_message_to_its_new_holder_and_the_save_stands() {
        let (db, etag) = queue_with(&["a"]).await;
        let a = receive(&db).await.unwrap();
        db.bus().abandon(&a).await.unwrap();
        let again = receive(&db).await.unwrap();
        let (saved, taken) = save_handling(&db, &a, true, &etag).await;
        saved.unwrap();
        assert!(taken.is_none(), "nothing was completed");
        assert_eq!(
            drain(&db).await,
            ["c"],
            "the save's message is sent as usual"
        );
        db.bus()
            .complete(&again)
            .await
            .expect("the new holder's lock holds");
    }

    #[tokio::test]
    async fn a_consumer_that_stops_takes_nothing_more() {
        let (db, etag) = queue_with(&["a", "b"]).await;
        let a = receive(&db).await.unwrap();
        let (saved, taken) = save_handling(&db, &a, false, &etag).await;
        saved.unwrap();
        assert!(taken.expect("completed").next.is_none());
        assert_eq!(drain(&db).await, ["b", "c"]);
    }

    #[tokio::test]
    async fn a_save_that_loses_its_precondition_completes_nothing() {
        let (db, etag) = queue_with(&["a"]).await;
        let doc = serde_json::json!({"n": 1});
        db.store().replace("job", &doc, &etag, &[]).await.unwrap();
        let a = receive(&db).await.unwrap();
        let (saved, taken) = save_handling(&db, &a, true, &etag).await;
        assert!(
            matches!(saved, Err(StoreError::PreconditionFailed(_))),
            "{saved:?}"
        );
        assert!(taken.is_none());
        assert!(drain(&db).await.is_empty(), "nothing sent, nothing freed");
        db.bus()
            .complete(&a)
            .await
            .expect("`a` is still locked for its handler");
    }
}
