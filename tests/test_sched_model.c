/*
 * test_sched_model.c: the scheduler core (runtime/sched_core.c), single-threaded.
 *
 * Directed tests for the semantics (R/R share, R/W and W/W exclude, merge,
 * bad inputs), the seed's scenario, the starvation cases the issue names
 * (a writer behind re-acquiring readers, a 4-component request against
 * four cycling writers, "first set bit" with recycled ids), cancel and
 * growth; then 1M random operations (divided by WEFT_TEST_SCALE) checked
 * after every step against the reference model of sched_model.h.
 */
#include "testutil.h"

#define MODEL_FAIL(...) cr_assert(0, __VA_ARGS__)
#include "sched_model.h"

enum { A = 0, B = 1, C = 2, D = 3 };
#define R WEFT_READ
#define W WEFT_WRITE

/* Grants reported by release/cancel. */
struct rec {
	uint32_t ids[4096];
	uint32_t n;
};

static void rec_cb(void *ctx, uint32_t id)
{
	struct rec *r = ctx;

	cr_assert_lt(r->n, 4096);
	r->ids[r->n++] = id;
}

static struct sched *mk(uint32_t ncomp, uint32_t max_bypass, bool strict)
{
	struct sched *s = NULL;

	cr_assert_eq(sched_create(&s, ncomp, max_bypass, strict), 0);
	return s;
}

static int alloc1(struct sched *s, uint32_t c, uint32_t a)
{
	struct weft_dep d = { c, a };
	int id = sched_req_alloc(s, &d, 1, NULL);

	cr_assert_geq(id, 0);
	return id;
}

/* Allocate and try: the id if granted, -1 (slot freed) if busy. */
static int try1(struct sched *s, uint32_t c, uint32_t a)
{
	int id = alloc1(s, c, a), r = sched_try_grant(s, (uint32_t)id);

	if (r == 0)
		return id;
	cr_assert_eq(r, -EBUSY);
	cr_assert_eq(sched_req_free(s, (uint32_t)id), 0);
	return -1;
}

/* Allocate and enqueue; *granted says whether it was granted at once. */
static int enq(struct sched *s, const struct weft_dep *deps, size_t n, bool *granted)
{
	int id = sched_req_alloc(s, deps, n, NULL), r;

	cr_assert_geq(id, 0);
	r = sched_enqueue(s, (uint32_t)id);
	cr_assert(r == 0 || r == 1, "enqueue: %d", r);
	if (granted)
		*granted = r == 0;
	return id;
}

static int enq1(struct sched *s, uint32_t c, uint32_t a, bool *granted)
{
	struct weft_dep d = { c, a };

	return enq(s, &d, 1, granted);
}

static enum sched_state state_of(struct sched *s, int id)
{
	struct sched_req_info info;

	cr_assert_eq(sched_req_info(s, (uint32_t)id, &info), 0);
	return info.state;
}

static struct sched_req_info info_of(struct sched *s, int id)
{
	struct sched_req_info info;

	cr_assert_eq(sched_req_info(s, (uint32_t)id, &info), 0);
	return info;
}

static int release(struct sched *s, int id, struct rec *rec)
{
	if (rec)
		rec->n = 0;
	return sched_release_req(s, (uint32_t)id, rec ? rec_cb : NULL, rec);
}

Test(sched, read_read_share_read_write_and_write_write_exclude)
{
	struct sched *s = mk(4, 16, false);
	int r1 = try1(s, A, R), r2 = try1(s, A, R), w;

	cr_assert_geq(r1, 0);
	cr_assert_geq(r2, 0);
	cr_assert_eq(try1(s, A, W), -1, "a writer must not join readers");
	cr_assert_geq(try1(s, B, W), 0, "another component is independent");
	cr_assert_eq(release(s, r1, NULL), 0);
	cr_assert_eq(try1(s, A, W), -1);
	cr_assert_eq(release(s, r2, NULL), 0);
	w = try1(s, A, W);
	cr_assert_geq(w, 0);
	cr_assert_eq(try1(s, A, W), -1, "two writers");
	cr_assert_eq(try1(s, A, R), -1, "a reader must not join a writer");
	sched_destroy(s);
}

