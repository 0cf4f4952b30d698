//! The lab itself: the core router, the namespaces it owns, and cleanup.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::process::Command;

use crate::links::{HOST_IF, to_core};
use crate::netns::{self, check_name};
use crate::plan::{MAX_LINKS, link_core};
use crate::process::in_namespace;
use crate::shaper::Shaper;
use crate::{Host, LabError};

/// Environment variable that turns "skip, the lab cannot be built here" into
/// a test failure (see [`Lab::new_or_skip`]).
pub const CI_ENV: &str = "CI";

/// Role (namespace name suffix) of the core router; not a valid host name.
const CORE_ROLE: &str = "core";

/// An internet in a box: a core router namespace, public hosts and NAT
/// networks linked to it, and optionally a shaper adding delay and loss.
///
/// Dropping the lab (also while unwinding from a panic) stops the shaper,
/// kills every process running in its namespaces at that moment and deletes
/// them, which removes their interfaces too.
#[derive(Debug)]
pub struct Lab {
    /// `shoal-lab-<pid>-<n>`, the start of all its namespace names.
    pub(crate) tag: String,
    /// The core router's namespace.
    pub(crate) core: String,
    /// Every namespace made so far, in creation order.
    pub(crate) namespaces: Vec<String>,
    /// Host and NAT names taken.
    names: HashSet<String>,
    /// The last link number used (links count from 1).
    links: u8,
    /// Per NAT (index - 1): the next host number on its LAN.
    pub(crate) nats: Vec<u8>,
    pub(crate) shaper: Option<Shaper>,
}

impl Lab {
    /// Builds an empty lab: just the core router, forwarding on.
    ///
    /// Also removes namespaces left by labs of processes that have died
    /// without cleaning up. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN),
    /// `ip` and `iptables`.
    pub fn new() -> Result<Lab, LabError> {
        netns::remove_stale();
        let tag = netns::new_tag();
        let mut lab = Lab {
            core: format!("{tag}-{CORE_ROLE}"),
            tag,
            namespaces: Vec::new(),
            names: HashSet::new(),
            links: 0,
            nats: Vec::new(),
            shaper: None,
        };
        // From here on, an error drops `lab`, which removes what was made.
        let core = lab.new_namespace(CORE_ROLE)?;
        netns::enable_forwarding(&core)?;
        Ok(lab)
    }

    /// [`Lab::new`] for tests: `None` (after printing why) when this machine
    /// cannot build a lab, so the test can return early and count as passed.
    ///
    /// # Panics
    /// When the environment variable [`CI_ENV`] is set to anything but
    /// empty: in CI a missing lab is a broken machine, not a reason to skip.
    pub fn new_or_skip() -> Option<Lab> {
        match Lab::new() {
            Ok(lab) => Some(lab),
            Err(err) => {
                let in_ci = std::env::var_os(CI_ENV).is_some_and(|v| !v.is_empty());
                assert!(
                    !in_ci,
                    "{CI_ENV} is set but the network lab cannot be built: {err}"
                );
                eprintln!("skipping: the network lab cannot be built here: {err}");
                None
            }
        }
    }

    /// Adds a host with a public address of its own: link `k` to the core,
    /// address `198.18.k.2/24`, each public host on a /24 of its own.
    pub fn add_public_host(&mut self, name: &str) -> Result<Host, LabError> {
        check_name(name)?;
        self.claim_name(name)?;
        let k = self.next_link()?;
        let namespace = self.new_namespace(name)?;
        let ip = to_core(&self.core, k, &namespace, HOST_IF)?;
        Ok(Host {
            name: name.to_owned(),
            namespace,
            ip,
            gateway: link_core(k),
        })
    }

    /// The core router's namespace ("the internet").
    pub fn core_namespace(&self) -> &str {
        &self.core
    }

    /// A command running `program` inside the core router, like
    /// [`Host::command`].
    pub fn core_command(&self, program: impl AsRef<OsStr>) -> Command {
        in_namespace(&self.core, program)
    }

    /// All namespaces of this lab, the core first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Creates namespace `<tag>-<role>` and records it for cleanup.
    pub(crate) fn new_namespace(&mut self, role: &str) -> Result<String, LabError> {
        let namespace = format!("{}-{role}", self.tag);
        netns::create(&namespace)?;
        self.namespaces.push(namespace.clone());
        netns::loopback_up(&namespace)?;
        Ok(namespace)
    }

    /// Takes a host or NAT name, failing if it is taken.
    pub(crate) fn claim_name(&mut self, name: &str) -> Result<(), LabError> {
        if self.names.insert(name.to_owned()) {
            Ok(())
        } else {
            Err(LabError::BadName {
                name: name.to_owned(),
                reason: "already used in this lab",
            })
        }
    }

    /// The next free link number.
    pub(crate) fn next_link(&mut self) -> Result<u8, LabError> {
        if self.links >= MAX_LINKS {
            return Err(LabError::Exhausted("links to the core"));
        }
        self.links += 1;
        Ok(self.links)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(shaper) = self.shaper.take()
            && let Err(err) = shaper.stop()
        {
            eprintln!("shoal-lab: {err}");
        }
        netns::remove(&self.namespaces);
    }
}
