/*
 * sched_core.c: the component scheduler's decision core (API and fairness rule
 * in sched_core.h).  Single-threaded: acquire.c serialises every call.
 *
 * Overview
 *
 * Per component: reader count, writer flag, and for each mode (READ,
 * WRITE) two intrusive lists in arrival order -- every waiting request
 * that wants the component in that mode, and the reserved ones among them
 * -- plus, once anyone has waited on it, a bitset per mode of the waiting
 * requests *parked* on it.  Globally: a bitset of waiting requests and one
 * of reserved requests.  Bitsets are indexed by request id.
 *
 * Parking.  Every waiting request is parked on exactly one of its
 * components, one that blocks it right now (a conflicting holder, or a
 * reservation that holds it back).  Only an event on that component can
 * unblock it there: the component becoming free (its writer or its last
 * reader leaves) or a reservation on it being lifted (a reserved request
 * cancelled).  So a release looks only at the requests parked on the
 * components it freed -- the bitsets of those components, ANDed with NOT
 * the reserved set -- and never at requests waiting on anything else.
 * Each request it examines is either granted or re-parked on the
 * component that now blocks it.  Why that is the right place to look: a
 * request that waits for A and B, with B held for a long time, is looked at
 * once when A frees, then sleeps on B; A may be released a thousand times
 * more without it being looked at again.  (The seed's per-component
 * "without dependency" sets would find it again at every release of A.)
 *
 * Order of examination at one freed component: reserved readers oldest
 * first, then the non-reserved requests (only those older than any
 * reservation that holds their mode back there), then the oldest reserved
 * writer.  Among the non-reserved: readers first or the writer first by
 * which mode's oldest waiter is older, and within a mode in id order,
 * starting at the id of that mode's oldest waiter and wrapping around.
 * Slots are handed out by a cursor that goes round the table (the next
 * free id after the last one given), so id order from there is arrival
 * order, except where the cursor stepped over a slot still in use; never
 * "lowest id first", which with recycled ids starves high ids.  Why arrival order matters: every grant of a younger waiter
 * over an older conflicting one counts against the older one's budget.
 * With the per-component rotor this replaced, a skewed load whose holders
 * were sometimes slow (a worker preempted while holding the hot component)
 * used up budgets in bursts; the reservations spread to every component
 * their requests named, and 50-90% of the requests waited behind them
 * (see the policy test sched_model::skewed_load_does_not_cascade).
 *
 * Invariants
 *  - I1 (parking): a WAITING request is parked on one component where it
 *    is blocked: conflicting holder, or a reservation under the rule below.
 *  - I2 (work conservation): after every public call, no WAITING request
 *    could be granted.  Follows from I1: every event that could unblock a
 *    parked request is processed before the call returns, grants only add
 *    holders, and a reserved request granted holds what it reserved in the
 *    mode that blocked others.
 *  - I3 (fairness): a reserved request blocks, at its components, every
 *    conflicting request that arrived after it, reserved or not.  So the
 *    oldest reserved request is blocked only by holders; waiters older
 *    than itself (there when it arrived, a set that only shrinks) may be
 *    granted before it, and no younger conflicting request can be granted
 *    at its components while it waits: they drain, it is granted.  Every other waiter is
 *    overtaken at most max_bypass times before it is reserved itself, so
 *    no request waits forever while holders release.  Older waiters pass
 *    a reservation: granting them is not an overtake (they came first).
 *    Until session 8 a reservation held back every request that was not
 *    reserved, older ones too; under a skewed load those were overtaken
 *    while they waited, got reserved in turn at all their components, and
 *    the reservations spread until most requests waited (the policy test
 *    sched_model::skewed_load_does_not_cascade: 50% reserved and 12% more
 *    time than with no budget; now under 1% and the same time).
 *  - I4: a request is in the reserved lists and set iff it is WAITING and
 *    reserved; in the wait lists and waiting set iff WAITING.
 *
 * Cost
 *  - try_grant, or a grant without waiters: O(deps).  Enqueue: O(deps x
 *    layers).  Release: O(deps) to give back, plus for each freed component
 *    with parked requests O(layers) to find them and per examined request
 *    O(its deps) to check it and O(deps x layers) to grant or re-park it.
 *    The walk stops at a component as soon as it is write-held.
 *  - Bypass counting walks the wait lists from their oldest entry and stops
 *    at the first request younger than the grantee: every entry it passes
 *    is an overtaken request (a reserved one would have blocked the grant),
 *    so the walk is paid for by bypass counts, at most max_bypass per
 *    request and entry.
 *  - Reserved readers at a component that wait elsewhere are stepped over
 *    when the component frees; they are few (only requests that used up
 *    their budget, or everybody with strict_order, where conflicting
 *    requests are serialised anyway).
 *  - While a reservation holds a mode back at a freed component, the
 *    requests older than it are found by walking the wait list up to it
 *    (phase_before_reservation), which also steps over those among them
 *    that are parked elsewhere, at every such event.  Why that is paid
 *    for: the component freed because a holder left, and every holder
 *    younger than an entry stepped over overtook it when it was granted
 *    (a conflicting grant younger than a waiter), so an entry is stepped
 *    over at most about max_bypass times, plus once per holder older than
 *    itself.  These steps are not in stats.examined.
 */
