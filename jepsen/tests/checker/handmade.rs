//! Checker self-tests on hand-made histories: known anomalies must be caught (stale read, lost
//! acknowledged write, two masters in one epoch), valid corner cases accepted (a history valid only
//! through one interleaving, operations of unknown outcome that did or did not take effect), and a
//! hopeless search must give up with *unknown* within its budget.

use std::time::{Duration, Instant};

use rocketraft_jepsen::history::{self, Format};
use rocketraft_jepsen::linearizability::{CheckOptions, Report, Verdict};
use rocketraft_jepsen::model::ModelName;
use rocketraft_jepsen::{check_text, check_with};
use serde_json::{json, Value as Json};

/// Builds a history in our JSONL, one event at a time.
#[derive(Default)]
struct History {
    lines: Vec<String>,
}

impl History {
    fn event(
        &mut self,
        process: u64,
        kind: &str,
        f: &str,
        key: Option<&str>,
        value: Json,
    ) -> &mut Self {
        let mut event = json!({"process": process, "type": kind, "f": f, "value": value});
        if let Some(key) = key {
            event["key"] = json!(key);
        }
        self.lines.push(event.to_string());
        self
    }
    fn invoke(&mut self, process: u64, f: &str, value: Json) -> &mut Self {
        self.event(process, "invoke", f, None, value)
    }
    fn ok(&mut self, process: u64, f: &str, value: Json) -> &mut Self {
        self.event(process, "ok", f, None, value)
    }
    fn fail(&mut self, process: u64, f: &str, value: Json) -> &mut Self {
        self.event(process, "fail", f, None, value)
    }
    fn info(&mut self, process: u64, f: &str, value: Json) -> &mut Self {
        self.event(process, "info", f, None, value)
    }
    /// A whole operation, invoked and completed `ok` before anything else happens.
    fn op(&mut self, process: u64, f: &str, invoke: Json, ok: Json) -> &mut Self {
        self.invoke(process, f, invoke).ok(process, f, ok)
    }
    fn text(&self) -> String {
        self.lines.join("\n") + "\n"
    }
}

fn options() -> CheckOptions {
    CheckOptions {
        time_budget: Duration::from_secs(30),
        ..CheckOptions::default()
    }
}

fn check(model: ModelName, history: &History) -> Report {
    check_text(
        &history.text(),
        Some(Format::Jsonl),
        Some(model),
        &options(),
    )
    .unwrap_or_else(|e| panic!("cannot check: {e}\n{}", history.text()))
    .report
}

fn assert_verdict(report: &Report, verdict: Verdict, history: &History) {
    assert_eq!(
        report.verdict,
        verdict,
        "{report:#?}\nhistory:\n{}",
        history.text()
    );
}

// ---- CAS register ------------------------------------------------------------------------------

#[test]
fn a_stale_read_is_caught() {
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .op(1, "write", json!(2), json!(2))
        .op(2, "read", Json::Null, json!(1));
    let report = check(ModelName::CasRegister, &h);
    assert_verdict(&report, Verdict::Invalid, &h);
    let counterexample = report.counterexample.expect("a counterexample");
    assert_eq!(counterexample.op.description, "read -> 1");
    assert_eq!(counterexample.op.process, 2);
    assert_eq!(counterexample.linearized, 2);
    assert_eq!(counterexample.state, "2");
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    // The write of 2 was acknowledged, yet a later read sees the older value.
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "write", json!(2))
        .invoke(2, "read", Json::Null)
        .ok(2, "read", json!(1))
        .ok(1, "write", json!(2))
        .op(3, "read", Json::Null, json!(1));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);

    // The same on a fresh register: the acknowledged write vanished, the read sees nil.
    let mut h = History::default();
    h.op(0, "write", json!(5), json!(5))
        .op(1, "read", Json::Null, Json::Null);
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);
}

