//! Presence: a device's signed statement "this user's device is reachable at
//! these addresses until this time".
//!
//! A [`PresenceRecord`] carries the device's [`DeviceCertificate`] (so a
//! reader who knows only the user's root key can check it), the device's
//! listen addresses as multiaddr text, a sequence number and an expiry. The
//! device's ed25519 key (which is also its node key) signs the exact encoded
//! body with [`PRESENCE_PURPOSE`]. Sans-IO: no clock, the caller passes the
//! wall time; where the record is published (the DHT) is the messenger's
//! business, which derives its keys from [`PRESENCE_KEY_PURPOSE`] and
//! [`PREKEY_KEY_PURPOSE`].
//!
//! Layout (docs/PROTOCOL.md, section 11.2), integers big-endian:
//! ```text
//! version: u8 (1) | certificate: 169 | seq: u64 | expires: u64 | count: u8
//!   | (len: u16 | address: len bytes of UTF-8) × count | signature: 64
//! ```
//! At most [`MAX_PRESENCE_ADDRESSES`] addresses of at most
//! [`MAX_PRESENCE_ADDRESS_LEN`] bytes each. The layout is closed: trailing
//! bytes are an error, and any extension gets a new version byte.

use shoal_identity::{Purpose, SIGNATURE_LEN};

use crate::account::{DEVICE_CERT_LEN, Device, DeviceCertificate};
use crate::{Error, UserId};

/// Purpose of the device key's signature over a presence record.
pub const PRESENCE_PURPOSE: Purpose = Purpose::new("shoal/im/presence/1");
/// Purpose under which a user's root key is hashed to the DHT key of its
/// presence record.
pub const PRESENCE_KEY_PURPOSE: Purpose = Purpose::new("shoal/im/presence-key/1");
/// Purpose under which a user's root key is hashed to the DHT key of its
/// prekey bundle.
pub const PREKEY_KEY_PURPOSE: Purpose = Purpose::new("shoal/im/prekeys-key/1");
/// The only presence record version this implementation writes and accepts.
pub const PRESENCE_VERSION: u8 = 1;
/// Most addresses in one presence record.
pub const MAX_PRESENCE_ADDRESSES: usize = 16;
/// Longest address (multiaddr text) in a presence record, in bytes.
pub const MAX_PRESENCE_ADDRESS_LEN: usize = 256;
/// Clock skew tolerated when checking a record's expiry: a record counts as
/// live until `expires + PRESENCE_CLOCK_SKEW` on the reader's clock
/// (seconds).
pub const PRESENCE_CLOCK_SKEW: u64 = 300;
/// Length of the fixed part before the addresses: version, certificate,
/// seq, expires, count.
const HEADER_LEN: usize = 1 + DEVICE_CERT_LEN + 8 + 8 + 1;
/// Shortest encoded presence record (no addresses).
pub const MIN_PRESENCE_LEN: usize = HEADER_LEN + SIGNATURE_LEN;
/// Longest encoded presence record (every address at its limit).
pub const MAX_PRESENCE_LEN: usize =
    MIN_PRESENCE_LEN + MAX_PRESENCE_ADDRESSES * (2 + MAX_PRESENCE_ADDRESS_LEN);

const WHAT: &str = "presence record";

/// A verified presence record.
///
/// A value of this type has always been checked: [`PresenceRecord::decode`]
/// verifies the certificate, the bounds and the device's signature. Whether
/// it is for the expected user and still live depends on the caller: see
/// [`PresenceRecord::verify_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    certificate: DeviceCertificate,
    addresses: Vec<String>,
    seq: u64,
    expires: u64,
}