#include "sched_core.h"

#include "bitset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M_READ 0u
#define M_WRITE 1u
#define INITIAL_SLOTS 64u
#define MIN_DEPCAP 4u

/* A list node is (request id, dep index) + 1: ids < 2^24, deps < 64, and 0
 * is "no node".  So a component that nobody waits at is all zeros, and the
 * table of components can come from calloc untouched: with the largest
 * table (2^24 components) only the pages of components in use are ever
 * written. */
#define NIL 0u
#define NODE(id, i) ((((id) << 6) | (i)) + 1)
#define NODE_ID(node) (((node) - 1) >> 6)
#define NODE_DEP(node) (((node) - 1) & 63u)

/* Links of one dep of a request: its wait list and its reserved list. */
struct slink {
	uint32_t prev, next;
	uint32_t rprev, rnext;
};

struct sreq {
	uint64_t arrival;
	uint64_t stamp; /* arrival of the last grant that counted it overtaken */
	void *user;
	struct slink *link;
	struct weft_dep *deps;
	uint32_t n, depcap;
	uint32_t bypass;
	uint32_t parked; /* component it is parked on, while WAITING */
	uint8_t state, reserved, park_mode;
};

struct scomp {
	uint32_t readers;
	uint32_t writer;
	uint32_t nparked[2];
	uint32_t nfree_waiting[2]; /* waiting here in that mode, not reserved */
	uint32_t wait_head[2], wait_tail[2];
	uint32_t res_head[2], res_tail[2];
	struct bitset *parked; /* [2] by mode; NULL until someone waits here */
};

struct sched {
	struct scomp *comp;
	struct sreq *req;
	struct bitset waiting, reserved;
	struct bitset free; /* slots not in use; allocation goes round from cursor */
	uint32_t *set_comps; /* components whose parked sets exist */
	uint32_t nset_comps;
	uint64_t seq;
	uint32_t ncomp, cap, budget, cursor, nwaiting;
	struct sched_stats stats;
};

/* What a release or cancel reports grants to. */
struct grants {
	sched_grant_fn fn;
	void *ctx;
	int count;
};

enum event { EV_FROM_WRITE, EV_FROM_READ, EV_LIFT };

static inline uint32_t mode_of(uint32_t access)
{
	return access == WEFT_WRITE ? M_WRITE : M_READ;
}

static inline struct slink *node_link(const struct sched *s, uint32_t node)
{
	return &s->req[NODE_ID(node)].link[NODE_DEP(node)];
}

static inline uint64_t node_arrival(const struct sched *s, uint32_t node)
{
	return s->req[NODE_ID(node)].arrival;
}

/* ---- lists ---- */

static void wait_append(struct sched *s, uint32_t c, uint32_t m, uint32_t node)
{
	struct scomp *k = &s->comp[c];
	struct slink *l = node_link(s, node);

	/* Arrival numbers grow, and a request joins at its arrival: the tail
	 * is always the youngest, so appending keeps the order. */
	l->prev = k->wait_tail[m];
	l->next = NIL;
	if (l->prev == NIL)
		k->wait_head[m] = node;
	else
		node_link(s, l->prev)->next = node;
	k->wait_tail[m] = node;
	k->nfree_waiting[m]++;
}

static void wait_remove(struct sched *s, uint32_t c, uint32_t m, uint32_t node)
{
	struct scomp *k = &s->comp[c];
	struct slink *l = node_link(s, node);

	if (l->prev == NIL)
		k->wait_head[m] = l->next;
	else
		node_link(s, l->prev)->next = l->next;
	if (l->next == NIL)
		k->wait_tail[m] = l->prev;
	else
		node_link(s, l->next)->prev = l->prev;
	k->nfree_waiting[m]--;
}

static void res_insert(struct sched *s, uint32_t c, uint32_t m, uint32_t node)
{
	struct scomp *k = &s->comp[c];
	struct slink *l = node_link(s, node);
	uint64_t a = node_arrival(s, node);
	uint32_t after = k->res_tail[m];

	/* Reservations come in budget order, not arrival order: walk back
	 * over the younger ones (few: only requests that used up a budget). */
	while (after != NIL && node_arrival(s, after) > a)
		after = node_link(s, after)->rprev;
	l->rprev = after;
	if (after == NIL) {
		l->rnext = k->res_head[m];
		k->res_head[m] = node;
	} else {
		l->rnext = node_link(s, after)->rnext;
		node_link(s, after)->rnext = node;
	}
	if (l->rnext == NIL)
		k->res_tail[m] = node;
	else
		node_link(s, l->rnext)->rprev = node;
	k->nfree_waiting[m]--;
}

