#!/usr/bin/env bash
# The suite on each torch version users have: for every version, a virtual environment with
# that torch (and the Triton it needs), the peer libraries and the package's extras installed as
# .ci/run installs them, then the whole suite; a summary table at the end, also written to
# tools/check_versions.md (one row per version, a rerun replaces its version's row).
#
#   bash tools/check_versions.sh                  # 2.11.0, 2.13.0 and 2.15.0, fresh environments
#   bash tools/check_versions.sh 2.11.0 2.15.0    # the versions named
#   bash tools/check_versions.sh --reuse 2.15.0   # an environment made before: no install step
#   bash tools/check_versions.sh --install-only 2.15.0   # only the environment (e.g. while
#                                                 # another version's suite runs)
#   bash tools/check_versions.sh 2.11.0 -- -k triton     # after --: passed on to pytest
#
# Options: --root DIR (where the environments go; $SNNFUNC_VERSIONS_ROOT, else /work/venvs,
# else /tmp/snnfunc-versions), --reuse (use an existing environment as it is; one that is
# missing is made), --install-only, --delete (remove each environment after its run),
# --extras LIST (default: test,examples,nir,peers,docs, what .ci/run installs), --no-table
# (do not update tools/check_versions.md).
#
# Where a torch version comes from: pip on the project's machines caps torch at 2.14.1 with a
# machine-wide constraint file (pip's global.constraint). The script replaces it for every
# install into an environment with a constraint file of its own that pins torch (and Triton)
# to the version under test: that lifts the cap for 2.15.0 and keeps the later installs (the
# extras, which ask for torch>=2.11 and triton>=3.0) from moving torch or Triton (numpy is
# capped for Triton 3.6's interpreter, see pins_for). torch 2.13.0
# comes as the CPU build where pip finds it on disk; the other versions come from PyPI as the
# CUDA build (a few GB with the nvidia-* packages), which runs on the CPU as well.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

VERSIONS=()
PYTEST_ARGS=()
REUSE=0; INSTALL_ONLY=0; DELETE=0; TABLE=1
EXTRAS="test,examples,nir,peers,docs"
ROOT="${SNNFUNC_VERSIONS_ROOT:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --reuse) REUSE=1 ;;
        --install-only) INSTALL_ONLY=1 ;;
        --delete) DELETE=1 ;;
        --no-table) TABLE=0 ;;
        --root) ROOT="$2"; shift ;;
        --extras) EXTRAS="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; PYTEST_ARGS=("$@"); break ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) VERSIONS+=("$1") ;;
    esac
    shift
done
[ ${#VERSIONS[@]} -gt 0 ] || VERSIONS=(2.11.0 2.13.0 2.15.0)
if [ -z "$ROOT" ]; then
    if [ -d /work ] && [ -w /work ]; then ROOT=/work/venvs; else ROOT=/tmp/snnfunc-versions; fi
fi
mkdir -p "$ROOT"

# The Triton each torch version is tested with: torch 2.11 needs 3.6.0 (the lent GPU machine
# has that pair); a newer torch brings the Triton it requires.
triton_for() {
    case "$1" in
        2.11.*) echo 3.6.0 ;;
        *) echo "" ;;
    esac
}

# What else a version's environment pins: Triton 3.6's interpreter reads a scalar argument
# as int() of a one-element array, which numpy >= 2.4 refuses (later Triton squeezes it first).
pins_for() {
    case "$1" in
        2.11.*) echo "numpy<2.4" ;;
        *) echo "" ;;
    esac
}

CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
CPU="${CPU:-$(uname -m)}, $(nproc) cores"
PIPQ=(-m pip install --quiet --disable-pip-version-check --no-warn-conflicts)
RESULTS=()   # "version|triton|python|passed|failed|skipped|errors|install_s|suite_s|rc"

install_env() {  # $1 version, $2 venv
    local v="$1" venv="$2" tr
    tr="$(triton_for "$v")"
    rm -rf "$venv"
    python3 -m venv "$venv"
    { echo "torch==$v"; [ -z "$tr" ] || echo "triton==$tr"; pins_for "$v" | tr ' ' '\n' | sed '/^$/d'; } \
        >"$venv/constraints.txt"
    export PIP_CONSTRAINT="$venv/constraints.txt"
    "$venv/bin/python" "${PIPQ[@]}" "torch==$v" ${tr:+"triton==$tr"}
    # the peers without their requirements (which would pull another torch), as .ci/run does
    "$venv/bin/python" "${PIPQ[@]}" --no-deps spikingjelly==2.0.0 snntorch==1.0.0 norse==1.1.0 nirtorch==2.6
    "$venv/bin/python" "${PIPQ[@]}" -e "$REPO[$EXTRAS]"
    unset PIP_CONSTRAINT
}

