use super::*;

fn grant(prefix: &str, permission: Permission) -> Grant {
    Grant {
        prefix: prefix.as_bytes().to_vec(),
        permission,
    }
}

/// A table from changes that must all apply.
fn table_of(changes: &[AuthChange]) -> AuthTable {
    changes.iter().fold(AuthTable::default(), |table, change| {
        table
            .apply(change)
            .unwrap_or_else(|err| panic!("{change:?}: {err}"))
    })
}

fn role(name: &str) -> AuthChange {
    AuthChange::AddRole { role: name.into() }
}

fn give(role: &str, prefix: &str, permission: Permission) -> AuthChange {
    AuthChange::Grant {
        role: role.into(),
        grant: grant(prefix, permission),
    }
}

fn user(name: &str, roles: &[&str]) -> AuthChange {
    AuthChange::AddUser {
        user: name.into(),
        roles: roles.iter().map(|role| role.to_string()).collect(),
    }
}

/// The issue's scenario and its edges: read on `app/`, write on `logs/`, admin on `ops/`,
/// two adjacent prefixes that together cover a range; each case names what it proves.
#[test]
fn checks_follow_the_grants() {
    let table = table_of(&[
        role("app-reader"),
        give("app-reader", "app/", Permission::Read),
        role("logger"),
        give("logger", "logs/", Permission::Write),
        give("logger", "ops/", Permission::Admin),
        role("ab"),
        give("ab", "a", Permission::Read),
        give("ab", "b", Permission::Read),
        role("everything"),
        give("everything", "", Permission::Admin),
        user("alice", &["app-reader"]),
        user("bob", &["logger", "ab"]),
        user("carol", &["everything"]),
        user("nobody", &[]),
        AuthChange::Enable,
    ]);
    let key = Access::Key;
    let range = |start: &'static str, end: Option<&'static str>| Access::Range {
        start: start.as_bytes(),
        end: end.map(str::as_bytes),
    };
    use Permission::{Admin, Read, Write};
    let cases: Vec<(&str, Permission, Access<'_>, bool, &str)> = vec![
        ("alice", Read, key(b"app/x"), true, "read within the prefix"),
        ("alice", Write, key(b"app/x"), false, "read does not imply write"),
        (
            "alice",
            Read,
            key(b"other/x"),
            false,
            "nothing outside the prefix",
        ),
        (
            "alice",
            Read,
            key(b"app"),
            false,
            "the prefix itself minus its slash is outside",
        ),
        (
            "alice",
            Read,
            range("app/", Some("app0")),
            true,
            "the whole prefix as a range",
        ),
        (
            "alice",
            Read,
            range("app/a", Some("app/z")),
            true,
            "a range inside",
        ),
        (
            "alice",
            Read,
            range("app/a", Some("b")),
            false,
            "a range leaving the prefix",
        ),
        (
            "alice",
            Read,
            range("app/a", None),
            false,
            "an unbounded range leaves it",
        ),
        ("alice", Read, Access::Prefix(b"app/"), true, "the prefix itself"),
        ("alice", Read, Access::Prefix(b"app/x/"), true, "a longer prefix"),
        ("alice", Read, Access::Prefix(b"app"), false, "a shorter prefix"),
        ("alice", Read, range("", None), false, "everything"),
        ("alice", Read, Access::Cluster, false, "no admin"),
        ("bob", Write, key(b"logs/1"), true, "write"),
        ("bob", Read, key(b"logs/1"), true, "write implies read"),
        ("bob", Write, key(b"ops/1"), true, "admin implies write"),
        ("bob", Admin, key(b"ops/1"), true, "admin on a prefix"),
        (
            "bob",
            Admin,
            Access::Cluster,
            false,
            "admin on a prefix is not the cluster's",
        ),
        (
            "bob",
            Read,
            range("a", Some("c")),
            true,
            "adjacent prefixes cover together",
        ),
        (
            "bob",
            Read,
            range("a", Some("c\0")),
            false,
            "one byte beyond them",
        ),
        (
            "bob",
            Write,
            range("a", Some("b")),
            false,
            "read grants do not cover writes",
        ),
        (
            "carol",
            Admin,
            Access::Cluster,
            true,
            "admin on \"\" is the cluster's",
        ),
        ("carol", Write, range("", None), true, "and every key"),
        ("nobody", Read, key(b"app/x"), false, "no roles, nothing"),
        ("mallory", Read, key(b"app/x"), false, "an unknown user, nothing"),
        ("root", Admin, Access::Cluster, true, "root, everything"),
        (
            "alice",
            Read,
            range("app/z", Some("app/a")),
            true,
            "an empty range inside",
        ),
        (
            "alice",
            Read,
            range("z", Some("a")),
            false,
            "an empty range outside",
        ),
    ];
    for (index, (who, permission, access, allowed, why)) in cases.into_iter().enumerate() {
        let answer = table.check(who, permission, access);
        assert_eq!(answer.is_ok(), allowed, "case {index} ({why}): {answer:?}");
        if let Err(denied) = answer {
            assert_eq!(denied.user, who, "case {index}");
            let message = denied.to_string();
            assert!(message.contains(who), "case {index}: {message}");
            assert!(
                message.contains(denied.permission.name()),
                "case {index}: {message}"
            );
        }
    }
}

