/*
 * test_topology.c: virtual-topology parsing, libnuma detection against a
 * fake OS table, the WEFT_TOPOLOGY / config precedence, formatting, and
 * detection on the real machine.
 *
 * The "topo" suite swaps in a fake OS table (struct fake below) before each
 * test and restores the default one after it; the "real" suite uses the
 * machine as it is.
 */
#include "topology.h"

#include "crit.h"
#include <errno.h>
#include <limits.h>
#include <numa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More than WEFT_MAX_NODES, so too many real nodes can be faked. */
#define FAKE_NODES 80

static struct {
	int affinity_err;
	cpu_set_t affinity;
	int max_node;
	cpu_set_t node_cpus[FAKE_NODES];
	int node_err[FAKE_NODES];
	/* 0: numa_distance fails for that pair. */
	int dist[FAKE_NODES][FAKE_NODES];
	unsigned node_cpus_calls;
} fake;

static struct weft_os fake_os;

static int fake_affinity(cpu_set_t *out)
{
	CPU_ZERO(out);
	if (fake.affinity_err)
		return fake.affinity_err;
	*out = fake.affinity;
	return 0;
}

static int fake_numa_max_node(void)
{
	return fake.max_node;
}

static int fake_numa_node_cpus(int node, cpu_set_t *out)
{
	/* Fail fast rather than loop up to a bogus numa_max_node(). */
	cr_assert_lt(++fake.node_cpus_calls, 100000u, "runaway node loop");
	CPU_ZERO(out);
	if (node < 0 || node > fake.max_node || node >= FAKE_NODES)
		return -EINVAL;
	if (fake.node_err[node])
		return fake.node_err[node];
	*out = fake.node_cpus[node];
	return 0;
}

static int fake_numa_distance(int a, int b)
{
	if (a < 0 || b < 0 || a >= FAKE_NODES || b >= FAKE_NODES || !fake.dist[a][b])
		return -EINVAL;
	return fake.dist[a][b];
}

static void set_range(cpu_set_t *set, int lo, int hi)
{
	for (int cpu = lo; cpu <= hi; cpu++)
		CPU_SET(cpu, set);
}

/* nnodes fake nodes, distance 10 local and remote everywhere else. */
static void fake_nodes(int nnodes, int remote)
{
	fake.max_node = nnodes - 1;
	for (int a = 0; a < nnodes; a++)
		for (int b = 0; b < nnodes; b++)
			fake.dist[a][b] = a == b ? 10 : remote;
}

/* The default fake: CPUs 0-7, node 0 = 0-3, node 1 = 4-7, distance 21. */
static void fake_setup(void)
{
	memset(&fake, 0, sizeof(fake));
	set_range(&fake.affinity, 0, 7);
	fake_nodes(2, 21);
	set_range(&fake.node_cpus[0], 0, 3);
	set_range(&fake.node_cpus[1], 4, 7);

	fake_os = *weft_os_default();
	fake_os.affinity = fake_affinity;
	fake_os.numa_max_node = fake_numa_max_node;
	fake_os.numa_node_cpus = fake_numa_node_cpus;
	fake_os.numa_distance = fake_numa_distance;
	weft_os_set(&fake_os);
	unsetenv(WEFT_TOPOLOGY_ENV);
}

static void fake_teardown(void)
{
	weft_os_set(NULL);
	unsetenv(WEFT_TOPOLOGY_ENV);
}

TestSuite(topo, .init = fake_setup, .fini = fake_teardown);

static cpu_set_t allowed_0_7(void)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	set_range(&set, 0, 7);
	return set;
}

static void expect_cpus(const struct weft_topology *t, unsigned n, const int *cpus, unsigned ncpus)
{
	cr_assert_lt(n, t->nnodes);
	cr_assert_eq(t->node[n].ncpus, ncpus, "node %u has %u CPUs, want %u", n, t->node[n].ncpus, ncpus);
	for (unsigned i = 0; i < ncpus; i++)
		cr_assert_eq(t->node[n].cpus[i], cpus[i], "node %u cpu[%u] = %d, want %d", n, i,
			     t->node[n].cpus[i], cpus[i]);
}

