/*
 * test_kv_server.c: drives examples/kv_server as a separate process with a
 * small RESP client.  Each test starts it on port 0, reads the port from
 * its first line, checks replies byte for byte (commands, binary values,
 * pipelines split anywhere, concurrent clients, MSET atomicity, malformed
 * input), then sends SIGINT and expects exit status 0 within seconds (the
 * server exits 1 if a connection was never freed; the ASan build also
 * fails on a leak).  The server's path comes from $WEFT_KV_SERVER
 * (tests/meson.build); server_test.h starts and stops it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_test.h"

#define REPLY_SECONDS 20.0

/* ---- byte buffers and requests ------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_put(struct sbuf *b, const void *p, size_t n)
{
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->len < n)
			cap *= 2;
		b->p = realloc(b->p, cap);
		if (!b->p)
			abort();
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		abort();
	sb_put(b, tmp, (size_t)n);
}

/* A RESP array of bulk strings; lens NULL means C strings. */
static void sb_cmdn(struct sbuf *b, int argc, const char *const *argv, const size_t *lens)
{
	sb_printf(b, "*%d\r\n", argc);
	for (int i = 0; i < argc; i++) {
		size_t n = lens ? lens[i] : strlen(argv[i]);
		sb_printf(b, "$%zu\r\n", n);
		sb_put(b, argv[i], n);
		sb_put(b, "\r\n", 2);
	}
}

/* sb_cmd(b, "SET", "k", "v", NULL) */
static void sb_cmd(struct sbuf *b, ...)
{
	const char *argv[64];
	int argc = 0;
	va_list ap;
	va_start(ap, b);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
		argv[argc++] = a;
	va_end(ap);
	sb_cmdn(b, argc, argv, NULL);
}

static void sb_bulk(struct sbuf *b, const char *p, size_t n)
{
	sb_printf(b, "$%zu\r\n", n);
	sb_put(b, p, n);
	sb_put(b, "\r\n", 2);
}

/* ---- a client ----------------------------------------------------------
 * Functions return false (with errno-style detail in c->why) instead of
 * asserting, because client threads must not fail Criterion assertions:
 * only the test's own thread may.
 */

struct client {
	int fd;
	struct sbuf in; /* received, not yet consumed */
	char why[160];
};

static bool cl_open(struct client *c, int port)
{
	memset(c, 0, sizeof(*c));
	c->fd = try_connect(port);
	if (c->fd < 0) {
		snprintf(c->why, sizeof(c->why), "connect: %s", strerror(errno));
		return false;
	}
	return true;
}

static void cl_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->in.p);
	c->in = (struct sbuf){ 0 };
}

/* Read what is there (waiting up to the deadline for something).  0: EOF,
 * 1: got bytes, -1: timeout or error. */
static int cl_fill(struct client *c, double deadline)
{
	for (;;) {
		struct pollfd pfd = { c->fd, POLLIN, 0 };
		double left = deadline - now_sec();
		if (left <= 0) {
			snprintf(c->why, sizeof(c->why), "timed out waiting for the server");
			return -1;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		char tmp[65536];
		ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n > 0) {
			sb_put(&c->in, tmp, (size_t)n);
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR) {
			snprintf(c->why, sizeof(c->why), "recv: %s", strerror(errno));
			return -1;
		}
	}
}

/* Send everything, reading replies meanwhile so that neither side can
 * block the other on a full socket buffer. */
static bool cl_send(struct client *c, const void *p, size_t n)
{
	size_t sent = 0;
	double deadline = now_sec() + REPLY_SECONDS;
	while (sent < n) {
		struct pollfd pfd = { c->fd, POLLIN | POLLOUT, 0 };
		if (now_sec() > deadline) {
			snprintf(c->why, sizeof(c->why), "timed out sending");
			return false;
		}
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		if (pfd.revents & POLLOUT) {
			ssize_t k = send(c->fd, (const char *)p + sent, n - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k < 0 && errno != EAGAIN) {
				snprintf(c->why, sizeof(c->why), "send: %s", strerror(errno));
				return false;
			}
			if (k > 0)
				sent += (size_t)k;
		}
		if ((pfd.revents & POLLIN) && cl_fill(c, deadline) < 0)
			return false;
	}
	return true;
}

/* The length of the first complete reply in p[0..n), 0 if it is not all
 * there yet, -1 if it is not RESP. */
