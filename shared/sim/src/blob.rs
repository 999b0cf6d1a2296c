//! A minimal Blob service: containers and block blobs under `/blob/{account}/...`,
//! for storage accounts that exist in ARM.

use crate::doc::Doc;
use crate::state::{Blob, Container, State};
use crate::util::{empty, http_date, now_ms, set_header, Ctx};
use crate::{lock, Sim};
use axum::body::Body;
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;

const STORAGE_TYPE: &str = "Microsoft.Storage/storageAccounts";
const DEFAULT_VERSION: &str = "2025-01-05";

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A storage error: XML body `<Error><Code/><Message/></Error>` and `x-ms-error-code`.
pub(crate) fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{}\nTime:{}</Message></Error>",
        xml_escape(code),
        xml_escape(message),
        uuid::Uuid::new_v4(),
        crate::util::rfc3339(now_ms()),
    );
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    set_header(&mut r, "x-ms-error-code", code);
    r
}

fn new_etag() -> String {
    format!(
        "\"0x{}\"",
        &uuid::Uuid::new_v4().simple().to_string()[..15].to_uppercase()
    )
}

/// The storage account named `name` (any casing).
fn storage_account<'a>(st: &'a State, name: &str) -> Option<&'a crate::state::Resource> {
    st.of_type(STORAGE_TYPE)
        .find(|r| r.name.eq_ignore_ascii_case(name))
}

fn common(r: &mut Response, ctx: &Ctx) {
    let v = ctx
        .header("x-ms-version")
        .unwrap_or(DEFAULT_VERSION)
        .to_string();
    set_header(r, "x-ms-version", &v);
    set_header(r, "date", &http_date(now_ms()));
    if let Some(c) = ctx.header("x-ms-client-request-id") {
        let c = c.to_string();
        set_header(r, "x-ms-client-request-id", &c);
    }
}

/// Checks a request of a VM's identity (see [`crate::rbac`]): a VM may only
/// read blobs, and only those a role assignment of its identity grants it
/// (a node reads its job's staged spec; it never writes).
#[allow(clippy::result_large_err)]
pub(crate) fn authorize(
    sim: &Sim,
    ctx: &Ctx,
    caller: &crate::imds::VmCaller<'_>,
) -> Result<(), Response> {
    let refused = || {
        xml_error(
            StatusCode::FORBIDDEN,
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        )
    };
    if !matches!(ctx.method, Method::GET | Method::HEAD) || ctx.segs.len() < 4 {
        return Err(refused());
    }
    let st = lock(&sim.inner.state);
    let Some(account) = storage_account(&st, &ctx.segs[1]) else {
        // No such account: the handler answers that.
        return Ok(());
    };
    let principal = crate::rbac::principal_of(&st, caller).unwrap_or_default();
    let blob = ctx.segs[3..].join("/");
    crate::rbac::may_read_blob(&st, &principal, &account.id, &ctx.segs[2], &blob)
        .map_err(|_| refused())
}

/// Handles `/blob/{account}[/{container}[/{blob}]]`.
pub(crate) fn handle(sim: &Sim, ctx: &Ctx) -> Response {
    let mut r = route(sim, ctx);
    common(&mut r, ctx);
    r
}

fn route(sim: &Sim, ctx: &Ctx) -> Response {
    let Some(account) = ctx.segs.get(1).cloned() else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "An account name is required.",
        );
    };
    if storage_account(&lock(&sim.inner.state), &account).is_none() {
        return xml_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!("The storage account '{account}' does not exist."),
        );
    }
    let Some(container) = ctx.segs.get(2).cloned() else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "A container name is required.",
        );
    };
    let ckey = format!("{account}/{container}").to_ascii_lowercase();
    if ctx.segs.len() == 3 {
        return container_op(sim, ctx, &ckey, &container);
    }
    let blob = ctx.segs[3..].join("/");
    match ctx.method {
        Method::PUT => put_blob(sim, ctx, &ckey, &blob),
        Method::GET | Method::HEAD => get_blob(sim, ctx, &ckey, &blob),
        Method::DELETE => {
            let removed = {
                let mut st = lock(&sim.inner.state);
                match st.containers.get_mut(&ckey) {
                    None => return container_not_found(),
                    Some(c) => c.blobs.remove(&blob).is_some(),
                }
            };
            if !removed {
                return blob_not_found();
            }
            sim.persist_now();
            let mut r = empty(StatusCode::ACCEPTED);
            set_header(&mut r, "x-ms-delete-type-permanent", "true");
            r
        }
        _ => xml_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            "The resource doesn't support the specified HTTP verb.",
        ),
    }
}

