/**
 * A walk through softnet's policy with the real decision code: a VM boots, asks for a lease, gets
 * one, and tries things a well-behaved and a hostile guest would do. Each line shows the frame,
 * the verdict and its reason. (`npm run demo`; the Linux runtime will replace this with a real guest.)
 */
import { Policy } from "../src/policy/policy.ts";
import { isPass, REASON_EXPLANATIONS, type ReasonCode, reasonName } from "../src/policy/reasons.ts";
import { parseRuleTarget, type Rule, RuleTable } from "../src/policy/rules.ts";
import { ArpOperation } from "../src/wire/arp.ts";
import { parseIpv4, parseMac } from "../src/wire/bytes.ts";
import { DhcpMessageType } from "../src/wire/dhcp.ts";
import { EtherType } from "../src/wire/ethernet.ts";
import {
  arpFrame,
  dhcpClientFrame,
  dhcpServerFrame,
  etherFrame,
  GATEWAY,
  icmpEchoFrame,
  OTHER_MAC,
  tcpFrame,
  udpFrame,
  VM_IP,
  VM_MAC,
} from "../test/support/frames.ts";

const rules: Rule[] = [{ action: "block", target: parseRuleTarget("1.1.1.0/24") as never }];
const gateway = parseIpv4(GATEWAY)!;
const policy = new Policy({
  vmMac: parseMac(VM_MAC)!,
  gateway,
  prefixLength: 24,
  isolated: true,
  rules: RuleTable.compile(rules, gateway),
});
let now = 0;

function show(direction: "VM → host" | "host → VM", what: string, frame: Uint8Array): void {
  const reason: ReasonCode =
    direction === "VM → host"
      ? policy.decideFromVm(frame, 0, frame.length, now)
      : policy.observeFromHost(frame, 0, frame.length, now);
  const verdict = isPass(reason) ? "\x1b[32mpass\x1b[0m" : "\x1b[31mdrop\x1b[0m";
  console.log(
    `${direction}  ${what.padEnd(52)} ${verdict}  ${reasonName(reason).padEnd(24)} ${REASON_EXPLANATIONS[reason]}`,
  );
}

console.log(`VM ${VM_MAC}, gateway ${GATEWAY}, rules: --block 1.1.1.0/24\n`);
console.log("-- before a lease");
show("VM → host", "DHCPDISCOVER (broadcast)", dhcpClientFrame());
show("VM → host", "DHCPDISCOVER for an invented MAC", dhcpClientFrame({ chaddr: OTHER_MAC }));
show("VM → host", `TCP to 8.8.8.8:443 from ${VM_IP}`, tcpFrame({ dst: "8.8.8.8", dport: 443 }));
show("VM → host", "ARP probe for its future address", arpFrame({ senderIp: "0.0.0.0", targetIp: VM_IP }));
show(
  "host → VM",
  `DHCPACK ${VM_IP}, 600 s, DNS ${GATEWAY}`,
  dhcpServerFrame({ messageType: DhcpMessageType.ACK, leaseTimeSeconds: 600, dnsServers: [GATEWAY] }),
);
console.log(`\n-- lease learned: ${VM_IP} until t=600 s`);
now = 1000;
show("VM → host", "TCP to 8.8.8.8:443", tcpFrame({ dst: "8.8.8.8", dport: 443 }));
show("VM → host", "ping the gateway", icmpEchoFrame({ dst: GATEWAY }));
show("VM → host", "DNS query to the gateway", udpFrame({ dst: GATEWAY, dport: 53 }));
show("VM → host", "TCP to 1.1.1.1:443", tcpFrame({ dst: "1.1.1.1", dport: 443 }));
show("VM → host", "TCP to another VM 192.168.64.6:22", tcpFrame({ dst: "192.168.64.6", dport: 22 }));
show("VM → host", "TCP to the LAN 10.0.0.5:445", tcpFrame({ dst: "10.0.0.5", dport: 445 }));
show("VM → host", "DNS to a LAN resolver 10.0.0.53", udpFrame({ dst: "10.0.0.53", dport: 53 }));
console.log("\n-- a hostile guest");
show(
  "VM → host",
  "ARP reply claiming to be the gateway",
  arpFrame({ operation: ArpOperation.REPLY, senderIp: GATEWAY, targetIp: GATEWAY }),
);
show(
  "VM → host",
  "TCP with a forged source 192.168.64.77",
  tcpFrame({ src: "192.168.64.77", dst: "8.8.8.8", dport: 443 }),
);
show("VM → host", "frame from a forged MAC", tcpFrame({ srcMac: OTHER_MAC, dst: "8.8.8.8", dport: 443 }));
show("VM → host", "IPv6", etherFrame(EtherType.IPV6));
console.log("\n-- after the lease expired (t=601 s)");
now = 601_000;
show("VM → host", "TCP to 8.8.8.8:443", tcpFrame({ dst: "8.8.8.8", dport: 443 }));
show(
  "VM → host",
  "DHCPREQUEST (broadcast renewal)",
  dhcpClientFrame({ messageType: DhcpMessageType.REQUEST }),
);
