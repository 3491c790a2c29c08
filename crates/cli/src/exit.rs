//! How the process ends: the documented exit codes, and [`Exit`], a failure that carries one with
//! its message. Every command returns its code or an `Exit`; `main` prints the message (secrets
//! hidden) and exits with the code.

use dagrun_core::run::RunOutcome;

/// The exit codes dagrun documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Code {
    /// Everything asked for was done.
    Ok = 0,
    /// A task failed, or the command could not do its work.
    Failed = 1,
    /// Usage or configuration error: nothing ran.
    Config = 2,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl From<Code> for u8 {
    fn from(code: Code) -> u8 {
        code as u8
    }
}

/// A failure that ends the command with a documented exit code and a message.
pub(crate) struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    /// A usage or configuration error (exit 2).
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self { code: Code::Config.into(), message: message.into() }
    }

    /// A failure of the command's work (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self { code: Code::Failed.into(), message: message.into() }
    }

    /// An interruption (exit 130).
    pub(crate) fn interrupted(message: impl Into<String>) -> Self {
        Self { code: Code::Interrupted.into(), message: message.into() }
    }
}

impl Exit {
    /// The exit of a run that started: its tasks' code (0 every task succeeded or was up to date,
    /// 1 one failed, 130 interrupted), 1 naming the holder when the lease was lost, and 130 for a
    /// signal that came after every task had finished.
    pub(crate) fn of_outcome(outcome: &RunOutcome) -> Result<u8, Exit> {
        if let Some(holder) = &outcome.lost_to {
            return Err(Exit::failed(format!(
                "error: the run lost its lease on the lake and was stopped; the lease is now held by {holder}"
            )));
        }
        match outcome.record.report.exit_code() as u8 {
            // A signal after the last task finished: everything is published and recorded, but
            // the exit code still says the run was told to stop (and the vacuum was skipped).
            0 if outcome.cancelled => Err(Exit::interrupted(
                "interrupted after every task had finished: the tables are published and the run recorded",
            )),
            code => Ok(code),
        }
    }
}
