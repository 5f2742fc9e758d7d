// vmnet.framework part of the vmnet double.
//
// An interface is a TAP device that the double creates and attaches to a Linux bridge the test
// names (vmnet_double_configure); the bridge's IPv4 address, netmask and MTU become the interface's
// start address, subnet mask and MTU, as vmnet's gateway address and subnet would. The isolation
// flag from the description becomes bridge port isolation, so it has a real effect.
//
// Blocks run on the queues the caller passed (serial queues with their own threads, dispatch.c) or,
// for port-forward completions, on the double's own internal queue: never on the calling thread.
// The xpc dictionaries given to blocks are released right after the block returns.
//
// Port forwarding is recorded, not implemented: each add/remove is appended to the call log
// (vmnet_double_set_log) with the decoded arguments, and the double keeps the rule table so that it
// can report a removal of a rule that does not exist, or a duplicate, as a violation. It offers the
// address-family variants (vmnet_interface_add/remove_ip_port_forwarding_rule, macOS 11+) only: the
// older ones, deprecated since macOS 12, are not there to be called.
//
// After a failed vmnet_read or vmnet_write the double writes garbage into *pktcnt: vmnet.h promises
// the count only on success, so a caller must not read it otherwise.
//
// Built with -DDOUBLE_OLD_MACOS (macOS 11 to 14) vmnet_read_max_packets_key and
// vmnet_write_max_packets_key are missing (macOS 15+; no such values in the start parameters
// either). With -DDOUBLE_NO_IP_FORWARDING too (before macOS 11) the _ip_ port-forwarding functions
// are missing as well. softnet must run without them; only --expose needs the latter.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "double.h"

enum {
  VMNET_SUCCESS = 1000,
  VMNET_FAILURE = 1001,
  VMNET_MEM_FAILURE = 1002,
  VMNET_INVALID_ARGUMENT = 1003,
  VMNET_SETUP_INCOMPLETE = 1004,
  VMNET_INVALID_ACCESS = 1005,
  VMNET_PACKET_TOO_BIG = 1006,
  VMNET_BUFFER_EXHAUSTED = 1007,
  VMNET_TOO_MANY_PACKETS = 1008,
};
enum { VMNET_HOST_MODE = 1000, VMNET_SHARED_MODE = 1001, VMNET_BRIDGED_MODE = 1002 };
#define VMNET_INTERFACE_PACKETS_AVAILABLE 1u

// The keys: `extern const char *vmnet_*_key` in vmnet.h, data symbols whose value is the key string.
EXPORT const char *const vmnet_operation_mode_key = "vmnet_operation_mode";
EXPORT const char *const vmnet_enable_isolation_key = "vmnet_enable_isolation";
EXPORT const char *const vmnet_start_address_key = "vmnet_start_address";
EXPORT const char *const vmnet_subnet_mask_key = "vmnet_subnet_mask";
EXPORT const char *const vmnet_mtu_key = "vmnet_mtu";
EXPORT const char *const vmnet_max_packet_size_key = "vmnet_max_packet_size";
EXPORT const char *const vmnet_estimated_packets_available_key = "vmnet_estimated_packets_available";
#ifndef DOUBLE_OLD_MACOS
EXPORT const char *const vmnet_read_max_packets_key = "vmnet_read_max_packets";
EXPORT const char *const vmnet_write_max_packets_key = "vmnet_write_max_packets";
#endif

// struct vmpktdesc (vmnet.h): 24 bytes on LP64.
struct vmpktdesc {
  size_t vm_pkt_size;
  struct iovec *vm_pkt_iov;
  uint32_t vm_pkt_iovcnt;
  uint32_t vm_flags;
};
_Static_assert(sizeof(struct vmpktdesc) == 24, "vmpktdesc is 24 bytes on LP64");
_Static_assert(sizeof(struct iovec) == 16, "iovec is 16 bytes on LP64");

typedef void (*start_invoke)(void *block, uint32_t status, void *param);
typedef void (*event_invoke)(void *block, uint32_t mask, void *event);
typedef void (*completion_invoke)(void *block, uint32_t status);

// What a failed vmnet_read/vmnet_write leaves in *pktcnt: neither 0 nor a plausible count.
#define POISON_PACKET_COUNT ((int)0xdbdbdbdb)

// ---- test control ----

static pthread_mutex_t config_lock = PTHREAD_MUTEX_INITIALIZER;
static char bridge[IFNAMSIZ];
static uint64_t read_max_packets = 64;
static uint64_t write_max_packets = 64;
static uint32_t injected[16];  // one-shot statuses by operation, 0 = none
static char last_tap[IFNAMSIZ];
static uint64_t largest_read, largest_write;