static void expect_format(const struct weft_topology *t, const char *want)
{
	char buf[256];
	int r = topology_format(t, buf, sizeof(buf));
	cr_assert_eq(r, (int)strlen(want), "format gave %d for \"%s\"", r, want);
	cr_assert_str_eq(buf, want);
}

static void expect_virtual_distances(const struct weft_topology *t)
{
	for (unsigned i = 0; i < t->nnodes; i++)
		for (unsigned j = 0; j < t->nnodes; j++)
			cr_assert_eq(t->distance[i][j], i == j ? 10 : 20, "distance[%u][%u] = %u", i, j,
				     t->distance[i][j]);
}

static void parse_ok(const char *spec, struct weft_topology *t)
{
	cpu_set_t allowed = allowed_0_7();
	int r = topology_parse(spec, &allowed, t);
	cr_assert_eq(r, 0, "\"%s\" gave %d", spec, r);
	cr_assert(t->is_virtual);
	expect_virtual_distances(t);
}

Test(topo, parse_single_cpu)
{
	struct weft_topology t;
	parse_ok("0", &t);
	cr_assert_eq(t.nnodes, 1);
	cr_assert_eq(t.ncpus, 1);
	expect_cpus(&t, 0, (int[]){ 0 }, 1);
	cr_assert_eq(t.node[0].os_node, 0);
	expect_format(&t, "0");
	topology_free(&t);
}

Test(topo, parse_two_single_nodes)
{
	struct weft_topology t;
	parse_ok("0|1", &t);
	cr_assert_eq(t.nnodes, 2);
	expect_cpus(&t, 0, (int[]){ 0 }, 1);
	expect_cpus(&t, 1, (int[]){ 1 }, 1);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 0);
	cr_assert_eq(t.near[0][0], 1);
	cr_assert_eq(t.near[1][0], 0);
	topology_free(&t);
}

Test(topo, parse_range_and_list_are_the_same_node)
{
	const char *specs[] = { "0-1", "0,1", "1,0", "0-0,1-1", "1,0-0" };
	for (unsigned i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct weft_topology t;
		parse_ok(specs[i], &t);
		cr_assert_eq(t.nnodes, 1, "%s", specs[i]);
		cr_assert_eq(t.ncpus, 2);
		expect_cpus(&t, 0, (int[]){ 0, 1 }, 2);
		expect_format(&t, "0-1");
		topology_free(&t);
	}
}

Test(topo, parse_keeps_node_order_as_written)
{
	struct weft_topology t;
	parse_ok("1|0", &t);
	cr_assert_eq(t.nnodes, 2);
	expect_cpus(&t, 0, (int[]){ 1 }, 1);
	expect_cpus(&t, 1, (int[]){ 0 }, 1);
	topology_free(&t);

	parse_ok("0-0|1-1", &t);
	cr_assert_eq(t.nnodes, 2);
	expect_cpus(&t, 0, (int[]){ 0 }, 1);
	expect_cpus(&t, 1, (int[]){ 1 }, 1);
	expect_format(&t, "0|1");
	topology_free(&t);
}

Test(topo, parse_two_halves_map_to_real_nodes)
{
	struct weft_topology t;
	parse_ok("0-3|4-7", &t);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.ncpus, 8);
	expect_cpus(&t, 0, (int[]){ 0, 1, 2, 3 }, 4);
	expect_cpus(&t, 1, (int[]){ 4, 5, 6, 7 }, 4);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 1);
	/* Virtual distances even though the real ones are 21. */
	cr_assert_eq(t.distance[0][1], 20);
	cr_assert_eq(t.near[0][0], 1);
	cr_assert_eq(t.near[1][0], 0);
	expect_format(&t, "0-3|4-7");
	topology_free(&t);
}

