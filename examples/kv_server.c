/*
 * kv_server.c: a key-value server that speaks a subset of Redis's RESP2
 * (PING ECHO GET SET DEL INCR MGET MSET EXISTS, plus enough of COMMAND
 * and CONFIG GET for redis-cli and redis-benchmark), built on weft.
 *
 * Each connection is a chain of I/O callbacks (recv, parse, run, send),
 * each an ordinary task on some worker.  The key space is split over S
 * shards, and each shard is a weft component: a batch of pipelined commands
 * runs as one weft_spawn_with task holding the union of its commands'
 * shards (READ for GET/MGET/EXISTS, WRITE for SET/DEL/INCR/MSET).  So
 * batches on different shards run in parallel, a batch's replies come out
 * in request order, and a multi-key MSET is atomic with respect to every
 * other command.  docs/kv_server.md walks through the design.
 *
 *   kv_server [-s shards] [-w workers] [port [bind-address]]
 *
 * port 0 (the default) picks a free port; bind-address defaults to
 * 127.0.0.1; workers default to $WEFT_WORKERS, else one per CPU.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <weft.h>

/* The listening socket, the accept loop, the stop signals. */
#include "server.h"

/* At most one component per shard in a request, so whatever keys a command
 * or a batch names, its shards fit one weft_spawn_with, and one uint64_t
 * bit mask describes them. */
#define MAX_SHARDS WEFT_MAX_DEPS
_Static_assert(MAX_SHARDS <= 64, "shard sets are uint64_t masks");

/* Commands per batch: bounds a batch's task (and what it holds) when a
 * client pipelines a lot; the rest waits for the next batch. */
#define MAX_BATCH 1024
/* Redis's own limits on what a request may announce. */
#define MAX_INLINE (64 * 1024)
#define MAX_MULTIBULK (1024 * 1024)
#define MAX_BULK (512LL * 1024 * 1024)
/* Buffer sizes: start small, grow for big requests or replies, and give
 * the memory back once a connection is back to small ones. */
#define BUF_MIN (16 * 1024)
#define BUF_SHRINK (1024 * 1024)

/* ---- shard storage: one open-addressing table per shard ---------------- */

struct item {
	uint32_t klen, vlen;
	char data[]; /* key, then value */
};

struct slot {
	uint64_t hash;
	struct item *it; /* NULL: empty */
};

/* Aligned so that two workers writing two shards never share a line. */
struct shard {
	struct slot *slots;
	size_t mask; /* capacity - 1 (a power of two) */
	size_t count;
	uint32_t comp; /* the weft component guarding this shard */
} __attribute__((aligned(64)));

static struct shard shards[MAX_SHARDS];
static unsigned nshards = 64;

