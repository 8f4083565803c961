/*
 * arena.h: node-local page allocation and the per-worker task-frame arena.
 *
 * Overview
 *
 * node_alloc hands out zeroed, page-aligned memory, bound to a NUMA node
 * when there is more than one, and never backed by a transparent huge page:
 * two per-node allocations that the kernel merged into one mapping were seen
 * sharing a THP, which put hundreds of pages of one on the other's node.
 * MADV_NOHUGEPAGE forbids that, and large sizes are also 2 MiB-aligned so
 * no huge page could span two allocations even if it were allowed.
 *
 * A weft_arena belongs to one worker (its owner) and hands out 64-byte task
 * frames from 64 KiB blocks.  Frames are never returned to the system until
 * arena_fini; a freed frame goes back to its own arena:
 *  - freed by the owner: onto the owner's private free list (no atomics);
 *  - freed by another worker: into that worker's pending batch for the
 *    owner (one of ARENA_PEND_SLOTS slots in the freeing worker's own arena,
 *    chosen by t->arena).  The first frame of a batch is its head; the
 *    others are listed in the head's words (up to ARENA_BATCH_LIST), so the
 *    freer writes one foreign frame per batch, not one per frame.  A full
 *    batch, a batch evicted from its slot by another owner's frame, and
 *    every partial batch at arena_flush (a worker's search came back empty,
 *    see worker.c's found_nothing) go onto the owner's remote-free stack, a
 *    lock-free push-only Treiber stack of batch heads, with one CAS;
 *  - freed by a thread that is not a worker (self NULL): pushed at once as
 *    a batch of one.
 * The owner empties the remote stack whole with one exchange when its
 * private list runs dry, keeps the batches on a private list, and opens one
 * per arena_alloc_slow: it links the listed frames onto its free list and
 * hands out the head.  Opening a batch also prefetches, for writing, the
 * next head and the frames that head lists, one batch ahead of their use.
 * Why: a remote frame's line was last held by the freer; when the freer
 * wrote the link into every frame, each owner spawn began with a dependent
 * load miss on t->next (85% of weft_group_spawn's time with a busy thief).
 * Now the owner loads from foreign lines only the heads, each long after
 * its prefetch; the listed frames it only writes (their links, then the
 * spawn's fields), and their lines are on the way by then.  The freer, for
 * its part, only reads a stolen frame (worker_run_task copies it out) and
 * writes the head of its batch, so no other foreign line is dirtied.
 *
 * Batch head layout (an overlay on struct weft_task, see batch_slot): the
 * listed frames in the words over fn, arg, group and aux[0..2]; how many in
 * `flags`; `next` links heads on the remote stack; `arena` is untouched, so
 * every frame on any list still names its arena.
 *
 * Invariants
 *  - free, bump, bump_end, blocks, nblocks, batches, pend[]: read and
 *    written by the owner only (id and os_node are set by arena_init).
 *    pend[] holds other arenas' frames that this arena's worker freed.
 *    remote: pushed by any thread with a release CAS, emptied only by the
 *    owner with an acquire exchange; it sits alone on its cache line so
 *    remote frees do not disturb the owner's fields.
 *  - A frame is in at most one place at a time: handed out, on the private
 *    list, in a pending batch of exactly one other arena, on the remote
 *    stack, on the owner's private batch list, or not yet carved from the
 *    current block.  Each move takes it from one place to the next whole
 *    (a batch is pushed by the one worker that filled it; the exchange
 *    moves the whole stack), so no frame is seen by two lists and none is
 *    dropped.  A pending batch holds at most 1 + ARENA_BATCH_LIST frames
 *    and each worker ARENA_PEND_SLOTS of them, so an owner is short of at
 *    most that many frames per other worker until their flush: memory
 *    stays flat.
 *  - Every frame handed out has t->arena == the arena's id; callers must not
 *    change it, and must free a frame exactly once, to the arena its
 *    `arena` field names.  Only never-used frames are zeroed: a recycled
 *    one keeps what its last user wrote (a batch head: the list in its
 *    fields), so callers set what they use.
 *  - Pending batches are flushed whenever a worker's search comes back
 *    empty, so before every park and before a worker exits (its main loop
 *    leaves only after a fruitless search).  arena_fini does not flush: it
 *    runs when every worker has stopped, the other arena may already be
 *    gone, and a pending frame belongs to that arena's blocks, which its own
 *    arena_fini unmaps, so nothing can leak either way.
 *
 * No ABA: a Treiber pop reads head->next and then CASes head, so it breaks
 * if head is popped and pushed back in between.  Nothing here pops one node:
 * a push only links t->next to the head value its CAS then confirms is still
 * current, which is correct whatever happened to that node meanwhile, and
 * the owner's exchange reads no node at all.
 */
#ifndef WEFT_ARENA_H
#define WEFT_ARENA_H

#include "atomics.h"
#include "task.h"

#include <stddef.h>
#include <stdint.h>

/* Zeroed, page-aligned memory on os_node (-1: wherever the kernel likes).
 * Sizes of 2 MiB or more are rounded up to, and aligned on, 2 MiB.  NULL on
 * failure. */
void *node_alloc(size_t bytes, int os_node);
/* bytes as given to node_alloc. */
void node_free(void *p, size_t bytes);

