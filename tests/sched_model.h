/*
 * sched_model.h: a reference model of the scheduler core (runtime/sched_core.h)
 * and a driver that applies each operation to both and compares them after
 * every step.  Shared by test_sched_model.c (seeded PRNG) and fuzz_sched.c
 * (libFuzzer bytes).
 *
 * The model is plain arrays and linear scans: holders per component, and
 * per request id its state, deps, arrival, bypass count and reserved flag.
 * It does not choose whom a release grants (that is the scheduler's
 * policy); it checks that each grant the scheduler reports, in the order
 * reported, was allowed at that moment, applies it (bypass counts and
 * reservations included), and then that nothing grantable is left waiting.
 * Everything else (try results, enqueue results, bypass counts, reserved
 * flags, arrival numbers, holders, stats) must match exactly.
 *
 * The fairness rule, as the model states it (sched_core.h):
 *   - blocked(r) iff some dep of r conflicts with a holder, or some
 *     reserved waiting v wants one of r's components in a conflicting
 *     mode and arrived before r;
 *   - granting x adds one to the bypass count of every waiting v that
 *     arrived before x and conflicts with x; v becomes reserved when its
 *     count reaches the budget (budget 0: reserved as soon as it waits).
 *
 * The includer defines MODEL_FAIL(fmt, ...), which must not return.
 */
#ifndef WEFT_TEST_SCHED_MODEL_H
#define WEFT_TEST_SCHED_MODEL_H

#include "sched_core.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_MAX_IDS 256
#define MODEL_MAX_COMPS 64

struct mreq {
	enum sched_state state;
	uint64_t arrival;
	uint32_t bypass;
	bool reserved;
	uint32_t n;
	struct weft_dep deps[WEFT_MAX_DEPS];
};

struct model {
	uint32_t ncomp, budget;
	uint32_t nids; /* ids seen so far are below this: scans stop there */
	uint64_t seq;
	uint32_t readers[MODEL_MAX_COMPS];
	uint32_t writer[MODEL_MAX_COMPS];
	struct mreq req[MODEL_MAX_IDS];
	struct sched_stats stats;
	/* Scratch for blocked(): per component and mode, whether a reserved
	 * waiter wants it and the oldest such arrival. */
	bool has_res[MODEL_MAX_COMPS][3];
	uint64_t min_res[MODEL_MAX_COMPS][3];
};

/* Access of r at component c: 0, WEFT_READ or WEFT_WRITE. */
static inline uint32_t model_mode_at(const struct mreq *r, uint32_t c)
{
	for (uint32_t i = 0; i < r->n; i++)
		if (r->deps[i].comp == c)
			return r->deps[i].access;
	return 0;
}

static inline bool model_conflict(const struct mreq *a, const struct mreq *b)
{
	for (uint32_t i = 0; i < a->n; i++) {
		uint32_t mb = model_mode_at(b, a->deps[i].comp);

		if (mb && (mb == WEFT_WRITE || a->deps[i].access == WEFT_WRITE))
			return true;
	}
	return false;
}

/* The model's own merge: one slot per component, then in component order. */
static inline int model_merge(const struct weft_dep *deps, size_t n, uint32_t ncomp, struct weft_dep *out)
{
	uint32_t want[MODEL_MAX_COMPS] = { 0 };
	int k = 0;

	if (n && !deps)
		return -EINVAL;
	if (n > WEFT_MAX_DEPS)
		return -E2BIG;
	for (size_t i = 0; i < n; i++) {
		if (deps[i].comp >= ncomp || (deps[i].access != WEFT_READ && deps[i].access != WEFT_WRITE))
			return -EINVAL;
		if (deps[i].access > want[deps[i].comp])
			want[deps[i].comp] = deps[i].access;
	}
	for (uint32_t c = 0; c < ncomp; c++) {
		if (want[c]) {
			out[k].comp = c;
			out[k].access = want[c];
			k++;
		}
	}
	return k;
}

static inline void model_scan_reservations(struct model *m)
{
	memset(m->has_res, 0, sizeof(m->has_res));
	for (uint32_t id = 0; id < m->nids; id++) {
		const struct mreq *v = &m->req[id];

		if (v->state != SCHED_REQ_WAITING || !v->reserved)
			continue;
		for (uint32_t i = 0; i < v->n; i++) {
			uint32_t c = v->deps[i].comp, a = v->deps[i].access;

			if (!m->has_res[c][a] || v->arrival < m->min_res[c][a])
				m->min_res[c][a] = v->arrival;
			m->has_res[c][a] = true;
		}
	}
}

