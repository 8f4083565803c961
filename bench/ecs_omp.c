/*
 * ecs_omp.c: baseline (c) of the ECS rows (issue 3): OpenMP tasks with
 * depend(in: ...) for READ and depend(inout: ...) for WRITE on one address
 * per component, submitted by one thread of the team (omp single) and
 * joined with taskwait.  Its semantics are stricter than the others':
 * conflicting tasks run in submission order.  Compiled only when meson
 * finds OpenMP (WEFT_BENCH_HAVE_OMP); otherwise ecs_baselines.c says "not
 * built".  The task list, body and in-flight gate are ecs.c's.
 */
#define _GNU_SOURCE 1
#include "ecs.h"

#include "bench_util.h"

#include <errno.h>
#include <omp.h>

#if !defined(_OPENMP) || !defined(WEFT_BENCH_HAVE_OMP)
#error "ecs_omp.c is built only with OpenMP and WEFT_BENCH_HAVE_OMP"
#endif

/* The dependence addresses: only their identity matters to the runtime. */
static char comp_addr[ECS_MAX_COMPONENTS];

/* One task's components split by access, for the two iterator clauses.
 * Fields, not locals: gcc 12 does not see locals used only in a depend
 * iterator as used (-Wunused-but-set-variable). */
struct omp_deps {
	int nr, nw;
	unsigned char rc[ECS_MAX_DEPS], wc[ECS_MAX_DEPS];
};

int ecs_run_omp(const struct ecs_params *p, struct ecs_result *r)
{
	int err, threads = 0;
	/* The submitter is one of the team already. */
	struct ecs_params q = *p;
	q.in_pool = false;
	struct ecs_load *l = ecs_load_new(&q, r, &err);

	if (!l)
		return err;
#pragma omp parallel num_threads(l->p.workers) shared(l, threads)
#pragma omp single
	{
		threads = omp_get_num_threads();
		if (threads == (int)l->p.workers) {
			/* The submitter is one of the team: it runs tasks too
			 * when the runtime throttles task creation, and the
			 * gate then waits only for the others. */
			int self = omp_get_thread_num();
			struct omp_deps d;

			l->t_begin = bench_now_ns();
			for (unsigned i = 0; i < l->p.tasks; i++) {
				struct ecs_task *t = &l->task[i];

				ecs_gate_enter(&l->gate, self);
				d.nr = d.nw = 0;
				for (unsigned j = 0; j < t->n; j++) {
					if (t->write >> j & 1)
						d.wc[d.nw++] = t->comp[j];
					else
						d.rc[d.nr++] = t->comp[j];
				}
				ecs_stamp_submit(t);
#pragma omp task firstprivate(t) \
	depend(iterator(j = 0 : d.nr), in : comp_addr[d.rc[j]]) \
	depend(iterator(j = 0 : d.nw), inout : comp_addr[d.wc[j]])
				ecs_task_run(t, (unsigned)omp_get_thread_num());
			}
#pragma omp taskwait
			l->t_end = bench_now_ns();
		}
	}
	if (threads != (int)l->p.workers) {
		ecs_not_run(r, "OpenMP gave %d threads, not %u", threads, l->p.workers);
		ecs_load_free(l);
		return -EAGAIN;
	}
	err = ecs_load_finish(l, r);
	ecs_load_free(l);
	return err;
}
