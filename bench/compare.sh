#!/bin/sh
# A/B: one bench section for an earlier commit and for this checkout, alternately, at the same
# moment on the same machine, so the comparison carries the machine's load for both.
#   bench/compare.sh BASE SECTION [ROUNDS]      e.g. bench/compare.sh 17e9108 storage 2
# Reports go to $OUT (default /var/tmp/wilo-compare): SECTION-base-N.md and SECTION-head-N.md.
set -eu
base=$1 section=$2 rounds=${3:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/var/tmp/wilo-compare}
tree=$out/tree-$(git -C "$here" rev-parse --short "$base")
mkdir -p "$out"
[ -d "$tree" ] || git -C "$here" worktree add --detach "$tree" "$base" >/dev/null
py=$here/.venv/bin/python
i=1
while [ "$i" -le "$rounds" ]; do
    for side in base head; do
        if [ "$side" = base ]; then src=$tree; else src=$here; fi
        echo "== $section $side round $i ($(uptime | sed 's/.*load/load/'))"
        (cd "$src" && PYTHONPATH="$src/backend:$src" "$py" -m bench.run --only "$section" \
            --output "$out/$section-$side-$i.md" >/dev/null)
    done
    i=$((i + 1))
done
echo "reports in $out"