Test(sched, merge_sorts_and_write_wins)
{
	struct weft_dep in[] = { { 2, R }, { 0, W }, { 2, W }, { 1, R }, { 0, R }, { 1, R } }, out[WEFT_MAX_DEPS];
	struct sched *s = mk(4, 16, false);
	const struct weft_dep *got;
	size_t n;
	int id;

	cr_assert_eq(sched_merge_deps(in, 6, 4, out), 3);
	cr_assert(out[0].comp == 0 && out[0].access == W);
	cr_assert(out[1].comp == 1 && out[1].access == R);
	cr_assert(out[2].comp == 2 && out[2].access == W);
	id = sched_req_alloc(s, in, 6, (void *)s);
	got = sched_req_deps(s, (uint32_t)id, &n);
	cr_assert_eq(n, 3);
	cr_assert_eq(memcmp(got, out, 3 * sizeof(*out)), 0);
	cr_assert_eq(sched_req_user(s, (uint32_t)id), (void *)s);
	/* The merged request excludes a reader of component 0. */
	cr_assert_eq(sched_try_grant(s, (uint32_t)id), 0);
	cr_assert_eq(try1(s, 0, R), -1);
	cr_assert_geq(try1(s, 1, R), 0);
	/* No deps: granted at once, by try and by enqueue. */
	id = sched_req_alloc(s, NULL, 0, NULL);
	cr_assert_eq(sched_try_grant(s, (uint32_t)id), 0);
	id = sched_req_alloc(s, NULL, 0, NULL);
	cr_assert_eq(sched_enqueue(s, (uint32_t)id), 0);
	sched_destroy(s);
}

Test(sched, bad_inputs_change_nothing)
{
	struct sched *s = mk(4, 16, false), *t = NULL;
	struct weft_dep big[WEFT_MAX_DEPS + 1], bad_comp = { 4, R }, bad_acc = { 1, 3 }, zero_acc = { 1, 0 };
	struct sched_stats st;
	int id;

	cr_assert_eq(sched_create(&t, 0, 16, false), -EINVAL);
	cr_assert_eq(sched_req_alloc(s, NULL, 1, NULL), -EINVAL);
	cr_assert_eq(sched_req_alloc(s, &bad_comp, 1, NULL), -EINVAL);
	cr_assert_eq(sched_req_alloc(s, &bad_acc, 1, NULL), -EINVAL);
	cr_assert_eq(sched_req_alloc(s, &zero_acc, 1, NULL), -EINVAL);
	for (int i = 0; i <= WEFT_MAX_DEPS; i++) {
		big[i].comp = (uint32_t)i % 4;
		big[i].access = R;
	}
	cr_assert_eq(sched_req_alloc(s, big, WEFT_MAX_DEPS + 1, NULL), -E2BIG);
	/* Exactly the maximum is fine (and merges to 4 deps). */
	id = sched_req_alloc(s, big, WEFT_MAX_DEPS, NULL);
	cr_assert_geq(id, 0);
	cr_assert_eq(sched_enqueue(s, (uint32_t)id), 0);
	/* Unknown ids, and a granted request is neither enqueued nor cancelled. */
	cr_assert_eq(sched_try_grant(s, 9999), -EINVAL);
	cr_assert_eq(sched_enqueue(s, 63), -EINVAL);
	cr_assert_eq(sched_enqueue(s, (uint32_t)id), -EINVAL);
	cr_assert_eq(sched_cancel(s, (uint32_t)id, NULL, NULL), -EINVAL);
	/* Releasing something not held, or unsorted deps. */
	struct weft_dep w0 = { 0, W }, unsorted[2] = { { 1, R }, { 0, R } };
	cr_assert_eq(sched_release(s, &w0, 1, NULL, NULL), -EINVAL);
	cr_assert_eq(sched_release(s, unsorted, 2, NULL, NULL), -EINVAL);
	sched_get_stats(s, &st);
	cr_assert_eq(st.grants, 1);
	cr_assert_eq(release(s, id, NULL), 0);
	cr_assert_eq(release(s, id, NULL), -EINVAL, "a freed request cannot be released again");
	sched_destroy(s);
}

/*
 * The seed's scenario: 3, 4, 5 hold A, B, C; {A,B} and {A,C} wait; A is
 * released, then B while C stays held: {A,B} must be granted right at B's
 * release and {A,C} not.  Both arrival orders, both access modes.
 */
