/*
 * test_io.c: completion-based I/O (weft/io.h) through the public API.
 *
 * meson runs this file twice: as `io_uring` with WEFT_IO=uring and as
 * `io_threads` with WEFT_IO=threads, so every test checks both backends
 * against the same contract.  Tests that only make sense with rings
 * (fallback when io_uring is forbidden, park mechanisms, injected
 * ring_enter returns) skip themselves in the threads run.
 *
 * Bookkeeping shared by all tests: every accepted submit is counted
 * (n_submitted), every callback is counted (n_callbacks).  After
 * weft_destroy has returned, end_checks() verifies that the two are equal,
 * that no callback ran off a worker or after weft_destroy returned, and
 * that nothing failed inside a callback.  Callbacks and helper threads never
 * call cr_assert: they record the first failure with CHECK and the main
 * thread reports it.  A watchdog fails a test whose callbacks stop coming,
 * and every wait on the main thread has a deadline, so a lost completion or
 * wakeup is a failure, not a hang.
 *
 * The internal header os.h is used only to swap the OS table (ring_init,
 * ring_enter, eventfd_signal) for fault injection.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>
#include <weft.h>

#include "os.h"
#include "testutil.h"

/* IORING_OP_FUTEX_WAIT (Linux 6.7); liburing 2.3's headers predate it. */
#define OP_FUTEX_WAIT 51

#define WAIT_SECONDS 30     /* a single wait on the main thread */
#define WATCHDOG_SECONDS 60 /* no callback at all for this long: hang */

/* ---- failure recording (usable from any thread) -------------------------- */

static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned n_fail;
static char fail_msg[512];

__attribute__((format(printf, 2, 3))) static void fail_at(int line, const char *fmt, ...)
{
	pthread_mutex_lock(&fail_lock);
	if (n_fail++ == 0) {
		int k = snprintf(fail_msg, sizeof(fail_msg), "test_io.c:%d: ", line);
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(fail_msg + k, sizeof(fail_msg) - (size_t)k, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&fail_lock);
}

#define CHECK(cond, ...)                               \
	do {                                           \
		if (!(cond))                           \
			fail_at(__LINE__, __VA_ARGS__); \
	} while (0)

static void assert_no_failures(void)
{
	char msg[sizeof(fail_msg)];
	pthread_mutex_lock(&fail_lock);
	unsigned n = n_fail;
	memcpy(msg, fail_msg, sizeof(msg));
	pthread_mutex_unlock(&fail_lock);
	cr_assert_eq(n, 0, "%u failure(s) off the main thread; the first: %s", n, msg);
}

/* ---- the bookkeeping ---------------------------------------------------- */

static weft_rt *rt;
static uint64_t n_submitted, n_callbacks, n_late, n_offworker, progress;
static int destroyed;
static struct watchdog wd;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Count an accepted submission; pass the submit's return value through. */
static int counted(int h)
{
	if (h > 0)
		fetch_add_acq_rel(&n_submitted, 1);
	CHECK(h != 0, "a submit returned 0 (neither a handle > 0 nor -errno)");
	return h;
}

/* Last thing every callback does (after any submission it makes, so that
 * n_submitted - n_callbacks is never 0 while work is outstanding). */
static void note_callback(void)
{
	if (load_acquire(&destroyed))
		fetch_add_acq_rel(&n_late, 1);
	if (weft_current_worker() < 0)
		fetch_add_acq_rel(&n_offworker, 1);
	fetch_add_relaxed(&progress, 1);
	fetch_add_acq_rel(&n_callbacks, 1);
}

/* The test pattern: byte at file offset x. */
static unsigned char pat(uint64_t x)
{
	return (unsigned char)((x * 131u) ^ (x >> 7) ^ 0x5a);
}

static void pat_fill(unsigned char *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(off + i);
}

static bool pat_ok(const unsigned char *b, size_t n, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(off + i))
			return false;
	return true;
}

/* ---- operations ---------------------------------------------------------- */

#define BLOCK 16
#define BLOCKS 4096

enum kind {
	K_ANY,     /* no check in the callback */
	K_TIMEOUT, /* 0 (never before ns) or -ECANCELED */
	K_READ,    /* BLOCK bytes of the data file at off, or -ECANCELED */
	K_POLL,    /* POLLIN on an always-readable fd, or -ECANCELED */
	K_RECV1,   /* one byte from a socket, or -ECANCELED */
};

struct op {
	int calls; /* callbacks so far (atomic) */
	int res;
	int worker;
	int handle;
	int cancel_res; /* what weft_io_cancel answered (1: never asked) */
	int kind;
	uint64_t ns;  /* K_TIMEOUT: asked for */
	uint64_t off; /* K_READ: file offset; also a free counter for chains */
	uint64_t t0;  /* CLOCK_MONOTONIC ns, taken before the submit call */
	uint64_t t1;  /* ... when the callback started */
	unsigned char buf[32];
};

static void op_record(struct op *o, int res)
{
	uint64_t t = now_ns();
	o->res = res;
	o->t1 = t;
	o->worker = weft_current_worker();
	switch (o->kind) {
	case K_TIMEOUT:
		CHECK(res == 0 || res == -ECANCELED, "timeout: res %d", res);
		if (res == 0)
			CHECK(t - o->t0 >= o->ns, "a timeout of %llu ns fired after %llu ns", (unsigned long long)o->ns,
			      (unsigned long long)(t - o->t0));
		break;
	case K_READ:
		CHECK(res == BLOCK || res == -ECANCELED, "read at %llu: res %d", (unsigned long long)o->off, res);
		if (res == BLOCK)
			CHECK(pat_ok(o->buf, BLOCK, o->off), "read at %llu: wrong bytes", (unsigned long long)o->off);
		break;
	case K_POLL:
		CHECK(res == -ECANCELED || (res > 0 && (res & POLLIN)), "poll on a ready fd: res %#x", res);
		break;
	case K_RECV1:
		CHECK(res == 1 || res == -ECANCELED, "recv of one ready byte: res %d", res);
		break;
	}
	int prev = fetch_add_acq_rel(&o->calls, 1);
	CHECK(prev == 0, "one operation (kind %d) was called back %d times (res %d)", o->kind, prev + 1, res);
}

static void op_cb(int res, void *ctx)
{
	op_record(ctx, res);
	note_callback();
}

/* Memory that lives until end_checks(), which runs after weft_destroy. */
struct tracked {
	struct tracked *next;
	_Alignas(16) unsigned char data[];
};
static struct tracked *tracked_list;
static pthread_mutex_t tracked_lock = PTHREAD_MUTEX_INITIALIZER;

static void *tmalloc(size_t n)
{
	struct tracked *t = calloc(1, sizeof(*t) + n);
	if (!t)
		abort();
	pthread_mutex_lock(&tracked_lock);
	t->next = tracked_list;
	tracked_list = t;
	pthread_mutex_unlock(&tracked_lock);
	return t->data;
}

static void free_tracked(void)
{
	while (tracked_list) {
		struct tracked *t = tracked_list;
		tracked_list = t->next;
		free(t);
	}
}

static struct op *op_new(int kind)
{
	struct op *o = tmalloc(sizeof(*o));
	o->kind = kind;
	o->cancel_res = 1;
	o->t0 = now_ns();
	return o;
}

static struct op *ops_new(size_t n, int kind)
{
	struct op *o = tmalloc(n * sizeof(*o));
	for (size_t i = 0; i < n; i++) {
		o[i].kind = kind;
		o[i].cancel_res = 1;
	}
	return o;
}

static int wait_op(struct op *o)
{
	double t0 = now_sec();
	while (load_acquire(&o->calls) == 0) {
		cr_assert_lt(now_sec() - t0, WAIT_SECONDS, "no callback after %d s (kind %d)", WAIT_SECONDS, o->kind);
		usleep(100);
	}
	return o->res;
}

static void wait_counter(const uint64_t *c, uint64_t target, const char *what)
{
	double t0 = now_sec();
	while (load_acquire(c) < target) {
		cr_assert_lt(now_sec() - t0, WAIT_SECONDS, "%s: %llu of %llu after %d s", what,
			     (unsigned long long)load_acquire(c), (unsigned long long)target, WAIT_SECONDS);
		usleep(100);
	}
}

static void wait_flag(const int *f, const char *what)
{
	double t0 = now_sec();
	while (!load_acquire(f)) {
		cr_assert_lt(now_sec() - t0, WAIT_SECONDS, "%s: not after %d s", what, WAIT_SECONDS);
		usleep(100);
	}
}

/* Until every accepted operation has been called back. */
static void wait_quiet(const char *what)
{
	double t0 = now_sec();
	while (load_acquire(&n_callbacks) != load_acquire(&n_submitted)) {
		cr_assert_lt(now_sec() - t0, WAIT_SECONDS, "%s: %llu callbacks for %llu operations after %d s", what,
			     (unsigned long long)load_acquire(&n_callbacks),
			     (unsigned long long)load_acquire(&n_submitted), WAIT_SECONDS);
		usleep(200);
	}
}

/* `CB` names the op of the enclosing IO/IO_ANY/START as callback + ctx. */
#define CB op_cb, o_

/* Submit (must be accepted) and wait: the callback's result. */
#define IO(call)                                                                                           \
	({                                                                                                 \
		struct op *o_ = op_new(K_ANY);                                                             \
		int h_ = counted(call);                                                                    \
		cr_assert_gt(h_, 0, "%s: submit returned %d (%s)", #call, h_, strerror(h_ < 0 ? -h_ : 0)); \
		wait_op(o_);                                                                               \
	})

/* Submit: the submit's error, or else the callback's result. */
#define IO_ANY(call)                           \
	({                                     \
		struct op *o_ = op_new(K_ANY); \
		int h_ = counted(call);        \
		h_ > 0 ? wait_op(o_) : h_;     \
	})

/* Submit op o (must be accepted) without waiting. */
#define START(o, call)                                                                                         \
	do {                                                                                                   \
		struct op *o_ = (o);                                                                           \
		o_->t0 = now_ns();                                                                             \
		int h_ = counted(call);                                                                        \
		cr_assert_gt(h_, 0, "%s: submit returned %d (%s)", #call, h_, strerror(h_ < 0 ? -h_ : 0));     \
		o_->handle = h_;                                                                               \
	} while (0)

static void assert_pending(struct op *o, unsigned ms, const char *what)
{
	usleep(ms * 1000);
	cr_assert_eq(load_acquire(&o->calls), 0, "%s completed, res %d", what, o->res);
}

/* ---- files, fds, threads ----------------------------------------------- */

static char dir[64];
static int dfd = -1, data_fd = -1, ready_fd = -1;

/* A temp dir with `data` (BLOCKS * BLOCK bytes of the pattern), and an
 * eventfd that is always readable. */
static void setup_files(void)
{
	strcpy(dir, "/tmp/weft-io-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert_geq(dfd, 0);
	data_fd = openat(dfd, "data", O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
	cr_assert_geq(data_fd, 0);
	unsigned char *b = malloc(BLOCKS * BLOCK);
	pat_fill(b, BLOCKS * BLOCK, 0);
	cr_assert_eq(pwrite(data_fd, b, BLOCKS * BLOCK, 0), BLOCKS * BLOCK);
	free(b);
	ready_fd = eventfd(1, EFD_CLOEXEC);
	cr_assert_geq(ready_fd, 0);
}

static void cleanup_files(void)
{
	if (data_fd >= 0)
		close(data_fd);
	if (ready_fd >= 0)
		close(ready_fd);
	data_fd = ready_fd = -1;
	if (dfd < 0)
		return;
	DIR *d = fdopendir(dfd);
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
	rmdir(dir);
	dfd = -1;
}

static int count_entries(const char *path)
{
	DIR *d = opendir(path);
	int n = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int count_fds(void)
{
	return count_entries("/proc/self/fd");
}

/* Threads of this process, without io_uring's own kernel workers
 * (iou-wrk-*, iou-sqp-*): those leave on the kernel's schedule after their
 * ring is gone. */
static int count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "re");
		if (f) {
			if (!fgets(comm, sizeof(comm), f))
				comm[0] = 0;
			fclose(f);
		}
		n += strncmp(comm, "iou-", 4) != 0;
	}
	closedir(d);
	return n;
}

/* An fd number that is not open (high, so nothing opens it meanwhile). */
static int closed_fd(void)
{
	for (int fd = 900;; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
			return fd;
}

static void make_socketpair(int type, int sp[2])
{
	cr_assert_eq(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sp), 0);
}

static int tcp_listener(struct sockaddr_in *addr)
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(l, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(l, 64), 0);
	socklen_t len = sizeof(*addr);
	cr_assert_eq(getsockname(l, (struct sockaddr *)addr, &len), 0);
	return l;
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* A connected loopback TCP pair made with plain syscalls. */
static void tcp_pair(int fds[2])
{
	struct sockaddr_in a;
	int l = tcp_listener(&a);
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
	fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(fds[1], 0);
	close(l);
	nodelay(fds[0]);
	nodelay(fds[1]);
}

/* ---- mode and kernel ---------------------------------------------------- */

static const char *io_mode(void)
{
	const char *m = getenv("WEFT_IO");
	return m ? m : "";
}

static bool uring_mode(void)
{
	return strcmp(io_mode(), "uring") == 0;
}

static bool threads_mode(void)
{
	return strcmp(io_mode(), "threads") == 0;
}

static bool kernel_has_uring(void)
{
	struct io_uring r;
	if (io_uring_queue_init(4, &r, 0) < 0)
		return false;
	io_uring_queue_exit(&r);
	return true;
}

static bool kernel_has_futex_op(void)
{
	struct io_uring_probe *p = io_uring_get_probe();
	if (!p)
		return false;
	bool ok = io_uring_opcode_supported(p, OP_FUTEX_WAIT);
	io_uring_free_probe(p);
	return ok;
}

/* ---- test frame --------------------------------------------------------- */

static void begin(void)
{
	store_release(&n_submitted, 0);
	store_release(&n_callbacks, 0);
	store_release(&n_late, 0);
	store_release(&n_offworker, 0);
	store_release(&progress, 0);
	store_release(&destroyed, 0);
	pthread_mutex_lock(&fail_lock);
	n_fail = 0;
	fail_msg[0] = 0;
	pthread_mutex_unlock(&fail_lock);
	rt = NULL;
	dir[0] = 0;
	dfd = data_fd = ready_fd = -1;
	watchdog_start(&wd, &progress, WATCHDOG_SECONDS, "I/O callbacks");
}

static void create_rt(const struct weft_config *cfg)
{
	int r = weft_create(&rt, cfg);
	cr_assert_eq(r, 0, "weft_create: %d (%s)", r, strerror(r < 0 ? -r : 0));
}

static void destroy_rt(void)
{
	weft_destroy(rt);
	rt = NULL;
	store_release(&destroyed, 1);
}

/* After weft_destroy: nothing runs any more, every accepted op was called
 * back exactly once, on a worker. */
static void end_checks(void)
{
	uint64_t c = load_acquire(&n_callbacks);
	usleep(20 * 1000);
	cr_assert_eq(load_acquire(&n_callbacks), c, "a callback ran after weft_destroy returned");
	watchdog_stop(&wd);
	assert_no_failures();
	cr_assert_eq(n_late, 0, "%llu callback(s) ran after weft_destroy returned", (unsigned long long)n_late);
	cr_assert_eq(n_submitted, n_callbacks, "every accepted operation gets exactly one callback: %llu accepted, %llu callbacks",
		     (unsigned long long)n_submitted, (unsigned long long)n_callbacks);
	cr_assert_eq(n_offworker, 0, "%llu callback(s) ran on a thread that is not a worker",
		     (unsigned long long)n_offworker);
	cleanup_files();
	free_tracked();
	/* Under AddressSanitizer: nothing leaked once weft_destroy has returned
	 * (crit.h also checks after every test body). */
	test_leak_check();
}

static void finish(void)
{
	destroy_rt();
	end_checks();
}

/* Destroy and start over with another runtime in the same test. */
static void cycle_destroy(void)
{
	destroy_rt();
	uint64_t c = load_acquire(&n_callbacks);
	usleep(10 * 1000);
	cr_assert_eq(load_acquire(&n_callbacks), c, "a callback ran after weft_destroy returned");
	cr_assert_eq(load_acquire(&n_late), 0);
	store_release(&destroyed, 0);
}

static void run_tasks(void (*fn)(void *), void **args, int n)
{
	struct weft_group g;
	weft_group_init(&g);
	for (int i = 0; i < n; i++)
		cr_assert_eq(weft_group_spawn(rt, &g, fn, args[i]), 0);
	weft_group_wait(rt, &g);
}

static void run_task(void (*fn)(void *), void *arg)
{
	run_tasks(fn, &arg, 1);
}

static uint64_t lcg_state = 88172645463325252ull;

static uint64_t lcg(void)
{
	lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
	return lcg_state >> 17;
}

/* Submit one op of a simple kind (the kinds op_record checks).  The handle
 * or -errno. */
static int submit_kind(struct op *o, int kind, uint64_t i, weft_io_fn fn)
{
	o->kind = kind;
	o->cancel_res = 1;
	o->t0 = now_ns();
	int h = -EINVAL;
	switch (kind) {
	case K_TIMEOUT:
		h = weft_io_timeout(rt, o->ns, fn, o);
		break;
	case K_READ:
		o->off = (i % BLOCKS) * BLOCK;
		h = weft_io_read(rt, data_fd, o->buf, BLOCK, o->off, fn, o);
		break;
	case K_POLL:
		h = weft_io_poll(rt, ready_fd, POLLIN, fn, o);
		break;
	}
	h = counted(h);
	if (h > 0)
		o->handle = h;
	return h;
}

static const int simple_kinds[3] = { K_TIMEOUT, K_READ, K_POLL };

/* Make every worker submit once, so every worker has made its ring (rings
 * are made on a worker's first submission).  Tasks need not run at the same
 * time: each task submits if its worker has not yet, then keeps its worker
 * busy for a moment, so that the next task spawned from here goes to
 * another (parked, hence woken) worker. */
static int warm_seen[WEFT_MAX_WORKERS];
static unsigned warm_nseen;

static void warm_task(void *p)
{
	struct op *ops = p;
	int w = weft_current_worker();
	if (w < 0 || w >= WEFT_MAX_WORKERS)
		return;
	if (exchange_acq_rel(&warm_seen[w], 1) == 0) {
		CHECK(submit_kind(&ops[w], K_TIMEOUT, 0, op_cb) > 0, "warm-up timeout");
		fetch_add_acq_rel(&warm_nseen, 1);
	}
	double t0 = now_sec();
	while (load_acquire(&warm_nseen) < weft_worker_count(rt) && now_sec() - t0 < 0.02)
		sched_yield();
}

static void warm_rings(void)
{
	unsigned n = weft_worker_count(rt);
	memset(warm_seen, 0, sizeof(warm_seen));
	store_release(&warm_nseen, 0);
	struct op *ops = ops_new(n, K_TIMEOUT);
	double t0 = now_sec();
	while (load_acquire(&warm_nseen) < n) {
		cr_assert_lt(now_sec() - t0, 10, "only %u of %u workers ran a task in 10 s", load_acquire(&warm_nseen), n);
		cr_assert_eq(weft_spawn(rt, warm_task, ops), 0);
		usleep(1000);
	}
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(wait_op(&ops[i]), 0);
}

static uint64_t sum_parks(const struct weft_stats *st)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < st->workers; i++)
		t += st->worker[i].parks;
	return t;
}

