//! The embedded store and bus against the conformance suites, plus the
//! behaviour only the embedded backend has: the transactional outbox, the
//! `deliver_twice` test mode, lock release on reopen, the write counter.

use flotilla_core::conformance::{self, BusProfile, MAX_DELIVERY_COUNT_EXCEEDED};
use flotilla_core::embedded::{BusOptions, Embedded};
use flotilla_core::ports::{Delivery, ETag, EventBus, OutMessage, StoreError};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

fn test_options() -> BusOptions {
    BusOptions {
        max_delivery_count: 4,
        lock_duration: Duration::from_millis(750),
        ..BusOptions::default()
    }
}

async fn run_suites(db: &Embedded) {
    let profile = BusProfile::for_embedded(db.options());
    conformance::saga_store_suite(db.store()).await;
    conformance::event_bus_suite(db.bus(), &profile).await;
    conformance::outbox_suite(db.store(), db.bus(), &profile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_memory() {
    let db = Embedded::in_memory(test_options()).expect("open");
    run_suites(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Embedded::open(&dir.path().join("flotilla.db"), test_options()).expect("open");
    run_suites(&db).await;
    // A second run on the same database: the suites must not trip over the
    // leftovers of the first.
    run_suites(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_default_options() {
    // Service Bus defaults (10 deliveries), with a lock short enough to test.
    let options = BusOptions {
        lock_duration: Duration::from_millis(500),
        ..BusOptions::default()
    };
    let db = Embedded::in_memory(options).expect("open");
    run_suites(&db).await;
}

/// The next receivable message, without waiting.
async fn receive_now(bus: &dyn EventBus) -> Option<Delivery> {
    bus.receive(Duration::ZERO).await.expect("receive")
}

fn msg(id: &str) -> OutMessage {
    conformance::test_message(id)
}

/// The names of the tables and indexes of the database at `path` that
/// `filter` (a condition on `sqlite_schema`) picks, in order.
fn schema_names(path: &std::path::Path, filter: &str) -> Vec<String> {
    let raw = rusqlite::Connection::open(path).expect("raw open");
    let mut stmt = raw
        .prepare(&format!(
            "SELECT name FROM sqlite_schema WHERE {filter} ORDER BY name"
        ))
        .expect("schema");
    let names = stmt
        .query_map([], |r| r.get(0))
        .expect("names")
        .collect::<Result<Vec<String>, _>>()
        .expect("names");
    names
}

#[tokio::test]
async fn refused_writes_publish_nothing() {
    let db = Embedded::in_memory(test_options()).expect("open");
    let (store, bus) = (db.store(), db.bus());
    assert!(store.delivers_outbox());
    let e1 = store
        .create("saga", &json!({"n": 1}), &[msg("m1")])
        .await
        .expect("create");
    let conflict = store
        .create("saga", &json!({"n": 0}), &[msg("m-conflict")])
        .await;
    assert!(matches!(conflict, Err(StoreError::Conflict(_))));
    let e2 = store
        .replace("saga", &json!({"n": 2}), &e1, &[msg("m2"), msg("m3")])
        .await
        .expect("replace");
    let stale = store
        .replace("saga", &json!({"n": 3}), &e1, &[msg("m-stale")])
        .await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed(_))));
    let missing = store
        .replace("nobody", &json!({}), &e2, &[msg("m-missing")])
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));

    let mut got = Vec::new();
    while let Some(d) = receive_now(bus.as_ref()).await {
        bus.complete(&d).await.expect("complete");
        got.push(d.message_id);
    }
    assert_eq!(
        got,
        ["m1", "m2", "m3"],
        "only committed writes publish, in order"
    );
}

#[tokio::test]
async fn outbox_messages_are_deduplicated() {
    let db = Embedded::in_memory(test_options()).expect("open");
    let (store, bus) = (db.store(), db.bus());
    let e1 = store
        .create("saga", &json!({"n": 1}), &[msg("same")])
        .await
        .expect("create");
    store
        .replace("saga", &json!({"n": 2}), &e1, &[msg("same")])
        .await
        .expect("replace");
    bus.send(&[msg("same")]).await.expect("send");
    let d = receive_now(bus.as_ref()).await;
    assert!(d.is_some());
    assert!(receive_now(bus.as_ref()).await.is_none());
}

