/*
 * acquire.c: the component scheduler's concurrent layer (weft_acquire and
 * friends) around the single-threaded decision core (sched_core.c).
 *
 * Overview
 *   Every component has one atomic word (own cache line):
 *       bits 0..31  readers holding it     (meaningful while SLOW is clear)
 *       bit 32      WRITER holds it        (idem)
 *       bit 33      SLOW: the core owns this component's holders
 *   Fast path (no lock, no syscall): while none of a request's components
 *   is SLOW, acquiring is one CAS per component on these words, and so is
 *   releasing.  A request that cannot be granted that way takes the one
 *   lock `lock` and goes to the core: first every component it names is
 *   made SLOW (fetch_or, which also captures the holders of the moment and
 *   hands them to the core: "import"), then the core grants it or parks it.
 *   A component goes back to fast mode ("export": core holders -> word,
 *   SLOW cleared) as soon as no waiting request names it.
 *
 * The lock
 *   A futex word taken by spinning first (slow_lock): critical sections
 *   are short and a futex sleep + wake costs tens of microseconds on a VM.
 *   Releases never wait for it.  A release that has SLOW components left
 *   after its fast CASes takes the lock if it is free; if not, it pushes
 *   the grant (those deps compacted into it) on `posted` and returns, and
 *   whoever holds the lock applies every posted release before letting go
 *   (core_lock applies them too, so the core is current when a holder
 *   starts).  Why no post is left behind: see "Posted releases" below.
 *   Only requests that must know their answer at once (try_acquire,
 *   acquire_wait, and acquire/spawn_with requests when a worker makes
 *   them) wait for the lock.
 *
 * Invariants
 *   - SLOW clear: the word counts every holder of c and the core counts
 *     none.  SLOW set: the core counts every holder and the word is only
 *     written under `lock` (fast CASes expect SLOW clear and so fail).
 *   - A component named by any waiting request is SLOW (want[c] > 0), so a
 *     fast acquire can never overtake a waiter: fairness is entirely the
 *     core's (max_bypass, strict order, see sched_core.h).
 *   - A release that saw SLOW is applied under the lock, where the word is
 *     read again: if the component was exported meanwhile, it releases on
 *     the word instead (apply_release).  A posted release is still
 *     counted as held by the core until it is applied; the holder applies
 *     it before unlocking, so it only ever delays grants, by one critical
 *     section.
 *
 * Why no grant is lost: every state change of a SLOW component happens
 *   under `lock` through the core, which after each release or cancel
 *   returns exactly the waiters that became grantable (sched_core.h: work
 *   conservation).  Those are collected under the lock and dispatched after
 *   it (core_unlock): a callback becomes a task, a blocked acquire_wait gets
 *   exactly one wake (futex, or its worker's park token).  Nothing is
 *   broadcast.  A weft_spawn_with task whose release grants other
 *   weft_spawn_with requests runs one of them next on the same worker
 *   (grant_task, at most CHAIN_MAX in a row) instead of queueing it.
 *
 * Grants live in a frame of the acquiring worker's arena (at most
 * GRANT_INLINE_DEPS deps), in the calling thread's grant cache (threads
 * that are not workers), or otherwise in malloc'd memory kept on a list so
 * weft_destroy can report and free what callers never released.
 * weft_acquire / weft_spawn_with (from any thread, workers included)
 * merge and check the deps at the call and send the request to a worker
 * inside an injection item (up to GRANT_INLINE_DEPS deps; more go as a
 * malloc'd grant); the worker makes the grant in its own arena
 * (acquire_item_to_task), requests the components and, when they are
 * granted at once, runs the callback right away (request_task).
 */
#include "acquire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "os.h"
#include "rt.h"
#include "sched_core.h"

#define W_READERS 0xffffffffull
#define W_WRITER (1ull << 32)
#define W_SLOW (1ull << 33)

#define GRANT_INLINE_DEPS 4
#define NO_ARENA 0xffffu     /* malloc'd, on the boxes list */
#define THREAD_CACHE 0xfffeu /* from a submitter record's cache */

enum { G_CALLBACK, G_SPAWN, G_WAIT };

/*
 * A blocked weft_acquire_wait.  word: WAIT_PENDING, then WAIT_GRANTED or
 * WAIT_CANCELLED (final, written once by the waker).  A thread that is not
 * a worker announces WAIT_SLEEPING before its futex wait; a waker that
 * finds it so stores the final value with WAIT_WAKING, wakes, then stores
 * the final value alone, and the waiter does not return while WAKING is
 * set: the wake can never arrive late, at a later wait on the same stack
 * address (where it would be a spurious wakeup).  While WAKING is set the
 * waiter yields a few times, then sleeps in short timed waits: it never
 * spins for as long as a preempted waker is off its CPU.  A worker waits
 * by helping (worker_help_until) and is told through its park token.
 */
enum { WAIT_PENDING = 0, WAIT_GRANTED = 1, WAIT_CANCELLED = 2, WAIT_SLEEPING = 3, WAIT_WAKING = 4 };

struct wait_slot {
	uint32_t word;
	struct weft_worker *worker; /* helping in worker_help_until, or NULL */
	struct weft_grant *grant;
	struct wait_slot *outer;    /* the worker's enclosing wait, if any */
};

struct weft_grant {
	struct weft_rt *rt;
	uint8_t n;
	uint8_t kind;
	uint16_t arena;             /* frame owner, or NO_ARENA (malloc) */
	uint32_t reserved_;
	union {
		struct {
			weft_acquire_fn cb;
			void *ctx;
		} cb;
		struct {
			void (*fn)(void *);
			void *arg;
		} task;
		struct wait_slot *wait;
		struct weft_grant *next; /* posted for release (core_unlock) */
	} u;
	struct weft_dep deps[];
};

_Static_assert(sizeof(struct weft_grant) + GRANT_INLINE_DEPS * sizeof(struct weft_dep) <= sizeof(struct weft_task),
	       "an inline grant fits in a frame");

/* malloc'd grants carry list links in front, for weft_destroy. */
struct grant_link {
	struct grant_link *prev, *next;
};

struct grant_box {
	struct grant_link link;
	struct weft_grant g;
};

/* Grants that weft_try_acquire and weft_acquire_wait make on threads that
 * are not workers (up to GRANT_INLINE_DEPS deps) are recycled through the
 * thread's submitter record: `all` chains every one the record ever made
 * (so weft_destroy can free the ones never released), `next` the free
 * ones.  (weft_acquire / weft_spawn_with from such a thread send their
 * deps to a worker instead, which makes the grant: acquire_item_to_task.) */
struct cached_grant {
	struct cached_grant *all;
	void *next; /* free list; void * so give_back can link it */
	struct submitter *owner;
	struct weft_grant g;
};

#define CACHED_GRANT_BYTES (sizeof(struct cached_grant) + GRANT_INLINE_DEPS * sizeof(struct weft_dep))

static struct weft_grant *cached_grant_new(struct weft_rt *rt)
{
	struct submitter *rec = rt_submitter(rt);
	if (!rec)
		return NULL;
	struct cached_grant *c = rec->grant_local;
	if (!c) {
		/* acquire: pairs with cached_grant_free's release push. */
		c = exchange_acq_rel(&rec->grant_remote, NULL);
	}
	if (c) {
		rec->grant_local = c->next;
		/* The next grant was last written by the worker that freed it:
		 * start moving its line here now, a submission ahead. */
		if (rec->grant_local)
			prefetch_for_write(rec->grant_local);
	} else {
		c = malloc(CACHED_GRANT_BYTES);
		if (!c)
			return NULL;
		c->owner = rec;
		c->all = rec->grant_all;
		rec->grant_all = c;
		rec->grant_total++;
	}
	c->g.arena = THREAD_CACHE;
	return &c->g;
}

