//! Turns one fault case's records (the client's), scrapes (udplb's metrics) and udplb's JSON
//! log into figures, checks the targets that apply to the case, and appends one JSON line to
//! the results file; `table` prints every case's line as one table and fails if any target was
//! missed. The definitions are in `docs/faults.md`; in short:
//!
//! - share of new requests: of the datagrams udplb sent to backends in a window, the fraction
//!   sent to one backend (`udplb_backend_datagrams_total{direction="to_backend"}`, linearly
//!   interpolated between scrapes);
//! - below fair: under 0.9 × 1/N, in the 1 s window starting then and on average from then to
//!   the end of the fault (the 10 % margin keeps round robin's ±1-datagram noise from passing for
//!   a detection);
//! - out: the victim's first `backend_down` or `backend_ejected` in the log, or the first
//!   scrape that shows it ineligible, whichever is first; a Down transition is either event
//!   (an ejection takes a backend out as surely as Down does), an Up either `backend_up` or
//!   `backend_readmitted`;
//! - recovered: from then on, every 1 s window until the end of the run has every backend's
//!   share within ±10 percentage points of fair;
//! - lost: a request with no reply within the client's loss timeout.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

/// The command line of `udplb-faults analyze`.
#[derive(clap::Args)]
pub struct Options {
    #[arg(long)]
    pub case: String,
    #[arg(long, default_value = "")]
    pub description: String,
    #[arg(long)]
    pub victim: String,
    #[arg(long, value_delimiter = ',')]
    pub backends: Vec<String>,
    #[arg(long)]
    pub fault_start_us: u64,
    #[arg(long)]
    pub fault_end_us: u64,
    /// Targets beyond the ones every case has: below-fair, loss-bound, out,
    /// refused-bound, zero-loss.
    #[arg(long, value_delimiter = ',')]
    pub checks: Vec<String>,
    #[arg(long, default_value_t = 0.0)]
    pub loss_rate: f64,
    #[arg(long, default_value_t = 30.0)]
    pub quiet_seconds: f64,
    #[arg(long, default_value_t = 15.0)]
    pub recover_within_seconds: f64,
    #[arg(long, default_value_t = 3.0)]
    pub out_within_seconds: f64,
    #[arg(long, default_value_t = 5.0)]
    pub below_fair_within_seconds: f64,
    #[arg(long)]
    pub records: PathBuf,
    #[arg(long)]
    pub scrapes: PathBuf,
    #[arg(long)]
    pub log: PathBuf,
    #[arg(long)]
    pub results: PathBuf,
}

#[derive(Deserialize)]
struct Scrape {
    t_us: u64,
    to: BTreeMap<String, f64>,
    eligible: BTreeMap<String, f64>,
}

#[derive(Debug, Clone)]
struct Event {
    t_us: u64,
    name: String,
    backend: String,
}

/// One case's figures; the line `table` reads.
#[derive(Serialize, Deserialize, Default, Debug)]
pub struct Row {
    pub case: String,
    pub description: String,
    pub fault_seconds: f64,
    pub requests: usize,
    pub requests_in_fault: usize,
    /// Seconds from the fault's start until the victim's share fell below fair (None: never).
    pub below_fair_after: Option<f64>,
    /// Seconds from the fault's start until the victim was out (log or metrics).
    pub out_after: Option<f64>,
    pub down_events_in_fault: usize,
    pub up_events_in_fault: usize,
    pub ineligible_periods_in_fault: usize,
    pub max_downs_in_60s: usize,
    pub lost_before_fault: usize,
    pub lost_in_fault: usize,
    pub lost_after_fault: usize,
    /// loss rate × requests sent during the fault × fair share (loss cases only).
    pub expected_lost: Option<f64>,
    /// Datagrams udplb sent to the victim between the fault's start and its going out.
    pub sent_to_victim_before_out: f64,
    /// The most requests the case may lose (fault and after), when a target bounds it.
    pub lost_bound: Option<f64>,
    pub shares_before: Vec<f64>,
    pub shares_during: Vec<f64>,
    pub shares_after: Vec<f64>,
    /// Victim's share of the replies the client got during the fault.
    pub victim_answered_share_during: f64,
    pub recovered_after: Option<f64>,
    /// Down transitions (any backend) in the quiet window after the fault, with their offsets.
    pub false_downs: Vec<String>,
    pub quiet_seconds: f64,
    pub failures: Vec<String>,
}