#[test]
fn concurrent_ops_valid_through_one_interleaving_only() {
    // Everything overlaps. Only write 1, read 1, cas 1->2, read 2 explains the reads.
    let mut h = History::default();
    h.invoke(0, "write", json!(1))
        .invoke(1, "cas", json!([1, 2]))
        .invoke(2, "read", Json::Null)
        .invoke(3, "read", Json::Null)
        .ok(3, "read", json!(1))
        .ok(2, "read", json!(2))
        .ok(1, "cas", json!([1, 2]))
        .ok(0, "write", json!(1));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Valid, &h);

    // Real time forbids that interleaving if the read of 2 ends before the read of 1 starts.
    let mut h = History::default();
    h.invoke(0, "write", json!(1))
        .invoke(1, "cas", json!([1, 2]))
        .invoke(2, "read", Json::Null)
        .ok(2, "read", json!(2))
        .invoke(3, "read", Json::Null)
        .ok(3, "read", json!(1))
        .ok(1, "cas", json!([1, 2]))
        .ok(0, "write", json!(1));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);
}

#[test]
fn an_info_op_may_have_taken_effect() {
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "write", json!(2))
        .info(1, "write", json!("timed-out"))
        .op(0, "read", Json::Null, json!(2));
    let report = check(ModelName::CasRegister, &h);
    assert_verdict(&report, Verdict::Valid, &h);
    assert_eq!(report.unknown_outcome, 1);

    // ... even long after the client gave up on it, and it may be a cas.
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "cas", json!([1, 3]))
        .info(1, "cas", Json::Null)
        .op(0, "read", Json::Null, json!(1))
        .op(0, "read", Json::Null, json!(1))
        .op(0, "read", Json::Null, json!(3));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Valid, &h);
}

#[test]
fn an_info_op_may_never_have_taken_effect() {
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "write", json!(2))
        .info(1, "write", Json::Null)
        .op(0, "read", Json::Null, json!(1))
        // Process 2 never completes: also unknown.
        .invoke(2, "write", json!(3))
        .op(0, "read", Json::Null, json!(1));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Valid, &h);
}

#[test]
fn an_info_op_cannot_take_effect_before_its_invocation_nor_twice() {
    let mut h = History::default();
    h.op(0, "read", Json::Null, json!(2))
        .invoke(1, "write", json!(2))
        .info(1, "write", Json::Null);
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);

    // 1, then 2 (the info write), then 1 again: the info write cannot be undone.
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "write", json!(2))
        .info(1, "write", Json::Null)
        .op(0, "read", Json::Null, json!(2))
        .op(0, "read", Json::Null, json!(1));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);
}

#[test]
fn failed_ops_did_not_happen() {
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "write", json!(2))
        .fail(1, "write", json!(2))
        .op(0, "read", Json::Null, json!(2));
    assert_verdict(&check(ModelName::CasRegister, &h), Verdict::Invalid, &h);
}

#[test]
fn a_failed_cas_observes_only_with_etcd_semantics() {
    // The cas [1 2] failed although the register held 1 throughout.
    let mut h = History::default();
    h.op(0, "write", json!(1), json!(1))
        .invoke(1, "cas", json!([1, 2]))
        .fail(1, "cas", json!([1, 2]))
        .op(0, "read", Json::Null, json!(1));
    let parsed = history::parse(&h.text(), Format::Jsonl).expect("valid history");
    let (operations, _) = history::pair(&parsed.ops).expect("pairs");
    let jepsen =
        check_with(ModelName::CasRegister, &operations, &options(), false).expect("checkable");
    assert_eq!(jepsen.verdict, Verdict::Valid);
    let etcd =
        check_with(ModelName::CasRegister, &operations, &options(), true).expect("checkable");
    assert_eq!(etcd.verdict, Verdict::Invalid);
}

