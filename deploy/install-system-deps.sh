#!/usr/bin/env bash
# Install the Debian packages hubvoice uses, only those that are missing.
#   speech synthesis (distill): espeak-ng, flite, festival + three voices
#   broker (tests, demo with --broker): mosquitto
#   audio tools and the microphone library: sox, libportaudio2
#   a C compiler and Python's headers, so that pip builds the compiled grammar search (assistant/_search.c;
#   without them hubvoice installs anyway and decodes in pure Python, ~20x slower): gcc, python3-dev
# Usage: deploy/install-system-deps.sh [--hub]   (--hub: only what a hub needs)
set -euo pipefail

hub_only=0
[ "${1:-}" = "--hub" ] && hub_only=1

want=(libportaudio2 gcc python3-dev)
if [ "$hub_only" = 0 ]; then
  want+=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts mosquitto sox)
fi

missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: apt-get not found; install these yourself: ${missing[*]}" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "warning: not root and no sudo; install these yourself: ${missing[*]}" >&2
    exit 0
  fi
fi
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