static void seed_scenario(bool ab_first, uint32_t mode)
{
	struct sched *s = mk(3, 16, false);
	struct weft_dep ab[2] = { { A, mode }, { B, W } }, ac[2] = { { A, mode }, { C, W } };
	struct rec rec;
	int h3 = try1(s, A, W), h4 = try1(s, B, W), h5 = try1(s, C, W), p_ab, p_ac;
	bool g;

	cr_assert(h3 >= 0 && h4 >= 0 && h5 >= 0);
	if (ab_first) {
		p_ab = enq(s, ab, 2, &g);
		cr_assert_not(g);
		p_ac = enq(s, ac, 2, &g);
	} else {
		p_ac = enq(s, ac, 2, &g);
		cr_assert_not(g);
		p_ab = enq(s, ab, 2, &g);
	}
	cr_assert_not(g);
	cr_assert_eq(release(s, h3, &rec), 0, "A alone lets nobody in");
	cr_assert_eq(state_of(s, p_ab), SCHED_REQ_WAITING);
	cr_assert_eq(state_of(s, p_ac), SCHED_REQ_WAITING);
	cr_assert_eq(release(s, h4, &rec), 1);
	cr_assert_eq(rec.ids[0], (uint32_t)p_ab, "{A,B} must be granted at B's release");
	cr_assert_eq(state_of(s, p_ac), SCHED_REQ_WAITING);
	cr_assert_eq(release(s, h5, &rec), mode == R ? 1 : 0, "{A,C} shares A only if both read it");
	cr_assert_eq(release(s, p_ab, &rec), mode == R ? 0 : 1);
	cr_assert_eq(state_of(s, p_ac), SCHED_REQ_GRANTED);
	sched_destroy(s);
}

Test(sched, seed_scenario)
{
	seed_scenario(true, W);
	seed_scenario(false, W);
	seed_scenario(true, R);
	seed_scenario(false, R);
}

/*
 * A writer behind readers that keep re-acquiring: each step one reader
 * leaves and a new one arrives.  The writer is overtaken exactly
 * max_bypass times, then the newcomers queue behind it, and it is granted
 * when the readers already in drain.
 */
static void writer_behind_readers(uint32_t budget, bool strict, bool newcomers_try)
{
	struct sched *s = mk(2, budget, strict);
	struct rec rec;
	int held[256], nheld = 0, queued = 0, w, overtakes = 0;
	uint32_t expect = strict ? 0 : budget;
	bool g;

	held[nheld++] = try1(s, A, R);
	held[nheld++] = try1(s, A, R);
	w = enq1(s, A, W, &g);
	cr_assert_not(g);
	for (int step = 0; step < 200 && state_of(s, w) == SCHED_REQ_WAITING; step++) {
		int id;

		if (newcomers_try) {
			id = try1(s, A, R);
		} else {
			id = enq1(s, A, R, &g);
			if (!g) {
				queued++;
				id = -1;
			}
		}
		if (id >= 0) {
			held[nheld++] = id;
			overtakes++;
		}
		/* The oldest reader leaves. */
		cr_assert_geq(release(s, held[0], &rec), 0);
		memmove(held, held + 1, (size_t)--nheld * sizeof(*held));
		if (state_of(s, w) == SCHED_REQ_GRANTED) {
			cr_assert_eq(nheld, 0, "granted only when every reader has left");
			cr_assert_eq(rec.n, 1);
			cr_assert_eq(rec.ids[0], (uint32_t)w);
		}
	}
	cr_assert_eq(state_of(s, w), SCHED_REQ_GRANTED, "the writer starved");
	cr_assert_eq((uint32_t)overtakes, expect, "overtaken %d times, budget %u", overtakes, expect);
	struct sched_stats st;
	sched_get_stats(s, &st);
	cr_assert_eq(st.max_bypassed, expect);
	/* Strict order reserves every waiter: the writer and the queued. */
	cr_assert_eq(st.reservations, strict ? 1 + (uint64_t)queued : 1);
	/* The readers that queued behind it all go in at its release. */
	cr_assert_eq(release(s, w, &rec), queued);
	sched_destroy(s);
}

