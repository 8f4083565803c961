/*
 * test_shutdown.c: weft_destroy racing random work.  Each round submits a
 * random mix from this thread (weft_spawn, weft_acquire, weft_spawn_with,
 * tasks that fork-join, I/O: timeouts and reads on a pipe nobody writes
 * to) whose tasks and callbacks submit more from the workers, sleeps
 * 0-300 us and destroys the runtime while all of it is still under way,
 * on both I/O backends.  Half the rounds also hold a component forever,
 * so requests on it are stuck and must be cancelled.  Every accepted
 * submission must finish exactly once: a task runs, a callback is called
 * (granted, or -ECANCELED only when something is stuck), a weft_spawn_with
 * runs unless its component is stuck, an I/O callback runs.  Shutdown
 * races found this way: cancelled callbacks lost to a concurrent exit,
 * and weft_destroy waiting forever after dropping a stuck weft_spawn_with.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <weft.h>

#include "testutil.h"

static weft_rt *rt;

/* What was accepted and what finished, in this round. */
static long accepted_tasks, ran_tasks;
static long accepted_acquires, granted, cancelled;
static long accepted_with, ran_with;
static long accepted_io, io_done, io_cancelled;
static long errors;
/* A pipe nobody writes to: a read on it only ends when cancelled. */
static int stuck_pipe[2];
static char stuck_buf[64];

static void bump(long *c)
{
	__atomic_fetch_add(c, 1, __ATOMIC_RELAXED);
}

