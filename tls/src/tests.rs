//! Unit tests of the whole crate: issuing, files, reading back and checking.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::*;

const DAY: Duration = Duration::from_secs(86_400);

/// Whether an error is the expected one.
type ErrorCheck = fn(&CertError) -> bool;

fn new_ca(cluster_name: &str) -> CertificateAuthority {
    CertificateAuthority::create(
        cluster_name,
        Validity::days_from_now(DEFAULT_CA_LIFETIME_DAYS).expect("validity"),
    )
    .expect("create CA")
}

fn request(role: Role, hosts: &[&str], user: Option<&str>) -> LeafRequest {
    LeafRequest {
        role,
        hosts: hosts.iter().map(|host| host.to_string()).collect(),
        user: user.map(str::to_string),
        validity: Validity::days_from_now(DEFAULT_LEAF_LIFETIME_DAYS).expect("validity"),
    }
}

fn info_of(issued: &IssuedCert) -> CertInfo {
    let der = parse_certificate_pem(&issued.cert_pem, "test cert").expect("pem");
    CertInfo::from_der(&der, "test cert").expect("parse")
}

/// (server auth, client auth) of a certificate's extended key usage.
fn key_purposes(info: &CertInfo) -> (bool, bool) {
    let (_, cert) = X509Certificate::from_der(&info.der).expect("der");
    let usage = cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    (usage.server_auth, usage.client_auth)
}

/// Each role's certificate reads back with its role, subject, SANs, key purposes and a
/// signature that verifies against the CA.
#[test]
fn each_role_round_trips_and_verifies() {
    let ca = new_ca("test");
    assert_eq!(ca.info().subject, "CN=ringkv CA test");
    assert!(ca.info().is_ca);
    assert!(matches!(ca.info().role(), Err(CertError::NoRole { .. })));
    let cases = [
        (
            Role::Node,
            vec!["127.0.0.1", "::1", "node1.example"],
            None,
            "CN=ringkv node",
            (true, true),
        ),
        (
            Role::Router,
            vec!["10.0.0.7", "router.example"],
            None,
            "CN=ringkv router",
            (true, true),
        ),
        (Role::Client, vec![], Some("ada"), "CN=ada", (false, true)),
    ];
    for (index, (role, hosts, user, subject, purposes)) in cases.into_iter().enumerate() {
        let issued = ca.issue(&request(role, &hosts, user)).expect("issue");
        let info = info_of(&issued);
        assert_eq!(
            info.verify(ca.info(), SystemTime::now()).expect("verify"),
            role,
            "case {index}"
        );
        assert_eq!(info.subject, subject, "case {index}");
        assert_eq!(info.issuer, "CN=ringkv CA test", "case {index}");
        let mut uris = vec![role.uri()];
        uris.extend(user.map(crate::user_uri));
        assert_eq!(info.uris, uris, "case {index}");
        match user {
            Some(user) => assert_eq!(info.user().expect("user"), user, "case {index}"),
            None => assert!(
                matches!(info.user(), Err(CertError::NoUser { .. })),
                "case {index}"
            ),
        }
        assert!(!info.is_ca, "case {index}");
        assert_eq!(key_purposes(&info), purposes, "case {index}");
        let ips: Vec<IpAddr> = hosts.iter().filter_map(|host| host.parse().ok()).collect();
        let dns: Vec<&str> = hosts
            .iter()
            .copied()
            .filter(|host| host.parse::<IpAddr>().is_err())
            .collect();
        assert_eq!(info.ip_addresses, ips, "case {index}");
        assert_eq!(info.dns_names, dns, "case {index}");
        let lifetime = info.not_after.duration_since(info.not_before).expect("window");
        assert_eq!(
            lifetime,
            DEFAULT_LEAF_LIFETIME_DAYS * DAY + CLOCK_SKEW_ALLOWANCE,
            "case {index}"
        );
    }
}

/// A certificate of another CA is refused, even when that CA has the same name.
#[test]
fn certificate_of_another_ca_is_rejected() {
    let ca = new_ca("prod");
    let same_name = new_ca("prod");
    let other_name = new_ca("staging");
    for (index, stranger) in [&same_name, &other_name].into_iter().enumerate() {
        let issued = stranger
            .issue(&request(Role::Node, &["127.0.0.1"], None))
            .expect("issue");
        let error = info_of(&issued)
            .verify(ca.info(), SystemTime::now())
            .expect_err("foreign cert");
        assert!(
            matches!(error, CertError::WrongCa { .. }),
            "case {index}: {error}"
        );
    }
}

/// A certificate whose validity ended is reported expired (and one not yet valid as such).
#[test]
fn expired_certificate_is_reported_expired() {
    let ca = new_ca("test");
    let now = SystemTime::now();
    let mut expired = request(Role::Client, &[], Some("old"));
    expired.validity = Validity::between(now - 30 * DAY, now - DAY).expect("window");
    let error = info_of(&ca.issue(&expired).expect("issue"))
        .verify(ca.info(), now)
        .expect_err("expired");
    assert!(matches!(error, CertError::Expired { .. }), "{error}");
    assert!(error.to_string().contains("expired at"), "{error}");

    let mut future = request(Role::Client, &[], Some("later"));
    future.validity = Validity::between(now + DAY, now + 2 * DAY).expect("window");
    let error = info_of(&ca.issue(&future).expect("issue"))
        .verify(ca.info(), now)
        .expect_err("not yet valid");
    assert!(matches!(error, CertError::NotYetValid { .. }), "{error}");
}