/* ======================================================================== */
/* Backend selection and stats                                              */
/* ======================================================================== */

Test(io, backend_matches_mode, .timeout = 60)
{
	bool have_uring = kernel_has_uring();
	begin();
	create_rt(NULL);
	int b = weft_io_backend(rt), p = weft_io_park_mechanism(rt);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_log_info("WEFT_IO=%s: backend %d, park %d (kernel io_uring %s, FUTEX_WAIT op %s)", io_mode(), b, p,
		    have_uring ? "yes" : "no", kernel_has_futex_op() ? "yes" : "no");
	cr_assert_eq(st.io.backend, (unsigned)b, "stats and weft_io_backend agree");
	cr_assert_eq(st.io.park, (unsigned)p, "stats and weft_io_park_mechanism agree");
	if (threads_mode())
		cr_assert_eq(b, WEFT_IO_THREADS, "WEFT_IO=threads");
	if (uring_mode() && have_uring)
		cr_assert_eq(b, WEFT_IO_URING, "WEFT_IO=uring on a kernel that allows io_uring");
	if (b == WEFT_IO_URING)
		cr_assert(p >= WEFT_IO_PARK_FUTEX_OP && p <= WEFT_IO_PARK_POLL, "a ring backend parks somehow: %d", p);
	else
		cr_assert_eq(p, 0, "the threads backend has no park mechanism: %d", p);
	finish();
}

Test(io, stats_count_operations, .timeout = 60)
{
	begin();
	create_rt(NULL);
	struct op *ops = ops_new(110, K_TIMEOUT);
	for (int i = 0; i < 100; i++)
		START(&ops[i], weft_io_timeout(rt, 0, CB));
	for (int i = 100; i < 110; i++) {
		ops[i].ns = 60ull * 1000000000u;
		START(&ops[i], weft_io_timeout(rt, ops[i].ns, CB));
	}
	for (int i = 0; i < 100; i++)
		cr_assert_eq(wait_op(&ops[i]), 0);
	for (int i = 100; i < 110; i++)
		cr_assert_eq(weft_io_cancel(rt, ops[i].handle), 0);
	for (int i = 100; i < 110; i++)
		cr_assert_eq(wait_op(&ops[i]), -ECANCELED);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_log_info("io stats: submitted %llu completed %llu cancelled %llu ring_parks %llu",
		    (unsigned long long)st.io.submitted, (unsigned long long)st.io.completed,
		    (unsigned long long)st.io.cancelled, (unsigned long long)st.io.ring_parks);
	cr_assert_eq(st.io.submitted, 110, "operations accepted: %llu", (unsigned long long)st.io.submitted);
	cr_assert_eq(st.io.completed, 110, "callbacks queued: %llu", (unsigned long long)st.io.completed);
	cr_assert_eq(st.io.cancelled, 10, "completions with -ECANCELED: %llu", (unsigned long long)st.io.cancelled);
	finish();
}

/* ======================================================================== */
/* Files                                                                    */
/* ======================================================================== */

Test(io, file_ops, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	mode_t mask = umask(022);
	umask(mask);
	static unsigned char w[8192], r[8192];
	pat_fill(w, sizeof(w), 1000);

	int fd = IO(weft_io_openat(rt, dfd, "f", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640, CB));
	cr_assert_geq(fd, 0, "openat: %d", fd);
	struct stat sb;
	cr_assert_eq(fstatat(dfd, "f", &sb, 0), 0);
	cr_assert_eq(sb.st_mode & 0777, 0640 & ~mask, "mode %o", (unsigned)(sb.st_mode & 0777));
	cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "open flags are passed (O_CLOEXEC)");

	cr_assert_eq(IO(weft_io_write(rt, fd, w, 4096, 0, CB)), 4096);
	struct iovec wi[3] = { { w + 4096, 100 }, { w + 4196, 1000 }, { w + 5196, 2996 } };
	cr_assert_eq(IO(weft_io_writev(rt, fd, wi, 3, 4096, CB)), 4096);
	cr_assert_eq(IO(weft_io_fsync(rt, fd, 0, CB)), 0);
	cr_assert_eq(IO(weft_io_fsync(rt, fd, WEFT_IO_DATASYNC, CB)), 0);

	cr_assert_eq(IO(weft_io_read(rt, fd, r, 8192, 0, CB)), 8192);
	cr_assert_eq(memcmp(r, w, 8192), 0, "read returns what was written");
	memset(r, 0, sizeof(r));
	struct iovec ri[3] = { { r, 5000 }, { r + 5000, 1 }, { r + 5001, 3191 } };
	cr_assert_eq(IO(weft_io_readv(rt, fd, ri, 3, 0, CB)), 8192);
	cr_assert_eq(memcmp(r, w, 8192), 0, "readv returns what was written");
	cr_assert_eq(IO(weft_io_read(rt, fd, r, 100, 8192, CB)), 0, "read at EOF");
	cr_assert_eq(IO(weft_io_read(rt, fd, r, 100, 8142, CB)), 50, "short read at the end");
	cr_assert_eq(memcmp(r, w + 8142, 50), 0);

	/* On disk, through plain syscalls. */
	memset(r, 0, sizeof(r));
	cr_assert_eq(pread(fd, r, sizeof(r), 0), 8192);
	cr_assert_eq(memcmp(r, w, 8192), 0);

	/* A sparse write far out. */
	cr_assert_eq(IO(weft_io_write(rt, fd, "0123456789", 10, 1 << 20, CB)), 10);
	cr_assert_eq(fstat(fd, &sb), 0);
	cr_assert_eq(sb.st_size, (1 << 20) + 10);

	cr_assert_eq(IO(weft_io_close(rt, fd, CB)), 0);

	cr_assert_eq(IO(weft_io_openat(rt, dfd, "missing", O_RDONLY, 0, CB)), -ENOENT);
	cr_assert_eq(IO(weft_io_openat(rt, dfd, "f", O_RDWR | O_CREAT | O_EXCL, 0600, CB)), -EEXIST);
	char path[128];
	snprintf(path, sizeof(path), "%s/f", dir);
	int fd2 = IO(weft_io_openat(rt, AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0, CB));
	cr_assert_geq(fd2, 0, "openat(AT_FDCWD, absolute path): %d", fd2);
	memset(r, 0, sizeof(r));
	cr_assert_eq(IO(weft_io_read(rt, fd2, r, 4096, 4096, CB)), 4096);
	cr_assert_eq(memcmp(r, w + 4096, 4096), 0);
	cr_assert_eq(IO(weft_io_close(rt, fd2, CB)), 0);
	finish();
}