/// Before the table is enabled every caller acts as root.
#[test]
fn everything_is_allowed_until_enabled() {
    let table = table_of(&[role("r"), user("alice", &["r"])]);
    assert!(table.check("alice", Permission::Admin, Access::Cluster).is_ok());
    assert!(table
        .check("stranger", Permission::Write, Access::Key(b"x"))
        .is_ok());
    let enabled = table.apply(&AuthChange::Enable).expect("enable");
    assert!(enabled
        .check("alice", Permission::Write, Access::Key(b"x"))
        .is_err());
    assert!(enabled
        .check("root", Permission::Write, Access::Key(b"x"))
        .is_ok());
}

/// The denial names the user, the permission and the key.
#[test]
fn denials_name_user_permission_and_key() {
    let table = table_of(&[AuthChange::Enable]);
    let denied = table
        .check("alice", Permission::Write, Access::Key(b"other/x"))
        .expect_err("denied");
    assert_eq!(
        denied.to_string(),
        "user \"alice\" lacks write permission on key \"other/x\""
    );
    let cluster = table
        .check("alice", Permission::Read, Access::Cluster)
        .expect_err("denied");
    assert_eq!(cluster.permission, Permission::Admin);
    let binary = table
        .check("alice", Permission::Read, Access::Key(&[0, 0xff]))
        .expect_err("denied");
    assert!(binary.what.contains("0x00ff"), "{}", binary.what);
}

/// Each change applies or is refused with its reason, leaving the table unchanged.
#[test]
fn changes_apply_or_are_refused() {
    let base = table_of(&[role("r"), give("r", "p/", Permission::Read), user("u", &["r"])]);
    let cases: Vec<(AuthChange, Option<AuthRejection>)> = vec![
        (role("r"), Some(AuthRejection::RoleExists("r".into()))),
        (role(".x"), Some(AuthRejection::InvalidName { name: ".x".into() })),
        (role(""), Some(AuthRejection::InvalidName { name: "".into() })),
        (
            give("none", "p/", Permission::Read),
            Some(AuthRejection::NoSuchRole("none".into())),
        ),
        (give("r", "p/", Permission::Write), None),
        (
            AuthChange::Revoke {
                role: "r".into(),
                prefix: b"q/".to_vec(),
            },
            Some(AuthRejection::NoSuchGrant {
                role: "r".into(),
                prefix: "\"q/\"".into(),
            }),
        ),
        (user("u", &[]), Some(AuthRejection::UserExists("u".into()))),
        (user("root", &[]), Some(AuthRejection::RootIsBuiltIn)),
        (
            user("v", &["none"]),
            Some(AuthRejection::NoSuchRole("none".into())),
        ),
        (
            AuthChange::DeleteUser { user: "root".into() },
            Some(AuthRejection::RootIsBuiltIn),
        ),
        (
            AuthChange::GrantRole {
                user: "v".into(),
                role: "r".into(),
            },
            Some(AuthRejection::NoSuchUser("v".into())),
        ),
        (
            AuthChange::RevokeRole {
                user: "u".into(),
                role: "other".into(),
            },
            Some(AuthRejection::NoSuchUserRole {
                user: "u".into(),
                role: "other".into(),
            }),
        ),
        (AuthChange::DeleteRole { role: "r".into() }, None),
        (AuthChange::Enable, None),
    ];
    for (index, (change, refused)) in cases.into_iter().enumerate() {
        match (base.apply(&change), refused) {
            (Ok(_), None) => {}
            (Err(err), Some(expected)) => assert_eq!(err, expected, "case {index}: {change:?}"),
            (answer, expected) => panic!("case {index}: {change:?}: {answer:?}, expected {expected:?}"),
        }
    }
    let replaced = base.apply(&give("r", "p/", Permission::Admin)).expect("replace");
    assert_eq!(replaced.roles["r"], vec![grant("p/", Permission::Admin)]);
    let without_role = base
        .apply(&AuthChange::DeleteRole { role: "r".into() })
        .expect("delete");
    assert!(
        without_role.users["u"].is_empty(),
        "a deleted role is taken from its users"
    );
}