Test(sched, writer_behind_rereading_readers)
{
	writer_behind_readers(16, false, true);
	writer_behind_readers(16, false, false);
	writer_behind_readers(3, false, true);
	writer_behind_readers(1, false, false);
	writer_behind_readers(16, true, true);
	writer_behind_readers(16, true, false);
}

/*
 * A request for 4 components while each is cycled by its own writer: each
 * round, every component's holder leaves and a new writer for it arrives.
 * X is overtaken at most max_bypass times and then granted.
 */
static void four_cycled(uint32_t budget, bool strict)
{
	struct sched *s = mk(4, budget, strict);
	struct weft_dep all[4] = { { A, W }, { B, W }, { C, W }, { D, W } };
	int holder[4], queue[4][128], nq[4] = { 0 }, x, rounds = 0;
	struct rec rec;
	bool g;

	for (int i = 0; i < 4; i++)
		holder[i] = try1(s, (uint32_t)i, W);
	x = enq(s, all, 4, &g);
	cr_assert_not(g);
	while (state_of(s, x) == SCHED_REQ_WAITING) {
		cr_assert_lt(++rounds, 100, "X still waits after 100 rounds");
		for (int i = 0; i < 4; i++) {
			bool x_was_waiting = state_of(s, x) == SCHED_REQ_WAITING;
			int id;

			if (holder[i] < 0)
				continue;
			cr_assert_geq(release(s, holder[i], &rec), 0);
			holder[i] = -1;
			for (uint32_t k = 0; k < rec.n; k++) {
				int q = 0;

				if (rec.ids[k] == (uint32_t)x)
					continue;
				/* One queued writer of component i went in. */
				while (q < nq[i] && queue[i][q] != (int)rec.ids[k])
					q++;
				cr_assert(q < nq[i] && holder[i] < 0, "granted %u, not a queued writer of %d", rec.ids[k], i);
				holder[i] = queue[i][q];
				memmove(&queue[i][q], &queue[i][q + 1], (size_t)(--nq[i] - q) * sizeof(int));
			}
			if (!x_was_waiting || state_of(s, x) != SCHED_REQ_WAITING)
				continue;
			id = enq1(s, (uint32_t)i, W, &g);
			if (g)
				holder[i] = id;
			else
				queue[i][nq[i]++] = id;
		}
	}
	struct sched_req_info info = info_of(s, x);
	struct sched_stats st;
	sched_get_stats(s, &st);
	cr_assert_leq(st.max_bypassed, strict ? 0 : budget);
	cr_assert_eq(info.state, SCHED_REQ_GRANTED);
	sched_destroy(s);
}

Test(sched, four_components_each_cycled_by_a_writer)
{
	four_cycled(16, false);
	four_cycled(2, false);
	four_cycled(0, false);
	four_cycled(16, true);
}

/*
 * The seed's "first set bit" with recycled ids: X gets the table's last
 * id, then every round a newcomer for the same component gets a lower,
 * recycled one (the allocation cursor has wrapped).  Lowest-id-first would
 * grant the newcomer every time.  Here X, the oldest waiter, is granted at
 * the first release, even with a budget too large to matter: waiters at a
 * freed component are examined in arrival order.
 */
static void recycled_ids(uint32_t budget, bool strict)
{
	struct sched *s = mk(2, budget, strict);
	int dummy[64], ndummy = 0, holder, x, y;
	struct rec rec;
	bool g;

	holder = try1(s, A, W);
	/* Fill the table up to its last slot but one (sched_req_info fails
	 * past the end), so that X gets the highest id. */
	for (;;) {
		struct sched_req_info info;
		int id = alloc1(s, B, R);

		cr_assert_lt(ndummy, 64);
		dummy[ndummy++] = id;
		if (sched_req_info(s, (uint32_t)id + 2, &info) != 0)
			break;
	}
	x = enq1(s, A, W, &g);
	cr_assert_not(g);
	cr_assert_eq(sched_req_info(s, (uint32_t)x + 1, &(struct sched_req_info){ 0 }), -EINVAL, "X has the last id");
	for (int i = 0; i < ndummy; i++)
		sched_req_free(s, (uint32_t)dummy[i]);
	y = enq1(s, A, W, &g);
	cr_assert_not(g);
	cr_assert_lt(y, x, "the newcomer gets a lower, recycled id");
	cr_assert_eq(release(s, holder, &rec), 1);
	cr_assert_eq(rec.ids[0], (uint32_t)x, "the oldest waiter goes first, whatever its id");
	cr_assert_eq(release(s, x, &rec), 1);
	cr_assert_eq(rec.ids[0], (uint32_t)y);
	cr_assert_eq(release(s, y, &rec), 0);
	sched_destroy(s);
}