static uint64_t rd64(const char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

/* A small multiply-xorshift hash; the top half picks the shard, the bottom
 * half the slot, so a shard's keys still spread over its whole table. */
static uint64_t hash_key(const char *p, size_t n)
{
	const uint64_t k = 0x9e3779b97f4a7c15ull;
	uint64_t h = k ^ (n * 0xff51afd7ed558ccdull);
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		h = (h ^ rd64(p + i)) * k;
		h ^= h >> 29;
	}
	uint64_t tail = 0;
	for (size_t j = 0; i + j < n; j++)
		tail |= (uint64_t)(unsigned char)p[i + j] << (8 * j);
	h = (h ^ tail) * k;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static struct shard *shard_of(uint64_t h)
{
	return &shards[(h >> 32) % nshards];
}

/* The slot holding key, or the empty slot where it would go. */
static struct slot *shard_lookup(struct shard *s, uint64_t h, const char *key, size_t klen)
{
	for (size_t i = h & s->mask;; i = (i + 1) & s->mask) {
		struct slot *sl = &s->slots[i];
		if (!sl->it)
			return sl;
		if (sl->hash == h && sl->it->klen == klen && memcmp(sl->it->data, key, klen) == 0)
			return sl;
	}
}

static bool shard_grow(struct shard *s)
{
	size_t cap = (s->mask + 1) * 2;
	struct slot *ns = calloc(cap, sizeof(*ns));
	if (!ns)
		return false;
	for (size_t i = 0; i <= s->mask; i++) {
		if (!s->slots[i].it)
			continue;
		size_t j = s->slots[i].hash & (cap - 1);
		while (ns[j].it)
			j = (j + 1) & (cap - 1);
		ns[j] = s->slots[i];
	}
	free(s->slots);
	s->slots = ns;
	s->mask = cap - 1;
	return true;
}

/* Set key to value.  0, or -ENOMEM with the shard unchanged. */
static int shard_set(struct shard *s, uint64_t h, const char *key, size_t klen, const char *val, size_t vlen)
{
	struct slot *sl = shard_lookup(s, h, key, klen);
	if (sl->it) {
		if (sl->it->vlen != vlen) {
			struct item *it = realloc(sl->it, sizeof(*it) + klen + vlen);
			if (!it)
				return -ENOMEM;
			it->vlen = (uint32_t)vlen;
			sl->it = it;
		}
		memcpy(sl->it->data + klen, val, vlen);
		return 0;
	}
	/* A new key: keep the load under 3/4 so probes stay short.  If the
	 * table cannot grow it still works, up to one free slot. */
	if ((s->count + 1) * 4 > (s->mask + 1) * 3) {
		if (!shard_grow(s) && s->count + 1 >= s->mask)
			return -ENOMEM;
		sl = shard_lookup(s, h, key, klen);
	}
	struct item *it = malloc(sizeof(*it) + klen + vlen);
	if (!it)
		return -ENOMEM;
	it->klen = (uint32_t)klen;
	it->vlen = (uint32_t)vlen;
	memcpy(it->data, key, klen);
	memcpy(it->data + klen, val, vlen);
	sl->hash = h;
	sl->it = it;
	s->count++;
	return 0;
}

/* Remove key; true if it was there.  Backward-shift deletion: entries
 * after the hole move into it when that is still on their probe path, so
 * the table needs no tombstones. */
static bool shard_del(struct shard *s, uint64_t h, const char *key, size_t klen)
{
	struct slot *sl = shard_lookup(s, h, key, klen);
	if (!sl->it)
		return false;
	free(sl->it);
	size_t hole = (size_t)(sl - s->slots);
	for (size_t j = (hole + 1) & s->mask; s->slots[j].it; j = (j + 1) & s->mask) {
		size_t home = s->slots[j].hash & s->mask;
		/* j's entry may move back to the hole if the hole lies between
		 * its home slot and j (cyclically). */
		if (((j - home) & s->mask) >= ((j - hole) & s->mask)) {
			s->slots[hole] = s->slots[j];
			hole = j;
		}
	}
	s->slots[hole].it = NULL;
	s->count--;
	return true;
}

/* ---- commands ---------------------------------------------------------- */

enum op {
	OP_PING,
	OP_ECHO,
	OP_GET,
	OP_SET,
	OP_DEL,
	OP_INCR,
	OP_MGET,
	OP_MSET,
	OP_EXISTS,
	OP_COMMAND,
	OP_CONFIG,
	OP_UNKNOWN, /* not a command we know */
	OP_ARITY,   /* wrong number of arguments */
};

struct cmd_info {
	const char *name;
	enum op op;
	int arity;     /* as in Redis: n exactly, -n at least n (the name counts) */
	int first_key; /* 0: no keys */
	int last_key;  /* -1: the last argument */
	int key_step;
	bool write;
};

static const struct cmd_info cmd_table[] = {
	{ "ping", OP_PING, -1, 0, 0, 0, false },
	{ "echo", OP_ECHO, 2, 0, 0, 0, false }, /* redis-cli --pipe ends its stream with one */
	{ "get", OP_GET, 2, 1, 1, 1, false },
	{ "set", OP_SET, -3, 1, 1, 1, true },
	{ "del", OP_DEL, -2, 1, -1, 1, true },
	{ "incr", OP_INCR, 2, 1, 1, 1, true },
	{ "mget", OP_MGET, -2, 1, -1, 1, false },
	{ "mset", OP_MSET, -3, 1, -1, 2, true },
	{ "exists", OP_EXISTS, -2, 1, -1, 1, false },
	{ "command", OP_COMMAND, -1, 0, 0, 0, false },
	{ "config", OP_CONFIG, -2, 0, 0, 0, false },
};
#define NCMDS (sizeof(cmd_table) / sizeof(cmd_table[0]))

/* An argument points into the connection's input buffer, which stays put
 * until the batch that uses it has been answered. */
struct arg {
	const char *p;
	size_t len;
	uint64_t hash; /* keys only */
};

struct cmd {
	const struct cmd_info *info; /* NULL: unknown */
	uint32_t arg0;               /* index of the name in conn.args */
	uint32_t argc;
	enum op op;
};

/* ---- connections ------------------------------------------------------- */

struct conn {
	int fd;
	bool closing; /* a protocol error: close once the replies before it are out */
	bool oom;     /* a reply could not be buffered: close without sending */

	char *in; /* received bytes: [0, in_pos) parsed, [in_pos, in_end) not yet */
	size_t in_cap, in_pos, in_end;
	size_t in_need; /* bytes from in_pos the incomplete command needs, if known */

	char *out; /* replies of the current batch */
	size_t out_cap, out_len, out_sent;

	/* The current batch. */
	struct cmd *cmds;
	size_t ncmds, cmds_cap;
	struct arg *args;
	size_t nargs, args_cap;
	uint64_t rmask, wmask;           /* shards the batch reads, writes */
	struct weft_dep deps[MAX_SHARDS];
	char proto_err[96];              /* "" or the error that ends the connection */
};

static weft_rt *rt;
static uint64_t total_conns, total_cmds, total_bytes_in, total_bytes_out;
static int64_t live_conns;

static void on_recv(int res, void *ctx);
static void on_send(int res, void *ctx);
static void conn_next(struct conn *c);

static void conn_close(struct conn *c)
{
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c->cmds);
	free(c->args);
	free(c);
	__atomic_fetch_sub(&live_conns, 1, __ATOMIC_RELAXED);
}

