/*
 * rt.h: the runtime's internal layout, shared by worker.c, park.c, group.c
 * and the subsystems layered on them (acquire.c).  Nothing here is public.
 *
 * Ownership of fields (who writes what):
 *   worker->deque, ->arena (private side), ->tick, ->rng, ->ask_after, ->stats
 *                                  the worker's own thread only
 *   worker->park_word              the worker (SLEEPING / 0) and wakers (TOKEN)
 *   node->idle[]                   parkers set their bit, wakers clear it
 *   node->idle_state               parkers, wakers, spinners (RMW only)
 *   rt->state                      weft_destroy; the worker that sees the
 *                                  end moves it to EXIT (CAS, rt_try_exit)
 *   submitter->active              its own thread (weft_destroy reads it)
 * Everything else is written once in weft_create, before any worker starts.
 */
#ifndef WEFT_RT_H
#define WEFT_RT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/group.h>
#include <weft/runtime.h>
#include <weft/stats.h>

#include "arena.h"
#include "atomics.h"
#include "deque.h"
#include "inject.h"
#include "task.h"
#include "topology.h"

struct ring;
struct io_op;
struct weft_io;
struct ring_setup;

#define IDLE_WORDS ((WEFT_MAX_WORKERS + 63) / 64)

/* idle_state packs two counts so that the spawn path reads one word. */
#define IDLE_SPINNING_ONE 1u
#define IDLE_PARKED_ONE (1u << 16)
#define IDLE_SPINNING(s) ((s)&0xffffu)
#define IDLE_PARKED(s) ((s) >> 16)

/* park_word values. */
enum { PARK_AWAKE = 0, PARK_SLEEPING = 1, PARK_TOKEN = 2, PARK_SLEEPING_EFD = 3 };

/* Why a worker parks: only main-loop parks count towards termination. */
enum { PARK_KIND_MAIN = 0, PARK_KIND_WAIT = 1 };

/* rt->state */
enum { RT_RUNNING = 0, RT_DRAINING = 1, RT_QUIESCED = 2, RT_EXIT = 3 };

struct worker_counters {
	uint64_t tasks_run;
	uint64_t steals_local;
	uint64_t steals_remote;
	uint64_t steal_failures;
	uint64_t injected;
	uint64_t injected_remote;
	uint64_t parks;
	uint64_t wakeups;
	uint64_t spurious_wakeups;
	uint64_t grants_fast;
};

struct weft_worker {
	/* Owner-hot state first. */
	struct weft_deque deque;
	struct weft_arena arena;
	struct weft_rt *rt;
	unsigned index;
	unsigned node;
	int cpu;
	unsigned tick;
	uint64_t rng;
	bool spinning;          /* counted in its node's idle_state */
	bool multi_node;        /* the runtime has more than one node */
	/* node_idle, or with several nodes a word that is always 1: the push
	 * hint (rt_push_hint) reads one word for both conditions. */
	uint32_t *push_idle;
	uint32_t *node_idle;    /* &rt->nodes[node]->idle_state */
	uint64_t local_wait_since; /* when it began waiting for own-node work */
	/* Finished tasks of one group not yet subtracted from its shared
	 * count: one atomic per run of tasks instead of one per task. */
	struct weft_group *pend_group;
	/* Innermost weft_acquire_wait this worker is helping in (acquire.c:
	 * struct wait_slot, a chain through enclosing waits); worker only. */
	void *acq_waits;
	uint32_t pend_count;
	void *thread;           /* handle from weft_thread_ops.start */
	struct ring *ring;      /* io_uring backend (ring.c), made on first use */
	struct io_op *io_cache; /* free I/O op records (io.c) */
	unsigned io_cache_n;
	/* Idle path only (kept off the lines every task touches): no split
	 * requests before this time (ns; 0: at once), see may_ask. */
	uint64_t ask_after;

