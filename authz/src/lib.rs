//! ringkv permissions (issue 15): who may read, write or administer which keys.
//!
//! etcd's model. A role grants [`Permission::Read`], [`Permission::Write`] (which implies
//! read) or [`Permission::Admin`] (which implies both) on key prefixes (`""` is every key);
//! a user has roles; the user [`ROOT_USER`] may do everything. Until the table is
//! [enabled](AuthTable::enabled) every authenticated caller acts as root (etcd's default),
//! so a new cluster can be set up before anyone holds a role.
//!
//! A user is who a client certificate names (`ringkv://user/<name>`, see `ringkv-tls`), or
//! who a token names: a user with a password ([`password`], hashed, kept in the table) logs
//! in for a short-lived token ([`token`]), signed with a key also kept in the table so every
//! router and node checks it on its own; failed logins make the next attempts wait
//! ([`throttle`], counted in each router and node).
//!
//! This crate is the pure part, shared by the router and the node (the router must not
//! depend on the node): the [`AuthTable`], the changes the system group commits
//! ([`AuthChange`], applied by [`AuthTable::apply`] on every node, deterministically) and the
//! one check both make, [`AuthTable::check`] for an [`Access`]: a key, a key range (allowed
//! only if it lies within the granted prefixes, taken together) or the cluster (admin
//! operations: admin on `""`). No IO, no gRPC: the callers map [`Denied`] to
//! `PERMISSION_DENIED`.
//!
//! The table is stored with postcard in the system group's state machine: new enum variants
//! go at the end, and fields are never reordered. The stored form ([`AuthTable::to_stored`])
//! starts with a format byte since passwords and tokens came; tables stored before it
//! (three fields, starting with the `enabled` byte 0 or 1) still decode.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod password;
pub mod throttle;
pub mod token;

pub use token::TokenKey;

/// The user who may do everything, always (it needs no role and cannot be removed).
pub const ROOT_USER: &str = "root";
/// Most roles a table holds.
pub const MAX_ROLES: usize = 1024;
/// Most users a table holds.
pub const MAX_USERS: usize = 16_384;
/// Most grants one role holds.
pub const MAX_GRANTS_PER_ROLE: usize = 256;
/// Most roles one user holds.
pub const MAX_ROLES_PER_USER: usize = 64;
/// Longest granted prefix, in bytes (the longest key the router accepts).
pub const MAX_PREFIX_BYTES: usize = 4096;
/// Longest role or user name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// How long a token is valid unless the table says otherwise ([`AuthTable::token_ttl_ms`]).
pub const DEFAULT_TOKEN_TTL_MS: u64 = 5 * 60 * 1000;
/// Shortest token lifetime a table may set.
pub const MIN_TOKEN_TTL_MS: u64 = 1000;
/// Longest token lifetime a table may set (a day).
pub const MAX_TOKEN_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// The first byte of the stored form of a table with passwords and tokens (older tables
/// start with 0 or 1, their `enabled`).
const STORED_FORMAT_V2: u8 = 2;

/// What a grant allows; each level implies the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Get, batch get, scan, count.
    Read,
    /// Put, delete, compare-and-swap, batch writes, delete-range, transactions (and read).
    Write,
    /// Write, and on `""`: the cluster's admin operations and the permission table itself.
    Admin,
}

impl Permission {
    /// Every permission, weakest first.
    pub const ALL: [Permission; 3] = [Permission::Read, Permission::Write, Permission::Admin];

    /// The lowercase name: `read`, `write`, `admin`.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }

    /// The permission named `name`.
    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL
            .into_iter()
            .find(|permission| permission.name() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One grant of a role: a permission on every key starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The key prefix (`""`: every key).
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
    /// What it allows there.
    pub permission: Permission,
}

/// The permission table: roles, users and whether it is enforced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthTable {
    /// Whether permissions are enforced; until then every caller acts as root.
    pub enabled: bool,
    /// Each role's grants, at most one per prefix, sorted by prefix.
    pub roles: BTreeMap<String, Vec<Grant>>,
    /// Each user's roles ([`ROOT_USER`] is never listed: it needs none).
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// The password hash of each user who has one ([`ROOT_USER`] may have one too).
    pub passwords: BTreeMap<String, PasswordHash>,
    /// The key tokens are signed with (none until the first login).
    pub token_key: Option<TokenKey>,
    /// How long a new token is valid, in ms (0: [`DEFAULT_TOKEN_TTL_MS`]).
    pub token_ttl_ms: u64,
}

