/*
 * ecs.c: the ECS-like workload of issue 3 (task list generator, task body
 * with its shadow check, in-flight gate, result computation) and the runs
 * that use weft: through weft_spawn_with, the serial reference, the
 * uncontended try_acquire + release pair and the seed's scenario.  The
 * other schedulers are in ecs_baselines.c and ecs_omp.c; see ecs.h.
 */
#define _GNU_SOURCE 1
#include "ecs.h"

#include "bench_util.h"

#include <errno.h>
#include <linux/futex.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <weft/acquire.h>
#include <weft/runtime.h>
#include <weft/stats.h>

/* The measuring argument of ecs.h: one task, one line. */
_Static_assert(sizeof(struct ecs_task) == ECS_LINE, "struct ecs_task must fill one cache line");

/* ---------------- errors ---------------- */

void ecs_fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("weft-bench ecs: scheduling error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void ecs_not_run(struct ecs_result *r, const char *fmt, ...)
{
	va_list ap;

	r->ran = false;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof r->why, fmt, ap);
	va_end(ap);
	r->tasks_per_s = r->ns_per_task = NAN;
	r->wait_p50_us = r->wait_p99_us = r->wait_max_us = NAN;
	r->wakeups_per_grant = NAN;
	r->spurious = 0;
	r->waited_frac = r->reserved_frac = NAN;
	r->submit_cpu_ns = NAN;
}

/* ---------------- the task list ---------------- */

/* splitmix64: tiny, seedable with any value, and identical everywhere, so
 * the same params give the same task list in every variant and run. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, 1) from the top 53 bits. */
static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * 0x1p-53;
}

static unsigned pick_component(uint64_t *s, unsigned ncomp, const double *zipf_cdf)
{
	if (zipf_cdf) {
		double u = rng_unit(s);

		for (unsigned k = 0; k + 1 < ncomp; k++)
			if (u < zipf_cdf[k])
				return k;
		return ncomp - 1;
	}
	/* Multiply-shift instead of %: no modulo bias for any ncomp. */
	return (unsigned)(((rng_next(s) >> 32) * ncomp) >> 32);
}

static void generate(struct ecs_load *l)
{
	unsigned ncomp = l->p.components, maxdeps = ncomp < ECS_MAX_DEPS ? ncomp : ECS_MAX_DEPS;
	double cdf[ECS_MAX_COMPONENTS], h = 0;
	uint64_t s = l->p.seed;

	/* Zipf s = 1: P(rank k) proportional to 1 / (k + 1); component 0 is
	 * the hottest. */
	for (unsigned k = 0; k < ncomp; k++)
		h += 1.0 / (k + 1);
	for (unsigned k = 0; k < ncomp; k++)
		cdf[k] = (k ? cdf[k - 1] : 0) + 1.0 / (k + 1) / h;

	for (unsigned i = 0; i < l->p.tasks; i++) {
		struct ecs_task *t = &l->task[i];
		unsigned n = 1 + (unsigned)(rng_next(&s) % maxdeps);

		t->load = l;
		t->index = i;
		t->n = (uint8_t)n;
		for (unsigned j = 0; j < n; j++) {
			unsigned c, k;
			bool w;

			do {
				c = pick_component(&s, ncomp, l->p.zipf ? cdf : NULL);
			} while ((t->rmask | t->wmask) >> c & 1);
			w = !(rng_unit(&s) < 0.7);
			if (w)
				t->wmask |= 1ull << c;
			else
				t->rmask |= 1ull << c;
			/* Insertion keeps comp[] ascending: the rwlock baseline
			 * takes its locks in this order. */
			for (k = j; k > 0 && t->comp[k - 1] > c; k--)
				t->comp[k] = t->comp[k - 1];
			t->comp[k] = (uint8_t)c;
		}
		for (unsigned j = 0; j < n; j++)
			if (t->wmask >> t->comp[j] & 1)
				t->write |= (uint8_t)(1u << j);
	}
}

struct ecs_load *ecs_load_new(const struct ecs_params *p, struct ecs_result *r, int *err)
{
	struct ecs_load *l;
	struct ecs_params q = *p;

