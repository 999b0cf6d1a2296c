//! The node bootstrap script, rendered by `stage`, run without Azure: under
//! bash in a temporary root with recorder stubs for the system commands
//! (`flotilla_sim::node::Harness`), its instance metadata, token, Key Vault
//! and Blob calls answered by the simulator over HTTPS.
//!
//! Checked: shellcheck; the phase order; the arguments that matter
//! (control-plane endpoint, discovery hash, certificate key, kubelet's Azure
//! credentials per identity mode, the pinned package repository); that a second
//! run changes nothing; that no secret reaches the log or a command line; and
//! every failure path's exit code and message.

mod common;

use flotilla_azure::vault::Vault;
use flotilla_azure::ResourceId;
use flotilla_core::names;
use flotilla_core::saga::Saga;
use flotilla_core::spec::{ClusterSpec, IdentityMode};
use flotilla_core::steps::node::{self, Role};
use flotilla_core::steps::Env;
use flotilla_sim::node::{Harness, Outcome, FIXTURE_CA_HASH};
use flotilla_sim::{FaultRule, Sim, SimServer};
use std::path::Path;
use std::time::Duration;

/// The admin credential the stub `kubeadm init` puts into the kubeconfig.
const ADMIN_TOKEN: &str = "stub-admin-credential-7f3a";

/// A simulator with a staging account and a job whose spec is staged.
struct World {
    sim: Sim,
    config: flotilla_azure::AzureConfig,
    server: SimServer,
    vault: Vault,
    saga: Saga,
    env: Env,
    tmp: tempfile::TempDir,
}

