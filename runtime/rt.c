/*
 * rt.c: creating and destroying a runtime, the public spawn entry points,
 * stats, and the default (pthreads) thread layer.
 *
 * Overview / Invariants
 *   weft_create builds the topology, places workers (node-major, CPUs of
 *   the nodes interleaved so every node gets workers before any node gets a
 *   second one), allocates each worker on its node, starts the threads and
 *   opens the start gate.  If anything fails, the gate opens with "abort":
 *   started threads return at once, are joined, and everything is freed.
 *
 *   weft_destroy is a small state machine on rt->state:
 *     RUNNING -> DRAINING   outside spawns now fail with -ESHUTDOWN; wait
 *                           until no outside spawn is half-way (every
 *                           thread's submitter->active flag is 0)
 *     DRAINING -> QUIESCED  from now on only tasks create tasks
 *     QUIESCED -> EXIT      when every worker is parked in its main loop
 *                           and no queue holds a task: nothing can create
 *                           work any more.  Whoever sees that first (the
 *                           last worker to park, or weft_destroy itself)
 *                           moves the state with a CAS and wakes everyone.
 *                           Component requests still waiting then can never
 *                           be granted: they are cancelled first, and their
 *                           callbacks are tasks like any other.  Two callers
 *                           can race here, and a thread that is not a worker
 *                           can be dispatching what its release granted:
 *                           such dispatches are counted (acquire.c,
 *                           `dispatching`), the caller waits for them and
 *                           looks at the queues and the parked count again
 *                           before it decides.  A cancel that queues no task
 *                           (a dropped weft_spawn_with, a woken
 *                           weft_acquire_wait) makes the caller look again
 *                           at once: nobody else would.
 *   The check "all parked" and the move to QUIESCED are both seq_cst, so
 *   the last parker and weft_destroy cannot both miss the condition.
 *   The store of DRAINING and the reads of the active flags are separated
 *   by membarrier(2) when weft_create could register it (rt->asym_fence):
 *   outside spawns then set their flag with a plain store and a compiler
 *   fence (see rt_push_outside); otherwise they use a seq_cst exchange.
 */
#include "rt.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/version.h>

#include "acquire.h"
#include "io.h"
#include "os.h"
#include "ring.h"

enum { GATE_CLOSED = 0, GATE_OPEN = 1, GATE_ABORT = 2 };

/* ---- default thread layer ------------------------------------------------ */

struct pthread_start {
	void (*fn)(void *);
	void *arg;
};

static void *pthread_trampoline(void *p)
{
	struct pthread_start s = *(struct pthread_start *)p;
	free(p);
	s.fn(s.arg);
	return NULL;
}

static int pt_start(void *ctx, void **handle, void (*fn)(void *), void *arg)
{
	(void)ctx;
	struct pthread_start *s = malloc(sizeof(*s));
	pthread_t *t = malloc(sizeof(*t));
	if (!s || !t) {
		free(s);
		free(t);
		return -ENOMEM;
	}
	s->fn = fn;
	s->arg = arg;
	int r = pthread_create(t, NULL, pthread_trampoline, s);
	if (r) {
		free(s);
		free(t);
		return -r;
	}
	*handle = t;
	return 0;
}

static int pt_join(void *ctx, void *handle)
{
	(void)ctx;
	pthread_t *t = handle;
	int r = pthread_join(*t, NULL);
	free(t);
	return -r;
}

static int pt_pin(void *ctx, int cpu)
{
	(void)ctx;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	int r = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	return -r;
}

static const struct weft_thread_ops pthread_ops = {
	.ctx = NULL,
	.start = pt_start,
	.join = pt_join,
	.pin = pt_pin,
};

const struct weft_thread_ops *weft_thread_ops_pthread(void)
{
	return &pthread_ops;
}

const char *weft_version(void)
{
	return WEFT_VERSION_STRING;
}

/* ---- workers --------------------------------------------------------------- */

static void worker_entry(void *p)
{
	struct weft_worker *w = p;
	struct weft_rt *rt = w->rt;
	uint32_t g;
	/* acquire: pairs with the gate's store_release in weft_create; the
	 * runtime is fully built once the gate opens. */
	while ((g = load_acquire(&rt->gate)) == GATE_CLOSED)
		os_futex_wait(&rt->gate, GATE_CLOSED, -1);
	if (g == GATE_ABORT)
		return;
	weft_tls_worker = w;
	if (rt->pin && rt->threads->pin)
		rt->threads->pin(rt->threads->ctx, w->cpu);
	worker_main(w);
	/* The ring belongs to this thread (SINGLE_ISSUER): close it here. */
	ring_fini(w);
	weft_tls_worker = NULL;
}

/* push_idle of workers of a runtime with several nodes: their pushes
 * always take rt_push_local_after, which looks at the other nodes.  Only
 * ever read. */
