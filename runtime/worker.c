/*
 * worker.c: the worker loop: where a worker looks for work, how it runs a
 * task, and how tasks get in.
 *
 * Overview
 *   Order of search: own deque -> own node's injection queues -> victims
 *   on the own node (random start) -> other nodes' victims, nearest node
 *   first -> other nodes' shared injection queues.  Every 61st task the
 *   worker looks at its node's injection queues first (Go's scheduler does
 *   the same with its global queue), so outside submissions are not starved
 *   by a deep deque.  Injected tasks are taken in batches: the first runs,
 *   the rest go to the worker's deque where thieves can reach them.
 *
 * Invariants
 *   - Only the worker touches its deque's owner end, its arena's private
 *     free list, tick, rng and stats.
 *   - A frame is freed (to its owner's arena) before the task runs, so
 *     the next spawn reuses a hot line; fn/arg/group are copied out first.
 *   - No task is lost at shutdown: a worker parks in the main loop only
 *     with an empty deque, and termination needs every worker parked there
 *     with every queue empty (see rt.c).
 */
#include "rt.h"

#include <errno.h>

#include "os.h"

__thread struct weft_worker *weft_tls_worker __attribute__((tls_model("initial-exec")));

#define INJECT_BATCH 16
#define SPIN_ROUNDS 64
#define INJECT_TICK 61
#define LOCAL_PATIENCE 16

/* Another node has a parked worker and no node has a spinner. */
static bool remote_parked_no_spinner(struct weft_rt *rt, unsigned self)
{
	bool parked = false;
	for (unsigned ni = 0; ni < rt->nnodes; ni++) {
		if (ni == self)
			continue;
		uint32_t s = load_relaxed(&rt->nodes[ni]->idle_state);
		if (IDLE_SPINNING(s))
			return false;
		parked |= IDLE_PARKED(s) != 0;
	}
	return parked;
}

void worker_wake_for_spawn(struct weft_worker *w)
{
	uint32_t s = load_relaxed(w->node_idle);
	if (IDLE_PARKED(s) != 0 || remote_parked_no_spinner(w->rt, w->node))
		park_wake_one(w->rt, w->node);
}

void worker_published(struct weft_worker *w)
{
	w->deque.o_published = false;
	maybe_wake_for(w);
}

/* Take a batch from an injection queue: run the first, keep the rest on
 * the own deque.  Returns the task to run or NULL. */
static struct weft_task *take_injected(struct weft_worker *w, struct weft_inject *q, bool remote, bool affine)
{
	struct weft_inject_item items[INJECT_BATCH];
	unsigned max = INJECT_BATCH;
	/* A deep deque does not need more; take one to keep things moving.
	 * Affine tasks are taken one at a time: on our deque a thief of
	 * another node could take them. */
	if (affine || deque_size(&w->deque) > INJECT_BATCH)
		max = 1;
	unsigned n = inject_pop(q, items, max);
	if (n == 0)
		return NULL;
	struct weft_task *first = NULL;
	for (unsigned i = 0; i < n; i++) {
		struct weft_task *t = arena_alloc(&w->arena);
		if (t) {
			t->fn = items[i].fn;
			t->arg = items[i].arg;
			t->group = items[i].group;
			t->flags = 0;
			/* The first runs now; the rest become stealable. */
			if (!first) {
				first = t;
				continue;
			}
			if (deque_push(&w->deque, t) == 0)
				continue;
			arena_free(&w->arena, &w->arena, t);
		}
		/* Out of memory: run what cannot be queued right here. */
		items[i].fn(items[i].arg);
		count(&w->stats.tasks_run);
		if (items[i].group)
			group_task_done(w, items[i].group, 0);
	}
	for (unsigned i = 0; i < n; i++) {
		count(&w->stats.injected);
		if (remote)
			count(&w->stats.injected_remote);
	}
	return first;
}

static struct weft_task *take_own_node_injected(struct weft_worker *w)
{
	struct weft_node *n = w->rt->nodes[w->node];
	struct weft_task *t = NULL;
	if (inject_maybe_nonempty(&n->affine))
		t = take_injected(w, &n->affine, false, true);
	if (!t && inject_maybe_nonempty(&n->shared))
		t = take_injected(w, &n->shared, false, false);
	return t;
}