impl World {
    async fn new(identity: IdentityMode) -> World {
        let s = common::Simulated::start(Duration::ZERO).await;
        let mut spec = ClusterSpec::example();
        spec.identity = identity;
        let saga = Saga::new("demo-boot01".into(), spec, time::OffsetDateTime::now_utc());
        s.staging
            .put(
                &names::spec_blob(&saga.id),
                serde_json::to_vec(&saga.spec).unwrap(),
                "application/json",
                &Default::default(),
            )
            .await
            .unwrap();
        // What `keys` grants the job's nodes, before any of them runs.
        s.resource_group(&saga.spec.resource_group).await;
        s.keys(&saga).await;
        World {
            vault: Vault::new(&s.config).unwrap(),
            config: s.config,
            sim: s.sim,
            server: s.server,
            saga,
            env: s.env,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn script(&self, role: Role<'_>) -> String {
        node::render(&self.saga, &self.env, role)
    }

    /// A node of this job's cluster (nodes of one world share the cluster facts).
    fn node(&self, name: &str) -> Harness {
        Harness::create(
            &self.tmp.path().join(name),
            &self.tmp.path().join("cluster"),
        )
        .unwrap()
    }

    /// The environment the init extension would give the script, with the
    /// VM's metadata endpoint and the simulator's CA.
    fn run_env(&self, vm: &str) -> Vec<(String, String)> {
        let base = &self.server.base_url;
        let mut env = vec![
            ("FLOTILLA_IMDS_URL".to_string(), format!("{base}/imds/{vm}")),
            ("FLOTILLA_AUTHORITY_HOST".into(), base.clone()),
            (
                "CURL_CA_BUNDLE".into(),
                self.sim.ca_cert_path().display().to_string(),
            ),
            ("FLOTILLA_WAIT_TRIES".into(), "2".into()),
            ("FLOTILLA_WAIT_SECONDS".into(), "0".into()),
            ("FLOTILLA_STUB_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ];
        if self.saga.spec.identity == IdentityMode::ServicePrincipal {
            env.push((
                node::SP_SECRET_ENV.into(),
                self.server.info.client_secret.clone(),
            ));
        }
        env
    }

    fn master_vm(&self, i: u32) -> String {
        format!("{}_{i}", names::master_vmss(&self.saga.id))
    }

    fn pool_vm(&self, i: u32) -> String {
        format!("{}_{i}", names::pool_vmss(&self.saga.id, "general"))
    }

    async fn run(&self, node: &Harness, role: Role<'_>, vm: &str) -> Outcome {
        node.run(&self.script(role), &[], &self.run_env(vm))
            .await
            .unwrap()
    }

    async fn secret(&self, name: &str) -> Option<String> {
        self.vault.get(name).await.unwrap()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_ok(out: &Outcome) {
    assert_eq!(out.code, Some(0), "the script failed:\n{}", out.log());
}

/// The `[flotilla] <phase>:` lines, in order.
fn phases(out: &Outcome) -> Vec<String> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("[flotilla] "))
        .filter_map(|l| l.split_once(':').map(|(p, _)| p.to_string()))
        .filter(|p| ["identity", "install", "activate", "publish"].contains(&p.as_str()))
        .collect()
}

fn ran(node: &Harness, needle: &str) -> bool {
    node.calls().iter().any(|c| c.line().contains(needle))
}

fn assert_failed(out: &Outcome, code: i32, phase: &str, message: &str) {
    assert_eq!(out.code, Some(code), "expected exit {code}:\n{}", out.log());
    let last = out.last_line();
    let prefix = format!("[flotilla] {phase} failed (exit {code}): ");
    assert!(
        last.starts_with(&prefix) && last.contains(message),
        "expected `{prefix}…{message}…`, got `{last}`"
    );
}

#[test]
fn rendered_scripts_pass_shellcheck() {
    let shellcheck = std::process::Command::new("shellcheck")
        .arg("--version")
        .output();
    assert!(
        shellcheck.is_ok_and(|o| o.status.success()),
        "shellcheck is not installed (scripts/test.sh installs the Debian package)"
    );
    let dir = tempfile::tempdir().unwrap();
    let sub = "00000000-0000-0000-0000-000000000000";
    let env = Env {
        subscription_id: sub.into(),
        staging_account_id: ResourceId::new(
            sub,
            "rg",
            "Microsoft.Storage",
            "storageAccounts",
            "st",
        ),
        staging_url: "https://st.blob.core.windows.net/staging/".into(),
        keyvault_url: "https://kv.vault.azure.net".into(),
        keyvault_id: ResourceId::new(sub, "rg", "Microsoft.KeyVault", "vaults", "kv"),
        sp_client_id: Some("client".into()),
        tenant_id: Some("tenant".into()),
        sp_object_id: None,
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    };
    let mut files = vec![];
    for mode in [
        IdentityMode::ManagedIdentity,
        IdentityMode::ServicePrincipal,
    ] {
        let mut spec = ClusterSpec::example();
        spec.identity = mode;
        let saga = Saga::new("demo-abc123".into(), spec, time::OffsetDateTime::UNIX_EPOCH);
        for role in node::roles(&saga) {
            let path = dir.path().join(format!("{mode:?}-{}.sh", files.len()));
            std::fs::write(&path, node::render(&saga, &env, role)).unwrap();
            files.push(path);
        }
    }
    let out = std::process::Command::new("shellcheck")
        .args(["--severity=style", "--shell=bash"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_rendering_holds_references_not_secrets() {
    let saga = Saga::new(
        "demo-abc123".into(),
        ClusterSpec::example(),
        time::OffsetDateTime::UNIX_EPOCH,
    );
    let sub = "00000000-0000-0000-0000-000000000000";
    let env = Env {
        subscription_id: sub.into(),
        staging_account_id: ResourceId::new(
            sub,
            "rg",
            "Microsoft.Storage",
            "storageAccounts",
            "st",
        ),
        staging_url: "https://st.blob.core.windows.net/staging/".into(),
        keyvault_url: "https://kv.vault.azure.net/".into(),
        keyvault_id: ResourceId::new(sub, "rg", "Microsoft.KeyVault", "vaults", "kv"),
        sp_client_id: None,
        tenant_id: None,
        sp_object_id: None,
        scaler_role: flotilla_core::steps::rbac::VIRTUAL_MACHINE_CONTRIBUTOR.into(),
    };
    let master = node::render(&saga, &env, Role::Master);
    let pool = node::render(&saga, &env, Role::Pool("general"));
    assert!(master.starts_with("#!/usr/bin/env bash\n"));
    for (script, role, pool_name) in [(&master, "master", ""), (&pool, "worker", "general")] {
        assert!(script.contains(&format!("FLOTILLA_ROLE='{role}'\n")));
        assert!(script.contains(&format!("FLOTILLA_POOL='{pool_name}'\n")));
        assert!(script.contains("API_ENDPOINT='demo-abc123.westeurope.cloudapp.azure.com'\n"));
        assert!(script.contains("KEYVAULT_URL='https://kv.vault.azure.net'\n"));
        assert!(script.contains("K8S_MINOR='v1.34'\n"));
        assert!(script.contains("SECRET_JOIN_TOKEN='demo-abc123-join-token'\n"));
        assert!(script.ends_with(node::TEMPLATE));
    }
    assert_ne!(master, pool, "each role gets its own rendering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_nodes_form_a_cluster_and_a_rerun_changes_nothing() {
    let w = World::new(IdentityMode::ManagedIdentity).await;
    let job = w.saga.id.clone();
    let endpoint = format!("{}:6443", names::api_fqdn(&job, "westeurope"));

    let mut logs = vec![];
    // Workers started before the first master wait, then give up with 44.
    let early = w.node("early-worker");
    let out = w.run(&early, Role::Pool("general"), &w.pool_vm(9)).await;
    assert_failed(&out, 44, "activate", "did not appear in Key Vault");

    // The first master: instance 0 of the master scale set.
    let m0 = w.node("m0");
    let out = w.run(&m0, Role::Master, &w.master_vm(0)).await;
    assert_ok(&out);
    logs.push(out.log());
    assert_eq!(phases(&out), ["identity", "install", "activate"]);
    assert!(out
        .stdout
        .contains("identity: managed-identity tokens obtained and validated"));
    assert!(out.stdout.contains("activate: first master"));

    // Install: kernel, containerd with systemd cgroups, the pinned repository.
    for needle in [
        "modprobe overlay",
        "modprobe br_netfilter",
        "sysctl --system",
        "swapoff -a",
        "systemctl restart containerd",
        "apt-mark hold kubelet kubeadm kubectl",
    ] {
        assert!(ran(&m0, needle), "{needle} was not run: {:?}", m0.calls());
    }
    assert!(read(&m0.file("etc/modules-load.d/flotilla-k8s.conf")).contains("br_netfilter"));
    assert!(read(&m0.file("etc/sysctl.d/99-flotilla-k8s.conf")).contains("net.ipv4.ip_forward = 1"));
    assert!(read(&m0.file("etc/containerd/config.toml")).contains("SystemdCgroup = true"));
    assert_eq!(
        read(&m0.file("etc/apt/sources.list.d/kubernetes.list")),
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.34/deb/ /\n"
    );
    let installs: Vec<String> = m0
        .calls()
        .iter()
        .filter(|c| c.program == "apt-get" && c.args.contains(&"install".to_string()))
        .map(|c| c.line())
        .collect();
    assert!(
        installs.iter().any(|l| l.contains("containerd runc")),
        "{installs:?}"
    );
    assert!(
        installs
            .iter()
            .any(|l| l.contains("kubelet kubeadm kubectl kubernetes-cni")),
        "{installs:?}"
    );

    // Activate: kubeadm init with the load balancer's name as endpoint.
    let init = read(&m0.file("var/lib/flotilla/kubeadm-init.yaml"));
    assert!(
        init.contains(&format!("controlPlaneEndpoint: \"{endpoint}\"")),
        "{init}"
    );
    assert!(init.contains("podSubnet: \"10.244.0.0/16\""), "{init}");
    assert!(init.contains("cgroupDriver: systemd"), "{init}");
    assert!(init.contains("ttl: \"1h\""), "{init}");
    assert!(
        init.contains("value: \"flotilla.io/role=control-plane\""),
        "{init}"
    );
    assert!(
        !init.contains("taints: []"),
        "masters keep their taint unless allowWorkloads"
    );
    assert!(ran(&m0, "kubeadm init --config"));
    assert!(ran(&m0, "kubectl --kubeconfig"), "the CNI is applied");
    assert!(read(&m0.file("var/lib/flotilla/cni.yaml")).contains("10.244.0.0/16"));
    assert!(read(&m0.file("etc/hosts")).contains(&format!(
        "127.0.0.1 {} # flotilla",
        names::api_fqdn(&job, "westeurope")
    )));
    assert!(m0
        .file("etc/systemd/system/flotilla-publish.timer")
        .exists());
    assert!(ran(&m0, "systemctl enable --now flotilla-publish.timer"));
    // Kubelet's Azure credentials: the managed identity, no secret.
    let azure = read(&m0.file("etc/kubernetes/azure.json"));
    assert!(
        azure.contains("\"useManagedIdentityExtension\": true"),
        "{azure}"
    );
    assert!(!azure.contains("aadClientSecret"));

    // Published with the master's own identity, tagged with the job.
    let token = w
        .secret(&names::join_token_secret(&job))
        .await
        .expect("join token");
    assert!(token.len() == 23 && token.as_bytes()[6] == b'.', "{token}");
    assert_eq!(
        w.secret(&names::ca_hash_secret(&job)).await.as_deref(),
        Some(FIXTURE_CA_HASH)
    );
    let cert_key = w
        .secret(&names::cert_key_secret(&job))
        .await
        .expect("certificate key");
    assert_eq!(cert_key.len(), 64);
    let kubeconfig = w
        .secret(&names::kubeconfig_secret(&job))
        .await
        .expect("kubeconfig");
    let kubeconfig = String::from_utf8(base64_decode(&kubeconfig)).unwrap();
    let kc: serde_json::Value = serde_json::from_str(&kubeconfig).unwrap();
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        format!("https://{endpoint}")
    );
    let tagged: Vec<String> = w
        .sim
        .inventory(Some((names::TAG_JOB, &job)))
        .into_iter()
        .map(|i| i.name)
        .collect();
    for s in names::node_secrets(&job) {
        assert!(
            tagged.contains(&s),
            "{s} is not tagged with the job: {tagged:?}"
        );
    }

    // An extra master joins as control plane with the certificate key.
    let m1 = w.node("m1");
    let out = w.run(&m1, Role::Master, &w.master_vm(1)).await;
    assert_ok(&out);
    logs.push(out.log());
    assert!(out.stdout.contains("as a control-plane node"));
    let join = read(&m1.file("var/lib/flotilla/kubeadm-join.yaml"));
    assert!(
        join.contains(&format!("apiServerEndpoint: \"{endpoint}\"")),
        "{join}"
    );
    assert!(
        join.contains(&format!("caCertHashes: [\"{FIXTURE_CA_HASH}\"]")),
        "{join}"
    );
    assert!(
        join.contains(&format!("certificateKey: \"{cert_key}\"")),
        "{join}"
    );
    assert!(!ran(&m1, "kubeadm init --config"));

    // A worker joins as a worker of its pool.
    let wk = w.node("w0");
    let out = w.run(&wk, Role::Pool("general"), &w.pool_vm(0)).await;
    assert_ok(&out);
    logs.push(out.log());
    assert_eq!(phases(&out), ["identity", "install", "activate"]);
    assert!(out.stdout.contains("as a worker of pool general"));
    let join = read(&wk.file("var/lib/flotilla/kubeadm-join.yaml"));
    assert!(
        join.contains(&format!("caCertHashes: [\"{FIXTURE_CA_HASH}\"]")),
        "{join}"
    );
    assert!(
        join.contains("value: \"flotilla.io/role=worker,flotilla.io/pool=general\""),
        "{join}"
    );
    assert!(!join.contains("controlPlane"), "{join}");
    assert!(read(&wk.file("etc/kubernetes/azure.json"))
        .contains("\"useManagedIdentityExtension\": true"));

    // No secret value on a command line or in the log.
    let secrets = [token.as_str(), cert_key.as_str(), ADMIN_TOKEN];
    for (name, node) in [("m0", &m0), ("m1", &m1), ("w0", &wk)] {
        for call in node.calls() {
            let line = call.line();
            assert!(
                !line.contains("Bearer"),
                "{name}: a token on a command line: {line}"
            );
            for s in secrets {
                assert!(
                    !line.contains(s),
                    "{name}: a secret on a command line: {line}"
                );
            }
        }
    }
    for log in &logs {
        for s in secrets {
            assert!(!log.contains(s), "a secret in the log:\n{log}");
        }
    }

    // Second runs: nothing installed, initialised, joined or restarted again;
    // the files stay as they were; the first master re-publishes a fresh token.
    for (node, role, vm) in [
        (&m0, Role::Master, w.master_vm(0)),
        (&m1, Role::Master, w.master_vm(1)),
        (&wk, Role::Pool("general"), w.pool_vm(0)),
    ] {
        let files = [
            "etc/containerd/config.toml",
            "etc/apt/sources.list.d/kubernetes.list",
            "etc/kubernetes/azure.json",
            "etc/hosts",
        ];
        let before: Vec<Option<String>> = files
            .iter()
            .map(|f| std::fs::read_to_string(node.file(f)).ok())
            .collect();
        node.clear_calls().unwrap();
        let again = w.run(node, role, &vm).await;
        assert_ok(&again);
        assert_eq!(phases(&again), ["identity", "install", "activate"]);
        let calls: Vec<String> = node.calls().iter().map(|c| c.line()).collect();
        for forbidden in [
            "apt-get",
            "kubeadm init --config",
            "kubeadm join",
            "systemctl restart",
        ] {
            assert!(
                !calls.iter().any(|c| c.starts_with(forbidden)),
                "a second run ran `{forbidden}`: {calls:?}"
            );
        }
        let after: Vec<Option<String>> = files
            .iter()
            .map(|f| std::fs::read_to_string(node.file(f)).ok())
            .collect();
        assert_eq!(before, after, "a second run changed files");
        for s in secrets {
            assert!(!again.log().contains(s));
        }
    }
    assert!(ran(&m0, "kubeadm token create --ttl 1h"));
    assert!(ran(
        &m0,
        "kubeadm init phase upload-certs --upload-certs --config"
    ));
    let refreshed = w.secret(&names::join_token_secret(&job)).await.unwrap();
    assert_ne!(refreshed, token, "a re-run publishes a fresh token");

    // The timer's `publish` refreshes the join information again.
    let out = m0
        .run(
            &w.script(Role::Master),
            &["publish"],
            &w.run_env(&w.master_vm(0)),
        )
        .await
        .unwrap();
    assert_ok(&out);
    assert_eq!(phases(&out), ["identity", "publish"]);
    assert_ne!(
        w.secret(&names::join_token_secret(&job)).await.unwrap(),
        refreshed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_nodes_use_the_delivered_secret_and_never_show_it() {
    let w = World::new(IdentityMode::ServicePrincipal).await;
    let secret = w.server.info.client_secret.clone();
    let m0 = w.node("m0");
    let out = w.run(&m0, Role::Master, &w.master_vm(0)).await;
    assert_ok(&out);
    assert!(out.stdout.contains("identity: service-principal tokens"));
    let wk = w.node("w0");
    let out_w = w.run(&wk, Role::Pool("general"), &w.pool_vm(0)).await;
    assert_ok(&out_w);
    for node in [&m0, &wk] {
        // Tokens came from the token endpoint, not from the metadata endpoint.
        assert!(ran(node, "/oauth2/v2.0/token"));
        assert!(
            ran(node, "client_secret@"),
            "the secret is read from a file"
        );
        assert!(!ran(node, "metadata/identity"));
        let azure = read(&node.file("etc/kubernetes/azure.json"));
        assert!(azure.contains(&format!("\"aadClientId\": \"{}\"", w.server.info.client_id)));
        assert!(azure.contains(&format!("\"aadClientSecret\": \"{secret}\"")));
        assert!(azure.contains("\"useManagedIdentityExtension\": false"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.file("etc/kubernetes/azure.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "azure.json is root-only");
        for call in node.calls() {
            assert!(
                !call.line().contains(&secret),
                "the secret on a command line: {}",
                call.line()
            );
        }
    }
    for out in [&out, &out_w] {
        assert!(!out.log().contains(&secret));
    }
    // A re-run without the extension's variable reads the secret it kept.
    let mut env = w.run_env(&w.pool_vm(0));
    env.retain(|(k, _)| k != node::SP_SECRET_ENV);
    let again = wk
        .run(&w.script(Role::Pool("general")), &[], &env)
        .await
        .unwrap();
    assert_ok(&again);
}

fn base64_decode(s: &str) -> Vec<u8> {
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}

/// Every failure exits with its own code and says what failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_its_exit_code_and_message() {
    let w = World::new(IdentityMode::ManagedIdentity).await;
    let sp = World::new(IdentityMode::ServicePrincipal).await;
    let master = w.script(Role::Master);
    let vm0 = w.master_vm(0);

    // (name, setup on a fresh node, role, vm, env changes, code, phase, message)
    let bad_mode = w.node("bad-mode");
    let out = bad_mode
        .run(&master, &["bogus"], &w.run_env(&vm0))
        .await
        .unwrap();
    assert_failed(&out, 10, "start", "usage: init.sh [run|publish]");

    let n = w.node("no-imds");
    let mut env = w.run_env(&vm0);
    env[0].1 = format!("{}/imds", w.server.base_url);
    let out = n.run(&master, &[], &env).await.unwrap();
    assert_failed(
        &out,
        21,
        "identity",
        "no Key Vault token from the instance metadata endpoint",
    );

    let n = w.node("no-storage-token");
    n.fail(
        "curl",
        "resource=https://storage.azure.com/",
        "connection refused",
    )
    .unwrap();
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(&out, 22, "identity", "no Storage token");

    let n = sp.node("sp-missing");
    let mut env = sp.run_env(&vm0);
    env.retain(|(k, _)| k != node::SP_SECRET_ENV);
    let out = n.run(&sp.script(Role::Master), &[], &env).await.unwrap();
    assert_failed(&out, 23, "identity", "no secret was delivered");

    let n = sp.node("sp-wrong");
    let mut env = sp.run_env(&vm0);
    for (k, v) in env.iter_mut() {
        if k == node::SP_SECRET_ENV {
            *v = "not-the-secret".into();
        }
    }
    let out = n.run(&sp.script(Role::Master), &[], &env).await.unwrap();
    assert_failed(&out, 23, "identity", "refused service principal");
    assert!(
        out.last_line().contains("invalid_client"),
        "{}",
        out.last_line()
    );
    assert!(!out.log().contains("not-the-secret"));

    let n = w.node("no-vault");
    let mut env_nokv = w.env.clone();
    env_nokv.keyvault_url = format!("{}/no-such-vault", w.server.base_url);
    let script = node::render(&w.saga, &env_nokv, Role::Master);
    let out = n.run(&script, &[], &w.run_env(&vm0)).await.unwrap();
    assert_failed(
        &out,
        24,
        "identity",
        "refused this node's managed-identity token reading demo-boot01-join-token (HTTP 404)",
    );

    // A job whose node identity exists but holds no grant on its secrets.
    let n = w.node("no-grant");
    let mut other = w.saga.clone();
    other.id = "demo-nogrant".into();
    let identity = flotilla_core::steps::keys::node_identity_id(&other, &w.env);
    common::put(
        &w.config,
        &identity,
        flotilla_azure::models::api::MANAGED_IDENTITY,
        serde_json::json!({"location": "westeurope"}),
    )
    .await;
    let script = node::render(&other, &w.env, Role::Master);
    let out = n.run(&script, &[], &w.run_env(&vm0)).await.unwrap();
    assert_failed(
        &out,
        24,
        "identity",
        "refused this node's managed-identity token reading demo-nogrant-join-token (HTTP 403)",
    );

    // Nor can it read this job's secrets with its own identity (as a node
    // of another job would try).
    let n = w.node("other-job");
    let mut script = node::render(&w.saga, &w.env, Role::Master);
    script = script.replace(
        &format!(
            "NODE_IDENTITY_ID='{}'",
            flotilla_core::steps::keys::node_identity_id(&w.saga, &w.env)
        ),
        &format!("NODE_IDENTITY_ID='{identity}'"),
    );
    let out = n.run(&script, &[], &w.run_env(&vm0)).await.unwrap();
    assert_failed(
        &out,
        24,
        "identity",
        "reading demo-boot01-join-token (HTTP 403)",
    );

    // Granted, but its spec was never staged.
    let n = w.node("no-spec");
    let mut other = w.saga.clone();
    other.id = "demo-nospec".into();
    common::keys(&w.config, &w.env, &other).await;
    let script = node::render(&other, &w.env, Role::Master);
    let out = n.run(&script, &[], &w.run_env(&vm0)).await.unwrap();
    assert_failed(&out, 25, "identity", "cannot read the staged spec");

    let n = w.node("no-name");
    n.fail("curl", "compute/name", "connection refused")
        .unwrap();
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(&out, 26, "identity", "did not give this VM's name");

    for (name, program, args, code, message) in [
        (
            "modprobe",
            "modprobe",
            "br_netfilter",
            31,
            "modprobe br_netfilter failed",
        ),
        (
            "containerd",
            "apt-get",
            "containerd",
            32,
            "could not install containerd and runc",
        ),
        (
            "packages",
            "apt-get",
            "kubeadm",
            33,
            "could not install kubelet, kubeadm and kubectl v1.34",
        ),
    ] {
        let n = w.node(name);
        n.fail(program, args, "E: injected failure").unwrap();
        let out = w.run(&n, Role::Master, &vm0).await;
        assert_failed(&out, code, "install", message);
        assert!(out.log().contains("E: injected failure"), "{}", out.log());
    }

    let n = w.node("wrong-minor");
    let mut env = w.run_env(&vm0);
    env.push(("FLOTILLA_STUB_KUBE_VERSION".into(), "v1.33.4".into()));
    let out = n.run(&master, &[], &env).await.unwrap();
    assert_failed(&out, 33, "install", "kubeadm is v1.33.4, expected v1.34.x");

    let n = w.node("no-cni-plugins");
    // Packages that claim to be installed, but without the plugin binaries.
    n.mark_installed(&[
        "containerd",
        "runc",
        "kubelet",
        "kubeadm",
        "kubectl",
        "kubernetes-cni",
        "cri-tools",
    ])
    .unwrap();
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(&out, 34, "install", "CNI plugin bridge is missing");

    let n = w.node("init");
    n.fail(
        "kubeadm",
        "init --config",
        "[preflight] injected: port 6443 is in use",
    )
    .unwrap();
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(
        &out,
        41,
        "activate",
        "kubeadm init failed: [preflight] injected: port 6443 is in use",
    );

    let n = w.node("cni");
    n.fail("kubectl", "apply", "error: injected").unwrap();
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(
        &out,
        42,
        "activate",
        "kubectl apply of the CNI manifest failed",
    );

    let n = w.node("publish");
    w.sim.add_fault(FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("Microsoft.KeyVault/vaults/secrets".into()),
        name_pattern: Some("*-join-token".into()),
        status: 403,
        code: "Forbidden".into(),
        message: None,
        times: None,
        probability: None,
        latency_ms: None,
        asynchronous: false,
        principal: None,
    });
    let out = w.run(&n, Role::Master, &vm0).await;
    assert_failed(
        &out,
        43,
        "activate",
        &format!(
            "refused writing secret {}",
            names::join_token_secret(&w.saga.id)
        ),
    );
    w.sim.clear_faults();

    let n = w.node("join-alone");
    let out = w.run(&n, Role::Pool("general"), &w.pool_vm(0)).await;
    assert_failed(
        &out,
        44,
        "activate",
        "did not appear in Key Vault after 0 s",
    );

    // A worker of the first cluster whose join the cluster refuses.
    let m0 = w.node("m0");
    assert_ok(&w.run(&m0, Role::Master, &vm0).await);
    let n = w.node("join");
    n.fail(
        "kubeadm",
        "join --config",
        "error execution phase preflight: unable to fetch the kubeadm-config ConfigMap",
    )
    .unwrap();
    let out = w.run(&n, Role::Pool("general"), &w.pool_vm(0)).await;
    assert_failed(&out, 45, "activate", "kubeadm join demo-boot01.westeurope.cloudapp.azure.com:6443 failed: error execution phase preflight");

    let n = w.node("kubelet");
    n.fail("systemctl", "is-active", "").unwrap();
    let out = w.run(&n, Role::Pool("general"), &w.pool_vm(1)).await;
    assert_failed(
        &out,
        46,
        "activate",
        "kubelet is not running after the join",
    );
}