fn container_not_found() -> Response {
    xml_error(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        "The specified container does not exist.",
    )
}

fn blob_not_found() -> Response {
    xml_error(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
    )
}

fn container_op(sim: &Sim, ctx: &Ctx, ckey: &str, name: &str) -> Response {
    if ctx.q("restype") != Some("container") {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "Container operations require restype=container.",
        );
    }
    let valid = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.contains("--");
    if !valid {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            "The specified resource name contains invalid characters.",
        );
    }
    match (ctx.method.clone(), ctx.q("comp")) {
        (Method::PUT, None) => {
            let (etag, modified) = {
                let mut st = lock(&sim.inner.state);
                if st.containers.contains_key(ckey) {
                    return xml_error(
                        StatusCode::CONFLICT,
                        "ContainerAlreadyExists",
                        "The specified container already exists.",
                    );
                }
                let c = Container {
                    name: name.to_string(),
                    etag: new_etag(),
                    modified_ms: now_ms(),
                    blobs: st.new_blobs(),
                };
                let out = (c.etag.clone(), c.modified_ms);
                st.containers.insert(ckey.to_string(), c);
                out
            };
            sim.persist_now();
            let mut r = empty(StatusCode::CREATED);
            set_header(&mut r, "etag", &etag);
            set_header(&mut r, "last-modified", &http_date(modified));
            r
        }
        (Method::DELETE, None) => {
            let removed = lock(&sim.inner.state).containers.remove(ckey).is_some();
            if !removed {
                return container_not_found();
            }
            sim.persist_now();
            empty(StatusCode::ACCEPTED)
        }
        (Method::GET | Method::HEAD, None) => {
            let st = lock(&sim.inner.state);
            let Some(c) = st.containers.get(ckey) else {
                return container_not_found();
            };
            let mut r = empty(StatusCode::OK);
            set_header(&mut r, "etag", &c.etag);
            set_header(&mut r, "last-modified", &http_date(c.modified_ms));
            r
        }
        (Method::GET, Some("list")) => {
            let st = lock(&sim.inner.state);
            let Some(c) = st.containers.get(ckey) else {
                return container_not_found();
            };
            let prefix = ctx.q("prefix").unwrap_or("");
            let with_metadata = ctx
                .q("include")
                .is_some_and(|i| i.split(',').any(|p| p.trim() == "metadata"));
            let mut xml = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"{}/blob/{}/\" ContainerName=\"{}\"><Blobs>",
                xml_escape(&ctx.base),
                xml_escape(ctx.segs.get(1).map(String::as_str).unwrap_or("")),
                xml_escape(&c.name)
            );
            for (_, b) in c.blobs.with_prefix(prefix.to_string()) {
                let len = b.data.len();
                xml.push_str(&format!(
                    "<Blob><Name>{}</Name><Properties><Last-Modified>{}</Last-Modified><Etag>{}</Etag><Content-Length>{}</Content-Length><Content-Type>{}</Content-Type><BlobType>BlockBlob</BlobType></Properties>",
                    xml_escape(&b.name),
                    http_date(b.modified_ms),
                    xml_escape(&b.etag),
                    len,
                    xml_escape(b.content_type.as_deref().unwrap_or("application/octet-stream")),
                ));
                if with_metadata {
                    // Names are C# identifiers (checked on upload): safe as element names.
                    let pairs: String = b
                        .metadata
                        .iter()
                        .map(|(k, v)| format!("<{k}>{}</{k}>", xml_escape(v)))
                        .collect();
                    xml.push_str(&format!("<Metadata>{pairs}</Metadata>"));
                }
                xml.push_str("</Blob>");
            }
            xml.push_str("</Blobs><NextMarker /></EnumerationResults>");
            let mut r = Response::new(Body::from(xml));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            r
        }
        _ => xml_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UnsupportedHttpVerb",
            "The resource doesn't support the specified HTTP verb.",
        ),
    }
}