Test(io, current_position, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	unsigned char b[64];
	/* A regular file: reads and writes at (and move) the file position. */
	cr_assert_eq(lseek(data_fd, 10, SEEK_SET), 10);
	cr_assert_eq(IO(weft_io_read(rt, data_fd, b, 10, WEFT_IO_CUR, CB)), 10);
	cr_assert(pat_ok(b, 10, 10), "WEFT_IO_CUR reads at the file position");
	cr_assert_eq(lseek(data_fd, 0, SEEK_CUR), 20, "... and moves it");
	int fd = openat(dfd, "cur", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(IO(weft_io_write(rt, fd, "hello", 5, WEFT_IO_CUR, CB)), 5);
	cr_assert_eq(IO(weft_io_write(rt, fd, "world", 5, WEFT_IO_CUR, CB)), 5);
	cr_assert_eq(pread(fd, b, 64, 0), 10);
	cr_assert_eq(memcmp(b, "helloworld", 10), 0, "appends at the position");
	close(fd);

	/* A pipe. */
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	cr_assert_eq(write(p[1], "abc", 3), 3);
	cr_assert_eq(IO(weft_io_read(rt, p[0], b, sizeof(b), WEFT_IO_CUR, CB)), 3);
	cr_assert_eq(memcmp(b, "abc", 3), 0);
	struct op *o = op_new(K_ANY);
	START(o, weft_io_read(rt, p[0], o->buf, sizeof(o->buf), WEFT_IO_CUR, CB));
	assert_pending(o, 20, "a read on an empty pipe");
	cr_assert_eq(IO(weft_io_write(rt, p[1], "xyz", 3, WEFT_IO_CUR, CB)), 3);
	cr_assert_eq(wait_op(o), 3);
	cr_assert_eq(memcmp(o->buf, "xyz", 3), 0);
	struct iovec iv[2] = { { "12", 2 }, { "345", 3 } };
	cr_assert_eq(IO(weft_io_writev(rt, p[1], iv, 2, WEFT_IO_CUR, CB)), 5);
	cr_assert_eq(read(p[0], b, sizeof(b)), 5);
	cr_assert_eq(memcmp(b, "12345", 5), 0);
	close(p[0]);
	close(p[1]);
	finish();
}

/* Open, write, sync, read back, close: each step submitted by the previous
 * step's callback. */
struct script {
	int step;
	int fd;
	int done; /* atomic */
	char name[16];
	unsigned char w[3][700], r[3][700];
	struct iovec wi[3], ri[3];
};

static void script_cb(int res, void *ctx)
{
	struct script *s = ctx;
	int step = s->step++;
	int h = 0;
	switch (step) {
	case 0:
		CHECK(res >= 0, "openat %s: %d", s->name, res);
		s->fd = res;
		h = weft_io_writev(rt, s->fd, s->wi, 3, 0, script_cb, s);
		break;
	case 1:
		CHECK(res == 2100, "%s: writev %d", s->name, res);
		h = weft_io_fsync(rt, s->fd, WEFT_IO_DATASYNC, script_cb, s);
		break;
	case 2:
		CHECK(res == 0, "%s: fsync %d", s->name, res);
		h = weft_io_readv(rt, s->fd, s->ri, 3, 0, script_cb, s);
		break;
	case 3:
		CHECK(res == 2100 && memcmp(s->w, s->r, sizeof(s->w)) == 0, "%s: readv %d or wrong bytes", s->name, res);
		h = weft_io_write(rt, s->fd, "tail", 4, 2100, script_cb, s);
		break;
	case 4:
		CHECK(res == 4, "%s: write %d", s->name, res);
		h = weft_io_fsync(rt, s->fd, 0, script_cb, s);
		break;
	case 5:
		CHECK(res == 0, "%s: fsync %d", s->name, res);
		h = weft_io_read(rt, s->fd, s->r[0], 700, 2000, script_cb, s);
		break;
	case 6:
		CHECK(res == 104 && memcmp(s->r[0], s->w[2] + 600, 100) == 0 && memcmp(s->r[0] + 100, "tail", 4) == 0,
		      "%s: read at 2000: %d or wrong bytes", s->name, res);
		h = weft_io_close(rt, s->fd, script_cb, s);
		break;
	case 7:
		CHECK(res == 0, "%s: close %d", s->name, res);
		break;
	}
	if (step < 7)
		CHECK(counted(h) > 0, "%s: step %d: submit %d", s->name, step + 1, h);
	else
		store_release(&s->done, 1);
	note_callback();
}

static void script_start(struct script *s)
{
	s->step = 0;
	int h = counted(weft_io_openat(rt, dfd, s->name, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600, script_cb, s));
	CHECK(h > 0, "%s: openat submit %d", s->name, h);
}

static void script_task(void *p)
{
	script_start(p);
}

Test(io, file_chains_from_callbacks, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	enum { N = 16 };
	struct script *s = tmalloc(N * sizeof(*s));
	void *args[N / 2];
	for (int i = 0; i < N; i++) {
		snprintf(s[i].name, sizeof(s[i].name), "s%d", i);
		for (int k = 0; k < 3; k++) {
			pat_fill(s[i].w[k], 700, (uint64_t)i * 10000 + (uint64_t)k * 700);
			s[i].wi[k] = (struct iovec){ s[i].w[k], 700 };
			s[i].ri[k] = (struct iovec){ s[i].r[k], 700 };
		}
	}
	/* Half started by tasks on workers, half from this thread. */
	for (int i = 0; i < N / 2; i++)
		args[i] = &s[i];
	run_tasks(script_task, args, N / 2);
	for (int i = N / 2; i < N; i++)
		script_start(&s[i]);
	for (int i = 0; i < N; i++)
		wait_flag(&s[i].done, s[i].name);
	assert_no_failures();
	for (int i = 0; i < N; i++) {
		unsigned char b[2200];
		int fd = openat(dfd, s[i].name, O_RDONLY | O_CLOEXEC);
		cr_assert_geq(fd, 0);
		cr_assert_eq(pread(fd, b, sizeof(b), 0), 2104);
		cr_assert_eq(memcmp(b, s[i].w, 2100), 0);
		cr_assert_eq(memcmp(b + 2100, "tail", 4), 0);
		close(fd);
	}
	finish();
}

/* 4 chains of reads, each read submitted by the previous one's callback. */
struct chain {
	unsigned id, k, len;
	int done; /* atomic */
	uint64_t off;
	unsigned char buf[BLOCK];
};

static void chain_submit(struct chain *c);

static void chain_cb(int res, void *ctx)
{
	struct chain *c = ctx;
	CHECK(res == BLOCK, "chain %u read %u: res %d", c->id, c->k, res);
	CHECK(pat_ok(c->buf, BLOCK, c->off), "chain %u read %u: wrong bytes", c->id, c->k);
	if (++c->k < c->len)
		chain_submit(c);
	else
		store_release(&c->done, 1);
	note_callback();
}

static void chain_submit(struct chain *c)
{
	c->off = ((uint64_t)(c->id * 7919u + c->k * 31u) % BLOCKS) * BLOCK;
	memset(c->buf, 0, BLOCK);
	int h = counted(weft_io_read(rt, data_fd, c->buf, BLOCK, c->off, chain_cb, c));
	CHECK(h > 0, "chain %u: submit %d", c->id, h);
}

static void chain_task(void *p)
{
	chain_submit(p);
}

Test(io, read_chains, .timeout = 120)
{
	begin();
	setup_files();
	create_rt(NULL);
	enum { N = 4 };
	struct chain *c = tmalloc(N * sizeof(*c));
	for (unsigned i = 0; i < N; i++) {
		c[i].id = i;
		c[i].len = (unsigned)scaled(10000);
	}
	void *args[2] = { &c[0], &c[1] };
	run_tasks(chain_task, args, 2);
	chain_submit(&c[2]);
	chain_submit(&c[3]);
	for (int i = 0; i < N; i++)
		wait_flag(&c[i].done, "a read chain");
	for (int i = 0; i < N; i++)
		cr_assert_eq(c[i].k, c[i].len);
	finish();
}

/* ======================================================================== */
/* Poll and sockets                                                         */
/* ======================================================================== */

Test(io, poll_readiness_mask, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	const int anyway = POLLERR | POLLHUP;
	int r = IO(weft_io_poll(rt, sp[0], POLLOUT, CB));
	cr_assert(r > 0 && (r & POLLOUT), "POLLOUT on a fresh socket: %#x", r);
	cr_assert_eq(r & ~(POLLOUT | anyway), 0, "only asked-for events (and ERR/HUP): %#x", r);

	struct op *o = op_new(K_ANY);
	START(o, weft_io_poll(rt, sp[0], POLLIN, CB));
	assert_pending(o, 30, "POLLIN on an empty socket");
	cr_assert_eq(write(sp[1], "x", 1), 1);
	r = wait_op(o);
	cr_assert(r > 0 && (r & POLLIN), "POLLIN after a write: %#x", r);
	cr_assert_eq(r & ~(POLLIN | anyway), 0, "only asked-for events: %#x", r);

	r = IO(weft_io_poll(rt, sp[0], POLLIN | POLLOUT, CB));
	cr_assert_eq(r & (POLLIN | POLLOUT), POLLIN | POLLOUT, "both ready: %#x", r);
	r = IO(weft_io_poll(rt, sp[0], POLLIN, CB));
	cr_assert(r & POLLIN, "poll does not consume the data: %#x", r);
	char ch;
	cr_assert_eq(read(sp[0], &ch, 1), 1);

	o = op_new(K_ANY);
	START(o, weft_io_poll(rt, sp[0], POLLIN, CB));
	assert_pending(o, 20, "POLLIN on a drained socket");
	close(sp[1]);
	r = wait_op(o);
	cr_assert(r & (POLLIN | POLLHUP), "the peer closed: %#x", r);

	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	close(p[0]);
	r = IO(weft_io_poll(rt, p[1], POLLOUT, CB));
	cr_assert(r & POLLERR, "a pipe without reader: %#x", r);
	close(p[1]);
	close(sp[0]);
	finish();
}

Test(io, socket_send_recv, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int sp[2];
	char b1[16], b2[16];
	make_socketpair(SOCK_STREAM, sp);
	struct op *o = op_new(K_ANY);
	START(o, weft_io_recv(rt, sp[0], o->buf, sizeof(o->buf), 0, CB));
	assert_pending(o, 20, "recv on an idle socket");
	cr_assert_eq(IO(weft_io_send(rt, sp[1], "hello", 5, MSG_NOSIGNAL, CB)), 5);
	cr_assert_eq(wait_op(o), 5);
	cr_assert_eq(memcmp(o->buf, "hello", 5), 0);

	cr_assert_eq(write(sp[1], "abc", 3), 3);
	cr_assert_eq(IO(weft_io_recv(rt, sp[0], b1, sizeof(b1), MSG_PEEK, CB)), 3, "flags are passed (MSG_PEEK)");
	cr_assert_eq(IO(weft_io_recv(rt, sp[0], b2, sizeof(b2), 0, CB)), 3);
	cr_assert_eq(memcmp(b1, "abc", 3), 0);
	cr_assert_eq(memcmp(b2, "abc", 3), 0);

	cr_assert_eq(shutdown(sp[1], SHUT_WR), 0);
	cr_assert_eq(IO(weft_io_recv(rt, sp[0], b1, sizeof(b1), 0, CB)), 0, "the peer closed: 0");
	close(sp[1]);
	int r = IO(weft_io_send(rt, sp[0], "x", 1, MSG_NOSIGNAL, CB));
	cr_assert(r == -EPIPE || r == -ECONNRESET, "send to a closed peer: %d", r);
	close(sp[0]);

	/* Datagrams keep their boundaries. */
	int d[2];
	make_socketpair(SOCK_DGRAM, d);
	r = IO(weft_io_recv(rt, d[0], b1, sizeof(b1), MSG_DONTWAIT, CB));
	cr_assert_eq(r, -EAGAIN, "MSG_DONTWAIT on an empty socket: %d", r);
	static unsigned char big[1000], got[2000];
	pat_fill(big, sizeof(big), 7);
	const int sizes[] = { 1, 100, 1000 };
	for (int i = 0; i < 3; i++)
		cr_assert_eq(IO(weft_io_send(rt, d[1], big, (size_t)sizes[i], 0, CB)), sizes[i]);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(IO(weft_io_recv(rt, d[0], got, sizeof(got), 0, CB)), sizes[i]);
		cr_assert_eq(memcmp(got, big, (size_t)sizes[i]), 0);
	}
	close(d[0]);
	close(d[1]);
	finish();
}

Test(io, recv_waitall, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	struct op *o = op_new(K_ANY);
	START(o, weft_io_recv(rt, sp[0], o->buf, 10, MSG_WAITALL, CB));
	cr_assert_eq(write(sp[1], "0123", 4), 4);
	assert_pending(o, 30, "recv(10, MSG_WAITALL) with 4 bytes there");
	cr_assert_eq(write(sp[1], "456789", 6), 6);
	cr_assert_eq(wait_op(o), 10);
	cr_assert_eq(memcmp(o->buf, "0123456789", 10), 0);
	close(sp[0]);
	close(sp[1]);
	finish();
}

/* Moves len bytes through one socket, one send/recv after the other, each
 * submitted by the previous one's callback. */
struct pump {
	int fd;
	bool send;
	int finished; /* atomic */
	int err;
	unsigned char *buf;
	size_t len, done;
};

static void pump_next(struct pump *p);

static void pump_cb(int res, void *ctx)
{
	struct pump *p = ctx;
	if (res <= 0) {
		p->err = res ? res : -EPIPE;
		store_release(&p->finished, 1);
	} else {
		p->done += (size_t)res;
		if (p->done < p->len)
			pump_next(p);
		else
			store_release(&p->finished, 1);
	}
	note_callback();
}

static void pump_next(struct pump *p)
{
	size_t n = p->len - p->done;
	if (n > 65536)
		n = 65536;
	int h = p->send ? weft_io_send(rt, p->fd, p->buf + p->done, n, MSG_NOSIGNAL, pump_cb, p)
			: weft_io_recv(rt, p->fd, p->buf + p->done, n, 0, pump_cb, p);
	CHECK(counted(h) > 0, "pump submit %d", h);
}

Test(io, tcp_accept_connect_transfer, .timeout = 120)
{
	begin();
	create_rt(NULL);
	struct sockaddr_in la, peer, cl;
	int l = tcp_listener(&la);
	socklen_t plen = sizeof(peer), cll = sizeof(cl);
	struct op *acc = op_new(K_ANY);
	START(acc, weft_io_accept(rt, l, (struct sockaddr *)&peer, &plen, CB));
	assert_pending(acc, 20, "accept with nobody connecting");
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(IO(weft_io_connect(rt, c, (struct sockaddr *)&la, sizeof(la), CB)), 0);
	int a = wait_op(acc);
	cr_assert_geq(a, 0, "accept: %d", a);
	cr_assert_eq(getsockname(c, (struct sockaddr *)&cl, &cll), 0);
	cr_assert_eq(plen, sizeof(peer), "accept fills in the address length");
	cr_assert_eq(peer.sin_family, AF_INET);
	cr_assert_eq(peer.sin_port, cl.sin_port, "accept's address is the client's");
	cr_assert_eq(peer.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	cr_assert(fcntl(a, F_GETFD) & FD_CLOEXEC, "accepted fds are close-on-exec");
	nodelay(a);
	nodelay(c);

	/* 1 MiB each way at once, pumped by callbacks. */
	size_t n = 1u << 20;
	unsigned char *src1 = tmalloc(n), *src2 = tmalloc(n), *dst1 = tmalloc(n), *dst2 = tmalloc(n);
	pat_fill(src1, n, 1);
	pat_fill(src2, n, 2);
	struct pump p[4] = {
		{ .fd = c, .send = true, .buf = src1, .len = n },
		{ .fd = a, .send = false, .buf = dst1, .len = n },
		{ .fd = a, .send = true, .buf = src2, .len = n },
		{ .fd = c, .send = false, .buf = dst2, .len = n },
	};
	for (int i = 0; i < 4; i++)
		pump_next(&p[i]);
	for (int i = 0; i < 4; i++) {
		wait_flag(&p[i].finished, "a 1 MiB transfer");
		cr_assert_eq(p[i].err, 0, "pump %d: %d", i, p[i].err);
	}
	cr_assert_eq(memcmp(dst1, src1, n), 0, "client to server bytes");
	cr_assert_eq(memcmp(dst2, src2, n), 0, "server to client bytes");

	/* Accept without an address. */
	struct op *acc2 = op_new(K_ANY);
	START(acc2, weft_io_accept(rt, l, NULL, NULL, CB));
	int c2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(c2, (struct sockaddr *)&la, sizeof(la)), 0);
	int a2 = wait_op(acc2);
	cr_assert_geq(a2, 0, "accept(NULL, NULL): %d", a2);

	/* Nobody listens. */
	struct sockaddr_in dead;
	socklen_t dl = sizeof(dead);
	int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in any = { .sin_family = AF_INET };
	any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(t, (struct sockaddr *)&any, sizeof(any)), 0);
	cr_assert_eq(getsockname(t, (struct sockaddr *)&dead, &dl), 0);
	close(t);
	int c3 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(IO(weft_io_connect(rt, c3, (struct sockaddr *)&dead, sizeof(dead), CB)), -ECONNREFUSED);
	close(c3);
	close(c2);
	close(a2);
	close(a);
	close(c);
	close(l);
	finish();
}

/* Ping-pong of 8-byte counters between two sockets, driven purely by
 * callbacks: A sends 2k, B answers 2k+1, A checks and sends 2k+2. */
struct pp;
struct pp_side {
	struct pp *pp;
	int fd;
	bool a;
	uint64_t val; /* A: last sent; B: next expected */
	size_t got, sent;
	unsigned char buf[8];
};
struct pp {
	struct pp_side s[2];
	uint64_t rounds, target;
	int done, b_eof; /* atomic */
};

static void pp_send_cb(int res, void *ctx);
static void pp_recv_cb(int res, void *ctx);

static void pp_send(struct pp_side *s)
{
	int h = counted(weft_io_send(rt, s->fd, s->buf + s->sent, 8 - s->sent, MSG_NOSIGNAL, pp_send_cb, s));
	CHECK(h > 0, "ping-pong send: %d", h);
}

static void pp_recv(struct pp_side *s)
{
	int h = counted(weft_io_recv(rt, s->fd, s->buf + s->got, 8 - s->got, 0, pp_recv_cb, s));
	CHECK(h > 0, "ping-pong recv: %d", h);
}

static void pp_send_cb(int res, void *ctx)
{
	struct pp_side *s = ctx;
	if (res <= 0) {
		CHECK(0, "ping-pong send completed with %d", res);
	} else {
		s->sent += (size_t)res;
		if (s->sent < 8) {
			pp_send(s);
		} else {
			s->got = 0;
			pp_recv(s);
		}
	}
	note_callback();
}

static void pp_recv_cb(int res, void *ctx)
{
	struct pp_side *s = ctx;
	struct pp *pp = s->pp;
	if (res == 0) {
		CHECK(!s->a && load_acquire(&pp->done), "ping-pong: EOF before the end");
		store_release(&pp->b_eof, 1);
	} else if (res < 0) {
		CHECK(0, "ping-pong recv completed with %d", res);
	} else {
		s->got += (size_t)res;
		if (s->got < 8) {
			pp_recv(s);
		} else {
			uint64_t v;
			memcpy(&v, s->buf, 8);
			if (s->a) {
				CHECK(v == s->val + 1, "ping-pong: A got %llu after sending %llu", (unsigned long long)v,
				      (unsigned long long)s->val);
				if (++pp->rounds == pp->target) {
					store_release(&pp->done, 1);
				} else {
					s->val += 2;
					memcpy(s->buf, &s->val, 8);
					s->sent = 0;
					pp_send(s);
				}
			} else {
				CHECK(v == s->val, "ping-pong: B got %llu, expected %llu", (unsigned long long)v,
				      (unsigned long long)s->val);
				v++;
				s->val += 2;
				memcpy(s->buf, &v, 8);
				s->sent = 0;
				pp_send(s);
			}
		}
	}
	note_callback();
}

