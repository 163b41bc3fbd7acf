//! [`Lab`]: the owner of one run's namespaces and processes, and their guaranteed
//! cleanup (on drop, on panic, on SIGINT/SIGTERM).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{IoContext, LabError, Result};
use crate::ethtool::{self, Offloads};
use crate::names::{derive_mac, validate_ifname, validate_node_name, RunId};
use crate::netns::Netns;
use crate::process::{self, ChildProcess, DEFAULT_TERM_GRACE};
use crate::rtnl::{self, Ipv4Route, VethEnd};
use crate::{netfilter, sysctl};

/// Set to `1` to keep a run's log directory even after a clean teardown.
pub const KEEP_LOGS_ENV: &str = "SUSTAIN_LAB_KEEP_LOGS";

/// Default time to wait for a link or route to appear.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// True when running with effective uid 0, which the lab needs.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails with [`LabError::NotRoot`] unless running as root.
pub fn require_root() -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot {
            euid: nix::unistd::geteuid().as_raw(),
        })
    }
}

/// Where [`skip`] records each skipped test, one line each, when set (`just test`
/// counts the lines: cargo itself counts a skipped test as passed).
pub const SKIP_LOG_ENV: &str = "SUSTAIN_SKIP_LOG";

/// A test that cannot run on this machine (no root, a tool missing): under `CI`
/// (set to anything but `false`) that is a failure, since CI must run every test;
/// otherwise prints `SKIPPED <test>: <why>` where the harness does not hide it,
/// records it in [`SKIP_LOG_ENV`]'s file and returns false, so the test returns early.
pub fn skip(test: &str, why: &str) -> bool {
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!in_ci, "{test} cannot run: {why}; CI runs every test");
    // Written to the stderr handle rather than with eprintln!, which the test harness
    // captures and shows only for failing tests: a skip must be visible.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
        let line = format!("{test}: {why}\n");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(err) = written {
            let _ = writeln!(
                std::io::stderr(),
                "recording the skip in {}: {err}",
                std::path::Path::new(&log).display()
            );
        }
    }
    false
}

/// For tests that need the lab: returns true when running as root; otherwise
/// [`skip`]s `test` (a failure under `CI`) and returns false.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let euid = nix::unistd::geteuid();
    skip(
        test,
        &format!(
            "needs root to create network namespaces (euid {euid}); run the tests as root (CI does)"
        ),
    )
}

/// Owns one lab run: every namespace and child process it creates.
///
/// Teardown (explicit, on drop, during a panic's unwinding, or on SIGINT/SIGTERM)
/// stops the processes it started (SIGTERM, then SIGKILL) and deletes its namespaces,
/// which removes their veths and netfilter rules with them. A SIGKILLed run leaves
/// its namespaces behind; [`clean`](crate::clean()) removes them.
///
/// All methods take `&self`: a lab can be shared between threads.
#[derive(Debug)]
pub struct Lab {
    shared: Arc<LabShared>,
}

#[derive(Debug)]
struct LabShared {
    run: RunId,
    run_dir: PathBuf,
    state: Mutex<LabState>,
    /// Held for the whole teardown, so a signal arriving during a drop waits for the
    /// teardown in progress instead of exiting halfway through it.
    teardown_lock: Mutex<()>,
}

#[derive(Debug, Default)]
struct LabState {
    nodes: BTreeMap<String, Arc<Netns>>,
    children: Vec<ChildProcess>,
    spawned: u32,
    torn_down: bool,
}

/// What a teardown did.
#[derive(Debug, Default)]
pub struct TeardownReport {
    /// Processes stopped or found exited: label, pid, exit status.
    pub processes: Vec<(String, u32, ExitStatus)>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Anything that failed; teardown carries on past each failure.
    pub errors: Vec<String>,
}

