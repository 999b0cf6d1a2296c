//! Every rule of `ClusterSpec` validation at its boundary: the last accepted
//! value and the first refused one, each refusal naming the JSON field.
//! Also: serde errors name their field path, and the limits on tags hold for
//! every resource the steps actually create.

use flotilla_azure::ResourceId;
use flotilla_core::names;
use flotilla_core::saga::{Saga, StepName};
use flotilla_core::spec::{self, ClusterSpec, SpecError, EXAMPLE_SPEC};
use flotilla_core::steps::{self, Env, Op};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Real public keys (`ssh-keygen`), of the sizes the tests need.
const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJkG9wwqWInpXG0sGOFeTEA6SwHTXXI1YQejyIxCuieq flotilla@demo";
const RSA_2048: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDG36Nn0gmeFrJWN18HkGN8cnlHFkWtqTlQlHJYdv2wJreVxU0KEZVtNe9tkKQYDYXmDT73qSUNTywiqqj/ye5XeSg+RvP05xOqkOqTvibcJPQDGltJkPIhyWiXeZTkj+6+cK9UDWWOL6ZNI/C8qswj8ejPoCxP13tVSc8+rkqGUyBkWE/ybeU5tR0XWkPF+U+w6dQHBv/ljO7s/zm6PZEM3UouSnM6CEmoaZkNtvIIIna5hR0DeAznyQDK8g4NDO/fcgr4mCuvsJZ8e5Ww//f9n/qKXduh2TRvRP3CaSojUH4QOZIMDvxJfwH3LUGFpU0jLEbk8EjBiWelGM2eWtm1 rsa2048";
const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCk3U7db2yHBt0n1j+10fEi6+WWvB0whz+ZkKqqc8xlbG4C8t7x3XNFLmEHSKpyKaV4V+4NK5jiN/pHVdyVcAHYU+8ekYMu4iPSn6j9dLANHAyIq7+8Jn7zYPWlVZr4ebxMl+mXK4yGg/EtgwV3DaYugLJ0V1yziGxBr10U/oxLuQ== rsa1024";
const ECDSA_256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEp0duujVcTdqqQ7cN2yMYmvA3i8VQiY49L7jK7NaGs8c89zTPkxg+IY6HwVx00TViXOllc049dwIzmTDo1UDbg= ec";

fn with(f: impl FnOnce(&mut ClusterSpec)) -> Result<(), SpecError> {
    let mut s = ClusterSpec::example();
    f(&mut s);
    s.validate()
}

/// Asserts the change is accepted.
#[track_caller]
fn ok(f: impl FnOnce(&mut ClusterSpec)) {
    if let Err(e) = with(f) {
        panic!("expected the spec to be accepted, got {e}");
    }
}

/// Asserts the change is refused at `field`; returns the message.
#[track_caller]
fn refused(field: &str, f: impl FnOnce(&mut ClusterSpec)) -> String {
    match with(f) {
        Ok(()) => panic!("expected {field} to be refused"),
        Err(e) => {
            assert_eq!(e.field, field, "{e}");
            e.message
        }
    }
}

/// The example spec as JSON with one change, through `from_json`.
fn json_with(f: impl FnOnce(&mut Value)) -> Result<ClusterSpec, SpecError> {
    let mut v: Value = serde_json::from_str(EXAMPLE_SPEC).unwrap();
    f(&mut v);
    ClusterSpec::from_json(&v.to_string())
}

fn user_tags(n: usize) -> BTreeMap<String, String> {
    (0..n).map(|i| (format!("t{i}"), "v".into())).collect()
}

#[test]
fn the_example_and_real_keys_are_accepted() {
    ClusterSpec::from_json(EXAMPLE_SPEC).unwrap();
    for key in [ED25519, RSA_2048] {
        ok(|s| s.ssh_public_key = key.into());
    }
    // The comment is optional and may hold spaces.
    ok(|s| s.ssh_public_key = ED25519.rsplit_once(' ').unwrap().0.into());
    ok(|s| s.ssh_public_key = format!("{ED25519} with spaces"));
}