impl PresenceRecord {
    /// Encodes and signs a presence record for `device`: `addresses` are
    /// multiaddr texts, `seq` orders the device's records (larger is newer;
    /// the wall time in seconds is a fine choice), `expires` is the Unix
    /// second from which the record is dead. Returns the exact bytes to
    /// publish.
    ///
    /// Fails with [`Error::Malformed`] if there are more than
    /// [`MAX_PRESENCE_ADDRESSES`] addresses or one is longer than
    /// [`MAX_PRESENCE_ADDRESS_LEN`] bytes (nothing a reader would accept).
    pub fn sign<S: AsRef<str>>(
        device: &Device,
        addresses: &[S],
        seq: u64,
        expires: u64,
    ) -> Result<Vec<u8>, Error> {
        if addresses.len() > MAX_PRESENCE_ADDRESSES {
            return Err(Error::Malformed {
                what: "presence record: too many addresses",
            });
        }
        let mut out = Vec::with_capacity(
            MIN_PRESENCE_LEN
                + addresses
                    .iter()
                    .map(|a| 2 + a.as_ref().len())
                    .sum::<usize>(),
        );
        out.push(PRESENCE_VERSION);
        out.extend_from_slice(&device.certificate().encode());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&expires.to_be_bytes());
        // Checked above: at most 16.
        out.push(addresses.len() as u8);
        for address in addresses {
            let address = address.as_ref().as_bytes();
            if address.len() > MAX_PRESENCE_ADDRESS_LEN {
                return Err(Error::Malformed {
                    what: "presence record: address too long",
                });
            }
            // At most 256: fits a u16.
            out.extend_from_slice(&(address.len() as u16).to_be_bytes());
            out.extend_from_slice(address);
        }
        let signature = device.signing_key().sign(PRESENCE_PURPOSE, &out);
        out.extend_from_slice(&signature);
        Ok(out)
    }

    /// Parses a presence record and verifies it: version, bounds (every
    /// length is checked before anything is allocated for it), the device
    /// certificate's signature by the user, and the record's signature by
    /// the certified device key.
    ///
    /// Does not check the user or the time: see [`PresenceRecord::verify_for`].
    pub fn decode(bytes: &[u8]) -> Result<PresenceRecord, Error> {
        let Some(&version) = bytes.first() else {
            return Err(Error::Malformed { what: WHAT });
        };
        if version != PRESENCE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                found: version,
            });
        }
        if bytes.len() < MIN_PRESENCE_LEN || bytes.len() > MAX_PRESENCE_LEN {
            return Err(Error::Malformed { what: WHAT });
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let certificate = DeviceCertificate::decode(&body[1..1 + DEVICE_CERT_LEN])?;
        let mut reader = Reader(&body[1 + DEVICE_CERT_LEN..]);
        let seq = u64::from_be_bytes(reader.array()?);
        let expires = u64::from_be_bytes(reader.array()?);
        let [count] = reader.array()?;
        let count = usize::from(count);
        if count > MAX_PRESENCE_ADDRESSES {
            return Err(Error::Malformed {
                what: "presence record: too many addresses",
            });
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes(reader.array()?));
            if len > MAX_PRESENCE_ADDRESS_LEN {
                return Err(Error::Malformed {
                    what: "presence record: address too long",
                });
            }
            let text = std::str::from_utf8(reader.take(len)?).map_err(|_| Error::Malformed {
                what: "presence record: address not UTF-8",
            })?;
            addresses.push(text.to_owned());
        }
        if !reader.0.is_empty() {
            return Err(Error::Malformed {
                what: "presence record: trailing bytes",
            });
        }
        certificate
            .device()
            .verify(PRESENCE_PURPOSE, body, signature)?;
        Ok(PresenceRecord {
            certificate,
            addresses,
            seq,
            expires,
        })
    }

    /// Checks that the record is `user`'s ([`Error::WrongUser`] otherwise)
    /// and still live at `now_unix` (Unix seconds), allowing
    /// [`PRESENCE_CLOCK_SKEW`]: [`Error::Expired`] once
    /// `now_unix >= expires + PRESENCE_CLOCK_SKEW`.
    pub fn verify_for(&self, user: &UserId, now_unix: u64) -> Result<(), Error> {
        if self.certificate.user() != user.public_key() {
            return Err(Error::WrongUser);
        }
        self.certificate.check_time(now_unix)?;
        if now_unix >= self.expires.saturating_add(PRESENCE_CLOCK_SKEW) {
            return Err(Error::Expired {
                expires: self.expires,
                now: now_unix,
            });
        }
        Ok(())
    }

    /// The certificate of the device that signed the record.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }

    /// The user the certificate names.
    pub fn user(&self) -> UserId {
        UserId::new(self.certificate.user())
    }

    /// The device's addresses, as multiaddr text, in the signer's order.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The sequence number (larger is newer).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The expiry, Unix seconds.
    pub fn expires(&self) -> u64 {
        self.expires
    }
}

/// A bounds-checked cursor over a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.0.len() < n {
            return Err(Error::Malformed {
                what: "presence record: truncated",
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}
