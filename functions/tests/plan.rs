//! `flotilla plan`: the operations of a spec before anything exists, and the
//! removal a `delete` would do for a job that ran.

mod cli_common;
use cli_common::{flotilla, json_of};

#[test]
fn plan_shows_every_step_then_the_job_creates_those_names() {
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla(dir.path(), &["plan", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let plan = json_of(&out);
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["stage", "prereqs", "keys", "master", "workers", "join"]
    );
    assert!(
        !dir.path().join("flotilla.db").exists(),
        "plan stores nothing"
    );
    let text = plan.to_string();
    assert!(text.contains("<redacted>"), "{text}");
    // The default spec's nodes read staging with the job's node identity:
    // no account key is listed, the extension names the identity.
    assert!(!text.contains("listKeys"), "{text}");
    assert!(!text.contains("storageAccountKey"), "{text}");
    assert!(text.contains("userAssignedIdentities"), "{text}");
    assert!(text.contains("\"managedIdentity\""), "{text}");
    assert!(text.contains("StringStartsWith"), "{text}");

    // After a job ran, `plan JOB` lists what delete would remove, newest first.
    let up = flotilla(
        dir.path(),
        &["up", "--output", "json", "--lro-seconds", "0.2"],
    );
    assert_eq!(up.status.code(), Some(0));
    let job = json_of(&up)["job"].as_str().unwrap().to_string();
    let out = flotilla(dir.path(), &["plan", &job, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let removal = json_of(&out);
    let ops = removal["delete"].as_array().unwrap();
    assert!(ops.len() >= 9, "{removal:#}");
    assert!(ops.iter().all(|o| o["method"] == "DELETE"));
    // Newest first: `join`'s outputs secret, then the cluster identity's
    // role assignments, then the pool's scale set.
    let target = |o: &serde_json::Value| o["target"].as_str().unwrap().to_string();
    assert!(
        target(&ops[0]).ends_with("-outputs"),
        "the newest resource goes first: {removal:#}"
    );
    assert!(target(&ops[1]).contains("/roleAssignments/"), "{removal:#}");
    let last_role = ops
        .iter()
        .rposition(|o| {
            let t = target(o);
            t.contains("/roleAssignments/")
                && !t.contains("/blobServices/")
                && !t.contains("/Microsoft.KeyVault/")
        })
        .unwrap();
    assert!(
        target(&ops[last_role + 1]).ends_with("-pool-general"),
        "the pool's scale set follows its role assignments: {removal:#}"
    );
    // `keys`' node identity goes after the scale sets that attach it, after
    // its roles on the job's join secrets, and its reader role on the
    // staging container just before it.
    let identity = ops
        .iter()
        .position(|o| target(o).ends_with(&format!("/userAssignedIdentities/{job}-nodes")))
        .expect("the node identity is removed");
    assert!(identity > last_role + 1, "{removal:#}");
    let secret_roles: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let t = target(o);
            t.contains("/Microsoft.KeyVault/vaults/") && t.contains("/roleAssignments/")
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(secret_roles.len(), 4, "{removal:#}");
    assert!(
        secret_roles
            .iter()
            .all(|&i| i > last_role + 1 && i < identity),
        "{removal:#}"
    );
    assert!(
        target(&ops[identity - 1]).contains("/blobServices/default/containers/staging/providers/Microsoft.Authorization/roleAssignments/"),
        "{removal:#}"
    );
}

#[test]
fn plan_refuses_a_bad_spec_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.json");
    std::fs::write(&spec, r#"{"name": "Not Valid"}"#).unwrap();
    let out = flotilla(dir.path(), &["plan", "--spec", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid spec"), "{err}");
}

#[test]
fn plan_of_a_spec_in_an_existing_vnet_lists_it_as_used_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_str(flotilla_core::spec::EXAMPLE_SPEC).unwrap();
    let vnet = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/corp-net/providers/Microsoft.Network/virtualNetworks/corp";
    spec["network"] = serde_json::json!({"existing": {
        "vnetId": vnet, "controlPlaneSubnet": "cp", "workerSubnet": "nodes"}});
    let file = dir.path().join("spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = flotilla(
        dir.path(),
        &["plan", "--spec", file.to_str().unwrap(), "--output", "json"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = json_of(&out);
    assert_eq!(plan["existing"][0], vnet);
    assert_eq!(plan["existing"].as_array().unwrap().len(), 3);
    let text = plan["steps"].to_string();
    assert!(!text.contains("virtualNetworks/demo"), "no VNet of its own");
    assert!(
        !text.contains("networkSecurityGroups"),
        "no NSG unless attachNsgs"
    );
    assert!(
        text.contains(&format!("{vnet}/subnets/cp")),
        "the masters' subnet"
    );

    let out = flotilla(dir.path(), &["plan", "--spec", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("used as they are"), "{text}");
    // A bad existing network is refused naming the field, exit 2.
    spec["network"]["existing"]["workerSubnet"] = serde_json::json!("cp");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = flotilla(dir.path(), &["plan", "--spec", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("network.existing.workerSubnet"));
}