enum operation {
  INJECT_START_COMPLETION = 1,  // the start completion reports this status, with no parameters
  INJECT_START_NULL = 2,        // vmnet_start_interface returns NULL and never calls the block
  INJECT_START_SILENT = 3,      // vmnet_start_interface returns an interface, never calls the block
  INJECT_ADD_FORWARD = 4,       // the add completion reports this status
  INJECT_REMOVE_FORWARD = 5,    // the remove completion reports this status
  INJECT_STOP = 6,              // the stop completion reports this status
  INJECT_READ = 7,              // vmnet_read returns this status
  INJECT_WRITE = 8,             // vmnet_write returns this status
  INJECT_ADD_FORWARD_SYNC = 9,  // vmnet_interface_add_ip_port_forwarding_rule returns this, no completion
  INJECT_EVENTS = 10,           // vmnet_interface_set_event_callback returns this status
  INJECT_FORWARD_DELAY = 11,    // the next port-forward completion runs this many ms late
};

static uint32_t take_injected(enum operation operation) {
  pthread_mutex_lock(&config_lock);
  uint32_t status = injected[operation];
  injected[operation] = 0;
  pthread_mutex_unlock(&config_lock);
  return status;
}

// The bridge new interfaces join. Must exist and have an IPv4 address.
EXPORT void vmnet_double_configure(const char *bridge_name) {
  pthread_mutex_lock(&config_lock);
  snprintf(bridge, sizeof bridge, "%s", bridge_name);
  pthread_mutex_unlock(&config_lock);
}

// What the next interfaces report as vmnet_read/write_max_packets_key (0: leave the key out).
EXPORT void vmnet_double_set_limits(uint64_t read_max, uint64_t write_max) {
  pthread_mutex_lock(&config_lock);
  read_max_packets = read_max;
  write_max_packets = write_max;
  pthread_mutex_unlock(&config_lock);
}

// Makes the next `operation` fail with `status` (see enum operation).
EXPORT void vmnet_double_inject(int operation, uint32_t status) {
  pthread_mutex_lock(&config_lock);
  if (operation > 0 && operation < 16) injected[operation] = status;
  pthread_mutex_unlock(&config_lock);
}

// The TAP device of the most recently started interface.
EXPORT void vmnet_double_last_tap(char *buffer, size_t length) {
  pthread_mutex_lock(&config_lock);
  snprintf(buffer, length, "%s", last_tap);
  pthread_mutex_unlock(&config_lock);
}

// Largest batch the module asked vmnet_read (which 0) or vmnet_write (which 1) for since the last
// call of this function (which resets it).
EXPORT uint64_t vmnet_double_largest_batch(int which) {
  pthread_mutex_lock(&config_lock);
  uint64_t *largest = which == 0 ? &largest_read : &largest_write;
  uint64_t value = *largest;
  *largest = 0;
  pthread_mutex_unlock(&config_lock);
  return value;
}

// ---- interfaces ----

struct rule {
  uint8_t protocol;
  uint16_t external_port;
  uint8_t family;
  uint32_t address;  // network order, as passed
  uint16_t internal_port;
};

struct vmnet_interface {
  struct object_header header;
  pthread_mutex_t lock;
  pthread_cond_t drained_changed;
  uint64_t mode;
  bool isolation;
  bool isolation_given;
  int tap_fd;
  char tap_name[IFNAMSIZ];
  uint64_t mtu, max_packet_size, read_max, write_max;
  bool started, stopped;
  uint32_t start_status;
  // events
  void *event_block;
  struct dispatch_queue *event_queue;
  bool drained;
  bool poller_running, poller_stop;
  pthread_t poller;
  // port forwarding
  struct rule rules[64];
  int rule_count;
};

static struct vmnet_interface *live_interface(void *object, const char *api) {
  struct vmnet_interface *interface = object;
  if (!interface || interface->header.magic != OBJECT_MAGIC || interface->header.kind != KIND_INTERFACE) {
    double_violation("%s: %p is not an interface", api, object);
    return NULL;
  }
  return interface;
}

// Where port-forward completions run: the double's own thread, like vmnet's internal queue.
static pthread_once_t internal_once = PTHREAD_ONCE_INIT;
static struct dispatch_queue *internal;
static void create_internal_queue(void) { internal = double_queue_create("vmnet.double.internal"); }
static struct dispatch_queue *internal_queue(void) {
  pthread_once(&internal_once, create_internal_queue);
  return internal;
}

