//! `kvctl cert`: the cluster CA and the certificates of nodes, routers and clients, as
//! `cockroach cert` makes them (the files, the roles and the checks live in `ringkv-tls`).
//!
//! Files go to `--certs-dir` (default `./certs`, relative like the playground's
//! `./playground-data`): `ca.crt`, `node.crt`/`node.key`, `router.crt`/`router.key`,
//! `client.<user>.crt`/`client.<user>.key`. The CA key is `<certs-dir>/ca.key` unless
//! `--ca-key` puts it elsewhere (keep it off the machines that only need `ca.crt`). Keys are
//! 0600; nothing is overwritten without `--overwrite`. `create-ca` also writes the cluster's
//! gossip key, `gossip.key` (0600, `ringkv_gossip::key`), which every node and router needs
//! (`--gossip-key`) to authenticate gossip.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use clap::{Args, Subcommand};
use ringkv_gossip::{GossipKeyError, GossipKeys, GOSSIP_KEY_FILE_NAME};
use ringkv_tls::{
    format_time, leaf_base_name, read_certificate, write_pair, CertError, CertInfo, CertPaths,
    CertificateAuthority, IssuedCert, LeafRequest, Role, Validity, CA_BASE_NAME, DEFAULT_CA_LIFETIME_DAYS,
    DEFAULT_LEAF_LIFETIME_DAYS, MAX_LIFETIME_DAYS,
};
use serde_json::{json, Value};

use crate::exit::{Outcome, UsageError};
use crate::output::{self, render_table, to_json, OutputFormat};

/// The default certificates directory.
const DEFAULT_CERTS_DIR: &str = "./certs";
/// The default cluster name in the CA's common name.
const DEFAULT_CLUSTER_NAME: &str = "default";

/// `kvctl cert ...`
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster CA: ca.crt in the certs directory, and its key (--ca-key); and the
    /// cluster's gossip key, gossip.key in the certs directory.
    CreateCa(CreateCaArgs),
    /// Create a node certificate (server and client auth) signed by the CA.
    CreateNode(CreateHostArgs),
    /// Create a router certificate (server and client auth) signed by the CA.
    CreateRouter(CreateHostArgs),
    /// Create a client certificate (client auth only) for a user (`--user NAME`, default
    /// root), signed by the CA.
    CreateClient(CreateClientArgs),
    /// Print what a certificate says: role, subject, SANs, validity, issuer.
    Show(ShowArgs),
}

/// Where the files go and how long certificates live.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Directory of the certificates and keys.
    #[arg(long, value_name = "DIR", env = "RINGKV_CERTS_DIR", default_value = DEFAULT_CERTS_DIR)]
    pub certs_dir: PathBuf,
    /// The CA's private key [default: ca.key in the certs directory].
    #[arg(long, value_name = "PATH")]
    pub ca_key: Option<PathBuf>,
    /// Validity in days [default: 3650 for the CA, 365 for the others].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIFETIME_DAYS)))]
    pub lifetime_days: Option<u32>,
    /// Replace existing files instead of refusing.
    #[arg(long)]
    pub overwrite: bool,
}

impl CommonArgs {
    fn ca_cert_path(&self) -> PathBuf {
        CertPaths::new(&self.certs_dir, CA_BASE_NAME).cert
    }

    fn ca_key_path(&self) -> PathBuf {
        self.ca_key
            .clone()
            .unwrap_or_else(|| CertPaths::new(&self.certs_dir, CA_BASE_NAME).key)
    }

    fn validity(&self, default_days: u32) -> anyhow::Result<Validity> {
        Validity::days_from_now(self.lifetime_days.unwrap_or(default_days)).map_err(cert_error)
    }

    fn load_ca(&self) -> anyhow::Result<CertificateAuthority> {
        let (cert, key) = (self.ca_cert_path(), self.ca_key_path());
        CertificateAuthority::load(&cert, &key)
            .map_err(cert_error)
            .with_context(|| {
                format!(
                    "loading the CA {} with key {} (create it with `kvctl cert create-ca`)",
                    cert.display(),
                    key.display()
                )
            })
    }
}

/// Arguments of `kvctl cert create-ca`.
#[derive(Args, Debug)]
pub struct CreateCaArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The cluster's name, in the CA's common name `ringkv CA <name>`.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CLUSTER_NAME)]
    pub cluster_name: String,
}

/// Arguments of `kvctl cert create-node` and `create-router`.
#[derive(Args, Debug)]
pub struct CreateHostArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A DNS name or IP address peers dial (repeat for each).
    #[arg(long = "host", value_name = "NAME_OR_IP", required = true)]
    pub hosts: Vec<String>,
}