	ecs_not_run(r, "not run");
	if (!q.components)
		q.components = 64;
	if (!q.inflight)
		q.inflight = 1024;
	if (!q.workers)
		q.workers = 2;
	if (!q.tasks || q.components > ECS_MAX_COMPONENTS || q.workers > ECS_MAX_WORKERS ||
	    !(q.work_us >= 0) || q.work_us > 1e6) {
		ecs_not_run(r, "bad params (tasks >= 1, components <= %d, workers <= %d)",
			    ECS_MAX_COMPONENTS, ECS_MAX_WORKERS);
		*err = -EINVAL;
		return NULL;
	}
	/* sizeof is a multiple of the line size, as aligned_alloc wants. */
	l = aligned_alloc(ECS_LINE, sizeof *l);
	if (!l)
		goto nomem;
	memset(l, 0, sizeof *l);
	l->p = q;
	l->work_ns = (uint64_t)llround(q.work_us * 1e3);
	l->task = aligned_alloc(ECS_LINE, (size_t)q.tasks * sizeof *l->task);
	if (!l->task) {
		free(l);
		goto nomem;
	}
	/* The memset also touches every page now rather than in the timed
	 * part (a first touch costs ~10 us here). */
	memset(l->task, 0, (size_t)q.tasks * sizeof *l->task);
	generate(l);
	l->gate.nworkers = q.workers;
	l->gate.inflight = q.inflight;
	l->gate.slack = q.inflight / 8;
	l->gate.in_pool = q.in_pool;
	*err = 0;
	return l;
nomem:
	ecs_not_run(r, "out of memory for %u tasks", q.tasks);
	*err = -ENOMEM;
	return NULL;
}

void ecs_load_free(struct ecs_load *l)
{
	if (l) {
		free(l->task);
		free(l);
	}
}

/* ---------------- the task body ---------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

void ecs_spin_ns(uint64_t ns)
{
	uint64_t t0;

	if (!ns)
		return;
	t0 = bench_now_ns();
	while (bench_now_ns() - t0 < ns)
		cpu_relax();
}

/* Relaxed is enough: a conflicting pair of tasks overlaps in time exactly
 * when their entry and exit RMWs interleave in the word's modification
 * order, whatever the ordering of the surrounding accesses. */
static void shadow_enter(struct ecs_task *t)
{
	for (unsigned j = 0; j < t->n; j++) {
		struct ecs_shadow *s = &t->load->shadow[t->comp[j]];
		uint32_t old;

		if (t->write >> j & 1) {
			old = atomic_fetch_add_explicit(&s->word, ECS_SHADOW_WRITER, memory_order_relaxed);
			if (old)
				ecs_fail("task %u starts writing component %u while %s", t->index,
					 t->comp[j], old & ECS_SHADOW_WRITER ? "a writer runs" : "readers run");
		} else {
			old = atomic_fetch_add_explicit(&s->word, 1, memory_order_relaxed);
			if (old & ECS_SHADOW_WRITER)
				ecs_fail("task %u starts reading component %u while a writer runs",
					 t->index, t->comp[j]);
		}
	}
}

static void shadow_exit(struct ecs_task *t)
{
	for (unsigned j = t->n; j-- > 0;) {
		struct ecs_shadow *s = &t->load->shadow[t->comp[j]];
		uint32_t old;

		if (t->write >> j & 1) {
			old = atomic_fetch_sub_explicit(&s->word, ECS_SHADOW_WRITER, memory_order_relaxed);
			if (old != ECS_SHADOW_WRITER)
				ecs_fail("task %u ends writing component %u but another task holds it",
					 t->index, t->comp[j]);
		} else {
			old = atomic_fetch_sub_explicit(&s->word, 1, memory_order_relaxed);
			if (old & ECS_SHADOW_WRITER || !(old & (ECS_SHADOW_WRITER - 1)))
				ecs_fail("task %u ends reading component %u while a writer holds it",
					 t->index, t->comp[j]);
		}
	}
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val)
{
	return syscall(SYS_futex, (uint32_t *)word, op, val, NULL, NULL, 0);
}

/* A worker finished a task.  True when the caller now owns the in-pool
 * producer's restart. */
