//! The client against mock routers: operations, failover, request-id reuse, deadlines
//! and the outcome-unknown contract.

mod common;

use std::time::Duration;

use common::{dead_endpoint, outcome_unknown, MockRouter};
use ringkv_client::{CasOutcome, Client, ClientConfig, Error, ReadConsistency, Versioned};
use tonic::Status;

fn config(timeout: Duration) -> ClientConfig {
    ClientConfig::builder()
        .request_timeout(timeout)
        .connect_timeout(Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid config")
}

async fn client(endpoints: Vec<String>) -> Client {
    Client::connect_with(endpoints, config(Duration::from_secs(5)))
        .await
        .expect("client")
}

/// Every operation round-trips through a router, with a gRPC deadline attached.
#[tokio::test]
async fn operations_round_trip() {
    let router = MockRouter::default();
    let addr = router.serve().await;
    let client = client(vec![addr.to_string()]).await;

    assert_eq!(client.get("k").await.expect("get"), None);
    let v1 = client.put("k", "one").await.expect("put");
    assert_eq!(
        client.get_with("k", ReadConsistency::Stale).await.expect("get"),
        Some(Versioned {
            value: b"one".to_vec(),
            version: v1
        })
    );
    let outcome = client
        .compare_and_swap("k", v1 + 100, Some(b"x".to_vec()))
        .await
        .expect("cas");
    assert_eq!(
        outcome,
        CasOutcome::Mismatch {
            current: Some(Versioned {
                value: b"one".to_vec(),
                version: v1
            })
        }
    );
    let outcome = client
        .compare_and_swap("k", v1, Some(b"two".to_vec()))
        .await
        .expect("cas");
    assert!(matches!(outcome, CasOutcome::Swapped { new_version } if new_version > v1));
    assert_eq!(
        client.compare_and_swap("absent", 0, None).await.expect("cas"),
        CasOutcome::Swapped { new_version: 0 }
    );

    let versions = client
        .batch_put(vec![("a", "1"), ("b", "2")])
        .await
        .expect("batch put");
    assert_eq!(versions.len(), 2);
    let values = client.batch_get(["a", "missing", "b"]).await.expect("batch get");
    assert_eq!(values.len(), 3);
    assert_eq!(values[0].as_ref().map(|v| v.value.clone()), Some(b"1".to_vec()));
    assert_eq!(values[1], None);
    assert!(client
        .batch_get(Vec::<&str>::new())
        .await
        .expect("empty")
        .is_empty());

    assert!(client.delete("k").await.expect("delete"));
    assert!(!client.delete("k").await.expect("delete"));
    let status = client.cluster_status().await.expect("status");
    assert_eq!(status.shards.len(), 2);

    assert!(router.state.lock().expect("lock").saw_deadline);
    for id in router.request_ids() {
        assert_eq!(id.len(), 16);
    }
}

/// A dead first router is skipped and the next one serves the write.
#[tokio::test]
async fn fails_over_from_a_dead_router() {
    let dead = dead_endpoint().await;
    let router = MockRouter::default();
    let live = router.serve().await;
    let client = client(vec![dead.to_string(), live.to_string()]).await;
    let version = client.put("k", "v").await.expect("put fails over");
    assert!(version > 0);
    // The live router is now preferred: the next call goes there directly.
    client.get("k").await.expect("get");
    assert_eq!(router.calls(), 2);
}

/// An UNAVAILABLE answer moves the write to the next router with the same request id.
#[tokio::test]
async fn unavailable_retries_with_the_same_request_id() {
    let first = MockRouter::default();
    first.fail_next(Status::unavailable("no leader for shard 3"));
    let second = MockRouter::default();
    let client = client(vec![
        first.serve().await.to_string(),
        second.serve().await.to_string(),
    ])
    .await;
    client.put("k", "v").await.expect("put");
    let first_ids = first.request_ids();
    let second_ids = second.request_ids();
    assert_eq!(first_ids.len(), 1);
    assert_eq!(first_ids, second_ids, "the retry reuses the request id");
}

/// Outcome-unknown answers are retried with the same id and, when retries run out,
/// reported as OutcomeUnknown — not as a failure.
#[tokio::test]
async fn outcome_unknown_is_reported_not_failed() {
    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(outcome_unknown("commit not confirmed"));
    }
    let client = client(vec![router.serve().await.to_string()]).await;
    let error = client.put("k", "v").await.expect_err("ambiguous");
    assert!(matches!(error, Error::OutcomeUnknown(_)), "{error:?}");
    assert!(!error.is_retryable());
    let ids = router.request_ids();
    assert_eq!(ids.len(), 3, "bounded attempts");
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]));
}

/// Once an attempt may have been applied, a later definite refusal is not a failure: the
/// write is reported outcome-unknown, naming the refusal (the review's path: the write
/// timed out at one router, another router refused the retry).
#[tokio::test]
async fn a_refusal_after_an_ambiguous_attempt_is_outcome_unknown() {
    let first = MockRouter::default();
    first.fail_next(outcome_unknown("commit timed out"));
    let second = MockRouter::default();
    second.fail_next(Status::invalid_argument(
        "value is 2 bytes, more than max_value_bytes = 1",
    ));
    let client = client(vec![
        first.serve().await.to_string(),
        second.serve().await.to_string(),
    ])
    .await;
    let error = client.put("k", "vv").await.expect_err("ambiguous, then refused");
    assert!(
        matches!(error, Error::OutcomeUnknown(ref m) if m.contains("max_value_bytes")),
        "{error:?}"
    );
    assert_eq!(first.request_ids(), second.request_ids());
}

