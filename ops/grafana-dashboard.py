#!/usr/bin/env python3
"""Writes ops/grafana-regcache.json, the Grafana dashboard of regcache's metrics (the names
served by exporter/src/collector.rs, and the LD_PRELOAD shim's regcache_shim_* of
mpi-shim/shim.c), per job (`job_id`) and per rank (`rank`).

    ops/grafana-dashboard.py            # rewrite the JSON
    ops/grafana-dashboard.py --check    # exit 1 if the JSON is not what this script writes

Every panel query is evaluated against a real Prometheus scraping the demo by
exporter/tests/prometheus-e2e.sh (non-empty, finite results required), so edit the queries
here, run this script, and run that test.
"""
import json
import os
import sys

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grafana-regcache.json")

SEL = 'job_id=~"$job_id",rank=~"$rank"'
BY = "job_id, rank"
RI = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


def rate(metric, extra="", by=BY):
    sel = SEL + ("," + extra if extra else "")
    return f"sum by ({by}) (rate({metric}{{{sel}}}[{RI}]))"


HIT = 'result="hit"'
HIT_RATE = (
    f'{rate("regcache_lookups_total", HIT)}\n/\n'
    f'({rate("regcache_lookups_total")}\n + {rate("regcache_uncacheable_requests_total")})'
)
HIT_RATE_ALL = (
    f'sum(rate(regcache_lookups_total{{{SEL},result="hit"}}[{RI}]))\n/\n'
    f"(sum(rate(regcache_lookups_total{{{SEL}}}[{RI}]))\n"
    f" + sum(rate(regcache_uncacheable_requests_total{{{SEL}}}[{RI}])))"
)

panels = []
_id = 0


