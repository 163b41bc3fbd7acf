//! `sustain-lab`: the lab's command line.
//!
//! ```text
//! sustain-lab list                         scenario names, one per line
//! sustain-lab run SCENARIO [--out DIR]     run it; exit 0 pass, 1 fail, 2 lab error
//! sustain-lab up SCENARIO                  build and hold its topology
//! sustain-lab down [SCENARIO]              tear down what `up` holds
//! sustain-lab check FILE...                validate scenario files
//! sustain-lab clean [--force]              remove what killed runs left behind
//! sustain-lab transcript PATH...            normalized transcripts of captures
//! sustain-lab pcap-diff A B                 differences of two captures' transcripts
//! ```

#![deny(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sustain_conformance::names::NAMES_FILE;
use sustain_conformance::{Analysis, CaptureSet, Names};
use sustain_lab::names::RunId;
use sustain_lab::report::{render_summary, render_timeline};
use sustain_lab::runner::{self, RunOptions};
use sustain_lab::scenario::{Outcome, Scenario};
use sustain_lab::topology::Topology;
use sustain_lab::transcripts::golden_dir_for;

/// Environment variable naming the scenario directory.
const SCENARIOS_ENV: &str = "SUSTAIN_LAB_SCENARIOS";
/// Where scenarios live in the repository.
const SCENARIOS_IN_REPO: &str = "conformance/scenarios";

#[derive(Parser)]
#[command(
    name = "sustain-lab",
    version,
    about = "Network-namespace lab for sustain"
)]
struct Cli {
    /// Log level for the lab's own diagnostics (error, warn, info, debug).
    #[arg(long, global = true, default_value = "warn")]
    log: tracing::Level,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Args, Clone)]