static int ioctl_by_name(int socket_fd, const char *name, unsigned long request, struct ifreq *request_data) {
  snprintf(request_data->ifr_name, IFNAMSIZ, "%s", name);
  return ioctl(socket_fd, request, request_data);
}

// Creates the TAP on the bridge; fills in addresses. Returns a vmnet status.
static uint32_t create_tap(struct vmnet_interface *interface, char *address, char *mask) {
  char bridge_name[IFNAMSIZ];
  pthread_mutex_lock(&config_lock);
  snprintf(bridge_name, sizeof bridge_name, "%s", bridge);
  pthread_mutex_unlock(&config_lock);
  if (!bridge_name[0]) {
    fprintf(stderr, "vmnet double: no bridge configured (vmnet_double_configure)\n");
    return VMNET_FAILURE;
  }
  int control = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq request;
  memset(&request, 0, sizeof request);
  if (control < 0 || ioctl_by_name(control, bridge_name, SIOCGIFADDR, &request) < 0) goto fail;
  inet_ntop(AF_INET, &((struct sockaddr_in *)&request.ifr_addr)->sin_addr, address, 16);
  memset(&request, 0, sizeof request);
  if (ioctl_by_name(control, bridge_name, SIOCGIFNETMASK, &request) < 0) goto fail;
  inet_ntop(AF_INET, &((struct sockaddr_in *)&request.ifr_netmask)->sin_addr, mask, 16);
  memset(&request, 0, sizeof request);
  if (ioctl_by_name(control, bridge_name, SIOCGIFMTU, &request) < 0) goto fail;
  interface->mtu = (uint64_t)request.ifr_mtu;
  interface->max_packet_size = interface->mtu + 14;

  interface->tap_fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (interface->tap_fd < 0) goto fail;
  memset(&request, 0, sizeof request);
  static int sequence;
  snprintf(request.ifr_name, IFNAMSIZ, "vmd%d_%d", getpid() % 10000, __atomic_fetch_add(&sequence, 1, __ATOMIC_SEQ_CST));
  request.ifr_flags = IFF_TAP | IFF_NO_PI;
  if (ioctl(interface->tap_fd, TUNSETIFF, &request) < 0) goto fail;
  snprintf(interface->tap_name, IFNAMSIZ, "%s", request.ifr_name);
  memset(&request, 0, sizeof request);
  request.ifr_mtu = (int)interface->mtu;
  if (ioctl_by_name(control, interface->tap_name, SIOCSIFMTU, &request) < 0) goto fail;
  memset(&request, 0, sizeof request);
  if (ioctl_by_name(control, interface->tap_name, SIOCGIFINDEX, &request) < 0) goto fail;
  int index = request.ifr_ifindex;
  memset(&request, 0, sizeof request);
  request.ifr_ifindex = index;
  if (ioctl_by_name(control, bridge_name, SIOCBRADDIF, &request) < 0) goto fail;
  char path[128];
  snprintf(path, sizeof path, "/sys/class/net/%s/brport/isolated", interface->tap_name);
  FILE *isolated = fopen(path, "w");
  if (!isolated) goto fail;
  fputs(interface->isolation ? "1" : "0", isolated);
  if (fclose(isolated) != 0) goto fail;
  memset(&request, 0, sizeof request);
  if (ioctl_by_name(control, interface->tap_name, SIOCGIFFLAGS, &request) < 0) goto fail;
  request.ifr_flags |= IFF_UP;
  if (ioctl_by_name(control, interface->tap_name, SIOCSIFFLAGS, &request) < 0) goto fail;
  close(control);
  pthread_mutex_lock(&config_lock);
  snprintf(last_tap, sizeof last_tap, "%s", interface->tap_name);
  pthread_mutex_unlock(&config_lock);
  return VMNET_SUCCESS;
fail:
  fprintf(stderr, "vmnet double: cannot set up a TAP on bridge %s: %s\n", bridge_name, strerror(errno));
  if (control >= 0) close(control);
  if (interface->tap_fd >= 0) close(interface->tap_fd);
  interface->tap_fd = -1;
  return errno == EPERM || errno == EACCES ? VMNET_INVALID_ACCESS : VMNET_FAILURE;
}

struct start_call {
  struct vmnet_interface *interface;
  void *block;
  uint32_t injected;
};