/* ---- building replies -------------------------------------------------- */

static bool out_reserve(struct conn *c, size_t n)
{
	if (c->oom)
		return false;
	if (c->out_cap - c->out_len >= n)
		return true;
	size_t cap = c->out_cap * 2;
	while (cap - c->out_len < n)
		cap *= 2;
	char *p = realloc(c->out, cap);
	if (!p) {
		c->oom = true;
		return false;
	}
	c->out = p;
	c->out_cap = cap;
	return true;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
	if (out_reserve(c, n)) {
		memcpy(c->out + c->out_len, p, n);
		c->out_len += n;
	}
}

static void out_str(struct conn *c, const char *s)
{
	out_put(c, s, strlen(s));
}

/* ":n\r\n", "*n\r\n" or "$n\r\n": a type byte and a decimal number. */
static void out_num(struct conn *c, char type, long long v)
{
	char buf[24], *e = buf + sizeof(buf), *p = e;
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
	*--p = '\n';
	*--p = '\r';
	do
		*--p = (char)('0' + u % 10);
	while ((u /= 10) != 0);
	if (v < 0)
		*--p = '-';
	*--p = type;
	out_put(c, p, (size_t)(e - p));
}

static void out_bulk(struct conn *c, const char *p, size_t n)
{
	out_num(c, '$', (long long)n);
	if (out_reserve(c, n + 2)) {
		memcpy(c->out + c->out_len, p, n);
		memcpy(c->out + c->out_len + n, "\r\n", 2);
		c->out_len += n + 2;
	}
}

static void out_null(struct conn *c)
{
	out_str(c, "$-1\r\n");
}

/* An error that quotes client bytes: printable ASCII only, so no byte of
 * it can end the error line early. */
static void out_err_quoting(struct conn *c, const char *pre, const char *p, size_t n, const char *post)
{
	char buf[64];
	size_t m = n < sizeof(buf) ? n : sizeof(buf);
	for (size_t i = 0; i < m; i++)
		buf[i] = isprint((unsigned char)p[i]) ? p[i] : '?';
	out_str(c, pre);
	out_put(c, buf, m);
	out_str(c, post);
}

/* ---- running commands (on a worker holding the batch's shards) ---------- */

/* Redis's string2ll: an optional '-', no leading zeros or spaces, no '+',
 * and it must fit a long long. */