fn put_blob(sim: &Sim, ctx: &Ctx, ckey: &str, name: &str) -> Response {
    if ctx.q("comp").is_some() {
        return xml_error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "Only single-shot block blob uploads are simulated.",
        );
    }
    match ctx.header("x-ms-blob-type") {
        Some(t) if t.eq_ignore_ascii_case("BlockBlob") => {}
        Some(_) => {
            return xml_error(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "Only BlockBlob is supported for x-ms-blob-type.",
            )
        }
        None => return xml_error(
            StatusCode::BAD_REQUEST,
            "MissingRequiredHeader",
            "An HTTP header that's mandatory for this request is not specified: x-ms-blob-type.",
        ),
    }
    let metadata: BTreeMap<String, String> = ctx
        .headers
        .iter()
        .filter_map(|(k, v)| {
            let key = k.as_str().strip_prefix("x-ms-meta-")?;
            Some((key.to_string(), v.to_str().ok()?.to_string()))
        })
        .collect();
    // Metadata names are C# identifiers, as on Azure (no '-').
    let valid_name = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if metadata.keys().any(|k| !valid_name(k)) {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidMetadata",
            "The metadata specified is invalid. It has characters that are not permitted.",
        );
    }
    let content_type = ctx
        .header("x-ms-blob-content-type")
        .or_else(|| ctx.header("content-type"))
        .map(str::to_string);
    // Cut and shared before the state's lock is taken.
    let data = crate::content::Content::new(&ctx.body);
    let (etag, modified) = {
        let mut st = lock(&sim.inner.state);
        let Some(c) = st.containers.get_mut(ckey) else {
            return container_not_found();
        };
        let existing = c.blobs.get(name);
        if ctx.header("if-none-match") == Some("*") && existing.is_some() {
            return xml_error(
                StatusCode::CONFLICT,
                "BlobAlreadyExists",
                "The specified blob already exists.",
            );
        }
        if let Some(want) = ctx.header("if-match") {
            if want != "*" && existing.map(|b| b.etag.as_str()) != Some(want) {
                return xml_error(
                    StatusCode::PRECONDITION_FAILED,
                    "ConditionNotMet",
                    "The condition specified using HTTP conditional header(s) is not met.",
                );
            }
        }
        let b = Blob {
            name: name.to_string(),
            // Its own copy: the request's buffer belongs to the caller (in process, the engine's).
            data,
            content_type,
            metadata,
            etag: new_etag(),
            modified_ms: now_ms(),
            base: ctx.base.clone(),
        };
        let out = (b.etag.clone(), b.modified_ms);
        c.blobs.insert(name.to_string(), b);
        out
    };
    sim.persist_now();
    let mut r = empty(StatusCode::CREATED);
    set_header(&mut r, "etag", &etag);
    set_header(&mut r, "last-modified", &http_date(modified));
    set_header(&mut r, "x-ms-request-server-encrypted", "true");
    r
}

/// Parses `bytes=a-b` / `bytes=a-` into a start and optional inclusive end.
fn parse_range(h: &str) -> Option<(usize, Option<usize>)> {
    let r = h.trim().strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((start, end))
}

fn get_blob(sim: &Sim, ctx: &Ctx, ckey: &str, name: &str) -> Response {
    let blob = {
        let st = lock(&sim.inner.state);
        let Some(c) = st.containers.get(ckey) else {
            return container_not_found();
        };
        match c.blobs.get(name) {
            Some(b) => b.clone(),
            None => return blob_not_found(),
        }
    };
    let data = blob.data.to_bytes();
    let total = data.len();
    let range = ctx
        .header("x-ms-range")
        .or_else(|| ctx.header("range"))
        .and_then(parse_range);
    let (status, slice, content_range) = match range {
        Some((start, end)) => {
            if start >= total {
                let mut r = xml_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                );
                set_header(&mut r, "content-range", &format!("bytes */{total}"));
                return r;
            }
            let end = end.unwrap_or(total - 1).min(total - 1);
            (
                StatusCode::PARTIAL_CONTENT,
                data.slice(start..=end),
                Some(format!("bytes {start}-{end}/{total}")),
            )
        }
        None => (StatusCode::OK, data, None),
    };
    let len = slice.len();
    let mut r = if ctx.method == Method::HEAD {
        empty(status)
    } else {
        Response::new(Body::from(slice))
    };
    *r.status_mut() = status;
    set_header(&mut r, "content-length", &len.to_string());
    set_header(
        &mut r,
        "content-type",
        blob.content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    );
    set_header(&mut r, "etag", &blob.etag);
    set_header(&mut r, "last-modified", &http_date(blob.modified_ms));
    set_header(&mut r, "x-ms-creation-time", &http_date(blob.modified_ms));
    set_header(&mut r, "x-ms-blob-type", "BlockBlob");
    set_header(&mut r, "accept-ranges", "bytes");
    set_header(&mut r, "x-ms-server-encrypted", "true");
    if let Some(cr) = content_range {
        set_header(&mut r, "content-range", &cr);
    }
    for (k, v) in &blob.metadata {
        if let (Ok(name), Ok(val)) = (
            http::HeaderName::from_bytes(format!("x-ms-meta-{k}").as_bytes()),
            HeaderValue::from_str(v),
        ) {
            r.headers_mut().insert(name, val);
        }
    }
    r
}

