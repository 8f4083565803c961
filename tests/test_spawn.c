/*
 * test_spawn.c: spawning and fork-join through the public API: nested
 * fork-join (fib), a million tasks from an outside thread, groups waited
 * from several outside threads at once, spawns from inside workers,
 * weft_current_worker, weft_join (fib, a stolen b, b under newer tasks,
 * from an outside thread), and shutdown with pending work, also with several
 * threads spawning while weft_destroy begins, with and without membarrier(2)
 * (the asymmetric fence between an outside spawn and weft_destroy).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <weft.h>

#include "os.h"
#include "testutil.h"

static weft_rt *rt;

static void setup_rt(unsigned workers)
{
	struct weft_config cfg = { .workers = workers };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
}

/* ---- nested fork-join ---- */

struct fib {
	int n;
	long r;
};

static long fib_serial(int n)
{
	return n < 2 ? n : fib_serial(n - 1) + fib_serial(n - 2);
}

static void fib_task(void *p)
{
	struct fib *f = p;
	if (f->n < 2) {
		f->r = f->n;
		return;
	}
	struct fib a = { .n = f->n - 1 }, b = { .n = f->n - 2 };
	struct weft_group g;
	weft_group_init(&g);
	cr_assert_eq(weft_group_spawn(rt, &g, fib_task, &a), 0);
	fib_task(&b);
	weft_group_wait(rt, &g);
	f->r = a.r + b.r;
}

Test(spawn, fib_nested_fork_join, .timeout = 120)
{
	setup_rt(0);
	int n = test_scale() > 1 ? 20 : 27;
	struct fib f = { .n = n };
	struct weft_group g;
	weft_group_init(&g);
	cr_assert_eq(weft_group_spawn(rt, &g, fib_task, &f), 0);
	weft_group_wait(rt, &g);
	cr_assert_eq(f.r, fib_serial(n));
	weft_destroy(rt);
}

Test(spawn, fib_one_worker, .timeout = 120)
{
	setup_rt(1);
	struct fib f = { .n = 22 };
	struct weft_group g;
	weft_group_init(&g);
	cr_assert_eq(weft_group_spawn(rt, &g, fib_task, &f), 0);
	weft_group_wait(rt, &g);
	cr_assert_eq(f.r, fib_serial(22));
	weft_destroy(rt);
}

/* A task that counts itself in the counter it is given. */
static void bump_counter(void *p)
{
	__atomic_fetch_add((uint64_t *)p, 1, __ATOMIC_RELAXED);
}

/* ---- weft_join ---- */

static void fib_join_task(void *p)
{
	struct fib *f = p;
	if (f->n < 2) {
		f->r = f->n;
		return;
	}
	struct fib a = { .n = f->n - 2 }, b = { .n = f->n - 1 };
	cr_assert_eq(weft_join(rt, fib_join_task, &a, fib_join_task, &b), 0);
	f->r = a.r + b.r;
}

Test(spawn, join_fib_one_and_all_workers, .timeout = 120)
{
	for (unsigned workers = 1; workers <= 2; workers++) {
		setup_rt(workers == 1 ? 1 : 0);
		int n = test_scale() > 1 ? 20 : 26;
		struct fib f = { .n = n };
		struct weft_group g;
		weft_group_init(&g);
		cr_assert_eq(weft_group_spawn(rt, &g, fib_join_task, &f), 0);
		weft_group_wait(rt, &g);
		cr_assert_eq(f.r, fib_serial(n));
		static struct weft_stats st;
		cr_assert_eq(weft_stats(rt, &st), 0);
		uint64_t run = 0;
		for (unsigned i = 0; i < st.workers; i++)
			run += st.worker[i].tasks_run;
		/* Every join's b counts as a task run, stolen or not (and the
		 * root task once). */
		cr_assert_eq(run, (uint64_t)(fib_serial(n + 1) - 1) + 1);
		weft_destroy(rt);
	}
}