Test(topo, parse_interleaved)
{
	struct weft_topology t;
	parse_ok("0,2|1,3", &t);
	cr_assert_eq(t.nnodes, 2);
	expect_cpus(&t, 0, (int[]){ 0, 2 }, 2);
	expect_cpus(&t, 1, (int[]){ 1, 3 }, 2);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 0);
	expect_format(&t, "0,2|1,3");
	topology_free(&t);
}

Test(topo, parse_sorts_cpus_and_takes_os_node_of_lowest)
{
	struct weft_topology t;
	parse_ok("6,4,5|3,1", &t);
	expect_cpus(&t, 0, (int[]){ 4, 5, 6 }, 3);
	expect_cpus(&t, 1, (int[]){ 1, 3 }, 2);
	cr_assert_eq(t.node[0].os_node, 1);
	cr_assert_eq(t.node[1].os_node, 0);
	expect_format(&t, "4-6|1,3");
	topology_free(&t);
}

Test(topo, parse_near_order_ties_by_index)
{
	struct weft_topology t;
	parse_ok("0|1|2|3", &t);
	cr_assert_eq(t.nnodes, 4);
	const unsigned want[4][3] = { { 1, 2, 3 }, { 0, 2, 3 }, { 0, 1, 3 }, { 0, 1, 2 } };
	for (unsigned i = 0; i < 4; i++)
		for (unsigned k = 0; k < 3; k++)
			cr_assert_eq(t.near[i][k], want[i][k], "near[%u][%u] = %u", i, k, t.near[i][k]);
	topology_free(&t);
}

Test(topo, parse_cpu_reported_twice_takes_first_os_node)
{
	struct weft_topology t;
	CPU_SET(4, &fake.node_cpus[0]);
	parse_ok("5|4", &t);
	cr_assert_eq(t.node[0].os_node, 1);
	cr_assert_eq(t.node[1].os_node, 0);
	topology_free(&t);
}

Test(topo, parse_os_node_unknown_without_numa)
{
	struct weft_topology t;
	fake.max_node = -ENOSYS;
	parse_ok("0-3|4-7", &t);
	cr_assert_eq(t.node[0].os_node, -1);
	cr_assert_eq(t.node[1].os_node, -1);
	topology_free(&t);
}

Test(topo, parse_os_node_unknown_for_unplaced_cpu)
{
	struct weft_topology t;
	/* libnuma knows node 0 (CPUs 0-3) only; node 1 is a hole. */
	fake.node_err[1] = -EINVAL;
	parse_ok("4|0", &t);
	cr_assert_eq(t.node[0].os_node, -1);
	cr_assert_eq(t.node[1].os_node, 0);
	topology_free(&t);
}

Test(topo, parse_propagates_enomem_from_os_lookup)
{
	struct weft_topology t;
	cpu_set_t allowed = allowed_0_7();
	fake.node_err[1] = -ENOMEM;
	cr_assert_eq(topology_parse("0|4", &allowed, &t), -ENOMEM);
}

Test(topo, parse_rejects_bad_strings)
{
	const char *bad[] = {
		"", "|", "||", "0||1", "|0", "0|", ",", "0,", ",0", "0,,1", "0,|1", "0|,1",
		"1-0", "7-3", "-", "0-", "-1", "-0", "0--1", "0-1-2", "0-,1", "+1", "a", "0a", "a0",
		"0x1", "0 1", " 0", "0 ", "0\n", "0\t|1", "0;1", "0.5", "99999999999",
		"0-99999999999999999999", "18446744073709551617", "4294967296",
		/* outside the allowed mask 0-7 */
		"8", "7-8", "0|8", "100",
		/* listed twice */
		"0,0", "0-2,1", "1,0-2", "0|0", "0-3|3-4", "0|1|2|0", "5-5,5",
		/* at or beyond CPU_SETSIZE */
		"1024", "1023-1024", "2048",
	};
	cpu_set_t allowed = allowed_0_7();
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct weft_topology t, before;
		memset(&t, 0x5a, sizeof(t));
		before = t;
		int r = topology_parse(bad[i], &allowed, &t);
		cr_assert_eq(r, -EINVAL, "\"%s\" gave %d", bad[i], r);
		cr_assert(memcmp(&t, &before, sizeof(t)) == 0, "\"%s\" touched *out", bad[i]);
	}
}

