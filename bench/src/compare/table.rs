//! The printed tables: per case and target, the median of each metric over the repetitions
//! with its range, then udplb (and each variant) against nginx.

use super::run::Measurement;
use crate::summary::Spread;
use std::fmt::Write as _;

/// One metric: its column title and how to read it from a measurement.
struct Metric {
    title: &'static str,
    value: fn(&Measurement) -> Option<f64>,
    format: fn(f64) -> String,
}

fn metrics() -> Vec<Metric> {
    vec![
        Metric { title: "replies/s", value: |m| Some(m.load.replies_per_second), format: thousands },
        Metric {
            title: "replies per proxy CPU-s",
            value: Measurement::replies_per_cpu_second,
            format: thousands,
        },
        Metric {
            title: "proxy CPU µs/datagram",
            value: Measurement::cpu_us_per_datagram,
            format: two_decimals,
        },
        Metric { title: "proxy CPU %", value: Measurement::cpu_percent, format: whole },
        Metric { title: "p50 µs", value: |m| m.load.p50_us, format: whole },
        Metric { title: "p99 µs", value: |m| m.load.p99_us, format: whole },
        Metric { title: "p999 µs", value: |m| m.load.p999_us, format: whole },
    ]
}

fn thousands(value: f64) -> String {
    if value >= 1000.0 { format!("{:.1}k", value / 1000.0) } else { format!("{value:.0}") }
}

fn two_decimals(value: f64) -> String {
    format!("{value:.2}")
}

fn whole(value: f64) -> String {
    format!("{value:.0}")
}

fn spread_of(runs: &[&Measurement], value: fn(&Measurement) -> Option<f64>) -> Option<Spread> {
    let values: Vec<f64> = runs.iter().filter_map(|m| value(m)).collect();
    Spread::of(&values)
}

fn cell(spread: Option<Spread>, format: fn(f64) -> String) -> String {
    match spread {
        None => "–".to_string(),
        Some(s) if s.min == s.max => format(s.median),
        Some(s) => format!("{} ({}–{})", format(s.median), format(s.min), format(s.max)),
    }
}

/// The results table, in markdown.
pub fn results(cases: &[String], targets: &[String], measurements: &[Measurement]) -> String {
    let metrics = metrics();
    let mut text = String::from("| case | target |");
    for metric in &metrics {
        let _ = write!(text, " {} |", metric.title);
    }
    text.push_str(" lost | misdelivered |\n|---|---|");
    text.push_str(&"---|".repeat(metrics.len() + 2));
    text.push('\n');
    for case in cases {
        for target in targets {
            let runs: Vec<&Measurement> =
                measurements.iter().filter(|m| &m.case == case && &m.target == target).collect();
            if runs.is_empty() {
                continue;
            }
            let _ = write!(text, "| {case} | {target} |");
            for metric in &metrics {
                let _ = write!(text, " {} |", cell(spread_of(&runs, metric.value), metric.format));
            }
            let lost: u64 = runs.iter().map(|m| m.load.lost).sum();
            let sent: u64 = runs.iter().map(|m| m.load.sent).sum();
            let misdelivered: u64 = runs.iter().map(|m| m.load.misdelivered + m.load.wrong_source).sum();
            let loss = if sent > 0 { lost as f64 / sent as f64 * 100.0 } else { 0.0 };
            let _ = writeln!(text, " {lost} ({loss:.2}%) | {misdelivered} |");
        }
    }
    text
}

/// Ratios of medians, each udplb target against nginx. Higher is better for the throughput
/// columns; lower is better for CPU per datagram and latency.
pub fn ratios(cases: &[String], udplb_targets: &[String], measurements: &[Measurement]) -> String {
    let metrics: Vec<Metric> =
        metrics().into_iter().filter(|m| !matches!(m.title, "proxy CPU %" | "p999 µs")).collect();
    let mut text = String::from("| case | ratio |");
    for metric in &metrics {
        let _ = write!(text, " {} |", metric.title);
    }
    text.push_str("\n|---|---|");
    text.push_str(&"---|".repeat(metrics.len()));
    text.push('\n');
    for case in cases {
        let nginx: Vec<&Measurement> =
            measurements.iter().filter(|m| &m.case == case && m.target == "nginx").collect();
        for target in udplb_targets {
            let ours: Vec<&Measurement> =
                measurements.iter().filter(|m| &m.case == case && &m.target == target).collect();
            if ours.is_empty() || nginx.is_empty() {
                continue;
            }
            let _ = write!(text, "| {case} | {target} / nginx |");
            for metric in &metrics {
                let ratio = match (spread_of(&ours, metric.value), spread_of(&nginx, metric.value)) {
                    (Some(a), Some(b)) if b.median > 0.0 => format!("{:.2}×", a.median / b.median),
                    _ => "–".to_string(),
                };
                let _ = write!(text, " {ratio} |");
            }
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadReport;

    fn measurement(target: &str, replies_per_second: f64, cpu: Option<f64>) -> Measurement {
        let load = LoadReport {
            replies_per_second,
            received_in_window: (replies_per_second * 10.0) as u64,
            window_seconds: 10.0,
            sent: 100,
            replies: 100,
            p50_us: Some(100.0),
            ..LoadReport::default()
        };
        Measurement { case: "c".into(), target: target.into(), repetition: 0, load, proxy_cpu_seconds: cpu }
    }

    #[test]
    fn cpu_per_datagram_counts_both_directions() {
        let m = measurement("udplb", 100_000.0, Some(2.0));
        // 1,000,000 replies = 2,000,000 forwarded datagrams in 2 CPU-seconds: 1 µs each.
        assert_eq!(m.cpu_us_per_datagram(), Some(1.0));
        assert_eq!(m.replies_per_cpu_second(), Some(500_000.0));
        assert_eq!(m.cpu_percent(), Some(20.0));
    }

    #[test]
    fn tables_show_median_with_range_and_the_ratio_of_medians() {
        let runs = vec![
            measurement("nginx", 50_000.0, Some(5.0)),
            measurement("nginx", 70_000.0, Some(5.0)),
            measurement("nginx", 60_000.0, Some(5.0)),
            measurement("udplb", 120_000.0, Some(5.0)),
            measurement("direct", 200_000.0, None),
        ];
        let table = results(&["c".into()], &["direct".into(), "nginx".into(), "udplb".into()], &runs);
        assert!(table.contains("| c | nginx | 60.0k (50.0k–70.0k) |"), "{table}");
        assert!(table.contains("| c | direct | 200.0k | – |"), "{table}");
        let ratio = ratios(&["c".into()], &["udplb".into()], &runs);
        assert!(ratio.contains("| c | udplb / nginx | 2.00× | 2.00× |"), "{ratio}");
    }
}