static void start_task(void *context) {
  struct start_call *call = context;
  struct vmnet_interface *interface = call->interface;
  uint32_t status = call->injected;
  char address[16] = "", mask[16] = "";
  if (!status) status = create_tap(interface, address, mask);
  void *param = NULL;
  if (status == VMNET_SUCCESS) {
    interface->started = true;
    param = double_xpc_dictionary_create();
    double_xpc_set_string(param, vmnet_start_address_key, address);
    double_xpc_set_string(param, vmnet_subnet_mask_key, mask);
    double_xpc_set_uint64(param, vmnet_mtu_key, interface->mtu);
    double_xpc_set_uint64(param, vmnet_max_packet_size_key, interface->max_packet_size);
#ifndef DOUBLE_OLD_MACOS
    if (interface->read_max) double_xpc_set_uint64(param, vmnet_read_max_packets_key, interface->read_max);
    if (interface->write_max) double_xpc_set_uint64(param, vmnet_write_max_packets_key, interface->write_max);
#endif
  }
  interface->start_status = status;
  double_log("start-completion status=%u tap=%s", status, interface->tap_name);
  ((start_invoke)((struct block_literal *)call->block)->invoke)(call->block, status, param);
  // interface_param lives only while the block runs.
  if (param) double_xpc_release(param);
  free(call);
}

// interface_ref vmnet_start_interface(xpc_object_t desc, dispatch_queue_t queue, handler);
EXPORT void *vmnet_start_interface(void *description, void *queue, void *handler) {
  double_count_call("vmnet_start_interface");
  if (!double_xpc_is_dictionary(description)) {
    double_violation("vmnet_start_interface: interface_desc is not a live xpc dictionary");
    return NULL;
  }
  if (!double_is_queue(queue)) {
    double_violation("vmnet_start_interface: queue is not a dispatch queue");
    return NULL;
  }
  if (!double_check_block(handler, "vmnet_start_interface")) return NULL;
  uint64_t mode = double_xpc_uint64(description, vmnet_operation_mode_key);
  bool isolation_given;
  bool isolation = double_xpc_bool(description, vmnet_enable_isolation_key, &isolation_given);
  double_log("start mode=%llu isolation=%s", (unsigned long long)mode,
             isolation_given ? (isolation ? "true" : "false") : "unset");
  if (take_injected(INJECT_START_NULL)) return NULL;

  struct vmnet_interface *interface = calloc(1, sizeof *interface);
  interface->header.magic = OBJECT_MAGIC;
  interface->header.kind = KIND_INTERFACE;
  pthread_mutex_init(&interface->lock, NULL);
  pthread_condattr_t attributes;
  pthread_condattr_init(&attributes);
  pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
  pthread_cond_init(&interface->drained_changed, &attributes);
  interface->tap_fd = -1;
  interface->mode = mode;
  interface->isolation = isolation;
  interface->isolation_given = isolation_given;
  pthread_mutex_lock(&config_lock);
  interface->read_max = read_max_packets;
  interface->write_max = write_max_packets;
  pthread_mutex_unlock(&config_lock);
  if (take_injected(INJECT_START_SILENT)) return interface;

  struct start_call *call = calloc(1, sizeof *call);
  call->interface = interface;
  call->block = handler;
  call->injected = take_injected(INJECT_START_COMPLETION);
  if (!call->injected && mode != VMNET_HOST_MODE && mode != VMNET_SHARED_MODE) call->injected = VMNET_INVALID_ARGUMENT;
  double_queue_async(queue, start_task, call);
  return interface;
}

// ---- events ----

struct event_call {
  void *block;
};

static void event_task(void *context) {
  struct event_call *call = context;
  void *event = double_xpc_dictionary_create();
  double_xpc_set_uint64(event, vmnet_estimated_packets_available_key, 1);
  double_count_call("(event block invoked)");
  ((event_invoke)((struct block_literal *)call->block)->invoke)(call->block, VMNET_INTERFACE_PACKETS_AVAILABLE, event);
  double_xpc_release(event);
  free(call);
}

