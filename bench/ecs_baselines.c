/*
 * ecs_baselines.c: the two pthread baselines of the ECS rows (issue 3):
 *   (a) a pool of worker threads fed through a mutex + condvar queue, each
 *       task taking one pthread_rwlock_t per component in ascending
 *       component order (so no deadlock), and
 *   (b) a central scheduler: one mutex, one condvar; a worker holding the
 *       mutex scans the pending tasks in submission order for the first
 *       one compatible with the current holders, takes it, runs it without
 *       the mutex, then releases and broadcasts.
 * Both run the shared task list, body and in-flight gate of ecs.c, so they
 * differ from weft only in scheduling.  Also the stand-in for the OpenMP
 * row when OpenMP is not built.
 */
#define _GNU_SOURCE 1
#include "ecs.h"

#include "bench_util.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Worker threads of both baselines: index and the scheduler they serve. */
struct pool_thread {
	pthread_t tid;
	unsigned index;
	void *sched;
};

/* 0 or -errno; *started says how many threads run either way (they must
 * be stopped and joined). */
static int start_threads(struct pool_thread *th, unsigned n, void *sched, void *(*fn)(void *),
			 struct ecs_result *r, unsigned *started)
{
	for (*started = 0; *started < n; ++*started) {
		struct pool_thread *t = &th[*started];
		int err;

		t->index = *started;
		t->sched = sched;
		err = pthread_create(&t->tid, NULL, fn, t);
		if (err) {
			ecs_not_run(r, "pthread_create: %s", strerror(err));
			return -err;
		}
	}
	return 0;
}

/* ---------------- (a) sorted rwlocks ---------------- */

/* One lock per line: neighbouring components must not share a line that
 * both workers write. */
struct rw_comp {
	alignas(ECS_LINE) pthread_rwlock_t lock;
};

struct rw_pool {
	struct ecs_load *load;
	struct rw_comp comp[ECS_MAX_COMPONENTS];
	/* The queue: a ring of task pointers under `mu`.  The gate bounds
	 * the tasks outstanding, so the ring never overflows. */
	alignas(ECS_LINE) pthread_mutex_t mu;
	pthread_cond_t cv;
	struct ecs_task **ring;
	unsigned mask, head, tail, idle;
	bool stop;
	bool produce; /* the in-pool producer's first turn is due */
};

static void rw_submit(struct rw_pool *pool, struct ecs_task *t)
{
	ecs_stamp_submit(t);
	pthread_mutex_lock(&pool->mu);
	if (pool->tail - pool->head > pool->mask)
		ecs_fail("rwlock pool queue overflow");
	pool->ring[pool->tail++ & pool->mask] = t;
	/* One task can feed one worker: signal, not broadcast. */
	if (pool->idle)
		pthread_cond_signal(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
}

/* The in-pool producer's turn on a pool thread. */
static void rw_produce(struct rw_pool *pool)
{
	struct ecs_task *t;

	while ((t = ecs_produce_next(pool->load)))
		rw_submit(pool, t);
}

static void *rw_worker(void *arg)
{
	struct pool_thread *self = arg;
	struct rw_pool *pool = self->sched;

	for (;;) {
		struct ecs_task *t;
		bool due;

		pthread_mutex_lock(&pool->mu);
		while (pool->head == pool->tail && !pool->produce && !pool->stop) {
			pool->idle++;
			pthread_cond_wait(&pool->cv, &pool->mu);
			pool->idle--;
		}
		if (pool->produce) {
			pool->produce = false;
			pthread_mutex_unlock(&pool->mu);
			rw_produce(pool);
			continue;
		}
		if (pool->head == pool->tail) {
			pthread_mutex_unlock(&pool->mu);
			return NULL;
		}
		t = pool->ring[pool->head++ & pool->mask];
		pthread_mutex_unlock(&pool->mu);

		for (unsigned j = 0; j < t->n; j++) {
			pthread_rwlock_t *lk = &pool->comp[t->comp[j]].lock;

			if (t->write >> j & 1)
				pthread_rwlock_wrlock(lk);
			else
				pthread_rwlock_rdlock(lk);
		}
		due = ecs_task_run(t, self->index);
		for (unsigned j = t->n; j-- > 0;)
			pthread_rwlock_unlock(&pool->comp[t->comp[j]].lock);
		if (due)
			rw_produce(pool);
	}
}

int ecs_run_rwlock(const struct ecs_params *p, struct ecs_result *r)
{
	struct pool_thread th[ECS_MAX_WORKERS];
	struct rw_pool *pool;
	unsigned started = 0, cap = 1, ncomp;
	int err;
	struct ecs_load *l = ecs_load_new(p, r, &err);

	if (!l)
		return err;
	ncomp = l->p.components;
	while (cap < l->p.inflight + l->p.workers)
		cap *= 2;
	pool = aligned_alloc(ECS_LINE, sizeof *pool);
	if (!pool || !(pool->ring = calloc(cap, sizeof *pool->ring))) {
		free(pool);
		ecs_load_free(l);
		ecs_not_run(r, "out of memory");
		return -ENOMEM;
	}
	pool->load = l;
	pool->mask = cap - 1;
	pool->head = pool->tail = pool->idle = 0;
	pool->stop = pool->produce = false;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	/* Default attributes: glibc's rwlocks prefer readers, as most users
	 * get them. */
	for (unsigned c = 0; c < ncomp; c++)
		pthread_rwlock_init(&pool->comp[c].lock, NULL);

	err = start_threads(th, l->p.workers, pool, rw_worker, r, &started);
	if (!err) {
		l->t_begin = bench_now_ns();
		l->cpu_begin = bench_thread_cpu_ns();
		if (l->p.in_pool) {
			pthread_mutex_lock(&pool->mu);
			pool->produce = true;
			pthread_cond_signal(&pool->cv);
			pthread_mutex_unlock(&pool->mu);
			ecs_gate_wait_finished(&l->gate);
		} else {
			for (unsigned i = 0; i < l->p.tasks; i++) {
				ecs_gate_enter(&l->gate, -1);
				rw_submit(pool, &l->task[i]);
			}
			ecs_gate_drain(&l->gate);
		}
		l->t_end = bench_now_ns();
		l->cpu_end = bench_thread_cpu_ns();
	}

	pthread_mutex_lock(&pool->mu);
	pool->stop = true;
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i].tid, NULL);

	if (!err)
		err = ecs_load_finish(l, r);
	for (unsigned c = 0; c < ncomp; c++)
		pthread_rwlock_destroy(&pool->comp[c].lock);
	pthread_cond_destroy(&pool->cv);
	pthread_mutex_destroy(&pool->mu);
	free(pool->ring);
	free(pool);
	ecs_load_free(l);
	return err;
}

