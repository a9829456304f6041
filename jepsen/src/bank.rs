//! The bank workload (Jepsen's `bank`): a few accounts whose balances only transactions move.
//!
//! Before the clients start, one transaction gives every account [`INITIAL_BALANCE`]. Then each
//! client process either transfers (a transaction at the run's isolation level that reads two
//! accounts and, when the first holds enough, writes both: the amount moves from one to the
//! other) or reads every account in one transaction, one `get` per account, so that a level
//! with a fresh timestamp per read (read committed) or with provisional reads (read
//! uncommitted) can show it. After the faults are healed one more read runs at repeatable
//! read. [`crate::checker::bank`] checks that every read under a snapshot level sums to the
//! total and shows no negative balance.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_client::{Client, Error, Isolation, Transaction};
use tokio_util::sync::CancellationToken;

use crate::append::failed_txn_outcome;
use crate::checker::bank::{ACCOUNTS, INITIAL_BALANCE};
use crate::history::{OpType, OpValue, Process, Recorder, F};

/// Largest amount one transfer moves.
const MAX_AMOUNT: u64 = 5;

/// The key of account `account`.
pub fn account_key(account: u64) -> Vec<u8> {
    format!("jepsen/bank/{account}").into_bytes()
}

/// What a balance stored as text reads as: `None` when absent, [`GARBAGE`] when it is not a
/// number (a value no transaction wrote, which the checker reports).
fn decode_balance(stored: Option<&[u8]>) -> Option<i64> {
    stored.map(|bytes| {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(GARBAGE)
    })
}

/// The balance recorded for a stored value that is not a number.
pub const GARBAGE: i64 = i64::MIN;

async fn read_balance(txn: &Transaction, account: u64) -> Result<Option<i64>, Error> {
    Ok(decode_balance(
        txn.get(account_key(account))
            .await?
            .as_ref()
            .map(|found| found.value.as_slice()),
    ))
}

/// Gives every account its initial balance in one transaction, before any client runs.
/// Retried until it commits: it is idempotent, and nothing else writes yet.
pub async fn set_up(client: &Client, timeout: std::time::Duration) -> anyhow::Result<()> {
    ringkv_launcher::wait_for("the bank's accounts to be opened", timeout, || async {
        let mut txn = client.begin(Isolation::RepeatableRead).await.ok()?;
        for account in 0..ACCOUNTS {
            txn.put(account_key(account), INITIAL_BALANCE.to_string());
        }
        txn.commit().await.ok()
    })
    .await?;
    Ok(())
}

/// How a transfer ended before its commit.
enum Transfer {
    /// Committed.
    Done,
    /// The debited account holds less than the amount (or no number): nothing written.
    Refused(String),
}

async fn transfer(
    client: &Client,
    isolation: Isolation,
    from: u64,
    to: u64,
    amount: u64,
) -> Result<Transfer, Error> {
    let mut txn = client.begin(isolation).await?;
    let (Some(debited), Some(credited)) = (read_balance(&txn, from).await?, read_balance(&txn, to).await?)
    else {
        return Ok(Transfer::Refused("an account has no balance".to_string()));
    };
    let amount = amount as i64;
    if debited == GARBAGE || credited == GARBAGE {
        return Ok(Transfer::Refused("a balance is not a number".to_string()));
    }
    if debited < amount {
        return Ok(Transfer::Refused(format!(
            "insufficient funds: {debited} < {amount}"
        )));
    }
    txn.put(account_key(from), (debited - amount).to_string());
    txn.put(account_key(to), (credited + amount).to_string());
    txn.commit().await?;
    Ok(Transfer::Done)
}

async fn read_all(client: &Client, isolation: Isolation) -> Result<Vec<Option<i64>>, Error> {
    let txn = client.begin(isolation).await?;
    let mut balances = Vec::with_capacity(ACCOUNTS as usize);
    for account in 0..ACCOUNTS {
        balances.push(read_balance(&txn, account).await?);
    }
    // Read-only: the commit sends nothing, but it is what a client would do.
    txn.commit().await?;
    Ok(balances)
}

/// Records one read of every account; `true` when it succeeded.
pub async fn record_read(process: u64, client: &Client, isolation: Isolation, recorder: &Recorder) -> bool {
    let op = recorder.invoke(Process::Client(process), F::BankRead, OpValue::Balances(None));
    match read_all(client, isolation).await {
        Ok(balances) => {
            let _ = recorder.complete(&op, OpType::Ok, OpValue::Balances(Some(balances)), None);
            true
        }
        // A read changes nothing: whatever went wrong, it did not happen.
        Err(err) => {
            let _ = recorder.complete(&op, OpType::Fail, OpValue::Balances(None), Some(err.to_string()));
            false
        }
    }
}

/// One bank client process: transfers and reads, half and half.
pub async fn bank_client(
    process: u64,
    client: Client,
    isolation: Isolation,
    recorder: Recorder,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.is_cancelled() {
        if rng.random_bool(0.5) {
            record_read(process, &client, isolation, &recorder).await;
            continue;
        }
        let from = rng.random_range(0..ACCOUNTS);
        let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
        let amount = rng.random_range(1..=MAX_AMOUNT);
        let value = OpValue::Transfer { from, to, amount };
        let op = recorder.invoke(Process::Client(process), F::Transfer, value.clone());
        let (op_type, error) = match transfer(&client, isolation, from, to, amount).await {
            Ok(Transfer::Done) => (OpType::Ok, None),
            Ok(Transfer::Refused(reason)) => (OpType::Fail, Some(reason)),
            Err(err) => (failed_txn_outcome(&err), Some(err.to_string())),
        };
        let _ = recorder.complete(&op, op_type, value, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_decode_and_garbage_is_visible() {
        assert_eq!(decode_balance(Some(b"100")), Some(100));
        assert_eq!(decode_balance(Some(b"-3")), Some(-3));
        assert_eq!(decode_balance(None), None);
        assert_eq!(decode_balance(Some(b"1 2")), Some(GARBAGE));
    }
}