/* Give a node back to the thread that owns `*head`: a push-only stack the
 * owner drains whole with one exchange (so no ABA); `link` is the node's
 * next field. */
static void give_back(void **head, void *node, void **link)
{
	void *old = load_relaxed(head);
	do {
		*link = old;
		/* release: our last reads of the node happen before the owner's
		 * acquire exchange hands it out again. */
	} while (!cas_release(head, &old, node));
}

/*
 * A worker that releases a cached grant (a thread handed it over after
 * weft_try_acquire / weft_acquire_wait) gives it back in batches: one CAS on
 * the owner's grant_remote per GIVE_BATCH grants instead of one per grant
 * (that line is written by every worker and read by the owner).  A batch
 * holds the grants of one owner; it goes back when full, when a grant of
 * another owner comes, and at weft_destroy (acquire_fini, before the
 * owners count what was never released).  Meanwhile an owner short of
 * grants mallocs more: at most GIVE_BATCH - 1 per worker are held back.
 */
#define GIVE_BATCH 16

struct give_batch {
	struct submitter *owner;
	struct cached_grant *head, *tail;
	unsigned n;
} WEFT_ALIGNED;

static void give_batch_flush(struct give_batch *b)
{
	if (!b->n)
		return;
	give_back(&b->owner->grant_remote, b->head, &b->tail->next);
	b->head = b->tail = NULL;
	b->n = 0;
}

unsigned acquire_free_grants(struct submitter *rec)
{
	unsigned free_count = 0;
	struct cached_grant *lists[2] = { rec->grant_local, rec->grant_remote };
	for (int i = 0; i < 2; i++)
		for (struct cached_grant *c = lists[i]; c; c = c->next)
			free_count++;
	struct cached_grant *c = rec->grant_all;
	while (c) {
		struct cached_grant *next = c->all;
		free(c);
		c = next;
	}
	unsigned leaked = rec->grant_total - free_count;
	rec->grant_all = rec->grant_local = rec->grant_remote = NULL;
	rec->grant_total = 0;
	return leaked;
}

struct comp_word {
	uint64_t v;
} WEFT_ALIGNED;

/* ---- the slow path's lock -------------------------------------------------------- */

/*
 * A futex word: 0 free, 1 held, 2 held and someone may sleep on it.  Workers
 * take it, and so do other threads in release / try_acquire / acquire_wait
 * and when they link a malloc'd grant (boxes_edit), for a few hundred ns at
 * a time, so a waiter spins first: a futex sleep and wake costs tens of
 * microseconds on a VM, far more than the critical section (glibc's default
 * mutex sleeps at once, and under contention that was a quarter of the
 * congested ECS rows' time).  After the spin it sleeps, so a preempted
 * holder does not burn the other CPU for long.
 */
#define LOCK_SPINS 256

static void slow_lock(uint32_t *word)
{
	uint32_t v = 0;
	/* acquire: pairs with core_unlock's exchange. */
	if (likely(cas_acq_rel(word, &v, 1)))
		return;
	for (unsigned i = 0; i < LOCK_SPINS; i++) {
		cpu_relax();
		v = load_relaxed(word);
		/* acquire: pairs with core_unlock's exchange. */
		if (v == 0 && cas_acq_rel(word, &v, 1))
			return;
	}
	/* acquire: pairs with core_unlock's exchange.  Marking 2 makes the
	 * holder wake one sleeper when it leaves. */
	while (exchange_acq_rel(word, 2) != 0)
		os_futex_wait(word, 2, -1);
}


struct weft_acquire {
	unsigned ncomp;
	struct comp_word *words;

	uint32_t lock WEFT_ALIGNED; /* the core, want[], names, boxes, stats:
				     * core_lock / core_unlock */
	struct weft_grant *posted;  /* releases for the holder to apply */
	struct give_batch *give;    /* per worker, written by that worker only */
	struct sched *core;
	uint32_t *want;             /* waiting requests naming each component */
	struct grant_link boxes;    /* list of malloc'd grants */

	/* Names: open addressing, power-of-two table, under `lock`. */
	char **names;
	uint32_t *name_ids;
	unsigned name_cap, name_count;

	/* Counted under `lock`. */
	uint64_t waits, wakeups, spurious, cancelled;
	/* Counted with relaxed RMWs: from threads that are not workers and
	 * have no submitter record (its allocation failed). */
	uint64_t grants_fast_outside;
	/* Dispatches in flight that rt_try_exit cannot see: those of threads
	 * that are not workers, and the cancels of acquire_cancel_stuck.
	 * Raised under `lock`, lowered once the tasks are queued. */
	uint32_t dispatching WEFT_ALIGNED;
};

static void cached_grant_free(struct weft_grant *g)
{
	struct cached_grant *c = (struct cached_grant *)((char *)g - offsetof(struct cached_grant, g));
	struct submitter *rec = c->owner;
	struct weft_rt *rt = g->rt;
	if (rt_submitter_is_mine(rt, rec)) {
		c->next = rec->grant_local;
		rec->grant_local = c;
		return;
	}
	struct weft_worker *w = weft_tls_worker;
	if (!w || w->rt != rt) {
		give_back(&rec->grant_remote, c, &c->next);
		return;
	}
	struct give_batch *b = &rt->acq->give[w->index];
	if (b->owner != rec) {
		give_batch_flush(b);
		b->owner = rec;
	}
	c->next = b->head;
	b->head = c;
	if (!b->tail)
		b->tail = c;
	if (++b->n == GIVE_BATCH)
		give_batch_flush(b);
}

/* ---- grant memory ----------------------------------------------------------- */

/* Link (or unlink) a malloc'd grant on the boxes list, under the lock. */
static void boxes_edit(struct weft_rt *rt, struct grant_box *b, bool link);

/* Out of line: the common grant_new stays small enough to inline. */
static __attribute__((noinline)) struct weft_grant *grant_new_box(struct weft_rt *rt, unsigned n)
{
	struct grant_box *b = malloc(sizeof(*b) + n * sizeof(struct weft_dep));
	if (!b)
		return NULL;
	boxes_edit(rt, b, true);
	b->g.arena = NO_ARENA;
	b->g.rt = rt;
	b->g.n = (uint8_t)n;
	return &b->g;
}

/* A grant of n <= GRANT_INLINE_DEPS deps in a frame of worker w's arena,
 * or malloc'd when the arena has none (it cannot grow). */
static struct weft_grant *grant_new_on_worker(struct weft_worker *w, unsigned n)
{
	struct weft_task *t = arena_alloc(&w->arena);
	if (unlikely(!t))
		return grant_new_box(w->rt, n);
	struct weft_grant *g = (struct weft_grant *)t;
	g->arena = (uint16_t)w->index;
	g->rt = w->rt;
	g->n = (uint8_t)n;
	return g;
}

/* A frame or a cached grant when the deps fit; malloc otherwise, and also
 * when those run out. */
static struct weft_grant *grant_new(struct weft_rt *rt, unsigned n)
{
	struct weft_worker *w = weft_tls_worker;
	bool mine = w && w->rt == rt;
	if (n > GRANT_INLINE_DEPS)
		return grant_new_box(rt, n);
	if (mine)
		return grant_new_on_worker(w, n);
	struct weft_grant *g = cached_grant_new(rt);
	if (unlikely(!g))
		return grant_new_box(rt, n);
	g->rt = rt;
	g->n = (uint8_t)n;
	return g;
}

