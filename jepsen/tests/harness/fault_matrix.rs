//! `rocketraft-jepsen matrix` end to end: a tiny matrix (raft-kv under kill and under pause,
//! one seed, 20 s of faults each) writes its table and both reports with verdicts; run again
//! with `--resume` it runs nothing and writes the same table; a cell whose run outlives the
//! wall-clock guard ends TIMEOUT and the matrix exits 3.
//!
//! Needs root and network namespaces; without them it says why (a failure under `CI=true`).

use std::process::Command;
use std::time::Instant;

use serde_json::Value as Json;

use crate::support::{serial, skipped};

/// `rocketraft-jepsen matrix ARGS --out OUT`: its exit code and `matrix.json`.
fn matrix(out: &std::path::Path, args: &[&str]) -> (Option<i32>, Json) {
    let status = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .arg("matrix")
        .args(args)
        .arg("--out")
        .arg(out)
        .status()
        .expect("rocketraft-jepsen matrix runs");
    let table = std::fs::read(out.join("matrix.json"))
        .unwrap_or_else(|e| panic!("no matrix.json ({e}); exit status {status}"));
    (
        status.code(),
        serde_json::from_slice(&table).expect("matrix.json is JSON"),
    )
}

#[test]
fn a_tiny_matrix_writes_its_table_resumes_and_guards() {
    let _one = serial();
    if skipped("fault matrix") {
        return;
    }
    let out = tempfile::Builder::new()
        .prefix("rrj-matrix-")
        .tempdir_in("/tmp")
        .expect("a temporary output directory");
    let args = [
        "--workloads",
        "raft-kv",
        "--nemeses",
        "kill,pause",
        "--seeds",
        "1",
        "--first-seed",
        "18",
        // Seed 18 fits one 7 s window at 3 s into 12 s, under kill and under pause alike.
        "--time-limit",
        "12",
    ];
    let (code, table) = matrix(out.path(), &args);
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(code, Some(0), "every cell valid:\n{table:#}");
    assert_eq!(rows.len(), 2, "{table:#}");
    for (row, nemesis) in rows.iter().zip(["kill", "pause"]) {
        assert_eq!(row["workload"], "raft-kv");
        assert_eq!(row["nemesis"], nemesis);
        assert_eq!(row["seed"], 18);
        assert_eq!(row["verdict"], "VALID", "{row:#}");
        assert_eq!(row["source"], "history.jsonl", "{row:#}");
        let ops = row["ops"].as_u64().unwrap_or(0);
        assert!(ops > 100, "only {ops} operations: {row:#}");
        assert!(row["ok"].as_u64().unwrap_or(0) > 0, "{row:#}");
        assert!(
            row["faults"].as_u64().unwrap_or(0) >= 1,
            "no fault: {row:#}"
        );
        let gap = row["longest_gap_s"].as_f64().expect("a longest gap");
        assert!(gap > 0.0 && gap < 60.0, "gap {gap}: {row:#}");
        let recovery = row["recovery_s"].as_f64().expect("recovered");
        assert!((0.0..90.0).contains(&recovery), "{row:#}");
        let report = out.path().join(row["report"].as_str().expect("report"));
        for file in [
            "verdicts.json",
            "history.jsonl",
            "nemesis.jsonl",
            "summary.txt",
        ] {
            assert!(
                report.join(file).is_file(),
                "{} lacks {file}",
                report.display()
            );
        }
    }
    let md = std::fs::read_to_string(out.path().join("matrix.md")).expect("matrix.md");
    assert!(md.contains("2 cells: 2 VALID, 0 INVALID"), "{md}");
    assert!(md.contains("| raft-kv | kill | 18 |"), "{md}");
    assert!(
        md.contains("[raft-kv-pause-seed18](raft-kv-pause-seed18/)"),
        "{md}"
    );

    // Without --resume the old reports are refused; with it nothing runs again.
    let refused = Command::new(env!("CARGO_BIN_EXE_rocketraft-jepsen"))
        .arg("matrix")
        .args(args)
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("rocketraft-jepsen matrix runs");
    assert_eq!(refused.code(), Some(3));
    let started = Instant::now();
    let mut resumed = args.to_vec();
    resumed.push("--resume");
    let (code, again) = matrix(out.path(), &resumed);
    assert_eq!(code, Some(0));
    assert!(
        started.elapsed().as_secs() < 10,
        "--resume ran cells again ({:?})",
        started.elapsed()
    );
    assert_eq!(again["rows"], table["rows"]);

    // A guard shorter than any run: the cell is stopped and says so.
    let guarded = tempfile::Builder::new()
        .prefix("rrj-matrix-guard-")
        .tempdir_in("/tmp")
        .expect("a temporary output directory");
    let started = Instant::now();
    let (code, table) = matrix(
        guarded.path(),
        &[
            "--workloads",
            "raft-kv",
            "--nemeses",
            "kill",
            "--seeds",
            "1",
            "--time-limit",
            "20",
            "--guard-secs",
            "6",
        ],
    );
    assert_eq!(code, Some(3), "{table:#}");
    assert_eq!(table["rows"][0]["verdict"], "TIMEOUT", "{table:#}");
    assert!(
        started.elapsed().as_secs() < 70,
        "the guard did not stop the run ({:?})",
        started.elapsed()
    );
}
