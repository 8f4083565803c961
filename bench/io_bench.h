/*
 * io_bench.h: the io group of weft-bench (io_bench.c): chained file reads
 * vs a raw liburing loop, examples/echo_server vs an epoll echo server,
 * examples/kv_server vs redis-server under redis-benchmark, the wake of a
 * worker parked in io_uring_enter vs one parked on a plain futex, and the
 * servers' CPU once their load has stopped.
 */
#ifndef WEFT_BENCH_IO_BENCH_H
#define WEFT_BENCH_IO_BENCH_H

/* The sizes of one mode (weft_bench.c fills them from --quick/--full). */
struct io_bench_params {
	unsigned reps;          /* chained reads: measurements per variant (median) */
	double read_seconds;    /* ... each this long */
	unsigned wake_samples;  /* ring wake: round trips per park mechanism */
	double echo_seconds;    /* one echo_load run */
	unsigned echo_rounds;   /* runs per server, alternating weft and epoll */
	unsigned kv_requests;   /* redis-benchmark -n */
	unsigned kv_rounds;     /* runs per server, alternating weft and redis */
	unsigned kv_timeout_s;  /* one redis-benchmark run is killed after this */
};

/* Run the group's rows (appended to the table and printed as they
 * finish).  Returns the number of errors: wrong results and calls that
 * failed, not missed goals and not rows skipped for a missing program. */
int bench_group_io(const struct io_bench_params *p);

#endif