static long reply_len(const char *p, size_t n)
{
	const char *nl = n ? memchr(p, '\n', n) : NULL;
	if (!nl)
		return 0;
	size_t head = (size_t)(nl - p) + 1;
	long long v = atoll(p + 1);
	switch (p[0]) {
	case '+':
	case '-':
	case ':':
		return (long)head;
	case '$':
		if (v < 0)
			return (long)head;
		return n < head + (size_t)v + 2 ? 0 : (long)(head + (size_t)v + 2);
	case '*': {
		size_t off = head;
		for (long long i = 0; i < v; i++) {
			long r = reply_len(p + off, n - off);
			if (r <= 0)
				return r;
			off += (size_t)r;
		}
		return (long)off;
	}
	default:
		return -1;
	}
}

/* Take the next whole reply into *out (NUL-terminated, malloc'd). */
static bool cl_reply(struct client *c, char **out, size_t *len)
{
	double deadline = now_sec() + REPLY_SECONDS;
	long r;
	while ((r = reply_len(c->in.p, c->in.len)) == 0) {
		int f = cl_fill(c, deadline);
		if (f <= 0) {
			if (f == 0)
				snprintf(c->why, sizeof(c->why), "the server closed the connection");
			return false;
		}
	}
	if (r < 0) {
		snprintf(c->why, sizeof(c->why), "not a RESP reply: %.40s", c->in.p);
		return false;
	}
	*len = (size_t)r;
	*out = malloc(*len + 1);
	memcpy(*out, c->in.p, *len);
	(*out)[*len] = '\0';
	memmove(c->in.p, c->in.p + r, c->in.len - (size_t)r);
	c->in.len -= (size_t)r;
	return true;
}

/* Read exactly n bytes and compare them with want. */
static bool cl_expect(struct client *c, const char *want, size_t n)
{
	double deadline = now_sec() + REPLY_SECONDS;
	while (c->in.len < n) {
		int f = cl_fill(c, deadline);
		if (f <= 0) {
			snprintf(c->why, sizeof(c->why), "got %zu of %zu expected bytes%s", c->in.len, n,
				 f == 0 ? ", then EOF" : "");
			return false;
		}
	}
	if (memcmp(c->in.p, want, n) != 0) {
		size_t at = 0;
		while (c->in.p[at] == want[at])
			at++;
		snprintf(c->why, sizeof(c->why), "byte %zu differs: got \"%.*s\" want \"%.*s\"", at,
			 (int)(n - at < 40 ? n - at : 40), c->in.p + at, (int)(n - at < 40 ? n - at : 40), want + at);
		return false;
	}
	memmove(c->in.p, c->in.p + n, c->in.len - n);
	c->in.len -= n;
	return true;
}

/* The server closes this connection (after what was expected). */
static bool cl_expect_eof(struct client *c)
{
	double deadline = now_sec() + REPLY_SECONDS;
	int f;
	while ((f = cl_fill(c, deadline)) == 1)
		;
	if (f < 0)
		return false;
	if (c->in.len) {
		snprintf(c->why, sizeof(c->why), "%zu unexpected bytes before EOF: %.40s", c->in.len, c->in.p);
		return false;
	}
	return true;
}

/* Send raw bytes, expect exactly `want` back (main thread: asserts). */
static void raw(struct client *c, const char *req, const char *want)
{
	cr_assert(cl_send(c, req, strlen(req)), "%s", c->why);
	cr_assert(cl_expect(c, want, strlen(want)), "request \"%.60s\": %s", req, c->why);
}

/* Send one command (NULL-terminated arguments), expect `want`. */
static void cmd(struct client *c, const char *want, ...)
{
	const char *argv[64];
	int argc = 0;
	va_list ap;
	va_start(ap, want);
	for (const char *a; (a = va_arg(ap, const char *)) != NULL;)
		argv[argc++] = a;
	va_end(ap);
	struct sbuf b = { 0 };
	sb_cmdn(&b, argc, argv, NULL);
	cr_assert(cl_send(c, b.p, b.len), "%s", c->why);
	cr_assert(cl_expect(c, want, strlen(want)), "%s %s: %s", argv[0], argc > 1 ? argv[1] : "", c->why);
	free(b.p);
}

static void open_client(struct client *c, int port)
{
	cr_assert(cl_open(c, port), "%s", c->why);
}

/* ---- tests ------------------------------------------------------------- */

