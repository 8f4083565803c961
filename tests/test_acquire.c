/*
 * test_acquire.c: the component scheduler through the public API: sharing
 * and exclusion, the seed's scenario, exact wakeups, the bypass bound,
 * bad input, cancellation at weft_destroy, names, and a multi-threaded
 * stress test with shadow per-component state checked at every task start
 * and end.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <weft.h>

#include "os.h"
#include "testutil.h"

static weft_rt *rt;

static void create(unsigned workers, unsigned max_bypass)
{
	struct weft_config cfg = { .workers = workers, .components = 128, .max_bypass = max_bypass };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
}

static struct weft_dep R(uint32_t c)
{
	return (struct weft_dep){ c, WEFT_READ };
}

static struct weft_dep W(uint32_t c)
{
	return (struct weft_dep){ c, WEFT_WRITE };
}

Test(acquire, read_read_share_write_excludes)
{
	create(2, 0);
	struct weft_grant *a, *b, *c;
	struct weft_dep r0 = R(0), w0 = W(0);
	cr_assert_eq(weft_try_acquire(rt, &r0, 1, &a), 0);
	cr_assert_eq(weft_try_acquire(rt, &r0, 1, &b), 0, "two readers share");
	cr_assert_eq(weft_try_acquire(rt, &w0, 1, &c), -EBUSY, "a writer waits for readers");
	weft_release(a);
	cr_assert_eq(weft_try_acquire(rt, &w0, 1, &c), -EBUSY);
	weft_release(b);
	cr_assert_eq(weft_try_acquire(rt, &w0, 1, &c), 0);
	cr_assert_eq(weft_try_acquire(rt, &r0, 1, &a), -EBUSY, "a reader waits for the writer");
	cr_assert_eq(weft_try_acquire(rt, &w0, 1, &a), -EBUSY, "writers exclude each other");
	size_t n;
	const struct weft_dep *d = weft_grant_deps(c, &n);
	cr_assert_eq(n, 1);
	cr_assert_eq(d[0].comp, 0);
	cr_assert_eq(d[0].access, WEFT_WRITE);
	weft_release(c);
	weft_destroy(rt);
}

/* Lock-free grants to threads that are not workers are counted per thread
 * (no shared RMW); weft_stats still adds up every one of them. */
static void *try_pairs(void *p)
{
	long n = (long)(intptr_t)p;
	struct weft_dep d[2] = { R(1), W(2 + (uint32_t)(n & 1)) };
	for (long i = 0; i < n; i++) {
		struct weft_grant *g;
		int r;
		while ((r = weft_try_acquire(rt, d, 2, &g)) == -EBUSY)
			sched_yield();
		cr_assert_eq(r, 0);
		weft_release(g);
	}
	return NULL;
}

Test(acquire, fast_grants_outside_are_all_counted, .timeout = 30)
{
	create(1, 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, try_pairs, (void *)(intptr_t)1001), 0);
	try_pairs((void *)(intptr_t)2000);
	cr_assert_eq(pthread_join(th, NULL), 0);
	static struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_assert_eq(st.acquire.grants, 3001);
	cr_assert_eq(st.acquire.grants_fast, 3001);
	weft_destroy(rt);
}

/* A waker that loses its CPU between its FUTEX_WAKE and its last store
 * (stood in for by a wake that returns 20 ms late, on the releasing thread
 * only) must not make the woken weft_acquire_wait spin meanwhile. */
static __thread int stall_my_wakes;

static int stalling_wake(uint32_t *word, int n)
{
	int r = weft_os_default()->futex_wake(word, n);
	if (stall_my_wakes)
		usleep(20 * 1000);
	return r;
}

static double thread_cpu_ms(void)
{
	struct rusage ru;
	getrusage(RUSAGE_THREAD, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static double waiter_cpu_ms;

static void *blocked_waiter(void *p)
{
	(void)p;
	struct weft_dep w5 = W(5);
	struct weft_grant *g;
	double c0 = thread_cpu_ms();
	cr_assert_eq(weft_acquire_wait(rt, &w5, 1, &g), 0);
	waiter_cpu_ms = thread_cpu_ms() - c0;
	weft_release(g);
	return NULL;
}

Test(acquire, woken_waiter_does_not_spin_on_a_stalled_waker, .timeout = 30)
{
	struct weft_os os = *weft_os_default();
	os.futex_wake = stalling_wake;
	weft_os_set(&os);
	create(1, 0);
	struct weft_dep w5 = W(5);
	struct weft_grant *held;
	cr_assert_eq(weft_try_acquire(rt, &w5, 1, &held), 0);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, blocked_waiter, NULL), 0);
	usleep(100 * 1000); /* the waiter is asleep by now */
	stall_my_wakes = 1;
	weft_release(held);
	stall_my_wakes = 0;
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_log_info("the waiter used %.2f ms of CPU", waiter_cpu_ms);
	cr_assert_lt(waiter_cpu_ms, 10, "the woken waiter spun for %.1f ms while the waker stalled", waiter_cpu_ms);
	static struct weft_stats st;
	cr_assert_eq(weft_stats(rt, &st), 0);
	cr_assert_eq(st.acquire.spurious_wakeups, 0);
	weft_destroy(rt);
	weft_os_set(NULL);
}

