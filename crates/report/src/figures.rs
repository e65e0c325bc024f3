//! The figures, as SVG text (plotters' SVG backend: no fonts or image codecs to build, and text
//! stays text, searchable and sharp at any zoom).
//!
//! - [`plot_svg`]: `lidscope plot`'s picture, the LID distribution of every run and, for several
//!   runs, each run's mean with its 10th-90th percentile band;
//! - the report's: mean LID against a numeric partition key (one line per combination of the
//!   other keys, with a p10-p90 band), the distributions grouped the same way, the per-run means.

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

use crate::error::{ReportError, Result};
use crate::load::{natural, Results, Run};

/// Colours of successive runs or lines (more than eight reuse them).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Partition keys that are the x axis when present, in order of preference.
pub const X_KEYS: [&str; 3] = ["step", "checkpoint", "epoch"];

/// Tick labels and axis names: plotters' defaults are small on a page scaled to fit a screen.
const LABELS: (&str, u32) = ("sans-serif", 14);
const AXIS_DESC: (&str, u32) = ("sans-serif", 16);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// How the trend's x axis places its values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XScale {
    /// Logarithmic when the checkpoints are spaced geometrically (the gaps grow with the step, as
    /// training runs save them), else linear.
    #[default]
    Auto,
    /// By value.
    Linear,
    /// By the logarithm of the value (a step 0 is placed half a decade-step before the first
    /// positive one: the axis is `log10(x + c)`, `c` the smallest positive value).
    Log,
}

/// The numeric partition key of the trend chart, with each run's value of it.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub key: String,
    index: usize,
    /// Each run's value of the key, by run.
    pub x: Vec<f64>,
    /// `Some(c)`: the axis is logarithmic, placing `x` at `log10(x + c)`.
    log_offset: Option<f64>,
}

impl Axis {
    /// Where value `x` sits on the chart.
    pub fn pos(&self, x: f64) -> f64 {
        match self.log_offset {
            Some(c) => (x + c).log10(),
            None => x,
        }
    }

    /// The value at chart position `p`.
    fn value(&self, p: f64) -> f64 {
        match self.log_offset {
            Some(c) => 10f64.powf(p) - c,
            None => p,
        }
    }

    /// A run's value of the key as written in its partition (`3600`, not `3600.0`).
    pub fn value_of<'r>(&self, run: &'r Run) -> &'r str {
        &run.values[self.index]
    }

    /// Whether the axis is logarithmic.
    pub fn is_log(&self) -> bool {
        self.log_offset.is_some()
    }

    /// The axis as chart coordinates: the runs' range with a margin, ticks at round values.
    fn coord(&self) -> Ticked {
        let (x0, x1) = self.x.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
        let (p0, p1) = (self.pos(x0), self.pos(x1));
        let pad = if p1 > p0 { (p1 - p0) * 0.04 } else { p0.abs().max(1.0) * 0.5 };
        let ticks: Vec<f64> = match self.log_offset {
            Some(_) => log_ticks(self.x.iter().copied().filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min), x1, x0 <= 0.0),
            None => linear_ticks(x0, x1),
        };
        Ticked { range: p0 - pad..p1 + pad, ticks: ticks.into_iter().map(|t| self.pos(t)).collect() }
    }

    /// A tick label: the value at position `p`, as a person writes it.
    fn label(&self, p: f64) -> String {
        let v = self.value(p);
        let mag = 10f64.powi(v.abs().max(1e-300).log10().floor() as i32 - 5);
        number((v / mag).round() * mag)
    }
}

