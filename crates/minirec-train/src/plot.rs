//! Training curves as small self-contained SVG line charts (no plotting dependency): one chart per metric,
//! steps on x.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, TrainError};

/// Writes a line chart of `points` (x, y) titled `title` to `path`. Non-finite points are skipped.
pub fn line_chart(path: &Path, title: &str, y_label: &str, points: &[(f64, f64)]) -> Result<()> {
    multi_line_chart(path, title, y_label, &[(String::new(), points.to_vec())])
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Several named series on shared axes, with a legend when they have names. Non-finite points are skipped.
pub fn multi_line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, pts)| {
            (
                n.as_str(),
                pts.iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect(),
            )
        })
        .collect();
    let (w, h, ml, mr, mt, mb) = (640.0, 360.0, 70.0, 20.0, 40.0, 50.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    if series.iter().all(|(_, p)| p.is_empty()) {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            w / 2.0,
            h / 2.0
        );
        return std::fs::write(path, svg).map_err(|e| TrainError::io(path, e));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (_, pts) in &series {
        for &(x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let (pw, ph) = (w - ml - mr, h - mt - mb);
    let sx = |x: f64| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| mt + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let _ = write!(
        svg,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let fy = y0 + (y1 - y0) * k as f64 / 4.0;
        let fx = x0 + (x1 - x0) * k as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            ml - 6.0,
            sy(fy) + 4.0,
            fmt(fy)
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(fx),
            h - mb + 18.0,
            fmt(fx)
        );
        let _ = write!(
            svg,
            r##"<line x1="{ml}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/>"##,
            ml + pw,
            y = sy(fy)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        ml + pw / 2.0,
        h - 10.0
    );
    let _ = write!(
        svg,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0,
        escape(y_label)
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path_d: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path_d.join(" ")
        );
        if !name.is_empty() {
            let ly = mt + 14.0 + 15.0 * i as f64;
            let _ = write!(
                svg,
                r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                ml + 8.0,
                ml + 26.0,
                ml + 30.0,
                ly + 4.0,
                escape(name)
            );
        }
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).map_err(|e| TrainError::io(path, e))
}

/// One series per JSONL log: `key` against `step`, each named.
pub fn series_from_logs(
    logs: &[(String, std::path::PathBuf)],
    key: &str,
) -> Vec<(String, Vec<(f64, f64)>)> {
    logs.iter()
        .map(|(name, log)| {
            let pts = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
                .collect();
            (name.clone(), pts)
        })
        .collect()
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Charts of the given keys of a JSON Lines log, one SVG per key, `<prefix>_<key>.svg` in `dir`.
pub fn charts_from_log(
    log: &Path,
    dir: &Path,
    prefix: &str,
    keys: &[&str],
) -> Result<Vec<std::path::PathBuf>> {
    let text = std::fs::read_to_string(log).map_err(|e| TrainError::io(log, e))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut out = Vec::new();
    for key in keys {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(*key)?.as_f64()?)))
            .collect();
        let path = dir.join(format!("{prefix}_{}.svg", key.replace('@', "_at_")));
        line_chart(&path, &format!("{prefix}: {key}"), key, &pts)?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_chart_with_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.svg");
        line_chart(
            &p,
            "reward <x>",
            "reward",
            &[(0.0, 0.1), (1.0, 0.4), (2.0, f64::NAN), (3.0, 0.3)],
        )
        .unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        let poly = s
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(poly.split(' ').count(), 3, "the NaN point is skipped");
        assert!(s.contains("reward &lt;x&gt;"));
        multi_line_chart(
            &p,
            "two",
            "y",
            &[
                ("a".into(), vec![(0.0, 1.0), (1.0, 2.0)]),
                ("b".into(), vec![(0.0, 3.0)]),
            ],
        )
        .unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains(">a</text>") && s.contains(">b</text>"));
        line_chart(&p, "empty", "y", &[]).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("no data"));
    }
}
