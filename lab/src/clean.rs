//! Removing what a killed run left behind.
//!
//! A SIGKILLed run cannot tear down: its namespaces stay in /run/netns, and processes
//! it started may still run inside them. `clean` removes every `/run/netns/sustain-*`
//! whose owning process (the pid in the name) is gone, and nothing without that
//! prefix. Namespaces of runs that are still alive are skipped (other tests or other
//! users on this machine may be using them) unless forced.
//!
//! Processes inside a stale namespace are stopped only when they are provably ours:
//! they carry `SUSTAIN_LAB_RUN=<run id of that namespace>` in their environment, set
//! by the lab when it started them. Anything else is reported and left alone.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{IoContext, LabError, Result};
use crate::names::{RunId, NETNS_PREFIX, RUN_ENV};
use crate::netns::{self, NETNS_RUN_DIR};

/// How long a stale process gets between SIGTERM and SIGKILL.
const STALE_TERM_GRACE: Duration = Duration::from_secs(1);

/// What [`clean_with`] may remove.
#[derive(Clone, Copy, Debug, Default)]
pub struct CleanOptions {
    /// Also remove namespaces whose owning process is still alive. Breaks that run.
    pub force: bool,
}

/// A process found inside a stale namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleProcess {
    pub pid: u32,
    pub netns: String,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces.
    pub command: String,
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct CleanReport {
    /// Namespaces removed.
    pub removed: Vec<String>,
    /// Namespaces skipped because their owning process is alive: (name, owner pid).
    pub skipped_live: Vec<(String, u32)>,
    /// Processes of ours that were stopped.
    pub killed: Vec<StaleProcess>,
    /// Processes inside removed namespaces that we cannot prove are ours: left alone.
    /// They keep their (now nameless) namespace alive; `nsenter -t <pid> -n` reaches it.
    pub not_ours: Vec<StaleProcess>,
    /// Failures; cleaning carries on past each.
    pub errors: Vec<String>,
}

/// Removes the namespaces (and our processes in them) of runs that are no longer
/// alive. See the module documentation.
pub fn clean() -> Result<CleanReport> {
    clean_with(CleanOptions::default())
}

/// [`clean`] with options.
pub fn clean_with(options: CleanOptions) -> Result<CleanReport> {
    crate::require_root()?;
    let mut report = CleanReport::default();
    for name in netns::list()? {
        if !name.starts_with(NETNS_PREFIX) {
            continue;
        }
        let owner = RunId::parse_netns_name(&name).map(|(run, _)| run);
        if let Some(run) = &owner {
            if !options.force && process_alive(run.pid()) {
                report.skipped_live.push((name.clone(), run.pid()));
                continue;
            }
        }
        let path = Path::new(NETNS_RUN_DIR).join(&name);
        match processes_in_netns(&path) {
            // Removed meanwhile, typically by its own run finishing its teardown.
            Ok(None) => continue,
            Ok(Some(pids)) => {
                for pid in pids {
                    let found = StaleProcess {
                        pid,
                        netns: name.clone(),
                        command: cmdline(pid),
                    };
                    let ours = owner.as_ref().is_some_and(|run| has_run_marker(pid, run));
                    if !ours {
                        report.not_ours.push(found);
                        continue;
                    }
                    match stop_stale_process(pid, owner.as_ref(), &path) {
                        Ok(true) => report.killed.push(found),
                        Ok(false) => {}
                        Err(err) => report.errors.push(format!("stopping pid {pid}: {err}")),
                    }
                }
            }
            Err(err) => report
                .errors
                .push(format!("scanning processes of {name}: {err}")),
        }
        match netns::remove_netns_path(&path) {
            Ok(()) => report.removed.push(name),
            Err(err) => report.errors.push(err.to_string()),
        }
    }
    Ok(report)
}

/// Alive = exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(process_state(&stat), Some('Z' | 'X')),
        Err(_) => false,
    }
}

/// The state letter of a `/proc/<pid>/stat` line (the field after the `(comm)`).
fn process_state(stat: &str) -> Option<char> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.trim_start().chars().next()
}

/// Identity of a network namespace: (device, inode) of its nsfs file.
fn netns_identity(path: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Pids of the processes whose network namespace is the one at `path`; `None` if
/// `path` no longer exists.
fn processes_in_netns(path: &Path) -> Result<Option<Vec<u32>>> {
    let target = match netns_identity(path) {
        Ok(target) => target,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LabError::io(format!("reading {}", path.display()), err)),
    };
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context(|| "listing /proc".to_string())? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes vanish while we look; an unreadable one is not in our namespace
        // as far as we can tell.
        if netns_identity(&entry.path().join("ns/net")).is_ok_and(|id| id == target) {
            pids.push(pid);
        }
    }
    Ok(Some(pids))
}

fn has_run_marker(pid: u32, run: &RunId) -> bool {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let marker = format!("{RUN_ENV}={run}");
    environ
        .split(|&b| b == 0)
        .any(|var| var == marker.as_bytes())
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// SIGTERM, then SIGKILL after a grace period, through a pidfd so the signal can only
/// reach the process we checked. Returns false if it had already exited.
fn stop_stale_process(pid: u32, run: Option<&RunId>, netns_path: &Path) -> io::Result<bool> {
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
        Err(err) => return Err(err),
    };
    // Re-check through /proc after pinning the process with the pidfd: if the pid had
    // been reused in between, the new process fails these checks (or is ours too).
    let still_ours = run.is_some_and(|run| has_run_marker(pid, run))
        && netns_identity(Path::new(&format!("/proc/{pid}/ns/net"))).ok()
            == netns_identity(netns_path).ok();
    if !still_ours {
        return Ok(false);
    }
    if !pidfd_signal(&pidfd, libc::SIGTERM)? {
        return Ok(false);
    }
    if wait_exit(&pidfd, STALE_TERM_GRACE)? {
        return Ok(true);
    }
    pidfd_signal(&pidfd, libc::SIGKILL)?;
    wait_exit(&pidfd, STALE_TERM_GRACE)?;
    Ok(true)
}

/// pidfd_open(2). Neither nix nor libc wraps it (libc only has the syscall number).
#[allow(unsafe_code)]
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and touches no memory of ours; the result
    // is checked, and on success it is a fresh descriptor that nothing else owns, so
    // OwnedFd may take it over.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd as libc::c_int))
    }
}

/// pidfd_send_signal(2) (no wrapper in nix or libc either). Returns false if the
/// process had already exited.
#[allow(unsafe_code)]
fn pidfd_signal(pidfd: &OwnedFd, signal: libc::c_int) -> io::Result<bool> {
    // SAFETY: the pidfd is open for the whole call (borrowed), and a null siginfo is
    // allowed (the kernel then fills one in as kill(2) would); nothing else is read or
    // written.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// A pidfd becomes readable when its process exits (even if nobody reaps it).
fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let ready = poll(
        &mut fds,
        PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
    )?;
    Ok(ready > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_read_after_the_command_name() {
        assert_eq!(process_state("42 (sleep) S 1 42 42 0"), Some('S'));
        assert_eq!(process_state("43 (odd) name) Z 1 43"), Some('Z'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_free_pid_is_not() {
        assert!(process_alive(std::process::id()));
        // pid_max is at most 2^22, so this pid never exists.
        assert!(!process_alive(u32::MAX - 1));
    }
}
