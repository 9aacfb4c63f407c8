#!/usr/bin/env bash
# Build the browser page: examples/web.rs for wasm32-unknown-unknown, bound by wasm-bindgen into
# web/pkg/ (ignored by git). PROFILE=release (default) or test (what `cargo test` builds the
# browser suite with, so tests/browser.rs shares its compiled dependencies).
# Needs: rustup target add wasm32-unknown-unknown; wasm-bindgen-cli of Cargo.lock's wasm-bindgen.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${PROFILE:-release}"
cargo build --profile "$profile" --target wasm32-unknown-unknown --example web
out="$profile"
[ "$profile" = test ] && out=debug   # cargo's folder for the test profile
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$out/examples/web.wasm"
echo "built web/pkg/ ($profile)"