/// A password hash as stored ([`password::hash_password`]); never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// The table as stored before passwords and tokens (decoded from old trees and snapshots).
#[derive(Deserialize)]
struct AuthTableV1 {
    enabled: bool,
    roles: BTreeMap<String, Vec<Grant>>,
    users: BTreeMap<String, BTreeSet<String>>,
}

/// A change of the permission table, committed in the system group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthChange {
    /// A new role without grants.
    AddRole { role: String },
    /// Remove a role, and take it from every user who has it.
    DeleteRole { role: String },
    /// Grant (or replace the grant of the same prefix).
    Grant { role: String, grant: Grant },
    /// Remove the role's grant on `prefix`.
    Revoke {
        role: String,
        #[serde(with = "serde_bytes")]
        prefix: Vec<u8>,
    },
    /// A new user with these (existing) roles.
    AddUser { user: String, roles: Vec<String> },
    /// Remove a user.
    DeleteUser { user: String },
    /// Give a user a role.
    GrantRole { user: String, role: String },
    /// Take a role from a user.
    RevokeRole { user: String, role: String },
    /// Start enforcing permissions (idempotent).
    Enable,
    /// Set (or replace) a user's password hash; the user exists or is root.
    SetPassword { user: String, hash: PasswordHash },
    /// Set the token key if the table has none (a first login's proposal; a no-op otherwise,
    /// so two nodes proposing at once agree on the first).
    InitTokenKey {
        #[serde(with = "serde_bytes")]
        secret: Vec<u8>,
    },
    /// Replace the token key by a new one (id + 1): every token issued before is refused.
    RotateTokenKey {
        #[serde(with = "serde_bytes")]
        secret: Vec<u8>,
    },
    /// How long new tokens are valid ([`MIN_TOKEN_TTL_MS`] to [`MAX_TOKEN_TTL_MS`]).
    SetTokenTtl { ttl_ms: u64 },
}

/// Why a change was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AuthRejection {
    #[error("role {0:?} already exists")]
    RoleExists(String),
    #[error("no role {0:?}")]
    NoSuchRole(String),
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("user root is built in: it may do everything and needs no role")]
    RootIsBuiltIn,
    #[error("role {role:?} has no grant on prefix {prefix}")]
    NoSuchGrant { role: String, prefix: String },
    #[error("user {user:?} does not have role {role:?}")]
    NoSuchUserRole { user: String, role: String },
    #[error("invalid name {name:?}: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidName { name: String },
    #[error("a prefix has at most {MAX_PREFIX_BYTES} bytes")]
    PrefixTooLong,
    #[error("too many {what} (at most {max})")]
    TooMany { what: String, max: usize },
    #[error("a token key's secret has {expected} bytes")]
    BadTokenSecret { expected: usize },
    #[error("a token lifetime is {MIN_TOKEN_TTL_MS} ms to {MAX_TOKEN_TTL_MS} ms")]
    BadTokenTtl,
}

/// What a request touches, and so what must be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// One key.
    Key(&'a [u8]),
    /// The keys from `start` (inclusive) to `end` (exclusive; `None`: no end).
    Range { start: &'a [u8], end: Option<&'a [u8]> },
    /// Every key starting with this prefix.
    Prefix(&'a [u8]),
    /// The cluster itself: init, node add or decommission, leader transfer, the permission
    /// table. Needs admin on `""`.
    Cluster,
}

impl<'a> Access<'a> {
    /// `[start, end)` with an empty `end` meaning no end (the wire's convention).
    pub fn range(start: &'a [u8], end: &'a [u8]) -> Access<'a> {
        Access::Range {
            start,
            end: (!end.is_empty()).then_some(end),
        }
    }

    /// `permission` on each of `keys`.
    pub fn keys(
        permission: Permission,
        keys: impl IntoIterator<Item = &'a Vec<u8>>,
    ) -> impl Iterator<Item = (Permission, Access<'a>)> {
        keys.into_iter().map(move |key| (permission, Access::Key(key)))
    }
}

