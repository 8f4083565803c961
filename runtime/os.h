/*
 * os.h: the small OS layer.  Every futex, topology, io_uring and
 * membarrier syscall the runtime makes goes through the table below, so a
 * test can swap in its own functions and inject failures, EINTR or
 * spurious wakeups, or take membarrier away.
 *
 * Invariant: callers treat every wait as "may return early for no reason";
 * a wait returning 0 only means "look again".
 */
#ifndef WEFT_OS_H
#define WEFT_OS_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <liburing.h>

struct weft_os {
	/* Sleep while *word == expected.  timeout_ns < 0: no timeout.
	 * Returns 0 or -errno (-EAGAIN, -EINTR, -ETIMEDOUT). */
	int (*futex_wait)(uint32_t *word, uint32_t expected, int64_t timeout_ns);
	/* Wake up to n sleepers on word; returns how many woke or -errno. */
	int (*futex_wake)(uint32_t *word, int n);

	/* Topology sources (topology.c).  Each returns 0 or -errno. */
	/* The CPUs this process may run on. */
	int (*affinity)(cpu_set_t *out);
	/* Highest NUMA node number, or -ENOSYS when libnuma reports no NUMA
	 * support (then everything is one node). */
	int (*numa_max_node)(void);
	/* CPUs of one node (may be empty: a memory-less or CPU-less node). */
	int (*numa_node_cpus)(int node, cpu_set_t *out);
	/* SLIT distance between two nodes (10 = local), or -errno. */
	int (*numa_distance)(int a, int b);

	/* io_uring (ring.c).  Set up a ring: liburing's
	 * io_uring_queue_init_params, 0 or -errno (-EPERM/-ENOSYS where
	 * io_uring is forbidden or missing). */
	int (*ring_init)(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
	/* Submit what is queued and wait for at least wait_nr completions
	 * (io_uring_submit_and_wait); >= 0 or -errno. */
	int (*ring_enter)(struct io_uring *ring, unsigned wait_nr);
	/* Submit what is queued without waiting (io_uring_submit), and with
	 * get_events also run completions the kernel holds back
	 * (io_uring_submit_and_get_events); >= 0 or -errno. */
	int (*ring_submit)(struct io_uring *ring, bool get_events);
	/* Add 1 to an eventfd (the eventfd park's wake); 0 or -errno. */
	int (*eventfd_signal)(int fd);

	/* Process-wide memory barrier (membarrier(2), PRIVATE_EXPEDITED):
	 * register once, 0 or -errno; then each call returns only after every
	 * thread of the process that was running has executed a full memory
	 * barrier (one that was not running passed through the scheduler's).
	 * NULL means "not available": the runtime then pays a seq_cst RMW on
	 * the other side instead (see rt_push_outside). */
	int (*membarrier_register)(void);
	int (*membarrier)(void);
};

/* The table in use; tests replace it with weft_os_set() and restore it with
 * weft_os_set(NULL).  Not thread-safe: swap only while no runtime runs. */
extern const struct weft_os *weft_os_active;
void weft_os_set(const struct weft_os *os);
const struct weft_os *weft_os_default(void);

static inline int os_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	return weft_os_active->futex_wait(word, expected, timeout_ns);
}

static inline int os_futex_wake(uint32_t *word, int n)
{
	return weft_os_active->futex_wake(word, n);
}

static inline int os_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
	return weft_os_active->ring_init(entries, ring, p);
}

static inline int os_ring_enter(struct io_uring *ring, unsigned wait_nr)
{
	return weft_os_active->ring_enter(ring, wait_nr);
}

static inline int os_ring_submit(struct io_uring *ring, bool get_events)
{
	return weft_os_active->ring_submit(ring, get_events);
}

static inline int os_eventfd_signal(int fd)
{
	return weft_os_active->eventfd_signal(fd);
}

/* true: os_membarrier() may be used from now on. */
static inline bool os_membarrier_register(void)
{
	const struct weft_os *os = weft_os_active;
	return os->membarrier_register && os->membarrier && os->membarrier_register() == 0;
}

static inline int os_membarrier(void)
{
	return weft_os_active->membarrier();
}

uint64_t os_now_ns(void);

#endif
