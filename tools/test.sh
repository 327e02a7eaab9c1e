#!/usr/bin/env bash
# Installs what the tests need (.venv for the worker, one bpy venv per Blender version, the demo
# recipe's voices from Debian packages where it may), then
# runs the worker tests and the add-on tests in real Blender 4.2, 4.5, 5.0 and 5.3.
# EMOTE_BLENDER_VERSIONS="50" limits the Blender versions; extra arguments go to every pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup.sh
bash tools/setup_blender.sh
bash tools/setup_voices.sh
status=0
run() {
    local label="$1"
    shift
    echo "=== $label ==="
    set +e
    "$@"
    local rc=$?
    set -e
    if [ "$rc" -eq 5 ]; then
        echo "error: $label: pytest collected no tests; the suite must run tests" >&2
        rc=1
    fi
    [ "$rc" -eq 0 ] || status=1
}
run "worker (server/)" .venv/bin/python -m pytest tests --ignore=tests/blender "$@"
for version in ${EMOTE_BLENDER_VERSIONS:-42 45 50 53}; do
    run "add-on in Blender ${version:0:1}.${version:1}" \
        ".venv-bpy$version/bin/python" -m pytest tests/blender "$@"
done
exit "$status"
