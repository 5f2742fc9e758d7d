// Egress by name, end to end: a real guest (its kernel, dig as its resolver, OpenBSD nc, iputils
// ping) behind softnet with --block 0.0.0.0/0 and names in --allow; dnsmasq on the bridge is the
// lease's DNS server, with host records and a CNAME configured in it, and logs every query it gets.
// What a name allows is learned from the answers the guest itself receives, and only from them.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  DNS_NAMES,
  type Forwarder,
  type Guest,
  softnet,
  Topology,
  waitFor,
} from "./lib/index.ts";

const canRun = process.getuid?.() === 0;
const e2e = describe.skipIf(!canRun && !REQUIRED_IN_CI);

let topology: Topology;

beforeAll(async () => {
  if (!canRun && !REQUIRED_IN_CI) return;
  topology = await Topology.create();
});

afterAll(async () => {
  await topology?.teardown();
});

/** A guest behind softnet with `args`, leased. */
async function guestWith(args: string[]): Promise<{ guest: Guest; forwarder: Forwarder }> {
  const guest = await topology.addGuest();
  const forwarder = await guest.attach(softnet(["--log-level", "debug", ...args]));
  await guest.dhcp();
  return { guest, forwarder };
}

/** The global test host's banner, fetched by the guest: true when it got through. */
async function reachesGlobalHost(guest: Guest): Promise<boolean> {
  const result = await guest.tcpConnect(ADDRESSES.globalHost, BANNER_PORT, { timeoutSeconds: 2 });
  return result.stdout.includes(BANNERS.globalHost);
}

/** Queries dnsmasq on br0 logged for `name` ("query[A] name from ..."). */
function queriesLogged(name: string): number {
  return topology
    .dhcpServerLog()
    .split("\n")
    .filter((line) => line.includes(`query[A] ${name} from`)).length;
}

const DENY = ["--block", "0.0.0.0/0"];

e2e("--block 0.0.0.0/0 --allow <name>: what the guest's own lookups open", () => {
  let guest: Guest;
  let forwarder: Forwarder;

  beforeAll(async () => {
    ({ guest, forwarder } = await guestWith([
      ...DENY,
      "--allow",
      `${DNS_NAMES.target},*.${DNS_NAMES.example}`,
    ]));
  });

  afterAll(async () => {
    await guest?.stopAll();
  });

  test("the address of an allowed name is closed until the guest looks the name up, then open", async () => {
    expect(await reachesGlobalHost(guest)).toBe(false);
    const answer = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.target);
    expect(answer.answers).toEqual([ADDRESSES.globalHost]);
    expect(await reachesGlobalHost(guest)).toBe(true);
    await waitFor("the learned line", () =>
      forwarder.log.includes(
        `learned ${ADDRESSES.globalHost} for ${DNS_NAMES.target} (--allow ${DNS_NAMES.target})`,
      ),
    );
  });

  test("a wildcard allows the names below it, not the name itself", async () => {
    const below = await guest.dnsQuery(ADDRESSES.gateway, `www.${DNS_NAMES.example}`);
    expect(below.answers).toEqual([ADDRESSES.globalHost]);
    const itself = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.example);
    expect(itself.answers).toEqual([]);
  });

  test("queries for names nobody allowed never reach the DNS server (no exfiltration through DNS)", async () => {
    const secret = "c2vjcmv0lwrhdge.exfil.test";
    for (const server of [ADDRESSES.gateway, ADDRESSES.secondDnsServer]) {
      const result = await guest.dnsQuery(server, secret);
      expect(result.answers).toEqual([]);
    }
    // Over TCP too: the handshake passes, the query does not.
    expect((await guest.dnsQuery(ADDRESSES.gateway, secret, { tcp: true })).answers).toEqual([]);
    expect(queriesLogged(secret)).toBe(0);
    // The control: an allowed name's query does reach it, over UDP and TCP.
    const before = queriesLogged(DNS_NAMES.target);
    expect((await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.target, { tcp: true })).answers).toEqual([
      ADDRESSES.globalHost,
    ]);
    expect(queriesLogged(DNS_NAMES.target)).toBe(before + 1);
  });

  test("the counters name what was looked up and the --allow that would let the rest through", async () => {
    forwarder.daemon.process.kill("SIGUSR2");
    await waitFor("the names report", () => forwarder.log.includes("to allow what was dropped: --allow"));
    expect(forwarder.log).toContain(`    ${DNS_NAMES.target}: allowed by ${DNS_NAMES.target}; queries `);
    expect(forwarder.log).toContain(
      "to allow what was dropped: --allow example.test,c2vjcmv0lwrhdge.exfil.test",
    );
  });
});