static void res_remove(struct sched *s, uint32_t c, uint32_t m, uint32_t node)
{
	struct scomp *k = &s->comp[c];
	struct slink *l = node_link(s, node);

	if (l->rprev == NIL)
		k->res_head[m] = l->rnext;
	else
		node_link(s, l->rprev)->rnext = l->rnext;
	if (l->rnext == NIL)
		k->res_tail[m] = l->rprev;
	else
		node_link(s, l->rnext)->rprev = l->rprev;
	k->nfree_waiting[m]++;
}

/* ---- blocking ---- */

/* Does the reserved list starting at head hold r back (rule I3)?  Only if
 * its oldest entry arrived before r; a request that has not arrived yet
 * (arrival 0: try_grant asks before numbering it) is younger than all. */
static inline bool res_blocks(const struct sched *s, uint32_t head, const struct sreq *r)
{
	if (head == NIL)
		return false;
	return !r->arrival || node_arrival(s, head) < r->arrival;
}

/* Index of the first dep of r that blocks it, or -1 if r can be granted. */
static int find_blocker(const struct sched *s, const struct sreq *r)
{
	for (uint32_t i = 0; i < r->n; i++) {
		const struct scomp *k = &s->comp[r->deps[i].comp];

		if (k->writer)
			return (int)i;
		if (r->deps[i].access == WEFT_WRITE) {
			if (k->readers || res_blocks(s, k->res_head[M_READ], r) || res_blocks(s, k->res_head[M_WRITE], r))
				return (int)i;
		} else if (res_blocks(s, k->res_head[M_WRITE], r)) {
			return (int)i;
		}
	}
	return -1;
}

/* ---- parking ---- */

static void park(struct sched *s, uint32_t id, uint32_t i)
{
	struct sreq *r = &s->req[id];
	struct scomp *k = &s->comp[r->deps[i].comp];
	uint32_t m = mode_of(r->deps[i].access);

	r->parked = r->deps[i].comp;
	r->park_mode = (uint8_t)m;
	bitset_set(&k->parked[m], id);
	k->nparked[m]++;
}

static void unpark(struct sched *s, uint32_t id)
{
	struct sreq *r = &s->req[id];
	struct scomp *k = &s->comp[r->parked];

	bitset_clear(&k->parked[r->park_mode], id);
	k->nparked[r->park_mode]--;
}

static void repark(struct sched *s, uint32_t id, uint32_t i)
{
	if (s->req[id].parked == s->req[id].deps[i].comp)
		return;
	unpark(s, id);
	park(s, id, i);
}

/* Parked sets for component c, sized like the slot table. */
static int ensure_sets(struct sched *s, uint32_t c)
{
	struct scomp *k = &s->comp[c];
	struct bitset *b;

	if (k->parked)
		return 0;
	b = calloc(2, sizeof(*b));
	if (!b)
		return -ENOMEM;
	if (bitset_init(&b[0], s->cap) < 0 || bitset_init(&b[1], s->cap) < 0) {
		bitset_destroy(&b[0]);
		free(b);
		return -ENOMEM;
	}
	k->parked = b;
	s->set_comps[s->nset_comps++] = c;
	return 0;
}

/* ---- granting ---- */

static void reserve(struct sched *s, uint32_t id, int repark_dep)
{
	struct sreq *r = &s->req[id];

	r->reserved = 1;
	bitset_set(&s->reserved, id);
	s->stats.reservations++;
	for (uint32_t i = 0; i < r->n; i++)
		res_insert(s, r->deps[i].comp, mode_of(r->deps[i].access), NODE(id, i));
	/*
	 * Being reserved lifts the reservations of younger requests off r, so
	 * the component r is parked on may no longer block it (I1).  The one
	 * the grant that used up its budget just took does: park it there.
	 */
	if (repark_dep >= 0)
		repark(s, id, (uint32_t)repark_dep);
}

/* Count grantee x as overtaking the waiters on list (c, m) that arrived
 * before it; the lists are in arrival order, so stop at the first younger. */
static void overtake(struct sched *s, const struct sreq *x, uint32_t c, uint32_t m)
{
	uint32_t node = s->comp[c].wait_head[m];

	while (node != NIL) {
		uint32_t next = node_link(s, node)->next;
		struct sreq *v = &s->req[NODE_ID(node)];

		if (v->arrival > x->arrival)
			break;
		/* Once per grant, however many components they share. */
		if (v->stamp != x->arrival) {
			v->stamp = x->arrival;
			v->bypass++;
			if (v->bypass > s->stats.max_bypassed)
				s->stats.max_bypassed = v->bypass;
			if (v->bypass >= s->budget && !v->reserved)
				reserve(s, NODE_ID(node), (int)NODE_DEP(node));
		}
		node = next;
	}
}

