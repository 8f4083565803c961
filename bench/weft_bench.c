/*
 * weft_bench.c: the weft-bench program.  It measures weft and, in the same
 * run, the baselines each figure of issue 2 is judged against, and prints
 * one table: a line per comparison, weft beside its baseline, the ratio,
 * and the goal with "ok" or "MISS".  --json FILE writes the same table with
 * every number.  One function per group of rows (see GROUPS below); each
 * creates and destroys its own runtime, so rows can be run alone with
 * --filter.
 *
 * Baselines (baselines.h) are real code built beside this file; one that
 * was not built shows "n/a (why)".  The io group (issue 4) is in
 * io_bench.c: it also runs servers and load generators as child
 * processes, and a program that is not built shows "skipped: why".
 */
#define _GNU_SOURCE 1
#include <weft.h>

#include "baselines.h"
#include "bench_util.h"
#include "ecs.h"
#include "io_bench.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_REPS 32
#define MAX_FILTERS 16
/* Tasks per batch in the in-worker spawn row and the memory row. */
#define SPAWN_BATCH 1000
#define MEM_BATCH 10000

/* The sizes of one mode. */
struct mode {
	const char *name;
	int fib_n;
	unsigned reps;
	uint64_t flat_tasks;
	unsigned wake_samples;
	uint64_t mem_tasks;
	unsigned timeout_s; /* watchdog; 0: none */
	struct io_bench_params io;
};

static const struct mode mode_full = { "full", 35, 5, 10000000, 1000, 100000000, 0,
				       { 5, 2.0, 2000, 5.0, 3, 1000000, 3, 300 } };
/* The README's bench command: well under 2 minutes on 2 CPUs.  The
 * watchdog only catches a hung runtime.  The io group takes about 25 s of
 * it (servers started as processes, 1 s idle windows). */
static const struct mode mode_quick = { "quick", 30, 3, 2000000, 200, 10000000, 300,
					{ 3, 0.5, 500, 1.0, 2, 200000, 2, 30 } };

static struct mode M;
static const char *filters[MAX_FILTERS];
static unsigned nfilters;
static int errors; /* wrong results and failed calls: the exit status */
static const char *volatile current_group = "start-up";

/* ---- small helpers ---- */

static bool want(const char *group)
{
	if (nfilters == 0)
		return true;
	for (unsigned i = 0; i < nfilters; i++)
		if (strstr(group, filters[i]))
			return true;
	return false;
}

static void empty_task(void *arg)
{
	(void)arg;
}

/* A runtime, or NULL with the reason in why. */
static weft_rt *rt_create(unsigned workers, const char *topology, char *why, size_t whylen)
{
	struct weft_config cfg;
	weft_rt *rt = NULL;
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.workers = workers;
	cfg.topology = topology;
	rc = weft_create(&rt, &cfg);
	if (rc < 0) {
		snprintf(why, whylen, "n/a (weft_create: %s)", strerror(-rc));
		errors++;
		return NULL;
	}
	return rt;
}

/* Spawn n empty tasks into g from the calling thread; returns how many
 * spawns failed. */
static uint64_t spawn_empties(weft_rt *rt, struct weft_group *g, uint64_t n)
{
	uint64_t failed = 0;

	for (uint64_t i = 0; i < n; i++)
		if (weft_group_spawn(rt, g, empty_task, NULL) != 0)
			failed++;
	return failed;
}

/* ---- fib ---- */

/* fib(n) by iteration: the value every variant must return. */
static uint64_t fib_iter(int n)
{
	uint64_t a = 0, b = 1;

	for (int i = 0; i < n; i++) {
		uint64_t t = a + b;
		a = b;
		b = t;
	}
	return a;
}

/* Spawns of the spawn-per-call fib: one per call with n >= 2, and there
 * are fib(n+1) - 1 of those. */
static uint64_t fib_spawns(int n)
{
	return fib_iter(n + 1) - 1;
}

struct fib_frame {
	int n;
	uint64_t r;
};

/* The runtime fib tasks spawn into; set before each run (tasks only get
 * their frame). */
static weft_rt *fib_rt;
static atomic_ulong fib_spawn_failures;

static uint64_t fib_weft(int n);

static void fib_task(void *arg)
{
	struct fib_frame *f = arg;

	f->r = fib_weft(f->n);
}

/* The shape of the issue: fib(n-1) spawned into a group on this stack,
 * fib(n-2) inline, wait, sum. */
static uint64_t fib_weft(int n)
{
	struct fib_frame child;
	struct weft_group g;
	uint64_t b;

	if (n < 2)
		return (uint64_t)n;
	child.n = n - 1;
	child.r = 0;
	weft_group_init(&g);
	if (weft_group_spawn(fib_rt, &g, fib_task, &child) != 0) {
		/* Still give the right answer, and count it as an error. */
		atomic_fetch_add_explicit(&fib_spawn_failures, 1, memory_order_relaxed);
		fib_task(&child);
	}
	b = fib_weft(n - 2);
	weft_group_wait(fib_rt, &g);
	return child.r + b;
}

/* The same recursion through weft_join: fib(n-2) runs here, fib(n-1) is
 * the spawned (stealable) half, as Lace's SPAWN/CALL/SYNC fib. */
static void fib_join_task(void *arg)
{
	struct fib_frame *f = arg;
	struct fib_frame a, b;

	if (f->n < 2) {
		f->r = (uint64_t)f->n;
		return;
	}
	a.n = f->n - 2;
	b.n = f->n - 1;
	if (weft_join(fib_rt, fib_join_task, &a, fib_join_task, &b) != 0) {
		atomic_fetch_add_explicit(&fib_spawn_failures, 1, memory_order_relaxed);
		fib_join_task(&a);
		fib_join_task(&b);
	}
	f->r = a.r + b.r;
}

/* fib(n) as a root task submitted from this (non-worker) thread. */
static uint64_t fib_root(weft_rt *rt, void (*task)(void *), int n)
{
	struct fib_frame root = { n, 0 };
	struct weft_group g;

	fib_rt = rt;
	weft_group_init(&g);
	if (weft_group_spawn(fib_rt, &g, task, &root) != 0)
		return UINT64_MAX;
	weft_group_wait(fib_rt, &g);
	return root.r;
}

static uint64_t fib_weft_root(void *ctx, int n)
{
	return fib_root(ctx, fib_task, n);
}

static uint64_t fib_join_root(void *ctx, int n)
{
	return fib_root(ctx, fib_join_task, n);
}

static uint64_t fib_serial_run(void *ctx, int n)
{
	(void)ctx;
	return bench_fib_serial(n);
}

#ifdef WEFT_BENCH_HAVE_TBB
static uint64_t fib_tbb_run(void *ctx, int n)
{
	return bench_fib_tbb(ctx, n);
}
#endif

#ifdef WEFT_BENCH_HAVE_OMP
static uint64_t fib_omp_run(void *ctx, int n)
{
	return bench_fib_omp(n, (int)(intptr_t)ctx);
}
#endif

/* One implementation of fib, measured. */
struct fib_result {
	bool ok;        /* measured and right */
	char why[64];   /* when not ok: "n/a (...)" */
	double ms;      /* median over the repetitions */
	double ns_spawn;/* (ms - serial ms) / spawns */
};

static bool fib_check_failures(struct fib_result *res)
{
	if (atomic_load(&fib_spawn_failures) == 0)
		return true;
	snprintf(res->why, sizeof res->why, "ERROR: %lu spawns failed", atomic_load(&fib_spawn_failures));
	res->ok = false;
	errors++;
	return false;
}

#define FIB_TURNS_MAX 4

struct fib_variant {
	struct fib_result *res;
	uint64_t (*fn)(void *, int);
	void *ctx;
};