Test(topo, parse_rejects_null_arguments)
{
	struct weft_topology t;
	cpu_set_t allowed = allowed_0_7();
	cr_assert_eq(topology_parse(NULL, &allowed, &t), -EINVAL);
	cr_assert_eq(topology_parse("0", NULL, &t), -EINVAL);
	cr_assert_eq(topology_parse("0", &allowed, NULL), -EINVAL);
}

Test(topo, parse_cpu_limit_is_cpu_setsize)
{
	struct weft_topology t;
	cpu_set_t all;
	CPU_ZERO(&all);
	set_range(&all, 0, CPU_SETSIZE - 1);
	fake.max_node = -ENOSYS;

	cr_assert_eq(topology_parse("1023", &all, &t), 0);
	expect_cpus(&t, 0, (int[]){ 1023 }, 1);
	topology_free(&t);
	cr_assert_eq(topology_parse("1000-1023|0", &all, &t), 0);
	cr_assert_eq(t.node[0].ncpus, 24);
	expect_format(&t, "1000-1023|0");
	topology_free(&t);
	cr_assert_eq(topology_parse("1024", &all, &t), -EINVAL);
	cr_assert_eq(topology_parse("1000-1024", &all, &t), -EINVAL);
}

/* "0|1|...|n-1" */
static void many_nodes(char *buf, size_t len, unsigned n)
{
	size_t pos = 0;
	buf[0] = '\0';
	for (unsigned i = 0; i < n; i++)
		pos += (size_t)snprintf(buf + pos, len - pos, i ? "|%u" : "%u", i);
}

Test(topo, parse_node_limit)
{
	char spec[1024];
	struct weft_topology t;
	cpu_set_t allowed;
	CPU_ZERO(&allowed);
	set_range(&allowed, 0, 127);

	many_nodes(spec, sizeof(spec), WEFT_MAX_NODES);
	cr_assert_eq(topology_parse(spec, &allowed, &t), 0);
	cr_assert_eq(t.nnodes, WEFT_MAX_NODES);
	for (unsigned k = 0; k < WEFT_MAX_NODES - 1; k++)
		cr_assert_eq(t.near[0][k], k + 1);
	for (unsigned k = 0; k < WEFT_MAX_NODES - 1; k++)
		cr_assert_eq(t.near[WEFT_MAX_NODES - 1][k], k);
	topology_free(&t);

	many_nodes(spec, sizeof(spec), WEFT_MAX_NODES + 1);
	cr_assert_eq(topology_parse(spec, &allowed, &t), -EINVAL);
}

Test(topo, detect_two_nodes)
{
	struct weft_topology t;
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_not(t.is_virtual);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.ncpus, 8);
	expect_cpus(&t, 0, (int[]){ 0, 1, 2, 3 }, 4);
	expect_cpus(&t, 1, (int[]){ 4, 5, 6, 7 }, 4);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 1);
	cr_assert_eq(t.distance[0][0], 10);
	cr_assert_eq(t.distance[0][1], 21);
	cr_assert_eq(t.distance[1][0], 21);
	cr_assert_eq(t.distance[1][1], 10);
	cr_assert_eq(t.near[0][0], 1);
	cr_assert_eq(t.near[1][0], 0);
	expect_format(&t, "0-3|4-7");
	topology_free(&t);
}

