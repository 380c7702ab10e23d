#!/usr/bin/env python3
"""Checks that the man pages in man/ cover what the code offers, so they cannot drift:

  regcache.3       every function of ffi/include/regcache.h is in SYNOPSIS with the header's
                   exact prototype and has its own `.BR name ()` entry in the text; every struct,
                   struct field, enum constant and typedef of the header is named; every
                   regcache_*() named in the page exists in the header.
  regcache.1       every subcommand and every long option of `regcache --help` and
                   `regcache SUB --help`, and every "REGCACHE_*" variable the library, the
                   exporter and the CLI read (string literals in regcache/src, exporter/src,
                   cli/src).
  regcache-shim.7  every variable mpi-shim/*.c reads (getenv/env_*("NAME")), every verbs
                   function the shim exports (mpi-shim/shim.map), and every regcache_shim_*
                   metric mpi-shim/shim.c serves.
  ummunotify.4     every UMMUNOTIFY_* constant and struct of the uapi header, every errno of
                   the table in docs/ummunotify-abi.md, every module parameter of kmod/.

Prints `ok`/`not ok` lines, exit status 1 on any `not ok`.
    ops/man-check.py REGCACHE_BIN
"""
import glob
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
bad = 0


def report(good, what, missing=()):
    global bad
    if good:
        print(f"ok {what}")
    else:
        print(f"not ok {what}: {', '.join(missing)}")
        bad += 1


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def roff_text(src):
    """The page as plain words: escapes for '-' and quotes undone, font requests' quotes removed."""
    s = src.replace("\\-", "-").replace("\\(dq", '"').replace("\\e", "\\")
    s = re.sub(r"\\f[BIRP]", "", s)
    return s


def words_missing(text, names):
    return sorted(n for n in names if not re.search(r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])", text))


def check_regcache3():
    hdr = read("ffi/include/regcache.h")
    page = read("man/regcache.3")
    text = roff_text(page)
    # Prototypes: from a line starting with a type to the ';'.
    code = re.sub(r"/\*.*?\*/", "", hdr, flags=re.S)
    code = re.sub(r"//[^\n]*", "", code)
    protos = {}
    for m in re.finditer(r"^(?:int|void|size_t|uint\w+|const \w+ \*|struct \w+ \*)\s*\**\s*(regcache_\w+)\((.*?)\);",
                         code, re.M | re.S):
        protos[m.group(1)] = re.sub(r"\s+", " ", m.group(0)).replace("( ", "(")
    # SYNOPSIS prototypes: .BI lines joined until ';'.
    syn = page.split(".SH SYNOPSIS", 1)[1].split(".SH DESCRIPTION", 1)[0]
    cur, man_protos = "", {}
    for line in syn.splitlines():
        if not line.startswith(".BI "):
            continue
        cur += "".join(shlex.split(line[4:].replace("\\", "\\\\")))
        if cur.rstrip().endswith(";"):
            flat = re.sub(r"\s+", " ", cur.replace("\\\\-", "-")).strip()
            m = re.search(r"(regcache_\w+)\(", flat)
            if m:
                man_protos[m.group(1)] = flat
            cur = ""
    missing = sorted(set(protos) - set(man_protos))
    report(not missing, f"regcache.3: all {len(protos)} functions of regcache.h in SYNOPSIS", missing)
    differ = sorted(f for f in protos if f in man_protos and man_protos[f] != protos[f])
    for f in differ:
        print(f"#   header: {protos[f]}\n#   man:    {man_protos[f]}")
    report(not differ, "regcache.3: SYNOPSIS prototypes are the header's", differ)
    desc = page.split(".SH DESCRIPTION", 1)[1]
    undoc = sorted(f for f in protos if not re.search(r"^\.BR " + f + r" \(\)", desc, re.M))
    report(not undoc, "regcache.3: every function described (.BR name ())", undoc)
    structs = set(re.findall(r"^struct (regcache_\w+)", code, re.M))
    consts = set(re.findall(r"^\s+(REGCACHE_[A-Z0-9_]+)\s*=", code, re.M))
    consts |= set(re.findall(r"^#define (REGCACHE_[A-Z0-9_]+) ", code, re.M)) - {"REGCACHE_H"}
    typedefs = set(re.findall(r"typedef [^;]*?\(\*(regcache_\w+)\)", code))
    fields = set()
    for body in re.findall(r"^struct regcache_\w+ \{(.*?)^\};", code, re.M | re.S):
        fields |= set(re.findall(r"(\w+)(?:\)\([^;]*\))?;", body))
        fields |= set(re.findall(r"\(\*(\w+)\)", body))
    names = structs | consts | typedefs | fields
    missing = words_missing(text, names)
    report(not missing, f"regcache.3: {len(structs)} structs, {len(consts)} constants, "
           f"{len(typedefs)} typedef, {len(fields)} fields of regcache.h named", missing)
    named = set(re.findall(r"\b(regcache_[a-z_]+) \(\)", text)) | set(re.findall(r"\b(regcache_[a-z_]+)\(", text))
    extra = sorted(named - set(protos))
    report(not extra, "regcache.3: names no function the header lacks", extra)