static void pp_start_a(void *p)
{
	struct pp_side *a = p;
	a->val = 0;
	memset(a->buf, 0, 8);
	a->sent = 0;
	pp_send(a);
}

static void pingpong(int fds[2], bool start_on_worker)
{
	struct pp *pp = tmalloc(sizeof(*pp));
	pp->target = (uint64_t)scaled(20000);
	pp->s[0] = (struct pp_side){ .pp = pp, .fd = fds[0], .a = true };
	pp->s[1] = (struct pp_side){ .pp = pp, .fd = fds[1], .a = false, .val = 0 };
	pp->s[1].got = 0;
	pp_recv(&pp->s[1]);
	if (start_on_worker)
		run_task(pp_start_a, &pp->s[0]);
	else
		pp_start_a(&pp->s[0]);
	double t0 = now_sec();
	wait_flag(&pp->done, "the ping-pong");
	double dt = now_sec() - t0;
	cr_log_info("ping-pong: %llu round trips, %.1f us each", (unsigned long long)pp->target,
		    dt * 1e6 / (double)pp->target);
	cr_assert_eq(shutdown(fds[0], SHUT_WR), 0);
	wait_flag(&pp->b_eof, "B's recv seeing EOF");
	assert_no_failures();
}

Test(io, pingpong_socketpair, .timeout = 120)
{
	begin();
	create_rt(NULL);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	pingpong(sp, true);
	close(sp[0]);
	close(sp[1]);
	finish();
}

Test(io, pingpong_tcp, .timeout = 120)
{
	begin();
	create_rt(NULL);
	int fds[2];
	tcp_pair(fds);
	pingpong(fds, false);
	close(fds[0]);
	close(fds[1]);
	finish();
}

/* ======================================================================== */
/* Many submitters                                                          */
/* ======================================================================== */

struct batch {
	struct op *ops;
	long n;
	uint64_t seed;
};

static int batch_go;

static void batch_task(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		int h = submit_kind(&b->ops[i], simple_kinds[(b->seed + (uint64_t)i) % 3], b->seed + (uint64_t)i, op_cb);
		CHECK(h > 0, "a worker's submit: %d", h);
	}
}

static void *batch_thread(void *p)
{
	while (!load_acquire(&batch_go))
		sched_yield();
	batch_task(p);
	return NULL;
}

static void check_simple_ops(struct op *ops, long n, bool may_cancel)
{
	for (long i = 0; i < n; i++) {
		struct op *o = &ops[i];
		cr_assert_eq(load_acquire(&o->calls), 1, "op %ld (kind %d): %d callbacks", i, o->kind, o->calls);
		if (!may_cancel)
			cr_assert_neq(o->res, -ECANCELED, "op %ld (kind %d) cancelled", i, o->kind);
		cr_assert_geq(o->worker, 0, "op %ld called back off a worker", i);
	}
}

Test(io, submit_from_threads_and_tasks, .timeout = 180)
{
	begin();
	setup_files();
	create_rt(NULL);
	enum { T = 4 };
	long k = scaled(20000);
	struct op *ops = ops_new((size_t)(k * T + k), K_ANY);
	struct batch tb[T];
	pthread_t th[T];
	store_release(&batch_go, 0);
	for (int t = 0; t < T; t++) {
		tb[t] = (struct batch){ .ops = ops + t * k, .n = k, .seed = (uint64_t)t * 1000003u };
		cr_assert_eq(pthread_create(&th[t], NULL, batch_thread, &tb[t]), 0);
	}
	/* Tasks on the workers submit k more, 64 each, while the threads run. */
	long ntasks = (k + 63) / 64;
	struct batch *wb = tmalloc((size_t)ntasks * sizeof(*wb));
	void **args = tmalloc((size_t)ntasks * sizeof(*args));
	for (long i = 0; i < ntasks; i++) {
		long from = i * 64, cnt = k - from < 64 ? k - from : 64;
		wb[i] = (struct batch){ .ops = ops + T * k + from, .n = cnt, .seed = 77 + (uint64_t)from };
		args[i] = &wb[i];
	}
	store_release(&batch_go, 1);
	run_tasks(batch_task, args, (int)ntasks);
	for (int t = 0; t < T; t++)
		pthread_join(th[t], NULL);
	assert_no_failures();
	wait_counter(&n_callbacks, (uint64_t)(k * T + k), "callbacks");
	check_simple_ops(ops, k * T + k, false);
	finish();
}

/* Threads that submit and exit at once, callbacks still pending. */
static void *short_lived_thread(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		b->ops[i].ns = (uint64_t)(i % 4) * 1000000u;
		int h = submit_kind(&b->ops[i], simple_kinds[(b->seed + (uint64_t)i) % 3], b->seed + (uint64_t)i, op_cb);
		CHECK(h > 0, "a short-lived thread's submit: %d", h);
	}
	return NULL;
}

Test(io, submit_from_short_lived_threads, .timeout = 120)
{
	begin();
	setup_files();
	create_rt(NULL);
	long nthreads = scaled(400) < 20 ? 20 : scaled(400);
	enum { PER = 16, AT_ONCE = 8 };
	struct op *ops = ops_new((size_t)(nthreads * PER), K_ANY);
	struct batch *b = tmalloc((size_t)nthreads * sizeof(*b));
	for (long t = 0; t < nthreads; t += AT_ONCE) {
		pthread_t th[AT_ONCE];
		int k = 0;
		for (; k < AT_ONCE && t + k < nthreads; k++) {
			b[t + k] = (struct batch){ .ops = ops + (t + k) * PER, .n = PER, .seed = (uint64_t)(t + k) };
			cr_assert_eq(pthread_create(&th[k], NULL, short_lived_thread, &b[t + k]), 0);
		}
		for (int j = 0; j < k; j++)
			pthread_join(th[j], NULL);
	}
	wait_counter(&n_callbacks, (uint64_t)(nthreads * PER), "callbacks of ops from exited threads");
	check_simple_ops(ops, nthreads * PER, false);
	finish();
}

/* Callbacks are tasks: they may spawn and acquire components. */
static uint64_t spawned_ran, granted;

static void spawned_task(void *p)
{
	(void)p;
	fetch_add_acq_rel(&spawned_ran, 1);
}

static void grant_cb(struct weft_grant *g, int status, void *ctx)
{
	(void)ctx;
	CHECK(status == 0, "grant status %d", status);
	if (g)
		weft_release(g);
	fetch_add_acq_rel(&granted, 1);
}

static void spawning_cb(int res, void *ctx)
{
	uintptr_t i = (uintptr_t)ctx;
	CHECK(res == 0, "timeout: %d", res);
	CHECK(weft_spawn(rt, spawned_task, NULL) == 0, "weft_spawn from a callback");
	struct weft_dep d = { (uint32_t)(i % 16), WEFT_WRITE };
	struct weft_grant *g;
	int r = weft_try_acquire(rt, &d, 1, &g);
	CHECK(r == 0 || r == -EBUSY, "weft_try_acquire from a callback: %d", r);
	if (r == 0)
		weft_release(g);
	CHECK(weft_acquire(rt, &d, 1, grant_cb, NULL) == 0, "weft_acquire from a callback");
	note_callback();
}

Test(io, callbacks_spawn_and_acquire, .timeout = 60)
{
	begin();
	create_rt(NULL);
	store_release(&spawned_ran, 0);
	store_release(&granted, 0);
	long n = scaled(2000);
	for (long i = 0; i < n; i++)
		cr_assert_gt(counted(weft_io_timeout(rt, 0, spawning_cb, (void *)(uintptr_t)i)), 0);
	wait_counter(&spawned_ran, (uint64_t)n, "tasks spawned by callbacks");
	wait_counter(&granted, (uint64_t)n, "grants asked for by callbacks");
	finish();
}

/* ======================================================================== */
/* Timeouts                                                                 */
/* ======================================================================== */

static void timeout_batch_task(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		struct op *o = &b->ops[i];
		int h = submit_kind(o, K_TIMEOUT, 0, op_cb);
		CHECK(h > 0, "timeout submit: %d", h);
	}
}

Test(io, timeouts_never_early, .timeout = 60)
{
	static const uint64_t ns[] = { 0, 1, 1000, 50000, 1000000, 2500000, 10000000, 30000000 };
	enum { NNS = sizeof(ns) / sizeof(ns[0]), EACH = 4 };
	begin();
	create_rt(NULL);
	struct op *ops = ops_new(NNS * EACH * 2, K_TIMEOUT);
	struct batch b[NNS];
	void *args[NNS];
	for (int i = 0; i < NNS; i++) {
		for (int j = 0; j < EACH * 2; j++)
			ops[i * EACH * 2 + j].ns = ns[i];
		b[i] = (struct batch){ .ops = ops + i * EACH * 2 + EACH, .n = EACH };
		args[i] = &b[i];
	}
	/* Half from this thread, half from tasks on workers. */
	for (int i = 0; i < NNS; i++)
		for (int j = 0; j < EACH; j++) {
			struct op *o = &ops[i * EACH * 2 + j];
			START(o, weft_io_timeout(rt, o->ns, CB));
		}
	run_tasks(timeout_batch_task, args, NNS);
	for (int i = 0; i < NNS * EACH * 2; i++)
		cr_assert_eq(wait_op(&ops[i]), 0, "timeout %llu ns", (unsigned long long)ops[i].ns);
	assert_no_failures(); /* op_record checked "never early" */
	for (int i = 0; i < NNS * EACH * 2; i++) {
		uint64_t el = ops[i].t1 - ops[i].t0;
		cr_assert_geq(el, ops[i].ns, "a %llu ns timeout after %llu ns", (unsigned long long)ops[i].ns,
			      (unsigned long long)el);
	}
	for (int i = 0; i < NNS; i++) {
		struct op *o = &ops[i * EACH * 2];
		cr_log_info("timeout %llu ns: called back after %llu ns", (unsigned long long)ns[i],
			    (unsigned long long)(o->t1 - o->t0));
	}
	finish();
}

Test(io, many_timers, .timeout = 120)
{
	begin();
	create_rt(NULL);
	long n = scaled(20000);
	struct op *ops = ops_new((size_t)n, K_TIMEOUT);
	for (long i = 0; i < n; i++)
		ops[i].ns = lcg() % 20000000;
	enum { NT = 8 };
	long half = n / 2, per = (n - half + NT - 1) / NT;
	struct batch b[NT];
	void *args[NT];
	int nt = 0;
	for (long from = half; from < n; from += per, nt++) {
		b[nt] = (struct batch){ .ops = ops + from, .n = from + per > n ? n - from : per };
		args[nt] = &b[nt];
	}
	for (long i = 0; i < half; i++)
		START(&ops[i], weft_io_timeout(rt, ops[i].ns, CB));
	run_tasks(timeout_batch_task, args, nt);
	wait_counter(&n_callbacks, (uint64_t)n, "timer callbacks");
	assert_no_failures();
	for (long i = 0; i < n; i++) {
		cr_assert_eq(ops[i].res, 0);
		cr_assert_geq(ops[i].t1 - ops[i].t0, ops[i].ns, "timer %ld fired early", i);
	}
	finish();
}

/* ======================================================================== */
/* Cancellation                                                             */
/* ======================================================================== */

static void cancel_task(void *p)
{
	struct op *o = p;
	o->cancel_res = weft_io_cancel(rt, o->handle);
}

static void recv_task(void *p)
{
	struct op *o = p;
	o->t0 = now_ns();
	o->handle = counted(weft_io_recv(rt, (int)o->off, o->buf, sizeof(o->buf), 0, op_cb, o));
	CHECK(o->handle > 0, "recv submit from a worker: %d", o->handle);
}

Test(io, cancel_idle_operations, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	struct sockaddr_in la;
	int l = tcp_listener(&la);
	struct op *recv = op_new(K_ANY), *tmo = op_new(K_TIMEOUT), *pol = op_new(K_ANY), *acc = op_new(K_ANY);
	tmo->ns = 60ull * 1000000000u;
	START(recv, weft_io_recv(rt, sp[0], recv->buf, sizeof(recv->buf), 0, CB));
	START(tmo, weft_io_timeout(rt, tmo->ns, CB));
	START(pol, weft_io_poll(rt, sp[1], POLLIN, CB));
	START(acc, weft_io_accept(rt, l, NULL, NULL, CB));
	struct op *all[] = { recv, tmo, pol, acc };
	const char *names[] = { "recv", "timeout", "poll", "accept" };
	assert_pending(recv, 30, "recv on an idle socket");
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(load_acquire(&all[i]->calls), 0, "%s completed by itself", names[i]);
		cr_assert_eq(weft_io_cancel(rt, all[i]->handle), 0, "cancel %s", names[i]);
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(wait_op(all[i]), -ECANCELED, "cancelled %s", names[i]);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(weft_io_cancel(rt, all[i]->handle), -ENOENT, "cancel of a completed %s", names[i]);

	/* Cancelled right after submit (the op may not have reached a backend). */
	struct op *fast = op_new(K_TIMEOUT);
	fast->ns = 60ull * 1000000000u;
	START(fast, weft_io_timeout(rt, fast->ns, CB));
	cr_assert_eq(weft_io_cancel(rt, fast->handle), 0);
	cr_assert_eq(wait_op(fast), -ECANCELED);

	/* Submitted by a task, cancelled by another task. */
	struct op *wr = op_new(K_ANY);
	wr->off = (uint64_t)sp[0];
	run_task(recv_task, wr);
	cr_assert_gt(wr->handle, 0);
	assert_pending(wr, 20, "recv on an idle socket (from a worker)");
	run_task(cancel_task, wr);
	cr_assert_eq(wr->cancel_res, 0, "cancel from a worker: %d", wr->cancel_res);
	cr_assert_eq(wait_op(wr), -ECANCELED);

	/* The cancelled recvs took no data: the next recv gets it all. */
	cr_assert_eq(write(sp[1], "zz", 2), 2);
	char b[8];
	cr_assert_eq(IO(weft_io_recv(rt, sp[0], b, sizeof(b), 0, CB)), 2, "data after cancelled recvs");
	cr_assert_eq(memcmp(b, "zz", 2), 0);

	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_assert_geq(st.io.cancelled, 6, "stats count cancelled completions: %llu", (unsigned long long)st.io.cancelled);
	close(sp[0]);
	close(sp[1]);
	close(l);
	finish();
}

/* A read on an idle pipe is not a regular file: it must be cancellable. */
Test(io, cancel_pipe_read, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	struct op *o = op_new(K_ANY);
	START(o, weft_io_read(rt, p[0], o->buf, sizeof(o->buf), WEFT_IO_CUR, CB));
	assert_pending(o, 20, "a read on an empty pipe");
	int c = weft_io_cancel(rt, o->handle);
	cr_assert_eq(c, 0, "cancel of a pending pipe read: %d", c);
	double t0 = now_sec();
	while (!load_acquire(&o->calls) && now_sec() - t0 < 3)
		usleep(1000);
	bool stuck = !load_acquire(&o->calls);
	if (stuck) /* let it finish so the test can report and end */
		cr_assert_eq(write(p[1], "x", 1), 1);
	int r = wait_op(o);
	cr_assert_not(stuck, "weft_io_cancel did not stop a read blocked on an empty pipe: no callback for 3 s, then "
			     "res %d once data arrived",
		      r);
	cr_assert_eq(r, -ECANCELED);
	close(p[0]);
	close(p[1]);
	finish();
}

