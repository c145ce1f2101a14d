//! SVG plots (plotters, SVG backend only): keep ratio per group, the search curve, the keep
//! ratios `--agent joint` chose round by round, and latency per layer. Each is one call of
//! [`chart`] (the frame every plot shares: size, caption, axes, legend, atomic write) with the
//! series it draws.

use crate::error::{Error, Result};
use crate::search::rl::Episode;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Drawn = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// A plot's axes: ranges, descriptions, the width of the y labels, and whether x is an index
/// of bars (no x mesh; labels 1, 2, …).
struct Axes<'a> {
    x: Range<f64>,
    y: Range<f64>,
    x_desc: &'a str,
    y_desc: &'a str,
    y_labels: u32,
    bars: bool,
}

/// Draws a 960×420 chart with `title` and `axes`, the series `body` draws, and their legend at
/// `legend` (none without), into an SVG written atomically to `path`.
fn chart(
    path: &Path,
    title: &str,
    axes: Axes,
    legend: Option<SeriesLabelPosition>,
    body: &dyn Fn(&mut Chart) -> Drawn,
) -> Result<()> {
    let mut svg = String::new();
    let drawn = (|| -> Drawn {
        let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(axes.y_labels)
            .build_cartesian_2d(axes.x.clone(), axes.y.clone())?;
        let index = |x: &f64| format!("{}", *x as usize + 1);
        let mut mesh = chart.configure_mesh();
        if axes.bars {
            mesh.disable_x_mesh().x_label_formatter(&index);
        }
        mesh.x_desc(axes.x_desc).y_desc(axes.y_desc).draw()?;
        body(&mut chart)?;
        if let Some(at) = legend {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(at)
                .draw()?;
        }
        root.present()
    })();
    drawn.map_err(|e| Error::Usage(format!("{}: cannot draw the plot: {e}", path.display())))?;
    crate::onnx::write_atomic(path, svg.as_bytes())
}

/// Bar chart of the keep ratio of every group, in the search's (topological) order.
pub fn plot_keep_ratios(path: &Path, title: &str, ratios: &[f64]) -> Result<()> {
    let n = ratios.len().max(1);
    let axes = Axes {
        x: 0f64..n as f64,
        y: 0f64..1.05,
        x_desc: "group (rows of the group table)",
        y_desc: "keep ratio",
        y_labels: 50,
        bars: true,
    };
    chart(path, title, axes, None, &|chart| {
        chart.draw_series(ratios.iter().enumerate().map(|(i, &r)| {
            Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, r)],
                RGBColor(31, 119, 180).filled(),
            )
        }))?;
        Ok(())
    })
}

/// Line chart of the search: reward per episode, best so far, MACs kept.
pub fn plot_curve(path: &Path, title: &str, curve: &[Episode]) -> Result<()> {
    let last = curve.iter().map(|e| e.episode).max().unwrap_or(1).max(1) as f64;
    let axes = Axes {
        x: 0f64..last + 1.0,
        y: 0f64..1.05,
        x_desc: "episode",
        y_desc: "score / fraction",
        y_labels: 50,
        bars: false,
    };
    let legend = Some(SeriesLabelPosition::LowerRight);
    chart(path, title, axes, legend, &|chart| {
        type Series = (&'static str, RGBColor, fn(&Episode) -> f64);
        let series: [Series; 3] = [
            ("reward", RGBColor(31, 119, 180), |e| e.reward),
            ("best so far", RGBColor(214, 39, 40), |e| e.best),
            ("MACs kept", RGBColor(120, 120, 120), |e| e.macs_ratio),
        ];
        for (label, color, f) in series {
            chart
                .draw_series(LineSeries::new(
                    curve.iter().map(|ep| (ep.episode as f64, f(ep))),
                    color.stroke_width(2),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        Ok(())
    })
}

/// `--agent joint`: the keep ratio of every group (one line each, in the search's order) in
/// the plan each round chose (`rounds`: per round, the ratios).
pub fn plot_joint_ratios(path: &Path, title: &str, rounds: &[Vec<f64>]) -> Result<()> {
    let n = rounds.len().max(1) as f64;
    let groups = rounds.iter().map(|r| r.len()).max().unwrap_or(0);
    let axes = Axes {
        x: 0.5f64..n + 0.5,
        y: 0f64..1.05,
        x_desc: "round",
        y_desc: "keep ratio (one line per group)",
        y_labels: 50,
        bars: false,
    };
    chart(path, title, axes, None, &|chart| {
        for g in 0..groups {
            let color = Palette99::pick(g).to_rgba();
            chart.draw_series(LineSeries::new(
                rounds
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.get(g).map(|&v| (i as f64 + 1.0, v))),
                color.stroke_width(2),
            ))?;
        }
        Ok(())
    })
}

/// Per profiled layer (x: the layer, in topological order): its time alone at full size, the
/// profile's prediction at the kept counts, and the time measured alone at the kept counts
/// (`rows`: full, predicted, measured; ms).
pub fn plot_latency_layers(path: &Path, title: &str, rows: &[(f64, f64, f64)]) -> Result<()> {
    let n = rows.len().max(1) as f64;
    let top = rows
        .iter()
        .flat_map(|r| [r.0, r.1, r.2])
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    let axes = Axes {
        x: 0f64..n,
        y: 0f64..top,
        x_desc: "layer (rows of the report's latency.layers)",
        y_desc: "ms, layer alone",
        y_labels: 60,
        bars: true,
    };
    let legend = Some(SeriesLabelPosition::UpperRight);
    chart(path, title, axes, legend, &|chart| {
        let grey = RGBColor(200, 200, 200);
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                Rectangle::new(
                    [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, r.0)],
                    grey.filled(),
                )
            }))?
            .label("original")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], grey.filled()));
        type Series = (&'static str, RGBColor, fn(&(f64, f64, f64)) -> f64);
        let series: [Series; 2] = [
            ("pruned, predicted", RGBColor(31, 119, 180), |r| r.1),
            ("pruned, measured", RGBColor(214, 39, 40), |r| r.2),
        ];
        for (label, color, f) in series {
            chart
                .draw_series(
                    rows.iter()
                        .enumerate()
                        .map(|(i, r)| Circle::new((i as f64 + 0.5, f(r)), 3, color.filled())),
                )?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
        }
        Ok(())
    })
}
