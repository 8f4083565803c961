/*
 * group.c: fork-join groups (weft_group_*).
 *
 * Overview
 *   A group's count of unfinished tasks is split in two:
 *     local   plain int64, touched only by the worker that initialised the
 *             group (`owner`): spawns it makes and tasks it runs itself
 *             from its own deque cost no atomic instruction at all;
 *     shared  uint32 = 2 * S + W (mod 2^32): S is the rest of the count
 *             (spawns from other threads, and tasks stolen from the owner,
 *             which decrement S and may drive it negative: local then still
 *             holds their +1), W is the "a waiter sleeps" bit.  Adding or
 *             subtracting 2 never touches W.
 *   The group is done when local + S == 0.  Only the owner can read local,
 *   which is why weft_group_wait must run on the thread that called
 *   weft_group_init.
 *
 * Sleeping waiter (owner or outside thread)
 *   Before sleeping the waiter moves local into S and sets W with one RMW
 *   (fetch_add of 2*local + 1).  From then on S is the whole count.  The
 *   completer whose decrement leaves shared == 1 (S = 0, W set) reads
 *   `waiter`, stores shared = 0 and wakes it.  The waiter returns only
 *   after it sees shared == 0, so the completer's last access to the group
 *   is that store; the wake that follows uses only the worker (which
 *   outlives groups) or the futex address (FUTEX_WAKE does not read it).
 *   A worker that wakes for other work first clears W again (unless the
 *   count reached zero meanwhile), so no completer can see "zero" while
 *   the owner is back to counting in local.
 *
 * weft_join
 *   A group of one on the joining worker's stack, with b's frame beside it
 *   (arena TASK_NO_ARENA: nobody frees it).  The frame is pushed like any
 *   owned task (TASK_COUNTED_LOCAL, local = 1); when a() returns and the
 *   frame is still the newest private item, the joiner takes it back and
 *   calls b without touching the counts.  Otherwise (stolen, published,
 *   run meanwhile by a wait inside a()) the group's ordinary protocol
 *   applies, so the frame outlives every access a thief makes to it.
 *
 * Invariants
 *   - W is set only by the waiter and cleared by the waiter (while S > 0)
 *     or by the one completer that brought S to 0.
 *   - Every task counted in local was spawned by the owner; it is
 *     decremented from local if the owner runs it, from S otherwise.
 */
#include "rt.h"

#include <errno.h>

#include "os.h"

static inline int64_t shared_count(uint32_t v)
{
	return (int64_t)((int32_t)v >> 1);
}

__thread char weft_tls_token __attribute__((tls_model("initial-exec")));

void weft_group_init(struct weft_group *g)
{
	if (!g)
		return;
	/* waiter is written by the wait that needs it. */
	g->shared = 0;
	g->local = 0;
	g->owner = thread_token();
}

/* The last decrement found the waiter bit: hand over and wake. */
static void group_finish(struct weft_group *g)
{
	struct weft_worker *waiter = g->waiter;
	/* release: the waiter's load_acquire of 0 sees every task's effects
	 * (they were released into `shared` by the decrements before ours). */
	store_release(&g->shared, 0);
	if (waiter)
		park_notify(waiter);
	else
		os_futex_wake(&g->shared, 1);
}

static void group_sub(struct weft_group *g, uint32_t n)
{
	/* acq_rel: release publishes the tasks' effects to the waiter;
	 * acquire orders our read of g->waiter after the waiter's fetch_add
	 * that set W (the RMW chain on `shared`). */
	uint32_t old = fetch_sub_acq_rel(&g->shared, 2 * n);
	if (old - 2 * n == 1)
		group_finish(g);
}

void group_task_done_shared(struct weft_group *g)
{
	group_sub(g, 1);
}

void group_flush(struct weft_worker *w)
{
	struct weft_group *g = w->pend_group;
	uint32_t n = w->pend_count;
	w->pend_group = NULL;
	w->pend_count = 0;
	if (g && n)
		group_sub(g, n);
}

