/*
 * test_deque.c: the split Chase-Lev deque (runtime/deque.c).
 *
 * Single-threaded tests compare every operation against a reference model
 * of the split semantics (LIFO for the owner, FIFO for thieves, publishing
 * ceil(private/2), at most DEQUE_STEAL_MAX, on request; the owner's public
 * pop LIFO far from top and oldest-first within DEQUE_STEAL_MAX of it;
 * range steals of ceil(public/2)) and cover growth and failed growth.  The
 * concurrent tests check that every task is taken exactly once with
 * per-item counters: one owner with a random push/pop mix against three
 * thieves (growth under stealing, fresh small deque each round; one thief
 * steals single items, two take ranges with deque_steal_many), the
 * one-item race between the owner's pop and the thieves, and the range
 * race (the owner pops a wholly public deque back while thieves take
 * ranges: its pop far from top without a CAS, near top by CAS).  The tasks are
 * real frames whose fields the owner writes before pushing and the taker
 * checks with plain accesses, so a missing release/acquire shows up under
 * ThreadSanitizer.  WEFT_TEST_SCALE=k divides the concurrent sizes by k.
 * Under TSan the file carries its own runner (Criterion cannot start
 * there, see below).
 */
#define _GNU_SOURCE 1
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "atomics.h"
#include "deque.h"

#include "crit.h"

#if defined(__SANITIZE_ADDRESS__) || WEFT_TSAN
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static unsigned long test_scale(void)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	unsigned long k = s ? strtoul(s, NULL, 10) : 1;

	return k ? k : 1;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Single-threaded tests never dereference the tasks: a token encodes the
 * item number in a frame-aligned, never-NULL address. */
static struct weft_task *tok(uint64_t i)
{
	return (struct weft_task *)(uintptr_t)((i + 1) * sizeof(struct weft_task));
}

static uint64_t untok(struct weft_task *t)
{
	return (uintptr_t)t / sizeof(struct weft_task) - 1;
}

/* ------------------------------------------------------------------ */
/* Reference model of the split deque, single-threaded. */

struct model {
	uint64_t *item;
	int64_t top, split, bottom;
	int req;
};

static void model_publish(struct model *m)
{
	int64_t priv = m->bottom - m->split;

	if (m->req && priv > 0) {
		m->split += (priv + 1) / 2 < DEQUE_STEAL_MAX ? (priv + 1) / 2 : DEQUE_STEAL_MAX;
		m->req = 0;
	}
}

static void model_push(struct model *m, uint64_t v)
{
	m->item[m->bottom++] = v;
	model_publish(m);
}

/* Returns the item or UINT64_MAX when empty. */
static uint64_t model_pop(struct model *m)
{
	uint64_t v;

	if (m->bottom > m->split) {
		v = m->item[--m->bottom];
		model_publish(m);
		return v;
	}
	if (m->top == m->split)
		return UINT64_MAX;
	/* Within a range's reach of top the owner takes the oldest. */
	if (m->top + DEQUE_STEAL_MAX >= m->split)
		return m->item[m->top++];
	v = m->item[--m->split];
	m->bottom = m->split;
	return v;
}

static uint64_t model_steal(struct model *m)
{
	if (m->top < m->split)
		return m->item[m->top++];
	m->req = 1;
	return UINT64_MAX;
}

/* Takes up to max of the oldest ceil(public / 2) into out[]; 0 when the
 * public part is empty. */
static unsigned model_steal_many(struct model *m, uint64_t *out, unsigned max)
{
	int64_t k = (m->split - m->top + 1) / 2;

	if (m->top >= m->split) {
		m->req = 1;
		return 0;
	}
	if (k > (int64_t)max)
		k = max;
	for (int64_t i = 0; i < k; i++)
		out[i] = m->item[m->top++];
	return (unsigned)k;
}