/// A linear coordinate whose tick marks sit where we put them (round values of the data, which on
/// a log axis are not evenly spaced in the chart).
#[derive(Clone, Debug)]
pub(crate) struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let f = if span > 0.0 { (value - self.range.start) / span } else { 0.5 };
        limit.0 + (f * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match hint.weight().allow_light_points() {
            true => Vec::new(),
            false => self.ticks.iter().copied().filter(|t| self.range.contains(t)).collect(),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for Ticked {
    fn format(value: &f64) -> String {
        number(*value)
    }
}

/// Whether `xs` are spaced geometrically: at least 5 distinct values over two decades or more of
/// the positive ones, the gaps at the top at least 4 times those at the bottom.
pub(crate) fn geometric(xs: &[f64]) -> bool {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    let positive: Vec<f64> = v.iter().copied().filter(|x| *x > 0.0).collect();
    if v.len() < 5 || v[0] < 0.0 || positive.len() < 2 || positive[positive.len() - 1] / positive[0] < 100.0 {
        return false;
    }
    let gaps: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
    let third = (gaps.len() / 3).max(1);
    let median = |g: &[f64]| {
        let mut g = g.to_vec();
        g.sort_by(f64::total_cmp);
        g[g.len() / 2]
    };
    median(&gaps[gaps.len() - third..]) >= 4.0 * median(&gaps[..third])
}

/// About ten round ticks (1, 2 or 5 times a power of ten apart) over `[lo, hi]`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| (hi - lo) / s <= 10.0).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// 0 (when `zero`), then 1, 2 and 5 times the powers of ten from the decade of `lo` (the
/// smallest positive value) to `hi`.
fn log_ticks(lo: f64, hi: f64, zero: bool) -> Vec<f64> {
    let mut t = Vec::new();
    if zero {
        t.push(0.0);
    }
    if lo <= 0.0 || hi < lo {
        return t;
    }
    let mut e = lo.log10().floor() as i32;
    while 10f64.powi(e) <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(e);
            if v >= lo * 0.9999 && v <= hi * 1.0001 {
                t.push(v);
            }
        }
        e += 1;
    }
    t
}

/// Runs that differ only in the x key: one line of the trend chart.
pub(crate) struct Line {
    pub label: String,
    /// Indices into `Results::runs`, by x value.
    pub runs: Vec<usize>,
    /// The line's values of the partition keys other than the axis, in key order.
    pub values: Vec<String>,
}

/// The x axis: `requested` if given, else the first of [`X_KEYS`] present, else the first key,
/// whose values all parse as numbers. `Ok(Err(why))` when there is none.
///
/// # Errors
/// [`ReportError::Axis`] when `requested` is not a partition key or has a value that is not a number.
pub(crate) fn choose_axis(results: &Results, requested: Option<&str>, scale: XScale) -> Result<std::result::Result<Axis, String>> {
    Ok(choose_key(results, requested)?.map(|(key, index, x)| {
        let log = match scale {
            XScale::Linear => false,
            XScale::Log => x.iter().all(|v| *v >= 0.0) && x.iter().any(|v| *v > 0.0),
            XScale::Auto => geometric(&x),
        };
        let log_offset = log.then(|| if x.contains(&0.0) { x.iter().copied().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min) } else { 0.0 });
        Axis { key, index, x, log_offset }
    }))
}

/// A partition key chosen as the x axis: its name, its index and the runs' values of it.
type Key = (String, usize, Vec<f64>);

/// The x key, its index and the runs' values of it (see [`choose_axis`]).
fn choose_key(results: &Results, requested: Option<&str>) -> Result<std::result::Result<Key, String>> {
    let numeric = |index: usize| -> Option<Vec<f64>> {
        results.runs.iter().map(|r| r.values[index].trim().parse::<f64>().ok().filter(|x| x.is_finite())).collect()
    };
    if let Some(key) = requested {
        let Some(index) = results.keys.iter().position(|k| k == key) else {
            let keys = if results.keys.is_empty() { "none: the result is not partitioned".to_string() } else { results.keys.join(", ") };
            return Err(ReportError::Axis { key: key.into(), reason: format!("no such partition key in {} (keys: {keys})", results.dir.display()) });
        };
        let Some(x) = numeric(index) else {
            let bad = results.runs.iter().map(|r| &r.values[index]).find(|v| !v.trim().parse::<f64>().is_ok_and(f64::is_finite));
            return Err(ReportError::Axis { key: key.into(), reason: format!("value {:?} is not a number", bad.map_or("", |v| v.as_str())) });
        };
        return Ok(Ok((key.into(), index, x)));
    }
    if results.keys.is_empty() {
        return Ok(Err("the result is not partitioned, so there is no step to plot against".into()));
    }
    let preferred = X_KEYS.iter().filter_map(|k| results.keys.iter().position(|key| key == k));
    for index in preferred.chain(0..results.keys.len()) {
        if let Some(x) = numeric(index) {
            return Ok(Ok((results.keys[index].clone(), index, x)));
        }
    }
    Ok(Err(format!("no partition key has numbers for all runs ({}), so there is no numeric axis to plot against", results.keys.join(", "))))
}

