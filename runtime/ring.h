/*
 * ring.h (internal): the io_uring backend, one ring per worker.
 *
 * Everything here is called by the ring's owner (the worker) unless it says
 * "any thread".
 */
#ifndef WEFT_RING_H
#define WEFT_RING_H

#include <stdbool.h>
#include <stdint.h>

#include <weft/runtime.h>
#include <weft/stats.h>

struct weft_worker;
struct io_op;

/* What the kernel offers, probed once per runtime in weft_create. */
struct ring_setup {
	unsigned flags;     /* IORING_SETUP_* every worker ring uses */
	unsigned entries;   /* SQ entries per ring */
	unsigned park;      /* enum weft_io_park in use */
	bool cancel_any;    /* IORING_ASYNC_CANCEL_ANY works (5.19+) */
};

/* Probe: 0 and *out filled, or -errno when io_uring cannot be used here. */
int ring_probe(const struct weft_config *cfg, struct ring_setup *out);

/* Put op (OP_INFLIGHT, owner = this worker) on the worker's ring, creating
 * the ring on first use.  Never fails because the SQ is full (the op waits
 * in a user-space backlog).  0 or -errno (ring creation failed; op untouched). */
int ring_submit(struct weft_worker *w, struct io_op *op);
/* Flush pending submissions, take what the mailbox holds, reap
 * completions (each becomes a task on w's deque).  True if it queued any
 * task.  Cheap when there is nothing to do (a few loads, no syscall). */
bool ring_poll(struct weft_worker *w);
/* Anything to reap or flush right now?  (A parker's last look.) */
bool ring_has_work(struct weft_worker *w);
/* ring_sleep is reaping (the worker is still announced as parked). */
bool ring_in_park(struct weft_worker *w);
/* park_worker is done with ring_sleep. */
void ring_after_park(struct weft_worker *w);
/* The park_word value that says "asleep on the ring". */
uint32_t ring_sleep_value(struct weft_worker *w);
/* Sleep in the ring until the park word leaves `expect` or a completion
 * arrives.  True if completions were queued as tasks. */
bool ring_sleep(struct weft_worker *w, uint32_t expect);
/* The park mechanism wakes periodically (WEFT_IO_PARK_POLL). */
bool ring_park_polls(struct weft_worker *w);
/* The fd a waker signals for PARK_SLEEPING_EFD. */
int ring_wake_fd(struct weft_worker *w);
/* Any thread: ask w's ring to cancel the operation with this handle. */
void ring_cancel(struct weft_worker *w, int handle);
/* Operations w still owes a completion for (any thread may read). */
uint32_t ring_inflight(struct weft_worker *w);
/* Add w's counters (any thread, relaxed). */
void ring_stats(struct weft_worker *w, struct weft_io_stats *out);
/* The worker is leaving: close its ring.  Nothing may be in flight. */
void ring_fini(struct weft_worker *w);
/* weft_destroy: free what ring_fini left (the counters). */
void ring_free(struct weft_worker *w);

#endif
