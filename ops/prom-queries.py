#!/usr/bin/env python3
"""Evaluates the operations artefacts' PromQL against a live Prometheus (called by
exporter/tests/prometheus-e2e.sh while it scrapes the demo):

  - every query of ops/grafana-regcache.json (each panel target, and each template variable's
    label_values() as `count by (label) (selector)`), with the dashboard variables set to "all"
    (`.*`), $__rate_interval/$__interval to 1m and $__range to 5m: the result must be
    non-empty and every value finite (NaN/Inf fail: a ratio over an idle window, a quantile
    of no observations);
  - every regcache_* metric named in ops/regcache-alerts.yml must be served (`count(NAME)`);
  - every alert expression must evaluate without error and return nothing (the demo is a
    healthy process: no alert may fire on it).

Prints `ok ...` / `not ok ...` lines; exit status 1 if any is `not ok`.

    ops/prom-queries.py http://127.0.0.1:9090 [JOB]    (JOB: the demo's job_id label)
"""
import json
import math
import os
import re
import sys
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def query(api, q):
    url = api + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    if body.get("status") != "success":
        raise ValueError(body.get("error", "query failed"))
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    if data["resultType"] != "vector":
        raise ValueError("result type " + data["resultType"])
    return data["result"]


def substitute(expr, job):
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m")
    expr = expr.replace("$__range", "5m")
    expr = expr.replace('job_id=~"$job_id"', f'job_id=~"{job}"')
    expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)
    return expr


def dashboard_queries(dash):
    """(name, PromQL) for every panel target and variable of the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((f'panel "{p["title"]}" {t["refId"]}', t["expr"]))

    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q.strip())
        if not m:
            out.append((f"variable {v['name']}", None))
            continue
        # Only series that have the label count (count by of a series without it gives one
        # result without the label): an explicit `label!=""` matcher.
        sel, label = m.group(1).strip(), m.group(2)
        sel = sel[:-1] + f',{label}!=""}}' if sel.endswith("}") else sel + f'{{{label}!=""}}'
        out.append((f"variable {v['name']}", f"count by ({label}) ({sel})"))
    return out


def main():
    api = sys.argv[1].rstrip("/")
    job = sys.argv[2] if len(sys.argv) > 2 else ".*"
    bad = 0

    def report(good, what):
        nonlocal bad
        print(("ok " if good else "not ok ") + what)
        bad += not good

    dash = json.load(open(os.path.join(HERE, "grafana-regcache.json")))
    qs = dashboard_queries(dash)
    for name, expr in qs:
        if expr is None:
            report(False, f"dashboard {name}: not a label_values() query")
            continue
        q = substitute(expr, job)
        try:
            res = query(api, q)
        except ValueError as e:
            report(False, f"dashboard {name}: {e}: {q}")
            continue
        vals = [float(r["value"][1]) for r in res]
        if not vals:
            report(False, f"dashboard {name}: empty result: {q}")
        elif not all(math.isfinite(v) for v in vals):
            report(False, f"dashboard {name}: non-finite {vals}: {q}")
        else:
            shown = ", ".join(f"{v:.4g}" for v in vals[:3]) + (" ..." if len(vals) > 3 else "")
            report(True, f"dashboard {name}: {len(vals)} series ({shown})")

    rules = open(os.path.join(HERE, "regcache-alerts.yml")).read()
    names = sorted(set(re.findall(r"\b(regcache_[a-z_]+)\b", rules)))
    missing = [n for n in names if not query(api, f"count({n})")]
    report(not missing, f"alerts: all {len(names)} regcache_* metrics they name are served"
           + (f" (missing: {', '.join(missing)})" if missing else ""))

    # The alert expressions, as promtool reads them (YAML block scalars): a small parser is
    # enough for this file's layout (`expr: |` followed by a more indented block, or inline).
    exprs = []
    lines = rules.splitlines()
    i = 0
    alert = None
    while i < len(lines):
        m = re.match(r"\s*- alert: (\w+)", lines[i])
        if m:
            alert = m.group(1)
        m = re.match(r"(\s*)expr: (.*)$", lines[i])
        if m:
            if m.group(2).strip() == "|":
                indent = len(m.group(1))
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i])
                    i += 1
                exprs.append((alert, "\n".join(block)))
                continue
            exprs.append((alert, m.group(2)))
        i += 1
    for alert, expr in exprs:
        try:
            res = query(api, expr)
        except ValueError as e:
            report(False, f"alert {alert}: {e}")
            continue
        report(not res, f"alert {alert}: silent on the healthy demo"
               + ("" if not res else f" (fires: {res[:2]})"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
