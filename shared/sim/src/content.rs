//! Blob bytes held as runs of lines that identical runs in other blobs share.
//!
//! Every job stages two init scripts of about 25 KB that differ from every
//! other job's only in a header of rendered values, and the simulator keeps
//! every job's blobs. Cutting content after lines chosen by their own bytes
//! (not by their offset) puts the same cut points in every copy of the shared
//! body wherever its header ends, so the simulator holds one copy of it, not
//! one per script.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// A line ends a run when its hash is a multiple of this (about 32 lines a run).
const CUT_EVERY: u64 = 32;
/// A run never grows past this many bytes (binary content, very long lines).
const MAX_RUN: usize = 64 * 1024;

/// Immutable blob content.
#[derive(Clone, Debug, Default)]
pub(crate) struct Content {
    runs: Vec<Arc<[u8]>>,
    len: usize,
}

/// Runs in use anywhere in the process, by their hash; dead entries are
/// dropped when the table has doubled since it was last swept.
struct Shared {
    runs: HashMap<u64, Weak<[u8]>>,
    swept_at: usize,
}

static SHARED: LazyLock<Mutex<Shared>> = LazyLock::new(|| {
    Mutex::new(Shared {
        runs: HashMap::new(),
        swept_at: 1024,
    })
});

/// A fast hash of `bytes`, the same in every process (so runs are cut the
/// same way every time); equal hashes are checked byte by byte before sharing.
fn hash(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let mut h = bytes.len() as u64;
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = mix(h, u64::from_le_bytes(tail));
    // Fold the high bits down: the cut test reads the low ones.
    h ^ (h >> 29) ^ (h >> 47)
}

fn mix(h: u64, word: u64) -> u64 {
    (h.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
}

impl Content {
    /// Content holding a copy of `bytes`, sharing what it can.
    pub fn new(bytes: &[u8]) -> Content {
        let cuts: Vec<(&[u8], u64)> = cut(bytes).collect();
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let runs: Vec<Arc<[u8]>> = cuts
            .into_iter()
            .map(|(run, key)| shared.intern(run, key))
            .collect();
        shared.sweep_if_grown();
        Content {
            runs,
            len: bytes.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The content's first run (empty for empty content): a prefix of it,
    /// read without joining the runs.
    pub fn first_run(&self) -> &[u8] {
        self.runs.first().map_or(&[], |r| r)
    }

    /// The content as one buffer (a copy unless it is a single run).
    pub fn to_bytes(&self) -> bytes::Bytes {
        match self.runs.as_slice() {
            [] => bytes::Bytes::new(),
            [one] => bytes::Bytes::from_owner(ArcBytes(one.clone())),
            runs => {
                let mut out = Vec::with_capacity(self.len);
                for run in runs {
                    out.extend_from_slice(run);
                }
                out.into()
            }
        }
    }
}

/// An `Arc<[u8]>` lent to `Bytes` without a copy.
struct ArcBytes(Arc<[u8]>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Shared {
    /// The live run equal to `run` (whose hash is `key`), or a new one that
    /// later copies share.
    fn intern(&mut self, run: &[u8], key: u64) -> Arc<[u8]> {
        if let Some(live) = self.runs.get(&key).and_then(Weak::upgrade) {
            if *live == *run {
                return live;
            }
            // A hash collision: keep this run to itself.
            return Arc::from(run);
        }
        let fresh: Arc<[u8]> = Arc::from(run);
        self.runs.insert(key, Arc::downgrade(&fresh));
        fresh
    }

    fn sweep_if_grown(&mut self) {
        if self.runs.len() >= 2 * self.swept_at {
            self.runs.retain(|_, w| w.strong_count() > 0);
            self.swept_at = self.runs.len().max(1024);
        }
    }
}

/// Splits `bytes` into runs that end after a line whose hash is a multiple
/// of `CUT_EVERY`, or at `MAX_RUN` bytes; each with a hash of the run (its
/// lines' hashes folded).
fn cut(bytes: &[u8]) -> impl Iterator<Item = (&[u8], u64)> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let limit = rest.len().min(MAX_RUN);
        let mut end = 0;
        let mut key = 0;
        while end < limit {
            let line_end = rest[end..limit]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(limit, |i| end + i + 1);
            let line = &rest[end..line_end];
            end = line_end;
            let line_hash = hash(line);
            key = mix(key, line_hash);
            if line_hash.is_multiple_of(CUT_EVERY) {
                break;
            }
        }
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some((run, key))
    })
}

impl serde::Serialize for Content {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.to_bytes()))
    }
}

/// Saved as one base64 string, as older simulators saved blob data.
impl<'de> serde::Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Content, D::Error> {
        use base64::Engine as _;
        let text = <String as serde::Deserialize>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|bytes| Content::new(&bytes))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(header: &str) -> Vec<u8> {
        let mut text = format!("#!/bin/sh\nJOB='{header}'\n");
        for i in 0..2000 {
            text.push_str(&format!("echo step {i} of the shared body\n"));
        }
        text.into_bytes()
    }

    #[test]
    fn content_reads_back_exactly_what_was_stored() {
        let binary: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for bytes in [
            Vec::new(),
            b"x".to_vec(),
            b"no newline at the end".to_vec(),
            b"\n\n\n".to_vec(),
            script("a"),
            binary,
        ] {
            let content = Content::new(&bytes);
            assert_eq!(content.len(), bytes.len());
            assert_eq!(&content.to_bytes()[..], &bytes[..]);
            assert!(content
                .runs
                .iter()
                .all(|r| !r.is_empty() && r.len() <= MAX_RUN));
        }
    }

    #[test]
    fn scripts_that_differ_in_their_header_share_their_body() {
        let one = Content::new(&script("job-one"));
        let other = Content::new(&script("a-much-longer-job-name"));
        assert!(one.runs.len() > 10, "{} runs", one.runs.len());
        let shared_bytes: usize = other
            .runs
            .iter()
            .filter(|r| one.runs.iter().any(|o| Arc::ptr_eq(o, r)))
            .map(|r| r.len())
            .sum();
        // Only the run holding the header is the script's own.
        let own = other.len - shared_bytes;
        assert!(
            own > 0 && own < 4096,
            "{own} of {} bytes not shared",
            other.len
        );
    }

    #[test]
    fn content_survives_a_save_and_a_load() {
        let content = Content::new(&script("saved"));
        let text = serde_json::to_string(&content).unwrap();
        let back: Content = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_bytes(), content.to_bytes());
        // The loaded copy shares the runs the live one holds.
        assert!(Arc::ptr_eq(&back.runs[5], &content.runs[5]));
    }
}
