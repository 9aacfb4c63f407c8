//! Three small, dependency-free SVG charts for the figures: lines (with optional vertical
//! markers), a heat map, and a timeline of bars on rows. Good enough to read a trend; the CSV
//! next to each SVG has the numbers.

use std::fmt::Write as _;

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];
const W: f64 = 760.0;
const H: f64 = 440.0;
const M: f64 = 64.0;

fn frame(title: &str, xlabel: &str, ylabel: &str) -> String {
    format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{M}' y='24' font-size='15'>{title}</text>\n\
         <text x='{}' y='{}' text-anchor='middle'>{xlabel}</text>\n\
         <text x='16' y='{}' transform='rotate(-90 16 {})' text-anchor='middle'>{ylabel}</text>\n",
        W / 2.0,
        H - 16.0,
        H / 2.0,
        H / 2.0
    )
}

/// One named series of (x, y) points, drawn solid or dashed.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A line chart; `marks` are labelled vertical lines at x positions.
pub fn lines(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    marks: &[(f64, &str)],
) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        x1 = x0 + 1.0;
    }
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let px = |x: f64| M + (x - x0) / (x1 - x0) * (W - 2.0 * M);
    let py = |y: f64| H - M - y / y1 * (H - 2.0 * M);
    let mut s = frame(title, xlabel, ylabel);
    let _ = writeln!(
        s,
        "<line x1='{M}' y1='{}' x2='{}' y2='{}' stroke='black'/>",
        H - M,
        W - M,
        H - M
    );
    let _ = writeln!(
        s,
        "<line x1='{M}' y1='{M}' x2='{M}' y2='{}' stroke='black'/>",
        H - M
    );
    for i in 0..=4 {
        let (x, y) = (x0 + (x1 - x0) * i as f64 / 4.0, y1 * i as f64 / 4.0);
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='end'>{}</text>",
            M - 6.0,
            py(y) + 4.0,
            short(y)
        );
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' text-anchor='middle'>{}</text>",
            px(x),
            H - M + 16.0,
            short(x)
        );
    }
    for &(x, label) in marks {
        let _ = writeln!(
            s,
            "<line x1='{0}' y1='{M}' x2='{0}' y2='{1}' stroke='#999' stroke-dasharray='3 3'/>",
            px(x),
            H - M
        );
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' fill='#666'>{label}</text>",
            px(x) + 4.0,
            M + 12.0
        );
    }
    for (i, se) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let dash = if se.dashed { "6 4" } else { "none" };
        let _ = writeln!(
            s,
            "<polyline points='{}' fill='none' stroke='{color}' stroke-width='2' stroke-dasharray='{dash}'/>",
            path.join(" ")
        );
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                "<circle cx='{:.1}' cy='{:.1}' r='3' fill='{color}'/>",
                px(x),
                py(y)
            );
        }
        let _ = writeln!(
            s,
            "<text x='{}' y='{}' fill='{color}'>{}</text>",
            W - M - 170.0,
            M + 10.0 + 15.0 * i as f64,
            se.name
        );
    }
    s + "</svg>\n"
}

/// A heat map of `values[row][col]` in 0 ..= 1 (white → dark blue), labelled cells.
pub fn heatmap(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    cols: &[String],
    rows: &[String],
    values: &[Vec<f64>],
) -> String {
    let mut s = frame(title, xlabel, ylabel);
    let (cw, ch) = (
        (W - 2.0 * M) / cols.len().max(1) as f64,
        (H - 2.0 * M) / rows.len().max(1) as f64,
    );
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let v = v.clamp(0.0, 1.0);
            let shade = |full: f64| (255.0 - v * (255.0 - full)) as u8;
            let (x, y) = (M + c as f64 * cw, M + r as f64 * ch);
            let _ = writeln!(
                s,
                "<rect x='{x:.1}' y='{y:.1}' width='{cw:.1}' height='{ch:.1}' fill='rgb({},{},{})' stroke='white'/>",
                shade(20.0),
                shade(60.0),
                shade(140.0)
            );
            let ink = if v > 0.55 { "white" } else { "black" };
            let _ = writeln!(
                s,
                "<text x='{:.1}' y='{:.1}' text-anchor='middle' fill='{ink}'>{:.2}</text>",
                x + cw / 2.0,
                y + ch / 2.0 + 4.0,
                v
            );
        }
    }
    for (c, name) in cols.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x='{:.1}' y='{}' text-anchor='middle'>{name}</text>",
            M + (c as f64 + 0.5) * cw,
            H - M + 16.0
        );
    }
    for (r, name) in rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x='{}' y='{:.1}' text-anchor='end'>{name}</text>",
            M - 6.0,
            M + (r as f64 + 0.5) * ch + 4.0
        );
    }
    s + "</svg>\n"
}

fn short(v: f64) -> String {
    if v.abs() >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One bar of a [`timeline`]: on row `row`, from `begin` to `end` (x units), in colour `color`
/// (an index into the palette), with an optional label inside it.
pub struct Bar {
    pub row: usize,
    pub begin: f64,
    pub end: f64,
    pub color: usize,
    pub label: String,
}

/// A timeline: one lane per row (named on the left), bars where their work ran.
pub fn timeline(title: &str, xlabel: &str, rows: &[String], bars: &[Bar]) -> String {
    let mut s = frame(title, xlabel, "");
    let left = M + 40.0; // room for the row names
    let x_max = bars.iter().map(|b| b.end).fold(0.0f64, f64::max).max(1e-12);
    let (lane, width) = ((H - 2.0 * M) / rows.len().max(1) as f64, W - left - M / 2.0);
    let x = |v: f64| left + v / x_max * width;
    for (r, name) in rows.iter().enumerate() {
        let y = M + r as f64 * lane;
        let _ = writeln!(
            s,
            "<rect x='{left}' y='{y:.1}' width='{width:.1}' height='{lane:.1}' fill='{}'/>\n\
             <text x='{:.1}' y='{:.1}' text-anchor='end'>{name}</text>",
            if r % 2 == 0 { "#f4f4f4" } else { "white" },
            left - 6.0,
            y + lane / 2.0 + 4.0
        );
    }
    for b in bars {
        let (x0, x1) = (x(b.begin), x(b.end).max(x(b.begin) + 0.5));
        let y = M + b.row as f64 * lane + lane * 0.15;
        let _ = writeln!(
            s,
            "<rect x='{x0:.2}' y='{y:.1}' width='{:.2}' height='{:.1}' fill='{}' opacity='0.85'/>",
            x1 - x0,
            lane * 0.7,
            COLORS[b.color % COLORS.len()]
        );
        if !b.label.is_empty() && x1 - x0 > 7.0 * b.label.len() as f64 {
            let _ = writeln!(
                s,
                "<text x='{:.1}' y='{:.1}' text-anchor='middle' fill='white' font-size='10'>{}</text>",
                (x0 + x1) / 2.0,
                y + lane * 0.35 + 3.0,
                b.label
            );
        }
    }
    for i in 0..=4 {
        let v = x_max * i as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x='{:.1}' y='{}' text-anchor='middle'>{}</text>",
            x(v),
            H - M + 16.0,
            short(v)
        );
    }
    s + "</svg>\n"
}
