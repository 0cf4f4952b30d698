//! Multiaddr-style addresses: `/ip4/127.0.0.1/tcp/4001/p2p/<peer-id>`.
//!
//! An address is a sequence of components, each a protocol name and, for most
//! protocols, one value. The supported components are:
//!
//! | component | value | example |
//! |---|---|---|
//! | `ip4` | dotted IPv4 address | `/ip4/127.0.0.1` |
//! | `ip6` | IPv6 address | `/ip6/::1` |
//! | `dns`, `dns4`, `dns6` | host name (resolved when dialling) | `/dns4/example.org` |
//! | `tcp` | port 0-65535 | `/tcp/4001` |
//! | `memory` | port of the in-memory network, 0-2^64-1 | `/memory/7` |
//! | `p2p` | [`PeerId`] text form | `/p2p/JEKNV...` |

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use shoal_identity::PeerId;

/// Longest text form accepted by the parser; protects against huge inputs.
pub const MAX_MULTIADDR_TEXT_LEN: usize = 1024;
/// Largest number of components in one address.
pub const MAX_MULTIADDR_COMPONENTS: usize = 16;
/// Longest DNS name accepted (RFC 1035 limit).
const MAX_DNS_NAME_LEN: usize = 253;

/// One component of a [`Multiaddr`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// An IPv4 address.
    Ip4(Ipv4Addr),
    /// An IPv6 address.
    Ip6(Ipv6Addr),
    /// A host name resolved to IPv4 or IPv6 addresses.
    Dns(String),
    /// A host name resolved to IPv4 addresses only.
    Dns4(String),
    /// A host name resolved to IPv6 addresses only.
    Dns6(String),
    /// A TCP port.
    Tcp(u16),
    /// A port on an in-memory network.
    Memory(u64),
    /// The identity of the node reached at the preceding address.
    P2p(PeerId),
    /// A circuit through the relay named by the preceding address (which
    /// ends in that relay's `/p2p/` component) to the peer named after it:
    /// `/ip4/198.51.100.7/tcp/4001/p2p/<relay>/p2p-circuit/p2p/<peer>`.
    /// It has no value.
    P2pCircuit,
}

impl Protocol {
    /// The component's name as written in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Ip4(_) => "ip4",
            Protocol::Ip6(_) => "ip6",
            Protocol::Dns(_) => "dns",
            Protocol::Dns4(_) => "dns4",
            Protocol::Dns6(_) => "dns6",
            Protocol::Tcp(_) => "tcp",
            Protocol::Memory(_) => "memory",
            Protocol::P2p(_) => "p2p",
            Protocol::P2pCircuit => "p2p-circuit",
        }
    }

    fn parse(name: &str, value: Option<&str>) -> Result<Protocol, MultiaddrError> {
        let value = |proto: &'static str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or(MultiaddrError::MissingValue(proto))
        };
        let invalid = |proto: &'static str, v: &str, reason: String| MultiaddrError::InvalidValue {
            protocol: proto,
            value: v.to_owned(),
            reason,
        };
        Ok(match name {
            "ip4" => {
                let v = value("ip4")?;
                Protocol::Ip4(v.parse().map_err(|e| invalid("ip4", v, format!("{e}")))?)
            }
            "ip6" => {
                let v = value("ip6")?;
                Protocol::Ip6(v.parse().map_err(|e| invalid("ip6", v, format!("{e}")))?)
            }
            "dns" | "dns4" | "dns6" => {
                let proto = match name {
                    "dns" => "dns",
                    "dns4" => "dns4",
                    _ => "dns6",
                };
                let v = value(proto)?;
                check_dns_name(v).map_err(|reason| invalid(proto, v, reason))?;
                let v = v.to_owned();
                match proto {
                    "dns" => Protocol::Dns(v),
                    "dns4" => Protocol::Dns4(v),
                    _ => Protocol::Dns6(v),
                }
            }
            "tcp" => {
                let v = value("tcp")?;
                Protocol::Tcp(v.parse().map_err(|e| invalid("tcp", v, format!("{e}")))?)
            }
            "memory" => {
                let v = value("memory")?;
                Protocol::Memory(
                    v.parse()
                        .map_err(|e| invalid("memory", v, format!("{e}")))?,
                )
            }
            "p2p" => {
                let v = value("p2p")?;
                Protocol::P2p(v.parse().map_err(|e| invalid("p2p", v, format!("{e}")))?)
            }
            other => return Err(MultiaddrError::UnknownProtocol(truncate(other))),
        })
    }
}

