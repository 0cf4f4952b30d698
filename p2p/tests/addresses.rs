//! What a node announces: never an unspecified address, interface addresses
//! in its place, and the external addresses the application adds.

#![allow(clippy::unwrap_used)]

use shoal::{ControlError, ServiceBuilder};
use shoal_identity::Keypair;
use shoal_transport::{Multiaddr, TcpTransport};

#[tokio::test]
async fn unspecified_listen_addresses_are_announced_as_interface_addresses() {
    let service = ServiceBuilder::new(Keypair::generate())
        .transport(TcpTransport::default())
        .build()
        .unwrap();
    let control = service.control();
    tokio::spawn(service);
    let bound = control
        .listen("/ip4/0.0.0.0/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let port = bound.to_socket_addr().unwrap().port();
    let announced = control.announce_addrs();
    assert!(!announced.is_empty());
    for addr in &announced {
        let socket = addr.to_socket_addr().unwrap();
        assert!(!socket.ip().is_unspecified(), "{addr}");
        assert_eq!(socket.port(), port);
    }
    // Every announced address accepts connections.
    for addr in &announced {
        tokio::net::TcpStream::connect(addr.to_socket_addr().unwrap())
            .await
            .unwrap();
    }

    let external: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
    control.add_external_address(external.clone()).unwrap();
    control.add_external_address(external.clone()).unwrap();
    let announced = control.announce_addrs();
    assert_eq!(announced.iter().filter(|a| **a == external).count(), 1);
    assert_eq!(
        announced.first(),
        Some(&external),
        "external addresses first"
    );
    // At most 8 external addresses; the first ones stay.
    for i in 0..7u8 {
        let more: Multiaddr = format!("/ip4/198.51.100.{}/tcp/4001", 10 + i)
            .parse()
            .unwrap();
        control.add_external_address(more).unwrap();
    }
    assert!(matches!(
        control.add_external_address("/ip4/198.51.100.99/tcp/1".parse().unwrap()),
        Err(ControlError::TooManyExternalAddresses(8))
    ));
    let announced = control.announce_addrs();
    assert_eq!(announced.first(), Some(&external));
    assert!(announced.len() <= shoal::config::MAX_ANNOUNCED_ADDRS);
    assert!(matches!(
        control.add_external_address("/ip4/0.0.0.0/tcp/1".parse().unwrap()),
        Err(ControlError::UnspecifiedAddress(_))
    ));
    control.shutdown().await;
}