Test(acquire, duplicates_merge_write_wins)
{
	create(2, 0);
	struct weft_dep deps[] = { R(3), W(1), W(3), R(1), R(2) };
	struct weft_grant *g;
	cr_assert_eq(weft_try_acquire(rt, deps, 5, &g), 0);
	size_t n;
	const struct weft_dep *d = weft_grant_deps(g, &n);
	cr_assert_eq(n, 3);
	cr_assert_eq(d[0].comp, 1);
	cr_assert_eq(d[0].access, WEFT_WRITE);
	cr_assert_eq(d[1].comp, 2);
	cr_assert_eq(d[1].access, WEFT_READ);
	cr_assert_eq(d[2].comp, 3);
	cr_assert_eq(d[2].access, WEFT_WRITE);
	weft_release(g);
	weft_destroy(rt);
}

/* ---- requests from a thread that is not a worker ---- */

/* Up to 4 merged deps travel packed in the injection item, more in a
 * malloc'd grant; either way the grant a callback sees must name exactly
 * the merged deps, for the largest ids too. */
struct outside_case {
	struct weft_dep deps[8];
	size_t n;
	struct weft_dep want[8];
	size_t nwant;
	int seen; /* 1 once the callback checked it */
};

static uint64_t outside_done;

static void outside_cb(struct weft_grant *g, int status, void *ctx)
{
	struct outside_case *c = ctx;
	cr_assert_eq(status, 0);
	size_t n;
	const struct weft_dep *d = weft_grant_deps(g, &n);
	cr_assert_eq(n, c->nwant);
	for (size_t i = 0; i < n; i++) {
		cr_assert_eq(d[i].comp, c->want[i].comp, "dep %zu of %zu", i, n);
		cr_assert_eq(d[i].access, c->want[i].access, "dep %zu of %zu", i, n);
	}
	c->seen = 1;
	weft_release(g);
	__atomic_fetch_add(&outside_done, 1, __ATOMIC_RELEASE);
}

Test(acquire, outside_requests_carry_their_deps, .timeout = 30)
{
	/* An id above 16 bits (the table's words are a line each, so not the
	 * largest allowed, 2^24 - 1: that table is 1 GiB). */
	const uint32_t top = 70000;
	struct weft_config cfg = { .workers = 2, .components = top + 1 };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	static struct outside_case cases[] = {
		{ .n = 0, .nwant = 0 },
		{ .deps = { { 7, WEFT_WRITE } }, .n = 1, .want = { { 7, WEFT_WRITE } }, .nwant = 1 },
		/* unsorted, a duplicate where WRITE wins, the top id */
		{ .deps = { { 70000, WEFT_READ }, { 5, WEFT_READ }, { 5, WEFT_WRITE }, { 0, WEFT_READ } },
		  .n = 4,
		  .want = { { 0, WEFT_READ }, { 5, WEFT_WRITE }, { 70000, WEFT_READ } },
		  .nwant = 3 },
		/* exactly 4 after merging, from 5 */
		{ .deps = { { 40, WEFT_WRITE }, { 30, WEFT_READ }, { 20, WEFT_WRITE }, { 10, WEFT_READ }, { 30, WEFT_READ } },
		  .n = 5,
		  .want = { { 10, WEFT_READ }, { 20, WEFT_WRITE }, { 30, WEFT_READ }, { 40, WEFT_WRITE } },
		  .nwant = 4 },
		/* 6: the malloc'd kind */
		{ .deps = { { 6, WEFT_READ }, { 5, WEFT_READ }, { 4, WEFT_WRITE }, { 3, WEFT_READ }, { 2, WEFT_WRITE }, { 1, WEFT_READ } },
		  .n = 6,
		  .want = { { 1, WEFT_READ }, { 2, WEFT_WRITE }, { 3, WEFT_READ }, { 4, WEFT_WRITE }, { 5, WEFT_READ }, { 6, WEFT_READ } },
		  .nwant = 6 },
	};
	const size_t ncases = sizeof(cases) / sizeof(cases[0]);
	outside_done = 0;
	for (size_t i = 0; i < ncases; i++)
		cr_assert_eq(weft_acquire(rt, cases[i].deps, cases[i].n, outside_cb, &cases[i]), 0);
	/* A bad request still fails at once, on this thread. */
	struct weft_dep bad = { top + 1, WEFT_READ };
	cr_assert_eq(weft_acquire(rt, &bad, 1, outside_cb, NULL), -EINVAL);
	while (__atomic_load_n(&outside_done, __ATOMIC_ACQUIRE) != ncases)
		usleep(1000);
	for (size_t i = 0; i < ncases; i++)
		cr_assert_eq(cases[i].seen, 1, "case %zu", i);
	weft_destroy(rt);
}

/* ---- requests made by a task ---- */

