//! The driver behind `bench/compare`: echo backends, the proxies under test, every case
//! against every target (interleaved, repeated), and the tables.
//!
//! Order of a run: for each teardown (idle, responses = 1, one-shot), start every proxy with
//! that teardown's configuration; then, for each repetition, for each case of that teardown,
//! run every target in turn, so that a slow spell of the machine hits all targets alike.

mod cases;
mod memory;
mod run;
mod table;
mod targets;

use crate::process::Guarded;
use crate::proxy_config::{Teardown, UdplbVariant};
use anyhow::{Context, Result, bail};
use cases::Case;
use run::{Measurement, Timing};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use targets::{Environment, TargetKind};

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "udplb-compare",
    about = "udplb against nginx's stream module and a direct path, on loopback"
)]
pub struct CompareOptions {
    /// Repetitions of every case on every target.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Seconds of each measured window.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up before each window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Every case on every target once, 1 s each: a functional check for CI. Exits non-zero
    /// only on a functional fault, never on a figure.
    #[arg(long)]
    pub smoke: bool,
    /// Instead of the cases, measure memory per established flow (RSS and kernel sockets).
    #[arg(long)]
    pub memory: bool,
    /// Flows held open by the memory run.
    #[arg(long, default_value_t = 100_000)]
    pub memory_flows: u32,
    /// An extra udplb target, `NAME:KEY=VALUE,...`, its settings added to `[process]`
    /// (for example `udplb-2w:workers=2`). Repeatable.
    #[arg(long = "udplb-variant")]
    pub udplb_variants: Vec<String>,
    /// Only these cases (comma-separated names, such as `throughput-64B,dns-64B`).
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Leave nginx out (when it cannot be installed).
    #[arg(long)]
    pub no_nginx: bool,
    /// The udplb binary (default: `udplb` beside this program).
    #[arg(long)]
    pub udplb: Option<PathBuf>,
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// nginx's dynamic stream module, loaded with `load_module` when given.
    #[arg(long)]
    pub nginx_stream_module: Option<PathBuf>,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    pub load_threads: u32,
    /// First port: backends on +1..+4, proxies from +100.
    #[arg(long, default_value_t = 17_000)]
    pub base_port: u16,
    /// Where to write every measurement as JSON.
    #[arg(long, default_value = "target/udplb-bench/compare.json")]
    pub out: PathBuf,
}

/// Runs the comparison; an error is a functional fault or a failure to start something.
pub fn run(mut options: CompareOptions) -> Result<()> {
    crate::process::install_cleanup_on_signals()?;
    if options.smoke {
        options.repeat = 1;
        options.duration = 1.0;
        options.warmup = 0.3;
    }
    // Room for every flow the memory run holds, in the proxies and generators this starts.
    let nofile = crate::process::raise_nofile(1_048_576);
    let temp_dir = std::env::temp_dir().join(format!("udplb-bench-{}", std::process::id()));
    std::fs::create_dir_all(&temp_dir)?;
    let backends: Vec<SocketAddr> =
        (1..=4).map(|n| SocketAddr::from(([127, 0, 0, 1], options.base_port + n))).collect();
    let environment = Environment {
        udplb_binary: match &options.udplb {
            Some(path) => path.clone(),
            None => targets::default_udplb_binary()?,
        },
        nginx_binary: options.nginx.clone(),
        nginx_stream_module: options.nginx_stream_module.clone(),
        temp_dir: temp_dir.clone(),
        backends: backends.clone(),
        max_flows: 300_000,
    };
    let mut targets = vec![TargetKind::Direct];
    if !options.no_nginx {
        targets.push(TargetKind::Nginx);
    }
    targets.push(TargetKind::Udplb(UdplbVariant { name: "udplb".into(), process_settings: Vec::new() }));
    for text in &options.udplb_variants {
        targets.push(TargetKind::Udplb(UdplbVariant::parse(text)?));
    }
    let bin_dir = std::env::current_exe()?.parent().context("exe dir")?.to_path_buf();
    let mut echo = start_echo(&bin_dir, &backends)?;
    println!(
        "udplb-compare: {} cores, RLIMIT_NOFILE {nofile}, backends {:?}, files in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        backends,
        temp_dir.display()
    );
    let outcome = if options.memory {
        memory::run(&options, &environment, &targets, &bin_dir)
    } else {
        compare_cases(&options, &environment, &targets, &bin_dir)
    };
    echo.stop();
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&temp_dir);
    } else {
        eprintln!("udplb-compare: logs kept in {}", temp_dir.display());
    }
    outcome
}

