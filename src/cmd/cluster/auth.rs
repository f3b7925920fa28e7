//! `cluster up --auth`: ACL 2.0 on every NameServer and broker of a new cluster, RocketMQ's way.
//!
//! Two generated `Super` users go into every NameServer and broker config:
//! `initAuthenticationUser` (the administrator, `admin`, for people and tools) and
//! `innerClientAuthenticationCredentials` (what the servers sign their calls to each other with).
//! The administrator's keys are also written to `DIR/admin-credentials` (0600), a shell file that
//! sets the variables the admin CLI, `bench` and `rocketraft proxy` read; `cluster status` and
//! `up`'s readiness checks sign with it too, and the NameServer's web console reads it
//! (`--console-credentials-file`, a path on its command line, never the secret). The secrets are
//! never logged or printed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rocketraft_common::trust::ClusterSecret;
use rocketraft_remoting::SessionCredentials;

/// Where a cluster started with `--auth` keeps its administrator's credentials.
pub const CREDENTIALS_FILE: &str = "admin-credentials";
/// The administrator's access key (username).
pub const ADMIN_USER: &str = "admin";
/// The access key the servers sign their calls to each other with.
pub const INNER_USER: &str = "rocketraft-inner";

const ACCESS_KEY_VAR: &str = "ROCKETRAFT_ACCESS_KEY";
const SECRET_KEY_VAR: &str = "ROCKETRAFT_SECRET_KEY";
const PROXY_SECRET_KEY_VAR: &str = "ROCKETRAFT_PROXY_SECRET_KEY";

/// The users of a cluster with authentication on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAuth {
    /// `initAuthenticationUser`: the administrator.
    pub admin: SessionCredentials,
    /// `innerClientAuthenticationCredentials`.
    pub inner: SessionCredentials,
}

/// A random secret key: 32 hex digits (128 bits) from the system's random source.
fn random_secret() -> String {
    ClusterSecret::generate().expose().to_string()
}

impl ClusterAuth {
    pub fn generate() -> anyhow::Result<ClusterAuth> {
        Ok(ClusterAuth {
            admin: SessionCredentials::new(ADMIN_USER, random_secret())?,
            inner: SessionCredentials::new(INNER_USER, random_secret())?,
        })
    }

    /// The text of [`CREDENTIALS_FILE`]: `export` lines a POSIX shell can source.
    pub fn file_text(&self, dir: &Path) -> String {
        let (ak, sk) = (&self.admin.access_key, &self.admin.secret_key);
        format!(
            "# The administrator (a Super user) of the rocketraft cluster in {dir}.\n\
             # Load it into a shell with: . {file}\n\
             export {ACCESS_KEY_VAR}={ak}\n\
             export {SECRET_KEY_VAR}={sk}\n\
             # For `rocketraft proxy --remoting-access-key {ak}`.\n\
             export {PROXY_SECRET_KEY_VAR}={sk}\n",
            dir = dir.display(),
            file = credentials_path(dir).display(),
        )
    }
}

pub fn credentials_path(dir: &Path) -> PathBuf {
    dir.join(CREDENTIALS_FILE)
}

/// Parses the text [`ClusterAuth::file_text`] writes: the access and secret key variables.
fn parse_credentials(text: &str) -> anyhow::Result<SessionCredentials> {
    let (mut access_key, mut secret_key) = (None, None);
    for line in text.lines().map(str::trim) {
        let Some((name, value)) = line
            .strip_prefix("export ")
            .and_then(|rest| rest.split_once('='))
        else {
            continue;
        };
        match name.trim() {
            ACCESS_KEY_VAR => access_key = Some(value.trim().to_string()),
            SECRET_KEY_VAR => secret_key = Some(value.trim().to_string()),
            _ => {}
        }
    }
    match (access_key, secret_key) {
        (Some(ak), Some(sk)) => Ok(SessionCredentials::new(ak, sk)?),
        _ => bail!("it sets no {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}"),
    }
}

/// The administrator's credentials of the cluster in `dir`, if it runs with authentication.
pub fn admin_credentials(dir: &Path) -> anyhow::Result<Option<SessionCredentials>> {
    let path = credentials_path(dir);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_credentials_file(&path).map(Some),
    }
}

/// The credentials in a file of [`ClusterAuth::file_text`]'s format (`rocketraft console
/// --credentials-file`, `namesrv --console-credentials-file`). A file others may read is used
/// but warned about: it holds a secret.
pub fn read_credentials_file(path: &Path) -> anyhow::Result<SessionCredentials> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "the credentials file is readable by others: chmod 600 it"
            );
        }
    }
    parse_credentials(&text)
        .with_context(|| format!("{} is not a credentials file", path.display()))
}

/// How to use the credentials, for `cluster up`'s output: the file, never the secret.
pub fn usage(dir: &Path, namesrv: &str) -> String {
    let file = credentials_path(dir);
    let file = file.display();
    format!(
        "authentication is on: Super user {ADMIN_USER:?}, keys in {file} (owner-only). Load them with `. {file}`, then:\n  \
         rocketraft admin --namesrv {namesrv} topic list   (signs with {ACCESS_KEY_VAR}/{SECRET_KEY_VAR}, or --access-key/--secret-key)\n  \
         rocketraft bench produce --namesrv {namesrv}      (same variables or flags)\n  \
         rocketraft proxy --namesrv {namesrv} --remoting-access-key {ADMIN_USER}   (secret key from {PROXY_SECRET_KEY_VAR})\n  \
         Remoting clients of other libraries: AclClientRPCHook with these keys"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_users_differ_and_the_file_parses_back() {
        let a = ClusterAuth::generate().expect("auth");
        let b = ClusterAuth::generate().expect("auth");
        assert_eq!(a.admin.access_key, ADMIN_USER);
        assert_eq!(a.inner.access_key, INNER_USER);
        assert_eq!(a.admin.secret_key.len(), 32);
        assert_ne!(a.admin.secret_key, a.inner.secret_key);
        assert_ne!(a.admin.secret_key, b.admin.secret_key);
        let text = a.file_text(Path::new("/d"));
        assert!(text.contains(". /d/admin-credentials"), "{text}");
        assert_eq!(parse_credentials(&text).expect("parses"), a.admin);
        assert!(!text.contains(&a.inner.secret_key));
        assert!(parse_credentials("export ROCKETRAFT_ACCESS_KEY=admin\n").is_err());
        assert!(parse_credentials("ROCKETRAFT_ACCESS_KEY=a\nROCKETRAFT_SECRET_KEY=b\n").is_err());
    }

    #[test]
    fn credentials_are_read_from_the_cluster_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(admin_credentials(dir.path()).expect("no file"), None);
        let auth = ClusterAuth::generate().expect("auth");
        std::fs::write(credentials_path(dir.path()), auth.file_text(dir.path())).expect("write");
        assert_eq!(
            admin_credentials(dir.path()).expect("reads"),
            Some(auth.admin.clone())
        );
        let usage = usage(dir.path(), "127.0.0.1:9876");
        assert!(!usage.contains(&auth.admin.secret_key), "{usage}");
        assert!(usage.contains("--remoting-access-key admin"), "{usage}");
        assert_eq!(
            read_credentials_file(&credentials_path(dir.path())).expect("reads"),
            auth.admin
        );
        std::fs::write(credentials_path(dir.path()), "nonsense").expect("write");
        assert!(admin_credentials(dir.path()).is_err());
        assert!(read_credentials_file(&dir.path().join("missing")).is_err());
    }
}
