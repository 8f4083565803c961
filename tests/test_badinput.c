/*
 * test_badinput.c: bad input gets an errno and leaves the runtime intact.
 */
#include <errno.h>
#include <stdlib.h>
#include <weft.h>

#include "testutil.h"

static void nop(void *p)
{
	(void)p;
}

static int ran;

static void count_run(void *p)
{
	(void)p;
	__atomic_fetch_add(&ran, 1, __ATOMIC_RELAXED);
}

static void bad_joins_on_a_worker(void *p)
{
	weft_rt *rt = p;
	cr_assert_eq(weft_join(NULL, count_run, NULL, count_run, NULL), -EINVAL);
	cr_assert_eq(weft_join(rt, NULL, NULL, count_run, NULL), -EINVAL);
	cr_assert_eq(weft_join(rt, count_run, NULL, NULL, NULL), -EINVAL);
}

Test(badinput, null_arguments)
{
	weft_rt *rt;
	cr_assert_eq(weft_create(NULL, NULL), -EINVAL);
	cr_assert_eq(weft_spawn(NULL, nop, NULL), -EINVAL);
	cr_assert_eq(weft_create(&rt, NULL), 0);
	cr_assert_eq(weft_spawn(rt, NULL, NULL), -EINVAL);
	cr_assert_eq(weft_spawn_on_node(rt, 0, NULL, NULL), -EINVAL);
	cr_assert_eq(weft_spawn_on_node(NULL, 0, nop, NULL), -EINVAL);
	struct weft_group g;
	weft_group_init(&g);
	cr_assert_eq(weft_group_spawn(NULL, &g, nop, NULL), -EINVAL);
	cr_assert_eq(weft_group_spawn(rt, NULL, nop, NULL), -EINVAL);
	cr_assert_eq(weft_group_spawn(rt, &g, NULL, NULL), -EINVAL);
	/* weft_join with a missing part runs neither part, from outside and
	 * from a worker. */
	ran = 0;
	cr_assert_eq(weft_join(NULL, count_run, NULL, count_run, NULL), -EINVAL);
	cr_assert_eq(weft_join(rt, NULL, NULL, count_run, NULL), -EINVAL);
	cr_assert_eq(weft_join(rt, count_run, NULL, NULL, NULL), -EINVAL);
	weft_group_init(&g);
	cr_assert_eq(weft_group_spawn(rt, &g, bad_joins_on_a_worker, rt), 0);
	weft_group_wait(rt, &g);
	cr_assert_eq(ran, 0);
	cr_assert_eq(weft_stats(rt, NULL), -EINVAL);
	cr_assert_eq(weft_stats(NULL, NULL), -EINVAL);
	cr_assert_eq(weft_worker_node(rt, 100000), -EINVAL);
	cr_assert_eq(weft_worker_cpu(rt, 100000), -EINVAL);
	cr_assert_eq(weft_worker_count(NULL), 0);
	/* The runtime still works after all that. */
	ran = 0;
	weft_group_init(&g);
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(weft_group_spawn(rt, &g, count_run, NULL), 0);
	weft_group_wait(rt, &g);
	cr_assert_eq(ran, 1000);
	weft_destroy(rt);
	weft_destroy(NULL);
}

Test(badinput, unknown_node)
{
	weft_rt *rt;
	cr_assert_eq(weft_create(&rt, NULL), 0);
	cr_assert_eq(weft_spawn_on_node(rt, weft_node_count(rt), nop, NULL), -EINVAL);
	cr_assert_eq(weft_spawn_on_node(rt, 1000000, nop, NULL), -EINVAL);
	weft_destroy(rt);
}

Test(badinput, too_many_workers)
{
	weft_rt *rt = NULL;
	struct weft_config cfg = { .workers = WEFT_MAX_WORKERS + 1 };
	cr_assert_eq(weft_create(&rt, &cfg), -EINVAL);
	cr_assert_null(rt);
	/* Oversubscription up to the limit is allowed. */
	cfg.workers = 16;
	cr_assert_eq(weft_create(&rt, &cfg), 0);
	cr_assert_eq(weft_worker_count(rt), 16);
	weft_destroy(rt);
}

Test(badinput, bad_topologies)
{
	const char *bad[] = { "", "|", "0|", "|0", "0||1", "0,", ",0", "0,,1", "1-0", "a", "0 1", "-1",
			      "99999999999", "0|0", "0,0", "4095" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		weft_rt *rt = NULL;
		struct weft_config cfg = { .topology = bad[i] };
		cr_assert_eq(weft_create(&rt, &cfg), -EINVAL, "topology \"%s\" accepted", bad[i]);
		cr_assert_null(rt);
	}
}

Test(badinput, env_topology_and_config_wins)
{
	weft_rt *rt;
	setenv("WEFT_TOPOLOGY", "1-0", 1);
	cr_assert_eq(weft_create(&rt, NULL), -EINVAL, "a bad WEFT_TOPOLOGY is refused");
	struct weft_config cfg = { .topology = "0" };
	cr_assert_eq(weft_create(&rt, &cfg), 0, "the config string wins over the environment");
	cr_assert_eq(weft_node_count(rt), 1);
	cr_assert_eq(weft_worker_count(rt), 1);
	weft_destroy(rt);
	unsetenv("WEFT_TOPOLOGY");
}

Test(badinput, version)
{
	cr_assert_str_eq(weft_version(), WEFT_VERSION_STRING);
	cr_assert_gt(WEFT_VERSION_NUMBER, 0);
}