fn check_dns_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_DNS_NAME_LEN {
        return Err(format!("longer than {MAX_DNS_NAME_LEN} bytes"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if !name.chars().all(valid) {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.name())?;
        if *self != Protocol::P2pCircuit {
            f.write_str("/")?;
        }
        match self {
            Protocol::Ip4(a) => write!(f, "{a}"),
            Protocol::Ip6(a) => write!(f, "{a}"),
            Protocol::Dns(n) | Protocol::Dns4(n) | Protocol::Dns6(n) => f.write_str(n),
            Protocol::Tcp(p) => write!(f, "{p}"),
            Protocol::Memory(p) => write!(f, "{p}"),
            Protocol::P2p(id) => write!(f, "{id}"),
            Protocol::P2pCircuit => Ok(()),
        }
    }
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultiaddrError {
    /// The text was empty.
    #[error("empty address")]
    Empty,
    /// The text does not start with `/`.
    #[error("address must start with '/'")]
    MissingLeadingSlash,
    /// The text is longer than [`MAX_MULTIADDR_TEXT_LEN`].
    #[error("address is longer than {MAX_MULTIADDR_TEXT_LEN} bytes")]
    TooLong,
    /// More than [`MAX_MULTIADDR_COMPONENTS`] components.
    #[error("address has more than {MAX_MULTIADDR_COMPONENTS} components")]
    TooManyComponents,
    /// A component name that is not supported.
    #[error("unknown protocol '{0}'")]
    UnknownProtocol(String),
    /// A component that needs a value has none.
    #[error("'/{0}' needs a value")]
    MissingValue(&'static str),
    /// A component's value does not parse.
    #[error("invalid value '{value}' for '/{protocol}': {reason}")]
    InvalidValue {
        /// The component name.
        protocol: &'static str,
        /// The offending value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// A network address as a sequence of [`Protocol`] components.
///
/// ```
/// use shoal_transport::{Multiaddr, Protocol};
/// let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
/// assert_eq!(addr.iter().next(), Some(&Protocol::Ip4([127, 0, 0, 1].into())));
/// assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/4001");
/// assert!("/ip4/300.0.0.1/tcp/1".parse::<Multiaddr>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Multiaddr {
    components: Vec<Protocol>,
}

impl Multiaddr {
    /// An empty address.
    pub fn empty() -> Multiaddr {
        Multiaddr::default()
    }

    /// The address with `component` appended.
    pub fn with(mut self, component: Protocol) -> Multiaddr {
        self.components.push(component);
        self
    }

    /// Appends a component.
    pub fn push(&mut self, component: Protocol) {
        self.components.push(component);
    }

    /// The components in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Protocol> {
        self.components.iter()
    }

    /// Whether the address has no components.
    pub fn is_empty(&self) -> bool {
        self.components.is_empty()
    }

    /// The peer id of a trailing `/p2p/` component, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        match self.components.last() {
            Some(Protocol::P2p(id)) => Some(*id),
            _ => None,
        }
    }

    /// The address without a trailing `/p2p/` component.
    pub fn without_peer_id(&self) -> Multiaddr {
        let mut out = self.clone();
        if let Some(Protocol::P2p(_)) = out.components.last() {
            out.components.pop();
        }
        out
    }

    /// The address with a trailing `/p2p/<peer>` component (replacing any).
    pub fn with_peer_id(&self, peer: PeerId) -> Multiaddr {
        self.without_peer_id().with(Protocol::P2p(peer))
    }

    /// Whether the address goes through a relay (has a `/p2p-circuit`
    /// component).
    pub fn is_relayed(&self) -> bool {
        self.components.contains(&Protocol::P2pCircuit)
    }

    /// For a relayed address, the relay's part (up to and including its
    /// `/p2p/` component) and the peer named after the circuit, if any:
    /// `(/ip4/…/tcp/…/p2p/<relay>, Some(<peer>))`. `None` if the address
    /// is not relayed, or the relay's part does not end in a `/p2p/`.
    pub fn split_circuit(&self) -> Option<(Multiaddr, Option<PeerId>)> {
        let at = self
            .components
            .iter()
            .position(|c| *c == Protocol::P2pCircuit)?;
        let relay = &self.components[..at];
        if !matches!(relay.last(), Some(Protocol::P2p(_))) {
            return None;
        }
        let peer = match &self.components[at + 1..] {
            [] => None,
            [Protocol::P2p(peer)] => Some(*peer),
            _ => return None,
        };
        Some((relay.iter().cloned().collect(), peer))
    }

    /// The IP address of the machine at the other end of a connection at
    /// this address: its IP (an IPv4-mapped IPv6 one as IPv4), or `None`
    /// for a relayed address (whose IP is the relay's) or one without an
    /// IP. What per-IP and per-network limits count.
    pub fn direct_ip(&self) -> Option<IpAddr> {
        if self.is_relayed() {
            return None;
        }
        self.to_socket_addr().map(|s| s.ip().to_canonical())
    }

    /// The socket address of an `/ip4|ip6/<ip>/tcp/<port>` prefix, if present.
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        match self.components.as_slice() {
            [Protocol::Ip4(ip), Protocol::Tcp(port), ..] => {
                Some(SocketAddr::new(IpAddr::V4(*ip), *port))
            }
            [Protocol::Ip6(ip), Protocol::Tcp(port), ..] => {
                Some(SocketAddr::new(IpAddr::V6(*ip), *port))
            }
            _ => None,
        }
    }
}