// While the callback is set: whenever the TAP has frames, queue one event, then wait until vmnet_read
// drained the TAP (or 20 ms passed) before looking again, so an undrained interface repeats its
// event at a bounded rate instead of spinning.
static void *poller(void *argument) {
  struct vmnet_interface *interface = argument;
  for (;;) {
    pthread_mutex_lock(&interface->lock);
    bool stop = interface->poller_stop;
    pthread_mutex_unlock(&interface->lock);
    if (stop) return NULL;
    struct pollfd ready = {.fd = interface->tap_fd, .events = POLLIN};
    if (poll(&ready, 1, 20) <= 0 || !(ready.revents & POLLIN)) continue;
    pthread_mutex_lock(&interface->lock);
    if (interface->event_block && !interface->poller_stop) {
      struct event_call *call = calloc(1, sizeof *call);
      call->block = interface->event_block;
      interface->drained = false;
      double_queue_async(interface->event_queue, event_task, call);
      struct timespec deadline;
      clock_gettime(CLOCK_MONOTONIC, &deadline);
      deadline.tv_nsec += 20 * 1000 * 1000;
      if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
      }
      while (!interface->drained && !interface->poller_stop) {
        if (pthread_cond_timedwait(&interface->drained_changed, &interface->lock, &deadline) == ETIMEDOUT) break;
      }
    }
    pthread_mutex_unlock(&interface->lock);
  }
}

// vmnet_return_t vmnet_interface_set_event_callback(interface_ref, interface_event_t, dispatch_queue_t, callback);
EXPORT uint32_t vmnet_interface_set_event_callback(void *object, uint32_t mask, void *queue, void *callback) {
  double_count_call("vmnet_interface_set_event_callback");
  struct vmnet_interface *interface = live_interface(object, "vmnet_interface_set_event_callback");
  if (!interface) return VMNET_INVALID_ARGUMENT;
  uint32_t injected_status = take_injected(INJECT_EVENTS);
  if (injected_status) return injected_status;
  if (interface->stopped) {
    double_violation("vmnet_interface_set_event_callback after vmnet_stop_interface");
    return VMNET_INVALID_ARGUMENT;
  }
  if ((queue == NULL) != (callback == NULL)) {
    double_violation("vmnet_interface_set_event_callback: queue and callback must both be set or both NULL");
    return VMNET_INVALID_ARGUMENT;
  }
  if (!callback) {
    pthread_mutex_lock(&interface->lock);
    interface->event_block = NULL;
    interface->event_queue = NULL;
    pthread_mutex_unlock(&interface->lock);
    double_log("events off");
    return VMNET_SUCCESS;
  }
  if (mask != VMNET_INTERFACE_PACKETS_AVAILABLE) {
    double_violation("vmnet_interface_set_event_callback: unexpected mask %u", mask);
    return VMNET_INVALID_ARGUMENT;
  }
  if (!double_is_queue(queue) || !double_check_block(callback, "vmnet_interface_set_event_callback"))
    return VMNET_INVALID_ARGUMENT;
  if (!interface->started) return VMNET_SETUP_INCOMPLETE;
  pthread_mutex_lock(&interface->lock);
  interface->event_block = callback;
  interface->event_queue = queue;
  bool start_poller = !interface->poller_running;
  interface->poller_running = true;
  pthread_mutex_unlock(&interface->lock);
  if (start_poller) pthread_create(&interface->poller, NULL, poller, interface);
  double_log("events on mask=%u", mask);
  return VMNET_SUCCESS;
}

// ---- packets ----

static bool check_usable(struct vmnet_interface *interface, const char *api) {
  if (interface->stopped) {
    double_violation("%s after vmnet_stop_interface", api);
    return false;
  }
  if (!interface->started) {
    double_violation("%s before the interface started", api);
    return false;
  }
  return true;
}

