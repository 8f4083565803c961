/*
 * deque.c: the slow paths of the split Chase-Lev deque (see deque.h for the
 * layout and the invariants): growth, publishing on request, the owner's
 * pop from the public part, and stealing.
 *
 * Overview / Invariants (who writes what, why nothing is lost or doubled)
 *   top        CAS only (thieves, by ranges; the owner for the public
 *              items within DEQUE_STEAL_MAX of top).
 *   split      owner only: store_release when it grows (publish, and the
 *              restore after a public pop that found thieves too close),
 *              store_release followed by the store-load ordering when
 *              it shrinks (public pop).
 *   array      owner only, store_release after the new array is filled.
 *   split_req  thieves set it to 1 (only if they read 0, so idle thieves
 *              do not keep pulling away a line the owner reads in every
 *              push and pop); the owner clears it when it publishes.  A
 *              request lost to that race only delays a thief, which asks
 *              again on a later search (on a single-node runtime not
 *              within 20 us of its last steal, see may_ask in worker.c,
 *              and once more before it parks).
 *
 *   Why the private part needs no fence: thieves only read and CAS indices
 *   below the split they saw.  split grows only by a release store (which
 *   publishes the slots), and shrinks only through the store-load protocol
 *   below.  A thief may still act on a stale split above the owner's
 *   lowered one: what keeps the owner's item out of its range is the
 *   DEQUE_STEAL_MAX margin below.
 *
 *   The race for the owner's item: the owner's public pop stores split = s
 *   and then reads top; a thief reads top (t), then split, and takes the
 *   range [t, t + k) with k <= DEQUE_STEAL_MAX and t + k <= the split it
 *   saw.  With seq_cst ordering between each store and load (a fence, or
 *   seq_cst RMW/loads under TSan) at least one side sees the other: either
 *   the thief sees split <= s, so its range stops below s, or a later value
 *   the owner stored (the restore below, after which the owner no longer
 *   keeps s without a CAS, or a publish after later pushes, where index s
 *   holds a new item), or the owner reads a top no older than the
 *   thief's t (the thief read t before its fence, the owner reads top after
 *   a later one).  So when the owner sees top + DEQUE_STEAL_MAX <= s, no
 *   thief's range reaches s and the owner keeps s without a CAS.  Otherwise
 *   it puts split back (release: the items are public again) and takes the
 *   oldest item, index top, with a seq_cst CAS on top, in the same total
 *   order as the thieves' CAS, so exactly one of them gets it; the others
 *   stay public where they were.  With one item left that is Chase-Lev's
 *   last-item CAS.
 *
 *   Growth copies [o_top, bottom) into a doubled array and retires the old
 *   one without touching it again, so a thief that read the old pointer
 *   still finds there the task of the index it will CAS (indices below the
 *   owner's top snapshot may be stale, but their CAS must fail).  An index
 *   pushed after the growth is only reachable through a publish made after
 *   the new array's release store, and thieves load the array after split,
 *   so they cannot look for it in the old array.  Retired arrays sum to
 *   less than the current one because sizes double.
 */
#include <errno.h>
#include <stdlib.h>

#include "arena.h"
#include "deque.h"

static size_t array_bytes(size_t n)
{
	return sizeof(struct deque_array) + n * sizeof(struct weft_task *);
}

/* The only allocation site: node-local pages (arena.c's node_alloc), so
 * the slots a worker touches on every spawn live on its node. */
static struct deque_array *array_alloc(unsigned log2, int os_node)
{
	struct deque_array *a;
	size_t n;

	if (log2 > DEQUE_MAX_LOG2)
		return NULL;
	n = (size_t)1 << log2;
	a = node_alloc(array_bytes(n), os_node);
	if (!a)
		return NULL;
	a->retired_next = NULL;
	a->mask = n - 1;
	return a;
}

static void array_free(struct deque_array *a)
{
	node_free(a, array_bytes((size_t)a->mask + 1));
}

int deque_init(struct weft_deque *d, unsigned log2_capacity)
{
	return deque_init_on(d, log2_capacity, -1);
}

int deque_init_on(struct weft_deque *d, unsigned log2_capacity, int os_node)
{
	struct deque_array *a = array_alloc(log2_capacity, os_node);

	if (!a)
		return -ENOMEM;
	d->os_node = os_node;
	d->top = 0;
	d->split = 0;
	d->array = a;
	d->split_req = 0;
	d->bottom = 0;
	d->o_split = 0;
	d->o_top = 0;
	d->slots = a->slots;
	d->mask = a->mask;
	d->retired = NULL;
	d->o_publish_max = DEQUE_STEAL_MAX;
	return 0;
}