static void check_against_model(struct weft_deque *d, struct model *m)
{
	cr_assert_eq(deque_size(d), (size_t)(m->bottom - m->top));
	cr_assert_eq(deque_private(d), (size_t)(m->bottom - m->split));
	cr_assert_eq(deque_public_nonempty(d), m->top < m->split);
	cr_assert_eq(!!load_relaxed(&d->split_req), m->req);
}

Test(deque, lifo_order_and_growth_to_1m, .timeout = 120)
{
	const uint64_t n = 1u << 20;
	struct weft_deque d;
	struct weft_task *t;

	cr_assert_eq(deque_init(&d, 2), 0);
	cr_assert_eq(deque_capacity(&d), 4);
	cr_assert_null(deque_pop(&d));
	for (uint64_t i = 0; i < n; i++) {
		cr_assert_eq(deque_push(&d, tok(i)), 0);
		cr_assert_eq(deque_size(&d), i + 1);
	}
	/* Doubling from 4 lands exactly on the item count: no over-growth. */
	cr_assert_eq(deque_capacity(&d), n);
	cr_assert_eq(deque_private(&d), n);
	for (uint64_t i = n; i-- > 0;) {
		t = deque_pop(&d);
		cr_assert_not_null(t);
		cr_assert_eq(untok(t), i, "popped %lu, want %lu",
			     (unsigned long)untok(t), (unsigned long)i);
	}
	cr_assert_null(deque_pop(&d));
	cr_assert_eq(deque_size(&d), 0);
	/* Never shrinks: the empty deque keeps its capacity. */
	cr_assert_eq(deque_capacity(&d), n);
	deque_fini(&d);
}

/* Random push/pop/steal interleavings from one thread, every step checked
 * against the model, starting from a tiny array so growth happens with
 * public items (top > 0) and a wrapped ring. */
Test(deque, model_interleavings, .timeout = 120)
{
	const int64_t steps = 2000000;
	struct weft_deque d;
	struct model m = { 0 };
	uint64_t seed = 0x9e3779b97f4a7c15ull, next = 0;

	m.item = calloc((size_t)steps + 1, sizeof(*m.item));
	cr_assert_not_null(m.item);
	cr_assert_eq(deque_init(&d, 1), 0);
	for (int64_t step = 0; step < steps; step++) {
		uint64_t r = rng_next(&seed);
		/* Phases drift between growing and shrinking so the size
		 * sweeps through several doublings. */
		unsigned push_pct = (step / 50000) % 2 ? 35 : 65;
		struct weft_task *t;
		uint64_t want;
		int why = -1;

		if (r % 100 < push_pct) {
			cr_assert_eq(deque_push(&d, tok(next)), 0);
			model_push(&m, next++);
		} else if (r % 100 < 90) {
			t = deque_pop(&d);
			want = model_pop(&m);
			if (want == UINT64_MAX)
				cr_assert_null(t, "step %ld", (long)step);
			else
				cr_assert(t && untok(t) == want, "step %ld", (long)step);
		} else if (r % 100 < 95) {
			t = deque_steal(&d, &why);
			want = model_steal(&m);
			if (want == UINT64_MAX) {
				cr_assert_null(t, "step %ld", (long)step);
				cr_assert_eq(why, DEQUE_EMPTY);
			} else {
				cr_assert(t && untok(t) == want, "step %ld", (long)step);
			}
		} else {
			struct weft_task *got[DEQUE_STEAL_MAX];
			uint64_t exp[DEQUE_STEAL_MAX];
			unsigned max = 1 + (unsigned)((r >> 8) % DEQUE_STEAL_MAX);
			unsigned k = deque_steal_many(&d, got, max, true, &why);

			cr_assert_eq(k, model_steal_many(&m, exp, max), "step %ld", (long)step);
			if (k == 0)
				cr_assert_eq(why, DEQUE_EMPTY);
			for (unsigned i = 0; i < k; i++)
				cr_assert_eq(untok(got[i]), exp[i], "step %ld", (long)step);
		}
		check_against_model(&d, &m);
	}
	cr_assert_geq(deque_capacity(&d), 1024);
	deque_fini(&d);
	free(m.item);
}