/// What a VMSS instance does to fetch one CustomScript `fileUris` entry with the
/// extension's protected settings, on a scale set with `identity` (its ARM
/// `identity` block): the account must exist, the blob must exist, and the
/// credential must open it — with `managedIdentity` (`{}` the system-assigned
/// identity, `{"objectId"|"clientId": …}` a user-assigned one attached to the
/// scale set) a role assignment of that identity must grant the blob read
/// there ([`crate::rbac::may_read_blob`], conditions included); otherwise
/// `storageAccountKey` must be one of the account's current keys. Errors
/// never contain the key.
pub(crate) fn fetch_for_vm(
    st: &State,
    identity: &Value,
    settings: &Value,
    uri: &str,
) -> Result<(), String> {
    let url = url::Url::parse(uri)
        .map_err(|_| format!("Failed to download '{uri}': not a valid URL."))?;
    let segs: Vec<String> = url
        .path_segments()
        .map(|s| s.map(crate::util::percent_decode).collect())
        .unwrap_or_default();
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    // (account, container, blob, whether the blob lives in a local emulator)
    let (url_account, container, blob, emulator) =
        if let Some(acct) = host.strip_suffix(".blob.core.windows.net") {
            if segs.len() < 2 {
                return Err(format!(
                    "Failed to download '{uri}': no container/blob in the URL."
                ));
            }
            (
                acct.to_string(),
                segs[0].clone(),
                segs[1..].join("/"),
                false,
            )
        } else if segs.len() >= 4 && segs[0] == "blob" {
            (segs[1].clone(), segs[2].clone(), segs[3..].join("/"), false)
        } else if segs.len() >= 3 && matches!(host.as_str(), "127.0.0.1" | "localhost") {
            // Path-style URL of a local emulator (Azurite): the account must be one of
            // this simulator's storage accounts and the credential must open it; the
            // blob itself lives in the emulator, which the simulator does not read.
            (segs[0].clone(), segs[1].clone(), segs[2..].join("/"), true)
        } else {
            return Err(format!(
                "Failed to download '{uri}': not a blob URL of this simulator."
            ));
        };
    match settings.get("managedIdentity") {
        Some(mi) => {
            if settings.get("storageAccountName").is_some()
                || settings.get("storageAccountKey").is_some()
            {
                return Err(format!("Failed to download '{uri}': managedIdentity cannot be used together with storageAccountName or storageAccountKey."));
            }
            let principal = managed_identity_principal(st, identity, mi)
                .map_err(|e| format!("Failed to download '{uri}': {e}"))?;
            let Some(account) = storage_account(st, &url_account) else {
                return Err(format!(
                    "Failed to download '{uri}': storage account '{url_account}' not found."
                ));
            };
            crate::rbac::may_read_blob(st, &principal, &account.id, &container, &blob).map_err(
                |e| format!("Failed to download '{uri}' with the managed identity: {e}"),
            )?;
        }
        None => check_account_key(st, settings, uri, &url_account)?,
    }
    if emulator {
        return Ok(());
    }
    let ckey = format!("{url_account}/{container}").to_ascii_lowercase();
    let found = st
        .containers
        .get(&ckey)
        .is_some_and(|c| c.blobs.contains_key(&blob));
    if !found {
        return Err(format!("Failed to download '{uri}': 404 BlobNotFound."));
    }
    Ok(())
}