/* Time several implementations of fib(n) in turns: after a pause (so
 * threads of the variant before have gone idle) and a smaller warm-up run
 * of each (thread start-up, first touch of stacks and arenas), rounds of
 * one run each, so that a VM that slows down for a while slows all of
 * them; the median of each.  The mode's repetitions, and at least
 * min_rounds.  Every result is checked. */
static void fib_time_turns(struct fib_variant *v, size_t nv, int n, unsigned min_rounds)
{
	const uint64_t expect = fib_iter(n);
	unsigned rounds = M.reps < min_rounds ? min_rounds : M.reps;
	double t[FIB_TURNS_MAX][MAX_REPS];

	if (nv > FIB_TURNS_MAX)
		nv = FIB_TURNS_MAX;

	bench_sleep_ns(50000000);
	for (size_t k = 0; k < nv; k++)
		(void)v[k].fn(v[k].ctx, n > 8 ? n - 4 : n);
	for (size_t k = 0; k < nv; k++)
		v[k].res->ok = true;
	for (unsigned i = 0; i < rounds; i++) {
		for (size_t k = 0; k < nv; k++) {
			struct fib_result *res = v[k].res;
			uint64_t t0, r;

			if (!res->ok)
				continue;
			t0 = bench_now_ns();
			r = v[k].fn(v[k].ctx, n);
			t[k][i] = (double)(bench_now_ns() - t0) / 1e6;
			if (r != expect) {
				snprintf(res->why, sizeof res->why, "ERROR: returned %llu, not %llu",
					 (unsigned long long)r, (unsigned long long)expect);
				res->ok = false;
				errors++;
			}
		}
	}
	for (size_t k = 0; k < nv; k++)
		if (v[k].res->ok)
			v[k].res->ms = bench_median(t[k], rounds);
}

/* One implementation alone. */
static void fib_time(struct fib_result *res, uint64_t (*fn)(void *, int), void *ctx, int n)
{
	struct fib_variant v = { res, fn, ctx };

	fib_time_turns(&v, 1, n, 0);
}

static void fib_weft_measure(struct fib_result *res, unsigned workers, int n)
{
	weft_rt *rt = rt_create(workers, NULL, res->why, sizeof res->why);

	if (!rt)
		return;
	atomic_store(&fib_spawn_failures, 0);
	fib_time(res, fib_join_root, rt, n);
	weft_destroy(rt);
	fib_check_failures(res);
}

/* The one-worker rows: serial C, weft_join and the group API, measured in
 * turns on one CPU (the worker is pinned, and this thread runs the serial
 * code on the same CPU).  The two vCPUs of this VM differ by up to a third
 * in speed, and a comparison across them measured the CPUs, not weft. */
static void fib_one_cpu_measure(struct fib_result *serial, struct fib_result *join1, struct fib_result *group1,
				int n)
{
	struct weft_config cfg;
	weft_rt *rt = NULL;
	cpu_set_t old, one;
	bool pinned = false;
	int rc;

	memset(&cfg, 0, sizeof cfg);
	cfg.workers = 1;
	cfg.pin = true;
	rc = weft_create(&rt, &cfg);
	if (rc < 0) {
		snprintf(join1->why, sizeof join1->why, "n/a (weft_create: %s)", strerror(-rc));
		snprintf(group1->why, sizeof group1->why, "n/a (weft_create: %s)", strerror(-rc));
		errors++;
		fib_time(serial, fib_serial_run, NULL, n);
		return;
	}
	rc = weft_worker_cpu(rt, 0);
	if (rc >= 0 && sched_getaffinity(0, sizeof old, &old) == 0) {
		CPU_ZERO(&one);
		CPU_SET(rc, &one);
		pinned = sched_setaffinity(0, sizeof one, &one) == 0;
	}
	atomic_store(&fib_spawn_failures, 0);
	{
		struct fib_variant v[] = {
			{ serial, fib_serial_run, NULL },
			{ join1, fib_join_root, rt },
			{ group1, fib_weft_root, rt },
		};
		/* A run is a few milliseconds in quick mode: 9 rounds at least. */
		fib_time_turns(v, sizeof v / sizeof v[0], n, 9);
	}
	if (pinned)
		sched_setaffinity(0, sizeof old, &old);
	weft_destroy(rt);
	if (!fib_check_failures(join1))
		group1->ok = false;
}

static void fib_tbb_measure(struct fib_result *res, int threads, int n)
{
#ifdef WEFT_BENCH_HAVE_TBB
	struct bench_tbb *h = bench_tbb_open(threads);

	if (!h) {
		snprintf(res->why, sizeof res->why, "n/a (oneTBB arena failed)");
		return;
	}
	fib_time(res, fib_tbb_run, h, n);
	bench_tbb_close(h);
#else
	(void)threads;
	(void)n;
	snprintf(res->why, sizeof res->why, "n/a (not built: needs C++, libtbb-dev)");
#endif
}

static void fib_omp_measure(struct fib_result *res, int threads, int n)
{
#ifdef WEFT_BENCH_HAVE_OMP
	fib_time(res, fib_omp_run, (void *)(intptr_t)threads, n);
#else
	(void)threads;
	(void)n;
	snprintf(res->why, sizeof res->why, "n/a (not built: no OpenMP)");
#endif
}

/* "12.3 ms, 4.5 ns/spawn", or the reason it is missing. */
static void fib_cell(char *out, size_t len, const char *label, const struct fib_result *r)
{
	/* Two decimals for the short times of a small --fib. */
	int prec = r->ms < 10 ? 2 : 1;

	if (!r->ok)
		snprintf(out, len, "%s%s%s", label, *label ? " " : "", r->why);
	else if (isfinite(r->ns_spawn))
		snprintf(out, len, "%s%s%.*f ms, %.1f ns/spawn", label, *label ? " " : "", prec,
			 r->ms, r->ns_spawn);
	else
		snprintf(out, len, "%s%s%.*f ms", label, *label ? " " : "", prec, r->ms);
}

static void fib_metrics(struct bench_row *row, const char *prefix, const struct fib_result *r,
			const struct fib_result *serial, const struct fib_result *w1)
{
	char key[32];

	snprintf(key, sizeof key, "%s_ms", prefix);
	bench_metric(row, key, r->ok ? r->ms : NAN);
	snprintf(key, sizeof key, "%s_ns_per_spawn", prefix);
	bench_metric(row, key, r->ok ? r->ns_spawn : NAN);
	snprintf(key, sizeof key, "%s_x_serial", prefix);
	bench_metric(row, key, r->ok && serial->ok ? r->ms / serial->ms : NAN);
	snprintf(key, sizeof key, "%s_x_weft_1w", prefix);
	bench_metric(row, key, r->ok && w1->ok ? r->ms / w1->ms : NAN);
}

/* A line "weft vs a baseline": the ratio says how many times faster weft
 * is, and the goal is simply "faster". */
static void fib_versus(int n, const char *what, const char *label, const struct fib_result *weft,
		       const char *weft_label, const struct fib_result *base,
		       const struct fib_result *serial, const struct fib_result *w1)
{
	struct bench_row *row = bench_row_new("fib", "fib(%d) vs %s", n, what);
	char cell[128];

	fib_cell(cell, sizeof cell, weft_label, weft);
	bench_weft(row, "%s", cell);
	fib_cell(cell, sizeof cell, label, base);
	bench_base(row, "%s", cell);
	if (weft->ok && base->ok) {
		double speedup = base->ms / weft->ms;

		if (speedup >= 1)
			bench_ratio(row, "weft %.2fx faster", speedup);
		else
			bench_ratio(row, "weft %.2fx slower", 1 / speedup);
		bench_goal(row, speedup > 1 ? BENCH_OK : BENCH_MISS, "faster");
	} else {
		bench_goal(row, weft->ok ? BENCH_NONE : BENCH_ERROR, "faster");
	}
	fib_metrics(row, "weft", weft, serial, w1);
	fib_metrics(row, "base", base, serial, w1);
	bench_print_row(row);
}