Test(sched, first_set_bit_with_recycled_ids)
{
	recycled_ids(1000, false);
	recycled_ids(1, false);
	recycled_ids(16, true);
}

Test(sched, cancel_lifts_a_reservation)
{
	struct sched *s = mk(2, 16, true);
	struct rec rec = { .n = 0 };
	int r1 = try1(s, A, R), w, r2, r3;
	bool g;

	w = enq1(s, A, W, &g);
	cr_assert_not(g);
	cr_assert(info_of(s, w).reserved, "strict order reserves at once");
	cr_assert_eq(try1(s, A, R), -1, "strict order: no reader passes the waiting writer");
	r2 = enq1(s, A, R, &g);
	cr_assert_not(g);
	r3 = enq1(s, A, R, &g);
	cr_assert_not(g);
	cr_assert_eq(sched_cancel(s, (uint32_t)w, rec_cb, &rec), 2);
	cr_assert_eq(state_of(s, r2), SCHED_REQ_GRANTED);
	cr_assert_eq(state_of(s, r3), SCHED_REQ_GRANTED);
	cr_assert_eq(state_of(s, w), SCHED_REQ_IDLE);
	cr_assert_eq(sched_cancel(s, (uint32_t)w, NULL, NULL), -EINVAL);
	cr_assert_eq(sched_req_free(s, (uint32_t)w), 0);
	cr_assert_eq(release(s, r1, NULL), 0);
	sched_destroy(s);
}

Test(sched, drain_waiters_at_shutdown)
{
	struct sched *s = mk(2, 16, false);
	int h = try1(s, A, W), n = 0, id;
	struct sched_stats st;

	for (int i = 0; i < 10; i++)
		enq1(s, i % 2 ? A : B, W, NULL);
	cr_assert_eq(sched_nwaiting(s), 9, "all A writers and all B writers but the first wait");
	while ((id = sched_first_waiter(s)) >= 0) {
		cr_assert_eq(sched_cancel(s, (uint32_t)id, NULL, NULL), 0);
		cr_assert_eq(sched_req_free(s, (uint32_t)id), 0);
		n++;
	}
	cr_assert_eq(n, 9);
	sched_get_stats(s, &st);
	cr_assert_eq(st.cancelled, 9);
	cr_assert_eq(release(s, h, NULL), 0);
	sched_destroy(s);
}

/* Slots grow past the initial 64; one release grants all 1000 readers. */
Test(sched, thousand_readers_behind_a_writer)
{
	struct sched *s = mk(2, 16, false);
	static int rd[1000];
	struct rec rec;
	int w = try1(s, A, W), w2;
	bool g;

	for (int i = 0; i < 1000; i++) {
		rd[i] = enq1(s, A, R, &g);
		cr_assert_not(g);
	}
	w2 = enq1(s, A, W, &g);
	cr_assert_eq(release(s, w, &rec), 1000);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(state_of(s, rd[i]), SCHED_REQ_GRANTED);
	/* w2 goes in exactly at the last reader's release. */
	for (int i = 0; i < 1000; i++) {
		cr_assert_eq(release(s, rd[i], &rec), i == 999 ? 1 : 0);
		cr_assert_eq(state_of(s, w2), i == 999 ? SCHED_REQ_GRANTED : SCHED_REQ_WAITING);
	}
	sched_destroy(s);
}

/*
 * The cost claims, counted: a request blocked elsewhere is not looked at
 * again when a component it is not parked on frees, and n writers queued
 * on one component cost O(1) examinations per release, not O(n).
 */
