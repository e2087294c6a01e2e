#!/usr/bin/env bash
# Install Debian's headless-capable `chromium` (for scripts/viz_screenshot.py and the report screenshot).
# Idempotent: does nothing when a chromium binary is already on PATH (or CHROMIUM_BIN points at one).
# Non-interactive; needs root (or sudo) and access to the machine's configured Debian archive.
set -euo pipefail

for bin in "${CHROMIUM_BIN:-}" chromium chromium-browser google-chrome; do
  if [[ -n "$bin" ]] && command -v "$bin" >/dev/null 2>&1; then
    echo "chromium present: $(command -v "$bin") ($("$bin" --version 2>/dev/null || echo '?'))"
    exit 0
  fi
done

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "need root (or sudo) to apt-get install chromium" >&2; exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "installed: $(command -v chromium) ($(chromium --version 2>/dev/null || echo '?'))"
