/*
 * test_threads.c: the pluggable thread layer.  A table that counts its
 * calls must be the one used, pinning must go through it, and a table that
 * fails half-way must leave nothing behind (checked under ASan).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <weft.h>

#include "testutil.h"

struct counting {
	int starts, joins, pins, fail_at;
	int pinned_cpu[64];
};

struct tramp {
	void (*fn)(void *);
	void *arg;
};

static void *tramp_main(void *p)
{
	struct tramp t = *(struct tramp *)p;
	free(p);
	t.fn(t.arg);
	return NULL;
}

static int c_start(void *ctx, void **handle, void (*fn)(void *), void *arg)
{
	struct counting *c = ctx;
	if (c->fail_at >= 0 && c->starts == c->fail_at)
		return -EAGAIN;
	struct tramp *t = malloc(sizeof(*t));
	pthread_t *th = malloc(sizeof(*th));
	t->fn = fn;
	t->arg = arg;
	pthread_create(th, NULL, tramp_main, t);
	*handle = th;
	__atomic_fetch_add(&c->starts, 1, __ATOMIC_RELAXED);
	return 0;
}

static int c_join(void *ctx, void *handle)
{
	struct counting *c = ctx;
	pthread_join(*(pthread_t *)handle, NULL);
	free(handle);
	__atomic_fetch_add(&c->joins, 1, __ATOMIC_RELAXED);
	return 0;
}

static int c_pin(void *ctx, int cpu)
{
	struct counting *c = ctx;
	int i = __atomic_fetch_add(&c->pins, 1, __ATOMIC_RELAXED);
	if (i < 64)
		c->pinned_cpu[i] = cpu;
	return 0;
}

static void nop(void *p)
{
	(void)p;
}

Test(threads, custom_table_is_used)
{
	struct counting c = { .fail_at = -1 };
	struct weft_thread_ops ops = { .ctx = &c, .start = c_start, .join = c_join, .pin = c_pin };
	struct weft_config cfg = { .threads = &ops, .pin = true, .workers = 3 };
	weft_rt *rt;
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	struct weft_group g;
	weft_group_init(&g);
	for (int i = 0; i < 100; i++)
		weft_group_spawn(rt, &g, nop, NULL);
	weft_group_wait(rt, &g);
	cr_assert_eq(c.starts, 3);
	weft_destroy(rt);
	cr_assert_eq(c.joins, 3);
	cr_assert_eq(c.pins, 3, "pin is called once on each worker thread");
}

Test(threads, failing_start_cleans_up)
{
	struct counting c = { .fail_at = 2 };
	struct weft_thread_ops ops = { .ctx = &c, .start = c_start, .join = c_join };
	struct weft_config cfg = { .threads = &ops, .workers = 4 };
	weft_rt *rt = (weft_rt *)0x1;
	cr_assert_eq(weft_create(&rt, &cfg), -EAGAIN);
	cr_assert_null(rt);
	cr_assert_eq(c.starts, 2);
	cr_assert_eq(c.joins, 2, "the threads that did start were joined");
}

Test(threads, table_without_start_is_rejected)
{
	struct weft_thread_ops ops = { 0 };
	struct weft_config cfg = { .threads = &ops };
	weft_rt *rt;
	cr_assert_eq(weft_create(&rt, &cfg), -EINVAL);
}