pub fn run(options: Options) -> Result<Row> {
    let records = read_records(&options.records)?;
    let scrapes = read_scrapes(&options.scrapes)?;
    let events = read_events(&options.log)?;
    anyhow::ensure!(!records.is_empty(), "no records in {}", options.records.display());
    anyhow::ensure!(scrapes.len() >= 10, "only {} scrapes in {}", scrapes.len(), options.scrapes.display());
    let (fs, fe) = (options.fault_start_us, options.fault_end_us);
    let load_start = records.first().unwrap().0;
    let load_end = records.last().unwrap().0;
    let n = options.backends.len() as f64;
    let fair = 1.0 / n;
    let victim = options.victim.as_str();
    let seconds = |from: u64, to: u64| (to as f64 - from as f64) / 1e6;
    let counters = Counters { scrapes: &scrapes };
    let mut row = Row {
        case: options.case.clone(),
        description: options.description.clone(),
        fault_seconds: seconds(fs, fe),
        requests: records.len(),
        quiet_seconds: options.quiet_seconds,
        ..Row::default()
    };

    // Shares.
    let shares = |from: u64, to: u64| -> Vec<f64> {
        options.backends.iter().map(|b| counters.share(b, from, to)).collect()
    };
    row.shares_before = shares(load_start + 2_000_000, fs);
    row.shares_during = shares(fs, fe);
    let after_from = fe + (options.recover_within_seconds * 1e6) as u64;
    row.shares_after = shares(after_from.min(load_end), load_end);

    // Detection by share.
    let threshold = 0.9 * fair;
    row.below_fair_after = scrapes
        .iter()
        .map(|s| s.t_us)
        .filter(|&t| t >= fs && t + 1_000_000 <= fe)
        .find(|&t| {
            counters.share(victim, t, t + 1_000_000) < threshold && counters.share(victim, t, fe) < threshold
        })
        .map(|t| seconds(fs, t));

    // Out: the log, or the eligibility gauge.
    let is_out_event = |e: &Event| e.name == "backend_down" || e.name == "backend_ejected";
    let is_in_event = |e: &Event| e.name == "backend_up" || e.name == "backend_readmitted";
    let log_out =
        events.iter().find(|e| e.backend == victim && e.t_us >= fs && e.t_us <= fe && is_out_event(e));
    let metric_out =
        scrapes.iter().find(|s| s.t_us >= fs && s.t_us <= fe && s.eligible.get(victim).copied() == Some(0.0));
    let out_at = [log_out.map(|e| e.t_us), metric_out.map(|s| s.t_us)].into_iter().flatten().min();
    row.out_after = out_at.map(|t| seconds(fs, t));
    row.sent_to_victim_before_out = counters.to(victim, out_at.unwrap_or(fe)) - counters.to(victim, fs);

    // Transitions during the fault.
    let in_fault = |t: u64| t >= fs && t <= fe;
    let downs: Vec<u64> = events
        .iter()
        .filter(|e| e.backend == victim && in_fault(e.t_us) && is_out_event(e))
        .map(|e| e.t_us)
        .collect();
    row.down_events_in_fault = downs.len();
    row.up_events_in_fault =
        events.iter().filter(|e| e.backend == victim && in_fault(e.t_us) && is_in_event(e)).count();
    let mut ineligible_starts = Vec::new();
    let mut previous = 1.0;
    for s in scrapes.iter().filter(|s| in_fault(s.t_us)) {
        let eligible = s.eligible.get(victim).copied().unwrap_or(1.0);
        if eligible == 0.0 && previous != 0.0 {
            ineligible_starts.push(s.t_us);
        }
        previous = eligible;
    }
    row.ineligible_periods_in_fault = ineligible_starts.len();
    row.max_downs_in_60s =
        max_in_window(&downs, 60_000_000).max(max_in_window(&ineligible_starts, 60_000_000));

    // Lost requests.
    for &(sent, ref backend) in &records {
        if backend.is_some() {
            continue;
        }
        if sent < fs {
            row.lost_before_fault += 1;
        } else if sent < fe {
            row.lost_in_fault += 1;
        } else {
            row.lost_after_fault += 1;
        }
    }
    row.requests_in_fault = records.iter().filter(|r| r.0 >= fs && r.0 < fe).count();
    let answered_in_fault: Vec<&String> =
        records.iter().filter(|r| r.0 >= fs && r.0 < fe).filter_map(|r| r.1.as_ref()).collect();
    row.victim_answered_share_during = if answered_in_fault.is_empty() {
        0.0
    } else {
        answered_in_fault.iter().filter(|b| b.as_str() == victim).count() as f64
            / answered_in_fault.len() as f64
    };

    // Recovery: every 1 s window from then on within ±10 points of fair, for every backend.
    let windows: Vec<u64> =
        scrapes.iter().map(|s| s.t_us).filter(|&t| t >= fe && t + 1_000_000 <= load_end).collect();
    let in_band = |t: u64| {
        options.backends.iter().all(|b| (counters.share(b, t, t + 1_000_000) - fair).abs() <= 0.1 + 1e-9)
    };
    row.recovered_after = match windows.iter().rposition(|&t| !in_band(t)) {
        None if !windows.is_empty() => Some(0.0),
        None => None,
        Some(last_bad) => windows.get(last_bad + 1).map(|&t| seconds(fe, t)),
    };

    // False Downs.
    let quiet_end = fe + (options.quiet_seconds * 1e6) as u64;
    row.false_downs = events
        .iter()
        .filter(|e| e.t_us > fe && e.t_us <= quiet_end && is_out_event(e))
        .map(|e| format!("{} {} at +{:.1}s", e.backend, e.name, seconds(fe, e.t_us)))
        .collect();

    // Targets.
    let lost = row.lost_in_fault + row.lost_after_fault;
    let mut failures = Vec::new();
    if row.lost_before_fault > 0 {
        failures
            .push(format!("harness: {} requests lost before the fault (must be 0)", row.lost_before_fault));
    }
    if load_end < quiet_end {
        failures.push(format!(
            "harness: the load ended {:.1}s after the fault, before the {}s quiet window",
            seconds(fe, load_end),
            options.quiet_seconds
        ));
    }
    if !row.false_downs.is_empty() {
        failures.push(format!(
            "Down transition(s) in the {}s after the fault: {}",
            options.quiet_seconds,
            row.false_downs.join(", ")
        ));
    }
    match row.recovered_after {
        Some(s) if s <= options.recover_within_seconds => {}
        Some(s) => failures.push(format!(
            "shares back within ±10 points of fair after {s:.1}s (target {}s)",
            options.recover_within_seconds
        )),
        None => failures.push(format!(
            "shares never back within ±10 points of fair after the fault (after: {})",
            percentages(&row.shares_after)
        )),
    }
    for check in options.checks.iter().filter(|c| !c.is_empty()) {
        match check.as_str() {
            "below-fair" => match row.below_fair_after {
                Some(s) if s <= options.below_fair_within_seconds => {}
                other => failures.push(format!(
                    "{victim}'s share below fair after {} (target {}s; during the fault {:.1}%)",
                    other.map_or("never".to_string(), |s| format!("{s:.1}s")),
                    options.below_fair_within_seconds,
                    100.0 * counters.share(victim, fs, fe)
                )),
            },
            "loss-bound" => {
                let expected = options.loss_rate * row.requests_in_fault as f64 * fair;
                row.expected_lost = Some(expected);
                row.lost_bound = Some(1.2 * expected);
                if lost as f64 > 1.2 * expected {
                    failures.push(format!(
                        "lost {lost} requests > 1.2 × {expected:.0} (loss rate {} × fair share of {} requests in the fault)",
                        options.loss_rate, row.requests_in_fault
                    ));
                }
            }
            "out" => {
                match row.out_after {
                    Some(s) if s <= options.out_within_seconds => {}
                    other => failures.push(format!(
                        "{victim} out after {} (target {}s)",
                        other.map_or("never".to_string(), |s| format!("{s:.1}s")),
                        options.out_within_seconds
                    )),
                }
                if row.max_downs_in_60s > 2 {
                    failures.push(format!(
                        "{} Down transitions of {victim} within 60s during the fault (target at most 2 cycles a minute)",
                        row.max_downs_in_60s
                    ));
                }
            }
            "refused-bound" => {
                row.lost_bound = Some(row.sent_to_victim_before_out);
                if lost as f64 > row.sent_to_victim_before_out {
                    failures.push(format!(
                        "lost {lost} requests > {:.0} sent to {victim} before it was out",
                        row.sent_to_victim_before_out
                    ));
                }
            }
            "zero-loss" => {
                row.lost_bound = Some(0.0);
                if lost > 0 {
                    failures.push(format!(
                        "lost {lost} requests ({} during the fault, {} after; target 0)",
                        row.lost_in_fault, row.lost_after_fault
                    ));
                }
            }
            other => anyhow::bail!("unknown check {other}"),
        }
    }
    row.failures = failures;

    let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&options.results)?;
    writeln!(out, "{}", serde_json::to_string(&row)?)?;
    Ok(row)
}

