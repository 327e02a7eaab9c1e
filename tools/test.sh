#!/usr/bin/env bash
# Installs what the tests need (.venv for the worker, one bpy venv per Blender version, the demo
# recipe's voices from Debian packages where it may), then
# runs the worker tests, the ONNX graphs again on the Macs' older ONNX Runtime (its Linux
# build), and the add-on tests in real Blender 4.2, 4.5, 5.0 and 5.3.
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
# The macOS zips carry another ONNX Runtime than .venv's (tools/requirements-extension.txt);
# macOS cannot run here, so the graphs are also tested on that version's Linux build.
mac_ort="$(.venv/bin/python -c 'import sys; sys.path.insert(0, "tools")
import build_extension as b
print(dict(b.requirements(platform_name="macos-arm64"))["onnxruntime"])')"
if [ "$mac_ort" != "$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)')" ]
then
    if [ ! -d ".venv-ort-$mac_ort/onnxruntime" ]; then
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
            --target ".venv-ort-$mac_ort" "onnxruntime==$mac_ort"
    fi
    run "ONNX graphs on ONNX Runtime $mac_ort (the macOS zips')" \
        env PYTHONPATH=".venv-ort-$mac_ort" EMOTE_EXPECT_ONNX_RUNTIME="$mac_ort" \
        .venv/bin/python -m pytest tests/test_onnx_backend.py "$@"
fi
for version in ${EMOTE_BLENDER_VERSIONS:-42 45 50 53}; do
    run "add-on in Blender ${version:0:1}.${version:1}" \
        ".venv-bpy$version/bin/python" -m pytest tests/blender "$@"
done
exit "$status"