/// The runs grouped by their values of every key but the axis, each group by x value.
pub(crate) fn lines(results: &Results, axis: &Axis) -> Vec<Line> {
    let others = |r: &Run| -> Vec<String> { r.values.iter().enumerate().filter(|(i, _)| *i != axis.index).map(|(_, v)| v.clone()).collect() };
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    for (i, r) in results.runs.iter().enumerate() {
        let key = others(r);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.sort_by(|(a, _), (b, _)| natural(a, b));
    let names: Vec<String> = results.keys.iter().enumerate().filter(|(i, _)| *i != axis.index).map(|(_, k)| k.clone()).collect();
    groups
        .into_iter()
        .map(|(values, mut runs)| {
            runs.sort_by(|a, b| axis.x[*a].total_cmp(&axis.x[*b]));
            let label = if names.is_empty() { "all runs".to_string() } else { crate::load::label(&names, &values) };
            Line { label, runs, values }
        })
        .collect()
}

/// `lidscope plot`'s picture: the distribution of every run in one panel and, for several runs,
/// each run's mean with its 10th-90th percentile band in a second.
///
/// # Errors
/// [`ReportError::Draw`] (plotters failed on data it was given: a bug).
pub fn plot_svg(results: &Results) -> Result<String> {
    let runs: Vec<&Run> = results.runs.iter().filter(|r| r.n_finite > 0).collect();
    let panels = if runs.len() > 1 { 2 } else { 1 };
    svg("the plot", (900, 420 * panels as u32), |root| {
        let areas = root.split_evenly((panels, 1));
        let colours: Vec<RGBColor> = (0..runs.len()).map(|i| PALETTE[i % PALETTE.len()]).collect();
        let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
        histograms(&areas[0], results, &runs, &colours, &labels, "Pointwise LID: distribution per run")?;
        if panels > 1 {
            means(&areas[1], &runs, true)?;
        }
        Ok(())
    })
}

/// Mean LID against the axis key, one line per [`Line`], each with its p10-p90 band; the legend
/// to the right of the plot, so that it never hides a line.
pub(crate) fn trend_svg(results: &Results, axis: &Axis, lines: &[Line]) -> Result<String> {
    let legend_chars = lines.iter().map(|l| l.label.chars().count()).max().unwrap_or(0);
    let legend_width = (legend_chars as u32 * 8 + 60).clamp(140, 340);
    svg("the trend chart", (1000, 480), |root| {
        let (plot, legend) = root.split_horizontally(1000 - legend_width);
        let finite = |r: &&Run| r.n_finite > 0 && r.mean_lid().is_finite();
        let runs: Vec<&Run> = results.runs.iter().filter(finite).collect();
        let lo = runs.iter().map(|r| r.p10.min(r.mean_lid())).fold(f64::INFINITY, f64::min);
        let hi = runs.iter().map(|r| r.p90.max(r.mean_lid())).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.08).max(1e-6);
        let mut chart = ChartBuilder::on(&plot)
            .caption(format!("Mean LID against {} (band: 10th to 90th percentile)", axis.key), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(axis.coord(), lo - pad..hi + pad)?;
        let x_desc = if axis.is_log() { format!("{} (log scale)", axis.key) } else { axis.key.clone() };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("mean LID")
            .x_label_formatter(&|p| axis.label(*p))
            .label_style(LABELS)
            .axis_desc_style(AXIS_DESC)
            .light_line_style(TRANSPARENT)
            .draw()?;
        for (i, line) in lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, &Run)> = line.runs.iter().map(|r| (axis.pos(axis.x[*r]), &results.runs[*r])).filter(|(_, r)| finite(r)).collect();
            let band: Vec<(f64, f64)> = pts.iter().map(|(x, r)| (*x, r.p90)).chain(pts.iter().rev().map(|(x, r)| (*x, r.p10))).collect();
            chart.draw_series(std::iter::once(Polygon::new(band, colour.mix(0.15).filled())))?;
            chart.draw_series(LineSeries::new(pts.iter().map(|(x, r)| (*x, r.mean_lid())), colour.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|(x, r)| Circle::new((*x, r.mean_lid()), 4, colour.filled())))?;
            if pts.len() == 1 {
                // A band of one point has no width: show its spread as an error bar instead.
                let (x, r) = pts[0];
                chart.draw_series(std::iter::once(ErrorBar::new_vertical(x, r.p10, r.mean_lid(), r.p90, colour.filled(), 10)))?;
            }
        }
        let legend = legend.margin(50, 10, 4, 4);
        for (i, line) in lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let y = 10 + i as i32 * 22;
            legend.draw(&Rectangle::new([(0, y - 7), (26, y + 7)], colour.mix(0.15).filled()))?;
            legend.draw(&PathElement::new(vec![(0, y), (26, y)], colour.stroke_width(2)))?;
            legend.draw(&Circle::new((13, y), 4, colour.filled()))?;
            legend.draw(&Text::new(line.label.clone(), (34, y - 8), ("sans-serif", 15)))?;
        }
        Ok(())
    })
}

