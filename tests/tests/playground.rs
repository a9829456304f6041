//! `kvctl playground`: a real local cluster in one command survives `kill -9` of a node,
//! starts it again on `kvctl playground restart-node`, stops cleanly on SIGTERM, and
//! resumes with its data; it speaks mutual TLS by default,
//! with the certificates it made in its directory.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use ringkv_launcher::ClusterCerts;
use ringkv_tests::{bin_dir, wait_until, WAIT};
use ringkv_tls::Role;

/// Kills the playground (and so, through PDEATHSIG, its children) if the test fails.
struct Playground(Option<Child>);

impl Drop for Playground {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A base port `p` such that `p..=p+3` are free right now (the playground uses fixed
/// ports: router on `p`, node i on `p+i`).
fn free_port_block() -> Result<u16> {
    for _ in 0..50 {
        let probe = TcpListener::bind("127.0.0.1:0")?;
        let base = probe.local_addr()?.port();
        drop(probe);
        if base > 65000 {
            continue;
        }
        let all_free = (0..=3u16).all(|offset| TcpListener::bind(("127.0.0.1", base + offset)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    bail!("no free block of 4 ports found")
}

fn start_playground(dir: &Path, port: u16) -> Result<Playground> {
    let log = std::fs::File::create(dir.with_extension(format!("{port}.out")))?;
    let child = Command::new(bin_dir()?.join("kvctl"))
        .args(["playground", "--shards", "8", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .context("spawning kvctl playground")?;
    Ok(Playground(Some(child)))
}

/// What the playground printed once it was up (its summary and what came before).
async fn summary(dir: &Path, port: u16) -> Result<String> {
    let out = dir.with_extension(format!("{port}.out"));
    Ok(wait_until("the playground's summary", WAIT, || async {
        let text = std::fs::read_to_string(&out).ok()?;
        text.contains("Ctrl-C to stop").then_some(text)
    })
    .await?)
}

/// Pid of the playground node whose data dir is `data_dir`, found in /proc.
fn node_pid(data_dir: &Path) -> Option<i32> {
    let needle = data_dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_node = args.first().is_some_and(|exe| exe.ends_with("ringkv-node"));
        if is_node && args.contains(&needle) {
            return Some(pid);
        }
    }
    None
}

/// A client of the playground's router, presenting the client certificate the playground
/// made in `<dir>/certs` (waiting for it to be made).
async fn connect_when_ready(dir: &Path, port: u16) -> Result<ringkv_client::Client> {
    let certs = ClusterCerts::in_dir(&dir.join("certs"));
    let tls = wait_until("the playground's certificates", WAIT, || async {
        certs.client_tls(Role::Client).ok()
    })
    .await?;
    let config = ringkv_client::ClientConfig::builder().tls(tls).build()?;
    let client = ringkv_client::Client::connect_with(vec![format!("127.0.0.1:{port}")], config).await?;
    wait_until("the playground to accept writes", WAIT, || async {
        client.put(b"ready-probe", b"1".to_vec()).await.ok()
    })
    .await?;
    Ok(client)
}

/// One command starts a 3-node cluster; `kill -9` of a node loses nothing and writes go on;
/// `restart-node` starts the killed node again; SIGTERM stops every process (the restarted
/// one too); starting again resumes with the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playground_survives_kill_and_resumes() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("pg");
    let port = free_port_block()?;
    let mut playground = start_playground(&dir, port)?;
    let client = connect_when_ready(&dir, port).await?;
    // Root's generated password is printed once, and the profile makes kvctl just work.
    let root_password = summary(&dir, port)
        .await?
        .lines()
        .find_map(|line| {
            line.split_once("log in with --user root): ")
                .map(|(_, pw)| pw.trim().to_string())
        })
        .context("the first start prints root's password")?;
    let kvctl = |args: &[&str]| -> Result<std::process::Output> {
        Ok(Command::new(bin_dir()?.join("kvctl"))
            .env("RINGKV_PROFILE", dir.join("profile"))
            .env("RINGKV_PASSWORD", &root_password)
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    };
    let put = kvctl(&["put", "pg-profile", "x"])?;
    assert!(
        put.status.success(),
        "kvctl with the profile: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let status = kvctl(&["--user", "root", "-o", "json", "auth", "status"])?;
    assert!(
        status.status.success(),
        "root logs in: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("\"root\""));

    let mut written = Vec::new();
    for i in 0..30u32 {
        let key = format!("pg-{i}").into_bytes();
        let version = client.put(&key, format!("v{i}").into_bytes()).await?;
        written.push((key, format!("v{i}").into_bytes(), version));
    }

    let node2 = dir.join("node-2");
    let pid = node_pid(&node2).context("node 2's process")?;
    // SAFETY: signalling a process this test's playground started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_until("node 2 to die", WAIT, || async {
        node_pid(&node2).is_none().then_some(())
    })
    .await?;

    for (key, value, version) in &written {
        let got = client.get(key).await?.context("acknowledged key after kill -9")?;
        assert_eq!((&got.value, got.version), (value, *version));
    }
    for i in 0..10u32 {
        let key = format!("pg-after-{i}").into_bytes();
        let version = client.put(&key, b"after".to_vec()).await?;
        written.push((key, b"after".to_vec(), version));
    }

    // `kvctl playground restart-node 2` has the running playground start it again.
    let restart = Command::new(bin_dir()?.join("kvctl"))
        .args(["playground", "--port", &port.to_string(), "--dir"])
        .arg(&dir)
        .args(["restart-node", "2"])
        .stdin(Stdio::null())
        .output()
        .context("running kvctl playground restart-node")?;
    assert!(
        restart.status.success(),
        "restart-node: {}; stderr: {}",
        restart.status,
        String::from_utf8_lossy(&restart.stderr)
    );
    let restarted = node_pid(&node2).context("node 2 runs again")?;
    assert_ne!(restarted, pid, "a new process");
    let key = b"pg-after-restart".to_vec();
    let version = client.put(&key, b"back".to_vec()).await?;
    written.push((key, b"back".to_vec(), version));

    // SIGTERM: the playground stops its children and exits 0.
    let mut child = playground.0.take().context("playground process")?;
    let kvctl_pid = i32::try_from(child.id())?;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(kvctl_pid, libc::SIGTERM) }, 0);
    let status = wait_until("the playground to exit", WAIT, || {
        let exited = child.try_wait().ok().flatten();
        async move { exited }
    })
    .await?;
    assert!(status.success(), "playground exit status {status}");
    for id in 1..=3 {
        assert!(
            node_pid(&dir.join(format!("node-{id}"))).is_none(),
            "node {id} outlived the playground"
        );
    }

    // Started again on the same directory, it resumes with the same data (and root keeps
    // its password, not printed again).
    let _playground = start_playground(&dir, port)?;
    let client = connect_when_ready(&dir, port).await?;
    assert!(!summary(&dir, port).await?.contains("root's password"));
    for (key, value, version) in &written {
        let got = client.get(key).await?.context("key after playground restart")?;
        assert_eq!((&got.value, got.version), (value, *version));
    }
    Ok(())
}