/* Make id a holder of its deps (it is in no wait list). */
static void take(struct sched *s, uint32_t id)
{
	struct sreq *x = &s->req[id];

	for (uint32_t i = 0; i < x->n; i++) {
		struct scomp *k = &s->comp[x->deps[i].comp];

		if (x->deps[i].access == WEFT_WRITE)
			k->writer = 1;
		else
			k->readers++;
	}
	/* Holders first: a request reserved below is parked on a component x
	 * now holds, which blocks it. */
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t c = x->deps[i].comp;
		const struct scomp *k = &s->comp[c];

		if (k->wait_head[M_WRITE] != NIL)
			overtake(s, x, c, M_WRITE);
		if (x->deps[i].access == WEFT_WRITE && k->wait_head[M_READ] != NIL)
			overtake(s, x, c, M_READ);
	}
	x->state = SCHED_REQ_GRANTED;
	s->stats.grants++;
}

/* Take a WAITING request out of every list and set. */
static void unqueue(struct sched *s, uint32_t id)
{
	struct sreq *r = &s->req[id];

	for (uint32_t i = 0; i < r->n; i++) {
		uint32_t c = r->deps[i].comp, m = mode_of(r->deps[i].access);

		if (r->reserved)
			res_remove(s, c, m, NODE(id, i));
		wait_remove(s, c, m, NODE(id, i));
	}
	if (r->reserved) {
		bitset_clear(&s->reserved, id);
		r->reserved = 0;
	}
	unpark(s, id);
	bitset_clear(&s->waiting, id);
	s->nwaiting--;
}

/* Grant waiting request id if nothing blocks it, else re-park it on what
 * does.  Returns whether it was granted. */
static bool examine(struct sched *s, struct grants *g, uint32_t id)
{
	int i = find_blocker(s, &s->req[id]);

	s->stats.examined++;
	if (i >= 0) {
		repark(s, id, (uint32_t)i);
		return false;
	}
	unqueue(s, id);
	take(s, id);
	g->count++;
	if (g->fn)
		g->fn(g->ctx, id);
	return true;
}

/* The arrival of the oldest reservation at c that holds back requests in
 * mode m (everything that arrived after it queues behind it), or
 * UINT64_MAX if none does. */
static uint64_t hold_back(const struct sched *s, const struct scomp *k, uint32_t m)
{
	uint64_t lim = UINT64_MAX;

	if (k->res_head[M_WRITE] != NIL)
		lim = node_arrival(s, k->res_head[M_WRITE]);
	if (m == M_WRITE && k->res_head[M_READ] != NIL && node_arrival(s, k->res_head[M_READ]) < lim)
		lim = node_arrival(s, k->res_head[M_READ]);
	return lim;
}

/* Does c still admit mode m (no holder conflicts with it)? */
static inline bool admits(const struct scomp *k, uint32_t m)
{
	return !k->writer && (m == M_READ || !k->readers);
}

/*
 * The non-reserved requests in mode m that arrived before the reservation
 * holding that mode back at c: walk c's wait list, which is in arrival
 * order, up to the reservation, examining those parked here.  The limit is
 * read again at every step: a grant may reserve an older waiter.
 */
static void phase_before_reservation(struct sched *s, struct grants *g, uint32_t c, uint32_t m)
{
	struct scomp *k = &s->comp[c];
	uint32_t node = k->wait_head[m];

	while (node != NIL && admits(k, m)) {
		uint32_t next = node_link(s, node)->next, id = NODE_ID(node);
		const struct sreq *r = &s->req[id];

		if (r->arrival > hold_back(s, k, m))
			return;
		if (!r->reserved && r->parked == c && examine(s, g, id) && m == M_WRITE)
			return;
		node = next;
	}
}

/*
 * Examine the non-reserved requests parked on c in mode m, from the id of
 * the oldest waiter in that mode (arrival order, see the top), until c no
 * longer admits that mode.  The iterator reads parked AND NOT reserved
 * lazily; what examine changes behind it is only the examined request
 * itself and requests newly reserved (which skip).  Once a reservation
 * holds the mode back here, only requests older than it can pass: the walk
 * of the wait list takes over.
 */
static void phase(struct sched *s, struct grants *g, uint32_t c, uint32_t m)
{
	struct scomp *k = &s->comp[c];
	const struct bitset *ands[1] = { &k->parked[m] }, *nots[1] = { &s->reserved };
	/* Somebody waits in mode m here (the caller saw nfree_waiting[m]),
	 * parked here or elsewhere. */
	uint32_t start = NODE_ID(k->wait_head[m]);
	struct bitset_iter it;

	for (int pass = 0; pass < 2; pass++) {
		int id;

		bitset_iter_init(&it, ands, 1, nots, 1, pass ? 0 : start);
		while ((id = bitset_iter_next(&it)) >= 0) {
			const struct sreq *r = &s->req[id];

			if (pass && (uint32_t)id >= start)
				return;
			if (!k->nparked[m] || !admits(k, m))
				return;
			if (hold_back(s, k, m) != UINT64_MAX) {
				phase_before_reservation(s, g, c, m);
				return;
			}
			if (r->state != SCHED_REQ_WAITING || r->reserved || r->parked != c)
				continue;
			if (examine(s, g, (uint32_t)id) && m == M_WRITE)
				return;
		}
	}
}