Test(kv_server, commands, .timeout = 60)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	struct client c;
	open_client(&c, s.port);

	cmd(&c, "+PONG\r\n", "PING", NULL);
	cmd(&c, "$5\r\nhello\r\n", "PING", "hello", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'ping' command\r\n", "PING", "a", "b", NULL);
	cmd(&c, "$6\r\nab\r\ncd\r\n", "ECHO", "ab\r\ncd", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'echo' command\r\n", "ECHO", NULL);
	cmd(&c, "$-1\r\n", "GET", "foo", NULL);
	cmd(&c, "+OK\r\n", "SET", "foo", "bar", NULL);
	cmd(&c, "$3\r\nbar\r\n", "GET", "foo", NULL);
	cmd(&c, "+OK\r\n", "set", "foo", "a longer value", NULL); /* names are case-insensitive */
	cmd(&c, "$14\r\na longer value\r\n", "gEt", "foo", NULL);
	cmd(&c, "-ERR syntax error\r\n", "SET", "foo", "x", "EX", "10", NULL);
	cmd(&c, "$14\r\na longer value\r\n", "GET", "foo", NULL);
	cmd(&c, ":2\r\n", "EXISTS", "foo", "foo", "nope", NULL); /* counts repeats, as Redis does */
	cmd(&c, ":1\r\n", "DEL", "foo", "nope", NULL);
	cmd(&c, ":0\r\n", "DEL", "foo", NULL);
	cmd(&c, "$-1\r\n", "GET", "foo", NULL);
	cmd(&c, ":0\r\n", "EXISTS", "foo", NULL);

	cmd(&c, ":1\r\n", "INCR", "n", NULL);
	cmd(&c, ":2\r\n", "INCR", "n", NULL);
	cmd(&c, "$1\r\n2\r\n", "GET", "n", NULL);
	cmd(&c, "+OK\r\n", "SET", "n", "41", NULL);
	cmd(&c, ":42\r\n", "INCR", "n", NULL);
	cmd(&c, "+OK\r\n", "SET", "n", "-5", NULL);
	cmd(&c, ":-4\r\n", "INCR", "n", NULL);
	const char *not_int[] = { "abc", "", " 1", "1 ", "+1", "007", "-0", "1.5", "99999999999999999999" };
	for (size_t i = 0; i < sizeof(not_int) / sizeof(not_int[0]); i++) {
		cmd(&c, "+OK\r\n", "SET", "n", not_int[i], NULL);
		cmd(&c, "-ERR value is not an integer or out of range\r\n", "INCR", "n", NULL);
	}
	cmd(&c, "+OK\r\n", "SET", "n", "9223372036854775806", NULL);
	cmd(&c, ":9223372036854775807\r\n", "INCR", "n", NULL);
	cmd(&c, "-ERR increment or decrement would overflow\r\n", "INCR", "n", NULL);
	cmd(&c, "+OK\r\n", "SET", "n", "-9223372036854775808", NULL);
	cmd(&c, ":-9223372036854775807\r\n", "INCR", "n", NULL);

	cmd(&c, "+OK\r\n", "MSET", "a", "1", "b", "22", "c", "333", NULL);
	cmd(&c, "*4\r\n$1\r\n1\r\n$2\r\n22\r\n$-1\r\n$3\r\n333\r\n", "MGET", "a", "b", "zz", "c", NULL);
	cmd(&c, "+OK\r\n", "MSET", "a", "x", "a", "y", NULL); /* the last one wins */
	cmd(&c, "$1\r\ny\r\n", "GET", "a", NULL);
	cmd(&c, ":3\r\n", "EXISTS", "a", "b", "c", "zz", NULL);

	cmd(&c, "-ERR wrong number of arguments for 'get' command\r\n", "GET", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'get' command\r\n", "GET", "a", "b", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'set' command\r\n", "SET", "a", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'mset' command\r\n", "MSET", "a", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'mset' command\r\n", "MSET", "a", "1", "b", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'mget' command\r\n", "MGET", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'del' command\r\n", "DEL", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'exists' command\r\n", "EXISTS", NULL);
	cmd(&c, "-ERR wrong number of arguments for 'incr' command\r\n", "INCR", "a", "b", NULL);
	cmd(&c, "-ERR unknown command 'FLUSHALL'\r\n", "FLUSHALL", NULL);
	cmd(&c, "-ERR unknown command 'A??B'\r\n", "A\r\nB", NULL); /* quoted bytes cannot break the line */
	cmd(&c, "$2\r\n22\r\n", "GET", "b", NULL); /* errors changed nothing */

	/* What redis-cli and redis-benchmark ask at start-up. */
	cmd(&c, "*0\r\n", "COMMAND", "DOCS", NULL);
	cmd(&c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n", "CONFIG", "GET", "save", NULL);
	cmd(&c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n", "CONFIG", "GET", "appendonly", NULL);
	cmd(&c, "*0\r\n", "CONFIG", "GET", "maxmemory", NULL);

	/* Inline commands, with \r\n or a bare \n; blank lines and empty
	 * arrays are no command at all. */
	raw(&c, "PING\r\n", "+PONG\r\n");
	raw(&c, "SET  inl\t12\r\nGET inl\n", "+OK\r\n$2\r\n12\r\n");
	raw(&c, "\r\n   \r\n*0\r\n*-1\r\nEXISTS inl\r\n", ":1\r\n");
	raw(&c, "get\r\n", "-ERR wrong number of arguments for 'get' command\r\n");

	cl_close(&c);
	server_stop(&s);
}

Test(kv_server, binary_safe_values, .timeout = 60)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	struct client c;
	open_client(&c, s.port);

	/* Every byte value, CR LF and NUL inside keys and values. */
	char key[] = "k\0\r\n\xff$*";
	size_t klen = sizeof(key) - 1;
	char all[256 + 6];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	memcpy(all + 256, "\r\n$3\r\n", 6);
	size_t big_len = (size_t)1 << 20;
	char *big = malloc(big_len);
	unsigned seed = 7;
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char)rand_r(&seed);

	struct sbuf req = { 0 }, want = { 0 };
	sb_cmdn(&req, 3, (const char *[]){ "SET", key, all }, (size_t[]){ 3, klen, sizeof(all) });
	sb_put(&want, "+OK\r\n", 5);
	sb_cmdn(&req, 2, (const char *[]){ "GET", key }, (size_t[]){ 3, klen });
	sb_bulk(&want, all, sizeof(all));
	sb_cmdn(&req, 3, (const char *[]){ "SET", "empty", "" }, (size_t[]){ 3, 5, 0 });
	sb_put(&want, "+OK\r\n", 5);
	sb_cmdn(&req, 3, (const char *[]){ "SET", "big", big }, (size_t[]){ 3, 3, big_len });
	sb_put(&want, "+OK\r\n", 5);
	sb_cmdn(&req, 4, (const char *[]){ "MGET", "empty", key, "big" }, (size_t[]){ 4, 5, klen, 3 });
	sb_put(&want, "*3\r\n$0\r\n\r\n", 10);
	sb_bulk(&want, all, sizeof(all));
	sb_bulk(&want, big, big_len);
	/* Shrinking a value in place. */
	sb_cmdn(&req, 3, (const char *[]){ "SET", "big", "\0" }, (size_t[]){ 3, 3, 1 });
	sb_put(&want, "+OK\r\n", 5);
	sb_cmdn(&req, 2, (const char *[]){ "GET", "big" }, (size_t[]){ 3, 3 });
	sb_bulk(&want, "\0", 1);
	sb_cmdn(&req, 3, (const char *[]){ "EXISTS", key, "k" }, (size_t[]){ 6, klen, 1 });
	sb_put(&want, ":1\r\n", 4);

	cr_assert(cl_send(&c, req.p, req.len), "%s", c.why);
	cr_assert(cl_expect(&c, want.p, want.len), "%s", c.why);
	free(req.p);
	free(want.p);
	free(big);
	cl_close(&c);
	server_stop(&s);
}

/* A deterministic pipeline of n rounds and the replies it must get. */
static void build_pipeline(struct sbuf *req, struct sbuf *want, const char *tag, int n)
{
	for (int i = 0; i < n; i++) {
		char k[64], v[64], k2[64];
		snprintf(k, sizeof(k), "%s:%d", tag, i);
		snprintf(v, sizeof(v), "value-%d-%s", i * 7, tag);
		sb_cmd(req, "SET", k, v, NULL);
		sb_put(want, "+OK\r\n", 5);
		sb_cmd(req, "INCR", tag, NULL);
		sb_printf(want, ":%d\r\n", i + 1);
		sb_cmd(req, "GET", k, NULL);
		sb_bulk(want, v, strlen(v));
		if (i % 3 == 0 && i > 0) {
			snprintf(k2, sizeof(k2), "%s:%d", tag, i - 1);
			sb_cmd(req, "DEL", k2, "nope", NULL);
			sb_put(want, ":1\r\n", 4);
			sb_cmd(req, "MGET", k, k2, NULL);
			sb_printf(want, "*2\r\n$%zu\r\n%s\r\n$-1\r\n", strlen(v), v);
			sb_cmd(req, "EXISTS", k, k2, k, NULL);
			sb_put(want, ":2\r\n", 4);
			/* Inline and RESP mixed in one pipeline. */
			sb_printf(req, "PING\r\n");
			sb_put(want, "+PONG\r\n", 7);
		}
	}
}

Test(kv_server, pipelines_in_order, .timeout = 90)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	struct client c;
	open_client(&c, s.port);

	/* One write of about 10000 commands: more than a batch, so replies
	 * must stay in order across batches too. */
	struct sbuf req = { 0 }, want = { 0 };
	build_pipeline(&req, &want, "p", 3000);
	cr_assert(cl_send(&c, req.p, req.len), "%s", c.why);
	cr_assert(cl_expect(&c, want.p, want.len), "%s", c.why);
	cl_close(&c);

	/* The same kind of stream cut at random places, with pauses so the
	 * server sees commands split across reads, even inside a length or a
	 * CRLF. */
	open_client(&c, s.port);
	req.len = want.len = 0;
	build_pipeline(&req, &want, "q", 150);
	unsigned seed = 99;
	for (size_t off = 0; off < req.len;) {
		size_t n = 1 + (size_t)rand_r(&seed) % 24;
		if (n > req.len - off)
			n = req.len - off;
		cr_assert(cl_send(&c, req.p + off, n), "%s", c.why);
		off += n;
		if (rand_r(&seed) % 4 == 0)
			usleep(300);
	}
	cr_assert(cl_expect(&c, want.p, want.len), "%s", c.why);

	/* Another connection sees what the first one wrote. */
	struct client d;
	open_client(&d, s.port);
	cmd(&d, "$9\r\nvalue-0-p\r\n", "GET", "p:0", NULL);
	cmd(&d, "$4\r\n3000\r\n", "GET", "p", NULL);
	free(req.p);
	free(want.p);
	cl_close(&c);
	cl_close(&d);
	server_stop(&s);
}

/* ---- concurrent clients ---------------------------------------------- */

struct worker {
	int port;
	int id;
	long rounds;
	const int *stop; /* when set, end early (the shutdown test) */
	bool ok;
	char why[200];
	long done;
};

static bool fail(struct worker *w, const char *what, const struct client *c)
{
	snprintf(w->why, sizeof(w->why), "client %d: %s: %s", w->id, what, c->why);
	w->ok = false;
	return false;
}

/* Parse ":n\r\n". */
static bool int_reply(const char *r, long long *v)
{
	char *e;
	if (r[0] != ':')
		return false;
	*v = strtoll(r + 1, &e, 10);
	return strcmp(e, "\r\n") == 0;
}

/* Pipelined batches of 16: INCR a shared counter (the values one connection
 * sees must grow, since its commands run in order), SET and GET its own
 * keys. */
static void *counter_client(void *p)
{
	struct worker *w = p;
	struct client c;
	w->ok = true;
	if (!cl_open(&c, w->port)) {
		fail(w, "connect", &c);
		return NULL;
	}
	long long last = 0;
	struct sbuf req = { 0 };
	for (long r = 0; r < w->rounds && w->ok; r++) {
		req.len = 0;
		char k[64], v[64];
		for (int j = 0; j < 4; j++) {
			snprintf(k, sizeof(k), "w%d:%d", w->id, j);
			snprintf(v, sizeof(v), "%ld-%d", r, j);
			sb_cmd(&req, "INCR", "shared", NULL);
			sb_cmd(&req, "SET", k, v, NULL);
			sb_cmd(&req, "INCR", "shared", NULL);
			sb_cmd(&req, "GET", k, NULL);
		}
		if (!cl_send(&c, req.p, req.len)) {
			fail(w, "send", &c);
			break;
		}
		for (int j = 0; j < 16 && w->ok; j++) {
			char *rep;
			size_t len;
			if (!cl_reply(&c, &rep, &len)) {
				fail(w, "reply", &c);
				break;
			}
			long long n = 0;
			char want[96];
			switch (j % 4) {
			case 0:
			case 2:
				if (!int_reply(rep, &n) || n <= last) {
					snprintf(w->why, sizeof(w->why), "client %d: INCR gave %s after %lld", w->id, rep,
						 last);
					w->ok = false;
				}
				last = n;
				break;
			case 1:
				if (strcmp(rep, "+OK\r\n") != 0) {
					snprintf(w->why, sizeof(w->why), "client %d: SET gave %s", w->id, rep);
					w->ok = false;
				}
				break;
			case 3:
				snprintf(v, sizeof(v), "%ld-%d", r, j / 4);
				snprintf(want, sizeof(want), "$%zu\r\n%s\r\n", strlen(v), v);
				if (strcmp(rep, want) != 0) {
					snprintf(w->why, sizeof(w->why), "client %d: GET gave %s, want %s", w->id, rep,
						 want);
					w->ok = false;
				}
				break;
			}
			free(rep);
		}
		w->done++;
	}
	free(req.p);
	cl_close(&c);
	return NULL;
}

Test(kv_server, concurrent_clients, .timeout = 120)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	enum { N = 8 };
	struct worker w[N];
	pthread_t t[N];
	long rounds = scaled(2000);
	for (int i = 0; i < N; i++) {
		w[i] = (struct worker){ .port = s.port, .id = i, .rounds = rounds };
		pthread_create(&t[i], NULL, counter_client, &w[i]);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		cr_assert(w[i].ok, "%s", w[i].why);
	}
	/* No increment was lost. */
	struct client c;
	open_client(&c, s.port);
	char want[64];
	long long total = (long long)N * rounds * 8;
	snprintf(want, sizeof(want), "$%d\r\n%lld\r\n", snprintf(NULL, 0, "%lld", total), total);
	cmd(&c, want, "GET", "shared", NULL);
	cl_close(&c);
	server_stop(&s);
}

