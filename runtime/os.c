/*
 * os.c: the default OS layer: raw futex syscalls, io_uring set-up and
 * entry, membarrier, and the clock.
 *
 * Overview: private futexes only (the words live in this process).  The
 * kernel gives no happens-before edge that ThreadSanitizer can see, so every
 * futex word the runtime sleeps on is also read and written with the atomic
 * wrappers in atomics.h; the syscall is only the sleep, never the message.
 */
#include "os.h"

#include <numa.h>

#include <errno.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

static int sys_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	struct timespec ts, *tp = NULL;
	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tp = &ts;
	}
	long r = syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, tp, NULL, 0);
	return r < 0 ? -errno : 0;
}

static int sys_futex_wake(uint32_t *word, int n)
{
	long r = syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
	return r < 0 ? -errno : (int)r;
}

static int sys_affinity(cpu_set_t *out)
{
	CPU_ZERO(out);
	return sched_getaffinity(0, sizeof(*out), out) < 0 ? -errno : 0;
}

static int sys_numa_max_node(void)
{
	if (numa_available() < 0)
		return -ENOSYS;
	return numa_max_node();
}

static int sys_numa_node_cpus(int node, cpu_set_t *out)
{
	CPU_ZERO(out);
	struct bitmask *bm = numa_allocate_cpumask();
	if (!bm)
		return -ENOMEM;
	int r = numa_node_to_cpus(node, bm);
	if (r == 0) {
		for (unsigned cpu = 0; cpu < bm->size && cpu < CPU_SETSIZE; cpu++)
			if (numa_bitmask_isbitset(bm, cpu))
				CPU_SET(cpu, out);
	}
	numa_free_cpumask(bm);
	return r < 0 ? -EINVAL : 0;
}

static int sys_numa_distance(int a, int b)
{
	int d = numa_distance(a, b);
	return d > 0 ? d : -EINVAL;
}

static int sys_ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
	return io_uring_queue_init_params(entries, ring, p);
}

static int sys_ring_enter(struct io_uring *ring, unsigned wait_nr)
{
	return io_uring_submit_and_wait(ring, wait_nr);
}

static int sys_ring_submit(struct io_uring *ring, bool get_events)
{
	return get_events ? io_uring_submit_and_get_events(ring) : io_uring_submit(ring);
}

static int sys_eventfd_signal(int fd)
{
	uint64_t one = 1;
	return write(fd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

static int sys_membarrier_register(void)
{
	long r = syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
	return r < 0 ? -errno : 0;
}

static int sys_membarrier(void)
{
	long r = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
	return r < 0 ? -errno : 0;
}

static const struct weft_os default_os = {
	.futex_wait = sys_futex_wait,
	.futex_wake = sys_futex_wake,
	.affinity = sys_affinity,
	.numa_max_node = sys_numa_max_node,
	.numa_node_cpus = sys_numa_node_cpus,
	.numa_distance = sys_numa_distance,
	.ring_init = sys_ring_init,
	.ring_enter = sys_ring_enter,
	.ring_submit = sys_ring_submit,
	.eventfd_signal = sys_eventfd_signal,
	.membarrier_register = sys_membarrier_register,
	.membarrier = sys_membarrier,
};

const struct weft_os *weft_os_active = &default_os;

void weft_os_set(const struct weft_os *os)
{
	weft_os_active = os ? os : &default_os;
}

const struct weft_os *weft_os_default(void)
{
	return &default_os;
}

uint64_t os_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
