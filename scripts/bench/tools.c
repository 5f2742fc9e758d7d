// Traffic tools of `bun run bench`, one binary with subcommands. Every result is one JSON line on
// stdout; diagnostics go to stderr.
//
//   tools v2h <size> <warmup-s> <secs> <rx-counter-file|-> <watch-pid|0> <dst-mac> <src-mac> <src-ip> <dst-ip>
//     fd 3 = the VM end of the socketpair. Blasts pre-built IPv4/UDP frames of <size> bytes into it
//     with sendmmsg (64 per call; poll(POLLOUT) when the socket is full, i.e. back-pressure). The
//     rate delivered is the delta of <rx-counter-file> (the forwarder TAP's rx_packets: frames the
//     forwarder wrote into the kernel) over the measured window. After the window it stops, lets
//     the forwarder drain for 300 ms and compares everything written with everything delivered.
//   tools h2v <size> <warmup-s> <secs> <gen-tap> <fwd-tap|-> <watch-pid|0> <dst-mac> <src-mac> <src-ip> <dst-ip>
//     fd 3 = the VM end. Writes frames addressed to the VM into its own TAP port <gen-tap> on the
//     bridge (one write() each, 64 at a time) and, in the same thread, counts the frames arriving
//     at the VM end with recvmmsg, checking a run tag and sequence numbers.
//   tools drain            fd 3: receive and discard datagrams until killed (the null forwarder).
//   tools tapdrain <tap>   read and discard frames from a (persistent) TAP until killed.
//   tools inject <tap> <count> <interval-ms> <hex-frame>   write a frame into a (persistent) TAP.
//   tools firstframe <vm-mac> <timeout-ms> <hex-frame> -- <argv...>
//     Opens an AF_PACKET socket on every interface of the namespace, creates a socketpair (Tart's
//     buffer sizes), forks argv with one end as fd 0, and from the moment of fork sends <hex-frame>
//     (a DHCP DISCOVER) into the other end every 1 ms until a frame from <vm-mac> to UDP port 67
//     shows up on an interface; also when its TAP first appeared in /sys/class/net, and the CPU time
//     its threads had used by the first frame (schedstat). Then SIGINT, and how long the exit took
//     and its status.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define B 64
#define PAYLOAD_OFFSET 42 // Ethernet 14 + IPv4 20 + UDP 8
#define TAG_OFFSET PAYLOAD_OFFSET
#define SEQ_OFFSET (PAYLOAD_OFFSET + 4)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double proc_sys_part; // stime of the last proc_cpu() call, seconds

static double proc_cpu(int pid) { // utime + stime of every thread, seconds
  proc_sys_part = 0;
  if (pid <= 0) return 0;
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *s = strrchr(buf, ')');
  if (!s) return -1;
  unsigned long ut = 0, st = 0;
  sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
  proc_sys_part = (double)st / sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static double self_cpu(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

// Whole-machine CPU time from /proc/stat: busy and total jiffies over all CPUs.
static void machine_jiffies(double *busy, double *total) {
  unsigned long long v[8] = {0};
  FILE *f = fopen("/proc/stat", "r");
  *busy = *total = 0;
  if (!f) return;
  if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
             &v[7]) == 8) {
    for (int i = 0; i < 8; i++) *total += (double)v[i];
    *busy = *total - (double)v[3] - (double)v[4]; // minus idle and iowait
  }
  fclose(f);
}

// Cores busy (1.0 = one core) between two machine_jiffies() readings taken dt seconds apart.
static double machine_cores(double busy0, double busy1, double dt) {
  return (busy1 - busy0) / sysconf(_SC_CLK_TCK) / dt;
}

static long long read_counter(const char *path) {
  if (!path || !strcmp(path, "-")) return -1;
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long long v = -1;
  if (fscanf(f, "%lld", &v) != 1) v = -1;
  fclose(f);
  return v;
}

static void parse_mac(const char *s, unsigned char *mac) {
  unsigned v[6];
  if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
    fprintf(stderr, "bad MAC %s\n", s);
    exit(2);
  }
  for (int i = 0; i < 6; i++) mac[i] = (unsigned char)v[i];
}