static uint32_t rt_always_one = 1;

static void free_rt(struct weft_rt *rt)
{
	io_fini(rt);
	for (unsigned i = 0; i < rt->nworkers; i++) {
		struct weft_worker *w = rt->workers[i];
		if (!w)
			continue;
		deque_fini(&w->deque);
		arena_fini(&w->arena);
		node_free(w, sizeof(*w));
	}
	for (unsigned n = 0; n < rt->nnodes; n++) {
		struct weft_node *node = rt->nodes[n];
		if (!node)
			continue;
		inject_fini(&node->shared);
		inject_fini(&node->affine);
		node_free(node, sizeof(*node));
	}
	if (rt->acq)
		acquire_fini(rt);
	topology_free(&rt->topo);
	while (rt->submitters) {
		struct submitter *next = rt->submitters->next;
		unsigned leaked = acquire_free_grants(rt->submitters);
		if (leaked)
			fprintf(stderr, "weft: weft_destroy: %u grant(s) of a thread were never released; freed\n", leaked);
		free(rt->submitters);
		rt->submitters = next;
	}
	pthread_mutex_destroy(&rt->submitters_lock);
	free(rt);
}

/* Worker i's (node, cpu): walk the nodes round-robin, each time taking the
 * node's next CPU; wrap around when oversubscribed. */
static void place_workers(const struct weft_topology *t, unsigned nworkers, unsigned *node_of, int *cpu_of)
{
	unsigned next[WEFT_MAX_NODES] = { 0 };
	unsigned total = 0;
	for (unsigned n = 0; n < t->nnodes; n++)
		total += t->node[n].ncpus;
	unsigned i = 0, n = 0;
	while (i < nworkers) {
		const struct weft_topo_node *tn = &t->node[n];
		if (tn->ncpus > 0 && (next[n] < tn->ncpus || i >= total)) {
			node_of[i] = n;
			cpu_of[i] = tn->cpus[next[n] % tn->ncpus];
			next[n]++;
			i++;
		}
		n = (n + 1) % t->nnodes;
	}
}

static int build(struct weft_rt *rt, const struct weft_config *cfg)
{
	int r = topology_load(cfg->topology, &rt->topo);
	if (r < 0)
		return r;
	const struct weft_topology *t = &rt->topo;
	unsigned ncpus = 0;
	for (unsigned n = 0; n < t->nnodes; n++)
		ncpus += t->node[n].ncpus;
	if (ncpus == 0)
		return -EINVAL;
	unsigned nworkers = cfg->workers ? cfg->workers : ncpus;
	if (nworkers > WEFT_MAX_WORKERS)
		return -EINVAL;

	unsigned node_of[WEFT_MAX_WORKERS];
	int cpu_of[WEFT_MAX_WORKERS];
	place_workers(t, nworkers, node_of, cpu_of);

	rt->nnodes = t->nnodes;
	for (unsigned n = 0; n < rt->nnodes; n++) {
		struct weft_node *node = node_alloc(sizeof(*node), t->node[n].os_node);
		if (!node)
			return -ENOMEM;
		rt->nodes[n] = node;
		int os_node = t->node[n].os_node;
		if (inject_init_on(&node->shared, 14, os_node) < 0 || inject_init_on(&node->affine, 10, os_node) < 0)
			return -ENOMEM;
	}
	/* Workers are numbered node by node. */
	unsigned idx = 0;
	for (unsigned n = 0; n < rt->nnodes; n++) {
		rt->nodes[n]->first = idx;
		for (unsigned i = 0; i < nworkers; i++) {
			if (node_of[i] != n)
				continue;
			struct weft_worker *w = node_alloc(sizeof(*w), t->node[n].os_node);
			if (!w)
				return -ENOMEM;
			rt->workers[idx] = w;
			rt->nworkers = idx + 1;
			w->rt = rt;
			w->index = idx;
			w->node = n;
			w->cpu = cpu_of[i];
			w->rng = 0x9E3779B97F4A7C15ULL * (idx + 1);
			w->multi_node = t->nnodes > 1;
			w->node_idle = &rt->nodes[n]->idle_state;
			w->push_idle = w->multi_node ? &rt_always_one : w->node_idle;
			if (deque_init_on(&w->deque, 8, t->node[n].os_node) < 0)
				return -ENOMEM;
			/* With other nodes, a split request gets half the
			 * private part, uncapped: a sibling that runs dry
			 * while this worker is descheduled crosses to another
			 * node after its patience (test_steal under TSan and
			 * the NUMA guest saw it with 16 at a time). */
			if (w->multi_node)
				w->deque.o_publish_max = UINT32_MAX;
			if (arena_init(&w->arena, (uint16_t)idx, t->node[n].os_node) < 0)
				return -ENOMEM;
			idx++;
		}
		rt->nodes[n]->count = idx - rt->nodes[n]->first;
	}
	r = acquire_init(rt, cfg);
	if (r < 0)
		return r;
	return io_init(rt, cfg);
}

