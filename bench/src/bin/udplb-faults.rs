//! `udplb-faults`: the programs `ci/netns` runs inside its network namespaces (a backend, the
//! load) and the analysis of each fault case (`analyze`, `table`). See `docs/faults.md`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use udplb_bench::faults::{analyze, backend, load};

#[derive(Parser)]
#[command(name = "udplb-faults", about = "The real-fault suite's backend, load and analysis (ci/netns)")]
struct Options {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A UDP server that answers with its name written in, plus a TCP port that accepts.
    /// SIGUSR1: answer from --alt-port; SIGUSR2: from the data port again.
    Backend(backend::Options),
    /// Open-loop load over long-lived sockets; records every request's fate, scrapes metrics.
    Load {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 60)]
        sockets: usize,
        /// Requests per second, all sockets together.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
        /// Bytes per request (at least 32).
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1000)]
        loss_timeout_ms: u64,
        /// udplb's metrics_addr, scraped every --scrape-interval-ms.
        #[arg(long)]
        metrics: Option<SocketAddr>,
        #[arg(long, default_value_t = 100)]
        scrape_interval_ms: u64,
        #[arg(long)]
        records: PathBuf,
        #[arg(long)]
        scrapes: PathBuf,
    },
    /// Figures and target checks for one case; appends a line to --results.
    Analyze(analyze::Options),
    /// Prints every case of --results as one table; exits 1 if any target was missed.
    Table {
        #[arg(long)]
        results: PathBuf,
        #[arg(long, default_value = "b2")]
        victim: String,
    },
}

fn main() -> Result<()> {
    match Options::parse().command {
        Command::Backend(options) => backend::run(options),
        Command::Load {
            target,
            sockets,
            rate,
            seconds,
            size,
            loss_timeout_ms,
            metrics,
            scrape_interval_ms,
            records,
            scrapes,
        } => load::run(load::Options {
            target,
            sockets,
            rate,
            seconds,
            size,
            loss_timeout: Duration::from_millis(loss_timeout_ms),
            metrics,
            scrape_interval: Duration::from_millis(scrape_interval_ms),
            records,
            scrapes,
        }),
        Command::Analyze(options) => {
            let row = analyze::run(options)?;
            println!(
                "{}: lost {}+{} (before the fault {}), shares before {} during {} after {}, {}",
                row.case,
                row.lost_in_fault,
                row.lost_after_fault,
                row.lost_before_fault,
                analyze::percentages(&row.shares_before),
                analyze::percentages(&row.shares_during),
                analyze::percentages(&row.shares_after),
                if row.failures.is_empty() {
                    "targets met".to_string()
                } else {
                    format!("MISSED: {}", row.failures.join("; "))
                }
            );
            Ok(())
        }
        Command::Table { results, victim } => {
            let missed = analyze::table(&results, &victim)?;
            if missed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
