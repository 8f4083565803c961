/*
 * acquire.h (internal): the component scheduler's hooks into the runtime.
 * The public API is include/weft/acquire.h; the design is at the top of
 * acquire.c.
 */
#ifndef WEFT_ACQUIRE_INTERNAL_H
#define WEFT_ACQUIRE_INTERNAL_H

#include <stdbool.h>

#include <weft/acquire.h>
#include <weft/runtime.h>
#include <weft/stats.h>

struct weft_rt;

/* Part of weft_create; 0 or -errno (acquire_fini cleans up either way). */
int acquire_init(struct weft_rt *rt, const struct weft_config *cfg);
/* Part of freeing the runtime: reports and frees unreleased grants. */
void acquire_fini(struct weft_rt *rt);
/* Called once nothing else can run at shutdown: cancels waiting requests
 * (their callbacks get -ECANCELED).  True if that made new work. */
bool acquire_cancel_stuck(struct weft_rt *rt);
void acquire_stats(struct weft_rt *rt, struct weft_acquire_stats *out);
/* Is fn the task that carries a weft_acquire / weft_spawn_with request
 * with more deps than fit in an injection item (the rest travel in the
 * item: inject_item_is_request)?  A worker that pops either kind first
 * takes it alone (take_injected). */
bool acquire_is_request(void (*fn)(void *));
struct weft_worker;
struct weft_inject_item;
/* A request item (inject.h) taken by worker w: its grant is made in w's
 * memory and the item becomes the task that requests it (fn, arg; aux
 * cleared).  False when there was no memory: the request is then answered
 * (a callback gets -ENOMEM) and nothing is left to run. */
bool acquire_item_to_task(struct weft_worker *w, struct weft_inject_item *it);
struct submitter;
/* Frees the grants a submitter record made; returns how many were never
 * released. */
unsigned acquire_free_grants(struct submitter *rec);

#endif
