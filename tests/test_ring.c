/*
 * test_ring.c: the io_uring backend's paths that a healthy kernel rarely
 * takes, forced through the OS layer (os.h): submissions the kernel
 * refuses for a while (-EBUSY, -EAGAIN), so operations wait in the ring's
 * user-space backlog, and cancellation of operations still in that
 * backlog.  Every accepted operation must complete exactly once, in the
 * backlog's FIFO order per ring.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include <weft.h>

#include "os.h"
#include "testutil.h"

/* While refusing, every submit and the park's enter say "busy" without
 * taking anything from the SQ, as a kernel with a backed-up CQ does. */
static int refusing;
static uint64_t refused;

static int busy_submit(struct io_uring *ring, bool get_events)
{
	if (__atomic_load_n(&refusing, __ATOMIC_ACQUIRE)) {
		__atomic_fetch_add(&refused, 1, __ATOMIC_RELAXED);
		return -EBUSY;
	}
	return weft_os_default()->ring_submit(ring, get_events);
}

static int busy_enter(struct io_uring *ring, unsigned wait_nr)
{
	if (__atomic_load_n(&refusing, __ATOMIC_ACQUIRE)) {
		__atomic_fetch_add(&refused, 1, __ATOMIC_RELAXED);
		usleep(100); /* a sleep that ends early, as the caller allows */
		return -EAGAIN;
	}
	return weft_os_default()->ring_enter(ring, wait_nr);
}

struct run {
	weft_rt *rt;
	int n;
	int *handles;
	uint32_t *calls;   /* callbacks per op */
	int *res;
	uint32_t done;
	uint32_t submitted;
	int bad;           /* first submit error */
	bool cancel_half;  /* cancel every other op right after submitting */
};

struct slot {
	struct run *r;
	int i;
};

static void on_done(int res, void *ctx)
{
	struct slot *s = ctx;
	s->r->res[s->i] = res;
	__atomic_fetch_add(&s->r->calls[s->i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->r->done, 1, __ATOMIC_RELEASE);
}

static struct slot *slots;

/* On one worker: far more operations than the 8-entry SQ holds, while the
 * kernel refuses to take any. */
static void burst(void *p)
{
	struct run *r = p;
	for (int i = 0; i < r->n; i++) {
		int h = weft_io_timeout(r->rt, 0, on_done, &slots[i]);
		if (h < 0) {
			int none = 0;
			__atomic_compare_exchange_n(&r->bad, &none, h, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
			continue;
		}
		r->handles[i] = h;
		/* release: the handle and any error before it are seen by main. */
		__atomic_fetch_add(&r->submitted, 1, __ATOMIC_RELEASE);
		if (r->cancel_half && (i & 1))
			weft_io_cancel(r->rt, h);
	}
}

static void run_backlog(bool cancel_half)
{
	struct weft_os os = *weft_os_default();
	os.ring_submit = busy_submit;
	os.ring_enter = busy_enter;
	weft_os_set(&os);
	__atomic_store_n(&refusing, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&refused, 0, __ATOMIC_RELAXED);

	struct run r = { .n = (int)scaled(20000), .cancel_half = cancel_half };
	r.handles = calloc((size_t)r.n, sizeof(int));
	r.calls = calloc((size_t)r.n, sizeof(uint32_t));
	r.res = calloc((size_t)r.n, sizeof(int));
	slots = calloc((size_t)r.n, sizeof(*slots));
	for (int i = 0; i < r.n; i++)
		slots[i] = (struct slot){ &r, i };
	struct weft_config cfg = { .workers = 1, .io = WEFT_IO_URING, .io_entries = 8 };
	cr_assert_eq(weft_create(&r.rt, &cfg), 0);
	cr_assert_eq(weft_spawn(r.rt, burst, &r), 0);
	/* Let the burst finish and the worker try (and fail) to submit. */
	for (int t = 0; t < 2000 && __atomic_load_n(&r.submitted, __ATOMIC_ACQUIRE) < (uint32_t)r.n; t++)
		usleep(1000);
	usleep(20 * 1000);
	int bad = __atomic_load_n(&r.bad, __ATOMIC_RELAXED);
	cr_assert_eq(bad, 0, "submit failed while the kernel refused: %d", bad);
	cr_assert_eq(__atomic_load_n(&r.submitted, __ATOMIC_RELAXED), (uint32_t)r.n);
	struct weft_stats st;
	weft_stats(r.rt, &st);
	cr_assert_gt(st.io.backlogged, 0, "nothing went to the backlog (sq_full %llu, refused %llu)",
		     (unsigned long long)st.io.sq_full, (unsigned long long)__atomic_load_n(&refused, __ATOMIC_RELAXED));
	cr_assert_gt(__atomic_load_n(&refused, __ATOMIC_RELAXED), 0);
	/* The kernel takes work again: everything completes. */
	__atomic_store_n(&refusing, 0, __ATOMIC_RELEASE);
	weft_spawn(r.rt, burst, &(struct run){ .rt = r.rt, .n = 0 }); /* nudge the worker */
	for (int t = 0; t < 30000 && __atomic_load_n(&r.done, __ATOMIC_ACQUIRE) < (uint32_t)r.n; t++)
		usleep(1000);
	weft_stats(r.rt, &st);
	weft_destroy(r.rt);
	weft_os_set(NULL);
	cr_log_info("%d ops: backlogged %llu, sq_full %llu, refused submits %llu", r.n,
		    (unsigned long long)st.io.backlogged, (unsigned long long)st.io.sq_full,
		    (unsigned long long)__atomic_load_n(&refused, __ATOMIC_RELAXED));
	unsigned cancelled = 0;
	for (int i = 0; i < r.n; i++) {
		cr_assert_eq(r.calls[i], 1, "op %d: %u callbacks", i, r.calls[i]);
		if (r.res[i] == -ECANCELED)
			cancelled++;
		else
			cr_assert_eq(r.res[i], 0, "op %d: res %d", i, r.res[i]);
	}
	if (cancel_half)
		cr_assert_gt(cancelled, 0, "no backlogged op was cancelled");
	else
		cr_assert_eq(cancelled, 0);
	free(r.handles);
	free(r.calls);
	free(r.res);
	free(slots);
}

Test(ring, backlog_while_kernel_refuses, .timeout = 120)
{
	run_backlog(false);
}

Test(ring, cancel_in_backlog, .timeout = 120)
{
	run_backlog(true);
}
