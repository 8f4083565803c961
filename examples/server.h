/*
 * server.h: the plumbing the example TCP servers (echo_server.c,
 * kv_server.c) share, so that each example shows only its own use of weft.
 * It owns the POSIX side: the port and bind-address arguments, the stop
 * signals, the listening socket and the "listening on port N" line (the
 * tests and weft-bench wait for it); plus the accept loop on weft_io_accept,
 * which hands each new connection's fd to the example.  Header-only: each
 * example is one file, built once more by tests/meson.build.
 */
#ifndef WEFT_EXAMPLES_SERVER_H
#define WEFT_EXAMPLES_SERVER_H

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft.h>

/* How long to wait before accepting again when out of fds or memory:
 * retrying at once would only spin. */
#define SERVER_ACCEPT_BACKOFF_NS (10 * 1000 * 1000)

/* The positional arguments from argv[first] on: [port [bind-address]].
 * Port "0" (the default) lets the kernel pick; the address defaults to
 * 127.0.0.1.  False if there are more than two. */
static inline bool server_args(int argc, char **argv, int first, const char **port, const char **addr)
{
	if (argc - first > 2)
		return false;
	*port = first < argc ? argv[first] : "0";
	*addr = first + 1 < argc ? argv[first + 1] : "127.0.0.1";
	return true;
}

/* Block the stop signals (SIGINT, SIGTERM) into *stop for
 * server_wait_for_stop.  Call before weft_create, so every worker inherits
 * the mask and only sigwait ever sees them.  They are reset first: a shell
 * starts background jobs with SIGINT ignored, and an ignored signal is
 * discarded before sigwait could take it.  SIGPIPE is ignored: sends to a
 * peer that went away should fail, not kill the server. */
static inline void server_block_stop_signals(sigset_t *stop)
{
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigemptyset(stop);
	sigaddset(stop, SIGINT);
	sigaddset(stop, SIGTERM);
	pthread_sigmask(SIG_BLOCK, stop, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Listen on addr:port (numeric only); the fd, or -1 after a message
 * prefixed with name. */
static inline int server_listen(const char *name, const char *addr, const char *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai;
	int r = getaddrinfo(addr, port, &hints, &ai);
	if (r != 0) {
		fprintf(stderr, "%s: %s port %s: %s\n", name, addr, port, gai_strerror(r));
		return -1;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
		fprintf(stderr, "%s: listen: %s\n", name, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
}

/* The port fd is bound to (the one the kernel picked for port 0). */
static inline int server_bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- the accept loop --------------------------------------------------- */

/* One accept is in flight at a time; each completion submits the next.
 * The struct is the callbacks' context, so it must outlive weft_destroy
 * (which runs the last callback, with -ECANCELED). */
struct server_acceptor {
	weft_rt *rt;
	int fd;           /* the listening socket; the caller closes it after weft_destroy */
	const char *name; /* prefix of messages */
	/* A new connection (close-on-exec), now the callee's to close.  Runs
	 * on a worker, after the next accept has been submitted. */
	void (*on_conn)(int fd);
};

static inline int server_accept_arm(struct server_acceptor *a);

static inline void server_on_backoff(int res, void *ctx)
{
	if (res == 0) /* else -ECANCELED: shutting down */
		server_accept_arm(ctx);
}

static inline void server_on_accept(int res, void *ctx)
{
	struct server_acceptor *a = ctx;
	if (res == -ECANCELED)
		return; /* shutting down */
	if (res < 0) {
		/* Out of fds or memory: give closing connections a moment.  Other
		 * errors (a connection reset before we took it) concern only that
		 * connection. */
		if (res == -EMFILE || res == -ENFILE || res == -ENOBUFS || res == -ENOMEM) {
			if (weft_io_timeout(a->rt, SERVER_ACCEPT_BACKOFF_NS, server_on_backoff, a) < 0)
				fprintf(stderr, "%s: cannot accept any more: %s\n", a->name, strerror(-res));
			return;
		}
		server_accept_arm(a);
		return;
	}
	/* Accept the next one first, so a slow set-up of this one delays no
	 * one. */
	server_accept_arm(a);
	a->on_conn(res);
}

/* Submit the next accept.  -ESHUTDOWN (weft_destroy has begun) is the
 * normal end; any other error stops new connections, with a message, while
 * the ones we have keep going. */
static inline int server_accept_arm(struct server_acceptor *a)
{
	int r = weft_io_accept(a->rt, a->fd, NULL, NULL, server_on_accept, a);
	if (r < 0 && r != -ESHUTDOWN)
		fprintf(stderr, "%s: accept: %s\n", a->name, strerror(-r));
	return r;
}

/* Announce the port on stdout (the first line, which the tests and
 * weft-bench wait for) and wait for SIGINT or SIGTERM; returns the signal. */
static inline int server_wait_for_stop(int listen_fd, const sigset_t *stop)
{
	printf("listening on port %d\n", server_bound_port(listen_fd));
	fflush(stdout);
	int sig;
	sigwait(stop, &sig);
	return sig;
}

#endif