fn max_in_window(times: &[u64], window: u64) -> usize {
    (0..times.len())
        .map(|i| times[i..].iter().take_while(|&&t| t < times[i] + window).count())
        .max()
        .unwrap_or(0)
}

struct Counters<'a> {
    scrapes: &'a [Scrape],
}

impl Counters<'_> {
    /// Datagrams sent to `backend` by time `t`, interpolated between scrapes.
    fn to(&self, backend: &str, t: u64) -> f64 {
        let value = |s: &Scrape| s.to.get(backend).copied().unwrap_or(0.0);
        let after = self.scrapes.partition_point(|s| s.t_us < t);
        if after == 0 {
            return value(&self.scrapes[0]);
        }
        if after == self.scrapes.len() {
            return value(self.scrapes.last().unwrap());
        }
        let (a, b) = (&self.scrapes[after - 1], &self.scrapes[after]);
        let fraction = (t - a.t_us) as f64 / (b.t_us - a.t_us).max(1) as f64;
        value(a) + fraction * (value(b) - value(a))
    }

    fn total(&self, t: u64) -> f64 {
        let backends: Vec<&String> = self.scrapes.last().map(|s| s.to.keys().collect()).unwrap_or_default();
        backends.iter().map(|b| self.to(b, t)).sum()
    }

    fn share(&self, backend: &str, from: u64, to: u64) -> f64 {
        let total = self.total(to) - self.total(from);
        if total <= 0.0 {
            return 0.0;
        }
        (self.to(backend, to) - self.to(backend, from)) / total
    }
}

