//! Mutual TLS on every connection (issue 15): a TLS cluster serves clients that present a
//! certificate of its CA; callers with another CA's or an expired one are refused by routers
//! and nodes, callers without one by nodes (routers let them in, but then want a token); a client certificate cannot speak `Raft`; certificates
//! rotate without a restart; and a node or router given neither TLS files nor `--insecure`
//! does not start.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use ringkv_client::{Client, ClientConfig, ClientTls};
use ringkv_launcher::security::LOCAL_HOSTS;
use ringkv_launcher::{ClusterCerts, Security};
use ringkv_proto::v1;
use ringkv_tests::{bin_dir, wait_until, Cluster, ClusterOptions, WAIT};
use ringkv_tls::{
    parse_certificate_pem, presented_certificate, write_pair, CertInfo, CertificateAuthority, IssuedCert,
    LeafRequest, Role, TlsFiles, TlsMaterial, Validity,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

const DAY: Duration = Duration::from_secs(86_400);
/// Deadline of each probe: a refusal must come well within it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn tls_options() -> ClusterOptions {
    ClusterOptions {
        shards: 4,
        tls: true,
        ..ClusterOptions::default()
    }
}

fn certs(cluster: &Cluster) -> &ClusterCerts {
    match &cluster.security {
        Security::Tls(certs) => certs,
        Security::Insecure => panic!("the test cluster runs TLS"),
    }
}

fn ca_of(certs: &ClusterCerts) -> CertificateAuthority {
    let paths = certs.ca_paths();
    CertificateAuthority::load(&paths.cert, &paths.key).expect("the cluster's CA")
}

fn client_cert(ca: &CertificateAuthority, validity: Validity) -> IssuedCert {
    ca.issue(&LeafRequest {
        role: Role::Client,
        hosts: Vec::new(),
        user: Some("mallory".to_string()),
        validity,
    })
    .expect("issue a client certificate")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// A client of the router that trusts the cluster's CA and presents `identity`; one
/// attempt per call.
async fn client_presenting(cluster: &Cluster, identity: &IssuedCert) -> anyhow::Result<Client> {
    let config = ClientConfig::builder()
        .request_timeout(PROBE_TIMEOUT)
        .max_attempts(1)
        .tls(ClientTls {
            ca_pem: read(&certs(cluster).ca()),
            cert_pem: identity.cert_pem.clone(),
            key_pem: identity.key_pem.clone(),
        })
        .build()?;
    let router = cluster.router_addr.clone().expect("a router");
    Ok(Client::connect_with(vec![router], config).await?)
}

/// A raw channel to `addr` that trusts the cluster's CA and presents `identity`, or no
/// certificate at all.
async fn channel_presenting(
    cluster: &Cluster,
    addr: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&certs(cluster).ca())));
    if let Some((cert_pem, key_pem)) = identity {
        tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Channel::from_shared(format!("https://{addr}"))
        .expect("a valid URI")
        .tls_config(tls)?
        .connect_timeout(PROBE_TIMEOUT)
        .timeout(PROBE_TIMEOUT)
        .connect()
        .await
}

/// `Admin.NodeStatus` at `addr` presenting `identity`: the status, or why it failed.
async fn node_status_presenting(
    cluster: &Cluster,
    addr: &str,
    identity: Option<(&str, &str)>,
) -> Result<v1::NodeStatusResponse, String> {
    let channel = channel_presenting(cluster, addr, identity)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    v1::admin_client::AdminClient::new(channel)
        .node_status(v1::NodeStatusRequest::default())
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{status}"))
}

/// A TLS cluster (nodes replicating over TLS, the router dialling nodes with its
/// certificate) serves puts and gets to a client presenting a certificate of its CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_clients_with_certificates() -> anyhow::Result<()> {
    let cluster = Cluster::start(tls_options()).await?;
    let client = cluster.client().await?;
    for index in 0..20 {
        let key = format!("tls/{index}");
        let version = client.put(&key, format!("value {index}")).await?;
        let read = client.get(&key).await?.expect("the key was written");
        assert_eq!(read.value, format!("value {index}").into_bytes(), "key {key}");
        assert_eq!(read.version, version, "key {key}");
    }
    // Every node's log says it serves TLS.
    for id in 1..=cluster.options.nodes {
        let log = read(&cluster.node_log(id));
        assert!(log.contains("serving mutual TLS"), "node {id}: {log}");
    }
    Ok(())
}

