/*
 * test_steal.c: stealing order on a virtual two-node topology "0|1" with two
 * workers per node.  Thieves must try victims on their own node first and
 * go to the other node only when their own is dry.
 */
#include <weft.h>

#include "testutil.h"

static weft_rt *rt;

static void busy_leaf(void *p)
{
	(void)p;
	double t = now_sec();
	while (now_sec() - t < 20e-6)
		;
}

static void root(void *p)
{
	long n = (long)(intptr_t)p;
	struct weft_group g;
	weft_group_init(&g);
	for (long i = 0; i < n; i++)
		cr_assert_eq(weft_group_spawn(rt, &g, busy_leaf, NULL), 0);
	weft_group_wait(rt, &g);
}

static void create_two_nodes(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("needs 2 CPUs for the virtual topology 0|1");
	struct weft_config cfg = { .topology = "0|1", .workers = 4 };
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	cr_assert_eq(weft_node_count(rt), 2);
	for (unsigned w = 0; w < 4; w++)
		cr_assert_eq(weft_worker_node(rt, w), (int)(w / 2), "workers are numbered node by node");
}

static void node_steals(const struct weft_stats *st, unsigned node, uint64_t *local, uint64_t *remote)
{
	*local = *remote = 0;
	for (unsigned w = 0; w < st->workers; w++) {
		if (st->worker[w].node != node)
			continue;
		*local += st->worker[w].steals_local;
		*remote += st->worker[w].steals_remote;
	}
}

Test(steal, one_busy_node_steals_locally_first, .timeout = 60)
{
	create_two_nodes();
	cr_assert_eq(weft_spawn_on_node(rt, 0, root, (void *)(intptr_t)2000), 0);
	struct weft_stats st;
	/* Let it finish, then read the counters before destroying. */
	usleep(10 * 1000);
	for (;;) {
		weft_stats(rt, &st);
		uint64_t run = 0;
		for (unsigned w = 0; w < st.workers; w++)
			run += st.worker[w].tasks_run;
		if (run == 2001)
			break;
		usleep(1000);
	}
	uint64_t l0, r0, l1, r1;
	node_steals(&st, 0, &l0, &r0);
	node_steals(&st, 1, &l1, &r1);
	cr_log_info("node 0: local %llu remote %llu; node 1: local %llu remote %llu", (unsigned long long)l0,
		    (unsigned long long)r0, (unsigned long long)l1, (unsigned long long)r1);
	cr_assert_gt(l0, 0, "the busy node's idle worker stole from its own node");
	cr_assert_eq(r0, 0, "a worker of the busy node never went to the other node");
	cr_assert_eq(l1, 0, "node 1 had nothing of its own to steal");
	weft_destroy(rt);
}

Test(steal, both_nodes_busy_prefer_own_node, .timeout = 60)
{
	create_two_nodes();
	cr_assert_eq(weft_spawn_on_node(rt, 0, root, (void *)(intptr_t)3000), 0);
	cr_assert_eq(weft_spawn_on_node(rt, 1, root, (void *)(intptr_t)3000), 0);
	struct weft_stats st;
	for (;;) {
		weft_stats(rt, &st);
		uint64_t run = 0;
		for (unsigned w = 0; w < st.workers; w++)
			run += st.worker[w].tasks_run;
		if (run == 6002)
			break;
		usleep(1000);
	}
	for (unsigned n = 0; n < 2; n++) {
		uint64_t l, r;
		node_steals(&st, n, &l, &r);
		cr_log_info("node %u: local %llu remote %llu", n, (unsigned long long)l, (unsigned long long)r);
		cr_assert_gt(l, r, "node %u stole more from itself than from the other node", n);
	}
	weft_destroy(rt);
}