/* b is stolen: a keeps the deque moving (inner joins answer the split
 * request) until b has started on another worker, then b takes a while;
 * the join must not return before b is done. */
struct steal_probe {
	int joiner;
	int b_worker;
	int b_started;
	int b_done;
	int a_saw_b;
};

static void nothing(void *p)
{
	(void)p;
}

static void probe_b(void *p)
{
	struct steal_probe *s = p;
	s->b_worker = weft_current_worker();
	__atomic_store_n(&s->b_started, 1, __ATOMIC_RELEASE);
	usleep(20 * 1000);
	__atomic_store_n(&s->b_done, 1, __ATOMIC_RELEASE);
}

static void probe_a(void *p)
{
	struct steal_probe *s = p;
	double until = now_sec() + 20;
	while (!__atomic_load_n(&s->b_started, __ATOMIC_ACQUIRE) && now_sec() < until)
		cr_assert_eq(weft_join(rt, nothing, NULL, nothing, NULL), 0);
	s->a_saw_b = __atomic_load_n(&s->b_started, __ATOMIC_ACQUIRE);
}

static void probe_root(void *p)
{
	struct steal_probe *s = p;
	s->joiner = weft_current_worker();
	cr_assert_eq(weft_join(rt, probe_a, s, probe_b, s), 0);
	cr_assert(__atomic_load_n(&s->b_done, __ATOMIC_ACQUIRE), "join returned before the stolen b finished");
}

Test(spawn, join_waits_for_a_stolen_b, .timeout = 120)
{
	setup_rt(2);
	int stolen = 0;
	for (int round = 0; round < 100 && stolen < 5; round++) {
		struct steal_probe s = { .joiner = -1, .b_worker = -1 };
		struct weft_group g;
		weft_group_init(&g);
		cr_assert_eq(weft_group_spawn(rt, &g, probe_root, &s), 0);
		weft_group_wait(rt, &g);
		cr_assert(s.a_saw_b, "b never started while a ran (round %d)", round);
		cr_assert_eq(__atomic_load_n(&s.b_done, __ATOMIC_ACQUIRE), 1);
		/* The joiner may also take b back itself, inside one of a's
		 * joins (its own published items, oldest first, as a thief
		 * would): legal, but not the case under test. */
		if (s.b_worker != s.joiner)
			stolen++;
	}
	cr_assert_eq(stolen, 5, "b was taken by another worker in only %d rounds", stolen);
	weft_destroy(rt);
}

/* A join of two long halves made while the other worker is busy: once
 * that worker is free, it must be able to take b while a still runs, even
 * though a never spawns or waits (split requests are answered only at
 * pushes and pops; a lone b is published at its push for this).  The
 * blocker keeps the other worker busy until a has started, i.e. until
 * after b's push.  A round in which root and blocker ran on one worker is
 * not the case under test and is not counted. */
struct long_join {
	int a_started, b_started, a_saw_b;
	int root_worker, blocker_worker;
};

static void long_b(void *p)
{
	struct long_join *lj = p;
	__atomic_store_n(&lj->b_started, 1, __ATOMIC_RELEASE);
}

static void long_a(void *p)
{
	struct long_join *lj = p;
	double until = now_sec() + 2;
	__atomic_store_n(&lj->a_started, 1, __ATOMIC_RELEASE);
	/* No spawn, no join, no wait: a plain computation. */
	while (!__atomic_load_n(&lj->b_started, __ATOMIC_ACQUIRE) && now_sec() < until)
		;
	lj->a_saw_b = __atomic_load_n(&lj->b_started, __ATOMIC_ACQUIRE);
}

static void long_root(void *p)
{
	struct long_join *lj = p;
	lj->root_worker = weft_current_worker();
	cr_assert_eq(weft_join(rt, long_a, lj, long_b, lj), 0);
}

static void long_blocker(void *p)
{
	struct long_join *lj = p;
	double until = now_sec() + 2;
	lj->blocker_worker = weft_current_worker();
	while (!__atomic_load_n(&lj->a_started, __ATOMIC_ACQUIRE) && now_sec() < until)
		;
}

