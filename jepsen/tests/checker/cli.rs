//! The `rocketraft-jepsen check` command line: verdicts as exit codes (0 valid, 1 invalid,
//! 2 unknown, 3 unreadable), human and JSON output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_rocketraft-jepsen");

fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check(path: &Path, extra: &[&str]) -> (i32, String, String) {
    let path = path.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["check"];
    args.extend_from_slice(extra);
    args.push(path);
    let output = run(&args);
    let code = output.status.code().expect("exited, not killed");
    (code, text(&output.stdout), text(&output.stderr))
}

const VALID: &str = r#"{"process":0,"type":"invoke","f":"write","value":1}
{"process":1,"type":"invoke","f":"read","value":null}
{"process":0,"type":"ok","f":"write","value":1}
{"process":1,"type":"ok","f":"read","value":1}
"#;

const STALE_READ: &str = r#"{"process":0,"type":"invoke","f":"write","value":1}
{"process":0,"type":"ok","f":"write","value":1}
{"process":0,"type":"invoke","f":"write","value":2}
{"process":0,"type":"ok","f":"write","value":2}
{"process":1,"type":"invoke","f":"read","value":null}
{"process":1,"type":"ok","f":"read","value":1}
"#;

#[test]
fn valid_exits_0() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = write(dir.path(), "valid.jsonl", VALID);
    let (code, stdout, stderr) = check(&path, &["--model", "cas-register"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("VALID"), "{stdout}");
    assert!(stdout.contains("2 operations checked"), "{stdout}");
}

#[test]
fn invalid_exits_1_with_a_counterexample() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = write(dir.path(), "stale.jsonl", STALE_READ);
    // The model is inferred from the operations when left out.
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("INVALID"), "{stdout}");
    assert!(
        stdout.contains("cannot linearize: op 4 (process 1, ok): read -> 1"),
        "{stdout}"
    );
    assert!(stdout.contains("state there: 2"), "{stdout}");
}

#[test]
fn json_output() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = write(dir.path(), "stale.jsonl", STALE_READ);
    let (code, stdout, _) = check(&path, &["--json", "--model", "cas-register"]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(report["report"]["verdict"], "invalid");
    assert_eq!(report["format"], "jsonl");
    assert_eq!(report["model"], "cas-register");
    assert_eq!(
        report["report"]["counterexample"]["op"]["description"],
        "read -> 1"
    );
}

#[test]
fn unknown_exits_2() {
    // Hopeless: 100 concurrent writes, then a read of a value nobody wrote.
    let mut history = String::new();
    for p in 0..100 {
        history +=
            &format!("{{\"process\":{p},\"type\":\"invoke\",\"f\":\"write\",\"value\":{p}}}\n");
    }
    for p in 0..100 {
        history += &format!("{{\"process\":{p},\"type\":\"ok\",\"f\":\"write\",\"value\":{p}}}\n");
    }
    history += "{\"process\":200,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n";
    history += "{\"process\":200,\"type\":\"ok\",\"f\":\"read\",\"value\":-1}\n";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = write(dir.path(), "hopeless.jsonl", &history);
    let (code, stdout, stderr) = check(&path, &["--timeout-secs", "1"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.contains("UNKNOWN"), "{stdout}");
    assert!(stdout.contains("time budget exhausted"), "{stdout}");

    // The memory bound gives "unknown" too.
    let path = write(dir.path(), "valid.jsonl", VALID);
    let (code, stdout, stderr) = check(&path, &["--max-memory-mib", "0"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stdout.contains("memory limit"), "{stdout}");
}

#[test]
fn unreadable_input_exits_3() {
    let dir = tempfile::tempdir().expect("a temporary directory");

    let (code, _, stderr) = check(&dir.path().join("missing.jsonl"), &[]);
    assert_eq!(code, 3);
    assert!(stderr.contains("cannot check"), "{stderr}");

    let path = write(
        dir.path(),
        "broken.jsonl",
        &format!("{VALID}{{\"process\":"),
    );
    let (code, _, stderr) = check(&path, &["--format", "jsonl"]);
    assert_eq!(code, 3);
    assert!(stderr.contains("line 5"), "{stderr}");

    let path = write(dir.path(), "garbage.txt", "hello world\n");
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 3);
    assert!(stderr.contains("unrecognised history format"), "{stderr}");

    // Operations the model does not know.
    let path = write(dir.path(), "valid.jsonl", VALID);
    let (code, _, stderr) = check(&path, &["--model", "kv"]);
    assert_eq!(code, 3);
    assert!(
        stderr.contains("the kv model knows get, put and append"),
        "{stderr}"
    );

    let path = write(dir.path(), "binary.bin", "");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).expect("writable");
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 3);
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}

#[test]
fn bad_arguments_exit_3_not_2() {
    // clap's own exit code for a usage error is 2, which would read as "unknown".
    let output = run(&["check", "--no-such-flag", "x"]);
    assert_eq!(output.status.code(), Some(3));
    let output = run(&["check", "--model", "queue", "x"]);
    assert_eq!(output.status.code(), Some(3));
    let output = run(&["check", "--format", "csv", "x"]);
    assert_eq!(output.status.code(), Some(3));
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn detects_porcupine_formats() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let etcd = "INFO  jepsen.util - 0\t:invoke\t:write\t1\nINFO  jepsen.util - 0\t:ok\t:write\t1\nINFO  jepsen.util - 1\t:invoke\t:cas\t[1 2]\nINFO  jepsen.util - 1\t:info\t:cas\t:timed-out\nINFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t2\n";
    let path = write(dir.path(), "etcd.log", etcd);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("format etcd-log"), "{stdout}");

    let kv = "{:process 0, :type :invoke, :f :append, :key \"1\", :value \"a\"}\n{:process 0, :type :ok, :f :append, :key \"1\", :value \"a\"}\n{:process 1, :type :invoke, :f :get, :key \"1\", :value nil}\n{:process 1, :type :ok, :f :get, :key \"1\", :value \"\"}\n";
    let path = write(dir.path(), "c01-bad.txt", kv);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("model kv, format porcupine-kv"), "{stdout}");
}
