//! One measurement: the generator against one target for one case, with the proxy's CPU time
//! read from /proc at the edges of the measured window.

use super::cases::Case;
use super::targets::Running;
use crate::load::LoadReport;
use crate::process::{Guarded, Watchdog};
use crate::procfs;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Measurement {
    pub case: String,
    pub target: String,
    pub repetition: u32,
    pub load: LoadReport,
    /// CPU seconds the proxy used inside the measured window (none for the direct path).
    pub proxy_cpu_seconds: Option<f64>,
}

impl Measurement {
    /// Replies per second of proxy CPU time.
    pub fn replies_per_cpu_second(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_seconds.filter(|cpu| *cpu > 0.0)?;
        Some(self.load.received_in_window as f64 / cpu)
    }

    /// Proxy CPU microseconds per forwarded datagram: each reply is two datagrams forwarded
    /// (client to backend, backend to client).
    pub fn cpu_us_per_datagram(&self) -> Option<f64> {
        let cpu = self.proxy_cpu_seconds?;
        let datagrams = 2 * self.load.received_in_window;
        (datagrams > 0).then(|| cpu * 1e6 / datagrams as f64)
    }

    pub fn cpu_percent(&self) -> Option<f64> {
        Some(self.proxy_cpu_seconds? / self.load.window_seconds * 100.0)
    }

    /// A functional fault, as opposed to a performance figure: nothing came back, or a reply
    /// reached a flow that did not send it.
    pub fn fault(&self) -> Option<String> {
        if self.load.replies == 0 {
            return Some(format!("{} / {}: no replies", self.case, self.target));
        }
        if self.load.misdelivered > 0 || self.load.wrong_source > 0 {
            return Some(format!(
                "{} / {}: {} misdelivered, {} from a wrong source",
                self.case, self.target, self.load.misdelivered, self.load.wrong_source
            ));
        }
        None
    }
}

pub struct Timing {
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    pub load_threads: u32,
}

pub fn measure(
    load_binary: &Path,
    case: &Case,
    target: &Running,
    repetition: u32,
    timing: &Timing,
) -> Result<Measurement> {
    let mut command = Command::new(load_binary);
    for address in &target.addresses {
        command.arg("--target").arg(address.to_string());
    }
    command
        .args(case.load_arguments())
        .args(["--duration", &timing.duration_seconds.to_string()])
        .args(["--warmup", &timing.warmup_seconds.to_string()])
        .args(["--threads", &timing.load_threads.to_string()])
        .args(["--markers", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut load = Guarded::spawn("udplb-load", &mut command)?;
    let bound = Duration::from_secs_f64(timing.warmup_seconds + timing.duration_seconds + 20.0);
    let _watchdog = Watchdog::arm(load.pid(), bound);
    let stdout = load.child_mut().stdout.take().context("generator stdout")?;
    let pids = target.measured_pids();
    let (mut cpu_start, mut cpu_end, mut report) = (None, None, None);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        match line.as_str() {
            "#measure-start" => cpu_start = Some(procfs::cpu_seconds(&pids)?),
            "#measure-end" => cpu_end = Some(procfs::cpu_seconds(&pids)?),
            json if json.starts_with('{') => report = Some(serde_json::from_str::<LoadReport>(json)?),
            _ => {}
        }
    }
    let status = load.wait_bounded(Duration::from_secs(5))?;
    let Some(report) = report else {
        bail!("the generator printed no report for {} / {} ({status})", case.name, target.name);
    };
    let proxy_cpu_seconds = match (cpu_start, cpu_end) {
        (Some(start), Some(end)) if !pids.is_empty() => Some(end - start),
        _ => None,
    };
    Ok(Measurement {
        case: case.name.clone(),
        target: target.name.clone(),
        repetition,
        load: report,
        proxy_cpu_seconds,
    })
}
