//! `udplb-load`: the load generator (see `udplb_bench::load`).

use clap::Parser;
use udplb_bench::load::{self, LoadOptions};

fn main() -> anyhow::Result<()> {
    let options = LoadOptions::parse();
    let report = load::run(&options)?;
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.human_line());
    }
    Ok(())
}
