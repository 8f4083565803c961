/*
 * bench_util.c: the clock, statistics, process measurements and the table
 * and JSON output of weft-bench (see bench_util.h).
 */
#define _GNU_SOURCE 1
#include "bench_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t bench_thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	/* Restart after a signal so a row always sleeps as long as it says. */
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* A sorted copy, so callers may keep their samples in time order. */
static double *sorted_copy(const double *v, size_t n)
{
	double *s = malloc(n * sizeof *s);

	if (!s)
		return NULL;
	memcpy(s, v, n * sizeof *s);
	qsort(s, n, sizeof *s, cmp_double);
	return s;
}

double bench_median(const double *v, size_t n)
{
	double *s, m;

	if (n == 0 || !(s = sorted_copy(v, n)))
		return NAN;
	m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
	free(s);
	return m;
}

double bench_percentile(const double *v, size_t n, double p)
{
	double *s, x;
	size_t rank;

	if (n == 0 || !(s = sorted_copy(v, n)))
		return NAN;
	/* Nearest rank: the smallest value with at least p% of samples at or
	 * below it. */
	rank = (size_t)ceil(p / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	x = s[rank - 1];
	free(s);
	return x;
}

double bench_cpu_seconds(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return NAN;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

long long bench_rss_bytes(void)
{
	long long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");
	int got;

	if (!f)
		return -1;
	got = fscanf(f, "%lld %lld", &size, &resident);
	fclose(f);
	if (got != 2)
		return -1;
	return resident * sysconf(_SC_PAGESIZE);
}

/* ---- the table ---- */

#define MAX_ROWS 96
#define MAX_META 16

static struct bench_row rows[MAX_ROWS];
static unsigned nrows;
static struct bench_row overflow_row; /* written to, never printed twice */

static struct {
	char key[32];
	char value[128];
} meta[MAX_META];
static unsigned nmeta;
static bool table_started;

/* Column widths of the printed table. */
enum { W_NAME = 32, W_WEFT = 27, W_BASE = 40, W_RATIO = 24 };

static void vset(char *dst, size_t size, const char *fmt, va_list ap)
{
	vsnprintf(dst, size, fmt, ap);
}

struct bench_row *bench_row_new(const char *group, const char *fmt, ...)
{
	struct bench_row *r = nrows < MAX_ROWS ? &rows[nrows++] : &overflow_row;
	va_list ap;

	memset(r, 0, sizeof *r);
	snprintf(r->group, sizeof r->group, "%s", group);
	va_start(ap, fmt);
	vset(r->name, sizeof r->name, fmt, ap);
	va_end(ap);
	strcpy(r->weft, "-");
	strcpy(r->base, "-");
	strcpy(r->ratio, "-");
	strcpy(r->goal, "-");
	return r;
}

#define SETTER(fn, field)                                      \
	void fn(struct bench_row *r, const char *fmt, ...)     \
	{                                                      \
		va_list ap;                                    \
		va_start(ap, fmt);                             \
		vset(r->field, sizeof r->field, fmt, ap);      \
		va_end(ap);                                    \
	}
SETTER(bench_weft, weft)
SETTER(bench_base, base)
SETTER(bench_ratio, ratio)
#undef SETTER

void bench_goal(struct bench_row *r, enum bench_verdict v, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vset(r->goal, sizeof r->goal, fmt, ap);
	va_end(ap);
	r->verdict = v;
}

void bench_metric(struct bench_row *r, const char *key, double value)
{
	if (r->nmetric == BENCH_MAX_METRICS)
		return;
	snprintf(r->metric[r->nmetric].key, sizeof r->metric[0].key, "%s", key);
	r->metric[r->nmetric].value = value;
	r->nmetric++;
}

void bench_meta(const char *key, const char *fmt, ...)
{
	va_list ap;

	if (nmeta == MAX_META)
		return;
	snprintf(meta[nmeta].key, sizeof meta[0].key, "%s", key);
	va_start(ap, fmt);
	vset(meta[nmeta].value, sizeof meta[0].value, fmt, ap);
	va_end(ap);
	/* Printed as a header while the table has not started; later ones
	 * (the run time) go to the JSON file only. */
	if (!table_started)
		printf("# %-12s %s\n", meta[nmeta].key, meta[nmeta].value);
	nmeta++;
}

static const char *verdict_word(enum bench_verdict v)
{
	switch (v) {
	case BENCH_OK:
		return "ok";
	case BENCH_MISS:
		return "MISS";
	case BENCH_ERROR:
		return "ERROR";
	default:
		return "";
	}
}

void bench_print_header(void)
{
	table_started = true;
	printf("\n%-*s %-*s %-*s %-*s %s\n", W_NAME, "benchmark", W_WEFT, "weft", W_BASE,
	       "baseline (same run)", W_RATIO, "ratio", "goal / note");
	printf("%-*s %-*s %-*s %-*s %s\n", W_NAME, "---------", W_WEFT, "----", W_BASE,
	       "-------------------", W_RATIO, "-----", "-----------");
	fflush(stdout);
}

void bench_print_row(const struct bench_row *r)
{
	printf("%-*s %-*s %-*s %-*s %s%s%s\n", W_NAME, r->name, W_WEFT, r->weft, W_BASE, r->base,
	       W_RATIO, r->ratio, r->goal, r->verdict != BENCH_NONE ? "  " : "",
	       verdict_word(r->verdict));
	/* Rows come out as they finish, so a slow or stuck row shows where. */
	fflush(stdout);
}

void bench_count(unsigned *ok, unsigned *miss, unsigned *error)
{
	*ok = *miss = *error = 0;
	for (unsigned i = 0; i < nrows; i++) {
		if (rows[i].verdict == BENCH_OK)
			++*ok;
		else if (rows[i].verdict == BENCH_MISS)
			++*miss;
		else if (rows[i].verdict == BENCH_ERROR)
			++*error;
	}
}

/* ---- JSON ---- */

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_number(FILE *f, double v)
{
	/* JSON has no NaN or infinity: "not measured" is null. */
	if (isfinite(v))
		fprintf(f, "%.17g", v);
	else
		fputs("null", f);
}

static void json_field(FILE *f, const char *key, const char *value, bool comma)
{
	json_string(f, key);
	fputs(": ", f);
	json_string(f, value);
	if (comma)
		fputs(", ", f);
}

int bench_write_json(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -errno;
	fputs("{\n  \"meta\": {", f);
	for (unsigned i = 0; i < nmeta; i++)
		json_field(f, meta[i].key, meta[i].value, i + 1 < nmeta);
	fputs("},\n  \"rows\": [\n", f);
	for (unsigned i = 0; i < nrows; i++) {
		const struct bench_row *r = &rows[i];

		fputs("    {", f);
		json_field(f, "group", r->group, true);
		json_field(f, "name", r->name, true);
		json_field(f, "weft", r->weft, true);
		json_field(f, "baseline", r->base, true);
		json_field(f, "ratio", r->ratio, true);
		json_field(f, "goal", r->goal, true);
		json_string(f, "verdict");
		fputs(": ", f);
		if (r->verdict == BENCH_NONE)
			fputs("null", f);
		else
			json_string(f, verdict_word(r->verdict));
		fputs(", \"metrics\": {", f);
		for (unsigned m = 0; m < r->nmetric; m++) {
			json_string(f, r->metric[m].key);
			fputs(": ", f);
			json_number(f, r->metric[m].value);
			if (m + 1 < r->nmetric)
				fputs(", ", f);
		}
		fprintf(f, "}}%s\n", i + 1 < nrows ? "," : "");
	}
	fputs("  ]\n}\n", f);
	if (fclose(f) != 0)
		return -errno;
	return 0;
}