/* ---- MSET atomicity -------------------------------------------------- */

#define ATOM_KEYS 8
static const char *const atom_keys[ATOM_KEYS] = { "atom:a", "atom:b", "atom:c", "atom:d",
						   "atom:e", "atom:f", "atom:g", "atom:h" };

/* Writers: MSET all keys to one value (now and then DEL them all), four
 * commands per pipeline. */
static void *atom_writer(void *p)
{
	struct worker *w = p;
	struct client c;
	w->ok = true;
	if (!cl_open(&c, w->port)) {
		fail(w, "connect", &c);
		return NULL;
	}
	struct sbuf req = { 0 };
	for (long r = 0; r < w->rounds && w->ok; r++) {
		req.len = 0;
		int expect_ok = 0, expect_del = 0;
		for (int j = 0; j < 4; j++) {
			char v[64];
			snprintf(v, sizeof(v), "writer%d-%ld-%d", w->id, r, j);
			if (w->id == 0 && r % 16 == 0 && j == 3) {
				sb_cmdn(&req, ATOM_KEYS + 1,
					(const char *[]){ "DEL", atom_keys[0], atom_keys[1], atom_keys[2], atom_keys[3],
							  atom_keys[4], atom_keys[5], atom_keys[6], atom_keys[7] },
					NULL);
				expect_del++;
				continue;
			}
			const char *argv[1 + 2 * ATOM_KEYS];
			argv[0] = "MSET";
			for (int k = 0; k < ATOM_KEYS; k++) {
				argv[1 + 2 * k] = atom_keys[k];
				argv[2 + 2 * k] = v;
			}
			sb_cmdn(&req, 1 + 2 * ATOM_KEYS, argv, NULL);
			expect_ok++;
		}
		if (!cl_send(&c, req.p, req.len)) {
			fail(w, "send", &c);
			break;
		}
		for (int j = 0; j < expect_ok + expect_del && w->ok; j++) {
			char *rep;
			size_t len;
			if (!cl_reply(&c, &rep, &len)) {
				fail(w, "reply", &c);
				break;
			}
			if (rep[0] != (j < 3 || !expect_del ? '+' : ':')) {
				snprintf(w->why, sizeof(w->why), "writer %d: reply %s", w->id, rep);
				w->ok = false;
			}
			free(rep);
		}
		w->done++;
	}
	free(req.p);
	cl_close(&c);
	return NULL;
}

