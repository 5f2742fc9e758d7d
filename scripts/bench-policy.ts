/**
 * Policy micro-benchmark: nanoseconds per decision for typical frames, and proof that deciding
 * allocates nothing in the steady state (heap size before and after a million decisions, and the
 * number of live objects). Prints figures; asserts nothing. Target: ≤ 150 ns per VM→host decision.
 *
 *   bun run bench:policy
 */
import { heapStats } from "bun:jsc";
import { Policy } from "../src/policy/policy.ts";
import { reasonName } from "../src/policy/reasons.ts";
import { parseRuleTarget, type Rule, RuleTable } from "../src/policy/rules.ts";
import { parseIpv4, parseMac } from "../src/wire/bytes.ts";
import { DhcpMessageType } from "../src/wire/dhcp.ts";
import {
  arpFrame,
  dhcpClientFrame,
  dhcpServerFrame,
  GATEWAY,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../test/support/frames.ts";

const DECISIONS = 1_000_000;
const gateway = parseIpv4(GATEWAY)!;
// A realistic rule set: a few allows and blocks of different lengths.
const rules: Rule[] = ["10.0.0.0/8", "192.168.1.0/24", "@host"].map((t) => ({
  action: "allow" as const,
  target: parseRuleTarget(t) as never,
}));
rules.push({ action: "block", target: parseRuleTarget("10.66.0.0/16") as never });
const policy = new Policy({
  vmMac: parseMac(VM_MAC)!,
  gateway,
  prefixLength: 24,
  isolated: true,
  rules: RuleTable.compile(rules, gateway),
});
const ack = dhcpServerFrame({
  messageType: DhcpMessageType.ACK,
  leaseTimeSeconds: 3600,
  dnsServers: [GATEWAY],
});
policy.observeFromHost(ack, 0, ack.length, 0);

const cases: Array<[string, Uint8Array, "vm" | "host"]> = [
  ["TCP to a global address", tcpFrame({ dst: "1.1.1.1", dport: 443, payload: new Uint8Array(1400) }), "vm"],
  ["DNS to a global resolver", udpFrame({ dst: "8.8.4.4", dport: 53 }), "vm"],
  ["DNS to the gateway", udpFrame({ dst: GATEWAY, dport: 53 }), "vm"],
  ["DHCP request (broadcast)", dhcpClientFrame({ messageType: DhcpMessageType.REQUEST }), "vm"],
  ["ARP request", arpFrame({ senderIp: VM_IP, targetIp: GATEWAY }), "vm"],
  ["spoofed MAC (dropped)", tcpFrame({ srcMac: OTHER_MAC, dst: "1.1.1.1", dport: 443 }), "vm"],
  ["spoofed IP (dropped)", tcpFrame({ src: "192.168.64.9", dst: "1.1.1.1", dport: 443 }), "vm"],
  ["private LAN (dropped)", tcpFrame({ dst: "172.16.0.1", dport: 443 }), "vm"],
  [
    "host → VM TCP",
    tcpFrame({ srcMac: "5e:00:00:00:00:01", dstMac: VM_MAC, src: "1.1.1.1", dst: VM_IP, dport: 5 }),
    "host",
  ],
  ["host → VM DHCP ACK (snooped)", ack, "host"],
];

function run(frame: Uint8Array, direction: "vm" | "host", count: number): number {
  // Frames sit inside a larger arena at an offset, as they do in the loop.
  const arena = new Uint8Array(4096);
  arena.set(frame, 2048);
  let sink = 0;
  const now = 1000;
  if (direction === "vm") {
    for (let i = 0; i < count; i++) sink += policy.decideFromVm(arena, 2048, frame.length, now);
  } else {
    for (let i = 0; i < count; i++) sink += policy.observeFromHost(arena, 2048, frame.length, now);
  }
  return sink;
}

console.log(`softnet policy benchmark: ${DECISIONS.toLocaleString()} decisions per case, Bun ${Bun.version}`);
console.log("case".padEnd(34), "reason".padEnd(24), "ns/decision", "  heap Δ (bytes)", " objects Δ");
let vmTotalNs = 0;
let vmCases = 0;
for (const [name, frame, direction] of cases) {
  run(frame, direction, 200_000); // warm up: let the JIT settle
  Bun.gc(true);
  const heapBefore = heapStats().heapSize;
  const objectsBefore = heapStats().objectCount;
  const start = Bun.nanoseconds();
  run(frame, direction, DECISIONS);
  const elapsed = Bun.nanoseconds() - start;
  const heapAfter = heapStats().heapSize;
  const objectsAfter = heapStats().objectCount;
  const reason =
    direction === "vm"
      ? reasonName(policy.decideFromVm(frame, 0, frame.length, 1000))
      : reasonName(policy.observeFromHost(frame, 0, frame.length, 1000));
  const ns = elapsed / DECISIONS;
  if (direction === "vm") {
    vmTotalNs += ns;
    vmCases++;
  }
  console.log(
    name.padEnd(34),
    reason.padEnd(24),
    ns.toFixed(1).padStart(11),
    String(heapAfter - heapBefore).padStart(16),
    String(objectsAfter - objectsBefore).padStart(10),
  );
}
const mean = vmTotalNs / vmCases;
console.log(
  `mean VM→host decision: ${mean.toFixed(1)} ns (target ≤ 150 ns: ${(mean / 150).toFixed(2)}× of budget)`,
);
console.log(
  "heap/objects Δ are measured without a GC in between: 0 or near 0 means no per-decision allocation.",
);