def check_regcache1(binary):
    page = roff_text(read("man/regcache.1"))
    top = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout
    cmds = re.findall(r"^  (\w+)\s", top.split("Commands:", 1)[1].split("Options:", 1)[0], re.M)
    cmds = [c for c in cmds if c != "help"]
    missing = [c for c in cmds if f'.SS "regcache {c}"' not in page]
    report(not missing, f"regcache.1: all {len(cmds)} subcommands have a section", missing)
    opts = set(re.findall(r"(--[a-z][a-z-]*)", top))
    for c in cmds:
        out = subprocess.run([binary, c, "--help"], capture_output=True, text=True, check=True).stdout
        opts |= set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z-]*)", out, re.M))
    missing = words_missing(page, opts)
    report(not missing, f"regcache.1: all {len(opts)} long options", missing)
    env = set()
    for d in ("regcache/src", "exporter/src", "cli/src"):
        for f in glob.glob(os.path.join(ROOT, d, "**/*.rs"), recursive=True):
            env |= set(re.findall(r'"(REGCACHE_[A-Z0-9_]+)"', open(f).read()))
    env -= {"REGCACHE_SHIM_METRICS"}  # the shim's (regcache-shim.7), named in the exporter's messages
    missing = words_missing(page, env)
    report(not missing, f"regcache.1: all {len(env)} REGCACHE_* variables the programs read", missing)


def check_shim7():
    page = roff_text(read("man/regcache-shim.7"))
    env = set()
    for f in glob.glob(os.path.join(ROOT, "mpi-shim/*.c")):
        env |= set(re.findall(r'(?:getenv|env_\w+)\(\s*"([A-Z][A-Z0-9_]+)"', open(f).read()))
    missing = words_missing(page, env)
    report(not missing, f"regcache-shim.7: all {len(env)} variables mpi-shim/*.c reads", missing)
    exported = re.findall(r"^\s+(ibv_\w+);", read("mpi-shim/shim.map"), re.M)
    exported = [e for e in exported if e != "ibv_get_device_list"]  # the libfabric bridge's trigger
    missing = words_missing(page, exported)
    report(not missing, f"regcache-shim.7: all {len(exported)} interposed verbs functions", missing)
    # The shim's own metrics (regcache_metrics_add_metric in shim.c), as served: counters end
    # in _total.
    metrics = set(re.findall(r'"(regcache_shim_[a-z_]+)"', read("mpi-shim/shim.c")))
    missing = sorted(m for m in metrics
                     if not re.search(re.escape(m) + r"(_total)?(?![A-Za-z0-9_])", page))
    report(bool(metrics) and not missing,
           f"regcache-shim.7: all {len(metrics)} regcache_shim_* metrics of mpi-shim/shim.c", missing)


def check_ummunotify4():
    page = roff_text(read("man/ummunotify.4"))
    hdr = read("kmod/include/uapi/linux/ummunotify.h")
    names = set(re.findall(r"#define (UMMUNOTIFY_[A-Z_]+)", hdr)) - {"UMMUNOTIFY_MAGIC"}
    names |= set(re.findall(r"^\s+(UMMUNOTIFY_[A-Z_]+)\s*=", hdr, re.M))
    names |= set(re.findall(r"^struct (ummunotify_\w+)", hdr, re.M))
    missing = words_missing(page, names)
    report(not missing, f"ummunotify.4: all {len(names)} constants and structs of the uapi header", missing)
    abi = read("docs/ummunotify-abi.md").split("## Errors", 1)[1].split("##", 1)[0]
    errnos = set(re.findall(r"`(E[A-Z]+)`", abi))
    missing = words_missing(page, errnos)
    report(not missing, f"ummunotify.4: all {len(errnos)} errnos of docs/ummunotify-abi.md", missing)
    params = set()
    for f in glob.glob(os.path.join(ROOT, "kmod/*.c")):
        params |= set(re.findall(r"module_param\w*\((\w+),", open(f).read()))
    missing = words_missing(page, params)
    report(not missing, f"ummunotify.4: all {len(params)} module parameters", missing)


def main():
    check_regcache3()
    check_regcache1(sys.argv[1])
    check_shim7()
    check_ummunotify4()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
