//! A TCP relay whose traffic can be held, in both directions, without closing the connections:
//! the peer behind it looks as a SIGSTOPped process does (connected, silent), or as a replica
//! that stays in the SyncStateSet but confirms nothing.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct HoldingRelay {
    pub addr: SocketAddr,
    hold: tokio::sync::watch::Sender<bool>,
}

impl HoldingRelay {
    /// Listens on a loopback port and relays every connection to `target`.
    pub async fn start(target: SocketAddr) -> HoldingRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay bind");
        let addr = listener.local_addr().expect("relay addr");
        let (hold, _) = tokio::sync::watch::channel(false);
        let hold_tx = hold.clone();
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, hold_tx.subscribe()));
                tokio::spawn(pump(ro, wi, hold_tx.subscribe()));
            }
        });
        HoldingRelay { addr, hold }
    }

    /// While held, bytes are kept (not dropped, not refused) and delivered once released.
    pub fn set_hold(&self, hold: bool) {
        self.hold.send_replace(hold);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hold: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if hold.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