static bool gate_finish(struct ecs_gate *g, unsigned worker)
{
	struct ecs_gate_worker *me;
	uint64_t d;

	if (worker >= g->nworkers)
		ecs_fail("a task ran on worker %u of %u", worker, g->nworkers);
	me = &g->w[worker];
	d = atomic_load_explicit(&me->done, memory_order_relaxed) + 1;
	/* seq_cst store, then seq_cst load of `sleeping` (`drain`): against
	 * the submitter's store of `sleeping` (`drain`) and re-read of the
	 * counters, one of the two sides sees the other, so a wake (restart,
	 * the end of the run) is never lost. */
	atomic_store(&me->done, d);
	if (g->in_pool) {
		if (atomic_load(&g->drain)) {
			if (ecs_gate_done(g) >= atomic_load(&g->drain_target) && !atomic_exchange(&g->finished, 1))
				futex(&g->finished, FUTEX_WAKE_PRIVATE, 1);
			return false;
		}
		if (!atomic_load(&g->sleeping) || d < atomic_load_explicit(&me->wake_at, memory_order_relaxed))
			return false;
		return atomic_exchange(&g->sleeping, 0);
	}
	if (!atomic_load(&g->sleeping))
		return false;
	if (atomic_load(&g->drain)) {
		if (ecs_gate_done(g) < atomic_load(&g->drain_target))
			return false;
	} else if (d < atomic_load_explicit(&me->wake_at, memory_order_relaxed)) {
		return false;
	}
	if (atomic_exchange(&g->sleeping, 0))
		futex(&g->sleeping, FUTEX_WAKE_PRIVATE, 1);
	return false;
}

bool ecs_task_run(struct ecs_task *t, unsigned worker)
{
	uint64_t now = bench_now_ns();

	if (t->start_ns)
		ecs_fail("task %u started twice", t->index);
	t->start_ns = now;
	shadow_enter(t);
	ecs_spin_ns(t->load->work_ns);
	shadow_exit(t);
	return gate_finish(&t->load->gate, worker);
}

void ecs_stamp_submit(struct ecs_task *t)
{
	t->submit_ns = bench_now_ns();
}

/* ---------------- the in-flight gate ---------------- */

uint64_t ecs_gate_done(struct ecs_gate *g)
{
	uint64_t sum = 0;

	for (unsigned w = 0; w < g->nworkers; w++)
		sum += atomic_load(&g->w[w].done);
	return sum;
}

/* Per-worker thresholds for a wait that needs slack + 1 more completions
 * (at most all outstanding ones) from the `others` workers that can make
 * them.  Each gets an equal share as its own threshold: if every
 * outstanding task finished without any worker reaching its share, at most
 * others * (share - 1) <= want - 1 < outstanding tasks would have finished,
 * a contradiction, so some worker always reaches its threshold. */
static void gate_set_thresholds(struct ecs_gate *g, unsigned others, const uint64_t *snap, uint64_t outstanding)
{
	uint64_t want = g->slack + 1 < outstanding ? g->slack + 1 : outstanding;
	uint64_t share = (want + others - 1) / others;

	for (unsigned w = 0; w < g->nworkers; w++)
		atomic_store_explicit(&g->w[w].wake_at, snap[w] + share, memory_order_relaxed);
}

/* Sleep until the window has room again, or return at once if it has.
 * Called by the submitter when its count says the window is full; a stale
 * futex wake just makes the caller look again. */
static void gate_sleep(struct ecs_gate *g, int self)
{
	unsigned others = g->nworkers - (self >= 0 && (unsigned)self < g->nworkers);
	uint64_t snap[ECS_MAX_WORKERS], total = 0, outstanding;

	/* A submitter that is the only worker cannot wait for itself; with
	 * OpenMP and one thread it runs its tasks undeferred anyway. */
	if (!others)
		return;
	for (unsigned w = 0; w < g->nworkers; w++)
		total += snap[w] = atomic_load(&g->w[w].done);
	outstanding = g->submitted - total;
	if (outstanding < g->inflight)
		return;
	gate_set_thresholds(g, others, snap, outstanding);
	atomic_store(&g->sleeping, 1);
	if (g->submitted - ecs_gate_done(g) < g->inflight) {
		atomic_exchange(&g->sleeping, 0);
		return;
	}
	futex(&g->sleeping, FUTEX_WAIT_PRIVATE, 1);
	/* Normally a worker cleared it; after an early return (a signal, a
	 * stale wake) clear it here so workers stop checking.  A wake still
	 * in flight only makes a later wait return early and look again. */
	atomic_store(&g->sleeping, 0);
}

