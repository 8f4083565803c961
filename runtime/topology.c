/*
 * topology.c: builds the node/CPU/distance picture the workers are laid out
 * on, either from a virtual-topology string or from libnuma.
 *
 * Everything the OS knows comes through weft_os_active, so tests can fake a
 * machine.  Both builders fill a private struct topo_build first and copy it
 * into the caller's topology only once nothing can fail any more: a failed
 * call leaves *out as it was.  The invariants of a finished topology are
 * listed in topology.h.
 */
#include "topology.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The kernel's MAX_NUMNODES is at most 1 << 10 on every architecture; a
 * larger numa_max_node() is a broken source, and looping to it could take
 * forever. */
#define TOPO_MAX_OS_NODE 1023

struct topo_build {
	unsigned nnodes;
	int os_node[WEFT_MAX_NODES];
	cpu_set_t cpus[WEFT_MAX_NODES];
	unsigned char distance[WEFT_MAX_NODES][WEFT_MAX_NODES];
};

static int first_cpu(const cpu_set_t *set)
{
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, set))
			return cpu;
	return -1;
}

/*
 * The CPUs of libnuma node id.  1: *set filled, 0: no such node, or -ENOMEM.
 * libnuma fails for ids that are holes in a sparse node numbering (and its
 * own numa_node_of_cpu skips them), so only running out of memory is treated
 * as a real error.
 */
static int os_node_cpus(int id, cpu_set_t *set)
{
	int r = weft_os_active->numa_node_cpus(id, set);
	if (r == -ENOMEM)
		return r;
	return r < 0 ? 0 : 1;
}

static void set_virtual_distances(struct topo_build *b)
{
	for (unsigned i = 0; i < b->nnodes; i++)
		for (unsigned j = 0; j < b->nnodes; j++)
			b->distance[i][j] = i == j ? WEFT_DISTANCE_LOCAL : WEFT_DISTANCE_REMOTE;
}

/*
 * Copy b into out.  Only the CPU arrays can fail to allocate, so they are
 * all made before out is touched.
 */
static int commit(const struct topo_build *b, bool is_virtual, struct weft_topology *out)
{
	int *cpus[WEFT_MAX_NODES];
	unsigned ncpus[WEFT_MAX_NODES];
	unsigned total = 0;

	for (unsigned n = 0; n < b->nnodes; n++) {
		ncpus[n] = (unsigned)CPU_COUNT(&b->cpus[n]);
		cpus[n] = malloc(ncpus[n] * sizeof(int));
		if (!cpus[n]) {
			for (unsigned k = 0; k < n; k++)
				free(cpus[k]);
			return -ENOMEM;
		}
		unsigned k = 0;
		for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
			if (CPU_ISSET(cpu, &b->cpus[n]))
				cpus[n][k++] = cpu;
		total += ncpus[n];
	}

	memset(out, 0, sizeof(*out));
	out->nnodes = b->nnodes;
	out->ncpus = total;
	out->is_virtual = is_virtual;
	for (unsigned n = 0; n < b->nnodes; n++) {
		out->node[n].ncpus = ncpus[n];
		out->node[n].cpus = cpus[n];
		out->node[n].os_node = b->os_node[n];
		memcpy(out->distance[n], b->distance[n], b->nnodes);
	}

	/* Insertion sort: at most 63 entries, and stable, so equal distances
	 * keep ascending index order. */
	for (unsigned i = 0; i < b->nnodes; i++) {
		unsigned cnt = 0;
		for (unsigned j = 0; j < b->nnodes; j++) {
			if (j == i)
				continue;
			unsigned k = cnt++;
			while (k > 0 && b->distance[i][out->near[i][k - 1]] > b->distance[i][j]) {
				out->near[i][k] = out->near[i][k - 1];
				k--;
			}
			out->near[i][k] = (unsigned char)j;
		}
	}
	return 0;
}

