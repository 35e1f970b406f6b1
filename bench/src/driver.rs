//! Runs each (workload, variant) as its own worker process, variants alternated within each
//! repetition, and collects the JSON lines they print.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::sys;
use crate::variant::{VARIANTS, Variant, variant};
use crate::workload::{Kind, Measurement, Plan, Workload};

/// One process to run: a variant on a workload, with or without a listener.
#[derive(Clone, Copy)]
pub struct Job {
    /// The workload.
    pub workload: Workload,
    /// The variant.
    pub variant: &'static Variant,
    /// Whether the stand-in sets the enable bit (`UE_PRELOAD_LISTEN`).
    pub listening: bool,
    /// Rounds.
    pub plan: Plan,
}

/// What to run and with which programs.
pub struct Driver {
    /// The worker program (`ue-bench-worker`).
    pub worker: PathBuf,
    /// The OTLP receiver program (`otlp-receiver` of the `tests` package).
    pub receiver: PathBuf,
    /// The LD_PRELOAD stand-in; `None` to run without it (a kernel with user_events).
    pub preload: Option<PathBuf>,
    /// Repetitions of each job.
    pub reps: usize,
    /// Where to append every result as a JSON line, as it arrives.
    pub results: Option<PathBuf>,
}

/// The jobs of one workload, in the order they alternate: each selected variant that has a
/// pipeline for the signal (plus the baselines they need), then, when `idle`, the
/// user_events variants with nobody listening.
pub fn jobs(workload: Workload, selected: &[&str], idle: bool, plan: Plan) -> Vec<Job> {
    let applies = |v: &Variant| match workload.kind {
        Kind::Spans => v.spans.is_some(),
        _ => v.metrics.is_some(),
    };
    let baseline = |v: &Variant| match workload.kind {
        Kind::Spans => v.spans_baseline,
        _ => v.metrics_baseline,
    };
    let wanted = |v: &Variant| {
        selected.contains(&v.name)
            || VARIANTS
                .iter()
                .any(|w| selected.contains(&w.name) && applies(w) && baseline(w) == Some(v.name))
    };
    let chosen: Vec<&'static Variant> = VARIANTS
        .iter()
        .filter(|v| applies(v) && wanted(v))
        .collect();
    let mut jobs: Vec<Job> = chosen
        .iter()
        .map(|&variant| Job {
            workload,
            variant,
            listening: true,
            plan,
        })
        .collect();
    if idle {
        jobs.extend(chosen.iter().filter(|v| v.user_events).map(|&variant| Job {
            workload,
            variant,
            listening: false,
            plan,
        }));
    }
    jobs
}

impl Driver {
    /// Runs every job `reps` times: all jobs of a workload once (A B C D), then again, so
    /// that the variants see the same machine conditions; then the next workload.
    pub fn run(&self, workloads: &[Vec<Job>]) -> Result<Vec<Measurement>> {
        let total: usize = workloads.iter().map(Vec::len).sum::<usize>() * self.reps;
        let mut done = 0;
        let mut all = Vec::new();
        for jobs in workloads {
            for rep in 1..=self.reps {
                for job in jobs {
                    done += 1;
                    let mut m = self
                        .run_one(job)
                        .with_context(|| format!("{} on {}", job.variant.name, job.workload))?;
                    m.rep = Some(rep);
                    eprintln!(
                        "[{done}/{total}] rep {rep}: {:<44} {:<28} {:>10.1} ns/{}{}",
                        job.workload.to_string(),
                        label(job.variant.name, job.listening),
                        m.cpu_ns_per_item,
                        job.workload.kind.item(),
                        match m.check() {
                            Some(Err(e)) => format!("  CHECK FAILED: {e}"),
                            _ => String::new(),
                        }
                    );
                    if let Some(path) = &self.results {
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        writeln!(f, "{}", serde_json::to_string(&m)?)?;
                    }
                    all.push(m);
                }
            }
        }
        Ok(all)
    }

