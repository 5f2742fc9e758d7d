#!/usr/bin/env bash
# The one test command (README: `npm test`; CI: .ci/run). Installs what the tests need, then runs
# the type check, the linter and every test suite. Run as root: the platform and end-to-end suites
# create TAP devices, bridges and network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "dependencies (npm ci)"
if [ "${CI:-}" = "true" ] || [ ! -x node_modules/.bin/bun ]; then
  npm ci --no-audit --no-fund
fi
if [ -f scripts/e2e-deps.sh ]; then
  step "system packages for the end-to-end tests"
  bash scripts/e2e-deps.sh
fi

export PATH="$PWD/node_modules/.bin:$PATH"

step "type check (tsc --noEmit)"
tsc --noEmit -p tsconfig.json

step "lint and format (biome)"
biome check src test scripts

step "tests (bun test)"
# Files run one after another (no --parallel): the end-to-end files build network namespaces.
bun test --timeout 60000 "$@"