/* After model_scan_reservations.  Only strictly older reservations count
 * (so r's own never does); a request not numbered yet (arrival 0) is
 * younger than all. */
static inline bool model_res_blocks(const struct model *m, const struct mreq *r, uint32_t c, uint32_t a)
{
	return m->has_res[c][a] && (!r->arrival || m->min_res[c][a] < r->arrival);
}

static inline bool model_blocked(const struct model *m, const struct mreq *r)
{
	for (uint32_t i = 0; i < r->n; i++) {
		uint32_t c = r->deps[i].comp, a = r->deps[i].access;

		if (m->writer[c] || (a == WEFT_WRITE && m->readers[c]))
			return true;
		if (model_res_blocks(m, r, c, WEFT_WRITE))
			return true;
		if (a == WEFT_WRITE && model_res_blocks(m, r, c, WEFT_READ))
			return true;
	}
	return false;
}

static inline void model_grant(struct model *m, uint32_t xid)
{
	struct mreq *x = &m->req[xid];

	for (uint32_t id = 0; id < m->nids; id++) {
		struct mreq *v = &m->req[id];

		if (id == xid || v->state != SCHED_REQ_WAITING || v->arrival > x->arrival || !model_conflict(x, v))
			continue;
		v->bypass++;
		if (v->bypass > m->stats.max_bypassed)
			m->stats.max_bypassed = v->bypass;
		if (v->bypass >= m->budget && !v->reserved) {
			v->reserved = true;
			m->stats.reservations++;
		}
	}
	for (uint32_t i = 0; i < x->n; i++) {
		if (x->deps[i].access == WEFT_WRITE)
			m->writer[x->deps[i].comp]++;
		else
			m->readers[x->deps[i].comp]++;
	}
	x->state = SCHED_REQ_GRANTED;
	x->reserved = false;
	m->stats.grants++;
}

/* ---- the driver ---- */

struct driver {
	struct sched *s;
	struct model *m;
	uint32_t got[MODEL_MAX_IDS]; /* grants reported during one call */
	uint32_t ngot;
	uint32_t live[MODEL_MAX_IDS]; /* ids WAITING, GRANTED or IDLE (cancelled, kept) */
	uint32_t nlive;
};

static inline void driver_init(struct driver *d, uint32_t ncomp, uint32_t max_bypass, bool strict)
{
	int r;

	memset(d, 0, sizeof(*d));
	if (ncomp == 0 || ncomp > MODEL_MAX_COMPS)
		MODEL_FAIL("bad model config: %u components", ncomp);
	r = sched_create(&d->s, ncomp, max_bypass, strict);
	if (r)
		MODEL_FAIL("sched_create: %d", r);
	d->m = calloc(1, sizeof(*d->m));
	if (!d->m)
		MODEL_FAIL("out of memory");
	d->m->ncomp = ncomp;
	d->m->budget = strict ? 0 : max_bypass;
}

static inline void driver_fini(struct driver *d)
{
	sched_destroy(d->s);
	free(d->m);
}

static inline void driver_on_grant(void *ctx, uint32_t id)
{
	struct driver *d = ctx;

	if (d->ngot == MODEL_MAX_IDS)
		MODEL_FAIL("more grants reported than requests exist");
	d->got[d->ngot++] = id;
}

static inline void driver_forget(struct driver *d, uint32_t id)
{
	for (uint32_t i = 0; i < d->nlive; i++) {
		if (d->live[i] == id) {
			d->live[i] = d->live[--d->nlive];
			return;
		}
	}
	MODEL_FAIL("id %u is not live", id);
}

/* Replay the grants the scheduler reported, each checked when it happened. */
static inline void driver_replay_grants(struct driver *d, int ret)
{
	struct model *m = d->m;

	if (ret != (int)d->ngot)
		MODEL_FAIL("returned %d grants, reported %u", ret, d->ngot);
	for (uint32_t k = 0; k < d->ngot; k++) {
		uint32_t id = d->got[k];

		if (id >= MODEL_MAX_IDS || m->req[id].state != SCHED_REQ_WAITING)
			MODEL_FAIL("granted id %u is not waiting", id);
		model_scan_reservations(m);
		if (model_blocked(m, &m->req[id]))
			MODEL_FAIL("granted id %u while it is blocked (grant %u of %u)", id, k + 1, d->ngot);
		model_grant(m, id);
	}
	d->ngot = 0;
}

