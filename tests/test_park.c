/*
 * test_park.c: parking and waking.  A million spawn -> park -> wake cycles
 * with no lost wakeup (a watchdog turns a hang into a failure), an idle
 * runtime that burns no CPU, spurious wakeups injected through the OS
 * layer, and a waiter that stops spinning handing the wake on.
 */
#include <errno.h>
#include <sys/resource.h>
#include <weft.h>

#include "os.h"
#include "testutil.h"

static weft_rt *rt;
static uint64_t progress;

static void tick(void *p)
{
	(void)p;
	__atomic_fetch_add(&progress, 1, __ATOMIC_RELEASE);
}

static uint64_t total_of(const struct weft_stats *st, int field)
{
	uint64_t t = 0;
	for (unsigned i = 0; i < st->workers; i++) {
		const struct weft_worker_stats *w = &st->worker[i];
		t += field == 0 ? w->parks : field == 1 ? w->wakeups : w->spurious_wakeups;
	}
	return t;
}

/* One task at a time from outside, each waited for with a busy check so
 * the workers go through their spin-then-park path over and over; every
 * few hundred cycles a pause long enough for a real futex sleep. */
Test(park, million_spawn_park_wake_cycles, .timeout = 300)
{
	cr_assert_eq(weft_create(&rt, NULL), 0);
	long n = scaled(1000000);
	progress = 0;
	struct watchdog wd;
	watchdog_start(&wd, &progress, 10, "spawn/park/wake cycles");
	for (long i = 0; i < n; i++) {
		cr_assert_eq(weft_spawn(rt, tick, NULL), 0);
		while (__atomic_load_n(&progress, __ATOMIC_ACQUIRE) != (uint64_t)(i + 1))
			;
		if (i % 512 == 0)
			usleep(300);
	}
	watchdog_stop(&wd);
	struct weft_stats st;
	weft_stats(rt, &st);
	cr_log_info("parks %llu wakeups %llu spurious %llu", (unsigned long long)total_of(&st, 0),
		    (unsigned long long)total_of(&st, 1), (unsigned long long)total_of(&st, 2));
	cr_assert_gt(total_of(&st, 0), 0, "workers parked");
	cr_assert_gt(total_of(&st, 1), 0, "workers were woken");
	weft_destroy(rt);
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec * 1e-6;
}

Test(park, idle_runtime_uses_no_cpu, .timeout = 60)
{
	cr_assert_eq(weft_create(&rt, NULL), 0);
	struct weft_group g;
	weft_group_init(&g);
	for (int i = 0; i < 10000; i++)
		weft_group_spawn(rt, &g, tick, NULL);
	weft_group_wait(rt, &g);
	usleep(100 * 1000);
	double c0 = cpu_seconds(), t0 = now_sec();
	usleep(1000 * 1000);
	double used = (cpu_seconds() - c0) / (now_sec() - t0);
	cr_log_info("idle CPU: %.3f%% of one CPU", used * 100);
	cr_assert_lt(used, 0.01, "an idle runtime used %.2f%% of a CPU", used * 100);
	weft_destroy(rt);
}

/* ---- injected spurious wakeups ---- */

static uint64_t fake_spurious;

static int spurious_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	/* Every third wait returns at once, as if woken for nothing. */
	if (__atomic_fetch_add(&fake_spurious, 1, __ATOMIC_RELAXED) % 3 == 0)
		return -EINTR;
	return weft_os_default()->futex_wait(word, expected, timeout_ns);
}

static int plain_wake(uint32_t *word, int n)
{
	return weft_os_default()->futex_wake(word, n);
}

Test(park, survives_spurious_wakeups, .timeout = 120)
{
	struct weft_os os = *weft_os_default();
	os.futex_wait = spurious_wait;
	os.futex_wake = plain_wake;
	weft_os_set(&os);
	cr_assert_eq(weft_create(&rt, NULL), 0);
	progress = 0;
	long n = scaled(20000);
	for (long i = 0; i < n; i++) {
		cr_assert_eq(weft_spawn(rt, tick, NULL), 0);
		if (i % 64 == 0)
			usleep(200);
	}
	while (__atomic_load_n(&progress, __ATOMIC_ACQUIRE) != (uint64_t)n)
		usleep(1000);
	usleep(50 * 1000);
	struct weft_stats st;
	weft_stats(rt, &st);
	weft_destroy(rt);
	weft_os_set(NULL);
	cr_assert_gt(total_of(&st, 2), 0, "the spurious wakeups were seen and counted");
}

