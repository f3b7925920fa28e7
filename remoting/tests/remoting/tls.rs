//! TLS on a Remoting server in RocketMQ's three modes, with clients that verify the server
//! against a private CA, clients that do not verify, plaintext clients and silent sockets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rocketraft_remoting::response_code::SUCCESS;
use rocketraft_remoting::tls::{ClientTlsConfig, ServerTlsConfig, TlsMode};
use rocketraft_remoting::{
    processor_fn, ClientConfig, RemotingClient, RemotingCommand, RemotingError, RemotingServer,
    ServerHandle, ServerLimits,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const ECHO: i32 = 1;
const T: Duration = Duration::from_secs(5);

/// A CA and a certificate for 127.0.0.1 / localhost signed by it, as PEM files in `dir`:
/// (CA certificate, server certificate, server key).
fn private_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf cert");
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, leaf.pem()).expect("write cert");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("write key");
    paths
}

async fn start(mode: TlsMode, cert: &Path, key: &Path) -> (ServerHandle, String) {
    let tls = ServerTlsConfig::new(mode, cert, key)
        .load()
        .expect("tls loads");
    let server = RemotingServer::builder()
        .register(
            ECHO,
            processor_fn(|_ctx, req| async move {
                Some(req.response_to(SUCCESS, None).with_body(req.body.clone()))
            }),
        )
        .limits(ServerLimits {
            frame_timeout: Duration::from_millis(500),
            ..ServerLimits::default()
        })
        .tls(tls)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn();
    let addr = server.local_addr().to_string();
    (server, addr)
}

fn client(tls: Option<ClientTlsConfig>) -> RemotingClient {
    RemotingClient::new(ClientConfig {
        tls: tls.and_then(|t| t.load().expect("client tls loads")),
        ..ClientConfig::default()
    })
}

async fn echo(client: &RemotingClient, addr: &str) -> bool {
    let request = RemotingCommand::request(ECHO).with_body("over tls?");
    match client.invoke(addr, request, T).await {
        Ok(resp) => resp.code == SUCCESS && &resp.body[..] == b"over tls?",
        Err(_) => false,
    }
}

#[tokio::test]
async fn enforcing_serves_only_tls_clients_that_trust_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path(), "server");
    let (other_ca, _, _) = private_ca(dir.path(), "other");
    let (_server, addr) = start(TlsMode::Enforcing, &cert, &key).await;

    assert!(echo(&client(Some(ClientTlsConfig::trusting(&ca))), &addr).await);
    assert!(echo(&client(Some(ClientTlsConfig::unverified())), &addr).await);
    // A plaintext client, and a client that trusts another CA, get nothing; the plaintext
    // client learns why (the server's answer is a TLS alert, not a frame).
    let plain = client(None)
        .invoke(&addr, RemotingCommand::request(ECHO).with_body("plain"), T)
        .await;
    assert!(
        matches!(plain, Err(RemotingError::PeerSpeaksTls { .. })),
        "plaintext to a TLS-only server: {plain:?}"
    );
    let message = plain.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("takes TLS only"), "{message}");
    assert!(
        !echo(&client(Some(ClientTlsConfig::trusting(&other_ca))), &addr).await,
        "a server the client does not trust was talked to"
    );
    // A socket that never starts its handshake is closed after the frame timeout.
    let mut silent = TcpStream::connect(&addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(T, silent.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    // Honest clients still get in.
    assert!(echo(&client(Some(ClientTlsConfig::trusting(&ca))), &addr).await);
}

#[tokio::test]
async fn permissive_serves_tls_and_plaintext_on_one_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path(), "server");
    let (_server, addr) = start(TlsMode::Permissive, &cert, &key).await;
    assert!(echo(&client(Some(ClientTlsConfig::trusting(&ca))), &addr).await);
    assert!(echo(&client(None), &addr).await);
}

#[tokio::test]
async fn disabled_tls_is_plaintext_and_bad_files_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path(), "server");
    let (_server, addr) = start(TlsMode::Disabled, &cert, &key).await;
    assert!(echo(&client(None), &addr).await);
    assert!(!echo(&client(Some(ClientTlsConfig::trusting(&ca))), &addr).await);

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let err = ServerTlsConfig::new(TlsMode::Enforcing, &not_pem, &key)
        .load()
        .expect_err("no certificate in the file");
    assert!(err.to_string().contains("not.pem"), "{err}");
    let err = ServerTlsConfig::new(TlsMode::Enforcing, &cert, dir.path().join("missing.key"))
        .load()
        .expect_err("no key file");
    assert!(err.to_string().contains("missing.key"), "{err}");
    let no_files = ServerTlsConfig {
        mode: TlsMode::Enforcing,
        ..ServerTlsConfig::default()
    };
    assert!(no_files.load().is_err());
    assert_eq!("ENFORCING".parse::<TlsMode>(), Ok(TlsMode::Enforcing));
    assert!("sometimes".parse::<TlsMode>().is_err());
}
