//! Every history in `tests/histories` (public histories with known verdicts, Porcupine's etcd
//! logs and kv files; see `tests/histories/README.md`) must get its recorded verdict, each in
//! well under a minute.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rocketraft_jepsen::check_text;
use rocketraft_jepsen::linearizability::{CheckOptions, Verdict};

/// A copy of `../shared/histories` kept in the repository (Porcupine's test data, MIT licence in
/// `PORCUPINE-LICENSE.md`), so the suite runs in any clone.
const HISTORIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/histories");
/// The per-history limit the issue sets.
const LIMIT: Duration = Duration::from_secs(60);

fn histories_dir() -> PathBuf {
    let dir = PathBuf::from(HISTORIES);
    assert!(
        dir.is_dir(),
        "the shared histories are missing: expected a directory at {} (the public histories with \
         known verdicts; see jepsen/tests/histories/README.md)",
        dir.display()
    );
    dir
}

/// Checks one file; returns the verdict and how long it took.
fn check_file(path: &Path) -> (Verdict, Duration) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let options = CheckOptions {
        time_budget: LIMIT,
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let checked = check_text(&text, None, None, &options)
        .unwrap_or_else(|e| panic!("cannot check {}: {e}", path.display()));
    (checked.report.verdict, started.elapsed())
}

fn verdict_of(linearizable: bool) -> Verdict {
    if linearizable {
        Verdict::Valid
    } else {
        Verdict::Invalid
    }
}

/// Checks each (file, expected) pair, prints a table, and fails on any disagreement or slowness.
fn check_all(expected: &[(PathBuf, Verdict)]) {
    let mut failures = Vec::new();
    let mut total = Duration::ZERO;
    for (path, want) in expected {
        let (got, took) = check_file(path);
        total += took;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (want_text, got_text) = (format!("{want:?}"), format!("{got:?}"));
        println!(
            "{name:<16} expected {want_text:<8} got {got_text:<8} {:>9.3} s",
            took.as_secs_f64()
        );
        if got != *want {
            failures.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
        if took >= LIMIT {
            failures.push(format!("{name}: took {:.1} s", took.as_secs_f64()));
        }
    }
    println!(
        "{} histories in {:.3} s",
        expected.len(),
        total.as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn porcupine_etcd_histories_get_their_recorded_verdicts() {
    let dir = histories_dir().join("porcupine-etcd");
    let verdicts_path = dir.join("VERDICTS.tsv");
    let verdicts = std::fs::read_to_string(&verdicts_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", verdicts_path.display()));
    let mut expected = Vec::new();
    for line in verdicts.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let (file, linearizable) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("bad VERDICTS.tsv line {line:?}"));
        let linearizable = match linearizable.trim() {
            "true" => true,
            "false" => false,
            other => panic!("bad verdict {other:?} for {file}"),
        };
        expected.push((dir.join(file), verdict_of(linearizable)));
    }
    // Every log has a verdict, so none is silently left out.
    let logs = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .count();
    assert_eq!(
        logs,
        expected.len(),
        "every etcd log needs a line in VERDICTS.tsv"
    );
    assert!(!expected.is_empty(), "VERDICTS.tsv lists no history");
    check_all(&expected);
}

#[test]
fn porcupine_kv_histories_get_their_recorded_verdicts() {
    let dir = histories_dir().join("porcupine-kv");
    let mut expected: Vec<(PathBuf, Verdict)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .map(|path| {
            let stem = path
                .file_stem()
                .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
            let want = if stem.ends_with("-ok") {
                Verdict::Valid
            } else if stem.ends_with("-bad") {
                Verdict::Invalid
            } else {
                panic!("{}: a kv history is named *-ok or *-bad", path.display())
            };
            (path, want)
        })
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!expected.is_empty(), "no kv history in {}", dir.display());
    check_all(&expected);
}