/*
 * A task that submits many requests must not have them all made at once:
 * every one that conflicts with an earlier one would wait in the core, and
 * grants would then hold components while sitting in deques, behind work
 * pushed after them (the convoy of docs/architecture.md).  A worker's
 * requests queue on its node like anyone else's and are made when a worker
 * takes them, in submission order.
 */
#define FLOOD 200
static int flood_order[FLOOD], flood_spawn_r[FLOOD];
static int flood_next, flood_bad_cb;

/* (No cr_assert on a worker: results go back to the test's thread.) */
static void flood_ran(void *arg)
{
	/* One worker: no race on flood_order. */
	int i = flood_next;
	flood_order[i] = (int)(intptr_t)arg;
	__atomic_store_n(&flood_next, i + 1, __ATOMIC_RELEASE);
}

static void flood_cb(struct weft_grant *g, int status, void *ctx)
{
	size_t n = 0;
	const struct weft_dep *d = status == 0 ? weft_grant_deps(g, &n) : NULL;
	/* A 6-dep request from a worker keeps its deps. */
	if (status != 0 || n != 6 || d[0].comp != 0 || d[0].access != WEFT_WRITE)
		flood_bad_cb++;
	if (status == 0)
		weft_release(g);
	flood_ran(ctx);
}

static void flood(void *arg)
{
	(void)arg;
	for (int i = 0; i < FLOOD; i++) {
		/* Every request writes component 0; every third one names six
		 * components (the kind that travels as a malloc'd grant). */
		struct weft_dep d[6] = { W(0), R(1), R(2), R(3), R(4), R(5) };
		int r;
		if (i % 3 == 2)
			r = weft_acquire(rt, d, 6, flood_cb, (void *)(intptr_t)i);
		else
			r = weft_spawn_with(rt, d, 1 + (unsigned)i % 2, flood_ran, (void *)(intptr_t)i);
		flood_spawn_r[i] = r;
		/* A request that failed never runs: count it as done, the
		 * test's thread reports it. */
		if (r != 0)
			flood_ran((void *)(intptr_t)-1);
	}
}

Test(acquire, requests_from_a_task_are_made_when_taken, .timeout = 30)
{
	create(1, 0);
	flood_next = flood_bad_cb = 0;
	cr_assert_eq(weft_spawn(rt, flood, NULL), 0);
	while (__atomic_load_n(&flood_next, __ATOMIC_ACQUIRE) != FLOOD)
		usleep(1000);
	struct weft_stats st;
	weft_stats(rt, &st);
	for (int i = 0; i < FLOOD; i++) {
		cr_assert_eq(flood_spawn_r[i], 0, "request %d", i);
		cr_assert_eq(flood_order[i], i, "request %d ran in place %d", flood_order[i], i);
	}
	cr_assert_eq(flood_bad_cb, 0, "a 6-dep callback got the wrong status or deps");
	cr_assert_eq(st.acquire.grants, FLOOD);
	cr_assert_eq(st.acquire.waits, 0, "%llu of %d requests waited", (unsigned long long)st.acquire.waits, FLOOD);
	weft_destroy(rt);
}

/* ---- the seed's scenario ---- */

static uint64_t granted_at[2]; /* ns, 0 = not yet */
static int granted_order;

static void note_grant(struct weft_grant *g, int status, void *ctx)
{
	cr_assert_eq(status, 0);
	int which = (int)(intptr_t)ctx;
	__atomic_store_n(&granted_at[which], (uint64_t)(now_sec() * 1e9), __ATOMIC_RELEASE);
	__atomic_fetch_add(&granted_order, 1, __ATOMIC_ACQ_REL);
	weft_release(g);
}

Test(acquire, seed_scenario_no_lock_order_starvation, .timeout = 30)
{
	create(2, 0);
	enum { A = 10, B = 11, C = 12 };
	struct weft_grant *ha, *hb, *hc;
	struct weft_dep a = W(A), b = W(B), c = W(C);
	/* Threads 3, 4, 5 hold A, B, C. */
	cr_assert_eq(weft_try_acquire(rt, &a, 1, &ha), 0);
	cr_assert_eq(weft_try_acquire(rt, &b, 1, &hb), 0);
	cr_assert_eq(weft_try_acquire(rt, &c, 1, &hc), 0);
	granted_at[0] = granted_at[1] = 0;
	granted_order = 0;
	struct weft_dep ab[] = { W(A), W(B) }, ac[] = { W(A), W(C) };
	cr_assert_eq(weft_acquire(rt, ab, 2, note_grant, (void *)0), 0);
	cr_assert_eq(weft_acquire(rt, ac, 2, note_grant, (void *)1), 0);
	usleep(20 * 1000);
	cr_assert_eq(__atomic_load_n(&granted_order, __ATOMIC_ACQUIRE), 0);
	weft_release(ha);
	usleep(20 * 1000);
	cr_assert_eq(__atomic_load_n(&granted_order, __ATOMIC_ACQUIRE), 0, "nothing is grantable while B and C are held");
	double released = now_sec();
	weft_release(hb);
	while (__atomic_load_n(&granted_at[0], __ATOMIC_ACQUIRE) == 0)
		;
	double latency = (double)granted_at[0] * 1e-9 - released;
	cr_log_info("{A,B} started %.1f us after B was released", latency * 1e6);
	usleep(20 * 1000);
	cr_assert_eq(__atomic_load_n(&granted_at[1], __ATOMIC_ACQUIRE), 0, "{A,C} must wait for C");
	weft_release(hc);
	while (__atomic_load_n(&granted_order, __ATOMIC_ACQUIRE) != 2)
		usleep(100);
	weft_destroy(rt);
}