/// Each metric against the axis key, one panel per metric stacked below each other on the trend
/// chart's x range, one line per [`Line`] in the trend chart's colours: LID and the metrics move
/// together or not, checkpoint by checkpoint.
pub(crate) fn metrics_svg(axis: &Axis, lines: &[Line], metrics: &crate::metrics::Metrics) -> Result<String> {
    let panels = metrics.names.len();
    svg("the metrics chart", (1000, 60 + 240 * panels as u32), |root| {
        let areas = root.split_evenly((panels, 1));
        for (m, (area, name)) in areas.iter().zip(&metrics.names).enumerate() {
            let pts = |line: &Line| -> Vec<(f64, f64)> {
                line.runs.iter().filter_map(|r| Some((axis.pos(axis.x[*r]), metrics.values[*r].as_ref()?[m]))).filter(|(_, v)| v.is_finite()).collect()
            };
            // A log of one row per checkpoint gives every line the same values: one line then.
            let same = lines.windows(2).all(|w| pts(&w[0]) == pts(&w[1]));
            let shown: Vec<&Line> = if same { lines.iter().take(1).collect() } else { lines.iter().collect() };
            let all: Vec<f64> = lines.iter().flat_map(|l| pts(l).into_iter().map(|(_, v)| v)).collect();
            let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.08).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{name} against {}", axis.key), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(axis.coord(), lo - pad..hi + pad)?;
            let x_desc = if axis.is_log() { format!("{} (log scale)", axis.key) } else { axis.key.clone() };
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(name.as_str())
                .x_label_formatter(&|p| axis.label(*p))
                .label_style(LABELS)
                .axis_desc_style(AXIS_DESC)
                .light_line_style(TRANSPARENT)
                .draw()?;
            for (i, line) in shown.iter().enumerate() {
                let colour = if same { RGBColor(60, 60, 60) } else { PALETTE[i % PALETTE.len()] };
                let p = pts(line);
                chart.draw_series(LineSeries::new(p.iter().copied(), colour.stroke_width(2)))?.label(line.label.clone()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
                chart.draw_series(p.iter().map(|(x, v)| Circle::new((*x, *v), 3, colour.filled())))?;
            }
            if shown.len() > 1 {
                chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
            }
        }
        Ok(())
    })
}

