#!/usr/bin/env bash
# Installs every Debian package the tests (and CI's benchmark run) use, so that `npm test` passes on
# a fresh Debian machine that has only Node and npm. Idempotent and quiet: when everything is already
# installed it does nothing, not even `apt-get update`. Needs root.
#
# Each package below was found with `dpkg -S` on the program or file a test uses, and
# --no-install-recommends installs nothing else: a package a test needs is named here even when
# another one would usually "recommend" it (gcc-aarch64-linux-gnu without libc6-dev-arm64-cross
# cannot compile a C file that includes <stdio.h>). test/support/tools.ts maps each program and file
# to its package, so a test that lacks one fails naming the package, and test/support/tools.test.ts
# checks that map against dpkg and against this list.
set -euo pipefail

# package -> what the tests use it for
packages=(
  dnsmasq-base    # dnsmasq: DHCP + DNS server on the test bridge; -base ships no system service to grab ports
  socat           # socat: relays a kernel TAP to a socketpair end (the guest's NIC, the transparent relay)
  busybox         # busybox udhcpc, the guest's DHCP client
  iproute2        # ip netns / link / addr / route / neigh, bridge, ss
  nftables        # nft: softnet's --expose port forwarding, inspected by the tests
  tcpdump         # tcpdump: the witness on the bridge
  strace          # strace: which files TinyCC opens while softnet compiles its run-time C (test/release, test/platform)
  dsniff          # arpspoof
  hping3          # hping3: IP source spoofing, floods
  iputils-ping    # ping from the guest
  netcat-openbsd  # nc: TCP client/server in namespaces
  bind9-dnsutils  # dig
  iperf3          # iperf3: TCP throughput of a real guest (benchmark)
  sudo            # sudo: softnet escalates through passwordless sudo when started unprivileged
  util-linux      # setpriv (run as another user), findmnt (setuid tests), unshare (the doctor's test without /dev/net/tun, the /etc overlay); Essential, named for completeness
  mount           # mount: the doctor's empty /dev/net and the tests' private /etc overlay (required, not Essential)
  dhcpcd-base     # dhcpcd: a guest that sends an RFC 4361 DUID client identifier (test/e2e/vm-dhcp-identity)
  systemd         # systemd-networkd: a guest's DHCP client renewing across a softnet restart (test/e2e/vm-dhcp-identity)
  tshark          # tshark: reads softnet's pcapng captures back (test/e2e/capture, test/unit/capture, reject)
  passwd          # useradd: the unprivileged test user
  procps          # pgrep, kill (privilege and setuid tests); not installed on minimal images
  coreutils       # id, stat, chown, cat, sleep; Essential
  dash            # sh; Essential
  dpkg            # dpkg -S: test/support/tools.test.ts checks which package owns what; Essential
  tar             # tar: unpacks Bun's runtimes from npm, lists the release tarball; Essential
  git             # git: the release build records the commit
  gcc             # cc: builds the vmnet double (test/vmnet-double) and the benchmark's C programs
  libc6-dev       # their C headers and crt files (gcc only recommends it)
  linux-libc-dev  # <linux/if_tun.h> and the other kernel headers the double includes; <linux/io_uring.h>
  qemu-user              # qemu-aarch64: runs the AArch64 Bun (test/arm64) and the release's AArch64 scrubber
  libc6-arm64-cross      # the AArch64 C library qemu-aarch64 -L /usr/aarch64-linux-gnu loads programs with
  gcc-aarch64-linux-gnu  # aarch64-linux-gnu-gcc: the AArch64 vmnet double and initializer harness
  libc6-dev-arm64-cross  # their AArch64 C headers (bits/libc-header-start.h); gcc-aarch64-linux-gnu only recommends it
  linux-libc-dev-arm64-cross  # the AArch64 kernel headers (<linux/io_uring.h>, for the io_uring layout check)
  llvm-14                # llvm-mc, llvm-lipo, llvm-objcopy, llvm-nm, llvm-readelf in /usr/lib/llvm-14/bin:
                         # the release tests check our assembler output and fat files, test/arm64 disassembles TinyCC's code
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
# tshark asks whether non-root users may capture (a setuid dumpcap); the tests run as root.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections

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
