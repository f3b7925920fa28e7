//! The console's HTML: escaping, the common layout and small formatting helpers.

use axum::response::Html;

/// `text` safe inside HTML text and double- or single-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const NAV: &[(&str, &str)] = &[
    ("/", "Cluster"),
    ("/topics", "Topics"),
    ("/groups", "Consumer groups"),
    ("/messages", "Messages"),
    ("/throughput", "Throughput"),
];

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header b{font-size:18px}
header a{color:#c9d3e3;text-decoration:none}
header a.on{color:#fff;border-bottom:2px solid #f39c12}
main{padding:16px 24px}
h1{font-size:22px;margin:8px 0 16px}
h2{font-size:17px;margin:20px 0 8px}
table{border-collapse:collapse;background:#fff;margin-bottom:12px}
th,td{border:1px solid #d8dde6;padding:4px 10px;text-align:left;font-size:14px}
th{background:#eef1f5}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.master{color:#0a7a2f;font-weight:600}
.slave{color:#2c5aa0}
.error{background:#fdecea;border:1px solid #f5c2bd;padding:8px 12px;max-width:960px}
.notice{background:#e8f5e9;border:1px solid #b7dfb9;padding:8px 12px;max-width:960px}
.muted{color:#6b7685}
form.inline{display:inline}
fieldset{border:1px solid #d8dde6;background:#fff;margin:8px 0;max-width:960px}
input,select,button{font-size:14px;margin:2px 6px 2px 0}
pre{background:#fff;border:1px solid #d8dde6;padding:8px;white-space:pre-wrap;word-break:break-all;max-width:1100px}
";

/// A whole page: the header with the navigation (`active` is the current section's path) and
/// `body`, which the caller has escaped.
pub(crate) fn page(title: &str, active: &str, body: &str) -> Html<String> {
    let mut nav = String::new();
    for (href, label) in NAV {
        let class = if *href == active { " class=\"on\"" } else { "" };
        nav.push_str(&format!("<a href=\"{href}\"{class}>{label}</a>"));
    }
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} - Rocketraft console</title><style>{STYLE}</style></head>\n\
         <body><header><b>Rocketraft</b>{nav}</header>\n<main>\n<h1>{title}</h1>\n{body}</main></body></html>\n",
        title = esc(title),
    ))
}

/// A table: escaped header cells and rows of cells given as already-rendered HTML.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><tr>");
    for h in headers {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(cell);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

/// A text cell.
pub(crate) fn td(text: impl std::fmt::Display) -> String {
    format!("<td>{}</td>", esc(&text.to_string()))
}

/// A numeric (right-aligned) cell.
pub(crate) fn num(value: impl std::fmt::Display) -> String {
    format!("<td class=\"n\">{}</td>", esc(&value.to_string()))
}

/// A cell linking to `href` (already URL-encoded) with escaped text.
pub(crate) fn link(href: &str, text: &str) -> String {
    format!("<td><a href=\"{}\">{}</a></td>", esc(href), esc(text))
}

/// A role cell, coloured: `master` or `slave` (or whatever the broker said).
pub(crate) fn role(role: &str) -> String {
    let lower = role.to_ascii_lowercase();
    let class = match lower.as_str() {
        "master" => "master",
        "slave" => "slave",
        _ => "muted",
    };
    format!("<td class=\"{class}\">{}</td>", esc(&lower))
}

/// A notice box (escaped).
pub(crate) fn notice(text: &str) -> String {
    format!("<p class=\"notice\">{}</p>\n", esc(text))
}

/// A warning box (escaped), for a part of a page that could not be filled.
pub(crate) fn warning(text: &str) -> String {
    format!("<p class=\"error\">{}</p>\n", esc(text))
}

/// A muted note (escaped): something missing that is not an error.
pub(crate) fn note(text: &str) -> String {
    format!("<p class=\"muted\">{}</p>\n", esc(text))
}

/// Milliseconds since the epoch as UTC text; "-" for none.
pub(crate) fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let (y, m, d, hh, mm, ss) = rocketraft_common::time::utc_fields(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

/// `{1,2,3}`.
pub(crate) fn id_set<T: std::fmt::Display>(ids: impl IntoIterator<Item = T>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    format!("{{{}}}", ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        let page = page("<b>", "/", "").0;
        assert!(page.contains("<h1>&lt;b&gt;</h1>"));
    }
}
