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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { path, seed, trace } => run(&path, seed, trace),
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
