//! Time–sequence plots of a run (tcptrace style), drawn from its captures and its
//! timeline: for every capture point, the transfer's data segments (new data black,
//! resent data red), the receiver's cumulative ACK (blue) and SACKed ranges above it
//! (green) over time, with each move drawn as a band (started → new address usable)
//! and MSYN handshakes, server notices and relay assignments as labelled marks. One
//! overview per capture point, and one close-up per move at every capture point that
//! carried the transfer around it. SVG and PNG (text is laid out with DejaVu Sans, from
//! Debian's fonts-dejavu-core, read at run time).
//!
//! Written into `<out>/plots/` after each run; `sustain-lab plot DIR` redraws them.

use std::fs;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;
use sustain_conformance::segment;
use sustain_conformance::transcript::{Analysis, CaptureSet};

use crate::error::{IoContext, LabError, Result};

/// The plots' subdirectory of a run's output directory.
pub const PLOTS_DIR: &str = "plots";

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 700;
/// Time columns the segments are gathered into (a 64 MiB transfer has ~46 000 data
/// segments per capture point; one column is about one pixel).
const COLUMNS: usize = 1200;
/// The font the PNGs' text is drawn with.
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A labelled instant on the plot.
#[derive(Clone, Debug, PartialEq)]
struct Mark {
    t: f64,
    label: String,
}

/// A move: from the moment it started (its host's default route removed) to the
/// moment its new address was usable (to the plot's end, for a detach alone).
#[derive(Clone, Debug, PartialEq)]
struct Band {
    from: f64,
    to: f64,
    label: String,
}

/// What one plot shows, already gathered into columns.
#[derive(Clone, Debug, Default)]
struct PlotData {
    title: String,
    x: (f64, f64),
    y: (f64, f64),
    /// (t, start, end) of new data, per column.
    new_data: Vec<(f64, f64, f64)>,
    /// (t, start, end) of resent data, per column.
    resent: Vec<(f64, f64, f64)>,
    /// (t, cumulative ACK).
    acks: Vec<(f64, f64)>,
    /// (t, start, end) of SACKed ranges above the ACK, per column.
    sacked: Vec<(f64, f64, f64)>,
    bands: Vec<Band>,
    marks: Vec<Mark>,
}

/// One segment of the transfer at one capture point, in plot units (seconds since
/// the transfer started, MiB of the data side's stream).
#[derive(Clone, Copy, Debug)]
enum Point {
    Data {
        t: f64,
        start: f64,
        end: f64,
        resent: bool,
    },
    Ack {
        t: f64,
        ack: f64,
    },
    Sack {
        t: f64,
        start: f64,
        end: f64,
    },
}

impl Point {
    fn t(&self) -> f64 {
        match *self {
            Point::Data { t, .. } | Point::Ack { t, .. } | Point::Sack { t, .. } => t,
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// SACK blocks (RFC 2018) in a raw options area; malformed options end the walk.
fn sack_blocks(options: &[u8]) -> Vec<(u32, u32)> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = options.get(i + 1) else {
                    break;
                };
                let len = len as usize;
                if len < 2 || i + len > options.len() {
                    break;
                }
                if kind == 5 {
                    for block in options[i + 2..i + len].chunks_exact(8) {
                        let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        blocks.push((word(&block[..4]), word(&block[4..])));
                    }
                }
                i += len;
            }
        }
    }
    blocks
}

/// The timeline of the run: (epoch in Unix seconds, events).
fn timeline(out_dir: &Path) -> Result<(f64, Vec<Value>)> {
    let path = out_dir.join("events.jsonl");
    let text = fs::read_to_string(&path).context(|| format!("reading {}", path.display()))?;
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let epoch = events
        .iter()
        .find_map(|e| Some(e["time"].as_f64()? - e["t"].as_f64()?))
        .unwrap_or(0.0);
    Ok((epoch, events))
}

