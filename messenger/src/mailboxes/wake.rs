//! Wake-up registrations: with [`MessengerConfig::wake`] set, each read
//! of a contact's mailboxes also registers the endpoint with the replicas
//! of the mailboxes that contact writes to today and on the next
//! [`WAKE_DAYS`]` - 1` days, so that while this device is away (no live
//! subscription) the replicas wake the endpoint when envelopes arrive
//! (see `shoal_mailbox::wake` for what they send and what the endpoint
//! learns). A registration is renewed every [`WAKE_RENEW`] while the
//! device is online, and lasts through the day after its mailbox's day.
//!
//! [`MessengerConfig::wake`]: crate::MessengerConfig::wake

use std::time::{Duration, Instant};

use shoal::ServiceControl;
use shoal_im::engine::MailboxPair;
use shoal_im::mailbox_keys::DAY_SECS;
use shoal_mailbox::{Answer, WakeEndpoint};

use super::{MAX_CACHED, Mailboxes, descriptor, lock};

/// Days, from today, whose mailboxes a device registers its wake-up
/// endpoint for: a device away longer than this is woken only for what
/// arrives in that time (it registers again when it next reads).
pub const WAKE_DAYS: u64 = 3;

/// How often a registration is made again while the device is online
/// (replicas change, and a restarted replica forgets registrations).
pub const WAKE_RENEW: Duration = Duration::from_secs(3600);

impl Mailboxes {
    /// Registers `endpoint` for the mailboxes `pair`'s contact writes to
    /// from `today` on (those not registered in the last [`WAKE_RENEW`]);
    /// returns how many replicas took a registration.
    pub(crate) async fn register_wake(
        &self,
        control: &ServiceControl,
        pair: &MailboxPair,
        today: u64,
        endpoint: &WakeEndpoint,
    ) -> usize {
        let mut taken = 0;
        for day in today..today + WAKE_DAYS {
            let key = pair.secret.mailbox_key(&pair.device_key, day);
            let descriptor = descriptor(&key);
            let id = descriptor.id();
            if lock(&self.wake_registered)
                .get(&id)
                .is_some_and(|at| at.elapsed() < WAKE_RENEW)
            {
                continue;
            }
            let until = (day + 2) * DAY_SECS;
            let mut tasks = tokio::task::JoinSet::new();
            for replica in self.replicas(control, id).await {
                let (client, key, endpoint) = (self.client.clone(), key.clone(), endpoint.clone());
                tasks.spawn(async move {
                    client
                        .register_wake(replica, descriptor, &key, endpoint, until)
                        .await
                });
            }
            let mut here = 0;
            while let Some(done) = tasks.join_next().await {
                if let Ok(Ok(Answer::Registered { until: kept })) = done
                    && kept > 0
                {
                    here += 1;
                }
            }
            if here > 0 {
                let mut registered = lock(&self.wake_registered);
                if registered.len() >= MAX_CACHED {
                    registered.retain(|_, at| at.elapsed() < WAKE_RENEW);
                }
                registered.insert(id, Instant::now());
            }
            taken += here;
        }
        taken
    }
}
