//! Output: a table for people, a JSON file per run for machines, and SVG
//! plots drawn by the tool itself.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

/// A plain-text table with right-aligned numbers.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|s| s.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it to stdout.
    pub fn print(&self) {
        let cols = self.rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (i, row) in self.rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    if c == 0 {
                        format!("{s:<w$}", w = widths[c])
                    } else {
                        format!("{s:>w$}", w = widths[c])
                    }
                })
                .collect();
            println!("{}", line.join("  "));
            if i == 0 {
                println!(
                    "{}",
                    "-".repeat(widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1))
                );
            }
        }
    }
}

/// Where a scenario writes its files: `bench/results/<scenario>-<unix time>`.
pub fn output_base(dir: &Path, scenario: &str) -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let _ = std::fs::create_dir_all(dir);
    dir.join(format!("{scenario}-{stamp}"))
}

/// Writes `value` as pretty JSON to `<base>.json`.
pub fn write_json<T: Serialize>(base: &Path, value: &T) -> Result<PathBuf, String> {
    let path = base.with_extension("json");
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Facts about the machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memcached_version: String,
    pub zonecached_version: String,
}

/// The quantiles drawn on latency curves.
pub const CURVE_QUANTILES: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

/// One server's latency curve: (quantile, microseconds).
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(200, 60, 40),
    RGBColor(40, 90, 200),
    RGBColor(40, 150, 70),
    RGBColor(150, 90, 180),
];

/// Draws latency percentile curves and a bar chart side by side in `<base>.svg`.
pub fn plot_comparison(
    base: &Path,
    title: &str,
    curves: &[Curve],
    bars_title: &str,
    bars: &[(String, f64)],
) -> Result<PathBuf, String> {
    let path = base.with_extension("svg");
    {
        let root = SVGBackend::new(&path, (1100, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(620);
        draw_curves(&left, title, curves).map_err(|e| e.to_string())?;
        draw_bars(&right, bars_title, bars).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(path)
}

/// Draws only a bar chart in `<base>.svg`.
pub fn plot_bars(base: &Path, title: &str, bars: &[(String, f64)]) -> Result<PathBuf, String> {
    let path = base.with_extension("svg");
    {
        let root = SVGBackend::new(&path, (560, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw_bars(&root, title, bars).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(path)
}

/// One chart of [`plot_timelines`]: title, y label, and its series as
/// (label, [(seconds, y)]).
pub type Panel = (String, String, Vec<(String, Vec<(f64, f64)>)>);

/// Draws series over time side by side, one chart per panel, in
/// `<base>.svg`.
pub fn plot_timelines(base: &Path, panels: &[Panel]) -> Result<PathBuf, String> {
    let path = base.with_extension("svg");
    {
        let width = 520 * panels.len().max(1) as u32;
        let root = SVGBackend::new(&path, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, (title, y_label, series)) in areas.iter().zip(panels) {
            draw_timeline(area, title, y_label, series).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(path)
}

fn draw_timeline(
    area: &Area<'_>,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let points = || series.iter().flat_map(|s| s.1.iter());
    let max_x = points().map(|p| p.0).fold(1.0f64, f64::max);
    let max_y = points().map(|p| p.1).fold(1e-9f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..max_x, 0.0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_label)
        .draw()?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn quantile_label(q: f64) -> String {
    let p = q * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("p{p:.0}")
    } else {
        format!("p{}", format!("{p:.4}").trim_end_matches('0'))
    }
}

fn draw_curves(
    area: &Area<'_>,
    title: &str,
    curves: &[Curve],
) -> Result<(), Box<dyn std::error::Error>> {
    let max_y = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    // One evenly spaced column per quantile, labelled with it.
    let columns = curves.first().map_or(0, |c| c.points.len());
    let labels: Vec<String> = curves
        .first()
        .map(|c| c.points.iter().map(|p| quantile_label(p.0)).collect())
        .unwrap_or_default();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0usize..columns.saturating_sub(1).max(1), 0.0f64..max_y)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(columns)
        .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                c.points.iter().enumerate().map(|(x, p)| (x, p.1)),
                color.stroke_width(2),
            ))?
            .label(c.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

fn draw_bars(
    area: &Area<'_>,
    title: &str,
    bars: &[(String, f64)],
) -> Result<(), Box<dyn std::error::Error>> {
    let max_y = bars.iter().map(|b| b.1).fold(1e-9f64, f64::max) * 1.15;
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..max_y)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => bars.get(*i).map(|b| b.0.clone()).unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    for (i, (_, v)) in bars.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(color.filled())
                .margin(25)
                .data([(i, *v)]),
        )?;
        chart.draw_series(std::iter::once(Text::new(
            format_number(*v),
            (SegmentValue::Exact(i), *v),
            ("sans-serif", 14),
        )))?;
    }
    Ok(())
}

/// Formats a figure with a sensible precision.
pub fn format_number(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The median of some figures (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn svg_files_are_written() {
        let dir = std::env::temp_dir().join(format!("zc-bench-test-{}", std::process::id()));
        let base = output_base(&dir, "unit");
        let curves = vec![Curve {
            label: "a".into(),
            points: CURVE_QUANTILES.iter().map(|&q| (q, 100.0 * q)).collect(),
        }];
        let path = plot_comparison(
            &base,
            "t",
            &curves,
            "ops/s",
            &[("a".into(), 10.0), ("b".into(), 12.0)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<polyline"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