Test(io, cancel_bad_handles, .timeout = 60)
{
	begin();
	create_rt(NULL);
	cr_assert_eq(weft_io_cancel(rt, 0), -EINVAL);
	cr_assert_eq(weft_io_cancel(rt, -1), -EINVAL);
	cr_assert_eq(weft_io_cancel(rt, INT_MIN), -EINVAL);
	cr_assert_eq(weft_io_cancel(NULL, 1), -EINVAL);
	cr_assert_eq(weft_io_cancel(NULL, 0), -EINVAL);
	/* Handles that never named an operation. */
	const int never[] = { 1, 2, 12345, (1 << 20) - 1, 1 << 20, (1 << 20) + 5, INT_MAX, 0x55555555 };
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
		cr_assert_eq(weft_io_cancel(rt, never[i]), -ENOENT, "handle %#x before any submit", never[i]);
	struct op *o = op_new(K_TIMEOUT);
	START(o, weft_io_timeout(rt, 0, CB));
	cr_assert_eq(wait_op(o), 0);
	/* The callback has started: the operation is over. */
	usleep(1000);
	cr_assert_eq(weft_io_cancel(rt, o->handle), -ENOENT, "cancel of a completed op");
	for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
		if (never[i] != o->handle)
			cr_assert_eq(weft_io_cancel(rt, never[i]), -ENOENT, "handle %#x", never[i]);
	finish();
}

/* A callback that cancels its own operation: the operation has completed,
 * so -ENOENT, and no deadlock. */
static int self_cancel_res;

static void self_cancel_cb(int res, void *ctx)
{
	struct op *o = ctx;
	int h = load_acquire(&o->handle);
	CHECK(h > 0, "the handle was published before the 50 ms timer fired");
	store_release(&self_cancel_res, h > 0 ? weft_io_cancel(rt, h) : -ENOENT);
	op_record(o, res);
	note_callback();
}

Test(io, cancel_from_own_callback, .timeout = 60)
{
	begin();
	create_rt(NULL);
	for (int i = 0; i < 20; i++) {
		struct op *o = op_new(K_TIMEOUT);
		o->ns = 50 * 1000000ull;
		store_release(&self_cancel_res, 1);
		int h = counted(weft_io_timeout(rt, o->ns, self_cancel_cb, o));
		cr_assert_gt(h, 0);
		store_release(&o->handle, h);
		cr_assert_eq(wait_op(o), 0);
		cr_assert_eq(load_acquire(&self_cancel_res), -ENOENT, "cancel from the op's own callback: %d",
			     load_acquire(&self_cancel_res));
	}
	finish();
}

/* Handles of completed operations stay dead when their slots are reused. */
Test(io, cancel_stale_handle, .timeout = 60)
{
	begin();
	create_rt(NULL);
	enum { N = 300 };
	int *old = tmalloc(N * sizeof(*old));
	for (int i = 0; i < N; i++) {
		struct op *o = op_new(K_TIMEOUT);
		START(o, weft_io_timeout(rt, 0, CB));
		wait_op(o);
		old[i] = o->handle;
	}
	usleep(2000);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	struct op *live[8];
	for (int j = 0; j < 8; j++) {
		live[j] = op_new(K_RECV1);
		START(live[j], weft_io_recv(rt, sp[0], live[j]->buf, 1, 0, CB));
	}
	for (int i = 0; i < N; i++) {
		for (int j = 0; j < 8; j++)
			cr_assert_neq(old[i], live[j]->handle, "a live op got the handle of a completed one");
		cr_assert_eq(weft_io_cancel(rt, old[i]), -ENOENT, "stale handle %#x", old[i]);
	}
	usleep(20 * 1000);
	for (int j = 0; j < 8; j++)
		cr_assert_eq(load_acquire(&live[j]->calls), 0, "a stale handle cancelled a live op (res %d)", live[j]->res);
	cr_assert_eq(write(sp[1], "abcdefgh", 8), 8);
	for (int j = 0; j < 8; j++)
		cr_assert_eq(wait_op(live[j]), 1);
	close(sp[0]);
	close(sp[1]);
	finish();
}

/* Cancel racing completion: exactly one callback, with either result. */
static struct op *race_ops;
static long race_n, race_published;

static void *race_canceller(void *p)
{
	(void)p;
	for (long i = 0; i < race_n; i++) {
		while (load_acquire(&race_published) <= i)
			sched_yield();
		struct op *o = &race_ops[i];
		o->cancel_res = weft_io_cancel(rt, o->handle);
	}
	return NULL;
}

static void race_task(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		struct op *o = &b->ops[i];
		o->ns = ((uint64_t)i * 7919u) % 20000;
		int h = submit_kind(o, simple_kinds[i % 3], (uint64_t)i, op_cb);
		CHECK(h > 0, "submit %d", h);
		if (h > 0)
			o->cancel_res = weft_io_cancel(rt, h);
	}
}

static long check_race_ops(struct op *ops, long n, const char *what)
{
	long cancelled = 0;
	for (long i = 0; i < n; i++) {
		struct op *o = &ops[i];
		cr_assert_eq(load_acquire(&o->calls), 1, "%s %ld: %d callbacks", what, i, o->calls);
		cr_assert(o->cancel_res == 0 || o->cancel_res == -ENOENT, "%s %ld: cancel answered %d", what, i,
			  o->cancel_res);
		if (o->cancel_res == -ENOENT)
			cr_assert_neq(o->res, -ECANCELED, "%s %ld: cancel said -ENOENT (already completed) yet the op "
							  "was cancelled",
				      what, i);
		cancelled += o->res == -ECANCELED;
	}
	return cancelled;
}

Test(io, cancel_races_completion, .timeout = 180)
{
	begin();
	setup_files();
	create_rt(NULL);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	long n = scaled(20000);

	/* 1. Submit and cancel at once, from this thread. */
	struct op *a = ops_new((size_t)n, K_ANY);
	long nrecv = 0;
	for (long i = 0; i < n; i++)
		nrecv += i % 4 == 3;
	unsigned char *bytes = tmalloc((size_t)nrecv);
	cr_assert_eq(write(sp[1], bytes, (size_t)nrecv), nrecv, "one byte ready for every recv");
	for (long i = 0; i < n; i++) {
		struct op *o = &a[i];
		if (i % 4 == 3) {
			o->kind = K_RECV1;
			START(o, weft_io_recv(rt, sp[0], o->buf, 1, 0, CB));
		} else {
			o->ns = lcg() % 30000;
			cr_assert_gt(submit_kind(o, simple_kinds[i % 4], (uint64_t)i, op_cb), 0);
		}
		o->cancel_res = weft_io_cancel(rt, o->handle);
		if (i % 7 == 0) {
			int again = weft_io_cancel(rt, o->handle);
			cr_assert(again == 0 || again == -ENOENT, "a second cancel: %d", again);
		}
	}
	wait_quiet("submit+cancel from one thread");
	long ca = check_race_ops(a, n, "same thread");

	/* 2. Cancelled by another thread as soon as the handle is out. */
	race_ops = ops_new((size_t)n, K_ANY);
	race_n = n;
	store_release(&race_published, 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, race_canceller, NULL), 0);
	for (long i = 0; i < n; i++) {
		struct op *o = &race_ops[i];
		o->ns = lcg() % 30000;
		cr_assert_gt(submit_kind(o, simple_kinds[i % 3], (uint64_t)i, op_cb), 0);
		store_release(&race_published, i + 1);
	}
	pthread_join(th, NULL);
	wait_quiet("submit here, cancel there");
	long cb = check_race_ops(race_ops, n, "other thread");

	/* 3. Submitted and cancelled by tasks on workers. */
	long per = 64, ntasks = (n + per - 1) / per;
	struct op *c = ops_new((size_t)n, K_ANY);
	struct batch *bt = tmalloc((size_t)ntasks * sizeof(*bt));
	void **args = tmalloc((size_t)ntasks * sizeof(*args));
	for (long t = 0; t < ntasks; t++) {
		long from = t * per;
		bt[t] = (struct batch){ .ops = c + from, .n = n - from < per ? n - from : per };
		args[t] = &bt[t];
	}
	run_tasks(race_task, args, (int)ntasks);
	wait_quiet("submit+cancel from workers");
	long cc = check_race_ops(c, n, "worker");
	cr_log_info("cancel races: %ld + %ld + %ld of 3 x %ld were cancelled", ca, cb, cc, n);
	close(sp[0]);
	close(sp[1]);
	finish();
}

/* ======================================================================== */
/* Small rings, many operations                                             */
/* ======================================================================== */

static void print_io_stats(const char *what)
{
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_log_info("%s: backend %u submitted %llu completed %llu cancelled %llu sq_full %llu backlogged %llu "
		    "cq_overflows %llu ring_parks %llu",
		    what, st.io.backend, (unsigned long long)st.io.submitted, (unsigned long long)st.io.completed,
		    (unsigned long long)st.io.cancelled, (unsigned long long)st.io.sq_full,
		    (unsigned long long)st.io.backlogged, (unsigned long long)st.io.cq_overflows,
		    (unsigned long long)st.io.ring_parks);
}

/* One task puts all n operations in flight at once. */
Test(io, overflow_burst_from_one_task, .timeout = 300)
{
	begin();
	setup_files();
	struct weft_config cfg = { .workers = 2, .io_entries = 8 };
	create_rt(&cfg);
	long n = scaled(100000);
	struct op *ops = ops_new((size_t)n, K_ANY);
	struct batch b = { .ops = ops, .n = n, .seed = 0 };
	run_task(batch_task, &b);
	assert_no_failures();
	wait_counter(&n_callbacks, (uint64_t)n, "callbacks of the burst");
	check_simple_ops(ops, n, false);
	print_io_stats("io_entries=8, one burst");
	struct weft_stats st;
	weft_stats(rt, &st);
	cr_assert_eq(st.io.submitted, (uint64_t)n);
	cr_assert_eq(st.io.completed, (uint64_t)n);
	finish();
}

/* Every completion submits a replacement until n; bursts from two outside
 * threads on top. */
static struct op *refill_ops;
static long refill_n, refill_next;

static void refill_cb(int res, void *ctx)
{
	op_record(ctx, res);
	long i = fetch_add_acq_rel(&refill_next, 1);
	if (i < refill_n) {
		int h = submit_kind(&refill_ops[i], simple_kinds[i % 3], (uint64_t)i, refill_cb);
		CHECK(h > 0, "refill submit: %d", h);
	}
	note_callback();
}

static void refill_task(void *p)
{
	long burst = (long)(intptr_t)p;
	for (long k = 0; k < burst; k++) {
		long i = fetch_add_acq_rel(&refill_next, 1);
		if (i >= refill_n)
			break;
		int h = submit_kind(&refill_ops[i], simple_kinds[i % 3], (uint64_t)i, refill_cb);
		CHECK(h > 0, "refill submit: %d", h);
	}
}

static void *refill_thread(void *p)
{
	for (int round = 0; round < 20; round++) {
		refill_task(p);
		usleep(500);
	}
	return NULL;
}

Test(io, overflow_refill, .timeout = 300)
{
	begin();
	setup_files();
	struct weft_config cfg = { .workers = 2, .io_entries = 8 };
	create_rt(&cfg);
	refill_n = scaled(100000);
	refill_ops = ops_new((size_t)refill_n, K_ANY);
	store_release(&refill_next, 0);
	void *args[2] = { (void *)(intptr_t)2048, (void *)(intptr_t)2048 };
	run_tasks(refill_task, args, 2);
	pthread_t th[2];
	for (int t = 0; t < 2; t++)
		cr_assert_eq(pthread_create(&th[t], NULL, refill_thread, (void *)(intptr_t)256), 0);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	wait_counter(&n_callbacks, (uint64_t)refill_n, "refill callbacks");
	wait_quiet("refill");
	check_simple_ops(refill_ops, refill_n, false);
	print_io_stats("io_entries=8, refilled");
	finish();
}

/* Ring sizes that are not powers of two, tiny, or beyond what io_uring
 * takes: weft_create refuses them with -EINVAL, or the I/O works. */
Test(io, odd_ring_sizes, .timeout = 120)
{
	static const unsigned sizes[] = { 1, 3, 7, 100, 4096, 1u << 20, UINT_MAX };
	begin();
	setup_files();
	int fds0 = count_fds(), thr0 = count_threads();
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		struct weft_config cfg = { .workers = 2, .io_entries = sizes[k] };
		weft_rt *r = NULL;
		int c = weft_create(&r, &cfg);
		cr_log_info("io_entries %u: weft_create %d", sizes[k], c);
		if (c < 0) {
			cr_assert_eq(c, -EINVAL, "io_entries %u: weft_create %d", sizes[k], c);
			cr_assert_eq(count_fds(), fds0);
			cr_assert_eq(count_threads(), thr0);
			continue;
		}
		rt = r;
		struct op *ops = ops_new(300, K_ANY);
		struct batch b = { .ops = ops, .n = 150 }, m = { .ops = ops + 150, .n = 150, .seed = 1 };
		run_task(batch_task, &b);
		batch_task(&m);
		wait_quiet("ops on odd-sized rings");
		assert_no_failures();
		for (int i = 0; i < 300; i++)
			cr_assert(ops[i].calls == 1 && ops[i].res >= 0, "io_entries %u: op %d (kind %d): %d callbacks, res %d",
				  sizes[k], i, ops[i].kind, ops[i].calls, ops[i].res);
		cycle_destroy();
	}
	end_checks();
}

/* ======================================================================== */
/* Fallback and configuration                                               */
/* ======================================================================== */

static int fake_ring_err;
static uint64_t ring_init_calls;

static int failing_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
	(void)entries;
	(void)ring;
	(void)p;
	fetch_add_acq_rel(&ring_init_calls, 1);
	return fake_ring_err;
}

/* A few operations of every sort, with a fresh runtime (used to check a
 * backend end to end). */
