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

# Files run one after another (no --parallel): the end-to-end files build network namespaces.
if [ $# -gt 0 ]; then
  step "tests (bun test $*)"
  bun test --timeout 60000 "$@"
  exit
fi

step "tests (bun test)"
mapfile -t files < <(find test -name '*.test.ts' ! -path 'test/arm64/*' | sort)
bun test --timeout 60000 "${files[@]}"

step "tests on arm64 (linux-aarch64 Bun under qemu-user: run-time C, x18, test/darwin, test/platform)"
started=$SECONDS
bun test --timeout 60000 test/arm64
echo "arm64 step: $((SECONDS - started)) s"
