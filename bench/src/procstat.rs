//! What a server process used, from Linux's `/proc`: CPU time (`/proc/<pid>/stat` utime +
//! stime), bytes it caused to be written to storage (`/proc/<pid>/io` `write_bytes`) and its
//! peak resident memory (`/proc/<pid>/status` `VmHWM`). The parsers are pure; [`sample`]
//! reads the files.

use serde::{Deserialize, Serialize};

use crate::BenchError;

/// A server process of the system under test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerProcess {
    /// `node 1`, `router`, `etcd m1`.
    pub name: String,
    /// Its process id.
    pub pid: u32,
}

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time so far, in seconds.
    pub cpu_s: f64,
    /// Bytes written to storage so far (`None` when `/proc/<pid>/io` is not readable).
    pub write_bytes: Option<u64>,
    /// Peak resident set so far, in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `write_bytes` from the text of `/proc/<pid>/io`.
pub fn parse_io_write_bytes(io: &str) -> Option<u64> {
    field_value(io, "write_bytes:")
}

/// `VmHWM` in bytes from the text of `/proc/<pid>/status`.
pub fn parse_status_peak_rss(status: &str) -> Option<u64> {
    field_value(status, "VmHWM:").map(|kib| kib * 1024)
}

fn field_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 when unknown).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Reads the counters of `process`.
pub fn sample(process: &ServerProcess) -> Result<ProcSample, BenchError> {
    let dir = format!("/proc/{}", process.pid);
    let stat_path = format!("{dir}/stat");
    let stat = std::fs::read_to_string(&stat_path)
        .map_err(BenchError::io(format!("reading {stat_path} ({})", process.name)))?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| BenchError::Io {
        what: format!("parsing {stat_path} ({})", process.name),
        source: std::io::Error::other("unexpected format"),
    })?;
    let write_bytes = std::fs::read_to_string(format!("{dir}/io"))
        .ok()
        .and_then(|io| parse_io_write_bytes(&io));
    let peak_rss_bytes = std::fs::read_to_string(format!("{dir}/status"))
        .ok()
        .and_then(|status| parse_status_peak_rss(&status));
    Ok(ProcSample {
        cpu_s: ticks as f64 / ticks_per_second(),
        write_bytes,
        peak_rss_bytes,
    })
}

/// Reads the counters of every process, in order.
pub fn sample_all(processes: &[ServerProcess]) -> Result<Vec<ProcSample>, BenchError> {
    processes.iter().map(sample).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// utime and stime are fields 14 and 15, even when the command name holds spaces and ')'.
    #[test]
    fn stat_ticks() {
        let stat = "4242 (ringkv node) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    /// write_bytes and VmHWM are found among the other lines.
    #[test]
    fn io_and_status() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io_write_bytes(io), Some(8192));
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmHWM:\t   1500 kB\nVmRSS:\t 1200 kB\n";
        assert_eq!(parse_status_peak_rss(status), Some(1500 * 1024));
    }

    /// This very process can be sampled.
    #[test]
    fn samples_self() {
        let me = ServerProcess {
            name: "self".into(),
            pid: std::process::id(),
        };
        let sample = sample(&me).expect("sample");
        assert!(sample.cpu_s >= 0.0);
        assert!(sample.peak_rss_bytes.unwrap_or(0) > 0);
    }
}
