//! Issue 16, cluster-internal trust: real brokers of one set (NameServer with the controller
//! embedded, two brokers on loopback, real stores in a temporary directory) attacked from
//! the outside.
//!
//! - With a cluster secret, a forged NOTIFY_BROKER_ROLE_CHANGED (and EXCHANGE_BROKER_HA_INFO)
//!   from a client without the secret or with another one is refused and changes nothing; a
//!   peer on the HA port that does not prove the secret is closed before the master says
//!   anything but its challenge, and is never counted.
//! - With or without a secret, the master serves on the HA port only broker ids the controller
//!   knows for the set (never its own), and a slave reporting an ack offset beyond the master's
//!   CommitLog end is cut off and not counted.
//!
//! The fake slaves speak the wire of `rocketraft_broker::ha` (see its module doc) over raw TCP.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use rocketraft_broker::ha::Role;
use rocketraft_broker::replica::role_notification;
use rocketraft_broker::{Broker, BrokerConfig};
use rocketraft_common::trust::ClusterSecret;
use rocketraft_controller::client::MasterInfo;
use rocketraft_nameserver::NameServer;
use rocketraft_remoting::codes::{request_code, response_code};
use rocketraft_remoting::{ClientConfig, RemotingClient, RemotingCommand, RemotingError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::replication::{
    api, broker_config, free_port, in_sync, master_of, message, namesrv_secured, same_bytes,
    wait_for,
};

fn secret() -> ClusterSecret {
    ClusterSecret::new("the-cluster-secret-of-this-test").expect("long enough")
}

/// A NameServer (controller embedded) and a set of two brokers, all with `secret`, once the
/// set has a master with both replicas in its SyncStateSet. Returns the master's index too.
async fn two_broker_set(
    dir: &Path,
    secret: Option<ClusterSecret>,
) -> (NameServer, Vec<Option<Broker>>, usize) {
    let ns = namesrv_secured(dir, secret.clone(), |_| {}).await;
    let mut brokers = Vec::new();
    for i in 0..2 {
        let cfg = BrokerConfig {
            cluster_secret: secret.clone(),
            ..broker_config(&dir.join(format!("b{i}")), ns.local_addr(), free_port())
        };
        brokers.push(Some(Broker::start(cfg).await.expect("broker starts")));
    }
    let m = wait_for("a master", Duration::from_secs(20), || master_of(&brokers)).await;
    let master = brokers[m].as_ref().expect("master");
    wait_for("both in the SyncStateSet", Duration::from_secs(20), || {
        (in_sync(master) == 2).then_some(())
    })
    .await;
    (ns, brokers, m)
}

fn broker_id(b: &Broker) -> i64 {
    b.inner()
        .replicas
        .as_ref()
        .expect("controller mode")
        .broker_id()
}

/// Sends `count` messages from `from` to the master; each must be acknowledged.
async fn honest_sends(master: &Broker, from: usize, count: usize) {
    let api = api();
    let addr = master.local_addr().to_string();
    for i in from..from + count {
        let r = api.send(&addr, &message(i)).await.expect("send");
        assert_eq!(r.code, response_code::SUCCESS, "honest send {i}");
    }
}

/// What a role change would alter: the role, the master epoch, the epoch history and the log.
#[derive(Debug, PartialEq)]
struct ReplicaState {
    role: Role,
    master_epoch: i32,
    epochs: Vec<(i32, i64)>,
    log: Vec<u8>,
}

fn replica_state(b: &Broker) -> ReplicaState {
    let ha = b.inner().ha.as_ref().expect("controller mode");
    let store = &b.inner().store;
    let end = store.max_phy_offset();
    let mut log = Vec::new();
    let mut at = store.min_phy_offset().max(0);
    while at < end {
        let chunk = store
            .read_commit_log(at, (end - at).min(16 * 1024) as usize)
            .expect("CommitLog bytes");
        at += chunk.len() as i64;
        log.extend_from_slice(&chunk);
    }
    ReplicaState {
        role: ha.role(),
        master_epoch: ha.master_epoch(),
        epochs: store
            .epoch_entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect(),
        log,
    }
}

/// The 16-byte HA handshake of a slave claiming broker id `id`.
fn ha_handshake(id: i64) -> Vec<u8> {
    let mut hs = Vec::with_capacity(16);
    hs.extend_from_slice(&1i32.to_be_bytes());
    hs.extend_from_slice(&0i16.to_be_bytes());
    hs.extend_from_slice(&0i16.to_be_bytes());
    hs.extend_from_slice(&id.to_be_bytes());
    hs
}

/// A slave's offset report.
fn ha_report(offset: i64) -> Vec<u8> {
    let mut r = Vec::with_capacity(12);
    r.extend_from_slice(&2i32.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r
}

/// Everything the peer sends until it closes the connection; panics if it is still open after
/// `limit`.
async fn read_until_closed(sock: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the master kept an untrusted HA connection open for {limit:?} ({} bytes sent)",
                got.len()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_role_notifications_and_unproved_ha_peers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret();
    let (ns, brokers, m) = two_broker_set(dir.path(), Some(secret.clone())).await;
    let s = 1 - m;
    let master = brokers[m].as_ref().expect("master");
    let slave = brokers[s].as_ref().expect("slave");
    honest_sends(master, 0, 20).await;
    let end = master.inner().store.max_phy_offset();
    wait_for("the slave caught up", Duration::from_secs(10), || {
        (slave.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;

    // (a) A forged role notification with a much higher epoch: it would make the slave master
    // and the master a slave truncating its log.
    let snap = master.inner().ha.as_ref().expect("ha").snapshot();
    let forged = MasterInfo {
        code: response_code::SUCCESS,
        master_broker_id: Some(broker_id(slave)),
        master_address: Some(slave.local_addr().to_string()),
        master_epoch: snap.master_epoch + 10,
        sync_state_set_epoch: snap.sync_state_set_epoch + 10,
        sync_state_set: BTreeSet::from([broker_id(slave)]),
    };
    let before: Vec<ReplicaState> = [master, slave].map(replica_state).into();
    let plain = RemotingClient::new(ClientConfig::default());
    let impostor = RemotingClient::new(ClientConfig {
        cluster_secret: Some(ClusterSecret::new("another-secret-entirely").expect("long")),
        ..ClientConfig::default()
    });
    for target in [master, slave] {
        let addr = target.local_addr().to_string();
        let answer = plain
            .invoke(&addr, role_notification(&forged), Duration::from_secs(3))
            .await
            .expect("the broker answers");
        assert_eq!(
            answer.code,
            response_code::NO_PERMISSION,
            "a forged role notification without the secret: {:?}",
            answer.remark
        );
        let exchange = RemotingCommand::request(request_code::EXCHANGE_BROKER_HA_INFO)
            .with_ext("masterAddress", "127.0.0.1:1")
            .with_ext("masterHaAddress", "127.0.0.1:2");
        let answer = plain
            .invoke(&addr, exchange, Duration::from_secs(3))
            .await
            .expect("the broker answers");
        assert_eq!(
            answer.code,
            response_code::NO_PERMISSION,
            "{:?}",
            answer.remark
        );
        match impostor
            .invoke(&addr, role_notification(&forged), Duration::from_secs(3))
            .await
        {
            Err(RemotingError::Untrusted { .. }) => {}
            other => panic!("a client with another secret must fail the handshake: {other:?}"),
        }
        // A oneway copy (how a new master tells the old one) is dropped as well.
        let _ = plain.invoke_oneway(&addr, role_notification(&forged)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: Vec<ReplicaState> = [master, slave].map(replica_state).into();
    assert_eq!(
        before, after,
        "a refused notification changed a role, an epoch or a log"
    );
    assert_eq!(master_of(&brokers), Some(m));

    // (b) HA peers claiming the slave's broker id without the secret's proof.
    let ha_addr = master.inner().ha_addr();
    let mut fakes = Vec::new();
    // No proof at all (a RocketMQ slave, or an attacker).
    let mut sock = TcpStream::connect(&ha_addr).await.expect("HA port");
    fakes.push(sock.local_addr().expect("local").to_string());
    sock.write_all(&ha_handshake(broker_id(slave)))
        .await
        .expect("write");
    sock.write_all(&ha_report(end)).await.expect("write");
    let got = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        16,
        "the master sends its challenge and nothing else to a peer without a proof"
    );
    // A proof made with another secret.
    let mut sock = TcpStream::connect(&ha_addr).await.expect("HA port");
    fakes.push(sock.local_addr().expect("local").to_string());
    let mut master_nonce = [0u8; 16];
    sock.read_exact(&mut master_nonce).await.expect("challenge");
    let hs = ha_handshake(broker_id(slave));
    let my_nonce = [7u8; 16];
    let wrong = ClusterSecret::new("another-secret-entirely").expect("long");
    let proof = wrong.prove(b"rocketraft-ha-slave", &[&master_nonce, &my_nonce, &hs]);
    let mut out = hs.clone();
    out.extend_from_slice(&my_nonce);
    out.extend_from_slice(&proof);
    sock.write_all(&out).await.expect("write");
    sock.write_all(&ha_report(end + (1 << 20)))
        .await
        .expect("write");
    let got = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    assert!(
        got.is_empty(),
        "the master answered a wrong proof with {} bytes",
        got.len()
    );
    // A replay of a proof made for another connection's challenge fails too (fresh nonces).
    let mut sock = TcpStream::connect(&ha_addr).await.expect("HA port");
    fakes.push(sock.local_addr().expect("local").to_string());
    let mut other_nonce = [0u8; 16];
    sock.read_exact(&mut other_nonce).await.expect("challenge");
    let replayed = secret.prove(b"rocketraft-ha-slave", &[&master_nonce, &my_nonce, &hs]);
    let mut out = hs.clone();
    out.extend_from_slice(&my_nonce);
    out.extend_from_slice(&replayed);
    sock.write_all(&out).await.expect("write");
    let got = read_until_closed(&mut sock, Duration::from_secs(10)).await;
    assert!(got.is_empty(), "a replayed proof was accepted");

    let ha = master.inner().ha.as_ref().expect("ha");
    for s in ha.snapshot().slaves {
        assert!(
            !fakes.contains(&s.addr),
            "an unproved HA peer was counted as a replica: {s:?}"
        );
    }
    // The set keeps replicating and acknowledging honest sends.
    honest_sends(master, 20, 20).await;
    let end = master.inner().store.max_phy_offset();
    wait_for("the slave caught up", Duration::from_secs(10), || {
        (slave.inner().store.max_phy_offset() == end).then_some(())
    })
    .await;
    same_bytes(master, slave, end);
    assert_eq!(in_sync(master), 2);

    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

/// A fake slave of the set's master (no secret): handshake as broker `id`, then the first
/// report at the master's end. Returns the socket and that end.
async fn honest_looking_slave(ha_addr: &str, id: i64) -> (TcpStream, i64) {
    let mut sock = TcpStream::connect(ha_addr).await.expect("HA port");
    sock.write_all(&ha_handshake(id)).await.expect("write");
    let mut head = [0u8; 20];
    sock.read_exact(&mut head)
        .await
        .expect("the master's handshake");
    let body = i32::from_be_bytes(head[4..8].try_into().expect("4 bytes"));
    let master_end = i64::from_be_bytes(head[8..16].try_into().expect("8 bytes"));
    let mut epochs = vec![0u8; body as usize];
    sock.read_exact(&mut epochs).await.expect("epochs");
    sock.write_all(&ha_report(master_end))
        .await
        .expect("report");
    (sock, master_end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_master_serves_known_replicas_only_and_never_counts_acks_beyond_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, mut brokers, m) = two_broker_set(dir.path(), None).await;
    let s = 1 - m;
    let slave_id = broker_id(brokers[s].as_ref().expect("slave"));
    // The real slave stops: every send now needs an ack from broker `slave_id`, and a fake
    // slave claims its id.
    brokers[s].take().expect("slave").shutdown().await;
    let master = brokers[m].as_ref().expect("master");
    let master_id = broker_id(master);
    let ha = master.inner().ha.as_ref().expect("ha").clone();
    let known = wait_for(
        "the controller's broker ids for the set",
        Duration::from_secs(10),
        || ha.known_replicas(),
    )
    .await;
    assert_eq!(known, BTreeSet::from([master_id, slave_id]));
    let ha_addr = master.inner().ha_addr();

    // A broker id the controller does not know, and the master's own id: refused before the
    // master's handshake.
    for (id, what) in [
        (slave_id + master_id + 40, "an unknown id"),
        (master_id, "the master's own id"),
    ] {
        let mut sock = TcpStream::connect(&ha_addr).await.expect("HA port");
        sock.write_all(&ha_handshake(id)).await.expect("write");
        sock.write_all(&ha_report(0)).await.expect("write");
        let started = Instant::now();
        let got = read_until_closed(&mut sock, Duration::from_secs(10)).await;
        assert!(got.is_empty(), "{what} got the master's handshake");
        eprintln!("{what} refused after {:?}", started.elapsed());
        assert!(
            ha.snapshot().slaves.iter().all(|s| s.broker_id != id),
            "{what} was counted"
        );
    }

    // A fake with the slave's id that acks honestly is counted (so the refusal below is the
    // check's doing, not the fake's).
    let (sock, start) = honest_looking_slave(&ha_addr, slave_id).await;
    let (mut rd, mut wr) = sock.into_split();
    let drained = tokio::spawn(async move {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    wait_for("the fake slave counted", Duration::from_secs(10), || {
        ha.snapshot()
            .slaves
            .iter()
            .any(|s| s.broker_id == slave_id && s.connected && s.ack_offset == start)
            .then_some(())
    })
    .await;
    let addr = master.local_addr().to_string();
    let send = |i: usize| {
        let addr = addr.clone();
        tokio::spawn(async move { api().send(&addr, &message(i)).await })
    };
    let store = master.inner().store.clone();
    // It reports the master's end, as a slave holding everything would (the first send also
    // writes the topic's metadata record, acknowledged the same way).
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reporter = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                wr.write_all(&ha_report(store.max_phy_offset()))
                    .await
                    .expect("report");
                tokio::select! {
                    _ = &mut stopped => return wr,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
    };
    let r = send(1).await.expect("task").expect("send");
    assert_eq!(r.code, response_code::SUCCESS, "an honest ack counts");
    stop.send(()).expect("reporter running");
    let mut wr = reporter.await.expect("reporter");
    let end1 = wait_for(
        "the last honest report counted",
        Duration::from_secs(5),
        || {
            let end = store.max_phy_offset();
            ha.snapshot()
                .slaves
                .iter()
                .any(|s| s.broker_id == slave_id && s.ack_offset == end)
                .then_some(end)
        },
    )
    .await;

    // Now it claims to hold far more than the master ever wrote: the master cuts it off and
    // counts nothing of it, so the next send (which needs its ack) is not acknowledged.
    let second = send(2);
    let end2 = wait_for("the second send written", Duration::from_secs(5), || {
        let end = store.max_phy_offset();
        (end > end1).then_some(end)
    })
    .await;
    wr.write_all(&ha_report(end2 + (1 << 20)))
        .await
        .expect("report");
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the master closed the lying slave's connection")
        .expect("task");
    if let Ok(r) = second.await.expect("task") {
        assert_ne!(
            r.code,
            response_code::SUCCESS,
            "a send was acknowledged by an ack beyond the master's end"
        );
    }
    let info = wait_for(
        "the lying slave disconnected",
        Duration::from_secs(5),
        || {
            ha.snapshot()
                .slaves
                .into_iter()
                .find(|s| s.broker_id == slave_id && !s.connected)
        },
    )
    .await;
    assert_eq!(info.ack_offset, end1, "the lie was counted: {info:?}");
    assert!(store.confirm_offset() <= end1);

    for b in brokers.into_iter().flatten() {
        b.shutdown().await;
    }
    ns.shutdown().await;
}

fn open_store(dir: &Path) -> std::sync::Arc<rocketraft_broker::store::MessageStore> {
    rocketraft_broker::store::MessageStore::open(rocketraft_broker::store::StoreConfig {
        commitlog_segment_size: 64 * 1024,
        pretouch: false,
        ..rocketraft_broker::store::StoreConfig::new(dir)
    })
    .expect("store")
}

/// One replication session of a slave with `secret` (broker id 2) from `ha_addr`, within 15 s.
async fn follow(
    dir: std::path::PathBuf,
    secret: Option<ClusterSecret>,
    ha_addr: &str,
) -> (
    std::sync::Arc<rocketraft_broker::store::MessageStore>,
    anyhow::Result<()>,
) {
    use rocketraft_broker::ha::{follow_once, HaState};
    let store = open_store(&dir);
    let slave = HaState::with_cluster_secret(store.clone(), secret);
    slave.set_slave(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
    let result = tokio::time::timeout(Duration::from_secs(15), follow_once(&slave, 2, ha_addr))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("still replicating after 15 s")));
    (store, result)
}

/// The HA handshake on its own (no controller): master and slave with the same secret
/// replicate; a slave without it, or with another, is refused; a slave with a secret refuses a
/// master without one, and a master whose proof does not match.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_peers_prove_the_secret_to_each_other() {
    use rocketraft_broker::ha::HaState;
    use rocketraft_broker::store::BrokerMessage;
    use rocketraft_common::message::Message;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret();
    let other = ClusterSecret::new("another-secret-entirely").expect("long");

    let start_master = |name: &str, secret: Option<ClusterSecret>| {
        let store = open_store(&dir.path().join(name));
        let ha = HaState::with_cluster_secret(store.clone(), secret);
        ha.set_master(1, "127.0.0.1:1".into(), 1, 1, BTreeSet::from([1]));
        ha.renew_lease(Instant::now() + Duration::from_secs(60));
        async move {
            store.append_epoch(1, 0).expect("epoch");
            store
                .put_message(BrokerMessage::new(Message::new("T", "m"), 0))
                .await
                .expect("put");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr").to_string();
            let server = tokio::spawn(rocketraft_broker::ha::serve(listener, ha.clone()));
            (store, ha, addr, server)
        }
    };
    let (store, ha, addr, server) = start_master("m", Some(secret.clone())).await;
    let (plain_store, _plain_ha, plain_addr, plain_server) = start_master("p", None).await;

    // A master impostor: sends a challenge, takes the slave's proof, answers a made-up proof.
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let impostor_addr = impostor.local_addr().expect("addr").to_string();
    let impostor_task = tokio::spawn(async move {
        let (mut sock, _) = impostor.accept().await.expect("accept");
        sock.write_all(&[9u8; 16]).await.expect("challenge");
        let mut got = [0u8; 64];
        sock.read_exact(&mut got).await.expect("proof");
        sock.write_all(&[0u8; 32]).await.expect("forged proof");
        let mut rest = Vec::new();
        let _ = sock.read_to_end(&mut rest).await;
    });

    let d = dir.path();
    let (
        (good, good_result),
        (wrong, wrong_result),
        (none, none_result),
        (to_plain, to_plain_result),
        (to_impostor, to_impostor_result),
    ) = tokio::join!(
        async {
            // Runs until the session is cut below, once caught up.
            let follow = follow(d.join("good"), Some(secret.clone()), &addr);
            tokio::pin!(follow);
            let end = store.max_phy_offset();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                tokio::select! {
                    r = &mut follow => break r,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        let caught_up = ha.snapshot().slaves.iter().any(|s| s.ack_offset == end);
                        if caught_up || Instant::now() > deadline {
                            ha.set_master(1, "127.0.0.1:1".into(), 2, 1, BTreeSet::from([1]));
                        }
                    }
                }
            }
        },
        follow(d.join("wrong"), Some(other.clone()), &addr),
        follow(d.join("none"), None, &addr),
        follow(d.join("to-plain"), Some(secret.clone()), &plain_addr),
        follow(d.join("to-impostor"), Some(secret.clone()), &impostor_addr),
    );
    let end = store.max_phy_offset();
    assert!(end > 0);
    assert_eq!(
        good.max_phy_offset(),
        end,
        "the trusted slave replicated: {good_result:?}"
    );
    for (what, replica, result) in [
        ("another secret", &wrong, &wrong_result),
        ("no secret", &none, &none_result),
        ("a master without a secret", &to_plain, &to_plain_result),
        ("a master impostor", &to_impostor, &to_impostor_result),
    ] {
        assert!(result.is_err(), "{what}: the session went on");
        assert_eq!(replica.max_phy_offset(), 0, "{what}: bytes were replicated");
        if let Err(e) = result {
            eprintln!("{what}: {e:#}");
        }
    }
    let impostor_error = format!("{:#}", to_impostor_result.expect_err("refused"));
    assert!(
        impostor_error.contains("does not match"),
        "{impostor_error}"
    );
    let plain_error = format!("{:#}", to_plain_result.expect_err("refused"));
    assert!(plain_error.contains("no challenge"), "{plain_error}");

    impostor_task.abort();
    server.abort();
    plain_server.abort();
    for s in [store, plain_store, good, wrong, none, to_plain, to_impostor] {
        s.shutdown().expect("shutdown");
    }
}