/* ---- exact wakeups ---- */

struct waiter {
	uint32_t comp;
	int got;
};

static void *blocking_waiter(void *p)
{
	struct waiter *w = p;
	struct weft_dep d = W(w->comp);
	struct weft_grant *g;
	w->got = weft_acquire_wait(rt, &d, 1, &g);
	if (w->got == 0)
		weft_release(g);
	return NULL;
}

Test(acquire, exact_wakeups_no_broadcast, .timeout = 30)
{
	create(2, 0);
	enum { T = 6 };
	struct weft_grant *held[T];
	for (uint32_t c = 0; c < T; c++) {
		struct weft_dep d = W(c);
		cr_assert_eq(weft_try_acquire(rt, &d, 1, &held[c]), 0);
	}
	pthread_t th[T];
	struct waiter ws[T];
	for (int i = 0; i < T; i++) {
		ws[i] = (struct waiter){ .comp = (uint32_t)i };
		pthread_create(&th[i], NULL, blocking_waiter, &ws[i]);
	}
	usleep(50 * 1000);
	for (int i = 0; i < T; i++) {
		weft_release(held[i]);
		pthread_join(th[i], NULL);
		cr_assert_eq(ws[i].got, 0);
	}
	struct weft_stats st;
	weft_stats(rt, &st);
	cr_log_info("grants %llu waits %llu wakeups %llu spurious %llu", (unsigned long long)st.acquire.grants,
		    (unsigned long long)st.acquire.waits, (unsigned long long)st.acquire.wakeups,
		    (unsigned long long)st.acquire.spurious_wakeups);
	cr_assert_eq(st.acquire.waits, T, "each blocked acquirer waited once");
	cr_assert_eq(st.acquire.wakeups, T, "one wake per blocked acquirer, nothing broadcast");
	cr_assert_eq(st.acquire.spurious_wakeups, 0);
	cr_assert_leq(st.acquire.wakeups, st.acquire.grants);
	weft_destroy(rt);
}

/* ---- the bypass bound ---- */

static int writer_done;

static void writer_cb(struct weft_grant *g, int status, void *ctx)
{
	(void)ctx;
	cr_assert_eq(status, 0);
	__atomic_store_n(&writer_done, 1, __ATOMIC_RELEASE);
	weft_release(g);
}

Test(acquire, writer_behind_rereading_readers_is_bounded, .timeout = 30)
{
	const unsigned bypass = 4;
	create(2, bypass);
	struct weft_dep r = R(5), w = W(5);
	struct weft_grant *reader;
	cr_assert_eq(weft_try_acquire(rt, &r, 1, &reader), 0);
	writer_done = 0;
	cr_assert_eq(weft_acquire(rt, &w, 1, writer_cb, NULL), 0);
	/* From this thread the request reaches the scheduler through a
	 * worker: wait until it is queued. */
	struct weft_stats st;
	do {
		usleep(100);
		weft_stats(rt, &st);
	} while (st.acquire.waits == 0);
	/* Readers keep coming: each new one overlaps the previous one.  Once
	 * the writer's budget is spent, new readers are refused. */
	int accepted = 0;
	for (int i = 0; i < 100; i++) {
		struct weft_grant *next;
		if (weft_try_acquire(rt, &r, 1, &next) != 0)
			break;
		accepted++;
		weft_release(reader);
		reader = next;
	}
	weft_release(reader);
	while (!__atomic_load_n(&writer_done, __ATOMIC_ACQUIRE))
		usleep(100);
	weft_stats(rt, &st);
	cr_log_info("readers that overtook the writer: %d, max bypassed %llu", accepted,
		    (unsigned long long)st.acquire.max_bypassed);
	cr_assert_leq(accepted, (int)bypass, "a writer is overtaken at most max_bypass times");
	cr_assert_leq(st.acquire.max_bypassed, bypass);
	weft_destroy(rt);
}

/* ---- bad input ---- */

static void never(struct weft_grant *g, int status, void *ctx)
{
	(void)g;
	(void)status;
	(void)ctx;
	cr_assert_fail("callback of a refused request ran");
}

static int zero_granted;

static void zero_cb(struct weft_grant *g, int status, void *ctx)
{
	(void)ctx;
	cr_assert_eq(status, 0);
	__atomic_store_n(&zero_granted, 1, __ATOMIC_RELEASE);
	weft_release(g);
}

