/*
 * io_bench.c: the io group of weft-bench (issue 4), see io_bench.h.
 *
 * Rows, in order:
 *   - chained reads: 4 KiB reads of random pages of a cached 64 MiB file,
 *     32 in flight, each completion submitting the next read of its chain
 *     from inside its callback; weft with 1 and 2 workers against the raw
 *     liburing loop of uring_raw.c on one thread.
 *   - ring wake: the round trip "outside thread spawns, the task wakes the
 *     outside thread" onto a 1-worker runtime whose worker is parked in
 *     io_uring_enter (IORING_OP_FUTEX_WAIT, an armed eventfd read, or the
 *     1 ms poll), against the same runtime shape whose worker never had a
 *     ring and parks on its futex.  weft_stats' io.park and ring_parks
 *     show which mechanism really ran.
 *   - echo: examples/echo_server against echo_epoll (a single-thread epoll
 *     server), both driven by echo_load; then both servers' CPU over 1 s
 *     once the load has stopped.
 *   - kv: examples/kv_server (WEFT_WORKERS=2) against Debian's
 *     redis-server under redis-benchmark; then the same idle check.
 *
 * Servers and load generators are separate processes found next to
 * weft-bench (bench/) and in ../examples of the build tree.  A program
 * that is not there makes its rows say "skipped: <why>", never a number.
 */
#define _GNU_SOURCE 1
#include "io_bench.h"

#include <weft.h>

#include "baselines.h"
#include "bench_util.h"
#include "subproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define READ_FILE_BYTES (64ull << 20)
#define READ_INFLIGHT 32u
#define MAX_IO_REPS 32
#define ECHO_CONNS 32
#define ECHO_SIZE 64
#define MAX_ECHO_ROUNDS 16
#define MAX_KV_ROUNDS 8
/* A server gets this long to print its port or accept a connection. */
#define START_TIMEOUT_MS 5000u
/* Between the end of a load and the start of the idle window (the same
 * 100 ms the idle group waits), and the window itself. */
#define IDLE_SETTLE_NS 100000000ull
#define IDLE_WINDOW_NS 1000000000ull

static const struct io_bench_params *P;
static int errors;

/* ---- small helpers ---- */

/* snprintf for the table's messages and paths: they are cut to their
 * buffer on purpose (a cell is short), which gcc's -Wformat-truncation
 * would otherwise flag at every call with a %s of unknown length. */
static void say(char *dst, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, len, fmt, ap);
	va_end(ap);
}

static void futex_wait_u32(_Atomic uint32_t *word, uint32_t expected)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_u32(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Sleep until *word == want (futex waits may return early). */
static void wait_for_u32(_Atomic uint32_t *word, uint32_t want)
{
	uint32_t v;

	while ((v = atomic_load(word)) != want)
		futex_wait_u32(word, v);
}

static const char *park_name(unsigned park)
{
	switch (park) {
	case WEFT_IO_PARK_FUTEX_OP:
		return "futex-op";
	case WEFT_IO_PARK_EVENTFD:
		return "eventfd";
	case WEFT_IO_PARK_POLL:
		return "poll";
	default:
		return "none";
	}
}

static const char *backend_name(unsigned backend)
{
	switch (backend) {
	case WEFT_IO_URING:
		return "uring";
	case WEFT_IO_THREADS:
		return "threads";
	default:
		return "?";
	}
}

/* A runtime with `workers` workers and the given I/O settings, or NULL
 * with "n/a (weft_create: why)" in why. */
static weft_rt *io_rt_create(unsigned workers, unsigned io, unsigned park, char *why, size_t len)
{
	struct weft_config cfg;
	weft_rt *rt = NULL;
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.workers = workers;
	cfg.io = io;
	cfg.io_park = park;
	rc = weft_create(&rt, &cfg);
	if (rc < 0) {
		say(why, len, "n/a (weft_create: %s)", strerror(-rc));
		return NULL;
	}
	return rt;
}

static uint64_t sum_worker(const struct weft_stats *s, size_t offset)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < s->workers && w < WEFT_MAX_WORKERS; w++)
		sum += *(const uint64_t *)((const char *)&s->worker[w] + offset);
	return sum;
}
/* A per-worker counter summed over the workers. */
#define WORKER_SUM(s, field) sum_worker((s), offsetof(struct weft_worker_stats, field))

/* The directory weft-bench runs from (bench/ of the build tree): the other
 * programs are found relative to it, so any build directory works. */
static void exe_dir(char *out, size_t len)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
	char *slash;

	if (n <= 0) {
		say(out, len, ".");
		return;
	}
	buf[n] = 0;
	slash = strrchr(buf, '/');
	if (slash)
		*slash = 0;
	say(out, len, "%s", buf);
}

/* path, if it is an executable file; else false with the reason. */
static bool program_at(const char *path, char *why, size_t len)
{
	struct stat st;

	if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
		say(why, len, "%s not built", path);
		return false;
	}
	if (access(path, X_OK) != 0) {
		say(why, len, "%s not executable", path);
		return false;
	}
	return true;
}

/* A program found in $PATH (redis-server, redis-benchmark). */
static bool program_in_path(const char *name, char *out, size_t len)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX];

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		say(dir, sizeof dir, "%.*s", (int)n, path);
		say(out, len, "%s/%s", n ? dir : ".", name);
		if (access(out, X_OK) == 0)
			return true;
		path += n + (path[n] == ':');
	}
	return false;
}

/* A short, single-line reason from a child's output. */
static void child_reason(const struct subproc *p, const char *what, int rc, char *why, size_t len)
{
	char line[96];

	subproc_first_line(p, line, sizeof line);
	if (rc == -ETIMEDOUT)
		say(why, len, "%s: no port within %u s%s%s", what, START_TIMEOUT_MS / 1000,
			 *line ? ": " : "", line);
	else if (p->reaped && WIFEXITED(p->status))
		say(why, len, "%s exited %d%s%s", what, WEXITSTATUS(p->status), *line ? ": " : "",
			 line);
	else if (p->reaped && WIFSIGNALED(p->status))
		say(why, len, "%s killed by signal %d", what, WTERMSIG(p->status));
	else
		say(why, len, "%s: %s", what, strerror(-rc));
}

/* ---- chained reads ---- */

/* A file of READ_FILE_BYTES whose page p starts with p * 4096, written,
 * synced (so no writeback runs while reads are measured) and read once
 * (so every page is in the page cache).  fd, or -1 with why set. */