Test(topo, detect_drops_cpu_less_last_node)
{
	struct weft_topology t;
	/* Node 2 has memory but no CPUs. */
	fake_nodes(3, 20);
	fake.dist[0][2] = fake.dist[2][0] = 30;
	fake.dist[1][2] = fake.dist[2][1] = 30;
	CPU_ZERO(&fake.node_cpus[2]);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 1);
	cr_assert_eq(t.distance[0][1], 20);
	expect_format(&t, "0-3|4-7");
	topology_free(&t);
}

Test(topo, detect_drops_cpu_less_middle_node_keeping_os_ids)
{
	struct weft_topology t;
	fake_nodes(3, 20);
	fake.dist[0][2] = fake.dist[2][0] = 32;
	CPU_ZERO(&fake.node_cpus[0]);
	set_range(&fake.node_cpus[0], 0, 1);
	CPU_ZERO(&fake.node_cpus[1]);
	set_range(&fake.node_cpus[2], 2, 3);
	CPU_ZERO(&fake.affinity);
	set_range(&fake.affinity, 0, 3);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 2);
	/* Distances are looked up by real id, not by weft index. */
	cr_assert_eq(t.distance[0][1], 32);
	cr_assert_eq(t.distance[1][0], 32);
	expect_format(&t, "0-1|2-3");
	topology_free(&t);
}

Test(topo, detect_skips_holes_in_node_numbering)
{
	struct weft_topology t;
	fake_nodes(3, 20);
	fake.node_err[1] = -EINVAL;
	set_range(&fake.node_cpus[2], 4, 7);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.node[0].os_node, 0);
	cr_assert_eq(t.node[1].os_node, 2);
	topology_free(&t);
}

Test(topo, detect_without_numa_is_one_node)
{
	struct weft_topology t;
	fake.max_node = -ENOSYS;
	CPU_ZERO(&fake.affinity);
	set_range(&fake.affinity, 0, 2);
	CPU_SET(5, &fake.affinity);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 1);
	cr_assert_eq(t.ncpus, 4);
	expect_cpus(&t, 0, (int[]){ 0, 1, 2, 5 }, 4);
	cr_assert_eq(t.node[0].os_node, -1);
	cr_assert_eq(t.distance[0][0], 10);
	cr_assert_eq(fake.node_cpus_calls, 0);
	expect_format(&t, "0-2,5");
	topology_free(&t);
}

Test(topo, detect_restricted_to_affinity)
{
	struct weft_topology t;
	CPU_ZERO(&fake.affinity);
	CPU_SET(1, &fake.affinity);
	CPU_SET(2, &fake.affinity);
	CPU_SET(5, &fake.affinity);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(t.ncpus, 3);
	expect_cpus(&t, 0, (int[]){ 1, 2 }, 2);
	expect_cpus(&t, 1, (int[]){ 5 }, 1);
	topology_free(&t);
}

Test(topo, detect_affinity_inside_one_node)
{
	struct weft_topology t;
	fake.dist[1][1] = 11;
	CPU_ZERO(&fake.affinity);
	set_range(&fake.affinity, 5, 6);

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 1);
	expect_cpus(&t, 0, (int[]){ 5, 6 }, 2);
	cr_assert_eq(t.node[0].os_node, 1);
	cr_assert_eq(t.distance[0][0], 11);
	topology_free(&t);
}

Test(topo, detect_distance_fallback)
{
	struct weft_topology t;
	memset(fake.dist, 0, sizeof(fake.dist));
	fake.dist[0][1] = 300;
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.distance[0][0], 10);
	cr_assert_eq(t.distance[0][1], 20);
	cr_assert_eq(t.distance[1][0], 20);
	cr_assert_eq(t.distance[1][1], 10);
	topology_free(&t);
}