Test(acquire, bad_input)
{
	create(2, 0);
	struct weft_dep bad_comp = { 128, WEFT_READ }, bad_access = { 1, 3 }, ok = R(1);
	struct weft_grant *g = NULL;
	cr_assert_eq(weft_acquire(rt, &bad_comp, 1, never, NULL), -EINVAL);
	cr_assert_eq(weft_acquire(rt, &bad_access, 1, never, NULL), -EINVAL);
	cr_assert_eq(weft_acquire(rt, NULL, 1, never, NULL), -EINVAL);
	cr_assert_eq(weft_acquire(rt, &ok, 1, NULL, NULL), -EINVAL);
	cr_assert_eq(weft_acquire(NULL, &ok, 1, never, NULL), -EINVAL);
	cr_assert_eq(weft_try_acquire(rt, &bad_comp, 1, &g), -EINVAL);
	cr_assert_eq(weft_try_acquire(rt, &ok, 1, NULL), -EINVAL);
	cr_assert_eq(weft_spawn_with(rt, &ok, 1, NULL, NULL), -EINVAL);
	struct weft_dep many[WEFT_MAX_DEPS + 1];
	for (int i = 0; i <= WEFT_MAX_DEPS; i++)
		many[i] = R((uint32_t)i);
	cr_assert_eq(weft_acquire(rt, many, WEFT_MAX_DEPS + 1, never, NULL), -E2BIG);
	/* Nothing was taken by the failed calls. */
	struct weft_dep w1 = W(1);
	cr_assert_eq(weft_try_acquire(rt, &w1, 1, &g), 0);
	weft_release(g);
	/* n == 0 is granted at once. */
	zero_granted = 0;
	cr_assert_eq(weft_acquire(rt, NULL, 0, zero_cb, NULL), 0);
	while (!__atomic_load_n(&zero_granted, __ATOMIC_ACQUIRE))
		usleep(100);
	cr_assert_eq(weft_component(rt, NULL), -EINVAL);
	weft_destroy(rt);
}

Test(acquire, names)
{
	create(1, 0);
	int a = weft_component(rt, "transform");
	int b = weft_component(rt, "velocity");
	cr_assert_geq(a, 0);
	cr_assert_geq(b, 0);
	cr_assert_neq(a, b);
	cr_assert_eq(weft_component(rt, "transform"), a, "the same name gives the same id");
	cr_assert_lt(a, 128);
	weft_destroy(rt);
}

/* The names table grows as names come (it starts at 16 slots): every name
 * keeps its id through the growth, ids are distinct, and the table is full
 * exactly when every id is named. */
Test(acquire, names_fill_the_table)
{
	struct weft_config cfg = { .workers = 1, .components = 300 };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	static int id[300];
	static bool used[300];
	char name[32];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "component-%d", i);
		id[i] = weft_component(rt, name);
		cr_assert(id[i] >= 0 && id[i] < 300, "name %d got %d", i, id[i]);
		cr_assert_not(used[id[i]], "id %d handed out twice", id[i]);
		used[id[i]] = true;
	}
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "component-%d", i);
		cr_assert_eq(weft_component(rt, name), id[i], "name %d moved", i);
	}
	cr_assert_eq(weft_component(rt, "one too many"), -ENOSPC);
	weft_destroy(rt);
}

/* ---- grants never released ---- */

static struct weft_grant *kept_grant;

static void keep_grant(struct weft_grant *g, int status, void *ctx)
{
	(void)ctx;
	cr_assert_eq(status, 0);
	__atomic_store_n(&kept_grant, g, __ATOMIC_RELEASE);
}

/* weft_destroy reports what callers still hold and frees it: a grant of
 * this thread (try_acquire) and one a callback kept, on a table large
 * enough that the report must find components on pages far apart (the
 * scan skips pages never touched). */
Test(acquire, destroy_reports_unreleased_grants, .timeout = 30)
{
	const uint32_t ncomp = 1u << 20;
	struct weft_config cfg = { .workers = 1, .components = ncomp };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	struct weft_dep mine[2] = { R(5), W(ncomp - 3) };
	struct weft_grant *g;
	cr_assert_eq(weft_try_acquire(rt, mine, 2, &g), 0);
	struct weft_dep theirs = W(7);
	kept_grant = NULL;
	cr_assert_eq(weft_acquire(rt, &theirs, 1, keep_grant, NULL), 0);
	while (!__atomic_load_n(&kept_grant, __ATOMIC_ACQUIRE))
		usleep(100);

	/* Catch what weft_destroy writes on stderr. */
	fflush(stderr);
	FILE *out = tmpfile();
	cr_assert_not_null(out);
	int saved = dup(2);
	cr_assert_geq(saved, 0);
	cr_assert_geq(dup2(fileno(out), 2), 0);
	weft_destroy(rt);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char text[1024] = { 0 };
	rewind(out);
	size_t len = fread(text, 1, sizeof(text) - 1, out);
	fclose(out);
	cr_assert_gt(len, 0, "weft_destroy said nothing");
	/* The three components still held (5, ncomp - 3, 7), and the
	 * thread's grant itself. */
	cr_assert_not_null(strstr(text, "3 grant(s) or held component(s) were never released"), "%s", text);
	cr_assert_not_null(strstr(text, "1 grant(s) of a thread were never released"), "%s", text);
}

