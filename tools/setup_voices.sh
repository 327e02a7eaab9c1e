#!/usr/bin/env bash
# The offline voices the demo recipe speaks with (Debian packages): espeak-ng, flite and
# festival with its US "slt" HTS voice, two US diphone voices and seven voices of other
# languages (server/demo/recipe.py, VOICE_PACKAGES), plus sox. Installs them when
# missing and this shell may (root with apt-get); otherwise says what to install. Tests that
# need them skip without them.
set -uo pipefail
packages="espeak-ng libespeak-ng1 flite festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
festvox-italp16k festvox-itapc16k festvox-ca-ona-hts festvox-suopuhe-lj festvox-suopuhe-mv
festvox-czech-dita festvox-czech-ph sox"
# Each package, not just each program: a machine set up before a voice joined the list has
# festival but not that voice, and the recipe would quietly train without it.
if command -v dpkg-query >/dev/null; then
    missing=""
    for package in $packages; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $package"
    done
    [ -z "$missing" ] && exit 0
elif command -v espeak-ng >/dev/null && command -v flite >/dev/null \
        && command -v festival >/dev/null && command -v sox >/dev/null; then
    exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages \
        >/dev/null && exit 0
fi
echo "note: the demo recipe's voices are not installed (apt-get install $packages);" \
     "the tests that need them will be skipped" >&2
exit 0
