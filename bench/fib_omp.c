/*
 * fib_omp.c: the OpenMP baseline of the fib rows: one `omp task` per call,
 * `taskwait` to join, the same shape as weft's fib.  Compiled only when
 * meson finds OpenMP (WEFT_BENCH_HAVE_OMP); gcc links libgomp, clang libomp.
 */
#define _GNU_SOURCE 1
#include "baselines.h"

#include <dlfcn.h>
#include <omp.h>
#include <string.h>

static uint64_t fib(int n)
{
	uint64_t a = 0, b;

	if (n < 2)
		return (uint64_t)n;
#pragma omp task shared(a) firstprivate(n)
	a = fib(n - 1);
	b = fib(n - 2);
#pragma omp taskwait
	return a + b;
}

uint64_t bench_fib_omp(int n, int threads)
{
	uint64_t r = 0;

	__asm__ volatile("" : "+r"(n));
#pragma omp parallel num_threads(threads) shared(r)
#pragma omp single
	r = fib(n);
	return r;
}

const char *bench_omp_runtime(void)
{
	/* A union, not a cast: ISO C has no function-to-object pointer
	 * conversion. */
	union {
		int (*fn)(void);
		void *p;
	} sym = { .fn = omp_get_num_threads };
	Dl_info info;
	const char *slash;

	/* Ask the dynamic linker which file omp_get_num_threads came from:
	 * the compiler alone does not say whether it is libgomp or libomp. */
	if (!dladdr(sym.p, &info) || !info.dli_fname)
		return "OpenMP";
	slash = strrchr(info.dli_fname, '/');
	return slash ? slash + 1 : info.dli_fname;
}