/* ---- a wait nested in a wait on one worker ---- */

static struct weft_dep nest_outer_dep, nest_inner_dep;
static int nest_outer_r = 1, nest_inner_r = 1, nest_inner_ran;

static void nest_inner(void *arg)
{
	(void)arg;
	struct weft_grant *g = NULL;
	int r = weft_acquire_wait(rt, &nest_inner_dep, 1, &g);
	if (r == 0)
		weft_release(g);
	__atomic_store_n(&nest_inner_r, r, __ATOMIC_RELEASE);
	__atomic_store_n(&nest_inner_ran, 1, __ATOMIC_RELEASE);
}

static int nest_spawn_r, nest_inner_ran_first;

/* (No cr_assert on a worker: results go back to the test's thread.) */
static void nest_outer(void *arg)
{
	(void)arg;
	/* To this worker's deque: the wait below runs it while it waits. */
	nest_spawn_r = weft_spawn(rt, nest_inner, NULL);
	struct weft_grant *g = NULL;
	int r = weft_acquire_wait(rt, &nest_outer_dep, 1, &g);
	if (r == 0) {
		nest_inner_ran_first = __atomic_load_n(&nest_inner_ran, __ATOMIC_ACQUIRE);
		weft_release(g);
	}
	__atomic_store_n(&nest_outer_r, r, __ATOMIC_RELEASE);
}

/* One worker: the outer task waits for a component held by this thread
 * and, helping, runs the inner task, which waits in turn.  For the same
 * component, waiting would hang both (the outer is granted first, and
 * cannot return before the inner does): the inner call must say
 * -EDEADLK.  For another component it simply waits. */
Test(acquire, nested_wait_on_a_worker_does_not_hang, .timeout = 30)
{
	for (int same = 1; same >= 0; same--) {
		create(1, 0);
		nest_outer_r = nest_inner_r = 1;
		nest_inner_ran = nest_inner_ran_first = 0;
		nest_spawn_r = -1;
		nest_outer_dep = W(3);
		nest_inner_dep = same ? R(3) : W(4);
		struct weft_grant *held[2];
		cr_assert_eq(weft_try_acquire(rt, &nest_outer_dep, 1, &held[0]), 0);
		struct weft_dep four = W(4);
		cr_assert_eq(weft_try_acquire(rt, &four, 1, &held[1]), 0);
		cr_assert_eq(weft_spawn(rt, nest_outer, NULL), 0);
		if (same) {
			/* The inner call answers while we still hold 3. */
			while (!__atomic_load_n(&nest_inner_ran, __ATOMIC_ACQUIRE))
				usleep(100);
			cr_assert_eq(nest_inner_r, -EDEADLK);
		} else {
			usleep(20 * 1000);
			cr_assert_eq(__atomic_load_n(&nest_inner_ran, __ATOMIC_ACQUIRE), 0, "waits for 4");
		}
		weft_release(held[1]);
		weft_release(held[0]);
		while (__atomic_load_n(&nest_outer_r, __ATOMIC_ACQUIRE) == 1)
			usleep(100);
		cr_assert_eq(nest_spawn_r, 0);
		cr_assert_eq(nest_outer_r, 0);
		cr_assert(nest_inner_ran_first, "the inner task ran while the outer waited");
		cr_assert_eq(nest_inner_r, same ? -EDEADLK : 0);
		weft_destroy(rt);
	}
}

/* ---- cancellation at weft_destroy ---- */

static int cancelled_calls, granted_calls;

static void count_status(struct weft_grant *g, int status, void *ctx)
{
	(void)ctx;
	if (status == -ECANCELED) {
		cr_assert_null(g);
		__atomic_fetch_add(&cancelled_calls, 1, __ATOMIC_RELAXED);
	} else {
		__atomic_fetch_add(&granted_calls, 1, __ATOMIC_RELAXED);
		weft_release(g);
	}
}

static int stuck_ran;

static void stuck_fn(void *arg)
{
	(void)arg;
	__atomic_fetch_add(&stuck_ran, 1, __ATOMIC_RELAXED);
}