Test(sched, examinations_per_parked_request)
{
	struct sched *s = mk(3, 1000, false);
	struct weft_dep ab[2] = { { A, W }, { B, W } };
	struct sched_stats st;
	struct rec rec;
	int hb = try1(s, B, W), ha = try1(s, A, W), x, h;
	bool g;

	x = enq(s, ab, 2, &g);
	cr_assert_not(g);
	/* A cycles 1000 times while B stays held: x is looked at once, when A
	 * first frees, and then sleeps on B. */
	for (int i = 0; i < 1000; i++) {
		int next = enq1(s, A, W, &g);

		cr_assert_not(g);
		cr_assert_eq(release(s, ha, &rec), 1);
		cr_assert_eq(rec.ids[0], (uint32_t)next);
		ha = next;
	}
	sched_get_stats(s, &st);
	cr_assert_leq(st.examined, 1000 + 1, "examined %llu", (unsigned long long)st.examined);
	cr_assert_eq(state_of(s, x), SCHED_REQ_WAITING);
	cr_assert_eq(release(s, hb, &rec), 0, "A is still held");
	cr_assert_eq(release(s, ha, &rec), 1);
	cr_assert_eq(rec.ids[0], (uint32_t)x);
	cr_assert_eq(release(s, x, &rec), 0);
	sched_destroy(s);

	/* 10000 writers on C: each release grants one and looks at one. */
	s = mk(3, 1000, false);
	h = try1(s, C, W);
	for (int i = 0; i < 10000; i++) {
		enq1(s, C, W, &g);
		cr_assert_not(g);
	}
	for (int i = 0; i < 10000; i++) {
		cr_assert_eq(release(s, h, &rec), 1);
		h = (int)rec.ids[0];
	}
	cr_assert_eq(release(s, h, &rec), 0);
	sched_get_stats(s, &st);
	cr_assert_eq(st.examined, 10000, "examined %llu", (unsigned long long)st.examined);
	sched_destroy(s);
}

/* ---- the random model test ---- */

static uint64_t rng_state;