#[test]
fn knossos_edn_histories() {
    // Knossos' rethink-fail-minimal: the value is 0, then a write of 4 and a read of 3 overlap.
    let bad = r#"({:type :invoke, :f :write, :value 0, :process 0}
 {:type :ok, :f :write, :value 0, :process 0}
 ; Could have been 0 or 4, but not 3.
 {:type :invoke, :f :read, :value nil, :process 1}
 {:type :invoke, :f :write, :value 4, :process 2}
 {:type :ok, :f :read, :value 3, :process 1}
 {:type :ok, :f :write, :value 4, :process 2}
 {:type :invoke, :f :read, :value nil, :process 3}
 {:type :ok, :f :read, :value 4, :process 3})"#;
    let checked = check_text(bad, None, None, &options()).expect("checkable");
    assert_eq!(checked.format, Format::Edn);
    assert_eq!(checked.model, ModelName::CasRegister);
    assert_eq!(checked.report.verdict, Verdict::Invalid);
    let counterexample = checked.report.counterexample.expect("a counterexample");
    assert_eq!(counterexample.op.description, "read -> 3");

    let good = r#"[{:process 0, :type :invoke, :f :write, :value 1}
 {:process :nemesis, :type :info, :f :start, :value nil}
 {:process 1, :type :invoke, :f :cas, :value [1 2]}
 {:process 0, :type :ok, :f :write, :value 1}
 {:process 2, :type :invoke, :f :read, :value nil}
 {:process 1, :type :info, :f :cas, :value [1 2]}
 {:process 2, :type :ok, :f :read, :value 2}]"#;
    let checked = check_text(good, None, None, &options()).expect("checkable");
    assert_eq!(checked.skipped, 1);
    assert_eq!(checked.report.verdict, Verdict::Valid);
}

// ---- KV ----------------------------------------------------------------------------------------

fn kv(h: &mut History, process: u64, f: &str, key: &str, invoke: Json, ok: Json) {
    h.event(process, "invoke", f, Some(key), invoke)
        .event(process, "ok", f, Some(key), ok);
}

