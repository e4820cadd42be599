//! `udplb-sim`: runs scenario files and prints a verdict table.

use std::path::PathBuf;
use std::process::ExitCode;

use udplb_sim::scenario::Scenario;

// A run allocates and frees a few small buffers per simulated datagram; mimalloc took about a
// tenth off a sweep's time against the system allocator (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
udplb-sim: deterministic simulator for udplb scenario files

usage:
  udplb-sim run PATH [--seed N] [--trace] [--trace-flows] [--config FILE] [--junit FILE]
      Run scenario files (a file, or every *.toml in a directory) and print verdicts.
      --seed N        run with this seed instead of each scenario's own
      --trace         print each scenario's trace too
      --trace-flows   print a detailed trace: every flow (opened on which instance and
                      worker, to which backend; closed, why) and every probe
      --config FILE   run against this udplb configuration file (as `udplb run -c FILE`
                      reads it) in place of each scenario's own [lb]
      --junit FILE    also write a JUnit XML report to FILE (deterministic: no wall clock)
  udplb-sim report PATH [--out FILE]
      Run scenarios and write an HTML page with an SVG timeline for each
      (default FILE: report.html).
  udplb-sim sweep PATH [--seeds N] [--from N] [--jobs N] [--recheck N] [--shrink-out DIR]
                       [--mutant NAME]
      Run every scenario with many seeds (default 100, from seed 1) on N worker threads
      (default 2). Each seed draws which of the envelope's faults are on and how hard; each
      run ends with a liveness phase (every fault healed; every client answered and every
      enabled backend Up in time). Every N-th run (default 50, 0: none) runs twice and
      must hash the same. Prints each failure with its draw and a reproduction command,
      then a table of rare branches reached. --shrink-out DIR: reduce the first failure of
      each scenario to a minimal scenario file in DIR. --mutant NAME: switch a core mutant
      on (needs a build with --features mutants).

exit status (run, report and sweep alike):
  0  every scenario passed
  1  at least one scenario failed an expectation or broke an invariant
  2  usage error, no scenario files, a file that cannot be read or is not a valid scenario
     (or configuration), or a report that cannot be written; with `run`, the valid
     scenarios still run and are reported, and 2 wins over 1
";

enum Command {
    Run {
        path: PathBuf,
        seed: Option<u64>,
        trace: bool,
        flows: bool,
        config: Option<PathBuf>,
        junit: Option<PathBuf>,
    },
    Report {
        path: PathBuf,
        out: PathBuf,
    },
    Sweep(udplb_sim::sweep::Options),
}