/*
 * One request: try_grant (try_only) or enqueue.  deps may be invalid; the
 * scheduler must then refuse exactly as the model does.  Returns the id,
 * or -1 when nothing is live afterwards.
 */
static inline bool driver_ask(struct driver *d, uint32_t id, bool try_only, bool free_busy);

static inline int driver_acquire(struct driver *d, const struct weft_dep *deps, size_t n, bool try_only)
{
	struct model *m = d->m;
	struct weft_dep merged[WEFT_MAX_DEPS];
	int mn = model_merge(deps, n, m->ncomp, merged);
	int id = sched_req_alloc(d->s, deps, n, (void *)(uintptr_t)0x5eed);
	const struct weft_dep *got;
	struct mreq *r;
	size_t gn;

	if (mn < 0 || id < 0) {
		if (id != mn)
			MODEL_FAIL("req_alloc returned %d, model %d", id, mn);
		return -1;
	}
	if (id >= MODEL_MAX_IDS || m->req[id].state != SCHED_REQ_FREE)
		MODEL_FAIL("req_alloc gave id %d, which is in use or too large", id);
	got = sched_req_deps(d->s, (uint32_t)id, &gn);
	if ((int)gn != mn || (mn && memcmp(got, merged, (size_t)mn * sizeof(*merged))))
		MODEL_FAIL("merged deps differ (%zu vs %d)", gn, mn);
	if (sched_req_user(d->s, (uint32_t)id) != (void *)(uintptr_t)0x5eed)
		MODEL_FAIL("user pointer lost");
	if ((uint32_t)id >= m->nids)
		m->nids = (uint32_t)id + 1;
	r = &m->req[id];
	memset(r, 0, sizeof(*r));
	r->state = SCHED_REQ_IDLE;
	r->n = (uint32_t)mn;
	memcpy(r->deps, merged, (size_t)mn * sizeof(*merged));
	d->live[d->nlive++] = (uint32_t)id;
	return driver_ask(d, (uint32_t)id, try_only, true) ? id : -1;
}

/*
 * Ask IDLE request id (new, or cancelled and kept): try_grant (try_only) or
 * enqueue, against the model.  A refused try frees the slot when free_busy
 * (the way weft_try_acquire uses it), else keeps it IDLE.  Returns whether
 * the id is still live.
 */
static inline bool driver_ask(struct driver *d, uint32_t id, bool try_only, bool free_busy)
{
	struct model *m = d->m;
	struct mreq *r = &m->req[id];
	bool blocked;
	int ret;

	if (r->state != SCHED_REQ_IDLE)
		MODEL_FAIL("driver: ask of id %u, not idle", id);
	/* Not numbered until granted or queued: younger than everything. */
	r->arrival = 0;
	r->bypass = 0;
	model_scan_reservations(m);
	blocked = model_blocked(m, r);
	if (try_only) {
		ret = sched_try_grant(d->s, id);
		if (ret != (blocked ? -EBUSY : 0))
			MODEL_FAIL("try_grant(%u) = %d, model says %s", id, ret, blocked ? "blocked" : "grantable");
		if (blocked) {
			if (!free_busy)
				return true;
			if (sched_req_free(d->s, id))
				MODEL_FAIL("req_free of an idle request failed");
			r->state = SCHED_REQ_FREE;
			driver_forget(d, id);
			return false;
		}
		r->arrival = ++m->seq;
		model_grant(m, id);
		return true;
	}
	ret = sched_enqueue(d->s, id);
	if (ret != (blocked ? 1 : 0))
		MODEL_FAIL("enqueue(%u) = %d, model says %s", id, ret, blocked ? "blocked" : "grantable");
	r->arrival = ++m->seq;
	if (!blocked) {
		model_grant(m, id);
	} else {
		r->state = SCHED_REQ_WAITING;
		m->stats.waits++;
		if (m->budget == 0) {
			r->reserved = true;
			m->stats.reservations++;
		}
	}
	return true;
}

/* Free IDLE request id (a cancelled one that was kept). */
static inline void driver_free_idle(struct driver *d, uint32_t id)
{
	if (d->m->req[id].state != SCHED_REQ_IDLE)
		MODEL_FAIL("driver: free of id %u, not idle", id);
	if (sched_req_free(d->s, id))
		MODEL_FAIL("req_free of an idle request failed");
	d->m->req[id].state = SCHED_REQ_FREE;
	driver_forget(d, id);
}

