//! The kernel answers segments for ports no kernel socket owns with RST.
//! Our TCP lives in userspace, so every segment it receives would also draw
//! a kernel RST. The guard installs one narrow rule per port we own, of one
//! of two kinds, depending on how the endpoint receives:
//!
//! - **RST guard** (raw-socket receive): the kernel's TCP still sees every
//!   segment (a raw socket only gets a copy), so its RSTs are dropped on
//!   the way out:
//!
//!   ```text
//!   iptables -I OUTPUT -p tcp --sport PORT --tcp-flags RST RST \
//!            -m mark ! --mark SUSTAIN_MARK -m comment --comment sustain-host:PID -j DROP
//!   ```
//!
//!   Our own RSTs carry SO_MARK = SUSTAIN_MARK and pass.
//! - **Ingress drop** (packet-socket receive, [`crate::packet_rx`]): the
//!   packet socket has its copy before the IP layer, so the segment is
//!   dropped before routing, conntrack and the kernel's TCP, which then
//!   does no work for it and sends no RST:
//!
//!   ```text
//!   iptables -t raw -I PREROUTING -p tcp --dport PORT \
//!            -m comment --comment sustain-host:PID -j DROP
//!   ```
//!
//! Rules are removed on drop (normal exit, error, SIGINT/SIGTERM handled by
//! the binary); rules of either kind left by a SIGKILLed process are swept
//! at the next start (their pid is dead).

/// Why an iptables rule of the RST guard could not be listed, installed or
/// removed: the iptables run itself (`sustain_iptables`).
pub type RstGuardError = sustain_iptables::IptablesError;

/// Owns the RST-suppression rules of this process.
pub(crate) struct RstGuard {
    mark: u32,
    /// Rules are ingress drops (raw PREROUTING), not OUTPUT RST drops.
    ingress_drop: bool,
    tag: String,
    ports: Vec<u16>,
    /// Port ranges with one rule each (`--sport LO:HI`): the proxy's relay
    /// ports, guarded once at start-up.
    ranges: Vec<(u16, u16)>,
}

fn iptables(args: &[String]) -> Result<String, RstGuardError> {
    sustain_iptables::run(args)
}

#[cfg(test)]
fn rule_spec(port: u16, mark: u32, tag: &str) -> Vec<String> {
    rule_spec_for(&port.to_string(), mark, tag)
}

/// Table and chain of the guard's rules of each kind (module docs).
const OUTPUT: (&str, &str) = ("filter", "OUTPUT");
const PREROUTING: (&str, &str) = ("raw", "PREROUTING");

