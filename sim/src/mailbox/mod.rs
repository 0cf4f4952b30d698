//! Mailboxes in the simulator: [`MailboxHost`] (the mailbox DHT and the
//! mailbox core on one node) and [`MailboxWorld`] (service nodes, users
//! running the real `shoal-im` engine, and the scenario of the offline
//! delivery test).

mod churn;
mod host;
mod world;

pub use churn::ChurnModel;
pub use host::{MailboxHost, Reply, SimStore};
pub use world::{MailboxWorld, Replacement, WorldConfig, WorldReport};