/* Component c freed (or lost a reservation): grant what it now lets in. */
static void process_comp(struct sched *s, struct grants *g, uint32_t c, enum event ev)
{
	struct scomp *k = &s->comp[c];
	uint32_t hw, hr;
	bool readers_first;

	if (k->writer || (k->nparked[M_READ] == 0 && k->nparked[M_WRITE] == 0))
		return;

	/*
	 * Reserved readers older than the oldest reserved writer, oldest
	 * first.  A read release cannot have unblocked any: only a writer or
	 * an older reserved writer blocks them.
	 */
	if (k->nparked[M_READ] && ev != EV_FROM_READ) {
		uint32_t node = k->res_head[M_READ];

		while (node != NIL && !k->writer) {
			uint32_t next = node_link(s, node)->rnext, id = NODE_ID(node);

			hw = k->res_head[M_WRITE];
			if (hw != NIL && node_arrival(s, hw) < s->req[id].arrival)
				break;
			if (s->req[id].parked == c)
				examine(s, g, id);
			node = next;
		}
	}

	/* Not reserved (those older than any reservation here, if there is
	 * one): the mode whose oldest waiter here is older goes first. */
	if (k->wait_head[M_WRITE] == NIL)
		readers_first = true;
	else if (k->wait_head[M_READ] == NIL)
		readers_first = false;
	else
		readers_first = node_arrival(s, k->wait_head[M_READ]) < node_arrival(s, k->wait_head[M_WRITE]);
	if (readers_first) {
		if (k->nparked[M_READ] && k->nfree_waiting[M_READ])
			phase(s, g, c, M_READ);
		if (k->nparked[M_WRITE] && k->nfree_waiting[M_WRITE])
			phase(s, g, c, M_WRITE);
	} else {
		if (k->nparked[M_WRITE] && k->nfree_waiting[M_WRITE])
			phase(s, g, c, M_WRITE);
		if (k->nparked[M_READ] && k->nfree_waiting[M_READ])
			phase(s, g, c, M_READ);
	}

	/* The oldest reserved writer, if c is free and no older reserved
	 * reader is ahead of it.  Everything younger queues behind it. */
	hw = k->res_head[M_WRITE];
	if (hw != NIL) {
		uint32_t id = NODE_ID(hw);

		hr = k->res_head[M_READ];
		if (!k->writer && !k->readers && s->req[id].parked == c &&
		    (hr == NIL || node_arrival(s, hr) > s->req[id].arrival))
			examine(s, g, id);
	}
}

/* ---- slots ---- */

static int grow(struct sched *s)
{
	uint32_t ncap = s->cap * 2, nsets = 3 + 2 * s->nset_comps, i;
	struct bitset *sets;
	struct sreq *req;

	if (s->cap >= SCHED_MAX_REQS)
		return -ENOMEM;
	req = realloc(s->req, ncap * sizeof(*req));
	if (!req)
		return -ENOMEM;
	s->req = req; /* harmless if the rest fails: cap stays as it was */

	/* All new sets first, so a failure leaves every set as it was. */
	sets = calloc(nsets, sizeof(*sets));
	if (!sets)
		return -ENOMEM;
	for (i = 0; i < nsets; i++) {
		if (bitset_init(&sets[i], ncap) < 0) {
			while (i--)
				bitset_destroy(&sets[i]);
			free(sets);
			return -ENOMEM;
		}
	}
	bitset_copy_bits(&sets[0], &s->waiting);
	bitset_destroy(&s->waiting);
	s->waiting = sets[0];
	bitset_copy_bits(&sets[1], &s->reserved);
	bitset_destroy(&s->reserved);
	s->reserved = sets[1];
	bitset_copy_bits(&sets[2], &s->free);
	bitset_destroy(&s->free);
	s->free = sets[2];
	for (i = 0; i < s->nset_comps; i++) {
		struct bitset *p = s->comp[s->set_comps[i]].parked;

		for (uint32_t m = 0; m < 2; m++) {
			bitset_copy_bits(&sets[3 + 2 * i + m], &p[m]);
			bitset_destroy(&p[m]);
			p[m] = sets[3 + 2 * i + m];
		}
	}
	free(sets);

	memset(&s->req[s->cap], 0, (ncap - s->cap) * sizeof(*req));
	for (i = s->cap; i < ncap; i++)
		bitset_set(&s->free, i);
	s->cursor = s->cap;
	s->cap = ncap;
	return 0;
}

int sched_create(struct sched **out, uint32_t ncomponents, uint32_t max_bypass, bool strict_order)
{
	struct sched *s;

	if (!out || ncomponents == 0 || ncomponents > SCHED_MAX_REQS)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->ncomp = ncomponents;
	s->budget = strict_order ? 0 : max_bypass;
	s->cap = INITIAL_SLOTS;
	s->comp = calloc(ncomponents, sizeof(*s->comp));
	s->set_comps = calloc(ncomponents, sizeof(*s->set_comps));
	s->req = calloc(INITIAL_SLOTS, sizeof(*s->req));
	if (!s->comp || !s->set_comps || !s->req || bitset_init(&s->waiting, INITIAL_SLOTS) < 0 ||
	    bitset_init(&s->reserved, INITIAL_SLOTS) < 0 || bitset_init(&s->free, INITIAL_SLOTS) < 0) {
		sched_destroy(s);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < INITIAL_SLOTS; i++)
		bitset_set(&s->free, i);
	s->cursor = 0;
	*out = s;
	return 0;
}