Test(acquire, destroy_cancels_stuck_waiters_once, .timeout = 60)
{
	/* Round 0 queues the waiters before weft_destroy (it cancels them
	 * itself); the others race it: the last worker to park and
	 * weft_destroy may both try to end the runtime while the requests
	 * reach the workers, and the one that cancels must not be overtaken
	 * by the other's exit (the callbacks were lost in 0.3-1% of the
	 * rounds, sleeps of 0-300 us finding the window best).  Every third
	 * round has weft_spawn_with requests only: dropping them queues no
	 * task, and weft_destroy used to wait forever for one. */
	for (int round = 0; round < 500; round++) {
		create(2, 0);
		cancelled_calls = granted_calls = stuck_ran = 0;
		struct weft_dep w = W(7);
		struct weft_grant *held;
		cr_assert_eq(weft_try_acquire(rt, &w, 1, &held), 0);
		int callbacks = round % 3 == 2 ? 0 : 10;
		for (int i = 0; i < callbacks; i++)
			cr_assert_eq(weft_acquire(rt, &w, 1, count_status, NULL), 0);
		for (int i = 0; i < 3; i++)
			cr_assert_eq(weft_spawn_with(rt, &w, 1, stuck_fn, NULL), 0);
		if (round == 0)
			usleep(10 * 1000);
		else
			usleep((useconds_t)(round * 37 % 300));
		/* The caller never releases `held`: the waiters can never run. */
		destroy_quietly(rt);
		cr_assert_eq(cancelled_calls, callbacks, "round %d: every waiter is told once", round);
		cr_assert_eq(granted_calls, 0);
		cr_assert_eq(stuck_ran, 0, "round %d: a dropped weft_spawn_with ran", round);
	}
}

/* ---- stress with shadow state ---- */

enum { NCOMP = 16 };
static int shadow_readers[NCOMP];
static int shadow_writer[NCOMP];
static uint64_t stress_done;

struct job {
	struct weft_dep deps[8];
	unsigned n;
};

static void check_enter(const struct job *j)
{
	for (unsigned i = 0; i < j->n; i++) {
		uint32_t c = j->deps[i].comp;
		if (j->deps[i].access == WEFT_WRITE) {
			cr_assert_eq(__atomic_fetch_add(&shadow_writer[c], 1, __ATOMIC_ACQ_REL), 0, "two writers");
			cr_assert_eq(__atomic_load_n(&shadow_readers[c], __ATOMIC_ACQUIRE), 0, "writer with readers");
		} else {
			__atomic_fetch_add(&shadow_readers[c], 1, __ATOMIC_ACQ_REL);
			cr_assert_eq(__atomic_load_n(&shadow_writer[c], __ATOMIC_ACQUIRE), 0, "reader with a writer");
		}
	}
}

static void check_leave(const struct job *j)
{
	for (unsigned i = 0; i < j->n; i++) {
		uint32_t c = j->deps[i].comp;
		if (j->deps[i].access == WEFT_WRITE) {
			cr_assert_eq(__atomic_load_n(&shadow_readers[c], __ATOMIC_ACQUIRE), 0);
			__atomic_fetch_sub(&shadow_writer[c], 1, __ATOMIC_ACQ_REL);
		} else {
			cr_assert_eq(__atomic_load_n(&shadow_writer[c], __ATOMIC_ACQUIRE), 0);
			__atomic_fetch_sub(&shadow_readers[c], 1, __ATOMIC_ACQ_REL);
		}
	}
}

static void job_run(void *p)
{
	struct job *j = p;
	check_enter(j);
	for (volatile int spin = 0; spin < 50; spin++)
		;
	check_leave(j);
	__atomic_fetch_add(&stress_done, 1, __ATOMIC_RELEASE);
}

static void job_with_grant(struct weft_grant *g, int status, void *ctx)
{
	cr_assert_eq(status, 0);
	job_run(ctx);
	weft_release(g);
}

/* Submit jobs[0..n) from this thread: every `acquire_every`-th through
 * weft_acquire (a callback that releases), the rest through
 * weft_spawn_with, with at most about `window` unfinished at a time. */
static void submit_jobs(struct job *jobs, long n, long acquire_every, long window)
{
	for (long i = 0; i < n; i++) {
		int r = (i % acquire_every == 0) ? weft_acquire(rt, jobs[i].deps, jobs[i].n, job_with_grant, &jobs[i])
						 : weft_spawn_with(rt, jobs[i].deps, jobs[i].n, job_run, &jobs[i]);
		cr_assert_eq(r, 0);
		while ((long)__atomic_load_n(&stress_done, __ATOMIC_ACQUIRE) < i - window)
			sched_yield();
	}
}

/* After a stress run: log the scheduler's counters; every request was
 * granted once, no wakeup was spurious, no request was overtaken more
 * than the default bypass budget. */
static void check_stress_stats(struct weft_stats *st, uint64_t requests)
{
	weft_stats(rt, st);
	cr_log_info("grants %llu (fast %llu) waits %llu wakeups %llu spurious %llu max bypassed %llu",
		    (unsigned long long)st->acquire.grants, (unsigned long long)st->acquire.grants_fast,
		    (unsigned long long)st->acquire.waits, (unsigned long long)st->acquire.wakeups,
		    (unsigned long long)st->acquire.spurious_wakeups, (unsigned long long)st->acquire.max_bypassed);
	cr_assert_eq(st->acquire.grants, requests, "one grant per request");
	cr_assert_eq(st->acquire.spurious_wakeups, 0);
	cr_assert_leq(st->acquire.max_bypassed, 16);
}

