//! A small SVG line chart: linear or log axes, ticks, a legend, one polyline with markers
//! per series. Just enough for the benchmark's two plots (see [`crate::charts`]); no
//! dependencies, deterministic output.

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// How values map onto an axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Proportional, from 0 (or the lowest value, if negative).
    Linear,
    /// Logarithmic (values ≤ 0 are left out).
    Log,
}

/// One axis.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The label under or beside the axis.
    pub label: String,
    /// Linear or logarithmic.
    pub scale: Scale,
    /// Ticks as (value, label); empty: chosen from the data.
    pub ticks: Vec<(f64, String)>,
}

impl Axis {
    /// An axis with ticks chosen from the data.
    pub fn new(label: impl Into<String>, scale: Scale) -> Axis {
        Axis {
            label: label.into(),
            scale,
            ticks: Vec::new(),
        }
    }
}

/// One line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (to tell a second group of series apart).
    pub dashed: bool,
}

/// A line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Horizontal axis.
    pub x: Axis,
    /// Vertical axis.
    pub y: Axis,
    /// The lines.
    pub series: Vec<Series>,
}

/// Maps data values of one axis to pixels.
struct Mapping {
    scale: Scale,
    low: f64,
    high: f64,
    from: f64,
    to: f64,
}

impl Mapping {
    fn new(axis: &Axis, values: &[f64], from: f64, to: f64) -> Mapping {
        let usable: Vec<f64> = values
            .iter()
            .chain(axis.ticks.iter().map(|(value, _)| value))
            .copied()
            .filter(|value| value.is_finite() && (axis.scale == Scale::Linear || *value > 0.0))
            .collect();
        let min = usable.iter().copied().fold(f64::INFINITY, f64::min);
        let max = usable.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (low, high) = match axis.scale {
            _ if usable.is_empty() => (0.0, 1.0),
            Scale::Linear => {
                let low = min.min(0.0);
                let high = if max > low { max * 1.05 } else { low + 1.0 };
                (low, high)
            }
            Scale::Log => {
                let low = min.log10().floor();
                let high = max.log10().ceil().max(low + 1.0);
                (low, high)
            }
        };
        Mapping {
            scale: axis.scale,
            low,
            high,
            from,
            to,
        }
    }

    fn position(&self, value: f64) -> Option<f64> {
        let value = match self.scale {
            Scale::Linear => value,
            Scale::Log if value > 0.0 => value.log10(),
            Scale::Log => return None,
        };
        Some(self.from + (value - self.low) / (self.high - self.low) * (self.to - self.from))
    }

    /// Ticks from the data: 5 round steps (linear) or decades (log).
    fn auto_ticks(&self) -> Vec<(f64, String)> {
        match self.scale {
            Scale::Linear => {
                let raw_step = (self.high - self.low) / 5.0;
                let magnitude = 10f64.powf(raw_step.log10().floor());
                let step = [1.0, 2.0, 5.0, 10.0]
                    .iter()
                    .map(|factor| factor * magnitude)
                    .find(|step| *step >= raw_step)
                    .unwrap_or(raw_step);
                let mut ticks = Vec::new();
                let mut value = (self.low / step).ceil() * step;
                while value <= self.high + step * 1e-9 {
                    ticks.push((value, format_number(value)));
                    value += step;
                }
                ticks
            }
            Scale::Log => {
                let (low, high) = (self.low as i32, self.high as i32);
                (low..=high)
                    .map(|exponent| {
                        let value = 10f64.powi(exponent);
                        (value, format_number(value))
                    })
                    .collect()
            }
        }
    }
}

/// A number as a short tick label: 0.5, 20, 1.5k, 2M.
pub fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = format!("{scaled:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as a standalone SVG document.
    pub fn render(&self) -> String {
        let plot_right = WIDTH - RIGHT;
        let plot_bottom = HEIGHT - BOTTOM;
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        let ys: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        let x_map = Mapping::new(&self.x, &xs, LEFT, plot_right);
        let y_map = Mapping::new(&self.y, &ys, plot_bottom, TOP);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            (LEFT + plot_right) / 2.0,
            escape(&self.title)
        );
        let x_ticks = if self.x.ticks.is_empty() {
            x_map.auto_ticks()
        } else {
            self.x.ticks.clone()
        };
        for (value, label) in &x_ticks {
            let Some(x) = x_map.position(*value) else { continue };
            let _ = writeln!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{plot_bottom}\" stroke=\"#e5e5e5\"/>\n\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                plot_bottom + 18.0,
                escape(label)
            );
        }
        let y_ticks = if self.y.ticks.is_empty() {
            y_map.auto_ticks()
        } else {
            self.y.ticks.clone()
        };
        for (value, label) in &y_ticks {
            let Some(y) = y_map.position(*value) else { continue };
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{plot_right}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 6.0,
                y + 4.0,
                escape(label)
            );
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#333\"/>",
            plot_right - LEFT,
            plot_bottom - TOP
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (LEFT + plot_right) / 2.0,
            HEIGHT - 18.0,
            escape(&self.x.label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (TOP + plot_bottom) / 2.0,
            escape(&self.y.label)
        );
        for (index, series) in self.series.iter().enumerate() {
            let color = COLORS[index % COLORS.len()];
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter_map(|(x, y)| Some((x_map.position(*x)?, y_map.position(*y)?)))
                .collect();
            let path: Vec<String> = points.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
            for (x, y) in &points {
                let _ = writeln!(svg, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"#);
            }
            let legend_y = TOP + 10.0 + 18.0 * index as f64;
            let _ = writeln!(
                svg,
                "<line x1=\"{:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                plot_right + 12.0,
                plot_right + 36.0,
                plot_right + 42.0,
                legend_y + 4.0,
                escape(&series.name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chart renders every series, its legend and the given ticks; log axes skip zeros.
    #[test]
    fn renders_series_and_ticks() {
        let chart = Chart {
            title: "a <title>".into(),
            x: Axis {
                label: "clients".into(),
                scale: Scale::Log,
                ticks: vec![(1.0, "1".into()), (64.0, "64".into())],
            },
            y: Axis::new("ops/s", Scale::Linear),
            series: vec![
                Series {
                    name: "ringkv".into(),
                    points: vec![(1.0, 400.0), (64.0, 1000.0), (0.0, 5.0)],
                    dashed: false,
                },
                Series {
                    name: "etcd".into(),
                    points: vec![(1.0, 650.0), (64.0, 4600.0)],
                    dashed: true,
                },
            ],
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            4,
            "the zero x is left out on a log axis"
        );
        assert!(svg.contains(">64</text>") && svg.contains(">ringkv</text>") && svg.contains(">etcd</text>"));
    }

    /// Tick labels are short.
    #[test]
    fn number_labels() {
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(20.0), "20");
        assert_eq!(format_number(1500.0), "1.5k");
        assert_eq!(format_number(2_000_000.0), "2M");
    }
}