fn live_labs() -> &'static Mutex<Vec<Weak<LabShared>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<LabShared>>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On SIGINT/SIGTERM: tear down every live lab of this process, then exit with
/// 128 + signal (130 / 143), as a shell reports a death by that signal.
fn install_signal_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(signals) => signals,
            Err(err) => {
                tracing::warn!(%err, "no SIGINT/SIGTERM teardown: cannot register handler");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("sustain-lab-sig".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    let labs: Vec<Arc<LabShared>> =
                        lock(live_labs()).iter().filter_map(Weak::upgrade).collect();
                    eprintln!(
                        "sustain-lab: signal {signal}: tearing down {} lab(s)",
                        labs.len()
                    );
                    for lab in labs {
                        let report = lab.teardown();
                        for error in &report.errors {
                            eprintln!("sustain-lab: teardown of run {}: {error}", lab.run);
                        }
                    }
                    std::process::exit(128 + signal);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "no SIGINT/SIGTERM teardown: cannot start handler thread");
        }
    });
}

impl Lab {
    /// Starts a run: a fresh run id, a log directory
    /// (`$TMPDIR/sustain-lab/<run-id>/`), and teardown on SIGINT/SIGTERM.
    ///
    /// The first lab of a process installs a SIGINT/SIGTERM handler that stays for
    /// the life of the process: it tears down every live lab, then exits with 130 or
    /// 143.
    pub fn new() -> Result<Lab> {
        require_root()?;
        let run = RunId::generate();
        let run_dir = std::env::temp_dir()
            .join("sustain-lab")
            .join(run.to_string());
        fs::create_dir_all(&run_dir).context(|| format!("creating {}", run_dir.display()))?;
        install_signal_handler();
        let shared = Arc::new(LabShared {
            run,
            run_dir,
            state: Mutex::new(LabState::default()),
            teardown_lock: Mutex::new(()),
        });
        {
            let mut live = lock(live_labs());
            live.retain(|lab| lab.strong_count() > 0);
            live.push(Arc::downgrade(&shared));
        }
        tracing::info!(run = %shared.run, dir = %shared.run_dir.display(), "lab run started");
        Ok(Lab { shared })
    }

    /// This run's id (`<pid>-<hex>`), part of every namespace name.
    pub fn run_id(&self) -> &RunId {
        &self.shared.run
    }

    /// Where child process logs go. Removed after a clean teardown unless
    /// `SUSTAIN_LAB_KEEP_LOGS=1`; kept (and printed) when tearing down during a panic.
    pub fn run_dir(&self) -> &Path {
        &self.shared.run_dir
    }

    /// Creates node `node`: namespace `sustain-<run-id>-<node>` with loopback up,
    /// `promote_secondaries` on (deleting a primary address must not delete the
    /// secondaries of a moving host) and IPv6 off (the lab is IPv4; no router
    /// solicitations or MLD in captures).
    pub fn add_node(&self, node: &str) -> Result<Arc<Netns>> {
        validate_node_name(node)?;
        let mut state = lock(&self.shared.state);
        if state.torn_down {
            return Err(LabError::TornDown);
        }
        if state.nodes.contains_key(node) {
            return Err(LabError::DuplicateNode(node.to_string()));
        }
        let netns = Arc::new(Netns::create(&self.shared.run.netns_name(node))?);
        // Registered before configuring, so a failure below still gets it deleted.
        state.nodes.insert(node.to_string(), Arc::clone(&netns));
        drop(state);

        let name = netns.name().to_string();
        netns.run(|| -> Result<()> {
            for key in [
                "net.ipv4.conf.all.promote_secondaries",
                "net.ipv4.conf.default.promote_secondaries",
            ] {
                sysctl::write(key, "1")?;
            }
            if Path::new("/proc/sys/net/ipv6").exists() {
                for key in [
                    "net.ipv6.conf.all.disable_ipv6",
                    "net.ipv6.conf.default.disable_ipv6",
                ] {
                    sysctl::write(key, "1")?;
                }
            }
            rtnl::with_rtnl(|handle| async move {
                let index = rtnl::link_index(&handle, &name, "lo").await?;
                rtnl::set_link_up(&handle, index, "lo").await?;
                rtnl::wait_oper_up(&handle, &name, "lo", DEFAULT_WAIT).await
            })
        })??;
        Ok(netns)
    }

    /// The namespace of `node`.
    pub fn netns(&self, node: &str) -> Result<Arc<Netns>> {
        let state = lock(&self.shared.state);
        if state.torn_down {
            return Err(LabError::TornDown);
        }
        state
            .nodes
            .get(node)
            .cloned()
            .ok_or_else(|| LabError::UnknownNode(node.to_string()))
    }

