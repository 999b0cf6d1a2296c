//! The custom-handler envelope: what the Functions host POSTs to
//! `/{functionName}` (`{"Data": {...}, "Metadata": {...}}`) and what it
//! expects back (`{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`).
//!
//! Trigger values reach a custom handler in one of three encodings (the host
//! serialises `byte[]` as base64 and may JSON-quote a plain string), so every
//! trigger value goes through [`trigger_bytes`], the one place that decodes.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// An invocation request from the host.
#[derive(Debug, Default, Deserialize)]
pub struct Invocation {
    #[serde(rename = "Data", alias = "data", default)]
    pub data: Map<String, Value>,
    #[serde(rename = "Metadata", alias = "metadata", default)]
    pub metadata: Value,
}

/// How a trigger value was encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON object or array, passed through as JSON.
    Json,
    /// A string whose content is JSON text (the host JSON-quoted it).
    QuotedJson,
    /// A base64 string whose bytes are JSON text.
    Base64,
    /// A string that is neither: its UTF-8 bytes as they are.
    Text,
    /// A number, boolean or null.
    Scalar,
}

impl Invocation {
    /// Parses the body the host sent.
    pub fn parse(body: &[u8]) -> Result<Invocation, String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if !v.is_object() {
            return Err("the invocation body is not a JSON object".into());
        }
        serde_json::from_value(v).map_err(|e| format!("not a custom-handler invocation: {e}"))
    }

    /// The value of the trigger binding `name`; when the function.json names it
    /// differently and there is exactly one binding, that one.
    pub fn binding(&self, name: &str) -> Option<&Value> {
        self.data.get(name).or_else(|| {
            if self.data.len() == 1 {
                self.data.values().next()
            } else {
                self.data
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            }
        })
    }

    /// A metadata value (case-insensitive key), e.g. `DeliveryCount`.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        let m = self.metadata.as_object()?;
        m.get(key).or_else(|| {
            m.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }

    /// `Metadata.DeliveryCount` as a number (it may arrive as a string).
    pub fn delivery_count(&self) -> Option<u64> {
        as_u64(self.metadata("DeliveryCount")?)
    }
}

/// A number or a numeric string.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The bytes of a trigger value, whichever way the host encoded it: a JSON
/// object (serialised back), a JSON-quoted string (its content), or base64
/// (decoded). A string that is none of these is taken as text.
pub fn trigger_bytes(value: &Value) -> (Vec<u8>, Encoding) {
    decode(value, 0)
}

fn decode(value: &Value, depth: u8) -> (Vec<u8>, Encoding) {
    match value {
        Value::Object(_) | Value::Array(_) => (
            serde_json::to_vec(value).unwrap_or_default(),
            Encoding::Json,
        ),
        Value::String(s) => {
            let trimmed = s.trim();
            if let Ok(inner) = serde_json::from_str::<Value>(trimmed) {
                match inner {
                    // Quoted twice: unwrap one more level (bounded).
                    Value::String(_) if depth < 2 => {
                        let (bytes, enc) = decode(&inner, depth + 1);
                        return (
                            bytes,
                            if enc == Encoding::Text {
                                Encoding::QuotedJson
                            } else {
                                enc
                            },
                        );
                    }
                    Value::Object(_) | Value::Array(_) => {
                        return (trimmed.as_bytes().to_vec(), Encoding::QuotedJson)
                    }
                    _ => {}
                }
            }
            if let Some(bytes) = base64_json(trimmed) {
                return (bytes, Encoding::Base64);
            }
            (s.as_bytes().to_vec(), Encoding::Text)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            (value.to_string().into_bytes(), Encoding::Scalar)
        }
    }
}

/// Base64 (standard alphabet, padded or not) whose content is JSON text.
fn base64_json(s: &str) -> Option<Vec<u8>> {
    if s.len() < 4 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?;
    Some(bytes)
}

/// The fields of an HTTP trigger's `Data.req` that flotilla uses.
#[derive(Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    /// Header names lower-cased; the host sends `{name: [values]}`.
    pub headers: Vec<(String, String)>,
    /// Route parameters (`Params`), e.g. `id`.
    pub params: Map<String, Value>,
    /// The body's bytes (decoded if it came as base64), `None` when empty.
    pub body: Option<Vec<u8>>,
}