static void grant_free(struct weft_grant *g)
{
	struct weft_rt *rt = g->rt;
	if (g->arena == THREAD_CACHE) {
		cached_grant_free(g);
		return;
	}
	if (g->arena != NO_ARENA) {
		struct weft_worker *self = weft_tls_worker;
		struct weft_arena *owner = &rt->workers[g->arena]->arena;
		struct weft_task *t = (struct weft_task *)g;
		t->arena = g->arena;
		if (self && self->rt == rt)
			arena_free(&self->arena, owner, t);
		else
			arena_free(NULL, owner, t);
		return;
	}
	struct grant_box *b = (struct grant_box *)((char *)g - offsetof(struct grant_box, g));
	boxes_edit(rt, b, false);
	free(b);
}

/* ---- dispatch ----------------------------------------------------------------- */

static struct weft_grant *release_grant(struct weft_grant *g, bool keep);

/* How many weft_spawn_with grants one worker runs back to back, each
 * handed over by the release of the one before, before it pushes them as
 * tasks again (so its deque and the injection queues are looked at). */
#define CHAIN_MAX 16

/* Run a granted request.  A weft_spawn_with task releases its grant when
 * fn returns; if that release grants other spawn requests, this worker
 * runs one of them next itself (the rest become tasks): no task frame, no
 * deque round trip, and the components it needs are still in this core's
 * cache. */
static void grant_task(void *p)
{
	struct weft_grant *g = p;
	if (g->kind == G_CALLBACK) {
		g->u.cb.cb(g, 0, g->u.cb.ctx);
		return;
	}
	for (unsigned i = 0; g; i++) {
		g->u.task.fn(g->u.task.arg);
		g = release_grant(g, i + 1 < CHAIN_MAX);
	}
}

/* A cancelled weft_acquire: the grant itself carries the callback to a
 * worker (no allocation that could fail, so no callback runs inline while
 * acquire_cancel_stuck counts its dispatch). */
static void cancelled_task(void *p)
{
	struct weft_grant *g = p;
	weft_acquire_fn cb = g->u.cb.cb;
	void *ctx = g->u.cb.ctx;
	grant_free(g);
	cb(NULL, -ECANCELED, ctx);
}

/* Run something on a worker, from any thread, also while draining. */
static void spawn_internal(struct weft_rt *rt, void (*fn)(void *), void *arg)
{
	struct weft_worker *w = weft_tls_worker;
	if (w && w->rt == rt && rt_push_local(w, fn, arg, NULL, 0) == 0)
		return;
	while (rt_push_outside(rt, -1, false, fn, arg, NULL, true) < 0)
		sched_yield();
}

/* Wake exactly the one thread blocked in weft_acquire_wait (value:
 * WAIT_GRANTED or WAIT_CANCELLED). */
static void wake_waiter(struct weft_acquire *a, struct wait_slot *s, uint32_t value)
{
	struct weft_worker *w = s->worker;
	fetch_add_relaxed(&a->wakeups, 1);
	if (w) {
		/* release: the waiter's acquire load of the word sees the
		 * grant.  The slot may be gone after this store; the worker
		 * is long-lived. */
		store_release(&s->word, value);
		park_notify(w);
		return;
	}
	uint32_t v = WAIT_PENDING;
	/* acq_rel: release for the grant, as above; the waiter is awake and
	 * will see the value without a wake. */
	if (cas_acq_rel(&s->word, &v, value))
		return;
	/* WAIT_SLEEPING: hold the slot (WAKING) until the wake is done.
	 * release: as above. */
	store_release(&s->word, value | WAIT_WAKING);
	os_futex_wake(&s->word, 1);
	/* release: the waiter may return (and its slot go) once it sees this. */
	store_release(&s->word, value);
}

static void dispatch(struct weft_rt *rt, struct weft_grant *g)
{
	if (g->kind == G_WAIT)
		wake_waiter(rt->acq, g->u.wait, WAIT_GRANTED);
	else
		spawn_internal(rt, grant_task, g);
}

static void dispatch_cancel(struct weft_rt *rt, struct weft_grant *g)
{
	if (g->kind == G_WAIT) {
		/* A worker frees its own grant when it sees the cancel (an
		 * inner wait may still read its deps, and the worker keeps the
		 * runtime alive until then).  Another thread may wake only
		 * after weft_destroy freed everything: free it for that one. */
		bool worker = g->u.wait->worker != NULL;
		wake_waiter(rt->acq, g->u.wait, WAIT_CANCELLED);
		if (!worker)
			grant_free(g);
		return;
	}
	if (g->kind == G_CALLBACK) {
		spawn_internal(rt, cancelled_task, g); /* frees g */
		return;
	}
	/* A weft_spawn_with request that never got its components: its
	 * function does not run. */
	grant_free(g);
}

/* ---- the fast path -------------------------------------------------------------- */

/* Release dep i on the word; false if the component is SLOW. */
static bool word_release(struct weft_acquire *a, const struct weft_dep *d)
{
	uint64_t *word = &a->words[d->comp].v;
	uint64_t v = load_relaxed(word);
	for (;;) {
		if (v & W_SLOW)
			return false;
		uint64_t nv = d->access == WEFT_WRITE ? v & ~W_WRITER : v - 1;
		/* release: pairs with the next holder's acquire CAS. */
		if (cas_release(word, &v, nv))
			return true;
	}
}

static bool word_acquire(struct weft_acquire *a, const struct weft_dep *d)
{
	uint64_t *word = &a->words[d->comp].v;
	uint64_t v = load_relaxed(word);
	for (;;) {
		if (v & W_SLOW)
			return false;
		uint64_t nv;
		if (d->access == WEFT_WRITE) {
			if (v & (W_WRITER | W_READERS))
				return false;
			nv = v | W_WRITER;
		} else {
			if (v & W_WRITER)
				return false;
			nv = v + 1;
		}
		/* acquire: pairs with the previous holder's release. */
		if (cas_acq_rel(word, &v, nv))
			return true;
	}
}

static void release_deps(struct weft_rt *rt, const struct weft_dep *deps, unsigned n);

/* All deps on the words, or none: false, with *at the dep that failed. */
static bool try_fast(struct weft_rt *rt, const struct weft_dep *deps, unsigned n, unsigned *at)
{
	struct weft_acquire *a = rt->acq;
	for (unsigned i = 0; i < n; i++) {
		if (!word_acquire(a, &deps[i])) {
			release_deps(rt, deps, i);
			*at = i;
			return false;
		}
	}
	return true;
}

/*
 * A request met a holder on a component that is not SLOW (nobody waits
 * there).  Its tasks are often short: rather than queueing in the core at
 * once -- which makes its components SLOW, so every request naming them
 * goes through the lock until it is granted -- look at that word a few
 * times first.  True when it looks free for us now (worth another fast
 * try); false when it went SLOW or stayed held (go to the core).  While we
 * look we are not waiting in the core: the request simply arrives a few
 * hundred ns later, so this neither jumps nor is jumped by a waiter.
 */
#define FAST_LOOKS 12

static bool fast_holder_left(struct weft_acquire *a, const struct weft_dep *d)
{
	const uint64_t *word = &a->words[d->comp].v;
	uint64_t busy = d->access == WEFT_WRITE ? (W_WRITER | W_READERS) : W_WRITER;
	for (unsigned i = 0; i < FAST_LOOKS; i++) {
		cpu_relax();
		uint64_t v = load_relaxed(word);
		if (v & W_SLOW)
			return false;
		if (!(v & busy))
			return true;
	}
	return false;
}

