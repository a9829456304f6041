//! `Kv.Pipeline` as a client in another language sees it (README "Errors and retries"):
//! frames answered under their ids with what their unary calls answer, failures included,
//! and the cluster serving on.

use std::collections::HashMap;

use ringkv_proto::v1::kv_frame::Call;
use ringkv_proto::v1::kv_frame_reply::Answer;
use ringkv_proto::v1::{self, KvFrame, KvFrames};
use ringkv_tests::{Cluster, ClusterOptions, WAIT};
use tonic::Code;

fn frame(id: u64, call: Option<Call>) -> KvFrame {
    KvFrame {
        id,
        timeout_ms: 5_000,
        call,
    }
}

fn put(key: &[u8], value: &[u8], request_id: [u8; 16]) -> v1::PutRequest {
    v1::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        request_id: request_id.to_vec(),
        ..Default::default()
    }
}

fn get(key: &[u8]) -> v1::GetRequest {
    v1::GetRequest {
        key: key.to_vec(),
        consistency: v1::Consistency::Linearizable as i32,
        ..Default::default()
    }
}

/// Sends `frames` as one stream message on a new stream and returns every answer by id
/// (the router answers what it read, then ends the stream).
async fn exchange(cluster: &Cluster, frames: Vec<KvFrame>) -> anyhow::Result<HashMap<u64, Answer>> {
    let mut kv = cluster.kv().await?;
    let sent = futures::stream::iter(vec![KvFrames { frames }]);
    let mut replies = kv.pipeline(sent).await?.into_inner();
    let mut answers = HashMap::new();
    loop {
        match tokio::time::timeout(WAIT, replies.message()).await {
            Err(_) => anyhow::bail!("no answer within {WAIT:?}; answered so far: {:?}", answers.keys()),
            Ok(message) => match message? {
                None => return Ok(answers),
                Some(message) => {
                    for reply in message.replies {
                        let answer = reply.answer.ok_or_else(|| anyhow::anyhow!("an empty answer"))?;
                        anyhow::ensure!(
                            answers.insert(reply.id, answer).is_none(),
                            "id {} answered twice",
                            reply.id
                        );
                    }
                }
            },
        }
    }
}

fn failed(answer: Option<&Answer>) -> (Code, String) {
    match answer {
        Some(Answer::Failed(status)) => (Code::from(status.code), status.message.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A put, a get, a refused put and a frame without a call in one message: each answered
/// under its id as its unary call would be (the refusal with the unary call's code and
/// message); a retry of the put under its request id answers the first version; a get on a
/// later stream reads the put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_answered_as_their_unary_calls() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    let request_id = [7u8; 16];
    let answers = exchange(
        &cluster,
        vec![
            frame(1, Some(Call::Put(put(b"pipe/a", b"1", request_id)))),
            frame(2, Some(Call::Get(get(b"pipe/never-written")))),
            frame(3, Some(Call::Put(put(b"", b"x", [8u8; 16])))),
            frame(4, None),
            frame(5, Some(Call::Get(get(&vec![b'k'; 4097])))),
        ],
    )
    .await?;
    assert_eq!(answers.len(), 5, "{answers:?}");
    let version = match answers.get(&1) {
        Some(Answer::Put(put)) => put.version,
        other => panic!("frame 1: {other:?}"),
    };
    assert!(version > 0);
    assert!(
        matches!(answers.get(&2), Some(Answer::Get(got)) if !got.found),
        "{:?}",
        answers.get(&2)
    );

    let mut kv = cluster.kv().await?;
    let unary = kv
        .put(put(b"", b"x", [9u8; 16]))
        .await
        .expect_err("an empty key is refused");
    let (code, message) = failed(answers.get(&3));
    assert_eq!((code, message.as_str()), (unary.code(), unary.message()));
    assert_eq!(code, Code::InvalidArgument);
    let (code, message) = failed(answers.get(&4));
    assert_eq!(code, Code::InvalidArgument, "{message}");
    let unary = kv
        .get(get(&vec![b'k'; 4097]))
        .await
        .expect_err("a long key is refused");
    let (code, message) = failed(answers.get(&5));
    assert_eq!((code, message.as_str()), (unary.code(), unary.message()));

    // The same put under the same request id: the first outcome, not a second write.
    let again = exchange(
        &cluster,
        vec![
            frame(10, Some(Call::Put(put(b"pipe/a", b"1", request_id)))),
            frame(11, Some(Call::Get(get(b"pipe/a")))),
        ],
    )
    .await?;
    assert!(
        matches!(again.get(&10), Some(Answer::Put(put)) if put.version == version),
        "{again:?}"
    );
    match again.get(&11) {
        Some(Answer::Get(got)) => {
            assert!(got.found);
            assert_eq!((got.value.as_slice(), got.version), (&b"1"[..], version));
        }
        other => panic!("frame 11: {other:?}"),
    }
    // And unary calls see the same state.
    let read = kv.get(get(b"pipe/a")).await?.into_inner();
    assert_eq!((read.found, read.version), (true, version));
    Ok(())
}