/// Routers and nodes refuse callers with a certificate of another CA, with an expired
/// certificate of the cluster's CA, and over plain http; nodes refuse callers without a
/// certificate, routers their calls without a token; they keep
/// serving callers with good certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_certificate_are_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(tls_options()).await?;
    let ca = ca_of(certs(&cluster));
    let other_ca = CertificateAuthority::create("other", Validity::days_from_now(30)?)?;
    let now = SystemTime::now();
    let refused = [
        ("another CA", client_cert(&other_ca, Validity::days_from_now(1)?)),
        (
            "an expired certificate",
            client_cert(&ca, Validity::between(now - 3 * DAY, now - DAY)?),
        ),
    ];
    let node = cluster.node_addr(1)?;
    for (what, issued) in &refused {
        let client = client_presenting(&cluster, issued).await?;
        let answer = client.put("refused", "x").await;
        assert!(answer.is_err(), "router, {what}: {answer:?}");
        let answer = node_status_presenting(&cluster, &node, Some((&issued.cert_pem, &issued.key_pem))).await;
        assert!(answer.is_err(), "node, {what}: {answer:?}");
    }
    // No certificate at all, over TLS.
    let answer = node_status_presenting(&cluster, &node, None).await;
    assert!(answer.is_err(), "node, no certificate: {answer:?}");
    // A router lets a TLS client without a certificate in, but a call without a token is
    // UNAUTHENTICATED (password users: tests/auth_limits.rs).
    let router = cluster.router_addr.clone().expect("a router");
    let channel = channel_presenting(&cluster, &router, None).await?;
    let no_cert = v1::kv_client::KvClient::new(channel)
        .get(v1::GetRequest {
            key: b"refused".to_vec(),
            ..Default::default()
        })
        .await
        .expect_err("router, no certificate and no token");
    assert_eq!(no_cert.code(), tonic::Code::Unauthenticated, "{no_cert:?}");
    // Plain http to a TLS port.
    let plain = Client::connect_with(
        vec![router.clone()],
        ClientConfig::builder()
            .request_timeout(PROBE_TIMEOUT)
            .max_attempts(1)
            .build()?,
    )
    .await?
    .get("refused")
    .await;
    assert!(plain.is_err(), "router, plain http: {plain:?}");

    // Nothing was written, and good certificates are still served.
    let client = cluster.client().await?;
    assert_eq!(client.get("refused").await?, None);
    client.put("accepted", "yes").await?;
    Ok(())
}

/// A client (or router) certificate calling `Raft` on a node (a unary vote, or a vote on the
/// pipeline stream) is refused with PERMISSION_DENIED naming the service and the role, and
/// the forged vote changes nothing:
/// the system group keeps its term and the cluster keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_speak_raft() -> anyhow::Result<()> {
    let cluster = Cluster::start(tls_options()).await?;
    let certs = certs(&cluster);
    let node = cluster.node_addr(1)?;
    let system_term = |status: &v1::NodeStatusResponse| {
        status
            .replicas
            .iter()
            .find(|replica| replica.shard_id.is_none())
            .map(|replica| replica.term)
    };
    let before = cluster.node_status(1).await?;
    let term_before = system_term(&before).expect("node 1 hosts the system group");
    // A vote request with a near-maximum term, as openraft encodes it (postcard): term,
    // candidate node id, not committed, no last log id. Accepted, it would make every
    // later election of the system group fail.
    let mut payload = Vec::new();
    let mut term: u64 = 1 << 60;
    while term >= 0x80 {
        payload.push((term as u8) | 0x80);
        term >>= 7;
    }
    payload.push(term as u8);
    payload.extend_from_slice(&[2, 0, 0]);
    let forged = v1::RaftMessage {
        cluster_id: before.cluster_id.clone(),
        shard_id: 0,
        system: true,
        from_node: 2,
        payload,
        to_node: 1,
    };
    for role in [Role::Client, Role::Router] {
        let paths = certs.paths(role);
        let (cert_pem, key_pem) = (read(&paths.cert), read(&paths.key));
        let channel = channel_presenting(&cluster, &node, Some((&cert_pem, &key_pem))).await?;
        let refused = v1::raft_client::RaftClient::new(channel)
            .vote(forged.clone())
            .await
            .expect_err("a forged vote with a non-node certificate");
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}: {refused}");
        assert!(
            refused.message().contains("ringkv.v1.Raft")
                && refused.message().contains("only node certificates")
                && refused.message().contains(&format!("a {role} certificate")),
            "{role}: {}",
            refused.message()
        );
        // The same vote framed on the pipeline stream (how nodes send votes) is refused too.
        let channel = channel_presenting(&cluster, &node, Some((&cert_pem, &key_pem))).await?;
        let frames = v1::RaftFrames {
            frames: vec![v1::RaftFrame {
                id: 1,
                rpc: v1::RaftRpc::Vote as i32,
                message: Some(forged.clone()),
            }],
        };
        let refused = v1::raft_client::RaftClient::new(channel)
            .pipeline(futures::stream::iter(vec![frames]))
            .await
            .expect_err("a pipeline opened with a non-node certificate");
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}: {refused}");
        // The same certificate may still ask for the node's status.
        let channel = channel_presenting(&cluster, &node, Some((&cert_pem, &key_pem))).await?;
        v1::admin_client::AdminClient::new(channel)
            .node_status(v1::NodeStatusRequest::default())
            .await?;
    }
    let after = cluster.node_status(1).await?;
    assert_eq!(
        system_term(&after),
        Some(term_before),
        "the forged vote changed nothing"
    );
    cluster
        .client()
        .await?
        .put("after/forged", "still serving")
        .await?;
    Ok(())
}

