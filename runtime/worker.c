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
 *   the rest go to the worker's deque where thieves can reach them.  So are
 *   tasks stolen on the own node (up to half the victim's public part, one
 *   CAS; the rest stay private on the thief's deque); from another node
 *   one task at a time.
 *
 * Invariants
 *   - Only the worker touches its deque's owner end, its arena's private
 *     free list, tick, rng and stats.
 *   - A frame is freed (to its owner's arena) before the task runs, so
 *     the next spawn reuses a hot line; fn/arg/group are copied out first.
 *   - A worker's batched group decrements (pend_group, see group.c) are
 *     flushed before it runs a task of another group, whenever its search
 *     comes back empty, and when a wait it helped in returns (its caller
 *     may then run for long without searching), so a group looks finished
 *     late by at most one fruitless search or one task, never early.
 *   - No task is lost at shutdown: a worker parks in the main loop only
 *     with an empty deque, and termination needs every worker parked there
 *     with every queue empty (see rt.c).
 */
#include "acquire.h"
#include "rt.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "os.h"
#include "ring.h"

__thread struct weft_worker *weft_tls_worker __attribute__((tls_model("initial-exec")));

/* Items a worker takes from its own node's injection queue at once.  Two
 * workers pulling from one queue take its head line from each other once
 * per batch: with 16, outside spawns of empty tasks ran at 20-25 M/s
 * whenever both pulled, with 64 at 35-45 (2 vCPUs, interleaved runs).
 * From another node's queue fewer: those tasks were meant for that node. */
#define INJECT_BATCH 64
#define INJECT_BATCH_REMOTE 16
#define SPIN_ROUNDS 64
#define INJECT_TICK 61
#define LOCAL_PATIENCE_NS (10 * 1000 * 1000)
#define STEAL_BATCH DEQUE_STEAL_MAX
#define STEAL_ASK_GAP_NS (20 * 1000)

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

/* Some worker is idle (spinning or parked) on our node, or there are other
 * nodes.  Go's rule: a spinner on our node will come (and ask for a split);
 * otherwise wake a parked worker, ours first.  The one we wake finds our
 * private tasks already public: a task that spawns and then blocks outside
 * weft does not hide its children from a worker it woke. */
void worker_wake_for_spawn(struct weft_worker *w)
{
	uint32_t s = load_relaxed(w->node_idle);
	if (IDLE_SPINNING(s) != 0)
		return;
	if (IDLE_PARKED(s) != 0 || (w->multi_node && remote_parked_no_spinner(w->rt, w->node))) {
		deque_share_all(&w->deque);
		park_wake_one(w->rt, w->node);
	}
}

void worker_published(struct weft_worker *w)
{
	w->deque.o_published = false;
	/* An RMW, not maybe_wake_for's plain load (store buffering: we
	 * store split then load idle_state, a parker RMWs idle_state then
	 * loads split; plain loads let both miss).  acq_rel: of our RMW and a
	 * parker's fetch_add in park_worker, the later one in idle_state's
	 * modification order reads the earlier: we see its PARKED count, or
	 * it synchronises with us and its recheck sees what we published.
	 * Rare: only when answering a split request (it takes the node's idle
	 * line exclusive, and outside submitters read it on every push). */
	uint32_t s = fetch_add_acq_rel(w->node_idle, 0);
	if (s == 0 && !w->multi_node)
		return;
	worker_wake_for_spawn(w);
}

/* Take a batch from an injection queue: run the first, keep the rest on
 * the own deque.  Returns the task to run or NULL. */
static struct weft_task *take_injected(struct weft_worker *w, struct weft_inject *q, bool remote, bool affine)
{
	struct weft_inject_item items[INJECT_BATCH];
	unsigned max = remote ? INJECT_BATCH_REMOTE : INJECT_BATCH;
	/* A deep deque does not need more; take one to keep things moving.
	 * Affine tasks are taken one at a time: on our deque a thief of
	 * another node could take them. */
	if (affine || deque_size(&w->deque) > max)
		max = 1;
	unsigned n = inject_pop(q, items, 1);
	if (n == 0)
		return NULL;
	/*
	 * A weft_acquire / weft_spawn_with request (acquire.c) is made when
	 * its task runs.  Taken in a batch, the rest of the batch would be
	 * requested one after another as soon as each found its components
	 * held, long before this worker could run them: the skewed ECS rows
	 * filled the scheduler with ~1000 waiters that way, nearly all of
	 * which used up their bypass budget and were reserved, and with
	 * everything reserved, tasks ran about one at a time.  Taken alone, a
	 * request is made when a worker is ready to run it.
	 */
	if (max > 1 && !inject_item_is_request(&items[0]) && !acquire_is_request(items[0].fn))
		n += inject_pop(q, items + 1, max - 1);
	struct weft_task *first = NULL;
	unsigned queued = 0;
	for (unsigned i = 0; i < n; i++) {
		/* A request becomes its task here; false: it was answered
		 * already (no memory for its grant). */
		if (inject_item_is_request(&items[i]) && !acquire_item_to_task(w, &items[i]))
			continue;
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
			if (deque_push(&w->deque, t) == 0) {
				queued++;
				continue;
			}
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
	/* The rest of a batch is not our children (no locality to keep):
	 * publish it at once, and wake a sleeper as a spawn would.  On the
	 * private part a long first task would hide it from every thief,
	 * since we answer split requests only at our next push or pop. */
	if (queued) {
		deque_share_all(&w->deque);
		/* A hint, like a spawn's.  A submitter that skipped its wake
		 * did so for a spinner, and a spinner that stops takes the
		 * seq_cst last look (park_spin_end), which sees this batch:
		 * if that is us, worker_run_found does it next.  The RMW of
		 * worker_published here took the node's idle line from the
		 * submitters, who read it on every push: outside spawns fell
		 * from 33-40 to 17-20 M/s. */
		maybe_wake_for(w);
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

/* Steal from v.  On our own node take up to STEAL_BATCH (half the public
 * part) with one CAS: run the oldest, keep the rest on our deque, private
 * (thieves ask for them with a split request as usual; public, they were
 * seen to ping-pong between two workers stealing them back and forth).
 * Tiny tasks then cost one steal per batch, not one each.  From another
 * node take one: what crosses nodes stays small.  ask: raise a split
 * request if the public part is empty (see may_ask). */
static struct weft_task *steal_from(struct weft_worker *w, struct weft_worker *v, bool remote, bool ask)
{
	struct weft_task *got[STEAL_BATCH];
	for (int tries = 0; tries < 4; tries++) {
		int why;
		unsigned k = deque_steal_many(&v->deque, got, remote ? 1 : STEAL_BATCH, ask, &why);
		if (k) {
			uint64_t *c = remote ? &w->stats.steals_remote : &w->stats.steals_local;
			store_relaxed(c, load_relaxed(c) + k);
			/* Not with other nodes to cross to: a thief that
			 * may not ask its own node's workers is the one that
			 * ends up stealing from far away while its node has
			 * work (the NUMA suite's steal-order check saw it). */
			if (!w->multi_node)
				w->ask_after = os_now_ns() + STEAL_ASK_GAP_NS;
			for (unsigned i = 1; i < k; i++) {
				if (likely(deque_push(&w->deque, got[i]) == 0))
					continue;
				/* Out of memory for our deque: run it here,
				 * no longer counted as a spinner (wakers skip
				 * their wake while one spins). */
				if (w->spinning)
					park_spin_end(w, true);
				worker_run_task(w, got[i]);
			}
			/* With other nodes, the rest goes public at once: a
			 * sibling that finds it private waits for our next
			 * push or pop, up to its patience, and then crosses
			 * to another node while its own has work (TSan's
			 * slow runs of test_steal showed it).  Either way, as
			 * a spawn would, a parked worker with no spinner
			 * around is woken, not left asleep while got[0] runs. */
			if (k > 1) {
				if (w->multi_node)
					deque_share_all(&w->deque);
				maybe_wake_for(w);
			}
			return got[0];
		}
		if (why == DEQUE_EMPTY)
			break;
	}
	count(&w->stats.steal_failures);
	return NULL;
}

/* May this search raise split requests?  Not within STEAL_ASK_GAP_NS of
 * our last successful steal: answering costs the owner about three
 * cache-line transfers in the middle of its pushes and pops (it reads our
 * request, then writes split and clears the request, lines we read), and
 * every task we take costs it another one when the frame comes back for
 * reuse.  A thief that asks again as soon as a batch of tiny tasks is done
 * slows the owner more than it helps (in-worker spawn 1000+wait, 2
 * workers, with the publish cap in deque_publish: about 23 -> 130 M
 * tasks/s on the 2-vCPU VM).  Work already public is taken at once;
 * only the request waits.  A thief with tasks worth more than the gap
 * never notices it.  Before parking, a worker asks regardless (last_look),
 * so the request it leaves behind still wakes it.  Single-node runtimes
 * only: steal_from sets the gap only there. */
static bool may_ask(struct weft_worker *w)
{
	if (likely(w->ask_after == 0))
		return true;
	if (os_now_ns() < w->ask_after)
		return false;
	w->ask_after = 0;
	return true;
}

/* *private_seen: some victim holds private work that our split request
 * will make it publish at its next push or pop. */
static struct weft_task *steal_on_node(struct weft_worker *w, unsigned ni, bool remote, bool ask, bool *private_seen)
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
		struct weft_task *t = steal_from(w, v, remote, ask);
		if (t)
			return t;
		/* Only a thief with another node to cross to needs to know:
		 * bottom sits on the owner's line, which every push and pop
		 * writes, so an idle thief reading it in its spin loop makes
		 * the owner miss on its own deque. */
		if (w->multi_node && !*private_seen && deque_private_hint(&v->deque))
			*private_seen = true;
	}
	return NULL;
}

static struct weft_task *find_work(struct weft_worker *w);

/* The search came back empty: let waiters see what we finished. */
static struct weft_task *found_nothing(struct weft_worker *w)
{
	if (w->pend_group)
		group_flush(w);
	/* Partial batches of other arenas' frames back to their owners. */
	arena_flush(&w->arena);
	return NULL;
}

struct weft_task *worker_find_work(struct weft_worker *w)
{
	struct weft_task *t = find_work(w);
	if (t)
		w->local_wait_since = 0;
	return t;
}

static struct weft_task *find_work(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	struct weft_task *t = deque_pop(&w->deque);
	if (t)
		return t;
	/* Out of own work: submit what our tasks queued on the ring, and run
	 * what it completed before looking elsewhere. */
	if (w->ring && ring_poll(w)) {
		t = deque_pop(&w->deque);
		if (t)
			return t;
	}
	/* Finished tasks of another worker's group stay batched while we
	 * find more work (usually stolen from the same group: one RMW on the
	 * group's line per run of steals, not one per stolen task, which took
	 * the line from the owner spawning into it); they are flushed when
	 * the search comes back empty (found_nothing), and when a task of
	 * another group runs (worker_run_task). */
	t = take_own_node_injected(w);
	if (t)
		return t;
	bool private_seen = false;
	bool ask = may_ask(w);
	t = steal_on_node(w, w->node, false, ask, &private_seen);
	if (t)
		return t;
	/* A worker of our node holds work it will publish at its next push
	 * or pop (our split request): wait for it rather than cross to
	 * another node.  In practice the wait ends with our spin phase: we
	 * park, our split request stays up, and that worker publishes and
	 * wakes us at its next push or pop.  LOCAL_PATIENCE_NS only bounds a
	 * spin phase that never ends. */
	if (private_seen) {
		uint64_t now = os_now_ns();
		if (w->local_wait_since == 0)
			w->local_wait_since = now;
		if (now - w->local_wait_since < LOCAL_PATIENCE_NS)
			return found_nothing(w);
	}
	w->local_wait_since = 0;
	for (unsigned k = 0; k + 1 < rt->nnodes; k++) {
		t = steal_on_node(w, rt->topo.near[w->node][k], true, ask, &private_seen);
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
	return found_nothing(w);
}

/* The next task for a worker that is not idle: own deque, with the
 * periodic look at the injection queues. */
struct weft_task *worker_next(struct weft_worker *w)
{
	if (unlikely(++w->tick % INJECT_TICK == 0)) {
		/* Also flush our ring's submissions and reap its completions. */
		if (w->ring)
			ring_poll(w);
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
	if (w->ring && ring_has_work(w))
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

/* About to park: one more search that raises split requests even within
 * the gap (may_ask), so the requests we leave behind make their owners
 * publish and wake us, as the comment in find_work expects. */
static struct weft_task *last_look(struct weft_worker *w)
{
	if (w->ask_after == 0)
		return NULL;
	w->ask_after = 0;
	return worker_find_work(w);
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
		/* Mostly pause; now and then give the CPU away, since on a
		 * machine with more threads than cores the work we wait for
		 * may come from a thread that needs this core. */
		if (round % 8 == 7)
			sched_yield();
		else
			for (int i = 0; i < 32; i++)
				cpu_relax();
	}
	return last_look(w);
}

struct weft_task *worker_search(struct weft_worker *w, bool (*done)(void *), void *ctx)
{
	struct weft_task *t = worker_next(w);
	if (!t)
		t = worker_find_work(w);
	if (!t) {
		if (!w->spinning)
			park_spin_begin(w);
		t = worker_spin_for_work(w, done, ctx);
	}
	return t;
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
		struct weft_task *t = worker_search(w, done, ctx);
		if (t) {
			worker_run_found(w, t);
			continue;
		}
		if (done(ctx))
			break;
		park_worker(w, PARK_KIND_WAIT, help_recheck, &h);
	}
	/* Still spinning (claimed by a waker, or spinning in worker_search
	 * when done() came true): a submitter may have skipped its wake for
	 * us, so stop as a spinner that found work does, with the last
	 * spinner's look (park_spin_end). */
	if (w->spinning)
		park_spin_end(w, true);
	group_flush_pending(w);
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
	if (st == RT_QUIESCED && load_seq_cst(&rt->nparked_main) == rt->nworkers) {
		if (rt_try_exit(rt))
			return true;
		/* Not the end after all: cancelling stuck requests may just
		 * have queued their callbacks, possibly on our own deque. */
		return worker_work_visible(w);
	}
	return false;
}

void worker_main(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	for (;;) {
		struct weft_task *t = worker_next(w);
		if (t) {
			/* Woken as a spinner, the first worker_next may already
			 * find work (the 61st-tick look at the injection
			 * queue): stop spinning before running it, or wakes
			 * are skipped for us all along the task. */
			worker_run_found(w, t);
			continue;
		}
		t = worker_find_work(w);
		if (!t) {
			if (!w->spinning)
				park_spin_begin(w);
			if (w->spinning)
				t = worker_spin_for_work(w, NULL, NULL);
			else
				t = last_look(w);
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

static __thread unsigned tls_rr __attribute__((tls_model("initial-exec")));

/* The calling thread's submitter record for rt, created on first use.  The
 * cache is keyed by rt's serial number too, so a runtime created at the
 * address of a destroyed one is not mistaken for it. */
/* initial-exec: in the shared library the default model would call
 * __tls_get_addr on every spawn from another thread. */
static __thread struct {
	struct weft_rt *rt;
	uint64_t serial;
	struct submitter *rec;
} tls_sub __attribute__((tls_model("initial-exec")));

struct submitter *rt_submitter(struct weft_rt *rt)
{
	if (likely(tls_sub.rt == rt && tls_sub.serial == rt->serial))
		return tls_sub.rec;
	struct submitter *rec = NULL;
	/* A page of its own: the spawn path's exchange on `active` must not
	 * sit near anything workers write; neighbours on the same page
	 * (adjacent-line and stream prefetchers) cost up to 4x on outside
	 * spawns here.  One page per submitting thread per runtime. */
	if (posix_memalign((void **)&rec, 4096, 4096) != 0)
		return NULL;
	memset(rec, 0, sizeof(*rec));
	pthread_mutex_lock(&rt->submitters_lock);
	rec->next = rt->submitters;
	rt->submitters = rec;
	pthread_mutex_unlock(&rt->submitters_lock);
	tls_sub.rt = rt;
	tls_sub.serial = rt->serial;
	tls_sub.rec = rec;
	return rec;
}

bool rt_submitter_is_mine(struct weft_rt *rt, struct submitter *rec)
{
	return tls_sub.rt == rt && tls_sub.serial == rt->serial && tls_sub.rec == rec;
}

int rt_push_outside(struct weft_rt *rt, int node, bool affine, void (*fn)(void *), void *arg, struct weft_group *g,
		    bool internal)
{
	struct weft_inject_item it = { .fn = fn, .arg = arg, .group = g };
	return rt_push_outside_item(rt, node, affine, &it, internal);
}

int rt_outside_enter(struct weft_rt *rt, bool internal, struct submitter **out)
{
	/* Tasks may spawn until the runtime exits; other threads only while
	 * it runs.  An outside thread marks itself active on its own line,
	 * then reads the state: weft_destroy stores the state and then reads
	 * every active flag, with a full barrier between on both sides (ours
	 * a seq_cst RMW, or our half of the asymmetric fence), so either we
	 * see it draining or it waits for us (and for what we do before
	 * rt_outside_leave). */
	*out = NULL;
	struct weft_worker *self = weft_tls_worker;
	if (self && self->rt == rt)
		return 0;
	struct submitter *rec = rt_submitter(rt);
	if (unlikely(!rec))
		return -ENOMEM;
	/* Already in (a weft_io_cancel queueing its callback): the outer
	 * call checked the state, and destroy waits for it to leave. */
	if (unlikely(load_relaxed(&rec->active)))
		return 0;
	if (likely(rt->asym_fence)) {
		/* The asymmetric fence: weft_destroy's membarrier, after its
		 * store of RT_DRAINING, is the heavy half; this keeps the
		 * compiler from moving our load of the state above the store.
		 * It saves a locked instruction per spawn, which would also
		 * wait for the stores of the previous spawn (its queue cell, on
		 * a line the consumer last wrote) to leave the store buffer. */
		store_relaxed(&rec->active, 1);
		fence_compiler();
	} else {
		/* seq_cst: pairs with weft_destroy's store of RT_DRAINING and
		 * its loads of the active flags. */
		exchange_seq_cst(&rec->active, 1);
	}
	if (unlikely(load_seq_cst(&rt->state) != RT_RUNNING) && !internal) {
		store_release(&rec->active, 0);
		return -ESHUTDOWN;
	}
	*out = rec;
	return 0;
}

void rt_outside_leave(struct submitter *rec)
{
	if (rec) {
		/* release: what we did happens before destroy sees 0. */
		store_release(&rec->active, 0);
	}
}

int rt_push_outside_item(struct weft_rt *rt, int node, bool affine, const struct weft_inject_item *it, bool internal)
{
	struct submitter *rec;
	int r = rt_outside_enter(rt, internal, &rec);
	if (unlikely(r < 0))
		return r;
	unsigned ni = node >= 0 ? (unsigned)node : (rt->nnodes > 1 ? tls_rr++ % rt->nnodes : 0);
	struct weft_node *n = rt->nodes[ni];
	/* The push's seq_cst publication (the tail CAS, or the overflow store)
	 * orders it before our seq_cst load of idle_state in the wake below;
	 * parkers announce with a seq_cst RMW and then load the queue with
	 * seq_cst: one of us sees the other (no fence needed). */
	r = inject_push(affine ? &n->affine : &n->shared, it);
	if (r == 0) {
		/* Affine tasks need a worker of that node; if none is parked,
		 * one of them is awake and will look before it parks. */
		if (affine)
			park_wake_on_node(rt, ni);
		else
			park_wake_one(rt, ni);
	}
	rt_outside_leave(rec);
	return r;
}
