//! The retry contract from another language (issue 16, item 7): `examples/python`, a client
//! written from the protos alone with grpcio, runs against a `kvctl playground` (mutual TLS
//! and permissions on, as a user gets it; on ports it chose, `--port 0`) and must find what README "Errors and retries" promises — a retried write under its request
//! id answered with its first outcome, a reused id refused as `REQUEST_ID_REUSED`, bad input
//! naming its field in a `google.rpc.BadRequest`, no `RetryInfo` where a retry is unsafe —
//! and leases through the routers' `Lease` service (issue 16, item 2, for any language): a
//! grant retried under its request id answering the same lease, a key attached with `Put(lease)`, kept alive over the `LeaseKeepAlive` stream past its TTL,
//! gone with the revoked lease, a keep-alive of it answered with TTL 0, a bad TTL refused
//! naming `ttl_ms`.
//!
//! Needs Python with the example's packages: `examples/python/install-deps.sh` (which
//! `.ci/run` runs) puts them in `target/python-venv`; `RINGKV_PYTHON` names another
//! interpreter. Without them the test says so and passes, unless `RINGKV_REQUIRE_PYTHON=1`
//! (set by `.ci/run`), where it fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use ringkv_tests::{bin_dir, wait_until, WAIT};
use tokio::process::Child;

/// A running `kvctl playground` (its nodes and router are its children: they end with it).
struct Playground {
    child: Child,
    dir: PathBuf,
}

impl Playground {
    /// Starts a playground in `dir` on ports it chooses; waits for its summary.
    async fn start(dir: &Path) -> anyhow::Result<Playground> {
        let out = dir.with_extension("out");
        let log = std::fs::File::create(&out)?;
        let child = tokio::process::Command::new(bin_dir()?.join("kvctl"))
            .args(["playground", "--port", "0", "--shards", "4"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("spawning kvctl playground")?;
        let mut playground = Playground {
            child,
            dir: dir.to_path_buf(),
        };
        let child = &mut playground.child;
        wait_until("the playground's summary", WAIT, || {
            let exited = child.try_wait().ok().flatten();
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            async move {
                match exited {
                    Some(status) => Some(Err(anyhow::anyhow!("the playground exited ({status}):\n{text}"))),
                    None => text.contains("Ctrl-C to stop").then_some(Ok(())),
                }
            }
        })
        .await??;
        Ok(playground)
    }

    /// What its `profile` says (`RINGKV_ENDPOINTS`, `RINGKV_CA`, `RINGKV_CERT`, `RINGKV_KEY`).
    fn profile(&self) -> anyhow::Result<HashMap<String, String>> {
        let text = std::fs::read_to_string(self.dir.join("profile"))?;
        Ok(text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect())
    }

    /// Stops it as Ctrl-C would (SIGTERM: it stops its children in order) and waits.
    async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().context("the playground already exited")?;
        // SAFETY: kill(2) of our own child's pid; it has not been waited for, so the pid is its.
        if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
            anyhow::bail!("SIGTERM to the playground: {}", std::io::Error::last_os_error());
        }
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("the playground did not stop after SIGTERM")??;
        anyhow::ensure!(status.success(), "the playground stopped with {status}");
        Ok(())
    }
}

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
    let dir = tempfile::tempdir()?;
    let playground = Playground::start(&dir.path().join("playground")).await?;
    let profile = playground.profile()?;
    let setting = |name: &str| {
        profile
            .get(name)
            .cloned()
            .with_context(|| format!("the playground's profile has no {name}: {profile:?}"))
    };
    let router = setting("RINGKV_ENDPOINTS")?;
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(workspace().join("examples/python/ringkv_example.py"))
        .args(["--router", &router])
        .args(["--ca", &setting("RINGKV_CA")?])
        .args(["--cert", &setting("RINGKV_CERT")?])
        .args(["--key", &setting("RINGKV_KEY")?])
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
            "scan",
            "lease_attach",
            "lease_keep_alive",
            "lease_revoke",
            "lease_bad_ttl"
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
    playground.stop().await
}