/// A node or router started with neither TLS files nor `--insecure` exits at once with a
/// message saying what to give; a node given a client certificate says it needs a node's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_without_tls_or_insecure_refuse_to_start() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let node_bin = bin_dir()?.join("ringkv-node");
    let base = |data_dir: &str| {
        let mut command = Command::new(&node_bin);
        command
            .args(["--node-id", "1", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.path().join(data_dir));
        command
    };
    let output = base("open").output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no TLS configured") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let output = Command::new(bin_dir()?.join("ringkv-router"))
        .args(["--listen", "127.0.0.1:0", "--nodes", "127.0.0.1:1"])
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no TLS configured") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let certs = ClusterCerts::create(&scratch.path().join("certs"), "refusals")?;
    let client = certs.paths(Role::Client);
    let output = base("wrong-role")
        .arg("--ca")
        .arg(certs.ca())
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .arg("--gossip-key")
        .arg(certs.gossip_key())
        .output()?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs a node certificate"), "{stderr}");
    Ok(())
}

/// The serial of the certificate the server at `addr` presents now (None: no handshake).
async fn presented_serial(addr: &str, client: &TlsMaterial) -> Option<String> {
    presented_certificate(addr, client, PROBE_TIMEOUT)
        .await
        .ok()
        .map(|info| info.serial)
}

fn serial_of(issued: &IssuedCert) -> anyhow::Result<String> {
    let der = parse_certificate_pem(&issued.cert_pem, "the new certificate")?;
    Ok(CertInfo::from_der(&der, "the new certificate")?.serial)
}

/// Certificates rotate without a restart: new node and router certificates of the same CA
/// written over the files are what the next handshakes present (within a few reload
/// checks), and the cluster serves throughout; files that fail the checks (a client
/// certificate given as the nodes') are refused with a warning, and the nodes keep
/// presenting the certificate they had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_a_restart() -> anyhow::Result<()> {
    let cluster = Cluster::start(tls_options()).await?;
    let certs = certs(&cluster).clone();
    let ca = ca_of(&certs);
    let client_paths = certs.paths(Role::Client);
    let prober = TlsFiles {
        ca: certs.ca(),
        cert: client_paths.cert.clone(),
        key: client_paths.key.clone(),
    }
    .load(&[Role::Client])?;
    let node = cluster.node_addr(1)?;
    let router = cluster.router_addr.clone().expect("a router");
    let client = cluster.client().await?;
    client.put("rotation/before", "1").await?;

    for (role, addr) in [(Role::Node, &node), (Role::Router, &router)] {
        let before = presented_serial(addr, &prober).await.expect("a handshake");
        let renewed = ca.issue(&LeafRequest {
            role,
            hosts: LOCAL_HOSTS.iter().map(|host| host.to_string()).collect(),
            user: None,
            validity: Validity::days_from_now(30)?,
        })?;
        let renewed_serial = serial_of(&renewed)?;
        assert_ne!(before, renewed_serial);
        write_pair(&certs.paths(role), &renewed, true)?;
        wait_until(
            &format!("the {role} to present its renewed certificate"),
            WAIT,
            || async {
                (presented_serial(addr, &prober).await.as_deref() == Some(renewed_serial.as_str()))
                    .then_some(())
            },
        )
        .await?;
        client.put(format!("rotation/{role}"), "served").await?;
    }

    // A bad rotation: the nodes' files now hold a client certificate.
    let refusals = || read(&cluster.node_log(1)).matches("are refused").count();
    let refused_before = refusals();
    let serving = presented_serial(&node, &prober).await.expect("a handshake");
    let wrong = client_cert(&ca, Validity::days_from_now(30)?);
    write_pair(&certs.paths(Role::Node), &wrong, true)?;
    wait_until("node 1 to refuse the wrong files", WAIT, || async {
        // A handshake makes the node look at its files.
        let _ = presented_serial(&node, &prober).await;
        (refusals() > refused_before).then_some(())
    })
    .await?;
    assert_eq!(
        presented_serial(&node, &prober).await,
        Some(serving),
        "the previous certificate stays"
    );
    client.put("rotation/after", "still served").await?;
    assert_eq!(
        client.get("rotation/before").await?.map(|read| read.value),
        Some(b"1".to_vec())
    );
    Ok(())
}

