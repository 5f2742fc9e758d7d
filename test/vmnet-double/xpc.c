// libxpc part of the vmnet double: dictionaries of uint64, bool and string values.
//
// A released dictionary is not freed at once: its memory, strings included, is overwritten with
// 0xdb and parked in a quarantine ring, so a caller that keeps a pointer into it (for example a
// block that stores xpc_dictionary_get_string's result instead of copying it) reads poison, and any
// xpc_* call on it is recorded as a violation instead of crashing or silently "working".
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "double.h"

enum value_type { TYPE_UINT64 = 1, TYPE_BOOL, TYPE_STRING };

#define MAX_ENTRIES 16
struct entry {
  char *key;
  enum value_type type;
  uint64_t number;
  char *string;
};

struct xpc_dictionary {
  struct object_header header;
  int count;
  struct entry entries[MAX_ENTRIES];
};

#define QUARANTINE 256
static pthread_mutex_t quarantine_lock = PTHREAD_MUTEX_INITIALIZER;
static struct xpc_dictionary *quarantine[QUARANTINE];
static unsigned quarantine_next;

static struct xpc_dictionary *live(const void *object, const char *api) {
  struct xpc_dictionary *dictionary = (struct xpc_dictionary *)object;
  if (!dictionary) {
    double_violation("%s: NULL xpc object", api);
    return NULL;
  }
  if (dictionary->header.magic != OBJECT_MAGIC || dictionary->header.kind != KIND_XPC_DICTIONARY) {
    double_violation("%s: %p is not a live xpc dictionary (used after release?)", api, object);
    return NULL;
  }
  return dictionary;
}

static struct entry *find(struct xpc_dictionary *dictionary, const char *key) {
  for (int i = 0; i < dictionary->count; i++)
    if (strcmp(dictionary->entries[i].key, key) == 0) return &dictionary->entries[i];
  return NULL;
}

static struct entry *slot(struct xpc_dictionary *dictionary, const char *key, const char *api) {
  if (!key) {
    double_violation("%s: NULL key", api);
    return NULL;
  }
  struct entry *entry = find(dictionary, key);
  if (entry) {
    free(entry->string);
    entry->string = NULL;
    return entry;
  }
  if (dictionary->count == MAX_ENTRIES) {
    double_violation("%s: dictionary full", api);
    return NULL;
  }
  entry = &dictionary->entries[dictionary->count++];
  entry->key = strdup(key);
  return entry;
}

void *double_xpc_dictionary_create(void) {
  struct xpc_dictionary *dictionary = calloc(1, sizeof *dictionary);
  dictionary->header.magic = OBJECT_MAGIC;
  dictionary->header.kind = KIND_XPC_DICTIONARY;
  return dictionary;
}

bool double_xpc_is_dictionary(const void *object) {
  const struct xpc_dictionary *dictionary = object;
  return dictionary && dictionary->header.magic == OBJECT_MAGIC && dictionary->header.kind == KIND_XPC_DICTIONARY;
}

void double_xpc_set_string(void *object, const char *key, const char *value) {
  struct xpc_dictionary *dictionary = live(object, "xpc_dictionary_set_string");
  struct entry *entry = dictionary ? slot(dictionary, key, "xpc_dictionary_set_string") : NULL;
  if (!entry) return;
  entry->type = TYPE_STRING;
  entry->string = strdup(value);
}

void double_xpc_set_uint64(void *object, const char *key, uint64_t value) {
  struct xpc_dictionary *dictionary = live(object, "xpc_dictionary_set_uint64");
  struct entry *entry = dictionary ? slot(dictionary, key, "xpc_dictionary_set_uint64") : NULL;
  if (!entry) return;
  entry->type = TYPE_UINT64;
  entry->number = value;
}

bool double_xpc_has(const void *object, const char *key) {
  struct xpc_dictionary *dictionary = live(object, "(vmnet reading its description)");
  return dictionary && find(dictionary, key) != NULL;
}

uint64_t double_xpc_uint64(const void *object, const char *key) {
  struct xpc_dictionary *dictionary = live(object, "(vmnet reading its description)");
  struct entry *entry = dictionary ? find(dictionary, key) : NULL;
  if (entry && entry->type != TYPE_UINT64) double_violation("description key %s is not a uint64", key);
  return entry && entry->type == TYPE_UINT64 ? entry->number : 0;
}