static void group_fib(void)
{
	const int n = M.fib_n;
	const double spawns = (double)fib_spawns(n);
	struct fib_result serial = { 0 }, w1 = { 0 }, g1 = { 0 }, w2 = { 0 }, tbb1 = { 0 }, tbb2 = { 0 },
			  omp2 = { 0 };
	struct fib_result *all[] = { &serial, &w1, &g1, &w2, &tbb1, &tbb2, &omp2 };
	struct bench_row *row;
	char cell[128];

	/* Everything first, then the lines: each line compares two of them.
	 * weft's rows use weft_join (a spawn per call); the group API's row
	 * is the same recursion through weft_group_spawn/wait. */
	fib_one_cpu_measure(&serial, &w1, &g1, n);
	fib_weft_measure(&w2, 2, n);
	fib_tbb_measure(&tbb1, 1, n);
	fib_tbb_measure(&tbb2, 2, n);
	fib_omp_measure(&omp2, 2, n);
	/* Let the baselines' threads stop spinning before the next row:
	 * libomp spins for 200 ms (KMP_BLOCKTIME) after a parallel region,
	 * and a spinning thread takes one of the two CPUs from weft. */
	bench_sleep_ns(300000000);
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		all[i]->ns_spawn = all[i]->ok && serial.ok && all[i] != &serial
					   ? (all[i]->ms - serial.ms) * 1e6 / spawns
					   : NAN;

	row = bench_row_new("fib", "fib(%d) 1 worker", n);
	fib_cell(cell, sizeof cell, "join", &w1);
	bench_weft(row, "%s", cell);
	fib_cell(cell, sizeof cell, "serial C", &serial);
	bench_base(row, "%s", cell);
	if (w1.ok && serial.ok) {
		bench_ratio(row, "%.2fx serial", w1.ms / serial.ms);
		bench_goal(row, w1.ms / serial.ms <= 4 ? BENCH_OK : BENCH_MISS, "<= 4x serial");
	} else {
		bench_goal(row, BENCH_ERROR, "<= 4x serial");
	}
	bench_metric(row, "n", n);
	bench_metric(row, "spawns", spawns);
	bench_metric(row, "serial_ms", serial.ok ? serial.ms : NAN);
	fib_metrics(row, "weft_1w", &w1, &serial, &w1);
	bench_print_row(row);

	/* No goal of its own: the figure is per spawn, and weft_join
	 * is weft's spawn-per-call fork-join.  Shown so the cost of the
	 * general group API is never hidden. */
	row = bench_row_new("fib", "fib(%d) 1w, group API", n);
	fib_cell(cell, sizeof cell, "group", &g1);
	bench_weft(row, "%s", cell);
	fib_cell(cell, sizeof cell, "serial C", &serial);
	bench_base(row, "%s", cell);
	if (g1.ok && serial.ok)
		bench_ratio(row, "%.2fx serial", g1.ms / serial.ms);
	bench_goal(row, g1.ok ? BENCH_NONE : BENCH_ERROR, "info: spawn+wait per call");
	fib_metrics(row, "weft_group_1w", &g1, &serial, &w1);
	bench_print_row(row);

	row = bench_row_new("fib", "fib(%d) 2 workers", n);
	fib_cell(cell, sizeof cell, "join", &w2);
	bench_weft(row, "%s", cell);
	fib_cell(cell, sizeof cell, "weft 1 worker", &w1);
	bench_base(row, "%s", cell);
	if (w1.ok && w2.ok) {
		bench_ratio(row, "%.2fx speed-up", w1.ms / w2.ms);
		bench_goal(row, w1.ms / w2.ms >= 1.8 ? BENCH_OK : BENCH_MISS, ">= 1.8x speed-up");
	} else {
		bench_goal(row, BENCH_ERROR, ">= 1.8x speed-up");
	}
	fib_metrics(row, "weft_2w", &w2, &serial, &w1);
	bench_print_row(row);

	fib_versus(n, "oneTBB, 1 thr", "oneTBB", &w1, "1w", &tbb1, &serial, &w1);
	fib_versus(n, "oneTBB, 2 thr", "oneTBB", &w2, "2w", &tbb2, &serial, &w1);
	fib_versus(n, "OpenMP, 2 thr", "OpenMP", &w2, "2w", &omp2, &serial, &w1);
}

/* ---- flat spawn ---- */

struct burst {
	weft_rt *rt;
	uint64_t tasks;
	uint64_t ns;
	uint64_t failed;
};

/* Inside a worker: spawn SPAWN_BATCH empty tasks, wait, until done. */
static void burst_task(void *arg)
{
	struct burst *b = arg;
	uint64_t t0 = bench_now_ns();

	for (uint64_t done = 0; done < b->tasks; done += SPAWN_BATCH) {
		struct weft_group g;

		weft_group_init(&g);
		b->failed += spawn_empties(b->rt, &g, SPAWN_BATCH);
		weft_group_wait(b->rt, &g);
	}
	b->ns = bench_now_ns() - t0;
}

static void flat_row(struct bench_row *row, const char *goal_text, double goal, const double *rate,
		     uint64_t failed, const char *why)
{
	double m = bench_median(rate, M.reps);

	if (why) {
		bench_weft(row, "%s", why);
		bench_goal(row, BENCH_ERROR, "%s", goal_text);
	} else if (failed) {
		bench_weft(row, "ERROR: %llu spawns failed", (unsigned long long)failed);
		bench_goal(row, BENCH_ERROR, "%s", goal_text);
		errors++;
	} else {
		bench_weft(row, "%.1f M tasks/s", m);
		bench_goal(row, m >= goal ? BENCH_OK : BENCH_MISS, "%s", goal_text);
	}
	bench_base(row, "- (none in issue 2)");
	bench_metric(row, "tasks", (double)M.flat_tasks);
	bench_metric(row, "mtasks_per_s", why || failed ? NAN : m);
	bench_metric(row, "mtasks_per_s_min", why || failed ? NAN : bench_percentile(rate, M.reps, 0));
	bench_metric(row, "mtasks_per_s_max", why || failed ? NAN : bench_percentile(rate, M.reps, 100));
	bench_print_row(row);
}

static void group_spawn(void)
{
	double out_rate[MAX_REPS] = { 0 }, in_rate[MAX_REPS] = { 0 };
	uint64_t out_failed = 0, in_failed = 0;
	char why[64];
	weft_rt *rt = rt_create(0, NULL, why, sizeof why);
	struct bench_row *row;

	if (rt) {
		/* From the main thread, which is not a worker: every spawn goes
		 * through an injection queue. */
		for (unsigned r = 0; r <= M.reps; r++) {
			struct weft_group g;
			uint64_t n = r == 0 ? M.flat_tasks / 10 : M.flat_tasks; /* warm-up */
			uint64_t t0 = bench_now_ns();

			weft_group_init(&g);
			out_failed += spawn_empties(rt, &g, n);
			weft_group_wait(rt, &g);
			if (r > 0)
				out_rate[r - 1] = (double)n / ((double)(bench_now_ns() - t0) / 1e3);
		}
		/* From a worker: the rate the task itself sees, so the wake-up of
		 * the root task is not part of it. */
		for (unsigned r = 0; r <= M.reps; r++) {
			struct burst b = { rt, r == 0 ? M.flat_tasks / 10 : M.flat_tasks, 0, 0 };
			struct weft_group g;

			weft_group_init(&g);
			if (weft_group_spawn(rt, &g, burst_task, &b) != 0) {
				in_failed++;
				break;
			}
			weft_group_wait(rt, &g);
			in_failed += b.failed;
			if (r > 0)
				in_rate[r - 1] = (double)b.tasks / ((double)b.ns / 1e3);
		}
		weft_destroy(rt);
	}
	row = bench_row_new("spawn", "spawn %lluM from outside thread",
			    (unsigned long long)(M.flat_tasks / 1000000));
	flat_row(row, ">= 20 M/s", 20, out_rate, out_failed, rt ? NULL : why);
	row = bench_row_new("spawn", "spawn %lluM in worker, 1000+wait",
			    (unsigned long long)(M.flat_tasks / 1000000));
	flat_row(row, ">= 100 M/s", 100, in_rate, in_failed, rt ? NULL : why);
}

