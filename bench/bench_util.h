/*
 * bench_util.h: what every row of weft-bench shares: the clock, medians
 * and percentiles, process CPU time and RSS, and the result table (printed
 * line by line as rows finish, and kept for the JSON file written at the
 * end).  Nothing here knows about weft.
 */
#ifndef WEFT_BENCH_UTIL_H
#define WEFT_BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CLOCK_MONOTONIC in ns; a vDSO call, no syscall. */
uint64_t bench_now_ns(void);
/* CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID), in ns. */
uint64_t bench_thread_cpu_ns(void);
void bench_sleep_ns(uint64_t ns);

/* Median and nearest-rank percentile (p in 0..100) of n values; the input
 * is left untouched.  NAN when n is 0. */
double bench_median(const double *v, size_t n);
double bench_percentile(const double *v, size_t n, double p);

/* User + system CPU seconds of the whole process (every thread). */
double bench_cpu_seconds(void);
/* Resident set size in bytes from /proc/self/statm; -1 if unreadable. */
long long bench_rss_bytes(void);

/* The verdict of a row against its goal from the issue. */
enum bench_verdict { BENCH_NONE, BENCH_OK, BENCH_MISS, BENCH_ERROR };

#define BENCH_MAX_METRICS 24

struct bench_row {
	char group[16];  /* what --filter matches: fib, spawn, wake, ... */
	char name[48];
	char weft[72];   /* the weft cell */
	char base[64];   /* the baseline cell, or "n/a (why)" */
	char ratio[40];
	char goal[28];
	enum bench_verdict verdict;
	struct {
		char key[32];
		double value; /* NAN is written as null */
	} metric[BENCH_MAX_METRICS];
	unsigned nmetric;
};

/* A new row, appended to the table.  Cells start as "-". */
struct bench_row *bench_row_new(const char *group, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void bench_weft(struct bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_base(struct bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bench_ratio(struct bench_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The goal text and whether it was met (BENCH_NONE: a note, no goal). */
void bench_goal(struct bench_row *r, enum bench_verdict v, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A number for the JSON file; NAN for "not measured". */
void bench_metric(struct bench_row *r, const char *key, double value);

/* A key/value pair for the JSON file, also printed as a header line
 * when it comes before bench_print_header. */
void bench_meta(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void bench_print_header(void);
void bench_print_row(const struct bench_row *r);
/* Counts of rows per verdict, for the closing line. */
void bench_count(unsigned *ok, unsigned *miss, unsigned *error);
/* The whole table as JSON.  0 or -errno. */
int bench_write_json(const char *path);

#endif