static void smoke_ops(void)
{
	unsigned char b[64];
	cr_assert_eq(IO(weft_io_read(rt, data_fd, b, 64, 640, CB)), 64);
	cr_assert(pat_ok(b, 64, 640));
	int fd = IO(weft_io_openat(rt, dfd, "smoke", O_CREAT | O_RDWR | O_CLOEXEC, 0600, CB));
	cr_assert_geq(fd, 0);
	cr_assert_eq(IO(weft_io_write(rt, fd, b, 64, 0, CB)), 64);
	cr_assert_eq(IO(weft_io_fsync(rt, fd, 0, CB)), 0);
	cr_assert_eq(IO(weft_io_close(rt, fd, CB)), 0);
	struct op *t = op_new(K_TIMEOUT);
	t->ns = 1000000;
	START(t, weft_io_timeout(rt, t->ns, CB));
	cr_assert_eq(wait_op(t), 0);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	struct op *r = op_new(K_ANY);
	START(r, weft_io_recv(rt, sp[0], r->buf, 8, 0, CB));
	cr_assert_eq(IO(weft_io_send(rt, sp[1], "ping", 4, MSG_NOSIGNAL, CB)), 4);
	cr_assert_eq(wait_op(r), 4);
	cr_assert_eq(IO(weft_io_poll(rt, sp[1], POLLOUT, CB)) & POLLOUT, POLLOUT);
	struct op *idle = op_new(K_ANY);
	START(idle, weft_io_recv(rt, sp[0], idle->buf, 8, 0, CB));
	usleep(5000);
	cr_assert_eq(weft_io_cancel(rt, idle->handle), 0);
	cr_assert_eq(wait_op(idle), -ECANCELED);
	/* And from workers. */
	struct op *ops = ops_new(64, K_ANY);
	struct batch bt = { .ops = ops, .n = 64 };
	run_task(batch_task, &bt);
	wait_quiet("smoke ops");
	check_simple_ops(ops, 64, false);
	close(sp[0]);
	close(sp[1]);
}

static void fallback_test(int err)
{
	begin();
	setup_files();
	struct weft_os os = *weft_os_default();
	os.ring_init = failing_ring_init;
	fake_ring_err = err;
	store_release(&ring_init_calls, 0);
	weft_os_set(&os);
	char saved[32];
	snprintf(saved, sizeof(saved), "%s", io_mode());
	int fds0 = count_fds(), thr0 = count_threads();

	/* io_uring forced by the config: create fails with the error, leaving
	 * nothing behind. */
	weft_rt *r2 = NULL;
	struct weft_config forced = { .io = WEFT_IO_URING };
	int r = weft_create(&r2, &forced);
	cr_assert_eq(r, err, "weft_create with io = WEFT_IO_URING when ring set-up fails with %d: %d", err, r);
	cr_assert_null(r2);
	cr_assert_gt(load_acquire(&ring_init_calls), 0, "the ring set-up went through the OS layer");
	cr_assert_eq(count_fds(), fds0, "a failed weft_create leaves no fd");
	cr_assert_eq(count_threads(), thr0, "a failed weft_create leaves no thread");

	/* WEFT_IO=uring in the environment, config AUTO: documented as the env
	 * choosing; either it fails like a forced config or falls back. */
	r = weft_create(&r2, NULL);
	cr_log_info("ring_init %d, WEFT_IO=uring, io AUTO: weft_create %d, backend %d", err, r,
		    r == 0 ? weft_io_backend(r2) : -1);
	if (r == 0) {
		cr_assert_eq(weft_io_backend(r2), WEFT_IO_THREADS);
		weft_destroy(r2);
	} else {
		cr_assert_eq(r, err);
	}
	cr_assert_eq(count_fds(), fds0);
	cr_assert_eq(count_threads(), thr0);

	/* AUTO without the environment: falls back to helper threads. */
	unsetenv("WEFT_IO");
	create_rt(NULL);
	cr_assert_eq(weft_io_backend(rt), WEFT_IO_THREADS, "io AUTO falls back to threads when ring set-up fails with %d",
		     err);
	cr_assert_eq(weft_io_park_mechanism(rt), 0);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_assert_eq(st.io.backend, WEFT_IO_THREADS);
	smoke_ops();
	cycle_destroy();
	setenv("WEFT_IO", saved, 1);
	weft_os_set(NULL);
	cr_assert_eq(count_fds(), fds0, "no fd left behind");
	cr_assert_eq(count_threads(), thr0, "no thread left behind");
	end_checks();
}

Test(io, fallback_eperm, .timeout = 60)
{
	if (!uring_mode())
		cr_skip_test("only in the io_uring run");
	fallback_test(-EPERM);
}

Test(io, fallback_enosys, .timeout = 60)
{
	if (!uring_mode())
		cr_skip_test("only in the io_uring run");
	fallback_test(-ENOSYS);
}

/* A backend set in the config wins over the environment. */
Test(io, config_beats_env, .timeout = 60)
{
	begin();
	setup_files();
	struct weft_config cfg = { 0 };
	if (uring_mode()) {
		cfg.io = WEFT_IO_THREADS;
		create_rt(&cfg);
		cr_assert_eq(weft_io_backend(rt), WEFT_IO_THREADS, "config threads, env uring");
	} else {
		if (!kernel_has_uring()) {
			watchdog_stop(&wd);
			cr_skip_test("the kernel forbids io_uring");
		}
		cfg.io = WEFT_IO_URING;
		create_rt(&cfg);
		cr_assert_eq(weft_io_backend(rt), WEFT_IO_URING, "config uring, env %s", io_mode());
	}
	smoke_ops();
	finish();
}

/* Ring set-up that fails after weft_create (RLIMIT_MEMLOCK, ENOMEM on a
 * worker's first submission): no lost and no doubled callbacks. */
static int rif_armed;
static uint64_t rif_failed;

static int late_failing_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
	if (load_acquire(&rif_armed)) {
		fetch_add_acq_rel(&rif_failed, 1);
		return -ENOMEM;
	}
	return weft_os_default()->ring_init(entries, ring, p);
}

static void any_batch_task(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		struct op *o = &b->ops[i];
		o->kind = K_ANY;
		o->t0 = now_ns();
		int h = i % 2 ? weft_io_timeout(rt, 0, op_cb, o)
			      : weft_io_read(rt, data_fd, o->buf, BLOCK, (uint64_t)i * BLOCK, op_cb, o);
		o->handle = counted(h);
	}
}

Test(io, ring_init_fails_after_create, .timeout = 60)
{
	if (!uring_mode())
		cr_skip_test("only in the io_uring run");
	begin();
	setup_files();
	struct weft_os os = *weft_os_default();
	os.ring_init = late_failing_ring_init;
	store_release(&rif_armed, 0);
	store_release(&rif_failed, 0);
	weft_os_set(&os);
	struct weft_config cfg = { .workers = 2 };
	create_rt(&cfg);
	store_release(&rif_armed, 1);
	struct op *ops = ops_new(200, K_ANY);
	struct batch b[4];
	void *args[4];
	for (int t = 0; t < 4; t++) {
		b[t] = (struct batch){ .ops = ops + 40 * t, .n = 40 };
		args[t] = &b[t];
	}
	run_tasks(any_batch_task, args, 4);
	struct batch mine = { .ops = ops + 160, .n = 40 };
	any_batch_task(&mine);
	wait_quiet("ops while ring set-up fails");
	int accepted = 0, refused = 0, errors = 0;
	for (int i = 0; i < 200; i++) {
		if (ops[i].handle > 0) {
			accepted++;
			cr_assert_eq(ops[i].calls, 1);
			errors += ops[i].res < 0;
		} else {
			refused++;
			cr_assert_eq(ops[i].calls, 0, "a refused submit was called back");
		}
	}
	cr_log_info("ring_init failed %llu times: %d accepted (%d with an error), %d refused",
		    (unsigned long long)load_acquire(&rif_failed), accepted, errors, refused);
	finish();
	weft_os_set(NULL);
}

/* ======================================================================== */
/* Bad input                                                                */
/* ======================================================================== */

