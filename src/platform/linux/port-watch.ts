/**
 * Noticing that softnet's TAP port is no longer on its bridge.
 *
 * When the bridge is deleted (`ip link del br0`) or the port is taken off it (`ip link set sn..
 * nomaster`), the TAP itself lives on: reads and writes keep working, they just reach nothing. The
 * kernel tells the TAP's file descriptor nothing about it, so without asking, softnet would run on
 * with a VM cut off from the network, and its --expose rules pointing at nothing. Once a second
 * softnet asks rtnetlink for its TAP (one RTM_GETLINK for one interface index, not a dump of every
 * interface on a host that may run hundreds of VMs) and compares the TAP's master with the bridge
 * it attached to at start. A deleted TAP is noticed sooner, by the read itself (EBADFD, tap.ts).
 *
 * RTM_GETLINK for one interface needs no privilege (net/core/rtnetlink.c rtnl_getlink), so the
 * socket works after the privilege drop. Sources for the numbers: include/uapi/linux/rtnetlink.h
 * (RTM_NEWLINK 16, RTM_GETLINK 18, struct ifinfomsg: u8 family, u8 pad, u16 type, s32 index,
 * u32 flags, u32 change = 16 bytes), include/uapi/linux/if_link.h (IFLA_MASTER 10, u32), and
 * net/core/rtnetlink.c rtnl_getlink (ENODEV when no interface has the index).
 */
import { Errno, libc, MSG_DONTWAIT } from "./libc.ts";
import {
  attribute,
  findAttribute,
  type MessageSpan,
  NETLINK_ROUTE,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  NLMSG_HEADER_BYTES,
  openNetlinkFd,
  walkMessages,
} from "./netlink.ts";

const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const IFINFOMSG_BYTES = 16;
const IFLA_MASTER = 10;
const REQUEST_LENGTH = NLMSG_HEADER_BYTES + IFINFOMSG_BYTES;

/**
 * attached: the TAP is a port of the bridge softnet attached it to; detached: it is a port of no
 * bridge or of another one; no-interface: nothing has the index asked about; unknown: the kernel
 * did not answer (asked again next time).
 */
export type PortState = "attached" | "detached" | "no-interface" | "unknown";

export class BridgePortWatch {
  private readonly request = new Uint8Array(new ArrayBuffer(REQUEST_LENGTH));
  private readonly requestView = new DataView(this.request.buffer);
  // The reply carries the interface's statistics and more: 1-2 KiB; room for any kernel's.
  private readonly response = new Uint8Array(new ArrayBuffer(16 * 1024));
  private readonly responseView = new DataView(this.response.buffer);
  private sequence = 0;
  private answer: PortState = "unknown";
  private master = 0;
  /** Bound once: reads the reply to the current request (no closure per call). */
  private readonly readReply = (span: MessageSpan) => this.readLink(span);

  private constructor(
    private readonly socket: number,
    private readonly tapIndex: number,
    private readonly bridgeIndex: number,
  ) {
    this.requestView.setUint32(0, REQUEST_LENGTH, true); // nlmsg_len
    this.requestView.setUint16(4, RTM_GETLINK, true); // nlmsg_type
    this.requestView.setUint16(6, NLM_F_REQUEST, true); // one interface, not a dump
  }

  /** Opens the watch in softnet's network namespace (the TAP's), or returns why it cannot. */
  static open(tapIndex: number, bridgeIndex: number): BridgePortWatch | string {
    const socket = openNetlinkFd(NETLINK_ROUTE);
    if (socket < 0) return `cannot open a netlink socket (errno ${-socket})`;
    return new BridgePortWatch(socket, tapIndex, bridgeIndex);
  }

  /** Asks the kernel whether the TAP is still a port of its bridge. */
  portState(): PortState {
    const state = this.ask(this.tapIndex);
    if (state !== "attached") return state;
    return this.master === this.bridgeIndex ? "attached" : "detached";
  }

  /** Whether the bridge itself still exists (asked once the port is found detached, to say why). */
  bridgeExists(): boolean | undefined {
    const state = this.ask(this.bridgeIndex);
    return state === "unknown" ? undefined : state !== "no-interface";
  }

  close(): void {
    libc.close(this.socket);
  }

  /** One RTM_GETLINK for `index`: "attached" here only means "it exists" (this.master is set). */
  private ask(index: number): PortState {
    this.requestView.setUint32(8, ++this.sequence, true); // nlmsg_seq
    this.requestView.setInt32(NLMSG_HEADER_BYTES + 4, index, true); // ifi_index
    if (libc.send(this.socket, this.request, REQUEST_LENGTH, 0) !== REQUEST_LENGTH) return "unknown";
    // The kernel answers within sendmsg(), so the reply is already queued.
    const length = libc.recv(this.socket, this.response, this.response.length, MSG_DONTWAIT);
    if (length <= 0) return "unknown";
    this.answer = "unknown";
    if (!walkMessages(this.responseView, length, this.readReply)) return "unknown";
    return this.answer;
  }

  private readLink(span: MessageSpan): void {
    if (span.sequence !== this.sequence) return;
    const view = this.responseView;
    if (span.type === NLMSG_ERROR) {
      // struct nlmsgerr: int error (a negative errno), then the request's header.
      if (span.payloadLength >= 4 && view.getInt32(span.payload, true) === -Errno.ENODEV) {
        this.answer = "no-interface";
      }
      return;
    }
    if (span.type !== RTM_NEWLINK || span.payloadLength < IFINFOMSG_BYTES) return;
    const end = span.payload + span.payloadLength;
    const master = findAttribute(view, span.payload + IFINFOMSG_BYTES, end, IFLA_MASTER);
    this.master = attribute.u32(view, master) ?? 0; // no IFLA_MASTER: a port of nothing
    this.answer = "attached";
  }
}
