#!/usr/bin/env python3
"""Proves the alert unit tests bite: each mutant below weakens one condition of
ops/regcache-alerts.yml (a threshold, a label matcher, a guard, a `for`), and
`promtool test rules` must then fail. Prints one line per mutant, `ok`/`not ok`, and exits 1
if a mutant survives (the tests would not notice that change) or no longer applies (the rule
file changed: update the list).

    ops/alert-mutants.py [PROMTOOL]
"""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "regcache-alerts.yml")
TESTS = os.path.join(HERE, "regcache-alerts.test.yml")

# (what it breaks, text in the rule file, replacement)
MUTANTS = [
    ("CachingOff counts every monitor", 'monitor="none"}, "node"', 'monitor=~".*"}, "node"'),
    ("CachingOff without for", "for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache caching",
     "for: 1m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache caching"),
    ("MonitorBroken ignores caching", "regcache_caching == 0", "regcache_caching >= 0"),
    ("MonitorBroken includes monitor none", '{monitor!="none"}', "{}"),
    ("HitRate threshold 95%", ") < 0.5", ") < 0.95"),
    ("HitRate ignores caching off", "regcache_caching == 1", "regcache_caching >= 0"),
    ("HitRate without traffic floor", "          ) > 1\n", "          ) > 0\n"),
    ("Rereg ratio ignored", ") > 0.25", ") > 0"),
    ("Rereg rate floor 10/s", "reregistrations_total[5m])) > 100", "reregistrations_total[5m])) > 10"),
    ("FP ratio ignored", ") > 0.1\n", ") > 0\n"),
    ("FP rate floor 10/s", "false_positives_total[5m])) > 100", "false_positives_total[5m])) > 10"),
    ("Pinned: threshold 50%", "          ) > 0.7\n", "          ) > 0.5\n"),
    ("Pinned: threshold 80%", "          ) > 0.7\n", "          ) > 0.8\n"),
    ("Pinned: zero limit not excluded", "(regcache_memlock_limit_bytes > 0)", "(regcache_memlock_limit_bytes)"),
    ("Pinned: for 1m", "for: 15m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache in",
     "for: 1m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache in"),
    ("Memlock: any failure class", '{class="resources"}', ""),
    ("ExporterDown: every job", 'up{job=~"regcache.*"}', "up"),
    ("ExporterDown: for 1m", "for: 5m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache metrics endpoint",
     "for: 1m\n        labels:\n          severity: warning\n        annotations:\n          summary: \"regcache metrics endpoint"),
    ("Textfile: every file", "regcache-[^/]*[.]prom", ".*"),
    ("Textfile: 50 minutes", "> 300", "> 3000"),
]


def main():
    promtool = sys.argv[1] if len(sys.argv) > 1 else "promtool"
    rules = open(RULES).read()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="regcache-mutants.") as tmp:
        shutil.copy(TESTS, tmp)
        for name, old, new in MUTANTS:
            if rules.count(old) != 1:
                print(f"not ok mutant {name}: the text to change occurs {rules.count(old)} times")
                bad += 1
                continue
            with open(os.path.join(tmp, "regcache-alerts.yml"), "w") as f:
                f.write(rules.replace(old, new))
            r = subprocess.run([promtool, "test", "rules", os.path.join(tmp, os.path.basename(TESTS))],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                print(f"not ok mutant {name}: survived (the tests do not check it)")
                bad += 1
            else:
                print(f"ok mutant {name}: killed")
    print(f"{len(MUTANTS) - bad} of {len(MUTANTS)} mutants killed")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