Test(topo, detect_near_order_uses_distances)
{
	struct weft_topology t;
	fake_nodes(4, 20);
	for (int n = 0; n < 4; n++) {
		CPU_ZERO(&fake.node_cpus[n]);
		set_range(&fake.node_cpus[n], 2 * n, 2 * n + 1);
	}
	fake.dist[0][1] = 30;
	fake.dist[0][3] = 15;
	fake.dist[2][0] = 25;
	fake.dist[2][1] = 25;
	fake.dist[2][3] = 40;

	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 4);
	const unsigned want0[3] = { 3, 2, 1 };
	const unsigned want1[3] = { 0, 2, 3 };
	const unsigned want2[3] = { 0, 1, 3 };
	for (unsigned k = 0; k < 3; k++) {
		cr_assert_eq(t.near[0][k], want0[k], "near[0][%u] = %u", k, t.near[0][k]);
		cr_assert_eq(t.near[1][k], want1[k], "near[1][%u] = %u", k, t.near[1][k]);
		cr_assert_eq(t.near[2][k], want2[k], "near[2][%u] = %u", k, t.near[2][k]);
	}
	topology_free(&t);
}

Test(topo, detect_cpu_reported_twice_goes_to_first_node)
{
	struct weft_topology t;
	CPU_SET(4, &fake.node_cpus[0]);
	cr_assert_eq(topology_detect(&t), 0);
	expect_format(&t, "0-4|5-7");
	topology_free(&t);
}

Test(topo, detect_unplaced_cpus_fall_back_to_one_node)
{
	struct weft_topology t;
	CPU_ZERO(&fake.affinity);
	set_range(&fake.affinity, 8, 9);
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 1);
	cr_assert_eq(t.node[0].os_node, -1);
	expect_format(&t, "8-9");
	topology_free(&t);
}

Test(topo, detect_too_many_nodes)
{
	struct weft_topology t;
	fake_nodes(WEFT_MAX_NODES + 1, 20);
	CPU_ZERO(&fake.affinity);
	for (int n = 0; n <= WEFT_MAX_NODES; n++) {
		CPU_ZERO(&fake.node_cpus[n]);
		CPU_SET(n, &fake.node_cpus[n]);
		CPU_SET(n, &fake.affinity);
	}
	memset(&t, 0x5a, sizeof(t));
	struct weft_topology before = t;
	cr_assert_eq(topology_detect(&t), -E2BIG);
	cr_assert(memcmp(&t, &before, sizeof(t)) == 0);

	/* One CPU fewer in the mask and it fits exactly. */
	CPU_CLR(WEFT_MAX_NODES, &fake.affinity);
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, WEFT_MAX_NODES);
	cr_assert_eq(t.node[WEFT_MAX_NODES - 1].os_node, WEFT_MAX_NODES - 1);
	topology_free(&t);
}

Test(topo, detect_propagates_failures)
{
	struct weft_topology t, before;
	memset(&t, 0x5a, sizeof(t));
	before = t;

	fake.affinity_err = -EPERM;
	cr_assert_eq(topology_detect(&t), -EPERM);
	fake.affinity_err = 0;

	fake.max_node = -EIO;
	cr_assert_eq(topology_detect(&t), -EIO);
	fake.max_node = INT_MAX;
	cr_assert_eq(topology_detect(&t), -ERANGE);
	fake.max_node = 1024;
	cr_assert_eq(topology_detect(&t), -ERANGE);
	fake.max_node = 1;

	fake.node_err[1] = -ENOMEM;
	cr_assert_eq(topology_detect(&t), -ENOMEM);
	fake.node_err[1] = 0;

	CPU_ZERO(&fake.affinity);
	cr_assert_eq(topology_detect(&t), -EINVAL);

	cr_assert(memcmp(&t, &before, sizeof(t)) == 0);
	cr_assert_eq(topology_detect(NULL), -EINVAL);
}

Test(topo, detect_accepts_highest_kernel_node_id)
{
	struct weft_topology t;
	/* Node ids 2..1023 are holes; the loop must still reach them. */
	fake.max_node = 1023;
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_eq(t.nnodes, 2);
	cr_assert_eq(fake.node_cpus_calls, 1024);
	topology_free(&t);
}