/* ---- wake latency ---- */

struct stamp {
	uint64_t ns;
};

static void stamp_task(void *arg)
{
	((struct stamp *)arg)->ns = bench_now_ns();
}

/* Two CPUs of the affinity mask for the cross-CPU ping-pong; false if the
 * process may run on one CPU only. */
static bool two_cpus(int *a, int *b)
{
	cpu_set_t set;
	int found = 0;

	if (sched_getaffinity(0, sizeof set, &set) != 0)
		return false;
	for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
		if (CPU_ISSET(c, &set))
			*(found++ ? b : a) = c;
	return found == 2;
}

static uint64_t sum_stat(const struct weft_stats *s, size_t offset)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < s->workers && w < WEFT_MAX_WORKERS; w++)
		sum += *(const uint64_t *)((const char *)&s->worker[w] + offset);
	return sum;
}

/* One sample: an outside thread spawns onto a runtime whose workers have
 * been idle for 2 ms; the time from just before the spawn to the start of
 * the task, in ns, or -1 if the spawn failed. */
static double wake_sample(weft_rt *rt)
{
	struct stamp s = { 0 };
	struct weft_group g;
	uint64_t t0;

	/* Long enough for every worker to give up spinning and park. */
	bench_sleep_ns(2000000);
	weft_group_init(&g);
	t0 = bench_now_ns();
	if (weft_group_spawn(rt, &g, stamp_task, &s) != 0)
		return -1;
	weft_group_wait(rt, &g);
	return (double)(s.ns - t0);
}

/* Samples are taken in chunks, alternating weft and the ping-pong, so that
 * both see the same load on a shared, noisy machine. */
#define WAKE_CHUNKS 8

static void group_wake(void)
{
	const unsigned n = M.wake_samples;
	double *lat = calloc(n, sizeof *lat), *pp = calloc(n, sizeof *pp);
	double *pp_free = calloc(n, sizeof *pp_free);
	struct weft_stats *st = calloc(2, sizeof *st);
	uint64_t failed = 0, wakeups = 0, parks = 0;
	int cpu_a = -1, cpu_b = -1, rc_pp = 0, rc_free = 0;
	char why[64] = "", ppwhy[64] = "";
	const char *pp_label = "futex x-CPU";
	weft_rt *rt;
	struct bench_row *row;

	if (!lat || !pp || !pp_free || !st) {
		fprintf(stderr, "weft-bench: out of memory\n");
		exit(1);
	}
	/* The baseline is the ping-pong pinned to two CPUs: the cross-CPU
	 * wake the figure is about.  Unpinned, the scheduler tends to
	 * put both threads on one CPU, several times cheaper here; it is shown
	 * beside it. */
	if (!two_cpus(&cpu_a, &cpu_b))
		pp_label = "futex 1-CPU";
	rt = rt_create(0, NULL, why, sizeof why);
	if (rt)
		weft_stats(rt, &st[0]);
	for (unsigned c = 0; c < WAKE_CHUNKS; c++) {
		unsigned lo = n * c / WAKE_CHUNKS, hi = n * (c + 1) / WAKE_CHUNKS;

		if (rc_pp == 0)
			rc_pp = bench_futex_pingpong(hi - lo, cpu_a, cpu_b, pp + lo);
		if (rc_free == 0)
			rc_free = bench_futex_pingpong(hi - lo, -1, -1, pp_free + lo);
		for (unsigned i = lo; rt && i < hi; i++)
			if ((lat[i] = wake_sample(rt)) < 0)
				failed++;
	}
	if (rc_pp < 0)
		snprintf(ppwhy, sizeof ppwhy, "n/a (ping-pong: %s)", strerror(-rc_pp));
	if (rt) {
		weft_stats(rt, &st[1]);
		wakeups = sum_stat(&st[1], offsetof(struct weft_worker_stats, wakeups)) -
			  sum_stat(&st[0], offsetof(struct weft_worker_stats, wakeups));
		parks = sum_stat(&st[1], offsetof(struct weft_worker_stats, parks)) -
			sum_stat(&st[0], offsetof(struct weft_worker_stats, parks));
		weft_destroy(rt);
		if (failed) {
			snprintf(why, sizeof why, "ERROR: %llu spawns failed", (unsigned long long)failed);
			errors++;
		}
	}

	for (int p99 = 0; p99 <= 1; p99++) {
		double w = p99 ? bench_percentile(lat, n, 99) : bench_median(lat, n);
		double b = p99 ? bench_percentile(pp, n, 99) : bench_median(pp, n);
		double f = p99 ? bench_percentile(pp_free, n, 99) : bench_median(pp_free, n);
		bool have_w = !*why, have_b = rc_pp == 0, have_f = rc_free == 0;

		row = bench_row_new("wake", "wake latency %s, n=%u", p99 ? "p99" : "median", n);
		if (have_w)
			bench_weft(row, "%.1f us", w / 1e3);
		else
			bench_weft(row, "%s", why);
		if (have_b && have_f)
			bench_base(row, "%s %.1f us (unpinned %.1f)", pp_label, b / 1e3, f / 1e3);
		else if (have_b)
			bench_base(row, "%s %.1f us", pp_label, b / 1e3);
		else
			bench_base(row, "%s", ppwhy);
		if (have_w && have_b)
			bench_ratio(row, "%.2fx futex", w / b);
		/* The figure is about the typical wake; p99 is shown for
		 * the tail only. */
		if (!p99)
			bench_goal(row, !have_w ? BENCH_ERROR : !have_b ? BENCH_NONE
						: w / b <= 2 ? BENCH_OK : BENCH_MISS,
				   "<= 2x futex one-way");
		bench_metric(row, "weft_us", have_w ? w / 1e3 : NAN);
		bench_metric(row, "futex_pinned_oneway_us", have_b ? b / 1e3 : NAN);
		bench_metric(row, "futex_unpinned_oneway_us", have_f ? f / 1e3 : NAN);
		bench_metric(row, "futex_cpu_a", cpu_a);
		bench_metric(row, "futex_cpu_b", cpu_b);
		/* About 1 wake-up per sample shows the workers really were
		 * parked each time. */
		bench_metric(row, "weft_wakeups_per_sample", have_w ? (double)wakeups / n : NAN);
		bench_metric(row, "weft_parks_per_sample", have_w ? (double)parks / n : NAN);
		bench_print_row(row);
	}
	free(lat);
	free(pp);
	free(pp_free);
	free(st);
}

/* ---- steal locality ---- */

