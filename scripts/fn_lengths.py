#!/usr/bin/env python3
"""Function lengths of the workspace's non-test Rust code (issue 14's figures).

Counts every `fn` body (signature line to closing brace) in tracked `.rs` files outside
`tests/`, `benches/` and `#[cfg(test)]` modules. Braces inside strings, chars and comments are
skipped well enough for this code base. Usage: scripts/fn_lengths.py [--list N]
"""
import re
import subprocess
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def strip(line, state):
    """Removes strings, chars and comments; `state` carries block comments and raw strings."""
    out = []
    i = 0
    while i < len(line):
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"] = False
            i = j + 2
            continue
        if state["raw"]:
            j = line.find('"' + "#" * state["raw_hashes"], i)
            if j < 0:
                return "".join(out)
            state["raw"] = False
            i = j + 1 + state["raw_hashes"]
            continue
        if state["str"]:
            c = line[i]
            if c == "\\":
                i += 2
                continue
            if c == '"':
                state["str"] = False
            i += 1
            continue
        c = line[i]
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        m = re.match(r'b?r(#*)"', line[i:])
        if m and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"] = True
            state["raw_hashes"] = len(m.group(1))
            i += len(m.group(0))
            continue
        if c == '"':
            state["str"] = True
            i += 1
            continue
        m = re.match(r"'(\\.|[^\\'])'", line[i:]) or re.match(r"'\\u\{[0-9a-fA-F]+\}'", line[i:])
        if m:
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    state = {"block": False, "raw": False, "raw_hashes": 0, "str": False}
    clean = [strip(l, state) for l in lines]
    out = []
    test_from = None
    for n, l in enumerate(lines):
        if l.strip() == "#[cfg(test)]" and n + 1 < len(lines) and lines[n + 1].lstrip().startswith("mod "):
            test_from = n
            break
    for n, l in enumerate(lines):
        if test_from is not None and n >= test_from:
            break
        m = FN.match(l)
        if not m:
            continue
        depth = 0
        opened = False
        for k in range(n, len(lines)):
            text = clean[k]
            if not opened and ";" in text and "{" not in text:
                break  # a declaration without a body
            for ch in text:
                if ch == "{":
                    depth += 1
                    opened = True
                elif ch == "}":
                    depth -= 1
            if opened and depth <= 0:
                out.append((k - n + 1, path, n + 1, m.group(7)))
                break
    return out


def main():
    files = subprocess.run(["git", "ls-files", "*.rs"], capture_output=True, text=True, check=True).stdout.split()
    files = [f for f in files if "/tests/" not in "/" + f and "/benches/" not in "/" + f]
    fns = []
    for f in files:
        fns.extend(functions(f))
    fns.sort(reverse=True)
    over70 = [f for f in fns if f[0] > 70]
    over150 = [f for f in fns if f[0] > 150]
    print(f"functions: {len(fns)}; over 70 lines: {len(over70)}; over 150 lines: {len(over150)}")
    limit = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] == "--list" else 0
    for length, path, line, name in fns[:limit]:
        print(f"{length:5} {path}:{line} {name}")


if __name__ == "__main__":
    main()
