//! What the driver reads from `/proc`: a process's CPU time, its resident memory, its
//! children, and the kernel's UDP socket counters. Parsers take text so that tests can feed
//! them sample lines.

use anyhow::{Context, Result, bail};
use std::fs;

/// The fields of `/proc/PID/stat` the benchmark uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub parent_pid: u32,
    /// User and system CPU time of the whole thread group, in clock ticks.
    pub user_ticks: u64,
    pub system_ticks: u64,
}

impl ProcStat {
    /// Parses one `/proc/PID/stat` line. The command name (field 2) is in parentheses and may
    /// itself hold spaces and parentheses, so the fields are counted from the last `)`.
    pub fn parse(line: &str) -> Result<ProcStat> {
        let after_name = line.rfind(')').context("no `)` closing the command name")?;
        // Fields 3 onwards: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt,
        // cminflt, majflt, cmajflt, utime (14), stime (15) (proc(5)).
        let fields: Vec<&str> = line[after_name + 1..].split_whitespace().collect();
        if fields.len() < 13 {
            bail!("only {} fields after the command name", fields.len());
        }
        Ok(ProcStat {
            parent_pid: fields[1].parse().context("ppid")?,
            user_ticks: fields[11].parse().context("utime")?,
            system_ticks: fields[12].parse().context("stime")?,
        })
    }

    pub fn read(pid: u32) -> Result<ProcStat> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("pid {pid}"))?;
        ProcStat::parse(&text)
    }

    pub fn cpu_ticks(&self) -> u64 {
        self.user_ticks + self.system_ticks
    }
}

/// Clock ticks per second, the unit of `utime` and `stime`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// CPU seconds used so far by all the given processes (each with all its threads).
pub fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    let mut ticks = 0;
    for &pid in pids {
        ticks += ProcStat::read(pid)?.cpu_ticks();
    }
    Ok(ticks as f64 / clock_ticks_per_second() as f64)
}

/// The pids whose parent is `parent` (nginx's workers are the master's children).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut children: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| ProcStat::read(pid).is_ok_and(|stat| stat.parent_pid == parent))
        .collect();
    children.sort_unstable();
    children
}

/// `VmRSS` from the text of `/proc/PID/status`, in bytes.
pub fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    parse_kib_field(status, "VmRSS:")
}

pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss_bytes(&status).context("no VmRSS line")
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Result<u64> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// The `UDP:` line of `/proc/net/sockstat`: sockets in use, and pages of memory their
/// buffers hold (system-wide).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpSockstat {
    pub sockets_in_use: u64,
    pub memory_pages: u64,
}

impl UdpSockstat {
    pub fn parse(sockstat: &str) -> Option<UdpSockstat> {
        let line = sockstat.lines().find(|line| line.starts_with("UDP:"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let value = |key: &str| -> Option<u64> {
            let at = words.iter().position(|word| *word == key)?;
            words.get(at + 1)?.parse().ok()
        };
        Some(UdpSockstat { sockets_in_use: value("inuse")?, memory_pages: value("mem")? })
    }

    pub fn read() -> Result<UdpSockstat> {
        let text = fs::read_to_string("/proc/net/sockstat")?;
        UdpSockstat::parse(&text).context("no UDP line in /proc/net/sockstat")
    }
}

/// Bytes of kernel slab memory (`Slab:` in `/proc/meminfo`), system-wide: where socket
/// structures themselves live, which sockstat's `mem` (buffered data only) does not count.
pub fn parse_slab_bytes(meminfo: &str) -> Option<u64> {
    parse_kib_field(meminfo, "Slab:")
}

pub fn slab_bytes() -> Result<u64> {
    parse_slab_bytes(&fs::read_to_string("/proc/meminfo")?).context("no Slab line")
}

/// A `Key:  N kB` line of `/proc/PID/status` or `/proc/meminfo`, in bytes.
fn parse_kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn page_size_bytes() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_a_tricky_command_name_parses() {
        let line = "4242 (nginx: wo) r) ker) S 4241 4241 4200 0 -1 4194624 1012 0 0 0 \
                    731 264 0 0 20 0 1 0 987654 123456789 2345 18446744073709551615 1 1 0 0 0 0";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat, ProcStat { parent_pid: 4241, user_ticks: 731, system_ticks: 264 });
        assert_eq!(stat.cpu_ticks(), 995);
    }

    #[test]
    fn truncated_stat_line_is_an_error() {
        assert!(ProcStat::parse("1 (init) S 0 1").is_err());
        assert!(ProcStat::parse("no parenthesis").is_err());
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tudplb\nVmPeak:\t  10000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn sockstat_udp_line_is_found() {
        let text = "sockets: used 310\nTCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1\n\
                    UDP: inuse 28231 mem 76\nUDPLITE: inuse 0\nRAW: inuse 0\n";
        assert_eq!(UdpSockstat::parse(text), Some(UdpSockstat { sockets_in_use: 28231, memory_pages: 76 }));
    }

    #[test]
    fn slab_line_is_read_in_bytes() {
        assert_eq!(parse_slab_bytes("MemTotal: 100 kB\nSlab:  2048 kB\n"), Some(2048 * 1024));
    }
}
