//! The compact form the simulator keeps a stored resource's model in.
//!
//! A `serde_json::Value` object is a B-tree whose every node holds room for
//! eleven entries, so even `{"id": ...}` costs a 600-byte node; a scale set's
//! model costs about 20 KB that way. A [`Doc`] object is one boxed slice of
//! its entries, sorted by key (looked up by binary search, and written in the
//! order a `Value` object writes them), about a quarter of that. Stored
//! models are read far more than written: reads go through [`Doc::get`] and
//! [`Doc::pointer`], and a change is made on a `Value` ([`Doc::to_value`])
//! that is stored back whole.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Number, Value};
use std::borrow::Cow;

/// A JSON document, compact and read-only.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum Doc {
    #[default]
    Null,
    Bool(bool),
    Number(Number),
    String(Box<str>),
    Array(Box<[Doc]>),
    /// Entries sorted by key; keys are distinct.
    Object(Box<[(Box<str>, Doc)]>),
}

impl Doc {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Doc> {
        let Doc::Object(entries) = self else {
            return None;
        };
        entries
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &entries[i].1)
    }

    /// The value a JSON Pointer (RFC 6901) names, as `Value::pointer` reads it.
    pub fn pointer(&self, pointer: &str) -> Option<&Doc> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut at = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token: Cow<'_, str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            at = match at {
                Doc::Object(_) => at.get(&token)?,
                Doc::Array(items) => items.get(array_index(&token)?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Doc::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Doc::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Doc::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Doc]> {
        match self {
            Doc::Array(items) => Some(items),
            _ => None,
        }
    }

    /// An object's entries, in key order.
    pub fn as_object(&self) -> Option<&[(Box<str>, Doc)]> {
        match self {
            Doc::Object(entries) => Some(entries),
            _ => None,
        }
    }

    /// The same document as a `Value`, to change or to send.
    pub fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::String(s) => Value::String(s.to_string()),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Object(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Reading a JSON document in either form: a request's `Value` or a stored [`Doc`].
pub(crate) trait Json: Sized {
    /// The member `key` of an object.
    fn member(&self, key: &str) -> Option<&Self>;
    /// A string's text.
    fn text(&self) -> Option<&str>;
    /// An array's items (none for anything else).
    fn items(&self) -> &[Self];
    /// An object's members, in key order (none for anything else).
    fn members(&self) -> impl Iterator<Item = (&str, &Self)>;
}

impl Json for Doc {
    fn member(&self, key: &str) -> Option<&Doc> {
        self.get(key)
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn items(&self) -> &[Doc] {
        self.as_array().unwrap_or_default()
    }
    fn members(&self) -> impl Iterator<Item = (&str, &Doc)> {
        self.as_object()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (&**k, v))
    }
}

impl Json for Value {
    fn member(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn items(&self) -> &[Value] {
        self.as_array().map(Vec::as_slice).unwrap_or_default()
    }
    fn members(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v))
    }
}

/// An array index token: digits without a leading zero (RFC 6901).
fn array_index(token: &str) -> Option<usize> {
    if token.is_empty()
        || !token.bytes().all(|b| b.is_ascii_digit())
        || (token.len() > 1 && token.starts_with('0'))
    {
        return None;
    }
    token.parse().ok()
}

impl From<Value> for Doc {
    fn from(value: Value) -> Doc {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(b),
            Value::Number(n) => Doc::Number(n),
            Value::String(s) => Doc::String(s.into_boxed_str()),
            Value::Array(items) => Doc::Array(items.into_iter().map(Doc::from).collect()),
            // A `Map` iterates in key order: the entries come out sorted.
            Value::Object(map) => Doc::Object(
                map.into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), Doc::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&Value> for Doc {
    fn from(value: &Value) -> Doc {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(*b),
            Value::Number(n) => Doc::Number(n.clone()),
            Value::String(s) => Doc::String(s.as_str().into()),
            Value::Array(items) => Doc::Array(items.iter().map(Doc::from).collect()),
            Value::Object(map) => Doc::Object(
                map.iter()
                    .map(|(k, v)| (k.as_str().into(), Doc::from(v)))
                    .collect(),
            ),
        }
    }
}

impl PartialEq<Value> for Doc {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Doc::Null, Value::Null) => true,
            (Doc::Bool(a), Value::Bool(b)) => a == b,
            (Doc::Number(a), Value::Number(b)) => a == b,
            (Doc::String(a), Value::String(b)) => **a == **b,
            (Doc::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
            }
            (Doc::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(&**k).is_some_and(|w| v == w))
            }
            _ => false,
        }
    }
}

impl Serialize for Doc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Doc::Null => serializer.serialize_unit(),
            Doc::Bool(b) => serializer.serialize_bool(*b),
            Doc::Number(n) => n.serialize(serializer),
            Doc::String(s) => serializer.serialize_str(s),
            Doc::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items.iter() {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Doc::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries.iter() {
                    map.serialize_entry(&**k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Doc, D::Error> {
        Value::deserialize(deserializer).map(Doc::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "name": "vmss",
            "sku": {"name": "Standard_D2s_v5", "capacity": 3},
            "identity": {"principalId": "p-1", "type": "SystemAssigned"},
            "properties": {
                "a/b": {"~x": true},
                "list": [{"id": "first"}, {"id": "second"}],
                "none": null,
                "ratio": -1.5
            }
        })
    }

    #[test]
    fn a_document_reads_as_the_value_it_was_made_from() {
        let value = sample();
        let doc = Doc::from(value.clone());
        assert_eq!(doc.to_value(), value);
        assert!(doc == value);
        assert_eq!(serde_json::to_string(&doc).unwrap(), value.to_string());
        let back: Doc = serde_json::from_str(&value.to_string()).unwrap();
        assert_eq!(back, doc);
        for pointer in [
            "",
            "/name",
            "/sku/capacity",
            "/identity/principalId",
            "/properties/a~1b/~0x",
            "/properties/list/1/id",
            "/properties/none",
            "/properties/ratio",
            "/properties/list/01",
            "/properties/list/2",
            "/properties/list/-",
            "/missing",
            "/name/deeper",
            "name",
        ] {
            assert_eq!(
                doc.pointer(pointer).map(Doc::to_value).as_ref(),
                value.pointer(pointer),
                "{pointer}"
            );
        }
        assert_eq!(doc.get("name").and_then(Doc::as_str), Some("vmss"));
        assert_eq!(doc.pointer("/sku/capacity").and_then(Doc::as_u64), Some(3));
        assert_eq!(
            doc.pointer("/properties/a~1b/~0x").and_then(Doc::as_bool),
            Some(true)
        );
        assert_eq!(doc.get("absent"), None);
        assert_eq!(Doc::String("x".into()).get("x"), None);
    }

    #[test]
    fn a_document_differs_from_a_value_that_differs_anywhere() {
        let doc = Doc::from(sample());
        let mut other = sample();
        other["properties"]["list"][1]["id"] = json!("third");
        assert!(doc != other);
        let mut extra = sample();
        extra["sku"]["tier"] = json!("Standard");
        assert!(doc != extra);
    }
}
