/*
 * echo_server.c: a TCP echo server on weft's completion-based I/O.  Every
 * connection is a chain of callbacks (recv, send until all is out, recv
 * again), each running as an ordinary task on some worker; no thread ever
 * blocks on a socket.  SIGINT/SIGTERM stop it cleanly: weft_destroy cancels
 * what is still in flight and each connection frees itself in its
 * -ECANCELED callback.
 *
 *   echo_server [port [bind-address]]     port 0 (the default) picks a free one
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft.h>

/* The listening socket, the accept loop, the stop signals. */
#include "server.h"

#define ECHO_BUF (64 * 1024)

static weft_rt *rt;

/* Totals for the summary line, and the connections not yet freed (must be
 * 0 after weft_destroy, or a callback was lost). */
static uint64_t total_conns, total_bytes;
static int64_t live_conns;

struct conn {
	int fd;
	size_t len;  /* bytes in buf to echo */
	size_t sent; /* of them, already sent */
	char buf[ECHO_BUF];
};

static void on_recv(int res, void *ctx);
static void on_send(int res, void *ctx);

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c);
	__atomic_fetch_sub(&live_conns, 1, __ATOMIC_RELAXED);
}

/* A submit that fails never runs its callback, so the connection ends here. */
static void conn_recv(struct conn *c)
{
	if (weft_io_recv(rt, c->fd, c->buf, sizeof(c->buf), 0, on_recv, c) < 0)
		conn_close(c);
}

static void conn_send(struct conn *c)
{
	/* MSG_NOSIGNAL: a peer that went away is an error result, not SIGPIPE. */
	if (weft_io_send(rt, c->fd, c->buf + c->sent, c->len - c->sent, MSG_NOSIGNAL, on_send, c) < 0)
		conn_close(c);
}

static void on_recv(int res, void *ctx)
{
	struct conn *c = ctx;
	if (res <= 0) { /* 0: the peer closed; -ECANCELED: weft_destroy; else a socket error */
		conn_close(c);
		return;
	}
	c->len = (size_t)res;
	c->sent = 0;
	conn_send(c);
}

static void on_send(int res, void *ctx)
{
	struct conn *c = ctx;
	if (res < 0) {
		conn_close(c);
		return;
	}
	c->sent += (size_t)res;
	__atomic_fetch_add(&total_bytes, (uint64_t)res, __ATOMIC_RELAXED);
	if (c->sent < c->len)
		conn_send(c); /* a short send: the rest first, so bytes stay in order */
	else
		conn_recv(c);
}

/* A new connection, from the accept loop in server.h. */
static void on_conn(int fd)
{
	struct conn *c = malloc(sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* echo small messages at once */
	__atomic_fetch_add(&live_conns, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&total_conns, 1, __ATOMIC_RELAXED);
	conn_recv(c);
}

int main(int argc, char **argv)
{
	const char *port, *addr;
	if ((argc > 1 && argv[1][0] == '-') || !server_args(argc, argv, 1, &port, &addr)) {
		fprintf(stderr, "usage: %s [port [bind-address]]\n", argv[0]);
		return 2;
	}
	sigset_t stop;
	server_block_stop_signals(&stop);

	int listen_fd = server_listen("echo_server", addr, port);
	if (listen_fd < 0)
		return 1;
	int r = weft_create(&rt, NULL);
	if (r < 0) {
		fprintf(stderr, "echo_server: weft_create: %s\n", strerror(-r));
		return 1;
	}
	struct server_acceptor acceptor = { .rt = rt, .fd = listen_fd, .name = "echo_server", .on_conn = on_conn };
	if (server_accept_arm(&acceptor) < 0) {
		weft_destroy(rt);
		return 1;
	}

	int sig = server_wait_for_stop(listen_fd, &stop);
	const char *backend = weft_io_backend(rt) == WEFT_IO_URING ? "io_uring" : "helper threads";
	/* Cancels the accept and every recv/send in flight; their callbacks
	 * run (with -ECANCELED) and free the connections before it returns. */
	weft_destroy(rt);
	close(listen_fd);

	int64_t left = __atomic_load_n(&live_conns, __ATOMIC_RELAXED);
	printf("echo_server: %s, %llu connections, %llu bytes echoed (I/O: %s)\n", strsignal(sig),
	       (unsigned long long)total_conns, (unsigned long long)total_bytes, backend);
	fflush(stdout); /* before any exit-time leak report ends the process */
	if (left != 0) {
		fprintf(stderr, "echo_server: %lld connections were never closed\n", (long long)left);
		return 1;
	}
	return 0;
}
