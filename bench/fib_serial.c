/*
 * fib_serial.c: the serial baseline of the fib rows: plain recursive C,
 * the same recursion the weft, oneTBB and OpenMP versions spawn from.
 */
#include "baselines.h"

/* noinline keeps one real call per level: the baseline is "recursive C",
 * not whatever the inliner would unroll into the caller. */
__attribute__((noinline)) static uint64_t fib(int n)
{
	if (n < 2)
		return (uint64_t)n;
	return fib(n - 1) + fib(n - 2);
}

uint64_t bench_fib_serial(int n)
{
	/* The compiler may not assume anything about n: without this, a
	 * constant argument could let it evaluate the whole call at build
	 * time. */
	__asm__ volatile("" : "+r"(n));
	return fib(n);
}
