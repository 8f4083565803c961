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
#include <errno.h>
#include <netdb.h>
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

#define ECHO_BUF (64 * 1024)
/* How long to wait before accepting again when out of fds or memory:
 * retrying at once would only spin. */
#define ACCEPT_BACKOFF_NS (10 * 1000 * 1000)

static weft_rt *rt;
static int listen_fd = -1;

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
static void arm_accept(void);

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

static void on_backoff(int res, void *ctx)
{
	(void)ctx;
	if (res == 0)
		arm_accept();
}

static void on_accept(int res, void *ctx)
{
	(void)ctx;
	if (res == -ECANCELED)
		return; /* shutting down; main closes listen_fd */
	if (res < 0) {
		/* Out of fds or memory: give closing connections a moment.  Other
		 * errors (a connection reset before we took it) concern only that
		 * connection. */
		if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
			if (weft_io_timeout(rt, ACCEPT_BACKOFF_NS, on_backoff, NULL) < 0)
				fprintf(stderr, "echo_server: cannot accept any more: %s\n", strerror(-res));
			return;
		}
		arm_accept();
		return;
	}
	/* Accept the next one first, so a slow set-up here delays no one. */
	arm_accept();
	int fd = res;
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

static void arm_accept(void)
{
	int r = weft_io_accept(rt, listen_fd, NULL, NULL, on_accept, NULL);
	/* -ESHUTDOWN is the normal end; anything else stops new connections
	 * while the ones we have keep going. */
	if (r < 0 && r != -ESHUTDOWN)
		fprintf(stderr, "echo_server: accept: %s\n", strerror(-r));
}

/* Listen on addr:port (addr NULL: 127.0.0.1); the fd, or -1 after a message. */
static int listen_on(const char *addr, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	int r = getaddrinfo(addr ? addr : "127.0.0.1", port, &hints, &ai);
	if (r != 0) {
		fprintf(stderr, "echo_server: %s port %s: %s\n", addr ? addr : "127.0.0.1", port, gai_strerror(r));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		perror("echo_server: listen");
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

static int bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int main(int argc, char **argv)
{
	if (argc > 3 || (argc > 1 && argv[1][0] == '-')) {
		fprintf(stderr, "usage: %s [port [bind-address]]\n", argv[0]);
		return 2;
	}
	/* Block the stop signals before weft_create, so every worker inherits
	 * the mask and only sigwait below ever sees them.  Reset them first:
	 * a shell starts background jobs with SIGINT ignored, and an ignored
	 * signal is discarded before sigwait could take it. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);

	listen_fd = listen_on(argc > 2 ? argv[2] : NULL, argc > 1 ? argv[1] : "0");
	if (listen_fd < 0)
		return 1;
	int r = weft_create(&rt, NULL);
	if (r < 0) {
		fprintf(stderr, "echo_server: weft_create: %s\n", strerror(-r));
		return 1;
	}
	r = weft_io_accept(rt, listen_fd, NULL, NULL, on_accept, NULL);
	if (r < 0) {
		fprintf(stderr, "echo_server: accept: %s\n", strerror(-r));
		weft_destroy(rt);
		return 1;
	}
	printf("listening on port %d\n", bound_port(listen_fd));
	fflush(stdout);

	int sig;
	sigwait(&stop, &sig);
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
