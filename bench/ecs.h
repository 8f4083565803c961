/*
 * ecs.h: the ECS-like workload of issue 3's benchmark rows and every way of
 * running it: weft_spawn_with (ecs.c), sorted pthread rwlocks and a central
 * mutex + condvar broadcast scheduler (ecs_baselines.c), OpenMP tasks with
 * depend(in/inout) (ecs_omp.c, built only with OpenMP), and a serial
 * reference (ecs.c).  Also the two component-scheduler micro rows: the
 * uncontended try_acquire + release pair and the seed's scenario.
 *
 * The first half is what the table owner calls; the second half ("shared
 * by the ecs*.c files") is the machinery every variant shares, so that they
 * differ only in how they schedule: the same task list, the same task body
 * (timestamp, shadow check, busy-wait), the same in-flight bound.
 */
#ifndef WEFT_BENCH_ECS_H
#define WEFT_BENCH_ECS_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A zero field means its default: components 64, inflight 1024, workers 2.
 * tasks must be at least 1 and components at most 64 (the baselines keep
 * 64-bit component masks). */
struct ecs_params {
	unsigned tasks;      /* 200000 full, 50000 quick */
	unsigned components; /* ids 0 .. components-1 */
	double work_us;      /* busy-wait per task, 0 or 1 */
	bool zipf;           /* component choice Zipf s = 1 instead of uniform */
	unsigned inflight;   /* most tasks submitted and not yet finished */
	unsigned workers;    /* threads that run tasks */
	uint64_t seed;       /* the task list is a pure function of the params */
	/* weft only: weft_config.max_bypass and strict_order (0/false: the
	 * defaults, as a user gets them). */
	unsigned max_bypass;
	bool strict_order;
	/* The producer runs on the pool instead of on a thread of its own
	 * (see "in-pool producer" below): weft, rwlock and condvar only;
	 * OpenMP always submits from one thread of its team. */
	bool in_pool;
};

/* ran false: not measured, why says so.  Waits are from submission (the
 * submitter's timestamp just before handing the task over) to the start of
 * the task body.  wakeups_per_grant is NAN where the variant cannot count
 * its wakeups (rwlock, OpenMP, serial); spurious means something only where
 * it is not NAN. */
struct ecs_result {
	bool ran;
	char why[96];
	double tasks_per_s, ns_per_task, wait_p50_us, wait_p99_us, wait_max_us, wakeups_per_grant;
	uint64_t spurious;
	/* weft only (NAN elsewhere): the share of requests that had to wait,
	 * and of those that used up their bypass budget and reserved their
	 * components (a row whose reservations climb is in a convoy). */
	double waited_frac, reserved_frac;
	/* CPU time the submitting thread spent per task (its share of the
	 * two CPUs: gate, stamps and the scheduler's submission), where it
	 * does nothing else; NAN elsewhere. */
	double submit_cpu_ns;
};

/* Each returns 0 or -errno (then ran is false and why says what failed).
 * A scheduling error (two conflicting tasks running at once, a task run
 * twice or never) aborts the process with a message: numbers from a wrong
 * scheduler are worthless. */
int ecs_run_weft(const struct ecs_params *p, struct ecs_result *r);
int ecs_run_rwlock(const struct ecs_params *p, struct ecs_result *r);
int ecs_run_condvar(const struct ecs_params *p, struct ecs_result *r);
/* Fills ran = false, why = "not built ..." without OpenMP. */
int ecs_run_omp(const struct ecs_params *p, struct ecs_result *r);
int ecs_run_serial(const struct ecs_params *p, struct ecs_result *r);

/* weft_try_acquire + weft_release of a READ and a WRITE on two different
 * components from one thread: ns per pair, median of 5 runs of 1M pairs.
 * NAN on failure (with a message on stderr). */
double ecs_uncontended_pair_ns(void);

/* The seed's scenario: A, B, C held (WRITE); {A, B} and {A, C} requested
 * with weft_acquire; A released, then B while C stays held.  Returns the
 * time from B's release to the start of {A, B}'s callback in us (median of
 * 5 trials), NAN on failure.  *order_ok: in every trial {A, B} started only
 * after B's release and {A, C} only after C's. */
double ecs_seed_scenario_us(bool *order_ok);

/* ---------------- shared by the ecs*.c files ---------------- */

#define ECS_MAX_DEPS 4
#define ECS_MAX_COMPONENTS 64
#define ECS_MAX_WORKERS 64
#define ECS_LINE 64

struct ecs_load;

/* One task, one cache line: the submitter writes submit_ns into the line it
 * hands over anyway and the worker writes start_ns into the line it reads
 * anyway, so measuring adds no line transfer of its own. */
struct ecs_task {
	alignas(ECS_LINE) uint64_t submit_ns;
	uint64_t start_ns; /* 0 until started: a second start is an error */
	struct ecs_load *load;
	uint64_t rmask, wmask; /* the components read / written, as bits */
	uint32_t index;
	uint8_t n;                   /* 1 .. ECS_MAX_DEPS */
	uint8_t comp[ECS_MAX_DEPS];  /* distinct, ascending (the rwlock order) */
	uint8_t write;               /* bit j set: comp[j] is WRITE */
};