void deque_fini(struct weft_deque *d)
{
	struct deque_array *a = d->retired;

	while (a) {
		struct deque_array *next = a->retired_next;

		array_free(a);
		a = next;
	}
	array_free(d->array);
	d->array = NULL;
	d->retired = NULL;
	d->slots = NULL;
}

/* Called by push when bottom - o_top says the array may be full. */
int deque_grow(struct weft_deque *d)
{
	/* Acquire pairs with the thieves' CAS on top (and our own): their slot
	 * reads happen before we reuse those slots. */
	int64_t t = load_acquire(&d->top);
	int64_t b = d->bottom;
	struct deque_array *old = d->array, *a;
	unsigned log2 = 0;

	d->o_top = t;
	if ((uint64_t)(b - t) <= d->mask)
		return 0;
	while (((uint64_t)1 << log2) <= d->mask)
		log2++;
	a = array_alloc(log2 + 1, d->os_node);
	if (!a)
		return -ENOMEM;
	/* Only the owner writes slots, so relaxed loads see its latest values.
	 * Indices below the true top may be copied stale: no CAS can take
	 * them any more. */
	for (int64_t i = t; i < b; i++)
		a->slots[(uint64_t)i & a->mask] =
			load_relaxed(&old->slots[(uint64_t)i & old->mask]);
	old->retired_next = d->retired;
	d->retired = old;
	/* Release pairs with the acquire load of array in deque_steal_many: a thief
	 * that sees the new array sees it filled. */
	store_release(&d->array, a);
	d->slots = a->slots;
	d->mask = a->mask;
	return 0;
}

/* Called by push and pop when a thief asked: move split toward bottom by
 * ceil(private / 2), at most o_publish_max (DEQUE_STEAL_MAX unless the
 * worker says otherwise), exposing the oldest private items.  One request gets a bounded share: the rest stays private, where
 * the owner pops it without a fence, and each task a thief takes costs the
 * owner a cache-line round trip later (the frame comes back to be reused),
 * so more than was asked for is not handed out. */
void deque_publish(struct weft_deque *d)
{
	int64_t priv = d->bottom - d->o_split;
	int64_t give = (priv + 1) / 2;

	/* Nothing to give: leave the request up for the next push. */
	if (priv <= 0)
		return;
	if (give > (int64_t)d->o_publish_max)
		give = d->o_publish_max;
	d->o_split += give;
	/* Release pairs with the acquire loads of split in deque_steal_many: the
	 * slot stores (and the tasks' contents) become visible with it; so
	 * does a grown array, stored before. */
	store_release(&d->split, d->o_split);
	store_relaxed(&d->split_req, 0);
	d->o_published = true;
}

void deque_share_all(struct weft_deque *d)
{
	if (d->bottom == d->o_split)
		return;
	d->o_split = d->bottom;
	/* release: pairs with the acquire loads of split in deque_steal_many, as
	 * in deque_publish. */
	store_release(&d->split, d->o_split);
}

bool deque_take_only(struct weft_deque *d, int64_t idx, const struct weft_task *t)
{
	int64_t top = idx;

	/* Only the owner writes slots, and it reuses index idx only after
	 * bottom came back to idx, so t there with top still idx means nobody
	 * took it. */
	if (d->bottom != idx + 1 || d->o_split != idx + 1 || d->slots[(uint64_t)idx & d->mask] != t)
		return false;
	/* seq_cst: the same total order as the thieves' CAS, as in the near-top
	 * take of deque_pop_public.  After it top, split and bottom all stand
	 * at idx + 1: empty. */
	if (!cas_seq_cst(&d->top, &top, idx + 1))
		return false;
	d->o_top = idx + 1;
	return true;
}

/* Called by pop when the private part is empty: the Chase-Lev take on
 * [top, split), split standing for Chase-Lev's bottom, far from top; the
 * oldest item by CAS near top, where a thief's range could reach ours. */