void sched_destroy(struct sched *s)
{
	if (!s)
		return;
	if (s->req)
		for (uint32_t i = 0; i < s->cap; i++)
			free(s->req[i].link);
	for (uint32_t i = 0; i < s->nset_comps; i++) {
		struct bitset *p = s->comp[s->set_comps[i]].parked;

		bitset_destroy(&p[0]);
		bitset_destroy(&p[1]);
		free(p);
	}
	bitset_destroy(&s->waiting);
	bitset_destroy(&s->reserved);
	bitset_destroy(&s->free);
	free(s->req);
	free(s->comp);
	free(s->set_comps);
	free(s);
}

/* The general case of sched_merge_deps: insertion sort (n is small),
 * merging duplicates.  Out of line, so the common case needs no frame. */
static __attribute__((noinline)) int merge_deps_sort(const struct weft_dep *deps, size_t n, uint32_t ncomponents,
						    struct weft_dep *out)
{
	uint32_t k = 0;

	for (size_t i = 0; i < n; i++) {
		uint32_t c = deps[i].comp, a = deps[i].access, j = k;

		if (c >= ncomponents || (a != WEFT_READ && a != WEFT_WRITE))
			return -EINVAL;
		while (j > 0 && out[j - 1].comp > c)
			j--;
		if (j > 0 && out[j - 1].comp == c) {
			if (a == WEFT_WRITE)
				out[j - 1].access = WEFT_WRITE;
			continue;
		}
		memmove(&out[j + 1], &out[j], (k - j) * sizeof(*out));
		out[j].comp = c;
		out[j].access = a;
		k++;
	}
	return (int)k;
}

int sched_merge_deps(const struct weft_dep *deps, size_t n, uint32_t ncomponents, struct weft_dep *out)
{
	if (n && !deps)
		return -EINVAL;
	if (n > WEFT_MAX_DEPS)
		return -E2BIG;
	/* Already merged (sorted, distinct, valid: what acquire.c hands the
	 * core, and what most callers pass): copied as it is checked.  With
	 * the sort out of line this needs no stack frame: 47 instructions
	 * for two deps, from 72. */
	uint32_t prev = 0;
	for (size_t k = 0; k < n; k++) {
		uint32_t c = deps[k].comp, a = deps[k].access;

		if (c >= ncomponents || a - 1u > 1u || (k > 0 && c <= prev))
			return merge_deps_sort(deps, n, ncomponents, out);
		out[k].comp = c;
		out[k].access = a;
		prev = c;
	}
	return (int)n;
}

static inline bool valid_id(const struct sched *s, uint32_t id)
{
	return id < s->cap && s->req[id].state != SCHED_REQ_FREE;
}

int sched_req_alloc(struct sched *s, const struct weft_dep *deps, size_t n, void *user)
{
	struct weft_dep merged[WEFT_MAX_DEPS];
	int m = sched_merge_deps(deps, n, s->ncomp, merged);
	uint32_t id;
	struct sreq *r;
	int f;

	if (m < 0)
		return m;
	/* The next free slot after the last one given: see "Order of
	 * examination" at the top. */
	f = bitset_next_wrap(&s->free, s->cursor);
	if (f < 0) {
		if (grow(s) < 0)
			return -ENOMEM;
		f = bitset_next_wrap(&s->free, s->cursor);
	}
	id = (uint32_t)f;
	r = &s->req[id];
	if ((uint32_t)m > r->depcap) {
		/* Rare: a slot keeps its storage when recycled. */
		uint32_t cap = MIN_DEPCAP;
		void *p;

		while (cap < (uint32_t)m)
			cap *= 2;
		p = malloc(cap * (sizeof(struct slink) + sizeof(struct weft_dep)));
		if (!p)
			return -ENOMEM;
		free(r->link);
		r->link = p;
		r->deps = (struct weft_dep *)(r->link + cap);
		r->depcap = cap;
	}
	bitset_clear(&s->free, id);
	s->cursor = id + 1 < s->cap ? id + 1 : 0;
	if (m)
		memcpy(r->deps, merged, (size_t)m * sizeof(*merged));
	r->n = (uint32_t)m;
	r->user = user;
	r->state = SCHED_REQ_IDLE;
	r->reserved = 0;
	r->bypass = 0;
	r->arrival = 0;
	r->stamp = 0;
	return (int)id;
}

int sched_req_free(struct sched *s, uint32_t id)
{
	struct sreq *r;

	if (!valid_id(s, id) || s->req[id].state == SCHED_REQ_WAITING)
		return -EINVAL;
	r = &s->req[id];
	r->state = SCHED_REQ_FREE;
	bitset_set(&s->free, id);
	return 0;
}

