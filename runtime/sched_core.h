/*
 * sched_core.h: the component scheduler's decision core.
 *
 * A single-threaded data structure: it decides which requests hold which
 * components and which waiting requests a release or a cancel lets in.  It
 * takes no lock, makes no syscall and calls back only through the grant
 * function a caller passes in; acquire.c calls it under its one lock.
 *
 * A request is a slot (id) holding merged deps (sorted by component, one
 * entry per component, WRITE wins over READ), an arrival number, a bypass
 * count and a user pointer.  Its life:
 *
 *   sched_req_alloc -> IDLE --try_grant / enqueue--> GRANTED
 *                       |                              |  (caller releases the
 *                       |--enqueue--> WAITING --grant--+   deps, frees the slot)
 *                       |               |
 *                       |<---cancel-----+
 *   sched_req_free (IDLE or GRANTED)
 *
 * Fairness (see sched_core.c for why it is deadlock-free and bounded):
 *   - Each request gets an arrival number when it calls try_grant or
 *     enqueue.  A grant of X "overtakes" every waiting request that arrived
 *     before X and conflicts with X (a common component, one side WRITE);
 *     each overtaken request's bypass count goes up by one, at most once
 *     per grant.
 *   - When a waiting request's bypass count reaches max_bypass it becomes
 *     reserved.  With strict_order (or max_bypass 0) every request is
 *     reserved as soon as it waits.
 *   - A reserved waiting request V blocks, at each of its components, every
 *     conflicting request that arrived after V, reserved or not: new
 *     conflicting requests queue behind it.  Older ones may still pass it
 *     (that is no overtake), and among reserved requests the oldest goes
 *     first.
 *   Consequence: a waiting request is overtaken at most max_bypass times,
 *   and with strict_order never, i.e. conflicting requests are granted in
 *   arrival order.
 *
 * Work conservation: after every call, no waiting request could be granted
 * (each conflicts with a holder or is blocked by a reservation as above).
 */
#ifndef WEFT_SCHED_CORE_H
#define WEFT_SCHED_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <weft/acquire.h>

/* The most requests (waiting or granted through a slot) at once. */
#define SCHED_MAX_REQS (1u << 24)

enum sched_state {
	SCHED_REQ_FREE,    /* slot not in use */
	SCHED_REQ_IDLE,    /* allocated; neither waiting nor granted */
	SCHED_REQ_WAITING, /* enqueued, not yet granted */
	SCHED_REQ_GRANTED, /* holds its deps until the caller releases them */
};

struct sched_stats {
	uint64_t grants;       /* requests granted (try, enqueue, release, cancel) */
	uint64_t waits;        /* requests that had to wait */
	uint64_t cancelled;    /* waiting requests removed by sched_cancel */
	uint64_t reservations; /* requests that became reserved */
	uint64_t max_bypassed; /* largest bypass count any request reached */
	uint64_t examined;     /* waiting requests looked at by release/cancel
				* (each one granted or re-parked): the cost */
};

/* Introspection for tests and for acquire.c's diagnostics. */
struct sched_req_info {
	enum sched_state state;
	uint32_t bypass;
	bool reserved;
	uint64_t arrival;
};

struct sched;

/* Called once per request granted by release or cancel, in grant order
 * (NULL: not told).  It must not call back into the scheduler. */
typedef void (*sched_grant_fn)(void *ctx, uint32_t id);

/* ncomponents in 1..2^24.  0, -EINVAL or -ENOMEM. */
int sched_create(struct sched **out, uint32_t ncomponents, uint32_t max_bypass, bool strict_order);
void sched_destroy(struct sched *s);

/*
 * Validate and merge deps into out (room for WEFT_MAX_DEPS): sorted by
 * component, duplicates merged, WRITE wins.  Returns the merged count,
 * -EINVAL (NULL deps with n > 0, component >= ncomponents, access other
 * than READ/WRITE) or -E2BIG (n > WEFT_MAX_DEPS).
 */
int sched_merge_deps(const struct weft_dep *deps, size_t n, uint32_t ncomponents, struct weft_dep *out);

/* A new IDLE request with merged deps.  Id >= 0, or -EINVAL / -E2BIG as
 * sched_merge_deps, or -ENOMEM (also when SCHED_MAX_REQS are in use).
 * Slots are recycled; they grow by doubling, never per request. */
int sched_req_alloc(struct sched *s, const struct weft_dep *deps, size_t n, void *user);
/* Give back an IDLE or GRANTED slot.  0, or -EINVAL for a bad id or a
 * WAITING one (cancel it first). */
int sched_req_free(struct sched *s, uint32_t id);
const struct weft_dep *sched_req_deps(const struct sched *s, uint32_t id, size_t *n);
void *sched_req_user(const struct sched *s, uint32_t id);
int sched_req_info(const struct sched *s, uint32_t id, struct sched_req_info *out);

/* Grant IDLE request id now if it conflicts with no holder and no
 * reservation blocks it: 0 (now GRANTED), -EBUSY (still IDLE, nothing
 * changed), -EINVAL (not an IDLE request). */
int sched_try_grant(struct sched *s, uint32_t id);

/* Queue IDLE request id: 1 when it waits, 0 when it could be granted at
 * once (then it is GRANTED, as with try_grant), -EINVAL (not IDLE), or
 * -ENOMEM (no memory for its component's parked sets; nothing changed). */
int sched_enqueue(struct sched *s, uint32_t id);

/*
 * Give back deps held by a grant (merged, as sched_req_deps returns them;
 * the grant's slot may already be freed or the deps copied elsewhere) and
 * grant every waiting request that this lets in, calling fn for each.
 * Returns the number granted, or -EINVAL (deps not merged, or not held in
 * that mode) and then changes nothing.
 */
int sched_release(struct sched *s, const struct weft_dep *deps, size_t n, sched_grant_fn fn, void *ctx);

/* sched_release of GRANTED request id's deps, then sched_req_free(id). */
int sched_release_req(struct sched *s, uint32_t id, sched_grant_fn fn, void *ctx);

/* Remove WAITING request id (it becomes IDLE, as if never asked: arrival
 * and bypass count cleared; the caller answers it with -ECANCELED and frees
 * it, or asks again later).  If it was reserved, requests it held back may
 * now be granted through fn.  Number granted, or -EINVAL if not WAITING. */
int sched_cancel(struct sched *s, uint32_t id, sched_grant_fn fn, void *ctx);

/* The lowest waiting id, or -1: for draining at shutdown. */
int sched_first_waiter(const struct sched *s);
uint32_t sched_nwaiting(const struct sched *s);

/* Holders of component c. */
void sched_comp_holders(const struct sched *s, uint32_t c, uint32_t *readers, bool *writer);
void sched_get_stats(const struct sched *s, struct sched_stats *out);

/* For tests: check the internal invariants (I1 parking, I4 lists and sets,
 * wait lists in arrival order, the per-component counts, the free set)
 * by recounting.  0, or -EFAULT with a description in why[len]. */
int sched_check(const struct sched *s, char *why, size_t len);

/* Hand holders of component c between the core and a lock-free layer
 * above it (acquire.c keeps uncontended components out of the core).  Only
 * for a component no waiting request names: the core's counts for c are
 * simply replaced. */
void sched_comp_set_holders(struct sched *s, uint32_t c, uint32_t readers, bool writer);

#endif
