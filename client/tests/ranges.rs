//! Batch writes, scans, counts and range deletes against mock routers: paging, stream
//! resumption, request-id reuse and the outcome-unknown contract of range deletes.

mod common;

use std::time::Duration;

use common::{dead_endpoint, MockRouter, MOCK_SHARDS, STREAM_CHUNK};
use futures::TryStreamExt;
use ringkv_client::{
    Client, ClientConfig, CountOptions, Error, KeyRange, Mutation, MutationResult, ScanOptions,
};
use tonic::Status;

fn config() -> ClientConfig {
    ClientConfig::builder()
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid config")
}

async fn client(router: &MockRouter) -> Client {
    Client::connect_with(vec![router.serve().await.to_string()], config())
        .await
        .expect("client")
}

/// Loads `user/0` .. `user/{n-1}` (zero-padded) and one key outside the prefix.
async fn load_users(client: &Client, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("user/{i:02}")).collect();
    let mut mutations: Vec<Mutation> = keys
        .iter()
        .map(|key| Mutation::put(key, key.as_bytes()))
        .collect();
    mutations.push(Mutation::put("zzz", "outside"));
    client.batch_write(mutations).await.expect("batch write");
    keys
}

fn key_strings<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    keys.into_iter()
        .map(|key| String::from_utf8_lossy(key).into_owned())
        .collect()
}

/// A batch write reports one result per mutation; repeated keys are refused locally.
#[tokio::test]
async fn batch_write_results() {
    let router = MockRouter::default();
    let client = client(&router).await;
    client.put("old", "x").await.expect("put");
    let results = client
        .batch_write(vec![
            Mutation::put("new", "1"),
            Mutation::delete("old"),
            Mutation::delete("none"),
        ])
        .await
        .expect("batch write");
    assert_eq!(results.len(), 3);
    assert!(results[0].version > 0 && !results[0].existed);
    assert_eq!(
        results[1],
        MutationResult {
            version: 0,
            existed: true
        }
    );
    assert_eq!(
        results[2],
        MutationResult {
            version: 0,
            existed: false
        }
    );

    let calls = router.calls();
    let repeated = client
        .batch_write(vec![Mutation::put("k", "1"), Mutation::delete("k")])
        .await;
    assert!(matches!(repeated, Err(Error::InvalidArgument(_))), "{repeated:?}");
    let empty_key = client.batch_write(vec![Mutation::put("", "1")]).await;
    assert!(matches!(empty_key, Err(Error::InvalidArgument(_))));
    assert!(client.batch_write(Vec::new()).await.expect("empty").is_empty());
    assert_eq!(router.calls(), calls, "nothing was sent");
}

/// A batch write retried after UNAVAILABLE reuses its request id.
#[tokio::test]
async fn batch_write_retries_with_the_same_request_id() {
    let router = MockRouter::default();
    router.fail_next(Status::unavailable("no leader"));
    let client = client(&router).await;
    client
        .batch_write(vec![Mutation::put("a", "1")])
        .await
        .expect("batch write");
    let ids = router.request_ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
}

/// A batch the routers keep answering UNAVAILABLE may have been applied by some shards:
/// it is reported as outcome unknown.
#[tokio::test]
async fn batch_write_unavailable_is_outcome_unknown() {
    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(Status::unavailable("shard 2 has no leader"));
    }
    let client = client(&router).await;
    let error = client
        .batch_write(vec![Mutation::put("a", "1"), Mutation::put("b", "2")])
        .await
        .expect_err("unavailable");
    assert!(matches!(error, Error::OutcomeUnknown(_)), "{error:?}");
}

