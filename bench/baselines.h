/*
 * baselines.h: the non-weft implementations weft-bench measures in the same
 * run: serial fib (fib_serial.c), oneTBB task_group fib (fib_tbb.cpp, built
 * when libtbb-dev is found: WEFT_BENCH_HAVE_TBB), OpenMP task fib
 * (fib_omp.c, built when the compiler has OpenMP: WEFT_BENCH_HAVE_OMP), a
 * raw futex ping-pong (futex_pingpong.c) and a raw liburing loop of
 * chained file reads (uring_raw.c).  The echo and KV baselines are
 * separate programs (echo_epoll.c, Debian's redis-server).
 */
#ifndef WEFT_BENCH_BASELINES_H
#define WEFT_BENCH_BASELINES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Plain recursive fib(n); n is hidden from the optimiser. */
uint64_t bench_fib_serial(int n);

/* Samples round trips between two threads that sleep on a futex word and
 * wake each other, storing each one-way time (round trip / 2, ns) in
 * oneway_ns[0 .. samples-1].  The threads are pinned to cpu_a and cpu_b
 * (-1: not pinned).  0 or -errno. */
int bench_futex_pingpong(unsigned samples, int cpu_a, int cpu_b, double *oneway_ns);

/* The chained-reads pattern, shared by weft's version (io_bench.c) and the
 * raw loop: every in-flight read has its own xorshift state, and the next
 * page it reads is drawn from it.  The file's page p starts with the
 * 8-byte value p * 4096, so every read can be checked cheaply. */
#define BENCH_READ_SIZE 4096u
static inline uint64_t bench_next_page(uint64_t *state, uint64_t pages)
{
	uint64_t x = *state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*state = x;
	return x % pages;
}

/* One thread, one io_uring (default flags, inflight * 2 entries):
 * `inflight` 4 KiB reads of random pages of fd (of `pages` pages) in
 * flight; each completion is checked and, until duration_ns has passed,
 * replaced by the next read of its chain.  *ops: reads completed;
 * *elapsed_ns: from the first submission to the last completion.  0,
 * -EIO for a short or wrong read, or -errno from liburing. */
int bench_uring_reads(int fd, uint64_t pages, unsigned inflight, uint64_t duration_ns,
		      uint64_t *ops, uint64_t *elapsed_ns);

#ifdef WEFT_BENCH_HAVE_TBB
/* A oneTBB task_arena limited to `threads` threads (the caller's included).
 * NULL on failure. */
struct bench_tbb;
struct bench_tbb *bench_tbb_open(int threads);
/* fib(n) with a tbb::task_group run/wait per call, inside the arena. */
uint64_t bench_fib_tbb(struct bench_tbb *h, int n);
void bench_tbb_close(struct bench_tbb *h);
const char *bench_tbb_version(void);
#endif

#ifdef WEFT_BENCH_HAVE_OMP
/* fib(n) with an OpenMP task per call, in a team of `threads`. */
uint64_t bench_fib_omp(int n, int threads);
/* The OpenMP runtime actually linked ("libgomp.so.1", "libomp.so.5"). */
const char *bench_omp_runtime(void);
#endif

#ifdef __cplusplus
}
#endif

#endif