/* Readers: MGET all keys; every reply must show one MSET whole (or none). */
static void *atom_reader(void *p)
{
	struct worker *w = p;
	struct client c;
	w->ok = true;
	if (!cl_open(&c, w->port)) {
		fail(w, "connect", &c);
		return NULL;
	}
	struct sbuf req = { 0 };
	const char *argv[1 + ATOM_KEYS] = { "MGET" };
	for (int k = 0; k < ATOM_KEYS; k++)
		argv[1 + k] = atom_keys[k];
	for (int j = 0; j < 4; j++)
		sb_cmdn(&req, 1 + ATOM_KEYS, argv, NULL);
	for (long r = 0; r < w->rounds && w->ok; r++) {
		if (!cl_send(&c, req.p, req.len)) {
			fail(w, "send", &c);
			break;
		}
		for (int j = 0; j < 4 && w->ok; j++) {
			char *rep;
			size_t len;
			if (!cl_reply(&c, &rep, &len)) {
				fail(w, "reply", &c);
				break;
			}
			/* "*8\r\n" then eight elements (bulks or nulls) that must
			 * all be the same bytes. */
			const char *first = strchr(rep, '\n') + 1, *q = first;
			long flen = reply_len(first, len - (size_t)(first - rep));
			for (int k = 0; k < ATOM_KEYS && w->ok; k++) {
				long el = reply_len(q, len - (size_t)(q - rep));
				if (strncmp(rep, "*8\r\n", 4) != 0 || el <= 0 || el != flen ||
				    memcmp(q, first, (size_t)el) != 0) {
					snprintf(w->why, sizeof(w->why), "reader %d: MGET saw a half-done MSET: %.150s",
						 w->id, rep);
					w->ok = false;
				}
				if (el > 0)
					q += el;
			}
			free(rep);
		}
		w->done++;
	}
	free(req.p);
	cl_close(&c);
	return NULL;
}