__attribute__((noinline)) int rt_push_local_slow(struct weft_worker *w, void (*fn)(void *), void *arg,
						 struct weft_group *g, uint32_t flags)
{
	struct weft_task *t = arena_alloc(&w->arena);
	if (likely(t)) {
		t->fn = fn;
		t->arg = arg;
		t->group = g;
		t->flags = flags;
		if (likely(deque_push(&w->deque, t) == 0)) {
			maybe_wake_for(w);
			return 0;
		}
		arena_free(&w->arena, &w->arena, t);
	}
	/* The caller counted a TASK_COUNTED_LOCAL task in g->local before
	 * calling (so that its fast path ends in a tail call): take it back. */
	if (flags & TASK_COUNTED_LOCAL)
		g->local--;
	return -ENOMEM;
}

__attribute__((noinline)) int rt_push_local_after(struct weft_worker *w)
{
	/* A thief asked: publish now (deque_push's check), then consider a
	 * wakeup for the thieves (what worker_run_task would do later). */
	if (load_relaxed(&w->deque.split_req))
		deque_publish(&w->deque);
	w->deque.o_published = false;
	maybe_wake_for(w);
	return 0;
}

/* Every case but "a worker of rt spawns into a group it owns". */
static __attribute__((noinline)) int group_spawn_other(weft_rt *rt, struct weft_group *g, void (*fn)(void *arg),
						       void *arg)
{
	struct weft_worker *w = weft_tls_worker;
	if (unlikely(!rt || !g || !fn))
		return -EINVAL;
	if (w && w->rt == rt) {
		/* A worker, not the owner.  relaxed: the decrement comes after
		 * the task runs, which comes after the push that follows this;
		 * RMWs on one word are ordered. */
		fetch_add_relaxed(&g->shared, 2);
		int r = rt_push_local(w, fn, arg, g, 0);
		if (unlikely(r < 0))
			group_task_done_shared(g);
		return r;
	}
	/* Another thread: its own groups count privately too (the tasks all
	 * finish elsewhere, driving the shared count negative until the
	 * owner's wait adds local in). */
	bool mine = g->owner == (void *)&weft_tls_token;
	if (mine)
		g->local++;
	else
		fetch_add_relaxed(&g->shared, 2);
	int r = rt_push_outside(rt, -1, false, fn, arg, g, false);
	if (unlikely(r < 0)) {
		/* Undo; nobody can be waiting on a count we just raised. */
		if (mine)
			g->local--;
		else
			fetch_sub_relaxed(&g->shared, 2);
	}
	return r;
}

int weft_group_spawn(weft_rt *rt, struct weft_group *g, void (*fn)(void *arg), void *arg)
{
	struct weft_worker *w = weft_tls_worker;
	/* The common case: a worker spawning into its own group, with no
	 * atomic and no call (the slow halves are tail calls).  A NULL rt
	 * never equals w->rt. */
	if (likely(w && w->rt == rt && fn && g && g->owner == w)) {
		/* Counted first; rt_push_local_slow takes it back on failure.
		 * The owner alone reads local, and not before this returns. */
		g->local++;
		return rt_push_local(w, fn, arg, g, TASK_COUNTED_LOCAL);
	}
	return group_spawn_other(rt, g, fn, arg);
}

/* Clear the waiter bit after waking for other work.  False when the count
 * reached zero meanwhile: a completer owns the hand-over. */
static bool group_unflag(struct weft_group *g)
{
	uint32_t v = load_relaxed(&g->shared);
	for (;;) {
		if (v == 1 || v == 0)
			return false;
		if (!(v & 1))
			return true;
		if (cas_acq_rel(&g->shared, &v, v & ~1u))
			return true;
	}
}

struct group_wait_ctx {
	struct weft_worker *w;
	struct weft_group *g;
};