impl From<SocketAddr> for Multiaddr {
    fn from(addr: SocketAddr) -> Multiaddr {
        let ip = match addr.ip() {
            IpAddr::V4(ip) => Protocol::Ip4(ip),
            IpAddr::V6(ip) => Protocol::Ip6(ip),
        };
        Multiaddr {
            components: vec![ip, Protocol::Tcp(addr.port())],
        }
    }
}

impl FromIterator<Protocol> for Multiaddr {
    fn from_iter<I: IntoIterator<Item = Protocol>>(iter: I) -> Multiaddr {
        Multiaddr {
            components: iter.into_iter().collect(),
        }
    }
}

impl FromStr for Multiaddr {
    type Err = MultiaddrError;

    fn from_str(s: &str) -> Result<Multiaddr, MultiaddrError> {
        if s.is_empty() {
            return Err(MultiaddrError::Empty);
        }
        if s.len() > MAX_MULTIADDR_TEXT_LEN {
            return Err(MultiaddrError::TooLong);
        }
        let rest = s
            .strip_prefix('/')
            .ok_or(MultiaddrError::MissingLeadingSlash)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = rest.split('/');
        let mut components = Vec::new();
        while let Some(name) = parts.next() {
            if components.len() == MAX_MULTIADDR_COMPONENTS {
                return Err(MultiaddrError::TooManyComponents);
            }
            if name.is_empty() {
                return Err(MultiaddrError::UnknownProtocol(String::new()));
            }
            if name == Protocol::P2pCircuit.name() {
                components.push(Protocol::P2pCircuit);
                continue;
            }
            components.push(Protocol::parse(name, parts.next())?);
        }
        Ok(Multiaddr { components })
    }
}