/// The distributions: one panel per [`Line`] (its runs shaded from light, the smallest x, to full
/// colour, the largest, in the line's colour of the trend chart), or every run in one panel when
/// there is no axis.
pub(crate) fn distributions_svg(results: &Results, grouped: Option<(&Axis, &[Line])>) -> Result<String> {
    match grouped {
        None => {
            let runs: Vec<&Run> = results.runs.iter().filter(|r| r.n_finite > 0).collect();
            let colours: Vec<RGBColor> = (0..runs.len()).map(|i| PALETTE[i % PALETTE.len()]).collect();
            let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
            svg("the distributions", (1000, 440), |root| histograms(root, results, &runs, &colours, &labels, "LID distribution per run"))
        }
        Some((axis, lines)) => {
            let height = 380 * lines.len() as u32;
            svg("the distributions", (1000, height), |root| {
                for (i, (area, line)) in root.split_evenly((lines.len(), 1)).iter().zip(lines).enumerate() {
                    let runs: Vec<&Run> = line.runs.iter().map(|r| &results.runs[*r]).filter(|r| r.n_finite > 0).collect();
                    if runs.is_empty() {
                        continue;
                    }
                    if runs.len() > HEATMAP_RUNS {
                        heatmap(area, results, axis, &runs, &format!("LID distribution per {}: {}", axis.key, line.label))?;
                        continue;
                    }
                    let base = PALETTE[i % PALETTE.len()];
                    let colours: Vec<RGBColor> = (0..runs.len())
                        .map(|j| if runs.len() == 1 { base } else { lighten(base, 0.6 * (1.0 - j as f64 / (runs.len() - 1) as f64)) })
                        .collect();
                    let labels: Vec<String> = runs.iter().map(|r| format!("{}={}", axis.key, r.values[axis.index])).collect();
                    histograms(area, results, &runs, &colours, &labels, &format!("LID distribution per run: {}", line.label))?;
                }
                Ok(())
            })
        }
    }
}

/// More runs than this in one line of the trend chart are drawn as a heatmap: outlines of tens of
/// checkpoints in one panel are unreadable.
pub(crate) const HEATMAP_RUNS: usize = 8;

/// Viridis at five stops (perceptually even, readable in grey and by most colour-blind readers).
const VIRIDIS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];

/// The colour of `t` in [0, 1].
fn viridis(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f64;
    let i = (t.floor() as usize).min(VIRIDIS.len() - 2);
    let f = t - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The distributions of a line's runs as a heatmap: one column per run in x order (evenly spaced,
/// labelled with its x value), LID up, colour the run's density on a square-root scale (empty
/// bins white), a white dot at each run's mean, and a colour bar.
fn heatmap(area: &Area<'_>, results: &Results, axis: &Axis, runs: &[&Run], title: &str) -> Drawn {
    let b = results.bins;
    let (plot, bar) = area.split_horizontally(area.dim_in_pixel().0.saturating_sub(110));
    let density: Vec<Vec<f64>> = runs.iter().map(|r| r.counts.iter().map(|c| *c as f64 / (r.n_finite.max(1) as f64 * b.width)).collect()).collect();
    let top = density.iter().flatten().copied().fold(0.0, f64::max).max(f64::EPSILON);
    let n = runs.len();
    let every = n.div_ceil(12).max(1);
    let ticks: Vec<f64> = (0..n).step_by(every).map(|j| j as f64 + 0.5).collect();
    let labels: Vec<&str> = runs.iter().map(|r| axis.value_of(r)).collect();
    let hi = b.lo + b.width * b.count as f64;
    let clipped: u64 = runs.iter().map(|r| r.clipped()).sum();
    let caption = match clipped {
        0 => title.to_string(),
        c => format!("{title} ({c} values above {:.2} not shown)", b.hi),
    };
    let mut chart = ChartBuilder::on(&plot)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(Ticked { range: 0.0..n as f64, ticks }, b.lo..hi)?;
    chart
        .configure_mesh()
        .x_desc(format!("{} (one column per run, in order)", axis.key))
        .y_desc("LID")
        .x_label_formatter(&|p| labels.get(p.floor().max(0.0) as usize).map_or_else(String::new, |l| l.to_string()))
        .label_style(LABELS)
        .axis_desc_style(AXIS_DESC)
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (j, d) in density.iter().enumerate() {
        chart.draw_series(d.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(i, v)| {
            let y = b.lo + i as f64 * b.width;
            Rectangle::new([(j as f64, y), (j as f64 + 1.0, (y + b.width).min(hi))], viridis((v / top).sqrt()).filled())
        }))?;
    }
    chart.draw_series(runs.iter().enumerate().filter(|(_, r)| r.mean <= hi).map(|(j, r)| Circle::new((j as f64 + 0.5, r.mean), 3, WHITE.filled())))?;
    // The colour bar.
    let bar = bar.margin(50, 45, 10, 30);
    let h = bar.dim_in_pixel().1;
    let steps = 64;
    for k in 0..steps {
        let y0 = h as i32 - ((k + 1) as f64 / steps as f64 * h as f64) as i32;
        let y1 = h as i32 - (k as f64 / steps as f64 * h as f64) as i32;
        bar.draw(&Rectangle::new([(0, y0), (18, y1)], viridis((k as f64 + 0.5) / steps as f64).filled()))?;
    }
    bar.draw(&Text::new(format!("{:.2}", top), (22, -6), ("sans-serif", 13)))?;
    bar.draw(&Text::new(format!("{:.2}", top / 4.0), (22, h as i32 / 2 - 6), ("sans-serif", 13)))?;
    bar.draw(&Text::new("0".to_string(), (22, h as i32 - 8), ("sans-serif", 13)))?;
    bar.draw(&Text::new("density".to_string(), (0, h as i32 + 8), ("sans-serif", 13)))?;
    Ok(())
}

