/*
 * deque.h: the per-worker work-stealing deque of task frames.
 *
 * Overview
 *   The C11 Chase-Lev deque of Lê, Pop, Cohen and Zappa Nardelli (PPoPP
 *   2013), growable, with a Lace-style split (van Dijk and van de Pol,
 *   "Lace: non-blocking split deque").  Items are indexed by ever-growing
 *   64-bit positions with top <= split <= bottom:
 *
 *     [top, split)     public: thieves take the oldest items by CAS on top,
 *                      as in Chase-Lev with `split` playing the role
 *                      Chase-Lev's `bottom` plays for thieves, but a range
 *                      of up to DEQUE_STEAL_MAX items per CAS;
 *     [split, bottom)  private: only the owner touches it, so its push and
 *                      pop use no fence and no read-modify-write.
 *
 *   A thief that finds the public part empty raises `split_req`; the owner
 *   reads that flag (one relaxed load) in every push and pop and answers by
 *   publishing the older half of its private part, at most DEQUE_STEAL_MAX
 *   items.  A thief takes the oldest public items, up to half of them and
 *   at most DEQUE_STEAL_MAX, with one CAS on top (so 16 published items
 *   leave in steals of 8, 4, ...).  When its private part is empty the owner pops
 *   from the public part: far from top with the Chase-Lev take protocol
 *   (split--, store-load ordering, read top), within DEQUE_STEAL_MAX of top
 *   by taking the oldest item with a CAS on top, as a thief would.
 *
 * Invariants
 *   - `top` is written only by CAS (thieves, and the owner for the public
 *     items within DEQUE_STEAL_MAX of top); it never decreases.
 *   - `split`, `array` and everything on the owner's line are written only
 *     by the owner.  `o_split` always equals `split` outside the owner's
 *     public pop; `o_top` is a stale lower bound of `top` that the owner
 *     read with acquire, so the slots below it are free to reuse.
 *   - A task is taken exactly once: a private item by the owner alone, a
 *     public item by the one successful CAS on top (a thief's CAS takes a
 *     range [top, top + k), k <= DEQUE_STEAL_MAX), except the public item
 *     the owner pops while top + DEQUE_STEAL_MAX <= that index, which no
 *     thief's range can reach (the seq_cst store-load pair in pop and
 *     steal, see deque.c).  Nearer to top the owner takes the oldest item
 *     by CAS like a thief: every public item stays public until taken, so
 *     the owner never hides work it had published.
 *   - Thieves read a slot before their CAS; the owner overwrites a slot only
 *     after an acquire load of top showed it taken.
 *   - Arrays only grow (doubling) and retired arrays stay readable until
 *     deque_fini, so a thief holding a stale array pointer reads the same
 *     task the current array holds for that index.
 *
 *   The struct is cache-line aligned: whatever embeds it must be allocated
 *   with at least 64-byte alignment for the line split below to hold.
 */
#ifndef WEFT_DEQUE_H
#define WEFT_DEQUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atomics.h"
#include "task.h"

/* Largest capacity (log2): 2^32 slots of 8 bytes.  deque_init and growth
 * past it fail with -ENOMEM. */
#define DEQUE_MAX_LOG2 32

struct deque_array {
	struct deque_array *retired_next; /* owner-only: list kept until fini */
	uint64_t mask;                    /* capacity - 1, immutable */
	struct weft_task *slots[] WEFT_ALIGNED;
};

struct weft_deque {
	/* Thieves' line: written by every successful steal. */
	int64_t top WEFT_ALIGNED;

	/* Written by the owner when it publishes, pops a public item or
	 * grows; read by every steal attempt. */
	int64_t split WEFT_ALIGNED;
	struct deque_array *array;

	/* Written (rarely) by thieves, read by the owner in push and pop. */
	uint32_t split_req WEFT_ALIGNED;

	/* Owner's line: the fast path touches this and one slot.  bottom is
	 * stored atomically (a plain mov on x86) because idle thieves read it
	 * as a hint (deque_private_hint); everything else is owner-only. */
	int64_t bottom WEFT_ALIGNED;
	int64_t o_split;                 /* owner's copy of split */
	int64_t o_top;                   /* lower bound of top (acquired) */
	struct weft_task **slots;        /* current array's slots */
	uint64_t mask;                   /* current array's mask */
	struct deque_array *retired;     /* older arrays, freed in fini */
	int os_node;                     /* where arrays are allocated */
	uint32_t o_publish_max;          /* most items one request publishes */
	bool o_published;                /* set by deque_publish; the worker
					  * clears it and considers a wakeup */
};

enum { DEQUE_EMPTY = 0, DEQUE_ABORT = 1 };

/* Most items one deque_steal_many takes.  The owner's public pop keeps an
 * item without a CAS only while top + DEQUE_STEAL_MAX <= its index (no
 * thief's range can reach it); nearer to top it takes the oldest item with
 * a CAS on top instead (see deque.c). */
#define DEQUE_STEAL_MAX 16