static bool parse_ll(const char *p, size_t n, long long *out)
{
	if (n == 0 || n > 20)
		return false;
	if (n == 1 && p[0] == '0') {
		*out = 0;
		return true;
	}
	bool neg = p[0] == '-';
	size_t i = neg;
	if (i == n || p[i] < '1' || p[i] > '9')
		return false;
	unsigned long long v = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (ULLONG_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (neg) {
		if (v > (unsigned long long)LLONG_MAX + 1)
			return false;
		*out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
	} else {
		if (v > (unsigned long long)LLONG_MAX)
			return false;
		*out = (long long)v;
	}
	return true;
}

static bool arg_is(const struct arg *a, const char *s)
{
	return a->len == strlen(s) && strncasecmp(a->p, s, a->len) == 0;
}

static struct item *get_item(const struct arg *k)
{
	return shard_lookup(shard_of(k->hash), k->hash, k->p, k->len)->it;
}

static void exec_incr(struct conn *c, const struct arg *k)
{
	struct item *it = get_item(k);
	long long v = 0;
	if (it && !parse_ll(it->data + it->klen, it->vlen, &v)) {
		out_str(c, "-ERR value is not an integer or out of range\r\n");
		return;
	}
	if (v == LLONG_MAX) {
		out_str(c, "-ERR increment or decrement would overflow\r\n");
		return;
	}
	v++;
	char buf[24];
	int n = snprintf(buf, sizeof(buf), "%lld", v);
	if (shard_set(shard_of(k->hash), k->hash, k->p, k->len, buf, (size_t)n) < 0)
		out_str(c, "-ERR out of memory\r\n");
	else
		out_num(c, ':', v);
}

static void exec_config(struct conn *c, const struct arg *a, uint32_t argc)
{
	/* redis-benchmark asks for "save" and "appendonly" to describe the
	 * server; answer like a Redis without persistence. */
	if (!arg_is(&a[1], "get") || argc < 3) {
		out_str(c, "-ERR only CONFIG GET <parameter> is supported\r\n");
		return;
	}
	static const char *const known[][2] = { { "save", "" }, { "appendonly", "no" } };
	bool found[2] = { false, false };
	int nfound = 0;
	for (uint32_t i = 2; i < argc; i++) {
		for (int j = 0; j < 2; j++) {
			if (!found[j] && arg_is(&a[i], known[j][0])) {
				found[j] = true;
				nfound++;
			}
		}
	}
	out_num(c, '*', 2 * nfound);
	for (int j = 0; j < 2; j++)
		if (found[j]) {
			out_bulk(c, known[j][0], strlen(known[j][0]));
			out_bulk(c, known[j][1], strlen(known[j][1]));
		}
}

static void exec_cmd(struct conn *c, const struct cmd *cmd)
{
	const struct arg *a = c->args + cmd->arg0;
	uint32_t argc = cmd->argc;
	long long n = 0;
	struct item *it;
	switch (cmd->op) {
	case OP_PING:
		if (argc == 1)
			out_str(c, "+PONG\r\n");
		else if (argc == 2)
			out_bulk(c, a[1].p, a[1].len);
		else
			out_str(c, "-ERR wrong number of arguments for 'ping' command\r\n");
		break;
	case OP_ECHO:
		out_bulk(c, a[1].p, a[1].len);
		break;
	case OP_GET:
		it = get_item(&a[1]);
		if (it)
			out_bulk(c, it->data + it->klen, it->vlen);
		else
			out_null(c);
		break;
	case OP_SET:
		if (argc != 3) /* no EX/PX/NX/XX here */
			out_str(c, "-ERR syntax error\r\n");
		else if (shard_set(shard_of(a[1].hash), a[1].hash, a[1].p, a[1].len, a[2].p, a[2].len) < 0)
			out_str(c, "-ERR out of memory\r\n");
		else
			out_str(c, "+OK\r\n");
		break;
	case OP_DEL:
		for (uint32_t i = 1; i < argc; i++)
			n += shard_del(shard_of(a[i].hash), a[i].hash, a[i].p, a[i].len);
		out_num(c, ':', n);
		break;
	case OP_INCR:
		exec_incr(c, &a[1]);
		break;
	case OP_MGET:
		out_num(c, '*', argc - 1);
		for (uint32_t i = 1; i < argc; i++) {
			it = get_item(&a[i]);
			if (it)
				out_bulk(c, it->data + it->klen, it->vlen);
			else
				out_null(c);
		}
		break;
	case OP_MSET:
		for (uint32_t i = 1; i + 1 < argc; i += 2)
			if (shard_set(shard_of(a[i].hash), a[i].hash, a[i].p, a[i].len, a[i + 1].p, a[i + 1].len) < 0)
				n = 1;
		out_str(c, n ? "-ERR out of memory\r\n" : "+OK\r\n");
		break;
	case OP_EXISTS:
		for (uint32_t i = 1; i < argc; i++)
			n += get_item(&a[i]) != NULL;
		out_num(c, ':', n);
		break;
	case OP_COMMAND:
		/* redis-cli asks for COMMAND DOCS to offer hints; an empty
		 * answer just means no hints. */
		if (argc == 2 && arg_is(&a[1], "count"))
			out_num(c, ':', (long long)NCMDS);
		else
			out_str(c, "*0\r\n");
		break;
	case OP_CONFIG:
		exec_config(c, a, argc);
		break;
	case OP_UNKNOWN:
		out_err_quoting(c, "-ERR unknown command '", a[0].p, a[0].len, "'\r\n");
		break;
	case OP_ARITY:
		out_str(c, "-ERR wrong number of arguments for '");
		out_str(c, cmd->info->name);
		out_str(c, "' command\r\n");
		break;
	}
}

static void conn_send(struct conn *c)
{
	/* MSG_NOSIGNAL: a peer that went away is an error result, not SIGPIPE. */
	if (weft_io_send(rt, c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL, on_send, c) < 0)
		conn_close(c);
}

/* Run every command of the batch in order, then send all replies at once.
 * As a weft_spawn_with task this holds the batch's shards: nothing else
 * touches them until it returns. */
static void run_batch(void *arg)
{
	struct conn *c = arg;
	for (size_t i = 0; i < c->ncmds; i++)
		exec_cmd(c, &c->cmds[i]);
	__atomic_fetch_add(&total_cmds, c->ncmds, __ATOMIC_RELAXED);
	if (c->proto_err[0]) {
		out_str(c, c->proto_err);
		c->closing = true;
	}
	if (c->oom) {
		conn_close(c);
		return;
	}
	c->out_sent = 0;
	conn_send(c);
}

/* ---- parsing ----------------------------------------------------------- */

enum parse_result { PARSED, INCOMPLETE, BAD };

static bool push_arg(struct conn *c, const char *p, size_t len)
{
	if (c->nargs == c->args_cap) {
		size_t cap = c->args_cap ? c->args_cap * 2 : 64;
		struct arg *a = realloc(c->args, cap * sizeof(*a));
		if (!a)
			return false;
		c->args = a;
		c->args_cap = cap;
	}
	c->args[c->nargs++] = (struct arg){ p, len, 0 };
	return true;
}

static enum parse_result bad(struct conn *c, const char *msg)
{
	snprintf(c->proto_err, sizeof(c->proto_err), "-ERR Protocol error: %s\r\n", msg);
	return BAD;
}

/* "*N\r\n" followed by N times "$len\r\n<len bytes>\r\n". */
static enum parse_result parse_multibulk(struct conn *c, const char *p, const char *end, const char **next)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl)
		return end - p > MAX_INLINE ? bad(c, "too big mbulk count string") : INCOMPLETE;
	long long count;
	if (nl[-1] != '\r' || !parse_ll(p + 1, (size_t)(nl - 1 - (p + 1)), &count) || count > MAX_MULTIBULK)
		return bad(c, "invalid multibulk length");
	const char *q = nl + 1;
	for (long long i = 0; i < count; i++) {
		if (q == end)
			return INCOMPLETE;
		if (*q != '$') {
			char msg[40];
			snprintf(msg, sizeof(msg), "expected '$', got '%c'", isprint((unsigned char)*q) ? *q : '?');
			return bad(c, msg);
		}
		nl = memchr(q, '\n', (size_t)(end - q));
		if (!nl)
			return end - q > MAX_INLINE ? bad(c, "too big bulk count string") : INCOMPLETE;
		long long len;
		if (nl[-1] != '\r' || !parse_ll(q + 1, (size_t)(nl - 1 - (q + 1)), &len) || len < 0 || len > MAX_BULK)
			return bad(c, "invalid bulk length");
		const char *data = nl + 1;
		if (end - data < len + 2) {
			/* Tell the reader how big the buffer must get. */
			c->in_need = (size_t)(data + len + 2 - (c->in + c->in_pos));
			return INCOMPLETE;
		}
		if (data[len] != '\r' || data[len + 1] != '\n')
			return bad(c, "bulk data not followed by CRLF");
		if (!push_arg(c, data, (size_t)len)) {
			c->oom = true;
			return BAD;
		}
		q = data + len + 2;
	}
	*next = q;
	return PARSED;
}

