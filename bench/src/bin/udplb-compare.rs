//! `udplb-compare`: the driver that `bench/compare` runs (see `udplb_bench::compare`).

use clap::Parser;
use udplb_bench::compare::{self, CompareOptions};

fn main() -> anyhow::Result<()> {
    compare::run(CompareOptions::parse())
}