const struct weft_dep *sched_req_deps(const struct sched *s, uint32_t id, size_t *n)
{
	if (!valid_id(s, id)) {
		*n = 0;
		return NULL;
	}
	*n = s->req[id].n;
	return s->req[id].deps;
}

void *sched_req_user(const struct sched *s, uint32_t id)
{
	return valid_id(s, id) ? s->req[id].user : NULL;
}

int sched_req_info(const struct sched *s, uint32_t id, struct sched_req_info *out)
{
	if (id >= s->cap)
		return -EINVAL;
	out->state = (enum sched_state)s->req[id].state;
	out->bypass = s->req[id].bypass;
	out->reserved = s->req[id].reserved;
	out->arrival = s->req[id].arrival;
	return 0;
}

int sched_try_grant(struct sched *s, uint32_t id)
{
	struct sreq *r;

	if (!valid_id(s, id) || s->req[id].state != SCHED_REQ_IDLE)
		return -EINVAL;
	r = &s->req[id];
	/* Not arrived yet: younger than every reservation (res_blocks), also
	 * when it was cancelled and is asked again. */
	r->arrival = 0;
	if (find_blocker(s, r) >= 0)
		return -EBUSY;
	r->arrival = ++s->seq;
	take(s, id);
	return 0;
}

int sched_enqueue(struct sched *s, uint32_t id)
{
	struct sreq *r;
	int i;

	if (!valid_id(s, id) || s->req[id].state != SCHED_REQ_IDLE)
		return -EINVAL;
	r = &s->req[id];
	/* Numbered once it is granted or queued; until then it is younger
	 * than every reservation, as with try_grant. */
	r->arrival = 0;
	r->bypass = 0;
	i = find_blocker(s, r);
	if (i < 0) {
		r->arrival = ++s->seq;
		take(s, id);
		return 0;
	}
	/* Allocate before changing anything, so -ENOMEM changes nothing. */
	for (uint32_t j = 0; j < r->n; j++)
		if (ensure_sets(s, r->deps[j].comp) < 0)
			return -ENOMEM;
	r->arrival = ++s->seq;
	for (uint32_t j = 0; j < r->n; j++)
		wait_append(s, r->deps[j].comp, mode_of(r->deps[j].access), NODE(id, j));
	bitset_set(&s->waiting, id);
	s->nwaiting++;
	r->state = SCHED_REQ_WAITING;
	park(s, id, (uint32_t)i);
	s->stats.waits++;
	/* Strict order: reserved from the start.  Whatever blocks it now
	 * still does: every reservation there is older. */
	if (s->budget == 0)
		reserve(s, id, -1);
	return 1;
}