/// kvctl writes and reads through a TLS router with `RINGKV_CA`/`RINGKV_CERT`/`RINGKV_KEY`
/// or `--ca`/`--cert`/`--key` (the same flags as the `key` argument of `get` and `put`
/// once made kvctl panic), and is refused without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvctl_speaks_tls_with_its_certificate() -> anyhow::Result<()> {
    let cluster = Cluster::start(tls_options()).await?;
    let certs = certs(&cluster);
    let client = certs.paths(Role::Client);
    let router = cluster.router_addr.clone().expect("a router");
    let kvctl = || -> anyhow::Result<Command> {
        let mut command = Command::new(bin_dir()?.join("kvctl"));
        command
            .args(["-e", &router, "--timeout", "5000"])
            .env_remove("RINGKV_CA")
            .env_remove("RINGKV_CERT")
            .env_remove("RINGKV_KEY");
        Ok(command)
    };
    let put = kvctl()?
        .env("RINGKV_CA", certs.ca())
        .env("RINGKV_CERT", &client.cert)
        .env("RINGKV_KEY", &client.key)
        .args(["put", "kvctl/key", "over-tls"])
        .output()?;
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = kvctl()?
        .arg("--ca")
        .arg(certs.ca())
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .args(["get", "kvctl/key"])
        .output()?;
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert!(String::from_utf8_lossy(&get.stdout).contains("over-tls"));
    let without = kvctl()?.args(["get", "kvctl/key"]).output()?;
    assert!(!without.status.success(), "plain http to a TLS router");
    assert_ne!(without.status.code(), Some(101), "an error, not a panic");
    // The broken connection comes with a hint at what is missing, not a bare "broken pipe".
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(said.contains("hint: kvctl connected without TLS"), "{said}");
    assert!(said.contains("RINGKV_CA"), "{said}");
    Ok(())
}

/// The dialling side follows its files too: after the whole cluster moves to a new CA (new
/// CA, node, router and client files written over the old ones), the router — never
/// restarted — reaches nodes restarted on the new files, which accept only the new CA:
/// its connections to them present its rotated certificate. (Before, the router kept
/// dialling with the certificate it started with, and the nodes refused it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialled_connections_present_rotated_certificates() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterOptions {
        nodes: 1,
        shards: 1,
        replication_factor: 1,
        tls: true,
        ..ClusterOptions::default()
    })
    .await?;
    let certs = certs(&cluster).clone();
    cluster.client().await?.put("rotation/before", "1").await?;

    let new_ca = CertificateAuthority::create("renewed", Validity::days_from_now(60)?)?;
    let leaf = |role: Role| {
        new_ca.issue(&LeafRequest {
            role,
            hosts: LOCAL_HOSTS.iter().map(|host| host.to_string()).collect(),
            user: None,
            validity: Validity::days_from_now(30).expect("validity"),
        })
    };
    let router_cert = leaf(Role::Router)?;
    let renewed_router_serial = serial_of(&router_cert)?;
    write_pair(&certs.paths(Role::Node), &leaf(Role::Node)?, true)?;
    write_pair(&certs.paths(Role::Router), &router_cert, true)?;
    let client_cert = client_cert(&new_ca, Validity::days_from_now(30)?);
    let new_ca_files = IssuedCert {
        cert_pem: new_ca.cert_pem().to_string(),
        key_pem: new_ca.key_pem(),
    };
    write_pair(&certs.ca_paths(), &new_ca_files, true)?;
    // The router serves with the new files (its server side reloads on a handshake).
    let probe_dir = tempfile::tempdir()?;
    let probe_paths = ringkv_tls::CertPaths::new(probe_dir.path(), "probe");
    write_pair(&probe_paths, &client_cert, false)?;
    let prober = TlsFiles {
        ca: certs.ca(),
        cert: probe_paths.cert.clone(),
        key: probe_paths.key.clone(),
    }
    .load(&[Role::Client])?;
    let router = cluster.router_addr.clone().expect("a router");
    wait_until("the router to present its renewed certificate", WAIT, || async {
        (presented_serial(&router, &prober).await.as_deref() == Some(renewed_router_serial.as_str()))
            .then_some(())
    })
    .await?;
    // The node restarts on the new files: it accepts only the new CA.
    cluster.stop_node(1).await?;
    cluster.start_node(1).await?;
    let client = client_presenting(&cluster, &client_cert).await?;
    wait_until(
        "a write through the router to the restarted node",
        WAIT,
        || async { client.put("rotation/after", "2").await.ok() },
    )
    .await?;
    assert_eq!(
        client.get("rotation/before").await?.map(|read| read.value),
        Some(b"1".to_vec())
    );
    Ok(())
}