Test(io, bad_arguments, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	char b[8];
	struct iovec iov = { b, sizeof(b) };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = data_fd;
	struct op *o = op_new(K_ANY);
	weft_rt *const nrt = NULL;
	const weft_io_fn nfn = NULL;

	/* NULL rt */
	cr_assert_eq(weft_io_read(nrt, fd, b, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_write(nrt, fd, b, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_readv(nrt, fd, &iov, 1, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_writev(nrt, fd, &iov, 1, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_fsync(nrt, fd, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_openat(nrt, dfd, "x", O_RDONLY, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_close(nrt, fd, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_poll(nrt, fd, POLLIN, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_accept(nrt, fd, NULL, NULL, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_connect(nrt, fd, (struct sockaddr *)&sa, sl, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_recv(nrt, fd, b, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_send(nrt, fd, b, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_timeout(nrt, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_cancel(nrt, 1), -EINVAL);

	/* NULL callback */
	cr_assert_eq(weft_io_read(rt, fd, b, 8, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_write(rt, fd, b, 8, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_readv(rt, fd, &iov, 1, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_writev(rt, fd, &iov, 1, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_fsync(rt, fd, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_openat(rt, dfd, "x", O_RDONLY, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_close(rt, fd, nfn, o), -EINVAL, "(and the fd must stay open)");
	cr_assert_eq(weft_io_poll(rt, fd, POLLIN, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_accept(rt, fd, NULL, NULL, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_connect(rt, fd, (struct sockaddr *)&sa, sl, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_recv(rt, fd, b, 8, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_send(rt, fd, b, 8, 0, nfn, o), -EINVAL);
	cr_assert_eq(weft_io_timeout(rt, 0, nfn, o), -EINVAL);
	cr_assert_neq(fcntl(fd, F_GETFD), -1, "a rejected close did not close");

	/* NULL buffer with a length */
	cr_assert_eq(weft_io_read(rt, fd, NULL, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_write(rt, fd, NULL, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_recv(rt, fd, NULL, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(weft_io_send(rt, fd, NULL, 8, 0, op_cb, o), -EINVAL);
	cr_assert_eq(load_acquire(&o->calls), 0, "no callback for a refused submit");

	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_assert_eq(st.io.submitted, 0, "refused submits are not counted as accepted: %llu",
		     (unsigned long long)st.io.submitted);

	/* NULL arrays, paths and addresses: refused, or the kernel's -EFAULT. */
	int r = IO_ANY(weft_io_readv(rt, fd, NULL, 2, 0, CB));
	cr_assert(r == -EINVAL || r == -EFAULT, "readv(NULL iov): %d", r);
	r = IO_ANY(weft_io_writev(rt, fd, NULL, 2, 0, CB));
	cr_assert(r == -EINVAL || r == -EFAULT, "writev(NULL iov): %d", r);
	r = IO_ANY(weft_io_openat(rt, dfd, NULL, O_RDONLY, 0, CB));
	cr_assert(r == -EINVAL || r == -EFAULT, "openat(NULL path): %d", r);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = IO_ANY(weft_io_connect(rt, s, NULL, sizeof(sa), CB));
	cr_assert(r == -EINVAL || r == -EFAULT, "connect(NULL addr): %d", r);
	close(s);

	/* NULL with length 0 is an empty read. */
	cr_assert_eq(IO(weft_io_read(rt, fd, NULL, 0, 0, CB)), 0);
	/* Everything still works. */
	cr_assert_eq(IO(weft_io_timeout(rt, 0, CB)), 0);
	cr_assert_eq(IO(weft_io_read(rt, fd, b, 8, 0, CB)), 8);
	finish();
}

Test(io, bad_fds, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	const int bad[] = { -1, closed_fd(), 1 << 30 };
	char b[8];
	struct iovec iov = { b, sizeof(b) };
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(9);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int fd = bad[i];
		int r;
#define BADFD(call)                                                                    \
	r = IO_ANY(call);                                                              \
	cr_assert_eq(r, -EBADF, "%s with fd %d: %d (%s)", #call, fd, r, strerror(r < 0 ? -r : 0))
		BADFD(weft_io_read(rt, fd, b, 8, 0, CB));
		BADFD(weft_io_read(rt, fd, b, 8, WEFT_IO_CUR, CB));
		BADFD(weft_io_write(rt, fd, b, 8, 0, CB));
		BADFD(weft_io_readv(rt, fd, &iov, 1, 0, CB));
		BADFD(weft_io_writev(rt, fd, &iov, 1, 0, CB));
		BADFD(weft_io_fsync(rt, fd, 0, CB));
		BADFD(weft_io_fsync(rt, fd, WEFT_IO_DATASYNC, CB));
		BADFD(weft_io_close(rt, fd, CB));
		BADFD(weft_io_poll(rt, fd, POLLIN, CB));
		BADFD(weft_io_poll(rt, fd, POLLOUT, CB));
		BADFD(weft_io_accept(rt, fd, NULL, NULL, CB));
		BADFD(weft_io_connect(rt, fd, (struct sockaddr *)&sa, sizeof(sa), CB));
		BADFD(weft_io_recv(rt, fd, b, 8, 0, CB));
		BADFD(weft_io_send(rt, fd, b, 8, MSG_NOSIGNAL, CB));
		BADFD(weft_io_openat(rt, fd, "relative", O_RDONLY, 0, CB));
#undef BADFD
	}
	cr_assert_eq(IO(weft_io_read(rt, data_fd, b, 8, 0, CB)), 8, "the runtime still works");
	finish();
}

Test(io, wrong_fd_types, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	char b[8];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(9);
	int r;
	r = IO_ANY(weft_io_read(rt, dfd, b, 8, 0, CB));
	cr_assert_eq(r, -EISDIR, "read of a directory: %d", r);
	int ro = openat(dfd, "data", O_RDONLY | O_CLOEXEC);
	r = IO_ANY(weft_io_write(rt, ro, b, 8, 0, CB));
	cr_assert_eq(r, -EBADF, "write to a read-only fd: %d", r);
	close(ro);
	r = IO_ANY(weft_io_recv(rt, data_fd, b, 8, 0, CB));
	cr_assert_eq(r, -ENOTSOCK, "recv on a file: %d", r);
	r = IO_ANY(weft_io_send(rt, data_fd, b, 8, MSG_NOSIGNAL, CB));
	cr_assert_eq(r, -ENOTSOCK, "send on a file: %d", r);
	r = IO_ANY(weft_io_accept(rt, data_fd, NULL, NULL, CB));
	cr_assert_eq(r, -ENOTSOCK, "accept on a file: %d", r);
	r = IO_ANY(weft_io_connect(rt, data_fd, (struct sockaddr *)&sa, sizeof(sa), CB));
	cr_assert_eq(r, -ENOTSOCK, "connect on a file: %d", r);
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	r = IO_ANY(weft_io_fsync(rt, p[0], 0, CB));
	cr_assert_eq(r, -EINVAL, "fsync of a pipe: %d", r);
	close(p[0]);
	close(p[1]);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	r = IO_ANY(weft_io_accept(rt, s, NULL, NULL, CB));
	cr_assert_eq(r, -EINVAL, "accept on a socket that does not listen: %d", r);
	close(s);
	finish();
}

Test(io, huge_timeouts, .timeout = 60)
{
	static const uint64_t v[] = { UINT64_MAX, (uint64_t)INT64_MAX + 1, (uint64_t)INT64_MAX,
				      1000000000000000000ull, 3600ull * 1000000000u };
	enum { N = sizeof(v) / sizeof(v[0]) };
	begin();
	create_rt(NULL);
	struct op *ops = ops_new(N, K_TIMEOUT);
	for (int i = 0; i < N; i++) {
		ops[i].ns = v[i];
		START(&ops[i], weft_io_timeout(rt, v[i], CB));
	}
	usleep(100 * 1000);
	for (int i = 0; i < N; i++)
		cr_assert_eq(load_acquire(&ops[i].calls), 0, "a timeout of %llu ns fired (res %d)",
			     (unsigned long long)v[i], ops[i].res);
	for (int i = 0; i < N; i++)
		cr_assert_eq(weft_io_cancel(rt, ops[i].handle), 0);
	for (int i = 0; i < N; i++)
		cr_assert_eq(wait_op(&ops[i]), -ECANCELED);
	finish();
}

Test(io, iov_limits_and_big_lengths, .timeout = 60)
{
	begin();
	setup_files();
	create_rt(NULL);
	int n = IOV_MAX;
	struct iovec *wi = tmalloc(((size_t)n + 1) * sizeof(*wi)), *ri = tmalloc(((size_t)n + 1) * sizeof(*ri));
	unsigned char *w = tmalloc((size_t)n * 8 + 8), *rb = tmalloc((size_t)n * 8 + 8);
	size_t total = 0;
	for (int i = 0; i <= n; i++) {
		size_t len = (size_t)(i % 7) + 1;
		wi[i] = (struct iovec){ w + total, len };
		ri[i] = (struct iovec){ rb + total, len };
		if (i < n)
			total += len;
	}
	pat_fill(w, total, 99);
	int fd = openat(dfd, "iov", O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(IO(weft_io_writev(rt, fd, wi, (unsigned)n, 0, CB)), (int)total, "writev of IOV_MAX buffers");
	cr_assert_eq(IO(weft_io_readv(rt, fd, ri, (unsigned)n, 0, CB)), (int)total, "readv of IOV_MAX buffers");
	cr_assert_eq(memcmp(w, rb, total), 0);
	int r = IO_ANY(weft_io_writev(rt, fd, wi, (unsigned)n + 1, 0, CB));
	cr_assert_eq(r, -EINVAL, "writev of IOV_MAX + 1 buffers: %d", r);
	r = IO_ANY(weft_io_readv(rt, fd, ri, (unsigned)n + 1, 0, CB));
	cr_assert_eq(r, -EINVAL, "readv of IOV_MAX + 1 buffers: %d", r);
	close(fd);

	/* A length above 4 GiB is not truncated: the whole (64 KiB) file is
	 * read, as pread(2) would. */
	unsigned char *big = tmalloc(2 * BLOCKS * BLOCK);
	r = IO_ANY(weft_io_read(rt, data_fd, big, ((size_t)1 << 32) + 16, 0, CB));
	cr_assert(r == BLOCKS * BLOCK || r == -EINVAL, "read with len 4 GiB + 16 of a 64 KiB file: %d", r);
	if (r > 0)
		cr_assert(pat_ok(big, (size_t)r, 0));
	/* Offsets beyond the largest file offset (WEFT_IO_CUR aside). */
	r = IO_ANY(weft_io_read(rt, data_fd, big, 16, (uint64_t)1 << 63, CB));
	cr_assert_eq(r, -EINVAL, "read at offset 2^63: %d", r);
	finish();
}

/* ======================================================================== */
/* weft_destroy                                                             */
/* ======================================================================== */

/* Like batch_task, but it may run after weft_destroy was called: then a
 * submit may be refused with -ESHUTDOWN (and the op never called back). */
static int destroy_begun;

static void late_batch_task(void *p)
{
	struct batch *b = p;
	for (long i = 0; i < b->n; i++) {
		int h = submit_kind(&b->ops[i], simple_kinds[(b->seed + (uint64_t)i) % 3], b->seed + (uint64_t)i, op_cb);
		CHECK(h > 0 || (h == -ESHUTDOWN && load_acquire(&destroy_begun)), "a worker's submit: %d", h);
	}
}

static void idle_recv_task(void *p)
{
	struct batch *b = p; /* ops[i].off: the fd */
	for (long i = 0; i < b->n; i++) {
		struct op *o = &b->ops[i];
		o->t0 = now_ns();
		o->handle = counted(weft_io_recv(rt, (int)o->off, o->buf, sizeof(o->buf), 0, op_cb, o));
		CHECK(o->handle > 0, "recv submit: %d", o->handle);
	}
}

Test(io, destroy_with_inflight, .timeout = 120)
{
	begin();
	setup_files();
	int fds0 = count_fds(), thr0 = count_threads();
	struct weft_config cfg = { .workers = 2 };
	create_rt(&cfg);
	enum { NSP = 32, NTMO = 100 };
	long nread = scaled(2000);
	int sp[NSP][2];
	struct sockaddr_in la;
	int l = tcp_listener(&la);
	for (int i = 0; i < NSP; i++)
		make_socketpair(SOCK_STREAM, sp[i]);
	struct op *recvs = ops_new(NSP, K_ANY), *polls = ops_new(NSP, K_ANY), *accs = ops_new(4, K_ANY);
	struct op *tmos = ops_new(NTMO, K_TIMEOUT), *reads = ops_new((size_t)nread, K_ANY);
	/* Idle recvs: half from here, half from a task. */
	for (int i = 0; i < NSP; i++)
		recvs[i].off = (uint64_t)sp[i][0];
	for (int i = 0; i < NSP / 2; i++)
		START(&recvs[i], weft_io_recv(rt, sp[i][0], recvs[i].buf, sizeof(recvs[i].buf), 0, CB));
	struct batch rb = { .ops = recvs + NSP / 2, .n = NSP / 2 };
	run_task(idle_recv_task, &rb);
	for (int i = 0; i < NSP; i++)
		START(&polls[i], weft_io_poll(rt, sp[i][1], POLLIN, CB));
	for (int i = 0; i < 4; i++)
		START(&accs[i], weft_io_accept(rt, l, NULL, NULL, CB));
	for (int i = 0; i < NTMO; i++) {
		tmos[i].ns = 60ull * 1000000000u;
		START(&tmos[i], weft_io_timeout(rt, tmos[i].ns, CB));
	}
	/* Reads and short timeouts in flight from tasks while we destroy. */
	struct batch wb[4];
	void *args[4];
	for (int t = 0; t < 4; t++) {
		wb[t] = (struct batch){ .ops = reads + t * (nread / 4), .n = nread / 4, .seed = (uint64_t)t };
		args[t] = &wb[t];
	}
	store_release(&destroy_begun, 0);
	for (int t = 0; t < 4; t++)
		cr_assert_eq(weft_spawn(rt, late_batch_task, args[t]), 0);
	usleep(20 * 1000);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_log_info("in flight at destroy: %llu submitted, %llu completed", (unsigned long long)st.io.submitted,
		    (unsigned long long)st.io.completed);
	double t0 = now_sec();
	store_release(&destroy_begun, 1);
	destroy_rt();
	cr_log_info("weft_destroy took %.1f ms", (now_sec() - t0) * 1e3);
	assert_no_failures();
	for (int i = 0; i < NSP; i++) {
		cr_assert_eq(recvs[i].calls, 1, "idle recv %d: %d callbacks", i, recvs[i].calls);
		cr_assert_eq(recvs[i].res, -ECANCELED, "idle recv %d at destroy: %d", i, recvs[i].res);
		cr_assert_eq(polls[i].calls, 1);
		cr_assert_eq(polls[i].res, -ECANCELED, "idle poll %d at destroy: %d", i, polls[i].res);
	}
	for (int i = 0; i < 4; i++) {
		cr_assert_eq(accs[i].calls, 1);
		cr_assert_eq(accs[i].res, -ECANCELED, "idle accept at destroy: %d", accs[i].res);
	}
	for (int i = 0; i < NTMO; i++) {
		cr_assert_eq(tmos[i].calls, 1);
		cr_assert_eq(tmos[i].res, -ECANCELED, "60 s timeout at destroy: %d", tmos[i].res);
	}
	long real = 0, refused = 0;
	for (long i = 0; i < nread / 4 * 4; i++) {
		if (reads[i].handle <= 0) {
			refused++;
			cr_assert_eq(reads[i].calls, 0, "op %ld refused, yet called back", i);
			continue;
		}
		cr_assert_eq(reads[i].calls, 1, "op %ld in flight at destroy: %d callbacks", i, reads[i].calls);
		real += reads[i].res != -ECANCELED;
	}
	cr_log_info("short ops: %ld completed for real, %ld cancelled, %ld refused (submitted after destroy began)",
		    real, nread / 4 * 4 - real - refused, refused);
	for (int i = 0; i < NSP; i++) {
		close(sp[i][0]);
		close(sp[i][1]);
	}
	close(l);
	cr_assert_eq(count_fds(), fds0, "fds before weft_create and after weft_destroy: %d, %d", fds0, count_fds());
	cr_assert_eq(count_threads(), thr0, "threads before weft_create and after weft_destroy: %d, %d", thr0,
		     count_threads());
	end_checks();
}

/* Thousands of idle operations in 8-entry rings, destroyed at once. */
struct idle_batch {
	struct op *ops;
	long n;
	int fd; /* idle socket */
};

static void idle_batch_task(void *p)
{
	struct idle_batch *b = p;
	for (long i = 0; i < b->n; i++) {
		struct op *o = &b->ops[i];
		o->t0 = now_ns();
		int h;
		if (i % 2) {
			o->kind = K_TIMEOUT;
			o->ns = 60ull * 1000000000u;
			h = weft_io_timeout(rt, o->ns, op_cb, o);
		} else {
			h = weft_io_poll(rt, b->fd, POLLIN, op_cb, o);
		}
		o->handle = counted(h);
		CHECK(h > 0 || (h == -ESHUTDOWN && load_acquire(&destroy_begun)), "idle submit: %d", h);
	}
}

Test(io, destroy_small_rings_full_of_idle_ops, .timeout = 120)
{
	begin();
	int fds0 = count_fds(), thr0 = count_threads();
	struct weft_config cfg = { .workers = 2, .io_entries = 8 };
	create_rt(&cfg);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	long n = scaled(6000);
	struct op *ops = ops_new((size_t)n * 2, K_ANY);
	struct idle_batch b[2] = { { ops, n, sp[0] }, { ops + n, n, sp[1] } };
	store_release(&destroy_begun, 0);
	void *args[2] = { &b[0], &b[1] };
	run_tasks(idle_batch_task, args, 2);
	/* And some from here. */
	struct op *mine = ops_new(64, K_ANY);
	for (int i = 0; i < 64; i++)
		START(&mine[i], weft_io_poll(rt, sp[0], POLLIN, CB));
	print_io_stats("idle ops in 8-entry rings");
	store_release(&destroy_begun, 1);
	destroy_rt();
	assert_no_failures();
	for (long i = 0; i < 2 * n; i++) {
		if (ops[i].handle <= 0) {
			cr_assert_eq(ops[i].calls, 0);
			continue;
		}
		cr_assert_eq(ops[i].calls, 1, "idle op %ld: %d callbacks", i, ops[i].calls);
		cr_assert_eq(ops[i].res, -ECANCELED, "idle op %ld at destroy: %d", i, ops[i].res);
	}
	for (int i = 0; i < 64; i++)
		cr_assert_eq(mine[i].res, -ECANCELED);
	close(sp[0]);
	close(sp[1]);
	cr_assert_eq(count_fds(), fds0);
	cr_assert_eq(count_threads(), thr0);
	end_checks();
}

static int pd_done;

static void *destroy_thread(void *p)
{
	weft_destroy(p);
	store_release(&pd_done, 1);
	return NULL;
}

/* A read blocked on an idle pipe at weft_destroy is cancelled. */
Test(io, destroy_with_pipe_read, .timeout = 60)
{
	begin();
	create_rt(NULL);
	int p[2];
	cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
	struct op *o = op_new(K_ANY);
	START(o, weft_io_read(rt, p[0], o->buf, 8, WEFT_IO_CUR, CB));
	usleep(20 * 1000);
	store_release(&pd_done, 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, destroy_thread, rt), 0);
	double t0 = now_sec();
	while (!load_acquire(&pd_done) && now_sec() - t0 < 5)
		usleep(1000);
	bool stuck = !load_acquire(&pd_done);
	if (stuck)
		cr_assert_eq(write(p[1], "x", 1), 1);
	pthread_join(th, NULL);
	rt = NULL;
	store_release(&destroyed, 1);
	cr_assert_not(stuck, "weft_destroy did not return for 5 s with a read pending on an idle pipe; it returned "
			     "once data arrived (callback res %d)",
		      o->res);
	cr_assert_eq(o->calls, 1);
	cr_assert_eq(o->res, -ECANCELED, "a pipe read at weft_destroy: %d", o->res);
	close(p[0]);
	close(p[1]);
	end_checks();
}

/* Submissions while weft_destroy drains: from an outside thread they fail
 * with -ESHUTDOWN; from workers they either work (and are called back) or
 * fail with -ESHUTDOWN; weft_destroy returns. */
static int dd_called, dd_b_started, dd_o_done, dd_o_saw;
static int dd_b_res;
static uint64_t dd_chain_shutdown;
static struct op *dd_pool;
static long dd_pool_n, dd_pool_next;

static struct op *dd_take(void)
{
	long i = fetch_add_acq_rel(&dd_pool_next, 1);
	if (i >= dd_pool_n)
		return NULL;
	struct op *o = &dd_pool[i];
	o->kind = K_TIMEOUT;
	o->cancel_res = 1;
	return o;
}

static void dd_blocker(void *p)
{
	weft_rt *r = p;
	store_release(&dd_b_started, 1);
	double t0 = now_sec();
	while (!load_acquire(&dd_o_done) && now_sec() - t0 < 20)
		usleep(1000);
	struct op *o = dd_take();
	if (!o) {
		CHECK(0, "the op pool ran out");
		return;
	}
	o->t0 = now_ns();
	int h = counted(weft_io_timeout(r, 0, op_cb, o));
	o->handle = h;
	dd_b_res = h;
	CHECK(h > 0 || h == -ESHUTDOWN, "a worker's submit during weft_destroy: %d", h);
}

/* A chain of 1 ms timeouts; it resubmits at most 50 times once weft_destroy
 * was called. */
static void dd_chain_cb(int res, void *ctx)
{
	struct op *o = ctx;
	op_record(o, res);
	uint64_t after = o->off + (load_acquire(&dd_called) ? 1 : 0);
	if (res != -ECANCELED && after < 50) {
		struct op *n = dd_take();
		if (n) {
			n->off = after;
			n->ns = 1000000;
			n->t0 = now_ns();
			int h = counted(weft_io_timeout(rt, n->ns, dd_chain_cb, n));
			n->handle = h;
			CHECK(h > 0 || h == -ESHUTDOWN, "a callback's submit during weft_destroy: %d", h);
			if (h == -ESHUTDOWN)
				fetch_add_acq_rel(&dd_chain_shutdown, 1);
		}
	}
	note_callback();
}

static void *dd_outside(void *p)
{
	weft_rt *r = p;
	while (!load_acquire(&dd_called))
		sched_yield();
	double t0 = now_sec();
	while (now_sec() - t0 < 15) {
		struct op *o = dd_take();
		if (!o)
			break;
		o->t0 = now_ns();
		int h = counted(weft_io_timeout(r, 0, op_cb, o));
		o->handle = h;
		if (h < 0) {
			CHECK(h == -ESHUTDOWN, "an outside submit during weft_destroy: %d", h);
			store_release(&dd_o_saw, 1);
			break;
		}
		usleep(200);
	}
	store_release(&dd_o_done, 1);
	return NULL;
}

Test(io, destroy_drain_submit, .timeout = 120)
{
	begin();
	struct weft_config cfg = { .workers = 2 };
	create_rt(&cfg);
	dd_pool_n = 200000;
	dd_pool = ops_new((size_t)dd_pool_n, K_TIMEOUT);
	store_release(&dd_pool_next, 0);
	store_release(&dd_called, 0);
	store_release(&dd_b_started, 0);
	store_release(&dd_o_done, 0);
	store_release(&dd_o_saw, 0);
	store_release(&dd_chain_shutdown, 0);
	cr_assert_eq(weft_spawn(rt, dd_blocker, rt), 0);
	wait_flag(&dd_b_started, "the blocking task");
	for (int i = 0; i < 16; i++) {
		struct op *o = dd_take();
		o->ns = 1000000;
		o->off = 0;
		o->t0 = now_ns();
		o->handle = counted(weft_io_timeout(rt, o->ns, dd_chain_cb, o));
		cr_assert_gt(o->handle, 0);
	}
	usleep(20 * 1000);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, dd_outside, rt), 0);
	store_release(&dd_called, 1);
	destroy_rt();
	pthread_join(th, NULL);
	cr_log_info("during destroy: outside saw -ESHUTDOWN %d, worker submit %d, callbacks' submits refused %llu",
		    dd_o_saw, dd_b_res, (unsigned long long)dd_chain_shutdown);
	cr_assert(dd_o_saw, "a thread that is not a worker kept having submissions accepted during weft_destroy");
	long used = load_acquire(&dd_pool_next);
	if (used > dd_pool_n)
		used = dd_pool_n;
	for (long i = 0; i < used; i++) {
		struct op *o = &dd_pool[i];
		if (o->handle > 0)
			cr_assert_eq(o->calls, 1, "accepted op %ld: %d callbacks", i, o->calls);
		else
			cr_assert_eq(o->calls, 0, "refused op %ld was called back", i);
	}
	end_checks();
}

Test(io, create_destroy_no_leak, .timeout = 120)
{
	begin();
	setup_files();
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	int fds0 = count_fds(), thr0 = count_threads();
	for (int i = 0; i < 20; i++) {
		struct weft_config cfg = { .workers = 2 };
		create_rt(&cfg);
		warm_rings();
		struct op *a = op_new(K_ANY), *b = op_new(K_TIMEOUT), *c = op_new(K_READ);
		START(a, weft_io_recv(rt, sp[0], a->buf, 8, 0, CB));
		b->ns = 60ull * 1000000000u;
		START(b, weft_io_timeout(rt, b->ns, CB));
		c->off = 0;
		START(c, weft_io_read(rt, data_fd, c->buf, BLOCK, 0, CB));
		cycle_destroy();
		cr_assert_eq(a->calls, 1);
		cr_assert_eq(a->res, -ECANCELED);
		cr_assert_eq(b->calls, 1);
		cr_assert_eq(b->res, -ECANCELED);
		cr_assert_eq(c->calls, 1);
		cr_assert_eq(count_fds(), fds0, "round %d: fds %d, before %d", i, count_fds(), fds0);
		cr_assert_eq(count_threads(), thr0, "round %d: threads %d, before %d", i, count_threads(), thr0);
	}
	close(sp[0]);
	close(sp[1]);
	end_checks();
}

/* An op submitted to runtime B by a worker of runtime A belongs to B. */
static weft_rt *rt_b;
static int xsock;

static void cross_task(void *p)
{
	struct op **o = p;
	o[0]->t0 = now_ns();
	o[0]->handle = counted(weft_io_timeout(rt_b, o[0]->ns, op_cb, o[0]));
	CHECK(o[0]->handle > 0, "timeout to another runtime: %d", o[0]->handle);
	o[1]->t0 = now_ns();
	o[1]->handle = counted(weft_io_recv(rt_b, xsock, o[1]->buf, 8, 0, op_cb, o[1]));
	CHECK(o[1]->handle > 0, "recv to another runtime: %d", o[1]->handle);
}

Test(io, submit_to_other_runtime_from_worker, .timeout = 60)
{
	begin();
	struct weft_config cfg = { .workers = 2 };
	create_rt(&cfg);
	cr_assert_eq(weft_create(&rt_b, &cfg), 0);
	int sp[2];
	make_socketpair(SOCK_STREAM, sp);
	xsock = sp[0];
	struct op *o[2] = { op_new(K_TIMEOUT), op_new(K_ANY) };
	o[0]->ns = 200 * 1000000ull;
	run_task(cross_task, o);
	assert_no_failures();
	/* Runtime A goes away; B's operations must not go with it. */
	weft_destroy(rt);
	rt = rt_b;
	cr_assert_eq(wait_op(o[0]), 0, "B's timeout, submitted from a worker of A, after A was destroyed");
	assert_pending(o[1], 10, "B's idle recv");
	cr_assert_eq(write(sp[1], "x", 1), 1);
	cr_assert_eq(wait_op(o[1]), 1, "B's recv, submitted from a worker of A");
	close(sp[0]);
	close(sp[1]);
	finish();
}

/* ======================================================================== */
/* Parking                                                                  */
/* ======================================================================== */

static uint64_t ticks;

static void tick_task(void *p)
{
	(void)p;
	fetch_add_relaxed(&progress, 1);
	fetch_add_acq_rel(&ticks, 1);
}

static void submit_timeout_task(void *p)
{
	struct op *o = p;
	CHECK(submit_kind(o, K_TIMEOUT, 0, op_cb) > 0, "timeout from a task");
}

/* Wake parked workers, over and over: by a task from outside, and by an
 * I/O completion on a ring whose worker went idle after submitting.
 * Returns how many of the `slow` rounds saw ring_parks grow while the
 * timer was pending. */
static int park_cycles(long quick, int slow)
{
	for (long i = 0; i < quick; i++) {
		if (i % 16 == 0)
			usleep(3000);
		else if (i % 2)
			usleep((useconds_t)(lcg() % 500));
		uint64_t before = load_acquire(&ticks);
		cr_assert_eq(weft_spawn(rt, tick_task, NULL), 0);
		wait_counter(&ticks, before + 1, "a task spawned from outside to parked workers");
	}
	for (long i = 0; i < quick; i++) {
		struct op *o = op_new(K_TIMEOUT);
		o->ns = i % 16 == 0 ? 3000000 : lcg() % 1000000;
		cr_assert_eq(weft_spawn(rt, submit_timeout_task, o), 0);
		cr_assert_eq(wait_op(o), 0);
	}
	int grew = 0;
	for (int i = 0; i < slow; i++) {
		struct weft_stats a, b;
		struct op *o = op_new(K_TIMEOUT);
		o->ns = 60 * 1000000ull;
		cr_assert_eq(weft_stats(rt, &a), 0);
		cr_assert_eq(weft_spawn(rt, submit_timeout_task, o), 0);
		usleep(40 * 1000);
		cr_assert_eq(weft_stats(rt, &b), 0);
		cr_assert_eq(wait_op(o), 0, "a timer firing while the workers are parked");
		grew += b.io.ring_parks > a.io.ring_parks;
	}
	return grew;
}

static void park_test(unsigned mech)
{
	bool ring_run = uring_mode() && kernel_has_uring();
	if (ring_run && mech == WEFT_IO_PARK_FUTEX_OP && !kernel_has_futex_op())
		cr_skip_test("the kernel has no IORING_OP_FUTEX_WAIT");
	begin();
	struct weft_config cfg = { .workers = 2, .io_park = mech };
	create_rt(&cfg);
	bool ring = weft_io_backend(rt) == WEFT_IO_URING;
	int m = weft_io_park_mechanism(rt);
	cr_log_info("io_park %u asked: backend %d, park %d", mech, weft_io_backend(rt), m);
	if (ring)
		cr_assert_eq(m, (int)mech, "io_park %u asked for (and the kernel has it), runtime parks with %d", mech, m);
	else
		cr_assert_eq(m, 0);
	warm_rings();
	usleep(150 * 1000);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_log_info("idle: worker parks %llu, ring_parks %llu", (unsigned long long)sum_parks(&st),
		    (unsigned long long)st.io.ring_parks);
	cr_assert_gt(sum_parks(&st), 0, "idle workers park");
	bool in_ring = ring && mech != WEFT_IO_PARK_POLL;
	if (ring)
		cr_assert_eq(st.io.park, mech);
	if (in_ring)
		cr_assert_gt(st.io.ring_parks, 0, "idle workers with rings sleep in io_uring_enter (mechanism %u)", mech);
	int grew = park_cycles(scaled(400), 5);
	cr_log_info("ring_parks grew in %d of 5 slow rounds", grew);
	if (in_ring)
		cr_assert_gt(grew, 0, "workers parked in their rings while a timer was pending");
	finish();
}

Test(io, park_futex_op, .timeout = 120)
{
	park_test(WEFT_IO_PARK_FUTEX_OP);
}

Test(io, park_eventfd, .timeout = 120)
{
	park_test(WEFT_IO_PARK_EVENTFD);
}

Test(io, park_poll, .timeout = 120)
{
	park_test(WEFT_IO_PARK_POLL);
}

/* ring_enter returning early (-EINTR, or submitted but no wait) must not
 * lose a wakeup. */
static uint64_t enter_calls, enter_spurious;

static int spurious_enter(struct io_uring *ring, unsigned wait_nr)
{
	uint64_t n = fetch_add_acq_rel(&enter_calls, 1);
	if (wait_nr > 0 && n % 3 == 0) {
		fetch_add_acq_rel(&enter_spurious, 1);
		if (io_uring_sq_ready(ring) == 0)
			return -EINTR;
		return weft_os_default()->ring_enter(ring, 0);
	}
	return weft_os_default()->ring_enter(ring, wait_nr);
}

Test(io, park_spurious_ring_enter, .timeout = 180)
{
	if (!uring_mode() || !kernel_has_uring())
		cr_skip_test("only in the io_uring run");
	begin();
	setup_files();
	struct weft_os os = *weft_os_default();
	os.ring_enter = spurious_enter;
	weft_os_set(&os);
	const unsigned mechs[] = { WEFT_IO_PARK_FUTEX_OP, WEFT_IO_PARK_EVENTFD, WEFT_IO_PARK_POLL };
	for (int k = 0; k < 3; k++) {
		if (mechs[k] == WEFT_IO_PARK_FUTEX_OP && !kernel_has_futex_op())
			continue;
		store_release(&enter_calls, 0);
		store_release(&enter_spurious, 0);
		struct weft_config cfg = { .workers = 2, .io_park = mechs[k] };
		create_rt(&cfg);
		warm_rings();
		usleep(50 * 1000);
		park_cycles(scaled(300), 3);
		/* Plus ordinary I/O while ring_enter misbehaves. */
		struct op *ops = ops_new(512, K_ANY);
		struct batch b = { .ops = ops, .n = 512 };
		run_task(batch_task, &b);
		wait_quiet("ops under spurious ring_enter returns");
		check_simple_ops(ops, 512, false);
		cycle_destroy();
		cr_log_info("park %u: ring_enter %llu calls, %llu returned early", mechs[k],
			    (unsigned long long)enter_calls, (unsigned long long)enter_spurious);
		if (mechs[k] != WEFT_IO_PARK_POLL)
			cr_assert_gt(enter_spurious, 0, "parking (mechanism %u) waits through the OS layer's ring_enter",
				     mechs[k]);
	}
	weft_os_set(NULL);
	end_checks();
}

/* The eventfd park with extra and foreign signals: spurious wakeups only. */
static int efd_seen[64];
static int efd_n, efd_stop;
static uint64_t efd_signals;
static pthread_mutex_t efd_lock = PTHREAD_MUTEX_INITIALIZER;

static int doubling_signal(int fd)
{
	uint64_t n = fetch_add_acq_rel(&efd_signals, 1);
	pthread_mutex_lock(&efd_lock);
	bool known = false;
	for (int i = 0; i < efd_n; i++)
		known |= efd_seen[i] == fd;
	if (!known && efd_n < 64)
		efd_seen[efd_n++] = fd;
	pthread_mutex_unlock(&efd_lock);
	int r = weft_os_default()->eventfd_signal(fd);
	if (n % 2 == 0)
		weft_os_default()->eventfd_signal(fd);
	return r;
}

static void *efd_noise(void *p)
{
	(void)p;
	while (!load_acquire(&efd_stop)) {
		pthread_mutex_lock(&efd_lock);
		for (int i = 0; i < efd_n; i++) {
			uint64_t one = 1;
			if (write(efd_seen[i], &one, sizeof(one)) < 0) {
			}
		}
		pthread_mutex_unlock(&efd_lock);
		usleep(700);
	}
	return NULL;
}

Test(io, park_eventfd_extra_signals, .timeout = 120)
{
	if (!uring_mode() || !kernel_has_uring())
		cr_skip_test("only in the io_uring run");
	begin();
	struct weft_os os = *weft_os_default();
	os.eventfd_signal = doubling_signal;
	efd_n = 0;
	store_release(&efd_stop, 0);
	store_release(&efd_signals, 0);
	weft_os_set(&os);
	struct weft_config cfg = { .workers = 2, .io_park = WEFT_IO_PARK_EVENTFD };
	create_rt(&cfg);
	cr_assert_eq(weft_io_park_mechanism(rt), WEFT_IO_PARK_EVENTFD);
	warm_rings();
	usleep(50 * 1000);
	park_cycles(scaled(200), 1);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, efd_noise, NULL), 0);
	park_cycles(scaled(300), 3);
	store_release(&efd_stop, 1);
	pthread_join(th, NULL);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	uint64_t spur = 0;
	for (unsigned i = 0; i < st.workers; i++)
		spur += st.worker[i].spurious_wakeups;
	cr_log_info("eventfd signals %llu on %d fds, spurious wakeups counted %llu",
		    (unsigned long long)load_acquire(&efd_signals), efd_n, (unsigned long long)spur);
	cr_assert_gt(load_acquire(&efd_signals), 0, "waking an eventfd-parked worker goes through eventfd_signal");
	finish();
	weft_os_set(NULL);
}

/* WEFT_IO_PARK picks the mechanism when the config leaves it 0; the config
 * wins over it. */
Test(io, park_env_selection, .timeout = 60)
{
	if (!uring_mode() || !kernel_has_uring())
		cr_skip_test("only in the io_uring run");
	begin();
	struct {
		const char *env;
		unsigned cfg, expect;
	} cases[] = {
		{ "eventfd", 0, WEFT_IO_PARK_EVENTFD },
		{ "poll", 0, WEFT_IO_PARK_POLL },
		{ "futex", 0, WEFT_IO_PARK_FUTEX_OP },
		{ "eventfd", WEFT_IO_PARK_POLL, WEFT_IO_PARK_POLL },
		{ "poll", WEFT_IO_PARK_EVENTFD, WEFT_IO_PARK_EVENTFD },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].expect == WEFT_IO_PARK_FUTEX_OP && !kernel_has_futex_op())
			continue;
		setenv("WEFT_IO_PARK", cases[i].env, 1);
		struct weft_config cfg = { .io_park = cases[i].cfg };
		create_rt(&cfg);
		int m = weft_io_park_mechanism(rt);
		struct op *o = op_new(K_TIMEOUT);
		o->ns = 1000000;
		START(o, weft_io_timeout(rt, o->ns, CB));
		cr_assert_eq(wait_op(o), 0);
		cycle_destroy();
		cr_assert_eq(m, (int)cases[i].expect, "WEFT_IO_PARK=%s, io_park %u: park %d", cases[i].env, cases[i].cfg,
			     m);
	}
	unsetenv("WEFT_IO_PARK");
	end_checks();
}
