//! `sustain-lab`: the lab's command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sustain-lab",
    version,
    about = "Network-namespace lab for sustain"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Remove the namespaces (/run/netns/sustain-*) of lab runs that died without
    /// tearing down, stopping processes in them that the lab started.
    Clean {
        /// Also remove namespaces whose owning process is still alive (breaks that run).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Commands::Clean { force } => clean(force),
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
        anyhow::bail!("{} error(s) while cleaning", report.errors.len());
    }
    Ok(())
}