#[test]
fn ssh_keys_are_parsed() {
    let m = refused("sshPublicKey", |s| s.ssh_public_key = RSA_1024.into());
    assert_eq!(m, "RSA key is 1024 bits; Azure needs at least 2048");
    let m = refused("sshPublicKey", |s| s.ssh_public_key = ECDSA_256.into());
    assert!(m.contains("ECDSA"), "{m}");
    let m = refused("sshPublicKey", |s| s.ssh_public_key = String::new());
    assert!(m.contains("empty"), "{m}");
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key = "ssh-ed25519 not*base64".into()
    });
    assert!(m.contains("base64"), "{m}");
    let m = refused("sshPublicKey", |s| s.ssh_public_key = "ssh-ed25519".into());
    assert!(m.contains("no key data"), "{m}");
    // The type on the line must be the type inside the key.
    let rsa_data = RSA_2048.split(' ').nth(1).unwrap();
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("ssh-ed25519 {rsa_data}")
    });
    assert!(m.contains("'ssh-rsa' key"), "{m}");
    // The key made up for the first example is not even base64.
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFlotillaDemoKeyOnlyForTheSimulator x".into()
    });
    assert!(m.contains("base64"), "{m}");
    // Truncated and padded key data.
    let data = ED25519.split(' ').nth(1).unwrap();
    let b64 = base64_of(&{
        let mut raw = unbase64(data);
        raw.pop();
        raw
    });
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("ssh-ed25519 {b64}")
    });
    assert!(m.contains("not a well-formed ssh-ed25519 key"), "{m}");
    let mut short = vec![];
    for part in [&b"ssh-ed25519"[..], &[7u8; 31][..]] {
        short.extend_from_slice(&(part.len() as u32).to_be_bytes());
        short.extend_from_slice(part);
    }
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("ssh-ed25519 {}", base64_of(&short))
    });
    assert_eq!(m, "ED25519 key is 31 bytes; it must be 32");
    let b64 = base64_of(&{
        let mut raw = unbase64(data);
        raw.extend_from_slice(&[0, 0, 0, 0]);
        raw
    });
    refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("ssh-ed25519 {b64}")
    });
    // One line only: a newline would add a second authorized_keys line.
    let m = refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("{ED25519}\n{RSA_2048}")
    });
    assert!(m.contains("one line"), "{m}");
    refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("ssh-dss {data}")
    });
    refused("sshPublicKey", |s| {
        s.ssh_public_key = format!("{ED25519} {}", "x".repeat(spec::SSH_KEY_MAX))
    });
}

#[test]
fn rsa_bit_lengths_at_the_boundaries() {
    // Synthetic keys: only the modulus length matters to validation.
    let rsa = |bits: usize| {
        let mut n = vec![0u8; bits.div_ceil(8)];
        n[0] = 1 << ((bits - 1) % 8);
        *n.last_mut().unwrap() |= 1;
        let mut blob = vec![];
        let mut put = |b: &[u8]| {
            blob.extend_from_slice(&(b.len() as u32).to_be_bytes());
            blob.extend_from_slice(b);
        };
        put(b"ssh-rsa");
        put(&[1, 0, 1]);
        let mut mpint = vec![];
        if n[0] & 0x80 != 0 {
            mpint.push(0);
        }
        mpint.extend_from_slice(&n);
        put(&mpint);
        format!("ssh-rsa {}", base64_of(&blob))
    };
    ok(|s| s.ssh_public_key = rsa(2048));
    ok(|s| s.ssh_public_key = rsa(16384));
    let m = refused("sshPublicKey", |s| s.ssh_public_key = rsa(2047));
    assert_eq!(m, "RSA key is 2047 bits; Azure needs at least 2048");
    let m = refused("sshPublicKey", |s| s.ssh_public_key = rsa(16385));
    assert!(m.contains("16385 bits"), "{m}");
}

fn unbase64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn names_locations_and_groups() {
    ok(|s| s.name = "a".repeat(20));
    refused("name", |s| s.name = "a".repeat(21));
    refused("name", |s| s.name = String::new());
    ok(|s| s.location = "usgovvirginia".into());
    ok(|s| s.location = "a".repeat(spec::LOCATION_MAX));
    refused("location", |s| {
        s.location = "a".repeat(spec::LOCATION_MAX + 1)
    });
    refused("location", |s| s.location = "West Europe".into());
    refused("location", |s| s.location = "WestEurope".into());
    refused("location", |s| s.location = "2west".into());
    // A huge value is refused without being echoed back.
    let m = refused("location", |s| s.location = "x".repeat(100_000));
    assert!(m.len() < 300, "{m}");
    ok(|s| s.resource_group = "rg_(x).y-Ünïcode".into());
    ok(|s| s.resource_group = "r".repeat(90));
    refused("resourceGroup", |s| s.resource_group = "r".repeat(91));
    refused("resourceGroup", |s| s.resource_group = "rg.".into());
    refused("resourceGroup", |s| s.resource_group = "rg/x".into());
}

