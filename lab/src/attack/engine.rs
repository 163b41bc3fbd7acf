//! The engine: observes from before the transfer, fires each attack at its trigger,
//! records what it sent and what came back.

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::*;
use crate::report::Timeline;

pub(crate) struct Watcher {
    pub(crate) target: String,
    pub(crate) socket: OwnedFd,
    pub(crate) view: ConnectionView,
}

/// The observer of the mobility server's uplink, for the attacks on `target`'s
/// control messages.
pub(crate) struct ControlWatcher {
    pub(crate) target: String,
    pub(crate) socket: OwnedFd,
    pub(crate) view: ControlView,
}

pub(crate) struct Injector {
    pub(crate) node: String,
    pub(crate) address: Ipv4Addr,
    pub(crate) socket: OwnedFd,
    /// The attacker's namespace, where its TCP connections to the server are made.
    pub(crate) netns: Arc<Netns>,
}

/// How long the last replies of the server are waited for after an attack's last
/// step.
pub(crate) const REPLY_WAIT: Duration = Duration::from_millis(500);

/// How long an attack waits, after its trigger, for the state it needs (a token,
/// a completed migration) before it is given up.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(10);

/// The attacks of a scenario: observers on the targets' uplinks (and on the mobility
/// server's), raw sockets in the attackers' namespaces.
pub struct AttackEngine {
    pub(crate) attacks: Vec<AttackSpec>,
    pub(crate) watchers: Vec<Watcher>,
    pub(crate) controls: Vec<ControlWatcher>,
    pub(crate) injectors: Vec<Injector>,
    pub(crate) buf: Vec<u8>,
}

impl fmt::Debug for AttackEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttackEngine")
            .field("attacks", &self.attacks)
            .finish_non_exhaustive()
    }
}

impl AttackEngine {
    /// Opens the observers and raw sockets of `scenario`'s attacks (`None` if it has
    /// none). Call before the transfer starts: the observers must see the handshake.
    pub fn start(topology: &Topology, scenario: &Scenario) -> Result<Option<AttackEngine>> {
        if scenario.attacks.is_empty() {
            return Ok(None);
        }
        let lab = topology.lab();
        let mut injectors: Vec<Injector> = Vec::new();
        for attack in &scenario.attacks {
            if injectors.iter().any(|i| i.node == attack.from) {
                continue;
            }
            let attachment = topology.attachment(&attack.from).ok_or_else(|| {
                LabError::InvalidValue(format!("attacker {} is not attached", attack.from))
            })?;
            // The attacker spoofs the peer's source, which arrives on the attacker's
            // port of the gateway while the route to that source points elsewhere:
            // reverse-path filtering (strict or loose: the effective value is the
            // maximum of `all` and the interface's) would drop it. Routers already
            // run with it off (Lab::make_router); this keeps the attack independent
            // of that. The targets need nothing: a spoofed packet reaches a host on
            // its only interface, which is also its route back.
            lab.run_in(&attachment.gateway_node, || -> Result<()> {
                crate::sysctl::write("net.ipv4.conf.all.rp_filter", "0")?;
                crate::sysctl::write(&format!("net.ipv4.conf.{}.rp_filter", attachment.port), "0")
            })??;
            let socket = lab
                .run_in(&attack.from, open_injector)?
                .map_err(|e| LabError::io(format!("raw socket in {}", attack.from), e))?;
            injectors.push(Injector {
                node: attack.from.clone(),
                address: attachment.address,
                socket,
                netns: lab.netns(&attack.from)?,
            });
        }
        let attackers: Vec<Ipv4Addr> = injectors.iter().map(|i| i.address).collect();
        let mut watchers: Vec<Watcher> = Vec::new();
        for attack in &scenario.attacks {
            if attack.kind.aims_at_server() || watchers.iter().any(|w| w.target == attack.target) {
                continue;
            }
            // `forged-ticket`: every relay MSYN crosses the proxy's uplink, behind
            // whichever NAPT the target is; the target's own uplink changes.
            let observed = if attack.kind.aims_at_proxy() {
                topology
                    .spec()
                    .nodes
                    .iter()
                    .find(|node| node.role == NodeRole::Proxy)
                    .map(|node| node.name.clone())
                    .ok_or_else(|| {
                        LabError::InvalidValue(format!("{} needs a proxy", attack.kind))
                    })?
            } else {
                attack.target.clone()
            };
            let attachment = topology
                .attachment(&observed)
                .ok_or_else(|| LabError::InvalidValue(format!("{observed} is not attached")))?;
            let port = attachment.port.clone();
            let socket = lab
                .run_in(&attachment.gateway_node, || open_observer(&port))?
                .map_err(|e| {
                    LabError::io(
                        format!(
                            "observing {} in {}",
                            attachment.port, attachment.gateway_node
                        ),
                        e,
                    )
                })?;
            watchers.push(Watcher {
                target: attack.target.clone(),
                socket,
                view: ConnectionView::new(
                    attachment.address,
                    scenario.transfer.port,
                    attackers.clone(),
                ),
            });
        }
        let mut controls: Vec<ControlWatcher> = Vec::new();
        for attack in &scenario.attacks {
            if !attack.kind.aims_at_server() || controls.iter().any(|c| c.target == attack.target) {
                continue;
            }
            let server = topology
                .spec()
                .nodes
                .iter()
                .find(|node| node.role == NodeRole::MobilityServer)
                .and_then(|node| topology.attachment(&node.name))
                .ok_or_else(|| {
                    LabError::InvalidValue(format!(
                        "{} needs an attached mobility server",
                        attack.kind
                    ))
                })?;
            let target = topology.attachment(&attack.target).ok_or_else(|| {
                LabError::InvalidValue(format!("target {} is not attached", attack.target))
            })?;
            // Every control session crosses the server's uplink, whichever address
            // the target reports from; the target's own uplink changes when it moves.
            let port = server.port.clone();
            let socket = lab
                .run_in(&server.gateway_node, || open_observer(&port))?
                .map_err(|e| {
                    LabError::io(
                        format!("observing {} in {}", server.port, server.gateway_node),
                        e,
                    )
                })?;
            controls.push(ControlWatcher {
                target: attack.target.clone(),
                socket,
                view: ControlView::new(
                    SocketAddrV4::new(server.address, SERVER_PORT),
                    target.address,
                    attackers.clone(),
                ),
            });
        }
        Ok(Some(AttackEngine {
            attacks: scenario.attacks.clone(),
            watchers,
            controls,
            injectors,
            buf: vec![0u8; 1 << 16],
        }))
    }

