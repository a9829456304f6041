//! kvctl for scripts, and logs an operator can read, against real processes: every `-o`
//! format of get, scan and del parses; a missing key is `found: false` in JSON; `del`
//! takes many keys; bad input the cluster refuses exits 65; `check perf` says PASS or FAIL
//! (exit 1); a healthy start logs no ERROR
//! and no colour codes to the log files, and `--log-format json` lines parse.

use std::process::Output;

use anyhow::{ensure, Context, Result};
use ringkv_tests::{Cluster, ClusterOptions, WAIT};
use serde_json::{json, Value};

/// Runs kvctl against the cluster's router.
async fn kvctl(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    cluster.kvctl(args).await
}

/// kvctl's stdout, after checking it exited with `code`.
fn stdout_of(output: &Output, code: i32, what: &str) -> Result<String> {
    ensure!(
        output.status.code() == Some(code),
        "{what}: exit {:?}, expected {code}; stderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout.clone())?)
}

/// Each line of a JSON-lines text, parsed.
fn json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("a JSON line: {line:?}")))
        .collect()
}

/// TSV rows (the header first), every row as wide as the header.
fn tsv_rows(text: &str) -> Result<Vec<Vec<String>>> {
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect();
    let width = rows.first().context("a header line")?.len();
    ensure!(rows.iter().all(|row| row.len() == width), "ragged TSV: {text:?}");
    Ok(rows)
}