    /// Runs one worker process and returns what it printed, with the receiver's count for
    /// OTLP/HTTP variants.
    pub fn run_one(&self, job: &Job) -> Result<Measurement> {
        let receiver = if job.variant.receiver {
            Some(Receiver::start(&self.receiver)?)
        } else {
            None
        };
        let mut cmd = Command::new(&self.worker);
        cmd.args([
            "--workload",
            job.workload.kind.name(),
            "--size",
            &job.workload.size.to_string(),
            "--variant",
            job.variant.name,
            "--rounds",
            &job.plan.rounds.to_string(),
            "--warmup",
            &job.plan.warmup_rounds.to_string(),
        ]);
        if let Some(r) = &receiver {
            cmd.args(["--endpoint", &r.endpoint]);
        }
        if let Some(preload) = &self.preload {
            cmd.env("LD_PRELOAD", preload);
        }
        cmd.env("UE_PRELOAD_LISTEN", if job.listening { "1" } else { "0" });
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.worker.display()))?;
        if !out.status.success() {
            bail!(
                "the worker failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let stdout = String::from_utf8(out.stdout).context("the worker's output is not UTF-8")?;
        let line = stdout
            .lines()
            .last()
            .context("the worker printed nothing")?;
        let mut m: Measurement = serde_json::from_str(line)
            .with_context(|| format!("the worker printed {line:?}, not a result"))?;
        if let Some(r) = receiver {
            let totals = r.stop()?;
            m.exported_total = Some(if job.workload.kind == Kind::Spans {
                totals.spans
            } else {
                totals.data_points
            });
        }
        Ok(m)
    }
}

/// A variant's name in results and tables, marked when nobody listened.
pub fn label(variant: &str, listening: bool) -> String {
    if listening {
        variant.to_owned()
    } else {
        format!("{variant}, nobody listening")
    }
}

/// What the receiver accepted in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Data points accepted.
    pub data_points: u64,
    /// Spans accepted.
    pub spans: u64,
}

/// An `otlp-receiver` process for one run, on a port of its own.
struct Receiver {
    child: std::process::Child,
    endpoint: String,
    lines: mpsc::Receiver<String>,
}

impl Receiver {
    fn start(program: &PathBuf) -> Result<Self> {
        let mut child = Command::new(program)
            .args(["--http", "127.0.0.1:0", "--grpc", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (cargo build --release -p tests --bin otlp-receiver)",
                    program.display()
                )
            })?;
        // Read its lines on a thread, so that a request line per export never fills the pipe.
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut receiver = Self {
            child,
            endpoint: String::new(),
            lines,
        };
        loop {
            let line = receiver
                .lines
                .recv_timeout(Duration::from_secs(30))
                .context("otlp-receiver did not say where it listens")?;
            if let Some(rest) = line.strip_prefix("listening http=") {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                receiver.endpoint = format!("http://{addr}");
                return Ok(receiver);
            }
        }
    }

    /// Stops it (SIGTERM) and reads its totals line.
    fn stop(mut self) -> Result<Totals> {
        sys::terminate(self.child.id()).context("cannot signal otlp-receiver")?;
        let mut totals = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            if let Some(rest) = line.strip_prefix("totals ") {
                totals = Some(parse_totals(rest)?);
            }
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("otlp-receiver exited with {status}");
        }
        totals.context("otlp-receiver printed no totals")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Only when a run failed before stop(): do not leave it listening.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `requests=3 accepted=3 data_points=30 spans=0`.
fn parse_totals(s: &str) -> Result<Totals> {
    let field = |name: &str| -> Result<u64> {
        s.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in the totals {s:?}"))?
            .parse()
            .with_context(|| format!("{name} in {s:?}"))
    };
    Ok(Totals {
        data_points: field("data_points")?,
        spans: field("spans")?,
    })
}

/// The variant called `name`, or an error listing the names.
pub fn find_variant(name: &str) -> Result<&'static Variant> {
    variant(name).with_context(|| {
        format!(
            "unknown variant {name:?}; known: {}",
            crate::variant::variant_names().join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_parse() {
        assert_eq!(
            parse_totals("requests=3 accepted=3 data_points=30 spans=7").unwrap(),
            Totals {
                data_points: 30,
                spans: 7
            }
        );
        assert!(parse_totals("requests=3").is_err());
    }

    #[test]
    fn jobs_bring_their_baselines_and_idle_runs() {
        let plan = Plan {
            warmup_rounds: 1,
            rounds: 1,
        };
        let spans = Workload {
            kind: Kind::Spans,
            size: 10,
        };
        let names = |jobs: Vec<Job>| {
            jobs.iter()
                .map(|j| label(j.variant.name, j.listening))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(jobs(spans, &["ours", "upstream"], true, plan)),
            [
                "ours",
                "upstream",
                "sdk-only",
                "sdk-only-sync",
                "ours, nobody listening",
                "upstream, nobody listening"
            ]
        );
        let counter = Workload {
            kind: Kind::Counter,
            size: 10,
        };
        assert_eq!(
            names(jobs(counter, &["upstream", "sdk-only-sync"], false, plan)),
            ["upstream", "sdk-only"]
        );
    }
}