bool double_xpc_bool(const void *object, const char *key, bool *present) {
  struct xpc_dictionary *dictionary = live(object, "(vmnet reading its description)");
  struct entry *entry = dictionary ? find(dictionary, key) : NULL;
  if (entry && entry->type != TYPE_BOOL) double_violation("description key %s is not a bool", key);
  *present = entry && entry->type == TYPE_BOOL;
  return *present && entry->number != 0;
}

void double_xpc_release(void *object) {
  struct xpc_dictionary *dictionary = live(object, "xpc_release");
  if (!dictionary) return;
  for (int i = 0; i < dictionary->count; i++) {
    struct entry *entry = &dictionary->entries[i];
    memset(entry->key, POISON_BYTE, strlen(entry->key));
    if (entry->string) memset(entry->string, POISON_BYTE, strlen(entry->string));
  }
  struct entry saved[MAX_ENTRIES];
  int count = dictionary->count;
  memcpy(saved, dictionary->entries, sizeof saved);
  memset(dictionary, POISON_BYTE, sizeof *dictionary);
  // Keep the poisoned strings reachable for freeing when the dictionary leaves quarantine.
  memcpy(dictionary->entries, saved, sizeof saved);
  dictionary->count = count;
  pthread_mutex_lock(&quarantine_lock);
  struct xpc_dictionary *evicted = quarantine[quarantine_next];
  quarantine[quarantine_next] = dictionary;
  quarantine_next = (quarantine_next + 1) % QUARANTINE;
  pthread_mutex_unlock(&quarantine_lock);
  if (evicted) {
    for (int i = 0; i < evicted->count; i++) {
      free(evicted->entries[i].key);
      free(evicted->entries[i].string);
    }
    free(evicted);
  }
}

// xpc_object_t xpc_dictionary_create(const char *const *keys, const xpc_object_t *values, size_t count);
EXPORT void *xpc_dictionary_create(const char *const *keys, const void *const *values, size_t count) {
  double_count_call("xpc_dictionary_create");
  if (count != 0 || keys || values) double_violation("xpc_dictionary_create: only empty dictionaries are expected");
  return double_xpc_dictionary_create();
}

// void xpc_dictionary_set_uint64(xpc_object_t dictionary, const char *key, uint64_t value);
EXPORT void xpc_dictionary_set_uint64(void *dictionary, const char *key, uint64_t value) {
  double_count_call("xpc_dictionary_set_uint64");
  double_xpc_set_uint64(dictionary, key, value);
}

// void xpc_dictionary_set_string(xpc_object_t dictionary, const char *key, const char *string);
// (softnet does not call it; tests use it to build interface_param dictionaries by hand)
EXPORT void xpc_dictionary_set_string(void *dictionary, const char *key, const char *value) {
  double_count_call("xpc_dictionary_set_string");
  double_xpc_set_string(dictionary, key, value);
}

// void xpc_dictionary_set_bool(xpc_object_t dictionary, const char *key, bool value);
EXPORT void xpc_dictionary_set_bool(void *object, const char *key, bool value) {
  double_count_call("xpc_dictionary_set_bool");
  struct xpc_dictionary *dictionary = live(object, "xpc_dictionary_set_bool");
  struct entry *entry = dictionary ? slot(dictionary, key, "xpc_dictionary_set_bool") : NULL;
  if (!entry) return;
  entry->type = TYPE_BOOL;
  entry->number = value ? 1 : 0;
}

// const char *xpc_dictionary_get_string(xpc_object_t dictionary, const char *key);
EXPORT const char *xpc_dictionary_get_string(void *object, const char *key) {
  double_count_call("xpc_dictionary_get_string");
  struct xpc_dictionary *dictionary = live(object, "xpc_dictionary_get_string");
  if (!dictionary || !key) return NULL;
  struct entry *entry = find(dictionary, key);
  return entry && entry->type == TYPE_STRING ? entry->string : NULL;
}

// uint64_t xpc_dictionary_get_uint64(xpc_object_t dictionary, const char *key);   0 when missing
EXPORT uint64_t xpc_dictionary_get_uint64(void *object, const char *key) {
  double_count_call("xpc_dictionary_get_uint64");
  struct xpc_dictionary *dictionary = live(object, "xpc_dictionary_get_uint64");
  if (!dictionary || !key) return 0;
  struct entry *entry = find(dictionary, key);
  return entry && entry->type == TYPE_UINT64 ? entry->number : 0;
}

// void xpc_release(xpc_object_t object);
EXPORT void xpc_release(void *object) {
  double_count_call("xpc_release");
  double_xpc_release(object);
}