/* ---- a waiter that stops spinning passes the wake on ---- */

static struct weft_dep handoff_dep = { 0, WEFT_WRITE };
static int handoff_a_state, handoff_a_moved, handoff_t_ran, handoff_stuck;

static void handoff_t(void *p)
{
	(void)p;
	__atomic_store_n(&handoff_t_ran, 1, __ATOMIC_RELEASE);
}

/* Runs on worker 0, blocks for the component, then keeps its worker busy
 * until T has run somewhere else (or 2 s have passed: T was stuck). */
static void handoff_a(void *p)
{
	(void)p;
	if (weft_current_worker() != 0) {
		__atomic_store_n(&handoff_a_moved, 1, __ATOMIC_RELEASE);
		return;
	}
	__atomic_store_n(&handoff_a_state, 1, __ATOMIC_RELEASE);
	struct weft_grant *g;
	if (weft_acquire_wait(rt, &handoff_dep, 1, &g) != 0) {
		__atomic_store_n(&handoff_stuck, -1, __ATOMIC_RELEASE);
		__atomic_store_n(&handoff_a_state, 2, __ATOMIC_RELEASE);
		return;
	}
	double t0 = now_sec();
	while (!__atomic_load_n(&handoff_t_ran, __ATOMIC_ACQUIRE) && now_sec() - t0 < 2.0)
		;
	if (!__atomic_load_n(&handoff_t_ran, __ATOMIC_ACQUIRE))
		__atomic_fetch_add(&handoff_stuck, 1, __ATOMIC_RELAXED);
	weft_release(g);
	__atomic_store_n(&handoff_a_state, 2, __ATOMIC_RELEASE);
}

/*
 * Worker 0 is parked inside a weft_acquire_wait, worker 1 in its main loop.
 * A spawn from outside claims the lowest idle worker (0) as the spinner,
 * and then the wait completes: worker 0 leaves its wait to run the rest
 * of its task.  Leaving, it must hand the wake on (the last spinner's
 * look), or T waits behind that task while worker 1 sleeps: it did in 49
 * of 50 rounds.  Also the case of a worker woken as a spinner that runs
 * its first task still counted as spinning.
 */
Test(park, waiter_that_stops_spinning_passes_the_wake_on, .timeout = 120)
{
	struct weft_config cfg = { .workers = 2 };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	handoff_stuck = 0;
	for (int i = 0; i < 20; i++) {
		struct weft_grant *held;
		cr_assert_eq(weft_try_acquire(rt, &handoff_dep, 1, &held), 0);
		/* Until A lands on worker 0. */
		for (;;) {
			handoff_a_state = handoff_a_moved = 0;
			cr_assert_eq(weft_spawn(rt, handoff_a, NULL), 0);
			while (!__atomic_load_n(&handoff_a_state, __ATOMIC_ACQUIRE) &&
			       !__atomic_load_n(&handoff_a_moved, __ATOMIC_ACQUIRE))
				usleep(100);
			if (handoff_a_state)
				break;
			usleep(1000);
		}
		usleep(5000); /* both parked: worker 0 in its wait, worker 1 in main */
		handoff_t_ran = 0;
		cr_assert_eq(weft_spawn(rt, handoff_t, NULL), 0);
		weft_release(held);
		while (__atomic_load_n(&handoff_a_state, __ATOMIC_ACQUIRE) != 2)
			usleep(1000);
		while (!__atomic_load_n(&handoff_t_ran, __ATOMIC_ACQUIRE))
			usleep(1000);
		cr_assert_eq(handoff_stuck, 0, "round %d: T waited behind a busy worker while the other slept", i);
	}
	weft_destroy(rt);
}
