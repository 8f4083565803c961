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
 *  - freed by another worker: onto the owner's remote-free stack, a
 *    lock-free push-only Treiber stack that the owner empties whole with one
 *    exchange when its private list runs dry.
 *
 * Invariants
 *  - free, bump, bump_end, blocks, nblocks: read and written by the owner
 *    only (id and os_node are set by arena_init).  remote: pushed by any
 *    thread with a release CAS, emptied only by the owner with an acquire
 *    exchange; it sits alone on its cache line so remote frees do not
 *    disturb the owner's fields.
 *  - A frame is in at most one place at a time: handed out, on the private
 *    list, on the remote stack, or not yet carved from the current block.
 *    The exchange moves the whole remote stack to the private list at once,
 *    so no frame is seen by two lists.
 *  - Every frame handed out has t->arena == the arena's id; callers must not
 *    change it, and must free a frame exactly once, to the arena its
 *    `arena` field names.  Only never-used frames are zeroed: a recycled
 *    one keeps what its last user wrote, so callers set what they use.
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

	/* Remote frees from other workers. */
	struct weft_task *remote WEFT_ALIGNED;
} WEFT_ALIGNED;

/* id goes into every frame's `arena` field.  0, or -ENOMEM if the first
 * block cannot be had. */
int arena_init(struct weft_arena *a, uint16_t id, int os_node);
/* Frees every block; every frame must be back or abandoned. */
void arena_fini(struct weft_arena *a);

/* Out of line: takes the remote stack, else carves a frame from the current
 * block or a new one.  NULL only if a new block cannot be had. */
struct weft_task *arena_alloc_slow(struct weft_arena *a);

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

/* Called by the worker that finished the task (self); owner_of_frame is the
 * arena that t->arena names. */
static inline void arena_free(struct weft_arena *self, struct weft_arena *owner_of_frame,
			      struct weft_task *t)
{
	if (owner_of_frame == self) {
		t->next = self->free;
		self->free = t;
		return;
	}
	struct weft_task *head = load_relaxed(&owner_of_frame->remote);
	do {
		t->next = head;
		/* Release: pairs with the owner's exchange_acq_rel in
		 * arena_alloc_slow, so our writes to the frame (and t->next)
		 * are visible before the owner reuses it; later pushes are
		 * RMWs, so they extend this release to whichever head the
		 * owner takes.  A failed CAS reloads head. */
	} while (!cas_release(&owner_of_frame->remote, &head, t));
}

#endif