fn bands_and_marks(events: &[Value]) -> (Vec<Band>, Vec<Mark>) {
    let mut bands = Vec::new();
    let mut marks = Vec::new();
    let mut detached: Vec<(String, f64)> = Vec::new();
    for e in events {
        let (Some(t), Some(name)) = (e["t"].as_f64(), e["event"].as_str()) else {
            continue;
        };
        let host = e["detail"]["host"].as_str().unwrap_or("?").to_string();
        let source = e["source"].as_str().unwrap_or("");
        let node = source.split('-').next().unwrap_or(source);
        // Marks come from the connection's ends (`<node>-<kind>-sender|receiver`),
        // not from the services' own logs.
        let end = source.ends_with("-sender") || source.ends_with("-receiver");
        match name {
            // The path goes when the move starts (the default route first).
            "move-started" if e["source"] == "lab" => detached.push((host, t)),
            "move-completed" | "attached" if e["source"] == "lab" => {
                let from = detached
                    .iter()
                    .rposition(|(h, _)| *h == host)
                    .map_or(t, |i| detached.remove(i).1);
                let to = e["detail"]["to"].as_str().unwrap_or("");
                bands.push(Band {
                    from,
                    to: t,
                    label: format!("{host} moves {to}"),
                });
            }
            "msyn-sent" if end => marks.push(Mark {
                t,
                label: format!("MSYN {node}"),
            }),
            "peer-location" if end => marks.push(Mark {
                t,
                label: format!("notice {node}"),
            }),
            "relay-assigned" if end => marks.push(Mark {
                t,
                label: format!("relay {node}"),
            }),
            "resumed" if end => marks.push(Mark {
                t,
                label: format!("resumed {node}"),
            }),
            _ => {}
        }
    }
    // A detach without a later attach is a band to the end of the plot.
    for (host, from) in detached {
        bands.push(Band {
            from,
            to: f64::INFINITY,
            label: format!("{host} detached"),
        });
    }
    (bands, marks)
}

/// The transfer's segments at each capture point.
fn points(set: &CaptureSet, analysis: &Analysis, epoch: f64) -> Vec<(String, Vec<Point>)> {
    let Some((conn, data_side)) = analysis.transfer_connection() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (index, capture) in set.captures.iter().enumerate() {
        let mut points = Vec::new();
        let mut highest: Option<u32> = None;
        let segments = analysis.segments(index);
        let bound = analysis.bound(index);
        for (f, frame) in capture.frames.iter().enumerate() {
            let (Some(seg), Some((c, side))) = (&segments[f], bound[f]) else {
                continue;
            };
            if c != conn {
                continue;
            }
            let t = frame.timestamp_ns as f64 / 1e9 - epoch;
            let rel = |seq: u32| f64::from(analysis.relative(conn, data_side, seq)) / MIB;
            if side == data_side && seg.payload_len > 0 {
                let start = analysis.relative(conn, data_side, seg.seq);
                let end = start.wrapping_add(seg.payload_len);
                let resent = highest.is_some_and(|h| (end.wrapping_sub(h) as i32) <= 0);
                if !resent {
                    highest = Some(end);
                }
                points.push(Point::Data {
                    t,
                    start: f64::from(start) / MIB,
                    end: f64::from(end) / MIB,
                    resent,
                });
            } else if side != data_side && seg.has(segment::ACK) && !seg.has(segment::SYN) {
                let ack = rel(seg.ack);
                points.push(Point::Ack { t, ack });
                for (left, right) in sack_blocks(&seg.options) {
                    points.push(Point::Sack {
                        t,
                        start: rel(left),
                        end: rel(right),
                    });
                }
            }
        }
        if !points.is_empty() {
            out.push((capture.name.clone(), points));
        }
    }
    out
}

