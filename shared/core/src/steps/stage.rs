//! `stage`: takes `io.flotilla.job.requested`; writes the cluster spec and the
//! node init script to the staging container; emits `step.succeeded{stage}`.
//! Undo: delete both blobs (a missing blob counts as deleted).

use super::{Env, Op};
use crate::names;
use crate::saga::Saga;
use crate::spec::IdentityMode;

pub fn plan(saga: &Saga, env: &Env) -> Vec<Op> {
    let spec = serde_json::to_vec_pretty(&saga.spec).expect("specs serialise");
    vec![
        Op::Blob {
            name: names::spec_blob(&saga.id),
            content: spec,
            content_type: "application/json",
        },
        Op::Blob {
            name: names::init_blob(&saga.id),
            content: init_script(saga, env).into_bytes(),
            content_type: "text/x-shellscript",
        },
    ]
}

/// The script every node runs at boot. It carries references (secret ids,
/// blob URLs), never secret values.
pub fn init_script(saga: &Saga, env: &Env) -> String {
    let job = &saga.id;
    let auth = match saga.spec.identity {
        IdentityMode::ManagedIdentity => "managed-identity".to_string(),
        IdentityMode::ServicePrincipal => format!(
            "service-principal\nSP_CLIENT_ID='{}'\nSP_SECRET_ID='{}/secrets/{}'",
            env.sp_client_id.as_deref().unwrap_or(""),
            env.keyvault_url.trim_end_matches('/'),
            names::sp_secret(job)
        ),
    };
    format!(
        "#!/bin/sh\n# flotilla node bootstrap for job {job}\nset -eu\nFLOTILLA_JOB='{job}'\nCLUSTER_SPEC_URL='{}{}'\nKUBELET_AUTH={auth}\nAPI_ENDPOINT_PIP='{}'\n# fetch the spec, install the runtime, join the control plane\necho \"joining $FLOTILLA_JOB\"\n",
        env.staging_url,
        names::spec_blob(job),
        names::public_ip(job),
    )
}
