//! Certificates and keys on disk: `<name>.crt` and `<name>.key` in a certificates
//! directory, keys readable by their owner only (0600), never overwritten unless asked.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{CertError, IssuedCert, Role};

/// Mode of private key files: the owner reads and writes, nobody else.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Mode of certificate files: public.
pub const CERT_FILE_MODE: u32 = 0o644;
/// Mode of a certificates directory this crate creates.
pub const CERTS_DIR_MODE: u32 = 0o700;

/// The base name of the CA's files (`ca.crt`, `ca.key`).
pub const CA_BASE_NAME: &str = "ca";

/// Where a certificate and its key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// `<dir>/<name>.crt`
    pub cert: PathBuf,
    /// `<dir>/<name>.key`
    pub key: PathBuf,
}

impl CertPaths {
    /// `<dir>/<base_name>.crt` and `<dir>/<base_name>.key`.
    pub fn new(dir: &Path, base_name: &str) -> CertPaths {
        CertPaths {
            cert: dir.join(format!("{base_name}.crt")),
            key: dir.join(format!("{base_name}.key")),
        }
    }
}

/// The base name of a leaf's files: `node`, `router`, or `client.<user>` (as
/// `cockroach cert` names them, so one directory holds several users).
pub fn leaf_base_name(role: Role, user: Option<&str>) -> String {
    match (role, user) {
        (Role::Client, Some(user)) => format!("client.{user}"),
        (role, _) => role.name().to_string(),
    }
}

/// Writes `issued` to `paths`, the key with mode 0600. Refuses when either file exists,
/// unless `overwrite`; writes nothing then. Each file is written to a temporary name and
/// renamed, so a crash leaves the old file or the new one, not half of one.
pub fn write_pair(paths: &CertPaths, issued: &IssuedCert, overwrite: bool) -> Result<(), CertError> {
    if !overwrite {
        for path in [&paths.cert, &paths.key] {
            if path.symlink_metadata().is_ok() {
                return Err(CertError::AlreadyExists { path: path.clone() });
            }
        }
    }
    for path in [&paths.cert, &paths.key] {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
    }
    // The key first: a certificate without its key is useless, a key alone is harmless.
    write_file(&paths.key, issued.key_pem.as_bytes(), KEY_FILE_MODE)?;
    write_file(&paths.cert, issued.cert_pem.as_bytes(), CERT_FILE_MODE)
}

/// Reads a whole text file.
pub fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|io_error| CertError::Read {
        path: path.to_path_buf(),
        io_error,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, CERTS_DIR_MODE);
    builder.create(dir).map_err(|io_error| CertError::Write {
        path: dir.to_path_buf(),
        io_error,
    })
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let write_error = |io_error| CertError::Write {
        path: path.to_path_buf(),
        io_error,
    };
    let mut temporary_name = path.as_os_str().to_owned();
    temporary_name.push(".tmp");
    let temporary = PathBuf::from(temporary_name);
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary).map_err(write_error)?;
    // The mode given to open applies only to a new file (and is masked by the umask).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
    }
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(write_error)
}