static void long_halves_rounds(void)
{
	int cases = 0;
	for (int round = 0; round < 100 && cases < 10; round++) {
		struct long_join lj = { .root_worker = -1, .blocker_worker = -1 };
		struct weft_group g;
		weft_group_init(&g);
		cr_assert_eq(weft_group_spawn(rt, &g, long_blocker, &lj), 0);
		cr_assert_eq(weft_group_spawn(rt, &g, long_root, &lj), 0);
		weft_group_wait(rt, &g);
		if (lj.root_worker == lj.blocker_worker)
			continue;
		cases++;
		cr_assert(lj.a_saw_b, "b did not start while a ran for 2 s (round %d): the join ran serially", round);
	}
	cr_assert_eq(cases, 10, "root and blocker ran on different workers in only %d rounds", cases);
	weft_destroy(rt);
}

Test(spawn, join_of_long_halves_runs_side_by_side, .timeout = 120)
{
	setup_rt(2);
	long_halves_rounds();
}

/* The same with the two workers on two virtual nodes: the other worker
 * is on another node, and the publication must not depend on it. */
Test(spawn, join_of_long_halves_runs_side_by_side_across_nodes, .timeout = 120)
{
	struct weft_config cfg = { .workers = 2, .topology = "0|1" };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	long_halves_rounds();
}

/* a leaves newer tasks above b (spawned, not waited for): the join takes
 * its slow path, still runs b before returning, and the leaves all run. */
static uint64_t join_leaves;
static int b_ran[1000];

static void spawn_leaves(void *p)
{
	(void)p;
	for (int i = 0; i < 3; i++)
		cr_assert_eq(weft_spawn(rt, bump_counter, &join_leaves), 0);
}

static void mark_b(void *p)
{
	*(int *)p = 1;
}

static void join_over_leaves(void *p)
{
	cr_assert_eq(weft_join(rt, spawn_leaves, NULL, mark_b, p), 0);
	cr_assert_eq(*(int *)p, 1, "the join returned before b ran");
}

Test(spawn, join_with_newer_tasks_above_b, .timeout = 60)
{
	setup_rt(1);
	join_leaves = 0;
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(weft_spawn(rt, join_over_leaves, &b_ran[i]), 0);
	weft_destroy(rt);
	cr_assert_eq(join_leaves, 3000);
}

/* A worker that ran a stolen b while it waited in its own join hands the
 * count over when its wait ends, not when it next runs out of work: here
 * P's worker steals Q's b while waiting for its own b, its own b finishes
 * meanwhile, and then (its join done) it computes for 200 ms without
 * spawning or waiting.  Q's join must
 * not wait for that.  The schedule is arranged with flags; a round in
 * which another worker took Q's b does not count. */
static int pq_p_worker, pq_bq_worker;
static int pq_bp_started, pq_bp_done, pq_bq_started, pq_bq_done;
static uint64_t pq_bq_done_ns, pq_p_ret_ns, pq_q_ret_ns;

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void pq_spin_until(int *flag, double seconds)
{
	double until = now_sec() + seconds;
	while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE) && now_sec() < until)
		cr_assert_eq(weft_join(rt, nothing, NULL, nothing, NULL), 0);
}

static void pq_ap(void *p)
{
	(void)p;
	pq_spin_until(&pq_bp_started, 10);
}

static void pq_bp(void *p)
{
	(void)p;
	__atomic_store_n(&pq_bp_started, 1, __ATOMIC_RELEASE);
	/* Keep this worker busy until Q's b has started (on P's worker, if
	 * the round goes as planned), so that P's worker is the one to take
	 * it; then finish, so that P's join is done while Q's b still runs. */
	double until = now_sec() + 10;
	while (!__atomic_load_n(&pq_bq_started, __ATOMIC_ACQUIRE) && now_sec() < until)
		;
	__atomic_store_n(&pq_bp_done, 1, __ATOMIC_RELEASE);
}

