//! Processes started inside a namespace.
//!
//! The child `setns`es into the namespace between fork and exec (`pre_exec`) and
//! becomes the leader of its own process group, so a terminal's Ctrl-C reaches only the
//! lab (which then stops its children in order) and teardown can stop the whole group.
//! Only processes we started are ever signalled, and only while they are unreaped
//! children of ours, so their pid cannot have been reused.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{setpgid, Pid};

use crate::error::{IoContext, LabError, Result};
use crate::names::{RunId, RUN_ENV};
use crate::netns::Netns;

/// How long [`ChildProcess::terminate`] waits after SIGTERM before SIGKILL during
/// teardown.
pub const DEFAULT_TERM_GRACE: Duration = Duration::from_secs(2);

const POLL: Duration = Duration::from_millis(5);

/// A process started inside a lab namespace. Cloning shares the same process.
///
/// Dropping a handle does not stop the process; the [`Lab`](crate::Lab) that started it
/// stops it at teardown if it is still running.
#[derive(Clone, Debug)]
pub struct ChildProcess {
    inner: Arc<ChildInner>,
}

#[derive(Debug)]
struct ChildInner {
    pid: u32,
    label: String,
    netns: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    child: Mutex<Child>,
}

/// Makes `command` enter `netns` and lead its own process group when spawned, and
/// marks it with the run id for `clean`.
fn prepare(command: &mut Command, netns: &Netns, run: &RunId) {
    let fd = netns.fd().as_raw_fd();
    command.env(RUN_ENV, run.to_string());
    // SAFETY: `pre_exec` is unsafe because the closure runs in the forked child, where
    // only async-signal-safe work is allowed: it makes two syscalls (setns, setpgid,
    // through nix's thin wrappers) and allocates nothing. Borrowing the raw `fd` is
    // sound because it stays open until spawn returns: the caller borrows `netns` for
    // the whole call, and the child's copy of the descriptor table holds it too.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            let netns = BorrowedFd::borrow_raw(fd);
            setns(netns, CloneFlags::CLONE_NEWNET)?;
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            Ok(())
        });
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Spawns `command` in `netns`, with stdout and stderr going to
/// `<log_dir>/<label>.stdout` / `.stderr` and stdin from /dev/null.
pub(crate) fn spawn(
    netns: &Netns,
    run: &RunId,
    mut command: Command,
    log_dir: &Path,
    label: &str,
) -> Result<ChildProcess> {
    let stdout_path = log_dir.join(format!("{label}.stdout"));
    let stderr_path = log_dir.join(format!("{label}.stderr"));
    let stdout =
        File::create(&stdout_path).context(|| format!("creating {}", stdout_path.display()))?;
    let stderr =
        File::create(&stderr_path).context(|| format!("creating {}", stderr_path.display()))?;
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    prepare(&mut command, netns, run);
    let text = describe(&command);
    let child = command
        .spawn()
        .context(|| format!("starting `{text}` in {}", netns.name()))?;
    tracing::debug!(
        pid = child.id(),
        netns = netns.name(),
        command = text,
        "started"
    );
    Ok(ChildProcess {
        inner: Arc::new(ChildInner {
            pid: child.id(),
            label: label.to_string(),
            netns: netns.name().to_string(),
            stdout_path,
            stderr_path,
            child: Mutex::new(child),
        }),
    })
}

/// Runs `command` in `netns` to completion with piped output, feeding `stdin` to it;
/// kills it (SIGKILL) and fails if it takes longer than `timeout`.
pub(crate) fn output(
    netns: &Netns,
    run: &RunId,
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    prepare(&mut command, netns, run);
    let text = describe(&command);
    let mut child = command
        .spawn()
        .context(|| format!("starting `{text}` in {}", netns.name()))?;

    let input = stdin.map(<[u8]>::to_vec);
    let stdin_pipe = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(mut pipe), Some(input)) = (stdin_pipe, input) {
            // A child that exits without reading gives EPIPE; its status tells the story.
            let _ = pipe.write_all(&input);
        }
    });
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let stdout_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .context(|| format!("waiting for `{text}`"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            // Unreaped child of ours: the pid is still ours to signal.
            let _ = child.kill();
            let _ = child.wait();
            let _ = writer.join();
            let _ = stdout_reader.join();
            let _ = stderr_reader.join();
            return Err(LabError::Timeout {
                what: format!("`{text}` in {}", netns.name()),
                after: timeout,
            });
        }
        std::thread::sleep(POLL);
    };
    let _ = writer.join();
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

impl ChildProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The name its log files carry (`<node>-<program>-<n>`).
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    pub fn stdout_path(&self) -> &Path {
        &self.inner.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.inner.stderr_path
    }

    /// Everything the process wrote to stdout so far.
    pub fn read_stdout(&self) -> Result<String> {
        read_log(&self.inner.stdout_path)
    }

    /// Everything the process wrote to stderr so far.
    pub fn read_stderr(&self) -> Result<String> {
        read_log(&self.inner.stderr_path)
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.inner
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        self.lock()
            .try_wait()
            .context(|| format!("waiting for {}", self.inner.label))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the process to exit, however long that takes.
    pub fn wait(&self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.wait_timeout(Duration::from_secs(3600))? {
                return Ok(status);
            }
        }
    }

    /// Stops the process: SIGTERM to its process group, then SIGKILL if it has not
    /// exited after `grace`. Returns its exit status (immediately if it already
    /// exited).
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus> {
        let mut child = self.lock();
        let context = || format!("stopping {}", self.inner.label);
        if let Some(status) = child.try_wait().context(context)? {
            return Ok(status);
        }
        // The child is unreaped and we hold the lock, so nobody reaps it meanwhile and
        // its pid (= its process group id) cannot belong to anyone else.
        signal_group(self.inner.pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().context(context)? {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
        signal_group(self.inner.pid, libc::SIGKILL);
        let status = child.wait().context(context)?;
        tracing::debug!(
            pid = self.inner.pid,
            label = self.inner.label,
            "killed after grace period"
        );
        Ok(status)
    }

    /// Kills the process group at once (SIGKILL, a crash as far as the
    /// process is concerned) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus> {
        self.signal_if_running(libc::SIGKILL)?;
        self.wait()
    }

    /// Sends `signal` to the process group if the process has not exited; returns
    /// whether it was still running.
    pub(crate) fn signal_if_running(&self, signal: libc::c_int) -> Result<bool> {
        let mut child = self.lock();
        if child
            .try_wait()
            .context(|| format!("checking {}", self.inner.label))?
            .is_some()
        {
            return Ok(false);
        }
        // Unreaped and locked: the pid is still our child's.
        signal_group(self.inner.pid, signal);
        Ok(true)
    }

    /// True if it was ended by `signal`.
    pub fn was_signalled(status: &ExitStatus, signal: i32) -> bool {
        status.signal() == Some(signal)
    }
}

/// Signals the process group led by `pid`, and `pid` itself in case it left the group.
fn signal_group(pid: u32, signal: libc::c_int) {
    let (Ok(pid), Ok(signal)) = (libc::pid_t::try_from(pid), Signal::try_from(signal)) else {
        return;
    };
    // See the callers for why the pid is ours. Either may be gone already (ESRCH).
    let _ = kill(Pid::from_raw(-pid), signal);
    let _ = kill(Pid::from_raw(pid), signal);
}

fn read_log(path: &Path) -> Result<String> {
    let bytes = fs::read(path).context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