/* An inline command: one line, arguments separated by blanks (no quoting). */
static enum parse_result parse_inline(struct conn *c, const char *p, const char *end, const char **next)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl)
		return end - p > MAX_INLINE ? bad(c, "too big inline request") : INCOMPLETE;
	const char *e = nl > p && nl[-1] == '\r' ? nl - 1 : nl;
	while (p < e) {
		while (p < e && (*p == ' ' || *p == '\t'))
			p++;
		const char *s = p;
		while (p < e && *p != ' ' && *p != '\t')
			p++;
		if (p > s && !push_arg(c, s, (size_t)(p - s))) {
			c->oom = true;
			return BAD;
		}
	}
	*next = nl + 1;
	return PARSED;
}

/* Name the command whose arguments are args[arg0..], hash its keys and add
 * its shards to the batch. */
static bool add_cmd(struct conn *c, size_t arg0)
{
	if (c->ncmds == c->cmds_cap) {
		size_t cap = c->cmds_cap ? c->cmds_cap * 2 : 32;
		struct cmd *m = realloc(c->cmds, cap * sizeof(*m));
		if (!m)
			return false;
		c->cmds = m;
		c->cmds_cap = cap;
	}
	struct cmd *cmd = &c->cmds[c->ncmds++];
	struct arg *a = c->args + arg0;
	int argc = (int)(c->nargs - arg0);
	cmd->arg0 = (uint32_t)arg0;
	cmd->argc = (uint32_t)argc;
	cmd->info = NULL;
	cmd->op = OP_UNKNOWN;
	for (size_t i = 0; i < NCMDS; i++)
		if (arg_is(&a[0], cmd_table[i].name))
			cmd->info = &cmd_table[i];
	const struct cmd_info *ci = cmd->info;
	if (!ci)
		return true;
	if ((ci->arity > 0 && argc != ci->arity) || (ci->arity < 0 && argc < -ci->arity) ||
	    (ci->op == OP_MSET && argc % 2 == 0)) {
		cmd->op = OP_ARITY;
		return true;
	}
	cmd->op = ci->op;
	if (!ci->first_key)
		return true;
	int last = ci->last_key < 0 ? argc - 1 : ci->last_key;
	for (int i = ci->first_key; i <= last; i += ci->key_step) {
		a[i].hash = hash_key(a[i].p, a[i].len);
		uint64_t bit = 1ull << (shard_of(a[i].hash) - shards);
		if (ci->write)
			c->wmask |= bit;
		else
			c->rmask |= bit;
	}
	return true;
}

