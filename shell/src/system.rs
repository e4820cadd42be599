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
/// for listeners, probes and the control socket) and the ephemeral port range allow.
pub fn default_max_flows(nofile: u64) -> u32 {
    let by_descriptors = nofile.saturating_sub(256);
    let cap = by_descriptors.min(ephemeral_ports()).max(1);
    u32::try_from(cap).unwrap_or(u32::MAX)
}

/// 16 bytes from the kernel's random source: the per-process flow-table key.
pub fn random_table_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = random.read_exact(&mut key);
    }
    key
}

/// Tells systemd (when it started us with `Type=notify`) about a state change:
/// `READY=1`, `RELOADING=1`, `STOPPING=1`. Does nothing outside systemd.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(socket) => socket,
        Err(_) => return,
    };
    let path = std::path::PathBuf::from(path);
    let _ = socket.send_to(state.as_bytes(), path);
}
