//! Bounding password guesses (issue 15): failed logins make the next attempts wait.
//!
//! A password login costs the server a slow hash, and a guesser as many tries as it likes;
//! [`LoginThrottle`] bounds both. It counts consecutive failed logins per user name and per
//! client address, in two bounded tables: the first [`FREE_FAILURES_PER_USER`] (per user) or
//! [`FREE_FAILURES_PER_ADDRESS`] (per address: several people may share one) failures cost
//! nothing; each one after makes every login of that user, or from that address, wait
//! [`FIRST_BLOCK`], doubling with each further failure up to [`LONGEST_BLOCK`]. A login
//! attempted while its user or address waits is refused before its password is checked
//! (so a guess costs no hash and learns nothing), with how long to wait.
//!
//! A successful login clears its user's count, not its address's (a guesser holding one
//! account of its own must not reset the count of its guesses at another's); counts are
//! forgotten [`FORGET_AFTER`] after their last failure. So a person who mistypes once waits
//! for nothing; a guesser gets a handful of tries a minute per user and per address.
//!
//! Each router and each node keeps its own tables (routers throttle what they forward,
//! nodes what reaches them, including logins sent to them directly): a guesser spreading
//! its tries over every node and router gets each one's share. The tables hold at most
//! [`MAX_TRACKED_KEYS`] users and as many addresses; when full, entries whose wait is over
//! go first, then the entry whose last failure is oldest (a guesser who fills the user
//! table with made-up names is itself held back by its address's count).
//!
//! Pure: times are passed in ([`Instant`]), so the rules are tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Consecutive failed logins of one user that cost no wait.
pub const FREE_FAILURES_PER_USER: u32 = 5;
/// Consecutive failed logins from one address that cost no wait.
pub const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// The wait after the first failure past the free ones; each further failure doubles it.
pub const FIRST_BLOCK: Duration = Duration::from_secs(1);
/// The longest wait one failure imposes.
pub const LONGEST_BLOCK: Duration = Duration::from_secs(60);
/// How long after its last failure a count is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Most users, and most addresses, whose failures are counted at once.
pub const MAX_TRACKED_KEYS: usize = 10_000;

/// Why a login is refused before its password is checked, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many failed logins {of}; wait {} ms before trying again",
    retry_after.as_millis()
)]
pub struct Throttled {
    /// `for user "alice"` or `from 10.0.0.7`.
    pub of: String,
    /// How long until a login is considered again.
    pub retry_after: Duration,
}

/// The failures counted for one user or address.
#[derive(Clone, Copy, Debug)]
struct Failures {
    consecutive: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// One bounded table of failure counts.
#[derive(Debug)]
struct Table<K> {
    free_failures: u32,
    entries: HashMap<K, Failures>,
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn new(free_failures: u32) -> Table<K> {
        Table {
            free_failures,
            entries: HashMap::new(),
        }
    }

    /// How long `key` must still wait at `now` (None: it may try).
    fn wait(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let failures = self.entries.get(key)?;
        if now.saturating_duration_since(failures.last_failure) >= FORGET_AFTER {
            self.entries.remove(key);
            return None;
        }
        let left = failures.blocked_until.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    fn failed(&mut self, key: &K, now: Instant) {
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_TRACKED_KEYS {
            self.make_room(now);
        }
        let free_failures = self.free_failures;
        let failures = self.entries.entry(key.clone()).or_insert(Failures {
            consecutive: 0,
            last_failure: now,
            blocked_until: now,
        });
        if now.saturating_duration_since(failures.last_failure) >= FORGET_AFTER {
            failures.consecutive = 0;
        }
        failures.consecutive = failures.consecutive.saturating_add(1);
        failures.last_failure = now;
        if failures.consecutive >= free_failures {
            let doublings = (failures.consecutive - free_failures).min(16);
            let block = FIRST_BLOCK.saturating_mul(1 << doublings).min(LONGEST_BLOCK);
            failures.blocked_until = now + block;
        }
    }

    fn clear(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// Frees at least one entry: those whose wait is over, else the oldest failure.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, failures| failures.blocked_until > now);
        if self.entries.len() < MAX_TRACKED_KEYS {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, failures)| failures.last_failure)
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            self.entries.remove(&oldest);
        }
    }
}

/// Counts failed logins per user and per client address, and says who must wait.
#[derive(Debug)]
pub struct LoginThrottle {
    users: Mutex<Table<String>>,
    addresses: Mutex<Table<IpAddr>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            users: Mutex::new(Table::new(FREE_FAILURES_PER_USER)),
            addresses: Mutex::new(Table::new(FREE_FAILURES_PER_ADDRESS)),
        }
    }
}

