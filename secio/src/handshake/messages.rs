//! Byte layouts of the handshake message bodies (the length prefix is
//! handled by [`crate::frame`]).
//!
//! ```text
//! Hello           = version: u8 | suite: u8 | noise message 1
//! Accept          = 0x00 | noise message 2
//! SuiteRefused    = 0x01 | count: u8 | count suite ids
//! VersionRefused  = 0x02 | count: u8 | count versions
//! Final           = noise message 3
//! ```

use crate::HandshakeError;

/// The protocol version carried in the first byte of every hello.
pub const PROTOCOL_VERSION: u8 = 1;

/// Status byte: the responder accepted the hello.
pub const STATUS_ACCEPT: u8 = 0x00;
/// Status byte: the responder does not support the offered suite.
pub const STATUS_SUITE_REFUSED: u8 = 0x01;
/// Status byte: the responder does not support the protocol version.
pub const STATUS_VERSION_REFUSED: u8 = 0x02;

/// Length of a Noise XX first message with an empty payload: one X25519
/// ephemeral key.
pub(crate) const NOISE_MESSAGE_1_LEN: usize = 32;

/// Length of the negotiation header of a hello (version and suite).
pub(crate) const HELLO_HEADER_LEN: usize = 2;

/// A parsed hello (the version is checked by the caller).
pub(crate) struct Hello<'a> {
    pub(crate) version: u8,
    pub(crate) suite: u8,
    /// Version and suite, as they are bound into the prologue.
    pub(crate) header: [u8; HELLO_HEADER_LEN],
    pub(crate) noise: &'a [u8],
}

impl<'a> Hello<'a> {
    /// Parses only as far as the version byte commits us: any body with at
    /// least a version byte yields the version, so an unknown version can be
    /// refused politely whatever else it carries.
    pub(crate) fn parse(body: &'a [u8]) -> Result<Hello<'a>, HandshakeError> {
        match body {
            [version, suite, noise @ ..] => Ok(Hello {
                version: *version,
                suite: *suite,
                header: [*version, *suite],
                noise,
            }),
            [version] => Ok(Hello {
                version: *version,
                suite: 0,
                header: [*version, 0],
                noise: &[],
            }),
            [] => Err(HandshakeError::Malformed("empty hello")),
        }
    }
}

/// The hello body for `suite`, with room for the Noise message.
pub(crate) fn hello_header(suite: u8) -> [u8; HELLO_HEADER_LEN] {
    [PROTOCOL_VERSION, suite]
}

/// A parsed responder answer.
pub(crate) enum Response<'a> {
    Accept { noise: &'a [u8] },
    SuiteRefused { suites: &'a [u8] },
    VersionRefused { versions: &'a [u8] },
}

impl<'a> Response<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Response<'a>, HandshakeError> {
        match body {
            [STATUS_ACCEPT, noise @ ..] => Ok(Response::Accept { noise }),
            [STATUS_SUITE_REFUSED, rest @ ..] => Ok(Response::SuiteRefused {
                suites: parse_list(rest)?,
            }),
            [STATUS_VERSION_REFUSED, rest @ ..] => Ok(Response::VersionRefused {
                versions: parse_list(rest)?,
            }),
            [] => Err(HandshakeError::Malformed("empty response")),
            [_, ..] => Err(HandshakeError::Malformed("unknown response status")),
        }
    }
}

/// `count: u8 | count bytes`, exactly.
fn parse_list(bytes: &[u8]) -> Result<&[u8], HandshakeError> {
    match bytes {
        [count, items @ ..] if usize::from(*count) == items.len() => Ok(items),
        _ => Err(HandshakeError::Malformed("bad list length in refusal")),
    }
}

/// `status | count | items`. `items` has at most 255 entries by
/// construction (suite and version ids are distinct bytes).
pub(crate) fn refusal(status: u8, items: &[u8]) -> Vec<u8> {
    let count = u8::try_from(items.len()).unwrap_or(u8::MAX);
    let mut body = Vec::with_capacity(2 + items.len());
    body.push(status);
    body.push(count);
    body.extend_from_slice(&items[..usize::from(count)]);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hello() {
        let h = Hello::parse(&[1, 2, 9, 9]).unwrap();
        assert_eq!((h.version, h.suite, h.noise), (1, 2, &[9u8, 9][..]));
        assert_eq!(Hello::parse(&[7]).unwrap().version, 7);
        assert!(Hello::parse(&[]).is_err());
    }

    #[test]
    fn parse_response() {
        assert!(matches!(
            Response::parse(&[0, 1, 2]),
            Ok(Response::Accept { noise: [1, 2] })
        ));
        assert!(matches!(
            Response::parse(&[1, 2, 1, 2]),
            Ok(Response::SuiteRefused { suites: [1, 2] })
        ));
        assert!(matches!(
            Response::parse(&[2, 1, 1]),
            Ok(Response::VersionRefused { versions: [1] })
        ));
        assert!(Response::parse(&[1, 3, 1, 2]).is_err());
        assert!(Response::parse(&[1]).is_err());
        assert!(Response::parse(&[3]).is_err());
        assert!(Response::parse(&[]).is_err());
        assert_eq!(refusal(STATUS_SUITE_REFUSED, &[2, 1]), vec![1, 2, 2, 1]);
    }
}
