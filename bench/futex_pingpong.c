/*
 * futex_pingpong.c: the baseline of the wake-latency row.  Two threads take
 * turns on one futex word, each sleeping in FUTEX_WAIT until the other
 * bumps the word and calls FUTEX_WAKE, with no spinning: every hand-over is
 * a real sleep and a real cross-thread wake, the floor for waking a parked
 * worker.  The two threads can be pinned to two CPUs: where they run
 * decides the cost (on this VM a wake across CPUs costs several times one
 * on the same CPU), so the caller says which it measures.
 */
#define _GNU_SOURCE 1
#include "baselines.h"
#include "bench_util.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Round trips run before sampling, so thread start-up is not measured. */
#define WARMUP 50
/* Tells the partner to stop when the measuring thread could not start. */
#define CANCEL UINT32_MAX

struct pingpong {
	_Atomic uint32_t word; /* 2i+1: the partner's turn in round i; 2i+2: back */
	unsigned rounds;
	double *oneway_ns;
};

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void *pinger(void *arg)
{
	struct pingpong *pp = arg;

	for (uint32_t i = 0; i < pp->rounds; i++) {
		uint32_t want = 2 * i + 2, w;
		uint64_t t0 = bench_now_ns();

		atomic_store_explicit(&pp->word, want - 1, memory_order_release);
		futex_wake(&pp->word);
		/* Re-check after every return: futex waits wake spuriously. */
		while ((w = atomic_load_explicit(&pp->word, memory_order_acquire)) != want)
			futex_wait(&pp->word, w);
		if (i >= WARMUP)
			pp->oneway_ns[i - WARMUP] = (double)(bench_now_ns() - t0) / 2;
	}
	return NULL;
}

static void *ponger(void *arg)
{
	struct pingpong *pp = arg;

	for (uint32_t i = 0; i < pp->rounds; i++) {
		uint32_t want = 2 * i + 1, w;

		while ((w = atomic_load_explicit(&pp->word, memory_order_acquire)) != want) {
			if (w == CANCEL)
				return NULL;
			futex_wait(&pp->word, w);
		}
		atomic_store_explicit(&pp->word, want + 1, memory_order_release);
		futex_wake(&pp->word);
	}
	return NULL;
}

/* Start fn on a new thread, pinned to cpu unless cpu < 0. */
static int start(pthread_t *t, int cpu, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	cpu_set_t set;
	int rc;

	if ((rc = pthread_attr_init(&attr)) != 0)
		return rc;
	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		rc = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
	}
	if (rc == 0)
		rc = pthread_create(t, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	return rc;
}

int bench_futex_pingpong(unsigned samples, int cpu_a, int cpu_b, double *oneway_ns)
{
	struct pingpong pp = { .rounds = WARMUP + samples, .oneway_ns = oneway_ns };
	pthread_t a, b;
	int rc;

	atomic_init(&pp.word, 0);
	/* Both sides on fresh threads, so the caller's own affinity is never
	 * touched. */
	if ((rc = start(&b, cpu_b, ponger, &pp)) != 0)
		return -rc;
	if ((rc = start(&a, cpu_a, pinger, &pp)) != 0) {
		atomic_store_explicit(&pp.word, CANCEL, memory_order_release);
		futex_wake(&pp.word);
		pthread_join(b, NULL);
		return -rc;
	}
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return 0;
}
