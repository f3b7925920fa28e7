#!/usr/bin/env bash
# Checks deploy/k8s as far as a machine without a Kubernetes cluster or container runtime can:
#   1. every manifest parses as YAML, and `kubectl kustomize` renders the whole set (if kubectl
#      is installed);
#   2. the rendered objects are consistent: selectors match their pod labels, every StatefulSet
#      names an existing headless Service, probes name declared ports, every ConfigMap file and
#      Secret key a pod uses exists, PodDisruptionBudgets select pods;
#   3. every config file of the ConfigMap is accepted by the `rocketraft` binary: each role is
#      started with it exactly as its pod's command builds it (the cluster secret written in
#      front), on loopback ports and a temporary data directory, until it prints its ready line
#      or has run for a few seconds without refusing its config; then it is stopped.
#
# Usage: deploy/validate.sh [path/to/rocketraft]   (default: target/release, then target/debug)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${1:-}"
if [ -z "$bin" ]; then
  for candidate in "${CARGO_TARGET_DIR:-$root/target}/release/rocketraft" "${CARGO_TARGET_DIR:-$root/target}/debug/rocketraft"; do
    if [ -x "$candidate" ]; then bin="$candidate"; break; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "no rocketraft binary: build it (cargo build --bin rocketraft) or pass its path" >&2
  exit 2
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Parse and render.
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize "$here/k8s" > "$work/rendered.yaml"
  echo "ok: kubectl kustomize rendered deploy/k8s"
else
  echo "kubectl not found: checking the files one by one, without kustomize" >&2
  for f in "$here"/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] && continue
    cat "$f"; echo "---"
  done > "$work/rendered.yaml"
fi

# 2. Consistency; writes each ConfigMap file to $work/config/.
python3 - "$work/rendered.yaml" "$work/config" <<'PY'
import os, sys, yaml

rendered, out = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
errors = []
by_kind = {}
for d in docs:
    for key in ("apiVersion", "kind", "metadata"):
        if key not in d:
            errors.append(f"an object without {key}: {d}")
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d

configmaps = by_kind.get("ConfigMap", {})
services = by_kind.get("Service", {})
os.makedirs(out, exist_ok=True)
for cm in configmaps.values():
    for name, text in cm.get("data", {}).items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)

def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())

workloads = list(by_kind.get("StatefulSet", {}).values()) + list(by_kind.get("Deployment", {}).values())
pod_labels = []
for w in workloads:
    name = f'{w["kind"]} {w["metadata"]["name"]}'
    spec = w["spec"]
    template = spec["template"]
    labels = template["metadata"]["labels"]
    pod_labels.append(labels)
    if not matches(spec["selector"]["matchLabels"], labels):
        errors.append(f"{name}: selector {spec['selector']} does not match its pod labels {labels}")
    if w["kind"] == "StatefulSet":
        svc = services.get(spec["serviceName"])
        if svc is None:
            errors.append(f"{name}: serviceName {spec['serviceName']} is no Service")
        elif svc["spec"].get("clusterIP") != "None":
            errors.append(f"{name}: its Service {spec['serviceName']} is not headless")
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    for c in template["spec"]["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        numbers = set(ports.values())
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if not probe:
                continue
            for kind in ("tcpSocket", "httpGet", "grpc"):
                if kind in probe:
                    port = probe[kind]["port"]
                    if (isinstance(port, str) and port not in ports) or (isinstance(port, int) and port not in numbers):
                        errors.append(f"{name}: {probe_name} names port {port!r}, not declared")
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes and m["name"] not in claims:
                errors.append(f"{name}: mount {m['name']} has no volume")
        text = " ".join(c.get("command", []) + c.get("args", []))
        for v in volumes.values():
            if "configMap" in v:
                cm = configmaps.get(v["configMap"]["name"])
                if cm is None:
                    errors.append(f"{name}: ConfigMap {v['configMap']['name']} missing")
                    continue
                for m in c.get("volumeMounts", []):
                    if m["name"] == v["name"]:
                        for word in text.replace(";", " ").split():
                            if word.startswith(m["mountPath"] + "/"):
                                file = word[len(m["mountPath"]) + 1:]
                                if file not in cm.get("data", {}):
                                    errors.append(f"{name}: uses {word}, not a file of ConfigMap {cm['metadata']['name']}")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] != "rocketraft-cluster-secret":
                errors.append(f"{name}: Secret {ref['name']} is not the documented one")
for svc in services.values():
    sel = svc["spec"].get("selector", {})
    if not any(matches(sel, l) for l in pod_labels):
        errors.append(f"Service {svc['metadata']['name']}: selector {sel} selects no pod")
for pdb in by_kind.get("PodDisruptionBudget", {}).values():
    sel = pdb["spec"]["selector"]["matchLabels"]
    if not any(matches(sel, l) for l in pod_labels):
        errors.append(f"PodDisruptionBudget {pdb['metadata']['name']}: selects no pod")
if errors:
    print("\n".join("error: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(docs)} objects consistent; ConfigMap files: {sorted(os.listdir(out))}")
PY

# 3. Every config file through the binary, as the pods start it.
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
with_secret() { { printf 'cluster_secret = "%s"\n' "$secret"; cat "$work/config/$1"; } > "$work/run-$1"; }

# start NAME ARGS...: runs the binary, waits up to 20 s for its ready line; a process that
# exits first refused something (its stderr is shown). One still running without the line
# after 20 s took its config (unknown or bad keys stop it at once) but waits for peers that
# do not exist here (the other controllers, the NameServers).
start() {
  local name="$1"; shift
  "$bin" --threads 1 "$@" > "$work/$name.out" 2> "$work/$name.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do
    if grep -q " is ready" "$work/$name.out" 2>/dev/null; then
      echo "ok: $name accepted its config and is ready"
      kill "$pid"; wait "$pid" 2>/dev/null || true
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      # A broker in controller mode asks the controllers for its id before it serves; their
      # names (the StatefulSet's headless Service) resolve only inside the cluster. Stopping
      # there means every key was read and accepted (unknown or bad keys stop it earlier).
      if grep -q "no controller answered" "$work/$name.err" \
        && grep -q "failed to lookup address information" "$work/$name.err"; then
        echo "ok: $name accepted its config (it stopped at its first controller call: the controllers' names resolve only inside the cluster)"
        return 0
      fi
      echo "error: $name exited with its config:" >&2
      tail -n 20 "$work/$name.err" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "ok: $name accepted its config (still waiting for its peers after 20 s)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

with_secret controller.toml
start controller "controller" --config "$work/run-controller.toml" --node-id 1 \
  --listen "127.0.0.1:$(free_port)" --raft-listen "127.0.0.1:$(free_port)" --data-dir "$work/raft"
with_secret namesrv.toml
start namesrv "namesrv" --config "$work/run-namesrv.toml" --listen "127.0.0.1:$(free_port)"
for f in "$work"/config/broker-*.toml; do
  b="$(basename "$f")"
  with_secret "$b"
  start "${b%.toml}" "broker" --config "$work/run-$b" --broker-listen "127.0.0.1:$(free_port)" \
    --ha-port 0 --store-dir "$work/store-${b%.toml}" --segment-size 4194304
done
echo "deploy/k8s: all checks passed"
