//! `kvctl role`, `kvctl user` and `kvctl auth` (issue 15): the permission table.
//!
//! A user is who a client certificate names (`kvctl cert create-client --user NAME`), or who
//! logs in with a password (`--user NAME`, a token from `Auth.Login`, which overrides the
//! certificate's user); a role grants read, write or admin on key prefixes; `root` may do
//! everything. Every command needs admin (before `kvctl auth enable`, every certificate acts
//! as root), but `auth token` and `user passwd` without a name (a user changing its own
//! password with its current one, `Auth.ChangePassword`).
//!
//! Passwords are typed at the terminal (echo off) or read as one line from stdin, never
//! taken from the command line (`credentials.rs`).

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use ringkv_client::Client;
use ringkv_proto::v1 as proto;
use ringkv_proto::v1::change_auth_request::Change;
use serde_json::{json, Value};

use crate::exit::Outcome;
use crate::output::{self, display_bytes, render_table, to_json, OutputFormat};

/// `kvctl role ...`
#[derive(Subcommand, Debug)]
pub enum RoleCommand {
    /// Create a role without grants.
    Add(NameArgs),
    /// Delete a role (and take it from every user who has it).
    #[command(alias = "delete")]
    Del(NameArgs),
    /// Grant a permission on a key prefix ("" for every key) to a role.
    Grant(GrantArgs),
    /// Remove a role's grant on a key prefix.
    Revoke(RevokeArgs),
    /// List the roles and their grants.
    List,
}

/// `kvctl user ...`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user (the name its client certificate carries) with roles.
    Add(UserAddArgs),
    /// Delete a user (its tokens stop working at once).
    #[command(alias = "delete")]
    Del(NameArgs),
    /// Set a user's (or root's) password (admin), or without NAME your own (the --user's,
    /// whose current password --password, RINGKV_PASSWORD or the prompt gives; no admin
    /// needed). The new one is typed at the terminal, or one line of stdin. Tokens issued
    /// before stay valid until they expire.
    Passwd(PasswdArgs),
    /// List the users and their roles.
    List,
    /// Give a user a role.
    GrantRole(UserRoleArgs),
    /// Take a role from a user.
    RevokeRole(UserRoleArgs),
}

/// `kvctl auth ...`
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Start enforcing permissions (until then every certificate acts as root). Make sure
    /// you hold a root certificate (`kvctl cert create-client`, user root by default).
    Enable,
    /// Whether permissions are enforced, who you are taken for, and how many roles and users.
    Status,
    /// Log in (--user, with --password or at the prompt) and print a token for scripts:
    /// `RINGKV_TOKEN=$(kvctl --user alice auth token) kvctl get k`.
    Token,
    /// Replace the key tokens are signed with: every token issued so far stops working.
    RotateKey,
    /// How long new tokens stay valid, in milliseconds (default 300000, 1000 to 86400000).
    TokenTtl(TokenTtlArgs),
}

#[derive(Args, Debug)]
pub struct TokenTtlArgs {
    /// Milliseconds.
    pub ms: u64,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// The role or user name.
    pub name: String,
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// The user whose password an admin sets; none: your own (--user's).
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    /// The role.
    pub role: String,
    /// What it may do.
    pub permission: PermissionArg,
    /// The key prefix ("" for every key).
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The role.
    pub role: String,
    /// The key prefix of the grant to remove.
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// The user name (as its client certificate names it).
    pub name: String,
    /// A role to give it (repeat for more).
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Give it a password too (typed at the terminal, or one line of stdin), so it can log
    /// in with `--user` without a certificate of its own.
    #[arg(long)]
    pub set_password: bool,
}

#[derive(Args, Debug)]
pub struct UserRoleArgs {
    /// The user.
    pub user: String,
    /// The role.
    pub role: String,
}

/// A permission as typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PermissionArg {
    /// Get, batch get, scan, count.
    Read,
    /// Put, delete, compare-and-swap, batch writes, delete-range, transactions; implies read.
    Write,
    /// Implies write; on "" also admin operations and permissions.
    Admin,
}

impl PermissionArg {
    fn to_proto(self) -> proto::Permission {
        match self {
            PermissionArg::Read => proto::Permission::Read,
            PermissionArg::Write => proto::Permission::Write,
            PermissionArg::Admin => proto::Permission::Admin,
        }
    }
}