impl LoginThrottle {
    /// Whether a login of `user` from `address` (None: unknown) may be tried at `now`; if
    /// not, who waits and how long (the longer of the two waits).
    pub fn check(&self, user: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Throttled> {
        let user = user_key(user);
        let user_wait = lock(&self.users).wait(&user.to_string(), now);
        let address_wait = address.and_then(|address| lock(&self.addresses).wait(&address, now));
        let (of, retry_after) = match (user_wait, address_wait, address) {
            (Some(user_wait), Some(address_wait), Some(address)) if address_wait > user_wait => {
                (format!("from {address}"), address_wait)
            }
            (Some(user_wait), _, _) => (format!("for user {user:?}"), user_wait),
            (None, Some(address_wait), Some(address)) => (format!("from {address}"), address_wait),
            _ => return Ok(()),
        };
        Err(Throttled { of, retry_after })
    }

    /// Counts a failed login (a wrong password, or a user that does not exist).
    pub fn failed(&self, user: &str, address: Option<IpAddr>, now: Instant) {
        lock(&self.users).failed(&user_key(user).to_string(), now);
        if let Some(address) = address {
            lock(&self.addresses).failed(&address, now);
        }
    }

    /// A successful login: the user's count starts over (its address's does not).
    pub fn succeeded(&self, user: &str) {
        lock(&self.users).clear(&user_key(user).to_string());
    }
}

/// What a user name is counted as: itself if it is a valid name (at most
/// [`MAX_NAME_CHARS`](crate::MAX_NAME_CHARS) characters), else one shared key for every
/// invalid name (they never log in; a table of megabyte-long names would not be bounded).
fn user_key(user: &str) -> &str {
    match crate::check_name(user) {
        Ok(()) => user,
        Err(_) => INVALID_NAME_KEY,
    }
}

/// The key every invalid user name is counted under (not a valid name itself).
const INVALID_NAME_KEY: &str = "(an invalid name)";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    /// The free failures cost nothing; the next makes the user wait 1 s, then 2 s, ... up to
    /// the longest block; a success clears the user's count.
    #[test]
    fn failures_past_the_free_ones_back_off() {
        let throttle = LoginThrottle::default();
        let start = Instant::now();
        for _ in 0..FREE_FAILURES_PER_USER - 1 {
            assert!(throttle.check("alice", HOME, start).is_ok());
            throttle.failed("alice", HOME, start);
        }
        assert!(throttle.check("alice", HOME, start).is_ok());
        throttle.failed("alice", HOME, start);
        let refused = throttle.check("alice", HOME, start).expect_err("blocked");
        assert_eq!(refused.retry_after, FIRST_BLOCK);
        assert!(refused.to_string().contains("\"alice\""), "{refused}");
        // Another user from the same address is not blocked.
        assert!(throttle.check("bob", HOME, start).is_ok());
        let later = start + FIRST_BLOCK;
        assert!(throttle.check("alice", HOME, later).is_ok());
        throttle.failed("alice", HOME, later);
        assert_eq!(
            throttle
                .check("alice", HOME, later)
                .expect_err("blocked")
                .retry_after,
            FIRST_BLOCK * 2
        );
        let mut now = later;
        for _ in 0..20 {
            now += LONGEST_BLOCK;
            throttle.failed("alice", HOME, now);
        }
        assert_eq!(
            throttle
                .check("alice", HOME, now)
                .expect_err("blocked")
                .retry_after,
            LONGEST_BLOCK
        );
        throttle.succeeded("alice");
        assert!(throttle.check("alice", None, now).is_ok());
    }

    /// An address failing for many users waits too; a success of one user does not clear it;
    /// counts are forgotten after a while.
    #[test]
    fn addresses_are_counted_across_users() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for guess in 0..FREE_FAILURES_PER_ADDRESS {
            throttle.failed(&format!("user{guess}"), HOME, now);
        }
        throttle.succeeded("user0");
        let refused = throttle.check("carol", HOME, now).expect_err("address blocked");
        assert!(refused.of.contains("127.0.0.1"), "{refused}");
        assert!(throttle.check("carol", None, now).is_ok());
        assert!(throttle.check("carol", HOME, now + FORGET_AFTER).is_ok());
    }

    /// The tables stay bounded, in entries and in the bytes of their keys.
    #[test]
    fn tables_are_bounded() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for guess in 0..MAX_TRACKED_KEYS + 10 {
            throttle.failed(&format!("u{guess}"), None, now);
        }
        assert!(lock(&throttle.users).entries.len() <= MAX_TRACKED_KEYS);
        let long = "x".repeat(1 << 20);
        for _ in 0..FREE_FAILURES_PER_USER {
            throttle.failed(&long, None, now);
        }
        let refused = throttle.check(&long, None, now).expect_err("blocked");
        assert!(refused.to_string().len() < 200, "{refused}");
        assert!(lock(&throttle.users).entries.keys().all(|key| key.len() <= 64));
    }
}
