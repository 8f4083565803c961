/*
 * io.h (internal): the operation record shared by the I/O front end (io.c),
 * the io_uring backend (ring.c) and the helper-thread backend
 * (io_threads.c).
 *
 * An operation lives in the runtime's op table from submit to the end of
 * its callback.  Its handle is (generation << IO_INDEX_BITS) | index, so a
 * stale handle (the slot was reused) is told apart and weft_io_cancel
 * answers -ENOENT for it.
 *
 * Life of an op (op->state, changed only with the atomics below):
 *   OP_QUEUED    submitted, not yet in a backend (an outside thread's op
 *                travelling to a worker, or an op in a ring's user-space
 *                backlog while the SQ is full)
 *   OP_INFLIGHT  in the kernel (a ring) or in the helper threads
 *   OP_DONE      result known; the callback task is queued or running
 *   OP_FREE      back in the table
 * A cancel that finds OP_QUEUED moves it to OP_DONE with -ECANCELED itself
 * (CAS: exactly one of canceller and submitter wins); one that finds
 * OP_INFLIGHT asks the backend.  io_complete() is the only way to
 * OP_DONE from OP_INFLIGHT and runs exactly once per op.
 */
#ifndef WEFT_IO_INTERNAL_H
#define WEFT_IO_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <weft/io.h>

struct weft_rt;
struct weft_worker;

enum io_opcode {
	IOP_READ,
	IOP_WRITE,
	IOP_READV,
	IOP_WRITEV,
	IOP_FSYNC,
	IOP_OPENAT,
	IOP_CLOSE,
	IOP_POLL,
	IOP_ACCEPT,
	IOP_CONNECT,
	IOP_RECV,
	IOP_SEND,
	IOP_TIMEOUT,
};

enum io_state { OP_FREE = 0, OP_QUEUED = 1, OP_INFLIGHT = 2, OP_DONE = 3 };

#define IO_INDEX_BITS 20
#define IO_MAX_OPS (1u << IO_INDEX_BITS) /* slot 0 is never used */
#define OWNER_UNKNOWN 0xffffu
#define IO_GEN_MASK ((1u << (31 - IO_INDEX_BITS)) - 1)

struct io_op {
	weft_io_fn fn;
	void *ctx;
	/* (generation << 8) | enum io_state, atomic: one word, so a CAS on
	 * the state also checks that the slot was not reused meanwhile.  The
	 * generation is bumped when the slot is freed. */
	uint32_t sg;
	uint8_t opcode;      /* enum io_opcode */
	/* Ring backend: the worker whose ring holds it; OWNER_UNKNOWN while an
	 * outside op is between QUEUED and its submitting task's store. */
	uint16_t owner;
	int fd;
	int res;             /* the result, once OP_DONE */
	uint32_t len;        /* buffer length, or iovcnt */
	uint32_t flags;      /* msg flags, open flags, fsync flags, poll events */
	uint64_t off;        /* file offset; timeout: ns; openat: mode; connect: socklen */
	void *addr;          /* buffer, iovec array, path, sockaddr */
	void *addr2;         /* accept: socklen_t * */
	struct io_op *next;  /* free lists, backlogs, the helper threads' lists */
	uint64_t aux[2];     /* backend-private (ring: the timeout's timespec;
			      * threads: see io_threads.c, aux[1] outlives
			      * the completion for the cancel check) */
};

static inline uint32_t io_op_handle_index(int handle)
{
	return (uint32_t)handle & (IO_MAX_OPS - 1);
}

static inline unsigned op_state(uint32_t sg)
{
	return sg & 0xff;
}

static inline uint32_t op_sg(uint32_t gen, unsigned state)
{
	return gen << 8 | state;
}

/* io.c: what backends call. */
/* The op completed with res: queue its callback as a task (from any
 * thread; on a worker it goes to that worker's deque).  Exactly once per
 * op; the op must be OP_INFLIGHT. */
void io_complete(struct weft_rt *rt, struct io_op *op, int res);
/* The op by index (valid for every index below IO_MAX_OPS that was ever
 * handed out). */
struct io_op *io_op_at(struct weft_rt *rt, uint32_t index);
uint32_t io_op_index(struct weft_rt *rt, const struct io_op *op);
/* The handle of op in the generation that sg (its sg word) names. */
int io_op_handle(struct weft_rt *rt, const struct io_op *op, uint32_t sg);

/* io.c: the runtime's side (rt.c). */
struct weft_config;
struct weft_io_stats;
/* Pick the backend (probe io_uring).  0 or -errno. */
int io_init(struct weft_rt *rt, const struct weft_config *cfg);
/* weft_destroy began: cancel what is in flight. */
void io_shutdown(struct weft_rt *rt);
/* Some operation still owes its completion. */
bool io_busy(struct weft_rt *rt);
void io_stats(struct weft_rt *rt, struct weft_io_stats *out);
/* After the workers are joined. */
void io_fini(struct weft_rt *rt);

/* io_threads.c: the helper-thread backend.  Every function may be called
 * from any thread unless noted. */
struct io_threads;
/* Start the helper threads.  0 or -errno. */
int io_threads_start(struct weft_rt *rt, struct io_threads **out);
/* Take an OP_INFLIGHT op; io_complete() it when done. */
void io_threads_submit(struct io_threads *t, struct io_op *op);
/* Cancel op if it is still waiting (sockets, poll, timeouts): it completes
 * with -ECANCELED.  sg is the op's sg word the caller saw (OP_INFLIGHT):
 * under the backend's lock, an op whose sg differs (completed, maybe
 * reused) is left alone and the call returns -ENOENT.  0 if cancelled,
 * -EALREADY if it is running a blocking syscall that cannot be stopped. */
int io_threads_cancel(struct io_threads *t, struct io_op *op, uint32_t sg);
/* weft_destroy began: cancel everything that waits, finish what runs. */
void io_threads_shutdown(struct io_threads *t);
/* Join the threads and free.  Called once nothing is in flight. */
void io_threads_stop(struct io_threads *t);

#endif
