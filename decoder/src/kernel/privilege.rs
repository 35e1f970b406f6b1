//! Dropping privileges once the reader is open: `ue-decoder run --user NAME`.
//!
//! Everything the decoder needs privileges for happens while it opens: reading tracefs,
//! registering the tracepoints (`user_events_data`), `perf_event_open` (CAP_PERFMON) and
//! mapping the rings (perf's mlock limit, or CAP_IPC_LOCK). Reading the rings afterwards,
//! and sending, need none: the kernel checks perf's privileges at open, not at read. So
//! once open the daemon becomes an ordinary user with no capabilities at all, and a flaw
//! in its network or decoding code cannot be turned into root.
//!
//! Capabilities and, for the raw syscalls, user ids are per thread: this must run while
//! the process has one thread, before the runtime and the reading thread start. It checks.

use std::fmt;

use caps::{CapSet, CapsHashSet};
use nix::unistd::{Gid, Uid, User};

/// Why privileges could not be dropped. The daemon does not go on with them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivilegeError {
    /// The user named does not exist.
    #[error("--user {name}: no such user (not in the user database, and not a number)")]
    NoSuchUser {
        /// The name given.
        name: String,
    },
    /// Looking the user up failed.
    #[error("--user {name}: looking the user up failed: {source}")]
    Lookup {
        /// The name given.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// More than one thread runs, so a drop would leave the others privileged.
    #[error(
        "cannot drop privileges while {threads} threads run: capabilities are per thread, so \
         the others would keep theirs (drop them before starting any thread)"
    )]
    Threads {
        /// How many run.
        threads: usize,
    },
    /// setgroups, setgid or setuid failed.
    #[error(
        "switching to user {user} failed at {call}: {source} (only root, or a process with \
         CAP_SETUID and CAP_SETGID, can switch users; without them, start the daemon as that \
         user and leave out --user)"
    )]
    Switch {
        /// The target user.
        user: String,
        /// The call that failed.
        call: &'static str,
        /// Why.
        source: nix::Error,
    },
    /// A capability set could not be cleared or read.
    #[error("{what} the {set:?} capability set failed: {reason}")]
    Caps {
        /// Clearing or reading.
        what: &'static str,
        /// The set.
        set: CapSet,
        /// Why.
        reason: String,
    },
    /// After dropping, something privileged was left: never go on like that.
    #[error("privileges were not dropped: {what}")]
    Left {
        /// What was left.
        what: String,
    },
}

/// What the process runs as after [`drop_privileges`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The real, effective and saved user id.
    pub uid: u32,
    /// The real, effective and saved group id; also the only supplementary group.
    pub gid: u32,
    /// The user's name, if it has one.
    pub user: Option<String>,
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(name) => write!(f, "user {name} (uid {}, gid {})", self.uid, self.gid)?,
            None => write!(f, "uid {}, gid {}", self.uid, self.gid)?,
        }
        f.write_str(", no capabilities")
    }
}

/// Resolves `user`: a name from the user database, or a numeric uid (whose group is its
/// passwd entry's, or the same number).
fn resolve(user: &str) -> Result<(Uid, Gid, Option<String>), PrivilegeError> {
    let lookup = |r: nix::Result<Option<User>>| {
        r.map_err(|source| PrivilegeError::Lookup {
            name: user.to_owned(),
            source,
        })
    };
    if let Some(entry) = lookup(User::from_name(user))? {
        return Ok((entry.uid, entry.gid, Some(entry.name)));
    }
    let Ok(uid) = user.parse::<u32>() else {
        return Err(PrivilegeError::NoSuchUser {
            name: user.to_owned(),
        });
    };
    Ok(match lookup(User::from_uid(Uid::from_raw(uid)))? {
        Some(entry) => (entry.uid, entry.gid, Some(entry.name)),
        None => (Uid::from_raw(uid), Gid::from_raw(uid), None),
    })
}

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

fn clear(set: CapSet) -> Result<(), PrivilegeError> {
    caps::clear(None, set).map_err(|e| PrivilegeError::Caps {
        what: "clearing",
        set,
        reason: e.to_string(),
    })
}

fn read(set: CapSet) -> Result<CapsHashSet, PrivilegeError> {
    caps::read(None, set).map_err(|e| PrivilegeError::Caps {
        what: "reading",
        set,
        reason: e.to_string(),
    })
}

/// Becomes `user` (if given: supplementary groups, group, then user) and clears every
/// capability: effective, permitted, inheritable and ambient, the bounding set too when
/// allowed, and sets no_new_privs so no exec can get any back. Without `user`, stays the
/// same user and only clears the capabilities (a daemon started unprivileged with
/// CAP_PERFMON, e.g. by systemd's AmbientCapabilities, no longer needs it once open).
///
/// Must run while the process has one thread; checks that nothing privileged is left.
pub fn drop_privileges(user: Option<&str>) -> Result<Dropped, PrivilegeError> {
    let threads = threads();
    if threads > 1 {
        return Err(PrivilegeError::Threads { threads });
    }
    let (uid, gid, name) = match user {
        Some(user) => resolve(user)?,
        None => (
            Uid::current(),
            Gid::current(),
            User::from_uid(Uid::current())
                .ok()
                .flatten()
                .map(|u| u.name),
        ),
    };
    if user.is_some() {
        // Dropping from the bounding set needs CAP_SETPCAP, which root has until setuid.
        if read(CapSet::Effective)?.contains(&caps::Capability::CAP_SETPCAP) {
            clear(CapSet::Bounding)?;
        }
        let label = name.clone().unwrap_or_else(|| uid.to_string());
        let switch = |call: &'static str, r: nix::Result<()>| {
            r.map_err(|source| PrivilegeError::Switch {
                user: label.clone(),
                call,
                source,
            })
        };
        switch("setgroups", nix::unistd::setgroups(&[gid]))?;
        switch("setgid", nix::unistd::setgid(gid))?;
        // Leaving uid 0 clears the permitted and effective sets (no SECBIT_KEEP_CAPS);
        // the sets are cleared below all the same, for a start that was not as root.
        switch("setuid", nix::unistd::setuid(uid))?;
    }
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        clear(set)?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|source| PrivilegeError::Left {
        what: format!("setting no_new_privs failed: {source}"),
    })?;

    let left: Vec<_> = [CapSet::Effective, CapSet::Permitted, CapSet::Ambient]
        .into_iter()
        .map(|set| read(set).map(|caps| (set, caps)))
        .collect::<Result<_, _>>()?;
    if let Some((set, caps)) = left.iter().find(|(_, caps)| !caps.is_empty()) {
        return Err(PrivilegeError::Left {
            what: format!("the {set:?} set still holds {caps:?}"),
        });
    }
    if user.is_some() && (Uid::current() != uid || Uid::effective() != uid) {
        return Err(PrivilegeError::Left {
            what: format!("the uid is still {}", Uid::effective()),
        });
    }
    Ok(Dropped {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        user: name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_name_or_number() {
        let (uid, _, name) = resolve("root").unwrap();
        assert_eq!((uid.as_raw(), name.as_deref()), (0, Some("root")));
        let (uid, gid, _) = resolve("4242").unwrap();
        assert_eq!(uid.as_raw(), 4242);
        assert!(gid.as_raw() == 4242 || User::from_uid(uid).unwrap().is_some());
        assert!(matches!(
            resolve("no-such-user-ue"),
            Err(PrivilegeError::NoSuchUser { .. })
        ));
    }
}