struct ScenarioArgs {
    /// Directory of scenario files (default: $SUSTAIN_LAB_SCENARIOS, else the
    /// nearest conformance/scenarios above the current directory or this executable).
    #[arg(long, value_name = "DIR")]
    scenarios: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Commands {
    /// List the scenarios: one per line, the name first, then its description.
    List {
        #[command(flatten)]
        dir: ScenarioArgs,
    },
    /// Run a scenario (a name from `list`, or a path to a .toml file). Prints a live
    /// progress line, then a timeline and a summary. Exit status: 0 when the
    /// expectation holds, 1 when it fails, 2 when the lab could not run it.
    Run {
        scenario: String,
        /// Output directory for captures, logs, events and report.json (default:
        /// ./sustain-lab-out/<scenario>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Directory holding sustain-host and the other sustain binaries (default:
        /// $SUSTAIN_BIN_DIR, else next to this executable).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// No progress line.
        #[arg(long)]
        quiet: bool,
        /// Print each host uplink's rate (up and down, Mbit/s) every second while
        /// the scenario runs.
        #[arg(long)]
        watch: bool,
        /// `paper`: the timing of the paper the scenario reproduces (its `[paper]`
        /// table): each move takes the paper's time and the sustain ends run the
        /// paper's timer profile (--paper-faithful); golden captures do not apply.
        #[arg(long, value_enum)]
        profile: Option<Profile>,
        #[command(flatten)]
        golden: GoldenArgs,
        #[command(flatten)]
        dir: ScenarioArgs,
    },
    /// Run several scenarios (default: every one in the scenario directory), each
    /// into OUT/<name>, then print a table of outcomes. Exit status: 0 when every
    /// expectation holds, 1 when one fails, 2 when the lab could not run one.
    Suite {
        /// Scenario names (default: all).
        names: Vec<String>,
        /// Parent of the per-scenario output directories.
        #[arg(long, value_name = "DIR", default_value = "sustain-lab-out")]
        out: PathBuf,
        /// Directory holding sustain-host (see `run`).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// No progress lines.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        golden: GoldenArgs,
        #[command(flatten)]
        dir: ScenarioArgs,
    },
    /// Build a scenario's topology, start its programs (not its transfer) and hold it
    /// until Ctrl-C or `sustain-lab down`; prints how to enter each node.
    Up {
        scenario: String,
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        #[command(flatten)]
        dir: ScenarioArgs,
    },
    /// Tear down topologies held by `sustain-lab up` (all of them, or those of one
    /// scenario).
    Down { scenario: Option<String> },
    /// Validate scenario files (every error names the file, line and field).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Remove the namespaces (/run/netns/sustain-*) of lab runs that died without
    /// tearing down, stopping processes in them that the lab started.
    Clean {
        /// Also remove namespaces whose owning process is still alive (breaks that run).
        #[arg(long)]
        force: bool,
    },
    /// Print the normalized transcript of captures: a run's output directory or a
    /// golden directory (every capture in it), or pcap/pcapng files. Names come from
    /// the directory's names.json; without one, addresses are named h1, h2, ...
    Transcript {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the differences between the transcripts of two captures (files, or two
    /// directories compared capture point by capture point). Exit status 0 when they
    /// are equal, 1 when they differ.
    PcapDiff { a: PathBuf, b: PathBuf },
    /// Redraw the time-sequence plots of a run's output directory (its captures,
    /// names.json and events.jsonl) into DIR/plots/: one per capture point and one
    /// close-up per move, SVG and PNG.
    Plot { dir: PathBuf },
}

#[derive(Args, Clone)]
struct GoldenArgs {
    /// Golden captures to compare the transcripts with (default: the repository's
    /// pcaps/<scenario>, when it exists).
    #[arg(long, value_name = "DIR")]
    golden: Option<PathBuf>,
    /// Do not compare with golden captures.
    #[arg(long, conflicts_with = "golden")]
    no_golden: bool,
}

impl GoldenArgs {
    fn dir_for(&self, scenario: &Scenario) -> Option<PathBuf> {
        if self.no_golden {
            return None;
        }
        self.golden.clone().or_else(|| {
            scenario
                .file
                .as_deref()
                .and_then(|file| golden_dir_for(file, &scenario.name))
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(cli.log)
        .init();
    let result = match cli.command {
        Commands::List { dir } => list(&dir).map(|()| ExitCode::SUCCESS),
        Commands::Run {
            scenario,
            out,
            bin_dir,
            quiet,
            watch,
            profile,
            golden,
            dir,
        } => run(
            &dir,
            &scenario,
            out,
            bin_dir,
            Progress { quiet, watch },
            profile,
            &golden,
        ),
        Commands::Suite {
            names,
            out,
            bin_dir,
            quiet,
            golden,
            dir,
        } => suite(&dir, &names, &out, bin_dir, quiet, &golden),
        Commands::Up {
            scenario,
            bin_dir,
            dir,
        } => up(&dir, &scenario, bin_dir).map(|()| ExitCode::SUCCESS),
        Commands::Down { scenario } => down(scenario.as_deref()).map(|()| ExitCode::SUCCESS),
        Commands::Check { files } => Ok(check(&files)),
        Commands::Clean { force } => clean(force).map(|()| ExitCode::SUCCESS),
        Commands::Transcript { paths } => transcript(&paths).map(|()| ExitCode::SUCCESS),
        Commands::PcapDiff { a, b } => pcap_diff(&a, &b),
        Commands::Plot { dir } => sustain_lab::plot::plot_run(&dir)
            .map(|files| {
                for file in files {
                    println!("{}", dir.join(file).display());
                }
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sustain-lab: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The scenario directory (see [`ScenarioArgs`]).
fn scenario_dir(args: &ScenarioArgs) -> Result<PathBuf> {
    if let Some(dir) = &args.scenarios {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os(SCENARIOS_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        starts.push(dir);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let candidate = dir.join(SCENARIOS_IN_REPO);
            if candidate.is_dir() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "no scenario directory: pass --scenarios DIR, set ${SCENARIOS_ENV}, or run inside \
         the repository (it has {SCENARIOS_IN_REPO})"
    )
}

fn scenario_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    // The papers' experiments (a `[paper]` table) lead, then by name.
    files.sort_by_key(|path| {
        let paper = Scenario::load(path).is_ok_and(|s| s.paper.is_some());
        (!paper, path.clone())
    });
    Ok(files)
}

/// A scenario by name (in the scenario directory) or by path.
fn load(args: &ScenarioArgs, scenario: &str) -> Result<Scenario> {
    let as_path = Path::new(scenario);
    let path = if as_path.extension().is_some_and(|ext| ext == "toml") || as_path.is_file() {
        as_path.to_path_buf()
    } else {
        let dir = scenario_dir(args)?;
        let path = dir.join(format!("{scenario}.toml"));
        if !path.is_file() {
            let known: Vec<String> = scenario_files(&dir)?
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .collect();
            bail!(
                "no scenario {scenario:?} in {} (there are: {})",
                dir.display(),
                known.join(", ")
            );
        }
        path
    };
    Ok(Scenario::load(&path)?)
}

fn list(args: &ScenarioArgs) -> Result<()> {
    let dir = scenario_dir(args)?;
    for path in scenario_files(&dir)? {
        match Scenario::load(&path) {
            Ok(scenario) => println!("{:<24} {}", scenario.name, scenario.description),
            Err(err) => {
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                println!("{stem:<24} (invalid: {err})");
            }
        }
    }
    Ok(())
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match Scenario::load(file) {
            Ok(scenario) => println!("{}: ok ({})", file.display(), scenario.name),
            Err(err) => {
                failed = true;
                println!("{err}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A scenario's timing profile (`run --profile`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Profile {
    /// The paper's move durations and timer profile.
    Paper,
}

/// What `run` prints while a scenario runs.
#[derive(Clone, Copy)]
struct Progress {
    /// No progress line.
    quiet: bool,
    /// Uplink rates every second.
    watch: bool,
}

fn run(
    args: &ScenarioArgs,
    scenario: &str,
    out: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    progress: Progress,
    profile: Option<Profile>,
    golden: &GoldenArgs,
) -> Result<ExitCode> {
    let mut scenario = load(args, scenario)?;
    let golden_dir = match profile {
        None => golden.dir_for(&scenario),
        Some(Profile::Paper) => {
            scenario = sustain_lab::paper::paper_profile(&scenario).map_err(anyhow::Error::msg)?;
            None
        }
    };
    sustain_lab::require_root().context("`sustain-lab run` builds namespaces")?;
    let out_dir = out.unwrap_or_else(|| PathBuf::from("sustain-lab-out").join(&scenario.name));
    let options = RunOptions {
        out_dir: out_dir.clone(),
        bin_dir,
        live: !progress.quiet,
        watch: progress.watch,
        golden_dir,
    };
    println!(
        "scenario {}: {}",
        scenario.name,
        if scenario.description.is_empty() {
            "(no description)"
        } else {
            &scenario.description
        }
    );
    let output = runner::run(&scenario, &options)
        .with_context(|| format!("running scenario {}", scenario.name))?;
    println!("timeline (t = 0 when the transfer started):");
    print!("{}", render_timeline(&output.timeline));
    print!("{}", render_summary(&output.report));
    if let Some(reference) = &scenario.paper {
        print!(
            "{}",
            sustain_lab::paper::render_comparison(reference, &output.report, &output.timeline)
        );
    }
    println!("output in {}", out_dir.display());
    Ok(match (output.report.passed, output.report.outcome) {
        (true, _) => ExitCode::SUCCESS,
        (false, Outcome::Error) => ExitCode::from(2),
        (false, _) => ExitCode::FAILURE,
    })
}

fn suite(
    args: &ScenarioArgs,
    names: &[String],
    out: &Path,
    bin_dir: Option<PathBuf>,
    quiet: bool,
    golden: &GoldenArgs,
) -> Result<ExitCode> {
    sustain_lab::require_root().context("`sustain-lab suite` builds namespaces")?;
    let names: Vec<String> = if names.is_empty() {
        scenario_files(&scenario_dir(args)?)?
            .iter()
            .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect()
    } else {
        names.to_vec()
    };
    let mut rows = Vec::new();
    let mut worst = ExitCode::SUCCESS;
    for name in &names {
        let code = run(
            args,
            name,
            Some(out.join(name)),
            bin_dir.clone(),
            Progress {
                quiet,
                watch: false,
            },
            None,
            golden,
        )?;
        println!();
        let report_path = out.join(name).join("report.json");
        let report: serde_json::Value = std::fs::read_to_string(&report_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        if code != ExitCode::SUCCESS {
            worst = code;
        }
        rows.push(report);
    }
    print!("{}", suite_table(&rows));
    Ok(worst)
}

/// The table `just lab` ends with: one row per scenario.
fn suite_table(rows: &[serde_json::Value]) -> String {
    let mut out = format!(
        "{:<30} {:<10} {:<10} {:>9} {:<7} {:>10} {:>8} {:<12} {:<6}\n",
        "scenario",
        "outcome",
        "expected",
        "received",
        "sha256",
        "reconnect",
        "budget",
        "transcript",
        "result"
    );
    let ms = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "-".into(), |s| format!("{:.1} ms", s * 1e3))
    };
    for r in rows {
        let received = r["transfer"]["bytes_received"].as_u64().unwrap_or(0);
        let transcript = match r["transcript"]["matched"].as_bool() {
            Some(true) => "match",
            Some(false) => "DIFFERS",
            None if r["transcript"]["not_compared"].is_string() => "not compared",
            None => "no golden",
        };
        out.push_str(&format!(
            "{:<30} {:<10} {:<10} {:>9} {:<7} {:>10} {:>8} {:<12} {:<6}\n",
            r["scenario"].as_str().unwrap_or("?"),
            r["outcome"].as_str().unwrap_or("?"),
            r["expected"].as_str().unwrap_or("?"),
            sustain_lab::report::mib(received),
            if r["transfer"]["sha256_match"].as_bool() == Some(true) {
                "match"
            } else {
                "differs"
            },
            ms(&r["latencies"]["reconnect_s"]),
            ms(&r["latencies"]["budget_s"]),
            transcript,
            if r["passed"].as_bool() == Some(true) {
                "PASS"
            } else {
                "FAIL"
            },
        ));
    }
    out.push_str(
        "(reconnect: from the captures, last move completed -> the receiver's ACK of the first \
         new data on the new path; transcript: every capture point's transcript against \
         pcaps/<scenario>)\n",
    );
    out
}

/// The capture set a file is read with: every capture of its directory when that holds
/// a lab run or golden captures (names.json; keys learned at one capture point then
/// verify MACs at another), else the file alone.
fn capture_set_for(path: &Path) -> Result<(CaptureSet, String)> {
    if path.is_dir() {
        let set = CaptureSet::read_dir(path)?;
        return Ok((set, String::new()));
    }
    let point = sustain_conformance::capture::capture_point(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let set = if dir.join(NAMES_FILE).is_file() {
        CaptureSet::read_dir(dir)?
    } else {
        CaptureSet::read_files(&[path.to_path_buf()], Names::default())?
    };
    if set.capture(&point).is_none() {
        bail!("{}: not a capture of {}", path.display(), dir.display());
    }
    Ok((set, point))
}

fn transcripts_for(path: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    let (set, point) =
        capture_set_for(path).with_context(|| format!("reading {}", path.display()))?;
    let analysis = Analysis::of(&set);
    Ok(analysis
        .transcripts(&set)
        .into_iter()
        .filter(|(name, _)| point.is_empty() || *name == point)
        .map(|(name, t)| (name, t.text()))
        .collect())
}

fn transcript(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        for (point, text) in transcripts_for(path)? {
            println!("== {point} ({})", path.display());
            print!("{text}");
        }
    }
    Ok(())
}

fn pcap_diff(a: &Path, b: &Path) -> Result<ExitCode> {
    let left = transcripts_for(a)?;
    let right = transcripts_for(b)?;
    let mut differ = false;
    if a.is_dir() || b.is_dir() {
        if !(a.is_dir() && b.is_dir()) {
            bail!("compare two files or two directories, not one of each");
        }
        let points: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
        for point in points {
            match (left.get(point), right.get(point)) {
                (Some(x), Some(y)) => {
                    if let Some(diff) = sustain_conformance::diff::unified(
                        &format!("{}/{point}", a.display()),
                        x,
                        &format!("{}/{point}", b.display()),
                        y,
                    ) {
                        differ = true;
                        print!("{diff}");
                    }
                }
                (Some(_), None) => {
                    differ = true;
                    println!("only in {}: {point}", a.display());
                }
                (None, _) => {
                    differ = true;
                    println!("only in {}: {point}", b.display());
                }
            }
        }
    } else {
        let x = left.into_values().next().unwrap_or_default();
        let y = right.into_values().next().unwrap_or_default();
        if let Some(diff) = sustain_conformance::diff::unified(
            &a.display().to_string(),
            &x,
            &b.display().to_string(),
            &y,
        ) {
            differ = true;
            print!("{diff}");
        }
    }
    if differ {
        Ok(ExitCode::FAILURE)
    } else {
        println!("the transcripts are equal");
        Ok(ExitCode::SUCCESS)
    }
}

fn up(args: &ScenarioArgs, scenario: &str, bin_dir: Option<PathBuf>) -> Result<()> {
    let scenario = load(args, scenario)?;
    sustain_lab::require_root().context("`sustain-lab up` builds namespaces")?;
    let topology = Topology::build(&scenario.topology)
        .with_context(|| format!("building the topology of {}", scenario.name))?;
    let run = topology.lab().run_id().to_string();
    for program in &scenario.programs {
        let (child, argv) = runner::start_program(
            &topology,
            program,
            bin_dir.as_deref(),
            topology.lab().run_dir(),
        )?;
        println!(
            "started {} in {} (pid {}, logs {})",
            argv.join(" "),
            program.node,
            child.pid(),
            child.stdout_path().display()
        );
        std::thread::sleep(program.ready_after);
    }

    println!("{} is up (run {run})", scenario.name);
    // The repository's dissector, next to the scenario directory (conformance/scenarios).
    let dissector = scenario_dir(args)
        .ok()
        .and_then(|dir| {
            dir.parent()?
                .parent()
                .map(|repo| repo.join("wireshark/sustain.lua"))
        })
        .filter(|path| path.exists())
        .and_then(|path| path.canonicalize().ok());
    let mut nodes: Vec<(String, String)> = vec![("core".into(), "core router".into())];
    for router in &scenario.topology.routers {
        nodes.push((
            router.name.clone(),
            format!("NAPT ({}) for {}", router.profile, router.lan),
        ));
    }
    for node in &scenario.topology.nodes {
        nodes.push((node.name.clone(), node.role.name().to_string()));
    }
    for (node, role) in &nodes {
        let address = topology.attachment(node).map_or_else(
            || "-".into(),
            |a| format!("{}/{} on {}", a.address, a.prefix_len, a.network),
        );
        println!("  {node:<12} {role:<24} {address}");
        println!("      ip netns exec {} bash", topology.netns_name(node));
        if let Some(attachment) = topology.attachment(node) {
            // Watch the node's uplink live, sustain's options and control messages
            // decoded by the repository's dissector.
            let script = dissector
                .as_ref()
                .map(|path| format!(" -X lua_script:{}", path.display()))
                .unwrap_or_default();
            println!(
                "      ip netns exec {} tshark -i {}{script} -f tcp",
                topology.netns_name(node),
                attachment.ifname
            );
        }
    }
    for network in topology.networks() {
        println!(
            "  network {:<10} {:<18} gateway {} ({})",
            network.name, network.prefix, network.gateway, network.gateway_node
        );
    }
    println!("Ctrl-C here, or `sustain-lab down`, tears it down.");
    // The lab's SIGINT/SIGTERM handler tears everything down and exits.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Finds the `sustain-lab up` processes holding namespaces and asks them (SIGTERM) to
/// tear down; waits until their namespaces are gone.
fn down(scenario: Option<&str>) -> Result<()> {
    sustain_lab::require_root().context("`sustain-lab down` removes namespaces")?;
    let mut owners: Vec<u32> = Vec::new();
    for name in sustain_lab::netns::list()? {
        let Some((run, _)) = RunId::parse_netns_name(&name) else {
            continue;
        };
        if !owners.contains(&run.pid()) {
            owners.push(run.pid());
        }
    }
    let mut stopped = Vec::new();
    for pid in owners {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        let is_up = args
            .first()
            .and_then(|exe| Path::new(exe).file_name())
            .is_some_and(|name| name == "sustain-lab")
            && args.iter().any(|arg| arg == "up");
        if !is_up {
            continue;
        }
        if let Some(wanted) = scenario {
            if !args.iter().skip(1).any(|arg| {
                arg == wanted
                    || Path::new(arg)
                        .file_stem()
                        .is_some_and(|stem| stem == wanted)
            }) {
                continue;
            }
        }
        // The pid was checked to be a `sustain-lab up` process just above.
        let target = Pid::from_raw(pid as libc::pid_t);
        if nix::sys::signal::kill(target, Signal::SIGTERM).is_ok() {
            println!("asked `{}` (pid {pid}) to tear down", args.join(" "));
            stopped.push(pid);
        }
    }
    if stopped.is_empty() {
        println!("nothing is up");
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let remaining: Vec<String> = sustain_lab::netns::list()?
            .into_iter()
            .filter(|name| {
                RunId::parse_netns_name(name).is_some_and(|(run, _)| stopped.contains(&run.pid()))
            })
            .collect();
        if remaining.is_empty() {
            println!("down");
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "still there after 30 s: {} (try `sustain-lab clean --force`)",
                remaining.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn clean(force: bool) -> Result<()> {
    let report = sustain_lab::clean_with(sustain_lab::CleanOptions { force })
        .context("cleaning up stale lab namespaces")?;
    for process in &report.killed {
        println!(
            "killed pid {} in {}: {}",
            process.pid, process.netns, process.command
        );
    }
    for process in &report.not_ours {
        println!(
            "left alone pid {} in {} (not started by the lab): {}",
            process.pid, process.netns, process.command
        );
    }
    for name in &report.removed {
        println!("removed namespace {name}");
    }
    for (name, pid) in &report.skipped_live {
        println!("skipped namespace {name}: its run (pid {pid}) is alive; --force removes it");
    }
    if report.removed.is_empty() && report.skipped_live.is_empty() {
        println!("nothing to clean");
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    if !report.errors.is_empty() {
        bail!("{} error(s) while cleaning", report.errors.len());
    }
    Ok(())
}
