#!/usr/bin/env bash
# Installs everything jointspace needs on a fresh Debian machine (only package registries
# reachable): system packages (libcairo2 for SVG stamps, the Tux Paint stamps and Open Clip Art
# corpora, chromium and chromium-driver for the web page's browser tests),
# a virtual environment at .venv with torch/torchvision, and the project with its test extras.
# Idempotent: re-running it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if [ ! -d /usr/share/tuxpaint/stamps ] || [ ! -d /usr/share/openclipart/svg ] \
  || ! ldconfig -p | grep -q libcairo.so.2 \
  || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "== installing Debian packages: tuxpaint-stamps-default openclipart-svg libcairo2" \
    "chromium chromium-driver" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    tuxpaint-stamps-default openclipart-svg libcairo2 chromium chromium-driver >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv" >&2
  python3 -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # open_clip needs torchvision; these pairs import together (see ENVIRONMENT.md)
  case "$(uname -m)" in
    x86_64) TORCH=(torch==2.14.1 torchvision==0.29.1) ;;
    *) TORCH=(torch==2.9.1 torchvision==0.24.1) ;;
  esac
  echo "== installing ${TORCH[*]} (a few minutes)" >&2
  "${PIP[@]}" "${TORCH[@]}"
fi
echo "== installing jointspace and its dependencies" >&2
"${PIP[@]}" -e '.[dev]'