// vmnet_return_t vmnet_read(interface_ref interface, struct vmpktdesc *packets, int *pktcnt);
EXPORT uint32_t vmnet_read(void *object, struct vmpktdesc *packets, int *count) {
  double_count_call("vmnet_read");
  struct vmnet_interface *interface = live_interface(object, "vmnet_read");
  if (!interface || !packets || !count) return VMNET_INVALID_ARGUMENT;
  if (!check_usable(interface, "vmnet_read")) {
    *count = POISON_PACKET_COUNT;
    return VMNET_FAILURE;
  }
  uint32_t injected_status = take_injected(INJECT_READ);
  if (injected_status) {
    *count = POISON_PACKET_COUNT;
    return injected_status;
  }
  int wanted = *count;
  pthread_mutex_lock(&config_lock);
  if ((uint64_t)wanted > largest_read) largest_read = (uint64_t)wanted;
  pthread_mutex_unlock(&config_lock);
  if (wanted <= 0) {
    double_violation("vmnet_read: *pktcnt = %d", wanted);
    *count = POISON_PACKET_COUNT;
    return VMNET_INVALID_ARGUMENT;
  }
  if ((uint64_t)wanted > interface->read_max && interface->read_max > 0) {
    double_violation("vmnet_read: %d packets > vmnet_read_max_packets %llu", wanted,
                     (unsigned long long)interface->read_max);
    *count = POISON_PACKET_COUNT;
    return VMNET_TOO_MANY_PACKETS;
  }
  for (int i = 0; i < wanted; i++) {
    struct vmpktdesc *packet = &packets[i];
    if (packet->vm_pkt_iovcnt != 1) {
      double_violation("vmnet_read: packet %d has vm_pkt_iovcnt %u (softnet uses exactly one iovec)", i,
                       packet->vm_pkt_iovcnt);
      *count = POISON_PACKET_COUNT;
      return VMNET_INVALID_ARGUMENT;
    }
    if (packet->vm_flags != 0 || !packet->vm_pkt_iov || !packet->vm_pkt_iov->iov_base ||
        packet->vm_pkt_iov->iov_len < interface->max_packet_size ||
        packet->vm_pkt_size < interface->max_packet_size) {
      double_violation("vmnet_read: packet %d: flags %u, iov_len %zu, vm_pkt_size %zu (max packet size %llu)", i,
                       packet->vm_flags, packet->vm_pkt_iov ? packet->vm_pkt_iov->iov_len : 0, packet->vm_pkt_size,
                       (unsigned long long)interface->max_packet_size);
      *count = POISON_PACKET_COUNT;
      return VMNET_INVALID_ARGUMENT;
    }
  }
  int got = 0;
  while (got < wanted) {
    struct vmpktdesc *packet = &packets[got];
    ssize_t length = read(interface->tap_fd, packet->vm_pkt_iov->iov_base, packet->vm_pkt_iov->iov_len);
    if (length < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pthread_mutex_lock(&interface->lock);
        interface->drained = true;
        pthread_cond_signal(&interface->drained_changed);
        pthread_mutex_unlock(&interface->lock);
      }
      break;
    }
    packet->vm_pkt_size = (size_t)length;
    packet->vm_flags = 0;
    got++;
  }
  *count = got;
  return VMNET_SUCCESS;
}

// vmnet_return_t vmnet_write(interface_ref interface, struct vmpktdesc *packets, int *pktcnt);
EXPORT uint32_t vmnet_write(void *object, struct vmpktdesc *packets, int *count) {
  double_count_call("vmnet_write");
  struct vmnet_interface *interface = live_interface(object, "vmnet_write");
  if (!interface || !packets || !count) return VMNET_INVALID_ARGUMENT;
  if (!check_usable(interface, "vmnet_write")) {
    *count = POISON_PACKET_COUNT;
    return VMNET_FAILURE;
  }
  uint32_t injected_status = take_injected(INJECT_WRITE);
  if (injected_status) {
    *count = POISON_PACKET_COUNT;
    return injected_status;
  }
  int wanted = *count;
  pthread_mutex_lock(&config_lock);
  if ((uint64_t)wanted > largest_write) largest_write = (uint64_t)wanted;
  pthread_mutex_unlock(&config_lock);
  if (wanted <= 0) {
    double_violation("vmnet_write: *pktcnt = %d", wanted);
    *count = POISON_PACKET_COUNT;
    return VMNET_INVALID_ARGUMENT;
  }
  if ((uint64_t)wanted > interface->write_max && interface->write_max > 0) {
    double_violation("vmnet_write: %d packets > vmnet_write_max_packets %llu", wanted,
                     (unsigned long long)interface->write_max);
    *count = POISON_PACKET_COUNT;
    return VMNET_TOO_MANY_PACKETS;
  }
  for (int i = 0; i < wanted; i++) {
    struct vmpktdesc *packet = &packets[i];
    if (packet->vm_pkt_iovcnt != 1) {
      double_violation("vmnet_write: packet %d has vm_pkt_iovcnt %u", i, packet->vm_pkt_iovcnt);
      *count = POISON_PACKET_COUNT;
      return VMNET_INVALID_ARGUMENT;
    }
    if (packet->vm_flags != 0 || !packet->vm_pkt_iov || !packet->vm_pkt_iov->iov_base ||
        packet->vm_pkt_iov->iov_len != packet->vm_pkt_size) {
      double_violation("vmnet_write: packet %d: flags %u, iov_len %zu != vm_pkt_size %zu", i, packet->vm_flags,
                       packet->vm_pkt_iov ? packet->vm_pkt_iov->iov_len : 0, packet->vm_pkt_size);
      *count = POISON_PACKET_COUNT;
      return VMNET_INVALID_ARGUMENT;
    }
    if (packet->vm_pkt_size > interface->max_packet_size) {
      double_violation("vmnet_write: packet %d of %zu bytes > max packet size", i, packet->vm_pkt_size);
      *count = POISON_PACKET_COUNT;
      return VMNET_PACKET_TOO_BIG;
    }
  }
  int written = 0;
  uint32_t status = VMNET_SUCCESS;
  while (written < wanted) {
    struct vmpktdesc *packet = &packets[written];
    if (write(interface->tap_fd, packet->vm_pkt_iov->iov_base, packet->vm_pkt_size) < 0) {
      if (errno == EINTR) continue;
      status = errno == EAGAIN || errno == ENOBUFS ? VMNET_BUFFER_EXHAUSTED : VMNET_FAILURE;
      break;
    }
    written++;
  }
  // vmnet.h promises *pktcnt on success only.
  *count = status == VMNET_SUCCESS ? written : POISON_PACKET_COUNT;
  return status;
}