/// get, scan and del print parseable data in every format; a missing key is in JSON; del
/// of 3 keys reports each; a key the router refuses as too long exits 65; and the nodes'
/// log files hold no colour codes and no ERROR line after the healthy start.
#[tokio::test(flavor = "multi_thread")]
async fn kvctl_formats_and_exit_codes_on_a_real_cluster() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::default()).await?;
    for (key, value) in [("fmt/a", "one"), ("fmt/b", "two\tcols"), ("fmt/c", "three")] {
        stdout_of(&kvctl(&cluster, &["put", key, value]).await?, 0, "put")?;
    }

    // get, in every format.
    let json_get: Value = serde_json::from_str(&stdout_of(
        &kvctl(&cluster, &["-o", "json", "get", "fmt/a"]).await?,
        0,
        "get -o json",
    )?)?;
    assert_eq!(json_get["value"], "one");
    assert_eq!(json_get["found"], true);
    let jsonl = json_lines(&stdout_of(
        &kvctl(&cluster, &["-o", "jsonl", "get", "fmt/a"]).await?,
        0,
        "get jsonl",
    )?)?;
    assert_eq!(jsonl.len(), 1);
    assert_eq!(jsonl[0]["key"], "fmt/a");
    let tsv = tsv_rows(&stdout_of(
        &kvctl(&cluster, &["-o", "tsv", "get", "fmt/b"]).await?,
        0,
        "get tsv",
    )?)?;
    assert_eq!(tsv[0], ["key", "found", "version", "value"]);
    assert_eq!(tsv[1][3], "two\\tcols", "a tab inside a value is escaped");
    let raw = kvctl(&cluster, &["-o", "raw", "get", "fmt/b"]).await?;
    assert_eq!(raw.stdout, b"two\tcols");
    let table = stdout_of(&kvctl(&cluster, &["get", "fmt/a"]).await?, 0, "get table")?;
    assert!(table.starts_with("KEY") && table.contains("one"), "{table}");

    // A missing key: found false in JSON, exit 1, nothing on stdout for a table.
    let missing: Value = serde_json::from_str(&stdout_of(
        &kvctl(&cluster, &["-o", "json", "get", "fmt/none"]).await?,
        1,
        "get of a missing key",
    )?)?;
    assert_eq!(missing, json!({"key": "fmt/none", "found": false, "version": 0}));
    assert_eq!(
        stdout_of(&kvctl(&cluster, &["get", "fmt/none"]).await?, 1, "table")?,
        ""
    );

    // scan, in every format; footers go to stderr.
    let scan = |format: &'static str, keys_only: bool| {
        let mut args = vec!["-o", format, "scan", "--prefix", "fmt/"];
        if keys_only {
            args.push("--keys-only");
        }
        let cluster = &cluster;
        async move { kvctl(cluster, &args).await }
    };
    let document: Value = serde_json::from_str(&stdout_of(&scan("json", false).await?, 0, "scan json")?)?;
    assert_eq!(document["entries"].as_array().map(Vec::len), Some(3));
    let lines = json_lines(&stdout_of(&scan("jsonl", false).await?, 0, "scan jsonl")?)?;
    assert_eq!(
        lines.iter().map(|line| line["key"].clone()).collect::<Vec<_>>(),
        [json!("fmt/a"), json!("fmt/b"), json!("fmt/c")]
    );
    let output = scan("tsv", false).await?;
    let rows = tsv_rows(&stdout_of(&output, 0, "scan tsv")?)?;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0], ["key", "version", "value"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("3 entries"));
    let keys = stdout_of(&scan("tsv", true).await?, 0, "scan tsv keys-only")?;
    assert_eq!(keys, "key\nfmt/a\nfmt/b\nfmt/c\n");
    let values = stdout_of(&scan("raw", false).await?, 0, "scan raw")?;
    assert_eq!(values, "one\ntwo\tcols\nthree\n");
    let table = stdout_of(&scan("table", true).await?, 0, "scan table")?;
    assert_eq!(
        table.lines().count(),
        4,
        "a header and 3 keys, no footer: {table}"
    );

    // del of 3 keys (one absent), as JSON and TSV.
    let deleted: Value = serde_json::from_str(&stdout_of(
        &kvctl(&cluster, &["-o", "json", "del", "fmt/a", "fmt/b", "fmt/none"]).await?,
        0,
        "del of 3 keys",
    )?)?;
    assert_eq!(
        deleted,
        json!([
            {"key": "fmt/a", "existed": true},
            {"key": "fmt/b", "existed": true},
            {"key": "fmt/none", "existed": false},
        ])
    );
    let rows = tsv_rows(&stdout_of(
        &kvctl(&cluster, &["-o", "tsv", "del", "fmt/c", "fmt/a"]).await?,
        0,
        "del tsv",
    )?)?;
    assert_eq!(rows, [["key", "existed"], ["fmt/c", "true"], ["fmt/a", "false"]]);
    let left = stdout_of(
        &kvctl(&cluster, &["-o", "raw", "count", "--prefix", "fmt/"]).await?,
        0,
        "count",
    )?;
    assert_eq!(left, "0\n");

    // Bad input: refused by the router (a key over max_key_bytes) exits 65; a bad flag 64;
    // the record formats are refused by commands without records.
    let long_key = "k".repeat(5000);
    let refused = kvctl(&cluster, &["put", &long_key, "v"]).await?;
    stdout_of(&refused, 65, "a key the router refuses")?;
    stdout_of(&kvctl(&cluster, &["get", "--hex", "zz"]).await?, 64, "bad hex")?;
    stdout_of(
        &kvctl(&cluster, &["-o", "tsv", "cluster", "status"]).await?,
        64,
        "tsv status",
    )?;

    // check perf: a short run at a modest rate passes; an impossible p99 fails with exit 1.
    let verdict: Value = serde_json::from_str(&stdout_of(
        &kvctl(
            &cluster,
            &[
                "-o",
                "json",
                "check",
                "perf",
                "--rate",
                "40",
                "--seconds",
                "2",
                "--max-p99-ms",
                "5000",
            ],
        )
        .await?,
        0,
        "check perf",
    )?)?;
    assert_eq!(verdict["verdict"], "PASS", "{verdict}");
    assert_eq!(verdict["errors"], 0);
    let failed = kvctl(
        &cluster,
        &[
            "-o",
            "tsv",
            "check",
            "perf",
            "--rate",
            "40",
            "--seconds",
            "1",
            "--max-p99-ms",
            "1",
        ],
    )
    .await?;
    let rows = tsv_rows(&stdout_of(&failed, 1, "check perf under a 1 ms p99")?)?;
    assert_eq!(rows[0].last().map(String::as_str), Some("verdict"));
    assert_eq!(rows[1].last().map(String::as_str), Some("FAIL"));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("FAIL: p99"));
    let left = stdout_of(&kvctl(&cluster, &["-o", "raw", "count"]).await?, 0, "count")?;
    assert_eq!(left, "0\n", "check perf deletes its keys");

    // The logs of the healthy start: no colour codes in files, no ERROR.
    for id in 1..=cluster.options.nodes {
        let log = std::fs::read_to_string(cluster.node_log(id))?;
        assert!(!log.contains('\u{1b}'), "node {id}'s log has ANSI escapes");
        let errors: Vec<&str> = log.lines().filter(|line| line.contains(" ERROR ")).collect();
        assert!(
            errors.is_empty(),
            "node {id} logged errors at a healthy start: {errors:#?}"
        );
    }
    let router_log = std::fs::read_to_string(cluster.dir.path().join("router.log"))?;
    assert!(
        !router_log.contains('\u{1b}'),
        "the router's log has ANSI escapes"
    );
    Ok(())
}

/// With `--log-format json`, every line a node and the router write is a JSON object
/// with a level and a message.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse() -> Result<()> {
    let mut options = ClusterOptions {
        nodes: 1,
        shards: 2,
        replication_factor: 1,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--log-format".to_string(), "json".to_string()]);
    let mut cluster = Cluster::nodes_only(options).await?;
    cluster.start_router_with(&["--log-format", "json"]).await?;
    cluster.wait_for_leaders(WAIT).await?;
    stdout_of(&kvctl(&cluster, &["put", "logs/a", "1"]).await?, 0, "put")?;
    for log in [cluster.node_log(1), cluster.dir.path().join("router.log")] {
        let text = std::fs::read_to_string(&log)?;
        let lines = json_lines(&text).with_context(|| format!("{}", log.display()))?;
        ensure!(!lines.is_empty(), "{} is empty", log.display());
        for line in lines {
            ensure!(
                line.get("level").is_some()
                    && (line.get("fields").is_some() || line.get("message").is_some()),
                "a log line without level or message in {}: {line}",
                log.display()
            );
        }
    }
    Ok(())
}