/// Gathers the points inside `x` into columns.
fn gather(points: &[Point], x: (f64, f64)) -> PlotData {
    let width = (x.1 - x.0).max(1e-6);
    let column =
        |t: f64| (((t - x.0) / width) * COLUMNS as f64).clamp(0.0, (COLUMNS - 1) as f64) as usize;
    let at = |c: usize| x.0 + (c as f64 + 0.5) * width / COLUMNS as f64;
    let mut new_data = vec![None::<(f64, f64)>; COLUMNS];
    let mut resent = vec![None::<(f64, f64)>; COLUMNS];
    let mut sacked = vec![None::<(f64, f64)>; COLUMNS];
    let mut acks = vec![None::<f64>; COLUMNS];
    let widen = |slot: &mut Option<(f64, f64)>, s: f64, e: f64| {
        *slot = Some(match *slot {
            Some((a, b)) => (a.min(s), b.max(e)),
            None => (s, e),
        });
    };
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in points.iter().filter(|p| p.t() >= x.0 && p.t() <= x.1) {
        let c = column(p.t());
        match *p {
            Point::Data {
                start,
                end,
                resent: r,
                ..
            } => {
                widen(
                    if r { &mut resent[c] } else { &mut new_data[c] },
                    start,
                    end,
                );
                y0 = y0.min(start);
                y1 = y1.max(end);
            }
            Point::Ack { ack, .. } => {
                acks[c] = Some(acks[c].map_or(ack, |a: f64| a.max(ack)));
                y0 = y0.min(ack);
                y1 = y1.max(ack);
            }
            Point::Sack { start, end, .. } => widen(&mut sacked[c], start, end),
        }
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.03).max(1e-3);
    let cols = |v: Vec<Option<(f64, f64)>>| {
        v.into_iter()
            .enumerate()
            .filter_map(|(c, r)| r.map(|(s, e)| (at(c), s, e)))
            .collect()
    };
    PlotData {
        x,
        y: (y0 - pad, y1 + pad),
        new_data: cols(new_data),
        resent: cols(resent),
        sacked: cols(sacked),
        acks: acks
            .into_iter()
            .enumerate()
            .filter_map(|(c, a)| a.map(|a| (at(c), a)))
            .collect(),
        ..PlotData::default()
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    plot: &PlotData,
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let (x0, x1) = plot.x;
    let (y0, y1) = plot.y;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the transfer started")
        .y_desc("stream offset (MiB)")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let band_colour = RGBColor(255, 200, 120).mix(0.35);
    for (i, band) in plot.bands.iter().enumerate() {
        let (from, to) = (band.from.max(x0), band.to.min(x1));
        if from >= to {
            continue;
        }
        // Labels step down so that overlapping bands stay readable.
        let label_y = y1 - (y1 - y0) * 0.035 * (i % 4) as f64;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(from, y0), (to, y1)],
                band_colour.filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                band.label.clone(),
                (from, label_y),
                ("sans-serif", 13).into_font().color(&RGBColor(150, 80, 0)),
            )))
            .map_err(err)?;
    }
    chart
        .draw_series(
            plot.sacked
                .iter()
                .map(|&(t, s, e)| PathElement::new(vec![(t, s), (t, e)], GREEN.stroke_width(2))),
        )
        .map_err(err)?
        .label("SACKed")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN.stroke_width(2)));
    chart
        .draw_series(
            plot.new_data
                .iter()
                .map(|&(t, s, e)| PathElement::new(vec![(t, s), (t, e)], BLACK.stroke_width(2))),
        )
        .map_err(err)?
        .label("data")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    chart
        .draw_series(
            plot.resent
                .iter()
                .map(|&(t, s, e)| PathElement::new(vec![(t, s), (t, e)], RED.stroke_width(2))),
        )
        .map_err(err)?
        .label("resent")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            plot.acks.iter().copied(),
            BLUE.stroke_width(1),
        ))
        .map_err(err)?
        .label("ACK")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
    let mark_colour = RGBColor(120, 0, 160);
    for (i, mark) in plot
        .marks
        .iter()
        .filter(|m| m.t >= x0 && m.t <= x1)
        .enumerate()
    {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(mark.t, y0), (mark.t, y1)],
                mark_colour.mix(0.6),
            )))
            .map_err(err)?;
        // Labels step down so that marks close together stay readable.
        let y = y1 - (y1 - y0) * (0.17 + 0.045 * (i % 8) as f64);
        chart
            .draw_series(std::iter::once(Text::new(
                mark.label.clone(),
                (mark.t, y),
                ("sans-serif", 12).into_font().color(&mark_colour),
            )))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Registers the plots' font once (text is laid out with it in both formats);
/// `false` when it is not installed.
fn font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| match fs::read(FONT_FILE) {
        Ok(bytes) => {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        }
        Err(_) => false,
    })
}