/// Arguments of `kvctl cert create-client`.
#[derive(Args, Debug)]
pub struct CreateClientArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    // The user is kvctl's global `--user NAME` (also `RINGKV_USER`; default `root`): letters,
    // digits, '.', '_', '-'; the certificate's identity for permissions (a SAN URI
    // `ringkv://user/<name>`, and the common name), and the file names
    // `client.<user>.crt` / `.key`. `root` may do everything. (A flag of its own would clash
    // with the global one, which clap refuses.)
}

/// Arguments of `kvctl cert show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The certificate file (PEM).
    pub file: PathBuf,
    /// Also check that this CA certificate signed it, and that it is valid now and has a
    /// role (exit 1 if not).
    #[arg(long, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
}

/// Runs `kvctl cert ...`; `user` is the global `--user` (the user of `create-client`).
pub fn run(command: CertCommand, user: Option<String>, format: OutputFormat) -> anyhow::Result<Outcome> {
    match command {
        CertCommand::CreateCa(args) => create_ca(args, format),
        CertCommand::CreateNode(args) => create_leaf(&args.common, Role::Node, args.hosts, None, format),
        CertCommand::CreateRouter(args) => create_leaf(&args.common, Role::Router, args.hosts, None, format),
        CertCommand::CreateClient(args) => create_leaf(
            &args.common,
            Role::Client,
            Vec::new(),
            Some(user.unwrap_or_else(|| "root".to_string())),
            format,
        ),
        CertCommand::Show(args) => show(args, format),
    }
}

fn create_ca(args: CreateCaArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let validity = args.common.validity(DEFAULT_CA_LIFETIME_DAYS)?;
    let ca = CertificateAuthority::create(&args.cluster_name, validity).map_err(cert_error)?;
    let paths = CertPaths {
        cert: args.common.ca_cert_path(),
        key: args.common.ca_key_path(),
    };
    let issued = IssuedCert {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: ca.key_pem(),
    };
    let gossip_key_path = args.common.certs_dir.join(GOSSIP_KEY_FILE_NAME);
    let gossip_keys = GossipKeys::generate().map_err(gossip_key_error)?;
    // Refused before anything is written, like the CA's own files.
    if !args.common.overwrite && gossip_key_path.symlink_metadata().is_ok() {
        return Err(gossip_key_error(GossipKeyError::AlreadyExists {
            path: gossip_key_path,
        }));
    }
    write_pair(&paths, &issued, args.common.overwrite).map_err(cert_error)?;
    gossip_keys
        .write(&gossip_key_path, args.common.overwrite)
        .map_err(gossip_key_error)?;
    output::emit(&render_created(
        "CA",
        &paths,
        ca.info(),
        Some(&gossip_key_path),
        format,
    ))?;
    Ok(Outcome::Success)
}

fn create_leaf(
    common: &CommonArgs,
    role: Role,
    hosts: Vec<String>,
    user: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let request = LeafRequest {
        role,
        hosts,
        user,
        validity: common.validity(DEFAULT_LEAF_LIFETIME_DAYS)?,
    };
    let ca = common.load_ca()?;
    let issued = ca.issue(&request).map_err(cert_error)?;
    let paths = CertPaths::new(&common.certs_dir, &leaf_base_name(role, request.user.as_deref()));
    write_pair(&paths, &issued, common.overwrite).map_err(cert_error)?;
    let info = read_certificate(&paths.cert).map_err(cert_error)?;
    output::emit(&render_created(role.name(), &paths, &info, None, format))?;
    Ok(Outcome::Success)
}

fn show(args: ShowArgs, format: OutputFormat) -> anyhow::Result<Outcome> {
    let info = read_certificate(&args.file).map_err(cert_error)?;
    let verified = match &args.ca_cert {
        None => None,
        Some(ca_path) => {
            let ca = read_certificate(ca_path).map_err(cert_error)?;
            let role = info
                .verify(&ca, SystemTime::now())
                .map_err(cert_error)
                .with_context(|| format!("checking {} against {}", args.file.display(), ca_path.display()))?;
            Some((role, ca.subject))
        }
    };
    output::emit(&render_show(&info, verified.as_ref(), SystemTime::now(), format))?;
    Ok(Outcome::Success)
}

/// A certificate error as kvctl reports it: bad flags are usage errors (exit 64), anything
/// else (a file exists, a file is missing or not a certificate, a check failed) exits 1.
fn gossip_key_error(error: GossipKeyError) -> anyhow::Error {
    match error {
        GossipKeyError::AlreadyExists { .. } => anyhow::anyhow!("{error} (pass --overwrite to replace it)"),
        other => other.into(),
    }
}

fn cert_error(error: CertError) -> anyhow::Error {
    match error {
        CertError::InvalidHost { .. }
        | CertError::NoHosts { .. }
        | CertError::HostsOnClient
        | CertError::InvalidUser { .. }
        | CertError::InvalidClusterName { .. }
        | CertError::InvalidValidity { .. }
        | CertError::OutlivesCa { .. } => UsageError(error.to_string()).into(),
        CertError::AlreadyExists { .. } => anyhow::anyhow!("{error} (pass --overwrite to replace it)"),
        other => other.into(),
    }
}

