//! Third-party clients against real `rocketraft` processes: ali-ons (Node.js, Remoting),
//! rocketmq-client-rust (Rust, Remoting), and the official RocketMQ 5 Python (with and without
//! credentials), Node.js and Rust clients (gRPC).
//!
//! Each test takes its module's turn first ([`support::file_turn`]): the modules' tests run one
//! module after another, as they did when each file was its own binary.

mod compat_ali_ons;
mod compat_nodejs;
mod compat_python;
mod compat_python_auth;
mod compat_rocketmq_official;
mod compat_rocketmq_rust;

#[path = "../support/mod.rs"]
mod support;

/// Installs rocketmq-python-client 5.1.2 with pip when `import rocketmq` fails.
fn ensure_python_client() {
    let present = std::process::Command::new("python3")
        .args(["-c", "import rocketmq"])
        .status()
        .expect("python3 is needed for this test: run scripts/setup.sh")
        .success();
    if !present {
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "rocketmq-python-client==5.1.2",
            ])
            .status()
            .expect("pip");
        assert!(
            status.success(),
            "installing rocketmq-python-client failed: run scripts/setup.sh"
        );
    }
}
