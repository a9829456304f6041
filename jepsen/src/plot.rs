//! A latency-over-time plot (SVG, no dependencies): one dot per completed client
//! operation at its invocation time, latency on a log scale, coloured by outcome, with the
//! nemesis fault windows shaded.

use std::fmt::Write as _;

/// One completed operation.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub time_s: f64,
    pub latency_ms: f64,
    /// "ok", "fail" or "info".
    pub outcome: &'static str,
}

/// A shaded fault window.
#[derive(Debug, Clone)]
pub struct Window {
    pub start_s: f64,
    pub end_s: f64,
    pub label: String,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the plot.
pub fn latency_svg(title: &str, points: &[Point], windows: &[Window]) -> String {
    let end_s = points
        .iter()
        .map(|p| p.time_s)
        .chain(windows.iter().map(|w| w.end_s))
        .fold(1.0_f64, f64::max);
    let min_ms = 0.1_f64;
    let max_ms = points
        .iter()
        .map(|p| p.latency_ms)
        .fold(10.0_f64, f64::max)
        .max(min_ms * 10.0);
    let (log_min, log_max) = (min_ms.log10(), max_ms.log10().ceil());
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + plot_w * (t / end_s);
    let y = |ms: f64| {
        let clamped = ms.max(min_ms).log10();
        TOP + plot_h * (1.0 - (clamped - log_min) / (log_max - log_min))
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="18" font-size="14">{}</text>"#,
        escape(title)
    );
    for window in windows {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#f4c7c3" opacity="0.5"><title>{}</title></rect>"##,
            x(window.start_s),
            (x(window.end_s) - x(window.start_s)).max(1.0),
            escape(&window.label)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{}" font-size="9" fill="#a33">{}</text>"##,
            x(window.start_s) + 2.0,
            TOP + 10.0,
            escape(window.label.split_whitespace().next().unwrap_or(""))
        );
    }
    // Axes and grid.
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
        TOP + plot_h
    );
    let mut decade = log_min;
    while decade <= log_max + 1e-9 {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 5.0,
            yy + 4.0,
            if ms < 1.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        );
        decade += 1.0;
    }
    let step = (end_s / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= end_s + 1e-9 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{t:.0}s</text>"#,
            x(t),
            TOP + plot_h + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">time since start (invocation)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0
    );
    for point in points {
        let color = match point.outcome {
            "ok" => "#2a7",
            "fail" => "#c33",
            _ => "#e90",
        };
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}" opacity="0.6"/>"#,
            x(point.time_s),
            y(point.latency_ms)
        );
    }
    let legend_x = LEFT + plot_w - 170.0;
    for (i, (label, color)) in [("ok", "#2a7"), ("fail", "#c33"), ("info (unknown)", "#e90")]
        .iter()
        .enumerate()
    {
        let ly = TOP + 14.0 + 14.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<circle cx="{legend_x}" cy="{ly}" r="4" fill="{color}"/><text x="{}" y="{}">{label}</text>"#,
            legend_x + 8.0,
            ly + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{legend_x}" y="{}" width="8" height="8" fill="#f4c7c3"/><text x="{}" y="{}">fault active</text>"##,
        TOP + 52.0,
        legend_x + 12.0,
        TOP + 60.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SVG is well formed enough to contain every point and window, escaped.
    #[test]
    fn renders_points_and_windows() {
        let points = [
            Point {
                time_s: 1.0,
                latency_ms: 2.0,
                outcome: "ok",
            },
            Point {
                time_s: 2.0,
                latency_ms: 2000.0,
                outcome: "info",
            },
        ];
        let windows = [Window {
            start_s: 1.5,
            end_s: 3.0,
            label: "kill-one <1>".to_string(),
        }];
        let svg = latency_svg("t & t", &points, &windows);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 2 + 3);
        assert!(svg.contains("kill-one &lt;1&gt;"));
        assert!(svg.contains("t &amp; t"));
    }
}
