//! Issue 15's hardening of password users: failed logins make the next attempts wait (at the
//! router and at a node reached directly); users change their own password with their
//! current one, without admin; and a password user needs no client certificate at a router
//! (server-authenticated TLS plus a token), while nodes still require one.

use std::process::Stdio;
use std::time::Duration;

use ringkv_client::{Client, ClientAuth, ClientConfig, ClientTls, Error};
use ringkv_proto::v1::{self, auth_client::AuthClient, change_auth_request::Change};
use ringkv_tests::{bin_dir, wait_until, Cluster, ClusterOptions, WAIT};
use ringkv_tls::{CertificateAuthority, LeafRequest, Role, Validity};
use tokio::io::AsyncWriteExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Code;
use tonic_types::StatusExt;

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const ALICE_PASSWORD: &str = "alice-password-1";
const BOB_PASSWORD: &str = "bob-password-1";
/// Failed logins of one user that cost no wait (`ringkv_authz::throttle`).
const FREE_FAILURES_PER_USER: usize = 5;

/// A one-node TLS cluster (with a router) whose node hashes passwords cheaply, with users
/// alice (read on `app/`) and bob (no roles), both with passwords, and permissions on.
async fn start_cluster() -> anyhow::Result<Cluster> {
    let mut options = ClusterOptions {
        nodes: 1,
        shards: 1,
        replication_factor: 1,
        tls: true,
        ..ClusterOptions::default()
    };
    options
        .node_args
        .extend(["--password-hash-iterations".to_string(), "10000".to_string()]);
    let cluster = Cluster::start(options).await?;
    let root = cluster.client().await?;
    root.change_auth(Change::AddRole("app-reader".into())).await?;
    root.change_auth(Change::Grant(v1::RoleGrant {
        role: "app-reader".into(),
        grant: Some(v1::Grant {
            prefix: b"app/".to_vec(),
            permission: v1::Permission::Read as i32,
        }),
    }))
    .await?;
    for (user, roles, password) in [
        ("alice", vec!["app-reader".to_string()], ALICE_PASSWORD),
        ("bob", Vec::new(), BOB_PASSWORD),
    ] {
        root.change_auth(Change::AddUser(v1::AuthUser {
            name: user.into(),
            roles,
            has_password: false,
        }))
        .await?;
        root.change_auth(Change::SetPassword(v1::UserPassword {
            user: user.into(),
            password: password.into(),
        }))
        .await?;
    }
    root.put("app/x", "1").await?;
    root.change_auth(Change::Enable(true)).await?;
    Ok(cluster)
}

/// A raw `Auth` client of `addr` presenting a client certificate of the cluster's CA that
/// names no user (logins need none).
async fn auth_at(cluster: &Cluster, addr: &str) -> anyhow::Result<AuthClient<Channel>> {
    let anonymous = cluster.user_cert("anonymous")?;
    Ok(AuthClient::new(
        cluster.channel_as(addr, &anonymous, PROBE_TIMEOUT).await?,
    ))
}

