/*
 * test_inject.c: the injection queue (runtime/inject.c).
 *
 * Covers the order promised in inject.h (strict FIFO with one thread, across
 * the ring/overflow boundary), exactly-once delivery with several producers
 * and consumers (with and without overflow), the batch bound, the parking
 * handshake of inject_nonempty_seq_cst, and prints throughput.
 *
 * WEFT_TEST_SCALE=n divides the item counts (use 20 under TSan); under TSan
 * the file carries its own runner (see below).  Worker threads never call
 * cr_assert (it cannot abort a test from another thread); they count
 * failures that the main thread then asserts on.
 */
#include "inject.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "crit.h"

/* The raw syscall because runtime/sched.h shadows the system <sched.h>
 * on the runtime include path. */
static void yield_cpu(void)
{
	syscall(SYS_sched_yield);
}

static unsigned long scaled(unsigned long n)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	unsigned long d = s ? strtoul(s, NULL, 10) : 1;
	if (d == 0)
		d = 1;
	return n / d ? n / d : 1;
}

static struct weft_inject_item mk(uint64_t v)
{
	struct weft_inject_item it = {
		.fn = NULL,
		.arg = (void *)(uintptr_t)(v * 3),
		.group = NULL,
		.aux = v,
	};
	return it;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spin a little, then yield: three threads share two CPUs in some tests. */
static void backoff(unsigned *spins)
{
	if (++*spins < 64)
		cpu_relax();
	else
		yield_cpu();
}

/* Fills 3x the ring and then drains it in odd-sized batches: the promised
 * single-thread order is exactly push order, ring part then overflow part. */
Test(inject, fifo_single_thread_with_overflow)
{
	struct weft_inject q;
	cr_assert_eq(inject_init(&q, 8), 0);
	const unsigned cap = 256, total = 3 * cap;

	cr_assert(!inject_maybe_nonempty(&q));
	cr_assert(!inject_nonempty_seq_cst(&q));
	for (unsigned i = 0; i < total; i++) {
		struct weft_inject_item it = mk(i);
		cr_assert_eq(inject_push(&q, &it), 0);
	}
	/* The ring took the first cap items, the rest overflowed. */
	cr_assert_eq(q.tail, cap);
	cr_assert_eq(q.overflow, total - cap);
	cr_assert(inject_maybe_nonempty(&q));
	cr_assert(inject_nonempty_seq_cst(&q));

	struct weft_inject_item out[7];
	unsigned next = 0, n;
	while ((n = inject_pop(&q, out, 7)) != 0) {
		cr_assert_leq(n, 7);
		for (unsigned i = 0; i < n; i++) {
			cr_assert_eq(out[i].aux, next, "got %lu, want %u",
				     (unsigned long)out[i].aux, next);
			cr_assert_eq(out[i].arg, (void *)(uintptr_t)(next * 3));
			next++;
		}
	}
	cr_assert_eq(next, total);
	cr_assert_eq(q.overflow, 0);
	cr_assert(!inject_maybe_nonempty(&q));
	cr_assert(!inject_nonempty_seq_cst(&q));

	/* Empty again: pushes use the ring, and a second round of overflow
	 * reuses the kept chunks in the same order. */
	for (unsigned round = 0; round < 2; round++) {
		for (unsigned i = 0; i < total; i++) {
			struct weft_inject_item it = mk(i);
			cr_assert_eq(inject_push(&q, &it), 0);
		}
		for (unsigned i = 0; i < total; i++) {
			cr_assert_eq(inject_pop(&q, out, 1), 1);
			cr_assert_eq(out[0].aux, i);
		}
		cr_assert_eq(inject_pop(&q, out, 7), 0);
	}
	inject_fini(&q);
}

/* Pushes use the ring whenever it has room, yet nothing overtakes the
 * overflowed items: ring items stamped after them wait. */
Test(inject, overflow_keeps_push_order)
{
	struct weft_inject q;
	cr_assert_eq(inject_init(&q, 4), 0);
	uint64_t v = 0;
	for (; v < 20; v++) {
		struct weft_inject_item it = mk(v);
		cr_assert_eq(inject_push(&q, &it), 0);
	}
	struct weft_inject_item out[32];
	cr_assert_eq(inject_pop(&q, out, 5), 5);
	for (unsigned i = 0; i < 5; i++)
		cr_assert_eq(out[i].aux, i);
	/* The ring has 5 free cells again: these go there, behind 16..19. */
	for (; v < 23; v++) {
		struct weft_inject_item it = mk(v);
		cr_assert_eq(inject_push(&q, &it), 0);
	}
	cr_assert_eq(q.tail, 19);
	cr_assert_eq(q.overflow, 4);
	/* One batch: ring 5..15, overflow 16..19, ring again 20..22. */
	cr_assert_eq(inject_pop(&q, out, 32), 18);
	for (unsigned i = 0; i < 18; i++)
		cr_assert_eq(out[i].aux, 5 + i, "slot %u: got %lu", i,
			     (unsigned long)out[i].aux);
	cr_assert_eq(q.overflow, 0);
	cr_assert_eq(inject_pop(&q, out, 32), 0);
	inject_fini(&q);
}

/* Random pushes and batch pops on one thread against a model FIFO, with a
 * 4-cell ring so that the ring and the overflow interleave constantly. */
Test(inject, random_single_thread_is_fifo)
{
	struct weft_inject q;
	cr_assert_eq(inject_init(&q, 2), 0);
	uint64_t pushed = 0, popped = 0, ov_seen = 0;
	unsigned rng = 12345;
	struct weft_inject_item out[16];
	for (unsigned long step = 0; step < scaled(200000); step++) {
		rng = rng * 1103515245u + 12345u;
		unsigned r = rng >> 16;
		/* Drift between growing and shrinking phases so the queue
		 * length sweeps from 0 to a few chunks. */
		bool grow = ((step >> 12) & 1) == 0;
		if (r % 8 < (grow ? 5u : 3u)) {
			unsigned k = 1 + r % 7;
			for (unsigned i = 0; i < k; i++) {
				struct weft_inject_item it = mk(pushed++);
				cr_assert_eq(inject_push(&q, &it), 0);
			}
		} else {
			unsigned max = 1 + (r >> 4) % 16;
			unsigned n = inject_pop(&q, out, max);
			uint64_t avail = pushed - popped;
			cr_assert_eq(n, avail < max ? avail : max);
			for (unsigned i = 0; i < n; i++)
				cr_assert_eq(out[i].aux, popped++, "step %lu", step);
		}
		ov_seen += q.overflow != 0;
	}
	while (popped < pushed) {
		unsigned n = inject_pop(&q, out, 16);
		cr_assert_gt(n, 0);
		for (unsigned i = 0; i < n; i++)
			cr_assert_eq(out[i].aux, popped++);
	}
	cr_assert_gt(ov_seen, 0);
	cr_assert(!inject_nonempty_seq_cst(&q));
	inject_fini(&q);
}

Test(inject, bad_size_rejected)
{
	struct weft_inject q;
	cr_assert_eq(inject_init(&q, 0), -EINVAL);
	cr_assert_eq(inject_init(&q, 29), -EINVAL);
	cr_assert_eq(inject_init(&q, 1), 0);
	inject_fini(&q);
}

/* max bounds the batch, out[max] and beyond are never written, max 0 takes
 * nothing. */
Test(inject, batch_pop_respects_max)
{
	struct weft_inject q;
	cr_assert_eq(inject_init(&q, 5), 0);
	for (uint64_t v = 0; v < 100; v++) {
		struct weft_inject_item it = mk(v);
		cr_assert_eq(inject_push(&q, &it), 0);
	}
	struct weft_inject_item out[40];
	cr_assert_eq(inject_pop(&q, out, 0), 0);
	uint64_t next = 0;
	for (unsigned max = 1; next < 100; max = max % 37 + 1) {
		for (unsigned i = max; i < 40; i++)
			out[i].aux = 0xdead;
		unsigned n = inject_pop(&q, out, max);
		cr_assert_gt(n, 0);
		cr_assert_leq(n, max);
		for (unsigned i = 0; i < n; i++)
			cr_assert_eq(out[i].aux, next++);
		for (unsigned i = max; i < 40; i++)
			cr_assert_eq(out[i].aux, 0xdead);
	}
	cr_assert_eq(inject_pop(&q, out, 40), 0);
	inject_fini(&q);
}

/* Exactly-once with several producers and consumers. */

struct mpmc {
	struct weft_inject q;
	unsigned producers;
	unsigned long per_producer;
	unsigned producers_done;
	uint8_t *seen;         /* index: producer * per_producer + i */
	unsigned long errors;  /* bad batch sizes, guards, payloads */
	unsigned long taken;
	unsigned long ov_pushes; /* pushes that found the overflow in use */
};

struct mpmc_arg {
	struct mpmc *m;
	unsigned id;
};

static void *mpmc_producer(void *p)
{
	struct mpmc_arg *a = p;
	struct mpmc *m = a->m;
	unsigned long ov = 0;
	for (unsigned long i = 0; i < m->per_producer; i++) {
		struct weft_inject_item it = mk((uint64_t)a->id * m->per_producer + i);
		if (load_relaxed(&m->q.overflow) != 0)
			ov++;
		if (inject_push(&m->q, &it) != 0)
			fetch_add_relaxed(&m->errors, 1);
	}
	fetch_add_relaxed(&m->ov_pushes, ov);
	/* Pairs with the load_acquire in mpmc_consumer: all our pushes are
	 * complete before a consumer trusts an empty pop as final. */
	fetch_add_release(&m->producers_done, 1);
	return NULL;
}

static void *mpmc_consumer(void *p)
{
	struct mpmc_arg *a = p;
	struct mpmc *m = a->m;
	struct weft_inject_item out[33];
	unsigned long total = m->producers * m->per_producer, taken = 0;
	unsigned max = 1 + a->id, spins = 0;
	for (;;) {
		out[max].aux = ~(uint64_t)0;
		unsigned n = inject_pop(&m->q, out, max);
		if (n > max || out[max].aux != ~(uint64_t)0)
			fetch_add_relaxed(&m->errors, 1);
		if (n == 0) {
			/* Pairs with the fetch_add_release in mpmc_producer. */
			if (load_acquire(&m->producers_done) == m->producers &&
			    (n = inject_pop(&m->q, out, max)) == 0)
				break;
			if (n == 0) {
				backoff(&spins);
				continue;
			}
		}
		spins = 0;
		for (unsigned i = 0; i < n; i++) {
			uint64_t v = out[i].aux;
			if (v >= total || out[i].arg != (void *)(uintptr_t)(v * 3)) {
				fetch_add_relaxed(&m->errors, 1);
				continue;
			}
			fetch_add_relaxed(&m->seen[v], 1);
		}
		taken += n;
		max = max % 32 + 1;
	}
	fetch_add_relaxed(&m->taken, taken);
	return NULL;
}

static void run_mpmc(unsigned log2_cells, unsigned producers, unsigned consumers,
		     unsigned long items, unsigned long *ov_pushes)
{
	struct mpmc m = { .producers = producers };
	cr_assert_eq(inject_init(&m.q, log2_cells), 0);
	m.per_producer = scaled(items) / producers;
	unsigned long total = m.per_producer * producers;
	m.seen = calloc(total, 1);
	cr_assert_not_null(m.seen);

	pthread_t th[8];
	struct mpmc_arg args[8];
	unsigned nth = producers + consumers;
	cr_assert_leq(nth, 8);
	for (unsigned i = 0; i < nth; i++) {
		args[i].m = &m;
		args[i].id = i < producers ? i : i - producers;
		cr_assert_eq(pthread_create(&th[i], NULL,
					    i < producers ? mpmc_producer : mpmc_consumer,
					    &args[i]), 0);
	}
	for (unsigned i = 0; i < nth; i++)
		pthread_join(th[i], NULL);

	cr_assert_eq(m.errors, 0);
	cr_assert_eq(m.taken, total);
	unsigned long bad = 0;
	for (unsigned long i = 0; i < total; i++)
		bad += m.seen[i] != 1;
	cr_assert_eq(bad, 0, "%lu of %lu items not seen exactly once", bad, total);
	cr_assert(!inject_nonempty_seq_cst(&m.q));
	free(m.seen);
	inject_fini(&m.q);
	*ov_pushes = m.ov_pushes;
}

Test(inject, mpmc_2p2c_exactly_once, .timeout = 120)
{
	unsigned long ov;
	run_mpmc(12, 2, 2, 4000000, &ov);
}

/* A 4-cell ring: most pushes overflow while consumers race between the ring
 * and the overflow. */
Test(inject, mpmc_overflow_exactly_once, .timeout = 120)
{
	unsigned long ov;
	run_mpmc(2, 2, 2, 1000000, &ov);
	cr_assert_gt(ov, 0, "the overflow path was never taken");
}

/* The parking handshake: a parker [seq_cst RMW on its state; then
 * inject_nonempty_seq_cst] against a submitter [inject_push; then a seq_cst
 * load of that state].  This is the store-buffering litmus test: in every
 * round at least one side must see the other.  On x86 the lock-prefixed
 * RMWs are full barriers whatever their C11 order, so there this mostly
 * checks that the right fields are published and read; on weaker machines it
 * checks the orders too.
 *
 * In the second variant the parker starts each round with a full ring which
 * it drains before announcing itself, so the submitter's item lands in the
 * overflow or the ring depending on the race, and both halves of
 * inject_nonempty_seq_cst are exercised. */

struct handshake {
	struct weft_inject q;
	uint32_t parked;
	unsigned arrived;
	unsigned generation;
	unsigned long rounds;
	unsigned long submitter_saw_parker;
};

/* A spinning two-thread barrier. */
static void hs_barrier(struct handshake *h)
{
	unsigned gen = load_relaxed(&h->generation);
	/* acq_rel: the last arriver acquires the other's writes before
	 * releasing both through the generation store. */
	if (fetch_add_acq_rel(&h->arrived, 1) == 1) {
		store_relaxed(&h->arrived, 0);
		/* Pairs with the load_acquire of the waiter below. */
		store_release(&h->generation, gen + 1);
		return;
	}
	unsigned spins = 0;
	/* Pairs with the store_release of the last arriver. */
	while (load_acquire(&h->generation) == gen)
		backoff(&spins);
}

static void *hs_submitter(void *p)
{
	struct handshake *h = p;
	for (unsigned long r = 0; r < h->rounds; r++) {
		hs_barrier(h);
		struct weft_inject_item it = mk(r);
		if (inject_push(&h->q, &it) != 0)
			abort();
		/* The submitter's half of the handshake: pairs with the
		 * parker's fetch_or_seq_cst. */
		if (load_seq_cst(&h->parked))
			h->submitter_saw_parker++;
		hs_barrier(h); /* both halves done */
		hs_barrier(h); /* the parker has reset the queue */
	}
	return NULL;
}

Test(inject, parking_handshake_never_misses, .timeout = 120)
{
	for (int prefill = 0; prefill < 2; prefill++) {
		struct handshake h = { .rounds = scaled(40000) };
		unsigned long parker_saw = 0, missed = 0, overflowed = 0;
		unsigned long sub_before = 0;
		cr_assert_eq(inject_init(&h.q, 2), 0);
		pthread_t th;
		cr_assert_eq(pthread_create(&th, NULL, hs_submitter, &h), 0);
		for (unsigned long r = 0; r < h.rounds; r++) {
			struct weft_inject_item out[8];
			if (prefill)
				for (uint64_t i = 0; i < 4; i++) {
					struct weft_inject_item it = mk(1000000 + i);
					cr_assert_eq(inject_push(&h.q, &it), 0);
				}
			hs_barrier(&h);
			if (prefill) {
				/* Ring first: exactly the four fill items. */
				cr_assert_eq(inject_pop(&h.q, out, 4), 4);
				cr_assert_eq(out[3].aux, 1000003);
			}
			/* The parker's half: pairs with the submitter's
			 * load_seq_cst of `parked`. */
			fetch_or_seq_cst(&h.parked, 1);
			bool saw = inject_nonempty_seq_cst(&h.q);
			hs_barrier(&h);
			/* The barrier made the submitter's count visible. */
			bool sub_saw = h.submitter_saw_parker != sub_before;
			sub_before = h.submitter_saw_parker;
			parker_saw += saw;
			missed += !saw && !sub_saw;
			overflowed += h.q.overflow != 0;
			cr_assert_eq(inject_pop(&h.q, out, 8), 1);
			cr_assert_eq(out[0].aux, r);
			store_relaxed(&h.parked, 0);
			hs_barrier(&h);
		}
		pthread_join(th, NULL);
		cr_assert_eq(missed, 0, "%lu of %lu rounds lost the wakeup",
			     missed, h.rounds);
		fprintf(stderr, "handshake (%s): %lu rounds, parker saw the item "
			"in %lu, submitter saw the parker in %lu, item in the "
			"overflow in %lu\n", prefill ? "prefilled" : "empty",
			h.rounds, parker_saw, h.submitter_saw_parker, overflowed);
		if (prefill)
			cr_assert_gt(overflowed, 0, "the overflow path was never raced");
		inject_fini(&h.q);
	}
}

/* Throughput: one producer pushing one item at a time, consumers popping
 * batches of 32.  Checks count and sum so that the numbers printed are for a
 * run that delivered everything. */

struct bench {
	struct weft_inject q;
	unsigned long items;
	unsigned producer_done;
	unsigned long count, sum;
};

static void *bench_producer(void *p)
{
	struct bench *b = p;
	for (unsigned long i = 0; i < b->items; i++) {
		struct weft_inject_item it = mk(i);
		inject_push(&b->q, &it);
	}
	/* Pairs with the load_acquire in bench_consumer. */
	store_release(&b->producer_done, 1);
	return NULL;
}

static void *bench_consumer(void *p)
{
	struct bench *b = p;
	struct weft_inject_item out[32];
	unsigned long count = 0, sum = 0;
	unsigned spins = 0;
	for (;;) {
		unsigned n = inject_pop(&b->q, out, 32);
		if (n == 0) {
			/* Pairs with the store_release in bench_producer. */
			if (load_acquire(&b->producer_done) &&
			    (n = inject_pop(&b->q, out, 32)) == 0)
				break;
			if (n == 0) {
				backoff(&spins);
				continue;
			}
		}
		spins = 0;
		for (unsigned i = 0; i < n; i++)
			sum += out[i].aux;
		count += n;
	}
	fetch_add_relaxed(&b->count, count);
	fetch_add_relaxed(&b->sum, sum);
	return NULL;
}

static double bench_run(unsigned consumers)
{
	struct bench b = { .items = scaled(10000000) };
	cr_assert_eq(inject_init(&b.q, 12), 0);
	pthread_t prod, cons[2];
	uint64_t t0 = now_ns();
	for (unsigned i = 0; i < consumers; i++)
		cr_assert_eq(pthread_create(&cons[i], NULL, bench_consumer, &b), 0);
	cr_assert_eq(pthread_create(&prod, NULL, bench_producer, &b), 0);
	pthread_join(prod, NULL);
	for (unsigned i = 0; i < consumers; i++)
		pthread_join(cons[i], NULL);
	uint64_t t1 = now_ns();
	cr_assert_eq(b.count, b.items);
	cr_assert_eq(b.sum, b.items * (b.items - 1) / 2);
	inject_fini(&b.q);
	return (double)b.items * 1e9 / (double)(t1 - t0);
}

Test(inject, throughput_1p1c_1p2c, .timeout = 120)
{
	for (unsigned c = 1; c <= 2; c++) {
		double r = bench_run(c);
		fprintf(stderr, "inject throughput: 1 producer, %u consumer%s, "
			"batch 32: %.1f M items/s\n", c, c > 1 ? "s" : "", r / 1e6);
	}
}
