//! `kvctl cert` as a user runs it: the real binary creates a CA and certificates in a
//! temporary directory, shows them, and refuses bad input with a clear message.

use std::path::Path;
use std::process::{Command, Output};

const KVCTL: &str = env!("CARGO_BIN_EXE_kvctl");

/// Runs `kvctl cert <args>` with `--certs-dir` from the environment unset.
fn kvctl_cert(args: &[&str]) -> Output {
    Command::new(KVCTL)
        .env_remove("RINGKV_CERTS_DIR")
        .arg("cert")
        .args(args)
        .output()
        .expect("run kvctl")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
fn succeed(args: &[&str]) -> String {
    let output = kvctl_cert(args);
    assert_eq!(code(&output), 0, "kvctl cert {args:?}: {}", text(&output.stderr));
    text(&output.stdout)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).expect("json output")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// create-ca, create-node, create-router and create-client write the files (keys 0600);
/// show prints each certificate's role, subject, SANs, validity and issuer, verified
/// against the CA.
#[test]
fn create_ca_and_certificates_then_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().expect("utf-8 path");

    let created = succeed(&["create-ca", "--certs-dir", certs_dir, "--cluster-name", "test"]);
    assert!(
        created.contains("ca.crt") && created.contains("CN=ringkv CA test"),
        "{created}"
    );
    // The cluster's gossip key beside the CA, private, and readable by nodes and routers.
    let gossip_key = certs.join("gossip.key");
    assert!(created.contains("gossip.key"), "{created}");
    assert_eq!(mode(&gossip_key), 0o600);
    ringkv_gossip::GossipKeys::load(&gossip_key).expect("a gossip key file");
    succeed(&[
        "create-node",
        "--certs-dir",
        certs_dir,
        "--host",
        "127.0.0.1",
        "--host",
        "node1.test",
    ]);
    succeed(&[
        "create-router",
        "--certs-dir",
        certs_dir,
        "--host",
        "localhost",
        "--lifetime-days",
        "30",
    ]);
    let client = json(&succeed(&[
        "-o",
        "json",
        "create-client",
        "--certs-dir",
        certs_dir,
        "--user",
        "ada",
    ]));
    assert_eq!(client["subject"], "CN=ada", "{client}");
    #[cfg(unix)]
    for name in ["ca", "node", "router", "client.ada"] {
        assert_eq!(mode(&certs.join(format!("{name}.key"))), 0o600, "{name}.key");
        assert_eq!(mode(&certs.join(format!("{name}.crt"))), 0o644, "{name}.crt");
    }

    let ca_cert = certs.join("ca.crt");
    let ca_cert = ca_cert.to_str().expect("utf-8 path");
    let cases = [
        (
            "node.crt",
            "node",
            "CN=ringkv node",
            vec!["DNS:node1.test", "IP:127.0.0.1", "URI:ringkv://role/node"],
        ),
        (
            "router.crt",
            "router",
            "CN=ringkv router",
            vec!["DNS:localhost", "URI:ringkv://role/router"],
        ),
        (
            "client.ada.crt",
            "client",
            "CN=ada",
            vec!["URI:ringkv://role/client", "URI:ringkv://user/ada"],
        ),
    ];
    for (file, role, subject, sans) in cases {
        let path = certs.join(file);
        let path = path.to_str().expect("utf-8 path");
        let shown = json(&succeed(&["-o", "json", "show", path, "--ca-cert", ca_cert]));
        assert_eq!(shown["role"], role, "{file}: {shown}");
        assert_eq!(shown["subject"], subject, "{file}: {shown}");
        assert_eq!(shown["sans"], serde_json::json!(sans), "{file}: {shown}");
        assert_eq!(shown["issuer"], "CN=ringkv CA test", "{file}: {shown}");
        assert_eq!(shown["verified_by"], "CN=ringkv CA test", "{file}: {shown}");
        assert_eq!(shown["status"], "valid", "{file}: {shown}");
    }
    let table = succeed(&["show", &format!("{certs_dir}/node.crt")]);
    for field in [
        "role",
        "node",
        "subject",
        "sans",
        "IP:127.0.0.1",
        "not after",
        "issuer",
        "status",
    ] {
        assert!(table.contains(field), "{field} missing: {table}");
    }
}

/// Bad input exits non-zero with a message on stderr naming the problem: an existing file
/// without --overwrite (1), a bad host (64), no CA yet (1), a key given as a certificate
/// (1), a certificate checked against another CA (1).
#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let certs_dir = certs.to_str().expect("utf-8 path");
    let other = dir.path().join("other");
    let other_dir = other.to_str().expect("utf-8 path");

    let no_ca = kvctl_cert(&["create-node", "--certs-dir", certs_dir, "--host", "127.0.0.1"]);
    assert_eq!(code(&no_ca), 1);
    assert!(
        text(&no_ca.stderr).contains("kvctl cert create-ca"),
        "{}",
        text(&no_ca.stderr)
    );

    succeed(&["create-ca", "--certs-dir", certs_dir]);
    succeed(&["create-ca", "--certs-dir", other_dir]);
    let ca_before = std::fs::read(certs.join("ca.crt")).expect("ca.crt");
    let gossip_key_before = std::fs::read(certs.join("gossip.key")).expect("gossip.key");
    let again = kvctl_cert(&["create-ca", "--certs-dir", certs_dir]);
    assert_eq!(code(&again), 1);
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--overwrite"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(certs.join("ca.crt")).expect("ca.crt"),
        ca_before,
        "ca.crt unchanged"
    );
    assert_eq!(
        std::fs::read(certs.join("gossip.key")).expect("gossip.key"),
        gossip_key_before,
        "gossip.key unchanged"
    );
    // A gossip key alone (no CA) is not overwritten either, and nothing is written.
    let lone_dir = dir.path().join("lone");
    std::fs::create_dir_all(&lone_dir).expect("dir");
    std::fs::write(lone_dir.join("gossip.key"), "x").expect("write");
    let lone = kvctl_cert(&["create-ca", "--certs-dir", lone_dir.to_str().expect("utf-8 path")]);
    assert_eq!(code(&lone), 1);
    assert!(
        text(&lone.stderr).contains("--overwrite"),
        "{}",
        text(&lone.stderr)
    );
    assert!(!lone_dir.join("ca.crt").exists(), "nothing written");

    let bad_host = kvctl_cert(&["create-node", "--certs-dir", certs_dir, "--host", "not a host"]);
    assert_eq!(code(&bad_host), 64);
    assert!(
        text(&bad_host.stderr).contains("invalid host \"not a host\""),
        "{}",
        text(&bad_host.stderr)
    );
    assert!(!certs.join("node.key").exists(), "nothing written");

    let key_file = certs.join("ca.key");
    let key_as_cert = kvctl_cert(&["show", key_file.to_str().expect("utf-8 path")]);
    assert_eq!(code(&key_as_cert), 1);
    assert!(
        text(&key_as_cert.stderr).contains("not PEM"),
        "{}",
        text(&key_as_cert.stderr)
    );

    succeed(&["create-client", "--certs-dir", certs_dir, "--user", "ada"]);
    let client = certs.join("client.ada.crt");
    let other_ca = other.join("ca.crt");
    let foreign = kvctl_cert(&[
        "show",
        client.to_str().expect("utf-8 path"),
        "--ca-cert",
        other_ca.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code(&foreign), 1);
    assert!(
        text(&foreign.stderr).contains("is not signed by the CA"),
        "{}",
        text(&foreign.stderr)
    );
}
