//! The HTML report: one section per scenario with its verdicts and an SVG timeline — each
//! backend's health as a coloured band with the new flows it took drawn over it, timeline
//! actions as markers, and the run's drops by reason.

use std::fmt::Write as _;
use std::time::Duration;

use udplb_core::{DropReason, Health, Instant};

use crate::RunReport;
use crate::check;
use crate::world::World;

/// What a run did over time, kept for drawing.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub duration: Duration,
    /// Backend names, in the order the `[lb]` lists them.
    pub backends: Vec<String>,
    pub health: Vec<(Instant, String, Health)>,
    pub new_flows: Vec<(Instant, std::sync::Arc<str>)>,
    pub actions: Vec<(Instant, String)>,
    pub drops: Vec<(String, u64)>,
}

impl Timeline {
    pub fn from_world(world: &World) -> Timeline {
        let scenario = &world.scenario;
        let backends =
            scenario.lb.clusters.values().flat_map(|c| c.backends.iter().map(|b| b.id.clone())).collect();
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), check::drops(world, *r)))
            .filter(|(_, count)| *count > 0)
            .collect();
        let actions = scenario
            .timeline
            .iter()
            .map(|entry| (Instant::ZERO + entry.at, entry.action.name().to_owned()))
            .collect();
        Timeline {
            duration: scenario.duration,
            backends,
            health: world.record.health.clone(),
            new_flows: world.record.new_flows.clone(),
            actions,
            drops,
        }
    }
}

const WIDTH: f64 = 900.0;
const LEFT: f64 = 110.0;
const ROW: f64 = 30.0;
const BINS: usize = 120;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The whole page.
pub fn html(reports: &[RunReport]) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>udplb scenarios</title><style>\
         body{font:14px system-ui,sans-serif;margin:2em;max-width:1000px}\
         h2{margin-top:2em}.ok{color:#17803d}.failed{color:#b91c1c}\
         table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}\
         .legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}\
         </style></head><body><h1>udplb scenario report</h1>\
         <p class=\"legend\">health:<span style=\"background:#9ca3af\"></span>unknown\
         <span style=\"background:#4ade80\"></span>up<span style=\"background:#f87171\"></span>down\
         &nbsp; bars: new flows per backend over time &nbsp; dashed lines: timeline actions</p>",
    );
    let _ =
        write!(page, "<table><tr><th>scenario</th><th>seed</th><th>expectations</th><th>result</th></tr>");
    for report in reports {
        let held = report.verdicts.iter().filter(|v| v.passed).count();
        let (class, result) = if report.passed() { ("ok", "ok") } else { ("failed", "FAILED") };
        let _ = write!(
            page,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}/{3}</td><td class=\"{class}\">{result}</td></tr>",
            escape(&report.name),
            report.seed,
            held,
            report.verdicts.len()
        );
    }
    page.push_str("</table>");
    for report in reports {
        section(&mut page, report);
    }
    page.push_str("</body></html>\n");
    page
}

fn section(page: &mut String, report: &RunReport) {
    let _ = write!(page, "<h2 id=\"{0}\">{0}</h2>", escape(&report.name));
    page.push_str("<ul>");
    for verdict in &report.verdicts {
        let class = if verdict.passed { "ok" } else { "failed" };
        let _ = write!(
            page,
            "<li class=\"{class}\">{} — {}</li>",
            escape(&verdict.what),
            escape(&verdict.detail)
        );
    }
    for violation in &report.violations {
        let _ = write!(page, "<li class=\"failed\">invariant: {}</li>", escape(violation));
    }
    page.push_str("</ul>");
    page.push_str(&svg(&report.timeline));
    if !report.timeline.drops.is_empty() {
        page.push_str("<p>drops: ");
        let parts: Vec<String> =
            report.timeline.drops.iter().map(|(r, n)| format!("{} {n}", escape(r))).collect();
        page.push_str(&parts.join(", "));
        page.push_str("</p>");
    }
}

fn svg(timeline: &Timeline) -> String {
    let seconds = timeline.duration.as_secs_f64().max(1e-9);
    let plot = WIDTH - LEFT - 10.0;
    let x = |at: Instant| LEFT + plot * (at.as_nanos() as f64 / 1e9 / seconds).min(1.0);
    let height = ROW * timeline.backends.len() as f64 + 30.0;
    let mut svg = format!("<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">");
    let end = Instant::ZERO + timeline.duration;
    for (row, backend) in timeline.backends.iter().enumerate() {
        let top = ROW * row as f64 + 4.0;
        let _ = write!(svg, "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>", top + 16.0, escape(backend));
        // Health bands.
        let mut since = (Instant::ZERO, Health::Unknown);
        let changes = timeline.health.iter().filter(|(_, name, _)| name == backend);
        for (at, _, health) in changes.chain(std::iter::once(&(end, backend.clone(), Health::Unknown))) {
            let colour = match since.1 {
                Health::Up => "#4ade80",
                Health::Down => "#f87171",
                Health::Unknown => "#9ca3af",
            };
            let (from, to) = (x(since.0), x(*at));
            let _ = write!(
                svg,
                "<rect x=\"{from:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\" opacity=\"0.45\"/>",
                (to - from).max(0.0),
                ROW - 6.0
            );
            since = (*at, *health);
        }
        // New flows per bin, scaled to the busiest bin of this backend.
        let mut bins = [0u32; BINS];
        for (at, _) in timeline.new_flows.iter().filter(|(_, name)| **name == **backend) {
            let bin = ((at.as_nanos() as f64 / 1e9 / seconds) * BINS as f64) as usize;
            bins[bin.min(BINS - 1)] += 1;
        }
        let busiest = f64::from(*bins.iter().max().unwrap_or(&0)).max(1.0);
        for (bin, count) in bins.iter().enumerate().filter(|(_, c)| **c > 0) {
            let bar = (ROW - 8.0) * f64::from(*count) / busiest;
            let left = LEFT + plot * bin as f64 / BINS as f64;
            let _ = write!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"#1f2937\"/>",
                top + ROW - 6.0 - bar,
                plot / BINS as f64 - 0.5
            );
        }
    }
    let axis = ROW * timeline.backends.len() as f64 + 16.0;
    for (at, action) in &timeline.actions {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{axis}\" stroke=\"#2563eb\" stroke-dasharray=\"3,3\"><title>{at} {1}</title></line>",
            x(*at),
            escape(action)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"11\">0s</text><text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{seconds}s</text>",
        axis + 12.0,
        WIDTH - 10.0,
        axis + 12.0
    );
    svg.push_str("</svg>");
    svg
}