Test(deque, init_limits)
{
	struct weft_deque d;

	cr_assert_eq(deque_init(&d, DEQUE_MAX_LOG2 + 1), -ENOMEM);
	cr_assert_eq(deque_init(&d, 200), -ENOMEM);
	cr_assert_eq(deque_init(&d, 0), 0);
	cr_assert_eq(deque_capacity(&d), 1);
	for (uint64_t i = 0; i < 100; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	cr_assert_eq(deque_capacity(&d), 128);
	for (uint64_t i = 100; i-- > 0;)
		cr_assert_eq(untok(deque_pop(&d)), i);
	deque_fini(&d);
}

#if !SANITIZED
static size_t address_space_bytes(void)
{
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	cr_assert_not_null(f);
	cr_assert_eq(fscanf(f, "%lu", &pages), 1);
	fclose(f);
	return pages * (size_t)sysconf(_SC_PAGESIZE);
}
#endif

/* Growth that cannot allocate fails with -ENOMEM and leaves the deque as it
 * was.  Criterion runs each test in its own process, so the address-space
 * limit stays here. */
Test(deque, grow_enomem_leaves_deque_unchanged, .timeout = 60)
{
#if SANITIZED
	cr_skip_test("RLIMIT_AS cannot be combined with sanitizer shadow memory");
#else
	const uint64_t n = 1u << 20;
	struct weft_deque d;
	struct rlimit old, lim;
	int why;

	cr_assert_eq(deque_init(&d, 2), 0);
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	cr_assert_eq(deque_capacity(&d), n);
	/* Publish some so the failed growth has public items to keep. */
	cr_assert_null(deque_steal(&d, &why));
	cr_assert_eq(why, DEQUE_EMPTY);
	cr_assert_eq(untok(deque_pop(&d)), n - 1);
	cr_assert_eq(deque_push(&d, tok(n - 1)), 0);

	cr_assert_eq(getrlimit(RLIMIT_AS, &old), 0);
	lim = old;
	/* The next array needs 16 MiB: leave 4 MiB of room. */
	lim.rlim_cur = address_space_bytes() + (4u << 20);
	cr_assert_eq(setrlimit(RLIMIT_AS, &lim), 0);
	cr_assert_eq(deque_push(&d, tok(n)), -ENOMEM);
	cr_assert_eq(deque_push(&d, tok(n)), -ENOMEM);
	cr_assert_eq(setrlimit(RLIMIT_AS, &old), 0);

	cr_assert_eq(deque_size(&d), n);
	cr_assert_eq(deque_capacity(&d), n);
	cr_assert_eq(deque_private(&d), n - DEQUE_STEAL_MAX);
	/* Thieves still get the oldest, the owner the newest (and the rest
	 * of the public part, oldest first, as it is within a range's reach
	 * of top). */
	cr_assert_eq(untok(deque_steal(&d, &why)), 0);
	for (uint64_t i = n; i-- > DEQUE_STEAL_MAX;)
		cr_assert_eq(untok(deque_pop(&d)), i);
	for (uint64_t i = 1; i < DEQUE_STEAL_MAX; i++)
		cr_assert_eq(untok(deque_pop(&d)), i);
	cr_assert_null(deque_pop(&d));
	/* With memory back, growth works again. */
	for (uint64_t i = 0; i <= n; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	cr_assert_eq(deque_capacity(&d), 2 * n);
	deque_fini(&d);
#endif
}

/* ------------------------------------------------------------------ */
/* The split protocol, step by step; the thief runs in its own thread. */

struct steal_call {
	struct weft_deque *d;
	struct weft_task *got;
	int why;
};

static void *steal_thread(void *arg)
{
	struct steal_call *c = arg;

	c->got = deque_steal(c->d, &c->why);
	return NULL;
}

static struct weft_task *steal_elsewhere(struct weft_deque *d, int *why)
{
	struct steal_call c = { .d = d, .why = -1 };
	pthread_t th;

	cr_assert_eq(pthread_create(&th, NULL, steal_thread, &c), 0);
	cr_assert_eq(pthread_join(th, NULL), 0);
	*why = c.why;
	return c.got;
}

Test(deque, split_on_request)
{
	struct weft_deque d;
	struct weft_task *t;
	int why;

	cr_assert_eq(deque_init(&d, 2), 0);
	for (uint64_t i = 0; i < 8; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	cr_assert_eq(deque_private(&d), 8);
	cr_assert_not(deque_public_nonempty(&d));

	/* All private: the thief fails and asks for a split. */
	cr_assert_null(steal_elsewhere(&d, &why));
	cr_assert_eq(why, DEQUE_EMPTY);
	cr_assert_eq(load_relaxed(&d.split_req), 1);
	cr_assert_null(steal_elsewhere(&d, &why));
	cr_assert_eq(why, DEQUE_EMPTY);
	cr_assert_eq(deque_private(&d), 8);

	/* The next push answers: ceil(9 / 2) = 5 oldest become public. */
	cr_assert_eq(deque_push(&d, tok(8)), 0);
	cr_assert_eq(load_relaxed(&d.split_req), 0);
	cr_assert_eq(deque_private(&d), 4);
	cr_assert_eq(deque_size(&d), 9);
	cr_assert(deque_public_nonempty(&d));
	for (uint64_t i = 0; i < 5; i++) {
		t = steal_elsewhere(&d, &why);
		cr_assert(t && untok(t) == i);
	}
	cr_assert_null(steal_elsewhere(&d, &why));
	cr_assert_eq(why, DEQUE_EMPTY);

	/* A pop answers too, after taking the newest: of 5..7 left private,
	 * ceil(3 / 2) = 2 are published. */
	t = deque_pop(&d);
	cr_assert(t && untok(t) == 8);
	cr_assert_eq(deque_private(&d), 1);
	cr_assert_eq(load_relaxed(&d.split_req), 0);
	t = steal_elsewhere(&d, &why);
	cr_assert(t && untok(t) == 5);
	t = steal_elsewhere(&d, &why);
	cr_assert(t && untok(t) == 6);

	/* Nothing private to give: the request stays up ... */
	cr_assert_null(steal_elsewhere(&d, &why));
	t = deque_pop(&d);
	cr_assert(t && untok(t) == 7);
	cr_assert_eq(load_relaxed(&d.split_req), 1);
	cr_assert_null(deque_pop(&d));
	/* ... and the next push is published at once. */
	cr_assert_eq(deque_push(&d, tok(9)), 0);
	cr_assert_eq(deque_private(&d), 0);
	t = steal_elsewhere(&d, &why);
	cr_assert(t && untok(t) == 9);
	cr_assert_null(deque_pop(&d));
	cr_assert_eq(deque_size(&d), 0);
	deque_fini(&d);
}

/* The owner pops its whole deque across the split: private items first,
 * newest first, then the public ones, which are all within a range's reach
 * of top here, so oldest first by CAS. */
Test(deque, owner_pops_through_public_part)
{
	struct weft_deque d;
	struct weft_task *t;
	int why;

	cr_assert_eq(deque_init(&d, 3), 0);
	for (uint64_t i = 0; i < 10; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	cr_assert_null(steal_elsewhere(&d, &why));
	cr_assert_eq(deque_push(&d, tok(10)), 0);
	cr_assert_eq(deque_private(&d), 5);
	for (uint64_t i = 11; i-- > 6;) {
		t = deque_pop(&d);
		cr_assert(t && untok(t) == i, "want %lu", (unsigned long)i);
		cr_assert_eq(deque_size(&d), i);
	}
	for (uint64_t i = 0; i < 6; i++) {
		t = deque_pop(&d);
		cr_assert(t && untok(t) == i, "want %lu", (unsigned long)i);
		cr_assert_eq(deque_size(&d), 5 - i);
	}
	cr_assert_null(deque_pop(&d));
	cr_assert_null(steal_elsewhere(&d, &why));
	cr_assert_eq(why, DEQUE_EMPTY);
	deque_fini(&d);
}

/* A long public part: the owner pops newest first through the Chase-Lev
 * path while top + DEQUE_STEAL_MAX stays below the item, then takes the
 * last DEQUE_STEAL_MAX oldest first; a range steal in between moves the
 * boundary with top. */
Test(deque, owner_public_pop_far_then_near)
{
	const uint64_t n = 100;
	struct weft_task *got[DEQUE_STEAL_MAX];
	struct weft_deque d;
	int why;

	cr_assert_eq(deque_init(&d, 3), 0);
	for (uint64_t i = 0; i < n; i++)
		cr_assert_eq(deque_push(&d, tok(i)), 0);
	deque_share_all(&d);
	cr_assert_eq(deque_private(&d), 0);
	for (uint64_t i = n; i-- > 50;)
		cr_assert_eq(untok(deque_pop(&d)), i);
	/* [0, 50) left: a range steal takes the oldest ceil(50/2), capped at
	 * max. */
	cr_assert_eq(deque_steal_many(&d, got, 4, true, &why), 4);
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(untok(got[i]), i);
	for (uint64_t i = 50; i-- > 4 + DEQUE_STEAL_MAX;)
		cr_assert_eq(untok(deque_pop(&d)), i);
	for (uint64_t i = 4; i < 4 + DEQUE_STEAL_MAX; i++)
		cr_assert_eq(untok(deque_pop(&d)), i);
	cr_assert_null(deque_pop(&d));
	/* Empty: a steal that may not ask leaves no request behind. */
	cr_assert_eq(deque_steal_many(&d, got, 4, false, &why), 0);
	cr_assert_eq(why, DEQUE_EMPTY);
	cr_assert_eq(load_relaxed(&d.split_req), 0);
	cr_assert_eq(deque_steal_many(&d, got, 4, true, &why), 0);
	cr_assert_eq(load_relaxed(&d.split_req), 1);
	deque_fini(&d);
}

/* ------------------------------------------------------------------ */
/* Concurrent tests: real frames, per-item counters. */

struct items {
	struct weft_task *frames;
	uint8_t *taken;         /* per item: how many times it was taken */
	uint64_t n;
	uint64_t bad;           /* frames whose contents did not match */
};

static void items_alloc(struct items *it, uint64_t nframes, uint64_t n)
{
	void *p = NULL;

	cr_assert_eq(posix_memalign(&p, 64, nframes * sizeof(struct weft_task)), 0);
	it->frames = p;
	it->taken = calloc(n, 1);
	cr_assert_not_null(it->taken);
	it->n = n;
	it->bad = 0;
}

static void items_free(struct items *it)
{
	free(it->frames);
	free(it->taken);
}

/* Plain writes: only the deque's own release/acquire publishes them. */
static struct weft_task *item_make(struct weft_task *f, uint64_t i)
{
	f->fn = NULL;
	f->arg = (void *)(uintptr_t)i;
	f->aux[0] = ~i;
	f->aux[1] = i * 0x9e3779b97f4a7c15ull;
	return f;
}

static void item_take(struct items *it, struct weft_task *f)
{
	uint64_t i = (uintptr_t)f->arg;

	if (i >= it->n || f->aux[0] != ~i || f->aux[1] != i * 0x9e3779b97f4a7c15ull) {
		fetch_add_relaxed(&it->bad, 1);
		return;
	}
	/* Release pairs with the owner's acquire wait in the race test: the
	 * frame is no longer read once the count shows. */
	fetch_add_release(&it->taken[i], 1);
}

static void items_check(struct items *it)
{
	uint64_t zero = 0, many = 0, first = UINT64_MAX;

	for (uint64_t i = 0; i < it->n; i++) {
		if (it->taken[i] != 1 && first == UINT64_MAX)
			first = i;
		zero += it->taken[i] == 0;
		many += it->taken[i] > 1;
	}
	cr_assert_eq(it->bad, 0, "%lu frames read with wrong contents",
		     (unsigned long)it->bad);
	cr_assert(zero == 0 && many == 0,
		  "%lu items never taken, %lu taken twice or more (first: %lu)",
		  (unsigned long)zero, (unsigned long)many, (unsigned long)first);
}

#define THIEVES 3

struct stress {
	struct weft_deque d;
	struct items it;
	pthread_barrier_t bar;
	uint32_t round_done;
	uint32_t stop;
	uint64_t stolen[THIEVES];
	uint64_t aborts[THIEVES];
};

struct thief_arg {
	struct stress *s;
	int id;
};

/* Thief 0 takes one item at a time (deque_steal); the others take ranges
 * (deque_steal_many) with a bound that varies from 1 to DEQUE_STEAL_MAX. */
static void thief_loop(struct stress *s, int id)
{
	struct weft_task *got[DEQUE_STEAL_MAX];
	unsigned empties = 0, tries = 0, k;
	int why;

	/* Acquire pairs with the owner's store_release of round_done, which
	 * follows its last pop: nothing is left to take. */
	while (!load_acquire(&s->round_done)) {
		if (id == 0) {
			got[0] = deque_steal(&s->d, &why);
			k = got[0] != NULL;
		} else {
			k = deque_steal_many(&s->d, got, 1 + tries++ % DEQUE_STEAL_MAX, true, &why);
		}
		if (k) {
			for (unsigned i = 0; i < k; i++)
				item_take(&s->it, got[i]);
			s->stolen[id] += k;
			empties = 0;
		} else if (why == DEQUE_ABORT) {
			s->aborts[id]++;
			cpu_relax();
		} else if (++empties % 4 == 0) {
			/* Two CPUs, four threads: let the owner run. */
			sched_yield();
		} else {
			cpu_relax();
		}
	}
}

static void *stress_thief(void *arg)
{
	struct thief_arg *a = arg;
	struct stress *s = a->s;

	for (;;) {
		pthread_barrier_wait(&s->bar);
		if (load_relaxed(&s->stop))
			break;
		thief_loop(s, a->id);
		pthread_barrier_wait(&s->bar);
	}
	return NULL;
}

static void stress_start(struct stress *s, pthread_t *th, struct thief_arg *ta)
{
	/* Fresh counters: the TSan build runs every test in one process. */
	memset(s->stolen, 0, sizeof(s->stolen));
	memset(s->aborts, 0, sizeof(s->aborts));
	store_relaxed(&s->stop, 0);
	cr_assert_eq(pthread_barrier_init(&s->bar, NULL, THIEVES + 1), 0);
	for (int i = 0; i < THIEVES; i++) {
		ta[i].s = s;
		ta[i].id = i;
		cr_assert_eq(pthread_create(&th[i], NULL, stress_thief, &ta[i]), 0);
	}
}

static void stress_stop(struct stress *s, pthread_t *th)
{
	store_relaxed(&s->stop, 1);
	pthread_barrier_wait(&s->bar);
	for (int i = 0; i < THIEVES; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&s->bar);
}

static struct stress stress;

/* One owner with a random push/pop mix (single steps and bursts) against
 * three thieves.  Every round starts from a fresh 2-slot deque, so growth
 * keeps happening while thieves steal.  Checks that every item was taken
 * exactly once; returns how many the thieves took. */
static uint64_t owner_vs_thieves_run(uint64_t n, uint64_t seed)
{
	const uint64_t rounds = 20;
	const uint64_t per_round = (n + rounds - 1) / rounds;
	struct stress *s = &stress;
	struct thief_arg ta[THIEVES];
	pthread_t th[THIEVES];
	uint64_t owner_took = 0, stolen = 0;
	size_t max_size = 0, max_cap = 0;
	struct weft_task *t;

	/* Frames are reused each round: the round's barrier orders the
	 * previous takers' reads before the next writes. */
	items_alloc(&s->it, per_round, n);
	stress_start(s, th, ta);
	for (uint64_t r = 0; r < rounds; r++) {
		uint64_t base = r * per_round, i = base;
		uint64_t end = base + per_round < n ? base + per_round : n;

		cr_assert_eq(deque_init(&s->d, 1), 0);
		store_relaxed(&s->round_done, 0);
		pthread_barrier_wait(&s->bar);
		while (i < end) {
			uint64_t x = rng_next(&seed), k;

			switch (x % 16) {
			case 0: /* burst of pushes */
				k = 1 + (x >> 8) % 4096;
				for (; k && i < end; k--, i++)
					cr_assert_eq(deque_push(&s->d,
						item_make(&s->it.frames[i - base], i)), 0);
				break;
			case 1: /* burst of pops */
				k = 1 + (x >> 8) % 4096;
				for (; k && (t = deque_pop(&s->d)); k--) {
					item_take(&s->it, t);
					owner_took++;
				}
				break;
			default: /* fine-grained mix, slightly push-heavy */
				if ((x >> 8) % 100 < 55) {
					cr_assert_eq(deque_push(&s->d,
						item_make(&s->it.frames[i - base], i)), 0);
					i++;
				} else if ((t = deque_pop(&s->d))) {
					item_take(&s->it, t);
					owner_took++;
				}
			}
			if (deque_size(&s->d) > max_size)
				max_size = deque_size(&s->d);
		}
		while ((t = deque_pop(&s->d))) {
			item_take(&s->it, t);
			owner_took++;
		}
		cr_assert_eq(deque_size(&s->d), 0);
		if (deque_capacity(&s->d) > max_cap)
			max_cap = deque_capacity(&s->d);
		/* Release pairs with the thieves' acquire of round_done. */
		store_release(&s->round_done, 1);
		pthread_barrier_wait(&s->bar);
		deque_fini(&s->d);
	}
	stress_stop(s, th);

	for (int i = 0; i < THIEVES; i++)
		stolen += s->stolen[i];
	cr_log_info("owner_vs_three_thieves: n=%lu owner %lu stolen %lu "
		    "(aborts %lu %lu %lu) max size %zu max capacity %zu",
		    (unsigned long)n, (unsigned long)owner_took, (unsigned long)stolen,
		    (unsigned long)s->aborts[0], (unsigned long)s->aborts[1],
		    (unsigned long)s->aborts[2], max_size, max_cap);
	items_check(&s->it);
	cr_assert_eq(owner_took + stolen, n);
	items_free(&s->it);
	return stolen;
}

Test(deque, owner_vs_three_thieves, .timeout = 240)
{
	/* A run where thieves never got anything tested nothing.  With few
	 * items (sanitizer builds) on 2 busy CPUs the owner can finish before
	 * a thief is scheduled at all (the ASan build's run once took 0.08 s
	 * and stole nothing): run again, with another mix, up to 10 times. */
	uint64_t stolen = 0;
	for (uint64_t attempt = 0; attempt < 10 && stolen == 0; attempt++)
		stolen = owner_vs_thieves_run(10000000 / test_scale(), 0x2545f4914f6cdd1dull + attempt);
	cr_assert_gt(stolen, 0, "the thieves took nothing in 10 runs");
}

/* The start of a race test: items, a deque of 2^log2 slots, the thieves
 * running, the round open. */
static void race_start(struct stress *s, pthread_t *th, struct thief_arg *ta, unsigned frames, uint64_t n,
		       unsigned log2)
{
	items_alloc(&s->it, frames, n);
	cr_assert_eq(deque_init(&s->d, log2), 0);
	stress_start(s, th, ta);
	store_relaxed(&s->round_done, 0);
	pthread_barrier_wait(&s->bar);
}

/* The end of a race test: stop the thieves, then every item was taken
 * exactly once, by the owner (owner_took) or a thief, and the thieves took
 * some (else the race was not run). */
static void race_finish(struct stress *s, pthread_t *th, const char *name, uint64_t n, uint64_t owner_took)
{
	uint64_t stolen = 0;

	store_release(&s->round_done, 1);
	pthread_barrier_wait(&s->bar);
	stress_stop(s, th);
	deque_fini(&s->d);
	for (int i = 0; i < THIEVES; i++)
		stolen += s->stolen[i];
	cr_log_info("%s: n=%lu owner %lu thieves %lu (aborts %lu %lu %lu)", name, (unsigned long)n,
		    (unsigned long)owner_took, (unsigned long)stolen, (unsigned long)s->aborts[0],
		    (unsigned long)s->aborts[1], (unsigned long)s->aborts[2]);
	items_check(&s->it);
	cr_assert_eq(owner_took + stolen, n);
	cr_assert_gt(stolen, 0, "%s: the thieves never took anything: nothing was tested", name);
	items_free(&s->it);
}

/* The one-item race: the owner pushes one item and pops it back while the
 * thieves, having asked for a split, try to steal it. */
Test(deque, one_item_race, .timeout = 240)
{
	const uint64_t n = 1000000 / test_scale();
	struct stress *s = &stress;
	struct thief_arg ta[THIEVES];
	pthread_t th[THIEVES];
	uint64_t seed = 0xda942042e4dd58b5ull, owner_won = 0;
	struct weft_task *t;

	race_start(s, th, ta, 1, n, 0);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t x = rng_next(&seed);

		/* Wait (boundedly: thieves may be descheduled on this busy
		 * 2-CPU machine) until a thief asks for work, so the push
		 * publishes the item at once and a thief is spinning on it. */
		for (int k = 0; !load_relaxed(&s->d.split_req) && k < 1000; k++) {
			if (k % 16 == 15)
				sched_yield();
			else
				cpu_relax();
		}
		cr_assert_eq(deque_push(&s->d, item_make(&s->it.frames[0], i)), 0);
		/* Vary the window so the race lands at different points;
		 * sometimes yield in it, so that a thief gets to run even when
		 * other load leaves all our threads on one CPU. */
		for (uint64_t k = x % 64; k; k--)
			cpu_relax();
		if ((x >> 8) % 8 == 0)
			sched_yield();
		t = deque_pop(&s->d);
		if (t) {
			item_take(&s->it, t);
			owner_won++;
		} else {
			/* Acquire pairs with the release in item_take: the
			 * thief is done with the frame we are about to reuse. */
			while (!load_acquire(&s->it.taken[i]))
				sched_yield();
		}
		cr_assert_eq(deque_size(&s->d), 0);
	}
	race_finish(s, th, "one_item_race", n, owner_won);
}

/* The range race: everything the owner pushes is made public at once, and
 * it pops it all back (the public pop: far from top without a CAS, near
 * top by CAS on the oldest) while thieves take ranges from the other end.
 * Batches of 1 to 40 items straddle DEQUE_STEAL_MAX. */
Test(deque, range_race, .timeout = 240)
{
	const uint64_t n = 2000000 / test_scale();
	struct stress *s = &stress;
	struct thief_arg ta[THIEVES];
	pthread_t th[THIEVES];
	uint64_t seed = 0x9fb21c651e98df25ull, owner_took = 0;
	struct weft_task *t;

	race_start(s, th, ta, 64, n, 3);
	for (uint64_t i = 0; i < n;) {
		uint64_t x = rng_next(&seed);
		uint64_t m = 1 + x % 40, first = i;

		for (; m && i < n; m--, i++)
			cr_assert_eq(deque_push(&s->d, item_make(&s->it.frames[i - first], i)), 0);
		deque_share_all(&s->d);
		for (uint64_t k = (x >> 8) % 64; k; k--)
			cpu_relax();
		if ((x >> 16) % 8 == 0)
			sched_yield();
		while ((t = deque_pop(&s->d))) {
			item_take(&s->it, t);
			owner_took++;
		}
		cr_assert_eq(deque_size(&s->d), 0);
		/* Acquire pairs with the release in item_take: the thieves are
		 * done with the frames before the next batch rewrites them. */
		for (uint64_t j = first; j < i; j++)
			while (!load_acquire(&s->it.taken[j]))
				sched_yield();
	}
	race_finish(s, th, "range_race", n, owner_took);
}
