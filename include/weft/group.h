/*
 * group.h: fork-join.
 *
 * A weft_group counts the tasks spawned into it that have not finished.
 * weft_group_wait returns once the count is zero.  On a worker, waiting
 * keeps the worker busy: it runs its own tasks first, then steals, and only
 * parks when there is nothing to run.  On any other thread it sleeps on a
 * futex.  Tasks running in the group may spawn more tasks into it.
 *
 * The struct is complete so it can live on the caller's stack; its fields
 * are private.  Initialise, spawn, wait, and only then reuse or free it.
 * Wait on the thread that called weft_group_init: on a worker the group keeps
 * part of its count in that worker's private state, which is what makes a
 * spawn cost a few nanoseconds.
 */
#ifndef WEFT_GROUP_H
#define WEFT_GROUP_H

#include <stdint.h>
#include <weft/export.h>
#include <weft/runtime.h>

WEFT_BEGIN_DECLS

struct weft_group {
	/* Private.  shared: 2 * (the part of the count kept atomically) + a
	 * "waiter asleep" bit.  local: the part of the count kept privately by
	 * the initialising worker `owner` (NULL on other threads).  waiter: the
	 * worker asleep in weft_group_wait, NULL for another thread. */
	uint32_t shared;
	uint32_t reserved_;
	int64_t local;
	void *owner;
	void *waiter;
};

WEFT_API void weft_group_init(struct weft_group *g);
/* Spawn fn(arg) as a member of g.  0 or -errno as weft_spawn. */
WEFT_API int weft_group_spawn(weft_rt *rt, struct weft_group *g, void (*fn)(void *arg), void *arg);
/* Return once every task spawned into g has finished. */
WEFT_API void weft_group_wait(weft_rt *rt, struct weft_group *g);

/*
 * Run a(arg_a) and b(arg_b), possibly at the same time, and return once
 * both have finished: the fork-join of one spawn (rayon::join, Lace's
 * SPAWN/SYNC).  On a worker of rt, b is made stealable, a runs on the
 * calling thread, and b then runs here too unless a thief took it; then
 * the worker helps (its own tasks, stealing) until b is done.  No
 * allocation: b's frame is on this call's stack.  From any other thread b
 * goes through the injection queue, a runs here, and the thread sleeps
 * until b is done.
 *
 * 0, or -EINVAL (NULL rt, a or b; nothing runs), -ESHUTDOWN or -ENOMEM
 * from another thread as weft_spawn (nothing runs).  On a worker it does
 * not fail: when b cannot be made stealable, both run here.
 *
 * "Stealable": b is offered to thieves at once when workers are parked
 * and none is looking for work, or when b is this worker's only queued
 * task and no worker of its node is idle (a join of two long halves then
 * runs side by side as soon as another worker is free; taking such a b
 * back costs this worker a CAS, some 20-30 ns here).  Otherwise, as for any task
 * a worker spawns (weft_group_spawn too), when a thief asks and this
 * worker next spawns or waits: an a() that computes for long without
 * either, while other tasks are queued here or a worker was looking for
 * work at the call, keeps b here until it returns.
 */
WEFT_API int weft_join(weft_rt *rt, void (*a)(void *arg_a), void *arg_a, void (*b)(void *arg_b), void *arg_b);

WEFT_END_DECLS

#endif