Test(topo, load_affinity_failure_propagates_on_every_path)
{
	struct weft_topology t;
	fake.affinity_err = -EPERM;
	cr_assert_eq(topology_load(NULL, &t), -EPERM);
	cr_assert_eq(topology_load("0", &t), -EPERM);
	setenv(WEFT_TOPOLOGY_ENV, "0|1", 1);
	cr_assert_eq(topology_load(NULL, &t), -EPERM);
}

Test(topo, load_detects_without_string)
{
	struct weft_topology t;
	cr_assert_eq(topology_load(NULL, &t), 0);
	cr_assert_not(t.is_virtual);
	cr_assert_eq(t.distance[0][1], 21);
	expect_format(&t, "0-3|4-7");
	topology_free(&t);
}

Test(topo, load_honours_env)
{
	struct weft_topology t;
	setenv(WEFT_TOPOLOGY_ENV, "1|0", 1);
	cr_assert_eq(topology_load(NULL, &t), 0);
	cr_assert(t.is_virtual);
	expect_format(&t, "1|0");
	cr_assert_eq(t.distance[0][1], 20);
	topology_free(&t);

	setenv(WEFT_TOPOLOGY_ENV, "0|", 1);
	cr_assert_eq(topology_load(NULL, &t), -EINVAL);
	setenv(WEFT_TOPOLOGY_ENV, "", 1);
	cr_assert_eq(topology_load(NULL, &t), -EINVAL);
	/* Checked against the (fake) affinity mask, not the machine's. */
	setenv(WEFT_TOPOLOGY_ENV, "7", 1);
	cr_assert_eq(topology_load(NULL, &t), 0);
	topology_free(&t);
	CPU_CLR(7, &fake.affinity);
	cr_assert_eq(topology_load(NULL, &t), -EINVAL);
}

Test(topo, load_config_wins_over_env)
{
	struct weft_topology t;
	setenv(WEFT_TOPOLOGY_ENV, "1|0", 1);
	cr_assert_eq(topology_load("0-1", &t), 0);
	cr_assert(t.is_virtual);
	expect_format(&t, "0-1");
	topology_free(&t);

	/* A bad config string fails even though the env one is fine. */
	cr_assert_eq(topology_load("0,", &t), -EINVAL);
	cr_assert_eq(topology_load("", &t), -EINVAL);
	cr_assert_eq(topology_load("8", &t), -EINVAL);
}

Test(topo, format_round_trips)
{
	const char *specs[] = { "0-1|2,5", "0,2-4,6|1,5,7", "7|6|5|4|3|2|1|0", "0-7" };
	cpu_set_t allowed = allowed_0_7();
	for (unsigned i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct weft_topology t, u;
		char a[64], b[64];
		cr_assert_eq(topology_parse(specs[i], &allowed, &t), 0, "%s", specs[i]);
		cr_assert_eq(topology_format(&t, a, sizeof(a)), (int)strlen(specs[i]));
		cr_assert_str_eq(a, specs[i]);
		cr_assert_eq(topology_parse(a, &allowed, &u), 0);
		cr_assert_eq(topology_format(&u, b, sizeof(b)), (int)strlen(a));
		cr_assert_str_eq(a, b);
		topology_free(&t);
		topology_free(&u);
	}
}

Test(topo, format_needs_room_for_the_nul)
{
	struct weft_topology t;
	cpu_set_t allowed = allowed_0_7();
	char buf[16];
	cr_assert_eq(topology_parse("0-1|2,5", &allowed, &t), 0);
	cr_assert_eq(topology_format(&t, buf, 8), 7);
	cr_assert_str_eq(buf, "0-1|2,5");
	for (size_t len = 0; len < 8; len++)
		cr_assert_eq(topology_format(&t, buf, len), -ENOSPC, "len %zu", len);
	topology_free(&t);
}