#[test]
fn admin_usernames() {
    ok(|s| s.admin_username = "azureuser".into());
    ok(|s| s.admin_username = format!("a{}", "b".repeat(31)));
    ok(|s| s.admin_username = "ops_team-1".into());
    refused("adminUsername", |s| s.admin_username = "a".repeat(33));
    refused("adminUsername", |s| s.admin_username = String::new());
    refused("adminUsername", |s| s.admin_username = "1ops".into());
    refused("adminUsername", |s| s.admin_username = "Ops".into());
    for reserved in ["root", "admin", "administrator", "sshd", "www-data", "a"] {
        let m = refused("adminUsername", |s| s.admin_username = reserved.into());
        assert!(m.contains("reserved"), "{reserved}: {m}");
    }
}

#[test]
fn tag_counts_include_flotillas_own() {
    // Key Vault's 15 tags per secret bind: flotilla adds 2 to every secret.
    assert_eq!(spec::MAX_USER_TAGS, 13);
    ok(|s| s.tags = user_tags(spec::MAX_USER_TAGS));
    let m = refused("tags", |s| s.tags = user_tags(spec::MAX_USER_TAGS + 1));
    assert!(m.contains("at most 13"), "{m}");
    refused("tags", |s| s.tags = user_tags(10_000));
}

#[test]
fn tag_names_and_values() {
    let tag = |k: &str, v: &str| {
        let (k, v) = (k.to_string(), v.to_string());
        move |s: &mut ClusterSpec| s.tags = BTreeMap::from([(k, v)])
    };
    let long = "n".repeat(spec::TAG_NAME_MAX);
    ok(tag(&long, "v"));
    let too_long = "n".repeat(spec::TAG_NAME_MAX + 1);
    let m = refused(&format!("tags.{}…", "n".repeat(64)), tag(&too_long, "v"));
    assert!(m.contains("513"), "{m}");
    ok(tag("k", &"v".repeat(spec::TAG_VALUE_MAX)));
    refused("tags.k", tag("k", &"v".repeat(spec::TAG_VALUE_MAX + 1)));
    ok(tag("k", ""));
    refused("tags.", tag("", "v"));
    for bad in ["a<b", "a>b", "a%b", "a&b", "a\\b", "a?b", "a/b", "a\nb"] {
        refused(&format!("tags.{bad}"), tag(bad, "v"));
    }
    for reserved in ["microsoft.x", "Azure-cost", "WINDOWSthing"] {
        let m = refused(&format!("tags.{reserved}"), tag(reserved, "v"));
        assert!(m.contains("reserved by Azure"), "{m}");
    }
    ok(tag("my-azure", "v"));
    for own in [names::TAG_JOB, "Managed-By", names::TAG_ROLE] {
        let m = refused(&format!("tags.{own}"), tag(own, "v"));
        assert!(m.contains("set by flotilla"), "{m}");
    }
    // Staged as blob metadata: a C# identifier, unique case-insensitively.
    refused("tags.1st", tag("1st", "v"));
    ok(tag("_1st", "v"));
    let m = refused("tags.flotilla_job", tag("flotilla_job", "v"));
    assert!(m.contains("collides with tag 'flotilla-job'"), "{m}");
    let m = refused("tags.env", |s| {
        s.tags = BTreeMap::from([("Env".into(), "a".into()), ("env".into(), "b".into())])
    });
    assert!(m.contains("'Env'"), "{m}");
    refused("tags.cost_center", |s| {
        s.tags = BTreeMap::from([
            ("cost-center".into(), "a".into()),
            ("cost_center".into(), "b".into()),
        ])
    });
    // Values are printable ASCII (blob metadata headers).
    refused("tags.owner", tag("owner", "José"));
    refused("tags.owner", tag("owner", "a\tb"));
    ok(tag("owner", "Jose Garcia <ops@example.com>"));
}

#[test]
fn tags_fit_blob_metadata() {
    // 13 tags of 500 + 128 bytes is 8164 bytes; flotilla's own (41 bytes for
    // the job `demo-xxxxxx`) push it past 8192.
    let big = |value: usize| {
        move |s: &mut ClusterSpec| {
            s.tags = (0..13)
                .map(|i| (format!("t{i:02}{}", "n".repeat(497)), "v".repeat(value)))
                .collect()
        }
    };
    let m = refused("tags", big(128));
    assert!(m.contains("8192"), "{m}");
    ok(big(100));
}