/* Decimal CPU number below CPU_SETSIZE: digits only, no sign or space. */
static int parse_cpu(const char **sp, unsigned *cpu)
{
	const char *s = *sp;
	unsigned long v = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	while (*s >= '0' && *s <= '9') {
		/* Stop accumulating once too large so a long string cannot
		 * overflow back into range. */
		if (v < CPU_SETSIZE)
			v = v * 10 + (unsigned long)(*s - '0');
		s++;
	}
	if (v >= CPU_SETSIZE)
		return -EINVAL;
	*sp = s;
	*cpu = (unsigned)v;
	return 0;
}

static int parse_nodes(const char *s, const cpu_set_t *allowed, struct topo_build *b)
{
	cpu_set_t seen;

	CPU_ZERO(&seen);
	b->nnodes = 0;
	for (;;) {
		if (b->nnodes == WEFT_MAX_NODES)
			return -EINVAL;
		cpu_set_t *set = &b->cpus[b->nnodes];
		CPU_ZERO(set);
		for (;;) {
			unsigned lo, hi;
			if (parse_cpu(&s, &lo) < 0)
				return -EINVAL;
			hi = lo;
			if (*s == '-') {
				s++;
				if (parse_cpu(&s, &hi) < 0 || hi < lo)
					return -EINVAL;
			}
			for (unsigned cpu = lo; cpu <= hi; cpu++) {
				if (!CPU_ISSET(cpu, allowed) || CPU_ISSET(cpu, &seen))
					return -EINVAL;
				CPU_SET(cpu, &seen);
				CPU_SET(cpu, set);
			}
			if (*s != ',')
				break;
			s++;
		}
		b->nnodes++;
		if (*s == '\0')
			return 0;
		if (*s != '|')
			return -EINVAL;
		s++;
	}
}

/*
 * Which libnuma node each virtual node's memory should come from: the node
 * of its lowest CPU.  Best effort: without NUMA support it stays -1.
 */
static int virtual_os_nodes(struct topo_build *b)
{
	int first[WEFT_MAX_NODES];
	cpu_set_t set;

	for (unsigned n = 0; n < b->nnodes; n++) {
		b->os_node[n] = -1;
		first[n] = first_cpu(&b->cpus[n]);
	}
	int max = weft_os_active->numa_max_node();
	if (max > TOPO_MAX_OS_NODE)
		max = TOPO_MAX_OS_NODE;
	for (int id = 0; id <= max; id++) {
		int r = os_node_cpus(id, &set);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		for (unsigned n = 0; n < b->nnodes; n++)
			if (b->os_node[n] < 0 && CPU_ISSET(first[n], &set))
				b->os_node[n] = id;
	}
	return 0;
}

int topology_parse(const char *spec, const cpu_set_t *allowed, struct weft_topology *out)
{
	if (!spec || !allowed || !out)
		return -EINVAL;

	struct topo_build *b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	int r = parse_nodes(spec, allowed, b);
	if (r == 0)
		r = virtual_os_nodes(b);
	if (r == 0) {
		set_virtual_distances(b);
		r = commit(b, true, out);
	}
	free(b);
	return r;
}

static void single_node(struct topo_build *b, const cpu_set_t *allowed)
{
	b->nnodes = 1;
	b->cpus[0] = *allowed;
	b->os_node[0] = -1;
	b->distance[0][0] = WEFT_DISTANCE_LOCAL;
}

