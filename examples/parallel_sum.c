/*
 * parallel_sum.c: divide and conquer with weft_join.  Sums an array by
 * splitting it in halves until a piece is small: one half runs here, the
 * other is offered to thieves; shows per-worker stats at the end (tasks
 * run, steals, parks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

static weft_rt *rt;

struct range {
	const long *a;
	size_t n;
	long sum;
};

static void sum_task(void *p)
{
	struct range *r = p;
	if (r->n <= 4096) {
		long s = 0;
		for (size_t i = 0; i < r->n; i++)
			s += r->a[i];
		r->sum = s;
		return;
	}
	struct range left = { r->a, r->n / 2, 0 };
	struct range right = { r->a + r->n / 2, r->n - r->n / 2, 0 };
	/* On a worker a join does not fail. */
	weft_join(rt, sum_task, &right, sum_task, &left);
	r->sum = left.sum + right.sum;
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 10 * 1000 * 1000;
	long *a = malloc(n * sizeof(*a));
	if (!a)
		return 1;
	for (size_t i = 0; i < n; i++)
		a[i] = (long)(i % 1000);
	if (weft_create(&rt, NULL) < 0)
		return 1;
	struct range all = { a, n, 0 };
	/* From this thread (not a worker): the root task goes to a worker
	 * and this thread sleeps until its group is done. */
	struct weft_group g;
	weft_group_init(&g);
	if (weft_group_spawn(rt, &g, sum_task, &all) < 0)
		return 1;
	weft_group_wait(rt, &g);
	long expect = 0;
	for (size_t i = 0; i < n; i++)
		expect += a[i];
	printf("sum %ld (%s)\n", all.sum, all.sum == expect ? "correct" : "WRONG");
	static struct weft_stats st;
	weft_stats(rt, &st);
	for (unsigned w = 0; w < st.workers; w++)
		printf("worker %u node %u: run %llu, stolen local %llu remote %llu, parks %llu\n", w,
		       st.worker[w].node, (unsigned long long)st.worker[w].tasks_run,
		       (unsigned long long)st.worker[w].steals_local, (unsigned long long)st.worker[w].steals_remote,
		       (unsigned long long)st.worker[w].parks);
	weft_destroy(rt);
	free(a);
	return all.sum == expect ? 0 : 1;
}
