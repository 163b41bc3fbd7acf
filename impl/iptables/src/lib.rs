//! The one way sustain runs iptables (the nft backend on the machines it
//! targets): the runtime's RST guard, the lab's NAPTs, delay lines and loss
//! rules, and the tests that list their rules all build the command here and
//! judge its exit here. Where the command runs is the caller's business: the
//! runtime runs it in its own namespace, the lab in a node's namespace with a
//! timeout ([`command`] returns a [`Command`] for either).
//!
//! `-w` is always passed: without it a concurrent iptables run (another
//! endpoint, the lab's other nodes) makes the second fail with "Another app
//! is currently holding the xtables lock" instead of waiting.
#![forbid(unsafe_code)]

use std::io;
use std::process::{Command, Output};

use thiserror::Error;

/// Why an iptables run did not do what was asked.
#[derive(Debug, Error)]
pub enum IptablesError {
    /// The program could not be started.
    #[error("{program} could not be run (apt-get install iptables): {source}")]
    NotInstalled {
        /// The program, as given to the command.
        program: String,
        /// Why the start failed.
        source: io::Error,
    },
    /// It ran and exited unsuccessfully.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
}

/// `iptables -w ARGS`.
pub fn command<S: AsRef<str>>(args: &[S]) -> Command {
    let mut command = Command::new("iptables");
    command.arg("-w").args(args.iter().map(AsRef::as_ref));
    command
}

/// `iptables-restore -w [--noflush]`, to be fed rules in iptables-save
/// format on stdin; with `noflush` the tables named keep their other rules.
pub fn restore_command(noflush: bool) -> Command {
    let mut command = Command::new("iptables-restore");
    command.arg("-w");
    if noflush {
        command.arg("--noflush");
    }
    command
}

/// The command line of `command`, for messages.
pub fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a finished run means: its stdout when it succeeded, else the
/// failure with its stderr. `command` is the line for the message.
pub fn judge(command: String, output: &Output) -> Result<String, IptablesError> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(IptablesError::Failed {
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `command` here (in the calling thread's namespace) and returns its
/// stdout, judged by [`judge`].
pub fn output(mut command: Command) -> Result<String, IptablesError> {
    let line = describe(&command);
    let output = command
        .output()
        .map_err(|source| IptablesError::NotInstalled {
            program: command.get_program().to_string_lossy().into_owned(),
            source,
        })?;
    judge(line, &output)
}

/// Runs `iptables -w ARGS` here and returns its stdout.
pub fn run<S: AsRef<str>>(args: &[S]) -> Result<String, IptablesError> {
    output(command(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn commands_always_wait_for_the_lock() {
        assert_eq!(
            describe(&command(&["-t", "raw", "-S"])),
            "iptables -w -t raw -S"
        );
        assert_eq!(
            describe(&restore_command(true)),
            "iptables-restore -w --noflush"
        );
        assert_eq!(describe(&restore_command(false)), "iptables-restore -w");
    }

    #[test]
    fn a_failure_keeps_the_command_status_and_trimmed_stderr() {
        let output = Output {
            status: ExitStatus::from_raw(1 << 8),
            stdout: b"ignored".to_vec(),
            stderr: b"iptables: No chain/target/match by that name.\n".to_vec(),
        };
        let err = judge("iptables -w -D OUTPUT 1".into(), &output).unwrap_err();
        assert_eq!(
            err.to_string(),
            "iptables -w -D OUTPUT 1 failed (exit status: 1): iptables: No chain/target/match by that name."
        );
        let ok = Output {
            status: ExitStatus::from_raw(0),
            stdout: b"-P OUTPUT ACCEPT\n".to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(judge(String::new(), &ok).unwrap(), "-P OUTPUT ACCEPT\n");
    }

    #[test]
    fn a_missing_program_says_which_and_what_to_install() {
        let err = output(Command::new("/nonexistent/iptables")).unwrap_err();
        assert!(
            matches!(&err, IptablesError::NotInstalled { program, .. } if program == "/nonexistent/iptables"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("apt-get install iptables"),
            "{err}"
        );
    }
}