    /// Reads every queued frame into the views, waiting up to `timeout` for the first.
    pub(crate) fn observe(&mut self, timeout: Duration) {
        let mut pollfds: Vec<PollFd<'_>> = self
            .watchers
            .iter()
            .map(|w| w.socket.as_fd())
            .chain(self.controls.iter().map(|c| c.socket.as_fd()))
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        if !matches!(poll(&mut pollfds, timeout), Ok(ready) if ready > 0) {
            return;
        }
        drop(pollfds);
        for watcher in &mut self.watchers {
            read_frames(watcher.socket.as_raw_fd(), &mut self.buf, |packet| {
                watcher.view.observe(packet);
            });
        }
        for control in &mut self.controls {
            read_frames(control.socket.as_raw_fd(), &mut self.buf, |packet| {
                control.view.observe(packet);
            });
        }
    }

    /// Observes until `deadline`, or until `cancel` is set (then false).
    pub(crate) fn observe_until(&mut self, deadline: Instant, cancel: &AtomicBool) -> bool {
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            self.observe((deadline - now).min(Duration::from_millis(2)));
        }
    }

    pub(crate) fn watcher(&self, target: &str) -> Option<&Watcher> {
        self.watchers.iter().find(|w| w.target == target)
    }

    pub(crate) fn control(&self, target: &str) -> Option<&ControlWatcher> {
        self.controls.iter().find(|c| c.target == target)
    }

    /// Why `spec` cannot be carried out yet, if it cannot.
    pub(crate) fn not_ready_for(&self, spec: &AttackSpec) -> Option<String> {
        if spec.kind.aims_at_server() {
            self.control(&spec.target)
                .map_or(Some("no observer of the server's uplink".into()), |c| {
                    c.view.not_ready_for(spec.kind)
                })
        } else {
            self.watcher(&spec.target)
                .map_or(Some("no observer".into()), |w| {
                    w.view.not_ready_for(spec.kind)
                })
        }
    }

    /// Carries out a `forged-report` or `replayed-report` (its trigger fired and
    /// what it needs was observed): each step over the attacker's own TCP
    /// connection to the mobility server, reading the server's replies meanwhile.
    pub(crate) fn run_control_attack(
        &mut self,
        index: usize,
        spec: &AttackSpec,
        injector: usize,
        cancel: &AtomicBool,
        timeline: &Timeline,
        report: &mut AttackReport,
    ) {
        let source = format!("{}-attacker", spec.from);
        let (attacker, netns) = {
            let injector = &self.injectors[injector];
            (injector.address, injector.netns.clone())
        };
        let mut session: Option<ControlSession> = None;
        let record_replies = |session: &mut Option<ControlSession>, report: &mut AttackReport| {
            let Some(open) = session.as_mut() else {
                return;
            };
            for reply in open.replies() {
                let detail = json!({
                    "attack": index,
                    "target": spec.target,
                    "reply": describe_control(&reply),
                });
                timeline.record(&source, "attack-reply", detail.clone());
                report.server_replies.push(detail);
            }
        };
        let started = Instant::now();
        for (offset, step) in steps_of(spec.kind) {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    report.error = Some("the transfer ended before every message was sent".into());
                    return;
                }
                let now = Instant::now();
                record_replies(&mut session, report);
                if now >= started + offset {
                    break;
                }
                self.observe((started + offset - now).min(Duration::from_millis(2)));
            }
            let Step::Control(step) = step else {
                continue;
            };
            let Some(control) = self.control(&spec.target) else {
                report.error = Some("no observer of the server's uplink".into());
                return;
            };
            let forged = match forge_control(&control.view, step, attacker) {
                Ok(forged) => forged,
                Err(why) => {
                    report.error = Some(format!("not sent: {why}"));
                    continue;
                }
            };
            let server = control.view.server;
            if step.fresh_session() || session.as_ref().is_some_and(|s| s.closed) {
                session = None;
            }
            let mut detail = forged.detail;
            detail.insert("attack".into(), json!(index));
            detail.insert("target".into(), json!(spec.target));
            if session.is_none() {
                match ControlSession::open(&netns, server) {
                    Ok(opened) => session = Some(opened),
                    Err(err) => {
                        detail.insert("send_error".into(), json!(err.to_string()));
                        report.error = Some(format!("connecting to the server: {err}"));
                    }
                }
            }
            if let Some(open) = session.as_mut() {
                for message in &forged.messages {
                    if let Err(err) = open.send(message) {
                        detail.insert("send_error".into(), json!(err.to_string()));
                        report.error = Some(format!("sending to the server: {err}"));
                        break;
                    }
                }
                if step.ends_session() {
                    open.finish();
                }
            }
            timeline.record(
                &source,
                &format!("attack-{}", spec.kind),
                Value::Object(detail.clone()),
            );
            report.sent.push(Value::Object(detail));
            tracing::info!(attack = index, kind = %spec.kind, step = step.name(), "sent to the server");
        }
        let until = Instant::now() + REPLY_WAIT;
        while Instant::now() < until && !cancel.load(Ordering::Relaxed) {
            self.observe(Duration::from_millis(2));
            record_replies(&mut session, report);
        }
        record_replies(&mut session, report);
    }

    /// Carries out every attack in order, each once its trigger fires, counting time
    /// from `epoch` and bytes with `received`, until `cancel` is set (the transfer is
    /// over); keeps observing until then. Every packet sent is an `attack-<kind>`
    /// event of `timeline`.
    pub fn run(
        mut self,
        epoch: Instant,
        received: &(dyn Fn() -> u64 + Sync),
        cancel: &AtomicBool,
        timeline: &Timeline,
    ) -> Vec<AttackReport> {
        let mut reports: Vec<AttackReport> = self
            .attacks
            .iter()
            .enumerate()
            .map(|(index, spec)| AttackReport {
                index,
                kind: spec.kind.name().into(),
                from: spec.from.clone(),
                target: spec.target.clone(),
                trigger: spec.trigger.to_string(),
                fired_s: None,
                bytes_at_fire: None,
                sent: Vec::new(),
                target_segments_to_attacker: 0,
                target_syn_acks_to_attacker: 0,
                observed_packets: 0,
                observed_segments: 0,
                server_replies: Vec::new(),
                notices_to_attacker: 0,
                peer_locations_to_attacker: 0,
                error: None,
            })
            .collect();
        let attacks = self.attacks.clone();
        'attacks: for (index, spec) in attacks.iter().enumerate() {
            loop {
                if cancel.load(Ordering::Relaxed) {
                    for report in reports.iter_mut().skip(index) {
                        report.error = Some("the transfer ended before the trigger".into());
                    }
                    break 'attacks;
                }
                let fired = match spec.trigger {
                    Trigger::At(at) => epoch.elapsed() >= at,
                    Trigger::AfterBytes(bytes) => received() >= bytes,
                };
                if fired {
                    break;
                }
                self.observe(Duration::from_millis(1));
            }
            let fired = Instant::now();
            let report = &mut reports[index];
            report.fired_s = Some(timeline.t_of(fired));
            report.bytes_at_fire = Some(received());
            let Some(injector_index) = self.injectors.iter().position(|i| i.node == spec.from)
            else {
                report.error = Some(format!("no raw socket for {}", spec.from));
                continue;
            };
            let attacker = self.injectors[injector_index].address;
            // Wait for what the attack needs to know.
            let ready_by = fired + READY_WAIT;
            while let Some(why) = self.not_ready_for(spec) {
                if Instant::now() >= ready_by || cancel.load(Ordering::Relaxed) {
                    reports[index].error = Some(format!("not sent: {why}"));
                    continue 'attacks;
                }
                self.observe(Duration::from_millis(1));
            }
            if spec.kind.aims_at_server() {
                self.run_control_attack(
                    index,
                    spec,
                    injector_index,
                    cancel,
                    timeline,
                    &mut reports[index],
                );
                continue;
            }
            let started = Instant::now();
            let mut previous: Option<(Instant, Duration)> = None;
            for (offset, step) in steps_of(spec.kind) {
                // Never closer than the schedule's own gap: a thread that woke late
                // (a loaded machine) does not catch up by sending two packets at
                // once, which would change what the transcripts see between them.
                let due = previous.map_or(started + offset, |(at, before)| {
                    (started + offset).max(at + offset.saturating_sub(before))
                });
                if !self.observe_until(due, cancel) {
                    reports[index].error =
                        Some("the transfer ended before every packet was sent".into());
                    continue 'attacks;
                }
                previous = Some((Instant::now(), offset));
                let Some(watcher) = self.watcher(&spec.target) else {
                    continue 'attacks;
                };
                let forged = match forge(&watcher.view, step, attacker) {
                    Ok(forged) => forged,
                    Err(why) => {
                        reports[index].error = Some(format!("not sent: {why}"));
                        continue;
                    }
                };
                // Registered before sending: the observers must not take our packet
                // for the peer's.
                if let Some(fp) = segment_fingerprint(&forged.packet) {
                    for watcher in &mut self.watchers {
                        watcher.view.injected.insert(fp);
                    }
                }
                let mut detail = forged.detail;
                detail.insert("attack".into(), json!(index));
                detail.insert("target".into(), json!(spec.target));
                let fd = self.injectors[injector_index].socket.as_raw_fd();
                if let Err(err) = send_packet(fd, &forged.packet) {
                    detail.insert("send_error".into(), json!(err.to_string()));
                    reports[index].error = Some(format!("sending: {err}"));
                }
                timeline.record(
                    &format!("{}-attacker", spec.from),
                    &format!("attack-{}", spec.kind),
                    Value::Object(detail.clone()),
                );
                reports[index].sent.push(Value::Object(detail));
                tracing::info!(attack = index, kind = %spec.kind, "injected");
            }
        }
        // Replies to a forgery may come late: watch until the transfer is over.
        while !cancel.load(Ordering::Relaxed) {
            self.observe(Duration::from_millis(5));
        }
        self.observe(Duration::ZERO);
        for report in &mut reports {
            let aims_at_server = self
                .attacks
                .get(report.index)
                .is_some_and(|spec| spec.kind.aims_at_server());
            if aims_at_server {
                if let Some(control) = self.control(&report.target) {
                    report.notices_to_attacker = control.view.notices_to_attacker;
                    report.observed_packets = control.view.packets;
                    report.observed_segments = control.view.segments;
                }
                continue;
            }
            let Some(watcher) = self.watcher(&report.target) else {
                continue;
            };
            report.target_segments_to_attacker = watcher.view.to_attacker;
            report.target_syn_acks_to_attacker = watcher.view.syn_acks_to_attacker;
            report.observed_packets = watcher.view.packets;
            report.observed_segments = watcher.view.segments;
        }
        reports
    }
}
