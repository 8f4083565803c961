/*
 * test_echo_server.c: drives examples/echo_server as a separate process.
 * Each test starts it on port 0, reads the port from its first line, talks
 * to it over TCP with a few client threads, then sends SIGINT and expects
 * exit status 0 within seconds (the server exits 1 if a connection was
 * never freed, and the ASan build also fails on a leak).  The server's path
 * comes from $WEFT_ECHO_SERVER (tests/meson.build); server_test.h starts
 * and stops it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_test.h"

/* ---- a client ---------------------------------------------------------- */

static int connect_to(int port)
{
	int fd = try_connect(port);
	cr_assert_geq(fd, 0, "connect: %s", strerror(errno));
	return fd;
}

/* Send msg and read back as many bytes, both at once (so neither side's
 * socket buffer can fill up and block the other), within `seconds`.
 * Returns false on a timeout, an error or an early EOF. */
static bool echo_once(int fd, const char *msg, char *back, size_t len, double seconds)
{
	size_t sent = 0, got = 0;
	double deadline = now_sec() + seconds;
	while (got < len) {
		if (now_sec() > deadline)
			return false;
		struct pollfd pfd = { fd, (short)(POLLIN | (sent < len ? POLLOUT : 0)), 0 };
		if (poll(&pfd, 1, 100) < 0)
			return false;
		if ((pfd.revents & POLLOUT) && sent < len) {
			ssize_t n = send(fd, msg + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno != EAGAIN)
				return false;
			if (n > 0)
				sent += (size_t)n;
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, back + got, len - got, MSG_DONTWAIT);
			if (n == 0 || (n < 0 && errno != EAGAIN))
				return false;
			if (n > 0)
				got += (size_t)n;
		}
	}
	return true;
}

/* ---- tests ------------------------------------------------------------- */

struct worker_arg {
	int port;
	unsigned seed;
	long messages;
	bool reconnect; /* a new connection for every message */
	bool ok;
	char why[128];
	uint64_t bytes;
};

static void *client_main(void *p)
{
	struct worker_arg *w = p;
	char *msg = malloc(65536), *back = malloc(65536);
	int fd = -1;
	w->ok = true;
	for (long i = 0; i < w->messages && w->ok; i++) {
		/* 64 KiB first, then random sizes: 1 byte up to 64 KiB. */
		size_t len = i == 0 ? 65536 : 1 + (size_t)(rand_r(&w->seed) % 65536);
		for (size_t j = 0; j < len; j++)
			msg[j] = (char)rand_r(&w->seed);
		if (fd < 0)
			fd = try_connect(w->port);
		if (fd < 0) {
			snprintf(w->why, sizeof(w->why), "message %ld: connect: %s", i, strerror(errno));
			w->ok = false;
		} else if (!echo_once(fd, msg, back, len, 20)) {
			snprintf(w->why, sizeof(w->why), "message %ld (%zu bytes): no full echo", i, len);
			w->ok = false;
		} else if (memcmp(msg, back, len) != 0) {
			snprintf(w->why, sizeof(w->why), "message %ld (%zu bytes): echo differs", i, len);
			w->ok = false;
		}
		w->bytes += len;
		if (w->reconnect) {
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	free(msg);
	free(back);
	return NULL;
}

Test(echo_server, concurrent_random_sizes, .timeout = 120)
{
	struct server s;
	server_start(&s, "WEFT_ECHO_SERVER", NULL);
	enum { N = 8 };
	struct worker_arg w[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct worker_arg){ .port = s.port, .seed = 1234u + (unsigned)i, .messages = scaled(300) };
		/* Two clients open a connection per message: accept and close
		 * get exercised as much as recv and send. */
		w[i].reconnect = i < 2;
		pthread_create(&t[i], NULL, client_main, &w[i]);
	}
	uint64_t bytes = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		cr_assert(w[i].ok, "client %d: %s", i, w[i].why);
		bytes += w[i].bytes;
	}
	server_stop(&s);
	/* Every byte went through exactly once, and the server counted the
	 * connections it accepted. */
	unsigned long long conns = 0, echoed = 0;
	const char *sum = strstr(s.summary, "echo_server:");
	cr_assert_not_null(sum, "no summary line: %s", s.summary);
	cr_assert_eq(sscanf(strchr(sum, ',') + 1, " %llu connections, %llu bytes echoed", &conns, &echoed), 2,
		     "summary: %s", sum);
	cr_assert_eq(echoed, bytes, "echoed %llu bytes, clients sent %llu", echoed, (unsigned long long)bytes);
	cr_assert_eq(conns, (unsigned long long)(N - 2 + 2 * w[0].messages), "summary: %s", sum);
}

Test(echo_server, peers_that_vanish, .timeout = 60)
{
	struct server s;
	server_start(&s, "WEFT_ECHO_SERVER", NULL);
	char *msg = calloc(1, 1 << 20);
	/* Peers that send a lot and close without reading: the server's send
	 * fails (EPIPE/ECONNRESET) and it must drop just that connection.  A
	 * zero SO_LINGER makes the close a reset. */
	for (int i = 0; i < 20; i++) {
		int fd = connect_to(s.port);
		if (i % 2) {
			struct linger lg = { 1, 0 };
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		ssize_t n = send(fd, msg, (size_t)(64 << 10) * (size_t)(1 + i % 4), MSG_NOSIGNAL | MSG_DONTWAIT);
		cr_assert_gt(n, 0);
		close(fd);
	}
	/* A connection that only connects and closes. */
	close(connect_to(s.port));
	/* The server still echoes. */
	int fd = connect_to(s.port);
	char back[6];
	cr_assert(echo_once(fd, "hello!", back, 6, 20));
	cr_assert_eq(memcmp(back, "hello!", 6), 0);
	close(fd);
	free(msg);
	server_stop(&s);
}

Test(echo_server, sigint_with_connections_open, .timeout = 60)
{
	struct server s;
	server_start(&s, "WEFT_ECHO_SERVER", NULL);
	enum { N = 6 };
	int fds[N];
	char big[200000];
	memset(big, 'x', sizeof(big));
	for (int i = 0; i < N; i++) {
		fds[i] = connect_to(s.port);
		/* Half are idle (a recv in flight); half have pushed more than
		 * they read, so the server is stuck in a send. */
		if (i % 2)
			cr_assert_gt(send(fds[i], big, sizeof(big), MSG_NOSIGNAL | MSG_DONTWAIT), 0);
	}
	/* Wait until the server has taken every connection, so the stop
	 * really cancels recvs and sends (not just an accept). */
	char back[2];
	int probe = connect_to(s.port);
	cr_assert(echo_once(probe, "ok", back, 2, 20));
	usleep(100 * 1000);
	server_stop(&s);
	cr_assert_not_null(strstr(s.summary, "7 connections"), "summary: %s", s.summary);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	close(probe);
}

Test(echo_server, bad_port_fails, .timeout = 30)
{
	/* Not a port: the server says so and exits non-zero instead of
	 * listening somewhere unexpected. */
	int st = server_run_args("WEFT_ECHO_SERVER", (const char *[]){ "not-a-port", NULL });
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 127);
}