/* ---- the slow path (under a->lock) ------------------------------------------------- */

static void import(struct weft_acquire *a, uint32_t c)
{
	uint64_t *word = &a->words[c].v;
	if (load_relaxed(word) & W_SLOW)
		return;
	/* acq_rel: capture the holders of this instant (acquire pairs with
	 * their CASes); from now on fast CASes fail. */
	uint64_t v = fetch_or_acq_rel(word, W_SLOW);
	sched_comp_set_holders(a->core, c, (uint32_t)(v & W_READERS), (v & W_WRITER) != 0);
}

static void maybe_export(struct weft_acquire *a, uint32_t c)
{
	uint64_t *word = &a->words[c].v;
	if (a->want[c] != 0 || !(load_relaxed(word) & W_SLOW))
		return;
	uint32_t readers;
	bool writer;
	sched_comp_holders(a->core, c, &readers, &writer);
	sched_comp_set_holders(a->core, c, 0, false);
	/* release: fast acquirers that see SLOW clear also see the holders
	 * (and whatever the core's last holders published). */
	store_release(word, (uint64_t)readers | (writer ? W_WRITER : 0));
}

/* Grants made under the lock, dispatched after it.  total counts every
 * entry of the chain (kept in the head). */
struct granted {
	struct weft_grant *g[64];
	unsigned n, total;
	struct granted *more; /* overflow, malloc'd */
};

static void collect(void *ctx, uint32_t id)
{
	struct granted *out = ctx, *head = ctx;
	while (out->n == 64) {
		if (!out->more) {
			out->more = calloc(1, sizeof(*out->more));
			if (!out->more)
				abort();
		}
		out = out->more;
	}
	out->g[out->n++] = (struct weft_grant *)(uintptr_t)id;
	head->total++;
}

/* After the core granted the ids in `out` from entry `from` on (stored as
 * ids for now): free their core slots, drop their want counts, export what
 * nobody waits for any more, and turn ids into grants. */
static void settle(struct weft_acquire *a, struct granted *out, unsigned from)
{
	unsigned skip = from;
	for (struct granted *p = out; p; p = p->more) {
		unsigned i0 = skip < p->n ? skip : p->n;
		skip -= i0;
		for (unsigned i = i0; i < p->n; i++) {
			uint32_t id = (uint32_t)(uintptr_t)p->g[i];
			struct weft_grant *g = sched_req_user(a->core, id);
			for (unsigned k = 0; k < g->n; k++)
				a->want[g->deps[k].comp]--;
			sched_req_free(a->core, id);
			p->g[i] = g;
		}
	}
	skip = from;
	for (struct granted *p = out; p; p = p->more) {
		unsigned i0 = skip < p->n ? skip : p->n;
		skip -= i0;
		for (unsigned i = i0; i < p->n; i++)
			for (unsigned k = 0; k < p->g[i]->n; k++)
				maybe_export(a, p->g[i]->deps[k].comp);
	}
}

static void dispatch_all(struct weft_rt *rt, struct granted *out)
{
	struct granted *p = out;
	bool queued = false;
	while (p) {
		for (unsigned i = 0; i < p->n; i++) {
			queued |= p->g[i]->kind != G_WAIT;
			dispatch(rt, p->g[i]);
		}
		struct granted *next = p->more;
		if (p != out)
			free(p);
		p = next;
	}
	/*
	 * Granted requests are not this worker's children: nothing is gained
	 * by keeping them private, and the worker is likely to run a task of
	 * its own next (a chained grant, at least a microsecond in the
	 * congested ECS rows) before it answers a split request.  Meanwhile
	 * an idle worker sees nothing to steal and the other holders of the
	 * grants' components wait.  Publish them now, as take_injected does.
	 */
	struct weft_worker *w = weft_tls_worker;
	if (queued && w && w->rt == rt) {
		deque_share_all(&w->deque);
		maybe_wake_for(w);
	}
}

/*
 * Posted releases.  A releaser whose components are SLOW does not wait for
 * the lock: if it is taken, it pushes its grant (the deps still to give
 * back to the core, compacted into the grant) on `posted` and returns; the
 * holder applies every posted release before it lets go of the lock.  No
 * post is left behind: the poster pushes and then tries the lock (both
 * seq_cst); a holder unlocks and then looks at `posted` (both seq_cst).  In
 * the single order of those four, either the poster's try comes after the
 * unlock and succeeds (the poster applies its own post), or it fails, came
 * before the unlock, and so did the push: the holder's look sees it, and
 * it takes the lock again (or whoever has it by then does the same).
 */
struct core_ctx {
	struct granted out;     /* grants to dispatch after the lock */
	struct weft_grant *done; /* applied posted grants, freed after it */
};

#define CORE_CTX_INIT { .out = { .n = 0, .total = 0, .more = NULL }, .done = NULL }

/* Give deps back to the core (they were SLOW when their holder looked). */
static void apply_release(struct weft_acquire *a, const struct weft_dep *deps, unsigned n, struct core_ctx *cx)
{
	struct weft_dep core_deps[WEFT_MAX_DEPS];
	unsigned ncore = 0;
	for (unsigned i = 0; i < n; i++) {
		/* Exported since the holder looked: the word counts it again
		 * (SLOW is only set under the lock, so this cannot fail). */
		if (!(load_relaxed(&a->words[deps[i].comp].v) & W_SLOW))
			word_release(a, &deps[i]);
		else
			core_deps[ncore++] = deps[i];
	}
	if (ncore == 0)
		return;
	unsigned from = cx->out.total;
	int r = sched_release(a->core, core_deps, ncore, collect, &cx->out);
	if (r < 0)
		fprintf(stderr, "weft: internal error: release of components not held (%d)\n", r);
	settle(a, &cx->out, from);
	for (unsigned i = 0; i < ncore; i++)
		maybe_export(a, core_deps[i].comp);
}

static void box_unlink(struct weft_grant *g)
{
	struct grant_box *b = (struct grant_box *)((char *)g - offsetof(struct grant_box, g));
	b->link.prev->next = b->link.next;
	b->link.next->prev = b->link.prev;
}

static void drain_posts(struct weft_acquire *a, struct core_ctx *cx)
{
	if (!load_relaxed(&a->posted))
		return;
	/* acquire: pairs with release_grant's push. */
	struct weft_grant *p = exchange_acq_rel(&a->posted, NULL);
	while (p) {
		struct weft_grant *next = p->u.next;
		apply_release(a, p->deps, p->n, cx);
		if (p->arena == NO_ARENA)
			box_unlink(p); /* we hold the lock; freed after it */
		p->u.next = cx->done;
		cx->done = p;
		p = next;
	}
}

static void core_lock(struct weft_acquire *a, struct core_ctx *cx)
{
	slow_lock(&a->lock);
	drain_posts(a, cx);
}

/* Apply what was posted, unlock (taking the lock again if a post came in
 * meanwhile and nobody else has it), free the applied grants and dispatch
 * the grants made.  With `keep`, one weft_spawn_with grant is returned
 * instead of dispatched, for the calling worker to run next. */