static void steal_topology(unsigned workers)
{
	const char *topo = "0|1";
	struct weft_stats *st = calloc(1, sizeof *st);
	char why[64];
	weft_rt *rt;
	struct bench_row *row;
	struct weft_group g;
	uint64_t failed;
	cpu_set_t set;

	if (!st) {
		fprintf(stderr, "weft-bench: out of memory\n");
		exit(1);
	}
	/* The topology names CPUs 0 and 1; on a machine that does not let
	 * us use both, the row does not apply (not an error of weft). */
	if (sched_getaffinity(0, sizeof set, &set) != 0 || !CPU_ISSET(0, &set) ||
	    !CPU_ISSET(1, &set)) {
		row = bench_row_new("steal", "steal \"%s\", %u workers", topo, workers);
		bench_weft(row, "n/a (CPUs 0 and 1 not both usable)");
		bench_print_row(row);
		free(st);
		return;
	}
	rt = rt_create(workers, topo, why, sizeof why);
	if (!rt) {
		row = bench_row_new("steal", "steal \"%s\", %u workers", topo, workers);
		bench_weft(row, "%s", why);
		bench_goal(row, BENCH_ERROR, "-");
		bench_print_row(row);
		free(st);
		return;
	}
	/* A fib (work spreads by stealing), then a flat burst from outside
	 * (work arrives through the injection queues). */
	atomic_store(&fib_spawn_failures, 0);
	if (fib_weft_root(rt, M.fib_n) != fib_iter(M.fib_n) || atomic_load(&fib_spawn_failures))
		errors++;
	weft_group_init(&g);
	failed = spawn_empties(rt, &g, M.flat_tasks / 10);
	weft_group_wait(rt, &g);
	if (failed)
		errors++;
	weft_stats(rt, st);
	for (unsigned w = 0; w < st->workers && w < WEFT_MAX_WORKERS; w++) {
		const struct weft_worker_stats *ws = &st->worker[w];

		row = bench_row_new("steal", "steal \"%s\" %uw: w%u node%u cpu%d", topo, workers, w,
				    ws->node, ws->cpu);
		bench_weft(row, "local %llu remote %llu", (unsigned long long)ws->steals_local,
			   (unsigned long long)ws->steals_remote);
		if (ws->steals_local + ws->steals_remote)
			bench_ratio(row, "%.0f%% local",
				    100.0 * (double)ws->steals_local /
					    (double)(ws->steals_local + ws->steals_remote));
		bench_goal(row, BENCH_NONE, "injected %llu (%llu rem)",
			   (unsigned long long)ws->injected, (unsigned long long)ws->injected_remote);
		bench_metric(row, "workers", workers);
		bench_metric(row, "worker", w);
		bench_metric(row, "node", ws->node);
		bench_metric(row, "cpu", ws->cpu);
		bench_metric(row, "tasks_run", (double)ws->tasks_run);
		bench_metric(row, "steals_local", (double)ws->steals_local);
		bench_metric(row, "steals_remote", (double)ws->steals_remote);
		bench_metric(row, "steal_failures", (double)ws->steal_failures);
		bench_metric(row, "injected", (double)ws->injected);
		bench_metric(row, "injected_remote", (double)ws->injected_remote);
		bench_metric(row, "parks", (double)ws->parks);
		bench_metric(row, "wakeups", (double)ws->wakeups);
		bench_print_row(row);
	}
	weft_destroy(rt);
	free(st);
}

static void group_steal(void)
{
	/* The case: one worker per node, so every steal is remote.
	 * Then two per node (sharing the CPUs), where a worker has a victim
	 * on its own node and local-first stealing can show. */
	steal_topology(2);
	steal_topology(4);
}

/* ---- idle CPU ---- */

static void group_idle(void)
{
	struct bench_row *row = bench_row_new("idle", "idle CPU, 1 s from 100 ms after");
	double cpu0, cpu1, pct;
	uint64_t t0, t1, failed;
	struct weft_group g;
	char why[64];
	weft_rt *rt = rt_create(0, NULL, why, sizeof why);

	if (!rt) {
		bench_weft(row, "%s", why);
		bench_goal(row, BENCH_ERROR, "< 1%% of a CPU");
		bench_print_row(row);
		return;
	}
	/* Some work first, so every worker has run, stolen and spun. */
	atomic_store(&fib_spawn_failures, 0);
	if (fib_weft_root(rt, 25) != fib_iter(25) || atomic_load(&fib_spawn_failures))
		errors++;
	weft_group_init(&g);
	failed = spawn_empties(rt, &g, 100000);
	weft_group_wait(rt, &g);
	if (failed)
		errors++;

	bench_sleep_ns(100000000);
	/* The whole process: the main thread only sleeps, and the other
	 * rows' baseline threads (oneTBB, OpenMP) have been idle for longer
	 * than they spin. */
	cpu0 = bench_cpu_seconds();
	t0 = bench_now_ns();
	bench_sleep_ns(1000000000);
	cpu1 = bench_cpu_seconds();
	t1 = bench_now_ns();
	weft_destroy(rt);

	pct = (cpu1 - cpu0) / ((double)(t1 - t0) / 1e9) * 100;
	bench_weft(row, "%.2f %% of a CPU", pct);
	bench_base(row, "- (getrusage, whole process)");
	bench_goal(row, pct < 1 ? BENCH_OK : BENCH_MISS, "< 1%% of a CPU");
	bench_metric(row, "cpu_percent", pct);
	bench_metric(row, "cpu_seconds", cpu1 - cpu0);
	bench_metric(row, "wall_seconds", (double)(t1 - t0) / 1e9);
	bench_print_row(row);
}

/* ---- memory ---- */

struct mem_run {
	weft_rt *rt;
	uint64_t tasks;
	uint64_t failed;
	long long rss_first; /* after the first batch */
	uint64_t ns;
};

static void mem_task(void *arg)
{
	struct mem_run *m = arg;
	uint64_t t0 = bench_now_ns();

	for (uint64_t done = 0; done < m->tasks; done += MEM_BATCH) {
		struct weft_group g;

		weft_group_init(&g);
		m->failed += spawn_empties(m->rt, &g, MEM_BATCH);
		weft_group_wait(m->rt, &g);
		if (done == 0)
			m->rss_first = bench_rss_bytes();
	}
	m->ns = bench_now_ns() - t0;
}

static void group_memory(void)
{
	struct bench_row *row = bench_row_new("memory", "memory, %lluM tasks in 10k batches",
					      (unsigned long long)(M.mem_tasks / 1000000));
	const double MiB = 1024.0 * 1024.0;
	struct mem_run m = { 0 };
	long long before, after;
	double growth, steady;
	struct weft_group g;
	char why[64];
	weft_rt *rt = rt_create(0, NULL, why, sizeof why);

	if (!rt) {
		bench_weft(row, "%s", why);
		bench_goal(row, BENCH_ERROR, "flat");
		bench_print_row(row);
		return;
	}
	m.rt = rt;
	m.tasks = M.mem_tasks;
	before = bench_rss_bytes();
	weft_group_init(&g);
	if (weft_group_spawn(rt, &g, mem_task, &m) != 0)
		m.failed++;
	weft_group_wait(rt, &g);
	after = bench_rss_bytes();
	weft_destroy(rt);
	if (m.failed) {
		bench_weft(row, "ERROR: %llu spawns failed", (unsigned long long)m.failed);
		bench_goal(row, BENCH_ERROR, "flat");
		errors++;
		bench_print_row(row);
		return;
	}
	growth = (double)(after - before) / MiB;
	/* Growth after the first batch is what a leak would show; the first
	 * batch itself may legitimately fill the arenas. */
	steady = (double)(after - m.rss_first) / MiB;
	bench_weft(row, "RSS %.1f -> %.1f MiB", (double)before / MiB, (double)after / MiB);
	bench_base(row, "RSS after 1st batch %.1f MiB", (double)m.rss_first / MiB);
	bench_ratio(row, "%+.2f MiB, %+.2f steady", growth, steady);
	bench_goal(row, steady < 1 ? BENCH_OK : BENCH_MISS, "flat (< 1 MiB steady)");
	bench_metric(row, "tasks", (double)m.tasks);
	bench_metric(row, "rss_before_mib", (double)before / MiB);
	bench_metric(row, "rss_first_batch_mib", (double)m.rss_first / MiB);
	bench_metric(row, "rss_after_mib", (double)after / MiB);
	bench_metric(row, "growth_mib", growth);
	bench_metric(row, "steady_growth_mib", steady);
	bench_metric(row, "mtasks_per_s", (double)m.tasks / ((double)m.ns / 1e3));
	bench_print_row(row);
}