async fn login(
    auth: &mut AuthClient<Channel>,
    user: &str,
    password: &str,
) -> Result<v1::LoginResponse, tonic::Status> {
    auth.login(v1::LoginRequest {
        user: user.into(),
        password: password.into(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Asserts `answer` is a throttled login naming `who`, and returns its RetryInfo delay.
fn assert_throttled<T: std::fmt::Debug>(what: &str, answer: Result<T, tonic::Status>, who: &str) -> Duration {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), Code::ResourceExhausted, "{what}: {status:?}");
    assert!(
        status.message().contains("too many failed logins") && status.message().contains(who),
        "{what}: {status:?}"
    );
    let details = status.get_error_details();
    assert_eq!(
        details.error_info().map(|info| info.reason.as_str()),
        Some("LOGIN_THROTTLED"),
        "{what}: {status:?}"
    );
    let delay = details
        .retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| panic!("{what}: no RetryInfo: {status:?}"));
    assert!(
        !delay.is_zero() && delay <= Duration::from_secs(1),
        "{what}: retry after {delay:?}"
    );
    delay
}

/// Past five wrong passwords, a user's next logins are refused before any password check
/// (even the right one) with RESOURCE_EXHAUSTED and RetryInfo, at the router and at the
/// node (which counted the forwarded failures too, and counts logins sent to it directly);
/// other users log in meanwhile; once the wait is over the right password works again and
/// the count starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_make_the_next_attempts_wait() -> anyhow::Result<()> {
    let cluster = start_cluster().await?;
    let router = cluster.router_addr.clone().expect("a router");
    let mut at_router = auth_at(&cluster, &router).await?;
    let mut at_node = auth_at(&cluster, &cluster.node_addr(1)?).await?;

    for attempt in 0..FREE_FAILURES_PER_USER {
        let refused = login(&mut at_router, "alice", "wrong-guess").await;
        let status = refused.expect_err("a wrong password");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "attempt {attempt}: {status:?}"
        );
    }
    // The right password is refused too now: a guess would learn nothing.
    assert_throttled(
        "alice at the router",
        login(&mut at_router, "alice", ALICE_PASSWORD).await,
        "alice",
    );
    // The node counted the failures the router forwarded: bypassing the router helps not.
    assert_throttled(
        "alice at the node",
        login(&mut at_node, "alice", ALICE_PASSWORD).await,
        "alice",
    );
    // Other users are not held up.
    login(&mut at_router, "bob", BOB_PASSWORD).await?;

    // Logins sent straight to a node are counted there.
    for _ in 0..FREE_FAILURES_PER_USER {
        let status = login(&mut at_node, "bob", "wrong-guess")
            .await
            .expect_err("wrong");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert_throttled(
        "bob at the node",
        login(&mut at_node, "bob", BOB_PASSWORD).await,
        "bob",
    );

    // The wait ends; the right password works and clears the count.
    wait_until("alice logs in again", WAIT, || {
        let mut at_router = at_router.clone();
        async move { login(&mut at_router, "alice", ALICE_PASSWORD).await.ok() }
    })
    .await?;
    let status = login(&mut at_router, "alice", "wrong-guess")
        .await
        .expect_err("wrong");
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "one failure after a success is not throttled: {status:?}"
    );
    Ok(())
}