static struct weft_grant *core_unlock(struct weft_rt *rt, struct core_ctx *cx, bool keep)
{
	struct weft_acquire *a = rt->acq;
	struct weft_worker *w = weft_tls_worker;
	bool outside = !(w && w->rt == rt), counted = false;
	for (;;) {
		drain_posts(a, cx);
		/* A thread that is not a worker is invisible to shutdown's "every
		 * worker parked, no task queued" while it dispatches what it
		 * granted: count it, under the lock, so acquire_cancel_stuck
		 * waits for it (relaxed: the unlock below publishes it). */
		if (outside && !counted && cx->out.total) {
			fetch_add_relaxed(&a->dispatching, 1);
			counted = true;
		}
		/* seq_cst: against release_grant's push and try (see above);
		 * also the release of our critical section for the next
		 * holder's acquire. */
		if (exchange_seq_cst(&a->lock, 0) == 2)
			os_futex_wake(&a->lock, 1);
		/* seq_cst: see above. */
		if (!load_seq_cst(&a->posted))
			break;
		uint32_t v = 0;
		/* seq_cst: see above; acquire for our new critical section. */
		if (!cas_seq_cst(&a->lock, &v, 1))
			break;
	}
	while (cx->done) {
		struct weft_grant *g = cx->done;
		cx->done = g->u.next;
		if (g->arena == NO_ARENA)
			free((char *)g - offsetof(struct grant_box, g)); /* unlinked */
		else
			grant_free(g);
	}
	struct weft_grant *kept = NULL;
	if (keep) {
		for (unsigned i = 0; i < cx->out.n; i++) {
			if (cx->out.g[i]->kind == G_SPAWN) {
				kept = cx->out.g[i];
				cx->out.g[i] = cx->out.g[--cx->out.n];
				break;
			}
		}
	}
	dispatch_all(rt, &cx->out);
	if (counted) {
		/* release: our tasks are queued before acquire_cancel_stuck's
		 * load_acquire sees the count drop. */
		fetch_sub_release(&a->dispatching, 1);
	}
	return kept;
}

static void boxes_edit(struct weft_rt *rt, struct grant_box *b, bool link)
{
	struct weft_acquire *a = rt->acq;
	struct core_ctx cx = CORE_CTX_INIT;
	core_lock(a, &cx);
	if (link) {
		b->link.next = a->boxes.next;
		b->link.prev = &a->boxes;
		b->link.next->prev = &b->link;
		a->boxes.next = &b->link;
	} else {
		box_unlink(&b->g);
	}
	core_unlock(rt, &cx, false);
}

/* Give deps back and wait for the lock if the core is involved (the
 * rollback of a failed fast acquire). */
static void release_deps(struct weft_rt *rt, const struct weft_dep *deps, unsigned n)
{
	struct weft_acquire *a = rt->acq;
	struct weft_dep slow[WEFT_MAX_DEPS];
	unsigned nslow = 0;
	for (unsigned i = 0; i < n; i++)
		if (!word_release(a, &deps[i]))
			slow[nslow++] = deps[i];
	if (nslow == 0)
		return;
	struct core_ctx cx = CORE_CTX_INIT;
	core_lock(a, &cx);
	apply_release(a, slow, nslow, &cx);
	core_unlock(rt, &cx, false);
}

/* Release grant g and free it.  With `keep` (a worker that will run it),
 * returns one weft_spawn_with request this granted, not dispatched. */
static struct weft_grant *release_grant(struct weft_grant *g, bool keep)
{
	struct weft_rt *rt = g->rt;
	struct weft_acquire *a = rt->acq;
	unsigned nslow = 0;
	/* The deps left for the core are compacted into g itself. */
	for (unsigned i = 0; i < g->n; i++)
		if (!word_release(a, &g->deps[i]))
			g->deps[nslow++] = g->deps[i];
	if (nslow == 0) {
		grant_free(g);
		return NULL;
	}
	g->n = (uint8_t)nslow;
	struct core_ctx cx = CORE_CTX_INIT;
	uint32_t v = 0;
	/* acquire: pairs with core_unlock's exchange. */
	if (cas_acq_rel(&a->lock, &v, 1)) {
		drain_posts(a, &cx);
		apply_release(a, g->deps, g->n, &cx);
		struct weft_grant *kept = core_unlock(rt, &cx, keep);
		grant_free(g);
		return kept;
	}
	struct weft_grant *old = load_relaxed(&a->posted);
	do {
		g->u.next = old;
		/* seq_cst: see "Posted releases"; release for the holder's
		 * acquire exchange in drain_posts. */
	} while (!cas_seq_cst(&a->posted, &old, g));
	v = 0;
	/* seq_cst: see "Posted releases". */
	if (!cas_seq_cst(&a->lock, &v, 1))
		return NULL; /* the holder applies it */
	return core_unlock(rt, &cx, keep);
}

/* Grant g now if the core allows (reservations included), else, when
 * `wait` is set, park it in the core.  Returns 1 granted, 0 waiting,
 * -EBUSY (not granted, not waiting) or -errno. */
static int acquire_slow(struct weft_rt *rt, struct weft_grant *g, bool wait)
{
	struct weft_acquire *a = rt->acq;
	struct core_ctx cx = CORE_CTX_INIT;
	core_lock(a, &cx);
	for (unsigned i = 0; i < g->n; i++)
		import(a, g->deps[i].comp);
	int id = sched_req_alloc(a->core, g->deps, g->n, g);
	int r;
	if (id < 0) {
		r = id;
	} else if (!wait) {
		r = sched_try_grant(a->core, (uint32_t)id) == 0 ? 1 : -EBUSY;
		sched_req_free(a->core, (uint32_t)id);
	} else {
		r = sched_enqueue(a->core, (uint32_t)id);
		if (r == 0) {
			sched_req_free(a->core, (uint32_t)id);
			r = 1;
		} else if (r == 1) {
			for (unsigned i = 0; i < g->n; i++)
				a->want[g->deps[i].comp]++;
			a->waits++;
			r = 0;
		} else {
			sched_req_free(a->core, (uint32_t)id);
		}
	}
	for (unsigned i = 0; i < g->n; i++)
		maybe_export(a, g->deps[i].comp);
	core_unlock(rt, &cx, false);
	return r;
}

static void count_fast_grant(struct weft_rt *rt)
{
	struct weft_worker *w = weft_tls_worker;
	if (w && w->rt == rt) {
		count(&w->stats.grants_fast);
		return;
	}
	struct submitter *rec = rt_submitter(rt);
	if (likely(rec))
		count(&rec->grants_fast);
	else
		fetch_add_relaxed(&rt->acq->grants_fast_outside, 1);
}

/* Validate, merge, allocate. */
/* A grant holding deps that are already merged and checked. */
static int grant_with(struct weft_rt *rt, const struct weft_dep *merged, unsigned m, struct weft_grant **out)
{
	struct weft_grant *g = grant_new(rt, m);
	if (!g)
		return -ENOMEM;
	memcpy(g->deps, merged, (size_t)m * sizeof(*merged));
	*out = g;
	return 0;
}

/* The lock-free grant, counted.  False: g must go through the core. */
static bool grant_fast(struct weft_rt *rt, struct weft_grant *g)
{
	unsigned at;
	if (!try_fast(rt, g->deps, g->n, &at))
		return false;
	count_fast_grant(rt);
	return true;
}

/* The same for a request that is answered later anyway (a callback or a
 * task): one more fast try if the holder it met leaves within a few
 * hundred ns. */
static bool grant_fast_patient(struct weft_rt *rt, struct weft_grant *g)
{
	unsigned at;
	if (!try_fast(rt, g->deps, g->n, &at)) {
		if (!fast_holder_left(rt->acq, &g->deps[at]) || !try_fast(rt, g->deps, g->n, &at))
			return false;
	}
	count_fast_grant(rt);
	return true;
}

/* Check and merge a request's deps into merged[WEFT_MAX_DEPS]: how many,
 * or -errno (nothing changed). */