void ecs_gate_enter(struct ecs_gate *g, int self)
{
	if (g->submitted - g->known_done >= g->inflight) {
		g->known_done = ecs_gate_done(g);
		while (g->submitted - g->known_done >= g->inflight) {
			gate_sleep(g, self);
			g->known_done = ecs_gate_done(g);
			/* See gate_sleep: nobody else can make room. */
			if (self >= 0 && g->nworkers == 1)
				break;
		}
	}
	g->submitted++;
}

void ecs_gate_drain(struct ecs_gate *g)
{
	uint64_t target = g->submitted;

	atomic_store(&g->drain_target, target);
	atomic_store(&g->drain, 1);
	while (ecs_gate_done(g) < target) {
		atomic_store(&g->sleeping, 1);
		if (ecs_gate_done(g) >= target) {
			atomic_exchange(&g->sleeping, 0);
			break;
		}
		futex(&g->sleeping, FUTEX_WAIT_PRIVATE, 1);
	}
	g->known_done = target;
}

/* ---------------- the in-pool producer ---------------- */

/* The window is full: park the producer unless room appeared meanwhile.
 * True when parked (its restart now belongs to a worker), false when the
 * producer may go on. */
static bool gate_park(struct ecs_gate *g)
{
	/* Read before the store of `sleeping`: from then on a restarted
	 * producer on another thread may be counting it up. */
	uint64_t submitted = g->submitted;
	uint64_t snap[ECS_MAX_WORKERS], total = 0, outstanding;

	for (unsigned w = 0; w < g->nworkers; w++)
		total += snap[w] = atomic_load(&g->w[w].done);
	outstanding = submitted - total;
	if (outstanding < g->inflight)
		return false;
	/* Every worker can finish tasks: the producer blocks none of them. */
	gate_set_thresholds(g, g->nworkers, snap, outstanding);
	atomic_store(&g->sleeping, 1);
	if (submitted - ecs_gate_done(g) < g->inflight)
		/* Room after all.  Whoever clears the flag owns the restart:
		 * if a worker beat us to it, it restarts the producer and
		 * this one must stop. */
		return !atomic_exchange(&g->sleeping, 0);
	return true;
}

struct ecs_task *ecs_produce_next(struct ecs_load *l)
{
	struct ecs_gate *g = &l->gate;

	if (g->submitted == l->p.tasks)
		return NULL;
	if (g->submitted - g->known_done >= g->inflight) {
		g->known_done = ecs_gate_done(g);
		if (g->submitted - g->known_done >= g->inflight) {
			if (gate_park(g))
				return NULL;
			g->known_done = ecs_gate_done(g);
		}
	}
	if (++g->submitted == l->p.tasks) {
		/* The last one: from now on the workers look for the end.
		 * seq_cst, against their store of `done` and load of `drain`
		 * (gate_finish); the task is not handed over yet, so the end
		 * is still ahead whoever sees it. */
		atomic_store(&g->drain_target, l->p.tasks);
		atomic_store(&g->drain, 1);
	}
	return &l->task[g->submitted - 1];
}

void ecs_gate_wait_finished(struct ecs_gate *g)
{
	while (!atomic_load(&g->finished))
		futex(&g->finished, FUTEX_WAIT_PRIVATE, 0);
}

/* ---------------- results ---------------- */

int ecs_load_finish(struct ecs_load *l, struct ecs_result *r)
{
	unsigned n = l->p.tasks;
	double *wait, max = 0, elapsed;

	if (ecs_gate_done(&l->gate) != n)
		ecs_fail("%llu of %u tasks finished", (unsigned long long)ecs_gate_done(&l->gate), n);
	for (unsigned c = 0; c < ECS_MAX_COMPONENTS; c++)
		if (atomic_load(&l->shadow[c].word))
			ecs_fail("component %u still held after the run", c);
	wait = malloc((size_t)n * sizeof *wait);
	if (!wait) {
		ecs_not_run(r, "out of memory for the waits");
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n; i++) {
		const struct ecs_task *t = &l->task[i];

		if (!t->start_ns)
			ecs_fail("task %u never ran", i);
		wait[i] = t->start_ns >= t->submit_ns ? (double)(t->start_ns - t->submit_ns) / 1e3 : 0;
		if (wait[i] > max)
			max = wait[i];
	}
	elapsed = (double)(l->t_end - l->t_begin);
	r->ran = true;
	r->why[0] = '\0';
	r->ns_per_task = elapsed / n;
	r->tasks_per_s = elapsed > 0 ? n / (elapsed / 1e9) : NAN;
	r->wait_p50_us = bench_percentile(wait, n, 50);
	r->wait_p99_us = bench_percentile(wait, n, 99);
	r->wait_max_us = max;
	r->wakeups_per_grant = NAN;
	r->spurious = 0;
	r->waited_frac = NAN;
	r->reserved_frac = NAN;
	r->submit_cpu_ns = !l->p.in_pool && l->cpu_end > l->cpu_begin ? (double)(l->cpu_end - l->cpu_begin) / n : NAN;
	free(wait);
	return 0;
}

