// The C reference relay of `bun run bench`: the same socketpair <-> TAP path softnet takes, with
// no filtering, as a ceiling to compare softnet with.
//
//   relay <vm-fd> <tap-name> <bridge>
//
// Creates TAP <tap-name> (IFF_TAP | IFF_NO_PI, not persistent: it disappears when the relay exits),
// gives it the bridge's MTU, enslaves it to <bridge> with port isolation on (as softnet does) and
// brings it up. Then, woken by poll():
//   VM -> host: recvmmsg() batches of 64 datagrams from <vm-fd>, one write() per frame to the TAP;
//   host -> VM: read() up to 64 frames from the TAP (until EAGAIN), one sendmmsg() to <vm-fd>.
// Each direction handles at most 1024 frames per wake-up (softnet's drain budget), so neither
// direction starves the other. Frames that find no room (EAGAIN/ENOBUFS) are dropped, as softnet
// does. SIGINT/SIGTERM: exit 0. Prints its counters on stderr when it stops.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUDGET 1024
#define SLOT 65550

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static void die(const char *what) {
  fprintf(stderr, "relay: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void if_ioctl(int sock, unsigned long request, struct ifreq *ifr, const char *what) {
  if (ioctl(sock, request, ifr) < 0) die(what);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: relay <vm-fd> <tap-name> <bridge>\n");
    return 2;
  }
  int vm = atoi(argv[1]);
  const char *tap_name = argv[2], *bridge = argv[3];

  int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (ctl < 0) die("socket");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", bridge);
  if_ioctl(ctl, SIOCGIFMTU, &ifr, "SIOCGIFMTU(bridge)");
  int mtu = ifr.ifr_mtu;

  int tap = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (tap < 0) die("open /dev/net/tun");
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", tap_name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if_ioctl(tap, TUNSETIFF, &ifr, "TUNSETIFF");

  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", tap_name);
  ifr.ifr_mtu = mtu;
  if_ioctl(ctl, SIOCSIFMTU, &ifr, "SIOCSIFMTU");
  if_ioctl(ctl, SIOCGIFINDEX, &ifr, "SIOCGIFINDEX");
  int index = ifr.ifr_ifindex;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", bridge);
  ifr.ifr_ifindex = index;
  if_ioctl(ctl, SIOCBRADDIF, &ifr, "SIOCBRADDIF");
  char path[128];
  snprintf(path, sizeof path, "/sys/class/net/%s/brport/isolated", tap_name);
  int iso = open(path, O_WRONLY);
  if (iso < 0 || write(iso, "1", 1) != 1) die("brport/isolated");
  close(iso);
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", tap_name);
  if_ioctl(ctl, SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS");
  ifr.ifr_flags |= IFF_UP;
  if_ioctl(ctl, SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS");

  if (fcntl(vm, F_SETFL, fcntl(vm, F_GETFL) | O_NONBLOCK) < 0) die("fcntl(vm)");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; // no SA_RESTART: poll() returns EINTR
  sigaction(SIGINT, &sa, 0);
  sigaction(SIGTERM, &sa, 0);
  signal(SIGPIPE, SIG_IGN);

  int slot = mtu + 14 > 2048 ? mtu + 14 : 2048;
  if (slot > SLOT) slot = SLOT;
  unsigned char *vm_buf = malloc((size_t)BATCH * slot), *host_buf = malloc((size_t)BATCH * slot);
  struct mmsghdr vm_msgs[BATCH], host_msgs[BATCH];
  struct iovec vm_iov[BATCH], host_iov[BATCH];
  for (int i = 0; i < BATCH; i++) {
    vm_iov[i] = (struct iovec){vm_buf + (size_t)i * slot, (size_t)slot};
    host_iov[i] = (struct iovec){host_buf + (size_t)i * slot, 0};
    memset(&vm_msgs[i], 0, sizeof vm_msgs[i]);
    memset(&host_msgs[i], 0, sizeof host_msgs[i]);
    vm_msgs[i].msg_hdr.msg_iov = &vm_iov[i];
    vm_msgs[i].msg_hdr.msg_iovlen = 1;
    host_msgs[i].msg_hdr.msg_iov = &host_iov[i];
    host_msgs[i].msg_hdr.msg_iovlen = 1;
  }
  unsigned long long to_host = 0, to_vm = 0, dropped_to_host = 0, dropped_to_vm = 0;
  struct pollfd fds[2] = {{vm, POLLIN, 0}, {tap, POLLIN, 0}};
  int status = 0;
  while (!stopping) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[0].revents & (POLLERR | POLLHUP)) break; // the VM closed its end
    if (fds[0].revents & POLLIN) {
      for (int handled = 0; handled < BUDGET;) {
        int n = recvmmsg(vm, vm_msgs, BATCH, MSG_DONTWAIT, 0);
        if (n <= 0) break;
        for (int i = 0; i < n; i++) {
          ssize_t w = write(tap, vm_iov[i].iov_base, vm_msgs[i].msg_len);
          if (w >= 0) to_host++;
          else dropped_to_host++;
        }
        handled += n;
        if (n < BATCH) break;
      }
    }
    if (fds[1].revents & POLLIN) {
      for (int handled = 0; handled < BUDGET;) {
        int n = 0;
        while (n < BATCH) {
          ssize_t r = read(tap, host_buf + (size_t)n * slot, (size_t)slot);
          if (r < 0) break;
          host_iov[n].iov_len = (size_t)r;
          n++;
        }
        if (n == 0) break;
        int sent = sendmmsg(vm, host_msgs, n, MSG_DONTWAIT);
        if (sent < 0) {
          if (errno == ECONNREFUSED || errno == EPIPE) goto done;
          sent = 0;
        }
        to_vm += sent;
        dropped_to_vm += n - sent;
        handled += n;
        if (n < BATCH) break;
      }
    }
  }
done:
  fprintf(stderr, "relay: stopped: %llu frames to the host, %llu to the VM; dropped %llu to host, %llu to VM\n",
          to_host, to_vm, dropped_to_host, dropped_to_vm);
  close(tap);
  return status;
}
