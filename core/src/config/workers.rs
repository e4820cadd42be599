//! How a process with several workers splits its budgets. Each worker (a thread with its own
//! listener sockets, flow table and upstream sockets) enforces its own caps, so a process-wide
//! budget becomes one share per worker. The shell runs its workers with these configurations
//! and the simulator its simulated workers, so both split alike.

use super::Config;

/// The flow cap of one of `workers` workers: the cap split evenly, rounded up (so the workers
/// together may hold up to `workers - 1` flows more than the cap, and each at least one).
pub fn worker_share(max_flows: u32, workers: u32) -> u32 {
    max_flows.div_ceil(workers.max(1)).max(1)
}

/// What one of `workers` workers runs: the file's configuration with every process-wide
/// budget split between the workers — `max_flows` (the file's, or `default_max_flows`), each
/// listener's `max_flows`, and `retry_buffer_bytes` — since each worker enforces its own.
pub fn worker_config(config: &Config, workers: u32, default_max_flows: u32) -> Config {
    let mut effective = config.clone();
    let process = &mut effective.process;
    process.max_flows = Some(worker_share(process.max_flows.unwrap_or(default_max_flows), workers));
    if workers > 1 {
        process.retry_buffer_bytes = Some(process.retry_buffer_bytes() / workers);
        for listener in effective.listeners.values_mut() {
            listener.max_flows = listener.max_flows.map(|cap| worker_share(cap, workers));
        }
    }
    effective
}

#[cfg(test)]
mod tests {
    use super::{worker_config, worker_share};
    use crate::Config;

    #[test]
    fn every_process_wide_budget_is_split_between_workers() {
        let config = Config::from_toml_str(
            "[process]\nretry_buffer_bytes = 1000\n[listeners.l]\naddress = \"127.0.0.1:53\"\ncluster = \"c\"\nmax_flows = 101\n\
             [clusters.c]\nbackends = [{ id = \"b\", address = \"127.0.0.1:54\" }]\n",
        )
        .unwrap();
        let one = worker_config(&config, 1, 5000);
        assert_eq!((one.process.max_flows, one.process.retry_buffer_bytes), (Some(5000), Some(1000)));
        assert_eq!(one.listeners["l"].max_flows, Some(101));
        let two = worker_config(&config, 2, 5000);
        assert_eq!((two.process.max_flows, two.process.retry_buffer_bytes), (Some(2500), Some(500)));
        assert_eq!(two.listeners["l"].max_flows, Some(51));
    }

    #[test]
    fn the_flow_cap_is_split_evenly() {
        assert_eq!(worker_share(65_536, 1), 65_536);
        assert_eq!(worker_share(65_536, 2), 32_768);
        assert_eq!(worker_share(10, 3), 4);
        assert_eq!(worker_share(1, 4), 1);
    }
}
