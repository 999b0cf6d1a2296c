//! Live progress for long commands: a line per step in a terminal
//! (indicatif), plain change lines on stderr otherwise.

use flotilla_core::saga::{Saga, StepName, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;

pub struct Progress {
    bars: Option<(MultiProgress, Vec<ProgressBar>)>,
    last: HashMap<(String, StepName), (StepStatus, u32)>,
    last_status: HashMap<String, String>,
}

impl Progress {
    /// Bars only when stderr is a terminal and the caller wants text.
    pub fn new(text: bool) -> Self {
        let bars = (text && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {prefix:>8} {msg}")
                .expect("valid template");
            let bars = StepName::ALL
                .iter()
                .map(|s| {
                    let bar = multi.add(ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(s.as_str());
                    bar.set_message("pending");
                    bar
                })
                .collect();
            (multi, bars)
        });
        Progress {
            bars,
            last: HashMap::new(),
            last_status: HashMap::new(),
        }
    }

    /// Shows what changed since the last call.
    pub fn update(&mut self, saga: &Saga) {
        for (i, step) in saga.steps.iter().enumerate() {
            let key = (saga.id.clone(), step.name);
            let now = (step.status, step.attempts);
            if self.last.get(&key) == Some(&now) {
                continue;
            }
            self.last.insert(key, now);
            let mut msg = format!("{:?}", step.status);
            if step.attempts > 1 {
                msg.push_str(&format!(" (attempt {})", step.attempts));
            }
            if let Some(e) = &step.last_error {
                msg.push_str(&format!(" — {}: {}", e.code, e.message));
            }
            match &self.bars {
                Some((_, bars)) => {
                    bars[i].set_message(msg);
                    match step.status {
                        StepStatus::Running | StepStatus::Compensating => {
                            bars[i].enable_steady_tick(std::time::Duration::from_millis(120))
                        }
                        _ => bars[i].disable_steady_tick(),
                    }
                }
                None => eprintln!("job {} step {} {}", saga.id, step.name, msg),
            }
        }
        let status = format!("{:?}", saga.status);
        if self.last_status.get(&saga.id) != Some(&status) {
            if self.bars.is_none() {
                eprintln!("job {} {}", saga.id, status);
            }
            self.last_status.insert(saga.id.clone(), status);
        }
    }

    pub fn finish(&self) {
        if let Some((_, bars)) = &self.bars {
            for b in bars {
                b.finish();
            }
        }
    }
}