/* Parse as many complete commands as the buffer holds (up to MAX_BATCH)
 * into the batch.  Stops at the first protocol error, which is answered
 * after the commands before it. */
static void parse_batch(struct conn *c)
{
	c->ncmds = c->nargs = 0;
	c->rmask = c->wmask = 0;
	c->in_need = 0;
	while (c->ncmds < MAX_BATCH && c->in_pos < c->in_end) {
		const char *p = c->in + c->in_pos, *end = c->in + c->in_end, *next = p;
		size_t arg0 = c->nargs;
		enum parse_result r = *p == '*' ? parse_multibulk(c, p, end, &next) : parse_inline(c, p, end, &next);
		if (r != PARSED) {
			c->nargs = arg0;
			if (r == BAD)
				c->in_pos = c->in_end; /* nothing after a protocol error is read */
			return;
		}
		c->in_pos = (size_t)(next - c->in);
		/* "*0\r\n" and blank lines are no command, as in Redis. */
		if (c->nargs > arg0 && !add_cmd(c, arg0)) {
			c->oom = true;
			return;
		}
	}
}

/* ---- the connection's cycle: recv, parse, run, send --------------------- */

/* Make room for the next recv: drop what was parsed, grow for a command
 * that does not fit, shrink after a big one. */
static bool in_make_room(struct conn *c)
{
	size_t left = c->in_end - c->in_pos;
	if (c->in_pos > 0) {
		memmove(c->in, c->in + c->in_pos, left);
		c->in_pos = 0;
		c->in_end = left;
	}
	size_t want = c->in_cap;
	if (want > BUF_SHRINK && left < BUF_MIN / 2 && c->in_need < BUF_MIN / 2)
		want = BUF_MIN;
	if (c->in_need > want)
		want = c->in_need;
	if (want - left < BUF_MIN / 4)
		want *= 2;
	if (want != c->in_cap) {
		char *p = realloc(c->in, want);
		if (!p)
			return false;
		c->in = p;
		c->in_cap = want;
	}
	return true;
}

