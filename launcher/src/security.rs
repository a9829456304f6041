//! Whether a launched cluster speaks mutual TLS, and its certificates when it does.
//!
//! [`Security::Insecure`] passes `--insecure` to nodes and routers (they refuse to start
//! without TLS otherwise) and clients connect over plain http: the default of the tests and
//! the benchmark (`ringkv-bench --security tls` for TLS); the fault-injection harness runs
//! TLS unless given `ringkv-jepsen run --security insecure`.
//! [`Security::Tls`] holds a [`ClusterCerts`]: a CA made for the cluster and, signed by it,
//! one node certificate (shared by the nodes; valid for loopback and the hosts given to
//! [`ClusterCerts::create_for_hosts`]), one router
//! certificate and one client certificate (user `root`), written with `ringkv-tls` into a
//! directory of the cluster; and the cluster's gossip key (`gossip.key`, `ringkv_gossip::key`),
//! passed to nodes and routers with `--gossip-key` so their gossip is authenticated.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use ringkv_client::ClientTls;
use ringkv_gossip::{GossipKeys, GOSSIP_KEY_FILE_NAME};
use ringkv_tls::{
    leaf_base_name, write_pair, CertPaths, CertificateAuthority, LeafRequest, Role, Validity, CA_BASE_NAME,
    DEFAULT_CA_LIFETIME_DAYS, DEFAULT_LEAF_LIFETIME_DAYS,
};

use crate::LaunchError;

/// The hosts node and router certificates are valid for: a launched cluster is local.
pub const LOCAL_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];
/// The user of the client certificate made for a cluster.
pub const CLIENT_USER: &str = "root";

/// How the processes of a cluster talk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// No TLS: nodes and routers get `--insecure`.
    Insecure,
    /// Mutual TLS with these certificates.
    Tls(ClusterCerts),
}

impl Security {
    /// The flags that make a node speak this way.
    pub fn node_args(&self) -> Vec<OsString> {
        match self {
            Security::Insecure => vec!["--insecure".into()],
            Security::Tls(certs) => certs.args(Role::Node),
        }
    }

    /// The flags that make a router speak this way.
    pub fn router_args(&self) -> Vec<OsString> {
        match self {
            Security::Insecure => vec!["--insecure".into()],
            Security::Tls(certs) => certs.args(Role::Router),
        }
    }

    /// The client TLS settings (the client certificate), None when insecure.
    pub fn client_tls(&self) -> Result<Option<ClientTls>, LaunchError> {
        match self {
            Security::Insecure => Ok(None),
            Security::Tls(certs) => certs.client_tls(Role::Client).map(Some),
        }
    }
}

/// A cluster's CA and its node, router and client certificates, in one directory
/// (`ca.crt`, `ca.key`, `node.crt`, `node.key`, `router.*`, `client.root.*`), and its gossip
/// key (`gossip.key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCerts {
    dir: PathBuf,
}

impl ClusterCerts {
    /// Creates a CA named `cluster_name`, the three leaf certificates and the gossip key in
    /// `dir` (made if missing; existing files are refused).
    pub fn create(dir: &Path, cluster_name: &str) -> Result<ClusterCerts, LaunchError> {
        ClusterCerts::create_for_hosts(dir, cluster_name, &[])
    }

    /// [`ClusterCerts::create`] with node and router certificates valid for `extra_hosts`
    /// (IP addresses or DNS names) besides [`LOCAL_HOSTS`]: for nodes listening outside
    /// loopback, e.g. in the fault-injection harness's network namespaces.
    pub fn create_for_hosts(
        dir: &Path,
        cluster_name: &str,
        extra_hosts: &[String],
    ) -> Result<ClusterCerts, LaunchError> {
        let failed = |err: ringkv_tls::CertError| LaunchError::Certificates(err.to_string());
        let ca = CertificateAuthority::create(
            cluster_name,
            Validity::days_from_now(DEFAULT_CA_LIFETIME_DAYS).map_err(failed)?,
        )
        .map_err(failed)?;
        let ca_issued = ringkv_tls::IssuedCert {
            cert_pem: ca.cert_pem().to_string(),
            key_pem: ca.key_pem(),
        };
        write_pair(&CertPaths::new(dir, CA_BASE_NAME), &ca_issued, false).map_err(failed)?;
        for role in Role::ALL {
            let (hosts, user) = match role {
                Role::Client => (Vec::new(), Some(CLIENT_USER.to_string())),
                Role::Node | Role::Router => (
                    LOCAL_HOSTS
                        .iter()
                        .map(|host| host.to_string())
                        .chain(extra_hosts.iter().cloned())
                        .collect(),
                    None,
                ),
            };
            let issued = ca
                .issue(&LeafRequest {
                    role,
                    hosts,
                    user,
                    validity: Validity::days_from_now(DEFAULT_LEAF_LIFETIME_DAYS).map_err(failed)?,
                })
                .map_err(failed)?;
            let certs = ClusterCerts {
                dir: dir.to_path_buf(),
            };
            write_pair(&certs.paths(role), &issued, false).map_err(failed)?;
        }
        GossipKeys::generate()
            .and_then(|keys| keys.write(&dir.join(GOSSIP_KEY_FILE_NAME), false))
            .map_err(|err| LaunchError::Certificates(err.to_string()))?;
        Ok(ClusterCerts {
            dir: dir.to_path_buf(),
        })
    }

    /// The certificates already in `dir` (as [`ClusterCerts::create`] left them).
    pub fn in_dir(dir: &Path) -> ClusterCerts {
        ClusterCerts {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> PathBuf {
        CertPaths::new(&self.dir, CA_BASE_NAME).cert
    }

    /// The CA's certificate and key paths (to issue more certificates).
    pub fn ca_paths(&self) -> CertPaths {
        CertPaths::new(&self.dir, CA_BASE_NAME)
    }

    /// The certificate and key of `role` (the client's: user [`CLIENT_USER`]).
    pub fn paths(&self, role: Role) -> CertPaths {
        let user = (role == Role::Client).then_some(CLIENT_USER);
        CertPaths::new(&self.dir, &leaf_base_name(role, user))
    }

    /// The cluster's gossip key file.
    pub fn gossip_key(&self) -> PathBuf {
        self.dir.join(GOSSIP_KEY_FILE_NAME)
    }

    /// `--ca <ca.crt> --cert <role.crt> --key <role.key>`, and for nodes and routers
    /// `--gossip-key <gossip.key>`.
    pub fn args(&self, role: Role) -> Vec<OsString> {
        let paths = self.paths(role);
        let mut args: Vec<OsString> = vec![
            "--ca".into(),
            self.ca().into(),
            "--cert".into(),
            paths.cert.into(),
            "--key".into(),
            paths.key.into(),
        ];
        if matches!(role, Role::Node | Role::Router) {
            args.extend(["--gossip-key".into(), self.gossip_key().into()]);
        }
        args
    }

    /// Client TLS settings presenting the certificate of `role` (a tool acting for a node
    /// or router presents theirs).
    pub fn client_tls(&self, role: Role) -> Result<ClientTls, LaunchError> {
        let paths = self.paths(role);
        ClientTls::from_files(&self.ca(), &paths.cert, &paths.key)
            .map_err(|err| LaunchError::Certificates(err.to_string()))
    }
}