int sched_release(struct sched *s, const struct weft_dep *deps, size_t n, sched_grant_fn fn, void *ctx)
{
	struct grants g = { fn, ctx, 0 };
	uint32_t ev_comp[WEFT_MAX_DEPS];
	uint8_t ev_kind[WEFT_MAX_DEPS];
	uint32_t nev = 0;

	if ((n && !deps) || n > WEFT_MAX_DEPS)
		return -EINVAL;
	/* Check everything first: a failed call changes nothing. */
	for (size_t i = 0; i < n; i++) {
		const struct scomp *k;

		if (deps[i].comp >= s->ncomp || (i > 0 && deps[i].comp <= deps[i - 1].comp))
			return -EINVAL;
		k = &s->comp[deps[i].comp];
		if (deps[i].access == WEFT_WRITE) {
			if (!k->writer)
				return -EINVAL;
		} else if (deps[i].access != WEFT_READ || k->writer || !k->readers) {
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < n; i++) {
		struct scomp *k = &s->comp[deps[i].comp];
		uint8_t kind;

		if (deps[i].access == WEFT_WRITE) {
			k->writer = 0;
			kind = EV_FROM_WRITE;
		} else if (--k->readers == 0) {
			kind = EV_FROM_READ;
		} else {
			continue;
		}
		if (k->nparked[M_READ] | k->nparked[M_WRITE]) {
			ev_comp[nev] = deps[i].comp;
			ev_kind[nev++] = kind;
		}
	}
	for (uint32_t e = 0; e < nev; e++)
		process_comp(s, &g, ev_comp[e], (enum event)ev_kind[e]);
	return g.count;
}

int sched_release_req(struct sched *s, uint32_t id, sched_grant_fn fn, void *ctx)
{
	int r;

	if (!valid_id(s, id) || s->req[id].state != SCHED_REQ_GRANTED)
		return -EINVAL;
	r = sched_release(s, s->req[id].deps, s->req[id].n, fn, ctx);
	if (r >= 0)
		sched_req_free(s, id);
	return r;
}

int sched_cancel(struct sched *s, uint32_t id, sched_grant_fn fn, void *ctx)
{
	struct grants g = { fn, ctx, 0 };
	struct sreq *r;
	bool was_reserved;

	if (!valid_id(s, id) || s->req[id].state != SCHED_REQ_WAITING)
		return -EINVAL;
	r = &s->req[id];
	was_reserved = r->reserved;
	unqueue(s, id);
	r->state = SCHED_REQ_IDLE;
	/* IDLE again, as if never asked: it may be asked again later. */
	r->arrival = 0;
	r->bypass = 0;
	r->stamp = 0;
	s->stats.cancelled++;
	/* A request that is not reserved holds nobody back. */
	if (was_reserved)
		for (uint32_t i = 0; i < r->n; i++)
			process_comp(s, &g, r->deps[i].comp, EV_LIFT);
	return g.count;
}

int sched_first_waiter(const struct sched *s)
{
	return bitset_first(&s->waiting);
}

uint32_t sched_nwaiting(const struct sched *s)
{
	return s->nwaiting;
}

void sched_comp_holders(const struct sched *s, uint32_t c, uint32_t *readers, bool *writer)
{
	*readers = c < s->ncomp ? s->comp[c].readers : 0;
	*writer = c < s->ncomp && s->comp[c].writer;
}

void sched_comp_set_holders(struct sched *s, uint32_t c, uint32_t readers, bool writer)
{
	if (c >= s->ncomp)
		return;
	s->comp[c].readers = readers;
	s->comp[c].writer = writer;
}

void sched_get_stats(const struct sched *s, struct sched_stats *out)
{
	*out = s->stats;
}

/* ---- self-check (tests) ---- */

#define CHECK(cond, ...)                                  \
	do {                                              \
		if (!(cond)) {                            \
			snprintf(why, len, __VA_ARGS__); \
			return -EFAULT;                   \
		}                                         \
	} while (0)

int sched_check(const struct sched *s, char *why, size_t len)
{
	uint32_t nwaiting = 0;

	for (uint32_t id = 0; id < s->cap; id++) {
		const struct sreq *r = &s->req[id];
		bool waiting = r->state == SCHED_REQ_WAITING;

		CHECK(bitset_test(&s->free, id) == (r->state == SCHED_REQ_FREE), "id %u: free set vs state %d", id,
		      r->state);
		CHECK(bitset_test(&s->waiting, id) == waiting, "id %u: waiting set vs state %d", id, r->state);
		CHECK(bitset_test(&s->reserved, id) == (waiting && r->reserved), "id %u: reserved set", id);
		if (!waiting)
			continue;
		nwaiting++;
		/* I1: parked on one of its components, which blocks it there. */
		int i = -1;
		for (uint32_t j = 0; j < r->n; j++)
			if (r->deps[j].comp == r->parked)
				i = (int)j;
		CHECK(i >= 0, "id %u parked on %u, not one of its components", id, r->parked);
		const struct scomp *k = &s->comp[r->parked];
		CHECK(k->parked && bitset_test(&k->parked[r->park_mode], id) &&
			      r->park_mode == mode_of(r->deps[i].access),
		      "id %u: not in the parked set of %u", id, r->parked);
		bool held = k->writer || (r->deps[i].access == WEFT_WRITE && k->readers);
		bool res = res_blocks(s, k->res_head[M_WRITE], r) ||
			   (r->deps[i].access == WEFT_WRITE && res_blocks(s, k->res_head[M_READ], r));
		CHECK(held || res, "id %u parked on %u, which does not block it", id, r->parked);
	}
	CHECK(nwaiting == s->nwaiting, "nwaiting %u, counted %u", s->nwaiting, nwaiting);
	for (uint32_t c = 0; c < s->ncomp; c++) {
		const struct scomp *k = &s->comp[c];

		for (uint32_t m = 0; m < 2; m++) {
			uint32_t nfree = 0, nres = 0, nparked = 0;
			uint64_t last = 0;

			for (uint32_t node = k->wait_head[m]; node != NIL; node = node_link(s, node)->next) {
				const struct sreq *r = &s->req[NODE_ID(node)];

				CHECK(r->state == SCHED_REQ_WAITING, "component %u: a wait list entry not waiting", c);
				CHECK(r->arrival > last, "component %u: wait list out of arrival order", c);
				last = r->arrival;
				nfree += !r->reserved;
				nres += r->reserved;
			}
			last = 0;
			for (uint32_t node = k->res_head[m]; node != NIL; node = node_link(s, node)->rnext) {
				const struct sreq *r = &s->req[NODE_ID(node)];

				CHECK(r->state == SCHED_REQ_WAITING && r->reserved, "component %u: reserved list entry", c);
				CHECK(r->arrival > last, "component %u: reserved list out of arrival order", c);
				last = r->arrival;
				nres--;
			}
			CHECK(nres == 0, "component %u mode %u: reserved list and flags differ", c, m);
			CHECK(nfree == k->nfree_waiting[m], "component %u mode %u: nfree_waiting %u, counted %u", c, m,
			      k->nfree_waiting[m], nfree);
			for (uint32_t id = 0; id < s->cap; id++)
				nparked += s->req[id].state == SCHED_REQ_WAITING && s->req[id].parked == c &&
					   s->req[id].park_mode == m;
			CHECK(nparked == k->nparked[m], "component %u mode %u: nparked %u, counted %u", c, m, k->nparked[m],
			      nparked);
		}
	}
	return 0;
}