/// The stored form: a table stored before passwords and tokens (postcard of its three
/// fields, as every system group holds it) still decodes, and today's form round-trips.
#[test]
fn stored_form_reads_old_tables() {
    let table = table_of(&[
        role("r"),
        give("r", "a", Permission::Write),
        user("u", &["r"]),
        AuthChange::Enable,
    ]);
    let old_bytes = vec![1, 1, 1, b'r', 1, 1, b'a', 1, 1, 1, b'u', 1, 1, b'r'];
    assert_eq!(AuthTable::from_stored(&old_bytes).expect("old form"), table);
    let disabled_old = [0, 0, 0];
    assert_eq!(
        AuthTable::from_stored(&disabled_old).expect("old empty form"),
        AuthTable::default()
    );
    let with_secrets = table
        .apply(&AuthChange::SetPassword {
            user: "u".into(),
            hash: PasswordHash("h".into()),
        })
        .and_then(|table| table.apply(&AuthChange::InitTokenKey { secret: vec![7; 32] }))
        .and_then(|table| table.apply(&AuthChange::SetTokenTtl { ttl_ms: 2000 }))
        .expect("apply");
    let stored = with_secrets.to_stored().expect("encode");
    assert_eq!(stored.first(), Some(&2));
    assert_eq!(AuthTable::from_stored(&stored).expect("decode"), with_secrets);
    assert!(
        AuthTable::from_stored(&[2, 9]).is_err(),
        "a truncated table is refused"
    );
}

/// Passwords, token keys and lifetimes change as asked and no other way; a deleted user
/// loses its password; secrets never show in debug output or in the shown table.
#[test]
fn credential_changes_apply_or_are_refused() {
    let table = table_of(&[role("r"), user("u", &["r"])]);
    let hash = |text: &str| PasswordHash(text.into());
    let set = |user: &str| AuthChange::SetPassword {
        user: user.into(),
        hash: hash("secret-hash"),
    };
    let with_password = table.apply(&set("u")).expect("existing user");
    let root = with_password
        .apply(&set(ROOT_USER))
        .expect("root may have a password");
    assert_eq!(root.passwords.len(), 2);
    assert_eq!(
        table.apply(&set("ghost")),
        Err(AuthRejection::NoSuchUser("ghost".into()))
    );
    let deleted = root
        .apply(&AuthChange::DeleteUser { user: "u".into() })
        .expect("delete");
    assert!(!deleted.passwords.contains_key("u"));

    let first = table
        .apply(&AuthChange::InitTokenKey { secret: vec![1; 32] })
        .expect("init");
    let again = first
        .apply(&AuthChange::InitTokenKey { secret: vec![2; 32] })
        .expect("init again");
    assert_eq!(again.token_key, first.token_key, "the first key stays");
    let rotated = again
        .apply(&AuthChange::RotateTokenKey { secret: vec![3; 32] })
        .expect("rotate");
    assert_eq!(rotated.token_key.as_ref().map(|key| key.id), Some(2));
    assert_eq!(
        table.apply(&AuthChange::RotateTokenKey { secret: vec![3; 5] }),
        Err(AuthRejection::BadTokenSecret { expected: 32 })
    );
    assert_eq!(table.token_ttl_ms(), DEFAULT_TOKEN_TTL_MS);
    assert_eq!(
        table.apply(&AuthChange::SetTokenTtl { ttl_ms: 10 }),
        Err(AuthRejection::BadTokenTtl)
    );
    let debug = format!("{:?} {:?}", rotated, set("u"));
    assert!(
        !debug.contains("secret-hash") && !debug.contains("[3, 3"),
        "{debug}"
    );
    let shown = root
        .apply(&AuthChange::RotateTokenKey { secret: vec![3; 32] })
        .expect("rotate");
    let shown = shown.without_secrets();
    assert!(shown.token_key.is_none());
    assert!(shown.passwords.values().all(|hash| hash.0.is_empty()));
}