/* Per-component shadow state the task body checks: readers in the low
 * bits, ECS_SHADOW_WRITER while a writer runs. */
#define ECS_SHADOW_WRITER (1u << 20)
struct ecs_shadow {
	alignas(ECS_LINE) _Atomic uint32_t word;
};

/*
 * The in-flight bound.  Workers count finished tasks in their own cache
 * line; the submitter sums those lines only when its stale count says the
 * window is full, so a task costs one store to a private line and one load
 * of a read-mostly line.  A full submitter sleeps on a futex until about
 * `slack` (inflight / 8) slots are free again: waking it for every
 * completion would cost a futex wake per task.  While it sleeps each worker
 * w has a private threshold wake_at[w] (an equal share of slack + 1
 * completions), so no worker reads another's counter; the shares are sized
 * so the outstanding tasks cannot all finish without one worker reaching
 * its own.  The drain at the end needs the exact total, so only then does a
 * worker sum every counter (for at most `inflight` tasks).
 */
struct ecs_gate_worker {
	alignas(ECS_LINE) _Atomic uint64_t done;
	_Atomic uint64_t wake_at;
};

struct ecs_gate {
	struct ecs_gate_worker w[ECS_MAX_WORKERS];
	/* Read by workers after every task; written only when the submitter
	 * goes to sleep or wakes.  With an in-pool producer, `sleeping` means
	 * "the producer is parked" and is never a futex word; `finished` is
	 * the one the waiting main thread sleeps on. */
	alignas(ECS_LINE) _Atomic uint32_t sleeping; /* the futex word */
	_Atomic uint32_t drain;
	_Atomic uint64_t drain_target;
	_Atomic uint32_t finished;
	bool in_pool;
	/* The submitter's own. */
	alignas(ECS_LINE) uint64_t submitted;
	uint64_t known_done;
	unsigned nworkers, inflight, slack;
};

struct ecs_load {
	struct ecs_params p; /* defaults filled in */
	struct ecs_task *task;
	struct ecs_shadow shadow[ECS_MAX_COMPONENTS];
	struct ecs_gate gate;
	uint64_t work_ns;
	uint64_t t_begin, t_end; /* first submission, all finished */
	/* The submitting thread's CPU time at t_begin and t_end, where it
	 * only submits (weft and the two pools; 0 elsewhere). */
	uint64_t cpu_begin, cpu_end;
	/* The variant's scheduler, for its in-pool producer. */
	void *sched;
};

/* Fill in defaults, check, generate the task list from the seed and touch
 * every page of it, so no variant pays first-touch faults in its timing.
 * 0 or -errno with r->why set.  The load is large: allocate it with
 * ecs_load_new. */
struct ecs_load *ecs_load_new(const struct ecs_params *p, struct ecs_result *r, int *err);
void ecs_load_free(struct ecs_load *l);

/* The task body every variant runs: start timestamp, shadow check on
 * entry, busy-wait, shadow check on exit, count the completion for the
 * gate as worker `worker`.  True when an in-pool producer is due again:
 * the caller runs it (or queues it) once the task's components are free;
 * always false with a producer thread. */
bool ecs_task_run(struct ecs_task *t, unsigned worker);

/* Busy-wait ns nanoseconds on CLOCK_MONOTONIC (nothing for 0). */
void ecs_spin_ns(uint64_t ns);

/* The submitter: returns once one more task may be submitted, then counts
 * it as submitted.  self is the worker index of the submitting thread when
 * it also runs tasks (OpenMP), -1 otherwise. */
void ecs_gate_enter(struct ecs_gate *g, int self);
/* The submitter: returns once every submitted task has finished. */
void ecs_gate_drain(struct ecs_gate *g);

/*
 * The in-pool producer.  Nothing runs beside the pool: the producer is a
 * task (weft) or a turn of a pool thread (rwlock, condvar) that submits
 * until the window is full and then parks, handing its restart to the
 * worker whose completion frees `slack` + 1 slots (the same thresholds as
 * the sleeping submitter's, with every worker counted); no thread sleeps
 * for the window and no futex call is made for it.  Only one producer runs
 * at a time: a restart is owned by whoever clears `sleeping`.
 *
 * ecs_produce_next: the next task to submit, counted as submitted, or NULL
 * when the producer must stop (parked, or the last task was submitted: then
 * the load is marked draining).  ecs_gate_wait_finished: the main thread
 * sleeps until every task of the load has finished (one futex wake).
 */
struct ecs_task *ecs_produce_next(struct ecs_load *l);
void ecs_gate_wait_finished(struct ecs_gate *g);
/* Sum of the workers' completion counters. */
uint64_t ecs_gate_done(struct ecs_gate *g);

/* Stamp a task as submitted now. */
void ecs_stamp_submit(struct ecs_task *t);

/* Check that every task ran exactly once and the shadow state is back to
 * idle (aborts otherwise), then fill throughput and wait percentiles from
 * t_begin, t_end and the per-task stamps.  ran = true.  0 or -ENOMEM. */
int ecs_load_finish(struct ecs_load *l, struct ecs_result *r);

/* Report a scheduling error and abort. */
_Noreturn void ecs_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Mark r as not measured. */
void ecs_not_run(struct ecs_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