static void pq_p(void *p)
{
	(void)p;
	__atomic_store_n(&pq_p_worker, weft_current_worker(), __ATOMIC_RELEASE);
	cr_assert_eq(weft_join(rt, pq_ap, NULL, pq_bp, NULL), 0);
	__atomic_store_n(&pq_p_ret_ns, mono_ns(), __ATOMIC_RELEASE);
	/* The continuation: long, and no spawn or wait in it. */
	double until = now_sec() + 0.2;
	while (now_sec() < until)
		;
}

static void pq_aq(void *p)
{
	(void)p;
	pq_spin_until(&pq_bq_started, 10);
}

static void pq_bq(void *p)
{
	(void)p;
	__atomic_store_n(&pq_bq_worker, weft_current_worker(), __ATOMIC_RELAXED);
	__atomic_store_n(&pq_bq_started, 1, __ATOMIC_RELEASE);
	/* Until P's b is over and its worker has handed that in (it does
	 * once its next search finds nothing, well within 5 ms). */
	double until = now_sec() + 10;
	while (!__atomic_load_n(&pq_bp_done, __ATOMIC_ACQUIRE) && now_sec() < until)
		;
	usleep(5000);
	__atomic_store_n(&pq_bq_done_ns, mono_ns(), __ATOMIC_RELAXED);
	__atomic_store_n(&pq_bq_done, 1, __ATOMIC_RELEASE);
}

static void pq_q(void *p)
{
	(void)p;
	cr_assert_eq(weft_join(rt, pq_aq, NULL, pq_bq, NULL), 0);
	__atomic_store_n(&pq_q_ret_ns, mono_ns(), __ATOMIC_RELEASE);
}

Test(spawn, join_not_held_up_by_a_helper_that_moved_on, .timeout = 120)
{
	setup_rt(3);
	int matched = 0;
	for (int round = 0; round < 80 && matched < 3; round++) {
		pq_p_worker = pq_bq_worker = -1;
		pq_bp_started = pq_bp_done = pq_bq_started = pq_bq_done = 0;
		pq_p_ret_ns = pq_q_ret_ns = 0;
		struct weft_group g;
		weft_group_init(&g);
		cr_assert_eq(weft_group_spawn(rt, &g, pq_p, NULL), 0);
		double until = now_sec() + 10;
		while (!__atomic_load_n(&pq_bp_started, __ATOMIC_ACQUIRE) && now_sec() < until)
			usleep(100);
		usleep(2000); /* P's worker is now waiting in its join */
		cr_assert_eq(weft_group_spawn(rt, &g, pq_q, NULL), 0);
		weft_group_wait(rt, &g);
		/* The case under test: Q's b ran on P's worker, and P's join
		 * was over by then, so P's wait ended right after it (had P
		 * still been waiting, it would have handed the count in on its
		 * way to sleep, as the old code did too). */
		if (pq_bq_worker != pq_p_worker || pq_p_ret_ns < pq_bq_done_ns ||
		    pq_p_ret_ns - pq_bq_done_ns > 1000000)
			continue;
		matched++;
		double late_ms = (double)(pq_q_ret_ns - pq_bq_done_ns) / 1e6;
		cr_log_info("round %d: Q's join returned %.3f ms after its b finished", round, late_ms);
		cr_assert_lt(late_ms, 100, "Q's join waited %.1f ms for the worker that ran its b", late_ms);
	}
	cr_assert_geq(matched, 1, "the schedule under test never happened in 80 rounds");
	weft_destroy(rt);
}

/* Joins nested deeper than the deque's first array (256 slots): the push
 * that finds it full grows it (join_push_slow), and every b still runs
 * once. */
static uint64_t deep_bs;

static void deep_join(void *p)
{
	long depth = (long)(intptr_t)p;
	if (depth == 0)
		return;
	cr_assert_eq(weft_join(rt, deep_join, (void *)(intptr_t)(depth - 1), bump_counter, &deep_bs), 0);
}