/// A hash checks its password only, and names its own cost.
#[test]
fn passwords_hash_and_verify() {
    let stored = password::hash_password("correct horse", password::MIN_ITERATIONS).expect("hash");
    assert!(stored.starts_with("pbkdf2-sha256$10000$"), "{stored}");
    assert_eq!(password::verify_password("correct horse", &stored), Ok(true));
    assert_eq!(password::verify_password("correct horsf", &stored), Ok(false));
    let again = password::hash_password("correct horse", password::MIN_ITERATIONS).expect("hash");
    assert_ne!(again, stored, "salted");
    assert_eq!(
        password::hash_password("short", password::MIN_ITERATIONS),
        Err(password::PasswordError::BadLength)
    );
    for malformed in [
        "",
        "md5$1$00$00",
        "pbkdf2-sha256$1$00$00",
        "pbkdf2-sha256$10000$zz$00",
    ] {
        assert_eq!(
            password::verify_password("x", malformed),
            Err(password::PasswordError::MalformedHash),
            "{malformed}"
        );
    }
    assert_eq!(
        password::verify_password("anything", &password::decoy_hash(password::MIN_ITERATIONS)),
        Ok(false)
    );
}

/// A token stands for its user until it expires, while its key is the table's and its
/// user exists; forged, foreign, rotated, expired and malformed tokens are refused.
#[test]
fn tokens_verify_only_while_valid() {
    use token::{sign, verify, TokenError};
    let table = table_of(&[
        role("r"),
        user("u.x-1", &["r"]),
        AuthChange::InitTokenKey { secret: vec![1; 32] },
    ]);
    let key = table.token_key.clone().expect("key");
    let now_ms = 1_000_000;
    let token = sign(&key, "u.x-1", now_ms + 5000);
    assert_eq!(verify(&table, &token, now_ms), Ok("u.x-1".to_string()));
    let root = sign(&key, ROOT_USER, now_ms + 5000);
    assert_eq!(verify(&table, &root, now_ms), Ok(ROOT_USER.to_string()));
    assert_eq!(verify(&table, &token, now_ms + 5000), Err(TokenError::Expired));

    let foreign = TokenKey {
        id: 1,
        secret: vec![9; 32],
    };
    let cases = [
        (sign(&foreign, "u.x-1", now_ms + 5000), TokenError::BadSignature),
        (token.replace("u.x-1", "root"), TokenError::BadSignature),
        (
            token.replacen(&(now_ms + 5000).to_string(), &(now_ms + 9000).to_string(), 1),
            TokenError::BadSignature,
        ),
        (sign(&key, "gone", now_ms + 5000), TokenError::NoSuchUser),
        ("rk1:1:2".to_string(), TokenError::Malformed),
        ("x".repeat(300), TokenError::Malformed),
        (format!("{token}:extra"), TokenError::Malformed),
    ];
    for (index, (forged, refusal)) in cases.into_iter().enumerate() {
        assert_eq!(
            verify(&table, &forged, now_ms),
            Err(refusal),
            "case {index}: {forged}"
        );
    }
    let rotated = table
        .apply(&AuthChange::RotateTokenKey { secret: vec![2; 32] })
        .expect("rotate");
    assert_eq!(verify(&rotated, &token, now_ms), Err(TokenError::BadSignature));
    assert_eq!(
        verify(&AuthTable::default(), &token, now_ms),
        Err(TokenError::NoKey)
    );
}

/// `prefix_end` is the first key past the prefix.
#[test]
fn prefix_ends() {
    let cases: [(&[u8], Option<&[u8]>); 4] = [
        (b"", None),
        (b"app/", Some(b"app0")),
        (&[b'a', 0xff], Some(b"b")),
        (&[0xff, 0xff], None),
    ];
    for (index, (prefix, end)) in cases.into_iter().enumerate() {
        assert_eq!(prefix_end(prefix).as_deref(), end, "case {index}");
    }
}
