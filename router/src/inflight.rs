//! Backpressure: at most `max_inflight_requests` client requests are served at once;
//! beyond that a request fails fast with `RESOURCE_EXHAUSTED` instead of queueing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::RouterError;

/// A shared bound on requests in flight.
#[derive(Debug, Clone)]
pub struct InflightLimiter {
    permits: Arc<Semaphore>,
    max_inflight_requests: usize,
}

impl InflightLimiter {
    pub fn new(max_inflight_requests: usize) -> Self {
        let max_inflight_requests = max_inflight_requests.clamp(1, Semaphore::MAX_PERMITS);
        InflightLimiter {
            permits: Arc::new(Semaphore::new(max_inflight_requests)),
            max_inflight_requests,
        }
    }

    /// A permit held for the duration of one request, or `Overloaded` when none is left.
    pub fn try_acquire(&self) -> Result<OwnedSemaphorePermit, RouterError> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| RouterError::Overloaded {
                max_inflight_requests: self.max_inflight_requests,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit is enforced and released permits are reusable.
    #[test]
    fn limits_requests_in_flight() {
        let limiter = InflightLimiter::new(2);
        let first = limiter.try_acquire();
        let second = limiter.try_acquire();
        assert!(first.is_ok() && second.is_ok());
        assert!(matches!(
            limiter.try_acquire(),
            Err(RouterError::Overloaded {
                max_inflight_requests: 2
            })
        ));
        drop(first);
        assert!(limiter.try_acquire().is_ok());
    }
}
