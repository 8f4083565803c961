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
 */
#ifndef WEFT_CRIT_H
#define WEFT_CRIT_H

#include "atomics.h"

#if !WEFT_TSAN
#include <criterion/criterion.h>
#include <criterion/logging.h>
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
