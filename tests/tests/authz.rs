//! Permissions (issue 15): a client certificate names its user; roles grant read, write or
//! admin on key prefixes; once `auth enable` ran, the router and every node refuse what the
//! user's roles do not grant, as a whole, with PERMISSION_DENIED naming the user, the
//! permission and the key or range. Before it, every certificate acts as root.

use std::time::Duration;

use ringkv_client::{Client, ClientConfig, ClientTls, Error, Isolation, KeyRange, ScanOptions};
use ringkv_proto::v1::{self, change_auth_request::Change};
use ringkv_tests::{add_user, grant, wait_until, Cluster, ClusterOptions, WAIT};
use ringkv_tls::{IssuedCert, Role};
use tonic::Code;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the router presenting `identity`, one attempt per call.
async fn client_as(cluster: &Cluster, identity: &IssuedCert) -> anyhow::Result<Client> {
    let config = ClientConfig::builder()
        .request_timeout(PROBE_TIMEOUT)
        .max_attempts(1)
        .tls(ClientTls {
            ca_pem: std::fs::read_to_string(cluster.certs()?.ca())?,
            cert_pem: identity.cert_pem.clone(),
            key_pem: identity.key_pem.clone(),
        })
        .build()?;
    let router = cluster.router_addr.clone().expect("a router");
    Ok(Client::connect_with(vec![router], config).await?)
}

