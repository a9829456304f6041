//! Passwords and tokens (issue 15): a user with a password logs in (`Auth.Login`, at the
//! router, which forwards it to a node) for a short-lived token signed with a key kept in
//! the system group; routers and nodes check the token on their own, and it overrides the
//! user of the client certificate the connection presents. Wrong passwords are refused
//! without saying whether the user exists; tokens stop at their expiry, at a key rotation
//! and when their user is deleted; a changed password refuses new logins; forged tokens and
//! tokens of another cluster are refused; a password user's permissions are a certificate
//! user's.

use std::time::Duration;

use ringkv_client::{Client, ClientAuth, ClientConfig, ClientTls, Error, KeyRange, ScanOptions};
use ringkv_proto::v1::{self, change_auth_request::Change};
use ringkv_tests::{wait_until, Cluster, ClusterOptions, WAIT};
use ringkv_tls::{IssuedCert, Role};
use tonic::Code;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const ALICE_PASSWORD: &str = "alice-password-1";
const LOGIN_REFUSED: &str = "wrong user name or password";

/// A TLS cluster whose nodes hash passwords cheaply (debug builds hash slowly).
async fn start_cluster(nodes: u64, shards: u32) -> anyhow::Result<Cluster> {
    let mut options = ClusterOptions {
        nodes,
        shards,
        replication_factor: nodes.min(3) as u32,
        tls: true,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--password-hash-iterations".to_string(), "10000".to_string()]);
    Cluster::start(options).await
}

/// A client of the router presenting `identity`, authenticated by `auth`; one attempt.
async fn client_as(
    cluster: &Cluster,
    identity: &IssuedCert,
    auth: Option<ClientAuth>,
) -> anyhow::Result<Client> {
    let builder = ClientConfig::builder()
        .request_timeout(PROBE_TIMEOUT)
        .max_attempts(1)
        .tls(ClientTls {
            ca_pem: std::fs::read_to_string(cluster.certs()?.ca())?,
            cert_pem: identity.cert_pem.clone(),
            key_pem: identity.key_pem.clone(),
        });
    let builder = match auth {
        Some(auth) => builder.auth(auth),
        None => builder,
    };
    let router = cluster.router_addr.clone().expect("a router");
    Ok(Client::connect_with(vec![router], builder.build()?).await?)
}

fn password(user: &str, password: &str) -> Option<ClientAuth> {
    Some(ClientAuth::Password {
        user: user.into(),
        password: password.into(),
    })
}

/// The code and message of a failed call (panics on success).
fn failure<T: std::fmt::Debug>(what: &str, answer: Result<T, Error>) -> (Code, String) {
    match answer {
        Err(Error::Other { code, message }) => (code, message),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

fn assert_unauthenticated<T: std::fmt::Debug>(what: &str, answer: Result<T, Error>, words: &[&str]) {
    let (code, message) = failure(what, answer);
    assert_eq!(code, Code::Unauthenticated, "{what}: {message}");
    for word in words {
        assert!(
            message.contains(word),
            "{what}: {message:?} does not name {word:?}"
        );
    }
}

fn assert_denied<T: std::fmt::Debug>(what: &str, answer: Result<T, Error>, words: &[&str]) {
    let (code, message) = failure(what, answer);
    assert_eq!(code, Code::PermissionDenied, "{what}: {message}");
    for word in words {
        assert!(
            message.contains(word),
            "{what}: {message:?} does not name {word:?}"
        );
    }
}

fn set_password(user: &str, password: &str) -> Change {
    Change::SetPassword(v1::UserPassword {
        user: user.into(),
        password: password.into(),
    })
}

/// A token, a user's permissions through the router and at a node, refusals of wrong
/// passwords, forged and foreign tokens, and what a changed password, an expiry, a key
/// rotation and a deleted user do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_log_in_for_tokens_that_act_as_the_user() -> anyhow::Result<()> {
    let cluster = start_cluster(3, 2).await?;
    let root = cluster.client().await?;
    // Password users connect with any client certificate of the CA: this one names a user
    // without roles, whom the token overrides.
    let anonymous = cluster.user_cert("anonymous")?;

    root.change_auth(Change::AddRole("app-reader".into())).await?;
    root.change_auth(Change::Grant(v1::RoleGrant {
        role: "app-reader".into(),
        grant: Some(v1::Grant {
            prefix: b"app/".to_vec(),
            permission: v1::Permission::Read as i32,
        }),
    }))
    .await?;
    root.change_auth(Change::AddUser(v1::AuthUser {
        name: "alice".into(),
        roles: vec!["app-reader".into()],
        has_password: false,
    }))
    .await?;
    let table = root.change_auth(set_password("alice", ALICE_PASSWORD)).await?;
    assert!(
        table
            .table
            .unwrap_or_default()
            .users
            .iter()
            .any(|user| user.name == "alice" && user.has_password),
        "the table says alice has a password"
    );
    root.put("app/x", "1").await?;
    root.put("other/x", "secret").await?;
    root.change_auth(Change::Enable(true)).await?;

    let alice = client_as(&cluster, &anonymous, password("alice", ALICE_PASSWORD)).await?;
    wait_until("the router refuses alice's write", WAIT, || async {
        matches!(
            alice.put("app/x", "2").await,
            Err(Error::Other {
                code: Code::PermissionDenied,
                ..
            })
        )
        .then_some(())
    })
    .await?;
    // Exactly a certificate user's permissions.
    assert_eq!(alice.get("app/x").await?.expect("app/x").value, b"1");
    assert_denied(
        "alice writes app/x",
        alice.put("app/x", "2").await,
        &["alice", "write", "app/x"],
    );
    assert_denied(
        "alice reads other/x",
        alice.get("other/x").await,
        &["alice", "read", "other/x"],
    );
    let page = alice
        .scan(&KeyRange::prefix("app/"), &ScanOptions::new(), None)
        .await?;
    assert_eq!(page.entries.len(), 1);
    assert_denied(
        "alice reads the table",
        alice.get_auth().await,
        &["alice", "admin"],
    );
    // Without the token the same certificate is "anonymous", who may do nothing.
    let anonymous_client = client_as(&cluster, &anonymous, None).await?;
    assert_denied(
        "anonymous reads app/x",
        anonymous_client.get("app/x").await,
        &["anonymous"],
    );

    // Wrong passwords: the same refusal whether the user exists or not.
    for (user, wrong) in [
        ("alice", "not-her-password"),
        ("ghost", ALICE_PASSWORD),
        ("root", "guess-guess"),
    ] {
        let client = client_as(&cluster, &anonymous, password(user, wrong)).await?;
        let (code, message) = failure(&format!("{user} logs in"), client.get("app/x").await);
        assert_eq!(code, Code::Unauthenticated, "{user}: {message}");
        assert!(message.contains(LOGIN_REFUSED), "{user}: {message}");
        assert!(
            !message.contains(user),
            "{user}: the refusal names no user: {message}"
        );
    }

    // Straight at a node: the token overrides the certificate's user there too.
    let (token, expiry) = alice.token().await?.expect("alice has a token");
    assert!(expiry.is_some(), "a password login knows its token's expiry");
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut denied_at_nodes = 0;
    for addr in cluster.node_addrs() {
        let channel = cluster.channel_as(&addr, &anonymous, PROBE_TIMEOUT).await?;
        let mut shard_kv = v1::shard_kv_client::ShardKvClient::new(channel);
        let mut request = tonic::Request::new(v1::ShardReadRequest {
            shard_id: 0,
            keys: vec![b"other/x".to_vec()],
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", bearer.clone());
        let refusal = shard_kv
            .read(request)
            .await
            .expect_err("alice reads other/x at a node");
        assert_eq!(refusal.code(), Code::PermissionDenied, "{refusal:?}");
        assert!(refusal.message().contains("alice"), "{refusal:?}");
        denied_at_nodes += 1;
        let mut forged = tonic::Request::new(v1::ShardReadRequest {
            shard_id: 0,
            keys: vec![b"app/x".to_vec()],
            ..Default::default()
        });
        let forged_token = token.replacen(":alice:", ":root:", 1);
        forged
            .metadata_mut()
            .insert("authorization", format!("Bearer {forged_token}").parse()?);
        let refusal = shard_kv.read(forged).await.expect_err("a forged token at a node");
        assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    }
    assert_eq!(denied_at_nodes, 3);

    // Forged tokens at the router: another user, a tampered tag.
    let forged_user = token.replacen(":alice:", ":root:", 1);
    let last = token.chars().last().expect("a token");
    let tampered_tag = format!(
        "{}{}",
        &token[..token.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    for (index, forged) in [forged_user, tampered_tag, "rk1:1:1:root:00".to_string()]
        .into_iter()
        .enumerate()
    {
        let client = client_as(&cluster, &anonymous, Some(ClientAuth::Token(forged))).await?;
        assert_unauthenticated(&format!("forged token {index}"), client.get("app/x").await, &[]);
    }
    // A token of another cluster (its own key) is refused.
    let other = start_cluster(1, 1).await?;
    other
        .client()
        .await?
        .change_auth(set_password("alice", ALICE_PASSWORD))
        .await
        .err();
    let other_root = other.client().await?;
    other_root
        .change_auth(Change::AddUser(v1::AuthUser {
            name: "alice".into(),
            roles: Vec::new(),
            has_password: false,
        }))
        .await?;
    other_root
        .change_auth(set_password("alice", ALICE_PASSWORD))
        .await?;
    let foreign = other_root.login("alice", ALICE_PASSWORD).await?.token;
    drop(other);
    let client = client_as(&cluster, &anonymous, Some(ClientAuth::Token(foreign))).await?;
    assert_unauthenticated(
        "another cluster's token",
        client.get("app/x").await,
        &["not signed"],
    );

    // A changed password refuses new logins at once; the new one works.
    root.change_auth(set_password("alice", "alice-password-2"))
        .await?;
    let old = client_as(&cluster, &anonymous, password("alice", ALICE_PASSWORD)).await?;
    assert_unauthenticated("the old password", old.get("app/x").await, &[LOGIN_REFUSED]);
    let new = client_as(&cluster, &anonymous, password("alice", "alice-password-2")).await?;
    assert_eq!(new.get("app/x").await?.expect("app/x").value, b"1");

    // Tokens expire: a 2 s lifetime, then refused; a password client logs in again.
    root.change_auth(Change::SetTokenTtlMs(2000)).await?;
    let renewing = client_as(&cluster, &anonymous, password("alice", "alice-password-2")).await?;
    assert_eq!(renewing.get("app/x").await?.expect("app/x").value, b"1");
    let (first_token, _) = renewing.token().await?.expect("a token");
    let short = root.login("alice", "alice-password-2").await?;
    let holder = client_as(&cluster, &anonymous, Some(ClientAuth::Token(short.token))).await?;
    assert_eq!(holder.get("app/x").await?.expect("app/x").value, b"1");
    wait_until("the short token expires", Duration::from_secs(30), || async {
        match holder.get("app/x").await {
            Err(Error::Other {
                code: Code::Unauthenticated,
                message,
            }) if message.contains("expired") => Some(()),
            _ => None,
        }
    })
    .await?;
    // The password client's first token has expired too: it logged in again.
    assert_eq!(
        renewing.get("app/x").await?.expect("app/x").value,
        b"1",
        "renewed"
    );
    let (second_token, _) = renewing.token().await?.expect("a token");
    assert_ne!(first_token, second_token, "a new token after the first expired");

    // A rotated key ends every token (at the router within its refresh, at nodes at once).
    let (held, _) = new.token().await?.expect("a token");
    root.change_auth(Change::RotateTokenKey(true)).await?;
    let stale = client_as(&cluster, &anonymous, Some(ClientAuth::Token(held))).await?;
    wait_until("the router refuses a token of the old key", WAIT, || async {
        matches!(
            stale.get("app/x").await,
            Err(Error::Other {
                code: Code::Unauthenticated,
                ..
            })
        )
        .then_some(())
    })
    .await?;

    // A deleted user's tokens stop working.
    let fresh = root.login("alice", "alice-password-2").await?.token;
    let doomed = client_as(&cluster, &anonymous, Some(ClientAuth::Token(fresh))).await?;
    assert_eq!(doomed.get("app/x").await?.expect("app/x").value, b"1");
    root.change_auth(Change::DeleteUser("alice".into())).await?;
    wait_until("the router refuses a deleted user's token", WAIT, || async {
        matches!(
            doomed.get("app/x").await,
            Err(Error::Other {
                code: Code::Unauthenticated,
                ..
            })
        )
        .then_some(())
    })
    .await?;
    Ok(())
}

/// kvctl: `user add --set-password` and `user passwd` read the password from stdin; `--user`
/// with `RINGKV_PASSWORD` logs in; `auth token` prints a token `RINGKV_TOKEN` then uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_logs_in_with_passwords_and_tokens() -> anyhow::Result<()> {
    let cluster = start_cluster(3, 2).await?;
    let certs = cluster.certs()?;
    let root_cert = certs.paths(Role::Client);
    let anonymous = cluster.user_cert("anonymous")?;
    let dir = tempfile::tempdir()?;
    let anonymous_cert = dir.path().join("anonymous.crt");
    let anonymous_key = dir.path().join("anonymous.key");
    std::fs::write(&anonymous_cert, &anonymous.cert_pem)?;
    std::fs::write(&anonymous_key, &anonymous.key_pem)?;
    let router = cluster.router_addr.clone().expect("a router");
    let kvctl =
        |cert: &std::path::Path, key: &std::path::Path, env: &[(&str, &str)], stdin: &str, args: &[&str]| {
            use std::io::Write as _;
            let mut command = std::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"));
            command
                .args(["-e", &router, "--timeout", "10000"])
                .env("RINGKV_PROFILE", "/nonexistent")
                .env("RINGKV_CA", certs.ca())
                .env("RINGKV_CERT", cert)
                .env("RINGKV_KEY", key)
                .envs(env.iter().copied())
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = command.spawn()?;
            child.stdin.take().expect("stdin").write_all(stdin.as_bytes())?;
            let output = child.wait_with_output()?;
            anyhow::Ok((
                output.status.code(),
                String::from_utf8(output.stdout)?,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            ))
        };
    let as_root = |args: &[&str], stdin: &str| -> anyhow::Result<String> {
        let (code, stdout, stderr) = kvctl(&root_cert.cert, &root_cert.key, &[], stdin, args)?;
        anyhow::ensure!(code == Some(0), "kvctl {args:?}: {stderr}");
        Ok(stdout)
    };
    as_root(&["role", "add", "writer"], "")?;
    as_root(&["role", "grant", "writer", "write", "app/"], "")?;
    as_root(
        &["user", "add", "bob", "--role", "writer", "--set-password"],
        "bob-password-1\n",
    )?;
    as_root(&["auth", "enable"], "")?;
    let users: serde_json::Value = serde_json::from_str(&as_root(&["-o", "json", "user", "list"], "")?)?;
    assert_eq!(
        users,
        serde_json::json!([{"user": "bob", "roles": ["writer"], "password": true}])
    );

    let bob = [("RINGKV_USER", "bob"), ("RINGKV_PASSWORD", "bob-password-1")];
    wait_until("bob writes app/x", WAIT, || async {
        let (code, _, _) = kvctl(&anonymous_cert, &anonymous_key, &bob, "", &["put", "app/x", "1"]).ok()?;
        (code == Some(0)).then_some(())
    })
    .await?;
    let (code, _, stderr) = kvctl(
        &anonymous_cert,
        &anonymous_key,
        &bob,
        "",
        &["put", "other/x", "1"],
    )?;
    assert_ne!(code, Some(0));
    assert!(stderr.contains("bob") && stderr.contains("write"), "{stderr}");
    let (code, _, stderr) = kvctl(
        &anonymous_cert,
        &anonymous_key,
        &[("RINGKV_USER", "bob"), ("RINGKV_PASSWORD", "wrong-password")],
        "",
        &["get", "app/x"],
    )?;
    assert_ne!(code, Some(0));
    assert!(stderr.contains(LOGIN_REFUSED), "{stderr}");

    let (code, token, stderr) = kvctl(&anonymous_cert, &anonymous_key, &bob, "", &["auth", "token"])?;
    assert_eq!(code, Some(0), "{stderr}");
    let token = token.trim().to_string();
    let (code, value, stderr) = kvctl(
        &anonymous_cert,
        &anonymous_key,
        &[("RINGKV_TOKEN", &token)],
        "",
        &["get", "app/x", "-o", "raw"],
    )?;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(value, "1");

    as_root(&["user", "passwd", "bob"], "bob-password-2\n")?;
    let (code, _, stderr) = kvctl(&anonymous_cert, &anonymous_key, &bob, "", &["get", "app/x"])?;
    assert_ne!(code, Some(0), "the old password is refused");
    assert!(stderr.contains(LOGIN_REFUSED), "{stderr}");
    let (code, _, stderr) = kvctl(
        &anonymous_cert,
        &anonymous_key,
        &[("RINGKV_USER", "bob"), ("RINGKV_PASSWORD", "bob-password-2")],
        "",
        &["get", "app/x"],
    )?;
    assert_eq!(code, Some(0), "{stderr}");
    Ok(())
}