int weft_create(weft_rt **out, const struct weft_config *cfg)
{
	static const struct weft_config defaults;
	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!cfg)
		cfg = &defaults;
	struct weft_rt *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return -ENOMEM;
	static uint64_t serials;
	rt->serial = fetch_add_relaxed(&serials, 1) + 1;
	pthread_mutex_init(&rt->submitters_lock, NULL);
	/* Not under TSan: it cannot see the barrier, and would see the
	 * plain store as the only order between submitter and destroy. */
	rt->asym_fence = !WEFT_TSAN && os_membarrier_register();
	rt->pin = cfg->pin;
	rt->threads = cfg->threads ? cfg->threads : &pthread_ops;
	if (!rt->threads->start || !rt->threads->join) {
		free_rt(rt);
		return -EINVAL;
	}
	int r = build(rt, cfg);
	if (r < 0) {
		free_rt(rt);
		return r;
	}
	unsigned started = 0;
	for (; started < rt->nworkers; started++) {
		struct weft_worker *w = rt->workers[started];
		r = rt->threads->start(rt->threads->ctx, &w->thread, worker_entry, w);
		if (r < 0)
			break;
	}
	/* release: pairs with worker_entry's acquire of the gate. */
	store_release(&rt->gate, r < 0 ? GATE_ABORT : GATE_OPEN);
	os_futex_wake(&rt->gate, WEFT_MAX_WORKERS);
	if (r < 0) {
		for (unsigned i = 0; i < started; i++)
			rt->threads->join(rt->threads->ctx, rt->workers[i]->thread);
		free_rt(rt);
		return r > 0 ? -r : r;
	}
	*out = rt;
	return 0;
}

/* Any task left anywhere?  Only meaningful once every worker is parked. */
static bool rt_any_queued(struct weft_rt *rt)
{
	for (unsigned n = 0; n < rt->nnodes; n++)
		if (inject_nonempty_seq_cst(&rt->nodes[n]->shared) || inject_nonempty_seq_cst(&rt->nodes[n]->affine))
			return true;
	for (unsigned i = 0; i < rt->nworkers; i++)
		if (deque_public_nonempty_acquire(&rt->workers[i]->deque))
			return true;
	return false;
}

bool rt_try_exit(struct weft_rt *rt)
{
	for (;;) {
		/* I/O first: a completion queues its callback task before it
		 * stops counting as in flight, so this order cannot miss both. */
		if (io_busy(rt))
			return false;
		if (rt_any_queued(rt))
			return false;
		/* Requests still waiting now can never be granted: cancel them.
		 * A callback becomes a task (seen by the next round's look at
		 * the queues); a weft_spawn_with request is dropped and a
		 * blocked weft_acquire_wait woken, which queue nothing: look
		 * again rather than leave it to a wakeup that never comes. */
		if (!rt->acq || !acquire_cancel_stuck(rt))
			break;
	}
	/* acquire_cancel_stuck waited for dispatches in flight (an outside
	 * release's grants, a concurrent caller's cancels): what they queued
	 * after our first look is visible now, and a worker they woke no
	 * longer counts as parked (the acquire loads of rt_any_queued show
	 * what a worker that took such a task did before). */
	if (rt_any_queued(rt) || load_seq_cst(&rt->nparked_main) != rt->nworkers)
		return false;
	uint32_t expected = RT_QUIESCED;
	/* seq_cst: one winner; pairs with the workers' loads of state. */
	if (!cas_seq_cst(&rt->state, &expected, RT_EXIT))
		return load_seq_cst(&rt->state) == RT_EXIT;
	park_wake_all(rt);
	/* release: weft_destroy may free everything once it sees 2. */
	store_release(&rt->exit_word, 1);
	os_futex_wake(&rt->exit_word, 1);
	return true;
}

static void wait_submitters(struct weft_rt *rt)
{
	pthread_mutex_lock(&rt->submitters_lock);
	for (struct submitter *s = rt->submitters; s; s = s->next)
		/* seq_cst: see weft_destroy. */
		while (load_seq_cst(&s->active) != 0)
			sched_yield();
	pthread_mutex_unlock(&rt->submitters_lock);
}

