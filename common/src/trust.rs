//! Cluster-internal trust: one secret shared by every server of a cluster (NameServers,
//! controllers, brokers), from which the servers prove to each other that they belong.
//!
//! Nothing here travels in the clear: a peer proves it knows the secret with an HMAC-SHA256 over
//! fresh random nonces (a challenge–response), so a recorded handshake cannot be replayed and
//! the secret never leaves the process. Where it is used:
//! - Remoting connections between servers ([`rocketraft_remoting`]'s `TRUST_CHALLENGE` /
//!   `TRUST_PROVE`): role notifications, controller writes, broker registrations;
//! - the HA port: a slave and its master prove the secret to each other before any frame;
//! - Raft RPCs between controllers.
//!
//! Without a secret in the configuration every check is off, as in RocketMQ.

use std::fmt;
use std::str::FromStr;

/// The shortest secret accepted: 16 characters (128 bits if random).
pub const MIN_SECRET_LEN: usize = 16;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;

/// The shared secret of a cluster (`cluster_secret` in each server's config).
///
/// `Debug` never shows it, and no log line should: only `Serialize` writes it, for the config
/// files `cluster up` writes.
#[derive(Clone)]
pub struct ClusterSecret {
    text: String,
    key: ring::hmac::Key,
}

/// A `cluster_secret` that is too short to be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster_secret has {0} characters; use at least {MIN_SECRET_LEN} (for example the output of `openssl rand -hex 16`)")]
pub struct WeakSecret(pub usize);

impl ClusterSecret {
    /// A secret from its text; refuses one shorter than [`MIN_SECRET_LEN`].
    pub fn new(text: impl Into<String>) -> Result<Self, WeakSecret> {
        let text = text.into();
        let len = text.chars().count();
        if len < MIN_SECRET_LEN {
            return Err(WeakSecret(len));
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, text.as_bytes());
        Ok(Self { text, key })
    }

    /// A new random secret (32 hex characters), for `cluster up`.
    pub fn generate() -> Self {
        let text = hex(&nonce());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, text.as_bytes());
        Self { text, key }
    }

    /// The secret's text, to write it into a config file.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The proof of the secret over `parts` in the role `context` (each part length-prefixed,
    /// so no two different part lists sign the same bytes).
    pub fn prove(&self, context: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        feed(&mut ctx, context, parts);
        ctx.sign().as_ref().to_vec()
    }

    /// Whether `proof` is [`ClusterSecret::prove`] of the same input (compared in constant time).
    pub fn verify(&self, context: &[u8], parts: &[&[u8]], proof: &[u8]) -> bool {
        let mut input = Vec::new();
        for part in std::iter::once(context).chain(parts.iter().copied()) {
            input.extend_from_slice(&(part.len() as u64).to_be_bytes());
            input.extend_from_slice(part);
        }
        ring::hmac::verify(&self.key, &input, proof).is_ok()
    }
}

fn feed(ctx: &mut ring::hmac::Context, context: &[u8], parts: &[&[u8]]) {
    for part in std::iter::once(context).chain(parts.iter().copied()) {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl PartialEq for ClusterSecret {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for ClusterSecret {}

impl FromStr for ClusterSecret {
    type Err = WeakSecret;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterSecret::new(s)
    }
}

impl serde::Serialize for ClusterSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for ClusterSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ClusterSecret::new(text).map_err(serde::de::Error::custom)
    }
}

/// A fresh random nonce from the operating system's generator.
pub fn nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut out = [0u8; NONCE_LEN];
    // SystemRandom fails only when the OS has no entropy source at all; a zero nonce then
    // still yields a proof bound to the peer's own nonce.
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        tracing::error!("the system random generator failed; this nonce is all zeros");
    }
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lower-case or upper-case hex `text`; `None` if it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_verify_only_with_the_same_secret_context_and_parts() {
        let a = ClusterSecret::new("0123456789abcdef").expect("long enough");
        let b = ClusterSecret::new("0123456789abcdeX").expect("long enough");
        let proof = a.prove(b"server", &[b"n1", b"n2"]);
        assert!(a.verify(b"server", &[b"n1", b"n2"], &proof));
        assert!(!b.verify(b"server", &[b"n1", b"n2"], &proof));
        assert!(!a.verify(b"client", &[b"n1", b"n2"], &proof));
        assert!(!a.verify(b"server", &[b"n2", b"n1"], &proof));
        // Length prefixes: moving a byte between parts changes the proof.
        assert!(!a.verify(b"server", &[b"n1n", b"2"], &proof));
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_secret() {
        assert_eq!(ClusterSecret::new("short"), Err(WeakSecret(5)));
        let s = ClusterSecret::generate();
        assert_eq!(s.expose().len(), 32);
        assert!(!format!("{s:?}").contains(s.expose()));
        let parsed: ClusterSecret =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("parses");
        assert_eq!(parsed, s);
        assert!(serde_json::from_str::<ClusterSecret>("\"tiny\"").is_err());
    }

    #[test]
    fn hex_round_trips() {
        let n = nonce();
        assert_eq!(unhex(&hex(&n)).as_deref(), Some(&n[..]));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }
}