static void conn_recv(struct conn *c)
{
	if (!in_make_room(c) ||
	    weft_io_recv(rt, c->fd, c->in + c->in_end, c->in_cap - c->in_end, 0, on_recv, c) < 0)
		conn_close(c);
}

/* The next batch, if the buffer holds one; otherwise read more. */
static void conn_next(struct conn *c)
{
	c->proto_err[0] = '\0';
	parse_batch(c);
	if (c->oom) {
		conn_close(c);
		return;
	}
	if (c->ncmds == 0 && !c->proto_err[0]) {
		conn_recv(c);
		return;
	}
	uint64_t all = c->rmask | c->wmask;
	if (!all) { /* PING, errors, ...: no shard to wait for */
		run_batch(c);
		return;
	}
	size_t n = 0;
	for (unsigned s = 0; s < nshards; s++)
		if (all & (1ull << s))
			c->deps[n++] = (struct weft_dep){ shards[s].comp, (c->wmask >> s) & 1 ? WEFT_WRITE : WEFT_READ };
	/* deps lives in the connection, which outlives the request. */
	if (weft_spawn_with(rt, c->deps, n, run_batch, c) < 0)
		conn_close(c);
}

static void on_recv(int res, void *ctx)
{
	struct conn *c = ctx;
	if (res <= 0) { /* 0: the peer closed; -ECANCELED: weft_destroy; else a socket error */
		conn_close(c);
		return;
	}
	__atomic_fetch_add(&total_bytes_in, (uint64_t)res, __ATOMIC_RELAXED);
	c->in_end += (size_t)res;
	conn_next(c);
}

static void on_send(int res, void *ctx)
{
	struct conn *c = ctx;
	if (res < 0) {
		conn_close(c);
		return;
	}
	__atomic_fetch_add(&total_bytes_out, (uint64_t)res, __ATOMIC_RELAXED);
	c->out_sent += (size_t)res;
	if (c->out_sent < c->out_len) {
		conn_send(c); /* a short send: the rest first, so replies stay in order */
		return;
	}
	if (c->closing) {
		conn_close(c);
		return;
	}
	c->out_len = c->out_sent = 0;
	if (c->out_cap > BUF_SHRINK) {
		char *p = realloc(c->out, BUF_MIN);
		if (p) {
			c->out = p;
			c->out_cap = BUF_MIN;
		}
	}
	conn_next(c);
}

/* A new connection, from the accept loop in server.h. */
static void on_conn(int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c) {
		c->in = malloc(BUF_MIN);
		c->out = malloc(BUF_MIN);
	}
	if (!c || !c->in || !c->out) {
		if (c) {
			free(c->in);
			free(c->out);
		}
		free(c);
		close(fd);
		return;
	}
	c->fd = fd;
	c->in_cap = c->out_cap = BUF_MIN;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* replies go out at once */
	__atomic_fetch_add(&live_conns, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&total_conns, 1, __ATOMIC_RELAXED);
	conn_recv(c);
}

/* ---- start-up and shutdown --------------------------------------------- */