/* ---------------- (b) central mutex + condvar broadcast ---------------- */

#define NIL UINT32_MAX

struct cv_sched {
	struct ecs_load *load;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* Pending tasks in submission order: a doubly linked list through
	 * next/prev (task indices), so a task taken from the middle leaves
	 * in O(1). */
	uint32_t *next, *prev;
	uint32_t head, tail;
	/* Each task's read and write masks, copied out of the task lines so
	 * that a scan over many pending tasks reads 16 bytes per task rather
	 * than a line each: the baseline should be as good as its design
	 * allows. */
	struct cv_mask {
		uint64_t r, w;
	} *mask;
	/* Current holders: readers per component, and as masks the
	 * components with readers / with a writer. */
	uint8_t readers[ECS_MAX_COMPONENTS];
	uint64_t rheld, wheld;
	unsigned waiting;
	bool stop;
	bool produce; /* the in-pool producer's first turn is due */
	uint64_t wakeups, spurious;
};

static bool cv_compatible(const struct cv_sched *s, uint32_t i)
{
	return !(s->mask[i].w & (s->rheld | s->wheld)) && !(s->mask[i].r & s->wheld);
}

static void cv_unlink(struct cv_sched *s, uint32_t i)
{
	uint32_t n = s->next[i], p = s->prev[i];

	if (p == NIL)
		s->head = n;
	else
		s->next[p] = n;
	if (n == NIL)
		s->tail = p;
	else
		s->prev[n] = p;
}

static void cv_hold(struct cv_sched *s, const struct ecs_task *t)
{
	s->wheld |= t->wmask;
	for (unsigned j = 0; j < t->n; j++)
		if (!(t->write >> j & 1) && s->readers[t->comp[j]]++ == 0)
			s->rheld |= 1ull << t->comp[j];
}

static void cv_unhold(struct cv_sched *s, const struct ecs_task *t)
{
	s->wheld &= ~t->wmask;
	for (unsigned j = 0; j < t->n; j++)
		if (!(t->write >> j & 1) && --s->readers[t->comp[j]] == 0)
			s->rheld &= ~(1ull << t->comp[j]);
}

