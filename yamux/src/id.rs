//! Stream ids and connection roles.

use std::fmt;

/// A stream id. Clients open odd ids, servers even ids; 0 is the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    /// The session-level id 0 used by Ping and GoAway.
    pub const CONNECTION: StreamId = StreamId(0);

    /// Wraps a raw id.
    pub const fn new(id: u32) -> Self {
        StreamId(id)
    }

    /// The raw id.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether a client opened it (odd id).
    pub const fn is_client(self) -> bool {
        self.0 % 2 == 1
    }

    /// Whether a server opened it (even, non-zero id).
    pub const fn is_server(self) -> bool {
        self.0 != 0 && self.0.is_multiple_of(2)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which side of the connection we are; decides the parity of the ids we open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Opens odd stream ids (1, 3, 5, …).
    Client,
    /// Opens even stream ids (2, 4, 6, …).
    Server,
}

impl Mode {
    /// Whether `id` has the parity the remote side uses.
    pub(crate) fn is_remote_id(self, id: StreamId) -> bool {
        match self {
            Mode::Client => id.is_server(),
            Mode::Server => id.is_client(),
        }
    }

    /// The first id we open.
    pub(crate) fn first_local_id(self) -> u32 {
        match self {
            Mode::Client => 1,
            Mode::Server => 2,
        }
    }
}