Test(spawn, join_deeper_than_the_deque, .timeout = 60)
{
	for (unsigned workers = 1; workers <= 2; workers++) {
		setup_rt(workers);
		deep_bs = 0;
		struct weft_group g;
		weft_group_init(&g);
		cr_assert_eq(weft_group_spawn(rt, &g, deep_join, (void *)(intptr_t)2000), 0);
		weft_group_wait(rt, &g);
		cr_assert_eq(__atomic_load_n(&deep_bs, __ATOMIC_RELAXED), 2000);
		weft_destroy(rt);
	}
}

/* From a thread that is not a worker: a runs here, b on a worker. */
static void where_am_i(void *p)
{
	*(int *)p = weft_current_worker();
}

Test(spawn, join_from_outside_thread)
{
	setup_rt(0);
	int wa = -2, wb = -2;
	cr_assert_eq(weft_join(rt, where_am_i, &wa, where_am_i, &wb), 0);
	cr_assert_eq(wa, -1);
	cr_assert(wb >= 0 && wb < (int)weft_worker_count(rt), "b ran on %d", wb);
	weft_destroy(rt);
}

/* ---- many tasks from an outside thread ---- */

static uint64_t ran;
static uint8_t *seen;

static void mark(void *arg)
{
	uintptr_t i = (uintptr_t)arg;
	cr_assert_eq(__atomic_fetch_add(&seen[i], 1, __ATOMIC_RELAXED), 0, "task %zu ran twice", (size_t)i);
	__atomic_fetch_add(&ran, 1, __ATOMIC_RELAXED);
}

Test(spawn, million_from_outside, .timeout = 180)
{
	setup_rt(0);
	long n = scaled(1000000);
	seen = calloc((size_t)n, 1);
	ran = 0;
	struct weft_group g;
	weft_group_init(&g);
	for (long i = 0; i < n; i++)
		cr_assert_eq(weft_group_spawn(rt, &g, mark, (void *)(uintptr_t)i), 0);
	weft_group_wait(rt, &g);
	cr_assert_eq(__atomic_load_n(&ran, __ATOMIC_RELAXED), (uint64_t)n);
	for (long i = 0; i < n; i++)
		cr_assert_eq(seen[i], 1);
	struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	uint64_t total = 0, injected = 0;
	for (unsigned w = 0; w < st.workers; w++) {
		total += st.worker[w].tasks_run;
		injected += st.worker[w].injected;
	}
	cr_assert_eq(total, (uint64_t)n);
	cr_assert_eq(injected, (uint64_t)n, "every outside task goes through an injection queue");
	weft_destroy(rt);
	free(seen);
}

/* ---- groups waited from several outside threads ---- */

struct waiter_arg {
	long tasks;
	uint64_t done;
};

static void bump(void *p)
{
	__atomic_fetch_add((uint64_t *)p, 1, __ATOMIC_RELAXED);
}

static void *outside_waiter(void *p)
{
	struct waiter_arg *a = p;
	for (int round = 0; round < 20; round++) {
		struct weft_group g;
		uint64_t count = 0;
		weft_group_init(&g);
		for (long i = 0; i < a->tasks; i++)
			cr_assert_eq(weft_group_spawn(rt, &g, bump, &count), 0);
		weft_group_wait(rt, &g);
		/* Everything the group's tasks did is visible after the wait. */
		cr_assert_eq(count, (uint64_t)a->tasks);
		a->done += count;
	}
	return NULL;
}

Test(spawn, groups_waited_from_outside_threads, .timeout = 120)
{
	setup_rt(0);
	enum { T = 4 };
	pthread_t th[T];
	struct waiter_arg args[T];
	for (int i = 0; i < T; i++) {
		args[i] = (struct waiter_arg){ .tasks = scaled(5000) };
		pthread_create(&th[i], NULL, outside_waiter, &args[i]);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		cr_assert_eq(args[i].done, (uint64_t)(20 * args[i].tasks));
	}
	weft_destroy(rt);
}

/* ---- spawn from inside workers, weft_current_worker ---- */

