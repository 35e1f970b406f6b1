//! `ue-decoder status`: what this host supports for the live path, and the fix for each
//! missing piece. Reads only /proc, /sys and tracefs.

use std::fmt;
use std::fs;
use std::path::Path;

use crate::decode::Signal;
use crate::kernel::Tracefs;

/// One check of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether the live path can work as far as this check goes.
    pub ok: bool,
    /// What was found.
    pub found: String,
    /// What to do when not ok.
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok     " } else { "MISSING" };
        write!(f, "{mark} {:<22} {}", self.what, self.found)?;
        if let Some(fix) = self.fix.as_ref().filter(|_| !self.ok) {
            write!(f, "\n        fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check.
pub fn host_status(tracefs_override: Option<&Path>) -> Vec<Check> {
    let mut checks = vec![kernel_version()];
    match Tracefs::locate(tracefs_override) {
        Err(e) => checks.push(Check {
            what: "tracefs".into(),
            ok: false,
            found: "not mounted".into(),
            fix: Some(e.to_string()),
        }),
        Ok(t) => {
            checks.push(Check {
                what: "tracefs".into(),
                ok: true,
                found: format!("mounted at {}", t.root().display()),
                fix: None,
            });
            checks.push(user_events(&t));
            for signal in Signal::ALL {
                let name = signal.default_tracepoint();
                let registered = t.event_dir(name).exists();
                checks.push(Check {
                    what: format!("{name} event"),
                    ok: true,
                    found: if registered {
                        "registered (an application or reader holds it)".into()
                    } else {
                        "not registered yet (`ue-decoder run` registers it itself)".into()
                    },
                    fix: None,
                });
            }
        }
    }
    checks.push(perf_privileges());
    checks
}

fn kernel_version() -> Check {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let ok = version >= (6, 4);
    Check {
        what: "kernel".into(),
        ok,
        found: format!("Linux {release} (user_events needs 6.4 or later)"),
        fix: Some("run a kernel 6.4 or later built with CONFIG_USER_EVENTS=y, or the project's VM: scripts/vm.sh -- ue-decoder ...".into()),
    }
}

fn user_events(t: &Tracefs) -> Check {
    let data = t.user_events_data();
    match fs::metadata(&data) {
        Err(_) => Check {
            what: "user_events".into(),
            ok: false,
            found: format!("{} is missing: the kernel lacks CONFIG_USER_EVENTS", data.display()),
            fix: Some(
                "use a kernel built with CONFIG_USER_EVENTS=y (Linux 6.4+), or run in the project's VM: scripts/vm.sh -- CMD"
                    .into(),
            ),
        },
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt as _;
            let writable = fs::OpenOptions::new().write(true).open(&data).is_ok();
            Check {
                what: "user_events".into(),
                ok: writable,
                found: format!(
                    "{} (mode {:o}){}",
                    data.display(),
                    meta.permissions().mode() & 0o7777,
                    if writable { ", writable by this user" } else { ", NOT writable by this user" }
                ),
                fix: Some(format!(
                    "run as root, or give the users of applications and of ue-decoder write access to {} \
                     (and search access to its directory)",
                    data.display()
                )),
            }
        }
    }
}

/// Raw tracepoint samples need CAP_PERFMON (or CAP_SYS_ADMIN), unless perf_event_paranoid
/// is -1.
fn perf_privileges() -> Check {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    let paranoid = fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(0);
    let has = |cap: u32| caps & (1 << cap) != 0;
    let privileged = has(CAP_PERFMON) || has(CAP_SYS_ADMIN);
    let ok = privileged || paranoid == Some(-1);
    Check {
        what: "perf privileges".into(),
        ok,
        found: format!(
            "perf_event_paranoid = {}, {}",
            paranoid.map_or("unknown".into(), |p| p.to_string()),
            if privileged {
                "this process has CAP_PERFMON or CAP_SYS_ADMIN"
            } else {
                "this process has neither CAP_PERFMON nor CAP_SYS_ADMIN"
            }
        ),
        fix: Some(
            "run ue-decoder as root, or grant it CAP_PERFMON (setcap cap_perfmon+ep ue-decoder), \
             or allow everyone with sysctl kernel.perf_event_paranoid=-1"
                .into(),
        ),
    }
}
