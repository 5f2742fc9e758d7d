/**
 * Noticing that the VM closed its end of the socket pair.
 *
 * For AF_UNIX datagram sockets Linux signals nothing when the peer closes: our end never becomes
 * readable, epoll reports no hang-up, and receive keeps saying "nothing waiting". Only a send fails
 * (ECONNREFUSED). A VM that is gone but never sent to would keep softnet alive forever, so once a
 * second softnet asks the kernel's socket diagnostics (NETLINK_SOCK_DIAG, unix_diag) for the peer
 * of its VM socket: a peer whose inode reads 0 has been released.
 *
 * unix_diag looks sockets up in the network namespace of the netlink socket that asks, which must
 * be the namespace the VM socket was created in. Tart creates both in one namespace; tests (and
 * anyone running softnet inside `ip netns exec`) may not, so the diag socket is opened, while
 * still root, in the VM socket's own namespace (SIOCGSKNS gives it), then kept for the run.
 */
import { fstatSync } from "node:fs";
import { CLONE_NEWNET, libc, MSG_DONTWAIT, O_CLOEXEC } from "./libc.ts";
import {
  attribute,
  findAttribute,
  type MessageSpan,
  NETLINK_SOCK_DIAG,
  NLM_F_REQUEST,
  NLMSG_HEADER_BYTES,
  openNetlinkFd,
  walkMessages,
} from "./netlink.ts";

// include/uapi/linux/sock_diag.h, unix_diag.h
const SOCK_DIAG_BY_FAMILY = 20;
const AF_UNIX = 1;
const UDIAG_SHOW_PEER = 0x4;
const UNIX_DIAG_PEER = 2;
/** ioctl on a socket: a file descriptor for the network namespace it belongs to. */
const SIOCGSKNS = 0x894c;

/** struct unix_diag_req (24 bytes) after struct nlmsghdr. */
const REQUEST_LENGTH = NLMSG_HEADER_BYTES + 24;
/** struct unix_diag_msg (16 bytes): the reply's fixed header, attributes follow. */
const UNIX_DIAG_MSG_BYTES = 16;

export type PeerState = "alive" | "gone" | "unknown";

export class UnixPeerWatch {
  private readonly request = new Uint8Array(new ArrayBuffer(REQUEST_LENGTH));
  private readonly response = new Uint8Array(new ArrayBuffer(1024));
  private readonly responseView = new DataView(this.response.buffer);
  private sequence = 0;
  private answer: PeerState = "unknown";
  /** Bound once: reads the reply message of the current request (no closure per call). */
  private readonly readReply = (span: MessageSpan) => this.readPeer(span);

  private constructor(
    private readonly diagSocket: number,
    inode: number,
  ) {
    const view = new DataView(this.request.buffer);
    view.setUint32(0, REQUEST_LENGTH, true); // nlmsg_len
    view.setUint16(4, SOCK_DIAG_BY_FAMILY, true); // nlmsg_type
    view.setUint16(6, NLM_F_REQUEST, true); // nlmsg_flags: one socket, not a dump
    view.setUint8(16, AF_UNIX); // sdiag_family
    view.setUint32(20, 0xffffffff, true); // udiag_states: any
    view.setUint32(24, inode, true); // udiag_ino
    view.setUint32(28, UDIAG_SHOW_PEER, true); // udiag_show
    view.setUint32(32, 0xffffffff, true); // udiag_cookie: "no cookie", match by inode alone
    view.setUint32(36, 0xffffffff, true);
  }

  /**
   * Opens the watch for `fd`, or returns a reason string when this kernel cannot provide one
   * (then softnet relies on SIGINT and on send errors, as the original does). Call while root.
   */
  static open(fd: number): UnixPeerWatch | string {
    let inode: number;
    try {
      inode = Number(fstatSync(fd).ino);
    } catch {
      return `fd ${fd} is not open`;
    }
    const namespace = libc.ioctl(fd, SIOCGSKNS, null);
    if (namespace < 0) return "the kernel cannot name the VM socket's network namespace (SIOCGSKNS)";
    let diagSocket = -1;
    const own = libc.open("/proc/thread-self/ns/net", O_CLOEXEC);
    try {
      if (own < 0) return "cannot open this thread's network namespace";
      const sameNamespace = fstatSync(own).ino === fstatSync(namespace).ino;
      if (!sameNamespace && libc.setns(namespace, CLONE_NEWNET) !== 0) {
        return "cannot enter the VM socket's network namespace";
      }
      diagSocket = openNetlinkFd(NETLINK_SOCK_DIAG);
      if (!sameNamespace && libc.setns(own, CLONE_NEWNET) !== 0) {
        // Staying in the wrong namespace would be worse than having no watch: give up loudly.
        throw new Error("cannot return to softnet's own network namespace after opening the peer watch");
      }
    } finally {
      libc.close(namespace);
      if (own >= 0) libc.close(own);
    }
    if (diagSocket < 0) return "the kernel has no socket diagnostics (NETLINK_SOCK_DIAG)";
    const watch = new UnixPeerWatch(diagSocket, inode);
    const first = watch.peerState();
    if (first === "unknown") {
      watch.close();
      return "the kernel's unix_diag does not answer for the VM socket";
    }
    return watch;
  }

  /** Asks the kernel about the VM socket's peer. */
  peerState(): PeerState {
    new DataView(this.request.buffer).setUint32(8, ++this.sequence, true);
    if (libc.send(this.diagSocket, this.request, REQUEST_LENGTH, 0) !== REQUEST_LENGTH) return "unknown";
    // The kernel answers within sendmsg(), so the reply is already queued.
    const length = libc.recv(this.diagSocket, this.response, this.response.length, MSG_DONTWAIT);
    if (length <= 0) return "unknown";
    this.answer = "unknown";
    if (!walkMessages(this.responseView, length, this.readReply)) return "unknown";
    return this.answer;
  }

  /** The reply to our request: an error (unknown), or the socket with its peer attribute. */
  private readPeer(span: MessageSpan): void {
    if (span.sequence !== this.sequence || span.type !== SOCK_DIAG_BY_FAMILY) return;
    if (span.payloadLength < UNIX_DIAG_MSG_BYTES) return;
    const view = this.responseView;
    const end = span.payload + span.payloadLength;
    const peer = findAttribute(view, span.payload + UNIX_DIAG_MSG_BYTES, end, UNIX_DIAG_PEER);
    const peerInode = attribute.u32(view, peer);
    // No peer attribute: the socket is not connected to anything any more. A released peer has no
    // inode any more.
    this.answer = peerInode === undefined || peerInode === 0 ? "gone" : "alive";
  }

  close(): void {
    libc.close(this.diagSocket);
  }
}