/// That `answer` is PERMISSION_DENIED naming every one of `words`.
fn assert_denied<T: std::fmt::Debug>(what: &str, answer: Result<T, Error>, words: &[&str]) {
    match answer {
        Err(Error::Other {
            code: Code::PermissionDenied,
            message,
        }) => {
            for word in words {
                assert!(
                    message.contains(word),
                    "{what}: {message:?} does not name {word:?}"
                );
            }
        }
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

fn assert_status_denied<T: std::fmt::Debug>(what: &str, answer: Result<T, tonic::Status>, words: &[&str]) {
    match answer {
        Err(status) if status.code() == Code::PermissionDenied => {
            for word in words {
                assert!(
                    status.message().contains(word),
                    "{what}: {:?} does not name {word:?}",
                    status.message()
                );
            }
        }
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

async fn change(client: &Client, change: Change) -> anyhow::Result<()> {
    client.change_auth(change).await?;
    Ok(())
}

/// The permission scenario of issue 15, through the router and straight at the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissions_are_enforced_at_the_router_and_the_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 4,
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let root = cluster.client().await?;
    let alice_cert = cluster.user_cert("alice")?;
    let bob_cert = cluster.user_cert("bob")?;
    let alice = client_as(&cluster, &alice_cert).await?;
    let bob = client_as(&cluster, &bob_cert).await?;

    // Before `auth enable` every certificate acts as root: alice writes anywhere and may
    // even create a role.
    alice.put("other/x", "secret").await?;
    change(&alice, Change::AddRole("app-reader".into())).await?;
    let status = alice.get_auth().await?;
    assert_eq!(status.caller, "alice");
    assert!(!status.table.unwrap_or_default().enabled);

    // Root sets up: alice reads app/, bob writes app/; then enables permissions.
    change(&root, grant("app-reader", "app/", v1::Permission::Read)).await?;
    change(&root, Change::AddRole("app-writer".into())).await?;
    change(&root, grant("app-writer", "app/", v1::Permission::Write)).await?;
    change(&root, add_user("alice", &["app-reader"])).await?;
    change(&root, add_user("bob", &["app-writer"])).await?;
    root.put("app/x", "1").await?;
    change(&root, Change::Enable(true)).await?;

    // The router learns the table within its refresh interval.
    wait_until("the router refuses alice's write", WAIT, || async {
        alice.put("app/x", "2").await.is_err().then_some(())
    })
    .await?;

    // Through the router.
    let value = alice.get("app/x").await?.expect("app/x exists");
    assert_eq!(value.value, b"1");
    assert_denied(
        "alice writes app/x",
        alice.put("app/x", "2").await,
        &["alice", "write", "app/x"],
    );
    assert_denied(
        "alice deletes app/x",
        alice.delete("app/x").await,
        &["alice", "write"],
    );
    assert_denied(
        "alice reads other/x",
        alice.get("other/x").await,
        &["alice", "read", "other/x"],
    );
    assert_denied(
        "alice reads app/x and other/x at once",
        alice.batch_get(&["app/x", "other/x"]).await,
        &["alice", "other/x"],
    );
    let page = alice
        .scan(&KeyRange::prefix("app/"), &ScanOptions::new(), None)
        .await?;
    assert_eq!(page.entries.len(), 1, "alice scans app/");
    assert_denied(
        "alice scans past app/",
        alice
            .scan(&KeyRange::between("app/", "b"), &ScanOptions::new(), None)
            .await,
        &["alice", "read", "range"],
    );
    assert_denied(
        "alice scans everything",
        alice.scan(&KeyRange::all(), &ScanOptions::new(), None).await,
        &["alice"],
    );
    // A transaction touching a forbidden key is refused as a whole.
    let mut txn = bob.begin(Isolation::ReadCommitted).await?;
    txn.put("app/y", "from bob");
    txn.put("other/y", "from bob");
    assert_denied(
        "bob's transaction",
        txn.commit().await,
        &["bob", "write", "other/y"],
    );
    assert_eq!(
        root.get("app/y").await?,
        None,
        "nothing of the refused transaction was written"
    );
    bob.put("app/y", "from bob").await?;
    // Admin operations and the permission table need admin.
    assert_denied(
        "alice grants herself write",
        alice
            .change_auth(grant("app-reader", "", v1::Permission::Write))
            .await,
        &["alice", "admin"],
    );
    assert_denied(
        "alice reads the table",
        alice.get_auth().await,
        &["alice", "admin"],
    );
    assert_denied(
        "bob adds a node",
        bob.add_node(9, "127.0.0.1:1").await,
        &["bob", "admin"],
    );
    assert_denied(
        "bob deletes everything",
        bob.delete_all().await,
        &["bob", "admin"],
    );
    assert_denied(
        "bob moves a leader",
        bob.transfer_leader(0, 1).await,
        &["bob", "admin"],
    );

    // Straight at the nodes: alice's own certificate names her, whatever metadata she sends.
    let mut read_app_x = 0;
    for addr in cluster.node_addrs() {
        let channel = cluster.channel_as(&addr, &alice_cert, PROBE_TIMEOUT).await?;
        let mut shard_kv = v1::shard_kv_client::ShardKvClient::new(channel.clone());
        for shard_id in 0..4 {
            let read = |key: &str| v1::ShardReadRequest {
                shard_id,
                keys: vec![key.as_bytes().to_vec()],
                ..Default::default()
            };
            if let Ok(answer) = shard_kv.read(read("app/x")).await {
                read_app_x += answer
                    .into_inner()
                    .results
                    .iter()
                    .filter(|result| result.found)
                    .count();
            }
            let mut forged = tonic::Request::new(read("other/x"));
            forged.metadata_mut().insert("x-ringkv-user", "root".parse()?);
            assert_status_denied(
                "alice reads other/x at a node",
                shard_kv.read(forged).await,
                &["alice", "read", "other/x"],
            );
            let write = v1::ShardWriteRequest {
                shard_id,
                request_id: vec![7; 16],
                ops: vec![v1::WriteOp {
                    key: b"app/x".to_vec(),
                    value: b"2".to_vec(),
                    ..Default::default()
                }],
            };
            assert_status_denied(
                "alice writes app/x at a node",
                shard_kv.write(write).await,
                &["alice", "write", "app/x"],
            );
        }
        let mut admin = v1::admin_client::AdminClient::new(channel);
        assert_status_denied(
            "alice grants at a node",
            admin
                .change_auth(v1::ChangeAuthRequest {
                    change: Some(grant("app-reader", "", v1::Permission::Admin)),
                })
                .await,
            &["alice", "admin"],
        );
        // A status is anyone's; one that counts every replica's keys is admin's.
        let status = admin
            .node_status(v1::NodeStatusRequest::default())
            .await?
            .into_inner();
        assert!(status.node_id != 0, "{status:?}");
        assert_status_denied(
            "alice counts a node's keys",
            admin
                .node_status(v1::NodeStatusRequest { count_keys: true })
                .await,
            &["alice", "admin"],
        );
    }
    assert!(read_app_x >= 1, "alice read app/x at its shard's leader");
    assert_eq!(
        root.get("app/x").await?.expect("app/x").value,
        b"1",
        "nothing was written"
    );
    assert_eq!(root.get("other/x").await?.expect("other/x").value, b"secret");
    Ok(())
}

/// `kvctl role`, `kvctl user` and `kvctl auth` manage the table with the root certificate;
/// the table they print is what they set, and `auth status` says who the caller is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_manages_roles_users_and_auth() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        shards: 2,
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let certs = cluster.certs()?;
    let client = certs.paths(Role::Client);
    let router = cluster.router_addr.clone().expect("a router");
    let kvctl = |args: &[&str]| -> anyhow::Result<String> {
        let output = std::process::Command::new(ringkv_tests::bin_dir()?.join("kvctl"))
            .args(["-e", &router, "--timeout", "10000"])
            .env("RINGKV_CA", certs.ca())
            .env("RINGKV_CERT", &client.cert)
            .env("RINGKV_KEY", &client.key)
            .args(args)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::ensure!(output.status.success(), "kvctl {args:?}: {stderr}");
        Ok(String::from_utf8(output.stdout)?)
    };
    kvctl(&["role", "add", "app-reader"])?;
    kvctl(&["role", "grant", "app-reader", "read", "app/"])?;
    kvctl(&["user", "add", "alice", "--role", "app-reader"])?;
    let roles: serde_json::Value = serde_json::from_str(&kvctl(&["-o", "json", "role", "list"])?)?;
    assert_eq!(
        roles,
        serde_json::json!([{"role": "app-reader", "grants": [{"permission": "read", "prefix": "app/"}]}])
    );
    let users: serde_json::Value = serde_json::from_str(&kvctl(&["-o", "json", "user", "list"])?)?;
    assert_eq!(
        users,
        serde_json::json!([{"user": "alice", "roles": ["app-reader"], "password": false}])
    );
    kvctl(&["auth", "enable"])?;
    let status: serde_json::Value = serde_json::from_str(&kvctl(&["-o", "json", "auth", "status"])?)?;
    assert_eq!(status["enabled"], true, "{status}");
    assert_eq!(status["you"], "root", "{status}");
    kvctl(&["user", "revoke-role", "alice", "app-reader"])?;
    kvctl(&["role", "del", "app-reader"])?;
    kvctl(&["user", "del", "alice"])?;
    let users: serde_json::Value = serde_json::from_str(&kvctl(&["-o", "json", "user", "list"])?)?;
    assert_eq!(users, serde_json::json!([]));
    Ok(())
}