void weft_destroy(weft_rt *rt)
{
	if (!rt)
		return;
	struct weft_worker *self = weft_tls_worker;
	if (self && self->rt == rt) {
		fprintf(stderr, "weft: weft_destroy called from one of its own workers; ignored\n");
		return;
	}
	/* seq_cst: pairs with rt_push_outside's exchange of its active flag
	 * and load of the state: from here on, a spawn from another thread
	 * either sees DRAINING or is waited for below. */
	store_seq_cst(&rt->state, RT_DRAINING);
	/* With asym_fence a submitter marks itself with a plain store and a
	 * compiler fence instead: this barrier is the other half.  Every
	 * submitter runs a full barrier at some point B during the call.  B
	 * before its load of the state: that load sees DRAINING (our store is
	 * visible before the barrier starts).  B after it: its store of
	 * active = 1 is visible when the call returns, so the loads below see
	 * it.  Registered in weft_create, so the call cannot fail short of a
	 * broken kernel, and then no guarantee is left to fall back on. */
	if (rt->asym_fence && os_membarrier() < 0) {
		fprintf(stderr, "weft: weft_destroy: membarrier failed after registration\n");
		abort();
	}
	wait_submitters(rt);
	store_seq_cst(&rt->state, RT_QUIESCED);
	/* I/O in flight is cancelled; each callback gets -ECANCELED. */
	io_shutdown(rt);
	/* seq_cst: if the last worker parked before QUIESCED was visible, we
	 * see its count here and finish the job ourselves. */
	if (load_seq_cst(&rt->nparked_main) == rt->nworkers)
		rt_try_exit(rt);
	/* acquire: pairs with rt_try_exit's store_release. */
	while (load_acquire(&rt->exit_word) == 0)
		os_futex_wait(&rt->exit_word, 0, -1);
	for (unsigned i = 0; i < rt->nworkers; i++)
		rt->threads->join(rt->threads->ctx, rt->workers[i]->thread);
	/* A spawn that started while we drained may still be on its way out
	 * with -ESHUTDOWN: let it leave before the memory goes. */
	wait_submitters(rt);
	free_rt(rt);
}

/* ---- public entry points --------------------------------------------------- */

int weft_spawn(weft_rt *rt, void (*fn)(void *arg), void *arg)
{
	if (unlikely(!rt || !fn))
		return -EINVAL;
	struct weft_worker *w = weft_tls_worker;
	if (likely(w && w->rt == rt))
		return rt_push_local(w, fn, arg, NULL, 0);
	return rt_push_outside(rt, -1, false, fn, arg, NULL, false);
}

int weft_spawn_on_node(weft_rt *rt, unsigned node, void (*fn)(void *arg), void *arg)
{
	if (!rt || !fn || node >= rt->nnodes)
		return -EINVAL;
	/* A node without workers (fewer workers than nodes): any worker. */
	if (rt->nodes[node]->count == 0)
		return weft_spawn(rt, fn, arg);
	/* Always through the node's affine queue, even from a worker of that
	 * node: a deque could be robbed by another node's thief. */
	return rt_push_outside(rt, (int)node, true, fn, arg, NULL, false);
}

unsigned weft_worker_count(const weft_rt *rt)
{
	return rt ? rt->nworkers : 0;
}

unsigned weft_node_count(const weft_rt *rt)
{
	return rt ? rt->nnodes : 0;
}

int weft_current_worker(void)
{
	struct weft_worker *w = weft_tls_worker;
	return w ? (int)w->index : -1;
}

int weft_worker_node(const weft_rt *rt, unsigned worker)
{
	if (!rt || worker >= rt->nworkers)
		return -EINVAL;
	return (int)rt->workers[worker]->node;
}

int weft_worker_cpu(const weft_rt *rt, unsigned worker)
{
	if (!rt || worker >= rt->nworkers)
		return -EINVAL;
	return rt->workers[worker]->cpu;
}

int weft_stats(weft_rt *rt, struct weft_stats *out)
{
	if (!rt || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->workers = rt->nworkers;
	out->nodes = rt->nnodes;
	for (unsigned i = 0; i < rt->nworkers; i++) {
		const struct weft_worker *w = rt->workers[i];
		const struct worker_counters *c = &w->stats;
		struct weft_worker_stats *o = &out->worker[i];
		o->node = w->node;
		o->cpu = w->cpu;
		o->tasks_run = load_relaxed(&c->tasks_run);
		o->steals_local = load_relaxed(&c->steals_local);
		o->steals_remote = load_relaxed(&c->steals_remote);
		o->steal_failures = load_relaxed(&c->steal_failures);
		o->injected = load_relaxed(&c->injected);
		o->injected_remote = load_relaxed(&c->injected_remote);
		o->parks = load_relaxed(&c->parks);
		o->wakeups = load_relaxed(&c->wakeups);
		o->spurious_wakeups = load_relaxed(&c->spurious_wakeups);
	}
	if (rt->acq)
		acquire_stats(rt, &out->acquire);
	if (rt->io)
		io_stats(rt, &out->io);
	return 0;
}
