//! Named network namespaces, laid out exactly as iproute2 does it so that
//! `ip netns exec <name> ...` works on a lab while it runs.
//!
//! A namespace is created by a short-lived thread that `unshare(CLONE_NEWNET)`s and
//! bind-mounts its `/proc/thread-self/ns/net` onto `/run/netns/<name>`; the bind mount
//! keeps the namespace alive after the thread exits. Code runs inside it on threads
//! that `setns` to it: a thread's network namespace is per thread, so the rest of
//! the process stays in the root namespace.

use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::Mode;

use crate::error::{IoContext, LabError, Result};
use crate::names::validate_netns_name;

/// Where iproute2 keeps named network namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// A named network namespace, deleted (unmounted and unlinked) on drop.
///
/// The open file descriptor keeps the namespace itself alive for as long as this value
/// exists, even after [`Netns::delete`] removed its name.
#[derive(Debug)]
pub struct Netns {
    name: String,
    path: PathBuf,
    fd: OwnedFd,
    deleted: AtomicBool,
}

impl Netns {
    /// Creates `/run/netns/<name>` holding a fresh network namespace.
    ///
    /// Fails with [`LabError::NamespaceExists`] if the name is taken, rather than
    /// silently joining someone else's namespace.
    pub fn create(name: &str) -> Result<Netns> {
        validate_netns_name(name)?;
        ensure_run_dir()?;
        let path = Path::new(NETNS_RUN_DIR).join(name);
        reject_nul(&path)?;

        // The mount point: an empty file, created exclusively so two runs can never
        // share a name.
        match open(
            &path,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(placeholder) => drop(placeholder),
            Err(Errno::EEXIST) => return Err(LabError::NamespaceExists(path)),
            Err(err) => {
                return Err(LabError::io(
                    format!("creating {}", path.display()),
                    err.into(),
                ))
            }
        }

        let mounted = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("netns-create".into())
                .spawn_scoped(scope, || -> io::Result<()> {
                    // unshare only affects this thread, which exits right after, so
                    // no other code ever runs in its namespace.
                    unshare(CloneFlags::CLONE_NEWNET)?;
                    mount(
                        Some("/proc/thread-self/ns/net"),
                        &path,
                        Some("none"),
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )?;
                    Ok(())
                })
                .and_then(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
                })
        });
        if let Err(err) = mounted {
            let _ = fs::remove_file(&path);
            return Err(LabError::io(
                format!("creating network namespace {name}"),
                err,
            ));
        }

        let fd = match open_netns_file(&path) {
            Ok(fd) => fd,
            Err(err) => {
                let _ = remove_netns_path(&path);
                return Err(err);
            }
        };
        tracing::debug!(netns = name, "created network namespace");
        Ok(Netns {
            name: name.to_string(),
            path,
            fd,
            deleted: AtomicBool::new(false),
        })
    }

    /// The namespace's name under /run/netns.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file descriptor (for `setns`, or `IFLA_NET_NS_FD`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a new thread inside this namespace and waits for it.
    ///
    /// Everything `f` creates there (sockets, netlink connections) stays bound to this
    /// namespace and may be returned and used from any thread afterwards. A panic in
    /// `f` is resumed on the calling thread.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.fd.as_fd();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(thread_name(&self.name))
                .spawn_scoped(scope, move || -> io::Result<R> {
                    enter(fd)?;
                    Ok(f())
                })
                .context(|| format!("spawning a thread for namespace {}", self.name))?;
            match handle.join() {
                Ok(result) => result.context(|| format!("entering namespace {}", self.name)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread inside this namespace and returns without waiting:
    /// for servers, or for a tokio runtime that lives in the namespace.
    ///
    /// Returns once the thread has entered the namespace. The namespace lives at least
    /// as long as the thread, even if the lab deletes its name first.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self
            .fd
            .try_clone()
            .context(|| format!("duplicating the fd of namespace {}", self.name))?;
        let (entered_tx, entered_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(thread_name(&self.name))
            .spawn(move || {
                let entered = enter(fd.as_fd());
                drop(fd);
                let ok = entered.is_ok();
                let _ = entered_tx.send(entered);
                // The caller gets the error and never sees this handle, so the
                // value is never observed.
                assert!(ok, "thread could not enter its namespace");
                f()
            })
            .context(|| format!("spawning a thread for namespace {}", self.name))?;
        match entered_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(err)) => {
                let _ = handle.join();
                Err(LabError::io(
                    format!("entering namespace {}", self.name),
                    err,
                ))
            }
            Err(_) => Err(LabError::io(
                format!("entering namespace {}", self.name),
                io::Error::other("namespace thread died"),
            )),
        }
    }

    /// Removes the namespace's name (unmount + unlink). Idempotent. Interfaces and
    /// netfilter rules go away with the namespace once nothing else holds it (no
    /// process, thread, socket or fd inside).
    pub fn delete(&self) -> Result<()> {
        if self.deleted.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        remove_netns_path(&self.path)?;
        tracing::debug!(netns = self.name, "deleted network namespace");
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(err) = self.delete() {
            tracing::warn!(netns = self.name, %err, "could not delete network namespace");
        }
    }
}

