/*
 * echo_load.c: the load generator of weft-bench's echo rows.  It opens C
 * TCP connections to an echo server on 127.0.0.1 and runs each as a
 * ping-pong: send a message of S bytes, wait until all S bytes have come
 * back (and match), send the next.  After a warm-up it counts, for D
 * seconds, the requests sent and answered inside the window and the
 * latency of each (send to last byte back), then prints one line of
 * key=value pairs for weft-bench to parse:
 *
 *   echo_load conns=32 size=64 threads=1 seconds=2.000 requests=N rps=R
 *     p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. errors=E
 *
 * Usage: echo_load -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-w WARMUP]
 *                  [-T THREADS]
 *
 * Each thread drives its share of the connections with one level-triggered
 * epoll set.  The default is one thread: on the 2-CPU machine the server
 * under test then has a CPU of its own, whichever server it is.
 */
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65536
#define MAX_THREADS 16
/* After the window closes, answers still in flight get this long. */
#define DRAIN_NS 2000000000ull

struct conn {
	int fd;
	unsigned id;
	uint64_t seq;
	size_t sent, got;
	uint64_t t_send;
	bool busy;  /* a request is out */
	bool dead;
	unsigned char *out, *in;
};

struct worker {
	pthread_t tid;
	unsigned first, count; /* its connections */
	struct conn *conns;
	uint32_t *lat_ns;      /* one sample per request in the window */
	size_t nlat, cap;
	uint64_t errors;
	int rc;
};

static struct {
	int port;
	unsigned conns, threads;
	size_t size;
	double seconds, warmup;
	uint64_t t_start, t_end; /* the measuring window */
	pthread_barrier_t ready;
} opt = { .port = -1, .conns = 32, .threads = 1, .size = 64, .seconds = 2, .warmup = 0.2 };

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The request: its sequence number, then bytes that depend on the
 * connection, so an answer meant for another connection or an older
 * request does not match. */
static void fill(struct conn *c)
{
	memcpy(c->out, &c->seq, opt.size < 8 ? opt.size : 8);
	for (size_t i = 8; i < opt.size; i++)
		c->out[i] = (unsigned char)(c->id * 31 + i);
}

static void record(struct worker *w, uint64_t ns)
{
	if (w->nlat == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 65536;
		uint32_t *p = realloc(w->lat_ns, cap * sizeof *p);

		if (!p) {
			w->errors++;
			return;
		}
		w->lat_ns = p;
		w->cap = cap;
	}
	w->lat_ns[w->nlat++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* Counted once per connection, however many calls see it fail. */
static void conn_fail(struct worker *w, struct conn *c, const char *what, int err)
{
	if (c->dead)
		return;
	fprintf(stderr, "echo_load: connection %u: %s%s%s\n", c->id, what, err ? ": " : "",
		err ? strerror(err) : "");
	c->dead = true;
	c->busy = false;
	w->errors++;
}

/* The connection is done (window over) or failed: out of the epoll set,
 * so a peer's close cannot keep waking an idle connection. */
static void retire(int ep, struct conn *c, unsigned *busy)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	c->busy = false;
	--*busy;
}

/* Send the rest of the current request.  false once the connection
 * failed. */
static bool conn_send(struct worker *w, struct conn *c, int ep)
{
	while (c->sent < opt.size) {
		ssize_t n = send(c->fd, c->out + c->sent, opt.size - c->sent, MSG_NOSIGNAL);

		if (n > 0) {
			c->sent += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };

			/* Rare with small messages: wait for room. */
			if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
				conn_fail(w, c, "epoll_ctl", errno);
				return false;
			}
			return true;
		} else {
			conn_fail(w, c, "send", n < 0 ? errno : 0);
			return false;
		}
	}
	return true;
}

static bool conn_start(struct worker *w, struct conn *c, int ep)
{
	c->seq++;
	fill(c);
	c->sent = c->got = 0;
	c->busy = true;
	c->t_send = now_ns();
	return conn_send(w, c, ep);
}

static int connect_one(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -errno;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event events[64];
	unsigned busy = 0;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	w->rc = -1;
	if (ep < 0) {
		perror("echo_load: epoll_create1");
		pthread_barrier_wait(&opt.ready);
		pthread_barrier_wait(&opt.ready);
		return NULL;
	}
	for (unsigned i = 0; i < w->count; i++) {
		struct conn *c = &w->conns[i];
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		int fd = connect_one();

		c->id = w->first + i;
		c->fd = fd;
		if (fd < 0) {
			conn_fail(w, c, "connect", -fd);
			continue;
		}
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
			conn_fail(w, c, "epoll_ctl", errno);
	}
	/* Every connection of every thread is open before the first request,
	 * so the window sees the full load from its start; main sets the
	 * window between the two waits. */
	pthread_barrier_wait(&opt.ready);
	pthread_barrier_wait(&opt.ready);
	for (unsigned i = 0; i < w->count; i++)
		if (!w->conns[i].dead && conn_start(w, &w->conns[i], ep))
			busy++;

	while (busy > 0) {
		uint64_t t = now_ns();
		int n;

		if (t > opt.t_end + DRAIN_NS) {
			for (unsigned i = 0; i < w->count; i++)
				if (w->conns[i].busy)
					conn_fail(w, &w->conns[i], "no answer within 2 s of the end", 0);
			break;
		}
		n = epoll_wait(ep, events, 64, 100);
		if (n < 0 && errno != EINTR) {
			perror("echo_load: epoll_wait");
			break;
		}
		for (int e = 0; e < n; e++) {
			struct conn *c = events[e].data.ptr;
			ssize_t got;

			if (!c->busy)
				continue;
			if (events[e].events & EPOLLOUT) {
				struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

				if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0 || !conn_send(w, c, ep)) {
					conn_fail(w, c, "resume send", errno);
					retire(ep, c, &busy);
					continue;
				}
			}
			if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
				continue;
			got = recv(c->fd, c->in + c->got, opt.size - c->got, 0);
			if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				continue;
			if (got <= 0) {
				conn_fail(w, c, got == 0 ? "server closed the connection" : "recv",
					  got < 0 ? errno : 0);
				retire(ep, c, &busy);
				continue;
			}
			c->got += (size_t)got;
			if (c->got < opt.size)
				continue;
			t = now_ns();
			if (memcmp(c->in, c->out, opt.size) != 0) {
				conn_fail(w, c, "the echo does not match the request", 0);
				retire(ep, c, &busy);
				continue;
			}
			if (c->t_send >= opt.t_start && t <= opt.t_end)
				record(w, t - c->t_send);
			c->busy = false;
			if (t >= opt.t_end || !conn_start(w, c, ep))
				retire(ep, c, &busy);
		}
	}
	for (unsigned i = 0; i < w->count; i++)
		if (w->conns[i].fd >= 0)
			close(w->conns[i].fd);
	close(ep);
	w->rc = 0;
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/* Nearest rank, in microseconds. */
static double pct_us(const uint32_t *s, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * (double)n);

	if (n == 0)
		return NAN;
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return s[rank - 1] / 1e3;
}