fn read_records(path: &PathBuf) -> Result<Vec<(u64, Option<String>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut records = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        anyhow::ensure!(fields.len() == 7, "bad record line {line:?}");
        let backend = (fields[3] != "-").then(|| fields[3].to_string());
        records.push((fields[2].parse()?, backend));
    }
    Ok(records)
}

fn read_scrapes(path: &PathBuf) -> Result<Vec<Scrape>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines().map(|line| Ok(serde_json::from_str(line)?)).collect()
}

/// Health events from udplb's JSON log: `{"timestamp":"…Z","event":"backend_down","backend":…}`.
fn read_events(path: &PathBuf) -> Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut events = Vec::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let field = |key: &str| {
            value.get(key).or_else(|| value.get("fields").and_then(|f| f.get(key))).and_then(|v| v.as_str())
        };
        let (Some(name), Some(backend), Some(timestamp)) =
            (field("event"), field("backend"), field("timestamp"))
        else {
            continue;
        };
        if !name.starts_with("backend_") {
            continue;
        }
        let t_us = parse_rfc3339_us(timestamp).with_context(|| format!("timestamp {timestamp:?}"))?;
        events.push(Event { t_us, name: name.to_string(), backend: backend.to_string() });
    }
    Ok(events)
}

/// `2025-03-01T12:34:56.123456Z` (any number of fraction digits, or none; `Z` or `+00:00`).
pub fn parse_rfc3339_us(text: &str) -> Result<u64> {
    let text = text.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = text.split_once('T').context("no T")?;
    let mut date_parts = date.split('-').map(|p| p.parse::<i64>());
    let (year, month, day) = (
        date_parts.next().context("year")??,
        date_parts.next().context("month")??,
        date_parts.next().context("day")??,
    );
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.split(':').map(|p| p.parse::<i64>());
    let (hour, minute, second) = (
        time_parts.next().context("hour")??,
        time_parts.next().context("minute")??,
        time_parts.next().context("second")??,
    );
    let mut micros = 0i64;
    for digit in fraction.chars().chain(std::iter::repeat('0')).take(6) {
        micros = micros * 10 + digit.to_digit(10).context("fraction")? as i64;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Ok((seconds * 1_000_000 + micros) as u64)
}

/// "33/33/33" from shares.
pub fn percentages(shares: &[f64]) -> String {
    shares.iter().map(|s| format!("{:.0}", 100.0 * s)).collect::<Vec<_>>().join("/")
}

/// Prints every row of `results` as one table, then every missed target; returns how many
/// were missed.
pub fn table(results: &PathBuf, victim: &str) -> Result<usize> {
    let text = std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let rows: Vec<Row> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let optional = |value: Option<f64>| value.map_or("never".to_string(), |s| format!("{s:.1}s"));
    let header = [
        "case",
        "fault",
        &format!("{victim}<fair"),
        &format!("{victim} out"),
        "Down/Up",
        "max/60s",
        "lost fault+after",
        "bound",
        "before %",
        "during %",
        "after %",
        "recovered",
        "false Downs",
        "verdict",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for row in &rows {
        let bound = row.lost_bound.map_or("-".to_string(), |b| format!("≤{b:.0}"));
        lines.push(vec![
            row.case.clone(),
            format!("{:.1}s", row.fault_seconds),
            optional(row.below_fair_after),
            optional(row.out_after),
            format!("{}/{}", row.down_events_in_fault, row.up_events_in_fault),
            row.max_downs_in_60s.to_string(),
            format!("{}+{}", row.lost_in_fault, row.lost_after_fault),
            bound,
            percentages(&row.shares_before),
            percentages(&row.shares_during),
            percentages(&row.shares_after),
            optional(row.recovered_after),
            row.false_downs.len().to_string(),
            if row.failures.is_empty() { "ok".to_string() } else { format!("MISSED {}", row.failures.len()) },
        ]);
    }
    let widths: Vec<usize> =
        (0..header.len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    for line in &lines {
        let cells: Vec<String> =
            line.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}", width = *width)).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    let mut missed = 0;
    for row in &rows {
        for failure in &row.failures {
            println!("MISSED {}: {failure}", row.case);
            missed += 1;
        }
    }
    Ok(missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_timestamps() {
        assert_eq!(parse_rfc3339_us("1970-01-01T00:00:01.5Z").unwrap(), 1_500_000);
        assert_eq!(parse_rfc3339_us("2024-03-01T00:00:00Z").unwrap(), 1_709_251_200_000_000);
        assert_eq!(parse_rfc3339_us("2024-02-29T23:59:59.999999Z").unwrap(), 1_709_251_199_999_999);
    }

    #[test]
    fn counts_the_most_events_in_any_window() {
        assert_eq!(max_in_window(&[], 10), 0);
        assert_eq!(max_in_window(&[0, 5, 9, 10, 30], 10), 3);
    }

    #[test]
    fn shares_interpolate_between_scrapes() {
        let scrape = |t_us, a, b| Scrape {
            t_us,
            to: [("a".to_string(), a), ("b".to_string(), b)].into(),
            eligible: BTreeMap::new(),
        };
        let scrapes = [scrape(0, 0.0, 0.0), scrape(100, 10.0, 30.0), scrape(200, 20.0, 40.0)];
        let counters = Counters { scrapes: &scrapes };
        assert_eq!(counters.to("a", 50), 5.0);
        assert_eq!(counters.share("a", 0, 100), 0.25);
        assert_eq!(counters.share("b", 100, 200), 0.5);
    }
}
