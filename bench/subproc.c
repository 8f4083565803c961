/*
 * subproc.c: starting, watching and stopping the child processes of the io
 * group (see subproc.h).
 *
 * The child's stdout and stderr go to a memfd rather than a pipe: a server
 * that keeps logging after its "listening on port" line must never block
 * on a pipe nobody reads, and the whole output stays available for the
 * "skipped: <why>" text when it fails.  weft-bench is multi-threaded when
 * this runs (oneTBB and OpenMP keep their threads), so between fork and
 * exec the child only makes async-signal-safe system calls.
 */
#define _GNU_SOURCE 1
#include "subproc.h"

#include "bench_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* How often waits look at the child: short next to a server's start-up,
 * long enough that weft-bench's own polling is no load. */
#define POLL_NS 5000000u

/* environ with env_extra added; a NAME=... in env_extra replaces the
 * inherited one.  Built before fork (malloc is not safe after it). */
static char **build_env(const char *const env_extra[])
{
	size_t n = 0, extra = 0, k = 0;
	char **env;

	while (environ && environ[n])
		n++;
	while (env_extra && env_extra[extra])
		extra++;
	env = calloc(n + extra + 1, sizeof *env);
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool replaced = false;

		for (size_t e = 0; e < extra && !replaced; e++) {
			const char *eq = strchr(env_extra[e], '=');
			size_t len = eq ? (size_t)(eq - env_extra[e]) + 1 : strlen(env_extra[e]);

			replaced = strncmp(environ[i], env_extra[e], len) == 0;
		}
		if (!replaced)
			env[k++] = environ[i];
	}
	for (size_t e = 0; e < extra; e++)
		env[k++] = (char *)env_extra[e];
	env[k] = NULL;
	return env;
}

int subproc_start(struct subproc *p, char *const argv[], const char *const env_extra[])
{
	pid_t parent = getpid();
	char **env;
	int fd;

	memset(p, 0, sizeof *p);
	p->log_fd = -1;
	fd = memfd_create("weft-bench-child", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	env = build_env(env_extra);
	if (!env) {
		close(fd);
		return -ENOMEM;
	}
	p->pid = fork();
	if (p->pid < 0) {
		int err = errno;

		p->pid = 0;
		free(env);
		close(fd);
		return -err;
	}
	if (p->pid == 0) {
		/* The child: no stdio, no malloc.  A server must not outlive a
		 * weft-bench killed by its watchdog. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(126);
		if (dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execve(argv[0], argv, env);
		_exit(127);
	}
	free(env);
	p->log_fd = fd;
	return 0;
}

bool subproc_alive(struct subproc *p)
{
	if (p->pid <= 0 || p->reaped)
		return false;
	if (waitpid(p->pid, &p->status, WNOHANG) == p->pid) {
		p->reaped = true;
		return false;
	}
	return true;
}

size_t subproc_output(const struct subproc *p, char *out, size_t len)
{
	ssize_t got;

	if (len == 0)
		return 0;
	got = p->log_fd >= 0 ? pread(p->log_fd, out, len - 1, 0) : -1;
	if (got < 0)
		got = 0;
	out[got] = 0;
	return (size_t)got;
}

void subproc_first_line(const struct subproc *p, char *out, size_t len)
{
	char buf[4096];
	char *s = buf;

	subproc_output(p, buf, sizeof buf);
	s += strspn(s, " \t\r\n");
	s[strcspn(s, "\r\n")] = 0;
	snprintf(out, len, "%s", s);
}

int subproc_wait_port(struct subproc *p, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	static const char key[] = "listening on port ";

	for (;;) {
		char buf[8192];
		const char *at;

		subproc_output(p, buf, sizeof buf);
		at = strstr(buf, key);
		if (at) {
			char *end;
			long port = strtol(at + sizeof key - 1, &end, 10);

			/* Only a whole line: the number may still be half written. */
			if ((*end == '\n' || *end == '\r') && port > 0 && port < 65536)
				return (int)port;
		}
		if (!subproc_alive(p))
			return -ECHILD;
		if (bench_now_ns() > deadline)
			return -ETIMEDOUT;
		bench_sleep_ns(POLL_NS);
	}
}

static bool try_connect(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

int subproc_wait_connect(struct subproc *p, int port, unsigned timeout_ms)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;

	for (;;) {
		if (try_connect(port))
			return 0;
		if (!subproc_alive(p))
			return -ECHILD;
		if (bench_now_ns() > deadline)
			return -ETIMEDOUT;
		bench_sleep_ns(POLL_NS);
	}
}

void subproc_stop(struct subproc *p, unsigned grace_ms)
{
	if (p->pid > 0 && !p->reaped) {
		uint64_t deadline = bench_now_ns() + (uint64_t)grace_ms * 1000000u;

		kill(p->pid, SIGTERM);
		while (subproc_alive(p) && bench_now_ns() < deadline)
			bench_sleep_ns(POLL_NS / 5);
		if (!p->reaped) {
			kill(p->pid, SIGKILL);
			if (waitpid(p->pid, &p->status, 0) == p->pid)
				p->reaped = true;
		}
	}
	if (p->log_fd >= 0)
		close(p->log_fd);
	p->log_fd = -1;
}

int subproc_run(char *const argv[], unsigned timeout_ms, char *out, size_t outlen)
{
	uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000u;
	struct subproc p;
	int rc = subproc_start(&p, argv, NULL);

	if (outlen)
		out[0] = 0;
	if (rc < 0)
		return rc;
	while (subproc_alive(&p) && bench_now_ns() < deadline)
		bench_sleep_ns(POLL_NS);
	if (!p.reaped) {
		subproc_output(&p, out, outlen);
		subproc_stop(&p, 200);
		return -ETIMEDOUT;
	}
	subproc_output(&p, out, outlen);
	subproc_stop(&p, 0);
	if (WIFEXITED(p.status))
		return WEXITSTATUS(p.status);
	return 128 + (WIFSIGNALED(p.status) ? WTERMSIG(p.status) : 0);
}

int subproc_cpu(pid_t pid, double *cpu_s, double *ticks_s)
{
	unsigned long long utime, stime;
	struct timespec ts;
	clockid_t clk;
	char path[64], buf[1024], *s;
	FILE *f;
	int rc = 0;

	*cpu_s = *ticks_s = NAN;
	if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0)
		*cpu_s = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	else
		rc = -errno;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	s = fgets(buf, sizeof buf, f);
	fclose(f);
	/* The command name may hold spaces and parentheses: fields are
	 * counted from the last ')'.  utime and stime are fields 14 and 15;
	 * field 3 (the state) follows the ')'. */
	if (s && (s = strrchr(buf, ')')) &&
	    sscanf(s + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
		   &stime) == 2)
		*ticks_s = (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	else if (rc == 0)
		rc = -EIO;
	return rc;
}

int subproc_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
		port = -errno;
		close(fd);
		return port;
	}
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}