/// Reads the command line: one subcommand, one path, and the subcommand's options (as
/// `--name value` or `--name=value`, in any order).
fn parse(args: &[String]) -> Result<Command, String> {
    let (command, rest) = args.split_first().ok_or("no command given")?;
    let mut path = None;
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        if let Some(name) = word.strip_prefix("--") {
            let (name, value) = match name.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None if name == "trace" || name == "trace-flows" => (name.to_owned(), None),
                None => {
                    (name.to_owned(), Some(words.next().ok_or(format!("--{name} needs a value"))?.clone()))
                }
            };
            options.push((name, value));
        } else if path.replace(PathBuf::from(word)).is_some() {
            return Err(format!("unexpected argument {word:?}"));
        }
    }
    let path = path.ok_or("no PATH given")?;
    let number = |name: &str, value: &Option<String>| -> Result<u64, String> {
        let value = value.as_deref().unwrap_or_default();
        value.parse().map_err(|_| format!("--{name} takes a whole number, not {value:?}"))
    };
    match command.as_str() {
        "run" => {
            let (mut seed, mut trace, mut flows, mut config, mut junit) = (None, false, false, None, None);
            for (name, value) in &options {
                match (name.as_str(), value) {
                    ("seed", _) => seed = Some(number(name, value)?),
                    ("trace", None) => trace = true,
                    ("trace-flows", None) => (trace, flows) = (true, true),
                    ("config", Some(value)) => config = Some(PathBuf::from(value)),
                    ("junit", Some(value)) => junit = Some(PathBuf::from(value)),
                    _ => return Err(format!("run takes no option --{name}")),
                }
            }
            Ok(Command::Run { path, seed, trace, flows, config, junit })
        }
        "report" => {
            let mut out = PathBuf::from("report.html");
            for (name, value) in &options {
                match (name.as_str(), value) {
                    ("out", Some(value)) => out = PathBuf::from(value),
                    _ => return Err(format!("report takes no option --{name}")),
                }
            }
            Ok(Command::Report { path, out })
        }
        "sweep" => {
            let mut sweep = udplb_sim::sweep::Options::new(path);
            for (name, value) in &options {
                sweep.set(name, value.as_deref())?;
            }
            Ok(Command::Sweep(sweep))
        }
        other => Err(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h" || a == "help") {
        print!("{USAGE}");
        return if args.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    match parse(&args) {
        Ok(Command::Run { path, seed, trace, flows, config, junit }) => {
            run(&path, seed, trace, flows, config.as_deref(), junit.as_deref())
        }
        Ok(Command::Sweep(options)) => sweep(&options),
        Ok(Command::Report { path, out }) => report(&path, &out),
        Err(error) => {
            eprint!("udplb-sim: {error}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(
    path: &std::path::Path,
    seed: Option<u64>,
    show_trace: bool,
    flows: bool,
    config: Option<&std::path::Path>,
    junit: Option<&std::path::Path>,
) -> ExitCode {
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
    // Every file's outcome, in order: a report (and its reproduction command) or an error.
    let mut outcomes: Vec<Result<(udplb_sim::RunReport, String), String>> = Vec::new();
    let (mut failed, mut invalid) = (0, 0);
    println!("{:<34} {:>6} {:>10} {:>12}  result", "scenario", "seed", "events", "expectations");
    for file in &files {
        let loaded = match config {
            Some(config) => Scenario::load_with_config(file, config),
            None => Scenario::load(file),
        };
        let scenario = match loaded {
            Ok(scenario) => scenario,
            Err(error) => {
                println!("{:<34} {:>6} {:>10} {:>12}  INVALID", file.display(), "-", "-", "-");
                eprintln!("{error}");
                invalid += 1;
                outcomes.push(Err(error.to_string()));
                continue;
            }
        };
        let report = udplb_sim::run_traced(&scenario, file, seed, flows);
        let reproduce = udplb_sim::junit::reproduce_command(file, report.seed, config);
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
            println!("    reproduce: {reproduce}");
        }
        if show_trace {
            print!("{}", report.trace);
        }
        outcomes.push(Ok((report, reproduce)));
    }
    let invalid_note = if invalid > 0 { format!(", {invalid} invalid") } else { String::new() };
    println!("{} scenarios, {} failed{invalid_note}", files.len(), failed);
    if let Some(out) = junit {
        use udplb_sim::junit::Case;
        let cases: Vec<Case<'_>> = files
            .iter()
            .zip(&outcomes)
            .map(|(file, outcome)| match outcome {
                Ok((report, reproduce)) => Case::Ran { report, reproduce: reproduce.clone() },
                Err(error) => Case::Invalid { file, error: error.clone() },
            })
            .collect();
        let xml = udplb_sim::junit::render(&path.display().to_string(), &cases);
        if let Err(error) = std::fs::write(out, xml) {
            eprintln!("{}: cannot write the JUnit report: {error}", out.display());
            return ExitCode::from(2);
        }
    }
    match (invalid, failed) {
        (0, 0) => ExitCode::SUCCESS,
        (0, _) => ExitCode::FAILURE,
        _ => ExitCode::from(2),
    }
}

fn sweep(options: &udplb_sim::sweep::Options) -> ExitCode {
    match udplb_sim::sweep::sweep(options, &mut std::io::stdout()) {
        Ok(totals) if totals.failures == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("udplb-sim: {error}");
            ExitCode::from(2)
        }
    }
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
