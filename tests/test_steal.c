/*
 * test_steal.c: stealing order on a virtual two-node topology "0|1" with two
 * workers per node.  Thieves must try victims on their own node first and
 * go to the other node only when their own is dry.
 */
#include <sched.h>
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

/* Roots that must start together wait here, so neither node is dry (and
 * rightly stealing remotely) while the other one is still starting. */
static int roots_expected, roots_started, roots_finished;
/* The counters when the first root's work was all done: until then no
 * node was dry, so no thief had a reason to leave its node. */
static struct weft_stats first_done;

static void root(void *p)
{
	long n = (long)(intptr_t)p;
	__atomic_fetch_add(&roots_started, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&roots_started, __ATOMIC_ACQUIRE) < roots_expected)
		sched_yield();
	struct weft_group g;
	weft_group_init(&g);
	for (long i = 0; i < n; i++)
		cr_assert_eq(weft_group_spawn(rt, &g, busy_leaf, NULL), 0);
	weft_group_wait(rt, &g);
	if (__atomic_fetch_add(&roots_finished, 1, __ATOMIC_ACQ_REL) == 0)
		weft_stats(rt, &first_done);
}

static void create_two_nodes(void)
{
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("needs 2 CPUs for the virtual topology 0|1");
	/* Pinned: each node's two workers share its CPU, so both nodes run at
	 * the same speed and neither runs dry early. */
	struct weft_config cfg = { .topology = "0|1", .workers = 4, .pin = true };
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

static void wait_tasks(struct weft_stats *st, uint64_t n)
{
	for (;;) {
		weft_stats(rt, st);
		uint64_t run = 0;
		for (unsigned w = 0; w < st->workers; w++)
			run += st->worker[w].tasks_run;
		if (run == n)
			return;
		usleep(1000);
	}
}

/* Node 0 busy, node 1 idle.  Strict: no worker of node 0 ever steals from
 * node 1, and node 1 never finds work on its own node.  Whether node 0's
 * second worker gets a CPU in time to steal at all depends on the host's
 * scheduler (4 workers share 2 CPUs), so that part gets three tries. */
Test(steal, one_busy_node_steals_locally_first, .timeout = 60)
{
	uint64_t l0_best = 0;
	for (int attempt = 0; attempt < 3 && l0_best == 0; attempt++) {
		create_two_nodes();
		roots_expected = 1;
		roots_started = 0;
		cr_assert_eq(weft_spawn_on_node(rt, 0, root, (void *)(intptr_t)2000), 0);
		struct weft_stats st;
		wait_tasks(&st, 2001);
		uint64_t l0, r0, l1, r1;
		node_steals(&st, 0, &l0, &r0);
		node_steals(&st, 1, &l1, &r1);
		cr_log_info("node 0: local %llu remote %llu; node 1: local %llu remote %llu", (unsigned long long)l0,
			    (unsigned long long)r0, (unsigned long long)l1, (unsigned long long)r1);
		cr_assert_eq(r0, 0, "a worker of the busy node went to the other node");
		cr_assert_eq(l1, 0, "node 1 had nothing of its own to steal");
		l0_best = l0;
		weft_destroy(rt);
	}
	cr_assert_gt(l0_best, 0, "the busy node's idle worker stole from its own node");
}

Test(steal, both_nodes_busy_prefer_own_node, .timeout = 60)
{
	create_two_nodes();
	roots_expected = 2;
	roots_started = 0;
	roots_finished = 0;
	cr_assert_eq(weft_spawn_on_node(rt, 0, root, (void *)(intptr_t)3000), 0);
	cr_assert_eq(weft_spawn_on_node(rt, 1, root, (void *)(intptr_t)3000), 0);
	struct weft_stats st;
	wait_tasks(&st, 6002);
	/* Until the first node finished, both had work: a thief leaves its
	 * node only when its node is dry, i.e. in the tail of the node that
	 * finishes first.  That tail can last a few scheduler slices (two
	 * workers share each CPU), so up to a quarter of the local count is
	 * allowed; a victim order blind to nodes would steal remotely about
	 * as often as locally, since the other node always has work. */
	for (unsigned n = 0; n < 2; n++) {
		uint64_t l, r, l_end, r_end;
		node_steals(&first_done, n, &l, &r);
		node_steals(&st, n, &l_end, &r_end);
		cr_log_info("node %u: while both busy local %llu remote %llu; in all local %llu remote %llu", n,
			    (unsigned long long)l, (unsigned long long)r, (unsigned long long)l_end,
			    (unsigned long long)r_end);
		cr_assert_gt(l_end, 0, "node %u stole from itself", n);
		cr_assert_leq(r, 16 + l / 4, "node %u went remote while both nodes had work", n);
	}
	weft_destroy(rt);
}
