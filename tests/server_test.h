/*
 * server_test.h: the process plumbing test_echo_server.c and
 * test_kv_server.c share.  It starts an example server (its path in an
 * environment variable set by tests/meson.build) on port 0, reads the port
 * from its first line, stops it with SIGINT and checks that it exits 0
 * within STOP_SECONDS (the servers exit 1 if a connection was never freed,
 * and the ASan build also fails on a leak); plus a plain TCP connect to it.
 * What to say to the server stays in each test.
 */
#ifndef WEFT_SERVER_TEST_H
#define WEFT_SERVER_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define STOP_SECONDS 10.0

struct server {
	pid_t pid;
	int out; /* its stdout */
	int port;
	char summary[512]; /* what it printed after the port line */
};

/* The server binary named by env_var (WEFT_ECHO_SERVER, WEFT_KV_SERVER). */
static inline const char *server_path(const char *env_var)
{
	const char *bin = getenv(env_var);
	cr_assert_not_null(bin, "%s is not set (tests/meson.build passes the server's path)", env_var);
	return bin;
}

/* Start the server named by env_var with the extra arguments (a
 * NULL-terminated list, or NULL) and then port 0, and wait for its
 * "listening on port N" line. */
static inline void server_start(struct server *s, const char *env_var, const char *const *extra)
{
	const char *bin = server_path(env_var);
	const char *argv[16];
	int argc = 0;
	argv[argc++] = bin;
	for (int i = 0; extra && extra[i]; i++) {
		cr_assert_lt(argc, 14, "too many server arguments");
		argv[argc++] = extra[i];
	}
	argv[argc++] = "0";
	argv[argc] = NULL;
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		/* Die with the test: a failed assertion must not leave a
		 * server running. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(p[1], STDOUT_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	close(p[1]);
	s->pid = pid;
	s->out = p[0];
	s->summary[0] = '\0';
	char line[256];
	size_t len = 0;
	double deadline = now_sec() + 20;
	while (!memchr(line, '\n', len)) {
		struct pollfd pfd = { s->out, POLLIN, 0 };
		cr_assert(now_sec() < deadline, "the server printed no port within 20 s");
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		ssize_t n = read(s->out, line + len, sizeof(line) - 1 - len);
		cr_assert_gt(n, 0, "the server exited before listening");
		len += (size_t)n;
		cr_assert_lt(len, sizeof(line) - 1);
	}
	line[len] = '\0';
	cr_assert_eq(sscanf(line, "listening on port %d", &s->port), 1, "first line: %s", line);
	cr_assert(s->port > 0 && s->port < 65536);
	/* Keep what followed the line: the summary starts there. */
	char *rest = strchr(line, '\n') + 1;
	memmove(s->summary, rest, strlen(rest) + 1);
}

/* SIGINT, then exit status 0 within STOP_SECONDS; collects the summary. */
static inline void server_stop(struct server *s)
{
	cr_assert_eq(kill(s->pid, SIGINT), 0);
	double deadline = now_sec() + STOP_SECONDS;
	int st = 0;
	pid_t r;
	while ((r = waitpid(s->pid, &st, WNOHANG)) == 0 && now_sec() < deadline)
		usleep(10 * 1000);
	if (r == 0) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &st, 0);
		cr_assert_fail("the server did not exit within %.0f s of SIGINT", STOP_SECONDS);
	}
	size_t len = strlen(s->summary);
	ssize_t n;
	while (len < sizeof(s->summary) - 1 && (n = read(s->out, s->summary + len, sizeof(s->summary) - 1 - len)) > 0)
		len += (size_t)n;
	s->summary[len] = '\0';
	close(s->out);
	cr_assert(WIFEXITED(st), "the server died of signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	cr_assert_eq(WEXITSTATUS(st), 0, "the server exited with %d; it printed: %s", WEXITSTATUS(st), s->summary);
}

/* Run the server named by env_var with args (NULL-terminated) and its
 * output discarded, for arguments it must refuse; its wait status. */
static inline int server_run_args(const char *env_var, const char *const *args)
{
	const char *bin = server_path(env_var);
	const char *argv[16] = { bin };
	for (int i = 0; args[i]; i++) {
		cr_assert_lt(i, 14, "too many server arguments");
		argv[1 + i] = args[i];
	}
	pid_t pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return st;
}

/* A loopback connection to port with TCP_NODELAY, or -1 with errno set.
 * (Client threads call this: Criterion's assertions may only fail on the
 * test's own thread.) */
static inline int try_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

#endif
