//! The workloads, and the generator arguments and proxy teardown of each case.

use crate::proxy_config::Teardown;

/// How the generator drives a case.
#[derive(Copy, Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Drive {
    /// `flows` sockets, `window` datagrams outstanding on each.
    ClosedLoop { flows: u32, window: u32 },
    /// `flows` sockets, `rate` datagrams per second in total.
    OpenLoop { flows: u32, rate: u32 },
    /// `flows × window` requests in flight, each on a fresh socket.
    FreshFlowPerRequest { flows: u32, window: u32 },
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Case {
    pub name: String,
    pub workload: &'static str,
    pub teardown: Teardown,
    pub drive: Drive,
    pub size: usize,
}

/// Every case of the comparison, in the order they are run and reported.
pub fn all_cases() -> Vec<Case> {
    let closed = Drive::ClosedLoop { flows: 64, window: 8 };
    let mut cases = Vec::new();
    for size in [64, 1200] {
        cases.push(case("throughput", Teardown::Idle, closed, size));
    }
    for size in [64, 1200] {
        cases.push(case(
            "dns",
            Teardown::ResponsesOne,
            Drive::FreshFlowPerRequest { flows: 64, window: 8 },
            size,
        ));
    }
    for size in [64, 1200] {
        cases.push(case("oneshot", Teardown::OneShot, closed, size));
    }
    cases.push(case("latency", Teardown::Idle, Drive::OpenLoop { flows: 64, rate: 10_000 }, 64));
    cases
}

fn case(workload: &'static str, teardown: Teardown, drive: Drive, size: usize) -> Case {
    Case { name: format!("{workload}-{size}B"), workload, teardown, drive, size }
}

impl Case {
    /// The generator's arguments for this case (targets, timing and output flags apart).
    pub fn load_arguments(&self) -> Vec<String> {
        let mut arguments = vec!["--size".to_string(), self.size.to_string()];
        let mut push = |key: &str, value: u32| {
            arguments.push(key.to_string());
            arguments.push(value.to_string());
        };
        match self.drive {
            Drive::ClosedLoop { flows, window } => {
                push("--flows", flows);
                push("--window", window);
            }
            Drive::OpenLoop { flows, rate } => {
                push("--flows", flows);
                push("--rate", rate);
            }
            Drive::FreshFlowPerRequest { flows, window } => {
                push("--flows", flows);
                push("--window", window);
                arguments.push("--new-flow-per-request".to_string());
            }
        }
        arguments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_cover_every_workload_with_unique_names() {
        let cases = all_cases();
        let mut names: Vec<&str> = cases.iter().map(|case| case.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        for workload in ["throughput", "dns", "oneshot", "latency"] {
            assert!(cases.iter().any(|case| case.workload == workload));
        }
    }

    #[test]
    fn dns_case_asks_for_a_fresh_flow_per_request_and_responses_one() {
        let dns = all_cases().into_iter().find(|case| case.name == "dns-64B").unwrap();
        assert_eq!(dns.teardown, Teardown::ResponsesOne);
        assert_eq!(
            dns.load_arguments(),
            ["--size", "64", "--flows", "64", "--window", "8", "--new-flow-per-request"]
        );
    }
}
