#!/usr/bin/env bash
# Everything the test suite needs, on top of scripts/install-cpu.sh: the Python test tools, the
# Debian packages the tests run as real components, and the Node packages of tests/*/ (their
# package-lock.json: the OpenAI JS SDK, the OpenID provider, compatcanary).
# The one set-up script of the README's test command (and so of CI: .ci/run calls it verbatim).
#
# Idempotent and quick when all is present: only what is missing gets installed.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/debian-packages.sh
. scripts/debian-packages.sh

scripts/install-cpu.sh
VENV="${LINGSHU_VENV:-.venv}"

# Real components the tests start (no mocks): promtool and amtool check the alert rules and the
# Alertmanager route; Orthanc with its DICOMweb plugin is the PACS of tests/pacs; headless Chromium
# and its driver load the playground; Node runs the official OpenAI JavaScript SDK and
# compatcanary; unshare gives the chart's PID 1 scripts a PID namespace of their own;
# PostgreSQL 15 is the shared database of tests/storage (tests/utils/postgres.py starts it on
# loopback); Node also runs the OpenID provider of tests/identity, and jq reads its token in
# the identity docs' example.
ensure_debian_packages "the tests" \
    promtool=prometheus \
    amtool=prometheus-alertmanager \
    unshare=util-linux \
    Orthanc=orthanc \
    /usr/share/orthanc/plugins/libOrthancDicomWeb.so=orthanc-dicomweb \
    chromium=chromium \
    chromedriver=chromium-driver \
    node=nodejs \
    npm=npm \
    /usr/lib/postgresql/15/bin/initdb=postgresql \
    jq=jq

"$VENV/bin/python" scripts/project_requirements.py test > "$VENV/lingshu-test-requirements.txt"
"$VENV/bin/python" -m pip install --quiet -r "$VENV/lingshu-test-requirements.txt"

# Node packages, exactly as locked; reinstalled only when a lock file changes.
for lock in tests/*/package-lock.json; do
    [ -e "$lock" ] || continue
    folder="$(dirname "$lock")"
    stamp="$folder/node_modules/.lingshu-lock.sha256"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum < "$lock")" ]; then
        echo "[install-test] npm ci in $folder"
        npm ci --prefix "$folder" --no-audit --no-fund --loglevel=error
        sha256sum < "$lock" > "$stamp"
    fi
done
echo "[install-test] ok"