Test(acquire, stress_shadow_state, .timeout = 120)
{
	create(0, 0);
	long n = scaled(200000);
	struct job *jobs = calloc((size_t)n, sizeof(*jobs));
	uint64_t seed = 42;
	for (long i = 0; i < n; i++) {
		/* Up to 6: requests from this (outside) thread with at most 4
		 * deps travel inside the injection item, larger ones in a
		 * malloc'd grant; both kinds are in the mix. */
		jobs[i].n = 1 + (unsigned)(seed % 6);
		for (unsigned k = 0; k < jobs[i].n; k++) {
			/* Distinct components, so the shadow check counts each once. */
			uint32_t c;
			bool dup;
			do {
				seed = seed * 6364136223846793005ull + 1442695040888963407ull;
				c = (uint32_t)((seed >> 33) % NCOMP);
				dup = false;
				for (unsigned m = 0; m < k; m++)
					dup |= jobs[i].deps[m].comp == c;
			} while (dup);
			jobs[i].deps[k].comp = c;
			jobs[i].deps[k].access = ((seed >> 20) % 10) < 7 ? WEFT_READ : WEFT_WRITE;
		}
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
	}
	stress_done = 0;
	struct watchdog wd;
	watchdog_start(&wd, &stress_done, 20, "acquire stress");
	submit_jobs(jobs, n, 3, 1024);
	while (__atomic_load_n(&stress_done, __ATOMIC_ACQUIRE) != (uint64_t)n)
		usleep(1000);
	watchdog_stop(&wd);
	struct weft_stats st;
	check_stress_stats(&st, (uint64_t)n);
	weft_destroy(rt);
	free(jobs);
}

/* ---- posted releases ---- */

/* A job of 1..maxdeps distinct components below ncomp, 70% READ. */
static void make_job(struct job *j, uint64_t *seed, unsigned maxdeps, uint32_t ncomp)
{
	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	j->n = 1 + (unsigned)((*seed >> 40) % maxdeps);
	for (unsigned k = 0; k < j->n; k++) {
		uint32_t c;
		bool dup;
		do {
			*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
			c = (uint32_t)((*seed >> 33) % ncomp);
			dup = false;
			for (unsigned m = 0; m < k; m++)
				dup |= j->deps[m].comp == c;
		} while (dup);
		j->deps[k].comp = c;
		j->deps[k].access = ((*seed >> 20) % 10) < 7 ? WEFT_READ : WEFT_WRITE;
	}
}

struct releaser {
	pthread_t th;
	uint64_t seed;
	long iters;
};

/* A thread that is not a worker: blocks for its grant, checks the shadow
 * state and releases it itself, so its releases are posted to whoever
 * holds the core at that moment (or applied by itself). */
static void *outside_releaser(void *p)
{
	struct releaser *r = p;
	for (long i = 0; i < r->iters; i++) {
		struct job j;
		struct weft_grant *g;
		make_job(&j, &r->seed, 6, 8);
		cr_assert_eq(weft_acquire_wait(rt, j.deps, j.n, &g), 0);
		job_run(&j);
		weft_release(g);
	}
	return NULL;
}

/* Few components, so they are SLOW most of the time and releases meet a
 * busy core: workers and outside threads release at once, grants of more
 * than GRANT_INLINE_DEPS deps (malloc'd) are posted too.  Every request is
 * granted once, conflicting ones never overlap, nothing is lost. */
Test(acquire, posted_releases_from_many_threads, .timeout = 120)
{
	create(2, 0);
	enum { T = 3 };
	long per = scaled(20000), n = scaled(100000);
	struct job *jobs = calloc((size_t)n, sizeof(*jobs));
	uint64_t seed = 7;
	for (long i = 0; i < n; i++)
		make_job(&jobs[i], &seed, 6, 8);
	memset(shadow_readers, 0, sizeof(shadow_readers));
	memset(shadow_writer, 0, sizeof(shadow_writer));
	stress_done = 0;
	struct watchdog wd;
	watchdog_start(&wd, &stress_done, 20, "posted releases");
	struct releaser rel[T];
	for (int t = 0; t < T; t++) {
		rel[t] = (struct releaser){ .seed = 1000u + (uint64_t)t, .iters = per };
		pthread_create(&rel[t].th, NULL, outside_releaser, &rel[t]);
	}
	submit_jobs(jobs, n, 2, 512);
	for (int t = 0; t < T; t++)
		pthread_join(rel[t].th, NULL);
	uint64_t total = (uint64_t)n + (uint64_t)T * (uint64_t)per;
	while (__atomic_load_n(&stress_done, __ATOMIC_ACQUIRE) != total)
		usleep(1000);
	watchdog_stop(&wd);
	struct weft_stats st;
	check_stress_stats(&st, total);
	cr_assert_leq(st.acquire.wakeups, st.acquire.waits, "at most one wake per blocked acquirer");
	for (int c = 0; c < NCOMP; c++) {
		cr_assert_eq(shadow_readers[c], 0);
		cr_assert_eq(shadow_writer[c], 0);
	}
	weft_destroy(rt);
	free(jobs);
}