run_suite() {  # $1 version, $2 venv, $3 log; prints the pytest exit code
    local venv="$2" log="$3" tmp rc
    tmp="$(mktemp -d)"
    # as in .ci/run: the run's temporary files in one folder removed after it; torch.compile's
    # cache per environment (cold on the first run, as a user's first run is)
    set +e
    ( export TMPDIR="$tmp" NO_MKDOCS_2_WARNING=1 TORCHINDUCTOR_CACHE_DIR="$venv/inductor-cache"
      cd "$REPO" && "$venv/bin/python" -m pytest -q -rfEs -p no:cacheprovider -n 2 ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"} ) >"$log" 2>&1
    rc=$?
    set -e
    rm -rf "$tmp"
    echo "$rc"
}

count() {  # $1 word, $2 pytest's closing line
    echo "$2" | grep -oE "[0-9]+ $1" | grep -oE "^[0-9]+" || echo 0
}

for v in "${VERSIONS[@]}"; do
    venv="$ROOT/torch-$v"
    echo "== torch $v ($venv)"
    t0=$SECONDS
    if [ "$REUSE" = 1 ] && [ -x "$venv/bin/python" ]; then
        echo "   reusing the environment"
    else
        tr="$(triton_for "$v")"
        echo "   installing torch $v${tr:+ with triton $tr}"
        install_env "$v" "$venv"
    fi
    install_s=$((SECONDS - t0))
    if [ "$INSTALL_ONLY" = 1 ]; then
        echo "   installed in ${install_s} s"
        continue
    fi
    got="$("$venv/bin/python" -c 'import sys, torch
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = "-"
print(torch.__version__, tv, "%d.%d.%d" % sys.version_info[:3])')"
    read -r torch_v triton_v py_v <<<"$got"
    echo "   torch $torch_v, triton $triton_v, python $py_v: running the suite (log: $venv/pytest.log)"
    t1=$SECONDS
    rc="$(run_suite "$v" "$venv" "$venv/pytest.log")"
    suite_s=$((SECONDS - t1))
    last="$(grep -E '^=*[ ]*[0-9]+ (passed|failed|error|skipped)' "$venv/pytest.log" | tail -1 || true)"
    [ -n "$last" ] || last="$(tail -1 "$venv/pytest.log")"
    echo "   $last (exit $rc, ${suite_s} s)"
    grep -E '^(FAILED|ERROR) ' "$venv/pytest.log" | sed 's/^/   /' || true
    RESULTS+=("$torch_v|$triton_v|$py_v|$(count passed "$last")|$(count failed "$last")|$(count skipped "$last")|$(count 'errors?' "$last")|$install_s|$suite_s|$rc")
    if [ "$DELETE" = 1 ]; then rm -rf "$venv"; echo "   removed $venv"; fi
done
[ "$INSTALL_ONLY" = 0 ] || exit 0

fmt_s() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
echo
echo "CPU: $CPU"
printf '%-14s %-8s %-8s %7s %7s %8s %7s %10s\n' torch triton python passed failed skipped errors suite
status=0
for r in "${RESULTS[@]}"; do
    IFS='|' read -r tv trv pv p f s e is ss rc <<<"$r"
    printf '%-14s %-8s %-8s %7s %7s %8s %7s %10s\n' "$tv" "$trv" "$pv" "$p" "$f" "$s" "$e" "$(fmt_s "$ss")"
    [ "$rc" = 0 ] || status=1
done

if [ "$TABLE" = 1 ] && [ ${#PYTEST_ARGS[@]} -eq 0 ]; then
    # one row per torch version in tools/check_versions.md; a rerun replaces its version's row
    md="$REPO/tools/check_versions.md"
    rows=()
    for r in "${RESULTS[@]}"; do
        IFS='|' read -r tv trv pv p f s e is ss rc <<<"$r"
        rows+=("| $tv | $trv | $pv | $p | $f | $s | $e | $(fmt_s "$ss") | $(date +%Y-%m-%d) | $CPU |")
    done
    python3 - "$md" "${rows[@]}" <<'EOF'
import re, sys
path, rows = sys.argv[1], sys.argv[2:]
head = """# The suite on each torch version

Written by `bash tools/check_versions.sh` (one row per torch version; a rerun replaces its row):
a virtual environment per version with the peers and the extras `.ci/run` installs, then
`pytest -q -rfEs -p no:cacheprovider -n 2` on the CPU (the Triton kernels under its interpreter).
The time is the suite's wall time on a machine shared with other work, which changes it;
torch.compile's cache is the environment's own, cold on its first run only.

| torch | triton | python | passed | failed | skipped | errors | suite time | date | CPU |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
"""
old = {}
try:
    for line in open(path):
        m = re.match(r"\| (\d[^ |]*) \|", line)
        if m:
            old[m.group(1)] = line.rstrip("\n")
except FileNotFoundError:
    pass
for row in rows:
    old[row.split("|")[1].strip()] = row
key = lambda v: [int(x) if x.isdigit() else x for x in re.split(r"[.+]", v)]
body = "\n".join(old[v] for v in sorted(old, key=key))
tail = ""
try:
    cur = open(path).read()
    i = cur.find("\n## ")
    tail = cur[i:] if i >= 0 else ""
except FileNotFoundError:
    pass
open(path, "w").write(head + body + "\n" + tail)
EOF
    echo "table: $md"
fi
exit $status
