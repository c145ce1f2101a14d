//! SVG plots (plotters, SVG backend only): keep ratio per group, the search curve, the keep
//! ratios `--agent joint` chose round by round, and latency per layer.

use crate::error::{Error, Result};
use crate::search::rl::Episode;
use plotters::prelude::*;
use std::path::Path;

fn plot_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Usage(format!("{}: cannot draw the plot: {e}", path.display()))
}

/// Renders into a string first, then writes atomically.
fn write_svg(path: &Path, draw: &dyn Fn(&mut String) -> Result<()>) -> Result<()> {
    let mut svg = String::new();
    draw(&mut svg)?;
    crate::onnx::write_atomic(path, svg.as_bytes())
}

/// Bar chart of the keep ratio of every group, in the search's (topological) order.
pub fn plot_keep_ratios(path: &Path, title: &str, ratios: &[f64]) -> Result<()> {
    let n = ratios.len().max(1);
    write_svg(path, &|svg| {
        let e = plot_err(path);
        {
            let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(&e)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..n as f64, 0f64..1.05)
                .map_err(&e)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("group (rows of the group table)")
                .y_desc("keep ratio")
                .x_label_formatter(&|x| format!("{}", *x as usize + 1))
                .draw()
                .map_err(&e)?;
            chart
                .draw_series(ratios.iter().enumerate().map(|(i, &r)| {
                    Rectangle::new(
                        [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, r)],
                        RGBColor(31, 119, 180).filled(),
                    )
                }))
                .map_err(&e)?;
            root.present().map_err(&e)?;
        }
        Ok(())
    })
}

/// Line chart of the search: reward per episode, best so far, MACs kept.
pub fn plot_curve(path: &Path, title: &str, curve: &[Episode]) -> Result<()> {
    let last = curve.iter().map(|e| e.episode).max().unwrap_or(1).max(1) as f64;
    write_svg(path, &|svg| {
        let e = plot_err(path);
        {
            let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(&e)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..last + 1.0, 0f64..1.05)
                .map_err(&e)?;
            chart
                .configure_mesh()
                .x_desc("episode")
                .y_desc("score / fraction")
                .draw()
                .map_err(&e)?;
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
                    ))
                    .map_err(&e)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(&e)?;
            root.present().map_err(&e)?;
        }
        Ok(())
    })
}

/// `--agent joint`: the keep ratio of every group (one line each, in the search's order) in
/// the plan each round chose (`rounds`: per round, the ratios).
pub fn plot_joint_ratios(path: &Path, title: &str, rounds: &[Vec<f64>]) -> Result<()> {
    let n = rounds.len().max(1) as f64;
    let groups = rounds.iter().map(|r| r.len()).max().unwrap_or(0);
    write_svg(path, &|svg| {
        let e = plot_err(path);
        {
            let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(&e)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0.5f64..n + 0.5, 0f64..1.05)
                .map_err(&e)?;
            chart
                .configure_mesh()
                .x_desc("round")
                .y_desc("keep ratio (one line per group)")
                .draw()
                .map_err(&e)?;
            for g in 0..groups {
                let color = Palette99::pick(g).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        rounds
                            .iter()
                            .enumerate()
                            .filter_map(|(i, r)| r.get(g).map(|&v| (i as f64 + 1.0, v))),
                        color.stroke_width(2),
                    ))
                    .map_err(&e)?;
            }
            root.present().map_err(&e)?;
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
    write_svg(path, &|svg| {
        let e = plot_err(path);
        {
            let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(&e)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..n, 0f64..top)
                .map_err(&e)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc("layer (rows of the report's latency.layers)")
                .y_desc("ms, layer alone")
                .x_label_formatter(&|x| format!("{}", *x as usize + 1))
                .draw()
                .map_err(&e)?;
            let grey = RGBColor(200, 200, 200);
            chart
                .draw_series(rows.iter().enumerate().map(|(i, r)| {
                    Rectangle::new(
                        [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, r.0)],
                        grey.filled(),
                    )
                }))
                .map_err(&e)?
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
                    )
                    .map_err(&e)?
                    .label(label)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(&e)?;
            root.present().map_err(&e)?;
        }
        Ok(())
    })
}
