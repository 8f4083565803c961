/*
 * atomics.h: the only place where memory orderings are spelled out.
 *
 * Every shared access in runtime/ goes through one of these wrappers so that
 * `grep -n 'acquire\|release\|seq_cst' runtime/` lists every ordering decision.
 * They are thin macros over the GCC/Clang __atomic builtins, which work on
 * plain integer and pointer fields (so public structs such as weft_group need
 * no _Atomic types and stay usable from C++), and which ThreadSanitizer
 * understands.
 *
 * Fences: TSan ignores standalone atomic_thread_fence (google/sanitizers#1415).
 * It knows nothing of membarrier(2) either, so a WEFT_TSAN build never takes
 * the fence_compiler() paths.
 * fence_seq_cst() is therefore only for code that has a TSan-visible twin:
 * under WEFT_TSAN the callers use the seq_cst read-modify-write form instead
 * (see deque.c).  Synchronisation never relies on type qualifiers.
 */
#ifndef WEFT_ATOMICS_H
#define WEFT_ATOMICS_H

#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif
#ifndef WEFT_TSAN
#define WEFT_TSAN 0
#endif

#define WEFT_CACHELINE 64
#define WEFT_ALIGNED __attribute__((aligned(WEFT_CACHELINE)))

#define load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)

#define store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define store_seq_cst(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

#define fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define fetch_add_release(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELEASE)
#define fetch_add_acq_rel(p, v) __atomic_fetch_add((p), (v), __ATOMIC_ACQ_REL)
#define fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define fetch_sub_relaxed(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)
#define fetch_sub_release(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELEASE)
#define fetch_sub_acq_rel(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_ACQ_REL)
#define fetch_sub_seq_cst(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_SEQ_CST)
#define fetch_or_acq_rel(p, v) __atomic_fetch_or((p), (v), __ATOMIC_ACQ_REL)
#define fetch_or_seq_cst(p, v) __atomic_fetch_or((p), (v), __ATOMIC_SEQ_CST)
#define fetch_and_acq_rel(p, v) __atomic_fetch_and((p), (v), __ATOMIC_ACQ_REL)
#define fetch_and_seq_cst(p, v) __atomic_fetch_and((p), (v), __ATOMIC_SEQ_CST)

#define exchange_acq_rel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)
#define exchange_seq_cst(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

/* Compare-and-swap; *expected is updated on failure.  Strong: no spurious
 * failure, so callers need not loop unless they want to. */
#define cas_acq_rel(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define cas_seq_cst(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#define cas_release(p, expected, desired) \
	__atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)

#define fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
/* The light half of an asymmetric fence: orders nothing in hardware, only
 * keeps the compiler from moving accesses across it.  Correct only where
 * the other side runs the heavy half, os_membarrier() (membarrier(2)),
 * which makes every running thread of the process execute a full barrier;
 * see rt_push_outside and weft_destroy. */
#define fence_compiler() __atomic_signal_fence(__ATOMIC_SEQ_CST)

/* A spin-wait hint: keeps a spinning core from starving its SMT sibling. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Ask for the line of p in a writable state now, so that later stores to it
 * do not each wait for ownership.  prefetchw (AMD, Intel since Broadwell;
 * older Intel cores execute it as a NOP); __builtin_prefetch(p, 1) only
 * emits it with -mprfchw, and otherwise fetches the line shared. */
static inline void prefetch_for_write(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1);
#endif
}

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#endif