/// Paging with tokens visits every key of the prefix once, forwards and backwards.
#[tokio::test]
async fn scan_pages() {
    let router = MockRouter::default();
    let client = client(&router).await;
    let keys = load_users(&client, 7).await;
    for reverse in [false, true] {
        let range = KeyRange::prefix("user/");
        let options = ScanOptions::new().limit(3).reverse(reverse).keys_only(true);
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = client.scan(&range, &options, token.as_ref()).await.expect("scan");
            assert!(page.entries.len() <= 3);
            assert!(page.entries.iter().all(|entry| entry.value.is_empty()));
            seen.extend(page.entries.into_iter().map(|entry| entry.key));
            pages += 1;
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut expected = keys.clone();
        if reverse {
            expected.reverse();
        }
        assert_eq!(key_strings(&seen), expected);
        assert_eq!(pages, 3);
    }
    let bounded = client
        .scan(
            &KeyRange::between("user/02", "user/04"),
            &ScanOptions::new(),
            None,
        )
        .await
        .expect("scan");
    assert_eq!(
        key_strings(bounded.entries.iter().map(|entry| &entry.key)),
        ["user/02", "user/03"]
    );
    assert_eq!(bounded.entries[0].value, b"user/02");
    assert!(bounded.next.is_none());
}

/// Bad limits and ranges are refused before any call; a foreign token by the router.
#[tokio::test]
async fn scan_argument_errors() {
    let router = MockRouter::default();
    let client = client(&router).await;
    for options in [ScanOptions::new().limit(0), ScanOptions::new().limit(10_001)] {
        let result = client.scan(&KeyRange::all(), &options, None).await;
        assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    }
    let inverted = client
        .scan(&KeyRange::between("b", "a"), &ScanOptions::new(), None)
        .await;
    assert!(matches!(inverted, Err(Error::InvalidArgument(_))));
    assert_eq!(router.calls(), 0);
    let foreign = "00".parse().expect("token");
    let result = client
        .scan(&KeyRange::all(), &ScanOptions::new(), Some(&foreign))
        .await;
    assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    let mut stream = client.scan_stream(&KeyRange::all(), &ScanOptions::new().limit(0));
    assert!(matches!(stream.try_next().await, Err(Error::InvalidArgument(_))));
}

/// A stream broken twice resumes after its last token: every key exactly once, in order.
#[tokio::test]
async fn scan_stream_resumes_after_breaks() {
    let router = MockRouter::default();
    let client = client(&router).await;
    let keys = load_users(&client, 9).await;
    router.break_stream_after(1);
    router.break_stream_after(2);
    let entries: Vec<_> = client
        .scan_stream(&KeyRange::prefix("user/"), &ScanOptions::new())
        .entries()
        .try_collect()
        .await
        .expect("scan stream");
    assert_eq!(key_strings(entries.iter().map(|entry| &entry.key)), keys);

    let state = router.state.lock().expect("lock");
    assert_eq!(state.stream_tokens.len(), 3, "opened, then resumed twice");
    assert!(state.stream_tokens[0].is_empty());
    // Resumed after the last key of the last message received.
    assert_eq!(
        state.stream_tokens[1],
        [b"T".as_slice(), keys[STREAM_CHUNK - 1].as_bytes()].concat()
    );
    assert_eq!(
        state.stream_tokens[2],
        [b"T".as_slice(), keys[3 * STREAM_CHUNK - 1].as_bytes()].concat()
    );
}

/// A stream that goes silent is reopened after the idle timeout, after its last token.
#[tokio::test]
async fn scan_stream_resumes_after_going_silent() {
    let router = MockRouter::default();
    let config = ClientConfig::builder()
        .stream_idle_timeout(Duration::from_millis(200))
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid config");
    let client = Client::connect_with(vec![router.serve().await.to_string()], config)
        .await
        .expect("client");
    let keys = load_users(&client, 6).await;
    router.stall_stream_after(1);
    let entries: Vec<_> = client
        .scan_stream(&KeyRange::prefix("user/"), &ScanOptions::new())
        .entries()
        .try_collect()
        .await
        .expect("scan stream");
    assert_eq!(key_strings(entries.iter().map(|entry| &entry.key)), keys);
    assert_eq!(router.state.lock().expect("lock").stream_tokens.len(), 2);
}

/// The total limit holds across a resume (the resumed stream asks for the rest).
#[tokio::test]
async fn scan_stream_limit_across_resume() {
    let router = MockRouter::default();
    let client = client(&router).await;
    let keys = load_users(&client, 9).await;
    router.break_stream_after(1);
    let entries: Vec<_> = client
        .scan_stream(
            &KeyRange::prefix("user/"),
            &ScanOptions::new().limit(5).reverse(true),
        )
        .entries()
        .try_collect()
        .await
        .expect("scan stream");
    let expected: Vec<String> = keys.iter().rev().take(5).cloned().collect();
    assert_eq!(key_strings(entries.iter().map(|entry| &entry.key)), expected);
    let limits = router.state.lock().expect("lock").stream_limits.clone();
    assert_eq!(limits, [5, 3]);
}