Test(kv_server, mset_is_atomic, .timeout = 120)
{
	/* Few shards and two workers: the keys share shards with each other
	 * and with everything else, so the readers race the writers hard. */
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", (const char *[]){ "-s", "5", "-w", "2", NULL });
	enum { W = 2, R = 3 };
	struct worker w[W + R];
	pthread_t t[W + R];
	for (int i = 0; i < W + R; i++) {
		w[i] = (struct worker){ .port = s.port, .id = i < W ? i : i - W, .rounds = scaled(3000) };
		pthread_create(&t[i], NULL, i < W ? atom_writer : atom_reader, &w[i]);
	}
	for (int i = 0; i < W + R; i++) {
		pthread_join(t[i], NULL);
		cr_assert(w[i].ok, "%s", w[i].why);
		cr_assert_eq(w[i].done, w[i].rounds);
	}
	server_stop(&s);
}

/* ---- malformed input ------------------------------------------------- */

struct bystander {
	int port;
	int stop;
	bool ok;
	char why[200];
	long rounds;
};

/* Keeps using its own connection while others send garbage. */
static void *bystander_main(void *p)
{
	struct bystander *b = p;
	struct client c;
	b->ok = cl_open(&c, b->port);
	struct sbuf req = { 0 }, want = { 0 };
	while (b->ok && !__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) {
		req.len = want.len = 0;
		char k[32], v[32];
		snprintf(k, sizeof(k), "by:%ld", b->rounds % 100);
		snprintf(v, sizeof(v), "v%ld", b->rounds);
		sb_cmd(&req, "SET", k, v, NULL);
		sb_put(&want, "+OK\r\n", 5);
		sb_cmd(&req, "GET", k, NULL);
		sb_bulk(&want, v, strlen(v));
		sb_cmd(&req, "INCR", "by:count", NULL);
		sb_printf(&want, ":%ld\r\n", b->rounds + 1);
		b->ok = cl_send(&c, req.p, req.len) && cl_expect(&c, want.p, want.len);
		b->rounds++;
	}
	if (!b->ok)
		snprintf(b->why, sizeof(b->why), "bystander, round %ld: %s", b->rounds, c.why);
	free(req.p);
	free(want.p);
	cl_close(&c);
	return NULL;
}