/* ---------------- serial reference ---------------- */

int ecs_run_serial(const struct ecs_params *p, struct ecs_result *r)
{
	int err;
	struct ecs_load *l = ecs_load_new(p, r, &err);

	if (!l)
		return err;
	/* The same body, gate counter included, so the per-task cost differs
	 * from the schedulers' only by the scheduling. */
	l->gate.nworkers = 1;
	l->t_begin = bench_now_ns();
	for (unsigned i = 0; i < l->p.tasks; i++) {
		ecs_stamp_submit(&l->task[i]);
		ecs_task_run(&l->task[i], 0);
	}
	l->t_end = bench_now_ns();
	err = ecs_load_finish(l, r);
	ecs_load_free(l);
	return err;
}

/* ---------------- weft ---------------- */

static void weft_produce(void *arg);

static void weft_task(void *arg)
{
	struct ecs_task *t = arg;
	int w = weft_current_worker();

	if (w < 0)
		ecs_fail("weft ran task %u outside its workers", t->index);
	/* From a worker, weft_spawn pushes on its own deque: this worker
	 * runs the producer after this task's release (and the grants that
	 * release chains, at most 16), unless a thief takes it first. */
	if (ecs_task_run(t, (unsigned)w) && weft_spawn(t->load->sched, weft_produce, t->load) != 0)
		ecs_fail("weft_spawn of the producer failed");
}

static void weft_deps(const struct ecs_task *t, struct weft_dep *d)
{
	for (unsigned j = 0; j < t->n; j++) {
		d[j].comp = t->comp[j];
		d[j].access = t->write >> j & 1 ? WEFT_WRITE : WEFT_READ;
	}
}

/* The in-pool producer, a task on a worker. */
static void weft_produce(void *arg)
{
	struct ecs_load *l = arg;
	struct ecs_task *t;

	while ((t = ecs_produce_next(l))) {
		struct weft_dep d[ECS_MAX_DEPS];
		int err;

		weft_deps(t, d);
		ecs_stamp_submit(t);
		err = weft_spawn_with(l->sched, d, t->n, weft_task, t);
		/* Nothing can wait for a task that was not submitted. */
		if (err)
			ecs_fail("weft_spawn_with (task %u) from the producer: %s", t->index, strerror(-err));
	}
}

/* The producer thread: every task through the gate.  0 or -errno (then
 * the tasks before the failed one are submitted). */
static int weft_submit_all(weft_rt *rt, struct ecs_load *l, struct ecs_result *r)
{
	for (unsigned i = 0; i < l->p.tasks; i++) {
		struct ecs_task *t = &l->task[i];
		struct weft_dep d[ECS_MAX_DEPS];
		int err;

		ecs_gate_enter(&l->gate, -1);
		weft_deps(t, d);
		/* Stamped before the call: the task may start before it
		 * returns. */
		ecs_stamp_submit(t);
		err = weft_spawn_with(rt, d, t->n, weft_task, t);
		if (err) {
			ecs_not_run(r, "weft_spawn_with (task %u): %s", i, strerror(-err));
			l->gate.submitted--;
			return err;
		}
	}
	return 0;
}

