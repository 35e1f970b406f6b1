//! Medians, own shares, ratios against the targets, and the tables the driver prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::driver::label;
use crate::variant::{VARIANTS, Variant};
use crate::workload::{Kind, Measurement, Workload, thousands};

/// The median of `xs` (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> Option<f64> {
    quantile(xs, 0.5)
}

/// The `q` quantile of `xs` (0 = smallest, 1 = largest), interpolating linearly between
/// the two nearest values.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// All runs of one variant (listening or not) on one workload.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Median CPU ns per item.
    pub median: f64,
    /// Fastest run.
    pub min: f64,
    /// Slowest run.
    pub max: f64,
    /// Runs.
    pub runs: usize,
    /// Median wall time of the measured rounds, ms.
    pub wall_ms: f64,
    /// Failed export checks, one line each.
    pub failed_checks: Vec<String>,
    /// Runs whose export count could be checked.
    pub checked: usize,
    /// CPU ns per item by repetition, for runs the driver numbered.
    pub by_rep: BTreeMap<usize, f64>,
}

/// A variant's own share of the CPU per item: its runs minus its baseline's (the SDK alone
/// with the same reader or processor), paired by repetition, since the runs of one
/// repetition ran next to each other under the same machine conditions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Share {
    /// Median of the per-repetition differences.
    pub median: f64,
    /// Their lower quartile.
    pub q1: f64,
    /// Their upper quartile.
    pub q3: f64,
    /// Repetitions paired; 0 when the runs carry no repetition (difference of medians).
    pub pairs: usize,
}

impl Share {
    /// Whether the share stands out of the run-to-run noise: at least three quarters of
    /// the repetitions measured the variant above its baseline. (Quartiles, not the
    /// extremes: on a shared machine one disturbed run in ten is the rule.)
    pub fn clear(&self) -> bool {
        self.q1 > 0.0
    }
}

/// `a` divided by `b`'s own share, as far as the noise allows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ratio {
    /// `b`'s share is clear of the noise: the ratio of the median shares.
    Point(f64),
    /// `b`'s share is within the noise: `a`'s median share over `b`'s upper quartile, a
    /// lower bound.
    AtLeast(f64),
    /// No meaningful ratio (a share at or below zero, or missing).
    None,
}

impl Ratio {
    /// Whether it reaches `target` (a lower bound counts only if it does).
    pub fn reaches(self, target: f64) -> bool {
        match self {
            Ratio::Point(r) | Ratio::AtLeast(r) => r >= target,
            Ratio::None => false,
        }
    }

    fn show(self) -> String {
        match self {
            Ratio::Point(r) => format!("{r:.2}x"),
            Ratio::AtLeast(r) => format!(">={r:.2}x*"),
            Ratio::None => "-".to_owned(),
        }
    }
}

