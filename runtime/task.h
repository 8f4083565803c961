/*
 * task.h: the task frame.
 *
 * A frame is one cache line taken from the spawning worker's arena
 * (arena.c), or weft_join's frame on the joiner's stack (group.c).
 * Deques hold pointers to frames; the injection queues copy fn/arg/group
 * inline instead, so threads that are not workers need no frame.  `arena` names the worker whose arena the frame came from, so a
 * frame freed on another worker goes back to its owner.
 */
#ifndef WEFT_TASK_H
#define WEFT_TASK_H

#include <stdint.h>

struct weft_group;

enum {
	/* The group count for this task lives in the group owner's private
	 * `local` field (see group.c).  Set only by the owner: by
	 * weft_group_spawn through rt_push_local, whose frame comes from the
	 * owner's arena (it may move to a thief's deque in a batch steal), so
	 * the owner's weft_group_wait fast path frees it there without
	 * looking at `arena`; and by weft_join for its frame on the stack
	 * (arena TASK_NO_ARENA), whose group no caller of weft_group_wait can
	 * name, so that fast path never sees it. */
	TASK_COUNTED_LOCAL = 1u << 0,
};

/* `arena` of a frame that is no arena's: weft_join's frame on the joining
 * worker's stack (group.c), valid until its group is done.  Nobody frees
 * it.  Worker indices stay below it. */
#define TASK_NO_ARENA 0xffffu

struct weft_task {
	void (*fn)(void *arg);
	void *arg;
	struct weft_group *group;
	struct weft_task *next; /* free lists and remote-free stacks */
	uint32_t flags;
	uint16_t arena;         /* owning arena (worker index) */
	uint16_t reserved;
	uint64_t aux[3];        /* room for later subsystems (trace, graph) */
};

/* No alignment attribute: arena frames are line-aligned anyway (64-byte
 * frames carved from page-aligned blocks), and weft_join keeps a frame on
 * its stack, where a 64-byte alignment would cost a realigned frame on
 * every join. */

_Static_assert(sizeof(struct weft_task) == 64, "a frame is one cache line");

#endif
