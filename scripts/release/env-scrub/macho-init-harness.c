// Test harness (test/release/harden.test.ts): calls the scrubber blob's macho_init the way dyld
// calls an initializer, init(argc, argv, envp, apple, vars), with its tail jump aimed at check(), and
// checks that all five arguments arrive unchanged and that envp was scrubbed. Built natively with gcc
// (x86-64) and with aarch64-linux-gnu-gcc run under qemu-aarch64 (AArch64): the calling conventions
// match macOS's for these arguments. Usage: harness BLOB MACHO_INIT_OFFSET MACHO_JUMP_OFFSET
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
static int seen_argc; static char **seen_argv, **seen_envp, **seen_apple; static void *seen_vars;
static void check(int argc, char **argv, char **envp, char **apple, void *vars) {
  seen_argc = argc; seen_argv = argv; seen_envp = envp; seen_apple = apple; seen_vars = vars;
}
int main(int argc, char **argv) {
  // argv[1] = blob file, argv[2] = offset of macho_init, argv[3] = offset of macho_jump, argv[4] = arch
  FILE *f = fopen(argv[1], "rb"); unsigned char buf[4096]; size_t n = fread(buf, 1, sizeof buf, f); fclose(f);
  long init = strtol(argv[2], 0, 0), jump = strtol(argv[3], 0, 0);
  unsigned char *code = mmap(0, 4096, PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
  memcpy(code, buf, n);
  intptr_t from = (intptr_t)(code + jump), to = (intptr_t)check;
#if defined(__x86_64__)
  // jmp rel32 cannot reach a far check(): jump to a trampoline placed after the blob instead
  unsigned char *tramp = code + 2048; tramp[0] = 0x48; tramp[1] = 0xb8; memcpy(tramp + 2, &to, 8); tramp[10] = 0xff; tramp[11] = 0xe0; // movabs rax, check; jmp rax
  int32_t rel = (int32_t)((intptr_t)tramp - (from + 5)); memcpy(code + jump + 1, &rel, 4);
#else
  uint32_t *tramp = (uint32_t *)(code + 2048); // ldr x16, #8; br x16; .quad check
  tramp[0] = 0x58000050; tramp[1] = 0xd61f0200; memcpy(tramp + 2, &to, 8);
  uint32_t imm = (uint32_t)((((intptr_t)tramp - from) / 4) & 0x03ffffff); uint32_t b = 0x14000000 | imm; memcpy(code + jump, &b, 4);
  __builtin___clear_cache((char *)code, (char *)code + 4096);
#endif
  char e0[] = "BUN_OPTIONS=--preload x", e1[] = "SENTRY_DSN=keep", e2[] = "JSC_useJIT=0", e3[] = "SUDO_GID=7";
  char *envp[] = { e0, e1, e2, e3, 0 };
  char *apple[] = { "executable_path=/x", 0 }; char *args[] = { "softnet", 0 };
  void (*fn)(int, char **, char **, char **, void *) = (void *)(code + init);
  fn(1, args, envp, apple, (void *)0x1234);
  int ok = seen_argc == 1 && seen_argv == args && seen_envp == envp && seen_apple == apple && seen_vars == (void *)0x1234
    && envp[0] == e1 && envp[1] == e3 && envp[2] == 0 && envp[3] == 0 && e0[0] == 0 && e2[0] == 0 && strcmp(e1, "SENTRY_DSN=keep") == 0;
  printf("%s argc=%d envp=[%s,%s,%p] vars=%p\n", ok ? "OK" : "FAIL", seen_argc, envp[0], envp[1], (void *)envp[2], seen_vars);
  return ok ? 0 : 1;
}
