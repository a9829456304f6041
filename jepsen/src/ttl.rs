//! The TTL workload: keys put with times to live, expired and persisted while faults (the
//! clock nemeses and pauses above all) run, and read back, checked by
//! [`crate::checker::ttl`] (no read returns a value past its expiry, no key comes back
//! after it was seen expired).
//!
//! [`KEYS`] keys `jepsen/ttl/<k>`. A put writes a value unique in the run with a time to
//! live of [`TTLS_MS`] (or none); `expire` gives the key's value a new one and `persist`
//! drops it (both keep the value). Reads go through the router as a raw `Kv.Get`, since
//! `GetResponse.expires_at_ts` (the value's expiry as decided at its commit) is what the
//! checker compares: half are linearizable gets sent after the op took a timestamp of the
//! oracle (the node judges expiry at a timestamp taken after the get arrived, so a value
//! whose expiry is at or below the one taken before was served expired), half are gets at
//! a timestamp of the oracle (a value returned must expire after it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, ClientTls};
use ringkv_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::history::{OpType, OpValue, Process, Recorder, F};
use crate::workload::{complete_err, complete_ok, completion_for, encode_value, parse_value};

/// Keys of the workload.
pub const KEYS: u64 = 4;

/// Times to live a put or expire picks from (ms): short, so that values expire while the
/// run goes on, some longer than a fault.
pub const TTLS_MS: [u64; 4] = [150, 400, 1_000, 3_000];

/// How long a raw get waits to connect to a router.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Key `key` of the workload.
pub fn ttl_key(key: u64) -> Vec<u8> {
    format!("jepsen/ttl/{key}").into_bytes()
}

/// Shared state of the TTL workload.
pub struct TtlShared {
    next_value: AtomicU64,
    /// Router addresses, for the raw gets.
    routers: Vec<String>,
    tls: Option<ClientTls>,
    op_timeout: Duration,
}

impl TtlShared {
    pub fn new(routers: Vec<String>, tls: Option<ClientTls>, op_timeout: Duration) -> Arc<TtlShared> {
        Arc::new(TtlShared {
            next_value: AtomicU64::new(1),
            routers,
            tls,
            op_timeout,
        })
    }
}

/// A raw `Kv.Get` through one router: `(value, expires_at_ts)` of a present key.
struct RawReader {
    shared: Arc<TtlShared>,
    channel: Option<tonic::transport::Channel>,
    next_router: usize,
}

impl RawReader {
    async fn get(&mut self, key: &[u8], read_ts: u64) -> Result<Option<(u64, u64)>, String> {
        let channel = match self.channel.clone() {
            Some(channel) => channel,
            None => {
                if self.shared.routers.is_empty() {
                    return Err("no router address known".to_string());
                }
                let addr = &self.shared.routers[self.next_router % self.shared.routers.len()];
                self.next_router += 1;
                let channel = crate::cluster::connect(
                    addr,
                    self.shared.tls.as_ref(),
                    CONNECT_TIMEOUT,
                    self.shared.op_timeout,
                )
                .await
                .map_err(|err| format!("{err:#}"))?;
                self.channel = Some(channel.clone());
                channel
            }
        };
        let request = v1::GetRequest {
            key: key.to_vec(),
            consistency: v1::Consistency::Linearizable as i32,
            read_ts,
            read_uncommitted: false,
        };
        match v1::kv_client::KvClient::new(channel).get(request).await {
            Ok(response) => {
                let response = response.into_inner();
                Ok(response
                    .found
                    .then(|| (parse_value(&response.value), response.expires_at_ts)))
            }
            Err(status) => {
                // The next get tries the next router.
                self.channel = None;
                Err(status.message().to_string())
            }
        }
    }
}

/// One TTL client process: puts with a time to live (35 %), expires (10 %), persists
/// (5 %), linearizable gets (25 %) and gets at a timestamp (25 %) of random keys.
pub async fn ttl_client(
    process: u64,
    client: Client,
    shared: Arc<TtlShared>,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reader = RawReader {
        shared: Arc::clone(&shared),
        channel: None,
        next_router: process as usize,
    };
    while !stop.is_cancelled() {
        let key = rng.random_range(0..KEYS);
        let roll: f64 = rng.random();
        if roll < 0.35 {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            // One put in five never expires.
            let ttl_ms = if rng.random_bool(0.2) {
                0
            } else {
                TTLS_MS[rng.random_range(0..TTLS_MS.len())]
            };
            let op = recorder.invoke(
                Process::Client(process),
                F::TtlPut,
                OpValue::TtlWrite {
                    key,
                    value: Some(value),
                    ttl_ms,
                },
            );
            let bytes = encode_value(value, 0);
            let result = if ttl_ms == 0 {
                client.put(ttl_key(key), bytes).await
            } else {
                client
                    .put_with_ttl(ttl_key(key), bytes, Duration::from_millis(ttl_ms))
                    .await
            };
            match result {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else if roll < 0.5 {
            let ttl_ms = if roll < 0.45 {
                TTLS_MS[rng.random_range(0..TTLS_MS.len())]
            } else {
                0
            };
            let op = recorder.invoke(
                Process::Client(process),
                F::TtlExpire,
                OpValue::TtlWrite {
                    key,
                    value: None,
                    ttl_ms,
                },
            );
            let result = if ttl_ms == 0 {
                client.persist(ttl_key(key)).await
            } else {
                client.expire(ttl_key(key), Duration::from_millis(ttl_ms)).await
            };
            match result {
                Ok(_) => complete_ok(&recorder, &op),
                Err(err) => complete_err(&recorder, &op, completion_for(&err), err.to_string()),
            }
        } else {
            let at_ts = roll >= 0.75;
            let f = if at_ts { F::TtlReadAt } else { F::TtlRead };
            let read = |ts, found: Option<(u64, u64)>| OpValue::TtlRead {
                key,
                ts,
                value: found.map(|(value, _)| value),
                expires_at_ts: found.map(|(_, expires_at_ts)| expires_at_ts),
            };
            let op = recorder.invoke(Process::Client(process), f, read(None, None));
            let ts = match client.timestamp().await {
                Ok(ts) => ts,
                // A failed read changed nothing.
                Err(err) => {
                    complete_err(&recorder, &op, OpType::Fail, err.to_string());
                    continue;
                }
            };
            match reader.get(&ttl_key(key), if at_ts { ts } else { 0 }).await {
                Ok(found) => {
                    let _ = recorder.complete(&op, OpType::Ok, read(Some(ts), found), None);
                }
                Err(err) => complete_err(&recorder, &op, OpType::Fail, err),
            }
        }
    }
}