/// Writes `<stem>.svg` and `<stem>.png` into `dir`; returns the files written.
fn write(dir: &Path, stem: &str, plot: &PlotData) -> Result<Vec<PathBuf>> {
    let svg = dir.join(format!("{stem}.svg"));
    draw(
        SVGBackend::new(&svg, (WIDTH, HEIGHT)).into_drawing_area(),
        plot,
    )
    .map_err(|e| LabError::Plot(format!("drawing {}: {e}", svg.display())))?;
    let png = dir.join(format!("{stem}.png"));
    draw(
        BitMapBackend::new(&png, (WIDTH, HEIGHT)).into_drawing_area(),
        plot,
    )
    .map_err(|e| LabError::Plot(format!("drawing {}: {e}", png.display())))?;
    Ok(vec![svg, png])
}

/// Draws the plots of the run in `out_dir` (its captures, names.json and
/// events.jsonl) into `out_dir/plots/`; returns the files written, relative to
/// `out_dir`.
pub fn plot_run(out_dir: &Path) -> Result<Vec<String>> {
    if !font() {
        return Err(LabError::Plot(format!(
            "the plots' font {FONT_FILE} is missing (Debian package fonts-dejavu-core; ./justw installs it)"
        )));
    }
    let set = CaptureSet::read_dir(out_dir).map_err(|e| {
        LabError::Plot(format!(
            "reading the captures in {}: {e}",
            out_dir.display()
        ))
    })?;
    let analysis = Analysis::of(&set);
    let (epoch, events) = timeline(out_dir)?;
    let (bands, marks) = bands_and_marks(&events);
    let dir = out_dir.join(PLOTS_DIR);
    if dir.exists() {
        fs::remove_dir_all(&dir).context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (point, pts) in points(&set, &analysis, epoch) {
        let first = pts.first().map_or(0.0, Point::t);
        let last = pts.last().map_or(1.0, Point::t).max(first + 1e-3);
        let mut overview = gather(&pts, (first, last));
        overview.title = format!("{point}: the whole transfer");
        overview.bands = bands.clone();
        overview.marks = Vec::new();
        written.extend(write(&dir, &point, &overview)?);
        for (i, band) in bands.iter().enumerate() {
            let to = if band.to.is_finite() {
                band.to
            } else {
                band.from
            };
            let x = (band.from - 0.1, to + 0.4);
            if !pts.iter().any(|p| p.t() >= x.0 && p.t() <= x.1) {
                continue;
            }
            let mut close = gather(&pts, x);
            close.title = format!("{point}: move {} ({})", i + 1, band.label);
            close.bands = bands.clone();
            close.marks = marks.clone();
            written.extend(write(&dir, &format!("{point}-move{}", i + 1), &close)?);
        }
    }
    Ok(written
        .iter()
        .filter_map(|f| f.strip_prefix(out_dir).ok())
        .map(|f| f.display().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sack_blocks_are_read_and_malformed_options_end_the_walk() {
        // NOP, NOP, SACK with two blocks.
        let mut options = vec![1, 1, 5, 18];
        for v in [10u32, 20, 30, 40] {
            options.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(sack_blocks(&options), [(10, 20), (30, 40)]);
        // A length running past the end.
        assert_eq!(sack_blocks(&[5, 18, 0, 0]), []);
        // A zero length.
        assert_eq!(sack_blocks(&[8, 0, 5, 10]), []);
    }

    #[test]
    fn columns_keep_the_range_of_each_kind() {
        let pts = [
            Point::Data {
                t: 0.0,
                start: 0.0,
                end: 1.0,
                resent: false,
            },
            Point::Data {
                t: 0.0,
                start: 1.0,
                end: 2.0,
                resent: false,
            },
            Point::Data {
                t: 0.5,
                start: 0.5,
                end: 0.6,
                resent: true,
            },
            Point::Ack { t: 1.0, ack: 2.0 },
        ];
        let plot = gather(&pts, (0.0, 1.0));
        assert_eq!(plot.new_data.len(), 1);
        assert_eq!((plot.new_data[0].1, plot.new_data[0].2), (0.0, 2.0));
        assert_eq!(plot.resent.len(), 1);
        assert_eq!(plot.acks.len(), 1);
        assert!(plot.y.0 < 0.0 && plot.y.1 > 2.0);
    }
}