int ecs_run_weft(const struct ecs_params *p, struct ecs_result *r)
{
	struct weft_config cfg = { 0 };
	struct weft_stats *st;
	weft_rt *rt;
	int err;
	struct ecs_load *l = ecs_load_new(p, r, &err);

	if (!l)
		return err;
	st = malloc(sizeof *st);
	if (!st) {
		ecs_not_run(r, "out of memory");
		ecs_load_free(l);
		return -ENOMEM;
	}
	cfg.workers = l->p.workers;
	cfg.components = l->p.components;
	cfg.max_bypass = l->p.max_bypass;
	cfg.strict_order = l->p.strict_order;
	err = weft_create(&rt, &cfg);
	if (err) {
		ecs_not_run(r, "weft_create: %s", strerror(-err));
		goto out;
	}
	if (weft_worker_count(rt) != l->p.workers) {
		ecs_not_run(r, "weft has %u workers, not %u", weft_worker_count(rt), l->p.workers);
		weft_destroy(rt);
		err = -EINVAL;
		goto out;
	}

	l->sched = rt;
	l->t_begin = bench_now_ns();
	l->cpu_begin = bench_thread_cpu_ns();
	if (l->p.in_pool) {
		err = weft_spawn(rt, weft_produce, l);
		if (err)
			ecs_not_run(r, "weft_spawn of the producer: %s", strerror(-err));
		else
			ecs_gate_wait_finished(&l->gate);
	} else {
		err = weft_submit_all(rt, l, r);
		/* On an error, still wait for what was submitted: those
		 * tasks point into l. */
		ecs_gate_drain(&l->gate);
	}
	l->t_end = bench_now_ns();
	l->cpu_end = bench_thread_cpu_ns();
	if (!err && weft_stats(rt, st) != 0) {
		ecs_not_run(r, "weft_stats failed");
		err = -EINVAL;
	}
	weft_destroy(rt);
	if (err)
		goto out;
	err = ecs_load_finish(l, r);
	if (!err) {
		/* Every thread woken: blocked acquirers (none here) and parked
		 * workers woken for the tasks that grants became. */
		uint64_t woken = st->acquire.wakeups, spurious = st->acquire.spurious_wakeups;
		for (unsigned w = 0; w < st->workers; w++) {
			woken += st->worker[w].wakeups;
			spurious += st->worker[w].spurious_wakeups;
		}
		r->wakeups_per_grant = st->acquire.grants ? (double)woken / (double)st->acquire.grants : NAN;
		r->spurious = spurious;
		if (st->acquire.grants) {
			r->waited_frac = (double)st->acquire.waits / (double)st->acquire.grants;
			r->reserved_frac = (double)st->acquire.reservations / (double)st->acquire.grants;
		}
	}
out:
	free(st);
	ecs_load_free(l);
	return err;
}

/* ---------------- uncontended pair ---------------- */

#define PAIR_RUNS 5
#define PAIR_ITERS 1000000

double ecs_uncontended_pair_ns(void)
{
	const struct weft_dep deps[2] = { { 0, WEFT_READ }, { 1, WEFT_WRITE } };
	struct weft_config cfg = { .workers = 2, .components = 64 };
	double ns[PAIR_RUNS];
	weft_rt *rt;
	int err = weft_create(&rt, &cfg);

	if (err) {
		fprintf(stderr, "weft-bench ecs: weft_create: %s\n", strerror(-err));
		return NAN;
	}
	/* Run PAIR_RUNS timed runs after one untimed one that warms the
	 * caches and whatever per-thread state weft sets up. */
	for (int run = -1; run < PAIR_RUNS; run++) {
		unsigned iters = run < 0 ? PAIR_ITERS / 10 : PAIR_ITERS;
		uint64_t t0 = bench_now_ns();

		for (unsigned i = 0; i < iters; i++) {
			struct weft_grant *g;

			err = weft_try_acquire(rt, deps, 2, &g);
			if (err) {
				fprintf(stderr, "weft-bench ecs: uncontended weft_try_acquire: %s\n",
					strerror(-err));
				weft_destroy(rt);
				return NAN;
			}
			weft_release(g);
		}
		if (run >= 0)
			ns[run] = (double)(bench_now_ns() - t0) / iters;
	}
	weft_destroy(rt);
	return bench_median(ns, PAIR_RUNS);
}

/* ---------------- the seed's scenario ---------------- */

#define SEED_TRIALS 5
#define SEED_TIMEOUT_NS 2000000000ull

struct seed_req {
	_Atomic uint64_t started_ns; /* 0 until the callback ran */
	_Atomic int status;
};