impl HttpRequest {
    /// Reads `Data.req`; the request itself may also arrive quoted or base64.
    pub fn from_value(value: &Value) -> Result<HttpRequest, String> {
        let owned;
        let req = match value {
            Value::Object(_) => value,
            other => {
                let (bytes, _) = trigger_bytes(other);
                owned = serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| format!("the HTTP request is not JSON: {e}"))?;
                &owned
            }
        };
        let obj = req.as_object().ok_or("the HTTP request is not an object")?;
        let get = |k: &str| {
            obj.get(k).or_else(|| {
                obj.iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v)
            })
        };
        let mut headers = vec![];
        if let Some(Value::Object(h)) = get("Headers") {
            for (name, values) in h {
                let name = name.to_ascii_lowercase();
                match values {
                    Value::Array(vs) => {
                        for v in vs {
                            if let Some(s) = v.as_str() {
                                headers.push((name.clone(), s.to_string()));
                            }
                        }
                    }
                    Value::String(s) => headers.push((name, s.clone())),
                    _ => {}
                }
            }
        }
        let params = match get("Params") {
            Some(Value::Object(p)) => p.clone(),
            _ => Map::new(),
        };
        let body = match get("Body") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(trigger_bytes(v).0),
        };
        Ok(HttpRequest {
            method: get("Method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_uppercase(),
            headers,
            params,
            body,
        })
    }

    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A route parameter as a string.
    pub fn param(&self, name: &str) -> Option<String> {
        match self.params.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// An HTTP answer for the `res` output binding.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(status: u16, body: &Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A self-contained HTML page: no cache, no sniffing, and a content
    /// security policy that allows its own inline script and style and
    /// requests to its own origin only.
    pub fn html(status: u16, body: String) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![
                ("Content-Type".into(), "text/html; charset=utf-8".into()),
                ("Cache-Control".into(), "no-store".into()),
                ("X-Content-Type-Options".into(), "nosniff".into()),
                (
                    "Content-Security-Policy".into(),
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'".into(),
                ),
            ],
            body,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `HttpOutputBindingResponse`: StatusCode (a string), Headers, Body.
    pub fn to_value(&self) -> Value {
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        json!({
            "StatusCode": self.status.to_string(),
            "Headers": headers,
            "Body": self.body,
        })
    }
}

/// What a function returns to the host.
#[derive(Debug, Default)]
pub struct Reply {
    pub outputs: Map<String, Value>,
    pub logs: Vec<String>,
    pub return_value: Value,
}

impl Reply {
    pub fn new() -> Reply {
        Reply::default()
    }

    pub fn log(&mut self, line: impl Into<String>) {
        self.logs.push(line.into());
    }

    /// Sets the `res` HTTP output.
    pub fn http(mut self, res: HttpResponse) -> Reply {
        self.outputs.insert("res".into(), res.to_value());
        self
    }

    pub fn to_value(&self) -> Value {
        json!({
            "Outputs": self.outputs,
            "Logs": self.logs,
            "ReturnValue": self.return_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP: &str =
        include_str!("../../tests/fixtures/customhandler_request_httpTrigger_nonforwarding.json");
    const QUEUE: &str =
        include_str!("../../tests/fixtures/customhandler_request_queueTrigger.json");

    #[test]
    fn the_recorded_http_envelope_parses() {
        let inv = Invocation::parse(HTTP.as_bytes()).unwrap();
        let req = HttpRequest::from_value(inv.binding("req").unwrap()).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(body["id"], 1005);
    }

    #[test]
    fn the_recorded_queue_envelope_parses_as_text() {
        let inv = Invocation::parse(QUEUE.as_bytes()).unwrap();
        let (bytes, enc) = trigger_bytes(inv.binding("msg").unwrap());
        assert_eq!(enc, Encoding::Text);
        assert_eq!(bytes, b"{ message: \"Message sent\" }");
        assert_eq!(inv.metadata("dequeuecount").and_then(as_u64), Some(1));
    }

    #[test]
    fn object_quoted_and_base64_values_give_the_same_bytes() {
        let obj = json!({"a": 1, "b": [true]});
        let text = serde_json::to_string(&obj).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
        let variants = [
            (obj.clone(), Encoding::Json),
            (Value::String(text.clone()), Encoding::QuotedJson),
            (
                Value::String(serde_json::to_string(&text).unwrap()),
                Encoding::QuotedJson,
            ),
            (Value::String(b64), Encoding::Base64),
        ];
        for (v, enc) in variants {
            let (bytes, got) = trigger_bytes(&v);
            assert_eq!(got, enc, "{v}");
            assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), obj);
        }
    }

    #[test]
    fn delivery_count_accepts_numbers_and_strings() {
        for m in [json!({"DeliveryCount": 10}), json!({"deliveryCount": "10"})] {
            let inv = Invocation {
                data: Map::new(),
                metadata: m,
            };
            assert_eq!(inv.delivery_count(), Some(10));
        }
    }

    #[test]
    fn junk_never_panics() {
        for body in [&b""[..], b"[]", b"null", b"{\"Data\": 3}", b"\xff\xfe"] {
            let _ = Invocation::parse(body);
        }
        for v in [
            json!(null),
            json!(3),
            json!("=="),
            json!("not base64 !"),
            json!([1]),
        ] {
            let _ = trigger_bytes(&v);
            let _ = HttpRequest::from_value(&v);
        }
    }
}
