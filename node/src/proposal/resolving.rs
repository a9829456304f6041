//! A proposed write's answer from openraft and its timestamp registration, kept together
//! (`propose_timed`, `concurrency.rs`).

use crate::concurrency::WriteTimestamp;

/// openraft's answer to a proposed write, and the write's timestamp registration, which
/// must last until openraft resolves the write (committed and applied, or failed), not only
/// while someone waits for it: dropped unresolved (the caller timed out or went away), it
/// hands both to a task that waits for the answer.
pub(super) struct Resolving<A: std::future::Future + Unpin + Send + 'static> {
    answer: Option<A>,
    registered: Option<WriteTimestamp>,
}

impl<A: std::future::Future + Unpin + Send + 'static> Resolving<A> {
    /// openraft's `answer` to a write whose timestamp is `registered`.
    pub(super) fn new(answer: A, registered: WriteTimestamp) -> Resolving<A> {
        Resolving {
            answer: Some(answer),
            registered: Some(registered),
        }
    }

    /// openraft's answer; the registration ends with it.
    pub(super) async fn resolved(&mut self) -> Option<A::Output> {
        let answer = self.answer.as_mut()?;
        let resolved = answer.await;
        self.answer = None;
        self.registered = None;
        Some(resolved)
    }
}

impl<A: std::future::Future + Unpin + Send + 'static> Drop for Resolving<A> {
    fn drop(&mut self) {
        let (Some(answer), Some(registered)) = (self.answer.take(), self.registered.take()) else {
            return;
        };
        // Outside a runtime (the process exits) nothing is left to wait for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = answer.await;
                drop(registered);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::concurrency::{ConcurrencyManager, TimestampSource};
    use crate::error::NodeError;

    /// Hands out one timestamp, 100.
    struct Fixed;

    impl TimestampSource for Fixed {
        fn timestamp(
            &self,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, NodeError>> + Send + '_>>
        {
            Box::pin(async { Ok(100) })
        }
    }

    /// A write registered at 100 and openraft's answer to it, with the sender of the answer.
    async fn pending_write(
        manager: &Arc<ConcurrencyManager>,
    ) -> (
        Resolving<oneshot::Receiver<&'static str>>,
        oneshot::Sender<&'static str>,
    ) {
        let registered = manager.write_timestamp(&Fixed).await.expect("timestamp");
        let (answer_tx, answer) = oneshot::channel();
        (Resolving::new(answer, registered), answer_tx)
    }

    /// A write's timestamp stays registered until openraft answers, even when its caller's
    /// wait ends first: a snapshot read at that timestamp waits for the answer.
    #[tokio::test]
    async fn a_wait_that_ends_first_keeps_the_timestamp_until_openraft_answers() {
        let manager = Arc::new(ConcurrencyManager::default());
        let (mut pending, answer_tx) = pending_write(&manager).await;
        let waited = tokio::time::timeout(Duration::from_millis(20), pending.resolved()).await;
        assert!(waited.is_err(), "nothing answered yet");
        drop(pending);
        let read = {
            let manager = Arc::clone(&manager);
            tokio::spawn(async move { manager.prepare_read(100).await })
        };
        tokio::task::yield_now().await;
        assert!(!read.is_finished(), "the write at 100 may still commit");
        answer_tx.send("applied").expect("the answer is awaited");
        let read_waited = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the read goes on once openraft answered")
            .expect("read task");
        assert!(read_waited);
    }

    /// An answered wait releases the timestamp at once.
    #[tokio::test]
    async fn an_answered_wait_releases_the_timestamp() {
        let manager = Arc::new(ConcurrencyManager::default());
        let (mut pending, answer_tx) = pending_write(&manager).await;
        answer_tx.send("applied").expect("the answer is awaited");
        assert_eq!(pending.resolved().await, Some(Ok("applied")));
        assert!(!manager.prepare_read(100).await, "released with the answer");
        drop(pending);
    }
}