static bool group_done_pred(void *p)
{
	struct weft_group *g = p;
	/* acquire: pairs with completers' release decrements. */
	return g->local + shared_count(load_acquire(&g->shared)) == 0;
}

static bool group_sleep_recheck(void *p)
{
	struct group_wait_ctx *c = p;
	/* acquire: pairs with group_finish's store_release. */
	return load_acquire(&c->g->shared) == 0 || worker_work_visible(c->w);
}

static void group_wait_worker(struct weft_worker *w, struct weft_group *g)
{
	while (!group_done_pred(g)) {
		struct weft_task *t = worker_search(w, group_done_pred, g);
		if (t) {
			worker_run_found(w, t);
			continue;
		}
		if (group_done_pred(g))
			break;

		/* Sleep: move local into shared and raise the waiter bit. */
		g->waiter = w;
		uint32_t add = (uint32_t)(2 * g->local + 1);
		g->local = 0;
		/* acq_rel: release publishes g->waiter to the completer that sees
		 * W; acquire pairs with earlier completers' decrements. */
		uint32_t now = fetch_add_acq_rel(&g->shared, add) + add;
		if (now == 1) {
			/* Already zero, no completer in flight: undo W ourselves. */
			store_relaxed(&g->shared, 0);
			break;
		}
		struct group_wait_ctx c = { .w = w, .g = g };
		park_worker(w, PARK_KIND_WAIT, group_sleep_recheck, &c);
		/* acquire: pairs with group_finish. */
		if (load_acquire(&g->shared) == 0)
			break;
		if (!group_unflag(g)) {
			/* The last completer is between its decrement and its
			 * store; wait for the store, then the group is done. */
			while (load_acquire(&g->shared) != 0)
				cpu_relax();
			break;
		}
	}
	/* As at the end of worker_help_until: a spinner that stops must take
	 * the last spinner's look. */
	if (w->spinning)
		park_spin_end(w, true);
	group_flush_pending(w);
}

static void group_wait_thread(struct weft_group *g)
{
	g->waiter = NULL;
	/* Move our private count in and raise W, as group_wait_worker does;
	 * local is 0 unless we are the owner. */
	uint32_t add = (uint32_t)(2 * g->local + 1);
	g->local = 0;
	/* acq_rel: as in group_wait_worker. */
	uint32_t v = fetch_add_acq_rel(&g->shared, add) + add;
	if (v == 1) {
		store_relaxed(&g->shared, 0);
		return;
	}
	/* acquire: pairs with group_finish's store_release. */
	while ((v = load_acquire(&g->shared)) != 0)
		os_futex_wait(&g->shared, v, -1);
}

/* weft_group_wait on a worker of the group's runtime, past the fast path:
 * our own deque first, then the full search (group_wait_worker). */
static __attribute__((noinline)) void group_wait_general(struct weft_worker *w, struct weft_group *g)
{
	while (!group_done_pred(g)) {
		struct weft_task *t = deque_pop(&w->deque);
		if (!t) {
			group_wait_worker(w, g);
			return;
		}
		worker_run_task(w, t);
	}
	group_flush_pending(w);
}

static __attribute__((noinline)) void group_wait_other(weft_rt *rt, struct weft_group *g)
{
	if (unlikely(!rt || !g))
		return;
	if (shared_count(load_acquire(&g->shared)) + g->local == 0)
		return;
	group_wait_thread(g);
}

