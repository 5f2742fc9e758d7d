// A hostile VM at full speed: writes forged Ethernet frames into the VM end of the socketpair
// (fd 3) as fast as the socket takes them, 64 per sendmmsg(), blocking when softnet's receive queue
// is full, so softnet is kept busy for as long as this runs.
//
//   spoof-flood <frames> <vm-mac>      frames 0: until SIGTERM/SIGINT or until softnet is gone
//
// Every frame is one softnet must drop, in turn: a foreign source MAC (mac-spoof), the VM's MAC
// with a forged IPv4 source (ip-spoof, or no-lease before a lease), an ARP reply claiming the
// gateway's address (arp-spoof), and a DHCP DISCOVER for another client's hardware address
// (dhcp-spoof). Sources vary with every frame, so nothing can be learned or cached. Prints one
// JSON line when it stops: {"sent":N,"seconds":S,"stoppedBy":"count|signal|peer-gone"}.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define FRAME_BYTES 342 // Ethernet 14 + IPv4 20 + UDP 8 + BOOTP 300: room for the largest kind

static volatile sig_atomic_t stop_requested;
static void on_signal(int signal_number) {
  (void)signal_number;
  stop_requested = 1;
}

static uint8_t vm_mac[6];
static const uint8_t broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t gateway_ip[4] = {192, 168, 64, 1};

static void put16(uint8_t *p, uint16_t value) {
  p[0] = value >> 8;
  p[1] = value & 0xff;
}

static void put32(uint8_t *p, uint32_t value) {
  put16(p, value >> 16);
  put16(p + 2, value & 0xffff);
}

static void ipv4_checksum(uint8_t *header) {
  uint32_t sum = 0;
  header[10] = header[11] = 0;
  for (int i = 0; i < 20; i += 2) sum += (header[i] << 8) | header[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  put16(header + 10, ~sum & 0xffff);
}

// Ethernet + IPv4 + UDP headers; returns the frame length for `payload` bytes of UDP payload.
static size_t udp_frame(uint8_t *f, const uint8_t *src_mac, const uint8_t *dst_mac, uint32_t src_ip,
                        uint32_t dst_ip, uint16_t src_port, uint16_t dst_port, size_t payload) {
  memcpy(f, dst_mac, 6);
  memcpy(f + 6, src_mac, 6);
  put16(f + 12, 0x0800);
  uint8_t *ip = f + 14;
  memset(ip, 0, 20);
  ip[0] = 0x45;
  put16(ip + 2, 20 + 8 + payload);
  ip[8] = 64;
  ip[9] = 17;
  put32(ip + 12, src_ip);
  put32(ip + 16, dst_ip);
  ipv4_checksum(ip);
  uint8_t *udp = ip + 20;
  put16(udp, src_port);
  put16(udp + 2, dst_port);
  put16(udp + 4, 8 + payload);
  put16(udp + 6, 0); // no checksum (allowed over IPv4)
  return 14 + 20 + 8 + payload;
}

static size_t build(uint8_t *f, uint64_t n) {
  uint32_t vary = (uint32_t)n;
  switch (n % 4) {
  case 0: { // a foreign source MAC
    uint8_t src[6] = {0x02, 0x66, vary >> 24, vary >> 16, vary >> 8, vary};
    memset(f, 0, FRAME_BYTES);
    return udp_frame(f, src, broadcast, 0xc0a84000 | (vary & 0xff), 0x08080808, 4000, 9, 18);
  }
  case 1: // the VM's MAC, a forged IPv4 source (10.0.0.0/8, varying)
    memset(f, 0, FRAME_BYTES);
    return udp_frame(f, vm_mac, broadcast, 0x0a000000 | (vary & 0xffffff), 0x08080808, 4000, 9, 18);
  case 2: { // ARP reply: "the gateway's address is at my MAC"
    memset(f, 0, 60);
    memcpy(f, broadcast, 6);
    memcpy(f + 6, vm_mac, 6);
    put16(f + 12, 0x0806);
    uint8_t *arp = f + 14;
    put16(arp, 1);          // htype Ethernet
    put16(arp + 2, 0x0800); // ptype IPv4
    arp[4] = 6;
    arp[5] = 4;
    put16(arp + 6, 2); // reply
    memcpy(arp + 8, vm_mac, 6);
    memcpy(arp + 14, gateway_ip, 4);
    memcpy(arp + 18, broadcast, 6);
    put32(arp + 24, 0xc0a84000 | (vary & 0xff));
    return 60;
  }
  default: { // DHCP DISCOVER for another client's hardware address
    memset(f, 0, FRAME_BYTES);
    size_t length = udp_frame(f, vm_mac, broadcast, 0, 0xffffffff, 68, 67, 300);
    uint8_t *bootp = f + 42;
    bootp[0] = 1; // BOOTREQUEST
    bootp[1] = 1; // Ethernet
    bootp[2] = 6;
    put32(bootp + 4, vary); // xid
    uint8_t other[6] = {0x02, 0x77, vary >> 24, vary >> 16, vary >> 8, vary};
    memcpy(bootp + 28, other, 6); // chaddr
    put32(bootp + 236, 0x63825363); // magic cookie
    uint8_t *options = bootp + 240;
    options[0] = 53; // DHCP message type
    options[1] = 1;
    options[2] = 1; // DISCOVER
    options[3] = 255;
    return length;
  }
  }
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 3 || sscanf(argv[2], "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &vm_mac[0], &vm_mac[1], &vm_mac[2],
                          &vm_mac[3], &vm_mac[4], &vm_mac[5]) != 6) {
    fprintf(stderr, "usage: spoof-flood <frames, 0 = until stopped> <vm-mac>   (fd 3: the VM end)\n");
    return 2;
  }
  uint64_t limit = strtoull(argv[1], NULL, 10);
  struct sigaction action = {0};
  action.sa_handler = on_signal; // no SA_RESTART: a blocked sendmmsg returns EINTR
  sigaction(SIGTERM, &action, NULL);
  sigaction(SIGINT, &action, NULL);
  signal(SIGPIPE, SIG_IGN);

  static uint8_t frames[BATCH][FRAME_BYTES];
  struct iovec iov[BATCH];
  struct mmsghdr messages[BATCH];
  uint64_t sent = 0;
  const char *stopped_by = "count";
  double started = now();
  while (limit == 0 || sent < limit) {
    if (stop_requested) {
      stopped_by = "signal";
      break;
    }
    unsigned count = BATCH;
    if (limit != 0 && limit - sent < BATCH) count = limit - sent;
    for (unsigned i = 0; i < count; i++) {
      iov[i].iov_base = frames[i];
      iov[i].iov_len = build(frames[i], sent + i);
      memset(&messages[i], 0, sizeof messages[i]);
      messages[i].msg_hdr.msg_iov = &iov[i];
      messages[i].msg_hdr.msg_iovlen = 1;
    }
    int result = sendmmsg(3, messages, count, 0);
    if (result > 0) {
      sent += result;
      continue;
    }
    if (result < 0 && (errno == EINTR || errno == ENOBUFS || errno == EAGAIN)) continue;
    if (result < 0 && (errno == ECONNREFUSED || errno == ENOTCONN || errno == EPIPE)) {
      stopped_by = "peer-gone";
      break;
    }
    perror("sendmmsg");
    return 1;
  }
  printf("{\"sent\":%llu,\"seconds\":%.3f,\"stoppedBy\":\"%s\"}\n", (unsigned long long)sent, now() - started,
         stopped_by);
  return 0;
}
