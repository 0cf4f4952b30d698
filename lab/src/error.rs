//! The one error type of the lab.

use std::time::Duration;

/// Why building, using or shaping a lab failed.
///
/// Every variant that comes from an outside command names the command line,
/// so a failure in CI says which `ip` or `iptables` call broke and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A command could not be started at all (missing binary, no permission).
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line (and, for batch input, the input).
        command: String,
        /// The exit status as the OS reports it.
        status: String,
        /// What the command wrote on standard error, trimmed.
        stderr: String,
    },
    /// A command or a wait did not finish in time; the command was killed.
    #[error("`{command}` did not finish within {timeout:?}")]
    Timeout {
        /// The command line, or what was being waited for.
        command: String,
        /// The bound that was crossed.
        timeout: Duration,
    },
    /// A background process ended before printing the line we waited for.
    #[error("`{command}` ended before printing the expected line")]
    Ended {
        /// The command line.
        command: String,
    },
    /// A host or NAT name that cannot be used in a namespace name.
    #[error("invalid name {name:?}: {reason}")]
    BadName {
        /// The name that was given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The address plan has no room left (see [`crate::MAX_LINKS`]).
    #[error("the lab has no more {0}")]
    Exhausted(&'static str),
    /// A [`crate::Nat`] handle from another lab was passed in.
    #[error("NAT {0:?} belongs to another lab")]
    ForeignNat(String),
    /// [`crate::Shaping`] parameters out of range.
    #[error("invalid shaping: {0}")]
    InvalidShaping(String),
    /// The shaper could not start or failed while running.
    #[error("shaper: {0}")]
    Shaper(String),
}