    /// Names of the nodes created so far.
    pub fn nodes(&self) -> Vec<String> {
        lock(&self.shared.state).nodes.keys().cloned().collect()
    }

    /// Runs `f` on a thread inside `node`'s namespace and returns its result (see
    /// [`Netns::run`]).
    pub fn run_in<F, R>(&self, node: &str, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        self.netns(node)?.run(f)
    }

    /// Starts `f` on a thread inside `node`'s namespace (see [`Netns::spawn_thread`]).
    pub fn spawn_thread_in<F, R>(&self, node: &str, f: F) -> Result<JoinHandle<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.netns(node)?.spawn_thread(f)
    }

    /// Creates a veth pair `a.1` in node `a.0` <-> `b.1` in node `b.0`, created from
    /// inside `a`'s namespace with the peer placed straight into `b`'s, so it never
    /// exists in the root namespace. Both ends get `mtu`, a MAC derived from node and
    /// interface name, and offloads off. The ends are left down.
    pub fn add_veth(&self, a: (&str, &str), b: (&str, &str), mtu: u32) -> Result<()> {
        validate_ifname(a.1)?;
        validate_ifname(b.1)?;
        let (ns_a, ns_b) = (self.netns(a.0)?, self.netns(b.0)?);
        let local = VethEnd {
            ifname: a.1.to_string(),
            mac: derive_mac(a.0, a.1),
        };
        let peer = VethEnd {
            ifname: b.1.to_string(),
            mac: derive_mac(b.0, b.1),
        };
        let peer_fd = std::os::fd::AsRawFd::as_raw_fd(&ns_b.fd());
        ns_a.run(|| -> Result<()> {
            rtnl::with_rtnl(|handle| async move {
                rtnl::create_veth(&handle, &local, &peer, peer_fd, mtu).await
            })?;
            ethtool::disable_offloads(a.1)
        })??;
        ns_b.run(|| ethtool::disable_offloads(b.1))??;
        tracing::debug!(a = ?a, b = ?b, mtu, "veth created");
        Ok(())
    }

    /// Turns TX checksumming, TSO, GSO and GRO off on an interface (done for every
    /// veth [`add_veth`](Lab::add_veth) creates).
    pub fn disable_offloads(&self, node: &str, ifname: &str) -> Result<()> {
        self.run_in(node, || ethtool::disable_offloads(ifname))?
    }

    /// Reads an interface's offload switches back from the kernel.
    pub fn offloads(&self, node: &str, ifname: &str) -> Result<Offloads> {
        self.run_in(node, || ethtool::read_offloads(ifname))?
    }

    /// Runs async rtnetlink work against `node`'s namespace.
    fn rtnl<F, Fut, T>(&self, node: &str, f: F) -> Result<T>
    where
        F: FnOnce(rtnetlink::Handle, String) -> Fut + Send,
        Fut: std::future::Future<Output = Result<T>>,
        T: Send,
    {
        let netns = self.netns(node)?;
        let name = netns.name().to_string();
        netns.run(move || rtnl::with_rtnl(|handle| f(handle, name)))?
    }

    /// Sets an interface administratively up (does not wait; see
    /// [`wait_link_up`](Lab::wait_link_up)).
    pub fn link_up(&self, node: &str, ifname: &str) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, ifname).await?;
            rtnl::set_link_up(&handle, index, ifname).await
        })
    }

    /// Sets an interface administratively down.
    pub fn link_down(&self, node: &str, ifname: &str) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, ifname).await?;
            rtnl::set_link_down(&handle, index, ifname).await
        })
    }

    /// Waits until an interface is operationally up (a veth needs both ends up).
    pub fn wait_link_up(&self, node: &str, ifname: &str, timeout: Duration) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            rtnl::wait_oper_up(&handle, &netns, ifname, timeout).await
        })
    }

    /// Sets an interface's MTU.
    pub fn set_mtu(&self, node: &str, ifname: &str, mtu: u32) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, ifname).await?;
            rtnl::set_mtu(&handle, index, ifname, mtu).await
        })
    }

    /// Adds `address/prefix_len` to an interface.
    pub fn add_address(
        &self,
        node: &str,
        ifname: &str,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<()> {
        if prefix_len > 32 {
            return Err(LabError::InvalidValue(format!(
                "prefix length {prefix_len} > 32"
            )));
        }
        self.rtnl(node, |handle, netns| async move {
            let index = rtnl::link_index(&handle, &netns, ifname).await?;
            rtnl::add_ipv4_address(&handle, index, ifname, address, prefix_len).await
        })
    }

    /// Adds a route to the main table.
    pub fn add_route(&self, node: &str, route: &Ipv4Route) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            rtnl::add_ipv4_route(&handle, &netns, route).await
        })
    }

    /// Waits until the main table has a route for exactly `destination/prefix_len`.
    pub fn wait_route(
        &self,
        node: &str,
        destination: Ipv4Addr,
        prefix_len: u8,
        timeout: Duration,
    ) -> Result<()> {
        self.rtnl(node, |handle, netns| async move {
            rtnl::wait_route(&handle, &netns, destination, prefix_len, timeout).await
        })
    }

    /// Destinations (address, prefix length) of the main table's IPv4 routes.
    pub fn routes(&self, node: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
        self.rtnl(node, |handle, _| async move {
            Ok(rtnl::ipv4_routes(&handle)
                .await?
                .iter()
                .map(rtnl::route_destination)
                .collect())
        })
    }

    /// Writes a `net.*` sysctl inside `node`.
    pub fn sysctl_write(&self, node: &str, key: &str, value: &str) -> Result<()> {
        self.run_in(node, || sysctl::write(key, value))?
    }

    /// Reads a `net.*` sysctl inside `node`.
    pub fn sysctl_read(&self, node: &str, key: &str) -> Result<String> {
        self.run_in(node, || sysctl::read(key))?
    }

    /// Makes `node` a router: IPv4 forwarding on, reverse-path filtering off (the
    /// root namespace's rp_filter is inherited by new namespaces, and strict rp_filter
    /// drops a moved host's packets while routes change).
    pub fn make_router(&self, node: &str) -> Result<()> {
        self.run_in(node, || -> Result<()> {
            sysctl::write("net.ipv4.ip_forward", "1")?;
            sysctl::write("net.ipv4.conf.all.rp_filter", "0")?;
            sysctl::write("net.ipv4.conf.default.rp_filter", "0")?;
            for entry in fs::read_dir("/proc/sys/net/ipv4/conf")
                .context(|| "listing /proc/sys/net/ipv4/conf".to_string())?
            {
                let entry = entry.context(|| "listing /proc/sys/net/ipv4/conf".to_string())?;
                let path = entry.path().join("rp_filter");
                fs::write(&path, "0").context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        })?
    }

    /// `iptables -w <args>` inside `node`; returns its stdout.
    pub fn iptables(&self, node: &str, args: &[&str]) -> Result<String> {
        let netns = self.netns(node)?;
        netfilter::iptables(&netns, &self.shared.run, args)
    }

    /// `iptables-restore -w [--noflush]` inside `node`, fed `rules`.
    pub fn iptables_restore(&self, node: &str, rules: &str, noflush: bool) -> Result<()> {
        let netns = self.netns(node)?;
        netfilter::iptables_restore(&netns, &self.shared.run, rules, noflush)
    }

    /// Drops each packet forwarded by `node` with `probability` (only those arriving on
    /// `in_iface`, if given). The rule carries the comment
    /// [`netfilter::LOSS_COMMENT`].
    pub fn add_random_loss(
        &self,
        node: &str,
        probability: f64,
        in_iface: Option<&str>,
    ) -> Result<()> {
        let args = netfilter::random_loss_rule(probability, in_iface, netfilter::LOSS_COMMENT)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.iptables(node, &args).map(drop)
    }

    /// Removes every random-loss rule from `node`'s FORWARD chain.
    pub fn clear_random_loss(&self, node: &str) -> Result<()> {
        // Deleting by rule number, highest first, so the numbers below stay valid.
        let listing = self.iptables(
            node,
            &["-t", "filter", "-L", "FORWARD", "-n", "--line-numbers"],
        )?;
        let tag = format!("/* {} */", netfilter::LOSS_COMMENT);
        let mut numbers: Vec<u32> = listing
            .lines()
            .filter(|line| line.contains(&tag))
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        for number in numbers {
            self.iptables(
                node,
                &["-t", "filter", "-D", "FORWARD", &number.to_string()],
            )?;
        }
        Ok(())
    }

    /// Packets dropped so far by `node`'s random-loss rules.
    pub fn random_loss_drops(&self, node: &str) -> Result<u64> {
        let listing = self.iptables(node, &["-t", "filter", "-L", "FORWARD", "-v", "-n", "-x"])?;
        netfilter::packets_of_commented_rules(&listing, netfilter::LOSS_COMMENT)
    }

    /// NAPT: masquerade everything `node` sends out of `out_iface`.
    pub fn add_masquerade(&self, node: &str, out_iface: &str) -> Result<()> {
        let args = netfilter::masquerade_rule(out_iface);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.iptables(node, &args).map(drop)
    }

    /// Starts `command` inside `node` with stdout/stderr in the run directory
    /// (`<node>-<program>-<n>.stdout/.stderr`). The lab stops it at teardown if it is
    /// still running.
    pub fn spawn(&self, node: &str, command: Command) -> Result<ChildProcess> {
        let netns = self.netns(node)?;
        let label = {
            let mut state = lock(&self.shared.state);
            state.spawned += 1;
            let program = Path::new(command.get_program()).file_name().map_or_else(
                || "process".into(),
                |name| name.to_string_lossy().into_owned(),
            );
            let program: String = program
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{node}-{program}-{}", state.spawned)
        };
        let child = process::spawn(
            &netns,
            &self.shared.run,
            command,
            &self.shared.run_dir,
            &label,
        )?;
        let mut state = lock(&self.shared.state);
        state.children.push(child.clone());
        if state.torn_down {
            // Teardown raced with this spawn and cannot have seen the child: stop it
            // here so it does not outlive the lab.
            drop(state);
            let _ = child.terminate(DEFAULT_TERM_GRACE);
            return Err(LabError::TornDown);
        }
        Ok(child)
    }

    /// Stops every process and deletes every namespace of this run. Idempotent;
    /// carries on past failures and reports them.
    pub fn teardown(&self) -> TeardownReport {
        self.shared.teardown()
    }
}