e2e("what a name does not open", () => {
  test("a CNAME to a name the list does not have: the address is learned for the name asked", async () => {
    const { guest } = await guestWith([...DENY, "--allow", DNS_NAMES.alias]);
    try {
      expect(await reachesGlobalHost(guest)).toBe(false);
      const answer = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.alias);
      expect(answer.answers).toEqual([ADDRESSES.globalHost]);
      expect(await reachesGlobalHost(guest)).toBe(true);
    } finally {
      await guest.stopAll();
    }
  });

  test("a name that answers with a private address (DNS rebinding) opens nothing, and softnet says so once", async () => {
    const { guest, forwarder } = await guestWith(["--allow", DNS_NAMES.rebind]);
    try {
      const answer = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.rebind);
      expect(answer.answers).toEqual([ADDRESSES.privateServer]);
      await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.rebind);
      const result = await guest.tcpConnect(ADDRESSES.privateServer, BANNER_PORT, { timeoutSeconds: 2 });
      expect(result.stdout).not.toContain(BANNERS.privateServer);
      await waitFor("the rebinding warning", () => forwarder.log.includes("which is not a global address"));
      expect(forwarder.log.split("which is not a global address").length - 1).toBe(1);
    } finally {
      await guest.stopAll();
    }
  });

  test("an answer from a resolver the lease did not name teaches nothing", async () => {
    // 10.99.0.1 runs a resolver too (it answers example.test with the global host) and the rules
    // let the guest reach it; it is not one of the lease's DNS servers.
    const { guest } = await guestWith([
      ...DENY,
      "--allow",
      `${DNS_NAMES.example},${ADDRESSES.privateServer}/32`,
    ]);
    try {
      const answer = await guest.dnsQuery(ADDRESSES.privateServer, DNS_NAMES.example);
      expect(answer.answers).toEqual([ADDRESSES.globalHost]);
      expect(await reachesGlobalHost(guest)).toBe(false);
      // The control: the lease's own server's answer does open it.
      await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.example);
      expect(await reachesGlobalHost(guest)).toBe(true);
    } finally {
      await guest.stopAll();
    }
  });

  test("traffic keeps a learned address open past its TTL (60 s at least, here 0 s)", async () => {
    const { guest } = await guestWith([...DENY, "--allow", DNS_NAMES.target]);
    try {
      await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.target);
      // One echo every 5 s for 75 s: past the 60 s the TTL (0 s, raised to the floor) gives it.
      const result = await guest.exec(
        ["ping", "-n", "-c", "16", "-i", "5", "-W", "2", ADDRESSES.globalHost],
        {
          timeoutMs: 100_000,
        },
      );
      expect(result.stdout).toContain("16 packets transmitted, 16 received");
    } finally {
      await guest.stopAll();
    }
  }, 120_000);
});

e2e("from the report to a locked-down VM", () => {
  /** The job: look up the names it needs and fetch from the address they give. */
  async function job(guest: Guest): Promise<boolean> {
    const answer = await guest.dnsQuery(ADDRESSES.gateway, DNS_NAMES.alias);
    if (answer.answers.length === 0) return false;
    return reachesGlobalHost(guest);
  }

  test("a run without default-deny lists the names that carried traffic; with them allowed, the job passes", async () => {
    // 1. Audit: no --block, the job passes, and the exit report says what it used.
    const audit = await guestWith([]);
    expect(await job(audit.guest)).toBe(true);
    expect(await audit.forwarder.stop("SIGINT")).toBe(0);
    const used = /names whose addresses carried traffic: --allow (\S+)/.exec(audit.forwarder.log);
    expect(used?.[1]).toBe(DNS_NAMES.alias);
    await audit.guest.stopAll();

    // 2. Locked down without it: the job fails, and the report names what to allow.
    const locked = await guestWith(DENY);
    expect(await job(locked.guest)).toBe(false);
    expect(await locked.forwarder.stop("SIGINT")).toBe(0);
    const dropped = /to allow what was dropped: --allow (\S+)/.exec(locked.forwarder.log);
    expect(dropped?.[1]).toBe(DNS_NAMES.alias);
    await locked.guest.stopAll();

    // 3. Locked down with the list the report printed: the job passes.
    const allowed = await guestWith([...DENY, "--allow", used![1]]);
    expect(await job(allowed.guest)).toBe(true);
    await allowed.guest.stopAll();
  });
});