static int hex_frame(const char *hex, unsigned char *out, int max) {
  int n = (int)strlen(hex) / 2;
  if (n > max) n = max;
  for (int i = 0; i < n; i++) {
    unsigned v;
    sscanf(hex + 2 * i, "%2x", &v);
    out[i] = (unsigned char)v;
  }
  return n;
}

// An IPv4/UDP frame of exactly `size` bytes (>= 60), valid checksum, UDP checksum 0 (none), the
// payload starting with a 4-byte run tag and an 8-byte sequence number.
static void build_udp_frame(unsigned char *f, int size, const unsigned char *dst_mac, const unsigned char *src_mac,
                            const char *src_ip, const char *dst_ip, uint32_t tag) {
  memset(f, 0, (size_t)size);
  memcpy(f, dst_mac, 6);
  memcpy(f + 6, src_mac, 6);
  f[12] = 0x08;
  f[13] = 0x00;
  unsigned char *ip = f + 14;
  int ip_len = size - 14;
  ip[0] = 0x45;
  ip[2] = (unsigned char)(ip_len >> 8);
  ip[3] = (unsigned char)ip_len;
  ip[6] = 0x40; // DF
  ip[8] = 64;
  ip[9] = 17;
  inet_pton(AF_INET, src_ip, ip + 12);
  inet_pton(AF_INET, dst_ip, ip + 16);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += (uint32_t)(ip[i] << 8 | ip[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  sum = ~sum & 0xffff;
  ip[10] = (unsigned char)(sum >> 8);
  ip[11] = (unsigned char)sum;
  unsigned char *udp = ip + 20;
  int udp_len = ip_len - 20;
  udp[0] = 40000 >> 8;
  udp[1] = 40000 & 0xff;
  udp[2] = 0;
  udp[3] = 9; // discard
  udp[4] = (unsigned char)(udp_len >> 8);
  udp[5] = (unsigned char)udp_len;
  memcpy(f + TAG_OFFSET, &tag, 4);
  for (int i = SEQ_OFFSET + 8; i < size; i++) f[i] = (unsigned char)i;
}

static int open_tap(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static uint32_t run_tag(void) { return (uint32_t)(getpid() * 2654435761u) ^ (uint32_t)time(0); }

// ---------------------------------------------------------------------------------------------
static int cmd_v2h(int argc, char **argv) {
  if (argc != 11) return fprintf(stderr, "v2h: bad arguments\n"), 2;
  int size = atoi(argv[2]);
  double warmup = atof(argv[3]), secs = atof(argv[4]);
  const char *counter = argv[5];
  int watch = atoi(argv[6]);
  unsigned char dst_mac[6], src_mac[6];
  parse_mac(argv[7], dst_mac);
  parse_mac(argv[8], src_mac);
  int fd = 3;
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  static unsigned char frames[B][2048];
  struct mmsghdr msgs[B];
  struct iovec iov[B];
  uint32_t tag = run_tag();
  for (int i = 0; i < B; i++) {
    build_udp_frame(frames[i], size, dst_mac, src_mac, argv[9], argv[10], tag);
    iov[i] = (struct iovec){frames[i], (size_t)size};
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  uint64_t seq = 0, sent0 = 0, sent1 = 0;
  long long rx_start = read_counter(counter), rx0 = 0, rx1 = 0;
  double c0 = 0, c1 = 0, k0 = 0, k1 = 0, s0 = 0, s1 = 0, t0 = 0, t1 = 0, blocked = 0, m0 = 0, m1 = 0, mt = 0;
  double start = now();
  int phase = 0; // 0 warm-up, 1 measuring
  struct pollfd pf = {fd, POLLOUT, 0};
  int errors = 0;
  for (;;) {
    double t = now();
    if (phase == 0 && t - start >= warmup) {
      phase = 1;
      t0 = t;
      sent0 = seq;
      rx0 = read_counter(counter);
      c0 = proc_cpu(watch);
      k0 = proc_sys_part;
      s0 = self_cpu();
      machine_jiffies(&m0, &mt);
    } else if (phase == 1 && t - t0 >= secs) {
      t1 = t;
      sent1 = seq;
      machine_jiffies(&m1, &mt);
      rx1 = read_counter(counter);
      c1 = proc_cpu(watch);
      k1 = proc_sys_part;
      s1 = self_cpu();
      break;
    }
    for (int i = 0; i < B; i++) {
      uint64_t s = seq + (uint64_t)i;
      memcpy(frames[i] + SEQ_OFFSET, &s, 8);
    }
    int n = sendmmsg(fd, msgs, B, MSG_DONTWAIT);
    if (n > 0) {
      seq += (uint64_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == ENOBUFS)) {
      double b = now();
      poll(&pf, 1, 10);
      blocked += now() - b;
    } else if (n < 0) {
      if (++errors > 100) {
        fprintf(stderr, "v2h: sendmmsg: %s\n", strerror(errno));
        return 1;
      }
    }
  }
  usleep(300000);
  long long rx_end = read_counter(counter);
  double dt = t1 - t0;
  printf("{\"sentPps\":%.0f,\"deliveredPps\":%.0f,\"windowSeconds\":%.3f,\"sentTotal\":%llu,"
         "\"deliveredTotal\":%lld,\"forwarderCpu\":%.3f,\"forwarderSysCpu\":%.3f,\"generatorCpu\":%.3f,"
         "\"generatorBlocked\":%.3f,\"machineCpu\":%.3f}\n",
         (double)(sent1 - sent0) / dt, rx0 >= 0 ? (double)(rx1 - rx0) / dt : -1.0, dt, (unsigned long long)seq,
         rx_start >= 0 ? rx_end - rx_start : -1LL, watch > 0 ? (c1 - c0) / dt : -1.0, watch > 0 ? (k1 - k0) / dt : -1.0,
         (s1 - s0) / dt, blocked / (t1 - start), machine_cores(m0, m1, dt));
  return 0;
}

// ---------------------------------------------------------------------------------------------
static int cmd_h2v(int argc, char **argv) {
  if (argc != 12) return fprintf(stderr, "h2v: bad arguments\n"), 2;
  int size = atoi(argv[2]);
  double warmup = atof(argv[3]), secs = atof(argv[4]);
  const char *gen_tap = argv[5], *fwd_tap = argv[6];
  int watch = atoi(argv[7]);
  unsigned char dst_mac[6], src_mac[6];
  parse_mac(argv[8], dst_mac);
  parse_mac(argv[9], src_mac);
  int vm = 3;
  fcntl(vm, F_SETFL, fcntl(vm, F_GETFL) | O_NONBLOCK);
  int tap = open_tap(gen_tap);
  if (tap < 0) return fprintf(stderr, "h2v: cannot attach to TAP %s: %s\n", gen_tap, strerror(errno)), 1;
  char dropped_path[160] = "-", txq_path[160] = "-";
  if (strcmp(fwd_tap, "-")) {
    snprintf(dropped_path, sizeof dropped_path, "/sys/class/net/%s/statistics/tx_dropped", fwd_tap);
    snprintf(txq_path, sizeof txq_path, "/sys/class/net/%s/statistics/tx_packets", fwd_tap);
  }
  static unsigned char frames[B][2048], rx[B][2048];
  struct mmsghdr rmsgs[B];
  struct iovec riov[B];
  uint32_t tag = run_tag();
  for (int i = 0; i < B; i++) {
    build_udp_frame(frames[i], size, dst_mac, src_mac, argv[10], argv[11], tag);
    riov[i] = (struct iovec){rx[i], 2048};
    memset(&rmsgs[i], 0, sizeof rmsgs[i]);
    rmsgs[i].msg_hdr.msg_iov = &riov[i];
    rmsgs[i].msg_hdr.msg_iovlen = 1;
  }
  // Frames left over from earlier runs (or the DHCP ACK) are not ours: the tag tells them apart.
  while (recvmmsg(vm, rmsgs, B, MSG_DONTWAIT, 0) > 0) {}
  uint64_t seq = 0, sent0 = 0, sent1 = 0, got = 0, got0 = 0, got1 = 0, foreign = 0, badlen = 0;
  uint64_t expect = 0, gaps = 0, reordered = 0;
  long long dropped_start = read_counter(dropped_path), txq_start = read_counter(txq_path);
  double c0 = 0, c1 = 0, k0 = 0, k1 = 0, s0 = 0, s1 = 0, t0 = 0, t1 = 0, m0 = 0, m1 = 0, mt = 0;
  int write_errors = 0;
  double start = now();
  int phase = 0; // 0 warm-up, 1 measuring, 2 settling
  double settle_until = 0;
  for (;;) {
    double t = now();
    if (phase == 0 && t - start >= warmup) {
      phase = 1;
      t0 = t;
      sent0 = seq;
      got0 = got;
      c0 = proc_cpu(watch);
      k0 = proc_sys_part;
      s0 = self_cpu();
      machine_jiffies(&m0, &mt);
    } else if (phase == 1 && t - t0 >= secs) {
      phase = 2;
      t1 = t;
      sent1 = seq;
      got1 = got;
      c1 = proc_cpu(watch);
      k1 = proc_sys_part;
      s1 = self_cpu();
      machine_jiffies(&m1, &mt);
      settle_until = t + 0.3;
    } else if (phase == 2 && t >= settle_until) {
      break;
    }
    if (phase < 2) {
      for (int i = 0; i < B; i++) {
        uint64_t s = seq;
        memcpy(frames[i] + SEQ_OFFSET, &s, 8);
        if (write(tap, frames[i], (size_t)size) == size) seq++;
        else if (++write_errors > 1000) {
          fprintf(stderr, "h2v: write to %s: %s\n", gen_tap, strerror(errno));
          return 1;
        }
      }
    } else {
      usleep(1000);
    }
    for (;;) {
      int n = recvmmsg(vm, rmsgs, B, MSG_DONTWAIT, 0);
      if (n <= 0) break;
      for (int i = 0; i < n; i++) {
        uint32_t ftag;
        uint64_t s;
        if (rmsgs[i].msg_len < SEQ_OFFSET + 8) { foreign++; continue; }
        memcpy(&ftag, rx[i] + TAG_OFFSET, 4);
        if (ftag != tag) { foreign++; continue; }
        memcpy(&s, rx[i] + SEQ_OFFSET, 8);
        if (rmsgs[i].msg_len != (unsigned)size) badlen++;
        if (s > expect) gaps += s - expect;
        else if (s < expect) reordered++;
        expect = s + 1;
        got++;
      }
      if (n < B) break;
    }
  }
  long long dropped_end = read_counter(dropped_path), txq_end = read_counter(txq_path);
  double dt = t1 - t0;
  printf("{\"sentPps\":%.0f,\"deliveredPps\":%.0f,\"windowSeconds\":%.3f,\"sentTotal\":%llu,"
         "\"deliveredTotal\":%llu,\"droppedAtTapQueue\":%lld,\"queuedToForwarder\":%lld,\"gaps\":%llu,"
         "\"reordered\":%llu,\"badLength\":%llu,\"foreign\":%llu,\"writeErrors\":%d,"
         "\"forwarderCpu\":%.3f,\"forwarderSysCpu\":%.3f,\"generatorCpu\":%.3f,\"machineCpu\":%.3f}\n",
         (double)(sent1 - sent0) / dt, (double)(got1 - got0) / dt, dt, (unsigned long long)seq,
         (unsigned long long)got, dropped_start >= 0 ? dropped_end - dropped_start : -1LL,
         txq_start >= 0 ? txq_end - txq_start : -1LL, (unsigned long long)gaps, (unsigned long long)reordered,
         (unsigned long long)badlen, (unsigned long long)foreign, write_errors, watch > 0 ? (c1 - c0) / dt : -1.0,
         watch > 0 ? (k1 - k0) / dt : -1.0, (s1 - s0) / dt, machine_cores(m0, m1, dt));
  close(tap);
  return 0;
}

// ---------------------------------------------------------------------------------------------
static int cmd_drain(void) {
  static unsigned char rx[B][2048];
  struct mmsghdr msgs[B];
  struct iovec iov[B];
  for (int i = 0; i < B; i++) {
    iov[i] = (struct iovec){rx[i], 2048};
    memset(&msgs[i], 0, sizeof msgs[i]);
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  for (;;) {
    int n = recvmmsg(3, msgs, B, MSG_WAITFORONE, 0);
    if (n < 0 && errno != EINTR) return 0;
  }
}

static int cmd_tapdrain(int argc, char **argv) {
  if (argc != 3) return fprintf(stderr, "tapdrain: bad arguments\n"), 2;
  int tap = open_tap(argv[2]);
  if (tap < 0) return fprintf(stderr, "tapdrain: cannot attach to TAP %s: %s\n", argv[2], strerror(errno)), 1;
  // Like a forwarder: sleep in poll(), then read until EAGAIN (one wake-up per burst, not per frame).
  fcntl(tap, F_SETFL, fcntl(tap, F_GETFL) | O_NONBLOCK);
  static unsigned char frame[65536];
  struct pollfd pf = {tap, POLLIN, 0};
  for (;;) {
    if (poll(&pf, 1, -1) < 0 && errno != EINTR) return 1;
    while (read(tap, frame, sizeof frame) >= 0) {}
    if (errno != EAGAIN && errno != EINTR) return 0;
  }
}

// ---------------------------------------------------------------------------------------------
static int cmd_inject(int argc, char **argv) {
  if (argc != 6) return fprintf(stderr, "inject: bad arguments\n"), 2;
  int tap = open_tap(argv[2]);
  if (tap < 0) return fprintf(stderr, "inject: cannot attach to TAP %s: %s\n", argv[2], strerror(errno)), 1;
  int count = atoi(argv[3]), interval = atoi(argv[4]);
  static unsigned char frame[65536];
  int len = hex_frame(argv[5], frame, sizeof frame);
  int written = 0;
  for (int i = 0; i < count; i++) {
    if (i) usleep((useconds_t)interval * 1000);
    if (write(tap, frame, (size_t)len) == len) written++;
  }
  printf("{\"written\":%d}\n", written);
  return written > 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// Names in /sys/class/net, one per slot (enough for a test namespace).
#define MAX_IFS 64
static int list_interfaces(char names[MAX_IFS][IFNAMSIZ]) {
  DIR *d = opendir("/sys/class/net");
  if (!d) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < MAX_IFS) {
    if (e->d_name[0] == '.') continue;
    size_t len = strnlen(e->d_name, IFNAMSIZ - 1);
    memcpy(names[n], e->d_name, len);
    names[n++][len] = 0;
  }
  closedir(d);
  return n;
}

static int has_new_interface(char known[MAX_IFS][IFNAMSIZ], int count) {
  char now_names[MAX_IFS][IFNAMSIZ];
  int n = list_interfaces(now_names);
  for (int i = 0; i < n; i++) {
    int seen = 0;
    for (int j = 0; j < count && !seen; j++) seen = !strcmp(now_names[i], known[j]);
    if (!seen) return 1;
  }
  return 0;
}

// CPU time (ms) used so far by every live thread of pid, from /proc/PID/task/TID/schedstat (ns).
static double threads_cpu_ms(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *dir = opendir(path);
  if (!dir) return -1;
  double total = 0;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    if (entry->d_name[0] == '.') continue;
    char file[320];
    snprintf(file, sizeof file, "/proc/%d/task/%s/schedstat", pid, entry->d_name);
    FILE *f = fopen(file, "r");
    if (!f) continue; // the thread exited meanwhile
    unsigned long long ns = 0;
    if (fscanf(f, "%llu", &ns) == 1) total += ns / 1e6;
    fclose(f);
  }
  closedir(dir);
  return total;
}

static int cmd_firstframe(int argc, char **argv) {
  if (argc < 7 || strcmp(argv[5], "--")) return fprintf(stderr, "firstframe: bad arguments\n"), 2;
  unsigned char vm_mac[6];
  parse_mac(argv[2], vm_mac);
  double timeout = atof(argv[3]) / 1000;
  static unsigned char frame[2048], rx[4096];
  int len = hex_frame(argv[4], frame, sizeof frame);

  int packet = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(ETH_P_ALL));
  if (packet < 0) return fprintf(stderr, "firstframe: AF_PACKET: %s\n", strerror(errno)), 1;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0) return perror("socketpair"), 1;
  int rcv = 4 << 20, snd = 1 << 20;
  for (int i = 0; i < 2; i++) {
    setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
  }
  fcntl(sv[0], F_SETFD, FD_CLOEXEC);
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  char known[MAX_IFS][IFNAMSIZ];
  int known_count = list_interfaces(known);
  fflush(stdout);
  double t_start = now();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(sv[1], 0);
    if (sv[1] != 0) close(sv[1]);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1); // softnet's own output is not ours to print
    execvp(argv[6], argv + 6);
    _exit(127);
  }
  close(sv[1]);
  double first = -1, next_send = t_start, interface_at = -1, cpu_ms = -1;
  int sends = 0;
  while (now() - t_start < timeout) {
    double t = now();
    if (interface_at < 0 && has_new_interface(known, known_count)) interface_at = now() - t_start;
    if (t >= next_send) {
      if (send(sv[0], frame, (size_t)len, MSG_DONTWAIT) == len) sends++;
      next_send += 0.001;
      if (next_send < t) next_send = t + 0.001;
    }
    // Sleep until the next send is due (ppoll: sub-millisecond), never spin: the forwarder being
    // started needs the CPU.
    double wait = next_send - now();
    if (wait < 0.0001) wait = 0.0001;
    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
    struct pollfd pf = {packet, POLLIN, 0};
    ppoll(&pf, 1, &ts, 0);
    for (;;) {
      ssize_t n = recv(packet, rx, sizeof rx, 0);
      if (n < 0) break;
      // Ethernet, IPv4, UDP 68 -> 67, from the VM's MAC.
      if (n >= 42 && !memcmp(rx + 6, vm_mac, 6) && rx[12] == 0x08 && rx[13] == 0x00 && rx[23] == 17) {
        int ihl = (rx[14] & 0x0f) * 4;
        unsigned char *udp = rx + 14 + ihl;
        if (n >= 14 + ihl + 8 && udp[0] == 0 && udp[1] == 68 && udp[2] == 0 && udp[3] == 67) {
          first = now() - t_start;
          cpu_ms = threads_cpu_ms(pid);
          break;
        }
      }
    }
    if (first >= 0) break;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fprintf(stderr, "firstframe: the forwarder exited before forwarding (status %d)\n", st);
      printf("{\"firstFrameMs\":-1,\"exitStatus\":%d,\"stopMs\":-1,\"sent\":%d}\n",
             WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), sends);
      return 1;
    }
  }
  // Let it settle (its start-up work is done once it forwards), then stop it as Tart does.
  usleep(100000);
  double t_stop = now();
  kill(pid, SIGINT);
  int st = 0, exited = 0;
  while (now() - t_stop < 5) {
    if (waitpid(pid, &st, WNOHANG) == pid) {
      exited = 1;
      break;
    }
    usleep(1000);
  }
  double stop_ms = (now() - t_stop) * 1000;
  if (!exited) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  printf("{\"firstFrameMs\":%.2f,\"cpuMs\":%.2f,\"interfaceMs\":%.2f,\"exitStatus\":%d,\"stopMs\":%.1f,"
         "\"stoppedBySigint\":%s,\"sent\":%d}\n",
         first >= 0 ? first * 1000 : -1.0, cpu_ms, interface_at >= 0 ? interface_at * 1000 : -1.0, status,
         exited ? stop_ms : -1.0, exited ? "true" : "false", sends);
  return first >= 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) return fprintf(stderr, "usage: tools v2h|h2v|drain|inject|firstframe ...\n"), 2;
  if (!strcmp(argv[1], "v2h")) return cmd_v2h(argc, argv);
  if (!strcmp(argv[1], "h2v")) return cmd_h2v(argc, argv);
  if (!strcmp(argv[1], "drain")) return cmd_drain();
  if (!strcmp(argv[1], "tapdrain")) return cmd_tapdrain(argc, argv);
  if (!strcmp(argv[1], "inject")) return cmd_inject(argc, argv);
  if (!strcmp(argv[1], "firstframe")) return cmd_firstframe(argc, argv);
  fprintf(stderr, "unknown command %s\n", argv[1]);
  return 2;
}