static void seed_cb(struct weft_grant *g, int status, void *ctx)
{
	struct seed_req *q = ctx;
	uint64_t now = bench_now_ns();

	/* Give the grant back at once: the scenario is about when each
	 * request starts, and {A, C} must still wait for C after {A, B}. */
	if (status == 0)
		weft_release(g);
	atomic_store(&q->status, status);
	atomic_store(&q->started_ns, now);
}

/* Poll (the callback's own timestamp is what is measured, so the polling
 * interval does not matter).  false on timeout. */
static bool seed_wait(struct seed_req *q)
{
	uint64_t t0 = bench_now_ns();

	while (!atomic_load(&q->started_ns)) {
		if (bench_now_ns() - t0 > SEED_TIMEOUT_NS)
			return false;
		bench_sleep_ns(20000);
	}
	return true;
}

/* One trial: latency in ns through *lat.  0, -errno or -ETIMEDOUT.  ab and
 * ac belong to the caller: after a failure a callback may still come, up
 * to weft_destroy. */
static int seed_trial(weft_rt *rt, struct seed_req *ab, struct seed_req *ac, uint64_t *lat, bool *ok)
{
	enum { A = 0, B = 1, C = 2 };
	const struct weft_dep da = { A, WEFT_WRITE }, db = { B, WEFT_WRITE }, dc = { C, WEFT_WRITE };
	const struct weft_dep dab[2] = { da, db }, dac[2] = { da, dc };
	struct weft_grant *ga, *gb, *gc;
	uint64_t t_b, t_c;
	int err;

	atomic_store(&ab->started_ns, 0);
	atomic_store(&ac->started_ns, 0);
	/* WRITE everywhere, so that each request conflicts with the holder
	 * of every component it names. */
	if ((err = weft_try_acquire(rt, &da, 1, &ga)) != 0)
		return err;
	if ((err = weft_try_acquire(rt, &db, 1, &gb)) != 0) {
		weft_release(ga);
		return err;
	}
	if ((err = weft_try_acquire(rt, &dc, 1, &gc)) != 0) {
		weft_release(ga);
		weft_release(gb);
		return err;
	}
	if ((err = weft_acquire(rt, dab, 2, seed_cb, ab)) != 0 ||
	    (err = weft_acquire(rt, dac, 2, seed_cb, ac)) != 0) {
		weft_release(ga);
		weft_release(gb);
		weft_release(gc);
		return err;
	}
	weft_release(ga);
	/* Give a wrong grant time to show up. */
	bench_sleep_ns(200000);
	if (atomic_load(&ab->started_ns) || atomic_load(&ac->started_ns))
		*ok = false;
	t_b = bench_now_ns();
	weft_release(gb);
	if (!seed_wait(ab)) {
		weft_release(gc);
		return -ETIMEDOUT;
	}
	if (atomic_load(&ab->started_ns) < t_b || atomic_load(&ab->status) != 0)
		*ok = false;
	*lat = atomic_load(&ab->started_ns) - t_b;
	/* {A, C} has everything but C now: it must keep waiting. */
	bench_sleep_ns(1000000);
	if (atomic_load(&ac->started_ns))
		*ok = false;
	t_c = bench_now_ns();
	weft_release(gc);
	if (!seed_wait(ac))
		return -ETIMEDOUT;
	if (atomic_load(&ac->started_ns) < t_c || atomic_load(&ac->status) != 0)
		*ok = false;
	return 0;
}

double ecs_seed_scenario_us(bool *order_ok)
{
	struct weft_config cfg = { .workers = 2, .components = 64 };
	double us[SEED_TRIALS];
	weft_rt *rt;
	int err = weft_create(&rt, &cfg);

	*order_ok = false;
	if (err) {
		fprintf(stderr, "weft-bench ecs: weft_create: %s\n", strerror(-err));
		return NAN;
	}
	*order_ok = true;
	for (int i = 0; i < SEED_TRIALS; i++) {
		struct seed_req ab = { 0 }, ac = { 0 };
		uint64_t lat = 0;

		err = seed_trial(rt, &ab, &ac, &lat, order_ok);
		if (err) {
			fprintf(stderr, "weft-bench ecs: seed scenario: %s\n", strerror(-err));
			*order_ok = false;
			/* Runs or cancels what is still queued before ab and
			 * ac go out of scope. */
			weft_destroy(rt);
			return NAN;
		}
		us[i] = (double)lat / 1e3;
	}
	weft_destroy(rt);
	return bench_median(us, SEED_TRIALS);
}
