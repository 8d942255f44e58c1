//! SVG plots of results: latency percentile distributions (HdrHistogram's view: the x axis
//! stretches the tail, 1/(1-p)), throughput and p99 over time, and a comparison of several runs.

use std::path::Path;

use plotters::prelude::*;

use crate::run::RunResult;
use crate::stats::LatencySummary;

type PlotResult = Result<(), String>;

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
];

/// x coordinate of a percentile: 1/(1-p), so 90% is 10, 99% is 100, 99.9% is 1000.
fn tail_x(p: f64) -> f64 {
    1.0 / (1.0 - (p / 100.0).min(0.999_999))
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p < 1e-9 {
        "0%".into()
    } else {
        format!("{}%", trim(p))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One distribution chart of several (label, summary) series.
fn distribution(path: &Path, title: &str, series: &[(String, &LatencySummary)]) -> PlotResult {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_us = series.iter().flat_map(|(_, s)| s.curve.iter().map(|c| c.1)).max().unwrap_or(1).max(10);
    let x_max = series
        .iter()
        .flat_map(|(_, s)| s.curve.iter().map(|c| tail_x(c.0)))
        .fold(10.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0f64..x_max * 1.2).log_scale(), (1.0f64..max_us as f64 * 1.5).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&percentile_label)
        .draw()
        .map_err(err)?;
    for (i, (label, s)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Zero-µs samples sit at 1 on the log axis.
        let points: Vec<(f64, f64)> = s.curve.iter().map(|&(p, v)| (tail_x(p), (v as f64).max(1.0))).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Throughput (top) and p99 latencies (bottom) per interval.
fn timeline(path: &Path, r: &RunResult) -> PlotResult {
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(360);
    let t_max = r.intervals.last().map_or(1.0, |i| i.t_s).max(1.0);
    let mb_max = r
        .intervals
        .iter()
        .map(|i| i.publish_mb_per_s.max(i.consume_mb_per_s))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{}: throughput", r.workload.name), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..mb_max * 1.15)
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds (warm-up included)").y_desc("MB/s").draw().map_err(err)?;
    type Line = (&'static str, fn(&crate::run::Interval) -> f64);
    let lines: [Line; 2] =
        [("publish MB/s", |i| i.publish_mb_per_s), ("consume MB/s", |i| i.consume_mb_per_s)];
    for (n, (label, f)) in lines.iter().enumerate() {
        let color = COLORS[n];
        chart
            .draw_series(LineSeries::new(r.intervals.iter().map(|i| (i.t_s, f(i))), color.stroke_width(2)))
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(err)?;

    let lat_max = r
        .intervals
        .iter()
        .map(|i| i.publish_latency_p99_us.max(i.end_to_end_p99_us))
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("p99 latency per interval", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, (1.0..lat_max * 1.5).log_scale())
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds").y_desc("µs").draw().map_err(err)?;
    type LatLine = (&'static str, fn(&crate::run::Interval) -> u64);
    let lines: [LatLine; 2] =
        [("publish p99", |i| i.publish_latency_p99_us), ("end-to-end p99", |i| i.end_to_end_p99_us)];
    for (n, (label, f)) in lines.iter().enumerate() {
        let color = COLORS[n];
        chart
            .draw_series(LineSeries::new(
                r.intervals.iter().map(|i| (i.t_s, (f(i) as f64).max(1.0))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().map_err(err)?;
    root.present().map_err(err)
}

/// `<stem>-latency.svg` and `<stem>-timeline.svg` next to each other.
pub fn plot_result(r: &RunResult, stem: &Path) -> Result<Vec<String>, String> {
    let latency = stem.with_file_name(format!("{}-latency.svg", file_stem(stem)));
    let timeline_path = stem.with_file_name(format!("{}-timeline.svg", file_stem(stem)));
    let mut series = vec![("publish".to_string(), &r.overall.publish_latency)];
    if r.overall.end_to_end.count > 0 {
        series.push(("end-to-end".to_string(), &r.overall.end_to_end));
    }
    if let Some(c) = &r.ceilings {
        series.push(("raw append + fdatasync".to_string(), &c.direct_append_fdatasync.latency));
    }
    distribution(&latency, &format!("{}: latency distribution", r.workload.name), &series)?;
    timeline(&timeline_path, r)?;
    Ok(vec![latency.display().to_string(), timeline_path.display().to_string()])
}

/// Publish and end-to-end latency distributions of several named results on one chart.
pub fn plot_compare(results: &[(String, RunResult)], out: &Path) -> PlotResult {
    let publish = results.iter().map(|(n, r)| (format!("{n} publish"), &r.overall.publish_latency));
    let e2e = results.iter().map(|(n, r)| (format!("{n} end-to-end"), &r.overall.end_to_end));
    let series: Vec<_> = publish.chain(e2e).filter(|(_, s)| s.count > 0).collect();
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    distribution(out, &names.join(" vs "), &series)
}

fn file_stem(p: &Path) -> String {
    p.file_stem().map_or("result".into(), |s| s.to_string_lossy().into_owned())
}
