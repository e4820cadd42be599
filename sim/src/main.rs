//! `udplb-sim`: runs scenario files and prints a verdict table.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use udplb_sim::scenario::Scenario;

#[derive(Parser)]
#[command(name = "udplb-sim", about = "Deterministic simulator for udplb scenario files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files (a file, or every *.toml in a directory) and print verdicts.
    Run {
        path: PathBuf,
        /// Run with this seed instead of each scenario's own.
        #[arg(long)]
        seed: Option<u64>,
        /// Print each scenario's trace too.
        #[arg(long)]
        trace: bool,
    },
    /// Run scenarios and write an HTML page with an SVG timeline for each.
    Report {
        path: PathBuf,
        /// Where to write the page.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Run every scenario with many seeds, drawing each seed's network faults from the
    /// scenario's envelope (swarm testing). Prints a reproduction command for every failure.
    Sweep {
        path: PathBuf,
        /// How many seeds per scenario.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { path, seed, trace } => run(&path, seed, trace),
        Command::Sweep { path, seeds, from } => sweep(&path, from, seeds),
        Command::Report { path, out } => report(&path, &out),
    }
}

fn run(path: &std::path::Path, seed: Option<u64>, show_trace: bool) -> ExitCode {
    let files = match udplb_sim::scenario_files(path) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("{}: no scenario files", path.display());
            return ExitCode::from(2);
        }
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let mut failed = 0;
    println!("{:<34} {:>6} {:>10} {:>12}  result", "scenario", "seed", "events", "expectations");
    for file in &files {
        let scenario = match Scenario::load(file) {
            Ok(scenario) => scenario,
            Err(error) => {
                println!("{:<34} {:>6} {:>10} {:>12}  INVALID", file.display(), "-", "-", "-");
                eprintln!("{error}");
                failed += 1;
                continue;
            }
        };
        let report = udplb_sim::run(&scenario, file, seed);
        let held = report.verdicts.iter().filter(|v| v.passed).count();
        let result = if report.passed() { "ok" } else { "FAILED" };
        println!(
            "{:<34} {:>6} {:>10} {:>12}  {result}",
            report.name,
            report.seed,
            report.events,
            format!("{held}/{}", report.verdicts.len())
        );
        if !report.passed() {
            failed += 1;
            for verdict in report.verdicts.iter().filter(|v| !v.passed) {
                println!("    expected {}: got {}", verdict.what, verdict.detail);
            }
            for violation in &report.violations {
                println!("    invariant: {violation}");
            }
            println!(
                "    reproduce: cargo run --release -p udplb-sim -- run {} --seed {}",
                file.display(),
                report.seed
            );
        }
        if show_trace {
            print!("{}", report.trace);
        }
    }
    println!("{} scenarios, {} failed", files.len(), failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn sweep(path: &std::path::Path, from: u64, seeds: u64) -> ExitCode {
    let files = match udplb_sim::scenario_files(path) {
        Ok(files) if !files.is_empty() => files,
        _ => {
            eprintln!("{}: no scenario files", path.display());
            return ExitCode::from(2);
        }
    };
    let mut scenarios = Vec::new();
    for file in &files {
        match Scenario::load(file) {
            Ok(scenario) => scenarios.push((file.clone(), scenario)),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
        }
    }
    let total = scenarios.len() as u64 * seeds;
    let started = std::time::Instant::now();
    let (mut done, mut failures, mut events, mut delivered) = (0u64, 0u64, 0u64, 0u64);
    for seed in from..from + seeds {
        for (file, scenario) in &scenarios {
            let drawn = scenario.with_faults_drawn(seed);
            let report = udplb_sim::run(&drawn, file, Some(seed));
            events += report.events;
            delivered += report.delivered;
            done += 1;
            if !report.passed() {
                failures += 1;
                println!("FAILED {} seed {seed}", report.name);
                for verdict in report.verdicts.iter().filter(|v| !v.passed) {
                    println!("    expected {}: got {}", verdict.what, verdict.detail);
                }
                for violation in &report.violations {
                    println!("    invariant: {violation}");
                }
                println!(
                    "    reproduce: cargo run --release -p udplb-sim -- sweep {} --seeds 1 --from {seed}",
                    file.display()
                );
            }
            if done % (total / 10).max(1) == 0 {
                eprintln!(
                    "  {done}/{total} runs, {failures} failed, {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{total} runs ({} scenarios x {seeds} seeds), {failures} failed, {seconds:.1}s wall, {events} events, \
         {delivered} datagrams delivered ({:.0} per second)",
        scenarios.len(),
        delivered as f64 / seconds.max(1e-9)
    );
    if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn report(path: &std::path::Path, out: &std::path::Path) -> ExitCode {
    let Ok(files) = udplb_sim::scenario_files(path) else {
        eprintln!("{}: no scenario files", path.display());
        return ExitCode::from(2);
    };
    let mut reports = Vec::new();
    for file in &files {
        match Scenario::load(file) {
            Ok(scenario) => reports.push(udplb_sim::run(&scenario, file, None)),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(error) = std::fs::write(out, udplb_sim::report::html(&reports)) {
        eprintln!("{}: {error}", out.display());
        return ExitCode::from(2);
    }
    let failed = reports.iter().filter(|r| !r.passed()).count();
    println!("wrote {} ({} scenarios, {failed} failed)", out.display(), reports.len());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