static void usage(void)
{
	fprintf(stderr, "usage: echo_load -p PORT [-c CONNS] [-s SIZE] [-d SECONDS] [-w WARMUP] "
			"[-T THREADS]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct worker w[MAX_THREADS];
	uint32_t *all;
	size_t n = 0;
	uint64_t errors = 0;
	int o;

	while ((o = getopt(argc, argv, "p:c:s:d:w:T:")) != -1) {
		switch (o) {
		case 'p':
			opt.port = atoi(optarg);
			break;
		case 'c':
			opt.conns = (unsigned)atoi(optarg);
			break;
		case 's':
			opt.size = (size_t)atol(optarg);
			break;
		case 'd':
			opt.seconds = atof(optarg);
			break;
		case 'w':
			opt.warmup = atof(optarg);
			break;
		case 'T':
			opt.threads = (unsigned)atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (opt.port <= 0 || opt.port > 65535 || opt.conns == 0 || opt.size == 0 ||
	    opt.size > MAX_SIZE || !(opt.seconds > 0) || opt.warmup < 0 || opt.threads == 0 ||
	    opt.threads > MAX_THREADS)
		usage();
	if (opt.threads > opt.conns)
		opt.threads = opt.conns;
	signal(SIGPIPE, SIG_IGN);

	pthread_barrier_init(&opt.ready, NULL, opt.threads + 1);
	for (unsigned t = 0; t < opt.threads; t++) {
		struct worker *wk = &w[t];

		memset(wk, 0, sizeof *wk);
		wk->first = opt.conns * t / opt.threads;
		wk->count = opt.conns * (t + 1) / opt.threads - wk->first;
		wk->conns = calloc(wk->count, sizeof *wk->conns);
		if (!wk->conns) {
			perror("echo_load: calloc");
			return 1;
		}
		for (unsigned i = 0; i < wk->count; i++) {
			wk->conns[i].out = malloc(opt.size);
			wk->conns[i].in = malloc(opt.size);
			if (!wk->conns[i].out || !wk->conns[i].in) {
				perror("echo_load: malloc");
				return 1;
			}
		}
	}
	for (unsigned t = 0; t < opt.threads; t++)
		if (pthread_create(&w[t].tid, NULL, worker_main, &w[t]) != 0) {
			perror("echo_load: pthread_create");
			return 1;
		}
	/* Two barriers: every connection is open after the first; the window
	 * is set between them (the barrier orders the plain stores), so
	 * connecting is never part of it. */
	pthread_barrier_wait(&opt.ready);
	opt.t_start = now_ns() + (uint64_t)(opt.warmup * 1e9);
	opt.t_end = opt.t_start + (uint64_t)(opt.seconds * 1e9);
	pthread_barrier_wait(&opt.ready);
	for (unsigned t = 0; t < opt.threads; t++) {
		pthread_join(w[t].tid, NULL);
		n += w[t].nlat;
		errors += w[t].errors + (w[t].rc != 0);
	}
	all = malloc((n ? n : 1) * sizeof *all);
	if (!all) {
		perror("echo_load: malloc");
		return 1;
	}
	n = 0;
	for (unsigned t = 0; t < opt.threads; t++) {
		if (w[t].nlat)
			memcpy(all + n, w[t].lat_ns, w[t].nlat * sizeof *all);
		n += w[t].nlat;
	}
	qsort(all, n, sizeof *all, cmp_u32);
	printf("echo_load conns=%u size=%zu threads=%u seconds=%.3f requests=%zu rps=%.1f "
	       "p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%llu\n",
	       opt.conns, opt.size, opt.threads, opt.seconds, n, (double)n / opt.seconds,
	       pct_us(all, n, 50), pct_us(all, n, 90), pct_us(all, n, 99), pct_us(all, n, 99.9),
	       pct_us(all, n, 100), (unsigned long long)errors);
	/* Freed so that a sanitizer build reports real leaks only. */
	for (unsigned t = 0; t < opt.threads; t++) {
		for (unsigned i = 0; i < w[t].count; i++) {
			free(w[t].conns[i].out);
			free(w[t].conns[i].in);
		}
		free(w[t].conns);
		free(w[t].lat_ns);
	}
	free(all);
	pthread_barrier_destroy(&opt.ready);
	return errors || n == 0 ? 1 : 0;
}