// ---- port forwarding ----

struct completion_call {
  void *block;
  uint32_t status;
  uint32_t delay_ms;
  // A forward's internal_address, and the 4 bytes it held at the call (see add_ip_... below).
  const void *address;
  uint32_t address_seen;
};

static void completion_task(void *context) {
  struct completion_call *call = context;
  if (call->delay_ms) usleep(call->delay_ms * 1000);
  if (call->address) {
    uint32_t now;
    memcpy(&now, call->address, sizeof now);
    if (now != call->address_seen)
      double_violation("vmnet_interface_add_ip_port_forwarding_rule: the internal_address memory changed "
                       "before the completion ran");
  }
  if (call->block) ((completion_invoke)((struct block_literal *)call->block)->invoke)(call->block, call->status);
  free(call);
}

static void complete_checking(struct dispatch_queue *queue, void *block, uint32_t status, const void *address,
                              uint32_t address_seen) {
  struct completion_call *call = calloc(1, sizeof *call);
  call->block = block;
  call->status = status;
  call->address = address;
  call->address_seen = address_seen;
  if (queue == internal_queue()) call->delay_ms = take_injected(INJECT_FORWARD_DELAY);
  double_queue_async(queue, completion_task, call);
}

static void complete(struct dispatch_queue *queue, void *block, uint32_t status) {
  complete_checking(queue, block, status, NULL, 0);
}

#ifndef DOUBLE_NO_IP_FORWARDING
// vmnet_return_t vmnet_interface_add_ip_port_forwarding_rule(interface_ref interface, uint8_t protocol,
//     uint16_t external_port, uint8_t address_family, const void *internal_address, uint16_t internal_port,
//     vmnet_interface_completion_handler_t handler);   macOS 11+
// Signature: Apple's vmnet reference (interface_ref, UInt8, UInt16, UInt8, UnsafeRawPointer, UInt16,
// handler) and edigaryev/vmnet src/ffi/vmnet.rs. For AF_INET the address is a struct in_addr.
// The memory it points to must stay as it was until the completion has run: vmnet may read it on
// its own queue (nothing says when it copies it). The double reads it at the call and again right
// before the completion, and reports a difference as a violation.
EXPORT uint32_t vmnet_interface_add_ip_port_forwarding_rule(void *object, uint8_t protocol, uint16_t external_port,
                                                            uint8_t family, const void *address,
                                                            uint16_t internal_port, void *handler) {
  const char *api = "vmnet_interface_add_ip_port_forwarding_rule";
  double_count_call(api);
  struct vmnet_interface *interface = live_interface(object, api);
  if (!interface) return VMNET_INVALID_ARGUMENT;
  if (!check_usable(interface, api)) return VMNET_FAILURE;
  if (handler && !double_check_block(handler, api)) return VMNET_INVALID_ARGUMENT;
  if (family != AF_INET) {
    // softnet forwards IPv4 only; AF_INET6 would point to a 16-byte struct in6_addr.
    double_violation("%s: address_family %u is not AF_INET (%d)", api, family, AF_INET);
    return VMNET_INVALID_ARGUMENT;
  }
  if (!address) {
    double_violation("%s: NULL internal_address", api);
    return VMNET_INVALID_ARGUMENT;
  }
  struct in_addr internal;
  memcpy(&internal, address, sizeof internal);
  char text[16];
  inet_ntop(AF_INET, &internal, text, sizeof text);
  double_log("forward add protocol=%u external=%u family=%u address=%s internal=%u", protocol, external_port, family,
             text, internal_port);
  uint32_t sync_status = take_injected(INJECT_ADD_FORWARD_SYNC);
  if (sync_status) return sync_status;
  if (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP) return VMNET_INVALID_ARGUMENT;
  uint32_t status = take_injected(INJECT_ADD_FORWARD);
  if (!status) {
    pthread_mutex_lock(&interface->lock);
    for (int i = 0; i < interface->rule_count; i++) {
      if (interface->rules[i].protocol == protocol && interface->rules[i].external_port == external_port &&
          interface->rules[i].family == family) {
        double_violation("port forward for %u/%u added twice", protocol, external_port);
        status = VMNET_FAILURE;
      }
    }
    if (!status && interface->rule_count < 64) {
      interface->rules[interface->rule_count++] =
          (struct rule){protocol, external_port, family, internal.s_addr, internal_port};
    }
    pthread_mutex_unlock(&interface->lock);
    if (!status) status = VMNET_SUCCESS;
  }
  complete_checking(internal_queue(), handler, status, address, internal.s_addr);
  return VMNET_SUCCESS;
}

