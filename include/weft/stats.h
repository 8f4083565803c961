/*
 * stats.h: counters.  Each worker counts into its own cache line; weft_stats
 * adds nothing up on the hot path, it only copies.  Values read while the
 * runtime runs are each exact but not a consistent snapshot.
 */
#ifndef WEFT_STATS_H
#define WEFT_STATS_H

#include <stdint.h>
#include <weft/export.h>
#include <weft/runtime.h>

WEFT_BEGIN_DECLS

struct weft_worker_stats {
	unsigned node;            /* node the worker belongs to */
	int cpu;                  /* CPU it was placed on */
	uint64_t tasks_run;       /* tasks this worker ran */
	uint64_t steals_local;    /* tasks stolen from a worker of its own node */
	uint64_t steals_remote;   /* tasks stolen from a worker of another node */
	uint64_t steal_failures;  /* steal attempts that found nothing */
	uint64_t injected;        /* tasks taken from an injection queue */
	uint64_t injected_remote; /* ... of those, from another node's queue */
	uint64_t parks;           /* times it went to sleep */
	uint64_t wakeups;         /* times it was woken by another thread */
	uint64_t spurious_wakeups;/* times it woke with nothing to do and no wake token */
};

struct weft_acquire_stats {
	uint64_t grants;          /* requests granted */
	uint64_t grants_fast;     /* ... of those, on the uncontended path */
	uint64_t waits;           /* requests that had to wait */
	uint64_t wakeups;         /* futex wakes sent to blocked acquirers */
	uint64_t spurious_wakeups;/* blocked acquirers that woke without a grant */
	uint64_t cancelled;       /* requests answered with -ECANCELED */
	uint64_t reservations;    /* times a request used up its bypass budget */
	uint64_t max_bypassed;    /* largest number of times one request was overtaken */
};

struct weft_io_stats {
	unsigned backend;         /* enum weft_io_backend in use */
	unsigned park;            /* enum weft_io_park in use (0: threads backend) */
	uint64_t submitted;       /* operations accepted */
	uint64_t completed;       /* callbacks queued (cancelled ones included) */
	uint64_t cancelled;       /* completions with -ECANCELED */
	uint64_t ring_parks;      /* times a worker slept in io_uring_enter */
	uint64_t sq_full;         /* times a submission found the SQ full */
	uint64_t backlogged;      /* submissions queued in user space meanwhile */
	uint64_t cq_overflows;    /* times the kernel reported CQ overflow */
};

struct weft_stats {
	unsigned workers;
	unsigned nodes;
	struct weft_worker_stats worker[WEFT_MAX_WORKERS];
	struct weft_acquire_stats acquire;
	struct weft_io_stats io;
};

/* Fill *out.  0 or -EINVAL. */
WEFT_API int weft_stats(weft_rt *rt, struct weft_stats *out);

WEFT_END_DECLS

#endif