/// A client of the router over TLS without a client certificate (the CA only).
async fn client_without_cert(cluster: &Cluster, auth: Option<ClientAuth>) -> anyhow::Result<Client> {
    let ca = std::fs::read_to_string(cluster.certs()?.ca())?;
    let builder = ClientConfig::builder()
        .request_timeout(PROBE_TIMEOUT)
        .max_attempts(1)
        .tls(ClientTls::ca_only(ca));
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

/// Runs kvctl against the router with `args`, writing `stdin` to it.
async fn kvctl(cluster: &Cluster, args: &[&str], stdin: &str) -> anyhow::Result<std::process::Output> {
    let router = cluster.router_addr.clone().expect("a router");
    let mut child = tokio::process::Command::new(bin_dir()?.join("kvctl"))
        .env_remove("RINGKV_ENDPOINTS")
        .env("RINGKV_PROFILE", "/nonexistent")
        .args(["-e", &router, "--timeout", "10000"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await?;
    }
    Ok(tokio::time::timeout(WAIT, child.wait_with_output()).await??)
}

/// A password user at a router needs no client certificate: with a token (from a password
/// login or given) it acts as itself, role checks unchanged; without a token it is refused
/// UNAUTHENTICATED, saying what to do; a certificate of another CA is still refused, and
/// nodes still refuse callers without a certificate. Users change their own password with
/// their current one (the client and `kvctl user passwd` without a name), without admin;
/// a wrong current password changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_users_need_no_certificate_and_change_their_own_password() -> anyhow::Result<()> {
    let cluster = start_cluster().await?;
    let ca_path = cluster.certs()?.ca().display().to_string();

    // No certificate, a password login: alice reads app/x, may not write it.
    let alice = client_without_cert(&cluster, password("alice", ALICE_PASSWORD)).await?;
    assert_eq!(alice.get("app/x").await?.expect("app/x").value, b"1");
    let (code, message) = failure("alice writes app/x", alice.put("app/x", "2").await);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    // A given token works the same.
    let (token, _) = alice.token().await?.expect("a token");
    let with_token = client_without_cert(&cluster, Some(ClientAuth::Token(token))).await?;
    assert_eq!(with_token.get("app/x").await?.expect("app/x").value, b"1");
    // Neither certificate nor token.
    let nobody = client_without_cert(&cluster, None).await?;
    let (code, message) = failure("no certificate, no token", nobody.get("app/x").await);
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("no client certificate"), "{message}");
    // A certificate of another CA is refused at the handshake, token or not.
    let other_ca = CertificateAuthority::create("other", Validity::days_from_now(30)?)?;
    let foreign = other_ca.issue(&LeafRequest {
        role: Role::Client,
        hosts: Vec::new(),
        user: Some("root".into()),
        validity: Validity::days_from_now(1)?,
    })?;
    let foreign_client = Client::connect_with(
        vec![cluster.router_addr.clone().expect("a router")],
        ClientConfig::builder()
            .request_timeout(PROBE_TIMEOUT)
            .max_attempts(1)
            .tls(ClientTls {
                ca_pem: std::fs::read_to_string(cluster.certs()?.ca())?,
                cert_pem: foreign.cert_pem.clone(),
                key_pem: foreign.key_pem.clone(),
            })
            .auth(ClientAuth::Password {
                user: "alice".into(),
                password: ALICE_PASSWORD.into(),
            })
            .build()?,
    )
    .await?;
    let answer = foreign_client.get("app/x").await;
    assert!(answer.is_err(), "another CA's certificate: {answer:?}");
    // A node requires a certificate.
    let node = cluster.node_addr(1)?;
    let ca_only =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(cluster.certs()?.ca())?));
    let answer = match Channel::from_shared(format!("https://{node}"))?
        .tls_config(ca_only)?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .connect()
        .await
    {
        Err(err) => Err(err.to_string()),
        Ok(channel) => AuthClient::new(channel)
            .login(v1::LoginRequest {
                user: "alice".into(),
                password: ALICE_PASSWORD.into(),
            })
            .await
            .map(|_| ())
            .map_err(|status| status.to_string()),
    };
    assert!(answer.is_err(), "a node without a client certificate: {answer:?}");

    // kvctl with --ca and a password, no --cert/--key.
    let output = kvctl(
        &cluster,
        &[
            "--ca",
            &ca_path,
            "--user",
            "alice",
            "--password",
            ALICE_PASSWORD,
            "-o",
            "raw",
            "get",
            "app/x",
        ],
        "",
    )
    .await?;
    assert!(output.status.success(), "kvctl get: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "1");

    // Her own password, without admin: a wrong current one changes nothing.
    let (code, message) = failure(
        "a wrong current password",
        nobody
            .change_password("alice", "not-hers", "alice-password-2")
            .await,
    );
    assert_eq!(code, Code::Unauthenticated, "{message}");
    nobody
        .change_password("alice", ALICE_PASSWORD, "alice-password-2")
        .await?;
    let (code, _) = failure("the old password", nobody.login("alice", ALICE_PASSWORD).await);
    assert_eq!(code, Code::Unauthenticated);
    nobody.login("alice", "alice-password-2").await?;
    // kvctl user passwd without a name: the new password from stdin.
    let output = kvctl(
        &cluster,
        &[
            "--ca",
            &ca_path,
            "--user",
            "alice",
            "--password",
            "alice-password-2",
            "user",
            "passwd",
        ],
        "alice-password-3\n",
    )
    .await?;
    assert!(output.status.success(), "kvctl user passwd: {output:?}");
    nobody.login("alice", "alice-password-3").await?;
    // Another user's password stays an admin's business.
    let output = kvctl(
        &cluster,
        &[
            "--ca",
            &ca_path,
            "--user",
            "alice",
            "--password",
            "alice-password-3",
            "user",
            "passwd",
            "bob",
        ],
        "bob-password-2\n",
    )
    .await?;
    assert!(!output.status.success(), "alice sets bob's password: {output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("admin"),
        "{output:?}"
    );
    nobody.login("bob", BOB_PASSWORD).await?;
    Ok(())
}