def panel(kind, title, desc, targets, w, h, x, y, unit=None, extra=None):
    global _id
    _id += 1
    p = {
        "id": _id,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "targets": [],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    for i, t in enumerate(targets):
        expr, legend = t[0], t[1]
        tgt = {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
        if len(t) > 2:
            tgt.update(t[2])
        p["targets"].append(tgt)
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if kind == "timeseries":
        p["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if kind == "stat":
        p["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
    if extra:
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(p.get(k), dict):
                p[k].update(v)
            else:
                p[k] = v
    panels.append(p)


def row(title, y):
    global _id
    _id += 1
    panels.append({"id": _id, "type": "row", "title": title, "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})


def thresholds(*steps):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in steps]}


# --- overview ---------------------------------------------------------------------------------
row("Overview (selected jobs and ranks)", 0)
panel("stat", "Hit rate",
      "hits / (hits + misses + one-use registrations) over the selection. Below 50% with traffic: "
      "RegcacheHitRateCollapsed.",
      [(HIT_RATE_ALL, "hit rate")], 6, 4, 0, 1, "percentunit",
      {"fieldConfig": {"defaults": {"min": 0, "max": 1,
                                    "thresholds": thresholds((None, "red"), (0.5, "orange"), (0.8, "green"))}}})
panel("stat", "Processes caching",
      "Processes whose caches cache (regcache_caching = 1).",
      [(f"sum(regcache_caching{{{SEL}}})", "caching")], 6, 4, 6, 1, "none",
      {"fieldConfig": {"defaults": {"thresholds": thresholds((None, "green"))}}})
panel("stat", "Processes NOT caching",
      "Processes registering every buffer per use: no monitor (RegcacheCachingOff) or a monitor "
      "that failed (RegcacheMonitorBroken). Run `regcache doctor` on their nodes.",
      [(f"count(regcache_caching{{{SEL}}}) - sum(regcache_caching{{{SEL}}})", "not caching")],
      6, 4, 12, 1, "none",
      {"fieldConfig": {"defaults": {"thresholds": thresholds((None, "green"), (1, "red"))}}})
panel("stat", "Pinned memory",
      "Memory registered (pinned) by the selected processes' caches, cached or in use.",
      [(f"sum(regcache_registered_bytes{{{SEL}}})", "pinned")], 6, 4, 18, 1, "bytes",
      {"fieldConfig": {"defaults": {"thresholds": thresholds((None, "blue"))}}})

# --- per rank -------------------------------------------------------------------------------------
row("Per job and rank", 5)
panel("timeseries", "Hit rate",
      "hits / (hits + misses + one-use registrations), per rank.",
      [(HIT_RATE, "job {{job_id}} rank {{rank}}")], 12, 8, 0, 6, "percentunit",
      {"fieldConfig": {"defaults": {"min": 0, "max": 1}}})
panel("timeseries", "Lookups: hits and misses",
      "Lookups per second by result. A miss registers the range and caches it.",
      [(rate("regcache_lookups_total", by=BY + ", result"), "{{result}} job {{job_id}} rank {{rank}}")],
      12, 8, 12, 6, "ops")
panel("timeseries", "Re-registrations",
      "Misses for memory whose registration had been invalidated: buffers unmapped and mapped "
      "again. RegcacheReregistrationStorm above 100/s and 25% of lookups.",
      [(rate("regcache_reregistrations_total"), "job {{job_id}} rank {{rank}}")],
      8, 8, 0, 14, "ops")
panel("timeseries", "Invalidations",
      "Cached registrations dropped because their pages changed (unmap, remap, madvise).",
      [(rate("regcache_invalidated_entries_total"), "job {{job_id}} rank {{rank}}")],
      8, 8, 8, 14, "ops")
panel("timeseries", "False positives and drains",
      "Drains of the monitor's queue, and false positives: reported entries whose pages did not "
      "change (kept cached) and drains that invalidated nothing. "
      "RegcacheFalsePositiveStorm above 100/s and 10% of lookups.",
      [(rate("regcache_false_positives_total"), "false positives job {{job_id}} rank {{rank}}"),
       (rate("regcache_drains_total"), "drains job {{job_id}} rank {{rank}}")],
      8, 8, 16, 14, "ops")
panel("timeseries", "One-use (uncacheable) registrations",
      "Requests registered for their use only, never cached: no working monitor, or memory the "
      "monitor cannot watch.",
      [(rate("regcache_uncacheable_requests_total"), "job {{job_id}} rank {{rank}}")],
      8, 8, 0, 22, "ops")
panel("timeseries", "Pinned memory vs RLIMIT_MEMLOCK",
      "Bytes registered per rank, and the rank's RLIMIT_MEMLOCK soft limit "
      "(regcache_memlock_limit_bytes; no line for an unlimited rank). The cache bounds itself "
      "at 3/4 of the limit (or its max_bytes): there it evicts (next panel), and when the limit "
      "itself is hit registrations fail with class=resources. RegcachePinnedNearMemlock above "
      "70% for 15 minutes.",
      [(f"sum by ({BY}) (regcache_registered_bytes{{{SEL}}})", "pinned job {{job_id}} rank {{rank}}"),
       (f"max by ({BY}) (regcache_memlock_limit_bytes{{{SEL}}})",
        "limit job {{job_id}} rank {{rank}}")],
      8, 8, 8, 22, "bytes")
panel("timeseries", "Evictions and registration failures",
      "Evictions (cache at its bound) and failed registrations by errno class; resources = "
      "ENOMEM/EAGAIN/ENOSPC/EMFILE, i.e. RLIMIT_MEMLOCK (RegcacheMemlockExhausted).",
      [(rate("regcache_evictions_total"), "evictions job {{job_id}} rank {{rank}}"),
       (rate("regcache_registration_failures_total", by=BY + ", class"),
        "failures {{class}} job {{job_id}} rank {{rank}}")],
      8, 8, 16, 22, "ops")
panel("timeseries", "Registered entries",
      "Registrations held per rank (cached or in use).",
      [(f"sum by ({BY}) (regcache_registered_entries{{{SEL}}})", "job {{job_id}} rank {{rank}}")],
      8, 8, 0, 30, "none")
panel("timeseries", "Registrations and deregistrations",
      "Registrar calls per second (memory pinned and registered / released).",
      [(rate("regcache_registrations_total"), "registrations job {{job_id}} rank {{rank}}"),
       (rate("regcache_deregistrations_total"), "deregistrations job {{job_id}} rank {{rank}}")],
      8, 8, 8, 30, "ops")
panel("table", "Monitor state",
      "Per process: the invalidation monitor (ummunotify, uffd, none) and registrar, and whether "
      "it caches. monitor=none: RegcacheCachingOff; a monitor with caching 0: it failed "
      "(RegcacheMonitorBroken).",
      [(f"max by (job_id, rank, instance, monitor, registrar) (regcache_cache_info{{{SEL}}})\n"
        f"* on (job_id, rank, instance) group_left ()\n"
        f"max by (job_id, rank, instance) (regcache_caching{{{SEL}}})", "",
        {"instant": True, "format": "table"})],
      8, 8, 16, 30, None,
      {"options": {"showHeader": True},
       "transformations": [{"id": "organize", "options": {
           "excludeByName": {"Time": True},
           "renameByName": {"Value": "caching"}}}]})
panel("timeseries", "Caching per rank",
      "1 = caching, 0 = registering per use.",
      [(f"max by ({BY}) (regcache_caching{{{SEL}}})", "job {{job_id}} rank {{rank}}")],
      8, 8, 0, 38, "none",
      {"fieldConfig": {"defaults": {"min": 0, "max": 1}}})
panel("heatmap", "Registration latency (histogram)",
      "Time spent in successful registrar calls (pinning and registering), all selected ranks.",
      [(f"sum by (le) (rate(regcache_registration_duration_seconds_bucket{{{SEL}}}[{RI}]))",
        "{{le}}", {"format": "heatmap"})],
      8, 8, 8, 38, "s",
      {"options": {"calculate": False, "yAxis": {"unit": "s"},
                   "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges"}}})
panel("timeseries", "Registration latency p50 / p99",
      "Quantiles of the registrar call time per rank.",
      [(f"histogram_quantile(0.5, sum by ({BY}, le) (rate(regcache_registration_duration_seconds_bucket{{{SEL}}}[{RI}])))",
        "p50 job {{job_id}} rank {{rank}}"),
       (f"histogram_quantile(0.99, sum by ({BY}, le) (rate(regcache_registration_duration_seconds_bucket{{{SEL}}}[{RI}])))",
        "p99 job {{job_id}} rank {{rank}}")],
      8, 8, 16, 38, "s")
panel("heatmap", "Drain latency (histogram)",
      "Time of each drain of the monitor's queue that read at least one event: reading the "
      "queue, revalidating reported entries, dropping and deregistering invalidated ones, all "
      "selected ranks. Lookups that miss wait behind a drain; drains per second are in "
      "'False positives and drains'.",
      [(f"sum by (le) (rate(regcache_drain_duration_seconds_bucket{{{SEL}}}[{RI}]))",
        "{{le}}", {"format": "heatmap"})],
      8, 8, 0, 46, "s",
      {"options": {"calculate": False, "yAxis": {"unit": "s"},
                   "cellGap": 1, "color": {"mode": "scheme", "scheme": "Blues"}}})
panel("timeseries", "Drain latency p50 / p99",
      "Quantiles of the drain time per rank (drains that read at least one event).",
      [(f"histogram_quantile(0.5, sum by ({BY}, le) (rate(regcache_drain_duration_seconds_bucket{{{SEL}}}[{RI}])))",
        "p50 job {{job_id}} rank {{rank}}"),
       (f"histogram_quantile(0.99, sum by ({BY}, le) (rate(regcache_drain_duration_seconds_bucket{{{SEL}}}[{RI}])))",
        "p99 job {{job_id}} rank {{rank}}")],
      8, 8, 8, 46, "s")
panel("timeseries", "Pinned share of RLIMIT_MEMLOCK",
      "Registered bytes / the RLIMIT_MEMLOCK soft limit, per rank (unlimited ranks and zero "
      "limits are left out). The cache evicts at 75%; RegcachePinnedNearMemlock above 70% for "
      "15 minutes.",
      [(f"sum by ({BY}) (regcache_registered_bytes{{{SEL}}})\n/\n"
        f"max by ({BY}) (regcache_memlock_limit_bytes{{{SEL}}} > 0)", "job {{job_id}} rank {{rank}}")],
      8, 8, 16, 46, "percentunit",
      {"fieldConfig": {"defaults": {"min": 0, "max": 1, "thresholds": thresholds(
          (None, "green"), (0.7, "orange"), (0.75, "red")),
          "custom": {"thresholdsStyle": {"mode": "line"}}}}})

# --- the LD_PRELOAD shim (regcache_shim_*, mpi-shim/shim.c) ---------------------------------------
row("LD_PRELOAD shim (processes run under libregcache_shim.so)", 54)
panel("timeseries", "Shim: wrapped vs passthrough",
      "Registrations per second the program got through the shim's caches (wrapped), and those "
      "the shim handed to rdma-core unchanged (passthrough: access flags or an iova it does not "
      "cache).",
      [(rate("regcache_shim_wrapped_total"), "wrapped job {{job_id}} rank {{rank}}"),
       (rate("regcache_shim_passthrough_total"), "passthrough job {{job_id}} rank {{rank}}")],
      6, 8, 0, 55, "ops")
panel("timeseries", "Shim: bridge states",
      "UCX bridge: 0 UCX not used (yet), 1 active (ummunotify feeds UCX's cache), 2 off. "
      "libfabric bridge: 0 not used (yet), 1 active (ummunotify is its MR cache's monitor), "
      "2 busy (the program imported its own monitor), 3 off, 4 dso (the verbs provider's cache "
      "keeps its own monitor). See regcache-shim(7).",
      [(f"max by ({BY}) (regcache_shim_ucx_bridge_state{{{SEL}}})", "ucx job {{job_id}} rank {{rank}}"),
       (f"max by ({BY}) (regcache_shim_ofi_bridge_state{{{SEL}}})", "ofi job {{job_id}} rank {{rank}}")],
      6, 8, 6, 55, "none",
      {"fieldConfig": {"defaults": {"min": 0, "max": 4, "decimals": 0}}})
panel("timeseries", "Shim: UCX bridge",
      "Hits in UCX's own registration cache (they never reach ibv_reg_mr), invalidated ranges "
      "forwarded to UCX, and registrations UCX caches that the shim passed through unwatched "
      "(must stay 0: such a registration can go stale).",
      [(rate("regcache_shim_ucx_cache_hits_total"), "hits job {{job_id}} rank {{rank}}"),
       (rate("regcache_shim_ucx_forwarded_total"), "forwarded job {{job_id}} rank {{rank}}"),
       (rate("regcache_shim_ucx_unwatched_total"), "unwatched job {{job_id}} rank {{rank}}")],
      6, 8, 12, 55, "ops")
panel("timeseries", "Shim: libfabric bridge",
      "Hits in libfabric's MR cache confirmed valid by ummunotify, and invalidations ummunotify "
      "reported to libfabric.",
      [(rate("regcache_shim_ofi_cache_hits_total"), "hits job {{job_id}} rank {{rank}}"),
       (rate("regcache_shim_ofi_invalidations_total"), "invalidations job {{job_id}} rank {{rank}}")],
      6, 8, 18, 55, "ops")


def var(name, label, query):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "definition": query, "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 3, "options": [],
    }


dashboard = {
    "__inputs": [],
    "annotations": {"list": []},
    "description": "regcache: RDMA memory-registration cache metrics per job and rank "
                   "(exporter/src/collector.rs). Alerts: ops/regcache-alerts.yml. "
                   "docs/operations.md.",
    "editable": True,
    "graphTooltip": 1,
    "links": [],
    "panels": panels,
    "refresh": "30s",
    "schemaVersion": 38,
    "tags": ["regcache", "rdma", "mpi"],
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "options": [], "refresh": 1, "regex": ""},
        var("job_id", "Job", "label_values(regcache_caching, job_id)"),
        var("rank", "Rank", 'label_values(regcache_caching{job_id=~"$job_id"}, rank)'),
    ]},
    "time": {"from": "now-1h", "to": "now"},
    "timepicker": {},
    "timezone": "",
    "title": "regcache",
    "uid": "regcache",
    "version": 1,
}

text = json.dumps(dashboard, indent=2) + "\n"
if sys.argv[1:] == ["--check"]:
    if open(OUT).read() != text:
        sys.exit(f"{OUT} is not what {sys.argv[0]} writes: run it")
else:
    open(OUT, "w").write(text)