/// Files: keys are 0600 and certificates 0644; existing files are not overwritten unless
/// asked; a CA written and loaded back signs certificates that verify against its file.
#[test]
fn files_have_modes_refuse_overwrite_and_load_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_dir = dir.path().join("certs");
    let ca = new_ca("files");
    let ca_paths = CertPaths::new(&certs_dir, CA_BASE_NAME);
    let ca_files = IssuedCert {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem(),
    };
    write_pair(&ca_paths, &ca_files, false).expect("write CA");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&ca_paths.key), KEY_FILE_MODE);
        assert_eq!(mode(&ca_paths.cert), CERT_FILE_MODE);
        assert_eq!(mode(&certs_dir), CERTS_DIR_MODE);
    }

    let other = new_ca("other");
    let other_files = IssuedCert {
        cert_pem: other.cert_pem().to_string(),
        key_pem: other.key_pem(),
    };
    let error = write_pair(&ca_paths, &other_files, false).expect_err("overwrite refused");
    assert!(matches!(error, CertError::AlreadyExists { .. }), "{error}");
    assert_eq!(
        read_text(&ca_paths.cert).expect("read"),
        ca.cert_pem(),
        "unchanged"
    );

    let loaded = CertificateAuthority::load(&ca_paths.cert, &ca_paths.key).expect("load CA");
    let node = loaded
        .issue(&request(Role::Node, &["localhost"], None))
        .expect("issue");
    let node_paths = CertPaths::new(&certs_dir, &leaf_base_name(Role::Node, None));
    write_pair(&node_paths, &node, false).expect("write node");
    let ca_info = read_certificate(&ca_paths.cert).expect("read CA");
    let node_info = read_certificate(&node_paths.cert).expect("read node");
    assert_eq!(
        node_info.verify(&ca_info, SystemTime::now()).expect("verify"),
        Role::Node
    );

    write_pair(&ca_paths, &other_files, true).expect("overwrite asked");
    let error = read_certificate(&node_paths.cert)
        .expect("read node")
        .verify(
            &read_certificate(&ca_paths.cert).expect("read CA"),
            SystemTime::now(),
        )
        .expect_err("the CA changed");
    assert!(matches!(error, CertError::WrongCa { .. }), "{error}");
}

/// Every bad input gets its own error.
#[test]
fn bad_inputs_get_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca("bad");
    let missing = dir.path().join("missing.crt");
    assert!(matches!(read_certificate(&missing), Err(CertError::Read { .. })));

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "hello").expect("write");
    assert!(matches!(
        read_certificate(&garbage),
        Err(CertError::NotPem { .. })
    ));

    let key_as_cert = dir.path().join("key.crt");
    std::fs::write(&key_as_cert, ca.key_pem()).expect("write");
    let error = read_certificate(&key_as_cert).expect_err("a key is not a certificate");
    assert!(
        matches!(error, CertError::NotPem { .. }) && error.to_string().contains("PRIVATE KEY"),
        "{error}"
    );

    let bad_der = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
    let error =
        CertInfo::from_der(&parse_certificate_pem(bad_der, "x").expect("pem"), "x").expect_err("bad der");
    assert!(matches!(error, CertError::NotCertificate { .. }), "{error}");

    let other = new_ca("bad");
    let error = CertificateAuthority::from_pem(ca.cert_pem(), &other.key_pem())
        .err()
        .expect("mismatch");
    assert!(matches!(error, CertError::CaKeyMismatch { .. }), "{error}");
    let error = CertificateAuthority::from_pem(ca.cert_pem(), "not a key")
        .err()
        .expect("bad key");
    assert!(matches!(error, CertError::BadKey { .. }), "{error}");
    let node = ca
        .issue(&request(Role::Node, &["127.0.0.1"], None))
        .expect("issue");
    let error = CertificateAuthority::from_pem(&node.cert_pem, &node.key_pem)
        .err()
        .expect("not a CA");
    assert!(matches!(error, CertError::NotCa { .. }), "{error}");

    let cases: Vec<(LeafRequest, ErrorCheck)> = vec![
        (request(Role::Node, &[], None), |e| {
            matches!(e, CertError::NoHosts { .. })
        }),
        (request(Role::Router, &["bad host"], None), |e| {
            matches!(e, CertError::InvalidHost { .. })
        }),
        (request(Role::Node, &["-x.example"], None), |e| {
            matches!(e, CertError::InvalidHost { .. })
        }),
        (request(Role::Client, &["127.0.0.1"], Some("ada")), |e| {
            matches!(e, CertError::HostsOnClient)
        }),
        (request(Role::Client, &[], None), |e| {
            matches!(e, CertError::InvalidUser { .. })
        }),
        (request(Role::Client, &[], Some("../root")), |e| {
            matches!(e, CertError::InvalidUser { .. })
        }),
        (request(Role::Client, &[], Some(&"a".repeat(65))), |e| {
            matches!(e, CertError::InvalidUser { .. })
        }),
    ];
    for (index, (leaf, expected)) in cases.into_iter().enumerate() {
        let error = ca.issue(&leaf).expect_err("bad request");
        assert!(expected(&error), "case {index}: {error}");
    }

    let mut too_long = request(Role::Node, &["127.0.0.1"], None);
    too_long.validity = Validity::days_from_now(DEFAULT_CA_LIFETIME_DAYS + 1).expect("validity");
    assert!(matches!(ca.issue(&too_long), Err(CertError::OutlivesCa { .. })));
    assert!(matches!(
        Validity::days_from_now(0),
        Err(CertError::InvalidValidity { .. })
    ));
    let error = CertificateAuthority::create("", Validity::days_from_now(1).expect("validity"))
        .err()
        .expect("name");
    assert!(matches!(error, CertError::InvalidClusterName { .. }), "{error}");
}

