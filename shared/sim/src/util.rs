//! Small helpers shared by the handlers: the parsed request, responses, time and text.

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;

/// A request, parsed once by the dispatcher.
pub(crate) struct Ctx {
    pub method: Method,
    /// Raw path (still percent-encoded).
    pub path: String,
    /// Percent-decoded, non-empty path segments.
    pub segs: Vec<String>,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `https://{host}` the client used (for URLs the simulator hands out).
    pub base: String,
}

impl Ctx {
    /// Query parameter by case-insensitive name.
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Header value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether segment `i` is `lowercase`, ignoring ASCII case.
    pub fn seg_is(&self, i: usize, lowercase: &str) -> bool {
        self.segs
            .get(i)
            .is_some_and(|s| s.eq_ignore_ascii_case(lowercase))
    }

    /// Segment `i`, lowercased ("" when absent).
    pub fn seg_lc(&self, i: usize) -> String {
        self.segs
            .get(i)
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as i64
}

/// A random URL-safe string from `n` random bytes.
pub(crate) fn random_token(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A random standard-base64 key of `n` bytes (like storage account keys).
pub(crate) fn random_key(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// 32 lowercase hex digits (Key Vault secret versions).
pub(crate) fn random_hex32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// RFC 3339 timestamp of epoch milliseconds (ARM style).
pub(crate) fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// HTTP date (RFC 7231 IMF-fixdate) of epoch milliseconds.
pub(crate) fn http_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&fmt).unwrap_or_default()
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Case-insensitive glob match where `*` matches any run of characters.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A response with a JSON body.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// An empty response.
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// The ARM error body `{"error":{"code","message"}}`, with `x-ms-error-code`.
pub(crate) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = json_response(
        status,
        &json!({"error": {"code": code, "message": message}}),
    );
    set_header(&mut r, "x-ms-error-code", code);
    r
}

/// Sets a header, ignoring values that are not valid header text.
pub(crate) fn set_header(r: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

/// Seconds to advertise in `Retry-After` for an operation of `ms` milliseconds.
pub(crate) fn retry_after_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// Parses `tagName eq 'k' and tagValue eq 'v'` (either part optional).
pub(crate) fn parse_tag_filter(filter: &str) -> Option<(String, Option<String>)> {
    fn quoted_after(s: &str, key: &str) -> Option<String> {
        let lower = s.to_ascii_lowercase();
        let i = lower.find(&key.to_ascii_lowercase())?;
        let rest = &s[i + key.len()..];
        let rest = rest.trim_start();
        let rest = rest
            .strip_prefix("eq")
            .or_else(|| rest.strip_prefix("EQ"))?
            .trim_start();
        let rest = rest.strip_prefix('\'')?;
        let end = rest.find('\'')?;
        Some(rest[..end].to_string())
    }
    let name = quoted_after(filter, "tagName")?;
    let value = quoted_after(filter, "tagValue");
    Some((name, value))
}

/// Whether `tags` carries `name` (case-insensitive) with `value` (exact) when given.
pub(crate) fn tags_match(
    tags: &std::collections::BTreeMap<String, String>,
    name: &str,
    value: Option<&str>,
) -> bool {
    tags.iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(name) && value.is_none_or(|want| v == want))
}

/// Tags of an ARM body as a map (non-string values are skipped).
pub(crate) fn tags_of(body: &crate::doc::Doc) -> std::collections::BTreeMap<String, String> {
    body.get("tags")
        .and_then(crate::doc::Doc::as_object)
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.to_string(), s.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("vmss-*", "VMSS-workers"));
        assert!(glob_match("*-w*", "job-workers"));
        assert!(!glob_match("vmss-*", "nsg-a"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("%7Bvmss-name%7D"), "{vmss-name}");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn tag_filter() {
        assert_eq!(
            parse_tag_filter("tagName eq 'job' and tagValue eq 'j1'"),
            Some(("job".into(), Some("j1".into())))
        );
        assert_eq!(parse_tag_filter("tagName eq 'x'"), Some(("x".into(), None)));
        assert_eq!(parse_tag_filter("nonsense"), None);
    }
}
