#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests (test/e2e) need. Idempotent and quiet: when
# everything is already installed it does nothing, not even `apt-get update`. Needs root.
set -euo pipefail

# package -> why the e2e tests need it
packages=(
  dnsmasq-base    # DHCP + DNS server on the test bridge; -base ships no system service to grab ports
  socat           # relays a kernel TAP to a socketpair end (the guest's NIC, the transparent relay)
  busybox         # udhcpc, the guest's DHCP client
  iproute2        # ip netns / link / addr / route / neigh, bridge
  nftables        # softnet's --expose port forwarding, inspected by the tests
  tcpdump         # the witness on the bridge
  dsniff          # arpspoof
  hping3          # IP source spoofing, floods
  iputils-ping    # ping from the guest
  netcat-openbsd  # TCP client/server in namespaces
  bind9-dnsutils  # dig
  iperf3          # TCP throughput of a real guest (benchmark)
  sudo            # softnet escalates through passwordless sudo when started unprivileged
  util-linux      # setpriv (run as another user), unshare (the doctor's test without /dev/net/tun)
  mount           # mount, for that test's empty /dev/net
  gcc             # builds the vmnet double (test/vmnet-double) and the benchmark's C programs
  libc6-dev       # headers and crt files for that
  qemu-user              # runs the release's AArch64 environment scrubber in the tests
  libc6-arm64-cross      # the AArch64 C library qemu-user needs for that
  gcc-aarch64-linux-gnu  # builds the AArch64 initializer harness (test/release)
  llvm-14                # llvm-mc and llvm-lipo: the release tests check our assembler output and fat files against them
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "e2e-deps: must run as root to install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# iperf3 asks whether to start a system-wide daemon; the tests start their own servers.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections

# No package may start a service during installation (a system dnsmasq or iperf3 would hold ports
# the tests use). policy-rc.d is only put in place if the machine has none, and removed afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
fi
trap 'if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi' EXIT

# Quiet on success; the whole apt output on failure.
log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  echo "e2e-deps: failed to install: ${missing[*]}" >&2
  exit 1
fi
rm -f "$log"
echo "e2e-deps: installed ${missing[*]}"