#[test]
fn a_lost_append_is_caught_in_its_key() {
    let mut h = History::default();
    kv(&mut h, 0, "put", "a", json!("x"), json!("x"));
    kv(&mut h, 1, "append", "b", json!("1"), json!("1"));
    kv(&mut h, 0, "append", "a", json!("y"), json!("y"));
    kv(&mut h, 1, "get", "b", Json::Null, json!("1"));
    kv(&mut h, 2, "get", "a", Json::Null, json!("x"));
    kv(&mut h, 2, "get", "c", Json::Null, Json::Null);
    let report = check(ModelName::Kv, &h);
    assert_verdict(&report, Verdict::Invalid, &h);
    assert_eq!(report.keys, 3);
    let counterexample = report.counterexample.expect("a counterexample");
    assert_eq!(counterexample.key.as_deref(), Some("a"));
    assert_eq!(counterexample.op.description, r#"get -> "x""#);
}

#[test]
fn concurrent_appends_in_either_order() {
    let mut h = History::default();
    h.event(0, "invoke", "append", Some("k"), json!("a"))
        .event(1, "invoke", "append", Some("k"), json!("b"))
        .event(2, "invoke", "get", Some("k"), Json::Null)
        .event(0, "ok", "append", Some("k"), json!("a"))
        .event(1, "ok", "append", Some("k"), json!("b"))
        .event(2, "ok", "get", Some("k"), json!("b"));
    kv(&mut h, 2, "get", "k", Json::Null, json!("ba"));
    assert_verdict(&check(ModelName::Kv, &h), Verdict::Valid, &h);
    kv(&mut h, 2, "get", "k", Json::Null, json!("ab"));
    assert_verdict(&check(ModelName::Kv, &h), Verdict::Invalid, &h);
}

// ---- Replica info ------------------------------------------------------------------------------

pub(super) fn info(master_epoch: i64, master: Option<i64>, epoch: i64, set: &[i64]) -> Json {
    json!({
        "master_epoch": master_epoch,
        "master_id": master,
        "sync_state_set_epoch": epoch,
        "sync_state_set": set,
    })
}

fn replica(h: &mut History, process: u64, kind: &str, f: &str, value: Json) {
    h.event(process, kind, f, Some("broker-a"), value);
}

#[test]
fn two_masters_in_one_epoch_are_caught() {
    // Two concurrent elections both claim master epoch 1, with different masters.
    let mut h = History::default();
    replica(&mut h, 0, "invoke", "elect", Json::Null);
    replica(&mut h, 1, "invoke", "elect", Json::Null);
    replica(&mut h, 0, "ok", "elect", info(1, Some(1), 1, &[1]));
    replica(&mut h, 1, "ok", "elect", info(1, Some(2), 1, &[2]));
    let report = check(ModelName::ReplicaInfo, &h);
    assert_verdict(&report, Verdict::Invalid, &h);
    assert_eq!(
        report
            .counterexample
            .expect("a counterexample")
            .key
            .as_deref(),
        Some("broker-a")
    );

    // Or as two readers see it.
    let mut h = History::default();
    replica(&mut h, 0, "invoke", "elect", json!({"broker_id": 1}));
    replica(&mut h, 0, "ok", "elect", info(1, Some(1), 1, &[1]));
    replica(&mut h, 1, "invoke", "read", Json::Null);
    replica(&mut h, 1, "ok", "read", info(1, Some(2), 1, &[2]));
    assert_verdict(&check(ModelName::ReplicaInfo, &h), Verdict::Invalid, &h);
}

#[test]
fn a_replica_info_life_is_valid() {
    let mut h = History::default();
    replica(&mut h, 0, "invoke", "elect", json!({"broker_id": 1}));
    replica(&mut h, 0, "ok", "elect", info(1, Some(1), 1, &[1]));
    // The master adds broker 2 to the SyncStateSet.
    replica(
        &mut h,
        1,
        "invoke",
        "alter",
        json!({"master_id": 1, "master_epoch": 1, "sync_state_set_epoch": 1, "sync_state_set": [1, 2]}),
    );
    replica(&mut h, 2, "invoke", "read", Json::Null);
    replica(&mut h, 1, "ok", "alter", json!({"sync_state_set_epoch": 2}));
    replica(&mut h, 2, "ok", "read", info(1, Some(1), 1, &[1]));
    // A stale alter (old SyncStateSet epoch) is rejected: fail, no effect.
    replica(
        &mut h,
        1,
        "invoke",
        "alter",
        json!({"master_id": 1, "master_epoch": 1, "sync_state_set_epoch": 1, "sync_state_set": [1]}),
    );
    replica(&mut h, 1, "fail", "alter", Json::Null);
    // The nemesis kills the master: the controller may elect on its own (unknown outcome).
    replica(&mut h, 3, "invoke", "elect", Json::Null);
    replica(&mut h, 3, "info", "elect", Json::Null);
    replica(&mut h, 2, "invoke", "read", Json::Null);
    replica(&mut h, 2, "ok", "read", info(2, Some(2), 3, &[2]));
    // Asking again while broker 2 lives changes nothing.
    replica(&mut h, 0, "invoke", "elect", Json::Null);
    replica(&mut h, 0, "ok", "elect", info(2, Some(2), 3, &[2]));
    assert_verdict(&check(ModelName::ReplicaInfo, &h), Verdict::Valid, &h);

    // A later read cannot go back to an older SyncStateSet epoch.
    let mut bad = History {
        lines: h.lines.clone(),
    };
    replica(&mut bad, 2, "invoke", "read", Json::Null);
    replica(&mut bad, 2, "ok", "read", info(2, Some(2), 2, &[2]));
    assert_verdict(&check(ModelName::ReplicaInfo, &bad), Verdict::Invalid, &bad);
}

// ---- The budget --------------------------------------------------------------------------------

#[test]
fn a_hopeless_search_gives_up_with_unknown_within_its_budget() {
    // 200 concurrent writes of distinct values, then a read of a value nobody wrote: refuting it
    // means trying every subset of the writes.
    let mut h = History::default();
    for p in 0..200 {
        h.invoke(p, "write", json!(p));
    }
    for p in 0..200 {
        h.ok(p, "write", json!(p));
    }
    h.op(500, "read", Json::Null, json!(-1));
    let options = CheckOptions {
        time_budget: Duration::from_secs(1),
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let report = check_text(&h.text(), None, Some(ModelName::CasRegister), &options)
        .expect("checkable")
        .report;
    let took = started.elapsed();
    println!(
        "gave up after {:.3} s: {:?}",
        took.as_secs_f64(),
        report.unknown_reason
    );
    assert_eq!(report.verdict, Verdict::Unknown);
    assert!(report.unknown_reason.is_some());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} on a 1 s budget"
    );
}
