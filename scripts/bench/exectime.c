// Start-up timer of `bun run bench` (scripts/bench/startup.ts): runs a command once and prints one
// JSON line on stdout.
//
//   exectime <stdout-file> -- <argv...>
//     Forks, execs argv (resolved like execvp) with stdin from /dev/null, its stdout into
//     <stdout-file> (so the caller can check what it printed) and its stderr to /dev/null, and waits.
//     wallMs: fork to exit (CLOCK_MONOTONIC); cpuMs: the child's user + system time (wait4's rusage:
//     every thread, summed by the kernel), which other work on the machine inflates much less.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc < 4 || strcmp(argv[2], "--")) return fprintf(stderr, "usage: exectime <stdout-file> -- <argv...>\n"), 2;
  int out = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (out < 0 || null < 0) return perror("exectime: open"), 1;
  double started = now_ms();
  pid_t pid = fork();
  if (pid < 0) return perror("exectime: fork"), 1;
  if (pid == 0) {
    dup2(null, 0);
    dup2(out, 1);
    dup2(null, 2);
    execvp(argv[3], argv + 3);
    _exit(127);
  }
  int status = 0;
  struct rusage usage;
  if (wait4(pid, &status, 0, &usage) != pid) return perror("exectime: wait4"), 1;
  double wall = now_ms() - started;
  double cpu = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e3 +
               (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e3;
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  printf("{\"wallMs\":%.3f,\"cpuMs\":%.3f,\"exitStatus\":%d}\n", wall, cpu, code);
  return 0;
}