#[test]
fn master_pools_and_disks() {
    for size in [1, 3, 5] {
        ok(|s| s.master.size = size);
    }
    for size in [0, 2, 4, 7] {
        refused("master.size", |s| s.master.size = size);
    }
    ok(|s| s.master.disk.size_gb = 30);
    ok(|s| s.master.disk.size_gb = 4095);
    refused("master.disk.sizeGb", |s| s.master.disk.size_gb = 29);
    refused("master.disk.sizeGb", |s| s.master.disk.size_gb = 4096);
    refused("master.disk.type", |s| {
        s.master.disk.kind = "PremiumV2_LRS".into()
    });
    refused("workerPools[0].disk.sizeGb", |s| {
        s.worker_pools[0].disk.size_gb = 32767
    });
    ok(|s| s.worker_pools[0].disk.kind = "StandardSSD_ZRS".into());
    refused("master.instanceType", |s| {
        s.master.instance_type = format!("Standard_{}", "D".repeat(60))
    });

    // Pools: 1..=10, unique valid names, min <= max <= 100.
    let pool = |i: usize| {
        let mut p = ClusterSpec::example().worker_pools[0].clone();
        p.name = format!("p{i}");
        p.min = 1;
        p.max = 1;
        p
    };
    ok(|s| s.worker_pools = (0..spec::MAX_POOLS).map(pool).collect());
    let m = refused("workerPools", |s| {
        s.worker_pools = (0..=spec::MAX_POOLS).map(pool).collect()
    });
    assert!(m.contains("at most 10"), "{m}");
    refused("workerPools", |s| s.worker_pools.clear());
    ok(|s| {
        s.worker_pools.clear();
        s.master.allow_workloads = true
    });
    ok(|s| s.worker_pools[0].name = "a".repeat(12));
    refused("workerPools[0].name", |s| {
        s.worker_pools[0].name = "a".repeat(13)
    });
    refused("workerPools[0].name", |s| {
        s.worker_pools[0].name = "master".into()
    });
    refused("workerPools[1].name", |s| {
        s.worker_pools = vec![pool(1), pool(1)]
    });
    // Pools whose names share 7 letters would name their nodes alike.
    let m = refused("workerPools[1].name", |s| {
        let (mut a, mut b) = (pool(0), pool(1));
        a.name = "general1".into();
        b.name = "general2".into();
        s.worker_pools = vec![a, b];
    });
    assert!(m.contains("host names"), "{m}");
    ok(|s| {
        s.worker_pools[0].min = 0;
        s.worker_pools[0].max = spec::MAX_POOL_NODES;
    });
    refused("workerPools[0].max", |s| {
        s.worker_pools[0].max = spec::MAX_POOL_NODES + 1
    });
    refused("workerPools[0].max", |s| {
        s.worker_pools[0].min = 0;
        s.worker_pools[0].max = 0
    });
    ok(|s| s.worker_pools[0].min = s.worker_pools[0].max);
    refused("workerPools[0].min", |s| {
        s.worker_pools[0].min = s.worker_pools[0].max + 1
    });
    ok(|s| s.worker_pools[0].zones = vec!["3".into(), "1".into()]);
    refused("workerPools[0].zones[1]", |s| {
        s.worker_pools[0].zones = vec!["1".into(), "1".into()]
    });
    refused("workerPools[0].zones[0]", |s| {
        s.worker_pools[0].zones = vec!["0".into()]
    });
}

#[test]
fn subnets_hold_the_nodes() {
    // A /29 keeps 3 addresses after Azure's 5: enough for 3 masters, not 5.
    let cp29 = |s: &mut ClusterSpec| s.network.control_plane_subnet_cidr = "10.42.0.0/29".into();
    ok(|s| {
        cp29(s);
        s.master.size = 3
    });
    let m = refused("network.controlPlaneSubnetCidr", |s| {
        cp29(s);
        s.master.size = 5
    });
    assert!(m.contains("needs 5"), "{m}");
    refused("network.controlPlaneSubnetCidr", |s| {
        s.network.control_plane_subnet_cidr = "10.42.0.0/30".into()
    });
    // Workers: the pools' max total against the worker subnet (/26: 59 usable).
    let wk26 = |s: &mut ClusterSpec| s.network.worker_subnet_cidr = "10.42.16.0/26".into();
    ok(|s| {
        wk26(s);
        s.worker_pools[0].max = 59
    });
    let m = refused("network.workerSubnetCidr", |s| {
        wk26(s);
        s.worker_pools[0].max = 60
    });
    assert!(m.contains("add up to 60"), "{m}");
    refused("network.vnetCidr", |s| {
        s.network.vnet_cidr = "10.0.0.0/7".into()
    });
}