#[tokio::test]
async fn duplicate_window_expires() {
    let options = BusOptions {
        duplicate_detection_window: Duration::from_millis(100),
        ..test_options()
    };
    let db = Embedded::in_memory(options).expect("open");
    let bus = db.bus();
    bus.send(&[msg("m")]).await.expect("send");
    bus.send(&[msg("m")]).await.expect("send");
    let d = receive_now(bus.as_ref()).await.expect("m");
    bus.complete(&d).await.expect("complete");
    assert!(receive_now(bus.as_ref()).await.is_none());
    tokio::time::sleep(Duration::from_millis(120)).await;
    bus.send(&[msg("m")]).await.expect("send after the window");
    assert!(
        receive_now(bus.as_ref()).await.is_some(),
        "an id is accepted again once the window has passed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_twice_delivers_each_message_twice() {
    let options = BusOptions {
        deliver_twice: true,
        ..test_options()
    };
    let db = Embedded::in_memory(options).expect("open");
    let (store, bus) = (db.store(), db.bus());
    bus.send(&[msg("a"), msg("b")]).await.expect("send");
    bus.send(&[msg("a")]).await.expect("send duplicate");
    store
        .create("saga", &json!({}), &[msg("c")])
        .await
        .expect("create");
    let mut counts: HashMap<String, u32> = HashMap::new();
    let mut tokens = std::collections::HashSet::new();
    while let Some(d) = bus
        .receive(Duration::from_millis(100))
        .await
        .expect("receive")
    {
        assert_eq!(d.delivery_count, 1, "each copy is a first delivery");
        assert!(tokens.insert(d.lock_token.clone()));
        *counts.entry(d.message_id.clone()).or_default() += 1;
        bus.complete(&d).await.expect("complete each copy");
    }
    let expected: HashMap<String, u32> = [("a", 2), ("b", 2), ("c", 2)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn reopen_releases_locks_of_a_crashed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    // A long lock: only the release on reopen can make the message visible.
    let options = BusOptions {
        lock_duration: Duration::from_secs(600),
        ..test_options()
    };
    let doc = json!({"status": "Running", "steps": ["a", "b"]});
    let etag = {
        let db = Embedded::open(&path, options.clone()).expect("open");
        let (store, bus) = (db.store(), db.bus());
        let etag = store.create("saga-1", &doc, &[]).await.expect("create");
        bus.send(&[msg("in-flight"), msg("done"), msg("poison")])
            .await
            .expect("send");
        let d = receive_now(bus.as_ref()).await.expect("d");
        assert_eq!((d.message_id.as_str(), d.delivery_count), ("in-flight", 1));
        let done = receive_now(bus.as_ref()).await.expect("done");
        bus.complete(&done).await.expect("complete");
        let poison = receive_now(bus.as_ref()).await.expect("p");
        bus.dead_letter(&poison, "bad").await.expect("dead_letter");
        // Crash: `d` is never settled.
        etag
    };

    let db = Embedded::open(&path, options.clone()).expect("reopen");
    let (store, bus) = (db.store(), db.bus());
    let started = Instant::now();
    let d = bus
        .receive(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("the in-flight message is delivered again");
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    assert_eq!(d.message_id, "in-flight");
    assert_eq!(d.delivery_count, 2, "the crashed delivery counts");
    bus.complete(&d).await.expect("complete");
    assert!(receive_now(bus.as_ref()).await.is_none());

    let stored = store.get("saga-1").await.expect("get").expect("saga-1");
    assert_eq!(
        (stored.doc, stored.etag.clone()),
        (doc.clone(), etag.clone())
    );
    assert_eq!(
        store.etag("saga-1").await.expect("etag"),
        Some(etag.clone()),
        "a reopened store reads the ETag of a saga written before"
    );
    let replaced = store
        .replace("saga-1", &json!({"status": "Done"}), &stored.etag, &[])
        .await
        .expect("the ETag survives the reopen");
    assert_eq!(
        store.etag("saga-1").await.expect("etag"),
        Some(replaced),
        "the ETag check sees the reopened store's own write"
    );
    let dead = bus.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].message_id.as_str(), dead[0].reason.as_str()),
        ("poison", "bad")
    );
    assert_eq!(db.store_writes(), 1, "the counter is per handle");
}

