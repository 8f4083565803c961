/*
 * crit.h: Criterion, or a stand-in runner for the ThreadSanitizer build.
 *
 * Criterion cannot start under ThreadSanitizer: its sandbox maps a shared
 * arena at a fixed address that mostly falls in TSan's shadow memory, and
 * the runner aborts ("Could not initialize inheritable arena", or a SEGV;
 * Snaipe/Criterion#274).  Under TSan the same test bodies therefore run
 * from the small main() below, one after the other in one process; a failed
 * assertion prints where and why and exits non-zero, which meson reports as
 * a failure.  Only the Criterion macros the suites use are provided.
 * Arguments starting with "--" (Criterion options such as --jobs) are
 * ignored; any other argument selects tests whose name contains it.
 *
 * Under AddressSanitizer, Test() also checks for leaks after every test
 * body (below).
 */
#ifndef WEFT_CRIT_H
#define WEFT_CRIT_H

#include "atomics.h"

#if !WEFT_TSAN
#include <criterion/criterion.h>
#include <criterion/logging.h>

/*
 * Leak checking under AddressSanitizer.  LeakSanitizer's report when a test
 * process exits does not fail the test: Criterion does not look at the exit
 * status of a test process whose body has returned, and an assertion that
 * fails in a .init or .fini is only logged (checked with Criterion 2.4.1).
 * So in the ASan build Test() is redefined: the body becomes a function of
 * its own, and the test Criterion runs calls it, then test_leak_check_after(),
 * still in the test's main phase and in the test's own process.  Each test
 * runs in a fresh process, so what is found comes from this test, its
 * .init, its suite's .init or Criterion's start-up.  The check runs before
 * .fini: memory kept for the suite (a runtime made in an .init, a static
 * cache) is still reachable from its globals then, and reachable memory is
 * not a leak.  A body that fails or skips never gets to the check.  Only
 * pointers LeakSanitizer cannot see make false reports: the runtime keeps
 * some malloc'd blocks (the workers' pthread_t) only in its mmap'd worker
 * structs, so a runtime still alive at the check shows them as leaks.
 * CR_TEST_BASE is what Criterion 2.4's own Test() expands to.
 */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_TEST_ASAN 1
#endif
#endif
#ifndef WEFT_TEST_ASAN
#define WEFT_TEST_ASAN 0
#endif

#if WEFT_TEST_ASAN
#include <sanitizer/lsan_interface.h>
#include <stddef.h>
#include <stdint.h>

/* Fail the running test if LeakSanitizer finds unreachable memory now
 * (its report, with the allocation stacks, is printed above).  Called from
 * inside a body, a pointer the body still has in a register or a stack
 * slot hides its leak: test_leak_check_after() is the thorough one. */
__attribute__((noinline, unused)) static void test_leak_check(void)
{
	if (__lsan_do_recoverable_leak_check() != 0)
		cr_assert_fail("LeakSanitizer found leaks in this test's process (report above)");
}

/* How much stack below test_leak_check_after() is zeroed before the check. */
#define WEFT_LEAK_SCRUB (256 * 1024)

/* Zero the stack below the caller.  Not instrumented, so the frame is the
 * array and nothing else: no redzones, no realignment gap left unzeroed. */
__attribute__((noinline, unused, no_sanitize("address"))) static void test_scrub_stack(void)
{
	volatile uintptr_t scrub[WEFT_LEAK_SCRUB / sizeof(uintptr_t)];
	for (size_t i = 0; i < sizeof(scrub) / sizeof(scrub[0]); i++)
		scrub[i] = 0;
}

/* After the body has returned.  LeakSanitizer scans the live stack
 * conservatively, and the check's frames lie where the body's dead frames
 * were: a stale copy of a leaked pointer left in an unwritten slot there
 * hides the leak (seen with a deliberate leak at -O2: a copy left by the
 * body's calls into malloc and memset).  So that stack is zeroed first (a
 * body and its callees use far less than WEFT_LEAK_SCRUB), and the check
 * is made from the same depth.  This frame itself is only a return address
 * and a frame pointer (not instrumented, test_leak_check() not inlined). */
__attribute__((noinline, unused, no_sanitize("address"))) static void test_leak_check_after(void)
{
	test_scrub_stack();
	test_leak_check();
}

#undef Test
#define Test(...) WEFT_LEAK_TEST_(__VA_ARGS__, .sentinel_ = 0)
#define WEFT_LEAK_TEST_(suite, name, ...)                                       \
	__attribute__((noinline)) static void weft_body_##suite##_##name(void); \
	CR_TEST_BASE(suite, name, __VA_ARGS__)                                  \
	{                                                                       \
		weft_body_##suite##_##name();                                   \
		test_leak_check_after();                                        \
	}                                                                       \
	static void weft_body_##suite##_##name(void)
#else
static inline void test_leak_check(void)
{
}
#endif
#else
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct crit_test {
	const char *name;
	void (*fn)(void);
};

static struct crit_test crit_tests[64];
static int crit_ntests;

static void crit_register(const char *name, void (*fn)(void))
{
	if (crit_ntests == (int)(sizeof(crit_tests) / sizeof(crit_tests[0]))) {
		fprintf(stderr, "crit.h: too many tests\n");
		exit(2);
	}
	crit_tests[crit_ntests].name = name;
	crit_tests[crit_ntests].fn = fn;
	crit_ntests++;
}

__attribute__((format(printf, 4, 5), noreturn)) static void crit_fail(const char *file, int line, const char *expr,
								       const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s:%d: assertion failed: %s\n  ", file, line, expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

#define Test(suite, name, ...)                                                      \
	static void suite##_##name(void);                                           \
	__attribute__((constructor)) static void crit_reg_##suite##_##name(void)    \
	{                                                                           \
		crit_register(#suite "::" #name, suite##_##name);                   \
	}                                                                           \
	static void suite##_##name(void)

#define cr_assert(cond, ...)                                                          \
	do {                                                                          \
		if (!(cond))                                                          \
			crit_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);        \
	} while (0)
#define cr_assert_not(cond, ...) cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_fail(...) cr_assert(0, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(strcmp((a), (b)) == 0, __VA_ARGS__)
#define cr_log_info(...)                                                              \
	do {                                                                          \
		fprintf(stderr, "[----] " __VA_ARGS__);                               \
		fputc('\n', stderr);                                                  \
	} while (0)
#define cr_log_warn cr_log_info
#define cr_log_error cr_log_info
#define cr_skip_test(...)                                                             \
	do {                                                                          \
		cr_log_info("skipped: " __VA_ARGS__);                                 \
		return;                                                               \
	} while (0)

/* ThreadSanitizer and AddressSanitizer do not go together: no leak check. */
#define WEFT_TEST_ASAN 0
static inline void test_leak_check(void)
{
}

int main(int argc, char **argv)
{
	const char *filter = NULL;
	for (int i = 1; i < argc; i++)
		if (strncmp(argv[i], "--", 2) != 0)
			filter = argv[i];
	for (int i = 0; i < crit_ntests; i++) {
		struct timespec a, b;
		if (filter && !strstr(crit_tests[i].name, filter))
			continue;
		fprintf(stderr, "[RUN ] %s\n", crit_tests[i].name);
		clock_gettime(CLOCK_MONOTONIC, &a);
		crit_tests[i].fn();
		clock_gettime(CLOCK_MONOTONIC, &b);
		fprintf(stderr, "[PASS] %s: (%.2fs)\n", crit_tests[i].name,
			(double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
	}
	fprintf(stderr, "[====] Synthesis: Tested: %d\n", crit_ntests);
	return 0;
}
#endif

#endif
