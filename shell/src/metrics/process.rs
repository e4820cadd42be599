//! Metrics about the process itself: what is running (`build_info`), since when, how much
//! memory and how many descriptors it holds against its limit, and how its reloads went.
//! Read from `/proc/self` at scrape time (Linux), never on the datapath.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{ReloadCounters, Scrape, saturating_i64};

pub(super) fn metrics(scrape: &mut Scrape, reloads: &ReloadCounters) {
    let version = env!("CARGO_PKG_VERSION").to_owned();
    scrape.gauge(
        "build_info",
        "The running udplb: always 1, its version as a label",
        vec![("version", version)],
        1,
    );
    if let Some(started) = start_time() {
        scrape.gauge("process_start_time_seconds", "When the process started, in Unix time", vec![], started);
    }
    if let Some(resident) = resident_memory_bytes() {
        scrape.gauge("process_resident_memory_bytes", "Resident memory of the process", vec![], resident);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries: not counted.
        let open = entries.count().saturating_sub(1);
        scrape.gauge("process_open_fds", "Open file descriptors", vec![], saturating_i64(open as u64));
    }
    if let Some(limit) = descriptor_limit() {
        scrape.gauge("process_max_fds", "The limit on open file descriptors (RLIMIT_NOFILE)", vec![], limit);
    }
    for (outcome, count) in [("success", reloads.succeeded), ("failure", reloads.failed)] {
        scrape.counter(
            "reloads",
            "Configuration reloads (SIGHUP, systemctl reload, udplb ctl reload) by outcome; a failure keeps the running configuration",
            vec![("outcome", outcome.to_owned())],
            count,
        );
    }
    for (name, help, at) in [
        (
            "last_reload_success_timestamp_seconds",
            "When the last successful reload was applied, in Unix time",
            reloads.last_success,
        ),
        (
            "last_reload_failure_timestamp_seconds",
            "When the last reload was refused, in Unix time",
            reloads.last_failure,
        ),
    ] {
        if let Some(at) = at {
            scrape.gauge(name, help, vec![], unix_seconds(at));
        }
    }
}

fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| saturating_i64(since.as_secs()))
}

/// The process's start: field 22 of `/proc/self/stat` (clock ticks after boot) plus the boot
/// time (`btime` in `/proc/stat`).
fn start_time() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|n| *n > 0)?;
    Some(saturating_i64(boot + ticks / per_second))
}

/// Resident pages (field 2 of `/proc/self/statm`) times the page size.
fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    Some(saturating_i64(pages.saturating_mul(page)))
}

fn descriptor_limit() -> Option<i64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(saturating_i64(limit.rlim_cur))
}
