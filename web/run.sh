#!/usr/bin/env bash
# Build the page and serve it on http://127.0.0.1:${PORT:-8080}/ (docs/WEB.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash web/build.sh
exec cargo run --release -- serve web --port "${PORT:-8080}"