/// Results grouped by workload, then by variant label (in the order of [`VARIANTS`]).
pub struct Report {
    cells: BTreeMap<Workload, Vec<(String, &'static Variant, bool, Cell)>>,
}

impl Report {
    /// Groups `results`.
    pub fn new(results: &[Measurement]) -> Self {
        let mut cells: BTreeMap<Workload, Vec<(String, &'static Variant, bool, Cell)>> =
            BTreeMap::new();
        let workloads: Vec<Workload> = {
            let mut w: Vec<Workload> = results.iter().map(|m| m.workload).collect();
            w.sort();
            w.dedup();
            w
        };
        for workload in workloads {
            let mut row = Vec::new();
            for listening in [true, false] {
                for v in VARIANTS {
                    let runs: Vec<&Measurement> = results
                        .iter()
                        .filter(|m| {
                            m.workload == workload
                                && m.variant == v.name
                                && m.preload_listening.unwrap_or(true) == listening
                        })
                        .collect();
                    if runs.is_empty() {
                        continue;
                    }
                    let per_item: Vec<f64> = runs.iter().map(|m| m.cpu_ns_per_item).collect();
                    let wall: Vec<f64> = runs.iter().map(|m| m.wall_ns as f64 / 1e6).collect();
                    let checks: Vec<_> = runs.iter().filter_map(|m| m.check()).collect();
                    let cell = Cell {
                        median: median(&per_item).expect("runs is not empty"),
                        min: per_item.iter().copied().fold(f64::INFINITY, f64::min),
                        max: per_item.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                        runs: runs.len(),
                        wall_ms: median(&wall).expect("runs is not empty"),
                        checked: checks.len(),
                        failed_checks: checks.into_iter().filter_map(Result::err).collect(),
                        by_rep: runs
                            .iter()
                            .filter_map(|m| Some((m.rep?, m.cpu_ns_per_item)))
                            .collect(),
                    };
                    row.push((label(v.name, listening), v, listening, cell));
                }
            }
            cells.insert(workload, row);
        }
        Self { cells }
    }

    /// Whether any run exported other than what it recorded.
    pub fn any_failed_check(&self) -> bool {
        self.cells
            .values()
            .flatten()
            .any(|(_, _, _, c)| !c.failed_checks.is_empty())
    }

    fn cell(&self, workload: Workload, name: &str, listening: bool) -> Option<&Cell> {
        self.cells
            .get(&workload)?
            .iter()
            .find(|(_, v, l, _)| v.name == name && *l == listening)
            .map(|(_, _, _, c)| c)
    }

    /// A variant's own share (see [`Share`]); `None` for a baseline or without one.
    pub fn share(&self, workload: Workload, variant: &Variant, listening: bool) -> Option<Share> {
        let baseline = match workload.kind {
            Kind::Spans => variant.spans_baseline,
            _ => variant.metrics_baseline,
        }?;
        let cell = self.cell(workload, variant.name, listening)?;
        let base = self.cell(workload, baseline, true)?;
        let diffs: Vec<f64> = cell
            .by_rep
            .iter()
            .filter_map(|(rep, x)| Some(x - base.by_rep.get(rep)?))
            .collect();
        Some(match median(&diffs) {
            Some(m) => Share {
                median: m,
                q1: quantile(&diffs, 0.25).expect("diffs is not empty"),
                q3: quantile(&diffs, 0.75).expect("diffs is not empty"),
                pairs: diffs.len(),
            },
            None => {
                let d = cell.median - base.median;
                Share {
                    median: d,
                    q1: d,
                    q3: d,
                    pairs: 0,
                }
            }
        })
    }

    /// Every workload's runs in detail: median, spread, own share, wall time, checks.
    pub fn details(&self) -> String {
        let mut out = String::new();
        for (workload, row) in &self.cells {
            let runs = row.iter().map(|r| r.3.runs).max().unwrap_or(0);
            let _ = writeln!(
                out,
                "\n{workload}: process CPU ns per {} (all threads; median of {runs} processes)",
                if workload.kind.is_metrics() {
                    "data point per export round"
                } else {
                    "span created, ended and exported"
                }
            );
            let _ = writeln!(
                out,
                "  {:<30}{:>10} {:>22}  {:<28}{:<16}{:>9}  exported",
                "variant",
                "median",
                "[min - max]",
                "own share [paired q1, q3]",
                "(baseline)",
                "wall ms"
            );
            for (name, variant, listening, c) in row {
                let baseline = match workload.kind {
                    Kind::Spans => variant.spans_baseline,
                    _ => variant.metrics_baseline,
                };
                let share = self
                    .share(*workload, variant, *listening)
                    .map_or("-".to_owned(), |s| {
                        format!("{:.1} [{:.0}, {:.0}]", s.median, s.q1, s.q3)
                    });
                let check = if !c.failed_checks.is_empty() {
                    format!("FAILED: {}", c.failed_checks.join("; "))
                } else if c.checked == c.runs {
                    if *listening {
                        "all items".to_owned()
                    } else {
                        "nothing, as it should".to_owned()
                    }
                } else if c.checked == 0 {
                    "not known".to_owned()
                } else {
                    format!(
                        "ok in {} of {} runs, not known in the rest",
                        c.checked, c.runs
                    )
                };
                let _ = writeln!(
                    out,
                    "  {:<30}{:>10.1} [{:>8.1} - {:>8.1}]  {:<28}{:<16}{:>9.1}  {}",
                    name,
                    c.median,
                    c.min,
                    c.max,
                    share,
                    baseline.map_or(String::new(), |b| format!("({b})")),
                    c.wall_ms,
                    check
                );
            }
        }
        out
    }

    /// The summary: per workload, each variant's median with its own share in parentheses,
    /// the ratios against `ours*` variants, and the targets.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let shown: Vec<&'static Variant> = VARIANTS
            .iter()
            .filter(|v| {
                self.cells
                    .values()
                    .flatten()
                    .any(|r| r.1.name == v.name && r.2)
            })
            .collect();
        let ours: Vec<&'static Variant> = shown
            .iter()
            .copied()
            .filter(|v| v.name.starts_with("ours"))
            .collect();
        let _ = writeln!(
            out,
            "\nListener present: median process CPU ns per item (own share = minus the SDK alone with the same reader/processor)\n"
        );
        let mut header = vec!["workload".to_owned()];
        header.extend(shown.iter().map(|v| v.name.to_owned()));
        for o in &ours {
            header.push(format!("upstream/{} share", o.name));
            header.push(format!("otlp-http/{} total", o.name));
        }
        header.push("target (issue 9)".to_owned());
        let mut rows = vec![header];
        for workload in self.cells.keys() {
            let mut row = vec![short(*workload)];
            for v in &shown {
                row.push(self.total_and_share(*workload, v, true));
            }
            let mut targets = Vec::new();
            for o in &ours {
                let share_ratio = self.ratio_of_shares(*workload, "upstream", o);
                let total_ratio = self.ratio_of_totals(*workload, "otlp-http", o.name, true);
                row.push(share_ratio.show());
                row.push(total_ratio.map_or("-".to_owned(), |r| format!("{r:.2}x")));
                if let Some(t) = self.target(*workload, o) {
                    targets.push(t);
                }
            }
            row.push(if targets.is_empty() {
                "-".to_owned()
            } else {
                targets.join("; ")
            });
            rows.push(row);
        }
        out.push_str(&markdown(&rows));
        let _ = writeln!(
            out,
            "\nCells: median total (median own share, paired by repetition). * the share is within the \
             run-to-run noise (more than a quarter of the repetitions measured it at or below the SDK alone): \
             the ratio is then a lower bound, upstream's median share over ours' upper quartile."
        );

        // Nobody listening: the same variants with the enable bit left clear.
        let idle: Vec<&'static Variant> = VARIANTS
            .iter()
            .filter(|v| {
                self.cells
                    .values()
                    .flatten()
                    .any(|r| r.1.name == v.name && !r.2)
            })
            .collect();
        if !idle.is_empty() {
            let _ = writeln!(
                out,
                "\nNobody listening (UE_PRELOAD_LISTEN=0: registered, enable bit clear): median process CPU ns per item (own share)\n"
            );
            let mut header = vec!["workload".to_owned()];
            header.extend(idle.iter().map(|v| format!("{}, idle", v.name)));
            header.push("SDK alone".to_owned());
            for o in idle.iter().filter(|v| v.name.starts_with("ours")) {
                header.push(format!("{} / upstream total", o.name));
            }
            let mut rows = vec![header];
            for workload in self.cells.keys() {
                let mut row = vec![short(*workload)];
                for v in &idle {
                    row.push(self.total_and_share(*workload, v, false));
                }
                let baselines: Vec<String> = ["sdk-only", "sdk-only-sync"]
                    .iter()
                    .filter_map(|b| {
                        self.cell(*workload, b, true)
                            .map(|c| format!("{:.0} ({b})", c.median))
                    })
                    .collect();
                row.push(baselines.join(", "));
                for o in idle.iter().filter(|v| v.name.starts_with("ours")) {
                    let r = self.ratio_of_totals(*workload, o.name, "upstream", false);
                    row.push(r.map_or("-".to_owned(), |r| format!("{r:.2}")));
                }
                rows.push(row);
            }
            out.push_str(&markdown(&rows));
            let _ = writeln!(
                out,
                "\nTarget (issue 9), nobody listening: per span under the listener-aware path (ours-aware: the sampler; \
                 ours-aware-tracer: the tracer provider) at most 1/3 of upstream's no-listener cost (ratio <= 0.33); \
                 the 2 ns export-call target is measured by the criterion benches."
            );
        }
        out
    }