/* On a fresh connection: send req, expect exactly want, then the close. */
static void protocol_error(int port, const char *req, size_t len, const char *want)
{
	struct client c;
	open_client(&c, port);
	cr_assert(cl_send(&c, req, len), "%s", c.why);
	cr_assert(cl_expect(&c, want, strlen(want)), "request \"%.40s\": %s", req, c.why);
	cr_assert(cl_expect_eof(&c), "request \"%.40s\": %s", req, c.why);
	cl_close(&c);
}

Test(kv_server, malformed_input, .timeout = 120)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	struct bystander b = { .port = s.port };
	pthread_t t;
	pthread_create(&t, NULL, bystander_main, &b);

#define PE(req, want) protocol_error(s.port, req, sizeof(req) - 1, want)
	PE("*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n");
	PE("*3000000\r\n", "-ERR Protocol error: invalid multibulk length\r\n");
	PE("*1 \r\n", "-ERR Protocol error: invalid multibulk length\r\n");
	PE("*2\r\n$3\r\nGET\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n");
	PE("*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length\r\n");
	PE("*1\r\n$99999999999\r\n", "-ERR Protocol error: invalid bulk length\r\n");
	PE("*1\r\n$4\r\nPINGxx", "-ERR Protocol error: bulk data not followed by CRLF\r\n");
	/* Commands before the error are answered first, in order. */
	PE("PING\r\n*1\r\n$4\r\nPING\r\n*x\r\n", "+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n");