/* A block is 64 KiB; its first frame holds the block list link. */
#define ARENA_BLOCK_BYTES (64u * 1024u)
#define ARENA_BLOCK_FRAMES (ARENA_BLOCK_BYTES / sizeof(struct weft_task) - 1)

/* Frames a batch head lists besides itself (the words over fn, arg, group
 * and aux[]): a remote batch is up to 1 + ARENA_BATCH_LIST frames. */
#define ARENA_BATCH_LIST 6
/* Pending batches per freeing worker, for that many owners at once (slot
 * t->arena % ARENA_PEND_SLOTS); a power of two. */
#define ARENA_PEND_SLOTS 4
_Static_assert(ARENA_PEND_SLOTS <= 16 && (ARENA_PEND_SLOTS & (ARENA_PEND_SLOTS - 1)) == 0,
	       "pend_used has a bit per slot; slots are picked by masking");

_Static_assert(offsetof(struct weft_task, next) == 3 * sizeof(void *) &&
		       offsetof(struct weft_task, flags) == 4 * sizeof(void *) &&
		       offsetof(struct weft_task, arena) == 4 * sizeof(void *) + 4 &&
		       offsetof(struct weft_task, aux) == 5 * sizeof(void *) && sizeof(void *) == 8,
	       "batch_slot's words avoid next and arena");

/* A batch head's i-th listed frame (i < ARENA_BATCH_LIST): words 0-2 and
 * 5-7 of the frame; word 3 is `next`, word 4 holds `flags` (the count) and
 * `arena`.  may_alias: the words are fn, arg, group and aux. */
typedef struct weft_task *__attribute__((may_alias)) arena_frame_word;
static inline arena_frame_word *batch_slot(struct weft_task *head, unsigned i)
{
	return (arena_frame_word *)(void *)head + i + (i >= 3 ? 2 : 0);
}

/* A batch being filled by this arena's worker for another arena. */
struct arena_pend {
	struct weft_arena *owner; /* NULL: slot empty */
	struct weft_task *head;
	uint32_t n;               /* frames listed in head so far */
};

struct weft_arena {
	/* Owner-private. */
	struct weft_task *free;
	struct weft_task *bump;     /* next never-used frame in the block */
	struct weft_task *bump_end;
	struct weft_task *blocks;   /* newest block's first frame; its next
				     * links to the older block's */
	size_t nblocks;
	int os_node;
	uint16_t id;
	uint16_t pend_used;         /* bit i: pend[i] holds a batch */
	/* Remote batches taken from `remote`, not yet opened (heads linked
	 * through next). */
	struct weft_task *batches;
	struct arena_pend pend[ARENA_PEND_SLOTS];

	/* Remote frees from other workers: a stack of batch heads. */
	struct weft_task *remote WEFT_ALIGNED;
} WEFT_ALIGNED;

/* id goes into every frame's `arena` field.  0, or -ENOMEM if the first
 * block cannot be had. */
int arena_init(struct weft_arena *a, uint16_t id, int os_node);
/* Frees every block; every frame must be back or abandoned.  Does not
 * flush pend[] (see the invariants). */
void arena_fini(struct weft_arena *a);

/* Out of line: opens a remote batch (taking the remote stack if none is
 * held), else carves a frame from the current block or a new one.  NULL
 * only if a new block cannot be had. */
struct weft_task *arena_alloc_slow(struct weft_arena *a);
/* Out of line halves of arena_free and arena_flush. */
void arena_free_remote(struct weft_arena *self, struct weft_arena *owner, struct weft_task *t);
void arena_flush_slow(struct weft_arena *self);

/* Owner only. */
static inline struct weft_task *arena_alloc(struct weft_arena *a)
{
	struct weft_task *t = a->free;
	if (likely(t)) {
		/* t->arena was set when the frame was carved; frames on our
		 * lists are always ours, so it still says a->id. */
		a->free = t->next;
		return t;
	}
	return arena_alloc_slow(a);
}

/* Called by the worker that finished the task (self: its own arena, or NULL
 * on a thread that is not a worker of this runtime); owner_of_frame is the arena that t->arena names.
 * A foreign frame joins self's pending batch for that owner: one store
 * into the batch head, which is already in our cache after the first. */
static inline void arena_free(struct weft_arena *self, struct weft_arena *owner_of_frame,
			      struct weft_task *t)
{
	if (owner_of_frame == self) {
		t->next = self->free;
		self->free = t;
		return;
	}
	if (self) {
		/* t->arena, not owner_of_frame->id: the owner's first line is
		 * written by its every spawn. */
		struct arena_pend *p = &self->pend[t->arena & (ARENA_PEND_SLOTS - 1)];
		if (likely(p->owner == owner_of_frame) && likely(p->n + 1 < ARENA_BATCH_LIST)) {
			*batch_slot(p->head, p->n++) = t;
			return;
		}
	}
	arena_free_remote(self, owner_of_frame, t);
}

/* Push self's partial batches to their owners (when self's worker runs out
 * of work, before it parks). */
static inline void arena_flush(struct weft_arena *self)
{
	if (unlikely(self->pend_used))
		arena_flush_slow(self);
}

#endif