    /// `total (share)` for a summary cell; `*` marks a share within the noise.
    fn total_and_share(&self, workload: Workload, v: &Variant, listening: bool) -> String {
        match self.cell(workload, v.name, listening) {
            None => "-".to_owned(),
            Some(c) => match self.share(workload, v, listening) {
                Some(s) if s.clear() => format!("{:.0} ({:.0})", c.median, s.median),
                Some(s) => format!("{:.0} ({:.0}*)", c.median, s.median),
                None => format!("{:.0}", c.median),
            },
        }
    }

    /// `over`'s own share divided by `ours`'s (see [`Ratio`]).
    pub fn ratio_of_shares(&self, workload: Workload, over: &str, ours: &Variant) -> Ratio {
        let Some(over) = VARIANTS.iter().find(|v| v.name == over) else {
            return Ratio::None;
        };
        let (Some(a), Some(b)) = (
            self.share(workload, over, true),
            self.share(workload, ours, true),
        ) else {
            return Ratio::None;
        };
        if a.median <= 0.0 {
            Ratio::None
        } else if b.clear() {
            Ratio::Point(a.median / b.median)
        } else if b.q3 > 0.0 {
            Ratio::AtLeast(a.median / b.q3)
        } else {
            Ratio::None
        }
    }

    fn ratio_of_totals(
        &self,
        workload: Workload,
        a: &str,
        b: &str,
        listening: bool,
    ) -> Option<f64> {
        let (a, b) = (
            self.cell(workload, a, listening)?.median,
            self.cell(workload, b, listening)?.median,
        );
        (b > 0.0).then_some(a / b)
    }