void weft_group_wait(weft_rt *rt, struct weft_group *g)
{
	struct weft_worker *w = weft_tls_worker;
	if (unlikely(!w || w->rt != rt || !g)) {
		group_wait_other(rt, g);
		return;
	}
	/* Waiting on another worker's group breaks the rule in group.h; keep
	 * the fast path's frame shortcut out of it all the same. */
	if (unlikely(g->owner != w)) {
		group_wait_general(w, g);
		return;
	}
	/* Fast path: the tasks are usually still on our own deque.  The
	 * fork-join shape (spawn, work, wait): the newest private task is our
	 * own child, counted in g->local.  Run it with the bookkeeping cut to
	 * what that case needs: nothing to publish or wake for, no other
	 * group's count pending, and a frame of our own arena (a
	 * TASK_COUNTED_LOCAL task of g, a group a caller can name, was pushed
	 * by g's owner, w, through weft_group_spawn, see task.h).  Anything
	 * else goes to group_wait_general, which keeps only w and g live
	 * across the task call here. */
	for (;;) {
		struct weft_deque *d = &w->deque;
		int64_t b = d->bottom;
		if (likely(b > d->o_split)) {
			struct weft_task *t = d->slots[(uint64_t)(b - 1) & d->mask];
			/* Our child not yet run: the group is not done, no need
			 * to look at the counts first. */
			if (likely(t->group == g && t->flags == TASK_COUNTED_LOCAL &&
				   !(load_relaxed(&d->split_req) | d->o_published) && !w->pend_group)) {
				void (*fn)(void *) = t->fn;
				void *arg = t->arg;
				store_relaxed(&d->bottom, b - 1);
				t->next = w->arena.free;
				w->arena.free = t;
				fn(arg);
				count(&w->stats.tasks_run);
				g->local--;
				if (group_done_pred(g))
					return;
				continue;
			}
		}
		break;
	}
	if (!group_done_pred(g))
		group_wait_general(w, g);
}

/* weft_join from a thread that is not a worker of rt: b through the
 * injection queue into a group of our own, a here, then wait. */
static __attribute__((noinline)) int join_other(weft_rt *rt, void (*fa)(void *), void *a, void (*fb)(void *),
						void *b)
{
	struct weft_group g;
	if (unlikely(!rt || !fa || !fb))
		return -EINVAL;
	weft_group_init(&g);
	int r = weft_group_spawn(rt, &g, fb, b);
	if (r < 0)
		return r;
	fa(a);
	weft_group_wait(rt, &g);
	return 0;
}

_Static_assert(WEFT_MAX_WORKERS < TASK_NO_ARENA, "no worker's arena index is TASK_NO_ARENA");

/* weft_join's frame: b's task, in a group of one. */
struct join_frame {
	struct weft_task t;
	struct weft_group g;
};

/* b could not be taken back from the private end of our deque: it was
 * stolen or published, or a() left newer tasks above it.  Published and
 * still the only item (join_pushed_after, or a split request): take it
 * back and run it (no count moves: nobody else saw the group).  Otherwise help as a group wait does; that also runs b
 * here if it is still ours (worker_run_task leaves a TASK_NO_ARENA frame
 * alone). */
static __attribute__((noinline)) void join_slow(struct join_frame *j, int64_t bot)
{
	struct weft_worker *w = weft_tls_worker;
	struct weft_deque *d = &w->deque;
	if (deque_take_only(d, bot, &j->t)) {
		if (unlikely(load_relaxed(&d->split_req) | d->o_published))
			rt_push_local_after(w);
		count(&w->stats.tasks_run);
		j->t.fn(j->t.arg);
		return;
	}
	if (!group_done_pred(&j->g))
		group_wait_general(w, &j->g);
}

/* After b's push, when rt_push_hint said so or b is our only private item.
 *
 * b goes public now if it is our only private item, thieves see no public
 * one (relaxed: a stale top only looks non-empty), the runtime has other
 * workers and none of our node is idle (relaxed hints).  Private, nobody
 * could take b before a() spawns or returns, since split requests are
 * answered at pushes and pops only: a join of two 20 ms halves, made while
 * the other worker was busy with a short task, ran serially in 20 of 20
 * rounds.  With a worker idle at the push the old rules stay (a parked one
 * is woken and finds b public, a spinner asks): published then, b of a
 * loop of small joins on an empty deque was stolen again and again by the
 * idle worker, 33 -> 108 ns a join.  Group spawns keep the old rules.
 *
 * Cost: a public pop (a CAS) when the owner takes b back, for every join
 * made on an otherwise empty deque while all workers are busy; in a
 * recursion that is its root and the root of each stolen subtree.  The
 * wake check stays maybe_wake_for's plain load: an RMW on the node's idle
 * line here made such joins 10x slower while the other worker spawned (it
 * reads that line on every push).  A worker parking at this very moment
 * may miss b, which then runs here after a(), as before. */