static int merge_request(struct weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_dep *merged)
{
	if (!rt || !rt->acq)
		return -EINVAL;
	return sched_merge_deps(deps, n, rt->acq->ncomp, merged);
}

static int grant_prepare(struct weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_grant **out)
{
	struct weft_dep merged[WEFT_MAX_DEPS];
	int m = merge_request(rt, deps, n, merged);
	if (m < 0)
		return m;
	return grant_with(rt, merged, (unsigned)m, out);
}

/* What a granted request runs: a callback (p1 = cb, p2 = ctx) or a task
 * (p1 = fn, p2 = arg). */
static void grant_target(struct weft_grant *g, uint8_t kind, void *p1, void *p2)
{
	g->kind = kind;
	if (kind == G_CALLBACK) {
		g->u.cb.cb = (weft_acquire_fn)(uintptr_t)p1;
		g->u.cb.ctx = p2;
	} else {
		g->u.task.fn = (void (*)(void *))(uintptr_t)p1;
		g->u.task.arg = p2;
	}
}

/* ---- weft_acquire / weft_spawn_with requests travel to a worker ----------------- */

/*
 * weft_acquire / weft_spawn_with, from any thread: the deps are merged and
 * checked at the call (so a failed call changes nothing).  Up to
 * GRANT_INLINE_DEPS of them travel packed in an injection item and the
 * worker that takes it makes the grant in its own arena
 * (acquire_item_to_task): no line of the submitter's is read per request.
 * More deps travel as a malloc'd grant.  Either way the worker requests
 * the components and, when they are granted at once, runs the callback or
 * function right away.
 * Requesting on the worker, when it is ready to run something, keeps
 * components free while requests sit in the queue: a worker that pops a
 * request (inject_item_is_request, or request_task for the malloc'd kind:
 * acquire_is_request) takes it alone, never as the head of a batch
 * (take_injected in worker.c).  A worker's own requests go the same way,
 * to its node's queue, not onto its deque: made at the call, every
 * request of a task that submits many would conflict with the ones before
 * it and wait, and each grant would then hold its components on a deque
 * beneath work pushed after it; taken LIFO from the deque, the newest
 * would be made first.  Either is the convoy of the skewed ECS rows
 * (architecture.md).
 */
static void request_task(void *p)
{
	struct weft_grant *g = p;
	struct weft_rt *rt = g->rt;
	int r = 1;
	if (!grant_fast_patient(rt, g))
		r = acquire_slow(rt, g, true);
	if (r == 1) {
		grant_task(g);
	} else if (r < 0) {
		/* The call returned 0 long ago (the core had no memory for the
		 * request): say it the only way left, as acquire_item_to_task
		 * does. */
		if (g->kind == G_CALLBACK)
			g->u.cb.cb(NULL, r, g->u.cb.ctx);
		else
			fprintf(stderr, "weft: out of memory for a weft_spawn_with request; its task does not run\n");
		grant_free(g);
	}
}

bool acquire_is_request(void (*fn)(void *))
{
	return fn == request_task;
}

/* A dep in an injection item's req[]: comp < ncomp <= SCHED_MAX_REQS
 * (2^24) in the low bits, access in the top two. */
#define REQ_ACCESS_SHIFT 30

_Static_assert(GRANT_INLINE_DEPS <= sizeof(((struct weft_inject_item *)0)->req) / sizeof(uint32_t),
	      "an inline grant's deps fit in an injection item");

bool acquire_item_to_task(struct weft_worker *w, struct weft_inject_item *it)
{
	unsigned n = (unsigned)(it->aux & 0xff);
	uint8_t kind = (uint8_t)(it->aux >> 8);
	/* We are w, and the deps fit a frame. */
	struct weft_grant *g = grant_new_on_worker(w, n);
	if (unlikely(!g)) {
		/* Neither the arena nor malloc had room: the call returned 0
		 * long ago, so say it the only way left. */
		if (kind == G_CALLBACK)
			((weft_acquire_fn)(uintptr_t)it->fn)(NULL, -ENOMEM, it->arg);
		else
			fprintf(stderr, "weft: out of memory for a weft_spawn_with request; its task does not run\n");
		return false;
	}
	for (unsigned i = 0; i < n; i++) {
		uint32_t v = it->req[i];
		g->deps[i] = (struct weft_dep){ v & ((1u << REQ_ACCESS_SHIFT) - 1), v >> REQ_ACCESS_SHIFT };
	}
	grant_target(g, kind, (void *)(uintptr_t)it->fn, it->arg);
	it->fn = request_task;
	it->arg = g;
	it->aux = 0;
	return true;
}

static int submit_any(struct weft_rt *rt, const struct weft_dep *deps, size_t n, uint8_t kind, void *p1, void *p2)
{
	struct weft_grant *g;
	struct weft_worker *w = weft_tls_worker;
	/* A worker's request goes to its own node's queue (see above), where
	 * its node's workers look after their own deques (or sooner: an idle
	 * one at once, a busy one every INJECT_TICK tasks). */
	int node = w && w->rt == rt ? (int)w->node : -1;
	/* Merged and checked here, so a failed call changes nothing; the deps
	 * travel in the injection item (acquire_item_to_task makes the grant
	 * on the worker that takes it) unless there are too many. */
	struct weft_dep merged[WEFT_MAX_DEPS];
	int m = merge_request(rt, deps, n, merged);
	if (m < 0)
		return m;
	if (m <= GRANT_INLINE_DEPS) {
		struct weft_inject_item it = {
			.fn = (void (*)(void *))(uintptr_t)p1,
			.arg = p2,
			.aux = INJECT_REQUEST | (uint64_t)kind << 8 | (uint64_t)m,
		};
		for (int i = 0; i < m; i++)
			it.req[i] = merged[i].comp | merged[i].access << REQ_ACCESS_SHIFT;
		return rt_push_outside_item(rt, node, false, &it, false);
	}
	int r = grant_with(rt, merged, (unsigned)m, &g);
	if (r < 0)
		return r;
	grant_target(g, kind, p1, p2);
	r = rt_push_outside(rt, node, false, request_task, g, NULL, false);
	if (r < 0)
		grant_free(g);
	return r;
}

/* ---- public API ------------------------------------------------------------------ */

int weft_acquire(weft_rt *rt, const struct weft_dep *deps, size_t n, weft_acquire_fn cb, void *ctx)
{
	if (!rt || !cb)
		return -EINVAL;
	return submit_any(rt, deps, n, G_CALLBACK, (void *)(uintptr_t)cb, ctx);
}

int weft_spawn_with(weft_rt *rt, const struct weft_dep *deps, size_t n, void (*fn)(void *arg), void *arg)
{
	if (!rt || !fn)
		return -EINVAL;
	return submit_any(rt, deps, n, G_SPAWN, (void *)(uintptr_t)fn, arg);
}

void weft_release(struct weft_grant *g)
{
	if (!g)
		return;
	release_grant(g, false);
}

int weft_try_acquire(weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_grant **out)
{
	if (!out)
		return -EINVAL;
	struct weft_grant *g;
	int r = grant_prepare(rt, deps, n, &g);
	if (r < 0)
		return r;
	g->kind = G_CALLBACK;
	g->u.cb.cb = NULL;
	if (grant_fast(rt, g)) {
		*out = g;
		return 0;
	}
	r = acquire_slow(rt, g, false);
	if (r == 1) {
		*out = g;
		return 0;
	}
	grant_free(g);
	return r;
}

static bool wait_done(void *p)
{
	struct wait_slot *s = p;
	/* acquire: pairs with wake_waiter's store_release. */
	return load_acquire(&s->word) != WAIT_PENDING;
}

