//! Contacts' devices: noticing when a contact's device changes, what a
//! verified contact's change holds back, and renewing our own device
//! certificate before it expires.
//!
//! A contact is *verified* once its user compared safety numbers and said
//! so ([`Engine::set_verified`]). Any device a contact's root key
//! certifies may speak for it, so a change of device is reported
//! ([`Event::DeviceChanged`]); for a verified contact, [`Engine::send`]
//! also refuses with [`EngineError::DeviceChanged`] until the user
//! acknowledges the change ([`Engine::acknowledge_device_change`]), since a
//! new device the user did not expect may mean the root key is in other
//! hands. A renewed certificate for the same keys is not a change.

use super::{Batch, Engine, EngineError, Event};

/// Certificates of our own device kept after renewals: a session started
/// from a bundle fetched before a renewal derives its keys with the
/// certificate that bundle carried (renewals are 60 days apart, and a
/// bundle older than two of them is past its signed prekey anyway).
pub(super) const EARLIER_CERTIFICATES_KEPT: usize = 2;
use crate::store::Store;
use crate::{DeviceCertificate, UserId};

impl<S: Store> Engine<S> {
    /// Marks `contact` verified (or not): the user compared safety numbers
    /// ([`Engine::safety_number`]) with them.
    pub fn set_verified(&mut self, contact: UserId, verified: bool) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        c.verified = verified;
        if !verified {
            c.device_changed = false;
        }
        let mut batch = Batch::default();
        batch.dirty(contact);
        self.finish(batch)
    }

    /// The user saw that a verified contact's device changed and accepts
    /// it: sending is allowed again. The contact stays verified (the
    /// safety number is of the users' root keys, which did not change).
    pub fn acknowledge_device_change(&mut self, contact: UserId) -> Result<(), EngineError> {
        self.check()?;
        let Some(c) = self.contacts.get_mut(&contact) else {
            return Err(EngineError::UnknownContact(contact));
        };
        c.device_changed = false;
        let mut batch = Batch::default();
        batch.dirty(contact);
        // What waited goes out now (to the new device).
        self.flush_outbox(self.last_now, contact, &mut batch);
        self.finish(batch)
    }

    /// Records `cert` as `contact`'s device. Returns whether it is another
    /// device than the one known (then [`Event::DeviceChanged`] is
    /// reported, and a verified contact is held back until acknowledged);
    /// a renewal of the same keys just replaces the certificate.
    pub(super) fn note_device(
        &mut self,
        contact: UserId,
        cert: &DeviceCertificate,
        batch: &mut Batch,
    ) -> bool {
        let c = self.contact_entry(contact);
        let changed = c.device.as_ref().is_some_and(|d| !d.same_device(cert));
        if c.device
            .as_ref()
            .is_none_or(|d| changed || cert.expires() > d.expires())
        {
            c.device = Some(cert.clone());
        }
        batch.dirty(contact);
        if changed {
            tracing::info!(%contact, "the contact's device changed");
            let verified = c.verified;
            if verified {
                c.device_changed = true;
            }
            batch.events.push(Event::DeviceChanged {
                contact,
                device: cert.device().peer_id(),
                verified,
            });
        }
        changed
    }

    /// Renews our device certificate if it expires within
    /// [`DEVICE_CERT_RENEW_BEFORE`] of `unix_secs` (or is of the old
    /// version). Returns whether it did; the caller stores the identity.
    ///
    /// [`DEVICE_CERT_RENEW_BEFORE`]: crate::account::DEVICE_CERT_RENEW_BEFORE
    pub(super) fn renew_certificate(&mut self, unix_secs: u64) -> bool {
        if !self.device.renewal_due(unix_secs) {
            return false;
        }
        self.earlier_certificates
            .push(self.device.certificate().clone());
        let excess = self
            .earlier_certificates
            .len()
            .saturating_sub(EARLIER_CERTIFICATES_KEPT);
        self.earlier_certificates.drain(..excess);
        self.device.renew(&self.user, unix_secs);
        tracing::info!(
            expires = self.device.certificate().expires(),
            "device certificate renewed"
        );
        true
    }
}