	/* Written by wakers as well as the owner. */
	uint32_t park_word WEFT_ALIGNED;
	uint32_t park_kind;
	/* Cancel requests for this worker's ring from other threads (ring.c). */
	void *io_mail;

	/* Owner writes with relaxed stores, weft_stats reads relaxed. */
	struct worker_counters stats WEFT_ALIGNED;
};

struct weft_node {
	/* Tasks from threads that are not workers, round-robin over nodes;
	 * any worker may take them (other nodes' workers last). */
	struct weft_inject shared;
	/* Tasks from weft_spawn_on_node: only this node's workers take them. */
	struct weft_inject affine;
	unsigned first;         /* first worker index of this node */
	unsigned count;         /* number of workers on this node */
	/* This node's parked and spinning workers, packed so the spawn path
	 * reads one word; written when they park, wake or spin. */
	uint32_t idle_state WEFT_ALIGNED;
	/* Bit i set: worker first+i is parked and may be claimed by a waker. */
	uint64_t idle[IDLE_WORDS];
};

/* One per (outside thread, runtime): the thread's "I am inside a spawn"
 * flag, on its own line so a spawn writes nothing shared. */
struct submitter {
	uint32_t active WEFT_ALIGNED;
	struct submitter *next;
	/* Grants this thread makes (acquire.c): every grant made, and the
	 * free ones the thread pops; workers push the ones they are done with
	 * on `grant_remote`, which the thread takes whole with one exchange
	 * (a push-only stack drained whole has no ABA problem). */
	void *grant_all;
	void *grant_local;
	unsigned grant_total;
	/* Requests this thread got on the lock-free path: written by the
	 * thread alone (relaxed stores), summed by weft_stats, so an
	 * uncontended try_acquire makes no shared RMW just to be counted. */
	uint64_t grants_fast;
	void *grant_remote WEFT_ALIGNED;
};

_Static_assert(sizeof(struct submitter) <= 4096, "a submitter record fits its page");

/* The calling thread's record for rt (created on first use), or NULL. */
struct submitter *rt_submitter(struct weft_rt *rt);
/* rec is the calling thread's record for rt (no creation). */
bool rt_submitter_is_mine(struct weft_rt *rt, struct submitter *rec);

struct weft_rt {
	unsigned nworkers;
	unsigned nnodes;
	bool pin;
	const struct weft_thread_ops *threads;
	struct weft_worker *workers[WEFT_MAX_WORKERS];
	struct weft_node *nodes[WEFT_MAX_NODES];
	struct weft_topology topo;
	struct weft_acquire *acq;     /* component scheduler, acquire.c */
	struct weft_io *io;           /* I/O front end, io.c */
	const struct ring_setup *io_setup; /* io_uring backend, or NULL */
	/* weft_destroy has begun: rings cancel what they hold (io.c).
	 * Written once; read by ring_poll, so it sits with read-mostly fields. */
	uint32_t io_shutdown;

	/* Outside submitters and weft_destroy. */
	uint32_t state WEFT_ALIGNED;
	/* Written once in weft_create: membarrier(2) is registered, so an
	 * outside spawn marks itself active with a plain store and a compiler
	 * fence, and weft_destroy runs the barrier (see rt_push_outside). */
	bool asym_fence;
	uint64_t serial;                /* tells runtimes at one address apart */
	pthread_mutex_t submitters_lock;
	struct submitter *submitters;   /* list, pushed under the lock */
	/* Workers parked in the main loop (not inside a wait): termination
	 * needs all of them.  Written by parkers: kept off the line that every
	 * outside spawn reads (state). */
	uint32_t nparked_main WEFT_ALIGNED;
	/* weft_destroy sleeps here until the workers agree to exit (1). */
	uint32_t exit_word;
	/* Workers wait here until weft_create has finished (open) or failed
	 * (abort). */
	uint32_t gate;
};

/* The worker the calling thread is, or NULL.  initial-exec TLS: one mov. */
extern __thread struct weft_worker *weft_tls_worker __attribute__((tls_model("initial-exec")));

