/*
 * runtime.h: creating a runtime, spawning tasks, asking where you run.
 *
 * A weft_rt owns a pool of worker threads grouped by NUMA node.  Each worker
 * has its own work-stealing deque; threads that are not workers submit
 * through one lock-free injection queue per node.  Idle workers park on a
 * futex and use no CPU.
 *
 * Errors: functions that can fail return 0 (or a non-negative value) or a
 * negative errno, like liburing.  There is no global error state.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include <stdbool.h>
#include <weft/export.h>
#include <weft/thread.h>

WEFT_BEGIN_DECLS

typedef struct weft_rt weft_rt;

/* The most workers one runtime may have (oversubscription included);
 * weft_create returns -EINVAL above it. */
#define WEFT_MAX_WORKERS 256
/* The most (virtual) NUMA nodes. */
#define WEFT_MAX_NODES 64

/* A zeroed weft_config means "defaults" for every field. */
struct weft_config {
	/* Number of workers.  0: one per CPU of the topology.  More than the
	 * CPUs is allowed (workers then share CPUs round-robin) up to
	 * WEFT_MAX_WORKERS. */
	unsigned workers;
	/* Virtual NUMA topology: CPU lists separated by '|', e.g. "0|1",
	 * "0-3|4-7", "0,2|1,3".  NULL: the environment variable WEFT_TOPOLOGY,
	 * and if that is unset, what libnuma reports, restricted to the
	 * process's affinity mask.  A malformed string, a CPU outside the
	 * affinity mask or a CPU in two nodes makes weft_create fail with
	 * -EINVAL. */
	const char *topology;
	/* Pin each worker to its CPU. */
	bool pin;
	/* Thread layer; NULL means pthreads. */
	const struct weft_thread_ops *threads;

	/* Component scheduler (weft/acquire.h). */
	/* Number of component ids; 0 means 4096. */
	unsigned components;
	/* How many times a waiting request may be overtaken by later
	 * conflicting requests before its components are reserved for it;
	 * 0 means 16. */
	unsigned max_bypass;
	/* Grant conflicting requests strictly in arrival order. */
	bool strict_order;

	/* I/O (weft/io.h). */
	/* Backend: WEFT_IO_URING (weft_create fails if io_uring cannot be
	 * used), WEFT_IO_THREADS, or WEFT_IO_AUTO (0): then the environment
	 * variable WEFT_IO decides as if it were this field ("uring" forces
	 * io_uring, "threads" the helper threads), and unset, io_uring when
	 * the kernel allows it, else threads. */
	unsigned io;
	/* Submission queue entries per worker ring; 0 means 256. */
	unsigned io_entries;
	/* How a worker with a ring parks (enum weft_io_park); 0: env
	 * WEFT_IO_PARK=futex|eventfd|poll, else the best the kernel has. */
	unsigned io_park;
};

/* Create a runtime.  cfg NULL means defaults.  0 or -errno; on failure
 * nothing is left behind. */
WEFT_API int weft_create(weft_rt **rt, const struct weft_config *cfg);

/* Run everything submitted so far to completion (tasks may keep spawning
 * while it runs), then join the workers and free the runtime.  Spawns from
 * threads that are not workers fail with -ESHUTDOWN once it has begun; the
 * runtime must not be used at all once it has returned.  Called from one of
 * the runtime's own workers it cannot join itself: it prints a message and
 * does nothing. */
WEFT_API void weft_destroy(weft_rt *rt);

/* Run fn(arg) on some worker.  From a worker the task goes to that worker's
 * own deque (LIFO for the owner, stealable by others); from any other thread
 * it goes to an injection queue, round-robin over the nodes.  0 or -errno
 * (-EINVAL for NULL rt or fn, -ESHUTDOWN once weft_destroy has begun). */
WEFT_API int weft_spawn(weft_rt *rt, void (*fn)(void *arg), void *arg);

/* Like weft_spawn, but the task runs on a worker of the given node: it
 * goes to that node's affine queue, which only that node's workers read.
 * A node that has no workers (fewer workers than nodes) falls back to
 * weft_spawn.  -EINVAL for an unknown node. */
WEFT_API int weft_spawn_on_node(weft_rt *rt, unsigned node, void (*fn)(void *arg), void *arg);

WEFT_API unsigned weft_worker_count(const weft_rt *rt);
WEFT_API unsigned weft_node_count(const weft_rt *rt);

/* The index of the worker the calling thread is, or -1 on a thread that is
 * not a worker of any runtime. */
WEFT_API int weft_current_worker(void);

/* The node (0 .. weft_node_count()-1) and the CPU a worker belongs to;
 * -EINVAL for an unknown worker. */
WEFT_API int weft_worker_node(const weft_rt *rt, unsigned worker);
WEFT_API int weft_worker_cpu(const weft_rt *rt, unsigned worker);

WEFT_END_DECLS

#endif
