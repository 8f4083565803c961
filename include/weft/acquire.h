/*
 * acquire.h: the component scheduler.
 *
 * Components are shared things (a table, a shard, an ECS component array)
 * named by dense integer ids below weft_config.components, or by name via
 * weft_component().  A request names a set of components, each READ or
 * WRITE; any number of READ holders or one WRITE holder per component.
 * Requests never deadlock with each other (a request is granted whole or
 * not at all; but see weft_acquire_wait on a worker) and are never
 * starved: a waiting request is overtaken by later conflicting ones at
 * most weft_config.max_bypass times, after which what it needs is reserved
 * for it.
 */
#ifndef WEFT_ACQUIRE_H
#define WEFT_ACQUIRE_H

#include <stddef.h>
#include <stdint.h>
#include <weft/export.h>
#include <weft/runtime.h>

WEFT_BEGIN_DECLS

enum { WEFT_READ = 1, WEFT_WRITE = 2 };

/* The most deps one request may name; more gives -E2BIG. */
#define WEFT_MAX_DEPS 64

struct weft_dep {
	uint32_t comp;
	uint32_t access; /* WEFT_READ or WEFT_WRITE */
};

/* What was granted; released exactly once with weft_release. */
struct weft_grant;

/* status 0: every dep is held, release grant when done.  status < 0: grant
 * is NULL and the request is over: -ECANCELED (still waiting when
 * weft_destroy found nothing else to run) or -ENOMEM (no memory for it on
 * the worker that took it). */
typedef void (*weft_acquire_fn)(struct weft_grant *grant, int status, void *ctx);

/* The id for a name: the same name always gives the same id.  -EINVAL for
 * a NULL name, -ENOSPC when every id is taken. */
WEFT_API int weft_component(weft_rt *rt, const char *name);

/* Ask for deps; returns at once.  cb runs on a worker once they are held.
 * deps is copied.  0 or -errno; a failed call changes nothing.  The request
 * is queued (on a worker: on its node) and the components are requested
 * when a worker takes it, not during the call: a weft_try_acquire or
 * weft_acquire_wait made after it by the same thread may be granted
 * first.  The same holds for weft_spawn_with. */
WEFT_API int weft_acquire(weft_rt *rt, const struct weft_dep *deps, size_t n, weft_acquire_fn cb, void *ctx);

/* Give back what a grant holds.  Any thread, exactly once per grant. */
WEFT_API void weft_release(struct weft_grant *grant);

/* Grant now or return -EBUSY; never jumps ahead of a request that the
 * fairness rule protects. */
WEFT_API int weft_try_acquire(weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_grant **out);

/* Block until granted.  A worker keeps running other tasks meanwhile, on
 * the same stack; any other thread sleeps on a futex.  -EDEADLK: called in
 * a task that such a wait runs, for a component the enclosing wait holds
 * or waits for, and not grantable at once (waiting would hang both).  A
 * task that holds components while it blocks on a worker (a wait, a
 * weft_group_wait) is not checked: a task it runs meanwhile that waits for
 * them hangs.  -ECANCELED: still waiting when weft_destroy found nothing
 * else to run. */
WEFT_API int weft_acquire_wait(weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_grant **out);

/* Acquire deps, run fn(arg) on a worker, release.  A request still waiting
 * when weft_destroy finds nothing else can run is dropped: fn never runs. */
WEFT_API int weft_spawn_with(weft_rt *rt, const struct weft_dep *deps, size_t n, void (*fn)(void *arg), void *arg);

/* The merged, sorted deps a grant holds. */
WEFT_API const struct weft_dep *weft_grant_deps(const struct weft_grant *grant, size_t *n);

WEFT_END_DECLS

#endif