static void cv_submit(struct cv_sched *s, uint32_t i)
{
	ecs_stamp_submit(&s->load->task[i]);
	pthread_mutex_lock(&s->mu);
	s->next[i] = NIL;
	s->prev[i] = s->tail;
	if (s->tail == NIL)
		s->head = i;
	else
		s->next[s->tail] = i;
	s->tail = i;
	/* A new task can serve at most one worker. */
	if (s->waiting)
		pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

/* The in-pool producer's turn on a pool thread (without the mutex). */
static void cv_produce(struct cv_sched *s)
{
	struct ecs_task *t;

	while ((t = ecs_produce_next(s->load)))
		cv_submit(s, t->index);
}

static void *cv_worker(void *arg)
{
	struct pool_thread *self = arg;
	struct cv_sched *s = self->sched;
	struct ecs_task *tasks = s->load->task;
	bool woken = false, due;

	pthread_mutex_lock(&s->mu);
	for (;;) {
		uint32_t i = s->head;

		if (s->produce) {
			/* A turn of the producer is work: the wake that
			 * brought it was not spurious. */
			woken = false;
			s->produce = false;
			pthread_mutex_unlock(&s->mu);
			cv_produce(s);
			pthread_mutex_lock(&s->mu);
			continue;
		}
		while (i != NIL && !cv_compatible(s, i))
			i = s->next[i];
		if (i != NIL) {
			struct ecs_task *t = &tasks[i];

			woken = false;
			cv_unlink(s, i);
			cv_hold(s, t);
			pthread_mutex_unlock(&s->mu);
			due = ecs_task_run(t, self->index);
			pthread_mutex_lock(&s->mu);
			cv_unhold(s, t);
			/* What became runnable is not known here: wake
			 * every waiter and let each one scan. */
			if (s->waiting)
				pthread_cond_broadcast(&s->cv);
			if (due) {
				pthread_mutex_unlock(&s->mu);
				cv_produce(s);
				pthread_mutex_lock(&s->mu);
			}
			continue;
		}
		/* stop comes after the last task: its wake is not counted. */
		if (s->stop)
			break;
		if (woken)
			s->spurious++;
		s->waiting++;
		pthread_cond_wait(&s->cv, &s->mu);
		s->waiting--;
		woken = !s->stop;
		s->wakeups += woken;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int ecs_run_condvar(const struct ecs_params *p, struct ecs_result *r)
{
	struct pool_thread th[ECS_MAX_WORKERS];
	struct cv_sched *s;
	unsigned started = 0;
	int err;
	struct ecs_load *l = ecs_load_new(p, r, &err);

	if (!l)
		return err;
	s = calloc(1, sizeof *s);
	if (!s || !(s->next = malloc(l->p.tasks * sizeof *s->next)) ||
	    !(s->prev = malloc(l->p.tasks * sizeof *s->prev)) ||
	    !(s->mask = malloc(l->p.tasks * sizeof *s->mask))) {
		if (s) {
			free(s->next);
			free(s->prev);
		}
		free(s);
		ecs_load_free(l);
		ecs_not_run(r, "out of memory");
		return -ENOMEM;
	}
	/* Touch the link arrays now, not in the timed part. */
	memset(s->next, 0xff, l->p.tasks * sizeof *s->next);
	memset(s->prev, 0xff, l->p.tasks * sizeof *s->prev);
	for (unsigned i = 0; i < l->p.tasks; i++) {
		s->mask[i].r = l->task[i].rmask;
		s->mask[i].w = l->task[i].wmask;
	}
	s->load = l;
	s->head = s->tail = NIL;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);

	err = start_threads(th, l->p.workers, s, cv_worker, r, &started);
	if (!err) {
		l->t_begin = bench_now_ns();
		l->cpu_begin = bench_thread_cpu_ns();
		if (l->p.in_pool) {
			pthread_mutex_lock(&s->mu);
			s->produce = true;
			if (s->waiting)
				pthread_cond_signal(&s->cv);
			pthread_mutex_unlock(&s->mu);
			ecs_gate_wait_finished(&l->gate);
		} else {
			for (unsigned i = 0; i < l->p.tasks; i++) {
				ecs_gate_enter(&l->gate, -1);
				cv_submit(s, i);
			}
			ecs_gate_drain(&l->gate);
		}
		l->t_end = bench_now_ns();
		l->cpu_end = bench_thread_cpu_ns();
	}

	pthread_mutex_lock(&s->mu);
	s->stop = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i].tid, NULL);

	if (!err) {
		err = ecs_load_finish(l, r);
		if (!err) {
			/* Every task is one grant here. */
			r->wakeups_per_grant = (double)s->wakeups / l->p.tasks;
			r->spurious = s->spurious;
		}
	}
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->next);
	free(s->prev);
	free(s->mask);
	free(s);
	ecs_load_free(l);
	return err;
}

#ifndef WEFT_BENCH_HAVE_OMP
int ecs_run_omp(const struct ecs_params *p, struct ecs_result *r)
{
	(void)p;
	ecs_not_run(r, "not built (no OpenMP)");
	return -ENOSYS;
}
#endif
