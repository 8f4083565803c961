/*
 * fib_tbb.cpp: the oneTBB baseline of the fib rows: a tbb::task_group per
 * call (run fib(n-1), compute fib(n-2), wait), the same shape as weft's fib,
 * inside a task_arena of the requested size.  Exposed to the C driver
 * through extern "C" functions (baselines.h); no exception crosses them.
 * Compiled only when meson finds tbb (WEFT_BENCH_HAVE_TBB).
 */
#include "baselines.h"

#include <new>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

struct bench_tbb {
	/* global_control keeps TBB from starting more workers than asked;
	 * the arena's concurrency counts the calling thread. */
	tbb::global_control limit;
	tbb::task_arena arena;

	explicit bench_tbb(int threads)
		: limit(tbb::global_control::max_allowed_parallelism, (size_t)threads),
		  arena(threads)
	{
	}
};

static uint64_t fib(int n)
{
	if (n < 2)
		return (uint64_t)n;
	uint64_t a = 0;
	tbb::task_group tg;
	tg.run([&a, n] { a = fib(n - 1); });
	uint64_t b = fib(n - 2);
	tg.wait();
	return a + b;
}

extern "C" struct bench_tbb *bench_tbb_open(int threads)
{
	try {
		bench_tbb *h = new bench_tbb(threads);
		h->arena.initialize();
		return h;
	} catch (...) {
		return nullptr;
	}
}

extern "C" uint64_t bench_fib_tbb(struct bench_tbb *h, int n)
{
	uint64_t r = UINT64_MAX;

	__asm__ volatile("" : "+r"(n));
	try {
		h->arena.execute([&r, n] { r = fib(n); });
	} catch (...) {
		/* UINT64_MAX never equals the serial result: the row reports it. */
	}
	return r;
}

extern "C" void bench_tbb_close(struct bench_tbb *h)
{
	delete h;
}

extern "C" const char *bench_tbb_version(void)
{
	return TBB_runtime_version();
}
