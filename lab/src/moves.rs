//! Moving hosts: `detach`, `attach`, `move` (detach, a gap, attach), triggered at a
//! time or after a number of transferred bytes, with the instant each move completed.
//!
//! A move is complete when the host's new address is configured and its default route
//! through the new network is installed (the kernel acknowledged both): from then on
//! the host can send from the new address, so reconnect latency is measured from it.
//!
//! No address event is lost: a move always goes to another network (another subnet),
//! the old uplink is taken apart route first, then address, then link, and every lab
//! namespace has `promote_secondaries` on, so deleting one address never silently
//! deletes another.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::topology::{Attached, Detached, Topology};

/// What a move does to its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveAction {
    /// Address, route and link gone.
    Detach,
    /// A new uplink to `network`, a new address from its pool, default route up.
    Attach { network: String },
    /// Detach, wait `gap`, attach to `network`.
    Move { network: String, gap: Duration },
    /// A new address on the same network (DHCP giving another lease, the
    /// continuation paper's same-subnet change): detach, wait `gap`,
    /// attach to `network` again with the next address of its pool.
    Renumber { network: String, gap: Duration },
}

impl MoveAction {
    pub fn name(&self) -> &'static str {
        match self {
            MoveAction::Detach => "detach",
            MoveAction::Attach { .. } => "attach",
            MoveAction::Move { .. } => "move",
            MoveAction::Renumber { .. } => "renumber",
        }
    }

    /// The network the host ends up on.
    pub fn destination(&self) -> Option<&str> {
        match self {
            MoveAction::Detach => None,
            MoveAction::Attach { network }
            | MoveAction::Move { network, .. }
            | MoveAction::Renumber { network, .. } => Some(network),
        }
    }
}

/// When a move happens, counted from the start of the transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// This long after the transfer started.
    At(Duration),
    /// Once the receiver has received this many bytes.
    AfterBytes(u64),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::At(at) => write!(f, "at {:.3}s", at.as_secs_f64()),
            Trigger::AfterBytes(bytes) => write!(f, "after {bytes} bytes"),
        }
    }
}

/// One scripted move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveSpec {
    pub host: String,
    pub action: MoveAction,
    pub trigger: Trigger,
    /// How long after its trigger fired the move starts: orders moves that run at the
    /// same time (a shared trigger) without making them sequential.
    pub lag: Duration,
}

/// What a move did, with its instants.
#[derive(Clone, Debug)]
pub struct MoveRecord {
    /// Position in the script.
    pub index: usize,
    pub host: String,
    pub action: MoveAction,
    pub trigger: Trigger,
    /// Network and address before the move.
    pub from: Option<(String, Ipv4Addr)>,
    /// Network and address after the move.
    pub to: Option<(String, Ipv4Addr)>,
    /// When the trigger fired.
    pub started: Instant,
    /// When the old uplink was gone (detach and move).
    pub detached: Option<Instant>,
    /// When the move completed: the new default route installed (attach, move) or the
    /// old link gone (detach).
    pub completed: Instant,
    /// Bytes the receiver had when the trigger fired.
    pub bytes_at_start: u64,
}

impl Topology {
    /// Detaches `host`, waits `gap`, attaches it to `network`.
    pub fn move_host(
        &self,
        host: &str,
        network: &str,
        gap: Duration,
    ) -> Result<(Detached, Attached)> {
        if self.attachment(host).is_some_and(|a| a.network == network) {
            return Err(LabError::InvalidValue(format!(
                "{host} is already on {network}; a move goes to another network"
            )));
        }
        let detached = self.detach(host)?;
        std::thread::sleep(gap);
        let attached = self.attach(host, network)?;
        Ok((detached, attached))
    }

    /// Performs `action` on `host` now.
    pub fn perform(
        &self,
        index: usize,
        spec: &MoveSpec,
        bytes_at_start: u64,
    ) -> Result<MoveRecord> {
        let started = Instant::now();
        let from = self.attachment(&spec.host).map(|a| (a.network, a.address));
        let (detached, attached) = match &spec.action {
            MoveAction::Detach => (Some(self.detach(&spec.host)?), None),
            MoveAction::Attach { network } => (None, Some(self.attach(&spec.host, network)?)),
            MoveAction::Move { network, gap } => {
                let (detached, attached) = self.move_host(&spec.host, network, *gap)?;
                (Some(detached), Some(attached))
            }
            MoveAction::Renumber { network, gap } => {
                let detached = self.detach(&spec.host)?;
                std::thread::sleep(*gap);
                let attached = self.attach(&spec.host, network)?;
                (Some(detached), Some(attached))
            }
        };
        let completed = attached
            .as_ref()
            .map(|a| a.completed)
            .or(detached.as_ref().map(|d| d.completed))
            .unwrap_or(started);
        Ok(MoveRecord {
            index,
            host: spec.host.clone(),
            action: spec.action.clone(),
            trigger: spec.trigger,
            from,
            to: attached
                .as_ref()
                .map(|a| (a.attachment.network.clone(), a.attachment.address)),
            started,
            detached: detached.map(|d| d.completed),
            completed,
            bytes_at_start,
        })
    }
}

/// Why a script stopped before its end.
#[derive(Debug)]
pub enum ScriptStop {
    /// Every move was performed.
    Done,
    /// Stopped while waiting for move `index`'s trigger (the transfer ended first).
    Cancelled { index: usize },
    /// Move `index` failed.
    Failed { index: usize, error: LabError },
}

/// Runs `moves` in order, each once its trigger fires, counting time from `epoch` and
/// bytes with `received`. Consecutive moves with the same trigger run at the same
/// time, each on its own thread (two hosts moving at once, as in the paper's
/// experiment: each move's gap overlaps the other's). Stops waiting when `cancel`
/// is set. Each record goes to `on_record` as soon as the move completed.
pub fn run_script(
    topology: &Topology,
    moves: &[MoveSpec],
    epoch: Instant,
    received: &(dyn Fn() -> u64 + Sync),
    cancel: &AtomicBool,
    on_record: impl FnMut(&MoveRecord) + Send,
) -> ScriptStop {
    let on_record = std::sync::Mutex::new(on_record);
    let mut index = 0;
    while index < moves.len() {
        let trigger = moves[index].trigger;
        let group = moves[index..]
            .iter()
            .take_while(|m| m.trigger == trigger)
            .count();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return ScriptStop::Cancelled { index };
            }
            let fired = match trigger {
                Trigger::At(at) => epoch.elapsed() >= at,
                Trigger::AfterBytes(bytes) => received() >= bytes,
            };
            if fired {
                break;
            }
            // Fine enough for byte triggers at lab rates, cheap enough to idle.
            std::thread::sleep(Duration::from_millis(1));
        }
        let bytes = received();
        let failure = std::thread::scope(|scope| {
            let handles: Vec<_> = (index..index + group)
                .map(|i| {
                    let on_record = &on_record;
                    scope.spawn(move || {
                        std::thread::sleep(moves[i].lag);
                        let result = topology.perform(i, &moves[i], bytes);
                        if let Ok(record) = &result {
                            (on_record
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner))(
                                record
                            );
                        }
                        result.err().map(|error| (i, error))
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .min_by_key(|(i, _)| *i)
        });
        if let Some((index, error)) = failure {
            return ScriptStop::Failed { index, error };
        }
        index += group;
    }
    ScriptStop::Done
}
