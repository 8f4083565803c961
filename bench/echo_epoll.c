/*
 * echo_epoll.c: the baseline echo server of weft-bench's io group.  One
 * thread, non-blocking sockets, level-triggered epoll: what a careful
 * programmer writes without a runtime.  It speaks the same start-up
 * protocol as examples/echo_server: `echo_epoll [PORT]` (0 or nothing: the
 * kernel picks), then "listening on port N" on stdout once it accepts.
 *
 * Everything a connection sends is written back.  When the peer's receive
 * window is full, what could not be written waits in the connection's
 * buffer and the connection stops reading until it has drained, so a
 * client that does not read cannot make the server buffer without bound.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_SIZE 16384
#define MAX_EVENTS 256

struct conn {
	int fd;
	size_t len; /* bytes in buf not yet written back */
	size_t off; /* of those, already written */
	char buf[BUF_SIZE];
};

static int ep;

static void conn_close(struct conn *c)
{
	/* close() also removes the fd from the epoll set. */
	close(c->fd);
	free(c);
}

/* Write back what is pending.  0: all written; 1: the socket is full; -1:
 * the connection is gone. */
static int conn_flush(struct conn *c)
{
	while (c->off < c->len) {
		ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);

		if (n > 0) {
			c->off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return 1;
		} else {
			return -1;
		}
	}
	c->len = c->off = 0;
	return 0;
}

static int conn_want(struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Readable or writable: echo until the socket would block either way. */
static void conn_event(struct conn *c, uint32_t events)
{
	if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
		conn_close(c);
		return;
	}
	if (c->len) {
		int rc = conn_flush(c);

		if (rc < 0) {
			conn_close(c);
			return;
		}
		if (rc > 0)
			return; /* still waiting for EPOLLOUT */
		if (conn_want(c, EPOLLIN) != 0) {
			conn_close(c);
			return;
		}
	}
	for (;;) {
		ssize_t n = recv(c->fd, c->buf, sizeof c->buf, 0);
		int rc;

		if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
			conn_close(c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return; /* drained; level-triggered, so nothing is lost */
		}
		c->len = (size_t)n;
		c->off = 0;
		rc = conn_flush(c);
		if (rc < 0) {
			conn_close(c);
			return;
		}
		if (rc > 0) {
			/* Stop reading until the peer has taken what is pending. */
			if (conn_want(c, EPOLLOUT) != 0)
				conn_close(c);
			return;
		}
		/* A short read means the socket is empty: skip the recv that
		 * would only say EAGAIN. */
		if ((size_t)n < sizeof c->buf)
			return;
	}
}

static void accept_all(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct epoll_event ev = { .events = EPOLLIN };
		struct conn *c;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				perror("echo_epoll: accept4");
			return;
		}
		/* Echoes are small writes: do not let Nagle hold them back. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		c = malloc(sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->len = c->off = 0;
		ev.data.ptr = c;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
			perror("echo_epoll: epoll_ctl");
			conn_close(c);
		}
	}
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof a;
	struct epoll_event ev = { .events = EPOLLIN }, events[MAX_EVENTS];
	static int listen_tag; /* data.ptr of the listening socket */
	char *end;
	long port = 0;
	int lfd, one = 1;

	if (argc > 2 || (argc == 2 && ((port = strtol(argv[1], &end, 10)) < 0 || port > 65535 ||
				       *end || end == argv[1]))) {
		fprintf(stderr, "usage: echo_epoll [PORT]   (0 or none: any free port)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("echo_epoll: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)port);
	if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 || listen(lfd, 1024) != 0 ||
	    getsockname(lfd, (struct sockaddr *)&a, &alen) != 0) {
		perror("echo_epoll: bind/listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.data.ptr = &listen_tag;
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
		perror("echo_epoll: epoll");
		return 1;
	}
	printf("listening on port %d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, events, MAX_EVENTS, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("echo_epoll: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			if (events[i].data.ptr == &listen_tag)
				accept_all(lfd);
			else
				conn_event(events[i].data.ptr, events[i].events);
		}
	}
}
