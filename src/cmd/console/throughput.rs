//! `/throughput`: a live chart of every broker's putTps and getTransferredTps (the 10-second
//! rates of GET_BROKER_RUNTIME_INFO), drawn by a little plain JS that polls `/api/throughput`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use rocketraft_remoting::{request_code, response_code, RemotingCommand};
use serde::Deserialize;

use super::cluster::call_failure;
use super::html;
use super::{Console, PageError};

/// GET_BROKER_RUNTIME_INFO of one broker: its `table`, or why not.
pub(crate) async fn runtime_info(
    console: &Console,
    addr: &str,
) -> Result<BTreeMap<String, String>, String> {
    let request = RemotingCommand::request(request_code::GET_BROKER_RUNTIME_INFO);
    let response = console
        .api
        .call(addr, request, &[response_code::SUCCESS])
        .await
        .map_err(|e| call_failure(console, "runtime info", addr, e))?;
    #[derive(Deserialize)]
    struct Table {
        table: BTreeMap<String, String>,
    }
    let t: Table = serde_json::from_slice(&response.body)
        .map_err(|e| format!("undecodable runtime info: {e}"))?;
    Ok(t.table)
}

/// The first (10-second) rate of a `"a b c"` TPS entry; 0 if absent or not a number.
pub(crate) fn first_rate(table: &BTreeMap<String, String>, key: &str) -> f64 {
    table
        .get(key)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .unwrap_or(0.0)
}

/// `GET /api/throughput`: `{"time": ms, "brokers": [{"brokerName", "brokerId", "addr",
/// "putTps", "getTransferredTps"} or {..., "error"}]}`.
pub(crate) async fn api(State(console): State<Console>) -> Response {
    let info = match console.api.cluster_info(&console.namesrv).await {
        Ok(info) => info,
        Err(e) => {
            let page = console.namesrv_error("Listing the brokers", e);
            let body = serde_json::json!({ "error": page.detail });
            return (page.status, json_body(&body)).into_response();
        }
    };
    let mut brokers = Vec::new();
    for (name, set) in &info.broker_addr_table {
        for (id, addr) in &set.broker_addrs {
            let entry = match runtime_info(&console, addr).await {
                Ok(t) => serde_json::json!({
                    "brokerName": name,
                    "brokerId": id,
                    "addr": addr,
                    "putTps": first_rate(&t, "putTps"),
                    "getTransferredTps": first_rate(&t, "getTransferredTps"),
                }),
                Err(e) => serde_json::json!({
                    "brokerName": name, "brokerId": id, "addr": addr, "error": e,
                }),
            };
            brokers.push(entry);
        }
    }
    let body = serde_json::json!({
        "time": rocketraft_common::time::now_ms(),
        "brokers": brokers,
    });
    json_body(&body).into_response()
}

fn json_body(value: &serde_json::Value) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
}

const SCRIPT: &str = r#"
const canvas = document.getElementById('chart');
const ctx = canvas.getContext('2d');
const status = document.getElementById('status');
const tbody = document.getElementById('now');
const points = [];           // {time, series: {label: value}}
const MAX_POINTS = 90;
const COLORS = ['#0a7a2f', '#2c5aa0', '#c0392b', '#8e44ad', '#d35400', '#16a085'];

function text(t) { return document.createTextNode(String(t)); }

function draw() {
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  const labels = [...new Set(points.flatMap(p => Object.keys(p.series)))];
  let max = 1;
  for (const p of points) for (const v of Object.values(p.series)) max = Math.max(max, v);
  ctx.strokeStyle = '#d8dde6'; ctx.fillStyle = '#6b7685'; ctx.font = '12px sans-serif';
  for (let i = 0; i <= 4; i++) {
    const y = pad + (h - 2 * pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 10, y); ctx.stroke();
    ctx.fillText((max * (4 - i) / 4).toFixed(1), 2, y + 4);
  }
  labels.forEach((label, k) => {
    ctx.strokeStyle = COLORS[k % COLORS.length]; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((p, i) => {
      const x = pad + (w - pad - 10) * i / Math.max(1, MAX_POINTS - 1);
      const y = h - pad - (h - 2 * pad) * (p.series[label] || 0) / max;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke(); ctx.lineWidth = 1;
    ctx.fillStyle = COLORS[k % COLORS.length];
    ctx.fillText(label, pad + 10 + 260 * (k % 4), 14 + 14 * Math.floor(k / 4));
  });
}

async function poll() {
  try {
    const r = await fetch('/api/throughput', {cache: 'no-store'});
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.status);
    const series = {};
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    for (const b of data.brokers) {
      const row = document.createElement('tr');
      const cells = [b.brokerName, b.brokerId, b.addr,
                     b.error ? '-' : b.putTps.toFixed(2),
                     b.error ? '-' : b.getTransferredTps.toFixed(2), b.error || ''];
      for (const c of cells) { const td = document.createElement('td'); td.appendChild(text(c)); row.appendChild(td); }
      tbody.appendChild(row);
      if (!b.error) {
        series[b.brokerName + '/' + b.brokerId + ' put'] = b.putTps;
        series[b.brokerName + '/' + b.brokerId + ' get'] = b.getTransferredTps;
      }
    }
    points.push({time: data.time, series});
    if (points.length > MAX_POINTS) points.shift();
    status.textContent = 'updated ' + new Date(data.time).toISOString();
    draw();
  } catch (e) {
    status.textContent = 'no data: ' + e.message;
  }
}
poll();
setInterval(poll, 2000);
"#;

pub(crate) async fn page(State(_console): State<Console>) -> Result<Html<String>, PageError> {
    let body = format!(
        "<p>Messages per second over the last 10 s, per broker (GET_BROKER_RUNTIME_INFO \
         putTps and getTransferredTps), refreshed every 2 s. <span id=\"status\" \
         class=\"muted\">loading</span></p>\n\
         <canvas id=\"chart\" width=\"1100\" height=\"360\" style=\"background:#fff;border:1px solid #d8dde6\"></canvas>\n\
         <h2>Now</h2>\n<table><thead><tr><th>broker set</th><th>broker id</th><th>address</th>\
         <th>put TPS</th><th>get TPS</th><th>error</th></tr></thead><tbody id=\"now\"></tbody></table>\n\
         <p class=\"muted\">JSON: <a href=\"/api/throughput\">/api/throughput</a></p>\n\
         <script>{SCRIPT}</script>\n"
    );
    Ok(html::page("Throughput", "/throughput", &body))
}