static int where[64];

static void record_worker(void *p)
{
	int *slot = p;
	*slot = weft_current_worker();
}

static void spawner(void *p)
{
	struct weft_group *g = p;
	for (int i = 0; i < 64; i++)
		cr_assert_eq(weft_group_spawn(rt, g, record_worker, &where[i]), 0);
}

Test(spawn, current_worker_and_inner_spawn)
{
	setup_rt(0);
	cr_assert_eq(weft_current_worker(), -1);
	struct weft_group g;
	weft_group_init(&g);
	memset(where, 0xff, sizeof(where));
	cr_assert_eq(weft_group_spawn(rt, &g, spawner, &g), 0);
	weft_group_wait(rt, &g);
	for (int i = 0; i < 64; i++) {
		cr_assert(where[i] >= 0 && where[i] < (int)weft_worker_count(rt), "task %d ran on %d", i, where[i]);
	}
	weft_destroy(rt);
}

/* ---- shutdown with pending work: everything runs exactly once ---- */

static uint64_t leaves;

static void fan_out(void *p)
{
	long n = (long)(intptr_t)p;
	for (long i = 0; i < n; i++)
		cr_assert_eq(weft_spawn(rt, bump_counter, &leaves), 0, "spawns from tasks are allowed while draining");
}

Test(spawn, destroy_runs_pending_work, .timeout = 120)
{
	setup_rt(0);
	leaves = 0;
	long roots = scaled(2000), fan = 100;
	for (long i = 0; i < roots; i++)
		cr_assert_eq(weft_spawn(rt, fan_out, (void *)(intptr_t)fan), 0);
	weft_destroy(rt);
	cr_assert_eq(__atomic_load_n(&leaves, __ATOMIC_RELAXED), (uint64_t)(roots * fan));
}

struct racer {
	uint64_t accepted;
	uint64_t refused_after;
	int first_refusal;
};

static uint64_t raced_ran;

static void raced(void *p)
{
	(void)p;
	__atomic_fetch_add(&raced_ran, 1, __ATOMIC_RELAXED);
}

/* Several threads spawn while weft_destroy begins, round after round: each
 * spawn either is refused with -ESHUTDOWN or its task runs, exactly once,
 * before weft_destroy returns.  An outside spawn marks itself active with a
 * plain store when membarrier(2) is registered (weft_destroy runs the
 * barrier), with a seq_cst exchange otherwise; both are run here.  A spawn
 * that slipped past the destroy's check of the active flags would be
 * missing from the count (or run after the runtime was freed).
 *
 * A racer must not call weft_spawn once weft_destroy has freed the
 * runtime, and a racer descheduled between two calls could: so the thread
 * layer's join (which weft_destroy calls after the state left RUNNING and
 * before it frees anything) first waits until every racer has been
 * refused and stopped.  Racers begin racing only after one accepted spawn
 * each, so weft_destroy never meets a thread's very first spawn. */
#define RACERS 3

static uint64_t membarriers;
static uint64_t racers_in, racers_out;

static int counting_membarrier(void)
{
	__atomic_fetch_add(&membarriers, 1, __ATOMIC_RELAXED);
	return weft_os_default()->membarrier();
}

static void *round_racer(void *p)
{
	struct racer *r = p;
	for (;;) {
		int e = weft_spawn(rt, raced, NULL);
		if (e == 0) {
			if (r->accepted++ == 0)
				__atomic_fetch_add(&racers_in, 1, __ATOMIC_RELEASE);
			continue;
		}
		cr_assert_eq(e, -ESHUTDOWN);
		cr_assert_gt(r->accepted, 0, "refused before the runtime was destroyed");
		r->refused_after++;
		__atomic_fetch_add(&racers_out, 1, __ATOMIC_RELEASE);
		return NULL;
	}
}

static int racers_start(void *ctx, void **handle, void (*fn)(void *), void *arg)
{
	(void)ctx;
	return weft_thread_ops_pthread()->start(NULL, handle, fn, arg);
}