#undef PE
	/* An endless line or count: refused once it passes 64 KiB. */
	char *line = malloc(70000);
	memset(line, 'a', 70000);
	protocol_error(s.port, line, 70000, "-ERR Protocol error: too big inline request\r\n");
	line[0] = '*';
	memset(line + 1, '1', 70000 - 1);
	protocol_error(s.port, line, 70000, "-ERR Protocol error: too big mbulk count string\r\n");
	free(line);

	/* Random garbage, each on its own connection, then a half-close: the
	 * server answers what it can and closes the connection promptly, and
	 * never takes the bystander down with it. */
	unsigned seed = 4242;
	const char alphabet[] = "*$\r\n\r\n0123456789-GETSETMSETINCRDEL PING \t\0x\xff";
	long cases = scaled(300);
	for (long i = 0; i < cases; i++) {
		char junk[400];
		size_t n = 1 + (size_t)rand_r(&seed) % sizeof(junk);
		for (size_t j = 0; j < n; j++)
			junk[j] = rand_r(&seed) % 8 ? alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)]
						    : (char)rand_r(&seed);
		struct client c;
		open_client(&c, s.port);
		cr_assert(cl_send(&c, junk, n), "case %ld: %s", i, c.why);
		shutdown(c.fd, SHUT_WR);
		double deadline = now_sec() + REPLY_SECONDS;
		int f;
		while ((f = cl_fill(&c, deadline)) == 1)
			;
		cr_assert_eq(f, 0, "case %ld: the server kept the connection open: %s", i, c.why);
		/* Whatever came back is well-formed RESP. */
		size_t off = 0;
		long r;
		while (off < c.in.len && (r = reply_len(c.in.p + off, c.in.len - off)) > 0)
			off += (size_t)r;
		cr_assert_eq(off, c.in.len, "case %ld: malformed reply at byte %zu", i, off);
		cl_close(&c);
	}

	__atomic_store_n(&b.stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	cr_assert(b.ok, "%s", b.why);
	cr_assert_gt(b.rounds, 0);
	server_stop(&s);
}

/* ---- shutdown -------------------------------------------------------- */

/* Pipelines until the server goes away (an error then is expected). */
static void *busy_client(void *p)
{
	struct worker *w = p;
	struct client c;
	w->ok = cl_open(&c, w->port);
	struct sbuf req = { 0 };
	for (int j = 0; j < 32; j++) {
		char k[32];
		snprintf(k, sizeof(k), "busy:%d:%d", w->id, j);
		sb_cmd(&req, "SET", k, "some value", NULL);
		sb_cmd(&req, "MGET", k, "busy:0:0", "busy:1:1", NULL);
	}
	while (w->ok && !__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
		char *rep;
		size_t len;
		if (!cl_send(&c, req.p, req.len))
			break;
		for (int j = 0; j < 64; j++) {
			if (!cl_reply(&c, &rep, &len))
				goto out;
			free(rep);
		}
		w->done++;
	}
out:
	free(req.p);
	cl_close(&c);
	return NULL;
}

Test(kv_server, sigint_under_load, .timeout = 60)
{
	struct server s;
	server_start(&s, "WEFT_KV_SERVER", NULL);
	enum { N = 4 };
	int stop = 0;
	struct worker w[N];
	pthread_t t[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct worker){ .port = s.port, .id = i, .stop = &stop };
		pthread_create(&t[i], NULL, busy_client, &w[i]);
	}
	/* Also an idle connection, and one halfway through a 1 MiB value, so
	 * the stop cancels recvs with and without a partial command. */
	struct client idle, partial;
	open_client(&idle, s.port);
	open_client(&partial, s.port);
	const char *head = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n";
	char *half = calloc(1, 1 << 19);
	cr_assert(cl_send(&partial, head, strlen(head)), "%s", partial.why);
	cr_assert(cl_send(&partial, half, 1 << 19), "%s", partial.why);
	double until = now_sec() + 10;
	for (int i = 0; i < N; i++)
		while (__atomic_load_n(&w[i].done, __ATOMIC_RELAXED) < 3 && now_sec() < until)
			usleep(1000);
	server_stop(&s); /* while the clients still send */
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		cr_assert(w[i].ok, "client %d could not connect", i);
		cr_assert_geq(w[i].done, 3, "client %d got no replies before the stop", i);
	}
	free(half);
	cl_close(&idle);
	cl_close(&partial);
}

Test(kv_server, bad_arguments, .timeout = 30)
{
	/* Bad flags or a bad port: a message and a non-zero exit, never a
	 * server listening somewhere unexpected. */
	const char *cases[][4] = { { "-s", "0", NULL }, { "-s", "65", NULL }, { "-w", "x", NULL },
				   { "-q", NULL }, { "notaport", NULL }, { "1", "2", "3", NULL } };
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int st = server_run_args("WEFT_KV_SERVER", cases[i]);
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 127, "case %zu: status %d", i,
			  st);
	}
}
