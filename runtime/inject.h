/*
 * inject.h: the per-node injection queue, through which threads that are not
 * workers submit tasks.
 *
 * Owns: a bounded lock-free MPMC ring (Vyukov's per-cell sequence numbers)
 * plus an unbounded, mutex-protected overflow list that takes over when the
 * ring is full.  Items are copied in and out by value; nothing is allocated
 * per item.
 *
 * Order: FIFO within the ring and within the overflow.  Each overflow item
 * is stamped with the ring position it stands in front of (the ring's tail
 * when it was appended), and consumers take no ring item at or past the
 * oldest overflow stamp before that overflow item.  So when one thread does
 * all pushes and pops, items come out in exactly push order, across the
 * ring/overflow boundary too; under concurrency the stamps are read without
 * the lock and the order across the two parts is only approximate, but a
 * ring that never empties still cannot starve the overflow.
 *
 * Invariants and the full argument are in inject.c.
 */
#ifndef WEFT_INJECT_H
#define WEFT_INJECT_H

#include "atomics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct weft_group;

struct weft_inject_item {
	void (*fn)(void *arg);
	void *arg;
	struct weft_group *group;
	uint64_t aux;    /* 0: a task; INJECT_REQUEST: see below */
	uint32_t req[4]; /* a request's deps, packed by acquire.c */
};

/* aux of an item that carries a request (weft_acquire / weft_spawn_with,
 * acquire.c): INJECT_REQUEST | kind << 8 | number of deps, fn/arg the
 * callback or task.  The deps travel in the item, so the worker builds the
 * grant in its own memory and no line of the submitter's is read per
 * request. */
#define INJECT_REQUEST (1ull << 63)

static inline bool inject_item_is_request(const struct weft_inject_item *it)
{
	return (it->aux & INJECT_REQUEST) != 0;
}

/* Items per overflow chunk, and how many emptied chunks a queue keeps: a
 * backlog that hovers around some size then recycles chunks instead of
 * paying malloc and fresh-page faults for each 256 items. */
#define INJECT_CHUNK_ITEMS 256
#define INJECT_SPARE_CHUNKS 16

struct inject_cell;
struct inject_chunk;

struct weft_inject {
	/* Read-mostly: written by inject_init only. */
	struct inject_cell *cells;
	uint64_t mask;
	size_t cells_bytes;

	/* Producers' line: the next position to claim for a push. */
	uint64_t tail WEFT_ALIGNED;

	/* Consumers' line: the next position to claim for a pop. */
	uint64_t head WEFT_ALIGNED;

	/* Slow path.  `overflow` counts the items in the chunk list and
	 * `ov_stamp` is the stamp of the oldest of them; both are written only
	 * under ov_lock and read without it as hints. */
	uint64_t overflow WEFT_ALIGNED;
	uint64_t ov_stamp;
	pthread_mutex_t ov_lock;
	struct inject_chunk *ov_head;  /* oldest chunk, consumers take here */
	struct inject_chunk *ov_tail;  /* newest chunk, producers append here */
	struct inject_chunk *ov_spare; /* emptied chunks kept for reuse */
	unsigned ov_nspare;
} WEFT_ALIGNED;

/* log2_cells in 1..28.  0, -EINVAL or -ENOMEM. */
int inject_init(struct weft_inject *q, unsigned log2_cells);
/* The same, with the ring on a NUMA node (-1: anywhere). */
int inject_init_on(struct weft_inject *q, unsigned log2_cells, int os_node);
/* Frees everything; items still queued are dropped (the caller drained). */
void inject_fini(struct weft_inject *q);

/* Any thread.  Never fails for being full: 0, or -ENOMEM when the ring is
 * full and no overflow chunk can be allocated.  A push is a release that the
 * pop which takes the item acquires. */
int inject_push(struct weft_inject *q, const struct weft_inject_item *it);

/* Any thread.  Takes up to max items into out[] in the order described
 * above; returns how many.  0 means "looked empty" (a push in progress may
 * be missed). */
unsigned inject_pop(struct weft_inject *q, struct weft_inject_item *out, unsigned max);

/* A cheap hint made of relaxed loads; may be stale either way. */
bool inject_maybe_nonempty(const struct weft_inject *q);

/*
 * The check for the parking protocol.  A parker does [seq_cst RMW on its
 * parker state; then this].  A submitter does [inject_push; then a seq_cst
 * load of the parker state].  inject_push publishes with a seq_cst RMW on
 * `tail` (ring) or a seq_cst store to `overflow` (slow path), and this reads
 * both with seq_cst loads; in the single total order of seq_cst operations
 * either the parker's RMW comes first, so the submitter's load sees the
 * parker, or the push comes first, so this returns true (unless the item has
 * already been taken by some consumer).
 *
 * May return true while the item is still being copied in; a pop may then
 * return 0 for a moment, so the parker should look again rather than sleep.
 */
bool inject_nonempty_seq_cst(const struct weft_inject *q);

#endif
