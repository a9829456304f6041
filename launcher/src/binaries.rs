//! Where the `ringkv-node` and `ringkv-router` binaries are.
//!
//! Cargo puts every binary of the workspace in `target/<profile>/`; test executables run
//! from `target/<profile>/deps/` and examples from `target/<profile>/examples/`, so the
//! binaries are found next to the running executable, one level up for those two.
//! `$RINGKV_BIN_DIR` names another directory.

use std::path::{Path, PathBuf};

use crate::LaunchError;

/// File name of the storage node binary.
pub const NODE_BIN: &str = "ringkv-node";
/// File name of the router binary.
pub const ROUTER_BIN: &str = "ringkv-router";
/// Environment variable naming a directory that holds the binaries.
pub const BIN_DIR_ENV: &str = "RINGKV_BIN_DIR";

/// The directory of the running executable; for a test or an example (under `deps/` or
/// `examples/`), the profile directory above it.
pub fn executable_dir() -> Result<PathBuf, LaunchError> {
    let exe = std::env::current_exe().map_err(|source| LaunchError::Io {
        what: "locating the running executable".into(),
        source,
    })?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    Ok(dir)
}

/// `$RINGKV_BIN_DIR`, when set and not empty.
pub fn env_bin_dir() -> Option<PathBuf> {
    std::env::var_os(BIN_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
}

/// The first `dirs` entry holding a file `name` (plus the platform's executable suffix).
pub fn find_binary(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .find(|path| path.is_file())
}

/// Whether `exe` was built with the release profile (lives under a `release` dir).
pub fn is_release_build(exe: &Path) -> bool {
    exe.components()
        .any(|component| component.as_os_str() == "release")
}

/// The node and router binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    /// `ringkv-node`.
    pub node: PathBuf,
    /// `ringkv-router`.
    pub router: PathBuf,
}

impl Binaries {
    /// Both binaries from the first of `dirs` that holds each; `hint` says how to build
    /// them when one is missing.
    pub fn find(dirs: &[PathBuf], hint: &str) -> Result<Binaries, LaunchError> {
        let locate = |name: &str| {
            find_binary(dirs, name).ok_or_else(|| LaunchError::BinaryNotFound {
                name: name.to_string(),
                searched: dirs
                    .iter()
                    .map(|dir| dir.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                hint: hint.to_string(),
            })
        };
        Ok(Binaries {
            node: locate(NODE_BIN)?,
            router: locate(ROUTER_BIN)?,
        })
    }

    /// Both binaries from `dir`.
    pub fn in_dir(dir: &Path) -> Result<Binaries, LaunchError> {
        Binaries::find(
            &[dir.to_path_buf()],
            &format!("build the binaries first with `cargo build --bins` (or set {BIN_DIR_ENV})"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first directory holding the binary wins; missing binaries are reported with
    /// the directories searched.
    #[test]
    fn find_in_dirs() {
        let first = tempfile::tempdir().expect("temp dir");
        let second = tempfile::tempdir().expect("temp dir");
        let dirs = vec![first.path().to_path_buf(), second.path().to_path_buf()];
        assert_eq!(find_binary(&dirs, NODE_BIN), None);
        let node = second
            .path()
            .join(format!("{NODE_BIN}{}", std::env::consts::EXE_SUFFIX));
        std::fs::write(&node, b"").expect("write");
        assert_eq!(find_binary(&dirs, NODE_BIN), Some(node));
        let missing = Binaries::find(&dirs, "build them").expect_err("no router");
        let message = missing.to_string();
        assert!(
            message.starts_with("ringkv-router not found (searched: "),
            "{message}"
        );
        assert!(message.ends_with("): build them"), "{message}");
    }

    /// Release builds are recognised by their directory.
    #[test]
    fn release_profile() {
        assert!(is_release_build(Path::new("/w/target/release/kvctl")));
        assert!(!is_release_build(Path::new("/w/target/debug/kvctl")));
    }
}
