/*
 * testutil.h: helpers shared by the test suites.
 *
 * test_scale(): WEFT_TEST_SCALE divides the size of stress loops (the
 * sanitizer builds set it so they stay within CI's time).
 * Watchdog: a thread that fails the test with a message if a progress
 * counter stops moving for `seconds`, so a lost wakeup shows up as a
 * failure instead of a hang.
 * destroy_quietly(): weft_destroy without its leak report on stderr.
 */
#ifndef WEFT_TESTUTIL_H
#define WEFT_TESTUTIL_H

#include "crit.h"
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <weft.h>

static inline long test_scale(void)
{
	const char *s = getenv("WEFT_TEST_SCALE");
	long v = s ? atol(s) : 1;
	return v > 0 ? v : 1;
}

static inline long scaled(long n)
{
	long v = n / test_scale();
	return v > 0 ? v : 1;
}

struct watchdog {
	pthread_t thread;
	const uint64_t *progress;
	unsigned seconds;
	int stop;
	const char *what;
};

static void *watchdog_main(void *p)
{
	struct watchdog *wd = p;
	uint64_t last = __atomic_load_n(wd->progress, __ATOMIC_RELAXED);
	unsigned still = 0;
	while (!__atomic_load_n(&wd->stop, __ATOMIC_ACQUIRE)) {
		usleep(100 * 1000);
		uint64_t now = __atomic_load_n(wd->progress, __ATOMIC_RELAXED);
		if (now != last) {
			last = now;
			still = 0;
		} else if (++still >= wd->seconds * 10) {
			cr_log_error("watchdog: %s made no progress for %u s (at %llu)", wd->what, wd->seconds,
				     (unsigned long long)now);
			/* A lost wakeup never recovers: fail the test process. */
			_exit(3);
		}
	}
	return NULL;
}

static inline void watchdog_start(struct watchdog *wd, const uint64_t *progress, unsigned seconds, const char *what)
{
	wd->progress = progress;
	wd->seconds = seconds;
	wd->stop = 0;
	wd->what = what;
	pthread_create(&wd->thread, NULL, watchdog_main, wd);
}

static inline void watchdog_stop(struct watchdog *wd)
{
	__atomic_store_n(&wd->stop, 1, __ATOMIC_RELEASE);
	pthread_join(wd->thread, NULL);
}

static inline double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* weft_destroy with what it reports on stderr (grants a test never
 * releases on purpose) sent to /dev/null. */
static inline void destroy_quietly(weft_rt *rt)
{
	fflush(stderr);
	int saved = dup(2);
	int null = open("/dev/null", O_WRONLY);
	cr_assert(saved >= 0 && null >= 0);
	cr_assert_geq(dup2(null, 2), 0);
	close(null);
	weft_destroy(rt);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
}

#endif
