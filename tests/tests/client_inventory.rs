//! The listing and purge calls the orphan sweep and the check after every
//! undo chain rely on — ARM resources of a resource group with tags and
//! creation time, Key Vault secrets with tags, a purge that respects purge
//! protection, staged blobs with metadata — through flotilla's clients,
//! against the simulator over real HTTPS.

use std::collections::BTreeMap;
use std::time::Duration;

use flotilla_azure::blob::{Staging, StagingAuth};
use flotilla_azure::models::api;
use flotilla_azure::vault::Vault;
use flotilla_azure::Purge;
use flotilla_tests::Harness;
use serde_json::json;
use time::OffsetDateTime;

const RG: &str = "rg-inventory";

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_group_lists_with_tags_and_creation_time() {
    let h = Harness::start(None).await;
    h.resource_group(RG).await;
    let arm = h.arm();
    let started = OffsetDateTime::now_utc() - time::Duration::seconds(5);
    for (name, job) in [("a", "j1"), ("b", "j2")] {
        let id = h.id(RG, "Microsoft.Network", "networkSecurityGroups", name);
        let body = json!({"location": "westeurope", "tags": tags(&[("flotilla-job", job), ("managed-by", "flotilla")]), "properties": {}});
        let put = arm.put(&id, api::NETWORK, &body).await.expect("PUT");
        if let Some(poll) = put.poll {
            arm.wait(&poll, Duration::from_secs(10))
                .await
                .expect("created");
        }
    }
    let all = arm.list_resources(RG, None).await.expect("list");
    assert_eq!(all.len(), 2, "{all:#?}");
    for r in &all {
        assert_eq!(
            r.resource_type.as_deref(),
            Some("Microsoft.Network/networkSecurityGroups")
        );
        assert_eq!(
            r.tag("MANAGED-BY"),
            Some("flotilla"),
            "names compare case-insensitively"
        );
        let created = r.created.expect("$expand=createdTime");
        assert!(
            created >= started && created <= OffsetDateTime::now_utc(),
            "{created}"
        );
        assert!(r.id.ends_with(&format!("/{}", r.name)));
    }
    let j1 = arm
        .list_resources(RG, Some(("flotilla-job", "j1")))
        .await
        .expect("filtered list");
    assert_eq!(j1.len(), 1);
    assert_eq!(j1[0].name, "a");
    assert!(
        j1[0].tags.is_empty(),
        "ARM leaves tags out of a tag-filtered answer"
    );
    let none = arm
        .list_resources("no-such-rg", None)
        .await
        .expect("404 is empty");
    assert!(none.is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_list_with_tags_and_are_purged_unless_the_vault_protects_them() {
    let h = Harness::start(None).await;
    let vault = Vault::new(&h.config).expect("vault client");
    let t = tags(&[("flotilla-job", "j1"), ("managed-by", "flotilla")]);
    vault
        .set("j1-storage-key", "s3cret", &t)
        .await
        .expect("set");
    vault
        .set("other", "x", &BTreeMap::new())
        .await
        .expect("set");
    let listed = vault.list().await.expect("list");
    assert_eq!(listed.len(), 2);
    let mine = listed.iter().find(|s| s.name == "j1-storage-key").unwrap();
    assert_eq!(mine.id, vault.secret_id("j1-storage-key"));
    assert_eq!(mine.tags, t);
    assert!(mine.created.is_some());
    assert!(
        !format!("{listed:?}").contains("s3cret"),
        "a listing never carries a value"
    );

    // A vault without purge protection: delete, then purge leaves nothing.
    vault.delete("j1-storage-key").await.expect("delete");
    assert_eq!(
        vault.purge("j1-storage-key").await.expect("purge"),
        Purge::Gone
    );
    assert_eq!(
        vault.purge("j1-storage-key").await.expect("again"),
        Purge::Gone
    );
    assert_eq!(
        vault.purge("never-existed").await.expect("none"),
        Purge::Gone
    );
    vault
        .set("j1-storage-key", "again", &t)
        .await
        .expect("the name is free again once purged");

    // With purge protection the vault keeps it until its scheduled purge.
    h.sim.set_purge_protection(true);
    vault.delete("j1-storage-key").await.expect("delete");
    let purge = vault.purge("j1-storage-key").await.expect("purge");
    let Purge::Retained { until: Some(until) } = purge else {
        panic!("kept by the vault: {purge:?}");
    };
    assert!(
        until > OffsetDateTime::now_utc() + time::Duration::days(89),
        "{until}"
    );
    let err = vault
        .set("j1-storage-key", "again", &t)
        .await
        .expect_err("a kept name cannot be reused");
    assert_eq!(err.status, Some(409));
    assert!(vault
        .list()
        .await
        .unwrap()
        .iter()
        .all(|s| s.name != "j1-storage-key"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_blobs_list_with_metadata_by_prefix() {
    let h = Harness::start(None).await;
    h.resource_group("rg-staging").await;
    h.storage_account("rg-staging", "stinventory").await;
    let endpoint = format!("{}/stinventory", h.server.info.blob_endpoint);
    let staging =
        Staging::new(&h.config, &endpoint, "staging", StagingAuth::Token).expect("client");
    staging.ensure_container().await.expect("container");
    let meta = tags(&[("flotilla_job", "j1"), ("managed_by", "flotilla")]);
    for name in ["j1/cluster.json", "j1/init.sh"] {
        staging
            .put(name, b"{}".to_vec(), "application/json", &meta)
            .await
            .expect("put");
    }
    staging
        .put(
            "j2/init.sh",
            b"#!/bin/sh".to_vec(),
            "text/plain",
            &BTreeMap::new(),
        )
        .await
        .expect("put");
    let j1 = staging.list(Some("j1/")).await.expect("list");
    let names: Vec<&str> = j1.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, vec!["j1/cluster.json", "j1/init.sh"]);
    for b in &j1 {
        assert_eq!(b.tags, meta);
        assert_eq!(b.id, staging.blob_url(&b.name));
        assert!(b.created.is_some());
    }
    let all = staging.list(None).await.expect("list");
    assert_eq!(all.len(), 3);
    let j2 = all.iter().find(|b| b.name == "j2/init.sh").unwrap();
    assert!(j2.tags.is_empty());
    h.shutdown().await;
}