    /// The target for `ours` on `workload`, met or not, if it has one.
    fn target(&self, workload: Workload, ours: &Variant) -> Option<String> {
        let ratio = self.ratio_of_shares(workload, "upstream", ours);
        let fmt_ratio = |r: Ratio| match r {
            Ratio::None => "no ratio".to_owned(),
            r => r.show(),
        };
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        match workload.kind {
            Kind::Counter | Kind::Histogram if workload.size == 10_000 => Some(format!(
                "{}: share >= 10x smaller: {} ({})",
                ours.name,
                met(ratio.reaches(10.0)),
                fmt_ratio(ratio)
            )),
            Kind::Spans => {
                let total = self.cell(workload, ours.name, true)?.median;
                let below =
                    |other: &str| self.cell(workload, other, true).map(|c| total < c.median);
                let below_upstream = below("upstream");
                let below_otlp = below("otlp-http");
                Some(format!(
                    "{}: share >= 5x smaller: {} ({}); total below upstream: {}; below otlp-http: {}",
                    ours.name,
                    met(ratio.reaches(5.0)),
                    fmt_ratio(ratio),
                    below_upstream.map_or("not run", met),
                    below_otlp.map_or("not run", met),
                ))
            }
            _ => None,
        }
    }
}

fn short(w: Workload) -> String {
    match w.kind {
        Kind::Spans => format!("spans ({}/round)", thousands(w.size)),
        k => format!("{k} {}", thousands(w.size)),
    }
}

/// A markdown table, columns padded.
fn markdown(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &Vec<String>| {
        let cells: Vec<String> = (0..cols)
            .map(|i| {
                let s = r.get(i).map_or("", String::as_str);
                format!("{s:<w$}", w = width[i])
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = String::new();
    if let Some(header) = rows.first() {
        out.push_str(&line(header));
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for r in &rows[1..] {
            out.push_str(&line(r));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(variant: &str, listening: bool, per_item: f64) -> Measurement {
        Measurement {
            workload: Workload {
                kind: Kind::Counter,
                size: 10_000,
            },
            variant: variant.to_owned(),
            preload_listening: Some(listening),
            rounds: 1,
            warmup_rounds: 1,
            items: 10_000,
            items_total: 20_000,
            cpu_ns: (per_item * 10_000.0) as u64,
            cpu_ns_per_item: per_item,
            wall_ns: 1_000_000,
            exported: Some(10_000),
            exported_total: Some(if listening { 20_000 } else { 0 }),
            events: None,
            preload: None,
            max_rss_kib: 0,
            rep: None,
        }
    }

    #[test]
    fn medians_and_quartiles() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        let five = [50.0, 10.0, 40.0, 20.0, 30.0];
        assert_eq!(quantile(&five, 0.25), Some(20.0));
        assert_eq!(quantile(&five, 0.75), Some(40.0));
        assert_eq!(quantile(&five, 0.0), Some(10.0));
        assert_eq!(quantile(&five, 1.0), Some(50.0));
    }

    #[test]
    fn shares_ratios_and_targets() {
        let results = [
            m("ours", true, 300.0),
            m("ours", true, 320.0),
            m("ours", true, 310.0),
            m("upstream", true, 2300.0),
            m("sdk-only", true, 100.0),
            m("otlp-http", true, 930.0),
            m("ours", false, 101.0),
            m("upstream", false, 103.0),
        ];
        let r = Report::new(&results);
        let ours = crate::variant::variant("ours").unwrap();
        let w = results[0].workload;
        assert_eq!(r.share(w, ours, true).unwrap().median, 210.0);
        assert_eq!(
            r.ratio_of_shares(w, "upstream", ours),
            Ratio::Point(2200.0 / 210.0)
        );
        assert_eq!(r.ratio_of_totals(w, "otlp-http", "ours", true), Some(3.0));
        let summary = r.summary();
        assert!(summary.contains("| counter 10,000"), "{summary}");
        assert!(summary.contains("310 (210)"), "{summary}");
        assert!(
            summary.contains("share >= 10x smaller: met (10.48x)"),
            "{summary}"
        );
        assert!(!r.any_failed_check());
        assert!(r.details().contains("nothing, as it should"));
    }

    #[test]
    fn a_run_that_exported_less_fails_its_check() {
        let mut bad = m("ours", true, 300.0);
        bad.exported_total = Some(19_999);
        let r = Report::new(&[bad]);
        assert!(r.any_failed_check());
        assert!(
            r.details()
                .contains("FAILED: exported 19999 of 20000 items")
        );
    }

    #[test]
    fn shares_pair_runs_of_the_same_repetition_and_flag_noise() {
        let run = |variant: &str, rep: usize, per_item: f64| Measurement {
            rep: Some(rep),
            ..m(variant, true, per_item)
        };
        // The machine slows down in repetition 2; pairing cancels it.
        let results = [
            run("ours", 1, 110.0),
            run("upstream", 1, 300.0),
            run("sdk-only", 1, 100.0),
            run("ours", 2, 230.0),
            run("upstream", 2, 420.0),
            run("sdk-only", 2, 200.0),
            run("ours", 3, 80.0),
            run("upstream", 3, 290.0),
            run("sdk-only", 3, 100.0),
        ];
        let r = Report::new(&results);
        let w = results[0].workload;
        let ours = crate::variant::variant("ours").unwrap();
        let share = r.share(w, ours, true).unwrap();
        // Paired differences -20, 10, 30: quartiles -5 and 20.
        assert_eq!(
            (share.median, share.q1, share.q3, share.pairs),
            (10.0, -5.0, 20.0, 3)
        );
        assert!(!share.clear());
        // Upstream's median paired share (200) over ours' upper quartile (20).
        assert_eq!(r.ratio_of_shares(w, "upstream", ours), Ratio::AtLeast(10.0));
        assert!(r.summary().contains("(10*)"), "{}", r.summary());
        assert!(r.summary().contains(">=10.00x*"), "{}", r.summary());
    }
}