impl fmt::Display for Access<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Key(key) => write!(f, "key {}", show_bytes(key)),
            Access::Range {
                start,
                end: Some(end),
            } => {
                write!(f, "range [{}, {})", show_bytes(start), show_bytes(end))
            }
            Access::Range { start, end: None } => write!(f, "range [{}, end)", show_bytes(start)),
            Access::Prefix(prefix) => write!(f, "prefix {}", show_bytes(prefix)),
            Access::Cluster => f.write_str("the cluster"),
        }
    }
}

/// A refused access: who, what permission, on what. Its message is what callers see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("user {user:?} lacks {permission} permission on {what}")]
pub struct Denied {
    /// The user refused.
    pub user: String,
    /// The permission it would need.
    pub permission: Permission,
    /// The key, range or "the cluster" (printed).
    pub what: String,
}

impl AuthTable {
    /// The stored form: a format byte (2) then the table in postcard.
    pub fn to_stored(&self) -> Result<Vec<u8>, String> {
        let bytes = vec![STORED_FORMAT_V2];
        postcard::to_extend(self, bytes).map_err(|err| err.to_string())
    }

    /// A table from its stored form, or from the form stored before passwords and tokens.
    pub fn from_stored(bytes: &[u8]) -> Result<AuthTable, String> {
        match bytes.split_first() {
            Some((&STORED_FORMAT_V2, table)) => postcard::from_bytes(table).map_err(|err| err.to_string()),
            _ => {
                let old: AuthTableV1 = postcard::from_bytes(bytes).map_err(|err| err.to_string())?;
                Ok(AuthTable {
                    enabled: old.enabled,
                    roles: old.roles,
                    users: old.users,
                    ..AuthTable::default()
                })
            }
        }
    }

    /// How long a new token is valid, in ms.
    pub fn token_ttl_ms(&self) -> u64 {
        match self.token_ttl_ms {
            0 => DEFAULT_TOKEN_TTL_MS,
            ttl_ms => ttl_ms,
        }
    }

    /// The table without secrets (password hashes, the token key's secret): what is shown
    /// to people and sent beyond nodes and routers.
    pub fn without_secrets(&self) -> AuthTable {
        AuthTable {
            passwords: self
                .passwords
                .keys()
                .map(|user| (user.clone(), PasswordHash(String::new())))
                .collect(),
            token_key: None,
            ..self.clone()
        }
    }

    /// Whether `user` may do what needs `permission` on `access`: always while the table is
    /// not enabled, always for root; else some of the user's roles grant at least
    /// `permission` on prefixes that together cover `access`.
    pub fn check(&self, user: &str, permission: Permission, access: Access<'_>) -> Result<(), Denied> {
        if !self.enabled || user == ROOT_USER || self.allows(user, permission, access) {
            return Ok(());
        }
        let permission = match access {
            Access::Cluster => Permission::Admin,
            _ => permission,
        };
        Err(Denied {
            user: user.to_string(),
            permission,
            what: access.to_string(),
        })
    }

    /// Whether `user`'s grants (ignoring `enabled` and root) cover `access` with `permission`.
    fn allows(&self, user: &str, permission: Permission, access: Access<'_>) -> bool {
        let granted = self.granted_intervals(user, permission);
        match access {
            Access::Key(key) => granted.iter().any(|(start, end)| {
                key >= start.as_slice() && end.as_ref().is_none_or(|end| key < end.as_slice())
            }),
            Access::Range { start, end } => covers(&granted, start, end),
            Access::Prefix(prefix) => covers(&granted, prefix, prefix_end(prefix).as_deref()),
            Access::Cluster => self.allows(
                user,
                Permission::Admin,
                Access::Range {
                    start: b"",
                    end: None,
                },
            ),
        }
    }