fn ingress_spec_for(dport: &str, tag: &str) -> Vec<String> {
    [
        "-p",
        "tcp",
        "--dport",
        dport,
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DROP",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// `iptables -t TABLE OP CHAIN SPEC...`.
fn command(op: &str, (table, chain): (&str, &str), spec: Vec<String>) -> Vec<String> {
    let mut args = vec![
        "-t".to_string(),
        table.to_string(),
        op.to_string(),
        chain.to_string(),
    ];
    args.extend(spec);
    args
}

fn rule_spec_for(sport: &str, mark: u32, tag: &str) -> Vec<String> {
    [
        "-p",
        "tcp",
        "--sport",
        sport,
        "--tcp-flags",
        "RST",
        "RST",
        "-m",
        "mark",
        "!",
        "--mark",
        &format!("{mark:#x}"),
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DROP",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

impl RstGuard {
    /// A guard with no ports yet; sweeps rules left by dead sustain-host
    /// processes first.
    pub(crate) fn new(mark: u32) -> Result<RstGuard, RstGuardError> {
        sweep_stale()?;
        Ok(RstGuard {
            mark,
            ingress_drop: false,
            tag: format!("sustain-host:{}", std::process::id()),
            ports: Vec::new(),
            ranges: Vec::new(),
        })
    }

    /// From now on, guard ports with ingress drops (raw-table PREROUTING)
    /// instead of OUTPUT RST drops: for an endpoint that receives from a
    /// packet socket, which sees segments before that rule. Fails, changing
    /// nothing, if the raw table cannot be used; call before adding ports.
    pub(crate) fn use_ingress_drop(&mut self) -> Result<(), RstGuardError> {
        iptables(&command("-S", PREROUTING, Vec::new()))?;
        debug_assert!(self.ports.is_empty() && self.ranges.is_empty());
        self.ingress_drop = true;
        Ok(())
    }

    /// The command that inserts (`-I`) or deletes (`-D`) the rule for the
    /// ports `ports` ("PORT" or "LO:HI").
    fn rule(&self, op: &str, ports: &str) -> Vec<String> {
        if self.ingress_drop {
            command(op, PREROUTING, ingress_spec_for(ports, &self.tag))
        } else {
            command(op, OUTPUT, rule_spec_for(ports, self.mark, &self.tag))
        }
    }

    /// Guard every port in `lo..=hi` with one rule (one iptables run,
    /// however many ports).
    pub(crate) fn add_range(&mut self, lo: u16, hi: u16) -> Result<(), RstGuardError> {
        if self.ranges.contains(&(lo, hi)) {
            return Ok(());
        }
        iptables(&self.rule("-I", &format!("{lo}:{hi}")))?;
        self.ranges.push((lo, hi));
        Ok(())
    }

    /// Whether a range rule covers `port`.
    pub(crate) fn covers(&self, port: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// Suppress kernel RSTs from `port`.
    pub(crate) fn add_port(&mut self, port: u16) -> Result<(), RstGuardError> {
        if self.ports.contains(&port) {
            return Ok(());
        }
        iptables(&self.rule("-I", &port.to_string()))?;
        self.ports.push(port);
        Ok(())
    }

    /// Stop suppressing kernel RSTs from `port` (the port was given up).
    pub(crate) fn remove_port(&mut self, port: u16) {
        let Some(i) = self.ports.iter().position(|p| *p == port) else {
            return;
        };
        self.ports.swap_remove(i);
        if let Err(e) = iptables(&self.rule("-D", &port.to_string())) {
            tracing::warn!("could not remove RST guard rule for port {port}: {e}");
        }
    }

    /// Remove every rule this guard installed (also done on drop).
    pub(crate) fn remove_all(&mut self) {
        for port in std::mem::take(&mut self.ports) {
            if let Err(e) = iptables(&self.rule("-D", &port.to_string())) {
                tracing::warn!("could not remove RST guard rule for port {port}: {e}");
            }
        }
        for (lo, hi) in std::mem::take(&mut self.ranges) {
            if let Err(e) = iptables(&self.rule("-D", &format!("{lo}:{hi}"))) {
                tracing::warn!("could not remove RST guard rule for ports {lo}-{hi}: {e}");
            }
        }
    }
}

impl Drop for RstGuard {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Delete `sustain-host:PID` rules of either kind whose process no longer
/// exists. A kernel or iptables without the raw table has no ingress rules
/// to sweep.
fn sweep_stale() -> Result<(), RstGuardError> {
    sweep_chain(OUTPUT)?;
    if let Err(e) = sweep_chain(PREROUTING) {
        tracing::debug!("no raw table to sweep: {e}");
    }
    Ok(())
}

fn sweep_chain(chain: (&str, &str)) -> Result<(), RstGuardError> {
    let listing = iptables(&command("-S", chain, Vec::new()))?;
    let prefix = format!("-A {} ", chain.1);
    for line in listing.lines() {
        let Some(pid) = line
            .split("--comment ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|c| c.trim_matches('"'))
            .and_then(|c| c.strip_prefix("sustain-host:"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `-S` prints "-A OUTPUT <spec>": the same spec deletes the rule.
        let Some(spec) = line.strip_prefix(&prefix) else {
            continue;
        };
        match iptables(&command("-D", chain, split_rule(spec))) {
            Ok(_) => tracing::info!("removed stale RST guard rule of dead pid {pid}"),
            Err(e) => tracing::warn!("could not remove stale rule of pid {pid}: {e}"),
        }
    }
    Ok(())
}

/// Splits an `iptables -S` rule into words, honouring double quotes.
fn split_rule(spec: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rule_honours_quotes() {
        let w = split_rule(r#"-p tcp -m comment --comment "a b" -j DROP"#);
        assert_eq!(
            w,
            [
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "a b",
                "-j",
                "DROP"
            ]
        );
    }

    #[test]
    fn ingress_rule_is_narrow() {
        let spec = command("-I", PREROUTING, ingress_spec_for("5001", "sustain-host:7")).join(" ");
        assert_eq!(
            spec,
            "-t raw -I PREROUTING -p tcp --dport 5001 -m comment --comment sustain-host:7 -j DROP"
        );
    }

    #[test]
    fn rule_spec_is_narrow() {
        let spec = rule_spec(5001, 0x53757354, "sustain-host:7").join(" ");
        assert_eq!(
            spec,
            "-p tcp --sport 5001 --tcp-flags RST RST -m mark ! --mark 0x53757354 \
             -m comment --comment sustain-host:7 -j DROP"
        );
    }
}