static void usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s [-s shards] [-w workers] [port [bind-address]]\n"
		"  -s  shards, 1..%d (default 64)\n"
		"  -w  workers (default $WEFT_WORKERS, else one per CPU)\n",
		prog, MAX_SHARDS);
}

static bool parse_uint(const char *s, unsigned lo, unsigned hi, unsigned *out)
{
	char *e;
	errno = 0;
	unsigned long v = strtoul(s, &e, 10);
	if (errno || e == s || *e || v < lo || v > hi)
		return false;
	*out = (unsigned)v;
	return true;
}

int main(int argc, char **argv)
{
	struct weft_config cfg = { 0 };
	const char *env = getenv("WEFT_WORKERS");
	if (env && *env && !parse_uint(env, 1, WEFT_MAX_WORKERS, &cfg.workers)) {
		fprintf(stderr, "kv_server: bad WEFT_WORKERS '%s'\n", env);
		return 2;
	}
	int opt;
	while ((opt = getopt(argc, argv, "s:w:h")) != -1) {
		if (opt == 's' && parse_uint(optarg, 1, MAX_SHARDS, &nshards))
			continue;
		if (opt == 'w' && parse_uint(optarg, 1, WEFT_MAX_WORKERS, &cfg.workers))
			continue;
		usage(argv[0]);
		return 2;
	}
	const char *port, *addr;
	if (!server_args(argc, argv, optind, &port, &addr)) {
		usage(argv[0]);
		return 2;
	}
	sigset_t stop;
	server_block_stop_signals(&stop);

	for (unsigned s = 0; s < nshards; s++) {
		shards[s].mask = 1023;
		shards[s].slots = calloc(shards[s].mask + 1, sizeof(struct slot));
		if (!shards[s].slots) {
			fprintf(stderr, "kv_server: out of memory\n");
			return 1;
		}
	}
	int listen_fd = server_listen("kv_server", addr, port);
	if (listen_fd < 0)
		return 1;
	int r = weft_create(&rt, &cfg);
	if (r < 0) {
		fprintf(stderr, "kv_server: weft_create: %s\n", strerror(-r));
		return 1;
	}
	for (unsigned s = 0; s < nshards; s++) {
		char name[32];
		snprintf(name, sizeof(name), "shard-%u", s);
		r = weft_component(rt, name);
		if (r < 0) {
			fprintf(stderr, "kv_server: weft_component: %s\n", strerror(-r));
			weft_destroy(rt);
			return 1;
		}
		shards[s].comp = (uint32_t)r;
	}
	struct server_acceptor acceptor = { .rt = rt, .fd = listen_fd, .name = "kv_server", .on_conn = on_conn };
	if (server_accept_arm(&acceptor) < 0) {
		weft_destroy(rt);
		return 1;
	}

	int sig = server_wait_for_stop(listen_fd, &stop);
	/* Cancels the accept and every recv/send in flight; batches already
	 * granted still run.  Every connection is freed by its last callback
	 * before weft_destroy returns. */
	unsigned workers = weft_worker_count(rt);
	const char *backend = weft_io_backend(rt) == WEFT_IO_URING ? "io_uring" : "helper threads";
	weft_destroy(rt);
	close(listen_fd);

	size_t keys = 0;
	for (unsigned s = 0; s < nshards; s++) {
		keys += shards[s].count;
		for (size_t i = 0; i <= shards[s].mask; i++)
			free(shards[s].slots[i].it);
		free(shards[s].slots);
	}
	int64_t left = __atomic_load_n(&live_conns, __ATOMIC_RELAXED);
	printf("kv_server: %s, %u workers, %u shards, I/O: %s, %llu connections, %llu commands, %llu bytes in, "
	       "%llu out, %zu keys\n",
	       strsignal(sig), workers, nshards, backend, (unsigned long long)total_conns,
	       (unsigned long long)total_cmds, (unsigned long long)total_bytes_in, (unsigned long long)total_bytes_out,
	       keys);
	fflush(stdout); /* before any exit-time leak report ends the process */
	if (left != 0) {
		fprintf(stderr, "kv_server: %lld connections were never closed\n", (long long)left);
		return 1;
	}
	return 0;
}