static inline void driver_release(struct driver *d, uint32_t id)
{
	struct model *m = d->m;
	struct mreq *x = &m->req[id];
	int ret;

	if (x->state != SCHED_REQ_GRANTED)
		MODEL_FAIL("driver: release of id %u, not granted", id);
	ret = sched_release_req(d->s, id, driver_on_grant, d);
	for (uint32_t i = 0; i < x->n; i++) {
		if (x->deps[i].access == WEFT_WRITE)
			m->writer[x->deps[i].comp]--;
		else
			m->readers[x->deps[i].comp]--;
	}
	x->state = SCHED_REQ_FREE;
	driver_forget(d, id);
	driver_replay_grants(d, ret);
}

/* Cancel WAITING request id; keep: leave it IDLE (to ask again or free
 * later), else free it. */
static inline void driver_cancel(struct driver *d, uint32_t id, bool keep)
{
	struct model *m = d->m;
	struct mreq *r = &m->req[id];
	int ret;

	if (r->state != SCHED_REQ_WAITING)
		MODEL_FAIL("driver: cancel of id %u, not waiting", id);
	ret = sched_cancel(d->s, id, driver_on_grant, d);
	m->stats.cancelled++;
	r->reserved = false;
	r->arrival = 0;
	r->bypass = 0;
	if (keep && ret >= 0) {
		r->state = SCHED_REQ_IDLE;
	} else {
		if (ret >= 0 && sched_req_free(d->s, id))
			MODEL_FAIL("req_free after cancel failed");
		r->state = SCHED_REQ_FREE;
		driver_forget(d, id);
	}
	driver_replay_grants(d, ret);
}

/* Calls that must fail and change nothing (checked by the next driver_check). */
static inline void driver_bad_calls(struct driver *d, uint32_t pick)
{
	struct weft_dep dep;
	uint32_t c = pick % d->m->ncomp;

	/* Releasing what is not held. */
	dep.comp = c;
	dep.access = WEFT_WRITE;
	if (!d->m->writer[c] && sched_release(d->s, &dep, 1, driver_on_grant, d) != -EINVAL)
		MODEL_FAIL("release of unheld write on %u accepted", c);
	dep.access = WEFT_READ;
	if (!d->m->readers[c] && sched_release(d->s, &dep, 1, driver_on_grant, d) != -EINVAL)
		MODEL_FAIL("release of unheld read on %u accepted", c);
	dep.comp = d->m->ncomp;
	if (sched_release(d->s, &dep, 1, driver_on_grant, d) != -EINVAL)
		MODEL_FAIL("release of an out-of-range component accepted");
	/* Waiting and granted requests are neither tried, enqueued nor freed. */
	if (d->nlive && d->m->req[d->live[pick % d->nlive]].state != SCHED_REQ_IDLE) {
		uint32_t id = d->live[pick % d->nlive];

		if (sched_try_grant(d->s, id) != -EINVAL || sched_enqueue(d->s, id) != -EINVAL)
			MODEL_FAIL("try/enqueue of a live request %u accepted", id);
		if (d->m->req[id].state == SCHED_REQ_WAITING && sched_req_free(d->s, id) != -EINVAL)
			MODEL_FAIL("free of a waiting request accepted");
		if (d->m->req[id].state == SCHED_REQ_GRANTED && sched_cancel(d->s, id, driver_on_grant, d) != -EINVAL)
			MODEL_FAIL("cancel of a granted request accepted");
	}
	if (d->ngot)
		MODEL_FAIL("a refused call reported grants");
}

/* Everything the model knows must match; safety, liveness and the bypass
 * bound are checked on the model itself. */