static long get(const long *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Per thread: the workers draw too. */
static __thread unsigned rng_state;

static unsigned rnd(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

static void submit_some(long depth);

static void task_fn(void *arg)
{
	bump(&ran_tasks);
	if ((long)arg > 0)
		submit_some((long)arg - 1);
}

static void with_fn(void *arg)
{
	bump(&ran_with);
	if ((long)arg > 0)
		submit_some((long)arg - 1);
}

static void acquired(struct weft_grant *g, int status, void *ctx)
{
	if (status == 0 && g) {
		bump(&granted);
		weft_release(g);
		if ((long)ctx > 0)
			submit_some((long)ctx - 1);
	} else if (status == -ECANCELED && !g) {
		bump(&cancelled);
	} else {
		bump(&errors);
	}
}

static void io_finished(int res, void *ctx)
{
	bump(&io_done);
	if (res == -ECANCELED)
		bump(&io_cancelled);
	else if (res != 0)
		bump(&errors); /* a timeout says 0; the stuck read never completes */
	if ((long)ctx > 0)
		submit_some((long)ctx - 1);
}

static void fork_join(void *arg)
{
	bump(&ran_tasks);
	long depth = (long)arg;
	struct weft_group g;
	weft_group_init(&g);
	for (int i = 0; i < 3; i++)
		if (weft_group_spawn(rt, &g, task_fn, (void *)(depth > 0 ? depth - 1 : 0)) == 0)
			bump(&accepted_tasks);
	weft_group_wait(rt, &g);
	/* On a worker a join never fails, draining or not. */
	if (rnd() % 2) {
		void *d = (void *)(depth > 0 ? depth - 1 : 0);
		if (weft_join(rt, task_fn, d, task_fn, d) == 0) {
			bump(&accepted_tasks);
			bump(&accepted_tasks);
		} else {
			bump(&errors);
		}
	}
}

static void submit_some(long depth)
{
	unsigned k = rnd() % 4 + 1;
	for (unsigned i = 0; i < k; i++) {
		struct weft_dep deps[3];
		unsigned n = rnd() % 4;
		for (unsigned j = 0; j < n; j++) {
			deps[j].comp = rnd() % 8;
			deps[j].access = rnd() % 3 ? WEFT_READ : WEFT_WRITE;
		}
		int r;
		switch (rnd() % 6) {
		case 0:
			r = weft_spawn(rt, task_fn, (void *)depth);
			if (r == 0)
				bump(&accepted_tasks);
			break;
		case 1:
			r = weft_acquire(rt, deps, n, acquired, (void *)depth);
			if (r == 0)
				bump(&accepted_acquires);
			break;
		case 2:
			r = weft_spawn_with(rt, deps, n, with_fn, (void *)depth);
			if (r == 0)
				bump(&accepted_with);
			break;
		case 4:
			r = weft_io_timeout(rt, rnd() % 200000, io_finished, (void *)depth);
			if (r > 0)
				bump(&accepted_io);
			/* I/O is refused from workers too once destroy began. */
			r = r > 0 || r == -ESHUTDOWN ? 0 : r;
			break;
		case 5:
			/* Stuck until weft_destroy cancels it (no callback depth:
			 * it only ever says -ECANCELED). */
			if (rnd() % 4 == 0) {
				r = weft_io_read(rt, stuck_pipe[0], stuck_buf, sizeof(stuck_buf), WEFT_IO_CUR, io_finished,
						 (void *)0);
				if (r > 0)
					bump(&accepted_io);
				r = r > 0 || r == -ESHUTDOWN ? 0 : r;
				break;
			}
			/* fall through */
		default:
			r = weft_spawn(rt, fork_join, (void *)depth);
			if (r == 0)
				bump(&accepted_tasks);
			break;
		}
		/* Workers may submit until the end; this thread submits before
		 * weft_destroy. */
		if (r != 0)
			bump(&errors);
	}
}

Test(shutdown, random_work_races_destroy, .timeout = 120)
{
	/* WEFT_TEST_SEED picks another sequence (for longer hunts by hand). */
	const char *seed = getenv("WEFT_TEST_SEED");
	rng_state = seed ? (unsigned)strtoul(seed, NULL, 0) : 12345;
	cr_assert_eq(pipe(stuck_pipe), 0);
	long rounds = scaled(2000) < 200 ? 200 : scaled(2000);
	for (long round = 0; round < rounds; round++) {
		/* Both I/O backends, the ring's park mechanisms by turns (the
		 * futex one needs kernel 6.7: where it is missing, the default). */
		struct weft_config cfg = { .workers = 1 + rnd() % 3,
					   .components = 16,
					   .io = round % 2 ? WEFT_IO_THREADS : WEFT_IO_AUTO,
					   .io_park = (unsigned)(round / 2 % 4) };
		if (weft_create(&rt, &cfg) != 0) {
			cfg.io_park = 0;
			cr_assert_eq(weft_create(&rt, &cfg), 0);
		}
		accepted_tasks = ran_tasks = accepted_acquires = granted = cancelled = 0;
		accepted_with = ran_with = accepted_io = io_done = io_cancelled = errors = 0;
		struct weft_grant *held = NULL;
		struct weft_dep stuck = { 3, WEFT_WRITE };
		if (rnd() % 2)
			cr_assert_eq(weft_try_acquire(rt, &stuck, 1, &held), 0);
		unsigned batches = rnd() % 40;
		for (unsigned i = 0; i < batches; i++)
			submit_some(rnd() % 4);
		unsigned pause = rnd() % 400;
		if (pause < 300)
			usleep(pause);
		destroy_quietly(rt);

		cr_assert_eq(get(&errors), 0, "round %ld: a call failed or a callback got a wrong status", round);
		cr_assert_eq(get(&ran_tasks), get(&accepted_tasks), "round %ld: %ld of %ld tasks ran", round,
			     get(&ran_tasks), get(&accepted_tasks));
		cr_assert_eq(get(&granted) + get(&cancelled), get(&accepted_acquires),
			     "round %ld: %ld granted + %ld cancelled of %ld requests", round, get(&granted),
			     get(&cancelled), get(&accepted_acquires));
		cr_assert_eq(get(&io_done), get(&accepted_io), "round %ld: %ld of %ld I/O callbacks ran", round,
			     get(&io_done), get(&accepted_io));
		if (held) {
			cr_assert_leq(get(&ran_with), get(&accepted_with), "round %ld", round);
		} else {
			cr_assert_eq(get(&cancelled), 0, "round %ld: cancelled with nothing stuck", round);
			cr_assert_eq(get(&ran_with), get(&accepted_with), "round %ld: %ld of %ld weft_spawn_with ran",
				     round, get(&ran_with), get(&accepted_with));
		}
	}
}
