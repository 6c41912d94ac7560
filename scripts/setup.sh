#!/usr/bin/env bash
# Set up emote on this machine: Debian packages, then .venv with emote installed in it.
#
#   bash scripts/setup.sh          # runtime: emote in .venv (then: .venv/bin/emote demo)
#   bash scripts/setup.sh --dev    # + test tools and Chromium for the browser tests (then: .venv/bin/python -m pytest -q)
#   bash scripts/setup.sh --data   # + the Debian packages of real human speech the data engine reads (docs/data_engine.md)
#
# Idempotent: a second run installs only what is missing. Needs root or sudo for apt-get.
# torch is never installed here: training needs `.venv/bin/pip install torch==2.13.0` then
# `.venv/bin/pip install -e '.[train]'`.
set -euo pipefail

DEV=0
DATA=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --data) DATA=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --data or --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# --- Debian packages ---------------------------------------------------------------------------
# espeak-ng: speech for the tests and the demo asset; libportaudio2: the microphone client (sounddevice).
PKGS=(espeak-ng libportaudio2)
if [ "$DEV" = 1 ]; then
  PKGS+=(chromium chromium-driver)   # headless browser tests of the call page
  PKGS+=(wesnoth-1.16-data flare-game freedroidrpg-data) # painted and 3D-rendered portraits nobody here made (tests/test_styles.py)
  PKGS+=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-czech-krb festvox-suopuhe-lj festvox-suopuhe-mv festvox-ca-ona-hts)   # tests/test_festival.py
fi
if [ "$DATA" = 1 ]; then             # real speech with transcripts for engine/training/build_data.py
  PKGS+=(asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
         asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav
         asterisk-core-sounds-en asterisk-core-sounds-es asterisk-core-sounds-fr
         asterisk-core-sounds-it asterisk-core-sounds-ru)
  [ "$DEV" = 1 ] || PKGS+=(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-czech-dita festvox-czech-machac festvox-czech-ph festvox-czech-krb festvox-suopuhe-lj festvox-suopuhe-mv festvox-ca-ona-hts)  # exact-timed real voices
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1
  fi
  echo "setup.sh: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -o DPkg::Lock::Timeout=600
  "${SUDO[@]}" apt-get install -y -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}"
else
  echo "setup.sh: Debian packages present: ${PKGS[*]}"
fi

# --- Python virtual environment ----------------------------------------------------------------
PY="${PYTHON:-python3}"
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "setup.sh: emote needs Python >= 3.10; $PY is $("$PY" --version 2>&1)" >&2; exit 1; }
  echo "setup.sh: creating .venv with $("$PY" --version 2>&1)"
  rm -rf .venv
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -qq -e '.[dev]'
else
  .venv/bin/python -m pip install -qq -e .
fi

# --- check -------------------------------------------------------------------------------------
.venv/bin/emote --version >/dev/null
echo "setup.sh: ready: $(.venv/bin/emote --version) in $ROOT/.venv"
if [ "$DEV" = 1 ]; then
  echo "setup.sh: run the tests with: .venv/bin/python -m pytest -q"
else
  echo "setup.sh: try: .venv/bin/emote demo"
fi