static inline void driver_check(struct driver *d)
{
	struct model *m = d->m;
	uint32_t readers[MODEL_MAX_COMPS] = { 0 }, writers[MODEL_MAX_COMPS] = { 0 }, nwaiting = 0;
	int first_waiter = -1;
	struct sched_stats st;

	char why[160];

	if (sched_check(d->s, why, sizeof why) != 0)
		MODEL_FAIL("scheduler invariant: %s", why);
	model_scan_reservations(m);
	/* Ids past nids were never handed out: the scheduler's must be free
	 * too (checked up to a margin). */
	for (uint32_t id = 0; id < m->nids + 8 && id < MODEL_MAX_IDS; id++) {
		const struct mreq *r = &m->req[id];
		struct sched_req_info info;

		if (sched_req_info(d->s, id, &info) < 0)
			info.state = SCHED_REQ_FREE;
		if (info.state != r->state)
			MODEL_FAIL("id %u: state %d, model %d", id, info.state, r->state);
		if (r->state == SCHED_REQ_FREE)
			continue;
		if (info.arrival != r->arrival)
			MODEL_FAIL("id %u: arrival %llu, model %llu", id, (unsigned long long)info.arrival,
				   (unsigned long long)r->arrival);
		if (r->state == SCHED_REQ_IDLE) {
			if (info.bypass != 0 || info.reserved)
				MODEL_FAIL("idle id %u: bypass %u reserved %d", id, info.bypass, info.reserved);
			continue;
		}
		if (r->state == SCHED_REQ_GRANTED) {
			for (uint32_t i = 0; i < r->n; i++) {
				if (r->deps[i].access == WEFT_WRITE)
					writers[r->deps[i].comp]++;
				else
					readers[r->deps[i].comp]++;
			}
			continue;
		}
		/* WAITING */
		nwaiting++;
		if (first_waiter < 0)
			first_waiter = (int)id;
		if (info.bypass != r->bypass || info.reserved != r->reserved)
			MODEL_FAIL("id %u: bypass %u reserved %d, model %u %d", id, info.bypass, info.reserved, r->bypass,
				   r->reserved);
		if (r->bypass > m->budget)
			MODEL_FAIL("id %u overtaken %u times, budget %u", id, r->bypass, m->budget);
		if (!model_blocked(m, r))
			MODEL_FAIL("id %u waits but could be granted", id);
	}
	for (uint32_t c = 0; c < m->ncomp; c++) {
		uint32_t rd;
		bool wr;

		if (writers[c] > 1 || (writers[c] && readers[c]))
			MODEL_FAIL("component %u: %u writers and %u readers hold it", c, writers[c], readers[c]);
		if (readers[c] != m->readers[c] || writers[c] != m->writer[c])
			MODEL_FAIL("component %u: model holder counts drifted", c);
		sched_comp_holders(d->s, c, &rd, &wr);
		if (rd != readers[c] || wr != (writers[c] == 1))
			MODEL_FAIL("component %u: holders %u/%d, expected %u/%u", c, rd, wr, readers[c], writers[c]);
	}
	if (sched_nwaiting(d->s) != nwaiting || sched_first_waiter(d->s) != first_waiter)
		MODEL_FAIL("waiting count %u / first %d, expected %u / %d", sched_nwaiting(d->s), sched_first_waiter(d->s),
			   nwaiting, first_waiter);
	sched_get_stats(d->s, &st);
	if (st.grants != m->stats.grants || st.waits != m->stats.waits || st.cancelled != m->stats.cancelled ||
	    st.reservations != m->stats.reservations || st.max_bypassed != m->stats.max_bypassed)
		MODEL_FAIL("stats differ: grants %llu/%llu waits %llu/%llu reservations %llu/%llu max_bypassed %llu/%llu",
			   (unsigned long long)st.grants, (unsigned long long)m->stats.grants,
			   (unsigned long long)st.waits, (unsigned long long)m->stats.waits,
			   (unsigned long long)st.reservations, (unsigned long long)m->stats.reservations,
			   (unsigned long long)st.max_bypassed, (unsigned long long)m->stats.max_bypassed);
}

/* A live id in the given state chosen by pick, or -1. */
static inline int driver_pick(const struct driver *d, enum sched_state state, uint32_t pick)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < d->nlive; i++)
		n += d->m->req[d->live[i]].state == state;
	if (!n)
		return -1;
	pick %= n;
	for (uint32_t i = 0; i < d->nlive; i++)
		if (d->m->req[d->live[i]].state == state && pick-- == 0)
			return (int)d->live[i];
	return -1;
}

/* Free the kept IDLE requests and release every grant, checking after
 * each step; what is still live afterwards waits with nothing held. */
static inline void driver_drain(struct driver *d)
{
	for (;;) {
		int id = driver_pick(d, SCHED_REQ_IDLE, 0);

		if (id >= 0) {
			driver_free_idle(d, (uint32_t)id);
			continue;
		}
		id = driver_pick(d, SCHED_REQ_GRANTED, 0);
		if (id < 0)
			break;
		driver_release(d, (uint32_t)id);
		driver_check(d);
	}
}

#endif