static struct weft_task *steal_from(struct weft_worker *w, struct weft_worker *v, bool remote)
{
	for (int tries = 0; tries < 4; tries++) {
		int why;
		struct weft_task *t = deque_steal(&v->deque, &why);
		if (t) {
			count(remote ? &w->stats.steals_remote : &w->stats.steals_local);
			return t;
		}
		if (why == DEQUE_EMPTY)
			break;
	}
	count(&w->stats.steal_failures);
	return NULL;
}

/* *private_seen: some victim holds private work that our split request
 * will make it publish at its next push or pop. */
static struct weft_task *steal_on_node(struct weft_worker *w, unsigned ni, bool remote, bool *private_seen)
{
	struct weft_rt *rt = w->rt;
	struct weft_node *n = rt->nodes[ni];
	if (n->count == 0)
		return NULL;
	unsigned start = (unsigned)(rng_next(&w->rng) % n->count);
	for (unsigned k = 0; k < n->count; k++) {
		struct weft_worker *v = rt->workers[n->first + (start + k) % n->count];
		if (v == w)
			continue;
		struct weft_task *t = steal_from(w, v, remote);
		if (t)
			return t;
		if (deque_private_hint(&v->deque))
			*private_seen = true;
	}
	return NULL;
}

struct weft_task *worker_find_work(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	struct weft_task *t = deque_pop(&w->deque);
	if (t)
		return t;
	t = take_own_node_injected(w);
	if (t)
		return t;
	bool private_seen = false;
	t = steal_on_node(w, w->node, false, &private_seen);
	if (t)
		return t;
	/* A worker of our node will publish work soon: give it a few rounds
	 * before crossing to another node. */
	if (private_seen && ++w->local_patience < LOCAL_PATIENCE)
		return NULL;
	w->local_patience = 0;
	for (unsigned k = 0; k + 1 < rt->nnodes; k++) {
		t = steal_on_node(w, rt->topo.near[w->node][k], true, &private_seen);
		if (t)
			return t;
	}
	for (unsigned k = 0; k + 1 < rt->nnodes; k++) {
		struct weft_node *n = rt->nodes[rt->topo.near[w->node][k]];
		if (inject_maybe_nonempty(&n->shared)) {
			t = take_injected(w, &n->shared, true, false);
			if (t)
				return t;
		}
	}
	return NULL;
}

/* The next task for a worker that is not idle: own deque, with the
 * periodic look at the injection queues. */
struct weft_task *worker_next(struct weft_worker *w)
{
	if (unlikely(++w->tick % INJECT_TICK == 0)) {
		struct weft_task *t = take_own_node_injected(w);
		if (t)
			return t;
	}
	return deque_pop(&w->deque);
}

/* Seen by a parker after it announced itself: anything it could run? */
bool worker_work_visible(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	struct weft_node *own = rt->nodes[w->node];
	if (deque_size(&w->deque) > 0)
		return true;
	/* seq_cst: pairs with the submitter's fence after its push. */
	if (inject_nonempty_seq_cst(&own->affine) || inject_nonempty_seq_cst(&own->shared))
		return true;
	for (unsigned ni = 0; ni < rt->nnodes; ni++)
		if (ni != w->node && inject_nonempty_seq_cst(&rt->nodes[ni]->shared))
			return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (rt->workers[i] != w && deque_public_nonempty(&rt->workers[i]->deque))
			return true;
	return false;
}

/* Search as a spinner for a while.  Returns a task or NULL. */
struct weft_task *worker_spin_for_work(struct weft_worker *w, bool (*done)(void *), void *ctx)
{
	for (int round = 0; round < SPIN_ROUNDS; round++) {
		struct weft_task *t = worker_find_work(w);
		if (t)
			return t;
		if (done && done(ctx))
			return NULL;
		for (int i = 0; i < 32; i++)
			cpu_relax();
	}
	return NULL;
}

void worker_run_found(struct weft_worker *w, struct weft_task *t)
{
	if (w->spinning)
		park_spin_end(w, true);
	worker_run_task(w, t);
}

