/*
 * topology.h: the NUMA nodes weft uses, their CPUs and their distances.
 *
 * A topology is either virtual (parsed from a string such as "0-3|4-7") or
 * detected from libnuma through the OS table (os.h).  Both are restricted to
 * the process's affinity mask.
 *
 * Invariants of a topology returned with 0:
 *   - 1 <= nnodes <= WEFT_MAX_NODES, and every node has at least one CPU;
 *   - every CPU is in the affinity mask seen when the topology was made, and
 *     in exactly one node; a node's CPUs are in ascending order;
 *   - distance[i][i] is the local distance (10 for virtual nodes), every
 *     distance is in 1..255;
 *   - near[i][0 .. nnodes-2] lists every node except i, nearest first, ties
 *     broken by the lower node index.
 * Node numbers are weft's (0 .. nnodes-1); os_node says which libnuma node
 * a weft node lives on.
 */
#ifndef WEFT_TOPOLOGY_H
#define WEFT_TOPOLOGY_H

#include "os.h"

#include <stdbool.h>
#include <stddef.h>
#include <weft/runtime.h>

/* The environment variable topology_load() reads when no string is given. */
#define WEFT_TOPOLOGY_ENV "WEFT_TOPOLOGY"

#define WEFT_DISTANCE_LOCAL 10
#define WEFT_DISTANCE_REMOTE 20

struct weft_topo_node {
	unsigned ncpus;
	/* ncpus CPU numbers, ascending; owned by the topology. */
	int *cpus;
	/* The libnuma node this node's memory should come from, or -1 when it
	 * is unknown (no NUMA support, or a virtual node whose first CPU
	 * libnuma does not place). */
	int os_node;
};

struct weft_topology {
	unsigned nnodes;
	/* CPUs over all nodes. */
	unsigned ncpus;
	/* Made from a string rather than detected. */
	bool is_virtual;
	struct weft_topo_node node[WEFT_MAX_NODES];
	unsigned char distance[WEFT_MAX_NODES][WEFT_MAX_NODES];
	/* Stealing order: near[i][k] for k < nnodes - 1. */
	unsigned char near[WEFT_MAX_NODES][WEFT_MAX_NODES - 1];
};

/*
 * Build a virtual topology from spec: nodes separated by '|', each a
 * comma-separated list of CPU numbers or ranges a-b with a <= b.  Every CPU
 * must be in allowed and appear once in the whole string.  Virtual nodes are
 * 10 from themselves and 20 from each other.  0, -EINVAL for a bad string,
 * or -ENOMEM; on failure *out is not touched.
 */
int topology_parse(const char *spec, const cpu_set_t *allowed, struct weft_topology *out);

/*
 * Detect the topology from libnuma, restricted to the affinity mask.  Nodes
 * with no allowed CPU are left out.  Without NUMA support: one node with
 * every allowed CPU.  0 or -errno; on failure *out is not touched.
 */
int topology_detect(struct weft_topology *out);

/*
 * cfg_spec if not NULL, else $WEFT_TOPOLOGY if set (even to ""), else
 * topology_detect().  Strings are checked against the affinity mask.
 */
int topology_load(const char *cfg_spec, struct weft_topology *out);

/* Free what a successful parse/detect/load allocated.  Safe on a zeroed
 * topology and when called twice. */
void topology_free(struct weft_topology *t);

/*
 * Write t in the virtual grammar, runs of consecutive CPUs as ranges:
 * "0-1|2,5".  Parsing the result gives back the same nodes.  Returns the
 * length without the NUL, or -ENOSPC when buf (len bytes) is too small.
 */
int topology_format(const struct weft_topology *t, char *buf, size_t len);

#endif
