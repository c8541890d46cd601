#!/usr/bin/env bash
# System packages the tests use as real components (Debian/Ubuntu): promtool for the alert rules,
# Orthanc with its DICOMweb plugin as the PACS of tests/pacs.
# Called by scripts/install-cpu.sh; installs only what is missing, so a second run is instant.
set -euo pipefail

# command -> Debian package that provides it
declare -A PACKAGES=(
    [promtool]=prometheus
    [Orthanc]=orthanc
)
# file -> Debian package that provides it (packages without a command)
declare -A FILES=(
    [/usr/share/orthanc/plugins/libOrthancDicomWeb.so]=orthanc-dicomweb
)

missing=()
for command in "${!PACKAGES[@]}"; do
    command -v "$command" >/dev/null || missing+=("${PACKAGES[$command]}")
done
for file in "${!FILES[@]}"; do
    [ -e "$file" ] || missing+=("${FILES[$file]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
    echo "[install-system] missing ${missing[*]} and no apt-get: install them by hand" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[install-system] installing ${missing[*]}"
$SUDO apt-get update -qq
# Some packages try to start a service on install; in a container that fails harmlessly.
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