/// A stream that keeps breaking without progress ends with the error.
#[tokio::test]
async fn scan_stream_gives_up_without_progress() {
    let router = MockRouter::default();
    let client = client(&router).await;
    load_users(&client, 4).await;
    for _ in 0..5 {
        router.break_stream_after(0);
    }
    let result: Result<Vec<_>, _> = client
        .scan_stream(&KeyRange::all(), &ScanOptions::new())
        .try_collect()
        .await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    // max_attempts (3) opens in a row without progress.
    assert_eq!(router.state.lock().expect("lock").stream_tokens.len(), 3);
}

/// An empty range streams nothing; a dead router is an error item.
#[tokio::test]
async fn scan_stream_empty_and_unreachable() {
    let router = MockRouter::default();
    let client = client(&router).await;
    let chunks: Vec<_> = client
        .scan_stream(&KeyRange::prefix("nothing"), &ScanOptions::new())
        .try_collect()
        .await
        .expect("empty scan");
    assert!(chunks.is_empty());

    let dead = Client::connect_with(vec![dead_endpoint().await.to_string()], config())
        .await
        .expect("client");
    let result: Result<Vec<_>, _> = dead
        .scan_stream(&KeyRange::all(), &ScanOptions::new())
        .try_collect()
        .await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
}

/// Count reports progress per shard and the final total; a broken count starts over.
#[tokio::test]
async fn count_with_progress_and_restart() {
    let router = MockRouter::default();
    let client = client(&router).await;
    load_users(&client, 5).await;
    let mut reports = Vec::new();
    let result = client
        .count_with_progress(&KeyRange::prefix("user/"), &CountOptions::new(), |progress| {
            reports.push(progress.clone())
        })
        .await
        .expect("count");
    assert_eq!(result.count, 5);
    assert_eq!(result.shards_total, MOCK_SHARDS);
    assert!(!result.is_partial());
    assert_eq!(reports.len(), MOCK_SHARDS as usize);
    assert!(reports
        .last()
        .is_some_and(|last| last.done && last.shards_done == MOCK_SHARDS));

    router.break_stream_after(1);
    let result = client
        .count(&KeyRange::all(), &CountOptions::new())
        .await
        .expect("count");
    assert_eq!(result.count, 6);
}

/// delete_range deletes a range; the whole key space needs delete_all.
#[tokio::test]
async fn delete_ranges() {
    let router = MockRouter::default();
    let client = client(&router).await;
    load_users(&client, 6).await;
    assert_eq!(
        client
            .delete_range(&KeyRange::between("user/01", "user/03"))
            .await
            .expect("delete range"),
        2
    );
    assert_eq!(
        client
            .delete_range(&KeyRange::prefix("user/"))
            .await
            .expect("delete"),
        4
    );
    for everything in [KeyRange::all(), KeyRange::prefix(""), KeyRange::starting_at("")] {
        let refused = client.delete_range(&everything).await;
        assert!(matches!(refused, Err(Error::InvalidArgument(_))), "{refused:?}");
    }
    assert_eq!(client.delete_all().await.expect("delete all"), 1);
    assert_eq!(
        client
            .count(&KeyRange::all(), &CountOptions::new())
            .await
            .expect("count")
            .count,
        0
    );
}

/// A delete-range the routers keep answering UNAVAILABLE may be partly applied: it is
/// reported as outcome unknown, with the same request id on every attempt.
#[tokio::test]
async fn delete_range_unavailable_is_outcome_unknown() {
    let router = MockRouter::default();
    for _ in 0..3 {
        router.fail_next(Status::unavailable("shard 1 has no leader"));
    }
    let client = client(&router).await;
    let error = client
        .delete_range(&KeyRange::prefix("p"))
        .await
        .expect_err("unavailable");
    assert!(
        matches!(error, Error::OutcomeUnknown(ref message) if message.contains("deleting it again is safe")),
        "{error:?}"
    );
    let ids = router.request_ids();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]));
}