// vmnet_return_t vmnet_interface_remove_ip_port_forwarding_rule(interface_ref interface, uint8_t protocol,
//     uint16_t external_port, uint8_t address_family, vmnet_interface_completion_handler_t handler);
//     macOS 11+. No address: a rule is named by protocol, external port and family (Apple's reference:
//     interface_ref, UInt8, UInt16, UInt8, handler).
EXPORT uint32_t vmnet_interface_remove_ip_port_forwarding_rule(void *object, uint8_t protocol, uint16_t external_port,
                                                               uint8_t family, void *handler) {
  const char *api = "vmnet_interface_remove_ip_port_forwarding_rule";
  double_count_call(api);
  struct vmnet_interface *interface = live_interface(object, api);
  if (!interface) return VMNET_INVALID_ARGUMENT;
  if (!check_usable(interface, api)) return VMNET_FAILURE;
  if (handler && !double_check_block(handler, api)) return VMNET_INVALID_ARGUMENT;
  if (family != AF_INET) {
    double_violation("%s: address_family %u is not AF_INET (%d)", api, family, AF_INET);
    return VMNET_INVALID_ARGUMENT;
  }
  double_log("forward remove protocol=%u external=%u family=%u", protocol, external_port, family);
  uint32_t status = take_injected(INJECT_REMOVE_FORWARD);
  if (!status) {
    status = VMNET_FAILURE;
    pthread_mutex_lock(&interface->lock);
    for (int i = 0; i < interface->rule_count; i++) {
      if (interface->rules[i].protocol == protocol && interface->rules[i].external_port == external_port &&
          interface->rules[i].family == family) {
        interface->rules[i] = interface->rules[--interface->rule_count];
        status = VMNET_SUCCESS;
        break;
      }
    }
    pthread_mutex_unlock(&interface->lock);
    if (status != VMNET_SUCCESS) double_violation("removing port forward %u/%u that does not exist", protocol, external_port);
  }
  complete(internal_queue(), handler, status);
  return VMNET_SUCCESS;
}
#endif

// ---- stop ----

// vmnet_return_t vmnet_stop_interface(interface_ref interface, dispatch_queue_t queue, handler);
EXPORT uint32_t vmnet_stop_interface(void *object, void *queue, void *handler) {
  double_count_call("vmnet_stop_interface");
  struct vmnet_interface *interface = live_interface(object, "vmnet_stop_interface");
  if (!interface) return VMNET_INVALID_ARGUMENT;
  if (interface->stopped) {
    double_violation("vmnet_stop_interface called twice");
    return VMNET_INVALID_ARGUMENT;
  }
  if (!double_is_queue(queue) || !double_check_block(handler, "vmnet_stop_interface")) return VMNET_INVALID_ARGUMENT;
  pthread_mutex_lock(&interface->lock);
  interface->stopped = true;
  interface->poller_stop = true;
  interface->event_block = NULL;
  bool join = interface->poller_running;
  pthread_cond_signal(&interface->drained_changed);
  int rules_left = interface->rule_count;
  pthread_mutex_unlock(&interface->lock);
  if (join) pthread_join(interface->poller, NULL);
  if (interface->tap_fd >= 0) close(interface->tap_fd);  // deletes the TAP
  interface->tap_fd = -1;
  double_log("stop rules_left=%d", rules_left);
  uint32_t status = take_injected(INJECT_STOP);
  complete(queue, handler, status ? status : VMNET_SUCCESS);
  return VMNET_SUCCESS;
}
