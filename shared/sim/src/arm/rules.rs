//! Rules ARM applies to every resource, whatever its provider: tags, locations and zones.

use super::model::{Prep, Reject};
use super::regions;
use crate::doc::Doc;
use serde_json::Value;

/// At most this many tags per resource.
const MAX_TAGS: usize = 50;
/// Longest tag name.
const MAX_TAG_NAME: usize = 512;
/// Longest tag value.
const MAX_TAG_VALUE: usize = 256;

/// ARM's tag rules: an object of strings, at most 50, names 1–512 characters without
/// `<>%&\?/` or control characters, values at most 256 characters.
pub(crate) fn check_tags(body: &Value) -> Result<(), Reject> {
    let Some(t) = body.get("tags") else {
        return Ok(());
    };
    if t.is_null() {
        return Ok(());
    }
    let Some(tags) = t.as_object() else {
        return Err((
            "InvalidRequestContent",
            "The property 'tags' must be an object of string values.".into(),
        ));
    };
    if tags.len() > MAX_TAGS {
        return Err((
            "InvalidTags",
            format!(
                "Too many tags specified. Requested tag count - '{}'. Maximum number of tags allowed - '{MAX_TAGS}'.",
                tags.len()
            ),
        ));
    }
    for (k, v) in tags {
        if k.trim().is_empty() {
            return Err((
                "InvalidTagName",
                "The tag name must be non-null, non-empty and non-whitespace only. Please provide an actual value.".into(),
            ));
        }
        if k.chars().any(|c| "<>%&\\?/".contains(c) || c.is_control()) {
            return Err((
                "InvalidTagNameCharacters",
                format!("The tag names '{k}' have reserved characters '<,>,%,&,\\,?,/' or control characters."),
            ));
        }
        if k.chars().count() > MAX_TAG_NAME {
            return Err((
                "InvalidTagName",
                format!("Tag key too large. Following tag name '{k}' exceeded the maximum length. Maximum allowed length for tag name - '{MAX_TAG_NAME}' characters."),
            ));
        }
        let Some(v) = v.as_str() else {
            return Err((
                "InvalidRequestContent",
                format!("The value of tag '{k}' must be a string."),
            ));
        };
        if v.chars().count() > MAX_TAG_VALUE {
            return Err((
                "InvalidTagValueLength",
                format!("Tag value too large. Following tag value '{v}' exceeded the maximum length. Maximum allowed length for tag value - '{MAX_TAG_VALUE}' characters."),
            ));
        }
    }
    Ok(())
}

/// The body's location: required, a known region, and the same as the stored one on
/// update (a resource cannot move by re-PUT).
pub(crate) fn check_location(p: &Prep<'_>, body: &Value) -> Result<(), Reject> {
    let Some(loc) = body.get("location").and_then(Value::as_str) else {
        return Err((
            "LocationRequired",
            "The location property is required for this definition.".into(),
        ));
    };
    if regions::zones(loc).is_none() {
        return Err((
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{loc}' is not available for resource type '{}'. List of available regions for the resource type is '{}'.",
                p.spec.full(),
                regions::all()
            ),
        ));
    }
    if let Some(old) = p
        .existing
        .and_then(|e| e.body.get("location"))
        .and_then(Doc::as_str)
    {
        if regions::normalize(old) != regions::normalize(loc) {
            return Err((
                "InvalidResourceLocation",
                format!(
                    "The resource '{}' already exists in location '{old}' in resource group '{}'. A resource with the same name cannot be created in location '{loc}'. Please select a new resource name.",
                    p.name,
                    p.id.split('/').nth(4).unwrap_or("")
                ),
            ));
        }
    }
    Ok(())
}

/// The body's `zones`: each must be a zone the location offers.
pub(crate) fn check_zones(body: &Value, what: &str) -> Result<Vec<String>, Reject> {
    let loc = body.get("location").and_then(Value::as_str).unwrap_or("");
    let Some(zones) = body.get("zones") else {
        return Ok(vec![]);
    };
    let Some(list) = zones.as_array() else {
        return Err((
            "InvalidRequestContent",
            "The property 'zones' must be an array of strings.".into(),
        ));
    };
    let offered = regions::zones(loc).unwrap_or(&[]);
    let mut out = Vec::new();
    for z in list {
        let z = z.as_str().unwrap_or("");
        if !offered.contains(&z) {
            return Err((
                "InvalidAvailabilityZone",
                format!(
                    "The zone(s) '{z}' for resource '{what}' is not supported. The supported zones for location '{loc}' are '{}'.",
                    offered.join(",")
                ),
            ));
        }
        out.push(z.to_string());
    }
    Ok(out)
}