#[tokio::test]
async fn reopen_dead_letters_a_message_that_used_up_its_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    let options = BusOptions {
        max_delivery_count: 1,
        lock_duration: Duration::from_secs(600),
        ..test_options()
    };
    {
        let db = Embedded::open(&path, options.clone()).expect("open");
        let bus = db.bus();
        bus.send(&[msg("crasher")]).await.expect("send");
        receive_now(bus.as_ref()).await.expect("d");
    }
    let db = Embedded::open(&path, options).expect("reopen");
    let bus = db.bus();
    assert!(receive_now(bus.as_ref()).await.is_none());
    let dead = bus.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
    assert_eq!(dead[0].delivery_count, 1);
}

#[tokio::test]
async fn expired_locks_count_towards_the_maximum() {
    let options = BusOptions {
        max_delivery_count: 2,
        lock_duration: Duration::from_millis(50),
        ..test_options()
    };
    let db = Embedded::in_memory(options).expect("open");
    let bus = db.bus();
    bus.send(&[msg("slow")]).await.expect("send");
    for n in 1..=2 {
        let d = bus
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("delivery");
        assert_eq!(d.delivery_count, n);
    }
    // The second lock expires; the message is then dead-lettered, not delivered.
    assert!(bus
        .receive(Duration::from_millis(200))
        .await
        .expect("receive")
        .is_none());
    let dead = bus.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, MAX_DELIVERY_COUNT_EXCEEDED);
}

#[tokio::test]
async fn store_writes_counts_committed_writes() {
    let db = Embedded::in_memory(test_options()).expect("open");
    let store = db.store();
    assert_eq!(db.store_writes(), 0);
    let e1 = store.create("s", &json!(1), &[]).await.expect("create");
    assert!(store.create("s", &json!(2), &[]).await.is_err());
    let e2 = store
        .replace("s", &json!(3), &e1, &[])
        .await
        .expect("replace");
    assert!(store.replace("s", &json!(4), &e1, &[]).await.is_err());
    assert!(store.replace("t", &json!(5), &e2, &[]).await.is_err());
    store.get("s").await.expect("get");
    store.list().await.expect("list");
    assert_eq!(db.store_writes(), 2);
    let clone = db.clone();
    clone
        .store()
        .replace("s", &json!(6), &e2, &[])
        .await
        .expect("replace");
    assert_eq!(db.store_writes(), 3, "clones share the counter");
}

#[tokio::test]
async fn corrupt_rows_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    let db = Embedded::open(&path, test_options()).expect("open");
    let (store, bus) = (db.store(), db.bus());
    store
        .create("good", &json!({"ok": true}), &[])
        .await
        .expect("create");
    store
        .create("bad", &json!({"ok": true}), &[])
        .await
        .expect("create");
    bus.send(&[msg("broken"), msg("fine")]).await.expect("send");
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        raw.execute("UPDATE sagas SET doc = '{not json' WHERE id = 'bad'", [])
            .expect("corrupt doc");
        raw.execute(
            "UPDATE messages SET delivery_count = 'lots' WHERE message_id = 'broken'",
            [],
        )
        .expect("corrupt message");
    }
    assert!(matches!(
        store.get("bad").await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(store.get("good").await.expect("get").is_some());
    assert!(matches!(store.list().await, Err(StoreError::Corrupt(_))));
    store
        .replace("bad", &json!({"ok": 1}), &ETag("\"1\"".into()), &[])
        .await
        .expect("a corrupt document can be overwritten");
    assert!(store.list().await.is_ok(), "and is readable again");
    // An unreadable message goes to the dead-letter queue instead of
    // blocking the queue.
    the_next_receive_is_fine_and_only_this_one_was_dead_lettered_corrupt(bus.as_ref(), "broken")
        .await;
}

/// The next message received is `fine`, and the only one dead-lettered is
/// `corrupt`, for being unreadable.
async fn the_next_receive_is_fine_and_only_this_one_was_dead_lettered_corrupt(
    bus: &dyn EventBus,
    corrupt: &str,
) {
    let d = receive_now(bus).await.expect("fine");
    assert_eq!(d.message_id, "fine");
    let dead = bus.dead_letters().await.expect("dead_letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, corrupt);
    assert!(dead[0].reason.starts_with("Corrupt"), "{}", dead[0].reason);
}

/// A message whose row is unreadable down to the time it becomes due does
/// not stop the database from opening: it is due at once, and the receive
/// that reads it dead-letters it.
#[tokio::test]
async fn a_message_whose_time_is_unreadable_is_dead_lettered_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    let db = Embedded::open(&path, test_options()).expect("open");
    db.bus()
        .send(&[msg("bad-time"), msg("fine")])
        .await
        .expect("send");
    drop(db);
    rusqlite::Connection::open(&path)
        .expect("raw open")
        .execute(
            "UPDATE messages SET available_at = 'soon', delivery_count = 'lots' \
             WHERE message_id = 'bad-time'",
            [],
        )
        .expect("corrupt message");
    let db = Embedded::open(&path, test_options()).expect("the database still opens");
    let bus = db.bus();
    the_next_receive_is_fine_and_only_this_one_was_dead_lettered_corrupt(bus.as_ref(), "bad-time")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_receivers_share_a_burst() {
    // Many idle receivers, then a burst: every message reaches some receiver
    // without waiting out the receive timeout.
    let db = Embedded::in_memory(test_options()).expect("open");
    let bus = db.bus();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let bus = bus.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            while let Some(d) = bus.receive(Duration::from_secs(3)).await.expect("receive") {
                bus.complete(&d).await.expect("complete");
                got.push(d.message_id);
                if got.len() >= 4 {
                    break;
                }
            }
            got
        });
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let burst: Vec<OutMessage> = (0..64).map(|i| msg(&format!("m{i}"))).collect();
    bus.send(&burst).await.expect("send");
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        all.extend(joined.expect("task"));
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 64);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