    /// The key intervals `[start, end)` where `user` holds at least `permission`, sorted and
    /// merged where they touch or overlap.
    fn granted_intervals(&self, user: &str, permission: Permission) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let Some(roles) = self.users.get(user) else {
            return Vec::new();
        };
        let mut intervals: Vec<(Vec<u8>, Option<Vec<u8>>)> = roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flatten()
            .filter(|grant| grant.permission >= permission)
            .map(|grant| (grant.prefix.clone(), prefix_end(&grant.prefix)))
            .collect();
        intervals.sort();
        let mut merged: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            if let Some((_, last_end)) = merged.last_mut() {
                match last_end {
                    None => continue,
                    Some(last) if start <= *last => {
                        if end.as_ref().is_none_or(|end| end > last) {
                            *last_end = end;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            merged.push((start, end));
        }
        merged
    }

    /// The table after `change`, or why it is refused (the table is then unchanged). Pure:
    /// every node applies the same committed changes and gets the same table.
    pub fn apply(&self, change: &AuthChange) -> Result<AuthTable, AuthRejection> {
        let mut next = self.clone();
        match change {
            AuthChange::AddRole { role } => {
                check_name(role)?;
                if next.roles.contains_key(role) {
                    return Err(AuthRejection::RoleExists(role.clone()));
                }
                check_count("roles", next.roles.len() + 1, MAX_ROLES)?;
                next.roles.insert(role.clone(), Vec::new());
            }
            AuthChange::DeleteRole { role } => {
                if next.roles.remove(role).is_none() {
                    return Err(AuthRejection::NoSuchRole(role.clone()));
                }
                for roles in next.users.values_mut() {
                    roles.remove(role);
                }
            }
            AuthChange::Grant { role, grant } => {
                if grant.prefix.len() > MAX_PREFIX_BYTES {
                    return Err(AuthRejection::PrefixTooLong);
                }
                let grants = next
                    .roles
                    .get_mut(role)
                    .ok_or_else(|| AuthRejection::NoSuchRole(role.clone()))?;
                match grants.binary_search_by(|held| held.prefix.cmp(&grant.prefix)) {
                    Ok(at) => grants[at] = grant.clone(),
                    Err(at) => {
                        check_count("grants in a role", grants.len() + 1, MAX_GRANTS_PER_ROLE)?;
                        grants.insert(at, grant.clone());
                    }
                }
            }
            AuthChange::Revoke { role, prefix } => {
                let grants = next
                    .roles
                    .get_mut(role)
                    .ok_or_else(|| AuthRejection::NoSuchRole(role.clone()))?;
                let at = grants
                    .binary_search_by(|held| held.prefix.cmp(prefix))
                    .map_err(|_| AuthRejection::NoSuchGrant {
                        role: role.clone(),
                        prefix: show_bytes(prefix),
                    })?;
                grants.remove(at);
            }
            AuthChange::AddUser { user, roles } => {
                check_name(user)?;
                if user == ROOT_USER {
                    return Err(AuthRejection::RootIsBuiltIn);
                }
                if next.users.contains_key(user) {
                    return Err(AuthRejection::UserExists(user.clone()));
                }
                check_count("users", next.users.len() + 1, MAX_USERS)?;
                check_count("roles of a user", roles.len(), MAX_ROLES_PER_USER)?;
                if let Some(missing) = roles.iter().find(|role| !next.roles.contains_key(*role)) {
                    return Err(AuthRejection::NoSuchRole(missing.clone()));
                }
                next.users.insert(user.clone(), roles.iter().cloned().collect());
            }
            AuthChange::DeleteUser { user } => {
                if user == ROOT_USER {
                    return Err(AuthRejection::RootIsBuiltIn);
                }
                if next.users.remove(user).is_none() {
                    return Err(AuthRejection::NoSuchUser(user.clone()));
                }
                next.passwords.remove(user);
            }
            AuthChange::GrantRole { user, role } => {
                if user == ROOT_USER {
                    return Err(AuthRejection::RootIsBuiltIn);
                }
                if !next.roles.contains_key(role) {
                    return Err(AuthRejection::NoSuchRole(role.clone()));
                }
                let roles = next
                    .users
                    .get_mut(user)
                    .ok_or_else(|| AuthRejection::NoSuchUser(user.clone()))?;
                roles.insert(role.clone());
                check_count("roles of a user", roles.len(), MAX_ROLES_PER_USER)?;
            }
            AuthChange::RevokeRole { user, role } => {
                let roles = next
                    .users
                    .get_mut(user)
                    .ok_or_else(|| AuthRejection::NoSuchUser(user.clone()))?;
                if !roles.remove(role) {
                    return Err(AuthRejection::NoSuchUserRole {
                        user: user.clone(),
                        role: role.clone(),
                    });
                }
            }
            AuthChange::Enable => next.enabled = true,
            AuthChange::SetPassword { user, hash } => {
                if user != ROOT_USER && !next.users.contains_key(user) {
                    return Err(AuthRejection::NoSuchUser(user.clone()));
                }
                next.passwords.insert(user.clone(), hash.clone());
            }
            AuthChange::InitTokenKey { secret } => {
                check_secret(secret)?;
                if next.token_key.is_none() {
                    next.token_key = Some(TokenKey {
                        id: 1,
                        secret: secret.clone(),
                    });
                }
            }
            AuthChange::RotateTokenKey { secret } => {
                check_secret(secret)?;
                let id = next.token_key.as_ref().map_or(1, |key| key.id.wrapping_add(1));
                next.token_key = Some(TokenKey {
                    id,
                    secret: secret.clone(),
                });
            }
            AuthChange::SetTokenTtl { ttl_ms } => {
                if !(MIN_TOKEN_TTL_MS..=MAX_TOKEN_TTL_MS).contains(ttl_ms) {
                    return Err(AuthRejection::BadTokenTtl);
                }
                next.token_ttl_ms = *ttl_ms;
            }
        }
        Ok(next)
    }
}

/// Whether the merged, sorted `intervals` cover `[start, end)` (an empty range: whether
/// they cover `start`, so nothing is learnt about keys one may not read).
fn covers(intervals: &[(Vec<u8>, Option<Vec<u8>>)], start: &[u8], end: Option<&[u8]>) -> bool {
    intervals.iter().any(|(from, to)| {
        let starts_inside = start >= from.as_slice() && to.as_ref().is_none_or(|to| start < to.as_slice());
        let ends_inside = match (end, to) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(end), Some(to)) => end <= to.as_slice() || end <= start,
        };
        starts_inside && ends_inside
    })
}

/// The first key after every key starting with `prefix` (`None`: there is none, the
/// prefix is empty or all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key or prefix as people read it: quoted text when it is printable ASCII, else hex.
pub fn show_bytes(bytes: &[u8]) -> String {
    if bytes.iter().all(|byte| byte.is_ascii_graphic() || *byte == b' ') {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("0x{hex}")
    }
}

/// A role or user name: 1 to [`MAX_NAME_CHARS`] of `[A-Za-z0-9._-]`, not starting with '.'
/// (the rule of certificate user names).
pub fn check_name(name: &str) -> Result<(), AuthRejection> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AuthRejection::InvalidName {
            name: name.to_string(),
        })
    }
}

fn check_secret(secret: &[u8]) -> Result<(), AuthRejection> {
    if secret.len() != token::TOKEN_SECRET_BYTES {
        return Err(AuthRejection::BadTokenSecret {
            expected: token::TOKEN_SECRET_BYTES,
        });
    }
    Ok(())
}

fn check_count(what: &str, count: usize, max: usize) -> Result<(), AuthRejection> {
    if count > max {
        return Err(AuthRejection::TooMany {
            what: what.to_string(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
