/*
 * thread.h: the pluggable thread layer ("virtual threads").
 *
 * weft never calls pthread_create directly: it asks a weft_thread_ops table
 * to start, join and pin its worker threads.  NULL in weft_config.threads
 * means the built-in pthreads table.  A table lets weft run on threads that
 * the host application manages (a game engine's job threads, a server's
 * pool, a test harness that counts them).
 */
#ifndef WEFT_THREAD_H
#define WEFT_THREAD_H

#include <weft/export.h>

WEFT_BEGIN_DECLS

struct weft_thread_ops {
	/* Passed back unchanged as the first argument of every call. */
	void *ctx;
	/* Start a thread that runs fn(arg) and store something that identifies
	 * it in *handle.  0 or -errno. */
	int (*start)(void *ctx, void **handle, void (*fn)(void *arg), void *arg);
	/* Wait until the thread started with this handle has returned from fn,
	 * and release the handle.  0 or -errno. */
	int (*join)(void *ctx, void *handle);
	/* Pin the *calling* thread to one CPU.  Called on the worker thread
	 * itself when weft_config.pin is set.  May be NULL (pinning is then
	 * skipped).  0 or -errno. */
	int (*pin)(void *ctx, int cpu);
};

/* The default table: pthreads, sched_setaffinity. */
WEFT_API const struct weft_thread_ops *weft_thread_ops_pthread(void);

WEFT_END_DECLS

#endif
