//! The message a bus consumer is handling, offered to the store: a store
//! that keeps the queue in its own database (the embedded one) completes
//! the message in the transaction that saves what follows it, and takes
//! the consumer's next message in that transaction too (the oldest
//! receivable one, as a receive would), so a step costs one commit instead
//! of two (the save, then a completion with the next receive).
//!
//! Why completing there is safe: a message whose handler saved its job's
//! next event has done what it was delivered for. Completing it in that
//! commit is the same as completing it right after the commit, which is
//! what a handler that returns next does anyway; and a crash between the
//! two already meant a second delivery that finds the work done.
//!
//! Only the handler's own job is offered (a save of another document
//! completes nothing), only a save that sends something, and only once: the
//! first such save of the handling takes it. Outside
//! [`handling`] (the Functions handler, commands, the sweeper) nothing is
//! offered and every store behaves as before.

use crate::ports::Delivery;
use std::cell::RefCell;
use std::future::Future;

/// What the store did with the message in hand: completed it.
#[derive(Debug)]
pub struct Taken {
    /// The consumer's next message, locked for it; `None` when nothing was
    /// receivable or no receive was asked for.
    pub next: Option<Delivery>,
}

struct InHand {
    job: String,
    lock_token: String,
    receive: bool,
    taken: Option<Taken>,
}

/// The message in hand, as a store sees it.
#[derive(Debug, PartialEq)]
pub(crate) struct Offer {
    pub lock_token: String,
    /// Whether to take the consumer's next message too.
    pub receive: bool,
}

tokio::task_local! {
    static IN_HAND: RefCell<InHand>;
}

/// Runs `handle` with the message locked by `lock_token`, addressed to
/// `job`, offered to the store (with `receive`, the consumer's next
/// message is taken along); says whether a save completed it.
pub(crate) async fn handling<T>(
    job: &str,
    lock_token: &str,
    receive: bool,
    handle: impl Future<Output = T>,
) -> (T, Option<Taken>) {
    let in_hand = RefCell::new(InHand {
        job: job.to_string(),
        lock_token: lock_token.to_string(),
        receive,
        taken: None,
    });
    IN_HAND
        .scope(in_hand, async {
            let out = handle.await;
            (out, IN_HAND.with(|h| h.borrow_mut().taken.take()))
        })
        .await
}

/// The message in hand, for a save of `job` that sends something; `None`
/// outside [`handling`], for another job, or once taken.
pub(crate) fn offered(job: &str) -> Option<Offer> {
    IN_HAND
        .try_with(|h| {
            let h = h.borrow();
            (h.taken.is_none() && h.job == job).then(|| Offer {
                lock_token: h.lock_token.clone(),
                receive: h.receive,
            })
        })
        .ok()
        .flatten()
}

/// Records that the store completed the message in hand with a save.
pub(crate) fn take(taken: Taken) {
    let _ = IN_HAND.try_with(|h| h.borrow_mut().taken = Some(taken));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_handlers_job_is_offered_and_only_until_taken() {
        assert_eq!(offered("job-a"), None, "nothing outside a handling");
        let ((), taken) = handling("job-a", "7.token", true, async {
            assert_eq!(offered("job-b"), None, "another job's save");
            let offer = Offer {
                lock_token: "7.token".into(),
                receive: true,
            };
            assert_eq!(offered("job-a"), Some(offer));
            take(Taken { next: None });
            assert_eq!(offered("job-a"), None, "taken once");
        })
        .await;
        assert!(taken.is_some_and(|t| t.next.is_none()));
        let ((), taken) = handling("job-a", "8.token", false, async {
            assert!(offered("job-a").is_some_and(|o| !o.receive));
        })
        .await;
        assert!(taken.is_none(), "no save took it");
    }
}