/// The dialling side follows its files: after the client's files are replaced, new
/// connections present the new certificate (and a server certificate of the CA is
/// checked on each).
#[tokio::test]
async fn dialled_connections_present_the_rotated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca("dial");
    let ca_paths = CertPaths::new(dir.path(), CA_BASE_NAME);
    let ca_files = IssuedCert {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem(),
    };
    write_pair(&ca_paths, &ca_files, false).expect("write CA");
    let node_paths = CertPaths::new(dir.path(), "node");
    let router_paths = CertPaths::new(dir.path(), "router");
    let issue = |role| ca.issue(&request(role, &["127.0.0.1"], None)).expect("issue");
    write_pair(&node_paths, &issue(Role::Node), false).expect("write node");
    let first = issue(Role::Router);
    write_pair(&router_paths, &first, false).expect("write router");
    let files = |paths: &CertPaths| TlsFiles {
        ca: ca_paths.cert.clone(),
        cert: paths.cert.clone(),
        key: paths.key.clone(),
    };
    let server = ReloadingIdentity::load(files(&node_paths), Role::Node).expect("server identity");
    let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config().expect("server config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    // The server answers each connection with the serial of the client certificate it saw.
    let (seen, mut serials) = tokio::sync::mpsc::channel::<String>(16);
    let accepting = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(connection) = acceptor.accept(stream).await else {
                continue;
            };
            let der = connection
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first().cloned());
            let serial = der.map(|der| CertInfo::from_der(der.as_ref(), "peer").expect("parse").serial);
            if seen.send(serial.unwrap_or_default()).await.is_err() {
                return;
            }
        }
    });
    let client = ReloadingIdentity::load(files(&router_paths), Role::Router).expect("client identity");
    let config = client.client_config().expect("client config");
    let serial_of = |issued: &IssuedCert| info_of(issued).serial;
    connect(config.clone(), &addr).await.expect("connect");
    assert_eq!(serials.recv().await, Some(serial_of(&first)));

    let second = issue(Role::Router);
    write_pair(&router_paths, &second, true).expect("rotate router");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        connect(config.clone(), &addr).await.expect("connect");
        if serials.recv().await == Some(serial_of(&second)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated certificate was never presented"
        );
        // Files are looked at at most once per RELOAD_CHECK_INTERVAL: poll a few times per interval.
        tokio::time::sleep(RELOAD_CHECK_INTERVAL / 4).await;
    }
    // A server presenting another CA's certificate is refused by the dialler.
    let other = new_ca("other");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_ca = CertPaths::new(other_dir.path(), CA_BASE_NAME);
    let other_ca_files = IssuedCert {
        cert_pem: other.cert_pem().to_string(),
        key_pem: other.key_pem(),
    };
    write_pair(&other_ca, &other_ca_files, false).expect("write other CA");
    let stranger_paths = CertPaths::new(other_dir.path(), "node");
    let stranger = other
        .issue(&request(Role::Node, &["127.0.0.1"], None))
        .expect("issue");
    write_pair(&stranger_paths, &stranger, false).expect("write stranger");
    let stranger_server = ReloadingIdentity::load(
        TlsFiles {
            ca: other_ca.cert.clone(),
            cert: stranger_paths.cert.clone(),
            key: stranger_paths.key.clone(),
        },
        Role::Node,
    )
    .expect("stranger identity");
    let stranger_acceptor =
        tokio_rustls::TlsAcceptor::from(stranger_server.server_config().expect("stranger config"));
    let stranger_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stranger_addr = stranger_listener.local_addr().expect("addr").to_string();
    let stranger_task = tokio::spawn(async move {
        if let Ok((stream, _)) = stranger_listener.accept().await {
            let _ = stranger_acceptor.accept(stream).await;
        }
    });
    assert!(
        connect(config, &stranger_addr).await.is_err(),
        "a server of another CA is refused"
    );
    stranger_task.abort();
    accepting.abort();
}
