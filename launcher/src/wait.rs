//! Waiting for conditions instead of wall-clock time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::LaunchError;

/// First pause between two probes; it doubles up to [`MAX_POLL_PAUSE`].
pub const FIRST_POLL_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between two probes.
pub const MAX_POLL_PAUSE: Duration = Duration::from_millis(250);

/// Polls `probe` until it returns `Some`, or fails with [`LaunchError::Timeout`] naming
/// `what` after `timeout`. The probe runs at least once.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T, LaunchError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL_PAUSE;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(LaunchError::Timeout {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A condition that holds on the third probe is returned; one that never holds
    /// times out with its name.
    #[tokio::test]
    async fn polls_until_the_condition_holds() {
        let mut probes = 0;
        let value = wait_for("three probes", Duration::from_secs(1), || {
            probes += 1;
            let ready = probes == 3;
            async move { ready.then_some(probes) }
        })
        .await
        .expect("holds");
        assert_eq!(value, 3);

        let never = wait_for("nothing", Duration::from_millis(50), || async { None::<()> })
            .await
            .expect_err("times out");
        assert_eq!(never.to_string(), "timed out after 50ms waiting for nothing");
    }
}