Test(topo, free_is_idempotent)
{
	struct weft_topology t;
	memset(&t, 0, sizeof(t));
	topology_free(&t);
	cr_assert_eq(topology_load("0|1", &t), 0);
	topology_free(&t);
	cr_assert_eq(t.nnodes, 0);
	cr_assert_null(t.node[0].cpus);
	cr_assert_null(t.node[1].cpus);
	topology_free(&t);
}

/*
 * Walk every path that allocates, error paths included, then ask
 * LeakSanitizer directly (crit.h checks again after the body; see there
 * why its report at exit would not fail the test).
 */
Test(topo, no_leaks)
{
#if WEFT_TEST_ASAN
	struct weft_topology t;
	cpu_set_t allowed = allowed_0_7();

	cr_assert_eq(topology_parse("0-3|4-7", &allowed, &t), 0);
	cr_assert_eq(topology_parse("0|0", &allowed, &t), -EINVAL);
	topology_free(&t);
	cr_assert_eq(topology_detect(&t), 0);
	topology_free(&t);
	setenv(WEFT_TOPOLOGY_ENV, "1|0", 1);
	cr_assert_eq(topology_load(NULL, &t), 0);
	topology_free(&t);
	fake.node_err[1] = -ENOMEM;
	cr_assert_eq(topology_parse("0|4", &allowed, &t), -ENOMEM);
	cr_assert_eq(topology_detect(&t), -ENOMEM);
	fake.node_err[1] = 0;
	fake.max_node = -ENOSYS;
	cr_assert_eq(topology_detect(&t), 0);
	topology_free(&t);
	test_leak_check();
#else
	cr_skip_test("needs AddressSanitizer");
#endif
}

/* The machine as it is: no fake table. */
Test(real, detect_matches_affinity)
{
	cpu_set_t aff;
	struct weft_topology t;
	cr_assert_eq(sched_getaffinity(0, sizeof(aff), &aff), 0);

	weft_os_set(NULL);
	unsetenv(WEFT_TOPOLOGY_ENV);
	cr_assert_eq(topology_detect(&t), 0);
	cr_assert_not(t.is_virtual);
	cr_assert_eq(t.ncpus, (unsigned)CPU_COUNT(&aff));
	unsigned sum = 0;
	for (unsigned n = 0; n < t.nnodes; n++) {
		sum += t.node[n].ncpus;
		for (unsigned i = 0; i < t.node[n].ncpus; i++)
			cr_assert(CPU_ISSET(t.node[n].cpus[i], &aff));
		int d = t.node[n].os_node < 0 ? 0 : numa_distance(t.node[n].os_node, t.node[n].os_node);
		cr_assert_eq(t.distance[n][n], d > 0 && d < 256 ? d : 10);
	}
	cr_assert_eq(sum, t.ncpus);
	if (numa_available() < 0) {
		cr_assert_eq(t.nnodes, 1);
		cr_assert_eq(t.node[0].os_node, -1);
	} else if (numa_max_node() == 0) {
		cr_assert_eq(t.nnodes, 1);
		cr_assert_eq(t.node[0].os_node, 0);
	}
	topology_free(&t);
}

Test(real, load_string_against_real_affinity)
{
	cpu_set_t aff;
	struct weft_topology t;
	char spec[32];
	cr_assert_eq(sched_getaffinity(0, sizeof(aff), &aff), 0);
	int cpu = -1;
	for (int c = 0; c < CPU_SETSIZE && cpu < 0; c++)
		if (CPU_ISSET(c, &aff))
			cpu = c;
	cr_assert_geq(cpu, 0);

	snprintf(spec, sizeof(spec), "%d", cpu);
	cr_assert_eq(topology_load(spec, &t), 0);
	cr_assert_eq(t.nnodes, 1);
	expect_cpus(&t, 0, (int[]){ cpu }, 1);
	if (numa_available() >= 0)
		cr_assert_eq(t.node[0].os_node, numa_node_of_cpu(cpu));
	topology_free(&t);
}
