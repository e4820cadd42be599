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
    Backend {
        #[arg(long)]
        name: String,
        #[arg(long)]
        udp: SocketAddr,
        #[arg(long)]
        tcp_port: u16,
        #[arg(long)]
        alt_port: u16,
        #[arg(long, default_value_t = 3600)]
        max_seconds: u64,
    },
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
    Analyze {
        #[arg(long)]
        case: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        victim: String,
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        #[arg(long)]
        fault_start_us: u64,
        #[arg(long)]
        fault_end_us: u64,
        /// Targets beyond the ones every case has: below-fair, loss-bound, out,
        /// refused-bound, zero-loss.
        #[arg(long, value_delimiter = ',')]
        checks: Vec<String>,
        #[arg(long, default_value_t = 0.0)]
        loss_rate: f64,
        #[arg(long, default_value_t = 30.0)]
        quiet_seconds: f64,
        #[arg(long, default_value_t = 15.0)]
        recover_within_seconds: f64,
        #[arg(long, default_value_t = 3.0)]
        out_within_seconds: f64,
        #[arg(long, default_value_t = 5.0)]
        below_fair_within_seconds: f64,
        #[arg(long)]
        records: PathBuf,
        #[arg(long)]
        scrapes: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        results: PathBuf,
    },
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
        Command::Backend { name, udp, tcp_port, alt_port, max_seconds } => {
            backend::run(backend::Options { name, udp, tcp_port, alt_port, max_seconds })
        }
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
        Command::Analyze {
            case,
            description,
            victim,
            backends,
            fault_start_us,
            fault_end_us,
            checks,
            loss_rate,
            quiet_seconds,
            recover_within_seconds,
            out_within_seconds,
            below_fair_within_seconds,
            records,
            scrapes,
            log,
            results,
        } => {
            let row = analyze::run(analyze::Options {
                case,
                description,
                victim,
                backends,
                fault_start_us,
                fault_end_us,
                checks,
                loss_rate,
                quiet_seconds,
                recover_within_seconds,
                out_within_seconds,
                below_fair_within_seconds,
                records,
                scrapes,
                log,
                results,
            })?;
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