/* A thread that is not a worker sleeps until the word is final. */
static void wait_sleeping(struct weft_acquire *a, struct wait_slot *s)
{
	unsigned waking_seen = 0;
	for (;;) {
		/* acquire: pairs with wake_waiter's stores and CAS. */
		uint32_t v = load_acquire(&s->word);
		if (v == WAIT_GRANTED || v == WAIT_CANCELLED)
			return;
		if (v & WAIT_WAKING) {
			/* The waker is between its wake and its last store: a few
			 * instructions, unless it lost its CPU (often to us).  Yield
			 * a few times, then sleep in short timed waits: a yield
			 * never lets a lower-priority waker run, and a preempted
			 * one must not make us spin for its whole time slice.
			 * 50 us, doubling to 1 ms: the store wakes nobody. */
			if (++waking_seen <= 8) {
				sched_yield();
			} else {
				unsigned k = waking_seen - 9;
				int64_t ns = (int64_t)50000 << (k < 5 ? k : 5);
				os_futex_wait(&s->word, v, ns < 1000000 ? ns : 1000000);
			}
			continue;
		}
		if (v == WAIT_PENDING) {
			/* acq_rel: against the waker's CAS from PENDING; either
			 * it sees us asleep or we see its value. */
			cas_acq_rel(&s->word, &v, WAIT_SLEEPING);
			continue;
		}
		os_futex_wait(&s->word, WAIT_SLEEPING, -1);
		/* Nothing changed: woken for nothing (a signal, or a late wake
		 * meant for another futex that once lived at this address). */
		if (load_relaxed(&s->word) == WAIT_SLEEPING)
			fetch_add_relaxed(&a->spurious, 1);
	}
}

/* Both name a component (in any mode: two readers can still wait on each
 * other through a writer queued between them). */
static bool deps_overlap(const struct weft_grant *a, const struct weft_grant *b)
{
	for (unsigned i = 0; i < a->n; i++)
		for (unsigned j = 0; j < b->n; j++)
			if (a->deps[i].comp == b->deps[j].comp)
				return true;
	return false;
}

/*
 * A worker waits by running other tasks on the same stack.  If one of them
 * has to wait for a component that an enclosing wait on this worker holds,
 * or waits for ahead of it, neither can ever return: the inner one needs
 * the outer to release, and the outer cannot return before the inner does.
 * Such an inner wait gets the components now (if it can without waiting)
 * or -EDEADLK.
 */
static bool nested_wait_would_deadlock(const struct weft_worker *w, const struct weft_grant *g)
{
	for (const struct wait_slot *s = w->acq_waits; s; s = s->outer)
		if (load_relaxed(&s->word) != WAIT_CANCELLED && deps_overlap(s->grant, g))
			return true;
	return false;
}

int weft_acquire_wait(weft_rt *rt, const struct weft_dep *deps, size_t n, struct weft_grant **out)
{
	if (!out)
		return -EINVAL;
	struct weft_grant *g;
	int r = grant_prepare(rt, deps, n, &g);
	if (r < 0)
		return r;
	struct weft_worker *w = weft_tls_worker;
	if (w && w->rt != rt)
		w = NULL;
	struct wait_slot slot = { .word = WAIT_PENDING, .worker = w, .grant = g, .outer = NULL };
	g->kind = G_WAIT;
	g->u.wait = &slot;
	if (grant_fast(rt, g)) {
		*out = g;
		return 0;
	}
	bool nested_conflict = w && w->acq_waits && nested_wait_would_deadlock(w, g);
	r = acquire_slow(rt, g, !nested_conflict);
	if (nested_conflict && r == -EBUSY)
		r = -EDEADLK;
	if (r < 0) {
		grant_free(g);
		return r;
	}
	if (r == 0) {
		if (w) {
			slot.outer = w->acq_waits;
			w->acq_waits = &slot;
			worker_help_until(w, wait_done, &slot);
			w->acq_waits = slot.outer;
		} else {
			wait_sleeping(rt->acq, &slot);
		}
	}
	/* acquire: pairs with wake_waiter's store_release. */
	if (load_acquire(&slot.word) == WAIT_CANCELLED) {
		/* On another thread the canceller freed it (dispatch_cancel). */
		if (w)
			grant_free(g);
		return -ECANCELED;
	}
	*out = g;
	return 0;
}

const struct weft_dep *weft_grant_deps(const struct weft_grant *g, size_t *n)
{
	if (!g) {
		if (n)
			*n = 0;
		return NULL;
	}
	if (n)
		*n = g->n;
	return g->deps;
}

/* ---- names -------------------------------------------------------------------------- */