impl LabShared {
    fn teardown(&self) -> TeardownReport {
        let _teardown = lock(&self.teardown_lock);
        let mut report = TeardownReport::default();
        let (children, nodes) = {
            let mut state = lock(&self.state);
            if state.torn_down {
                return report;
            }
            state.torn_down = true;
            (
                std::mem::take(&mut state.children),
                std::mem::take(&mut state.nodes),
            )
        };

        // SIGTERM everything first and give the whole set one grace period, rather than
        // one grace period per process.
        let deadline = Instant::now() + DEFAULT_TERM_GRACE;
        for child in &children {
            if let Err(err) = child.signal_if_running(libc::SIGTERM) {
                report.errors.push(err.to_string());
            }
        }
        for child in &children {
            let grace = deadline.saturating_duration_since(Instant::now());
            match child.terminate(grace) {
                Ok(status) => {
                    report
                        .processes
                        .push((child.label().to_string(), child.pid(), status));
                }
                Err(err) => report.errors.push(err.to_string()),
            }
        }

        for (_, netns) in nodes.iter().rev() {
            match netns.delete() {
                Ok(()) => report.namespaces.push(netns.name().to_string()),
                Err(err) => report.errors.push(err.to_string()),
            }
        }
        drop(nodes);

        let keep_logs = std::env::var(KEEP_LOGS_ENV).is_ok_and(|value| value == "1");
        if std::thread::panicking() || !report.errors.is_empty() || keep_logs {
            eprintln!(
                "sustain-lab: run {} logs kept in {}",
                self.run,
                self.run_dir.display()
            );
        } else if let Err(err) = fs::remove_dir_all(&self.run_dir) {
            report
                .errors
                .push(format!("removing {}: {err}", self.run_dir.display()));
        }

        lock(live_labs()).retain(|lab| lab.strong_count() > 0 && !std::ptr::eq(lab.as_ptr(), self));
        tracing::info!(
            run = %self.run,
            processes = report.processes.len(),
            namespaces = report.namespaces.len(),
            errors = report.errors.len(),
            "lab torn down"
        );
        report
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let report = self.teardown();
        for error in &report.errors {
            tracing::warn!(run = %self.shared.run, "teardown: {error}");
            eprintln!("sustain-lab: teardown of run {}: {error}", self.shared.run);
        }
    }
}