static int read_file_create(char *why, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	char path[PATH_MAX];
	const size_t chunk = 1u << 20;
	unsigned char *buf = malloc(chunk);
	int fd;

	say(path, sizeof path, "%s/weft-bench-reads-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	fd = buf ? mkostemp(path, O_CLOEXEC) : -1;
	if (fd < 0) {
		say(why, len, "n/a (temp file in %s: %s)", tmp && *tmp ? tmp : "/tmp",
			 buf ? strerror(errno) : "out of memory");
		free(buf);
		return -1;
	}
	/* Nobody else needs the name; the file goes away with the fd. */
	unlink(path);
	for (uint64_t off = 0; off < READ_FILE_BYTES; off += chunk) {
		for (size_t p = 0; p < chunk; p += BENCH_READ_SIZE) {
			uint64_t tag = off + p;

			memcpy(buf + p, &tag, sizeof tag);
			memset(buf + p + sizeof tag, (int)(tag >> 12) & 0xff, BENCH_READ_SIZE - sizeof tag);
		}
		if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
			say(why, len, "n/a (writing the temp file: %s)", strerror(errno));
			close(fd);
			free(buf);
			return -1;
		}
	}
	fdatasync(fd);
	for (uint64_t off = 0; off < READ_FILE_BYTES; off += chunk)
		if (pread(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
			say(why, len, "n/a (reading the temp file: %s)", strerror(errno));
			close(fd);
			free(buf);
			return -1;
		}
	free(buf);
	return fd;
}

struct chain;

struct chains {
	weft_rt *rt;
	int fd;
	uint64_t pages;
	uint64_t deadline;
	_Atomic uint32_t live;  /* chains still reading */
	_Atomic uint32_t done;  /* set (and woken) by the last chain, after end_ns */
	_Atomic int err;        /* the first failure, -errno or -EIO */
	uint64_t end_ns;        /* when the last chain finished */
	struct chain *ch;
	unsigned char *bufs;
};

/* One chain of reads, on its own cache line: chains finish on different
 * workers. */
struct chain {
	struct chains *all;
	uint64_t rng;
	uint64_t page;
	uint64_t ops;
	unsigned char *buf;
} __attribute__((aligned(64)));

static void chain_end(struct chain *c, int err)
{
	struct chains *a = c->all;
	int none = 0;

	if (err)
		atomic_compare_exchange_strong(&a->err, &none, err);
	/* After its decrement a chain that is not the last touches nothing
	 * more, so once `done` is set the buffers may be freed.  The last one
	 * still makes the wake call on `done` then, which is why the struct
	 * outlives the run (a late wake is only a spurious one). */
	if (atomic_fetch_sub(&a->live, 1) == 1) {
		a->end_ns = bench_now_ns();
		atomic_store(&a->done, 1);
		futex_wake_u32(&a->done);
	}
}

static void read_done(int res, void *ctx);

static void chain_next(struct chain *c)
{
	struct chains *a = c->all;
	int rc;

	c->page = bench_next_page(&c->rng, a->pages);
	rc = weft_io_read(a->rt, a->fd, c->buf, BENCH_READ_SIZE, c->page * BENCH_READ_SIZE, read_done, c);
	if (rc < 0)
		chain_end(c, rc);
}

/* The callback: check the page, count it, and read the next one from here,
 * which is the pattern the row is about (a submission from inside a
 * completion, on a worker, to that worker's ring). */
static void read_done(int res, void *ctx)
{
	struct chain *c = ctx;
	uint64_t first;

	if (res != (int)BENCH_READ_SIZE) {
		chain_end(c, res < 0 ? res : -EIO);
		return;
	}
	memcpy(&first, c->buf, sizeof first);
	if (first != c->page * BENCH_READ_SIZE) {
		chain_end(c, -EIO);
		return;
	}
	c->ops++;
	if (bench_now_ns() < c->all->deadline)
		chain_next(c);
	else
		chain_end(c, 0);
}

static void chain_start(void *arg)
{
	chain_next(arg);
}

/* The state of the run in progress; static so that it outlives each run
 * (see chain_end).  Runs are one at a time. */
static struct chains reads_state;

/* One measurement: ops per second, or a negative errno. */
static double weft_reads(weft_rt *rt, int fd, uint64_t ns, uint64_t *ops_out)
{
	struct chains *a = &reads_state;
	uint64_t t0, ops = 0;
	int err;

	a->rt = rt;
	a->fd = fd;
	a->pages = READ_FILE_BYTES / BENCH_READ_SIZE;
	a->bufs = NULL;
	a->ch = aligned_alloc(64, READ_INFLIGHT * sizeof *a->ch);
	if (!a->ch || posix_memalign((void **)&a->bufs, 4096, READ_INFLIGHT * BENCH_READ_SIZE) != 0) {
		free(a->ch);
		return -ENOMEM;
	}
	atomic_store(&a->live, READ_INFLIGHT);
	atomic_store(&a->done, 0);
	atomic_store(&a->err, 0);
	t0 = bench_now_ns();
	a->deadline = t0 + ns;
	for (unsigned i = 0; i < READ_INFLIGHT; i++) {
		struct chain *c = &a->ch[i];

		memset(c, 0, sizeof *c);
		c->all = a;
		/* The same seeds as the raw loop: both read the same pages. */
		c->rng = 0x9e3779b97f4a7c15ull * (i + 1);
		c->buf = a->bufs + (size_t)i * BENCH_READ_SIZE;
	}
	/* From this outside thread each chain's first read is a task, so it
	 * is submitted on a worker (to its ring), like every later one. */
	for (unsigned i = 0; i < READ_INFLIGHT; i++) {
		int rc = weft_spawn(rt, chain_start, &a->ch[i]);

		if (rc < 0)
			chain_end(&a->ch[i], rc);
	}
	wait_for_u32(&a->done, 1);
	for (unsigned i = 0; i < READ_INFLIGHT; i++)
		ops += a->ch[i].ops;
	err = atomic_load(&a->err);
	*ops_out = ops;
	free(a->bufs);
	free(a->ch);
	if (err)
		return err;
	return (double)ops / ((double)(a->end_ns - t0) / 1e9);
}

static double raw_reads(int fd, uint64_t ns, uint64_t *ops_out)
{
	uint64_t ops, elapsed;
	int rc = bench_uring_reads(fd, READ_FILE_BYTES / BENCH_READ_SIZE, READ_INFLIGHT, ns, &ops,
				   &elapsed);

	*ops_out = ops;
	if (rc < 0)
		return rc;
	return (double)ops / ((double)elapsed / 1e9);
}

static void reads_row(unsigned workers, const double *rate, unsigned n, const char *why,
		      const struct weft_stats *st, double raw, const char *rawwhy)
{
	const struct weft_io_stats *io = &st->io;
	struct bench_row *row =
		bench_row_new("io", "chained 4K reads x%u, %uw", READ_INFLIGHT, workers);
	double w = why ? NAN : bench_median(rate, n);

	if (why)
		bench_weft(row, "%s", why);
	else
		bench_weft(row, "%.0f k reads/s (%s)", w / 1e3, backend_name(io->backend));
	if (rawwhy)
		bench_base(row, "%s", rawwhy);
	else
		bench_base(row, "raw liburing 1 thr %.0f k reads/s", raw / 1e3);
	if (!why && !rawwhy) {
		bench_ratio(row, "%.2fx raw", w / raw);
		bench_goal(row, w / raw >= 0.6 ? BENCH_OK : BENCH_MISS, ">= 0.6x raw");
	} else {
		bench_goal(row, why ? BENCH_ERROR : BENCH_NONE, ">= 0.6x raw");
	}
	bench_metric(row, "workers", workers);
	bench_metric(row, "inflight", READ_INFLIGHT);
	bench_metric(row, "file_mib", (double)(READ_FILE_BYTES >> 20));
	bench_metric(row, "weft_reads_per_s", w);
	bench_metric(row, "weft_reads_per_s_min", why ? NAN : bench_percentile(rate, n, 0));
	bench_metric(row, "weft_reads_per_s_max", why ? NAN : bench_percentile(rate, n, 100));
	bench_metric(row, "raw_reads_per_s", rawwhy ? NAN : raw);
	bench_metric(row, "ratio_vs_raw", why || rawwhy ? NAN : w / raw);
	bench_metric(row, "io_backend", why ? NAN : io->backend);
	bench_metric(row, "io_submitted", why ? NAN : (double)io->submitted);
	bench_metric(row, "io_completed", why ? NAN : (double)io->completed);
	bench_metric(row, "io_ring_parks", why ? NAN : (double)io->ring_parks);
	bench_metric(row, "io_sq_full", why ? NAN : (double)io->sq_full);
	bench_metric(row, "io_backlogged", why ? NAN : (double)io->backlogged);
	bench_metric(row, "io_cq_overflows", why ? NAN : (double)io->cq_overflows);
	/* Where the callbacks ran: with 2 workers, steals and wake-ups show
	 * how often a chain moved to the other worker's ring. */
	bench_metric(row, "tasks_run", why ? NAN : (double)WORKER_SUM(st, tasks_run));
	bench_metric(row, "steals", why ? NAN : (double)(WORKER_SUM(st, steals_local) +
							   WORKER_SUM(st, steals_remote)));
	bench_metric(row, "parks", why ? NAN : (double)WORKER_SUM(st, parks));
	bench_metric(row, "wakeups", why ? NAN : (double)WORKER_SUM(st, wakeups));
	bench_print_row(row);
}

static void group_reads(void)
{
	const uint64_t ns = (uint64_t)(P->read_seconds * 1e9);
	const unsigned reps = P->reps < MAX_IO_REPS ? P->reps : MAX_IO_REPS;
	double raw_rate[MAX_IO_REPS], rate[2][MAX_IO_REPS];
	char why[2][96] = { "", "" }, rawwhy[96] = "", filewhy[96];
	struct weft_stats *st = calloc(2, sizeof *st);
	weft_rt *rt[2] = { NULL, NULL };
	uint64_t ops;
	double raw = NAN, r;
	int fd;

	if (!st) {
		fprintf(stderr, "weft-bench: out of memory\n");
		exit(1);
	}
	fd = read_file_create(filewhy, sizeof filewhy);
	if (fd < 0) {
		errors++;
		say(why[0], sizeof why[0], "%s", filewhy);
		say(why[1], sizeof why[1], "%s", filewhy);
		say(rawwhy, sizeof rawwhy, "%s", filewhy);
	}
	for (unsigned w = 0; fd >= 0 && w < 2; w++) {
		rt[w] = io_rt_create(w + 1, WEFT_IO_AUTO, WEFT_IO_PARK_AUTO, why[w], sizeof why[w]);
		if (!rt[w]) {
			errors++;
			continue;
		}
		/* Warm-up: the workers' rings, arenas and op table. */
		r = weft_reads(rt[w], fd, ns / 5, &ops);
		if (r < 0) {
			say(why[w], sizeof why[w], "ERROR: %s after %llu reads", strerror((int)-r),
				 (unsigned long long)ops);
			errors++;
		}
	}
#ifdef WEFT_BENCH_HAVE_URING
	if (fd >= 0 && (r = raw_reads(fd, ns / 5, &ops)) < 0)
		say(rawwhy, sizeof rawwhy, "n/a (raw liburing: %s)", strerror((int)-r));
#else
	if (fd >= 0)
		say(rawwhy, sizeof rawwhy, "n/a (not built: no liburing)");
#endif
	/* Alternate the variants, so a noisy stretch of the VM hits all of
	 * them alike. */
	for (unsigned i = 0; fd >= 0 && i < reps; i++) {
		if (!*rawwhy) {
			raw_rate[i] = r = raw_reads(fd, ns, &ops);
			if (r < 0)
				say(rawwhy, sizeof rawwhy, "ERROR: raw liburing: %s", strerror((int)-r));
		}
		for (unsigned w = 0; w < 2; w++) {
			if (*why[w])
				continue;
			r = weft_reads(rt[w], fd, ns, &ops);
			if (r < 0) {
				say(why[w], sizeof why[w], "ERROR: %s after %llu reads",
					 strerror((int)-r), (unsigned long long)ops);
				errors++;
			}
			rate[w][i] = r;
		}
	}
	if (!*rawwhy)
		raw = bench_median(raw_rate, reps);
	for (unsigned w = 0; w < 2; w++) {
		if (rt[w]) {
			weft_stats(rt[w], &st[w]);
			weft_destroy(rt[w]);
		}
		reads_row(w + 1, rate[w], reps, *why[w] ? why[w] : NULL, &st[w], raw,
			  *rawwhy ? rawwhy : NULL);
	}
	if (fd >= 0)
		close(fd);
	free(st);
}

/* ---- wake of a ring-parked worker ---- */

struct pong {
	_Atomic uint32_t word; /* bumped by each pong task */
	uint64_t t_task;       /* when the task started */
};

static void pong_task(void *arg)
{
	struct pong *p = arg;

	p->t_task = bench_now_ns();
	atomic_fetch_add(&p->word, 1);
	futex_wake_u32(&p->word);
}

/* A runtime of one worker under test: the mechanism it was asked for,
 * its samples, and its counters before and after. */
struct waker {
	const char *label;
	unsigned park;     /* asked for; 0: never submits I/O */
	weft_rt *rt;
	char why[96];
	struct pong pong __attribute__((aligned(64)));
	int prime_res;
	double *rtt, *oneway;
	unsigned n;
	uint64_t failed;
	struct weft_stats *st0, *st1;
};

static void prime_done(int res, void *ctx)
{
	struct waker *k = ctx;

	k->prime_res = res;
	atomic_fetch_add(&k->pong.word, 1);
	futex_wake_u32(&k->pong.word);
}

/* On the worker: one tiny timeout, so the worker creates its ring and
 * from then on parks on it. */
static void prime_task(void *arg)
{
	struct waker *k = arg;
	int rc = weft_io_timeout(k->rt, 1000, prime_done, k);

	if (rc < 0)
		prime_done(rc, k);
}

static bool waker_open(struct waker *k, unsigned samples)
{
	k->rtt = calloc(samples, sizeof *k->rtt);
	k->oneway = calloc(samples, sizeof *k->oneway);
	k->st0 = calloc(1, sizeof *k->st0);
	k->st1 = calloc(1, sizeof *k->st1);
	if (!k->rtt || !k->oneway || !k->st0 || !k->st1) {
		fprintf(stderr, "weft-bench: out of memory\n");
		exit(1);
	}
	/* One worker: the spawn must wake exactly the worker that has (or
	 * has not) a ring. */
	k->rt = io_rt_create(1, k->park ? WEFT_IO_URING : WEFT_IO_AUTO, k->park, k->why, sizeof k->why);
	if (!k->rt)
		return false;
	if (k->park) {
		uint32_t w = atomic_load(&k->pong.word);
		int rc = weft_spawn(k->rt, prime_task, k);

		if (rc < 0) {
			say(k->why, sizeof k->why, "ERROR: spawn: %s", strerror(-rc));
			return false;
		}
		wait_for_u32(&k->pong.word, w + 1);
		if (k->prime_res < 0) {
			say(k->why, sizeof k->why, "ERROR: weft_io_timeout: %s",
				 strerror(-k->prime_res));
			return false;
		}
	}
	weft_stats(k->rt, k->st0);
	return true;
}

/* One round trip after a pause long enough for the worker to park. */
static void waker_sample(struct waker *k)
{
	uint32_t w = atomic_load(&k->pong.word);
	uint64_t t0, t1;
	int rc;

	bench_sleep_ns(200000);
	t0 = bench_now_ns();
	rc = weft_spawn(k->rt, pong_task, &k->pong);
	if (rc < 0) {
		k->failed++;
		return;
	}
	wait_for_u32(&k->pong.word, w + 1);
	t1 = bench_now_ns();
	k->rtt[k->n] = (double)(t1 - t0);
	k->oneway[k->n] = (double)(k->pong.t_task - t0);
	k->n++;
}

static void waker_close(struct waker *k)
{
	if (k->rt) {
		weft_stats(k->rt, k->st1);
		weft_destroy(k->rt);
	}
	if (k->failed && !*k->why) {
		say(k->why, sizeof k->why, "ERROR: %llu spawns failed", (unsigned long long)k->failed);
		errors++;
	}
}

static void waker_free(struct waker *k)
{
	free(k->rtt);
	free(k->oneway);
	free(k->st0);
	free(k->st1);
}

static void waker_row(const struct waker *k, const struct waker *ref)
{
	struct bench_row *row = bench_row_new("io", "wake %s, n=%u", k->label, k->n);
	bool have = !*k->why && k->n > 0, have_ref = ref && !*ref->why && ref->n > 0;
	double p50 = have ? bench_median(k->rtt, k->n) : NAN;
	double p99 = have ? bench_percentile(k->rtt, k->n, 99) : NAN;
	double r50 = have_ref ? bench_median(ref->rtt, ref->n) : NAN;
	double r99 = have_ref ? bench_percentile(ref->rtt, ref->n, 99) : NAN;
	double rounds = k->n ? k->n : NAN;
	uint64_t rparks = have ? k->st1->io.ring_parks - k->st0->io.ring_parks : 0;
	uint64_t parks = have ? WORKER_SUM(k->st1, parks) - WORKER_SUM(k->st0, parks) : 0;
	uint64_t wakeups = have ? WORKER_SUM(k->st1, wakeups) - WORKER_SUM(k->st0, wakeups) : 0;

	if (have)
		bench_weft(row, "RTT %.1f us (p99 %.1f)", p50 / 1e3, p99 / 1e3);
	else
		bench_weft(row, "%s", k->why);
	if (ref && have_ref)
		bench_base(row, "futex park, no ring %.1f us (p99 %.1f)", r50 / 1e3, r99 / 1e3);
	else if (ref)
		bench_base(row, "%s", ref->why);
	else
		bench_base(row, "- (the reference of the rows below)");
	if (have && have_ref)
		bench_ratio(row, "%.2fx futex park", p50 / r50);
	/* No goal in the issue: the note says what really ran.  A ring park
	 * per round shows the worker slept in io_uring_enter each time. */
	if (have && k->park)
		bench_goal(row, BENCH_NONE, "ran %s, %.1f rparks/rt", park_name(k->st1->io.park),
			   (double)rparks / rounds);
	else if (have)
		bench_goal(row, BENCH_NONE, "%.2f parks/rt, %llu rparks", (double)parks / rounds,
			   (unsigned long long)rparks);
	else
		/* "n/a": this kernel or configuration does not offer it. */
		bench_goal(row, !strncmp(k->why, "ERROR", 5) ? BENCH_ERROR : BENCH_NONE, "-");
	bench_metric(row, "park_asked", k->park);
	bench_metric(row, "io_park", have ? k->st1->io.park : NAN);
	bench_metric(row, "io_backend", have ? k->st1->io.backend : NAN);
	bench_metric(row, "rtt_p50_us", p50 / 1e3);
	bench_metric(row, "rtt_p99_us", p99 / 1e3);
	bench_metric(row, "rtt_max_us", have ? bench_percentile(k->rtt, k->n, 100) / 1e3 : NAN);
	bench_metric(row, "spawn_to_task_p50_us", have ? bench_median(k->oneway, k->n) / 1e3 : NAN);
	bench_metric(row, "futex_park_rtt_p50_us", r50 / 1e3);
	bench_metric(row, "futex_park_rtt_p99_us", r99 / 1e3);
	bench_metric(row, "ratio_vs_futex_park", p50 / r50);
	bench_metric(row, "ring_parks", have ? (double)rparks : NAN);
	bench_metric(row, "ring_parks_per_round", have ? (double)rparks / rounds : NAN);
	bench_metric(row, "parks_per_round", have ? (double)parks / rounds : NAN);
	bench_metric(row, "wakeups_per_round", have ? (double)wakeups / rounds : NAN);
	bench_print_row(row);
}

#define WAKE_CHUNKS 10

static void group_ring_wake(void)
{
	const unsigned n = P->wake_samples;
	struct waker k[4] = {
		{ .label = "futex, no ring", .park = 0 },
		{ .label = "ring futex-op", .park = WEFT_IO_PARK_FUTEX_OP },
		{ .label = "ring eventfd", .park = WEFT_IO_PARK_EVENTFD },
		{ .label = "ring 1 ms poll", .park = WEFT_IO_PARK_POLL },
	};
	bool up[4];

	/* The first three are sampled in turns, chunk by chunk, so they see
	 * the same machine; their idle workers sleep without a timer.  The
	 * poll runtime wakes every millisecond, which would disturb the
	 * others, so it runs on its own afterwards. */
	for (int i = 0; i < 3; i++)
		up[i] = waker_open(&k[i], n);
	for (unsigned c = 0; c < WAKE_CHUNKS; c++)
		for (int i = 0; i < 3; i++)
			for (unsigned s = n * c / WAKE_CHUNKS; up[i] && s < n * (c + 1) / WAKE_CHUNKS; s++)
				waker_sample(&k[i]);
	for (int i = 0; i < 3; i++)
		waker_close(&k[i]);
	up[3] = waker_open(&k[3], n);
	for (unsigned s = 0; up[3] && s < n; s++)
		waker_sample(&k[3]);
	waker_close(&k[3]);
	for (int i = 0; i < 4; i++) {
		if (!up[i] && k[i].why[0] == 'E')
			errors++;
		waker_row(&k[i], i ? &k[0] : NULL);
	}
	/* Only now: every row reads the reference's samples. */
	for (int i = 0; i < 4; i++)
		waker_free(&k[i]);
}

/* ---- servers: echo and kv ---- */

/* A server under test, in its own process. */
struct server {
	const char *label; /* "echo_server", "redis-server", ... */
	bool is_weft;      /* a weft example: its failures are weft's errors */
	struct subproc proc;
	int port;
	bool up;
	char why[112];     /* when not up: "skipped: ..." or "ERROR: ..." */
	/* The idle window once the load has stopped. */
	double cpu_pct, ticks_pct;
	int exit_status;   /* after stop: exit code, 128+signal, -1 unknown */
	char last_line[96];/* the last line it printed (its summary) */
};

/* Start the server at path (shown: its name in the build tree, for cells
 * that must stay short) and learn its port: from its "listening on port"
 * line, or (prints_port false) by connecting to s->port.  A weft example
 * that fails is an error of weft; a baseline that fails makes its cells
 * "n/a (...)". */
static void server_start(struct server *s, const char *path, const char *shown,
			 char *const argv[], const char *const env[], bool prints_port)
{
	const char *fail = s->is_weft ? "ERROR: " : "n/a: ";
	char why[96];
	int rc;

	s->up = false;
	s->exit_status = -1;
	if (!program_at(path, why, sizeof why)) {
		/* A program not built yet is not an error of weft: the row
		 * says so instead of a number. */
		say(s->why, sizeof s->why, "skipped: %s not built", shown);
		return;
	}
	rc = subproc_start(&s->proc, argv, env);
	if (rc < 0) {
		say(s->why, sizeof s->why, "%sstarting %s: %s", fail, shown, strerror(-rc));
		errors += s->is_weft;
		return;
	}
	if (prints_port)
		rc = s->port = subproc_wait_port(&s->proc, START_TIMEOUT_MS);
	else
		rc = subproc_wait_connect(&s->proc, s->port, START_TIMEOUT_MS);
	if (rc < 0) {
		char reason[96];

		child_reason(&s->proc, s->label, rc, reason, sizeof reason);
		say(s->why, sizeof s->why, "%s%s", fail, reason);
		/* The cell is short; the whole reason goes to stderr. */
		fprintf(stderr, "weft-bench: %s did not come up: %s\n", path, reason);
		errors += s->is_weft;
		subproc_stop(&s->proc, 1000);
		return;
	}
	s->up = true;
}

/* The last non-empty line of what the server printed. */
static void server_last_line(struct server *s)
{
	static char buf[65536];
	size_t n = subproc_output(&s->proc, buf, sizeof buf);
	char *end = buf + n, *start;

	while (end > buf && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = 0;
	start = end;
	while (start > buf && start[-1] != '\n')
		start--;
	say(s->last_line, sizeof s->last_line, "%s", start);
}

/* SIGTERM: the examples then shut weft down and check that every
 * connection was freed (exit status 0). */
static void server_stop(struct server *s)
{
	if (!s->up)
		return;
	subproc_stop(&s->proc, 3000);
	server_last_line(s);
	if (s->proc.reaped)
		s->exit_status = WIFEXITED(s->proc.status) ? WEXITSTATUS(s->proc.status)
			       : 128 + WTERMSIG(s->proc.status);
}

/* A row only when a weft example did not stop cleanly, after the rows of
 * its numbers. */
static void server_exit_row(struct server *s)
{
	struct bench_row *row;

	if (!s->up || s->exit_status == 0 || !s->is_weft)
		return;
	errors++;
	row = bench_row_new("io", "%s shutdown (SIGTERM)", s->label);
	if (s->exit_status < 0)
		bench_weft(row, "ERROR: did not exit in 3 s");
	else
		bench_weft(row, "ERROR: exit status %d", s->exit_status);
	bench_base(row, "%s", s->last_line);
	bench_goal(row, BENCH_ERROR, "exit 0");
	bench_metric(row, "exit_status", s->exit_status);
	bench_print_row(row);
}

/* Both servers' CPU over the same window, IDLE_SETTLE_NS after the last
 * load stopped.  A server that died during the load says so. */
static void idle_measure(struct server *a, struct server *b)
{
	struct server *s[2] = { a, b };
	double cpu0[2], ticks0[2], cpu1[2], ticks1[2];
	uint64_t t0, t1;

	bench_sleep_ns(IDLE_SETTLE_NS);
	for (int i = 0; i < 2; i++) {
		s[i]->cpu_pct = s[i]->ticks_pct = NAN;
		if (s[i]->up && !subproc_alive(&s[i]->proc)) {
			char reason[96];

			child_reason(&s[i]->proc, s[i]->label, -ECHILD, reason, sizeof reason);
			say(s[i]->why, sizeof s[i]->why, "%s%s during the load",
			    s[i]->is_weft ? "ERROR: " : "n/a: ", reason);
			s[i]->up = false;
			errors += s[i]->is_weft;
		}
	}
	t0 = bench_now_ns();
	for (int i = 0; i < 2; i++)
		if (s[i]->up)
			subproc_cpu(s[i]->proc.pid, &cpu0[i], &ticks0[i]);
	bench_sleep_ns(IDLE_WINDOW_NS);
	t1 = bench_now_ns();
	for (int i = 0; i < 2; i++)
		if (s[i]->up) {
			double secs = (double)(t1 - t0) / 1e9;

			subproc_cpu(s[i]->proc.pid, &cpu1[i], &ticks1[i]);
			s[i]->cpu_pct = (cpu1[i] - cpu0[i]) / secs * 100;
			s[i]->ticks_pct = (ticks1[i] - ticks0[i]) / secs * 100;
		}
}

/* The goal is judged on the CPU-time clock (ns resolution); utime+stime
 * from /proc/<pid>/stat count in 10 ms ticks, a whole 1% of the window,
 * so they are shown beside it, not judged. */
static void idle_row(const char *what, const struct server *w, const struct server *b)
{
	struct bench_row *row = bench_row_new("io", "idle after %s load, 1 s", what);
	double pct = isfinite(w->cpu_pct) ? w->cpu_pct : w->ticks_pct;

	if (!w->up && w->why[0])
		bench_weft(row, "%s", w->why);
	else
		bench_weft(row, "%.2f %% CPU (stat %.0f %%)", w->cpu_pct, w->ticks_pct);
	if (b->up)
		bench_base(row, "%s %.2f %% CPU (stat %.0f %%)", b->label, b->cpu_pct, b->ticks_pct);
	else
		bench_base(row, "%s", b->why[0] ? b->why : "-");
	if (w->up && isfinite(pct))
		bench_goal(row, pct < 1 ? BENCH_OK : BENCH_MISS, "< 1%% of a CPU");
	else
		bench_goal(row, w->why[0] == 'E' ? BENCH_ERROR : BENCH_NONE, "< 1%% of a CPU");
	bench_metric(row, "weft_cpu_percent", w->up ? w->cpu_pct : NAN);
	bench_metric(row, "weft_stat_ticks_percent", w->up ? w->ticks_pct : NAN);
	bench_metric(row, "base_cpu_percent", b->up ? b->cpu_pct : NAN);
	bench_metric(row, "base_stat_ticks_percent", b->up ? b->ticks_pct : NAN);
	bench_metric(row, "window_seconds", IDLE_WINDOW_NS / 1e9);
	bench_print_row(row);
}

/* ---- echo ---- */

struct load {
	bool ok;
	double rps, p50, p99, p999, max;
	char why[96];
};

/* The value of " key=" in echo_load's line, or NAN. */
static double field(const char *out, const char *key)
{
	char pat[32];
	const char *at;

	say(pat, sizeof pat, " %s=", key);
	at = strstr(out, pat);
	return at ? strtod(at + strlen(pat), NULL) : NAN;
}

static void echo_run(const char *load_path, const struct server *s, struct load *r)
{
	char port[16], secs[32], conns[16], size[16], out[4096];
	char *argv[] = { (char *)load_path, "-p", port, "-c", conns, "-s", size, "-d", secs, "-w", "0.2", NULL };
	unsigned timeout = (unsigned)(P->echo_seconds * 1000) + 10000;
	const char *line;
	int rc;

	memset(r, 0, sizeof *r);
	say(port, sizeof port, "%d", s->port);
	say(secs, sizeof secs, "%.3f", P->echo_seconds);
	say(conns, sizeof conns, "%d", ECHO_CONNS);
	say(size, sizeof size, "%d", ECHO_SIZE);
	rc = subproc_run(argv, timeout, out, sizeof out);
	line = strstr(out, "echo_load conns=");
	if (rc != 0 || !line || field(line, "errors") != 0) {
		/* echo_load names the failing connection on stderr, first. */
		char first[80];

		say(first, sizeof first, "%s", out + strspn(out, " \t\r\n="));
		first[strcspn(first, "\n")] = 0;
		if (rc == -ETIMEDOUT)
			say(r->why, sizeof r->why, "ERROR: echo_load timed out");
		else
			say(r->why, sizeof r->why, "ERROR: echo_load %d: %s", rc, first);
		fprintf(stderr, "weft-bench: echo_load against %s (exit %d):\n%s\n", s->label, rc, out);
		errors++;
		return;
	}
	r->rps = field(line, "rps");
	r->p50 = field(line, "p50_us");
	r->p99 = field(line, "p99_us");
	r->p999 = field(line, "p999_us");
	r->max = field(line, "max_us");
	r->ok = true;
}

/* Medians over the rounds that worked; false (and why) if one failed. */
static bool echo_summary(const struct load *l, unsigned n, struct load *m)
{
	double rps[MAX_ECHO_ROUNDS], p50[MAX_ECHO_ROUNDS], p99[MAX_ECHO_ROUNDS], p999[MAX_ECHO_ROUNDS];

	memset(m, 0, sizeof *m);
	for (unsigned i = 0; i < n; i++) {
		if (!l[i].ok) {
			*m = l[i];
			return false;
		}
		rps[i] = l[i].rps;
		p50[i] = l[i].p50;
		p99[i] = l[i].p99;
		p999[i] = l[i].p999;
	}
	if (n == 0)
		return false;
	m->rps = bench_median(rps, n);
	m->p50 = bench_median(p50, n);
	m->p99 = bench_median(p99, n);
	m->p999 = bench_median(p999, n);
	m->max = bench_percentile(rps, n, 0); /* here: the worst round's req/s */
	m->ok = true;
	return true;
}

static void group_echo(void)
{
	char dir[PATH_MAX], build[PATH_MAX], weft_path[PATH_MAX + 32], epoll_path[PATH_MAX + 32],
		load_path[PATH_MAX + 32], why[96], port0[] = "0";
	const unsigned rounds = P->echo_rounds < MAX_ECHO_ROUNDS ? P->echo_rounds : MAX_ECHO_ROUNDS;
	struct server w = { .label = "echo_server", .is_weft = true }, b = { .label = "echo_epoll" };
	struct load lw[MAX_ECHO_ROUNDS], lb[MAX_ECHO_ROUNDS], mw, mb;
	bool have_load, okw = false, okb = false;
	struct bench_row *row;

	exe_dir(dir, sizeof dir);
	say(build, sizeof build, "%s/..", dir);
	say(weft_path, sizeof weft_path, "%s/examples/echo_server", build);
	say(epoll_path, sizeof epoll_path, "%s/echo_epoll", dir);
	say(load_path, sizeof load_path, "%s/echo_load", dir);
	have_load = program_at(load_path, why, sizeof why);

	{
		char *argv_w[] = { weft_path, port0, NULL }, *argv_b[] = { epoll_path, port0, NULL };

		server_start(&w, weft_path, "examples/echo_server", argv_w, NULL, true);
		/* Without weft's server there is nothing to compare: the
		 * baseline is not run either. */
		if (w.up)
			server_start(&b, epoll_path, "bench/echo_epoll", argv_b, NULL, true);
		else
			say(b.why, sizeof b.why, "- (not run)");
	}
	if (!have_load) {
		say(w.why, sizeof w.why, "ERROR: bench/echo_load not built");
		errors++;
	}
	/* Turns: weft, epoll, weft, epoll, ...; both servers stay up (the
	 * idle one costs nothing, or the idle row says otherwise). */
	for (unsigned r = 0; have_load && r < rounds; r++) {
		if (w.up)
			echo_run(load_path, &w, &lw[r]);
		if (b.up)
			echo_run(load_path, &b, &lb[r]);
	}
	if (have_load && w.up)
		okw = echo_summary(lw, rounds, &mw);
	if (have_load && b.up)
		okb = echo_summary(lb, rounds, &mb);
	if (w.up || b.up)
		idle_measure(&w, &b);
	server_stop(&w);
	server_stop(&b);

	row = bench_row_new("io", "echo %dB x%d conns: req/s", ECHO_SIZE, ECHO_CONNS);
	if (okw)
		bench_weft(row, "%.1f k req/s", mw.rps / 1e3);
	else
		bench_weft(row, "%s", w.up && have_load ? mw.why : w.why);
	if (okb)
		bench_base(row, "echo_epoll 1 thr %.1f k req/s", mb.rps / 1e3);
	else
		bench_base(row, "%s", b.up && have_load ? mb.why : b.why);
	if (okw && okb) {
		bench_ratio(row, "%.2fx epoll", mw.rps / mb.rps);
		bench_goal(row, mw.rps >= mb.rps ? BENCH_OK : BENCH_MISS, ">= epoll");
	} else {
		/* Skipped (not built) or only the baseline failed: no verdict on
		 * weft; weft's own failure is an error. */
		bench_goal(row, okw || !strncmp(row->weft, "skipped", 7) ? BENCH_NONE : BENCH_ERROR,
			   ">= epoll");
	}
	bench_metric(row, "conns", ECHO_CONNS);
	bench_metric(row, "size", ECHO_SIZE);
	bench_metric(row, "seconds", P->echo_seconds);
	bench_metric(row, "rounds", rounds);
	bench_metric(row, "weft_rps", okw ? mw.rps : NAN);
	bench_metric(row, "weft_rps_worst_round", okw ? mw.max : NAN);
	bench_metric(row, "epoll_rps", okb ? mb.rps : NAN);
	bench_metric(row, "epoll_rps_worst_round", okb ? mb.max : NAN);
	bench_metric(row, "ratio_vs_epoll", okw && okb ? mw.rps / mb.rps : NAN);
	bench_print_row(row);

	row = bench_row_new("io", "echo %dB x%d conns: latency", ECHO_SIZE, ECHO_CONNS);
	/* A failure's reason is in the req/s row above; this one stays "-". */
	if (okw)
		bench_weft(row, "p50 %.0f p99 %.0f us", mw.p50, mw.p99);
	if (okb)
		bench_base(row, "echo_epoll p50 %.0f p99 %.0f us", mb.p50, mb.p99);
	if (okw && okb) {
		bench_ratio(row, "p99 %.2fx epoll", mw.p99 / mb.p99);
		bench_goal(row, mw.p99 <= 1.5 * mb.p99 ? BENCH_OK : BENCH_MISS, "p99 <= 1.5x epoll");
	} else {
		bench_goal(row, BENCH_NONE, "p99 <= 1.5x epoll");
	}
	bench_metric(row, "weft_p50_us", okw ? mw.p50 : NAN);
	bench_metric(row, "weft_p99_us", okw ? mw.p99 : NAN);
	bench_metric(row, "weft_p999_us", okw ? mw.p999 : NAN);
	bench_metric(row, "epoll_p50_us", okb ? mb.p50 : NAN);
	bench_metric(row, "epoll_p99_us", okb ? mb.p99 : NAN);
	bench_metric(row, "epoll_p999_us", okb ? mb.p999 : NAN);
	bench_metric(row, "p99_ratio_vs_epoll", okw && okb ? mw.p99 / mb.p99 : NAN);
	bench_print_row(row);

	idle_row("echo", &w, &b);
	server_exit_row(&w);
}

/* ---- kv ---- */

enum { KV_SET, KV_GET, KV_INCR, KV_MSET, KV_NCMD };
static const char *const kv_cmd[KV_NCMD] = { "SET", "GET", "INCR", "MSET" };

struct kv_result {
	double rps[KV_NCMD], p50_ms[KV_NCMD], p99_ms[KV_NCMD];
	char why[96]; /* set when the run failed as a whole */
};

/* redis-benchmark --csv: a header, then "NAME","rps","avg","min","p50",
 * "p95","p99","max" per test (Redis 7; older ones print only two
 * columns).  MSET's name is "MSET (10 keys)". */
static void kv_parse(const char *out, struct kv_result *r)
{
	for (const char *line = out; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		double v[7];
		char name[32];
		int n;

		if (sscanf(line, "\"%31[^\"]\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", name,
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) < 2)
			continue;
		for (int c = 0; c < KV_NCMD; c++) {
			n = (int)strlen(kv_cmd[c]);
			if (strncmp(name, kv_cmd[c], (size_t)n) == 0 && (name[n] == 0 || name[n] == ' ')) {
				r->rps[c] = v[0];
				r->p50_ms[c] = v[3];
				r->p99_ms[c] = v[5];
			}
		}
	}
}

static void kv_run(const char *bench_path, const struct server *s, struct kv_result *r)
{
	char port[16], n[24], out[16384];
	char *argv[] = { (char *)bench_path, "-h", "127.0.0.1", "-p", port, "-t", "get,set,incr,mset",
			 "-n", n, "-c", "50", "-P", "16", "-q", "--csv", NULL };
	int rc;

	for (int c = 0; c < KV_NCMD; c++)
		r->rps[c] = r->p50_ms[c] = r->p99_ms[c] = NAN;
	r->why[0] = 0;
	say(port, sizeof port, "%d", s->port);
	say(n, sizeof n, "%u", P->kv_requests);
	rc = subproc_run(argv, P->kv_timeout_s * 1000, out, sizeof out);
	/* What finished before a failure still counts; the rest says why. */
	kv_parse(out, r);
	if (rc == -ETIMEDOUT)
		say(r->why, sizeof r->why, "ERROR: redis-benchmark killed after %u s", P->kv_timeout_s);
	else if (rc != 0)
		say(r->why, sizeof r->why, "ERROR: redis-benchmark exit %d", rc);
	if (rc != 0) {
		/* Its own complaint, if any, to stderr for the reader. */
		fprintf(stderr, "weft-bench: redis-benchmark against %s: %s\n%s\n", s->label, r->why, out);
	}
}

/* Per command, the median over the rounds that have it; the first
 * failure's reason. */
static void kv_combine(const struct kv_result *runs, unsigned n, struct kv_result *out)
{
	double v[3][MAX_KV_ROUNDS];

	out->why[0] = 0;
	for (unsigned r = 0; r < n && !out->why[0]; r++)
		say(out->why, sizeof out->why, "%s", runs[r].why);
	for (int c = 0; c < KV_NCMD; c++) {
		unsigned k = 0;

		for (unsigned r = 0; r < n; r++)
			if (isfinite(runs[r].rps[c])) {
				v[0][k] = runs[r].rps[c];
				v[1][k] = runs[r].p50_ms[c];
				v[2][k] = runs[r].p99_ms[c];
				k++;
			}
		out->rps[c] = bench_median(v[0], k);
		out->p50_ms[c] = bench_median(v[1], k);
		out->p99_ms[c] = bench_median(v[2], k);
	}
}

static void redis_version(const char *path, char *out, size_t len)
{
	char buf[512], *v;
	char *argv[] = { (char *)path, "--version", NULL };

	say(out, len, "redis");
	if (subproc_run(argv, 5000, buf, sizeof buf) == 0 && (v = strstr(buf, "v=")) != NULL) {
		v[2 + strcspn(v + 2, " \n")] = 0;
		say(out, len, "redis %s", v + 2);
	}
}

static void group_kv(void)
{
	char dir[PATH_MAX], kv_path[PATH_MAX + 32], redis_path[PATH_MAX], rb_path[PATH_MAX], rport[16],
		label[32], port0[] = "0";
	struct server w = { .label = "kv_server", .is_weft = true }, b = { .label = "redis-server" };
	const unsigned rounds = P->kv_rounds < MAX_KV_ROUNDS ? P->kv_rounds : MAX_KV_ROUNDS;
	struct kv_result rw, rb, runs_w[MAX_KV_ROUNDS], runs_b[MAX_KV_ROUNDS];
	bool have_rb;

	exe_dir(dir, sizeof dir);
	say(kv_path, sizeof kv_path, "%s/../examples/kv_server", dir);
	have_rb = program_in_path("redis-benchmark", rb_path, sizeof rb_path);
	say(label, sizeof label, "redis");
	for (int c = 0; c < KV_NCMD; c++)
		rw.rps[c] = rb.rps[c] = NAN;
	rw.why[0] = rb.why[0] = 0;

	if (!have_rb) {
		say(w.why, sizeof w.why, "skipped: no redis-benchmark (redis-tools)");
		say(b.why, sizeof b.why, "-");
	} else {
		char *argv_w[] = { kv_path, port0, NULL };
		const char *env_w[] = { "WEFT_WORKERS=2", NULL };

		server_start(&w, kv_path, "examples/kv_server", argv_w, env_w, true);
		if (!w.up) {
			say(b.why, sizeof b.why, "- (not run)");
		} else if (!program_in_path("redis-server", redis_path, sizeof redis_path)) {
			say(b.why, sizeof b.why, "n/a (no redis-server)");
		} else {
			/* No persistence, no fork for snapshots, loopback only:
			 * the same job as kv_server. */
			char *argv_b[] = { redis_path, "--port", rport, "--bind", "127.0.0.1", "--save", "",
					   "--appendonly", "no", "--daemonize", "no", NULL };

			redis_version(redis_path, label, sizeof label);
			b.port = subproc_free_port();
			say(rport, sizeof rport, "%d", b.port);
			if (b.port > 0)
				server_start(&b, redis_path, "redis-server", argv_b, NULL, false);
			else
				say(b.why, sizeof b.why, "n/a (no free port: %s)", strerror(-b.port));
		}
	}
	/* Turns, like the echo rows: on this VM one run of redis-benchmark
	 * varies by 2x from the next, so both servers get the same spread. */
	for (unsigned r = 0; r < rounds; r++) {
		if (w.up)
			kv_run(rb_path, &w, &runs_w[r]);
		if (b.up)
			kv_run(rb_path, &b, &runs_b[r]);
	}
	if (w.up)
		kv_combine(runs_w, rounds, &rw);
	if (b.up)
		kv_combine(runs_b, rounds, &rb);
	if (w.up || b.up)
		idle_measure(&w, &b);
	server_stop(&w);
	server_stop(&b);
	if (rw.why[0])
		errors++;

	for (int c = 0; c < KV_NCMD; c++) {
		/* The goal is on GET and SET; INCR and MSET are shown. */
		bool judged = c == KV_GET || c == KV_SET;
		bool okw = isfinite(rw.rps[c]), okb = isfinite(rb.rps[c]);
		struct bench_row *row =
			bench_row_new("io", "kv %s -c50 -P16, n=%uk", kv_cmd[c], P->kv_requests / 1000);

		if (okw)
			bench_weft(row, "kv_server %.0f k/s", rw.rps[c] / 1e3);
		else if (w.up && !rw.why[0])
			bench_weft(row, "ERROR: no %s result", kv_cmd[c]);
		else
			bench_weft(row, "%s", rw.why[0] ? rw.why : w.why);
		if (okb)
			bench_base(row, "%s %.0f k/s", label, rb.rps[c] / 1e3);
		else
			bench_base(row, "%s", rb.why[0] ? rb.why : b.why[0] ? b.why : "-");
		if (okw && okb)
			bench_ratio(row, "%.2fx redis", rw.rps[c] / rb.rps[c]);
		/* weft's failure (the server did not come up, a run failed or
		 * gave no number) is an error; a skip or a baseline's failure is
		 * not a verdict on weft. */
		bool werr = !okw && (w.up || w.why[0] == 'E');
		if (okw && okb && judged)
			bench_goal(row, rw.rps[c] >= 0.8 * rb.rps[c] ? BENCH_OK : BENCH_MISS, ">= 0.8x redis");
		else
			bench_goal(row, werr ? BENCH_ERROR : BENCH_NONE, "%s", judged ? ">= 0.8x redis" : "-");
		if (w.up && !okw && !rw.why[0])
			errors++;
		bench_metric(row, "requests", P->kv_requests);
		bench_metric(row, "rounds", rounds);
		bench_metric(row, "clients", 50);
		bench_metric(row, "pipeline", 16);
		bench_metric(row, "weft_rps", rw.rps[c]);
		bench_metric(row, "weft_p50_ms", okw ? rw.p50_ms[c] : NAN);
		bench_metric(row, "weft_p99_ms", okw ? rw.p99_ms[c] : NAN);
		bench_metric(row, "redis_rps", rb.rps[c]);
		bench_metric(row, "redis_p50_ms", okb ? rb.p50_ms[c] : NAN);
		bench_metric(row, "redis_p99_ms", okb ? rb.p99_ms[c] : NAN);
		bench_metric(row, "ratio_vs_redis", okw && okb ? rw.rps[c] / rb.rps[c] : NAN);
		bench_print_row(row);
	}
	idle_row("kv", &w, &b);
	server_exit_row(&w);
}

/* ---- the group ---- */

int bench_group_io(const struct io_bench_params *p)
{
	P = p;
	errors = 0;
	group_reads();
	group_ring_wake();
	group_echo();
	group_kv();
	return errors;
}