/* splitmix64. */
static uint64_t splitmix(uint64_t *st)
{
	uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rnd(void)
{
	return splitmix(&rng_state);
}

static uint32_t rnd_below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

/* Random deps: mostly 1-3, some wide ones with duplicates, a few invalid. */
static size_t gen_deps(struct weft_dep *deps, uint32_t ncomp)
{
	uint32_t r = rnd_below(1000);
	size_t n = r < 30 ? 0 : r < 900 ? 1 + rnd_below(3) : 4 + rnd_below(6);
	uint32_t hot = ncomp < 3 ? ncomp : 3;

	for (size_t i = 0; i < n; i++) {
		deps[i].comp = rnd_below(2) ? rnd_below(hot) : rnd_below(ncomp);
		deps[i].access = rnd_below(10) < 6 ? WEFT_READ : WEFT_WRITE;
	}
	if (n >= 2 && rnd_below(4) == 0)
		deps[n - 1].comp = deps[0].comp;
	if (rnd_below(500) == 0) {
		if (n == 0)
			n = 1;
		if (rnd_below(2))
			deps[0].comp = ncomp;
		else
			deps[0].access = 3;
	}
	return n;
}

static void model_run(uint32_t ncomp, uint32_t budget, bool strict, uint32_t max_live, long nops, uint64_t seed)
{
	struct driver d;
	struct weft_dep deps[WEFT_MAX_DEPS];
	uint64_t granted_total = 0;
	int id;

	rng_state = seed;
	driver_init(&d, ncomp, budget, strict);
	for (long step = 0; step < nops; step++) {
		uint32_t op = rnd_below(100);

		if (d.nlive >= max_live)
			op = 50 + rnd_below(50);
		if (op < 30) {
			driver_acquire(&d, deps, gen_deps(deps, ncomp), false);
		} else if (op < 45) {
			driver_acquire(&d, deps, gen_deps(deps, ncomp), true);
		} else if (op < 47) {
			driver_bad_calls(&d, rnd_below(1u << 20));
		} else if (op < 90) {
			id = driver_pick(&d, SCHED_REQ_GRANTED, rnd_below(1u << 20));
			if (id >= 0) {
				driver_release(&d, (uint32_t)id);
				granted_total++;
			}
		} else if (op < 96) {
			/* Half the cancelled requests are kept, to be asked
			 * again: an old arrival number must not let them pass
			 * a younger reservation. */
			id = driver_pick(&d, SCHED_REQ_WAITING, rnd_below(1u << 20));
			if (id >= 0)
				driver_cancel(&d, (uint32_t)id, rnd_below(2));
		} else {
			id = driver_pick(&d, SCHED_REQ_IDLE, rnd_below(1u << 20));
			if (id >= 0 && rnd_below(4) == 0)
				driver_free_idle(&d, (uint32_t)id);
			else if (id >= 0)
				driver_ask(&d, (uint32_t)id, rnd_below(2), false);
		}
		driver_check(&d);
	}
	/* Drain: releasing everything must grant every waiter in the end. */
	driver_drain(&d);
	cr_assert_eq(d.nlive, 0, "waiters left with nothing held");
	cr_assert_geq(granted_total, (uint64_t)nops / 8, "the run must mostly grant");
	driver_fini(&d);
}

/* Budgets 1 and 2: reservations all the time. */
Test(sched_model, tight_budget, .timeout = 600)
{
	model_run(3, 1, false, 12, scaled(200000), 11);
	model_run(6, 2, false, 24, scaled(200000), 12);
}

/* The default budget: reservations rare, arrival order does the picking.
 * The last run keeps up to 150 requests live, past the table's first 64
 * slots: growth and the allocation cursor after it. */
Test(sched_model, default_budget, .timeout = 600)
{
	model_run(8, 16, false, 40, scaled(200000), 13);
	model_run(64, 3, false, 40, scaled(100000), 14);
	model_run(16, 16, false, 150, scaled(100000), 17);
}

/* Strict order (and budget 0, which is the same rule). */
Test(sched_model, strict_order, .timeout = 600)
{
	model_run(5, 16, true, 24, scaled(200000), 15);
	model_run(4, 0, false, 24, scaled(100000), 16);
}

/*
 * The policy under the skewed ECS load, simulated: 2 workers, 64
 * components picked Zipf s = 1, 1-4 per task, READ with p = 0.7, at most
 * 1024 requests in flight, each made in submission order by whichever
 * worker is free.  As in weft, what a release grants goes on the releasing
 * worker's deque: its owner pops the newest, the other worker steals the
 * oldest, and a worker with nothing queued makes the next request.  A task
 * takes one time unit, except some that hold their components longer: a
 * worker preempted while it holds them, as the bench's third thread (the
 * submitter) does to the workers ~1300 times a run.  Deterministic.
 *
 * With the default budget of 16 and preemption-like holds (1% of the
 * tasks, 1-101 units), the rule until session 8 (a reservation held back
 * older waiters too, and waiters were picked by a rotor in id order) got
 * 72% of the requests reserved and took 23% longer than no budget; now
 * 17% are reserved and it takes 14% longer (what the bound costs here:
 * with a budget of 64 it takes no longer than with none).  With shorter
 * holds (5%, 1-31 units) it went from 50% reserved and 12% longer to
 * under 1% and no longer.  The same reservation counts were seen in the
 * bench's W=1us zipf row: 69-71% before, 16% after.
 */
#define SIM_TASKS 200000u
#define SIM_WINDOW 1024u

struct sim_task {
	struct weft_dep d[4];
	uint32_t n;
	double len;
};

/* A worker's deque of granted request ids. */
struct sim_deque {
	uint32_t *ids;
	size_t top, bottom;
};

static void sim_grant(void *ctx, uint32_t id)
{
	struct sim_deque *q = ctx;

	q->ids[q->bottom++] = id;
}

static double sim_unit(uint64_t *st)
{
	return (double)(splitmix(st) >> 11) * 0x1p-53;
}

/* p_long of the tasks hold for 1 + len_long * U(0, 1) units. */
static void sim_make(struct sim_task *t, uint32_t ntasks, double p_long, double len_long)
{
	double cdf[64], h = 0;
	uint64_t st = 42;

	for (int k = 0; k < 64; k++)
		h += 1.0 / (k + 1);
	for (int k = 0; k < 64; k++)
		cdf[k] = (k ? cdf[k - 1] : 0) + 1.0 / (k + 1) / h;
	for (uint32_t i = 0; i < ntasks; i++) {
		uint64_t used = 0;

		t[i].n = 1 + (uint32_t)(sim_unit(&st) * 4);
		for (uint32_t j = 0; j < t[i].n; j++) {
			uint32_t c;

			do {
				double u = sim_unit(&st);

				for (c = 0; c < 63 && u >= cdf[c]; c++)
					;
			} while (used >> c & 1);
			used |= 1ull << c;
			t[i].d[j].comp = c;
			t[i].d[j].access = sim_unit(&st) < 0.7 ? WEFT_READ : WEFT_WRITE;
		}
		t[i].len = sim_unit(&st) < p_long ? 1 + len_long * sim_unit(&st) : 1;
	}
}

struct sim_result {
	double makespan;
	uint64_t reservations;
};

static struct sim_result simulate(const struct sim_task *t, uint32_t ntasks, uint32_t budget)
{
	struct sim_deque dq[2] = { { calloc(ntasks, sizeof(uint32_t)), 0, 0 },
				   { calloc(ntasks, sizeof(uint32_t)), 0, 0 } };
	struct sched *s = mk(64, budget, false);
	double end[2] = { 0, 0 }, now = 0;
	int running[2] = { -1, -1 };
	uint32_t next = 0, done = 0;
	struct sched_stats st;

	cr_assert(dq[0].ids && dq[1].ids);
	while (done < ntasks) {
		int w = end[1] < end[0], other = !w, run = -1;

		if (end[w] > now)
			now = end[w];
		if (running[w] >= 0) {
			cr_assert_geq(sched_release_req(s, (uint32_t)running[w], sim_grant, &dq[w]), 0);
			running[w] = -1;
			done++;
		}
		if (dq[w].bottom > dq[w].top) {
			run = (int)dq[w].ids[--dq[w].bottom];
		} else if (dq[other].bottom > dq[other].top) {
			run = (int)dq[other].ids[dq[other].top++];
		} else {
			while (run < 0 && next < ntasks && next - done < SIM_WINDOW) {
				const struct sim_task *x = &t[next];
				int id = sched_req_alloc(s, x->d, x->n, (void *)(uintptr_t)(next + 1));

				next++;
				cr_assert_geq(id, 0);
				if (sched_enqueue(s, (uint32_t)id) == 0)
					run = id;
			}
		}
		if (run >= 0) {
			uintptr_t i = (uintptr_t)sched_req_user(s, (uint32_t)run) - 1;

			running[w] = run;
			end[w] = now + t[i].len;
		} else if (running[other] >= 0) {
			/* Idle until the other worker's task ends. */
			end[w] = end[other] + 1e-9;
		} else {
			cr_assert_eq(done, ntasks, "nothing runs, %u tasks left: a waiter was lost", ntasks - done);
		}
	}
	sched_get_stats(s, &st);
	sched_destroy(s);
	free(dq[0].ids);
	free(dq[1].ids);
	return (struct sim_result){ now, st.reservations };
}

/* The budget of 16 against none on one task list: at most max_reserved of
 * the requests reserved, and at most `slower` more time. */
static void skewed_run(double p_long, double len_long, double max_reserved, double slower)
{
	struct sim_task *t = malloc(SIM_TASKS * sizeof(*t));
	struct sim_result budget, none;
	double reserved;

	cr_assert(t);
	sim_make(t, SIM_TASKS, p_long, len_long);
	budget = simulate(t, SIM_TASKS, 16);
	none = simulate(t, SIM_TASKS, UINT32_MAX);
	reserved = (double)budget.reservations / SIM_TASKS;
	cr_log_info("holds %.0f%% x 1-%.0f: makespan %.0f with the budget of 16, %.0f with none; %.2f%% reserved",
		    100 * p_long, 1 + len_long, budget.makespan, none.makespan, 100 * reserved);
	cr_expect_leq(reserved, max_reserved, "%.1f%% of the requests reserved: reservations cascade", 100 * reserved);
	cr_expect_leq(budget.makespan, (1 + slower) * none.makespan, "the budget costs %.1f%% of throughput",
		      100.0 * (budget.makespan / none.makespan - 1));
	free(t);
}

Test(sched_model, skewed_load_does_not_cascade, .timeout = 600)
{
	skewed_run(0.05, 30, 0.02, 0.03);
	skewed_run(0.01, 100, 0.25, 0.17);
}