fn start_echo(bin_dir: &std::path::Path, backends: &[SocketAddr]) -> Result<Guarded> {
    let mut command = Command::new(bin_dir.join("udplb-echo"));
    for backend in backends {
        command.arg("--listen").arg(backend.to_string());
    }
    command.args(["--max-seconds", "7200"]).stdin(Stdio::null()).stdout(Stdio::null());
    let echo = Guarded::spawn("udplb-echo", &mut command)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    Ok(echo)
}

fn compare_cases(
    options: &CompareOptions,
    environment: &Environment,
    targets: &[TargetKind],
    bin_dir: &std::path::Path,
) -> Result<()> {
    let cases: Vec<Case> = cases::all_cases()
        .into_iter()
        .filter(|case| options.cases.is_empty() || options.cases.contains(&case.name))
        .collect();
    if cases.is_empty() {
        bail!("no case matches {:?}", options.cases);
    }
    let timing = Timing {
        warmup_seconds: options.warmup,
        duration_seconds: options.duration,
        load_threads: options.load_threads,
    };
    let load_binary = bin_dir.join("udplb-load");
    let mut measurements: Vec<Measurement> = Vec::new();
    let mut faults = Vec::new();
    for teardown in [Teardown::Idle, Teardown::ResponsesOne, Teardown::OneShot] {
        let group: Vec<&Case> = cases.iter().filter(|case| case.teardown == teardown).collect();
        if group.is_empty() {
            continue;
        }
        let mut running = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            let listen = SocketAddr::from(([127, 0, 0, 1], options.base_port + 100 + index as u16));
            running.push(target.start(environment, teardown, listen)?);
        }
        for repetition in 0..options.repeat {
            for case in &group {
                for target in &running {
                    let measurement = run::measure(&load_binary, case, target, repetition, &timing)?;
                    println!(
                        "  {:<16} {:<14} #{} {}",
                        case.name,
                        target.name,
                        repetition + 1,
                        measurement.load.human_line()
                    );
                    if let Some(fault) = measurement.fault() {
                        eprintln!("FAULT: {fault}\n{}", target.log_tail());
                        faults.push(fault);
                    }
                    measurements.push(measurement);
                }
            }
        }
        for target in running {
            target.stop();
        }
    }
    let case_names: Vec<String> = cases.iter().map(|case| case.name.clone()).collect();
    let target_names: Vec<String> = targets.iter().map(|target| target.name().to_string()).collect();
    let udplb_names: Vec<String> =
        targets.iter().filter(|t| matches!(t, TargetKind::Udplb(_))).map(|t| t.name().to_string()).collect();
    println!(
        "\n{} repetition(s) of {} s (after {} s of warm-up) per case and target; median (min–max).\n",
        options.repeat, options.duration, options.warmup
    );
    println!("{}", table::results(&case_names, &target_names, &measurements));
    println!("{}", table::ratios(&case_names, &udplb_names, &measurements));
    write_json(&options.out, &serde_json::json!({ "cases": cases, "measurements": measurements }))?;
    println!("raw results: {}", options.out.display());
    if !faults.is_empty() {
        bail!("{} functional fault(s): {}", faults.len(), faults.join("; "));
    }
    Ok(())
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}
