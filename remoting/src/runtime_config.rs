//! The rule RocketMQ's UPDATE_BROKER_CONFIG (25) and UPDATE_CONTROLLER_CONFIG (1009) share
//! here: the body is properties text, and it is applied all of it or nothing. A key of the
//! server's black list refuses the whole request (NO_PERMISSION, RocketMQ's text); a key the
//! server does not know refuses it (INVALID_PARAMETER, naming the keys); a real setting that
//! only takes effect at start refuses it (NO_PERMISSION, naming the keys and the ones that can
//! change at runtime). Only when every key is live are the values applied.

use rocketraft_common::properties::{Entry, Properties};

use crate::{response_code, Refusal};

/// What one server's runtime update accepts.
pub struct RuntimeKeys<'a> {
    /// `broker` or `controller`: named in the refusals.
    pub server: &'a str,
    /// Keys whose presence refuses the request (RocketMQ's `configBlackList`).
    pub black_list: &'a [&'a str],
    /// The keys that change at runtime, as the refusal of a start-only key lists them.
    pub live_keys: &'a str,
    /// When start-only keys take effect and how to change them, e.g. "when the broker starts:
    /// change the config file and restart".
    pub start_only: &'a str,
}

/// Parses `body` and sorts its keys by [`RuntimeKeys`]; `apply_live` is called for each entry
/// and answers `None` when the key is not live, else applies it to the caller's pending
/// values (a bad value refuses the request); `is_setting` tells a start-only setting from an
/// unknown key. Returns the parsed properties when every key was live and applied; the caller
/// then commits its pending values. An empty body answers `Ok(None)`: nothing to change.
pub fn sort_update(
    body: &[u8],
    rules: &RuntimeKeys<'_>,
    mut apply_live: impl FnMut(&Entry) -> Option<Result<(), Refusal>>,
    is_setting: impl Fn(&str) -> bool,
) -> Result<Option<Properties>, Refusal> {
    if body.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).map_err(|_| {
        Refusal::new(
            response_code::SYSTEM_ERROR,
            "UnsupportedEncodingException: the body is not UTF-8",
        )
    })?;
    let props = Properties::parse(text).map_err(|e| {
        tracing::info!(error = %e, server = rules.server, "config update body is not properties text");
        Refusal::system_error("string2Properties error")
    })?;
    if props
        .entries()
        .iter()
        .any(|e| rules.black_list.contains(&e.key.as_str()))
    {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            "Can not update config in black list.",
        ));
    }
    let mut unknown = Vec::new();
    let mut fixed = Vec::new();
    for entry in props.entries() {
        match apply_live(entry) {
            Some(applied) => applied?,
            None if is_setting(&entry.key) => fixed.push(entry.key.as_str()),
            None => unknown.push(entry.key.as_str()),
        }
    }
    if !unknown.is_empty() {
        return Err(Refusal::new(
            response_code::INVALID_PARAMETER,
            format!(
                "no such {} config key: {}; nothing was changed",
                rules.server,
                unknown.join(", ")
            ),
        ));
    }
    if !fixed.is_empty() {
        return Err(Refusal::new(
            response_code::NO_PERMISSION,
            format!(
                "Can not update config at runtime: {} (they take effect {}). Changeable at \
                 runtime: {}; nothing was changed",
                fixed.join(", "),
                rules.start_only,
                rules.live_keys
            ),
        ));
    }
    Ok(Some(props))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RuntimeKeys<'static> = RuntimeKeys {
        server: "test",
        black_list: &["configBlackList"],
        live_keys: "a",
        start_only: "at start",
    };

    fn sort(body: &str, applied: &mut Vec<String>) -> Result<Option<Properties>, Refusal> {
        sort_update(
            body.as_bytes(),
            &RULES,
            |e| {
                (e.key == "a").then(|| {
                    if e.value == "bad" {
                        Err(Refusal::new(response_code::INVALID_PARAMETER, "bad a"))
                    } else {
                        applied.push(e.value.clone());
                        Ok(())
                    }
                })
            },
            |k| k == "fixed",
        )
    }

    #[test]
    fn every_key_live_or_the_whole_update_refused() {
        let mut applied = Vec::new();
        assert!(sort("", &mut applied).expect("empty").is_none());
        let props = sort("a=1\n", &mut applied).expect("live").expect("props");
        assert_eq!(props.entries().len(), 1);
        assert_eq!(applied, ["1"]);
        for (body, code, text) in [
            (
                "a=2\nconfigBlackList=x\n",
                response_code::NO_PERMISSION,
                "black list",
            ),
            (
                "a=2\nnope=1\n",
                response_code::INVALID_PARAMETER,
                "no such test config key: nope",
            ),
            (
                "a=2\nfixed=1\n",
                response_code::NO_PERMISSION,
                "at runtime: fixed (they take effect at start)",
            ),
            ("a=bad\n", response_code::INVALID_PARAMETER, "bad a"),
        ] {
            let refused = sort(body, &mut Vec::new()).expect_err(body);
            assert_eq!(refused.code, code, "{body}");
            assert!(refused.remark.contains(text), "{body}: {}", refused.remark);
        }
        let refused = sort_update(&[0xff, 0xfe], &RULES, |_| None, |_| false).expect_err("utf8");
        assert_eq!(refused.code, response_code::SYSTEM_ERROR);
    }
}