/* ---- component scheduler (issue 3) ------------------------------------------ */

/* The load: 64 components, at most 1024 in flight, 2 workers;
 * 200k tasks in full mode, 50k in quick mode. */
static struct ecs_params ecs_row_params(bool zipf, double work_us)
{
	struct ecs_params p = {
		.tasks = M.fib_n >= 35 ? 200000 : 50000,
		.components = 64,
		.work_us = work_us,
		.zipf = zipf,
		.inflight = 1024,
		.workers = 2,
		.seed = 0x5eed,
	};
	return p;
}

static void ecs_metrics(struct bench_row *row, const char *who, const struct ecs_result *r)
{
	char key[32];
	snprintf(key, sizeof key, "%s_ns_per_task", who);
	bench_metric(row, key, r->ran ? r->ns_per_task : NAN);
	snprintf(key, sizeof key, "%s_wait_p99_us", who);
	bench_metric(row, key, r->ran ? r->wait_p99_us : NAN);
}

/* The last ecs_config's weft and condvar results (for the fairness row). */
static struct ecs_result ecs_last_weft, ecs_last_cv;

/*
 * What the W > 0 goals ask against what a scheduler costing nothing would
 * take in this harness.  The submitting thread is a third thread on the
 * two CPUs, and every task's body must run: about (the serial time of the
 * bodies + the submitter's CPU time) / 2 a task.  An estimate, not a proven
 * bound: the submitter's CPU time is the cheapest measured in this run,
 * which includes that scheduler's own submission (too high) but comes from
 * the rwlock pool, whose blocked workers leave a CPU idle when the gate
 * wakes the submitter (too low); the serial time is a separate run of the
 * same minute.  No goal: it says whether the row's goal is above it.
 */
static void ecs_floor_row(bool zipf, double work_us, const struct ecs_result *weft, const struct ecs_result *rw,
			  const struct ecs_result *cv, const struct ecs_result *serial, const struct ecs_result *best)
{
	const char *dist = zipf ? "zipf" : "uniform";
	struct bench_row *row = bench_row_new("ecs", "  floor W=%gus %s", work_us, dist);
	const struct ecs_result *pooled[] = { weft, rw, cv };
	double sub = NAN;
	for (int i = 0; i < 3; i++)
		if (pooled[i]->ran && (isnan(sub) || pooled[i]->submit_cpu_ns < sub))
			sub = pooled[i]->submit_cpu_ns;
	/* The row's goal as a time a task: faster than serial and 1.5x
	 * rwlock (uniform), 1.3x the best baseline (zipf). */
	double goal = zipf ? (best ? best->ns_per_task / 1.3 : NAN)
			   : (rw->ran && serial->ran ? fmin(serial->ns_per_task, rw->ns_per_task / 1.5) : NAN);
	double floor = serial->ran ? (serial->ns_per_task + sub) / 2 : NAN;
	bench_weft(row, "submitter %.0f ns/task CPU", weft->ran ? weft->submit_cpu_ns : NAN);
	bench_base(row, "rwlock %.0f, condvar %.0f ns/task CPU", rw->ran ? rw->submit_cpu_ns : NAN,
		   cv->ran ? cv->submit_cpu_ns : NAN);
	bench_ratio(row, "floor ~%.0f ns/task", floor);
	bench_goal(row, BENCH_NONE, "goal %.0f ns/task%s", goal, goal < floor ? ": below the floor" : "");
	bench_metric(row, "weft_submit_cpu_ns", weft->ran ? weft->submit_cpu_ns : NAN);
	bench_metric(row, "rwlock_submit_cpu_ns", rw->ran ? rw->submit_cpu_ns : NAN);
	bench_metric(row, "condvar_submit_cpu_ns", cv->ran ? cv->submit_cpu_ns : NAN);
	bench_metric(row, "floor_ns_per_task", floor);
	bench_metric(row, "goal_ns_per_task", goal);
	bench_print_row(row);
}

static void ecs_config(bool zipf, double work_us)
{
	struct ecs_params p = ecs_row_params(zipf, work_us);
	struct ecs_result weft, rw, cv, omp, serial;
	ecs_run_serial(&p, &serial);
	ecs_run_weft(&p, &weft);
	ecs_run_rwlock(&p, &rw);
	ecs_run_condvar(&p, &cv);
	ecs_run_omp(&p, &omp);
	if (!weft.ran)
		errors++;
	ecs_last_weft = weft;
	ecs_last_cv = cv;

	/* The best baseline of the same run (serial is the bound, not a
	 * scheduler). */
	const struct ecs_result *best = NULL;
	const char *best_name = "-";
	const struct ecs_result *cand[] = { &rw, &cv, &omp };
	const char *names[] = { "rwlock", "condvar", "OpenMP" };
	for (int i = 0; i < 3; i++)
		if (cand[i]->ran && (!best || cand[i]->ns_per_task < best->ns_per_task)) {
			best = cand[i];
			best_name = names[i];
		}

	const char *dist = zipf ? "zipf" : "uniform";
	struct bench_row *row = bench_row_new("ecs", "ecs W=%gus %s, %uk tasks", work_us, dist, p.tasks / 1000);
	if (weft.ran)
		bench_weft(row, "%.0f ns/task, p99 %.0f us", weft.ns_per_task, weft.wait_p99_us);
	else
		bench_weft(row, "ERROR: %s", weft.why);
	bench_base(row, "serial %.0f, rwlock %.0f, condvar %.0f, omp %.0f ns", serial.ran ? serial.ns_per_task : NAN,
		   rw.ran ? rw.ns_per_task : NAN, cv.ran ? cv.ns_per_task : NAN, omp.ran ? omp.ns_per_task : NAN);
	enum bench_verdict v = BENCH_ERROR;
	if (weft.ran && best) {
		double vs_best = best->ns_per_task / weft.ns_per_task;
		double vs_rw = rw.ran ? rw.ns_per_task / weft.ns_per_task : NAN;
		double vs_serial = serial.ran ? serial.ns_per_task / weft.ns_per_task : NAN;
		bench_ratio(row, "%.2fx best (%s), %.2fx rwlock", vs_best, best_name, vs_rw);
		if (work_us == 0) {
			/* Per-task overhead at most half the best baseline's. */
			v = weft.ns_per_task <= best->ns_per_task / 2 ? BENCH_OK : BENCH_MISS;
			bench_goal(row, v, "<= 1/2 best overhead");
		} else if (!zipf) {
			v = vs_serial > 1 && vs_rw >= 1.5 ? BENCH_OK : BENCH_MISS;
			bench_goal(row, v, "> serial (%.2fx), >= 1.5x rwlock", vs_serial);
		} else {
			v = vs_best >= 1.3 ? BENCH_OK : BENCH_MISS;
			bench_goal(row, v, ">= 1.3x best");
		}
	} else {
		bench_goal(row, BENCH_ERROR, "-");
	}
	ecs_metrics(row, "weft", &weft);
	ecs_metrics(row, "rwlock", &rw);
	ecs_metrics(row, "condvar", &cv);
	ecs_metrics(row, "omp", &omp);
	ecs_metrics(row, "serial", &serial);
	bench_print_row(row);

	row = bench_row_new("ecs", "  waits W=%gus %s", work_us, dist);
	if (weft.ran) {
		bench_weft(row, "p50 %.0f p99 %.0f max %.0f us; %.1f%% waited, %.1f%% reserved", weft.wait_p50_us,
			   weft.wait_p99_us, weft.wait_max_us, weft.waited_frac * 100, weft.reserved_frac * 100);
		bench_base(row, "rwlock p99 %.0f us, max %.0f us", rw.ran ? rw.wait_p99_us : NAN, rw.ran ? rw.wait_max_us : NAN);
		bench_ratio(row, "%.2f wakeups/grant, %llu spurious", weft.wakeups_per_grant,
			    (unsigned long long)weft.spurious);
		bool ok = (!rw.ran || weft.wait_p99_us <= rw.wait_p99_us) && weft.wakeups_per_grant <= 1.0 &&
			  weft.spurious == 0;
		bench_goal(row, ok ? BENCH_OK : BENCH_MISS, "p99 <= rwlock, <= 1 wake/grant, 0 spurious");
	} else {
		bench_goal(row, BENCH_ERROR, "-");
	}
	bench_metric(row, "weft_wait_p50_us", weft.ran ? weft.wait_p50_us : NAN);
	bench_metric(row, "weft_wait_max_us", weft.ran ? weft.wait_max_us : NAN);
	bench_metric(row, "weft_wakeups_per_grant", weft.ran ? weft.wakeups_per_grant : NAN);
	bench_metric(row, "weft_waited_frac", weft.ran ? weft.waited_frac : NAN);
	bench_metric(row, "weft_reserved_frac", weft.ran ? weft.reserved_frac : NAN);
	bench_print_row(row);

	if (work_us > 0)
		ecs_floor_row(zipf, work_us, &weft, &rw, &cv, &serial, best);
}