static int detect_nodes(struct topo_build *b, const cpu_set_t *allowed)
{
	int max = weft_os_active->numa_max_node();
	if (max == -ENOSYS) {
		single_node(b, allowed);
		return 0;
	}
	if (max < 0)
		return max;
	if (max > TOPO_MAX_OS_NODE)
		return -ERANGE;

	cpu_set_t taken, set, dup;
	CPU_ZERO(&taken);
	b->nnodes = 0;
	for (int id = 0; id <= max; id++) {
		int r = os_node_cpus(id, &set);
		if (r < 0)
			return r;
		if (r == 0)
			continue;
		/* A CPU libnuma puts in two nodes goes to the first, so each
		 * CPU still gets exactly one worker slot. */
		CPU_AND(&set, &set, allowed);
		CPU_AND(&dup, &set, &taken);
		CPU_XOR(&set, &set, &dup);
		/* No allowed CPU (a CPU-less node, or one outside our cpuset):
		 * no workers there.  Kept nodes keep their libnuma id. */
		if (CPU_COUNT(&set) == 0)
			continue;
		if (b->nnodes == WEFT_MAX_NODES)
			return -E2BIG;
		CPU_OR(&taken, &taken, &set);
		b->cpus[b->nnodes] = set;
		b->os_node[b->nnodes] = id;
		b->nnodes++;
	}
	/* libnuma answered but placed none of our CPUs (sysfs missing, say):
	 * the CPUs are still usable, just without placement. */
	if (b->nnodes == 0) {
		single_node(b, allowed);
		return 0;
	}

	for (unsigned i = 0; i < b->nnodes; i++) {
		for (unsigned j = 0; j < b->nnodes; j++) {
			int d = weft_os_active->numa_distance(b->os_node[i], b->os_node[j]);
			/* No SLIT, or nonsense: assume the usual local/remote. */
			if (d < 1 || d > 255)
				d = i == j ? WEFT_DISTANCE_LOCAL : WEFT_DISTANCE_REMOTE;
			b->distance[i][j] = (unsigned char)d;
		}
	}
	return 0;
}

int topology_detect(struct weft_topology *out)
{
	cpu_set_t allowed;

	if (!out)
		return -EINVAL;
	int r = weft_os_active->affinity(&allowed);
	if (r < 0)
		return r;
	if (CPU_COUNT(&allowed) == 0)
		return -EINVAL;

	struct topo_build *b = malloc(sizeof(*b));
	if (!b)
		return -ENOMEM;
	r = detect_nodes(b, &allowed);
	if (r == 0)
		r = commit(b, false, out);
	free(b);
	return r;
}

int topology_load(const char *cfg_spec, struct weft_topology *out)
{
	const char *spec = cfg_spec ? cfg_spec : getenv(WEFT_TOPOLOGY_ENV);
	cpu_set_t allowed;

	if (!spec)
		return topology_detect(out);
	int r = weft_os_active->affinity(&allowed);
	if (r < 0)
		return r;
	return topology_parse(spec, &allowed, out);
}

void topology_free(struct weft_topology *t)
{
	for (unsigned n = 0; n < WEFT_MAX_NODES; n++) {
		free(t->node[n].cpus);
		t->node[n].cpus = NULL;
		t->node[n].ncpus = 0;
	}
	t->nnodes = 0;
	t->ncpus = 0;
}

__attribute__((format(printf, 4, 5)))
static int emit(char *buf, size_t len, size_t *pos, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(buf + *pos, len - *pos, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len - *pos)
		return -ENOSPC;
	*pos += (size_t)n;
	return 0;
}

int topology_format(const struct weft_topology *t, char *buf, size_t len)
{
	size_t pos = 0;

	if (!buf || len == 0)
		return -ENOSPC;
	buf[0] = '\0';
	for (unsigned n = 0; n < t->nnodes; n++) {
		const struct weft_topo_node *node = &t->node[n];
		if (n > 0 && emit(buf, len, &pos, "|") < 0)
			return -ENOSPC;
		unsigned j;
		for (unsigned i = 0; i < node->ncpus; i = j) {
			j = i + 1;
			while (j < node->ncpus && node->cpus[j] == node->cpus[j - 1] + 1)
				j++;
			const char *sep = i > 0 ? "," : "";
			int r;
			if (j - i == 1)
				r = emit(buf, len, &pos, "%s%d", sep, node->cpus[i]);
			else
				r = emit(buf, len, &pos, "%s%d-%d", sep, node->cpus[i], node->cpus[j - 1]);
			if (r < 0)
				return -ENOSPC;
		}
	}
	return (int)pos;
}
