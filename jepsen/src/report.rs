//! The run's plots, drawn as Jepsen draws them: operations over time with each fault's
//! interval shaded.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::nemesis::Kind;

/// A fault as it happened: kind, label, wall-clock start and end (ms).
pub struct Interval {
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
}

fn shade(kind: Kind) -> RGBAColor {
    let color = match kind {
        Kind::Kill => RGBColor(214, 39, 40),
        Kind::Pause => RGBColor(255, 127, 14),
        Kind::Partition => RGBColor(148, 103, 189),
        Kind::Clock => RGBColor(23, 190, 207),
        Kind::Power => RGBColor(140, 86, 75),
        Kind::Disk => RGBColor(127, 127, 127),
    };
    color.mix(0.18)
}

fn outcome_color(kind: &str) -> RGBColor {
    match kind {
        "ok" => RGBColor(44, 160, 44),
        "fail" => RGBColor(214, 39, 40),
        _ => RGBColor(255, 165, 0),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plot: {e}")
}

/// Completed operations per second by outcome, and latency of each, over run time.
pub fn plots(dir: &Path, start: u64, completions: &[(u64, u64, String)], faults: &[Interval]) -> Result<()> {
    let seconds = |t: u64| t.saturating_sub(start) as f64 / 1000.0;
    let end = completions.iter().map(|c| seconds(c.0)).fold(1.0f64, f64::max);
    let mut per_second: BTreeMap<&str, BTreeMap<u64, u64>> = BTreeMap::new();
    for (t, _, kind) in completions {
        *per_second.entry(kind.as_str()).or_default().entry(t.saturating_sub(start) / 1000).or_default() += 1;
    }
    let max_rate = per_second.values().flat_map(|m| m.values()).copied().max().unwrap_or(1) as f64;

    let path = dir.join("throughput.svg");
    let root = SVGBackend::new(&path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("completed sends and transactions per second", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..max_rate * 1.1)
        .map_err(err)?;
    chart.configure_mesh().x_desc("run time (s)").y_desc("operations/s").draw().map_err(err)?;
    draw_faults(&mut chart, faults, start, max_rate * 1.1)?;
    let last_second = end as u64;
    for (kind, rates) in &per_second {
        let color = outcome_color(kind);
        // Seconds without a completion are zeros, not gaps to draw a line across.
        let points: Vec<(f64, f64)> =
            (0..=last_second).map(|s| (s as f64 + 0.5, rates.get(&s).copied().unwrap_or(0) as f64)).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(kind.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)?;

    let path = dir.join("latency.svg");
    let root = SVGBackend::new(&path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_latency = completions.iter().map(|c| c.1).max().unwrap_or(1).max(10) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption("latency of each send and transaction", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, (1f64..max_latency * 1.5).log_scale())
        .map_err(err)?;
    chart.configure_mesh().x_desc("run time (s)").y_desc("latency (ms)").draw().map_err(err)?;
    draw_faults(&mut chart, faults, start, max_latency * 1.5)?;
    for kind in ["ok", "info", "fail"] {
        let color = outcome_color(kind);
        let points = completions
            .iter()
            .filter(|c| c.2 == kind)
            .map(|c| Circle::new((seconds(c.0), (c.1 as f64).max(1.0)), 1, color.filled()));
        chart.draw_series(points).map_err(err)?.label(kind).legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(err)?;
    root.present().map_err(err)
}

fn draw_faults<DB: DrawingBackend, Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    faults: &[Interval],
    start: u64,
    top: f64,
) -> Result<()> {
    let seconds = |t: u64| t.saturating_sub(start) as f64 / 1000.0;
    let mut kinds: Vec<Kind> = faults.iter().map(|f| f.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        chart
            .draw_series(faults.iter().filter(|f| f.kind == kind).map(|f| {
                Rectangle::new([(seconds(f.start), 1.0f64.min(top)), (seconds(f.end), top)], shade(f.kind).filled())
            }))
            .map_err(err)?
            .label(kind.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], shade(kind).filled()));
    }
    Ok(())
}