/* worker.c */
void worker_main(struct weft_worker *w);
struct weft_task *worker_next(struct weft_worker *w);
struct weft_task *worker_spin_for_work(struct weft_worker *w, bool (*done)(void *), void *ctx);
/* A waiting worker's search: its own deque, the full search, then a spin
 * that stops early once done(ctx).  NULL: nothing to run (park next). */
struct weft_task *worker_search(struct weft_worker *w, bool (*done)(void *), void *ctx);
void worker_run_found(struct weft_worker *w, struct weft_task *t);
struct weft_task *worker_find_work(struct weft_worker *w);
bool worker_work_visible(struct weft_worker *w);
void worker_wake_for_spawn(struct weft_worker *w);
void worker_published(struct weft_worker *w);
/* Push through an injection queue.  internal: the runtime's own work
 * (grant callbacks), accepted while weft_destroy drains. */
int rt_push_outside(struct weft_rt *rt, int node, bool affine, void (*fn)(void *), void *arg, struct weft_group *g,
		    bool internal);
/* A thread that is not one of rt's workers, calling in (rec = its record;
 * NULL on a worker): while between the two, weft_destroy waits for it
 * before it frees anything.  -ESHUTDOWN once weft_destroy has begun
 * (unless internal: the runtime's own work), -ENOMEM. */
int rt_outside_enter(struct weft_rt *rt, bool internal, struct submitter **rec);
void rt_outside_leave(struct submitter *rec);
/* The same for a prepared item (a request, see inject.h). */
int rt_push_outside_item(struct weft_rt *rt, int node, bool affine, const struct weft_inject_item *it, bool internal);
/* Run tasks on worker w until done(ctx) is true; parks (kind WAIT) when
 * there is nothing to run.  done must become true only through an event
 * that calls worker_notify(w) (or a spawn that wakes w). */
void worker_help_until(struct weft_worker *w, bool (*done)(void *ctx), void *ctx);

/* rt.c: the state machine of weft_destroy; true once the runtime exits. */
bool rt_try_exit(struct weft_rt *rt);

/* park.c */
void park_wake_one(struct weft_rt *rt, unsigned node);
bool park_wake_on_node(struct weft_rt *rt, unsigned node);
void park_notify(struct weft_worker *w);
/* Park w.  Returns after a token arrived or, when recheck(ctx) finds
 * something, at once.  The worker comes back as a spinner when it was
 * claimed by a waker. */
void park_worker(struct weft_worker *w, unsigned kind, bool (*recheck)(void *ctx), void *ctx);
void park_spin_begin(struct weft_worker *w);
void park_spin_end(struct weft_worker *w, bool found_work);
void park_wake_all(struct weft_rt *rt);

/* group.c: the shared-count decrement (the owner's local one is inline),
 * and the flush of a worker's batched decrements. */
void group_task_done_shared(struct weft_group *g);
void group_flush(struct weft_worker *w);

/* Identifies the calling thread as a group owner: the worker, or the
 * address of a thread-local byte on any other thread. */
extern __thread char weft_tls_token __attribute__((tls_model("initial-exec")));
static inline void *thread_token(void)
{
	struct weft_worker *w = weft_tls_worker;
	return w ? (void *)w : (void *)&weft_tls_token;
}

static inline void count(uint64_t *c)
{
	store_relaxed(c, load_relaxed(c) + 1);
}

/* The spawn path's wake check.  relaxed: a hint.  Missing a worker that
 * parks right now costs parallelism until the next spawn, never a task:
 * the owner runs everything on its own deque.  All busy on a single node:
 * nothing to do (the common case, one load).  Otherwise see
 * worker_wake_for_spawn. */
static inline void maybe_wake_for(struct weft_worker *w)
{
	uint32_t s = load_relaxed(w->node_idle);
	if (likely(s == 0) && likely(!w->multi_node))
		return;
	worker_wake_for_spawn(w);
}

