//! Who kvctl is (issue 15): the profile it reads its defaults from, and passwords typed
//! at a terminal.
//!
//! A profile is a file of `RINGKV_*=value` lines (`#` starts a comment), the variables
//! kvctl's flags read (`RINGKV_ENDPOINTS`, `RINGKV_CA`, `RINGKV_CERT`, `RINGKV_KEY`,
//! `RINGKV_USER`, ...). kvctl reads the first that exists of `$RINGKV_PROFILE`,
//! `./playground-data/profile` (what `kvctl playground` writes, in its default `--dir`) and
//! `~/.config/ringkv/profile` (`$XDG_CONFIG_HOME` when set), and takes each variable that is
//! not already set in the environment: flags win over the environment, which wins over the
//! profile. A profile never holds a password or a token (the playground's holds paths).
//!
//! Passwords are read from the terminal (`/dev/tty`) with echo off, or as one line from
//! stdin when it is not a terminal (for scripts); never from the command line of
//! `user add`/`user passwd` (it would show in `ps` and shell history).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// The variable naming a profile file.
pub const PROFILE_ENV: &str = "RINGKV_PROFILE";
/// The profile `kvctl playground` writes, relative to its data dir.
pub const PROFILE_FILE_NAME: &str = "profile";
/// The variables a profile may set.
const PROFILE_KEYS: [&str; 5] = [
    "RINGKV_ENDPOINTS",
    "RINGKV_CA",
    "RINGKV_CERT",
    "RINGKV_KEY",
    "RINGKV_USER",
];
/// Longest profile read, in bytes.
const MAX_PROFILE_BYTES: u64 = 64 << 10;

/// Where kvctl looks for its profile, in order.
pub fn profile_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os(PROFILE_ENV) {
        candidates.push(PathBuf::from(path));
    }
    candidates.push(Path::new("playground-data").join(PROFILE_FILE_NAME));
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")));
    if let Some(config_home) = config_home {
        candidates.push(config_home.join("ringkv").join(PROFILE_FILE_NAME));
    }
    candidates
}

/// The `(variable, value)` pairs of a profile's text; unknown variables are refused.
pub fn parse_profile(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=value", number + 1));
        };
        let name = name.trim();
        if !PROFILE_KEYS.contains(&name) {
            return Err(format!(
                "line {}: {name} is not one of {}",
                number + 1,
                PROFILE_KEYS.join(", ")
            ));
        }
        pairs.push((name.to_string(), value.trim().to_string()));
    }
    Ok(pairs)
}

/// Sets the variables of the first profile found that the environment does not set. Runs
/// before the arguments are parsed, on the main thread, before any other thread starts.
pub fn load_profile() -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = profile_candidates().into_iter().find(|path| path.is_file()) else {
        return Ok(None);
    };
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            File::open(&path).with_context(|| format!("reading profile {}", path.display()))?,
            MAX_PROFILE_BYTES,
        ),
        &mut text,
    )
    .with_context(|| format!("reading profile {}", path.display()))?;
    let pairs = parse_profile(&text).map_err(|err| anyhow::anyhow!("profile {}: {err}", path.display()))?;
    for (name, value) in pairs {
        if std::env::var_os(&name).is_none() {
            // Single-threaded here (see above), so setting the environment is sound.
            std::env::set_var(&name, value);
        }
    }
    Ok(Some(path))
}

/// The text of a profile pointing kvctl at `endpoint` with these TLS files.
pub fn profile_text(endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "# written by kvctl playground; kvctl reads it when run from this directory's parent\n\
         # (or point RINGKV_PROFILE at it). Flags and RINGKV_* variables override it.\n\
         RINGKV_ENDPOINTS={endpoint}\nRINGKV_CA={}\nRINGKV_CERT={}\nRINGKV_KEY={}\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// A password typed at the terminal without echo (`prompt` on the terminal), or one line
/// of stdin when stdin is not a terminal.
pub fn read_password(prompt: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let tty = File::options()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening the terminal to read a password")?;
    let password = without_echo(&tty, || {
        let mut writer = &tty;
        writer.write_all(prompt.as_bytes())?;
        writer.flush()?;
        let mut line = String::new();
        BufReader::new(&tty).read_line(&mut line)?;
        writer.write_all(b"\n")?;
        Ok(line)
    })
    .context("reading the password from the terminal")?;
    Ok(password.trim_end_matches(['\r', '\n']).to_string())
}

/// A new password, typed twice at a terminal (once from stdin otherwise).
pub fn read_new_password(user: &str) -> anyhow::Result<String> {
    let password = read_password(&format!("new password for {user}: "))?;
    if std::io::stdin().is_terminal() && read_password("again: ")? != password {
        bail!("the passwords differ");
    }
    Ok(password)
}

/// Runs `read` with the terminal's echo off, restoring it after.
fn without_echo<T>(tty: &File, read: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open terminal for the duration of the call; saved is valid.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: as above; quiet is a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let result = read();
    // SAFETY: as above; restores what tcgetattr returned.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile's lines, comments and `export`s parse; unknown variables and passwords
    /// are refused.
    #[test]
    fn profiles_parse() {
        let text = profile_text(
            "127.0.0.1:7000",
            Path::new("/c/ca.crt"),
            Path::new("/c/x.crt"),
            Path::new("/c/x.key"),
        );
        let pairs = parse_profile(&format!("{text}\nexport RINGKV_USER=alice\n")).expect("parse");
        assert_eq!(pairs[0], ("RINGKV_ENDPOINTS".into(), "127.0.0.1:7000".into()));
        assert_eq!(pairs[1], ("RINGKV_CA".into(), "/c/ca.crt".into()));
        assert_eq!(pairs.last(), Some(&("RINGKV_USER".into(), "alice".into())));
        assert!(parse_profile("RINGKV_PASSWORD=x").is_err());
        assert!(parse_profile("just words").is_err());
    }
}