struct weft_task *deque_pop_public(struct weft_deque *d)
{
	for (;;) {
		int64_t s = d->o_split;
		int64_t t;
		struct weft_task *x;

		/* top <= split always, so top == split here means nothing is
		 * left and no thief can race us.  Acquire pairs with the
		 * thieves' CAS on top, as in deque_grow (o_top is set from
		 * it). */
		t = load_acquire(&d->top);
		if (t >= s) {
			d->o_top = t;
			return NULL;
		}
		if (t + DEQUE_STEAL_MAX < s) {
			/* Far from top: keep index s - 1 if, after lowering
			 * split, top is still out of a range's reach. */
			s--;
#if WEFT_TSAN
			/* TSan ignores fences: a seq_cst exchange and load give
			 * it the same store-load ordering, pairing with the
			 * seq_cst loads in deque_steal_many. */
			exchange_seq_cst(&d->split, s);
			t = load_seq_cst(&d->top);
#else
			/* release: a thief whose only synchronising read is
			 * this lowered split still sees the slots below it
			 * (C++20 dropped same-thread stores from release
			 * sequences, so the publish's release alone would not
			 * cover it); free, a fence follows.  Then store-load
			 * ordering: pairs with the fence in
			 * deque_steal_many between its read of top and its
			 * read of split. */
			store_release(&d->split, s);
			fence_seq_cst();
			/* Acquire pairs with the thieves' CAS on top (o_top is
			 * set from it). */
			t = load_acquire(&d->top);
#endif
			if (t + DEQUE_STEAL_MAX <= s) {
				/* No thief's range can reach index s: keep it,
				 * the deque's bottom and split now both stand
				 * at s. */
				x = load_relaxed(&d->slots[(uint64_t)s & d->mask]);
				d->o_split = s;
				store_relaxed(&d->bottom, s);
				d->o_top = t;
				return x;
			}
			/* Thieves came close meanwhile: make s public again
			 * and take from top below.  Release, as in
			 * deque_publish: a thief that reads this split must see
			 * the slots (C++20 dropped same-thread stores from
			 * release sequences, so the earlier publish does not
			 * cover it). */
			store_release(&d->split, s + 1);
			s++;
			if (t >= s) {
				d->o_top = t;
				return NULL;
			}
		}
		/* Near top: take the oldest item, index t, as a thief would.
		 * Only the owner writes slots, and it reuses slot t only after
		 * top has passed t, so what we read is item t if the CAS wins.
		 * seq_cst: the same total order as the thieves' CAS. */
		x = load_relaxed(&d->slots[(uint64_t)t & d->mask]);
		if (cas_seq_cst(&d->top, &t, t + 1)) {
			d->o_top = t + 1;
			return x;
		}
		/* A thief moved top first: look again. */
	}
}

unsigned deque_steal_many(struct weft_deque *d, struct weft_task **out, unsigned max, bool ask, int *why)
{
	struct deque_array *a;
	int64_t t, s;
	unsigned k;

#if WEFT_TSAN
	/* seq_cst loads stand in for the fence below (TSan ignores fences);
	 * they pair with the exchange in deque_pop_public. */
	t = load_seq_cst(&d->top);
	s = load_seq_cst(&d->split);
#else
	/* Acquire pairs with the seq_cst CAS of whoever moved top last: what
	 * that thief saw of split is seen here too.  It must not be relaxed:
	 * it also puts that CAS before our fence below, so an owner whose
	 * fence comes later reads a top no older than t. */
	t = load_acquire(&d->top);
	/* Acquire pairs with the release stores of split: deque_publish,
	 * deque_share_all, the owner's restore and its lowering in
	 * deque_pop_public. */
	s = load_acquire(&d->split);
	if (t < s) {
		/* Store-load ordering: pairs with the fence in
		 * deque_pop_public.  Only a thief that may take an item pays
		 * for it; an empty deque is answered by the loads above. */
		fence_seq_cst();
		/* Acquire pairs with store_release in deque_publish. */
		s = load_acquire(&d->split);
	}
#endif
	if (t >= s) {
		/* Read first: the line is the owner's, write it only once. */
		if (ask && !load_relaxed(&d->split_req))
			store_relaxed(&d->split_req, 1);
		*why = DEQUE_EMPTY;
		return 0;
	}
	/* Half the public part, rounded up, within max and DEQUE_STEAL_MAX
	 * (the owner's pop relies on that bound). */
	if (max > DEQUE_STEAL_MAX)
		max = DEQUE_STEAL_MAX;
	k = (uint64_t)(s - t + 1) / 2 < max ? (unsigned)((s - t + 1) / 2) : max;
	if (k == 0)
		k = 1;
	/* Acquire pairs with store_release in deque_grow; loaded after split
	 * so that the array holding a just-published index is seen. */
	a = load_acquire(&d->array);
	/* Read before the CAS: once top moves, the owner may reuse the
	 * slots. */
	for (unsigned i = 0; i < k; i++)
		out[i] = load_relaxed(&a->slots[(uint64_t)(t + i) & a->mask]);
	/* seq_cst: one total order with the owner's CAS in deque_pop_public. */
	if (!cas_seq_cst(&d->top, &t, t + (int64_t)k)) {
		*why = DEQUE_ABORT;
		return 0;
	}
	return k;
}

struct weft_task *deque_steal(struct weft_deque *d, int *why)
{
	struct weft_task *x;

	return deque_steal_many(d, &x, 1, true, why) ? x : NULL;
}
