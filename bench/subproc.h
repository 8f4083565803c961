/*
 * subproc.h: the child processes of weft-bench's io group: servers that
 * print "listening on port N" (or are polled until they accept), load
 * generators run to completion with a time limit, and the CPU time a
 * server process uses while it should be idle.  Nothing here knows about
 * weft.
 */
#ifndef WEFT_BENCH_SUBPROC_H
#define WEFT_BENCH_SUBPROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct subproc {
	pid_t pid;   /* 0: not running */
	int log_fd;  /* the child's stdout and stderr (an unlinked file) */
	int status;  /* wait status once reaped */
	bool reaped;
};

/* Start argv[0] (a path) with argv, the environment plus env_extra
 * ("NAME=value" strings, NULL-terminated, may be NULL).  stdout and stderr
 * go to a private file (see subproc_output).  The child gets SIGKILL if
 * weft-bench dies.  0 or -errno. */
int subproc_start(struct subproc *p, char *const argv[], const char *const env_extra[]);

/* Wait until the child's output has a line "listening on port N" and
 * return N; -ETIMEDOUT after timeout_ms, -ECHILD if the child exited
 * first.  Servers print it after listen(2), so it is connectable then. */
int subproc_wait_port(struct subproc *p, unsigned timeout_ms);

/* Wait until 127.0.0.1:port accepts a TCP connection (for servers that do
 * not print the line, such as redis-server).  0, -ETIMEDOUT or -ECHILD. */
int subproc_wait_connect(struct subproc *p, int port, unsigned timeout_ms);

/* Whether the child is still running (reaps it if not). */
bool subproc_alive(struct subproc *p);

/* The first line of the child's output that is not empty, for "skipped:"
 * messages, or "" (at most len-1 characters). */
void subproc_first_line(const struct subproc *p, char *out, size_t len);
/* The whole output so far (at most len-1 characters, NUL-terminated);
 * the number of bytes copied. */
size_t subproc_output(const struct subproc *p, char *out, size_t len);

/* SIGTERM, then SIGKILL after grace_ms; reaps the child and closes the
 * log.  Safe on a subproc that never started. */
void subproc_stop(struct subproc *p, unsigned grace_ms);

/* Run argv to completion, killing it after timeout_ms.  Its output is left
 * in out (NUL-terminated).  The exit status (>= 0), -ETIMEDOUT, or -errno
 * if it could not start; 127 means exec failed. */
int subproc_run(char *const argv[], unsigned timeout_ms, char *out, size_t outlen);

/* CPU seconds the process pid has used so far, all threads: cpu_ns from
 * its CPU-time clock (clock_getcpuclockid, ns resolution), ticks_s from
 * utime + stime in /proc/<pid>/stat (clock-tick resolution, 10 ms here).
 * 0 or -errno; a value that cannot be read is NAN. */
int subproc_cpu(pid_t pid, double *cpu_s, double *ticks_s);

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick
 * for port 0), or -errno.  Racy by nature; only for servers that must be
 * given a port. */
int subproc_free_port(void);

#endif
