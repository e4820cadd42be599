//! What the shell asks of the operating system besides sockets: descriptor limits, the
//! ephemeral port range, a secret key, and systemd's readiness protocol.

use std::io::Read;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Ports in `net.ipv4.ip_local_port_range` (about 28,000 by default): each flow's connected
/// upstream socket holds one, so this caps concurrent flows whatever the descriptor limit.
pub fn ephemeral_ports() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut numbers = text.split_whitespace().filter_map(|n| n.parse::<u64>().ok());
    match (numbers.next(), numbers.next()) {
        (Some(low), Some(high)) if high >= low => high - low + 1,
        _ => 28_232,
    }
}

/// The default flow cap for this process: what both the descriptor limit (minus a reserve
/// for listeners, probes and the control socket) and the ephemeral port range allow. Each
/// upstream socket takes one of each. With one socket per flow, that is the cap; with the
/// pool, a socket serves one flow per backend, so the cap is multiplied by the backends of
/// the largest cluster at start (flows spread over them; if they crowd onto fewer backends,
/// the flows the pool cannot place are dropped as `upstream_open_failed`, never worse).
pub fn default_max_flows(nofile: u64, config: &udplb_core::Config) -> u32 {
    let by_descriptors = nofile.saturating_sub(256);
    let sockets = by_descriptors.min(ephemeral_ports()).max(1);
    let per_socket = match config.process.upstream_mode {
        udplb_core::config::UpstreamMode::PerFlow => 1,
        udplb_core::config::UpstreamMode::Pool => {
            config.clusters.values().map(|cluster| cluster.backends.len() as u64).max().unwrap_or(1).max(1)
        }
    };
    u32::try_from(sockets.saturating_mul(per_socket)).unwrap_or(u32::MAX)
}

/// 16 bytes from the kernel's random source: the per-process flow-table key.
pub fn random_table_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = random.read_exact(&mut key);
    }
    key
}

/// The UNIQUE_ID prefix of worker `worker` of this process: `process` (6 bytes drawn once per
/// process from the kernel's random source), then the worker's number, big-endian.
pub fn unique_prefix(process: [u8; 6], worker: u32) -> [u8; 8] {
    let mut prefix = [0u8; 8];
    prefix[..6].copy_from_slice(&process);
    prefix[6..].copy_from_slice(&(worker as u16).to_be_bytes());
    prefix
}

/// 6 bytes from the kernel's random source: this process's part of every UNIQUE_ID.
pub fn random_process_id() -> [u8; 6] {
    let mut id = [0u8; 6];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = random.read_exact(&mut id);
    }
    id
}

/// Tells systemd (when it started us with `Type=notify`) about a state change:
/// `READY=1`, `RELOADING=1`, `STOPPING=1`. Does nothing outside systemd.
///
/// `RELOADING=1` carries `MONOTONIC_USEC`, which `Type=notify-reload` and newer systemd use to
/// tell this reload from an earlier one. An abstract socket (`@name`) is addressed as such.
pub fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let mut message = state.to_owned();
    if state.starts_with("RELOADING=") {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime only writes the struct we pass.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } == 0 {
            let micros = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
            message.push_str(&format!("\nMONOTONIC_USEC={micros}"));
        }
    }
    let path = path.to_string_lossy().into_owned();
    let _ = match path.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|address| socket.send_to_addr(message.as_bytes(), &address)),
        None => socket.send_to(message.as_bytes(), &path),
    };
}

/// Datagrams the kernel dropped for a socket before anyone read them (mostly a full receive
/// queue): the socket's `sk_drops`, the same counter `SO_RXQ_OVFL` reports with each datagram
/// and `/proc/net/udp` shows in its `drops` column. Read with `getsockopt(SO_MEMINFO)`, one
/// cheap call per listener per scrape (Linux 4.12 and later); on older kernels, from the
/// `/proc/net/udp` line whose inode is the socket's. The kernel keeps it in 32 bits, so it
/// wraps, which Prometheus treats as a counter reset.
pub fn socket_drops(fd: std::os::fd::RawFd) -> Option<u64> {
    const DROPS: usize = libc::SK_MEMINFO_DROPS as usize;
    let mut meminfo = [0u32; DROPS + 1];
    let mut length = std::mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: the kernel writes at most `length` bytes into `meminfo` and updates `length`.
    let status = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_MEMINFO, meminfo.as_mut_ptr().cast(), &mut length)
    };
    if status == 0 && length as usize >= std::mem::size_of_val(&meminfo) {
        return Some(u64::from(meminfo[DROPS]));
    }
    // SAFETY: fstat fills the struct we pass.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } != 0 {
        return None;
    }
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|table| proc_net_udp_drops(&table, stat.st_ino))
}

/// The `drops` column of the `/proc/net/udp` line for socket inode `inode`.
fn proc_net_udp_drops(table: &str, inode: u64) -> Option<u64> {
    // Columns: sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
    // timeout inode ref pointer drops.
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let line_inode = columns.get(9)?.parse::<u64>().ok()?;
        if line_inode != inode {
            return None;
        }
        columns.get(12)?.parse::<u64>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_udp_drops_are_found_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 123: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
            \x20 124: 0100007F:14EA 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0\n";
        assert_eq!(proc_net_udp_drops(table, 4242), Some(17));
        assert_eq!(proc_net_udp_drops(table, 4343), Some(0));
        assert_eq!(proc_net_udp_drops(table, 1), None);
    }

    #[test]
    fn a_fresh_socket_has_dropped_nothing() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(socket.as_raw_fd()), Some(0));
    }
}

/// `time` in ISO 8601, UTC, with milliseconds: `2026-12-03T04:10:11.123Z`. A time before
/// 1970 prints as the epoch.
pub fn iso8601_utc(time: std::time::SystemTime) -> String {
    let since = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        (of_day % 3600) / 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01: the calendar's 400-year cycle
/// counted from 0000-03-01, so that the leap day ends each year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod time_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::iso8601_utc;

    #[test]
    fn wall_clock_times_print_in_iso_8601() {
        let at = |seconds: u64, millis: u64| {
            iso8601_utc(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century year divisible by 400) and the day after.
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00.000Z");
        assert_eq!(at(1_796_270_411, 123), "2026-12-03T04:00:11.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }
}