/*
 * The W = 1 us rows again with the producer inside the pool (ecs.h, "the
 * in-pool producer"): a weft task, or a turn of a pool thread, submits
 * until the window is full and is restarted by the completion that frees
 * it, the way a server's I/O callbacks submit work.  Two threads on the
 * two CPUs, no gate sleeps; OpenMP is left out (it always submits from its
 * team, in the row above).  No goal: it shows what the third thread of the
 * rows above costs each scheduler.
 */
static void ecs_in_pool_row(bool zipf)
{
	struct ecs_params p = ecs_row_params(zipf, 1);
	p.in_pool = true;
	struct ecs_result weft, rw, cv, serial;
	ecs_run_serial(&p, &serial);
	ecs_run_weft(&p, &weft);
	ecs_run_rwlock(&p, &rw);
	ecs_run_condvar(&p, &cv);
	const char *dist = zipf ? "zipf" : "uniform";
	struct bench_row *row = bench_row_new("ecs", "  in-pool producer W=1us %s", dist);
	if (!weft.ran) {
		bench_weft(row, "ERROR: %s", weft.why);
		bench_goal(row, BENCH_ERROR, "-");
		errors++;
	} else {
		bench_weft(row, "%.0f ns/task, %.1f%% waited", weft.ns_per_task, weft.waited_frac * 100);
		bench_base(row, "serial %.0f, rwlock %.0f, condvar %.0f ns", serial.ran ? serial.ns_per_task : NAN,
			   rw.ran ? rw.ns_per_task : NAN, cv.ran ? cv.ns_per_task : NAN);
		bench_ratio(row, "%.2fx rwlock, %.2fx condvar", rw.ran ? rw.ns_per_task / weft.ns_per_task : NAN,
			    cv.ran ? cv.ns_per_task / weft.ns_per_task : NAN);
		bench_goal(row, BENCH_NONE, "%.2fx serial; no 3rd thread",
			   serial.ran ? serial.ns_per_task / weft.ns_per_task : NAN);
	}
	ecs_metrics(row, "weft", &weft);
	ecs_metrics(row, "rwlock", &rw);
	ecs_metrics(row, "condvar", &cv);
	ecs_metrics(row, "serial", &serial);
	bench_metric(row, "weft_waited_frac", weft.ran ? weft.waited_frac : NAN);
	bench_print_row(row);
}

/*
 * What the fairness rule costs where it bites: the skewed W = 1 us load of
 * the row before, run again with the bypass budget out of reach (no
 * reservations: greedy, like the condvar baseline, which has no bound) and
 * with strict arrival order.  No goal: it explains the row above.
 */
static void ecs_fairness_row(void)
{
	struct ecs_params p = ecs_row_params(true, 1);
	p.max_bypass = UINT32_MAX;
	struct ecs_result unfair, strict;
	ecs_run_weft(&p, &unfair);
	p.max_bypass = 0;
	p.strict_order = true;
	ecs_run_weft(&p, &strict);
	struct bench_row *row = bench_row_new("ecs", "  W=1us zipf, max_bypass");
	if (!unfair.ran || !strict.ran || !ecs_last_weft.ran) {
		bench_weft(row, "ERROR: %s", !unfair.ran ? unfair.why : strict.ran ? ecs_last_weft.why : strict.why);
		bench_goal(row, BENCH_ERROR, "-");
		errors++;
	} else {
		bench_weft(row, "unbounded %.0f, strict %.0f ns", unfair.ns_per_task, strict.ns_per_task);
		bench_base(row, "condvar %.0f ns (unbounded too)", ecs_last_cv.ran ? ecs_last_cv.ns_per_task : NAN);
		bench_ratio(row, "unbounded %.2fx condvar",
			    ecs_last_cv.ran ? ecs_last_cv.ns_per_task / unfair.ns_per_task : NAN);
		bench_goal(row, BENCH_NONE, "max wait %.0f us unbounded", unfair.wait_max_us);
	}
	bench_metric(row, "weft_unbounded_ns_per_task", unfair.ran ? unfair.ns_per_task : NAN);
	bench_metric(row, "weft_strict_ns_per_task", strict.ran ? strict.ns_per_task : NAN);
	bench_print_row(row);
}

static void group_ecs(void)
{
	ecs_config(false, 0);
	ecs_config(true, 0);
	ecs_config(false, 1);
	ecs_config(true, 1);
	ecs_fairness_row();
	ecs_in_pool_row(false);
	ecs_in_pool_row(true);

	double pair = ecs_uncontended_pair_ns();
	struct bench_row *row = bench_row_new("ecs", "try_acquire+release, 2 comps");
	bench_weft(row, "%.1f ns", pair);
	bench_base(row, "- (one thread, uncontended)");
	bench_goal(row, isnan(pair) ? BENCH_ERROR : pair <= 60 ? BENCH_OK : BENCH_MISS, "<= 60 ns");
	bench_metric(row, "ns", pair);
	bench_print_row(row);

	bool order_ok = false;
	double seed = ecs_seed_scenario_us(&order_ok);
	row = bench_row_new("ecs", "seed scenario {A,B} after B");
	bench_weft(row, "%.1f us", seed);
	bench_base(row, "%s", order_ok ? "{A,C} waited for C" : "ORDER WRONG");
	bench_goal(row, isnan(seed) || !order_ok ? BENCH_ERROR : seed <= 100 ? BENCH_OK : BENCH_MISS, "<= 100 us");
	bench_metric(row, "us", seed);
	bench_print_row(row);
}

/* ---- I/O (issue 4): io_bench.c ---- */

static void group_io(void)
{
	errors += bench_group_io(&M.io);
}

