// The e2e harness. One Topology per test file, torn down even when tests fail:
//
//   let topology: Topology;
//   beforeAll(async () => { topology = await Topology.create(); });
//   afterAll(async () => { await topology?.teardown(); });
//
//   test("the guest reaches the global test host", async () => {
//     const guest = await topology.addGuest();
//     await guest.attach(softnet(["--log-level", "debug"]));   // or transparentRelay()
//     const lease = await guest.dhcp();
//     expect(await guest.ping(ADDRESSES.globalHost)).toBe(true);
//     expect(await guest.ping(ADDRESSES.privateServer, { waitSeconds: 1 })).toBe(false);
//   });
//
// Observe with topology.startCapture() (tcpdump on br0), topology.hostNeighbours(),
// topology.dhcpServerLeases() and topology.logs() / guest.logs() for failure messages.
// Attach guests one at a time: a forwarder is recognised by the new port it adds to the bridge.
export { Capture } from "./capture.ts";
export {
  commandForwarder,
  Forwarder,
  type ForwarderContext,
  type ForwarderSpec,
  softnet,
  transparentRelay,
} from "./forwarder.ts";
export { Guest, type GuestLease, startBannerServer } from "./guest.ts";
export { inNamespace, listNamespaces, NAME_PREFIX } from "./netns.ts";
export { check, Daemon, type RunResult, run, waitFor } from "./proc.ts";
export { closeFd, datagramSocketPair } from "./socketpair.ts";
export {
  ADDRESSES,
  BANNER_PORT,
  BANNERS,
  type BridgeHost,
  DHCP_LEASE_SECONDS,
  DNS_NAMES,
  type DnsmasqLease,
  type Neighbour,
  Topology,
  type TopologyOptions,
} from "./topology.ts";
export {
  type ClientRestartOutcome,
  DHCPCD,
  type DrainOutcome,
  type DuidOutcome,
  dhcpShapedDnsQuery,
  drainWithClientIds,
  duidClient,
  type FloodOutcome,
  type ForgedClientPortOutcome,
  floodToUnknownMacs,
  forgedClientPort,
  type GuestDhcpClient,
  guestBehind,
  type HostNameOutcome,
  leaseAfterStop,
  type NeighbourOutcome,
  type NextHopOutcome,
  neighbourWithIsolationOff,
  nextHopElsewhere,
  type ReleaseOutcome,
  type RestartOutcome,
  restartUnderClient,
  restartUnderLiveClient,
  type SoftnetFactory,
  SYSTEMD_NETWORKD,
  stealLeaseWithClientId,
  type TheftOutcome,
  takeHostName,
} from "./vm-attacks.ts";