/// Waiting receivers are woken by the send itself, not by a periodic poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_receiver_wakes_on_send_and_on_schedule() {
    let db = Embedded::in_memory(test_options()).expect("open");
    let bus = db.bus();

    let waiter = tokio::spawn({
        let bus = bus.clone();
        async move { bus.receive(Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = Instant::now();
    bus.send(&[msg("now")]).await.expect("send");
    let d = waiter.await.expect("task").expect("receive").expect("d");
    assert_eq!(d.message_id, "now");
    bus.complete(&d).await.expect("complete");
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "woken by the send (after {:?})",
        sent.elapsed()
    );

    // A receiver already asleep learns about a message scheduled before the
    // end of its wait.
    let waiter = tokio::spawn({
        let bus = bus.clone();
        async move { bus.receive(Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let sent = Instant::now();
    let mut later = msg("later");
    later.not_before = Some(time::OffsetDateTime::now_utc() + Duration::from_millis(200));
    bus.send(&[later]).await.expect("send scheduled");
    let d = waiter.await.expect("task").expect("receive").expect("d");
    assert_eq!(d.message_id, "later");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(190) && took < Duration::from_millis(700),
        "delivered when due (after {took:?})"
    );
}

/// A lock token names its message's row, but only the lock's own token
/// settles it: the same row with another random part is a lost lock, and so
/// is any string that is not a token.
#[tokio::test]
async fn only_the_lock_s_own_token_settles_its_message() {
    let db = Embedded::in_memory(test_options()).expect("open");
    let bus = db.bus();
    bus.send(&[msg("m")]).await.expect("send");
    let d = receive_now(bus.as_ref()).await.expect("m");
    let (seq, _) = d.lock_token.split_once('.').expect("seq.random");
    for forged in [
        format!("{seq}.{}", uuid::Uuid::new_v4()),
        format!("{seq}."),
        seq.to_string(),
        "not-a-token".to_string(),
        String::new(),
    ] {
        let other = Delivery {
            lock_token: forged.clone(),
            ..d.clone()
        };
        for (what, result) in [
            ("complete", bus.complete(&other).await),
            ("abandon", bus.abandon(&other).await),
            ("dead-letter", bus.dead_letter(&other, "x").await),
        ] {
            assert!(
                matches!(result, Err(flotilla_core::ports::BusError::LockLost(_))),
                "{what} with {forged:?}: {result:?}"
            );
        }
    }
    bus.complete(&d)
        .await
        .expect("the lock's own token completes");
    assert!(receive_now(bus.as_ref()).await.is_none());
}

/// A database written before lock tokens named their rows loses its index of
/// tokens on open (every completion would otherwise still write it), and its
/// locked messages are released as after any crash.
#[tokio::test]
async fn opening_an_older_database_drops_its_index_of_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    drop(Embedded::open(&path, test_options()).expect("create"));
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        raw.execute_batch(
            "CREATE UNIQUE INDEX messages_lock ON messages (lock_token) \
             WHERE lock_token IS NOT NULL;
             INSERT INTO messages (message_id, event_type, body, enqueued_at, visible_at, \
             available_at, delivery_count, lock_token) \
             VALUES ('old', 't', x'7b7d', 0, 0, 9999999999999, 1, 'a-bare-uuid');",
        )
        .expect("an older layout");
    }
    let db = Embedded::open(&path, test_options()).expect("reopen");
    let d = receive_now(db.bus().as_ref())
        .await
        .expect("the old lock was released");
    assert_eq!((d.message_id.as_str(), d.delivery_count), ("old", 2));
    db.bus().complete(&d).await.expect("complete");
    drop(db);
    let indexes = schema_names(&path, "type = 'index' AND name = 'messages_lock'");
    assert!(indexes.is_empty(), "{indexes:?}");
}

/// Duplicate detection keeps its ids in two tables that take turns (one
/// B-tree each, keyed by message id, and no index of times). A database made
/// before, with either layout of the single `dedupe` table, hands its ids
/// over on open: a repeat of an id sent before the reopen is still dropped,
/// and the old table is gone.
#[tokio::test]
async fn duplicates_are_dropped_on_a_new_database_and_across_the_reopen_of_an_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let new = dir.path().join("new.db");
    let rowid = dir.path().join("rowid.db");
    let keyed = dir.path().join("keyed.db");
    let just_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    for (path, layout) in [
        (
            &rowid,
            "CREATE TABLE dedupe (message_id TEXT PRIMARY KEY NOT NULL, seen_at INTEGER NOT NULL);",
        ),
        (
            &keyed,
            "CREATE TABLE dedupe (message_id TEXT PRIMARY KEY NOT NULL, seen_at INTEGER NOT NULL) \
             WITHOUT ROWID;",
        ),
    ] {
        rusqlite::Connection::open(path)
            .expect("raw open")
            .execute_batch(&format!(
                "{layout}
                 CREATE INDEX dedupe_seen ON dedupe (seen_at);
                 INSERT INTO dedupe VALUES ('sent-before', {just_now});"
            ))
            .expect("an older layout");
    }
    for path in [&new, &rowid, &keyed] {
        let db = Embedded::open(path, test_options()).expect("open");
        let bus = db.bus();
        if path == &new {
            bus.send(&[msg("sent-before")]).await.expect("send");
            let d = receive_now(bus.as_ref()).await.expect("sent-before");
            bus.complete(&d).await.expect("complete");
        }
        bus.send(&[msg("m")]).await.expect("send");
        bus.send(&[msg("m"), msg("n"), msg("sent-before")])
            .await
            .expect("send again");
        let first = receive_now(bus.as_ref()).await.expect("m");
        bus.complete(&first).await.expect("complete");
        let second = receive_now(bus.as_ref()).await.expect("n");
        assert_eq!(
            (first.message_id.as_str(), second.message_id.as_str()),
            ("m", "n")
        );
        bus.complete(&second).await.expect("complete");
        assert!(
            receive_now(bus.as_ref()).await.is_none(),
            "the repeats were dropped ({})",
            path.display()
        );
        drop(db);
        assert_eq!(
            schema_names(path, "type IN ('table', 'index') AND name LIKE 'dedupe%'"),
            ["dedupe_0", "dedupe_1", "dedupe_turns"],
            "{}",
            path.display()
        );
    }
}

/// The queue's order (when each message becomes receivable, then the order
/// sent) is kept in memory, not in an index of the table: a reopened
/// database reads it back (a released lock makes its message due at its
/// send time again, ahead of the ones sent after it; a scheduled message
/// waits for its time), and an older database loses its index.
#[tokio::test]
async fn the_queue_s_order_is_read_back_on_open_and_no_index_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flotilla.db");
    {
        let db = Embedded::open(&path, test_options()).expect("open");
        let bus = db.bus();
        let mut later = msg("later");
        later.not_before = Some(time::OffsetDateTime::now_utc() + Duration::from_millis(300));
        bus.send(&[later, msg("first")]).await.expect("send");
        let first = receive_now(bus.as_ref()).await.expect("first");
        assert_eq!(first.message_id, "first");
        bus.send(&[msg("second"), msg("third")])
            .await
            .expect("send");
        bus.abandon(&first).await.expect("abandon");
        let second = receive_now(bus.as_ref()).await.expect("second");
        assert_eq!(
            second.message_id, "first",
            "released, it is due first again"
        );
        // Held when the process goes: released on the next open.
        let _held = second;
    }
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        raw.execute_batch("CREATE INDEX messages_available ON messages (available_at, seq);")
            .expect("an older layout");
    }
    let db = Embedded::open(&path, test_options()).expect("reopen");
    let bus = db.bus();
    let mut order = vec![];
    while let Some(d) = receive_now(bus.as_ref()).await {
        order.push((d.message_id.clone(), d.delivery_count));
        bus.complete(&d).await.expect("complete");
    }
    assert_eq!(
        order,
        [
            ("first".into(), 3),
            ("second".into(), 1),
            ("third".into(), 1)
        ]
    );
    let d = bus
        .receive(Duration::from_secs(2))
        .await
        .expect("receive")
        .expect("the scheduled message, once due");
    assert_eq!(d.message_id, "later");
    let indexes = schema_names(&path, "type = 'index' AND tbl_name = 'messages'");
    assert!(
        indexes.is_empty(),
        "no index of the queue's table is kept: {indexes:?}"
    );
}