#[test]
fn serde_errors_name_the_field_path() {
    type Change = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Change)> = vec![
        ("name", Box::new(|v| v["name"] = json!(123))),
        (
            "workerPools[0].min",
            Box::new(|v| v["workerPools"][0]["min"] = json!("two")),
        ),
        (
            "workerPools[0].max",
            Box::new(|v| v["workerPools"][0]["max"] = json!(-1)),
        ),
        (
            "master.disk.sizeGb",
            Box::new(|v| v["master"]["disk"]["sizeGb"] = json!(1.5)),
        ),
        ("tags.env", Box::new(|v| v["tags"]["env"] = json!(1))),
        ("identity", Box::new(|v| v["identity"] = json!("password"))),
        (
            "workerPools[0].zones[0]",
            Box::new(|v| v["workerPools"][0]["zones"][0] = json!(1)),
        ),
        (
            "network.extra",
            Box::new(|v| v["network"]["extra"] = json!(true)),
        ),
        (
            "location",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("location");
            }),
        ),
        (
            "workerPools[0].disk",
            Box::new(|v| {
                v["workerPools"][0].as_object_mut().unwrap().remove("disk");
            }),
        ),
        (
            "sshPublicKey",
            Box::new(|v| v["sshPublicKey"] = Value::Null),
        ),
    ];
    for (field, change) in cases {
        let e = json_with(change).unwrap_err();
        assert_eq!(e.field, field, "{e}");
    }
    let e = ClusterSpec::from_json("[]").unwrap_err();
    assert_eq!(e.field, "spec", "{e}");
    let e = ClusterSpec::from_json(&format!("{EXAMPLE_SPEC} trailing")).unwrap_err();
    assert_eq!(e.field, "spec", "{e}");
    // A huge wrong value is not echoed back whole.
    let e = json_with(|v| v["master"]["size"] = json!("x".repeat(100_000))).unwrap_err();
    assert_eq!(e.field, "master.size");
    assert!(e.message.len() < 400, "{}", e.message.len());
}

fn env() -> Env {
    let sub = "00000000-0000-0000-0000-000000000000";
    Env {
        subscription_id: sub.into(),
        staging_account_id: ResourceId::new(
            sub,
            "flotilla-ops",
            "Microsoft.Storage",
            "storageAccounts",
            "flotillastaging",
        ),
        staging_url: "https://flotillastaging.blob.core.windows.net/staging/".into(),
        keyvault_url: "https://flotilla-kv.vault.azure.net".into(),
        keyvault_id: ResourceId::new(
            sub,
            "flotilla-ops",
            "Microsoft.KeyVault",
            "vaults",
            "flotilla-kv",
        ),
        sp_client_id: None,
        tenant_id: None,
        sp_object_id: None,
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    }
}

/// With the most tags a spec may have, no resource the steps create carries
/// more than Azure allows, and secrets and blobs (tagged with `names::tags`)
/// stay within Key Vault's and Blob Storage's limits.
#[test]
fn every_created_resource_stays_within_azures_tag_limits() {
    let mut s = ClusterSpec::example();
    s.tags = user_tags(spec::MAX_USER_TAGS);
    s.validate().unwrap();
    let job = names::new_job_id(&s);
    let all = names::tags(&job, &s);
    assert!(all.len() <= spec::KEYVAULT_MAX_TAGS, "{}", all.len());
    let saga = Saga::new(job.clone(), s, time::OffsetDateTime::now_utc());
    let mut checked = 0;
    for step in [
        StepName::Stage,
        StepName::Prereqs,
        StepName::Keys,
        StepName::Master,
        StepName::Workers,
        StepName::Join,
    ] {
        for op in steps::plan(step, &saga, &env()) {
            let body = match op {
                Op::Arm { body, .. } | Op::ScaleSet { body, .. } => body,
                _ => continue,
            };
            let tags = body["tags"]
                .as_object()
                .expect("every ARM resource is tagged");
            assert!(tags.len() <= spec::ARM_MAX_TAGS, "{step:?}: {}", tags.len());
            for k in tags.keys() {
                assert!(
                    all.contains_key(k) || k == names::TAG_ROLE,
                    "{step:?} adds tag {k}; count it in names::MAX_OWN_TAGS_PER_RESOURCE"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} ARM resources planned");
}