fn permission_name(permission: i32) -> &'static str {
    match proto::Permission::try_from(permission) {
        Ok(proto::Permission::Read) => "read",
        Ok(proto::Permission::Write) => "write",
        Ok(proto::Permission::Admin) => "admin",
        _ => "unknown",
    }
}

async fn change(
    client: &Client,
    change: Change,
    what: &str,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    client
        .change_auth(change)
        .await
        .with_context(|| what.to_string())?;
    let text = match format {
        OutputFormat::Table => format!("{what}: done"),
        OutputFormat::Json => to_json(&json!({ "done": what })),
    };
    output::emit(&text)?;
    Ok(Outcome::Success)
}

async fn table(client: &Client) -> anyhow::Result<(proto::AuthTable, String)> {
    let response = client.get_auth().await.context("reading permissions")?;
    Ok((response.table.unwrap_or_default(), response.caller))
}

/// Runs `kvctl role ...`.
pub async fn role(client: &Client, command: RoleCommand, format: OutputFormat) -> anyhow::Result<Outcome> {
    match command {
        RoleCommand::Add(args) => {
            let what = format!("adding role {}", args.name);
            change(client, Change::AddRole(args.name), &what, format).await
        }
        RoleCommand::Del(args) => {
            let what = format!("deleting role {}", args.name);
            change(client, Change::DeleteRole(args.name), &what, format).await
        }
        RoleCommand::Grant(args) => {
            let what = format!(
                "granting {} on prefix {:?} to role {}",
                permission_name(args.permission.to_proto() as i32),
                args.prefix,
                args.role
            );
            let grant = proto::RoleGrant {
                role: args.role,
                grant: Some(proto::Grant {
                    prefix: args.prefix.into_bytes(),
                    permission: args.permission.to_proto() as i32,
                }),
            };
            change(client, Change::Grant(grant), &what, format).await
        }
        RoleCommand::Revoke(args) => {
            let what = format!("revoking role {}'s grant on prefix {:?}", args.role, args.prefix);
            let revoke = proto::RoleGrant {
                role: args.role,
                grant: Some(proto::Grant {
                    prefix: args.prefix.into_bytes(),
                    permission: 0,
                }),
            };
            change(client, Change::Revoke(revoke), &what, format).await
        }
        RoleCommand::List => {
            let (table, _) = table(client).await?;
            let text = match format {
                OutputFormat::Table => {
                    let rows = table
                        .roles
                        .iter()
                        .flat_map(|role| {
                            let grants: Vec<Vec<String>> = role
                                .grants
                                .iter()
                                .map(|grant| {
                                    vec![
                                        role.name.clone(),
                                        permission_name(grant.permission).to_string(),
                                        format!("{:?}", display_bytes(&grant.prefix)),
                                    ]
                                })
                                .collect();
                            if grants.is_empty() {
                                vec![vec![role.name.clone(), "-".into(), "-".into()]]
                            } else {
                                grants
                            }
                        })
                        .collect();
                    render_table(&["role", "permission", "prefix"], rows, &[])
                }
                OutputFormat::Json => to_json(&Value::Array(
                    table
                        .roles
                        .iter()
                        .map(|role| {
                            json!({
                                "role": role.name,
                                "grants": role.grants.iter().map(|grant| json!({
                                    "permission": permission_name(grant.permission),
                                    "prefix": display_bytes(&grant.prefix),
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect(),
                )),
            };
            output::emit(&text)?;
            Ok(Outcome::Success)
        }
    }
}

/// Runs `kvctl user ...`; `login` is the `--user` and its password, if given (`user passwd`
/// without a name changes that user's own password).
pub async fn user(
    client: &Client,
    command: UserCommand,
    login: Option<(&str, &str)>,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    match command {
        UserCommand::Add(args) => {
            let what = format!("adding user {}", args.name);
            let password = match args.set_password {
                true => Some(crate::credentials::read_new_password(&args.name)?),
                false => None,
            };
            let user = proto::AuthUser {
                name: args.name.clone(),
                roles: args.roles,
                has_password: false,
            };
            let Some(password) = password else {
                return change(client, Change::AddUser(user), &what, format).await;
            };
            client.change_auth(Change::AddUser(user)).await.context(what)?;
            set_password(client, args.name, password, format).await
        }
        UserCommand::Passwd(PasswdArgs { name: Some(name) }) => {
            let password = crate::credentials::read_new_password(&name)?;
            set_password(client, name, password, format).await
        }
        UserCommand::Passwd(PasswdArgs { name: None }) => {
            let Some((user, old_password)) = login else {
                return Err(crate::exit::UsageError(
                    "user passwd without a NAME changes your own password: give --user (and its \
                     current password with --password, RINGKV_PASSWORD or at the prompt); an \
                     admin sets another user's with `user passwd NAME`"
                        .into(),
                )
                .into());
            };
            let password = crate::credentials::read_new_password(user)?;
            let what = format!("changing the password of {user}");
            client
                .change_password(user, old_password, &password)
                .await
                .with_context(|| what.clone())?;
            let text = match format {
                OutputFormat::Table => format!("{what}: done"),
                OutputFormat::Json => to_json(&json!({ "done": what })),
            };
            output::emit(&text)?;
            Ok(Outcome::Success)
        }
        UserCommand::Del(args) => {
            let what = format!("deleting user {}", args.name);
            change(client, Change::DeleteUser(args.name), &what, format).await
        }
        UserCommand::GrantRole(args) => {
            let what = format!("giving user {} role {}", args.user, args.role);
            let binding = proto::UserRole {
                user: args.user,
                role: args.role,
            };
            change(client, Change::GrantRole(binding), &what, format).await
        }
        UserCommand::RevokeRole(args) => {
            let what = format!("taking role {} from user {}", args.role, args.user);
            let binding = proto::UserRole {
                user: args.user,
                role: args.role,
            };
            change(client, Change::RevokeRole(binding), &what, format).await
        }
        UserCommand::List => {
            let (table, _) = table(client).await?;
            let text = match format {
                OutputFormat::Table => {
                    let yes_no = |yes: bool| if yes { "yes" } else { "no" }.to_string();
                    let mut rows = vec![vec![
                        "root".to_string(),
                        "(everything)".to_string(),
                        yes_no(table.root_has_password),
                    ]];
                    rows.extend(table.users.iter().map(|user| {
                        vec![user.name.clone(), user.roles.join(", "), yes_no(user.has_password)]
                    }));
                    render_table(&["user", "roles", "password"], rows, &[])
                }
                OutputFormat::Json => to_json(&Value::Array(
                    table
                        .users
                        .iter()
                        .map(|user| json!({ "user": user.name, "roles": user.roles, "password": user.has_password }))
                        .collect(),
                )),
            };
            output::emit(&text)?;
            Ok(Outcome::Success)
        }
    }
}

/// Sets `user`'s password (the node hashes it; the plaintext goes over TLS only).
async fn set_password(
    client: &Client,
    user: String,
    password: String,
    format: OutputFormat,
) -> anyhow::Result<Outcome> {
    let what = format!("setting the password of {user}");
    let change_request = Change::SetPassword(proto::UserPassword { user, password });
    change(client, change_request, &what, format).await
}

/// Runs `kvctl auth ...`.
pub async fn auth(client: &Client, command: AuthCommand, format: OutputFormat) -> anyhow::Result<Outcome> {
    match command {
        AuthCommand::Enable => change(client, Change::Enable(true), "enabling permissions", format).await,
        AuthCommand::RotateKey => {
            change(
                client,
                Change::RotateTokenKey(true),
                "rotating the token key",
                format,
            )
            .await
        }
        AuthCommand::TokenTtl(args) => {
            let what = format!("setting the token lifetime to {} ms", args.ms);
            change(client, Change::SetTokenTtlMs(args.ms), &what, format).await
        }
        AuthCommand::Token => {
            let Some((token, _expiry)) = client.token().await.context("logging in")? else {
                return Err(crate::exit::UsageError(
                    "auth token needs --user (with --password, RINGKV_PASSWORD or the prompt)".into(),
                )
                .into());
            };
            output::emit(&token)?;
            Ok(Outcome::Success)
        }
        AuthCommand::Status => {
            let (table, caller) = table(client).await?;
            let text = match format {
                OutputFormat::Table => render_table(
                    &["enabled", "you", "roles", "users"],
                    vec![vec![
                        table.enabled.to_string(),
                        caller,
                        table.roles.len().to_string(),
                        table.users.len().to_string(),
                    ]],
                    &[2, 3],
                ),
                OutputFormat::Json => to_json(&json!({
                    "enabled": table.enabled,
                    "you": caller,
                    "roles": table.roles.len(),
                    "users": table.users.len(),
                })),
            };
            output::emit(&text)?;
            Ok(Outcome::Success)
        }
    }
}