/* ---- main ---- */

static const struct {
	const char *name;
	void (*run)(void);
	const char *what;

} GROUPS[] = {
	{ "fib", group_fib, "fib(n), a spawn per call: serial C, weft 1/2 workers, oneTBB, OpenMP" },
	{ "spawn", group_spawn, "flat spawn of empty tasks, from outside and inside a worker" },
	{ "wake", group_wake, "wake latency of a parked runtime vs a raw futex ping-pong" },
	{ "steal", group_steal, "per-worker steal counters on the virtual topology \"0|1\"" },
	{ "idle", group_idle, "CPU used by an idle runtime" },
	{ "memory", group_memory, "RSS before and after many tasks in batches" },
	{ "ecs", group_ecs, "component scheduler: ECS workload vs rwlocks, condvar, OpenMP depend" },
	{ "io", group_io, "I/O: chained reads vs raw liburing, ring-parked wake, echo vs epoll, "
			  "kv vs redis-server, idle servers" },
};
#define NGROUPS (sizeof GROUPS / sizeof GROUPS[0])

static void on_alarm(int sig)
{
	static const char msg[] = "\nweft-bench: watchdog: timed out in group ";
	const char *g = current_group;

	(void)sig;
	/* Only async-signal-safe calls here. */
	if (write(2, msg, sizeof msg - 1) < 0 || write(2, g, strlen(g)) < 0 || write(2, "\n", 1) < 0)
		_exit(3);
	_exit(3);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: weft-bench [--quick | --full] [--filter NAME[,NAME...]] [--json FILE]\n"
		"                  [--fib N] [--reps R] [--timeout SEC] [--list]\n"
		"  --quick        small sizes (fib(30), 2M tasks, 200 wake samples); the README's bench\n"
		"  --full         the issue's sizes (fib(35), 10M tasks, 1000 samples); the default\n"
		"  --filter NAME  run only the groups whose name contains NAME (repeatable)\n"
		"  --json FILE    also write the table, with every number, as JSON\n"
		"  --fib N        fib(N) instead of the mode's n\n"
		"  --reps R       repetitions per measurement (median), 1..%d\n"
		"  --timeout SEC  abort if the run takes longer (0: never; quick default 300)\n"
		"  --list         list the groups\n",
		MAX_REPS);
}

static long parse_num(const char *opt_name, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s ? s : "", &end, 10);
	if (!s || errno || *end || end == s || v < lo || v > hi) {
		fprintf(stderr, "weft-bench: %s wants a number in %ld..%ld\n", opt_name, lo, hi);
		exit(2);
	}
	return v;
}

static void read_loadavg(char *out, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");

	snprintf(out, len, "?");
	if (f) {
		if (!fgets(out, (int)len, f))
			snprintf(out, len, "?");
		out[strcspn(out, "\n")] = 0;
		fclose(f);
	}
}

int main(int argc, char **argv)
{
	const char *json = NULL;
	long fib_n = -1, reps = -1, timeout = -1;
	unsigned ok, miss, err;
	uint64_t start;
	char load[128];
	cpu_set_t set;

	M = mode_full;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--quick")) {
			M = mode_quick;
		} else if (!strcmp(a, "--full")) {
			M = mode_full;
		} else if (!strcmp(a, "--filter") && i + 1 < argc) {
			/* A comma-separated list, split in place. */
			for (char *tok = strtok(argv[++i], ","); tok; tok = strtok(NULL, ","))
				if (nfilters < MAX_FILTERS)
					filters[nfilters++] = tok;
		} else if (!strcmp(a, "--json") && i + 1 < argc) {
			json = argv[++i];
		} else if (!strcmp(a, "--fib")) {
			fib_n = parse_num(a, i + 1 < argc ? argv[++i] : NULL, 2, 60);
		} else if (!strcmp(a, "--reps")) {
			reps = parse_num(a, i + 1 < argc ? argv[++i] : NULL, 1, MAX_REPS);
		} else if (!strcmp(a, "--timeout")) {
			timeout = parse_num(a, i + 1 < argc ? argv[++i] : NULL, 0, 86400);
		} else if (!strcmp(a, "--list")) {
			for (size_t g = 0; g < NGROUPS; g++)
				printf("%-8s %s\n", GROUPS[g].name, GROUPS[g].what);
			return 0;
		} else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "weft-bench: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	/* Options override the mode whichever order they came in. */
	if (fib_n > 0)
		M.fib_n = (int)fib_n;
	if (reps > 0)
		M.reps = M.io.reps = (unsigned)reps;
	if (timeout >= 0)
		M.timeout_s = (unsigned)timeout;
	for (unsigned f = 0; f < nfilters; f++) {
		bool known = false;

		for (size_t g = 0; g < NGROUPS; g++)
			known |= strstr(GROUPS[g].name, filters[f]) != NULL;
		if (!known) {
			fprintf(stderr, "weft-bench: --filter %s matches no group (see --list)\n",
				filters[f]);
			return 2;
		}
	}

	if (M.timeout_s) {
		signal(SIGALRM, on_alarm);
		alarm(M.timeout_s);
	}
	start = bench_now_ns();
	read_loadavg(load, sizeof load);
	bench_meta("weft", "%s (headers %s)", weft_version(), WEFT_VERSION_STRING);
	bench_meta("mode", "%s: fib(%d), %u reps (median), %llu flat tasks, %u wake samples, "
			   "%llu memory tasks",
		   M.name, M.fib_n, M.reps, (unsigned long long)M.flat_tasks, M.wake_samples,
		   (unsigned long long)M.mem_tasks);
	bench_meta("io", "reads %.1f s x %u, %u ring-wake samples, echo %.1f s x %u, "
			 "redis-benchmark -n %u x %u",
		   M.io.read_seconds, M.io.reps, M.io.wake_samples, M.io.echo_seconds, M.io.echo_rounds,
		   M.io.kv_requests, M.io.kv_rounds);
	bench_meta("cpus", "%d in the affinity mask, %ld online",
		   sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : -1,
		   sysconf(_SC_NPROCESSORS_ONLN));
#ifdef __OPTIMIZE__
	bench_meta("compiler", "%s, optimised", __VERSION__);
#else
	bench_meta("compiler", "%s, NOT optimised: numbers are meaningless", __VERSION__);
#endif
#ifdef WEFT_BENCH_HAVE_TBB
	bench_meta("oneTBB", "%s", bench_tbb_version());
#else
	bench_meta("oneTBB", "not built (needs a C++ compiler and libtbb-dev)");
#endif
#ifdef WEFT_BENCH_HAVE_OMP
	bench_meta("OpenMP", "%s", bench_omp_runtime());
#else
	bench_meta("OpenMP", "not built (compiler without OpenMP)");
#endif
	bench_meta("loadavg", "%s (at start: a busy machine makes every row noisy)", load);

	bench_print_header();
	for (size_t g = 0; g < NGROUPS; g++) {
		if (!want(GROUPS[g].name))
			continue;
		current_group = GROUPS[g].name;
		GROUPS[g].run();
	}
	alarm(0);

	read_loadavg(load, sizeof load);
	bench_count(&ok, &miss, &err);
	printf("\n%u ok, %u missed, %u errors in %.1f s (loadavg at end %s)\n", ok, miss, err,
	       (double)(bench_now_ns() - start) / 1e9, load);
	if (json) {
		int rc;

		bench_meta("seconds", "%.1f", (double)(bench_now_ns() - start) / 1e9);
		rc = bench_write_json(json);
		if (rc < 0) {
			fprintf(stderr, "weft-bench: writing %s: %s\n", json, strerror(-rc));
			return 1;
		}
	}
	return errors ? 1 : 0;
}
