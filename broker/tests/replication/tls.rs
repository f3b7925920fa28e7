//! Issue 16 item 3, TLS: a NameServer (controller embedded) and a set of two brokers, every
//! Remoting and HA port in `enforcing` mode with certificates from a private CA, every
//! cluster-internal connection over TLS trusting that CA. The set elects a master, replicates
//! over TLS (the slave's CommitLog is byte for byte the master's), clients that trust the CA
//! send, and plaintext peers get nothing: not on the Remoting port, not on the HA port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_nameserver::NamesrvConfig;
use rocketraft_remoting::api::MqClientApi;
use rocketraft_remoting::codes::response_code;
use rocketraft_remoting::tls::{ClientTlsConfig, ServerTlsConfig, TlsMode};
use rocketraft_remoting::{ClientConfig, RemotingClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::replication::{
    api, broker_config, free_port, in_sync, master_of, message, namesrv_tuned, same_bytes, wait_for,
};

/// A CA and a certificate for 127.0.0.1 signed by it: (CA, certificate, key) PEM files.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("cert");
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

fn tls_api(trust: &Path) -> MqClientApi {
    let tls = ClientTlsConfig::trusting(trust).load().expect("client tls");
    MqClientApi::new(
        RemotingClient::new(ClientConfig {
            tls,
            ..ClientConfig::default()
        }),
        Duration::from_secs(5),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_replicates_over_tls_and_plaintext_peers_get_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path());
    let server_tls = ServerTlsConfig::new(TlsMode::Enforcing, &cert, &key);
    let client_tls = ClientTlsConfig::trusting(&ca);
    let ns = {
        let (server_tls, client_tls) = (server_tls.clone(), client_tls.clone());
        namesrv_tuned(
            dir.path(),
            None,
            |_| {},
            move |ns| NamesrvConfig {
                tls: server_tls,
                tls_client: client_tls,
                ..ns
            },
        )
        .await
    };
    let mut brokers = Vec::new();
    for i in 0..2 {
        let cfg = BrokerConfig {
            tls: server_tls.clone(),
            tls_client: client_tls.clone(),
            ..broker_config(
                &dir.path().join(format!("b{i}")),
                ns.local_addr(),
                free_port(),
            )
        };
        brokers.push(Some(Broker::start(cfg).await.expect("broker starts")));
    }
    let m = wait_for("a master", Duration::from_secs(30), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("both in the SyncStateSet", Duration::from_secs(30), || {
        (in_sync(master) == 2).then_some(())
    })
    .await;

    // Clients that trust the CA send; every send is acknowledged by both replicas.
    let addr = master.local_addr().to_string();
    let trusted = tls_api(&ca);
    for i in 0..20 {
        let r = trusted
            .send(&addr, &message(i))
            .await
            .expect("send over TLS");
        assert_eq!(r.code, response_code::SUCCESS);
    }
    let end = master.inner().store.max_phy_offset();
    let slave = brokers[1 - m].as_ref().expect("slave");
    wait_for("the slave caught up", Duration::from_secs(20), || {
        (slave.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;
    same_bytes(master, slave, end);

    // Plaintext gets nothing: a Remoting client, and a raw peer on the HA port.
    let plain = api().send(&addr, &message(99)).await;
    assert!(plain.is_err(), "a plaintext client was served: {plain:?}");
    let ha_addr = master.inner().ha_addr();
    let mut raw = TcpStream::connect(&ha_addr).await.expect("connect");
    let mut handshake = 1i32.to_be_bytes().to_vec();
    handshake.extend_from_slice(&[0u8; 4]);
    handshake.extend_from_slice(&7i64.to_be_bytes());
    let _ = raw.write_all(&handshake).await;
    // At most a TLS alert (record type 21), then the master closes: never its HA handshake.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the HA port kept a plaintext peer open");
    assert!(
        answer.is_empty() || (answer[0] == 21 && answer.len() <= 7),
        "the HA port answered a plaintext peer: {answer:?}"
    );
    assert_eq!(
        master.inner().store.max_phy_offset(),
        end,
        "nothing stored by plaintext"
    );
    for b in brokers.iter_mut() {
        if let Some(b) = b.take() {
            b.shutdown().await;
        }
    }
    ns.shutdown().await;
}