/* group.c: the out-of-line halves of rt_push_local.  _slow is the whole
 * push when the arena's free list is empty or the deque is full; _after runs
 * once the task is on the deque and a thief asked for a split, or a worker
 * might need waking (rt_push_hint); also after the owner took its newest
 * item back and a split request or a publication is pending. */
int rt_push_local_slow(struct weft_worker *w, void (*fn)(void *), void *arg, struct weft_group *g, uint32_t flags);
int rt_push_local_after(struct weft_worker *w);

/* After a private push: does rt_push_local_after have anything to do?  A
 * thief asked for a split, or a worker is idle (maybe_wake_for's
 * condition; push_idle also stands for "several nodes").  relaxed: hints. */
static inline bool rt_push_hint(const struct weft_worker *w, const struct weft_deque *d)
{
	return load_relaxed(&d->split_req) | load_relaxed(w->push_idle);
}

/* Push a task onto w's own deque (w is the calling worker).  The fast path
 * makes no call, so a caller that tail-calls it needs no stack frame: a
 * frame from the private free list, the private push (deque_push_at), and
 * one test of rt_push_hint. */
static inline int rt_push_local(struct weft_worker *w, void (*fn)(void *), void *arg, struct weft_group *g,
				uint32_t flags)
{
	struct weft_deque *d = &w->deque;
	struct weft_task *t = w->arena.free;
	int64_t b = d->bottom;

	if (unlikely(!t) || unlikely(!deque_push_fits(d, b)))
		return rt_push_local_slow(w, fn, arg, g, flags);
	w->arena.free = t->next;
	t->fn = fn;
	t->arg = arg;
	t->group = g;
	t->flags = flags;
	deque_push_at(d, b, t);
	if (unlikely(rt_push_hint(w, d)))
		return rt_push_local_after(w);
	return 0;
}

/* A wait on a worker is over: hand over the decrements it batched while it
 * helped, before the caller goes on with what may be a long stretch that
 * neither searches nor parks (a waiter of those groups would wait for it). */
static inline void group_flush_pending(struct weft_worker *w)
{
	if (unlikely(w->pend_group != NULL))
		group_flush(w);
}

/* A task of g finished on w.  The owner's own tasks come off its local
 * count; others are batched per worker and subtracted from the shared
 * count when the worker moves to another group or runs out of work (see
 * group_flush): until then the group cannot look finished too early, only
 * late, and the worker is still busy with it. */
static inline void group_task_done(struct weft_worker *w, struct weft_group *g, uint32_t flags)
{
	if ((flags & TASK_COUNTED_LOCAL) && g->owner == w) {
		g->local--;
		return;
	}
	if (g != w->pend_group) {
		if (w->pend_group)
			group_flush(w);
		w->pend_group = g;
	}
	w->pend_count++;
}

/* Run a task the worker holds.  The frame goes back first, so the next
 * spawn reuses a hot line; fn/arg/group were copied out. */
static inline void worker_run_task(struct weft_worker *w, struct weft_task *t)
{
	void (*fn)(void *) = t->fn;
	void *arg = t->arg;
	struct weft_group *g = t->group;
	uint32_t flags = t->flags;

	if (likely(t->arena == w->index))
		arena_free(&w->arena, &w->arena, t);
	else if (t->arena != TASK_NO_ARENA)
		arena_free(&w->arena, &w->rt->workers[t->arena]->arena, t);
	/* We just answered a split request: thieves can take work now (a
	 * thief that went to sleep left its request behind, so this also
	 * wakes it). */
	if (unlikely(w->deque.o_published))
		worker_published(w);
	/* Never hold another group's finished count while running. */
	if (unlikely(w->pend_group != NULL) && w->pend_group != g)
		group_flush(w);
	fn(arg);
	count(&w->stats.tasks_run);
	if (g)
		group_task_done(w, g, flags);
}

static inline uint64_t rng_next(uint64_t *s)
{
	/* xorshift64*: good enough to pick victims, one multiply. */
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

#endif