static uint64_t name_hash(const char *s)
{
	/* FNV-1a */
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Double the names table (under the lock); it stays at most half full. */
static int names_grow(struct weft_acquire *a)
{
	unsigned cap = a->name_cap * 2, mask = cap - 1;
	char **names = calloc(cap, sizeof(*names));
	uint32_t *ids = calloc(cap, sizeof(*ids));
	if (!names || !ids) {
		free(names);
		free(ids);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < a->name_cap; i++) {
		if (!a->names[i])
			continue;
		unsigned j = (unsigned)name_hash(a->names[i]) & mask;
		while (names[j])
			j = (j + 1) & mask;
		names[j] = a->names[i];
		ids[j] = a->name_ids[i];
	}
	free(a->names);
	free(a->name_ids);
	a->names = names;
	a->name_ids = ids;
	a->name_cap = cap;
	return 0;
}

int weft_component(weft_rt *rt, const char *name)
{
	if (!rt || !rt->acq || !name)
		return -EINVAL;
	struct weft_acquire *a = rt->acq;
	struct core_ctx cx = CORE_CTX_INIT;
	core_lock(a, &cx);
	unsigned mask = a->name_cap - 1;
	unsigned i = (unsigned)name_hash(name) & mask;
	int r;
	for (;;) {
		if (!a->names[i]) {
			if (a->name_count == a->ncomp) {
				r = -ENOSPC;
				break;
			}
			if (2 * (a->name_count + 1) > a->name_cap) {
				r = names_grow(a);
				if (r < 0)
					break;
				/* Look again in the new table. */
				mask = a->name_cap - 1;
				i = (unsigned)name_hash(name) & mask;
				continue;
			}
			char *copy = strdup(name);
			if (!copy) {
				r = -ENOMEM;
				break;
			}
			a->names[i] = copy;
			/* Named ids are handed out from the top down, so they do
			 * not collide with small dense ids a program uses. */
			a->name_ids[i] = a->ncomp - 1 - a->name_count++;
			r = (int)a->name_ids[i];
			break;
		}
		if (strcmp(a->names[i], name) == 0) {
			r = (int)a->name_ids[i];
			break;
		}
		i = (i + 1) & mask;
	}
	core_unlock(rt, &cx, false);
	return r;
}

/* ---- runtime hooks ------------------------------------------------------------------ */

int acquire_init(struct weft_rt *rt, const struct weft_config *cfg)
{
	/* Aligned: the lock has a line of its own. */
	struct weft_acquire *a = aligned_alloc(WEFT_CACHELINE, sizeof(*a));
	if (!a)
		return -ENOMEM;
	memset(a, 0, sizeof(*a));
	rt->acq = a;
	a->ncomp = cfg->components ? cfg->components : 4096;
	if (a->ncomp > SCHED_MAX_REQS)
		return -EINVAL;
	unsigned bypass = cfg->max_bypass ? cfg->max_bypass : 16;
	a->boxes.next = a->boxes.prev = &a->boxes;
	a->give = aligned_alloc(WEFT_CACHELINE, rt->nworkers * sizeof(*a->give));
	if (!a->give)
		return -ENOMEM;
	memset(a->give, 0, rt->nworkers * sizeof(*a->give));
	/* A line per component, mapped zero and untouched: the largest table
	 * (2^24 components, 1 GiB) costs only the pages of components in use. */
	a->words = node_alloc(a->ncomp * sizeof(*a->words), -1);
	if (!a->words)
		return -ENOMEM;
	a->want = calloc(a->ncomp, sizeof(*a->want));
	a->name_cap = 16; /* doubled as names come (names_grow) */
	a->names = calloc(a->name_cap, sizeof(*a->names));
	a->name_ids = calloc(a->name_cap, sizeof(*a->name_ids));
	if (!a->want || !a->names || !a->name_ids)
		return -ENOMEM;
	return sched_create(&a->core, a->ncomp, bypass, cfg->strict_order);
}

bool acquire_cancel_stuck(struct weft_rt *rt)
{
	struct weft_acquire *a = rt->acq;
	struct core_ctx cx = CORE_CTX_INIT;
	struct weft_grant *cancelled[64];
	unsigned ncancelled = 0, made = 0;
	/*
	 * A dispatch still in flight (an outside thread's release granted a
	 * waiter, or a concurrent caller of ours cancelled some) is work that
	 * rt_try_exit's look at the queues may have missed: wait until it is
	 * queued.  It is short: it waits for nothing and runs no user code
	 * (grant_free may take the lock, which we do not hold while we wait).
	 * What we dispatch ourselves is counted the same way, from under the
	 * lock until it is queued: grants that posted releases make when we
	 * apply them, and our cancels.  Our caller may be a worker that still
	 * counts as parked, invisible to another caller's checks.
	 */
	for (;;) {
		/* acquire: pairs with the fetch_sub_release after a dispatch
		 * (core_unlock, or below): its tasks are queued before we see 0. */
		while (load_acquire(&a->dispatching) != 0)
			sched_yield();
		core_lock(a, &cx);
		/* acquire: as above, for a dispatch that began and ended between
		 * the loop above and our lock (one that began is seen: it is
		 * raised under the lock). */
		bool busy = load_acquire(&a->dispatching) != 0;
		/* relaxed: under the lock; the unlock publishes it. */
		fetch_add_relaxed(&a->dispatching, 1);
		if (!busy)
			break;
		core_unlock(rt, &cx, false);
		made += cx.out.total;
		cx = (struct core_ctx)CORE_CTX_INIT;
		/* release: pairs with the load_acquire above in another caller. */
		fetch_sub_release(&a->dispatching, 1);
	}
	int id;
	/* Releases applied just now (posted ones) may have made work: then
	 * nothing is stuck yet. */
	while (cx.out.total == 0 && ncancelled < 64 && (id = sched_first_waiter(a->core)) >= 0) {
		struct weft_grant *g = sched_req_user(a->core, (uint32_t)id);
		sched_cancel(a->core, (uint32_t)id, collect, &cx.out);
		for (unsigned k = 0; k < g->n; k++)
			a->want[g->deps[k].comp]--;
		sched_req_free(a->core, (uint32_t)id);
		cancelled[ncancelled++] = g;
		a->cancelled++;
		settle(a, &cx.out, 0);
		for (unsigned k = 0; k < g->n; k++)
			maybe_export(a, g->deps[k].comp);
	}
	made += cx.out.total;
	core_unlock(rt, &cx, false);
	for (unsigned i = 0; i < ncancelled; i++)
		dispatch_cancel(rt, cancelled[i]);
	/* On a worker the callbacks went to the private end of its deque,
	 * where another caller's rt_any_queued cannot see them (dispatch_all
	 * already shared what core_unlock queued). */
	struct weft_worker *w = weft_tls_worker;
	if (ncancelled && w && w->rt == rt)
		deque_share_all(&w->deque);
	/* release: pairs with the load_acquires above in another caller. */
	fetch_sub_release(&a->dispatching, 1);
	return ncancelled > 0 || made > 0;
}

void acquire_stats(struct weft_rt *rt, struct weft_acquire_stats *out)
{
	struct weft_acquire *a = rt->acq;
	struct sched_stats s;
	uint64_t fast = load_relaxed(&a->grants_fast_outside);
	for (unsigned i = 0; i < rt->nworkers; i++)
		fast += load_relaxed(&rt->workers[i]->stats.grants_fast);
	pthread_mutex_lock(&rt->submitters_lock);
	for (struct submitter *rec = rt->submitters; rec; rec = rec->next)
		fast += load_relaxed(&rec->grants_fast);
	pthread_mutex_unlock(&rt->submitters_lock);
	struct core_ctx cx = CORE_CTX_INIT;
	core_lock(a, &cx);
	sched_get_stats(a->core, &s);
	out->waits = a->waits;
	out->cancelled = a->cancelled;
	out->spurious_wakeups = load_relaxed(&a->spurious);
	core_unlock(rt, &cx, false);
	out->wakeups = load_relaxed(&a->wakeups);
	out->grants_fast = fast;
	out->grants = fast + s.grants;
	out->reservations = s.reservations;
	out->max_bypassed = s.max_bypassed;
}

void acquire_fini(struct weft_rt *rt)
{
	struct weft_acquire *a = rt->acq;
	if (!a)
		return;
	/* The workers are gone: their batches go back before the owners
	 * count what was never released. */
	if (a->give)
		for (unsigned i = 0; i < rt->nworkers; i++)
			give_batch_flush(&a->give[i]);
	free(a->give);
	unsigned leaked = 0;
	while (a->boxes.next && a->boxes.next != &a->boxes) {
		struct grant_link *l = a->boxes.next;
		a->boxes.next = l->next;
		free(l); /* the link is the start of its grant_box */
		leaked++;
	}
	if (a->words) {
		/* Pages of the table never touched are not resident and hold
		 * only zeros (no holder): skip them, so a large table is not
		 * faulted in just to be read (mincore fails only for a bad
		 * range; then every page is read). */
		long psz = sysconf(_SC_PAGESIZE);
		const size_t page = psz > 0 ? (size_t)psz : 4096, per_page = page / sizeof(*a->words);
		size_t npages = (a->ncomp + per_page - 1) / per_page;
		unsigned char *res = malloc(npages);
		if (res && mincore(a->words, npages * page, res) != 0) {
			free(res);
			res = NULL;
		}
		for (unsigned c = 0; c < a->ncomp; c++) {
			if (res && !(res[c / per_page] & 1)) {
				c = (unsigned)((c / per_page + 1) * per_page - 1);
				continue;
			}
			uint64_t v = a->words[c].v;
			uint32_t r = 0;
			bool wr = false;
			if (v & W_SLOW && a->core)
				sched_comp_holders(a->core, c, &r, &wr);
			else {
				r = (uint32_t)(v & W_READERS);
				wr = (v & W_WRITER) != 0;
			}
			if (r || wr)
				leaked++;
		}
		free(res);
	}
	if (leaked)
		fprintf(stderr, "weft: weft_destroy: %u grant(s) or held component(s) were never released; freed\n",
			leaked);
	if (a->core)
		sched_destroy(a->core);
	if (a->names)
		for (unsigned i = 0; i < a->name_cap; i++)
			free(a->names[i]);
	free(a->names);
	free(a->name_ids);
	free(a->want);
	node_free(a->words, a->ncomp * sizeof(*a->words));
	free(a);
	rt->acq = NULL;
}
