//! The retry contract from another language (issue 16, item 7): `examples/python`, a client
//! written from the protos alone with grpcio, runs against a real cluster with mutual TLS and
//! must find what README "Errors and retries" promises — a retried write under its request
//! id answered with its first outcome, a reused id refused as `REQUEST_ID_REUSED`, bad input
//! naming its field in a `google.rpc.BadRequest`, no `RetryInfo` where a retry is unsafe.
//!
//! Needs Python with the example's packages: `examples/python/install-deps.sh` (which
//! `.ci/run` runs) puts them in `target/python-venv`; `RINGKV_PYTHON` names another
//! interpreter. Without them the test says so and passes, unless `RINGKV_REQUIRE_PYTHON=1`
//! (set by `.ci/run`), where it fails.

use std::path::PathBuf;
use std::process::Stdio;

use ringkv_launcher::Security;
use ringkv_tests::{Cluster, ClusterOptions, WAIT};
use ringkv_tls::Role;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The interpreter with the example's packages, if there is one.
fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RINGKV_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = workspace().join("target/python-venv/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_follows_the_retry_contract() -> anyhow::Result<()> {
    let Some(python) = python() else {
        if std::env::var("RINGKV_REQUIRE_PYTHON").as_deref() == Ok("1") {
            anyhow::bail!("RINGKV_REQUIRE_PYTHON=1 but no interpreter: run examples/python/install-deps.sh");
        }
        eprintln!("SKIPPED: no Python with grpcio (run examples/python/install-deps.sh)");
        return Ok(());
    };
    let cluster = Cluster::start(ClusterOptions {
        shards: 4,
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let Security::Tls(certs) = &cluster.security else {
        anyhow::bail!("the cluster was asked for TLS");
    };
    let client = certs.paths(Role::Client);
    let router = cluster
        .router_addr
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no router"))?;
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(workspace().join("examples/python/ringkv_example.py"))
        .args(["--router", &router])
        .arg("--ca")
        .arg(certs.ca())
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("the Python client did not finish within {WAIT:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow::anyhow!("a line that is not JSON ({err}):\n{stdout}\n{stderr}"))?;
    let names: Vec<&str> = steps.iter().filter_map(|step| step["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "put",
            "retry_same_id",
            "reused_id",
            "get",
            "bad_field",
            "cas",
            "own_deadline_retry",
            "scan"
        ],
        "{stdout}\n{stderr}"
    );
    for step in &steps {
        assert_eq!(step["ok"], true, "step failed: {step}\n{stderr}");
    }
    let reused = &steps[2];
    assert_eq!(reused["reason"], "REQUEST_ID_REUSED", "{reused}");
    assert_eq!(
        reused["metadata"]["shard"]
            .as_str()
            .map(|shard| !shard.is_empty()),
        Some(true)
    );
    let bad = &steps[4];
    assert_eq!(bad["field_violations"][0][0], "key", "{bad}");
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        output.status
    );
    Ok(())
}
