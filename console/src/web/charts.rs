//! Inline SVG charts, drawn on the server from `History::hourly`: one card per function
//! with 72 hourly bars (finished, and failed stacked on top) and its p95 run time as a
//! line on its own scale. No script, no external library.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use maud::{html, Markup};

use super::layout::duration_ms;
use crate::data::HourStat;

const HOURS: i64 = 72;
const BAR: f64 = 10.0;
const W: f64 = HOURS as f64 * BAR;
const H: f64 = 170.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 24.0;
/// At most this many functions (the busiest) get a chart.
const MAX_FUNCTIONS: usize = 12;

#[derive(Default, Clone, Copy)]
struct Cell {
    finished: i64,
    failed: i64,
    p95: Option<f64>,
}

/// Every function's chart, busiest first.
pub fn per_function(rows: &[HourStat], now: DateTime<Utc>) -> Markup {
    let end = now.duration_trunc(TimeDelta::hours(1)).unwrap_or(now);
    let start = end - TimeDelta::hours(HOURS - 1);
    let mut by_fn: BTreeMap<&str, Vec<Cell>> = BTreeMap::new();
    for r in rows {
        let i = (r.hour - start).num_hours();
        if !(0..HOURS).contains(&i) {
            continue;
        }
        let cells = by_fn
            .entry(r.function.as_str())
            .or_insert_with(|| vec![Cell::default(); HOURS as usize]);
        let c = &mut cells[i as usize];
        c.finished += r.finished;
        c.failed += r.failed;
        c.p95 = match (c.p95, r.p95_run_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let mut fns: Vec<(&str, Vec<Cell>)> = by_fn.into_iter().collect();
    fns.sort_by_key(|(_, c)| -c.iter().map(|x| x.finished + x.failed).sum::<i64>());
    let hidden = fns.len().saturating_sub(MAX_FUNCTIONS);
    html! {
        p.legend {
            span.sw.ok {} "finished per hour"
            span.sw.bad {} "failed (incl. retried) per hour"
            span.sw.p95 {} "p95 run time (own scale)"
        }
        div.grid {
            @for (f, cells) in fns.iter().take(MAX_FUNCTIONS) {
                (card(f, cells, start))
            }
        }
        @if hidden > 0 { p.muted { (hidden) " less busy functions not drawn." } }
    }
}

fn card(function: &str, cells: &[Cell], start: DateTime<Utc>) -> Markup {
    let finished: i64 = cells.iter().map(|c| c.finished).sum();
    let failed: i64 = cells.iter().map(|c| c.failed).sum();
    let max_n = cells
        .iter()
        .map(|c| c.finished + c.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let max_p = cells.iter().filter_map(|c| c.p95).fold(0.0_f64, f64::max);
    let plot = H - TOP - BOTTOM;
    let y = |v: f64, max: f64| TOP + plot - (v / max) * plot;
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if let Some(p) = c.p95.filter(|_| max_p > 0.0) {
            let x = i as f64 * BAR + BAR / 2.0;
            line.push_str(&format!("{x:.1},{:.1} ", y(p, max_p)));
        }
    }
    let label =
        format!("{function}: {finished} finished, {failed} failed in 72 h; peak {max_n} per hour");
    html! {
        div.card {
            h3.mono { (function) }
            p.muted {
                (finished) " finished · " (failed) " failed"
                @if max_p > 0.0 { " · p95 peak " (duration_ms(max_p as i64)) }
            }
            svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(label) {
                title { (label) }
                line.axis x1="0" y1=(TOP + plot) x2=(W) y2=(TOP + plot) {}
                @for (i, c) in cells.iter().enumerate() {
                    @let x = i as f64 * BAR + 1.0;
                    @if c.finished > 0 {
                        rect.ok x=(x) y=(y((c.finished + c.failed) as f64, max_n) + (c.failed as f64 / max_n) * plot)
                            width=(BAR - 2.0) height=((c.finished as f64 / max_n) * plot) {
                            title { (hour(start, i)) ": " (c.finished) " finished" }
                        }
                    }
                    @if c.failed > 0 {
                        rect.bad x=(x) y=(y((c.finished + c.failed) as f64, max_n))
                            width=(BAR - 2.0) height=((c.failed as f64 / max_n) * plot) {
                            title { (hour(start, i)) ": " (c.failed) " failed" }
                        }
                    }
                }
                @if !line.is_empty() { polyline.p95 points=(line.trim_end()) {} }
                text x="2" y="17" { (max_n as i64) "/h" }
                @if max_p > 0.0 { text x=(W - 2.0) y="17" text-anchor="end" { "p95 " (duration_ms(max_p as i64)) } }
                text x="2" y=(H - 5.0) { "-72 h" }
                text x=(W - 2.0) y=(H - 5.0) text-anchor="end" { "now" }
            }
        }
    }
}

fn hour(start: DateTime<Utc>, i: usize) -> String {
    (start + TimeDelta::hours(i as i64))
        .format("%m-%d %H:00")
        .to_string()
}