/// The principal id the extension's `managedIdentity` setting names on a
/// scale set with `identity`: `{}` its system-assigned identity, or a
/// user-assigned identity attached to it, by `objectId` or `clientId`.
fn managed_identity_principal(st: &State, identity: &Value, mi: &Value) -> Result<String, String> {
    let wanted = mi
        .get("objectId")
        .or_else(|| mi.get("clientId"))
        .and_then(Value::as_str);
    let Some(wanted) = wanted else {
        return identity
            .get("principalId")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "the VM has no system-assigned identity (managedIdentity: {}).".into());
    };
    let uai = crate::arm::identity::by_principal_or_client(st, wanted)
        .filter(|u| {
            identity
                .get("userAssignedIdentities")
                .and_then(Value::as_object)
                .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(&u.id)))
        })
        .ok_or_else(|| {
            format!(
                "the managed identity '{wanted}' is not assigned to the VM (Identity not found)."
            )
        })?;
    uai.body
        .pointer("/properties/principalId")
        .and_then(Doc::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the managed identity '{wanted}' has no principal."))
}

/// The protected settings name `url_account`, an existing storage account, and
/// carry one of its current keys.
fn check_account_key(
    st: &State,
    settings: &Value,
    uri: &str,
    url_account: &str,
) -> Result<(), String> {
    let Some(account) = settings.get("storageAccountName").and_then(Value::as_str) else {
        return Err(format!("Failed to download '{uri}': 409 PublicAccessNotPermitted (no storageAccountName in protectedSettings)."));
    };
    if !account.eq_ignore_ascii_case(url_account) {
        return Err(format!("Failed to download '{uri}': storageAccountName '{account}' does not match the URL's account."));
    }
    let Some(res) = storage_account(st, account) else {
        return Err(format!(
            "Failed to download '{uri}': storage account '{account}' not found."
        ));
    };
    if res
        .body
        .pointer("/properties/allowSharedKeyAccess")
        .and_then(Doc::as_bool)
        == Some(false)
    {
        return Err(format!("Failed to download '{uri}': 403 KeyBasedAuthenticationNotPermitted (Key based authentication is not permitted on this storage account.)"));
    }
    let key = settings
        .get("storageAccountKey")
        .and_then(Value::as_str)
        .unwrap_or("");
    if key.is_empty() || !res.keys.iter().any(|k| k == key) {
        return Err(format!("Failed to download '{uri}': 403 AuthenticationFailed (the storage account key was rejected)."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(st: &mut State, shared_keys: Option<bool>) {
        let id =
            "/subscriptions/s/resourceGroups/st/providers/Microsoft.Storage/storageAccounts/acct";
        let mut props = json!({});
        if let Some(allowed) = shared_keys {
            props["allowSharedKeyAccess"] = json!(allowed);
        }
        st.resources.insert(
            id.to_ascii_lowercase(),
            crate::state::Resource {
                rg: "st".into(),
                keys: vec!["k1".into(), "k2".into()],
                ..crate::state::Resource::settled(id, STORAGE_TYPE, json!({ "properties": props }))
            },
        );
    }

    #[test]
    fn a_key_opens_nothing_on_an_account_that_refuses_shared_keys() {
        let uri = "https://127.0.0.1:1/acct/staging/job/init.sh";
        let settings = json!({"storageAccountName": "acct", "storageAccountKey": "k2"});
        for (shared_keys, ok) in [(None, true), (Some(true), true), (Some(false), false)] {
            let mut st = State::fresh();
            account(&mut st, shared_keys);
            let got = fetch_for_vm(&st, &Value::Null, &settings, uri);
            assert_eq!(got.is_ok(), ok, "{shared_keys:?}: {got:?}");
            if let Err(e) = got {
                assert!(
                    e.contains("KeyBasedAuthenticationNotPermitted") && !e.contains("k2"),
                    "{e}"
                );
            }
        }
        let mut st = State::fresh();
        account(&mut st, None);
        let wrong = json!({"storageAccountName": "acct", "storageAccountKey": "nope"});
        assert!(fetch_for_vm(&st, &Value::Null, &wrong, uri).is_err());
        // A managed identity the scale set does not have opens nothing either.
        let mi = json!({"managedIdentity": {"objectId": "someone"}});
        let e = fetch_for_vm(&st, &json!({"type": "SystemAssigned"}), &mi, uri).unwrap_err();
        assert!(e.contains("not assigned to the VM"), "{e}");
    }
}
