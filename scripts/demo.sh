#!/usr/bin/env bash
# demo.sh — the README's main command: installs what is missing, builds kiln and
# runs its main job.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh build
exec build/kiln demo "$@"