/// Each run's mean with its 10th-90th percentile bar, in run order: the comparison that needs no
/// numeric key.
pub(crate) fn means_svg(results: &Results) -> Result<String> {
    let runs: Vec<&Run> = results.runs.iter().filter(|r| r.n_finite > 0).collect();
    svg("the per-run means", (1000, 440), |root| means(root, &runs, false))
}

/// Draws into an SVG document of `size` pixels on white and returns its text.
fn svg(figure: &str, size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> Drawn) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let drawn = root.fill(&WHITE).and_then(|_| draw(&root)).and_then(|_| root.present());
        drawn.map_err(|e| ReportError::Draw { figure: figure.into(), message: e.to_string() })?;
    }
    Ok(text)
}

/// `c` mixed with white: `amount` 0 is `c`, 1 is white.
fn lighten(c: RGBColor, amount: f64) -> RGBColor {
    let f = |v: u8| (v as f64 + (255.0 - v as f64) * amount).round() as u8;
    RGBColor(f(c.0), f(c.1), f(c.2))
}

/// An axis value as a person writes it: `5000`, not `5000.0`.
pub(crate) fn number(x: f64) -> String {
    if x.fract().abs() < 1e-9 && x.abs() < 1e15 {
        format!("{}", x.round() as i64)
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The LID distribution of each of `runs` as a density outline over the shared bins, with a
/// faint line at its mean.
fn histograms(area: &Area<'_>, results: &Results, runs: &[&Run], colours: &[RGBColor], labels: &[String], title: &str) -> Drawn {
    let b = results.bins;
    let density: Vec<Vec<f64>> = runs.iter().map(|r| r.counts.iter().map(|c| *c as f64 / (r.n_finite.max(1) as f64 * b.width)).collect()).collect();
    let top = density.iter().flatten().copied().fold(0.0, f64::max) * 1.1;
    let clipped: u64 = runs.iter().map(|r| r.clipped()).sum();
    let caption = match clipped {
        0 => title.to_string(),
        n => format!("{title} ({n} values above {:.2} not shown)", b.hi),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(b.lo..b.lo + b.width * (b.count as f64 + 1.0), 0.0..top.max(f64::EPSILON))?;
    chart.configure_mesh().x_desc("LID").y_desc("density").label_style(LABELS).axis_desc_style(AXIS_DESC).light_line_style(TRANSPARENT).draw()?;
    for ((run, d), (colour, label)) in runs.iter().zip(&density).zip(colours.iter().zip(labels)) {
        let colour = *colour;
        let steps = d.iter().enumerate().flat_map(|(i, y)| [(b.lo + i as f64 * b.width, *y), (b.lo + (i + 1) as f64 * b.width, *y)]);
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))?
            .label(format!("{label} (n = {}, mean {:.3})", run.n_finite, run.mean))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(std::iter::once(PathElement::new(vec![(run.mean, 0.0), (run.mean, top)], colour.mix(0.5))))?;
    }
    chart
        .configure_series_labels()
        .label_font(LABELS)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// Each run's mean LID with its 10th-90th percentile bar, in run order; `connect` joins the
/// means, which reads as a trend only when the runs are one series (as `lidscope plot` assumes).
fn means(area: &Area<'_>, runs: &[&Run], connect: bool) -> Drawn {
    let lo = runs.iter().map(|r| r.p10).fold(f64::INFINITY, f64::min);
    let hi = runs.iter().map(|r| r.p90).fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.1).max(1e-6);
    let n = runs.len();
    let mut chart = ChartBuilder::on(area)
        .caption("Mean LID per run (bars: 10th to 90th percentile)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, lo - pad..hi + pad)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-9 && i >= 0.0 && (i as usize) < n { runs[i as usize].label.clone() } else { String::new() }
    };
    chart
        .configure_mesh()
        .x_labels(n.min(12))
        .x_label_formatter(&label)
        .y_desc("LID")
        .label_style(LABELS)
        .axis_desc_style(AXIS_DESC)
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .draw()?;
    chart.draw_series(runs.iter().enumerate().map(|(i, r)| ErrorBar::new_vertical(i as f64, r.p10, r.mean, r.p90, PALETTE[i % PALETTE.len()].filled(), 12)))?;
    if connect {
        chart.draw_series(LineSeries::new(runs.iter().enumerate().map(|(i, r)| (i as f64, r.mean)), BLACK.mix(0.4)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_saved_geometrically_get_a_log_axis() {
        let grokking = [0.0, 50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1200.0, 1400.0, 1600.0, 1900.0, 2200.0, 2600.0, 3000.0, 3600.0, 4200.0, 4900.0, 5800.0, 6800.0, 7900.0, 9300.0, 10900.0, 12800.0, 15000.0];
        assert!(geometric(&grokking));
        assert!(geometric(&[1.0, 10.0, 100.0, 1000.0, 10000.0]));
        let even: Vec<f64> = (0..30).map(|i| i as f64 * 500.0).collect();
        assert!(!geometric(&even), "evenly spaced");
        assert!(!geometric(&[100.0, 200.0, 300.0]), "too few");
        assert!(!geometric(&[-10.0, 1.0, 10.0, 100.0, 1000.0, 10000.0]), "negative values");
        assert!(!geometric(&[1.0, 2.0, 4.0, 8.0, 16.0]), "less than two decades");
    }

    #[test]
    fn ticks_are_round_values() {
        assert_eq!(log_ticks(50.0, 15000.0, true), [0.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]);
        assert_eq!(log_ticks(1.0, 10.0, false), [1.0, 2.0, 5.0, 10.0]);
        assert_eq!(linear_ticks(0.0, 15000.0), [0.0, 2000.0, 4000.0, 6000.0, 8000.0, 10000.0, 12000.0, 14000.0]);
        let t = linear_ticks(3.0, 4.0);
        assert_eq!(t.len(), 11, "{t:?}");
        assert!(t.iter().zip([3.0, 3.1, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8, 3.9, 4.0]).all(|(a, b)| (a - b).abs() < 1e-9), "{t:?}");
        // A step 0 on a log axis sits at log10(c), before the first positive step.
        let axis = Axis { key: "step".into(), index: 0, x: vec![0.0, 50.0, 15000.0], log_offset: Some(50.0) };
        assert!(axis.pos(0.0) < axis.pos(50.0) && axis.pos(50.0) < axis.pos(15000.0));
        assert_eq!(axis.label(axis.pos(5000.0)), "5000");
        assert_eq!(axis.label(axis.pos(0.0)), "0");
    }

    #[test]
    fn viridis_runs_from_purple_to_yellow() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(2.0), viridis(1.0));
    }
}