/// Moves the calling thread into the namespace behind `fd`.
pub(crate) fn enter(fd: BorrowedFd<'_>) -> io::Result<()> {
    setns(fd, CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// Names of every namespace in /run/netns (the list `ip netns list` shows).
pub fn list() -> Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(LabError::io(format!("reading {NETNS_RUN_DIR}"), err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.context(|| format!("reading {NETNS_RUN_DIR}"))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Unmounts and unlinks a namespace file, tolerating either half being done already.
pub(crate) fn remove_netns_path(path: &Path) -> Result<()> {
    reject_nul(path)?;
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (half-created); ENOENT: already gone.
        Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(err) => {
            return Err(LabError::io(
                format!("unmounting {}", path.display()),
                err.into(),
            ))
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(LabError::io(format!("removing {}", path.display()), err)),
    }
}

/// Opens a namespace file read-only, close-on-exec.
pub(crate) fn open_netns_file(path: &Path) -> Result<OwnedFd> {
    let file = fs::File::open(path).context(|| format!("opening {}", path.display()))?;
    Ok(OwnedFd::from(file))
}

/// Makes /run/netns a shared mount point, as `ip netns add` does, so namespace mounts
/// made here propagate to other mount namespaces (and `ip netns exec` sees them).
fn ensure_run_dir() -> Result<()> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(NETNS_RUN_DIR).context(|| format!("creating {NETNS_RUN_DIR}"))?;
    let mut made_mount = false;
    loop {
        let shared = mount(
            Some(""),
            dir,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet; bind it onto itself once and retry.
            Err(Errno::EINVAL) if !made_mount => {
                mount(
                    Some(dir),
                    dir,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(io::Error::from)
                .context(|| format!("bind-mounting {NETNS_RUN_DIR} onto itself"))?;
                made_mount = true;
            }
            Err(err) => {
                return Err(LabError::io(
                    format!("making {NETNS_RUN_DIR} a shared mount"),
                    err.into(),
                ))
            }
        }
    }
}

/// nix refuses a path with a NUL byte with a bare EINVAL; name the problem instead.
fn reject_nul(path: &Path) -> Result<()> {
    if !path.as_os_str().as_bytes().contains(&0) {
        return Ok(());
    }
    Err(LabError::InvalidName {
        name: path.display().to_string(),
        reason: "paths contain no NUL byte",
    })
}

/// Thread names are limited to 15 bytes; keep the node end of the namespace name.
fn thread_name(netns: &str) -> String {
    let start = netns.len().saturating_sub(15);
    netns.get(start..).unwrap_or("netns").to_string()
}