struct help_ctx {
	struct weft_worker *w;
	bool (*done)(void *);
	void *ctx;
};

static bool help_recheck(void *p)
{
	struct help_ctx *h = p;
	return h->done(h->ctx) || worker_work_visible(h->w);
}

void worker_help_until(struct weft_worker *w, bool (*done)(void *ctx), void *ctx)
{
	struct help_ctx h = { .w = w, .done = done, .ctx = ctx };
	while (!done(ctx)) {
		struct weft_task *t = worker_next(w);
		if (!t)
			t = worker_find_work(w);
		if (!t) {
			if (!w->spinning)
				park_spin_begin(w);
			t = worker_spin_for_work(w, done, ctx);
		}
		if (t) {
			worker_run_found(w, t);
			continue;
		}
		if (done(ctx))
			break;
		park_worker(w, PARK_KIND_WAIT, help_recheck, &h);
	}
	if (w->spinning)
		park_spin_end(w, false);
}

static bool main_recheck(void *p)
{
	struct weft_worker *w = p;
	struct weft_rt *rt = w->rt;
	if (worker_work_visible(w))
		return true;
	/* seq_cst: pairs with weft_destroy's store of RT_QUIESCED and its
	 * load of nparked_main (we incremented it before coming here). */
	uint32_t st = load_seq_cst(&rt->state);
	if (st == RT_EXIT)
		return true;
	if (st == RT_QUIESCED && load_seq_cst(&rt->nparked_main) == rt->nworkers)
		return rt_try_exit(rt);
	return false;
}

void worker_main(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	for (;;) {
		struct weft_task *t = worker_next(w);
		if (t) {
			worker_run_task(w, t);
			continue;
		}
		t = worker_find_work(w);
		if (!t) {
			if (!w->spinning)
				park_spin_begin(w);
			if (w->spinning)
				t = worker_spin_for_work(w, NULL, NULL);
		}
		if (t) {
			worker_run_found(w, t);
			continue;
		}
		/* seq_cst: see main_recheck. */
		if (load_seq_cst(&rt->state) == RT_EXIT)
			break;
		park_worker(w, PARK_KIND_MAIN, main_recheck, w);
		if (load_seq_cst(&rt->state) == RT_EXIT)
			break;
	}
	if (w->spinning)
		park_spin_end(w, false);
}

static __thread unsigned tls_rr;

int rt_push_outside(struct weft_rt *rt, int node, bool affine, void (*fn)(void *), void *arg, struct weft_group *g)
{
	/* Tasks may spawn until the runtime exits; other threads only while
	 * it runs. */
	struct weft_worker *self = weft_tls_worker;
	bool outsider = !self || self->rt != rt;
	int r = -ESHUTDOWN;
	if (outsider) {
		/* seq_cst: pairs with weft_destroy's store of RT_DRAINING and its
		 * wait for submitters == 0: either we see the state or it sees
		 * us. */
		fetch_add_seq_cst(&rt->submitters, 1);
		if (load_seq_cst(&rt->state) != RT_RUNNING)
			goto out;
	}
	unsigned ni = node >= 0 ? (unsigned)node : (rt->nnodes > 1 ? tls_rr++ % rt->nnodes : 0);
	struct weft_node *n = rt->nodes[ni];
	struct weft_inject_item it = { .fn = fn, .arg = arg, .group = g, .aux = 0 };
	r = inject_push(affine ? &n->affine : &n->shared, &it);
	if (r < 0)
		goto out;
#if WEFT_TSAN
	/* TSan ignores fences; a seq_cst RMW gives it the same order. */
	fetch_add_seq_cst(&rt->submitters, 0);
#else
	/* seq_cst: the push must be visible before we read idle_state; pairs
	 * with the parker's seq_cst announcement and recheck (park.c). */
	fence_seq_cst();
#endif
	/* Affine tasks need a worker of that node; if none is parked, one
	 * of them is awake and will look at the queue before it parks. */
	if (affine)
		park_wake_on_node(rt, ni);
	else
		park_wake_one(rt, ni);
out:
	if (outsider) {
		/* release: our push happens before destroy sees submitters == 0. */
		fetch_sub_release(&rt->submitters, 1);
	}
	return r;
}
