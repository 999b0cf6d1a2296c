//! Microsoft.Storage: storage accounts — required `sku`, `kind` and `location` with
//! their allowed values, globally unique names, computed endpoints and keys — and the
//! provider's own operation semantics (create 200/202 + `Location`; synchronous update
//! and delete).

use super::model::{props, Prep, Reject};
use crate::util::random_key;
use serde_json::{json, Value};

/// `sku.name` values the Storage provider accepts.
const SKUS: &[&str] = &[
    "Standard_LRS",
    "Standard_GRS",
    "Standard_RAGRS",
    "Standard_ZRS",
    "Premium_LRS",
    "Premium_ZRS",
    "Standard_GZRS",
    "Standard_RAGZRS",
    "StandardV2_LRS",
    "StandardV2_GRS",
    "StandardV2_ZRS",
    "StandardV2_GZRS",
    "PremiumV2_LRS",
    "PremiumV2_ZRS",
];
/// `kind` values the Storage provider accepts.
const KINDS: &[&str] = &[
    "Storage",
    "StorageV2",
    "BlobStorage",
    "FileStorage",
    "BlockBlobStorage",
];

fn sku_of(body: &Value) -> String {
    body.pointer("/sku/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `sku.name` and `kind` are required and must be known values
/// (`InvalidValuesForRequestParameters`, naming every bad parameter).
pub(crate) fn validate_account(body: &Value) -> Result<(), Reject> {
    let mut bad = Vec::new();
    let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
    if !KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
        bad.push("kind");
    }
    let sku = sku_of(body);
    if !SKUS.iter().any(|k| k.eq_ignore_ascii_case(&sku)) {
        bad.push("sku");
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err((
        "InvalidValuesForRequestParameters",
        format!(
            "Values for request parameters are invalid: {}.",
            bad.join(", ")
        ),
    ))
}

/// The Storage provider's name rule message (3–24 lowercase letters and digits).
pub(crate) fn invalid_name(name: &str) -> Reject {
    (
        "AccountNameInvalid",
        format!("{name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only."),
    )
}

/// Storage account: global name, SKU/kind, endpoints.
pub(crate) fn prepare_account(p: &Prep<'_>, body: &mut Value) -> Result<(), Reject> {
    let (st, id, name, full) = (p.st, p.id, p.name, p.spec.full());
    validate_account(body)?;
    let created = p
        .kept("creationTime")
        .unwrap_or_else(|| json!(crate::util::rfc3339(crate::util::now_ms())));
    let taken = st
        .of_type(&full)
        .any(|r| r.name.eq_ignore_ascii_case(name) && !r.id.eq_ignore_ascii_case(id));
    if taken {
        return Err((
            "StorageAccountAlreadyTaken",
            format!("The storage account named {name} is already taken."),
        ));
    }
    let tier = if sku_of(body).to_ascii_lowercase().starts_with("premium") {
        "Premium"
    } else {
        "Standard"
    };
    body["sku"]["tier"] = json!(tier);
    let location = body.get("location").cloned().unwrap_or(json!(""));
    let base = p.base.to_string();
    let p = props(body);
    p.insert("creationTime".into(), created);
    p.insert(
        "primaryEndpoints".into(),
        json!({"blob": format!("{base}/blob/{name}/")}),
    );
    p.insert("primaryLocation".into(), location);
    p.insert("statusOfPrimary".into(), json!("available"));
    Ok(())
}

/// Storage account keys for a new account.
pub(crate) fn new_keys() -> Vec<String> {
    vec![random_key(64), random_key(64)]
}

/// `POST …/storageAccounts/{name}/listKeys`: both keys, in the official example's shape.
pub(crate) fn list_keys(r: &crate::state::Resource) -> Value {
    let keys: Vec<Value> = r
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            json!({
                "keyName": format!("key{}", i + 1),
                "value": k,
                "permissions": "Full",
                "creationTime": r.body.pointer("/properties/creationTime").map(crate::doc::Doc::to_value),
            })
        })
        .collect();
    json!({"keys": keys})
}