/// A batch put is applied shard by shard: UNAVAILABLE after it reached a router may follow a
/// partial application, so retries that run out end outcome-unknown, not unavailable.
#[tokio::test]
async fn a_batch_put_that_keeps_failing_is_outcome_unknown() {
    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(Status::unavailable(
            "batch failed on 1 of 2 shards: shard 3 has no leader",
        ));
    }
    let client = client(vec![router.serve().await.to_string()]).await;
    let error = client
        .batch_put([("a", "1"), ("b", "2")])
        .await
        .expect_err("unavailable");
    assert!(matches!(error, Error::OutcomeUnknown(_)), "{error:?}");
    assert_eq!(router.calls(), 3, "retried with the same id while attempts last");
}

/// An outcome-unknown followed by a success is a success (the cluster de-duplicated).
#[tokio::test]
async fn outcome_unknown_then_success_succeeds() {
    let router = MockRouter::default();
    router.fail_next(outcome_unknown("leader changed"));
    let client = client(vec![router.serve().await.to_string()]).await;
    assert!(client.delete("k").await.is_ok());
}

/// A definite error is returned at once without retrying.
#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let router = MockRouter::default();
    router.fail_next(Status::invalid_argument("value larger than 1 MiB"));
    let client = client(vec![router.serve().await.to_string()]).await;
    let error = client.put("k", "v").await.expect_err("rejected");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    assert_eq!(router.calls(), 1);
}

/// A slow router: a read times out as DeadlineExceeded, a write as OutcomeUnknown.
#[tokio::test]
async fn deadline_read_vs_write() {
    let router = MockRouter::default();
    router.set_delay(Duration::from_secs(2));
    let addr = router.serve().await;
    let client = Client::connect_with(vec![addr.to_string()], config(Duration::from_millis(200)))
        .await
        .expect("client");
    let read = client.get("k").await.expect_err("slow read");
    assert!(matches!(read, Error::DeadlineExceeded(_)), "{read:?}");
    assert!(read.is_retryable());
    let write = client.put("k", "v").await.expect_err("slow write");
    assert!(matches!(write, Error::OutcomeUnknown(_)), "{write:?}");
}

/// With every router down, reads fail with a transport error within the attempt bound.
#[tokio::test]
async fn all_routers_down() {
    let client = client(vec![
        dead_endpoint().await.to_string(),
        dead_endpoint().await.to_string(),
    ])
    .await;
    let error = client.get("k").await.expect_err("no router");
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    // A write that never reached a router is not ambiguous.
    let error = client.put("k", "v").await.expect_err("no router");
    assert!(matches!(error, Error::Transport(_)), "{error:?}");
}

/// The empty key is rejected locally.
#[tokio::test]
async fn empty_key_rejected_locally() {
    let client = client(vec![dead_endpoint().await.to_string()]).await;
    assert!(matches!(client.get("").await, Err(Error::InvalidArgument(_))));
}

/// A batch get the router answers in pages (each reply within its byte budget) returns
/// every key, in order, as one answer: the client asks again for the keys left.
#[tokio::test]
async fn batch_gets_follow_the_routers_pages() {
    let router = MockRouter::default();
    let addr = router.serve().await;
    let client = Client::connect(vec![addr.to_string()]).await.expect("client");
    let keys: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
    client
        .batch_put(keys.iter().map(|key| (key.clone(), key.clone())))
        .await
        .expect("batch put");
    router.state.lock().expect("lock").batch_get_page = Some(2);
    let calls_before = router.calls();
    let mut asked = keys.clone();
    asked.push("missing".to_string());
    let values = client.batch_get(&asked).await.expect("batch get");
    let got: Vec<Option<Vec<u8>>> = values.into_iter().map(|value| value.map(|v| v.value)).collect();
    let mut expected: Vec<Option<Vec<u8>>> = keys.iter().map(|key| Some(key.clone().into_bytes())).collect();
    expected.push(None);
    assert_eq!(got, expected);
    assert_eq!(router.calls() - calls_before, 4, "8 keys, 2 per reply");
}

/// A router without `Kv.Pipeline` (an older version) is asked for it once; that call and
/// every later one go unary, and nothing fails. `pipeline(false)` never asks.
#[tokio::test]
async fn a_router_without_the_pipeline_gets_unary_calls() {
    let router = MockRouter::default();
    let addr = router.serve().await;
    let client = client(vec![addr.to_string()]).await;
    let version = client.put("k", "v").await.expect("put");
    for _ in 0..3 {
        let read = client.get("k").await.expect("get");
        assert_eq!(read.map(|read| read.version), Some(version));
    }
    assert!(client.delete("k").await.expect("delete"));
    assert_eq!(router.lock_state().pipeline_opens, 1);
    assert_eq!(router.calls(), 5, "every call was served unary");

    let unary = MockRouter::default();
    let addr = unary.serve().await;
    let config = ClientConfig::builder()
        .request_timeout(Duration::from_secs(5))
        .pipeline(false)
        .build()
        .expect("valid config");
    let client = Client::connect_with(vec![addr.to_string()], config)
        .await
        .expect("client");
    client.put("k", "v").await.expect("put");
    assert_eq!(unary.lock_state().pipeline_opens, 0);
    assert_eq!(unary.calls(), 1);
}
