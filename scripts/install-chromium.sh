#!/usr/bin/env bash
# Install Debian's headless-capable `chromium` for the report / leaderboard screenshot tests.
# Idempotent: a quick no-op when a chromium binary is already on PATH. Needs root (or sudo) for apt-get.
# Set PROMPTINTERN_SKIP_CHROMIUM=1 to skip (the screenshot tests then skip with a reason).
set -euo pipefail

if [[ "${PROMPTINTERN_SKIP_CHROMIUM:-0}" == "1" ]]; then
    echo "install-chromium: skipped (PROMPTINTERN_SKIP_CHROMIUM=1)"
    exit 0
fi

for bin in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "install-chromium: $(command -v "$bin") already installed"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here; install chromium yourself (the screenshot tests will skip)" >&2
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-chromium: not root and no sudo; install chromium yourself (the screenshot tests will skip)" >&2
        exit 0
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
command -v chromium >/dev/null 2>&1 && echo "install-chromium: $(chromium --version 2>/dev/null || echo chromium) installed"
