//! `flotilla status JOB --watch`: a compact timeline of the job in the
//! terminal, redrawn until the job ends.
//!
//! One line per step and per undo (status, duration, attempts, the last
//! error), then the current wait and why. On a terminal the block is redrawn
//! in place; otherwise (a pipe, a file) each line is printed once per change,
//! prefixed with the time (RFC 3339), and never with escape codes.

use flotilla_core::saga::{JobStatus, Saga, StepStatus};
use std::collections::HashMap;
use std::io::Write;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One line of the timeline: `key` names the row; `line` is what a change
/// line shows (a running duration reads `running`), `tty` what a terminal
/// shows (with the running clock).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: String,
    pub line: String,
    pub tty: String,
}

impl Row {
    fn fixed(key: impl Into<String>, line: String) -> Row {
        Row {
            key: key.into(),
            tty: line.clone(),
            line,
        }
    }
}

/// A duration as `850 ms`, `12 s`, `3m 05s`, `1h 02m`.
pub fn duration(d: time::Duration) -> String {
    let ms = d.whole_milliseconds().max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let s = (ms + 500) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

/// `t` in RFC 3339, to the millisecond.
fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_millisecond(t.millisecond())
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The timeline of `saga` at `now`.
pub fn rows(saga: &Saga, now: OffsetDateTime) -> Vec<Row> {
    let ended = saga.is_settled();
    let head = format!("job {}  {:?}", saga.id, saga.status);
    let mut out = vec![Row {
        key: "job".into(),
        tty: format!(
            "{head}  {} {}",
            duration((if ended { saga.updated_at } else { now }) - saga.created_at),
            if ended { "in all" } else { "so far" }
        ),
        line: head,
    }];
    for s in &saga.steps {
        let (took, live) = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => (duration(b - a), None),
            (Some(a), None) if s.status == StepStatus::Running => {
                ("running".into(), Some(duration(now - a)))
            }
            _ => ("-".into(), None),
        };
        let undoing = s.undo_started_at.is_some() || s.undo_attempts > 0;
        let error = s
            .last_error
            .as_ref()
            .filter(|_| !undoing || s.status == StepStatus::Failed)
            .map(|e| format!("  {}: {}", e.code, e.message))
            .unwrap_or_default();
        let line = |took: &str| {
            format!(
                "  {:<12} {:<12} {:<10} attempts {}{}",
                s.name.as_str(),
                format!("{:?}", s.status),
                took,
                s.attempts,
                error
            )
        };
        out.push(Row {
            key: format!("step {}", s.name),
            tty: line(live.as_deref().unwrap_or(&took)),
            line: line(&took),
        });
        if undoing {
            let (status, took, live) = match (s.undo_started_at, s.undo_finished_at) {
                (Some(a), Some(b)) => ("Undone", duration(b - a), None),
                (Some(a), None) => ("Undoing", "running".into(), Some(duration(now - a))),
                _ => ("Undoing", "-".into(), None),
            };
            let error = s
                .last_error
                .as_ref()
                .filter(|_| s.undo_attempts > 0)
                .map(|e| format!("  {}: {}", e.code, e.message))
                .unwrap_or_default();
            let line = |took: &str| {
                format!(
                    "  {:<12} {:<12} {:<10} undo attempts {}{}",
                    format!("undo {}", s.name),
                    status,
                    took,
                    s.undo_attempts + 1,
                    error
                )
            };
            out.push(Row {
                key: format!("undo {}", s.name),
                tty: line(live.as_deref().unwrap_or(&took)),
                line: line(&took),
            });
        }
    }
    if let Some(w) = saga.wait() {
        let checks = if w.checks > 0 {
            format!(", {} check(s)", w.checks)
        } else {
            String::new()
        };
        out.push(Row::fixed(
            "wait",
            format!("  waiting: {} (since {}{checks})", w.why, rfc3339(w.since)),
        ));
    }
    if let Some(e) = &saga.error {
        out.push(Row::fixed(
            "error",
            format!("  error: {}: {}", e.code, e.message),
        ));
    }
    out
}

/// Draws successive timelines: in place on a terminal, as change lines otherwise.
pub struct Watcher {
    terminal: bool,
    /// Lines drawn last time (terminal), to move back over them.
    drawn: usize,
    /// The last line printed per row (not a terminal).
    last: HashMap<String, String>,
}

impl Watcher {
    pub fn new(terminal: bool) -> Watcher {
        Watcher {
            terminal,
            drawn: 0,
            last: HashMap::new(),
        }
    }

    /// Shows `rows` on `out`.
    pub fn show(
        &mut self,
        out: &mut impl Write,
        rows: &[Row],
        now: OffsetDateTime,
    ) -> std::io::Result<()> {
        if self.terminal {
            if self.drawn > 0 {
                // Up to the block's first line, then clear to the end of the screen.
                write!(out, "\x1b[{}F\x1b[J", self.drawn)?;
            }
            for r in rows {
                writeln!(out, "{}", r.tty)?;
            }
            self.drawn = rows.len();
        } else {
            let stamp = rfc3339(now);
            for r in rows {
                if self.last.get(&r.key) != Some(&r.line) {
                    writeln!(out, "{stamp} {}", r.line.trim_start())?;
                    self.last.insert(r.key.clone(), r.line.clone());
                }
            }
            if self.last.contains_key("wait") && !rows.iter().any(|r| r.key == "wait") {
                writeln!(out, "{stamp} no longer waiting")?;
                self.last.remove("wait");
            }
        }
        out.flush()
    }
}

/// The job's final line for a non-terminal watcher.
pub fn outcome(saga: &Saga) -> String {
    let how = match saga.status {
        JobStatus::Succeeded => "succeeded",
        JobStatus::Compensated => "was compensated",
        JobStatus::Deleted => "was deleted",
        JobStatus::Failed => "failed",
        JobStatus::Degraded => "is degraded",
        JobStatus::Rejected => "was rejected",
        _ => "stopped",
    };
    format!("job {} {how}", saga.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::saga::StepName;
    use flotilla_core::spec::ClusterSpec;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(time::Duration::milliseconds(850)), "850 ms");
        assert_eq!(duration(time::Duration::seconds(12)), "12 s");
        assert_eq!(duration(time::Duration::seconds(185)), "3m 05s");
        assert_eq!(duration(time::Duration::seconds(3720)), "1h 02m");
    }

    #[test]
    fn change_lines_are_printed_once_and_without_escapes() {
        let mut saga = Saga::new("demo-abc".into(), ClusterSpec::example(), t(0));
        flotilla_core::decide::start_step(&mut saga, StepName::Stage, t(1));
        let mut w = Watcher::new(false);
        let mut out = Vec::new();
        w.show(&mut out, &rows(&saga, t(2)), t(2)).unwrap();
        w.show(&mut out, &rows(&saga, t(5)), t(5)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('\x1b'), "{text}");
        assert_eq!(
            text.matches("stage").count(),
            1,
            "unchanged: printed once\n{text}"
        );
        assert!(
            text.contains("2027-01-15T08:00:02Z stage        Running"),
            "{text}"
        );

        let mut tty = Watcher::new(true);
        let mut out = Vec::new();
        tty.show(&mut out, &rows(&saga, t(2)), t(2)).unwrap();
        tty.show(&mut out, &rows(&saga, t(5)), t(5)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\x1b[7F\x1b[J"), "redrawn in place: {text:?}");
        assert!(text.contains("stage        Running      4 s"), "{text}");
    }
}