/* 0, or -ENOMEM (also for log2_capacity > DEQUE_MAX_LOG2). */
int deque_init(struct weft_deque *d, unsigned log2_capacity);
/* The same, with the arrays on a NUMA node (-1: anywhere). */
int deque_init_on(struct weft_deque *d, unsigned log2_capacity, int os_node);
/* Frees the arrays, not the tasks; no thief may still be in deque_steal_many. */
void deque_fini(struct weft_deque *d);
/* Any thread.  The oldest public task, or NULL with *why = DEQUE_EMPTY (the
 * public part is empty; a split has been requested) or DEQUE_ABORT (lost a
 * race with another thief or the owner; retrying may succeed). */
struct weft_task *deque_steal(struct weft_deque *d, int *why);
/* Any thread.  Takes the oldest ceil(public / 2) items, at most max (1 <=
 * max <= DEQUE_STEAL_MAX), with one CAS on top; stores them oldest first in
 * out[] and returns how many, or 0 with *why as for deque_steal, except that
 * an empty public part raises a split request only when `ask` is set. */
unsigned deque_steal_many(struct weft_deque *d, struct weft_task **out, unsigned max, bool ask, int *why);

/* Slow paths of the inline owner operations below. */
int deque_grow(struct weft_deque *d);
void deque_publish(struct weft_deque *d);
/* Owner only: make every private item public at once (idle thieves are
 * waiting; don't make them ask). */
void deque_share_all(struct weft_deque *d);
struct weft_task *deque_pop_public(struct weft_deque *d);
/* Owner only: t, pushed at index idx, is the deque's only item and public
 * (idx == top == split, bottom == idx + 1).  Take it back with the
 * thieves' CAS on top; false if that is not the state or a thief won. */
bool deque_take_only(struct weft_deque *d, int64_t idx, const struct weft_task *t);

/* Owner only: bottom (read by the caller) can be pushed without growing. */
static inline bool deque_push_fits(const struct weft_deque *d, int64_t b)
{
	return (uint64_t)(b - d->o_top) <= d->mask;
}

/* Owner only: the private push at index b == bottom, which deque_push_fits
 * allowed.  Does not look at split_req: the caller must (deque_push does,
 * rt_push_local too). */
static inline void deque_push_at(struct weft_deque *d, int64_t b, struct weft_task *t)
{
	/* The store is atomic only because a thief that lost its race may
	 * still read a recycled slot; publication is split's release store. */
	store_relaxed(&d->slots[(uint64_t)b & d->mask], t);
	store_relaxed(&d->bottom, b + 1);
}

/* Owner only.  0, or -ENOMEM when the array is full and cannot grow (the
 * deque is then unchanged). */
static inline int deque_push(struct weft_deque *d, struct weft_task *t)
{
	int64_t b = d->bottom;

	if (unlikely(!deque_push_fits(d, b))) {
		int err = deque_grow(d);

		if (err)
			return err;
	}
	/* deque_grow may have replaced the array: deque_push_at reloads
	 * slots and mask. */
	deque_push_at(d, b, t);
	if (unlikely(load_relaxed(&d->split_req)))
		deque_publish(d);
	return 0;
}

/* Owner only.  The newest task, or NULL when the deque is empty. */
static inline struct weft_task *deque_pop(struct weft_deque *d)
{
	int64_t b = d->bottom;
	struct weft_task *t;

	if (unlikely(b <= d->o_split))
		return deque_pop_public(d);
	b--;
	t = load_relaxed(&d->slots[(uint64_t)b & d->mask]);
	store_relaxed(&d->bottom, b);
	/* Checked after taking ours, so answering a request never hands the
	 * thieves the very item we are about to run. */
	if (unlikely(load_relaxed(&d->split_req)))
		deque_publish(d);
	return t;
}

/* Owner only: items held, private and public. */
static inline size_t deque_size(const struct weft_deque *d)
{
	return (size_t)(d->bottom - load_relaxed(&d->top));
}

/* Owner only: items thieves cannot see yet. */
static inline size_t deque_private(const struct weft_deque *d)
{
	return (size_t)(d->bottom - d->o_split);
}

/* Owner only: slots in the current array. */
static inline size_t deque_capacity(const struct weft_deque *d)
{
	return (size_t)d->mask + 1;
}

/* Any thread: the owner holds private items that a split request would
 * publish.  A hint, possibly stale. */
static inline bool deque_private_hint(const struct weft_deque *d)
{
	return load_relaxed(&d->bottom) > load_relaxed(&d->split);
}

/* Any thread; a hint that may be stale by the time it returns. */
static inline bool deque_public_nonempty(const struct weft_deque *d)
{
	return load_relaxed(&d->top) < load_relaxed(&d->split);
}

/* The same for shutdown's check (rt_try_exit): an empty answer also shows
 * whatever the taker did before it took the last item.  acquire: pairs
 * with the thieves' CAS on top and the owner's release stores and
 * exchange of split. */
static inline bool deque_public_nonempty_acquire(const struct weft_deque *d)
{
	return load_acquire(&d->top) < load_acquire(&d->split);
}

#endif