static __attribute__((noinline)) void join_pushed_after(struct weft_worker *w)
{
	struct weft_deque *d = &w->deque;
	if (d->bottom - 1 == d->o_split && w->rt->nworkers > 1 && load_relaxed(w->node_idle) == 0 &&
	    load_relaxed(&d->top) >= d->o_split) {
		deque_share_all(d);
		/* That answers a pending split request too. */
		if (load_relaxed(&d->split_req))
			store_relaxed(&d->split_req, 0);
	}
	rt_push_local_after(w);
}

/* The deque is full and must grow. */
static __attribute__((noinline)) void join_push_slow(struct weft_worker *w, struct join_frame *j,
						     void (*fa)(void *), void *a)
{
	int64_t bot = w->deque.bottom;
	if (deque_push(&w->deque, &j->t) != 0) {
		/* No room to make b stealable: a join may run both here (b
		 * still counts as a task run, as on every other path). */
		fa(a);
		count(&w->stats.tasks_run);
		j->t.fn(j->t.arg);
		return;
	}
	/* As the fast path's check would: publish on request or when alone,
	 * wake. */
	join_pushed_after(w);
	fa(a);
	join_slow(j, bot);
}

int weft_join(weft_rt *rt, void (*fa)(void *), void *a, void (*fb)(void *), void *b)
{
	struct weft_worker *w = weft_tls_worker;
	if (unlikely(!w || w->rt != rt || !fa || !fb))
		return join_other(rt, fa, a, fb, b);

	/* b's frame lives here, in a group of one counted in local: if a
	 * thief takes it, group_task_done settles the count as for any task
	 * of an owned group, and join_slow waits for that.  This path is what
	 * a spawn per call costs, so it is written for few stores and few
	 * registers live across a(): b's function and argument are read back
	 * from the frame and w from TLS afterwards, and every other case is
	 * out of line. */
	struct join_frame j;
	j.g.shared = 0;
	j.g.reserved_ = 0;
	j.g.local = 1;
	j.g.owner = w;
	j.t.fn = fb;
	j.t.arg = b;
	j.t.group = &j.g;
	j.t.flags = TASK_COUNTED_LOCAL;
	j.t.arena = TASK_NO_ARENA;
	j.t.reserved = 0;

	struct weft_deque *d = &w->deque;
	int64_t bot = d->bottom;
	if (unlikely(!deque_push_fits(d, bot))) {
		join_push_slow(w, &j, fa, a);
		return 0;
	}
	deque_push_at(d, bot, &j.t);
	if (unlikely(rt_push_hint(w, d) | (bot == d->o_split)))
		join_pushed_after(w);

	fa(a);

	/* Fast path: nobody took b, and a() left the deque as it found it, so
	 * b is our newest private item.  Take it back and run it here. */
	w = weft_tls_worker;
	d = &w->deque;
	if (unlikely(d->bottom != bot + 1 || bot < d->o_split || d->slots[(uint64_t)bot & d->mask] != &j.t)) {
		join_slow(&j, bot);
		return 0;
	}
	store_relaxed(&d->bottom, bot);
	if (unlikely(load_relaxed(&d->split_req) | d->o_published))
		rt_push_local_after(w);
	count(&w->stats.tasks_run);
	j.t.fn(j.t.arg);
	return 0;
}
