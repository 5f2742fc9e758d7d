// Linked into the AArch64 build of the vmnet double only (test/darwin/support.ts buildDouble, with
// -Wl,--wrap=ioctl), for the arm64 suites that run under qemu-user on an x86-64 host.
//
// The double puts its TAP on the test bridge with ioctl(SIOCBRADDIF). qemu-user translates each
// ioctl through a table of the requests it knows, and qemu 7.2 (Debian 12's qemu-user) has no
// entry for SIOCBRADDIF: the call fails with ENOSYS ("Unsupported ioctl: cmd=0x89a2" with
// -d unimp), so no interface of the double could start. This wrapper makes the same change through
// rtnetlink instead (RTM_NEWLINK on the port with IFLA_MASTER = the bridge, what `ip link set PORT
// master BRIDGE` sends), which qemu passes through to the host kernel. Every other request goes to
// the real ioctl unchanged.
#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int __real_ioctl(int fd, unsigned long request, ...);

static int set_master(int port, unsigned int bridge) {
  struct {
    struct nlmsghdr header;
    struct ifinfomsg link;
    struct rtattr master_attribute;
    unsigned int master;
  } message;
  memset(&message, 0, sizeof message);
  message.header.nlmsg_len = sizeof message;
  message.header.nlmsg_type = RTM_NEWLINK;
  message.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  message.header.nlmsg_seq = 1;
  message.link.ifi_family = AF_UNSPEC;
  message.link.ifi_index = port;
  message.master_attribute.rta_type = IFLA_MASTER;
  message.master_attribute.rta_len = RTA_LENGTH(sizeof message.master);
  message.master = bridge;

  int route = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (route < 0) return -1;
  int result = -1;
  if (send(route, &message, sizeof message, 0) == (ssize_t)sizeof message) {
    struct {
      struct nlmsghdr header;
      struct nlmsgerr error;
    } reply;
    ssize_t received = recv(route, &reply, sizeof reply, 0);
    if (received >= (ssize_t)sizeof reply && reply.header.nlmsg_type == NLMSG_ERROR) {
      if (reply.error.error == 0) {
        result = 0;
      } else {
        errno = -reply.error.error;
      }
    } else {
      errno = EPROTO;
    }
  }
  int saved = errno;
  close(route);
  errno = saved;
  return result;
}

int __wrap_ioctl(int fd, unsigned long request, ...) {
  va_list arguments;
  va_start(arguments, request);
  void *argument = va_arg(arguments, void *);
  va_end(arguments);
  if (request == SIOCBRADDIF) {
    const struct ifreq *bridge_request = argument;
    unsigned int bridge = if_nametoindex(bridge_request->ifr_name);
    if (bridge == 0) return -1;
    return set_master(bridge_request->ifr_ifindex, bridge);
  }
  return __real_ioctl(fd, request, argument);
}
