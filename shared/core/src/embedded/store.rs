//! The SQLite saga store with a transactional outbox.

use super::bus::enqueue;
use super::{now_ms, Inner};
use crate::ports::{ETag, OutMessage, SagaStore, StoreError, StoredDoc};
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
    /// scanner), parsed after the connection is given back.
    fn read_docs(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let rows = {
            let conn = self.inner.scanner();
            let mut stmt = conn.prepare_cached(sql).map_err(store_err)?;
            let rows = stmt
                .query_map(args, |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(store_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(store_err)?;
            rows
        };
        rows.into_iter()
            .map(|(id, version, text)| parse_doc(id, etag(version), &text))
            .collect()
    }
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
        self.create_text(id, &doc.to_string(), outbox).await
    }

    async fn create_text(
        &self,
        id: &str,
        text: &str,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let (key, text, outbox) = (id.to_string(), text.to_string(), outbox.to_vec());
        let created = key.clone();
        self.inner
            .write(
                move |tx, inner| {
                    let inserted = tx
                        .prepare_cached(
                            "INSERT INTO sagas (id, version, doc) VALUES (?1, 1, ?2) \
                         ON CONFLICT (id) DO NOTHING",
                        )
                        .and_then(|mut s| s.execute(params![key, text]))
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
        self.replace_text(id, &doc.to_string(), if_match, outbox)
            .await
    }

    async fn replace_text(
        &self,
        id: &str,
        text: &str,
        if_match: &ETag,
        outbox: &[OutMessage],
    ) -> Result<ETag, StoreError> {
        let expected = version_of(if_match);
        let (key, text, outbox) = (id.to_string(), text.to_string(), outbox.to_vec());
        let replaced = key.clone();
        let (version, _) = self
            .inner
            .write(
                move |tx, inner| {
                    let updated = match expected {
                        Some(v) => tx
                            .prepare_cached(
                                "UPDATE sagas SET doc = ?1, version = version + 1 \
                             WHERE id = ?2 AND version = ?3",
                            )
                            .and_then(|mut s| s.execute(params![text, key, v]))
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
                    let wake = enqueue(tx, inner, &outbox, now_ms()).map_err(store_err)?;
                    // `updated == 1` implies `expected` was `Some`.
                    Ok((expected.unwrap_or(0) + 1, wake))
                },
                move |&(version, wake), inner| published(inner, &replaced, version, wake),
            )
            .await?;
        Ok(etag(version))
    }

    async fn list(&self) -> Result<Vec<StoredDoc>, StoreError> {
        self.read_docs("SELECT id, version, doc FROM sagas ORDER BY id", [])
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
        )
    }

    /// Filtered in SQLite, whose JSON functions read a document several
    /// times faster than parsing it here would: a sweep parses what may need
    /// it, not every job the database keeps or runs. Settled jobs are left
    /// out as Cosmos DB's query does (`cosmos::unsettled_query`), and so are
    /// jobs saved since `quiet_before` (a second's margin absorbs the
    /// rounding of SQLite's day numbers). A document that is not JSON, or
    /// whose `updatedAt` SQLite cannot read, is listed, so that the sweeper
    /// looks at it.
    async fn list_sweepable_after(
        &self,
        after: Option<&str>,
        limit: usize,
        quiet_before: time::OffsetDateTime,
    ) -> Result<Vec<StoredDoc>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let quiet = quiet_before + time::Duration::SECOND;
        let julian_day = quiet.unix_timestamp_nanos() as f64 / 86_400e9 + 2_440_587.5;
        let sql = format!(
            "SELECT id, version, doc FROM sagas WHERE id > ?1 AND CASE \
             WHEN json_valid(doc) THEN json_type(doc, '$.outbox') IS NOT NULL \
             OR NOT (json_type(doc, '$.status') IS 'text' \
             AND json_extract(doc, '$.status') IN ({}) \
             AND json_type(doc, '$.pending') IS 'null') \
             AND coalesce(julianday(json_extract(doc, '$.updatedAt')) < ?3, 1) \
             ELSE 1 END ORDER BY id LIMIT ?2",
            crate::saga::JobStatus::terminal_in_list()
        );
        self.read_docs(&sql, params![after.unwrap_or(""), limit, julian_day])
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
        let listed: Vec<String> = store
            .list_sweepable_after(None, 10, cut)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(listed, ["b-quiet", "c-unreadable-time", "d-recent-holding"]);
    }

    #[test]
    fn etag_round_trip() {
        assert_eq!(version_of(&etag(42)), Some(42));
        assert_eq!(version_of(&ETag("42".into())), None);
        assert_eq!(version_of(&ETag("\"x\"".into())), None);
    }
}