/// The files written and what they hold.
/// What a `create-*` command prints: the files it wrote (`gossip_key`: `create-ca`'s).
fn render_created(
    kind: &str,
    paths: &CertPaths,
    info: &CertInfo,
    gossip_key: Option<&Path>,
    format: OutputFormat,
) -> String {
    match format {
        OutputFormat::Table => {
            let mut rows = vec![
                vec![
                    paths.cert.display().to_string(),
                    format!(
                        "{kind} certificate, {}, until {}",
                        info.subject,
                        format_time(info.not_after)
                    ),
                ],
                vec![
                    paths.key.display().to_string(),
                    format!("{kind} private key (mode 0600)"),
                ],
            ];
            if let Some(path) = gossip_key {
                rows.push(vec![
                    path.display().to_string(),
                    "cluster gossip key (mode 0600; every node and router: --gossip-key)".to_string(),
                ]);
            }
            render_table(&["FILE", "CONTENT"], rows, &[])
        }
        OutputFormat::Json => {
            let mut created = json!({
                "kind": kind,
                "certificate": paths.cert.display().to_string(),
                "key": paths.key.display().to_string(),
                "subject": info.subject,
                "sans": sans(info),
                "not_after": format_time(info.not_after),
            });
            if let Some(path) = gossip_key {
                created["gossip_key"] = json!(path.display().to_string());
            }
            to_json(&created)
        }
    }
}

/// What `show` prints: role, subject, SANs, validity and its status at `now`, issuer.
fn render_show(
    info: &CertInfo,
    verified: Option<&(Role, String)>,
    now: SystemTime,
    format: OutputFormat,
) -> String {
    let role = match info.role() {
        Ok(role) => role.name().to_string(),
        Err(CertError::NoRole { .. }) if info.is_ca => "none (CA certificate)".to_string(),
        Err(CertError::NoRole { .. }) => "none".to_string(),
        Err(other) => format!("invalid: {other}"),
    };
    let status = match info.check_valid_at(now) {
        Ok(()) => "valid".to_string(),
        Err(CertError::Expired { .. }) => "expired".to_string(),
        Err(CertError::NotYetValid { .. }) => "not yet valid".to_string(),
        Err(other) => other.to_string(),
    };
    let sans = sans(info);
    match format {
        OutputFormat::Table => {
            let mut rows = vec![
                vec!["role".to_string(), role],
                vec!["subject".to_string(), info.subject.clone()],
                vec![
                    "sans".to_string(),
                    if sans.is_empty() {
                        "-".to_string()
                    } else {
                        sans.join(", ")
                    },
                ],
                vec!["not before".to_string(), format_time(info.not_before)],
                vec!["not after".to_string(), format_time(info.not_after)],
                vec!["status".to_string(), status],
                vec!["issuer".to_string(), info.issuer.clone()],
                vec!["serial".to_string(), info.serial.clone()],
            ];
            if let Some((_, ca_subject)) = verified {
                rows.push(vec!["verified".to_string(), format!("signed by {ca_subject}")]);
            }
            render_table(&["FIELD", "VALUE"], rows, &[])
        }
        OutputFormat::Json => {
            let mut object = json!({
                "role": info.role().ok().map(Role::name),
                "is_ca": info.is_ca,
                "subject": info.subject,
                "sans": sans,
                "dns_names": info.dns_names,
                "ip_addresses": info.ip_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "uris": info.uris,
                "not_before": format_time(info.not_before),
                "not_after": format_time(info.not_after),
                "status": status,
                "issuer": info.issuer,
                "serial": info.serial,
            });
            if let (Some((_, ca_subject)), Value::Object(map)) = (verified, &mut object) {
                map.insert("verified_by".to_string(), Value::String(ca_subject.clone()));
            }
            to_json(&object)
        }
    }
}

/// The SANs as `DNS:name`, `IP:address`, `URI:uri`.
fn sans(info: &CertInfo) -> Vec<String> {
    let dns = info.dns_names.iter().map(|name| format!("DNS:{name}"));
    let ips = info.ip_addresses.iter().map(|address| format!("IP:{address}"));
    let uris = info.uris.iter().map(|uri| format!("URI:{uri}"));
    dns.chain(ips).chain(uris).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA key defaults to `<certs-dir>/ca.key`; --ca-key moves it.
    #[test]
    fn ca_key_defaults_to_the_certs_dir() {
        let mut common = CommonArgs {
            certs_dir: PathBuf::from("/tmp/c"),
            ca_key: None,
            lifetime_days: None,
            overwrite: false,
        };
        assert_eq!(common.ca_key_path(), PathBuf::from("/tmp/c/ca.key"));
        common.ca_key = Some(PathBuf::from("/safe/ca.key"));
        assert_eq!(common.ca_key_path(), PathBuf::from("/safe/ca.key"));
    }
}