impl fmt::Display for Multiaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.components {
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_common_forms() {
        let id = PeerId::from_bytes([7; 32]);
        for text in [
            "/ip4/127.0.0.1/tcp/4001".to_string(),
            "/ip6/::1/tcp/0".to_string(),
            "/dns4/node.example.org/tcp/443".to_string(),
            "/memory/42".to_string(),
            format!("/ip4/10.0.0.1/tcp/1/p2p/{id}"),
        ] {
            let addr: Multiaddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let addr: Multiaddr = format!("/ip4/1.2.3.4/tcp/5/p2p/{id}").parse().unwrap();
        assert_eq!(addr.peer_id(), Some(id));
        assert_eq!(addr.without_peer_id().to_string(), "/ip4/1.2.3.4/tcp/5");
        assert_eq!(addr.to_socket_addr(), Some("1.2.3.4:5".parse().unwrap()));
        assert!(!addr.is_relayed());
        assert_eq!(addr.split_circuit(), None);
    }

    #[test]
    fn circuit_addresses() {
        let relay = PeerId::from_bytes([7; 32]);
        let peer = PeerId::from_bytes([9; 32]);
        let text = format!("/ip4/198.51.100.7/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}");
        let addr: Multiaddr = text.parse().unwrap();
        assert_eq!(addr.to_string(), text);
        assert!(addr.is_relayed());
        assert_eq!(addr.direct_ip(), None, "the relay's IP is not the peer's");
        let direct: Multiaddr = "/ip6/::ffff:198.51.100.7/tcp/4001".parse().unwrap();
        assert_eq!(direct.direct_ip(), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(addr.peer_id(), Some(peer));
        let relay_part: Multiaddr = format!("/ip4/198.51.100.7/tcp/4001/p2p/{relay}")
            .parse()
            .unwrap();
        assert_eq!(addr.split_circuit(), Some((relay_part.clone(), Some(peer))));
        // A listen address: the circuit with no peer after it.
        let listen = addr.without_peer_id();
        assert_eq!(listen.to_string(), format!("{relay_part}/p2p-circuit"));
        assert_eq!(listen.split_circuit(), Some((relay_part, None)));
        // The relay's part must name the relay; nothing but a peer follows.
        let bare: Multiaddr = "/ip4/1.2.3.4/tcp/1/p2p-circuit".parse().unwrap();
        assert_eq!(bare.split_circuit(), None);
        let odd: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{relay}/p2p-circuit/tcp/4")
            .parse()
            .unwrap();
        assert_eq!(odd.split_circuit(), None);
        assert_eq!(
            "/p2p-circuit".parse::<Multiaddr>().unwrap().to_string(),
            "/p2p-circuit"
        );
    }

    #[test]
    fn clear_errors() {
        let e = |s: &str| s.parse::<Multiaddr>().unwrap_err();
        assert_eq!(e(""), MultiaddrError::Empty);
        assert_eq!(e("ip4/1.2.3.4"), MultiaddrError::MissingLeadingSlash);
        assert_eq!(e("/udp/5"), MultiaddrError::UnknownProtocol("udp".into()));
        assert_eq!(e("/ip4"), MultiaddrError::MissingValue("ip4"));
        assert_eq!(e("/tcp/"), MultiaddrError::MissingValue("tcp"));
        assert!(matches!(
            e("/tcp/70000"),
            MultiaddrError::InvalidValue {
                protocol: "tcp",
                ..
            }
        ));
        assert!(matches!(
            e("/p2p/notbase58!"),
            MultiaddrError::InvalidValue {
                protocol: "p2p",
                ..
            }
        ));
        assert!(matches!(
            e("/dns/a b"),
            MultiaddrError::InvalidValue {
                protocol: "dns",
                ..
            }
        ));
        assert_eq!(e(&"/tcp/1".repeat(17)), MultiaddrError::TooManyComponents);
        assert_eq!(e(&"/".repeat(2000)), MultiaddrError::TooLong);
        let msg = e("/ip4/1.2.3/tcp/1").to_string();
        assert!(msg.contains("ip4") && msg.contains("1.2.3"), "{msg}");
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "(/[a-z0-9.:]{0,12}){0,6}") {
            let _ = s.parse::<Multiaddr>();
        }

        #[test]
        fn socket_addrs_round_trip(ip in any::<[u8; 4]>(), port in any::<u16>()) {
            let sock = SocketAddr::from((ip, port));
            let addr = Multiaddr::from(sock);
            let parsed: Multiaddr = addr.to_string().parse().unwrap();
            prop_assert_eq!(parsed.to_socket_addr(), Some(sock));
        }
    }
}