#[tokio::test]
async fn an_older_database_s_settled_jobs_leave_the_sweep_on_open_and_the_others_follow_their_next_save(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("older.db");
    let now = time::OffsetDateTime::now_utc();
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let quiet = at(now - time::Duration::minutes(5));
    let docs = [
        (
            "a-succeeded",
            json!({"status": "Succeeded", "pending": null, "updatedAt": quiet}),
        ),
        (
            "b-failed-holding",
            json!({"status": "Failed", "pending": null, "updatedAt": quiet, "outbox": []}),
        ),
        (
            "c-running-quiet",
            json!({"status": "Running", "pending": null, "updatedAt": quiet}),
        ),
        (
            "d-running-recent",
            json!({"status": "Running", "pending": null, "updatedAt": at(now)}),
        ),
        (
            "e-unreadable-time",
            json!({"status": "Running", "pending": null, "updatedAt": "yesterday"}),
        ),
    ];
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        raw.execute_batch(
            "CREATE TABLE sagas (id TEXT PRIMARY KEY NOT NULL, version INTEGER NOT NULL, \
             doc TEXT NOT NULL);",
        )
        .expect("the older layout");
        for (id, doc) in &docs {
            raw.execute(
                "INSERT INTO sagas VALUES (?1, 1, ?2)",
                [id, &doc.to_string().as_str()],
            )
            .expect("an older row");
        }
    }
    let swept = |store: std::sync::Arc<dyn flotilla_core::ports::SagaStore>| async move {
        let cut = time::OffsetDateTime::now_utc() - time::Duration::seconds(30);
        conformance::sweepable_ids(store.as_ref(), 10, cut).await
    };
    let db = Embedded::open(&path, test_options()).expect("open");
    let store = db.store();
    assert_eq!(
        swept(store.clone()).await,
        ["b-failed-holding", "c-running-quiet", "e-unreadable-time"]
    );
    {
        let raw = rusqlite::Connection::open(&path).expect("raw open");
        let settled: Vec<String> = raw
            .prepare("SELECT id FROM sagas WHERE settled = 1 ORDER BY id")
            .expect("query")
            .query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("ids");
        assert_eq!(settled, ["a-succeeded"], "marked once, on open");
    }
    // The quiet running job settles and the recent one goes quiet: each
    // save says so, and the sweep follows.
    let settled = json!({"status": "Succeeded", "pending": null, "updatedAt": at(now)});
    store
        .replace("c-running-quiet", &settled, &ETag("\"1\"".into()), &[])
        .await
        .expect("settle");
    let quieter = json!({"status": "Running", "pending": null, "updatedAt": quiet});
    store
        .replace("d-running-recent", &quieter, &ETag("\"1\"".into()), &[])
        .await
        .expect("save");
    assert_eq!(
        swept(store.clone()).await,
        ["b-failed-holding", "d-running-recent", "e-unreadable-time"]
    );
    drop((store, db));
    let db = Embedded::open(&path, test_options()).expect("reopen");
    assert_eq!(
        swept(db.store()).await,
        ["b-failed-holding", "d-running-recent", "e-unreadable-time"],
        "and a reopen changes nothing"
    );
}