static int racers_join(void *ctx, void *handle)
{
	(void)ctx;
	while (__atomic_load_n(&racers_out, __ATOMIC_ACQUIRE) != RACERS)
		usleep(100);
	return weft_thread_ops_pthread()->join(NULL, handle);
}

static const struct weft_thread_ops racers_threads = { .start = racers_start, .join = racers_join };

static void race_destroy_rounds(bool with_membarrier)
{
	struct weft_os os = *weft_os_default();
	if (with_membarrier) {
		os.membarrier = counting_membarrier;
	} else {
		os.membarrier_register = NULL;
		os.membarrier = NULL;
	}
	weft_os_set(&os);
	membarriers = 0;
	bool membarrier_ok = with_membarrier && weft_os_default()->membarrier_register() == 0;
	long rounds = scaled(200);
	uint64_t accepted = 0;
	for (long round = 0; round < rounds; round++) {
		struct weft_config cfg = { .threads = &racers_threads };
		cr_assert_eq(weft_create(&rt, &cfg), 0);
		raced_ran = 0;
		racers_in = 0;
		racers_out = 0;
		struct racer r[RACERS];
		pthread_t th[RACERS];
		memset(r, 0, sizeof(r));
		for (int i = 0; i < RACERS; i++)
			cr_assert_eq(pthread_create(&th[i], NULL, round_racer, &r[i]), 0);
		while (__atomic_load_n(&racers_in, __ATOMIC_ACQUIRE) != RACERS)
			usleep(50);
		/* 0..1 ms more: the queues are at different depths. */
		usleep((useconds_t)(round % 11) * 100);
		weft_destroy(rt);
		uint64_t sum = 0;
		for (int i = 0; i < RACERS; i++) {
			pthread_join(th[i], NULL);
			cr_assert_eq(r[i].refused_after, 1);
			sum += r[i].accepted;
		}
		cr_assert_eq(__atomic_load_n(&raced_ran, __ATOMIC_RELAXED), sum,
			     "round %ld: %llu accepted, %llu ran", round, (unsigned long long)sum,
			     (unsigned long long)__atomic_load_n(&raced_ran, __ATOMIC_RELAXED));
		accepted += sum;
	}
	weft_os_set(NULL);
	cr_assert_gt(accepted, 0);
	/* The path under test was taken: one barrier per weft_destroy where
	 * the kernel allows membarrier (never under TSan, which cannot see
	 * it), none without it. */
	if (!with_membarrier || WEFT_TSAN)
		cr_assert_eq(membarriers, 0);
	else if (membarrier_ok)
		cr_assert_eq(membarriers, (uint64_t)rounds);
	else
		cr_log_info("membarrier not available here: only the fallback was run");
}

Test(spawn, spawn_races_destroy_rounds, .timeout = 300)
{
	race_destroy_rounds(true);
}

Test(spawn, spawn_races_destroy_without_membarrier, .timeout = 300)
{
	race_destroy_rounds(false);
}

/* ---- weft_spawn_on_node ---- */

static int node_seen[2][256];

static void note_node(void *p)
{
	int *slot = p;
	int w = weft_current_worker();
	*slot = w < 0 ? -1 : weft_worker_node(rt, (unsigned)w);
}

Test(spawn, spawn_on_node_runs_there, .timeout = 60)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("needs 2 CPUs for the virtual topology 0|1");
	struct weft_config cfg = { .topology = "0|1", .workers = 4 };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	cr_assert_eq(weft_node_count(rt), 2);
	for (int n = 0; n < 2; n++)
		for (int i = 0; i < 256; i++)
			cr_assert_eq(weft_spawn_on_node(rt, (unsigned)n, note_node, &node_seen[n][i]), 0);
	weft_destroy(rt);
	for (int n = 0; n < 2; n++)
		for (int i = 0; i < 256; i++)
			cr_assert_eq(node_seen[n][i], n, "task for node %d ran on node %d", n, node_seen[n][i]);
}
